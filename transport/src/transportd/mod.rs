//! transportd: the routing daemon of one node.
//!
//! * A Unix socket (`RUN_DIR/transport.sock`) where local daemons and the CLI
//!   register a service name; only root, transportd's own user and members
//!   of a configured group may connect (`SO_PEERCRED`, see [`peercred`]),
//!   and the group's members may send only the `ipfailover` command's
//!   requests (see [`access`]).
//! * One authenticated, encrypted TCP link per peer node (addresses from the
//!   CTDB-format nodes file, port 4379 by default), see [`peer`] and
//!   [`noise`].
//! * Frames are routed by their header alone ([`state`]); payloads are never
//!   decoded. Routing a frame in steady state makes no heap allocation:
//!   connections reuse their read buffers and outboxes ([`buffers`]).
//!
//! [`run`] is the whole daemon as a future; the binary only parses flags and
//! sets up logging.

//!
//! Without the crate feature `transportd` (a client such as the CLI) only
//! [`key`], [`peercred`], the constants and [`socket_path`] are here: the
//! daemon ([`daemon`], re-exported here) and its snow dependency are not.

pub mod key;
pub mod peercred;

#[cfg(feature = "transportd")]
pub mod access;
#[cfg(feature = "transportd")]
pub mod buffers;
#[cfg(feature = "transportd")]
mod daemon;
#[cfg(feature = "transportd")]
pub mod entry;
#[cfg(feature = "transportd")]
mod local;
#[cfg(feature = "transportd")]
pub mod noise;
#[cfg(feature = "transportd")]
mod peer;
#[cfg(feature = "transportd")]
pub mod state;
#[cfg(feature = "transportd")]
pub mod turns;

#[cfg(feature = "transportd")]
pub use daemon::*;
#[cfg(feature = "transportd")]
pub use local::{
    LOCAL_QUEUE_LIMIT, MAX_CLIENTS_PER_UID, MAX_LOCAL_CLIENTS, MAX_MEMBER_CLIENTS, MAX_REFUSING,
    MEMBER_QUEUE_LIMIT, REFUSE_WAIT,
};
#[cfg(feature = "transportd")]
pub use peer::{IDLE_TIMEOUT, KEEPALIVE_INTERVAL, MAX_HANDSHAKES, WRITE_TIMEOUT};

use std::path::{Path, PathBuf};

/// Default TCP port of the node-to-node links (CTDB's).
pub const DEFAULT_PORT: u16 = 4379;
/// Default run directory.
pub const DEFAULT_RUN_DIR: &str = "/run/ipfailover";
/// Name of the local socket in the run directory.
pub const SOCKET_NAME: &str = "transport.sock";

/// The socket path for a run directory.
pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join(SOCKET_NAME)
}
