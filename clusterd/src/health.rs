//! The optional health monitor (CTDB's monitor event, simplified): a command
//! run every `interval`; exit status 0 within `timeout` means healthy,
//! anything else (failure, timeout, cannot start) unhealthy. Each change is
//! sent to the shell as [`Input::Health`], which sets or clears UNHEALTHY.

use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::mpsc;

use crate::shell::Input;

/// A health check command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Time between the end of one run and the start of the next.
    pub interval: Duration,
    /// A run that takes longer is killed and counts as a failure.
    pub timeout: Duration,
}

impl HealthCheck {
    /// A check from a command line split on blanks (no quoting, like the
    /// cluster lock's `!` form); `None` for an empty line.
    #[must_use]
    pub fn from_command(line: &str, interval: Duration, timeout: Duration) -> Option<Self> {
        let mut words = line.split_whitespace();
        let program = words.next()?;
        Some(Self {
            program: program.into(),
            args: words.map(str::to_string).collect(),
            interval,
            timeout,
        })
    }

    /// Runs the check once: true when it exits 0 within the timeout.
    pub async fn run_once(&self) -> bool {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        // Not on the heartbeats' thread (see spawn_off_thread).
        let child = crate::lock::spawn_off_thread(cmd).await;
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(program = %self.program.display(), error = %e, "health check cannot start");
                return false;
            }
        };
        match tokio::time::timeout(self.timeout, child.wait()).await {
            Ok(Ok(status)) => status.success(),
            Ok(Err(_)) => false,
            Err(_) => {
                tracing::warn!(program = %self.program.display(), "health check timed out");
                let _ = child.start_kill();
                let _ = child.wait().await;
                false
            }
        }
    }
}

/// Runs `check` until `shutdown` resolves or the shell's input closes,
/// sending [`Input::Health`] on the first result and on every change.
pub async fn monitor(
    check: HealthCheck,
    inputs: mpsc::Sender<Input>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut last: Option<bool> = None;
    loop {
        let ok = tokio::select! {
            () = &mut shutdown => return,
            ok = check.run_once() => ok,
        };
        if last != Some(ok) {
            last = Some(ok);
            if inputs.send(Input::Health(ok)).await.is_err() {
                return;
            }
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(check.interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next(rx: &mut mpsc::Receiver<Input>) -> bool {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(Input::Health(ok))) => ok,
            other => panic!("expected a health input, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn reports_changes_only() {
        let dir = std::env::temp_dir().join(format!("clusterd-health-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let flag = dir.join("healthy");
        let check = HealthCheck::from_command(
            &format!("test -e {}", flag.display()),
            Duration::from_millis(10),
            Duration::from_secs(5),
        )
        .unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(monitor(check, tx, async {
            let _ = stop_rx.await;
        }));
        assert!(!next(&mut rx).await, "no flag file: unhealthy");
        std::fs::write(&flag, b"").unwrap();
        assert!(next(&mut rx).await, "flag file: healthy");
        std::fs::remove_file(&flag).unwrap();
        assert!(!next(&mut rx).await, "unhealthy again");
        stop_tx.send(()).unwrap();
        task.await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn timeout_and_missing_program_are_failures() {
        let slow = HealthCheck::from_command("sleep 5", Duration::ZERO, Duration::from_millis(50))
            .unwrap();
        assert!(!slow.run_once().await);
        let missing =
            HealthCheck::from_command("/nonexistent/check", Duration::ZERO, Duration::from_secs(1))
                .unwrap();
        assert!(!missing.run_once().await);
        let ok = HealthCheck::from_command("true", Duration::ZERO, Duration::from_secs(5)).unwrap();
        assert!(ok.run_once().await);
        assert!(HealthCheck::from_command("   ", Duration::ZERO, Duration::ZERO).is_none());
    }
}
