//! Node commands that ctdb scripts call: `version`, `getpid`, `runstate`,
//! `shutdown`, `checktcpport` — each with ctdb's output and exit status.

use anyhow::{anyhow, bail, Result};
use transport::msg::master::{MasterStatus, GET_STATUS};
use transport::proto::control::SHUTDOWN;
use transport::proto::service::MASTERD;

use crate::ctx::{block_on, Exit, Globals};
use crate::output::emit;

/// `runstate [STATE...]`.
#[derive(Debug, clap::Args)]
pub struct RunstateArgs {
    /// Succeed only in one of these states (`setup`, `first_recovery`,
    /// `startup`, `running`, ...; any case).
    pub states: Vec<String>,
}

/// `checktcpport PORT`.
#[derive(Debug, clap::Args)]
pub struct ChecktcpportArgs {
    /// The TCP port.
    pub port: u16,
}

/// ctdb's run states, in order.
const RUNSTATES: &[&str] = &[
    "UNKNOWN",
    "INIT",
    "SETUP",
    "FIRST_RECOVERY",
    "STARTUP",
    "RUNNING",
    "SHUTDOWN",
];

/// `version`: this command's version (ctdb prints Samba's).
pub fn version() -> Result<()> {
    emit(&format!("{}\n", env!("CARGO_PKG_VERSION")))
}

async fn master_status(ctx: &Globals) -> Result<MasterStatus> {
    let (client, _incoming) = ctx.connect().await?;
    let pnn = ctx.one_node(&client).await?;
    ctx.ask(&client, pnn, MASTERD, GET_STATUS, &()).await
}

/// `getpid`: the pid of the node's masterd (the process that runs and
/// supervises the node's daemons, as ctdbd is on a CTDB node).
///
/// # Errors
///
/// No transportd or masterd.
pub fn getpid(ctx: &Globals) -> Result<()> {
    block_on(async {
        let s = master_status(ctx).await?;
        emit(&format!("{}\n", s.pid))
    })
}

/// The node's run state in ctdb's words: RUNNING once every daemon has
/// answered since masterd started, STARTUP before.
fn runstate_of(s: &MasterStatus) -> &'static str {
    if s.ready {
        "RUNNING"
    } else {
        "STARTUP"
    }
}

/// `runstate [STATE...]`: prints the state; with states given, exit 1
/// (`CTDB not in required run state (got STARTUP)`) unless it is one.
///
/// # Errors
///
/// No transportd or masterd; an unknown state name.
pub fn runstate(ctx: &Globals, args: &RunstateArgs) -> Result<()> {
    for s in &args.states {
        if !RUNSTATES.iter().any(|r| r.eq_ignore_ascii_case(s)) || s.eq_ignore_ascii_case("UNKNOWN")
        {
            emit(&format!("Invalid run state ({s})\n"))?;
            return Err(Exit(1).into());
        }
    }
    block_on(async {
        let state = runstate_of(&master_status(ctx).await?);
        if !args.states.is_empty() && !args.states.iter().any(|s| s.eq_ignore_ascii_case(state)) {
            emit(&format!("CTDB not in required run state (got {state})\n"))?;
            return Err(Exit(1).into());
        }
        emit(&format!("{state}\n"))
    })
}

/// `(DDD HH:MM:SS)`, ctdb's age of a time.
fn age(ms: u64) -> String {
    let t = ms / 1000;
    format!(
        "({:03} {:02}:{:02}:{:02})",
        t / 86_400,
        t / 3600 % 24,
        t / 60 % 60,
        t % 60
    )
}

/// `uptime`: ctdb's four lines: the node's time, when its masterd started,
/// when the last membership change's takeover run ended, and how long
/// that took from the change (`in progress` while it runs).
///
/// # Errors
///
/// No transportd, masterd or failoverd.
pub fn uptime(ctx: &Globals) -> Result<()> {
    use transport::msg::failover::{RunTimes, GET_RUN_TIMES};
    use transport::proto::service::FAILOVERD;
    block_on(async {
        let (client, _incoming) = ctx.connect().await?;
        let pnn = ctx.one_node(&client).await?;
        let m: MasterStatus = ctx.ask(&client, pnn, MASTERD, GET_STATUS, &()).await?;
        let t: RunTimes = ctx.ask(&client, pnn, FAILOVERD, GET_RUN_TIMES, &()).await?;
        let now = t.now_unix_ms;
        let started = now.saturating_sub(m.uptime_ms);
        let mut out = format!(
            "Current time of node {pnn:<4}     :                {}",
            crate::event::ctime(now)
        );
        out.push_str(&format!(
            "Ctdbd start time              : {} {}",
            age(m.uptime_ms),
            crate::event::ctime(started)
        ));
        let last = t.run_done_unix_ms.or(t.changed_unix_ms).unwrap_or(started);
        out.push_str(&format!(
            "Time of last recovery/failover: {} {}",
            age(now.saturating_sub(last)),
            crate::event::ctime(last)
        ));
        match (t.changed_unix_ms, t.run_done_unix_ms) {
            (Some(c), Some(d)) => {
                #[allow(clippy::cast_precision_loss)] // milliseconds of a run
                let secs = d.saturating_sub(c) as f64 / 1000.0;
                out.push_str(&format!(
                    "Duration of last recovery/failover: {secs:.6} seconds\n"
                ));
            }
            _ => out.push_str("Duration of last recovery/failover: in progress\n"),
        }
        emit(&out)
    })
}

async fn cluster_settings(ctx: &Globals) -> Result<transport::msg::cluster::ClusterSettings> {
    use transport::msg::cluster::GET_SETTINGS;
    use transport::proto::service::CLUSTERD;
    let (client, _incoming) = ctx.connect().await?;
    let pnn = ctx.one_node(&client).await?;
    ctx.ask(&client, pnn, CLUSTERD, GET_SETTINGS, &()).await
}

/// `getcapabilities`: ctdb's `LEADER: YES|NO` and `LMASTER: NO` (there
/// are no databases to be a location master of); `-X`:
/// `|LEADER|LMASTER|` then `|1|0|`.
///
/// # Errors
///
/// No transportd or clusterd.
pub fn getcapabilities(ctx: &Globals) -> Result<()> {
    block_on(async {
        let s = cluster_settings(ctx).await?;
        let text = match ctx.format {
            crate::output::Format::Machine(sep) => format!(
                "{sep}LEADER{sep}LMASTER{sep}\n{sep}{}{sep}0{sep}\n",
                u8::from(s.can_lead)
            ),
            crate::output::Format::Json => format!(
                "{:#}\n",
                serde_json::json!({ "leader": s.can_lead, "lmaster": false })
            ),
            crate::output::Format::Human => format!(
                "LEADER: {}\nLMASTER: NO\n",
                if s.can_lead { "YES" } else { "NO" }
            ),
        };
        emit(&text)
    })
}

/// `getreclock`: the cluster lock setting as CTDB writes it, nothing
/// without one.
///
/// # Errors
///
/// No transportd or clusterd.
pub fn getreclock(ctx: &Globals) -> Result<()> {
    block_on(async {
        let s = cluster_settings(ctx).await?;
        match s.cluster_lock {
            Some(l) => emit(&format!("{l}\n")),
            None => Ok(()),
        }
    })
}

/// `shutdown`: stops ipfailover on the node (masterd stops every daemon,
/// the node's addresses are released first). On this node the command
/// returns once transportd has gone away.
///
/// # Errors
///
/// No transportd or masterd; masterd refuses (the group may not).
pub fn shutdown(ctx: &Globals) -> Result<()> {
    block_on(async {
        let (client, _incoming) = ctx.connect().await?;
        let pnn = ctx.one_node(&client).await?;
        let local = pnn == client.pnn();
        let closed = client.closed();
        let () = ctx
            .ask(&client, pnn, MASTERD, SHUTDOWN, &())
            .await
            .map_err(|e| anyhow!("Unable to shutdown node {pnn}: {e:#}"))?;
        if local {
            // masterd stops every daemon, transportd last: our connection
            // closes then. Bounded like every request.
            if tokio::time::timeout(ctx.timeout.max(std::time::Duration::from_secs(30)), closed)
                .await
                .is_err()
            {
                bail!("node {pnn} is still running after the shutdown request");
            }
        }
        Ok(())
    })
}

/// `checktcpport PORT`: can a TCP socket bind the port on every IPv4
/// address of this host? ctdb's messages and status (the errno).
///
/// # Errors
///
/// `Failed to bind to TCP port N` (exit status: the errno, e.g. 98).
pub fn checktcpport(args: &ChecktcpportArgs) -> Result<()> {
    match std::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, args.port)) {
        Ok(_) => Ok(()),
        Err(e) => {
            eprintln!("Failed to bind to TCP port {}", args.port);
            let code = e
                .raw_os_error()
                .and_then(|c| u8::try_from(c).ok())
                .unwrap_or(1);
            Err(Exit(code).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_fails_with_eaddrinuse() {
        let held = std::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let port = held.local_addr().unwrap().port();
        let err = checktcpport(&ChecktcpportArgs { port }).unwrap_err();
        // EADDRINUSE on Linux, ctdb's exit status.
        assert_eq!(err.downcast_ref::<Exit>(), Some(&Exit(98)));
        drop(held);
        assert!(checktcpport(&ChecktcpportArgs { port }).is_ok());
    }
}
