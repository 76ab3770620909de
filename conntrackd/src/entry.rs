//! conntrackd's entry point on the daemon skeleton ([`transport::tdaemon`]),
//! shared by the `conntrackd` binary and masterd's single-process model:
//! load the settings from a configuration directory ([`load`]:
//! `ipfailover.toml` and a new incarnation), then connect to the node's
//! transportd and run until shutdown, serving reloads ([`run`]). The binary
//! is [`transport::tdaemon::main`] over these; masterd adds only its
//! supervision.
//!
//! A reload (SIGHUP, or masterd's in the single-process model) checks the
//! files again ([`read`]) and applies the log level; a changed `[conntrack]`
//! setting is logged as "needs a restart". (The node list comes from
//! clusterd, which hands a reloaded one to conntrackd.)

use std::future::Future;
use std::path::{Path, PathBuf};

use transport::tdaemon::{self, DaemonConfig, Env};

use crate::daemon::{self, DaemonError, Settings};

/// The service name conntrackd registers.
pub const NAME: &str = "conntrackd";

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
    #[error(transparent)]
    Connect(#[from] tdaemon::Error),
    /// The daemon stopped with an error.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
}

/// What [`load`] reads from the configuration directory.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The daemon's settings (with this run's incarnation).
    pub settings: Settings,
    /// transportd's socket.
    pub socket: PathBuf,
    /// The `[logging] level` filter.
    pub log_level: String,
    /// Warnings of the configuration loader (deprecated keys...).
    pub warnings: Vec<String>,
    /// The configuration directory.
    pub dir: PathBuf,
}

impl DaemonConfig for Loaded {
    fn log_level(&self) -> &str {
        &self.log_level
    }

    fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// conntrackd's settings from the configuration directory `dir`; takes the
/// next incarnation from `<run_dir>/conntrackd.incarnation`.
///
/// # Errors
///
/// [`EntryError::Config`] or [`EntryError::Nodes`] naming file and line,
/// or [`DaemonError::Incarnation`] when the incarnation file cannot be
/// written. The files are checked before the incarnation is taken.
pub fn load(dir: &Path) -> Result<Loaded, EntryError> {
    let mut read = read(dir)?;
    let run_dir = read
        .socket
        .parent()
        .map_or_else(|| dir.to_path_buf(), Path::to_path_buf);
    read.settings.incarnation = daemon::next_incarnation(&run_dir.join("conntrackd.incarnation"))?;
    Ok(read)
}

/// [`load`] without taking an incarnation (0): what a reload checks.
///
/// # Errors
///
/// [`EntryError::Config`] or [`EntryError::Nodes`] naming file and line.
pub fn read(dir: &Path) -> Result<Loaded, EntryError> {
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
    let mut settings = Settings::from_config(&loaded.config, 0);
    settings.nodes = nodes;
    Ok(Loaded {
        settings,
        socket: run_dir.join("transport.sock"),
        log_level: loaded.config.logging.level.clone(),
        warnings,
        dir: dir.to_path_buf(),
    })
}

/// Connects to transportd (the skeleton's patience), answers `LOG_LEVEL`
/// with `env`'s hook, serves `env`'s reloads, and runs conntrackd until
/// `shutdown` completes, a `SHUTDOWN` control arrives or transportd closes.
///
/// # Errors
///
/// [`EntryError::Connect`], or the daemon's error.
pub async fn run(
    loaded: Loaded,
    env: Env,
    shutdown: impl Future<Output = ()>,
) -> Result<(), EntryError> {
    let conn = tdaemon::connect(NAME, &loaded.socket, env.log_hook.clone()).await?;
    let _registration = conn.registration;
    let mut reloads = tdaemon::reloader(
        NAME,
        loaded.dir.clone(),
        loaded.clone(),
        read,
        env.log_hook,
        env.reloads,
    );
    let start = comparable(&loaded.settings);
    let reload_task = tokio::spawn(async move {
        while let Some(r) = reloads.recv().await {
            if comparable(&r.new.settings) != start {
                tdaemon::needs_restart(NAME, "[conntrack]");
            }
        }
    });
    let res = daemon::run(loaded.settings, conn.client, conn.incoming, shutdown).await;
    reload_task.abort();
    res?;
    Ok(())
}

/// The settings a reload compares: those of the file (not this run's
/// incarnation, the addresses handed at start, nor the node list, which
/// clusterd hands over).
fn comparable(o: &Settings) -> String {
    let mut o = o.clone();
    o.incarnation = 0;
    o.initial_hosted.clear();
    o.nodes = None;
    format!("{o:?}")
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
) -> Result<(), EntryError> {
    let loaded = load(dir)?;
    tdaemon::log_warnings(&loaded.warnings);
    run(loaded, env, shutdown).await
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
        let good = load(&dir).map(|l| l.settings.nodes);
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
