//! The multi-process model: each daemon is a child process
//! (`BIN_DIR/<name> --config-dir DIR`), restarted with backoff when it
//! exits on its own ([`crate::supervisor`]).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use transport::controls::LogLevelHook;
use transport::msg::master::{DaemonState, DaemonStatus, Model};
use transport::tdaemon::Reloads;

use crate::backoff::Backoff;
use crate::service::{self, MasterState};
use crate::setup::NodeConfig;
use crate::supervisor::{self, ChildSpec, ChildState, ChildStatus};
use crate::{MasterError, Settings};

/// The directory of masterd's own executable: where the daemons are
/// installed beside it (/usr/libexec/ipfailover, or target/<profile>).
///
/// # Errors
///
/// [`MasterError::OwnExe`].
pub fn default_bin_dir() -> Result<PathBuf, MasterError> {
    let exe = std::env::current_exe().map_err(MasterError::OwnExe)?;
    Ok(exe
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf))
}

/// The child specs of `opts.daemons`, checking each binary exists.
///
/// # Errors
///
/// [`MasterError::MissingBinary`] for the first daemon without a binary.
pub fn specs(
    opts: &Settings,
    bin_dir: &Path,
    config_dir: &Path,
    realtime: u8,
) -> Result<Vec<ChildSpec>, MasterError> {
    opts.daemons
        .iter()
        .map(|d| {
            let program = bin_dir.join(d.name);
            if !program.is_file() {
                return Err(MasterError::MissingBinary {
                    daemon: d.name.to_owned(),
                    path: program,
                });
            }
            // The heartbeat and lease path: clusterd, the transport that
            // carries its heartbeats and LEASE news, and failoverd, which
            // renews the kernel lease. conntrackd's bulk work stays normal.
            // clusterd and transportd one step above failoverd: failoverd's
            // bulk work (address and nftables batches, socket dumps) must
            // not delay a heartbeat.
            let priority = match d.name {
                "failoverd" => realtime,
                "transportd" | "clusterd" if realtime > 0 => realtime.saturating_add(1).min(99),
                _ => 0,
            };
            Ok(ChildSpec {
                name: d.name.to_owned(),
                program,
                args: vec!["--config-dir".into(), config_dir.as_os_str().to_owned()],
                realtime: priority,
            })
        })
        .collect()
}

/// The wire form of a supervised child's status.
pub fn to_status(c: &ChildStatus) -> DaemonStatus {
    let (state, pid) = match c.state {
        ChildState::Running { pid } => (DaemonState::Running, Some(pid)),
        ChildState::Restarting => (DaemonState::Restarting, None),
        ChildState::FailedToStart => (DaemonState::FailedToStart, None),
        ChildState::Stopped => (DaemonState::Stopped, None),
    };
    DaemonStatus {
        name: c.name.clone(),
        state,
        pid,
        restarts: c.restarts,
        last_exit: c.last_exit.clone(),
    }
}

/// Runs the node's daemons as child processes until `shutdown` completes or
/// a SHUTDOWN control reaches masterd; then stops them in reverse order.
///
/// # Errors
///
/// [`MasterError::MissingBinary`] before anything is started.
pub async fn run(
    cfg: NodeConfig,
    opts: Settings,
    bin_dir: &Path,
    log_hook: Option<LogLevelHook>,
    reloads: Reloads,
    shutdown: impl Future<Output = ()>,
) -> Result<(), MasterError> {
    let realtime = cfg.loaded.config.cluster.realtime_priority;
    let specs = specs(&opts, bin_dir, cfg.dir(), realtime)?;
    let handle = supervisor::start(specs, Backoff::default(), opts.stop_grace);
    let children = handle.view();
    let reload_task = tokio::spawn(crate::reload::serve(
        cfg.dir().to_path_buf(),
        cfg.loaded.config.logging.level.clone(),
        log_hook.clone(),
        reloads,
        move || hang_up(&children),
    ));
    let view = handle.view();
    let shared = MasterState::new(
        Model::MultiProcess,
        Arc::new(move || view.get().iter().map(to_status).collect()),
    );
    service::serve_until_stopped(
        cfg.socket(),
        opts.daemons.clone(),
        shared,
        log_hook,
        cfg.metrics_listen(),
        shutdown,
        handle.shutdown(),
    )
    .await;
    reload_task.abort();
    Ok(())
}

/// Sends SIGHUP to every running child (each daemon handles it: the
/// skeleton's [`transport::tdaemon::hangup_reloads`], transportd's own).
fn hang_up(children: &supervisor::StatusView) {
    for c in children.get() {
        if let ChildState::Running { pid } = c.state {
            let Ok(raw) = i32::try_from(pid) else {
                continue;
            };
            if let Err(e) = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(raw),
                nix::sys::signal::Signal::SIGHUP,
            ) {
                tracing::warn!(daemon = %c.name, pid, error = %e, "cannot send SIGHUP");
            }
        }
    }
}
