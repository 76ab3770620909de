//! Event hooks: the executables of the hooks directory, run in name order
//! with CTDB's event arguments, so that existing NFS/SMB glue keeps working:
//!
//! ```text
//! HOOK takeip IFACE ADDRESS PREFIX
//! HOOK releaseip IFACE ADDRESS PREFIX
//! HOOK updateip OLDIFACE NEWIFACE ADDRESS PREFIX
//! HOOK ipreallocated
//! ```
//!
//! Policy (documented in docs/failoverd.md): every executable regular file
//! of the directory runs, one after the other, in byte order of its name;
//! files whose name starts with `.` or ends with `~` are skipped, as are
//! files without an execute bit. Each run has a time limit; a hook that
//! overruns is killed (SIGKILL). A hook that fails (non-zero exit, signal,
//! time-out, cannot be started) is logged, recorded in the executor's
//! status and reported as a [`super::NodeEvent::HookFailed`]; the remaining
//! hooks still run and the address operation stands (the address stays
//! taken or released): hooks adapt services to the address, they do not
//! veto it. A missing directory means no hooks.

use std::fmt;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use tokio::process::Command;

/// One event and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookEvent {
    /// An address was added.
    TakeIp {
        /// Its interface.
        iface: String,
        /// The address.
        addr: IpAddr,
        /// Its prefix length.
        prefix: u8,
    },
    /// An address was removed.
    ReleaseIp {
        /// Its interface.
        iface: String,
        /// The address.
        addr: IpAddr,
        /// Its prefix length.
        prefix: u8,
    },
    /// An address moved between interfaces of this node.
    UpdateIp {
        /// The interface it was on.
        old_iface: String,
        /// The interface it is on now.
        new_iface: String,
        /// The address.
        addr: IpAddr,
        /// Its prefix length.
        prefix: u8,
    },
    /// A takeover run has ended.
    IpReallocated,
    /// Run by hand (`ipfailover event run`): the event name and its
    /// arguments as given.
    ByHand(Vec<String>),
}

impl HookEvent {
    /// The command-line arguments, exactly as CTDB passes them.
    pub fn args(&self) -> Vec<String> {
        match self {
            HookEvent::TakeIp {
                iface,
                addr,
                prefix,
            } => vec![
                "takeip".into(),
                iface.clone(),
                addr.to_string(),
                prefix.to_string(),
            ],
            HookEvent::ReleaseIp {
                iface,
                addr,
                prefix,
            } => vec![
                "releaseip".into(),
                iface.clone(),
                addr.to_string(),
                prefix.to_string(),
            ],
            HookEvent::UpdateIp {
                old_iface,
                new_iface,
                addr,
                prefix,
            } => vec![
                "updateip".into(),
                old_iface.clone(),
                new_iface.clone(),
                addr.to_string(),
                prefix.to_string(),
            ],
            HookEvent::IpReallocated => vec!["ipreallocated".into()],
            HookEvent::ByHand(args) => args.clone(),
        }
    }

    /// The event's name (`takeip`, ...), as `event status` asks for it.
    pub fn name(&self) -> String {
        self.args().into_iter().next().unwrap_or_default()
    }
}

impl fmt::Display for HookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.args().join(" "))
    }
}

/// One hook that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookFailure {
    /// The executable.
    pub hook: PathBuf,
    /// The event with its arguments (`takeip eth0 192.0.2.1 24`).
    pub event: String,
    /// What went wrong (`exit status 3`, `killed by signal 9`,
    /// `timed out after 30000 ms`, `cannot start: ...`).
    pub reason: String,
}

impl fmt::Display for HookFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "hook {} {}: {}",
            self.hook.display(),
            self.event,
            self.reason
        )
    }
}

/// How one hook of an event ended, in the words of CTDB's `event status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptResult {
    /// Exit status 0.
    Ok,
    /// Non-zero exit or a signal (the reason).
    Error(String),
    /// Killed at the time limit.
    TimedOut,
    /// Could not be started (the reason).
    CannotRun(String),
    /// In the directory but not executable: not run.
    Disabled,
}

impl ScriptResult {
    /// CTDB's word for it.
    pub fn word(&self) -> &'static str {
        match self {
            ScriptResult::Ok => "OK",
            ScriptResult::Error(_) => "ERROR",
            ScriptResult::TimedOut => "TIMEDOUT",
            ScriptResult::CannotRun(_) => "CANNOT RUN",
            ScriptResult::Disabled => "DISABLED",
        }
    }
}

/// One hook's part in one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptRun {
    /// The file name in the hooks directory.
    pub name: String,
    /// When it started (wall clock).
    pub begin: SystemTime,
    /// How long it ran.
    pub duration: Duration,
    /// How it ended.
    pub result: ScriptResult,
}

/// What one event's hooks did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookOutcome {
    /// Hooks run (successful or not).
    pub ran: usize,
    /// Those that failed.
    pub failures: Vec<HookFailure>,
    /// Every file of the directory, in order: how it ran or that it is
    /// disabled.
    pub scripts: Vec<ScriptRun>,
}

/// The hooks directory and the time limit of one hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hooks {
    dir: Option<PathBuf>,
    timeout: Duration,
    /// Added to every hook's environment (the private `ctdb`).
    env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
}

impl Hooks {
    /// Hooks in `dir` (`None`: none at all), each limited to `timeout`.
    pub fn new(dir: Option<PathBuf>, timeout: Duration) -> Hooks {
        Hooks {
            dir,
            timeout,
            env: Vec::new(),
        }
    }

    /// The same hooks, run with `env` added to their environment
    /// (`config::ctdb_shim::setup`: a `ctdb` first on their `PATH`).
    #[must_use]
    pub fn with_env(mut self, env: Vec<(std::ffi::OsString, std::ffi::OsString)>) -> Hooks {
        self.env = env;
        self
    }

    /// The hooks directory, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Every hook file of the directory, in name order, and whether it is
    /// enabled (executable). Names that start with `.` or end with `~` and
    /// anything that is not a regular file are left out. A missing or
    /// unreadable directory gives none.
    pub fn entries(&self) -> Vec<(PathBuf, bool)> {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut hooks: Vec<(PathBuf, bool)> = entries
            .filter_map(Result::ok)
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                !name.starts_with('.') && !name.ends_with('~')
            })
            .map(|e| e.path())
            .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file()))
            .map(|p| {
                let x = is_executable(&p);
                (p, x)
            })
            .collect();
        hooks.sort();
        hooks
    }

    /// The executables that would run, in order.
    pub fn list(&self) -> Vec<PathBuf> {
        self.entries()
            .into_iter()
            .filter_map(|(p, x)| x.then_some(p))
            .collect()
    }

    /// Enables (sets the execute bits that reading allows) or disables
    /// (clears every execute bit) hook `name` of the directory, as ctdb's
    /// `event script enable|disable` does for a legacy script.
    ///
    /// # Errors
    ///
    /// `Script NAME does not exist in legacy` (no such file, or a name
    /// with a `/`), or the chmod's error.
    pub fn set_enabled(&self, name: &str, enabled: bool) -> Result<(), String> {
        let missing = || format!("Script {name} does not exist in legacy");
        let Some(dir) = &self.dir else {
            return Err(missing());
        };
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(missing());
        }
        let path = dir.join(name);
        let meta = std::fs::metadata(&path).map_err(|_| missing())?;
        if !meta.is_file() {
            return Err(format!("Script {} is not a file or a link", path.display()));
        }
        let mode = meta.permissions().mode();
        // Execute where read is allowed (chmod +x under a 022 umask).
        let new = if enabled {
            mode | ((mode & 0o444) >> 2)
        } else {
            mode & !0o111
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(new))
            .map_err(|e| format!("cannot change {}: {e}", path.display()))
    }

    /// Runs every hook for `event`, one after the other.
    pub async fn run(&self, event: &HookEvent) -> HookOutcome {
        let mut outcome = HookOutcome::default();
        let args = event.args();
        for (hook, enabled) in self.entries() {
            let name = hook
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let begin = SystemTime::now();
            if !enabled {
                outcome.scripts.push(ScriptRun {
                    name,
                    begin,
                    duration: Duration::ZERO,
                    result: ScriptResult::Disabled,
                });
                continue;
            }
            outcome.ran += 1;
            let started = Instant::now();
            let result = self.run_one(&hook, &args).await;
            let duration = started.elapsed();
            if let Err((reason, _)) = &result {
                let failure = HookFailure {
                    hook,
                    event: event.to_string(),
                    reason: reason.clone(),
                };
                tracing::warn!("{failure}");
                outcome.failures.push(failure);
            } else {
                tracing::debug!(hook = %hook.display(), %event, "hook succeeded");
            }
            outcome.scripts.push(ScriptRun {
                name,
                begin,
                duration,
                result: match result {
                    Ok(()) => ScriptResult::Ok,
                    Err((_, r)) => r,
                },
            });
        }
        outcome
    }

    /// Runs one hook; a failure is its reason and how CTDB would call it.
    async fn run_one(&self, hook: &Path, args: &[String]) -> Result<(), (String, ScriptResult)> {
        let mut child = Command::new(hook)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                let r = format!("cannot start: {e}");
                (r.clone(), ScriptResult::CannotRun(e.to_string()))
            })?;
        match tokio::time::timeout(self.timeout, child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => {
                let r = match status.code() {
                    Some(code) => format!("exit status {code}"),
                    None => {
                        use std::os::unix::process::ExitStatusExt;
                        format!("killed by signal {}", status.signal().unwrap_or(0))
                    }
                };
                Err((r.clone(), ScriptResult::Error(r)))
            }
            Ok(Err(e)) => {
                let r = format!("cannot wait: {e}");
                Err((r.clone(), ScriptResult::Error(r)))
            }
            Err(_) => {
                // Best effort: the child may have exited just now.
                let _ = child.kill().await;
                let r = format!("timed out after {} ms", self.timeout.as_millis());
                Err((r, ScriptResult::TimedOut))
            }
        }
    }
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_ctdbs() {
        let addr: IpAddr = "192.0.2.1".parse().unwrap();
        let take = HookEvent::TakeIp {
            iface: "eth0".into(),
            addr,
            prefix: 24,
        };
        assert_eq!(take.args(), ["takeip", "eth0", "192.0.2.1", "24"]);
        let rel = HookEvent::ReleaseIp {
            iface: "eth1".into(),
            addr,
            prefix: 24,
        };
        assert_eq!(rel.args(), ["releaseip", "eth1", "192.0.2.1", "24"]);
        let upd = HookEvent::UpdateIp {
            old_iface: "eth0".into(),
            new_iface: "eth1".into(),
            addr: "2001:db8::1".parse().unwrap(),
            prefix: 64,
        };
        assert_eq!(
            upd.args(),
            ["updateip", "eth0", "eth1", "2001:db8::1", "64"]
        );
        assert_eq!(HookEvent::IpReallocated.args(), ["ipreallocated"]);
        assert_eq!(take.to_string(), "takeip eth0 192.0.2.1 24");
    }

    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("ipf-hooks-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn script(dir: &Path, name: &str, body: &str, mode: u32) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn run_in_name_order_with_arguments_skipping_non_executables() {
        let d = dir("order");
        let log = d.0.join("log");
        let body = format!("echo \"$(basename \"$0\") $*\" >> {}", log.display());
        script(&d.0, "20.second", &body, 0o755);
        script(&d.0, "10.first", &body, 0o755);
        script(&d.0, "15.notexec", &body, 0o644);
        script(&d.0, ".hidden", &body, 0o755);
        script(&d.0, "30.backup~", &body, 0o755);
        let hooks = Hooks::new(Some(d.0.clone()), Duration::from_secs(5));
        let ev = HookEvent::ReleaseIp {
            iface: "eth0".into(),
            addr: "192.0.2.7".parse().unwrap(),
            prefix: 24,
        };
        let out = runtime().block_on(hooks.run(&ev));
        assert_eq!(out.ran, 2);
        assert!(out.failures.is_empty(), "{:?}", out.failures);
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            text,
            "10.first releaseip eth0 192.0.2.7 24\n20.second releaseip eth0 192.0.2.7 24\n"
        );
    }

    #[test]
    fn failures_and_timeouts_are_reported_and_the_rest_still_runs() {
        let d = dir("fail");
        let log = d.0.join("log");
        script(&d.0, "10.exit3", "exit 3", 0o755);
        script(&d.0, "20.slow", "exec sleep 10", 0o755);
        script(
            &d.0,
            "30.ok",
            &format!("echo ran >> {}", log.display()),
            0o755,
        );
        let hooks = Hooks::new(Some(d.0.clone()), Duration::from_millis(200));
        let out = runtime().block_on(hooks.run(&HookEvent::IpReallocated));
        assert_eq!(out.ran, 3);
        let reasons: Vec<&str> = out.failures.iter().map(|f| f.reason.as_str()).collect();
        assert_eq!(reasons, ["exit status 3", "timed out after 200 ms"]);
        assert_eq!(out.failures[0].event, "ipreallocated");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "ran\n");
    }

    #[test]
    fn missing_directory_means_no_hooks() {
        let hooks = Hooks::new(
            Some(PathBuf::from("/nonexistent/ipfailover/hooks")),
            Duration::from_secs(1),
        );
        assert!(hooks.list().is_empty());
        assert!(Hooks::new(None, Duration::from_secs(1)).list().is_empty());
        let out = runtime().block_on(hooks.run(&HookEvent::IpReallocated));
        assert_eq!(out, HookOutcome::default());
    }
}
