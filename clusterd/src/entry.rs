//! clusterd's entry point on the daemon skeleton ([`transport::tdaemon`]),
//! shared by the `clusterd` binary and masterd's single-process model:
//! load the settings from a configuration directory ([`load`]), then
//! connect to the node's transportd and run until shutdown, serving
//! reloads ([`run`]). The binary is [`transport::tdaemon::main`] over these;
//! masterd adds only its supervision, so both models run the same code.
//!
//! On a reload (SIGHUP, or masterd's reload in the single-process model)
//! the files are read and checked again as at start; a valid new
//! configuration applies the log level, the nodes file (through the same
//! path as `ipfailover reloadnodes` on this node: the membership checks it
//! first and refuses what is not safe) and the health command settings;
//! the others are logged as "needs a restart: KEY".

use std::future::Future;
use std::path::{Path, PathBuf};

use transport::tdaemon::{self, DaemonConfig, Env};

use crate::daemon::{self, DaemonError, Settings};

/// The service name clusterd registers.
pub const NAME: &str = "clusterd";

/// What [`load`] reads from the configuration directory.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The daemon's settings.
    pub settings: Settings,
    /// The configuration directory.
    pub dir: PathBuf,
    /// Warnings of the configuration loader (deprecated keys...).
    pub warnings: Vec<String>,
}

impl DaemonConfig for Loaded {
    fn log_level(&self) -> &str {
        &self.settings.log_level
    }

    fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// clusterd's settings from the configuration directory `dir`
/// (`ipfailover.toml`, `nodes`; this node's PNN from the host's addresses
/// unless the file sets it).
///
/// # Errors
///
/// Any invalid setting or nodes-file problem, naming file and line.
pub fn load(dir: &Path) -> Result<Loaded, DaemonError> {
    let (settings, warnings) = Settings::load_with_warnings(dir, None)?;
    Ok(Loaded {
        settings,
        dir: dir.to_path_buf(),
        warnings,
    })
}

/// Connects to transportd (the skeleton's patience), answers `LOG_LEVEL`
/// with `env`'s hook, serves `env`'s reloads, and runs clusterd until
/// `shutdown` completes, a `SHUTDOWN` control arrives or transportd closes
/// the connection.
///
/// # Errors
///
/// [`DaemonError::Connect`] when transportd cannot be reached, and the
/// errors of [`daemon::run`].
pub async fn run(
    loaded: Loaded,
    env: Env,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let conn = tdaemon::connect(NAME, &loaded.settings.socket, env.log_hook.clone()).await?;
    let reloads = tdaemon::reloader(
        NAME,
        loaded.dir.clone(),
        loaded.clone(),
        load,
        env.log_hook,
        env.reloads,
    );
    let _registration = conn.registration;
    daemon::run_with_reloads(
        loaded.settings,
        conn.client,
        conn.incoming,
        shutdown,
        reloads,
    )
    .await
}

/// [`load`] then [`run`]: the whole daemon from its configuration
/// directory (masterd's single-process model).
///
/// # Errors
///
/// As [`load`] and [`run`].
pub async fn run_in_process(
    dir: &Path,
    env: Env,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let loaded = load(dir)?;
    tdaemon::log_warnings(&loaded.warnings);
    run(loaded, env, shutdown).await
}
