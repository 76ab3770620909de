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

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::flags::NodeFlags;
use crate::nodes::Pnn;

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

/// An administrative command on one node (CTDB's tool commands).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminOp {
    /// `disable`: set PERMANENTLY_DISABLED.
    Disable,
    /// `enable`: clear PERMANENTLY_DISABLED.
    Enable,
    /// `stop`: set STOPPED.
    Stop,
    /// `continue`: clear STOPPED.
    Continue,
    /// `ban SECONDS`: set BANNED for that long (the target times it out).
    Ban {
        /// Ban time in seconds (> 0).
        seconds: u32,
    },
    /// `unban`: clear BANNED.
    Unban,
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

/// The result of an admin command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminOutcome {
    /// The flag changed.
    Done,
    /// The node was already in that state (CTDB: "Node N is already
    /// disabled", exit code 0).
    Already,
    /// The command is not valid (e.g. `ban 0`).
    Invalid,
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

/// One node in a published [`Membership`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node.
    pub pnn: Pnn,
    /// Its private address (`None` for a deleted placeholder).
    pub address: Option<IpAddr>,
    /// Its flags.
    pub flags: NodeFlags,
}

/// What clusterd publishes to the daemons of its node on every change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Changes with every change of `leader` or `nodes`.
    pub generation: u64,
    /// The active leader this node follows (or itself), if any.
    pub leader: Option<Pnn>,
    /// Every node of the nodes file, in PNN order: the leader's view when
    /// following one, else this node's own view.
    pub nodes: Vec<NodeInfo>,
    /// This node.
    pub this_node: Pnn,
    /// This node's lease is valid: it may host public IPs. When false,
    /// failoverd must drop its IPs at once.
    pub lease_ok: bool,
    /// Only on the active leader: nodes whose lease has certainly expired in
    /// their own view, so that their public IPs may be given away. Changes
    /// here do not change `generation`.
    pub reassignable: Vec<Pnn>,
}

impl Membership {
    /// The node's flags, if it is in the file.
    #[must_use]
    pub fn flags(&self, pnn: Pnn) -> Option<NodeFlags> {
        self.nodes.iter().find(|n| n.pnn == pnn).map(|n| n.flags)
    }
}
