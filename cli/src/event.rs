//! `event` and `scriptstatus`: failoverd's hooks as CTDB's event scripts
//! (the one component is `legacy`, the hooks directory), with the outputs
//! of ctdb's event tool:
//!
//! ```text
//! ipfailover event status legacy EVENT
//! ipfailover event script list legacy
//! ipfailover event script enable|disable legacy NAME
//! ipfailover event run TIMEOUT legacy EVENT [ARGS...]
//! ipfailover scriptstatus [EVENT]
//! ```
//!
//! ipfailover's hook events are `takeip`, `releaseip`, `updateip` and
//! `ipreallocated`; there is no `monitor` event (health is clusterd's
//! `health_command`), so `scriptstatus` without an event says `Event
//! monitor has never run in legacy`, as ctdb does before the first monitor.

use anyhow::Result;
use transport::msg::failover::{
    HookList, HookStatus, RunEvent, SetHook, GET_HOOK_STATUS, LIST_HOOKS, RUN_EVENT, SET_HOOK,
};
use transport::proto::service::FAILOVERD;

use crate::ctx::{block_on, Exit, Globals};
use crate::output::emit;

/// The only component: the hooks directory.
const COMPONENT: &str = "legacy";
/// ENOENT: ctdb's status for a component that does not exist.
const ENOENT: u8 = 2;
/// EINVAL: ctdb's status for an event that never ran.
const EINVAL: u8 = 22;

/// `event ...`.
#[derive(Debug, clap::Subcommand)]
pub enum EventCommand {
    /// How each hook did in the last run of an event.
    Status {
        /// The component: `legacy` (the hooks directory).
        component: String,
        /// The event (`takeip`, `releaseip`, `updateip`, `ipreallocated`).
        event: String,
    },
    /// Run an event's hooks now with the given arguments (root only).
    Run {
        /// Seconds (accepted for ctdb's syntax; each hook has
        /// `hook_timeout_ms`).
        #[arg(value_name = "TIMEOUT")]
        seconds: String,
        /// The component: `legacy`.
        component: String,
        /// The event.
        event: String,
        /// Its arguments (`takeip IFACE ADDRESS PREFIX`, ...).
        args: Vec<String>,
    },
    /// List, enable or disable hooks.
    #[command(subcommand)]
    Script(ScriptCommand),
}

/// `event script ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ScriptCommand {
    /// The hooks, `*` before each enabled one.
    List {
        /// The component: `legacy`.
        component: String,
    },
    /// Make a hook executable (it runs).
    Enable {
        /// The component: `legacy`.
        component: String,
        /// The hook's file name.
        script: String,
    },
    /// Make a hook not executable (it is skipped).
    Disable {
        /// The component: `legacy`.
        component: String,
        /// The hook's file name.
        script: String,
    },
}

/// `scriptstatus [EVENT]`.
#[derive(Debug, clap::Args)]
pub struct ScriptstatusArgs {
    /// The event (default: monitor, as ctdb).
    pub event: Option<String>,
}

/// A component other than `legacy`: ctdb's words, status ENOENT.
fn unknown_component(component: &str) -> Result<()> {
    emit(&format!("Event dir for {component} does not exist\n"))?;
    Err(Exit(ENOENT).into())
}

/// Runs `event ...`.
///
/// # Errors
///
/// No transportd or failoverd; ctdb's failures with its statuses.
pub fn run(ctx: &Globals, cmd: &EventCommand) -> Result<()> {
    match cmd {
        EventCommand::Status { component, event } => status(ctx, component, event),
        EventCommand::Run {
            component,
            event,
            args,
            ..
        } => run_event(ctx, component, event, args),
        EventCommand::Script(ScriptCommand::List { component }) => list(ctx, component),
        EventCommand::Script(ScriptCommand::Enable { component, script }) => {
            set(ctx, component, script, true)
        }
        EventCommand::Script(ScriptCommand::Disable { component, script }) => {
            set(ctx, component, script, false)
        }
    }
}

/// `scriptstatus [EVENT]`: `event status legacy EVENT` (ctdb's alias);
/// ctdb returns 0 whatever the status said.
///
/// # Errors
///
/// No transportd or failoverd.
pub fn scriptstatus(ctx: &Globals, args: &ScriptstatusArgs) -> Result<()> {
    let event = args.event.as_deref().unwrap_or("monitor");
    match status(ctx, COMPONENT, event) {
        Err(e) if e.downcast_ref::<Exit>().is_some() => Ok(()),
        other => other,
    }
}

fn status(ctx: &Globals, component: &str, event: &str) -> Result<()> {
    if component != COMPONENT {
        return unknown_component(component);
    }
    block_on(async {
        let (client, _incoming) = ctx.connect().await?;
        let pnn = ctx.one_node(&client).await?;
        let s: HookStatus = ctx
            .ask(&client, pnn, FAILOVERD, GET_HOOK_STATUS, &event.to_string())
            .await?;
        print_status(component, event, &s)
    })
}

/// ctdb's `print_status`: one line per script, `  OUTPUT: why` after a
/// failure; the status is the first failure's (1), 0 when all went well.
fn print_status(component: &str, event: &str, s: &HookStatus) -> Result<()> {
    if !s.dir_exists {
        return unknown_component(component);
    }
    if !s.ran {
        emit(&format!("Event {event} has never run in {component}\n"))?;
        return Err(Exit(EINVAL).into());
    }
    let mut out = String::new();
    let mut failed = false;
    for r in &s.scripts {
        let when = ctime(r.begin_unix_ms);
        #[allow(clippy::cast_precision_loss)] // microseconds of a hook
        let secs = r.duration_us as f64 / 1e6;
        match r.state.as_str() {
            "DISABLED" => out.push_str(&format!("{:<20} {:<10}\n", r.name, r.state)),
            "TIMEDOUT" => out.push_str(&format!("{:<20} {:<10} {when}", r.name, r.state)),
            "CANNOT RUN" => {
                out.push_str(&format!("{:<20} {:<10} ({})\n", r.name, r.state, r.output));
            }
            _ => out.push_str(&format!("{:<20} {:<10} {secs:.3} {when}", r.name, r.state)),
        }
        if r.state != "OK" && r.state != "DISABLED" {
            failed = true;
            out.push_str(&format!("  OUTPUT: {}\n", r.output));
        }
    }
    emit(&out)?;
    if failed {
        return Err(Exit(1).into());
    }
    Ok(())
}

fn list(ctx: &Globals, component: &str) -> Result<()> {
    if component != COMPONENT {
        return unknown_component(component);
    }
    block_on(async {
        let (client, _incoming) = ctx.connect().await?;
        let pnn = ctx.one_node(&client).await?;
        let l: HookList = ctx.ask(&client, pnn, FAILOVERD, LIST_HOOKS, &()).await?;
        if !l.dir_exists {
            return unknown_component(component);
        }
        let text: String = l
            .scripts
            .iter()
            .map(|s| format!("{} {}\n", if s.enabled { '*' } else { ' ' }, s.name))
            .collect();
        emit(&text)
    })
}

fn set(ctx: &Globals, component: &str, script: &str, enabled: bool) -> Result<()> {
    if component != COMPONENT {
        return unknown_component(component);
    }
    block_on(async {
        let (client, _incoming) = ctx.connect().await?;
        let pnn = ctx.one_node(&client).await?;
        let req = SetHook {
            name: script.to_string(),
            enabled,
        };
        let r: Result<()> = ctx.ask(&client, pnn, FAILOVERD, SET_HOOK, &req).await;
        if let Err(e) = r {
            // ctdb prints its refusal on stdout.
            emit(&format!("{e:#}\n"))?;
            return Err(Exit(1).into());
        }
        Ok(())
    })
}

fn run_event(ctx: &Globals, component: &str, event: &str, args: &[String]) -> Result<()> {
    if component != COMPONENT {
        return unknown_component(component);
    }
    block_on(async {
        let (client, _incoming) = ctx.connect().await?;
        let pnn = ctx.one_node(&client).await?;
        let mut all = vec![event.to_string()];
        all.extend_from_slice(args);
        let s: HookStatus = ctx
            .ask(&client, pnn, FAILOVERD, RUN_EVENT, &RunEvent { args: all })
            .await?;
        if !s.dir_exists {
            return unknown_component(component);
        }
        if s.scripts.iter().any(|r| r.state == "TIMEDOUT") {
            emit(&format!("Event {event} in {component} timed out\n"))?;
            return Err(Exit(1).into());
        }
        if s.scripts
            .iter()
            .any(|r| r.state != "OK" && r.state != "DISABLED")
        {
            emit(&format!("Event {event} in {component} failed\n"))?;
            return Err(Exit(1).into());
        }
        Ok(())
    })
}

/// `ctime(3)`: `Mon Dec  7 14:50:00 2026\n`, in local time.
pub(crate) fn ctime(unix_ms: u64) -> String {
    let secs = libc::time_t::try_from(unix_ms / 1000).unwrap_or(0);
    // SAFETY: `tm` is a plain C struct for which all-zero is valid;
    // localtime_r writes only into it and reads `secs`; both live for the
    // call. A null return (an impossible time) leaves it zeroed.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            return "?\n".to_string();
        }
        tm
    };
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let day = usize::try_from(tm.tm_wday).ok().and_then(|d| DAYS.get(d));
    let month = usize::try_from(tm.tm_mon).ok().and_then(|m| MONTHS.get(m));
    format!(
        "{} {} {:>2} {:02}:{:02}:{:02} {}\n",
        day.unwrap_or(&"?"),
        month.unwrap_or(&"?"),
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        i64::from(tm.tm_year) + 1900
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctime_reads_as_the_c_library_prints_it() {
        // 2026-12-07 14:50:00 UTC; the test runs with the host's zone, so
        // only the shape is checked, and the UTC value when TZ is UTC.
        let t = ctime(1_796_655_000_000);
        assert!(t.ends_with(" 2026\n"), "{t}");
        assert_eq!(t.len(), 25, "{t:?}");
        if std::env::var("TZ").is_ok_and(|z| z == "UTC") {
            assert_eq!(t, "Mon Dec  7 14:50:00 2026\n");
        }
    }
}
