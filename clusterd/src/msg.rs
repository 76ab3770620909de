//! Messages clusterd instances exchange, and what clusterd publishes.
//!
//! Plain serde types, meant to be carried as postcard payloads over the
//! transport. Times inside messages are the *sender's* monotonic clock
//! ([`Duration`] since an arbitrary origin of that node); a receiver never
//! compares them with its own clock, it only echoes them back (that is what
//! makes the lease model work without synchronised clocks).
//!
//! [`Heartbeat`] is fixed-size (no heap data), so receiving one allocates
//! nothing; [`MembershipUpdate`] is sent only when membership changes or a
//! peer reports a stale generation.
//!
//! The types other daemons consume ([`Membership`], [`NodeInfo`],
//! [`NodeFlags`], [`AdminOp`], [`AdminOutcome`]) live in
//! [`transport::msg::cluster`] and are re-exported here.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::nodes::Pnn;
pub use transport::msg::cluster::{
    duration_ns, AdminOp, AdminOutcome, Lease, LeaseUpdate, Membership, NodeFlags, NodeInfo,
};

/// Sent by every node to every other configured node each `interval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Sender.
    pub from: Pnn,
    /// Receiver (heartbeats are per peer because of `echo`).
    pub to: Pnn,
    /// Sender's clock when this heartbeat was sent.
    pub stamp: Duration,
    /// The `stamp` of the newest heartbeat the sender received from `to`:
    /// proof that `to` was heard. From an active leader, it is the ack that
    /// renews `to`'s lease.
    pub echo: Option<Duration>,
    /// The flags the sender owns (UNHEALTHY, PERMANENTLY_DISABLED, BANNED,
    /// STOPPED).
    pub flags: NodeFlags,
    /// The sender may be leader (CTDB's "leader capability").
    pub can_lead: bool,
    /// The node the sender supports as leader (its vote), if any.
    pub supports: Option<Pnn>,
    /// The sender was an active leader (quorum or lock) when it sent this.
    pub active_leader: bool,
    /// The membership generation the sender publishes.
    pub generation: u64,
}

/// One node as the leader sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// The node.
    pub pnn: Pnn,
    /// Its flags in the leader's view.
    pub flags: NodeFlags,
}

/// The active leader's membership, sent to its followers on every change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipUpdate {
    /// The leader.
    pub from: Pnn,
    /// Generation of this membership.
    pub generation: u64,
    /// Every node of the nodes file, in PNN order.
    pub nodes: Vec<NodeState>,
}

/// An admin command, sent straight to the target node (which owns its
/// flags), from any node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminRequest {
    /// Chosen by the sender to match the reply.
    pub id: u64,
    /// Sender.
    pub from: Pnn,
    /// The node to act on.
    pub target: Pnn,
    /// What to do.
    pub op: AdminOp,
}

/// Reply to an [`AdminRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminReply {
    /// The request's id.
    pub id: u64,
    /// The target that acted.
    pub from: Pnn,
    /// The requester.
    pub to: Pnn,
    /// What happened.
    pub outcome: AdminOutcome,
}

/// Everything one clusterd sends another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterMsg {
    /// Periodic liveness, vote and lease ack.
    Heartbeat(Heartbeat),
    /// The leader's membership.
    Membership(MembershipUpdate),
    /// An admin command for the receiver.
    Admin(AdminRequest),
    /// The answer to an admin command.
    AdminReply(AdminReply),
}
