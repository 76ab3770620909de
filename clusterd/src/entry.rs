//! clusterd's entry point, shared by the `clusterd` binary and masterd's
//! single-process model: load the settings from a configuration directory
//! ([`load`]), then connect to the node's transportd and run until shutdown
//! ([`run`]). The binary adds only argument parsing, logging and a runtime;
//! masterd adds only its supervision, so both models run the same code.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use transport::controls::LogLevelHook;

use crate::daemon::{self, DaemonError, Settings};

/// How long clusterd waits for transportd's socket at start.
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(5);

/// clusterd's settings from the configuration directory `dir`
/// (`ipfailover.toml`, `nodes`; this node's PNN from the host's addresses
/// unless the file sets it).
///
/// # Errors
///
/// Any invalid setting or nodes-file problem, naming file and line.
pub fn load(dir: &Path) -> Result<Settings, DaemonError> {
    Settings::load(dir, None)
}

/// Connects to transportd (retrying for [`CONNECT_PATIENCE`] while it
/// starts), answers `LOG_LEVEL` with `log_hook`, and runs clusterd until
/// `shutdown` completes, a `SHUTDOWN` control arrives or transportd closes
/// the connection.
///
/// # Errors
///
/// [`DaemonError::Transport`] when transportd cannot be reached, and the
/// errors of [`daemon::run`].
pub async fn run(
    settings: Settings,
    log_hook: Option<LogLevelHook>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let (client, incoming) = daemon::connect(&settings.socket, CONNECT_PATIENCE).await?;
    // The registration ends with this future (returned, failed, panicked
    // or dropped), not when the last task it spawned drops its handle: in
    // masterd's single-process model the daemon is restarted in the same
    // process at once, and transportd refuses a name still registered.
    let _registration = client.close_on_drop();
    if let Some(hook) = log_hook {
        client.set_log_level_hook(move |level| hook(level));
    }
    daemon::run(settings, client, incoming, shutdown).await
}

/// [`load`] then [`run`]: the whole daemon from its configuration
/// directory (masterd's single-process model).
///
/// # Errors
///
/// As [`load`] and [`run`].
pub async fn run_in_process(
    dir: &Path,
    log_hook: Option<LogLevelHook>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let settings = load(dir)?;
    run(settings, log_hook, shutdown).await
}
