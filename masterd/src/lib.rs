//! masterd starts and watches the daemons of one node, as separate processes
//! ([`multi`]) or as tasks of one process ([`single`]).
//!
//! Both models share the same front: the configuration directory is loaded
//! and validated before anything starts ([`setup`]); the daemon list is data
//! ([`daemons`]); masterd registers as the `masterd` service on the node's
//! transport, answers [`transport::msg::master::GET_STATUS`], and tells
//! systemd `READY=1` ([`notify`]) once every daemon has answered a PING
//! ([`service`]). SIGHUP reloads the configuration ([`reload`]): checked
//! whole, then applied by masterd and every daemon. SIGTERM, SIGINT or a
//! SHUTDOWN control stop the daemons in
//! reverse start order (failoverd first, so that it releases its addresses
//! while the transport still runs) and masterd exits 0. masterd also serves
//! the node's Prometheus metrics ([`metrics`], `[metrics] listen`).

pub mod backoff;
pub mod daemons;
pub mod metrics;
pub mod multi;
pub mod notify;
pub mod reload;
pub mod service;
pub mod setup;
pub mod single;
pub mod supervisor;

use std::path::PathBuf;

/// Why masterd cannot start.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// `ipfailover.toml` cannot be read or is invalid (file, line, column).
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// transportd's checks: the `nodes` file, `[cluster] pnn` or the
    /// cluster key.
    #[error(transparent)]
    NodeConfig(#[from] transport::node_config::NodeConfigError),
    /// clusterd's checks (this host's PNN, cluster lock, health command,
    /// timing).
    #[error(transparent)]
    Clusterd(Box<clusterd::daemon::DaemonError>),
    /// failoverd's checks (`public_addresses`).
    #[error(transparent)]
    Failoverd(Box<failoverd::entry::EntryError>),
    /// `--daemons` names a daemon masterd does not know.
    #[error("unknown daemon '{name}' (known: transportd, clusterd, conntrackd, failoverd)")]
    UnknownDaemon {
        /// The name given.
        name: String,
    },
    /// `--daemons` leaves transportd out.
    #[error("the daemon list must include transportd: every other daemon talks through it")]
    NoTransport,
    /// A daemon's binary is not where masterd looks for it.
    #[error("{daemon}: no executable at {path} (use --bin-dir)")]
    MissingBinary {
        /// The daemon.
        daemon: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The single-process model cannot run this daemon (yet).
    #[error("{daemon} cannot run in the single-process model (no in-process entry point in this build); use the multi-process model or --daemons")]
    NotInProcess {
        /// The daemon.
        daemon: String,
    },
    /// The in-process transportd cannot start.
    #[error("transportd: {0}")]
    Transport(#[from] transport::transportd::Error),
    /// The async runtime cannot start.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// masterd's own executable cannot be located (for the default bin dir).
    #[error("cannot locate masterd's own executable: {0}")]
    OwnExe(#[source] std::io::Error),
}

/// masterd's settings, shared by both models.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The daemons to run (see [`daemons::select`]).
    pub daemons: Vec<daemons::DaemonDef>,
    /// Grace period between SIGTERM and SIGKILL for each daemon at shutdown
    /// (failoverd needs time to release its addresses).
    pub stop_grace: std::time::Duration,
}
