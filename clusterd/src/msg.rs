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

/// A set of PNNs (at most [`crate::nodes::MAX_NODES`]) as a fixed-size
/// bitmap, so a [`Heartbeat`] that carries one stays heap-free.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSet(pub [u64; 4]);

impl NodeSet {
    /// The empty set.
    pub const EMPTY: Self = Self([0; 4]);

    /// Is `pnn` in the set? (A PNN beyond the bitmap never is.)
    #[must_use]
    pub fn contains(&self, pnn: Pnn) -> bool {
        let i = pnn as usize;
        i < 256 && self.0[i / 64] & (1 << (i % 64)) != 0
    }

    /// Adds (`on`) or removes `pnn` (ignored beyond the bitmap).
    pub fn set(&mut self, pnn: Pnn, on: bool) {
        let i = pnn as usize;
        if i < 256 {
            let bit = 1u64 << (i % 64);
            if on {
                self.0[i / 64] |= bit;
            } else {
                self.0[i / 64] &= !bit;
            }
        }
    }

    /// No member.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }

    /// The number of members.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }
}

/// Sent by every node to every other configured node each `interval`
/// (wire format 2: [`ClusterMsg::Heartbeat`]).
///
/// Besides liveness and the vote it carries the two halves of the
/// majority lease (docs/clusterd.md, "Leases"): `grant` says whether
/// `echo` renews the receiver's lease, and `expired` lists the nodes whose
/// lease the sender certifies is over, with a promise not to grant them
/// before `lease + margin` after this heartbeat was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Sender.
    pub from: Pnn,
    /// Receiver (heartbeats are per peer because of `echo`).
    pub to: Pnn,
    /// The sender's incarnation: unique per boot and clusterd start, so
    /// that stamps of one incarnation are never taken for another's (a
    /// reboot restarts the monotonic clock).
    pub incarnation: u64,
    /// Sender's clock when this heartbeat was sent.
    pub stamp: Duration,
    /// The `stamp` of the newest heartbeat the sender received from `to`:
    /// proof that `to` was heard.
    pub echo: Option<Duration>,
    /// The incarnation of `to` that sent the echoed stamp: an echo of
    /// another incarnation's stamp proves nothing and is ignored.
    pub echo_incarnation: u64,
    /// `echo` renews `to`'s lease (until `echo + lease` on `to`'s clock):
    /// the sender hears `to` both ways and has promised nobody that `to`'s
    /// lease is over.
    pub grant: bool,
    /// Nodes whose lease the sender certifies is over: it granted them
    /// nothing for `lease + margin` and does not hear them, and promises
    /// not to grant them before `stamp + lease + margin`.
    pub expired: NodeSet,
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
    /// The sender's node list: the PNNs it counts as configured (not
    /// deleted). Wire format 3 (node list changes, session 10).
    pub nodes: NodeSet,
    /// Another node list the sender still counts every quorum with too
    /// (a node list change not yet complete everywhere), or empty. A node
    /// that has not reloaded the list, or started after it, learns of the
    /// change from this (docs/clusterd.md, "Node list changes").
    pub also: NodeSet,
}

/// The heartbeat of wire format 1 (clusterd before majority leases). It is
/// still decoded, only to name the peer in the log line that refuses it: a
/// format-1 node grants leases only as leader and would not certify
/// expiries, so the two formats cannot share a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyHeartbeat {
    /// Sender.
    pub from: Pnn,
    /// Receiver.
    pub to: Pnn,
    /// Sender's clock.
    pub stamp: Duration,
    /// Echoed stamp.
    pub echo: Option<Duration>,
    /// Sender's flags.
    pub flags: NodeFlags,
    /// Leader capability.
    pub can_lead: bool,
    /// Vote.
    pub supports: Option<Pnn>,
    /// Active leader.
    pub active_leader: bool,
    /// Generation.
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
///
/// The order of the variants is the wire format (postcard encodes the
/// variant index): index 0 is the format-1 heartbeat, which a format-2
/// node decodes only to refuse it with a log line naming the peer; the
/// format-2 heartbeat is index 4, which a format-1 node cannot decode (it
/// logs "bad peer message" naming the sender).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterMsg {
    /// A heartbeat of wire format 1 (refused).
    LegacyHeartbeat(LegacyHeartbeat),
    /// The leader's membership.
    Membership(MembershipUpdate),
    /// An admin command for the receiver.
    Admin(AdminRequest),
    /// The answer to an admin command.
    AdminReply(AdminReply),
    /// Periodic liveness, vote, lease grant and expiry certificate.
    Heartbeat(Heartbeat),
}
