//! transportd's entry point on the daemon skeleton ([`crate::tdaemon`]),
//! shared by `transportd --config-dir` and masterd's single-process model:
//! load the configuration directory ([`load`]: `ipfailover.toml`, `nodes`,
//! the cluster key, `[transport] group`, checked by
//! [`crate::node_config::load`]), then bind and route until shutdown,
//! serving reloads ([`run`]). transportd is the transport itself: it does
//! not connect to one, so the skeleton's `connect` is the one step it skips.
//!
//! On a reload the directory is checked again as at start; a valid one
//! applies the log level. The node list is clusterd's to hand over (its
//! reload of the nodes file sends `SET_NODES`, as `reloadnodes`); a changed
//! port, run directory, key file or group is logged as needing a restart.

use std::future::Future;
use std::path::{Path, PathBuf};

use super::{Daemon, Settings};
use crate::controls::LogLevelHook;
use crate::node_config::{self, NodeConfigError, NodeTransport};
use crate::tdaemon::{self, DaemonConfig, Env};

/// transportd's name in logs (it registers no service: it is service 0).
pub const NAME: &str = "transportd";

/// Why transportd cannot start from a configuration directory.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// `ipfailover.toml` is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The nodes file, `[cluster] pnn`, the key or `[transport] group`.
    #[error(transparent)]
    NodeConfig(#[from] NodeConfigError),
    /// The socket or the peer port cannot be bound.
    #[error(transparent)]
    Bind(#[from] super::Error),
}

/// What [`load`] reads from a configuration directory.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// `ipfailover.toml` and its directory.
    pub loaded: config::Loaded,
    /// The nodes file, the cluster key and the socket's access policy.
    pub transport: NodeTransport,
}

impl DaemonConfig for Loaded {
    fn log_level(&self) -> &str {
        &self.loaded.config.logging.level
    }

    fn warnings(&self) -> &[String] {
        &self.loaded.warnings
    }
}

impl Loaded {
    /// The run directory (transport.sock lives there).
    #[must_use]
    pub fn run_dir(&self) -> PathBuf {
        self.loaded.resolve(&self.loaded.config.transport.run_dir)
    }

    /// transportd's configuration, answering `LOG_LEVEL` with `log_hook`.
    #[must_use]
    pub fn settings(&self, log_hook: Option<LogLevelHook>) -> Settings {
        let t = &self.loaded.config.transport;
        Settings {
            run_dir: self.run_dir(),
            nodes: self.transport.nodes.clone(),
            pnn: self.loaded.config.cluster.pnn,
            port: t.port,
            key: self.transport.key.clone(),
            policy: self.transport.policy.clone(),
            log_level: log_hook,
        }
    }
}

/// transportd's configuration from the directory `dir`.
///
/// # Errors
///
/// [`EntryError::Config`] or [`EntryError::NodeConfig`], naming file and
/// line.
pub fn load(dir: &Path) -> Result<Loaded, EntryError> {
    let loaded = config::load(dir)?;
    let transport = node_config::load(&loaded)?;
    Ok(Loaded { loaded, transport })
}

/// Binds the socket and the peer port, then routes until `shutdown`
/// completes or a `SHUTDOWN` control arrives, serving `env`'s reloads.
///
/// # Errors
///
/// [`EntryError::Bind`].
pub async fn run(
    loaded: Loaded,
    env: Env,
    shutdown: impl Future<Output = ()>,
) -> Result<(), EntryError> {
    let daemon = Daemon::bind(loaded.settings(env.log_hook.clone())).await?;
    let start = loaded.clone();
    let mut reloads = tdaemon::reloader(
        NAME,
        loaded.loaded.dir.clone(),
        loaded,
        load,
        env.log_hook,
        env.reloads,
    );
    let reload_task = tokio::spawn(async move {
        let key = |l: &Loaded| l.loaded.resolve(&l.loaded.config.transport.key_file);
        while let Some(r) = reloads.recv().await {
            let (o, n) = (
                &start.loaded.config.transport,
                &r.new.loaded.config.transport,
            );
            if o.port != n.port {
                tdaemon::needs_restart(NAME, "[transport] port");
            }
            if start.run_dir() != r.new.run_dir() {
                tdaemon::needs_restart(NAME, "[transport] run_dir");
            }
            if key(&start) != key(&r.new) {
                tdaemon::needs_restart(NAME, "[transport] key_file");
            }
            if o.group != n.group {
                tdaemon::needs_restart(NAME, "[transport] group");
            }
        }
    });
    daemon.run(shutdown).await;
    reload_task.abort();
    Ok(())
}

/// [`load`] then [`run`]: the whole daemon from its configuration
/// directory (masterd's single-process model). A restart takes the nodes
/// file as it is then (`reloadnodes` may have changed it).
///
/// # Errors
///
/// As [`load`] and [`run`].
pub async fn run_in_process(
    dir: &Path,
    env: Env,
    shutdown: impl Future<Output = ()>,
) -> Result<(), EntryError> {
    let loaded = load(dir)?;
    tdaemon::log_warnings(&loaded.loaded.warnings);
    run(loaded, env, shutdown).await
}
