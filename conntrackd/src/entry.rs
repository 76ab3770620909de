//! conntrackd's entry point, shared by the `conntrackd` binary and masterd's
//! single-process model: load the options from a configuration directory
//! ([`load`]: `ipfailover.toml` and a new incarnation), then connect to the
//! node's transportd and run until shutdown ([`run`]). The binary adds only
//! argument parsing, logging and a runtime; masterd only its supervision.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use transport::client::{Client, ClientError, Incoming};
use transport::controls::LogLevelHook;

use crate::daemon::{self, DaemonError, Options};

/// How long conntrackd waits for transportd's socket at start.
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(10);

/// Why conntrackd cannot start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// `ipfailover.toml` is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The `nodes` file is invalid (read by config's reader, the same as
    /// transportd's and clusterd's).
    #[error(transparent)]
    Nodes(#[from] config::nodes::NodesError),
    /// transportd's socket did not accept a connection in time.
    #[error("conntrackd: cannot connect to transportd at {}: {source}", socket.display())]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// The last error.
        #[source]
        source: ClientError,
    },
    /// The daemon stopped with an error.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
}

/// What [`load`] reads from the configuration directory.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The daemon's options (with this run's incarnation).
    pub options: Options,
    /// transportd's socket.
    pub socket: PathBuf,
    /// The `[logging] level` filter.
    pub log_level: String,
    /// Warnings of the configuration loader (deprecated keys...).
    pub warnings: Vec<String>,
}

/// conntrackd's options from the configuration directory `dir`; takes the
/// next incarnation from `<run_dir>/conntrackd.incarnation`.
///
/// # Errors
///
/// [`EntryError::Config`] or [`EntryError::Nodes`] naming file and line,
/// or [`DaemonError::Incarnation`] when the incarnation file cannot be
/// written. The files are checked before the incarnation is taken.
pub fn load(dir: &Path) -> Result<Loaded, EntryError> {
    let loaded = config::load(dir)?;
    let mut warnings = loaded.warnings.clone();
    // Replication from or about nodes outside the nodes file is refused.
    let nodes_path = loaded.dir.join("nodes");
    let nodes = match config::nodes::NodesFile::load(&nodes_path) {
        Ok(nodes) => Some(nodes.iter().map(|(pnn, _)| pnn).collect()),
        Err(config::nodes::NodesError::Text(e)) if e.is_not_found() => {
            warnings.push(format!(
                "{}: no nodes file: replication from any node is accepted",
                nodes_path.display()
            ));
            None
        }
        Err(e) => return Err(e.into()),
    };
    let run_dir = loaded.resolve(&loaded.config.transport.run_dir);
    let incarnation = daemon::next_incarnation(&run_dir.join("conntrackd.incarnation"))?;
    let mut options = Options::from_config(&loaded.config, incarnation);
    options.nodes = nodes;
    Ok(Loaded {
        options,
        socket: run_dir.join("transport.sock"),
        log_level: loaded.config.logging.level.clone(),
        warnings,
    })
}

/// Connects to transportd at `socket` as `conntrackd`, retrying for up to
/// `patience` while it starts.
///
/// # Errors
///
/// [`EntryError::Connect`] with the last error once `patience` has passed.
pub async fn connect(socket: &Path, patience: Duration) -> Result<(Client, Incoming), EntryError> {
    Client::connect_unix_patiently(socket, "conntrackd", patience)
        .await
        .map_err(|source| EntryError::Connect {
            socket: socket.to_path_buf(),
            source,
        })
}

/// Connects to transportd (retrying for [`CONNECT_PATIENCE`]), answers
/// `LOG_LEVEL` with `log_hook`, and runs conntrackd until `shutdown`
/// completes, a `SHUTDOWN` control arrives or transportd closes.
///
/// # Errors
///
/// [`EntryError::Connect`], or the daemon's error.
pub async fn run(
    loaded: Loaded,
    log_hook: Option<LogLevelHook>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), EntryError> {
    let (client, incoming) = connect(&loaded.socket, CONNECT_PATIENCE).await?;
    // The registration ends with this future (returned, failed, panicked
    // or dropped), not when the last task it spawned drops its handle: in
    // masterd's single-process model the daemon is restarted in the same
    // process at once, and transportd refuses a name still registered.
    let _registration = client.close_on_drop();
    if let Some(hook) = log_hook {
        client.set_log_level_hook(move |level| hook(level));
    }
    daemon::run(loaded.options, client, incoming, shutdown).await?;
    Ok(())
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
) -> Result<(), EntryError> {
    let loaded = load(dir)?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    run(loaded, log_hook, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A broken nodes file stops conntrackd before it takes an incarnation;
    /// a good one gives the live PNNs.
    #[test]
    fn a_broken_nodes_file_is_refused_before_anything_is_written() {
        let dir = std::env::temp_dir().join(format!("conntrackd-entry-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let run = dir.join("run");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(
            dir.join("ipfailover.toml"),
            format!("[transport]\nrun_dir = {:?}\n", run.display().to_string()),
        )
        .unwrap();
        std::fs::write(dir.join("nodes"), "192.0.2.1\n192.0.2.2 extra\n").unwrap();
        let e = load(&dir).unwrap_err().to_string();
        let incarnation_written = run.join("conntrackd.incarnation").exists();
        std::fs::write(dir.join("nodes"), "192.0.2.1\n#192.0.2.2\n192.0.2.3\n").unwrap();
        let good = load(&dir).map(|l| l.options.nodes);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            e,
            format!(
                "{}:2: bad node address \"192.0.2.2 extra\" (expected one IPv4 or IPv6 address)",
                dir.join("nodes").display()
            )
        );
        assert!(!incarnation_written);
        assert_eq!(good.unwrap(), Some(vec![0, 2]));
    }
}
