//! clusterd owns membership: the CTDB-format nodes file, heartbeats between
//! nodes, node flags, the leader, the cluster lock and leases, and publishes
//! membership to local subscribers over the transport.
//!
//! The core ([`membership::Member`]) is a pure state machine driven with an
//! explicit `now`; [`lock`] runs CTDB-compatible cluster-lock helpers and
//! [`etcd_lock`] is the native etcd lock.

pub mod daemon;
pub mod entry;
pub mod etcd_lock;
pub mod flags;
pub mod health;
pub mod heartbeats;
pub mod lock;
pub mod membership;
pub mod msg;
pub mod nodes;
pub mod shell;
pub mod state;

pub use flags::NodeFlags;
pub use membership::{Config, LockEvent, Member, Output, Timing};
pub use msg::{ClusterMsg, Membership, NodeInfo};
pub use nodes::{NodesError, NodesFile, Pnn};
