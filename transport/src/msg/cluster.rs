//! clusterd's messages: membership, node flags, node administration.
//!
//! Owned by clusterd; consumed by failoverd, conntrackd, masterd and the CLI.
//! Node flags keep CTDB's bit values (`ctdb/protocol/protocol.h`), so a flags
//! word can be compared with `ctdb status -X` output and with CTDB's takeover
//! test inputs. `INACTIVE` and `DISABLED` are derived masks, never stored on
//! their own. Any set flag makes a node unable to host public IPs.
//!
//! Opcodes (all in clusterd's range 0x0001_xxxx):
//! * [`MEMBERSHIP`] — event from clusterd to `(LOCAL, BROADCAST_SERVICE)` on
//!   every change and at least once per second; payload [`Membership`].
//! * [`GET_MEMBERSHIP`] — request `()` to clusterd → [`Membership`].
//! * [`ADMIN`] — request [`AdminCommand`] to the local clusterd →
//!   [`AdminOutcome`]; clusterd forwards it to the target node's clusterd.
//! * [`LEASE`] — event from clusterd to `(LOCAL, BROADCAST_SERVICE)` whenever
//!   this node's lease starts, ends, or has been extended by a quarter lease
//!   since the last one; payload [`LeaseUpdate`].
//!
//! # Time
//!
//! Lease times are points on the host's `CLOCK_MONOTONIC` ([`monotonic_ns`]),
//! which every process of a node shares and which never goes back, also
//! across a daemon's restart. failoverd turns [`Lease::expires_ns`] into a
//! deadline of its own and drops its public IPs when it passes, whether or
//! not clusterd is still alive to say so. [`Lease::at_ns`] orders lease news
//! that arrive by different paths (events, poll answers).

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// A node number: its line in the nodes file (CTDB's PNN).
pub use config::nodes::Pnn;

/// Event: clusterd publishes its [`Membership`] (on every change and at least
/// once per second).
pub const MEMBERSHIP: u32 = 0x0001_0001;
/// Request `()` → [`Membership`].
pub const GET_MEMBERSHIP: u32 = 0x0001_0002;
/// Request [`AdminCommand`] → [`AdminOutcome`].
pub const ADMIN: u32 = 0x0001_0003;
/// Event: this node's lease (payload [`LeaseUpdate`]).
pub const LEASE: u32 = 0x0001_0004;
/// Request `()` → [`ClusterSettings`]: this node's leader capability and
/// cluster lock setting (CTDB's `getcapabilities`, `getreclock`).
pub const GET_SETTINGS: u32 = 0x0001_0005;
/// Request `()` → [`crate::proto::control::NodeList`]: the nodes file as
/// clusterd reads it now from disk (`reloadnodes` compares every node's);
/// an unreadable or invalid file is a `BadRequest` naming file and line.
pub const GET_NODES_FILE: u32 = 0x0001_0006;
/// Request [`crate::proto::control::NodeList`] → `()`: re-read the nodes
/// file, which must still be this list, and take it at run time
/// (transportd's peers, conntrackd's nodes, the membership). Refused with
/// nothing changed when the file differs, a node would vanish or change
/// address, or a node to delete is connected.
pub const RELOAD_NODES: u32 = 0x0001_0007;

/// The answer to [`GET_SETTINGS`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSettings {
    /// The node may become leader (`leader_capability`).
    pub can_lead: bool,
    /// The `cluster_lock` setting as CTDB writes it (a lock file's path, or
    /// `!helper args`); `None` without a lock.
    pub cluster_lock: Option<String>,
}

/// Now on the host's `CLOCK_MONOTONIC`, in nanoseconds.
#[must_use]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always
    // exists on Linux, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// Nanoseconds of a duration, saturating (585 years).
#[must_use]
pub fn duration_ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// This node's lease as clusterd knows it at `at_ns`. All times are
/// `CLOCK_MONOTONIC` nanoseconds ([`monotonic_ns`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// When clusterd computed this.
    pub at_ns: u64,
    /// The lease is valid until then (0: not valid). Without further news
    /// the node must not hold public IPs after this instant.
    pub expires_ns: u64,
    /// The lease has been valid without a break since then (0: not valid).
    /// An address configured before this instant may have been given to
    /// another node while this node had no lease.
    pub since_ns: u64,
}

impl Lease {
    /// The lease is valid at `now_ns`.
    #[must_use]
    pub fn valid_at(&self, now_ns: u64) -> bool {
        self.expires_ns > now_ns
    }

    /// Time left at `now_ns` (zero when expired).
    #[must_use]
    pub fn remaining(&self, now_ns: u64) -> std::time::Duration {
        std::time::Duration::from_nanos(self.expires_ns.saturating_sub(now_ns))
    }
}

/// Payload of [`LEASE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseUpdate {
    /// The node whose lease this is (the publisher).
    pub this_node: Pnn,
    /// The lease.
    pub lease: Lease,
}

/// A set of node flags (a CTDB `uint32_t flags` word).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeFlags(u32);

impl NodeFlags {
    /// No flag: the node is OK.
    pub const OK: Self = Self(0);
    /// Not heard from within `dead_after` (or not hearing us).
    pub const DISCONNECTED: Self = Self(0x01);
    /// The health monitor failed.
    pub const UNHEALTHY: Self = Self(0x02);
    /// Disabled by an administrator (`disable`).
    pub const PERMANENTLY_DISABLED: Self = Self(0x04);
    /// Banned for a time (`ban SECONDS`).
    pub const BANNED: Self = Self(0x08);
    /// A commented-out line of the nodes file.
    pub const DELETED: Self = Self(0x10);
    /// Stopped by an administrator (`stop`).
    pub const STOPPED: Self = Self(0x20);
    /// The `ctdb` tool's "unknown" bit (never set by clusterd; shown if seen).
    pub const UNKNOWN: Self = Self(0x40);
    /// Derived: UNHEALTHY | PERMANENTLY_DISABLED.
    pub const DISABLED: Self = Self(0x06);
    /// Derived: DELETED | DISCONNECTED | BANNED | STOPPED.
    pub const INACTIVE: Self = Self(0x39);
    /// The flags a node owns and advertises itself (set by admin commands and
    /// its health monitor); the others are set by the observer.
    pub const SELF_OWNED: Self = Self(0x02 | 0x04 | 0x08 | 0x20);

    /// The raw CTDB flags word.
    #[must_use]
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Flags from a raw word (unknown bits are kept).
    #[must_use]
    pub const fn from_bits(bits: u32) -> Self {
        Self(bits)
    }

    /// True if every bit of `other` is set.
    #[must_use]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// True if any bit of `other` is set.
    #[must_use]
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// True if no flag is set.
    #[must_use]
    pub const fn is_ok(self) -> bool {
        self.0 == 0
    }

    /// True if the node is inactive (deleted, disconnected, banned or stopped).
    #[must_use]
    pub const fn is_inactive(self) -> bool {
        self.intersects(Self::INACTIVE)
    }

    /// Sets or clears `other`.
    pub fn set(&mut self, other: Self, on: bool) {
        if on {
            self.0 |= other.0;
        } else {
            self.0 &= !other.0;
        }
    }

    /// The union.
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Only the bits also in `other`.
    #[must_use]
    pub const fn intersection(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }
}

impl std::ops::BitOr for NodeFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

impl std::ops::BitOrAssign for NodeFlags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

/// The words `ctdb status` prints, in its order. DISABLED stands for
/// PERMANENTLY_DISABLED only (UNHEALTHY has its own word).
const WORDS: [(NodeFlags, &str); 7] = [
    (NodeFlags::DISCONNECTED, "DISCONNECTED"),
    (NodeFlags::UNKNOWN, "UNKNOWN"),
    (NodeFlags::PERMANENTLY_DISABLED, "DISABLED"),
    (NodeFlags::BANNED, "BANNED"),
    (NodeFlags::UNHEALTHY, "UNHEALTHY"),
    (NodeFlags::DELETED, "DELETED"),
    (NodeFlags::STOPPED, "STOPPED"),
];

/// As `ctdb status` prints a node's state: `OK`, or the flag words joined
/// with `|`, followed by `INACTIVE` when the node is inactive
/// (e.g. `DISABLED|STOPPED|INACTIVE`).
impl fmt::Display for NodeFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_ok() {
            return f.write_str("OK");
        }
        let mut first = true;
        let inactive = [(Self::INACTIVE, "INACTIVE")];
        for (flag, word) in WORDS.iter().chain(inactive.iter()) {
            if self.intersects(*flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(word)?;
                first = false;
            }
        }
        if first {
            // Only bits clusterd does not know: show the raw word.
            write!(f, "0x{:x}", self.0)?;
        }
        Ok(())
    }
}

impl fmt::Debug for NodeFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeFlags(0x{:02x} {self})", self.0)
    }
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
    /// This node's lease when this was published or answered; its `at_ns`
    /// also orders memberships that arrive by different paths.
    pub lease: Lease,
}

impl Membership {
    /// The node's flags, if it is in the file.
    #[must_use]
    pub fn flags(&self, pnn: Pnn) -> Option<NodeFlags> {
        self.nodes.iter().find(|n| n.pnn == pnn).map(|n| n.flags)
    }
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
    /// `setleaderrole on|off`: the node's leader capability at run time
    /// (until clusterd restarts; `leader_capability` is the lasting one).
    SetLeaderRole {
        /// May the node lead.
        on: bool,
    },
}

/// Payload of an [`ADMIN`] request: act on node `target` (clusterd forwards
/// it to that node's clusterd, which owns its flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminCommand {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_values_are_ctdbs() {
        assert_eq!(NodeFlags::DISCONNECTED.bits(), 0x01);
        assert_eq!(NodeFlags::UNHEALTHY.bits(), 0x02);
        assert_eq!(NodeFlags::PERMANENTLY_DISABLED.bits(), 0x04);
        assert_eq!(NodeFlags::BANNED.bits(), 0x08);
        assert_eq!(NodeFlags::DELETED.bits(), 0x10);
        assert_eq!(NodeFlags::STOPPED.bits(), 0x20);
        assert_eq!(NodeFlags::INACTIVE.bits(), 0x39);
        assert_eq!(NodeFlags::DISABLED.bits(), 0x06);
    }

    #[test]
    fn display_matches_ctdb_status() {
        // Lines seen in ctdb/tests/UNIT/tool (ctdb.nodestatus.*).
        let cases = [
            (0x00, "OK"),
            (0x04 | 0x20, "DISABLED|STOPPED|INACTIVE"),
            (0x08, "BANNED|INACTIVE"),
            (0x02, "UNHEALTHY"),
            (0x01, "DISCONNECTED|INACTIVE"),
            (0x10, "DELETED|INACTIVE"),
            (0x06, "DISABLED|UNHEALTHY"),
            (0x40, "UNKNOWN"),
            (0x80, "0x80"),
        ];
        for (bits, want) in cases {
            assert_eq!(
                NodeFlags::from_bits(bits).to_string(),
                want,
                "bits {bits:#x}"
            );
        }
    }

    #[test]
    fn set_and_clear() {
        let mut f = NodeFlags::OK;
        f.set(NodeFlags::BANNED, true);
        assert!(f.is_inactive());
        f.set(NodeFlags::UNHEALTHY, true);
        f.set(NodeFlags::BANNED, false);
        assert_eq!(f, NodeFlags::UNHEALTHY);
        assert!(!f.is_inactive());
        assert!(f.intersects(NodeFlags::DISABLED));
    }
}
