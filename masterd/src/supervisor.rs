//! Starts daemons as child processes and keeps them running.
//!
//! Each child has a task that owns its process: it starts it, waits for it,
//! and when it exits without being asked to, logs the exit and starts it again
//! after the [`Backoff`] delay. [`SupervisorHandle::shutdown`] stops the
//! children in the reverse order of their start (SIGTERM, then SIGKILL after a
//! grace period), so that failoverd can release its addresses while the
//! transport under it still runs. Children get `PR_SET_PDEATHSIG` SIGKILL:
//! when masterd dies, so do they.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backoff::Backoff;

/// What to run for one daemon.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// The daemon's name, for logs and status (`transportd`, ...).
    pub name: String,
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Real-time priority (SCHED_RR) to start it at, 0 for none. Set with
    /// `SCHED_RESET_ON_FORK`: what the daemon starts (hooks, lock helpers)
    /// runs at normal priority.
    pub realtime: u8,
}

/// What a supervised daemon is doing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildState {
    /// Running with this pid.
    Running {
        /// The process id.
        pid: u32,
    },
    /// Exited; waiting for the backoff delay before the next start.
    Restarting,
    /// Could not be started; retrying after the backoff delay.
    FailedToStart,
    /// Stopped on request.
    Stopped,
}

/// One daemon's status, as `ipfailover` reports it.
#[derive(Debug, Clone)]
pub struct ChildStatus {
    /// The daemon's name.
    pub name: String,
    /// Its state.
    pub state: ChildState,
    /// How many times it was restarted after an unrequested exit.
    pub restarts: u32,
    /// How it last exited, if it did.
    pub last_exit: Option<String>,
}

/// The front of a running supervisor.
#[derive(Debug)]
pub struct SupervisorHandle {
    status: Arc<Mutex<Vec<ChildStatus>>>,
    children: Vec<(watch::Sender<bool>, JoinHandle<()>)>,
}

/// Starts every child (in order) and supervises them until
/// [`SupervisorHandle::shutdown`].
///
/// Must be called inside a tokio runtime.
pub fn start(specs: Vec<ChildSpec>, backoff: Backoff, grace: Duration) -> SupervisorHandle {
    let status = Arc::new(Mutex::new(
        specs
            .iter()
            .map(|s| ChildStatus {
                name: s.name.clone(),
                state: ChildState::Restarting,
                restarts: 0,
                last_exit: None,
            })
            .collect::<Vec<_>>(),
    ));
    let children = specs
        .into_iter()
        .enumerate()
        .map(|(index, spec)| {
            let (stop_tx, stop_rx) = watch::channel(false);
            let task = tokio::spawn(supervise(
                spec,
                index,
                backoff.clone(),
                grace,
                Arc::clone(&status),
                stop_rx,
            ));
            (stop_tx, task)
        })
        .collect();
    SupervisorHandle { status, children }
}

/// A cloneable view of the children's status that outlives
/// [`SupervisorHandle::shutdown`] (for the status service).
#[derive(Debug, Clone)]
pub struct StatusView(Arc<Mutex<Vec<ChildStatus>>>);

impl StatusView {
    /// A snapshot of every child's status, in start order.
    pub fn get(&self) -> Vec<ChildStatus> {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl SupervisorHandle {
    /// A view of the status that stays valid after shutdown.
    pub fn view(&self) -> StatusView {
        StatusView(Arc::clone(&self.status))
    }

    /// A snapshot of every child's status, in start order.
    pub fn status(&self) -> Vec<ChildStatus> {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Stops the children in reverse start order and waits for each.
    pub async fn shutdown(self) {
        for (stop, task) in self.children.into_iter().rev() {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }
}

fn set_state(status: &Mutex<Vec<ChildStatus>>, index: usize, f: impl FnOnce(&mut ChildStatus)) {
    if let Ok(mut all) = status.lock() {
        if let Some(s) = all.get_mut(index) {
            f(s);
        }
    }
}

/// Logs whether a daemon started at real-time priority got it.
fn report_realtime(name: &str, pid: u32) {
    let Ok(pid) = i32::try_from(pid) else {
        return;
    };
    // SAFETY: a plain system call on a pid; no memory is passed.
    let policy = unsafe { libc::sched_getscheduler(pid) };
    if policy >= 0 && (policy & !libc::SCHED_RESET_ON_FORK) == libc::SCHED_RR {
        tracing::debug!(daemon = %name, pid, "running at real-time priority (SCHED_RR)");
    } else {
        tracing::warn!(daemon = %name, pid, "cannot run at real-time priority (needs CAP_SYS_NICE): normal scheduling");
    }
}

async fn supervise(
    spec: ChildSpec,
    index: usize,
    mut backoff: Backoff,
    grace: Duration,
    status: Arc<Mutex<Vec<ChildStatus>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut first = true;
    loop {
        if *stop.borrow() {
            break;
        }
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args);
        let realtime = spec.realtime;
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe system calls (prctl, signal,
        // sched_setscheduler), touching no memory shared with the parent.
        unsafe {
            cmd.pre_exec(move || {
                // If masterd dies (even by SIGKILL), its daemons die with it:
                // a restarted masterd must not find stale ones holding the
                // socket and the addresses.
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
                // A SIGHUP that masterd forwards before the daemon has
                // installed its handler is ignored instead of ending it
                // (the daemon reads the files as they are when it starts);
                // the handler it installs replaces the disposition, and
                // what it starts itself gets the default again at exec.
                libc::signal(libc::SIGHUP, libc::SIG_IGN);
                if realtime > 0 {
                    let param = libc::sched_param {
                        sched_priority: i32::from(realtime),
                    };
                    // Failure (no CAP_SYS_NICE) leaves normal scheduling;
                    // masterd reads the policy back and logs it.
                    libc::sched_setscheduler(
                        0,
                        libc::SCHED_RR | libc::SCHED_RESET_ON_FORK,
                        &raw const param,
                    );
                }
                Ok(())
            });
        }
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                tracing::error!(daemon = %spec.name, program = %spec.program.display(), error = %e, "cannot start daemon");
                set_state(&status, index, |s| {
                    s.state = ChildState::FailedToStart;
                    s.last_exit = Some(format!("cannot start: {e}"));
                });
                let delay = backoff.exited(Instant::now());
                if wait_or_stop(&mut stop, delay).await {
                    break;
                }
                continue;
            }
        };
        let pid = child.id().unwrap_or(0);
        backoff.started(Instant::now());
        set_state(&status, index, |s| {
            s.state = ChildState::Running { pid };
            if !first {
                s.restarts += 1;
            }
        });
        if spec.realtime > 0 {
            report_realtime(&spec.name, pid);
        }
        if first {
            tracing::info!(daemon = %spec.name, pid, "started");
        } else {
            tracing::warn!(daemon = %spec.name, pid, "restarted");
        }
        first = false;
        tokio::select! {
            exit = child.wait() => {
                let how = match exit {
                    Ok(st) => st.to_string(),
                    Err(e) => format!("wait failed: {e}"),
                };
                tracing::error!(daemon = %spec.name, pid, exit = %how, "daemon exited unexpectedly");
                set_state(&status, index, |s| {
                    s.state = ChildState::Restarting;
                    s.last_exit = Some(how);
                });
                let delay = backoff.exited(Instant::now());
                if wait_or_stop(&mut stop, delay).await {
                    break;
                }
            }
            _ = stop.changed() => {
                terminate(&spec.name, &mut child, pid, grace).await;
                break;
            }
        }
    }
    set_state(&status, index, |s| s.state = ChildState::Stopped);
}

/// Sleeps `delay` unless a stop arrives first; returns true when stopping.
async fn wait_or_stop(stop: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

async fn terminate(name: &str, child: &mut tokio::process::Child, pid: u32, grace: Duration) {
    if let Ok(raw) = i32::try_from(pid) {
        if raw > 0 {
            let _ = kill(Pid::from_raw(raw), Signal::SIGTERM);
        }
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(_) => tracing::info!(daemon = %name, pid, "stopped"),
        Err(_) => {
            tracing::warn!(daemon = %name, pid, ?grace, "did not stop in time; killing");
            let _ = child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(name: &str, script: &str) -> ChildSpec {
        ChildSpec {
            realtime: 0,
            name: name.into(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
        }
    }

    fn fast() -> Backoff {
        Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(40),
            Duration::from_secs(60),
        )
    }

    async fn wait_for(
        h: &SupervisorHandle,
        what: &str,
        f: impl Fn(&[ChildStatus]) -> bool,
    ) -> Vec<ChildStatus> {
        for _ in 0..500 {
            let s = h.status();
            if f(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}: {:?}", h.status());
    }

    #[tokio::test]
    async fn a_killed_daemon_is_restarted_and_counted() {
        let h = start(
            vec![sh("sleeper", "sleep 30")],
            fast(),
            Duration::from_secs(2),
        );
        let s = wait_for(&h, "first start", |s| {
            matches!(s[0].state, ChildState::Running { .. })
        })
        .await;
        let ChildState::Running { pid } = s[0].state else {
            unreachable!()
        };
        kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGKILL).unwrap();
        let s = wait_for(&h, "restart", |s| {
            s[0].restarts == 1 && matches!(s[0].state, ChildState::Running { pid: p } if p != pid)
        })
        .await;
        assert!(
            s[0].last_exit.as_deref().unwrap_or("").contains("9"),
            "{s:?}"
        );
        h.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_terminates_children_in_reverse_order() {
        let dir = std::env::temp_dir().join(format!("masterd-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("order");
        let script = |n: &str| {
            format!(
                "trap 'echo {n} >> {}; exit 0' TERM; while true; do sleep 0.05; done",
                log.display()
            )
        };
        let h = start(
            vec![
                sh("first", &script("first")),
                sh("second", &script("second")),
            ],
            fast(),
            Duration::from_secs(5),
        );
        wait_for(&h, "both running", |s| {
            s.iter()
                .all(|c| matches!(c.state, ChildState::Running { .. }))
        })
        .await;
        // Give the shells time to install their traps.
        tokio::time::sleep(Duration::from_millis(200)).await;
        h.shutdown().await;
        let order = std::fs::read_to_string(&log).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(order, "second\nfirst\n");
    }

    #[tokio::test]
    async fn a_missing_program_is_reported_not_fatal() {
        let h = start(
            vec![ChildSpec {
                realtime: 0,
                name: "ghost".into(),
                program: "/nonexistent/ghostd".into(),
                args: vec![],
            }],
            fast(),
            Duration::from_secs(1),
        );
        let s = wait_for(&h, "failure", |s| s[0].state == ChildState::FailedToStart).await;
        assert!(s[0]
            .last_exit
            .as_deref()
            .unwrap_or("")
            .contains("cannot start"));
        h.shutdown().await;
    }
}
