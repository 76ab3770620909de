//! The membership state machine: heartbeats, connectivity, leader, quorum,
//! leases, node flags and the published [`Membership`]. Pure: no I/O, no
//! clock. Every input carries `now`, this node's monotonic time (a
//! [`Duration`] since an arbitrary origin; the daemon uses the host's
//! `CLOCK_MONOTONIC`, so that published lease times mean the same to every
//! process of the node and never repeat across a restart); outputs are pushed into a
//! caller-owned `Vec<Output>` that a thin async shell carries out (send a
//! message, publish, take or release the cluster lock).
//!
//! # Model (see docs/clusterd.md for the full argument)
//!
//! * **Connectivity** is two-way: peer P is connected if we received a
//!   heartbeat from P within `dead_after` *and*, within `dead_after`, one
//!   whose echo showed that P had heard a newer heartbeat of ours. A one-way
//!   link (A hears B, B does not hear A) therefore disconnects both sides.
//! * **Vote.** Each node supports one candidate: among itself and its
//!   connected peers that can lead (capability, not BANNED/STOPPED/DELETED),
//!   the lowest PNN that advertises itself as active leader, else the lowest
//!   PNN. A node that supported L and echoed L's heartbeat received at `r`
//!   promises not to support anyone else before `r + lease + margin`.
//! * **Active leader.** The node supports itself and a strict majority of
//!   the configured (non-deleted) nodes (itself included) support it with
//!   an echo of one of its heartbeats sent less than `lease` ago — with or
//!   without a cluster lock. A configured lock only breaks ties: its holder
//!   also leads with exactly half of the votes, and a node without a strict
//!   majority that cannot get the lock does not lead. Votes are sticky
//!   (the promise above) in both cases. Only an active leader publishes the
//!   membership others follow and may have public IPs reassigned.
//! * **Majority leases.** Every node grants its peers' leases: its echo of
//!   a peer's stamp `s` is a grant (lease until `s + lease` on the peer's
//!   clock) when it hears the peer both ways, has run for `lease + margin`
//!   and has not fenced the peer. A node's lease is valid while grants from
//!   ⌊c/2⌋ peers are in force (a strict majority with itself), or while it
//!   is the active leader; with a lock also while the active leader's echo
//!   says so (the old rule). No leader is needed to keep a lease, so a
//!   leader change touches no other node.
//! * **Certificates and fences.** A node certifies in its heartbeats the
//!   peers whose lease is over as far as its grants go (not heard both
//!   ways, nothing granted received in `lease + margin`) and promises not
//!   to grant them for `lease + margin` after each such heartbeat. The
//!   active leader may reassign node N's IPs when ⌈c/2⌉ nodes other than N
//!   certify it (itself included), each counted until its echo of the
//!   leader's stamp + `lease`; every strict majority contains one of them.
//!   With a lock, also the old leader-echo rules.
//! * **Incarnations.** An echo counts only if it echoes a stamp of this
//!   instance ([`Member::with_incarnation`]).
//! * **Startup hold.** A (re)started node supports nobody and grants
//!   nothing for `lease + margin`, since it forgot its promises.
//!
//! Handling a heartbeat allocates nothing unless the published membership
//! changes, and costs O(nodes).

use std::net::IpAddr;
use std::time::Duration;

use crate::flags::NodeFlags;
use crate::msg::{
    duration_ns, AdminOp, AdminOutcome, AdminReply, AdminRequest, ClusterMsg, Heartbeat, Lease,
    Membership, MembershipUpdate, NodeInfo, NodeSet, NodeState,
};
use crate::nodes::{NodesError, NodesFile, Pnn};

#[path = "reload.rs"]
mod reload;

/// Heartbeat and lease timing. All on each node's own monotonic clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Heartbeat period.
    pub interval: Duration,
    /// A peer silent (or deaf to us) this long is DISCONNECTED.
    pub dead_after: Duration,
    /// Lease length, from the send time of a granted heartbeat.
    pub lease: Duration,
    /// Safety margin added by the side that must wait (clock-rate drift and
    /// scheduling delay).
    pub margin: Duration,
    /// Wait before trying a contended cluster lock again.
    pub lock_retry: Duration,
}

impl Timing {
    /// Defaults: 100 ms heartbeats, dead after 500 ms (5 missed heartbeats:
    /// no false alarm from a few hundred ms of scheduling stall on a loaded
    /// machine, yet detection far under 1 s), lease = dead_after, margin
    /// 100 ms (covers 1 % clock-rate drift over the lease plus scheduling).
    #[must_use]
    pub const fn default_profile() -> Self {
        Self {
            interval: Duration::from_millis(100),
            dead_after: Duration::from_millis(500),
            lease: Duration::from_millis(500),
            margin: Duration::from_millis(100),
            lock_retry: Duration::from_millis(500),
        }
    }

    /// Fast profile: 10 ms heartbeats, dead after 30 ms, lease 30 ms, margin
    /// 10 ms. For dedicated, lightly loaded links and hosts.
    #[must_use]
    pub const fn fast() -> Self {
        Self {
            interval: Duration::from_millis(10),
            dead_after: Duration::from_millis(30),
            lease: Duration::from_millis(30),
            margin: Duration::from_millis(10),
            lock_retry: Duration::from_millis(50),
        }
    }

    /// Checks the relations the model needs.
    ///
    /// # Errors
    ///
    /// A message naming the violated relation: `interval` > 0,
    /// `dead_after` ≥ 2 × `interval`, `lease` ≥ 2 × `interval`.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.interval.is_zero() {
            return Err("heartbeat interval must be > 0");
        }
        if self.dead_after < self.interval * 2 {
            return Err("dead_after must be at least 2 heartbeat intervals");
        }
        if self.lease < self.interval * 2 {
            return Err("lease must be at least 2 heartbeat intervals");
        }
        Ok(())
    }
}

impl Default for Timing {
    fn default() -> Self {
        Self::default_profile()
    }
}

/// Configuration of one node's state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Timing.
    pub timing: Timing,
    /// A cluster lock is configured: only its holder may lead.
    pub lock: bool,
    /// This node may become leader (CTDB's `leader capability`).
    pub can_lead: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            timing: Timing::default(),
            lock: false,
            can_lead: true,
        }
    }
}

/// Result of a cluster-lock attempt, as the lock helper reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockEvent {
    /// '0': taken; held while the helper runs.
    Taken,
    /// '1', '2', '3' or no answer: not taken.
    NotTaken,
    /// The helper holding the lock exited: the lock is lost.
    Lost,
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send to a peer's clusterd.
    Send {
        /// Destination.
        to: Pnn,
        /// Message.
        msg: ClusterMsg,
    },
    /// Publish to local subscribers (and answer membership requests with it).
    Publish(Membership),
    /// This node's lease changed (false: drop public IPs now).
    Lease(bool),
    /// Tell the node's daemons how long the lease runs: sent when it starts
    /// or ends and whenever its end has moved by a quarter lease since the
    /// last one (so at most about four times per lease, whatever the
    /// heartbeat rate). Times are `now`'s clock in nanoseconds.
    LeaseUpdate(Lease),
    /// Start the cluster-lock helper; answer with [`Member::lock_event`].
    TakeLock,
    /// Kill the cluster-lock helper (release, or cancel a pending attempt).
    ReleaseLock,
    /// The reply to an admin command this node sent.
    AdminDone(AdminReply),
}

/// A deliberately wrong variant of the leader rule, for the simulator's
/// tests that show its checks find such a bug (never set by the daemon).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectedBug {
    /// The lock holder leads with any number of votes (the lock alone
    /// makes a leader), while a strict majority leads without it.
    LockAloneLeads,
    /// Half of the votes make a leader without the lock.
    HalfWithoutLock,
    /// The lock is needed even with a strict majority (the rule before
    /// #15): not unsafe, but an unreachable lock stops every leader.
    LockAlwaysRequired,
    /// Quorums are counted with this node's own node list only, as before
    /// node list changes were counted jointly: a reload half applied lets
    /// nodes of the two lists count quorums that do not intersect.
    OwnListOnly,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LockState {
    Idle { retry_at: Duration },
    Pending,
    Held,
}

#[derive(Clone, Debug)]
struct Peer {
    address: Option<IpAddr>,
    deleted: bool,
    last_rx: Option<Duration>,
    last_stamp: Duration,
    /// Newest stamp of ours the peer echoed.
    heard_us: Option<Duration>,
    /// Our receive time of the heartbeat whose echo last advanced: the peer
    /// heard a new heartbeat of ours shortly before that.
    heard_us_at: Option<Duration>,
    flags: NodeFlags,
    can_lead: bool,
    supports: Option<Pnn>,
    support_echo: Option<Duration>,
    active: bool,
    generation: u64,
    granted_until: Option<Duration>,
    update_sent: Option<Duration>,
    /// The peer's incarnation, from its newest accepted heartbeat.
    incarnation: u64,
    /// Our lease as this peer granted it: the newest stamp of ours it
    /// echoed with `grant`, plus `lease` (our clock).
    grant_end: Option<Duration>,
    /// Our receive time of the newest stamp of this peer that we granted.
    granted_rx: Option<Duration>,
    /// We promised (by certifying this peer's lease over) not to grant it
    /// before this time.
    fence_until: Option<Duration>,
    /// The nodes whose lease this peer certifies over, from its newest
    /// heartbeat, and the echo (our stamp) that heartbeat carried: the
    /// certificate counts until that echo + `lease`.
    cert: NodeSet,
    cert_echo: Option<Duration>,
    /// The node list the peer's newest heartbeat carried (empty: not
    /// heard), since when (our clock) it has carried that one, and the
    /// other list it said it still counts with.
    list: NodeSet,
    list_since: Option<Duration>,
    also: NodeSet,
}

/// One node's membership state machine.
#[derive(Clone, Debug)]
pub struct Member {
    cfg: Config,
    pnn: Pnn,
    /// This node's node list (the configured, not deleted PNNs), and since
    /// when it has counted with it (start or reload).
    live: NodeSet,
    live_since: Duration,
    /// Earlier lists of this node (reloads) that may still be counted by
    /// someone: kept until harmless (docs/clusterd.md, "Node list changes").
    earlier_lists: Vec<NodeSet>,
    /// Every list each quorum is counted with: `live` first, then every
    /// other list that some node may still count with alone.
    lists: Vec<NodeSet>,
    peers: Vec<Peer>,
    started: Duration,
    next_hb: Duration,
    own_flags: NodeFlags,
    ban_until: Option<Duration>,
    lease_until: Option<Duration>,
    promise: Option<(Pnn, Duration)>,
    supports: Option<Pnn>,
    was_active: bool,
    active_since: Option<Duration>,
    lock: LockState,
    leader_gen: u64,
    leader_update: Option<MembershipUpdate>,
    max_gen: u64,
    published: Membership,
    last_lease: bool,
    /// Start of the current unbroken lease.
    lease_since: Option<Duration>,
    /// The lease end last told to the daemons ([`Output::LeaseUpdate`]).
    lease_told: Option<Duration>,
    scratch: Vec<NodeFlags>,
    /// Scratch for the leader's support expiries (no allocation per step).
    scratch_until: Vec<Duration>,
    /// This instance's incarnation (see [`Member::with_incarnation`]).
    incarnation: u64,
    /// The certificates ([`Heartbeat::expired`]) of the last heartbeats
    /// sent: a node certified anew goes out at once, since the leader
    /// waits for it to reassign that node's addresses.
    sent_expired: NodeSet,
    /// A deliberately wrong rule ([`Member::with_injected_bug`]).
    bug: Option<InjectedBug>,
}

/// The change counter of a generation (the bits above the PNN byte) never
/// exceeds this: [`Member`] saturates there rather than wrap to a small
/// generation that every peer would take for an old one.
pub const MAX_GENERATION_COUNTER: u64 = 1 << 48;

/// A peer message whose generation counter is more than this above the
/// highest counter this node has seen is implausible and dropped whole (a
/// bug or corruption on an authenticated peer). Honest generations differ
/// by the number of membership changes made while two nodes did not talk:
/// 2^32 of them take over a century at one change a second, so a node
/// joining an old cluster still takes its generation. One accepted message
/// can raise the counter by at most this, far below the saturation point.
pub const MAX_GENERATION_JUMP: u64 = 1 << 32;

fn idx(pnn: Pnn) -> usize {
    // Pnn is u32; usize is at least 32 bits on every supported target.
    usize::try_from(pnn).expect("usize holds u32")
}

fn pnn_of(i: usize) -> Pnn {
    Pnn::try_from(i).expect("node index fits a PNN (nodes file is limited to MAX_NODES)")
}

/// The node list of `peers`: every PNN not deleted.
fn list_of(peers: &[Peer]) -> NodeSet {
    let mut set = NodeSet::EMPTY;
    for (i, p) in peers.iter().enumerate() {
        if !p.deleted {
            set.set(pnn_of(i), true);
        }
    }
    set
}

/// The earlier node lists a node keeps at most while a change is being
/// completed: a reload beyond that is refused until they are harmless.
pub const MAX_EARLIER_LISTS: usize = 4;

impl Member {
    /// A node `pnn` of `nodes`, started at `now`.
    ///
    /// # Errors
    ///
    /// [`NodesError::BadPnn`] if `pnn` is not a live node of `nodes` (find
    /// it with [`NodesFile::own_pnn`]).
    pub fn new(
        cfg: Config,
        nodes: &NodesFile,
        pnn: Pnn,
        now: Duration,
    ) -> Result<Self, NodesError> {
        if nodes.nodes.get(idx(pnn)).is_none_or(|n| n.is_deleted()) {
            return Err(NodesError::BadPnn {
                file: nodes.file.clone(),
                pnn,
                count: nodes.len(),
            });
        }
        let peers: Vec<Peer> = nodes.nodes.iter().map(|n| Peer::fresh(n.address)).collect();
        let live = list_of(&peers);
        let mut m = Self {
            cfg,
            pnn,
            live,
            live_since: now,
            earlier_lists: Vec::new(),
            lists: vec![live],
            scratch: Vec::with_capacity(peers.len()),
            scratch_until: Vec::with_capacity(peers.len()),
            peers,
            started: now,
            next_hb: now,
            own_flags: NodeFlags::OK,
            ban_until: None,
            lease_until: None,
            promise: None,
            supports: None,
            was_active: false,
            active_since: None,
            lock: LockState::Idle { retry_at: now },
            leader_gen: 0,
            leader_update: None,
            max_gen: 0,
            published: Membership {
                generation: 0,
                leader: None,
                nodes: Vec::new(),
                this_node: pnn,
                lease_ok: false,
                reassignable: Vec::new(),
                lease: Lease::default(),
            },
            last_lease: false,
            lease_since: None,
            lease_told: None,
            // Unique per start on one clock; the daemon replaces it with
            // one derived from the boot id too.
            incarnation: duration_ns(now).rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15,
            sent_expired: NodeSet::EMPTY,
            bug: None,
        };
        m.published.nodes = m.local_view_infos();
        m.published.generation = m.next_generation();
        m.max_gen = m.published.generation;
        Ok(m)
    }

    /// The same machine with incarnation `incarnation`, which must differ
    /// from that of every earlier instance of this node whose heartbeats
    /// may still be echoed (the daemon derives it from the kernel's boot id
    /// and its start time). Call before the first input. Without it, the
    /// incarnation is derived from the start time `now`, which is enough
    /// while the clock never goes back (one boot, or a simulation).
    #[must_use]
    pub fn with_incarnation(mut self, incarnation: u64) -> Self {
        self.incarnation = incarnation;
        self
    }

    /// The same machine with a deliberately wrong rule: only for tests
    /// that show the simulator's checks catch it.
    #[doc(hidden)]
    #[must_use]
    pub fn with_injected_bug(mut self, bug: InjectedBug) -> Self {
        self.bug = Some(bug);
        self
    }

    /// This instance's incarnation.
    #[must_use]
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// This node's PNN.
    #[must_use]
    pub fn pnn(&self) -> Pnn {
        self.pnn
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The membership last published (answer to "get membership").
    #[must_use]
    pub fn membership(&self) -> &Membership {
        &self.published
    }

    /// The flags this node owns.
    #[must_use]
    pub fn own_flags(&self) -> NodeFlags {
        self.own_flags
    }

    /// The node this one currently supports as leader.
    #[must_use]
    pub fn supports(&self) -> Option<Pnn> {
        self.supports
    }

    fn t(&self) -> &Timing {
        &self.cfg.timing
    }

    fn hold(&self) -> Duration {
        self.t().lease + self.t().margin
    }

    /// Peer `pnn` is connected both ways at `now`.
    #[must_use]
    pub fn connected(&self, pnn: Pnn, now: Duration) -> bool {
        if pnn == self.pnn {
            return true;
        }
        let Some(p) = self.peers.get(idx(pnn)) else {
            return false;
        };
        let d = self.t().dead_after;
        !p.deleted
            && p.last_rx.is_some_and(|r| now < r + d)
            && p.heard_us_at.is_some_and(|s| now < s + d)
    }

    /// May this node lead (its leader capability, `setleaderrole`)?
    #[must_use]
    pub fn can_lead(&self) -> bool {
        self.cfg.can_lead
    }

    fn self_eligible(&self, now: Duration) -> bool {
        self.cfg.can_lead
            && !self
                .own_flags
                .intersects(NodeFlags::BANNED | NodeFlags::STOPPED)
            && now >= self.started + self.hold()
    }

    fn peer_eligible(&self, i: usize, now: Duration) -> bool {
        let p = &self.peers[i];
        p.can_lead
            && !p.flags.intersects(NodeFlags::BANNED | NodeFlags::STOPPED)
            && self.connected(pnn_of(i), now)
    }

    fn candidate(&self, now: Duration) -> Option<Pnn> {
        let mut lowest = None;
        let mut lowest_active = None;
        for i in 0..self.peers.len() {
            let me = i == idx(self.pnn);
            let (eligible, active) = if me {
                (self.self_eligible(now), self.was_active)
            } else {
                (self.peer_eligible(i, now), self.peers[i].active)
            };
            if !eligible {
                continue;
            }
            if lowest.is_none() {
                lowest = Some(pnn_of(i));
            }
            if active && lowest_active.is_none() {
                lowest_active = Some(pnn_of(i));
            }
        }
        lowest_active.or(lowest)
    }

    fn compute_support(&self, now: Duration) -> Option<Pnn> {
        if now < self.started + self.hold() {
            return None;
        }
        let c = self.candidate(now)?;
        // Vote promises hold with or without a cluster lock: a strict
        // majority leads without the lock, so two leaders are kept apart
        // by the promises, not by the lock (docs/clusterd.md, "The
        // leader").
        if let Some((to, until)) = self.promise {
            if to != c && now < until {
                return None;
            }
        }
        Some(c)
    }

    /// This node is an active leader at `now`: it supports itself and a
    /// strict majority of the configured nodes vote for it — with or
    /// without a cluster lock, which then only breaks ties: holding the
    /// lock, exactly half of the votes are enough.
    #[must_use]
    pub fn is_active_leader(&self, now: Duration) -> bool {
        self.supports == Some(self.pnn)
            && self
                .lists
                .iter()
                .all(|list| self.votes(list, now) >= self.votes_needed(list))
    }

    /// The votes of `list`'s nodes (this node's own included if it is one)
    /// that make this node an active leader now: a strict majority of
    /// `list`, or half of it while it holds the cluster lock. Every list
    /// of [`Member::node_lists`] must be satisfied.
    fn votes_needed(&self, list: &NodeSet) -> usize {
        let size = list.len();
        let majority = size / 2 + 1;
        if !self.cfg.lock {
            return majority;
        }
        let held = self.lock == LockState::Held;
        match self.bug {
            Some(InjectedBug::LockAloneLeads) if held => 1,
            // The lock alone does not make a leader: with it unreachable,
            // a side with half the nodes must not lead.
            Some(InjectedBug::HalfWithoutLock) => size.div_ceil(2),
            // The rule before #15: the lock is required even with a
            // strict majority (so an unreachable lock stops every leader).
            Some(InjectedBug::LockAlwaysRequired) if !held => usize::MAX,
            _ if held => size.div_ceil(2),
            _ => majority,
        }
    }

    /// Nodes of `list` supporting this one (itself included if it is in
    /// `list`) with a fresh echo.
    fn votes(&self, list: &NodeSet, now: Duration) -> usize {
        let lease = self.t().lease;
        usize::from(list.contains(self.pnn))
            + self
                .peers
                .iter()
                .enumerate()
                .filter(|&(j, p)| {
                    list.contains(pnn_of(j))
                        && !p.deleted
                        && p.supports == Some(self.pnn)
                        && p.support_echo.is_some_and(|s| now < s + lease)
                })
                .count()
    }

    /// This node's lease is valid at `now` (it may host public IPs).
    #[must_use]
    pub fn lease_ok(&self, now: Duration) -> bool {
        self.is_active_leader(now)
            || self.grants_ok(now)
            || (self.cfg.lock && self.lease_until.is_some_and(|u| now < u))
    }

    /// Grants from peers of `list` this node's lease needs besides itself:
    /// with itself, a strict majority of `list`. 0 (a one-node list, or a
    /// list this node is not in) puts no condition on the lease; if no
    /// list puts one (a one-node cluster), grants never make a lease
    /// (activeness does).
    fn grants_needed(&self, list: &NodeSet) -> usize {
        if list.contains(self.pnn) {
            list.len() / 2
        } else {
            0
        }
    }

    /// Enough peers' grants are in force at `now`, in every list.
    fn grants_ok(&self, now: Duration) -> bool {
        let mut some_condition = false;
        for list in &self.lists {
            let k = self.grants_needed(list);
            if k == 0 {
                continue;
            }
            some_condition = true;
            let granted = self
                .peers
                .iter()
                .enumerate()
                .filter(|&(j, p)| {
                    list.contains(pnn_of(j)) && !p.deleted && p.grant_end.is_some_and(|g| now < g)
                })
                .count();
            if granted < k {
                return false;
            }
        }
        some_condition
    }

    /// When the grants in force at `now` stop making a lease (in the list
    /// that runs out first, its k-th latest grant end), or `None` if they
    /// do not make one.
    fn grant_expiry(&mut self, now: Duration) -> Option<Duration> {
        let mut until: Option<Duration> = None;
        for l in 0..self.lists.len() {
            let list = self.lists[l];
            let k = self.grants_needed(&list);
            if k == 0 {
                continue;
            }
            self.scratch_until.clear();
            for (j, p) in self.peers.iter().enumerate() {
                if !list.contains(pnn_of(j)) {
                    continue;
                }
                if let Some(g) = p.grant_end.filter(|g| !p.deleted && now < *g) {
                    self.scratch_until.push(g);
                }
            }
            if self.scratch_until.len() < k {
                return None;
            }
            let i = self.scratch_until.len() - k;
            let end = *self.scratch_until.select_nth_unstable(i).1;
            until = Some(until.map_or(end, |u| u.min(end)));
        }
        until
    }

    /// This node certifies that peer `i`'s lease is over at `now`: it is
    /// past its own startup hold (it forgot grants of an earlier
    /// instance), does not hear `i` both ways, and granted `i` nothing
    /// received in the last `lease + margin` — so every lease `i` holds by
    /// a grant of ours ended at least `margin` ago (the granted stamp was
    /// sent before we received it). Sending the certificate fences `i`
    /// (no grant for `lease + margin`).
    fn certifies(&self, i: usize, now: Duration) -> bool {
        let p = &self.peers[i];
        i != idx(self.pnn)
            && !p.deleted
            && now >= self.started + self.hold()
            && !self.connected(pnn_of(i), now)
            && p.granted_rx.is_none_or(|g| now >= g + self.hold())
    }

    /// Until when this node's lease stays valid without further input, or
    /// `None` if it is not valid at `now`: the latest of the end of the
    /// majority grants, the lease an active leader granted (with a cluster
    /// lock only) and, on the active leader itself, the moment its
    /// support would fall below what leading needs; never more than one
    /// lease after `now` (a leader that needs nobody else's support renews
    /// it at every step, so the daemons still learn when clusterd stops).
    pub fn lease_expiry(&mut self, now: Duration) -> Option<Duration> {
        if !self.lease_ok(now) {
            return None;
        }
        let lease = self.t().lease;
        let mut until = if self.cfg.lock {
            self.lease_until.filter(|u| now < *u)
        } else {
            None
        };
        if let Some(g) = self.grant_expiry(now) {
            until = Some(until.map_or(g, |u| u.max(g)));
        }
        if self.is_active_leader(now) {
            // In every list, the votes needed from peers (this node's own
            // counted where it is a member, see is_active_leader): the
            // list whose support runs out first ends the leader's lease.
            let mut leader_until = now + lease;
            for l in 0..self.lists.len() {
                let list = self.lists[l];
                let needed = self
                    .votes_needed(&list)
                    .saturating_sub(usize::from(list.contains(self.pnn)));
                if needed == 0 {
                    continue;
                }
                self.scratch_until.clear();
                for (j, p) in self.peers.iter().enumerate() {
                    if !list.contains(pnn_of(j)) || p.deleted || p.supports != Some(self.pnn) {
                        continue;
                    }
                    if let Some(s) = p.support_echo {
                        if now < s + lease {
                            self.scratch_until.push(s + lease);
                        }
                    }
                }
                // The needed-th latest support end: when it passes, fewer
                // than needed peers of the list support this node.
                let end = if self.scratch_until.len() < needed {
                    now
                } else {
                    let i = self.scratch_until.len() - needed;
                    *self.scratch_until.select_nth_unstable(i).1
                };
                leader_until = leader_until.min(end);
            }
            until = Some(until.map_or(leader_until, |u| u.max(leader_until)));
        }
        until.map(|u| u.min(now + lease))
    }

    /// This node's lease at `now`, for the daemons.
    fn lease_info(&self, now: Duration, expiry: Option<Duration>) -> Lease {
        match (expiry, self.lease_since) {
            (Some(e), Some(since)) => Lease {
                at_ns: duration_ns(now),
                expires_ns: duration_ns(e),
                since_ns: duration_ns(since).max(1),
            },
            _ => Lease {
                at_ns: duration_ns(now),
                expires_ns: 0,
                since_ns: 0,
            },
        }
    }

    /// The membership as of `now` (the published one with this node's lease
    /// brought up to date): the answer to "get membership".
    pub fn current(&mut self, now: Duration) -> Membership {
        let expiry = self.lease_expiry(now);
        let mut m = self.published.clone();
        m.lease = self.lease_info(now, expiry);
        m
    }

    /// On the active leader: node `pnn`'s lease has certainly expired in its
    /// own view, so its public IPs may be given to other nodes. Needs
    /// certificates (see docs/clusterd.md, "Leases") from at least half of
    /// the configured nodes other than `pnn`, this one included: every
    /// strict majority that could grant `pnn` a lease contains one of them.
    /// With a cluster lock, also the leader-granted lease must be over.
    #[must_use]
    pub fn may_reassign(&self, pnn: Pnn, now: Duration) -> bool {
        if pnn == self.pnn || !self.is_active_leader(now) {
            return false;
        }
        let i = idx(pnn);
        if self.peers.get(i).is_none_or(|p| p.deleted) || !self.certifies(i, now) {
            return false;
        }
        if self.cfg.lock {
            let Some(since) = self.active_since else {
                return false;
            };
            if now < since + self.hold() || self.peers[i].granted_until.is_some_and(|g| now < g) {
                return false;
            }
        }
        let lease = self.t().lease;
        let me = idx(self.pnn);
        // In every list that has `pnn`, ⌈size/2⌉ of its other nodes.
        self.lists.iter().filter(|l| l.contains(pnn)).all(|list| {
            let certs = usize::from(list.contains(self.pnn))
                + self
                    .peers
                    .iter()
                    .enumerate()
                    .filter(|&(j, q)| {
                        j != i
                            && j != me
                            && list.contains(pnn_of(j))
                            && !q.deleted
                            && q.cert.contains(pnn)
                            && q.cert_echo.is_some_and(|e| now < e + lease)
                    })
                    .count();
            certs >= list.len().div_ceil(2)
        })
    }

    /// The earliest time after `now` at which something may change without
    /// input: the shell should call [`Member::tick`] then (or earlier).
    #[must_use]
    pub fn next_deadline(&self, now: Duration) -> Duration {
        let t = *self.t();
        let mut best = self.next_hb.max(now);
        let mut consider = |x: Option<Duration>| {
            if let Some(x) = x {
                if x > now && x < best {
                    best = x;
                }
            }
        };
        consider(self.lease_until);
        consider(self.ban_until);
        consider(self.promise.map(|(_, u)| u));
        consider(Some(self.started + self.hold()));
        consider(self.active_since.map(|s| s + self.hold()));
        if self.lists.len() > 1 {
            // An earlier list becomes harmless (see refresh_lists).
            consider(Some(self.live_since + self.hold()));
            for p in &self.peers {
                consider(p.list_since.map(|s| s + self.hold()));
            }
        }
        if let LockState::Idle { retry_at } = self.lock {
            consider(Some(retry_at));
        }
        for p in &self.peers {
            consider(p.last_rx.map(|r| r + t.dead_after));
            consider(p.heard_us_at.map(|s| s + t.dead_after));
            consider(p.support_echo.map(|s| s + t.lease));
            consider(p.granted_until);
            consider(p.grant_end);
            consider(p.granted_rx.map(|g| g + t.lease + t.margin));
            consider(p.fence_until);
            consider(p.cert_echo.map(|e| e + t.lease));
        }
        best
    }

    /// Timers: sends heartbeats when due, expires bans, peers, leases.
    pub fn tick(&mut self, now: Duration, out: &mut Vec<Output>) {
        self.step(now, out);
    }

    /// Handles a message from a peer.
    pub fn receive(&mut self, now: Duration, msg: &ClusterMsg, out: &mut Vec<Output>) {
        match msg {
            ClusterMsg::Heartbeat(hb) => self.on_heartbeat(now, hb),
            // Wire format 1: refused (the daemon logs it, naming the peer).
            ClusterMsg::LegacyHeartbeat(_) => {}
            ClusterMsg::Membership(u) => self.on_update(u),
            ClusterMsg::Admin(req) => {
                if req.target == self.pnn {
                    let outcome = self.apply_admin(now, req.op);
                    if req.from != self.pnn {
                        out.push(Output::Send {
                            to: req.from,
                            msg: ClusterMsg::AdminReply(AdminReply {
                                id: req.id,
                                from: self.pnn,
                                to: req.from,
                                outcome,
                            }),
                        });
                    }
                }
            }
            ClusterMsg::AdminReply(r) => {
                if r.to == self.pnn {
                    out.push(Output::AdminDone(*r));
                }
            }
        }
        self.step(now, out);
    }

    /// Runs an admin command: on this node directly, or by sending it to the
    /// target (which owns its flags). Returns the outcome when local.
    pub fn admin(
        &mut self,
        now: Duration,
        id: u64,
        target: Pnn,
        op: AdminOp,
        out: &mut Vec<Output>,
    ) -> Option<AdminOutcome> {
        if target == self.pnn {
            let o = self.apply_admin(now, op);
            self.step(now, out);
            return Some(o);
        }
        out.push(Output::Send {
            to: target,
            msg: ClusterMsg::Admin(AdminRequest {
                id,
                from: self.pnn,
                target,
                op,
            }),
        });
        None
    }

    /// The health monitor's result: failure sets UNHEALTHY, success clears it.
    pub fn set_healthy(&mut self, now: Duration, healthy: bool, out: &mut Vec<Output>) {
        self.own_flags.set(NodeFlags::UNHEALTHY, !healthy);
        self.step(now, out);
    }

    /// The cluster-lock helper's answer, or its exit.
    pub fn lock_event(&mut self, now: Duration, ev: LockEvent, out: &mut Vec<Output>) {
        match (ev, self.lock) {
            (LockEvent::Taken, LockState::Pending) => self.lock = LockState::Held,
            (LockEvent::NotTaken, LockState::Pending) | (LockEvent::Lost, LockState::Held) => {
                self.lock = LockState::Idle {
                    retry_at: now + self.t().lock_retry,
                };
            }
            // Answers to an attempt we already cancelled: the shell killed
            // that helper when it saw ReleaseLock.
            _ => {}
        }
        self.step(now, out);
    }

    fn apply_admin(&mut self, now: Duration, op: AdminOp) -> AdminOutcome {
        if let AdminOp::SetLeaderRole { on } = op {
            // Like STOPPED for the vote (`self_eligible`): the node stops or
            // starts being a candidate, and its heartbeats say so.
            if self.cfg.can_lead == on {
                return AdminOutcome::Already;
            }
            self.cfg.can_lead = on;
            return AdminOutcome::Done;
        }
        let (flag, on) = match op {
            AdminOp::Disable => (NodeFlags::PERMANENTLY_DISABLED, true),
            AdminOp::Enable => (NodeFlags::PERMANENTLY_DISABLED, false),
            AdminOp::Stop => (NodeFlags::STOPPED, true),
            AdminOp::Continue => (NodeFlags::STOPPED, false),
            AdminOp::Ban { seconds } => {
                if seconds == 0 {
                    return AdminOutcome::Invalid;
                }
                (NodeFlags::BANNED, true)
            }
            AdminOp::Unban => (NodeFlags::BANNED, false),
            AdminOp::SetLeaderRole { .. } => return AdminOutcome::Invalid,
        };
        if self.own_flags.contains(flag) == on {
            return AdminOutcome::Already;
        }
        self.own_flags.set(flag, on);
        if flag == NodeFlags::BANNED {
            self.ban_until = match op {
                AdminOp::Ban { seconds } => Some(now + Duration::from_secs(u64::from(seconds))),
                _ => None,
            };
        }
        AdminOutcome::Done
    }

    fn on_heartbeat(&mut self, now: Duration, hb: &Heartbeat) {
        if hb.to != self.pnn || hb.from == self.pnn || !self.plausible_generation(hb.generation) {
            return;
        }
        let dead_after = self.t().dead_after;
        let lease = self.t().lease;
        let me = self.pnn;
        let lock = self.cfg.lock;
        let incarnation = self.incarnation;
        let Some(p) = self.peers.get_mut(idx(hb.from)) else {
            return;
        };
        if p.deleted {
            return;
        }
        if let Some(r) = p.last_rx {
            // Reordered (older) heartbeat; accept an older stamp only from a
            // peer silent for dead_after (its host restarted its clock).
            if hb.stamp <= p.last_stamp && now < r + dead_after {
                return;
            }
        }
        p.last_rx = Some(now);
        p.last_stamp = hb.stamp;
        p.flags = hb.flags.intersection(NodeFlags::SELF_OWNED);
        p.can_lead = hb.can_lead;
        p.supports = hb.supports;
        p.active = hb.active_leader;
        p.generation = hb.generation;
        p.incarnation = hb.incarnation;
        // An echo from the future, or of another incarnation's stamp (one
        // before a reboot restarted the clock), proves nothing: ignore it.
        let echo = hb
            .echo
            .filter(|e| *e <= now && hb.echo_incarnation == incarnation);
        if let Some(e) = echo {
            if p.heard_us.is_none_or(|h| e > h) {
                p.heard_us = Some(e);
                p.heard_us_at = Some(now);
            }
        }
        p.support_echo = if hb.supports == Some(me) { echo } else { None };
        if let (true, Some(e)) = (hb.grant, echo) {
            p.grant_end = Some(p.grant_end.map_or(e + lease, |g| g.max(e + lease)));
        }
        p.cert = hb.expired;
        p.cert_echo = echo;
        if p.list != hb.nodes || p.list_since.is_none() {
            p.list = hb.nodes;
            p.list_since = Some(now);
        }
        p.also = hb.also;
        if lock && hb.active_leader {
            if let Some(e) = echo {
                let until = e + lease;
                self.lease_until = Some(self.lease_until.map_or(until, |u| u.max(until)));
            }
        }
        self.max_gen = self.max_gen.max(hb.generation);
        self.refresh_lists(now);
    }

    fn on_update(&mut self, u: &MembershipUpdate) {
        if u.from == self.pnn
            || u.nodes.len() != self.peers.len()
            || !self.plausible_generation(u.generation)
        {
            return;
        }
        if let Some(mine) = &self.leader_update {
            // Reordered: an older update — unless the leader's heartbeats
            // announce exactly this generation: it restarted and counts
            // from lower again, and the update kept is of its previous
            // instance (found by failoverd's whole-node simulator, seed
            // 332975: a node kept a restarted leader's pre-crash update and
            // refused every new one, following no leader for good).
            let announced = self.peers.get(idx(u.from)).map(|p| p.generation);
            if mine.from == u.from
                && mine.generation > u.generation
                && announced != Some(u.generation)
            {
                return;
            }
        }
        self.max_gen = self.max_gen.max(u.generation);
        // The update may overtake the leader's next heartbeat: its generation
        // is the leader's newest.
        if let Some(p) = self.peers.get_mut(idx(u.from)) {
            p.generation = p.generation.max(u.generation);
        }
        match &mut self.leader_update {
            // Reuse the buffer: no allocation for a repeated update.
            Some(mine) if mine.nodes.len() == u.nodes.len() => {
                mine.from = u.from;
                mine.generation = u.generation;
                mine.nodes.copy_from_slice(&u.nodes);
            }
            slot => *slot = Some(u.clone()),
        }
    }

    /// Is a peer's `generation` within [`MAX_GENERATION_JUMP`] changes of
    /// the highest one seen?
    fn plausible_generation(&self, generation: u64) -> bool {
        generation >> 8 <= (self.max_gen >> 8).saturating_add(MAX_GENERATION_JUMP)
    }

    /// A generation above every one seen, unique to this node: the low 8
    /// bits are the PNN's, so two nodes never make the same number for
    /// different memberships. The change counter above them saturates at
    /// [`MAX_GENERATION_COUNTER`] instead of wrapping.
    fn next_generation(&self) -> u64 {
        let own = u64::from(self.pnn) & 0xff;
        let counter = ((self.max_gen >> 8) + 1).min(MAX_GENERATION_COUNTER);
        (counter << 8) | own
    }

    fn step(&mut self, now: Duration, out: &mut Vec<Output>) {
        self.refresh_lists(now);
        if self.ban_until.is_some_and(|b| now >= b) {
            self.ban_until = None;
            self.own_flags.set(NodeFlags::BANNED, false);
        }
        let support = self.compute_support(now);
        if support != self.supports {
            self.supports = support;
            // Tell everyone at once: a new vote should not wait an interval.
            self.next_hb = now;
        }
        let active = self.is_active_leader(now);
        if active != self.was_active {
            self.was_active = active;
            self.active_since = active.then_some(now);
            self.next_hb = now;
        }
        if self.cfg.lock {
            // Only a candidate backed by at least half of the configured
            // nodes competes for the lock (and keeps it): the lock breaks a
            // tie, it does not let a clear minority lead.
            let want = self.supports == Some(self.pnn)
                && (self
                    .lists
                    .iter()
                    .all(|list| self.votes(list, now) * 2 >= list.len())
                    || self.bug == Some(InjectedBug::LockAloneLeads));
            match self.lock {
                LockState::Idle { retry_at } if want && now >= retry_at => {
                    self.lock = LockState::Pending;
                    out.push(Output::TakeLock);
                }
                LockState::Pending | LockState::Held if !want => {
                    self.lock = LockState::Idle { retry_at: now };
                    out.push(Output::ReleaseLock);
                    if self.was_active {
                        self.was_active = false;
                        self.active_since = None;
                    }
                }
                _ => {}
            }
        }
        // A new certificate should not wait an interval either: the leader
        // needs it (with ⌈c/2⌉ − 1 others) to reassign a dead node's
        // addresses, so it would add up to an interval to every failover.
        // (The shell wakes exactly when one becomes due: `granted_rx + H`
        // and `last_rx + dead_after` are deadlines.)
        if now < self.next_hb && self.certifies_anew(now) {
            self.next_hb = now;
        }
        if now >= self.next_hb {
            self.send_heartbeats(now, out);
        }
        self.publish(now, out);
    }

    /// Some peer is certified over now but was not in the last heartbeats.
    fn certifies_anew(&self, now: Duration) -> bool {
        (0..self.peers.len())
            .any(|i| !self.sent_expired.contains(pnn_of(i)) && self.certifies(i, now))
    }

    fn send_heartbeats(&mut self, now: Duration, out: &mut Vec<Output>) {
        let active = self.is_active_leader(now);
        let hold = self.hold();
        let mut expired = NodeSet::EMPTY;
        for i in 0..self.peers.len() {
            if self.certifies(i, now) {
                expired.set(pnn_of(i), true);
                // The promise that makes the certificate hold until the
                // leader stops counting it (its echo + lease).
                self.peers[i].fence_until = Some(now + hold);
            }
        }
        self.sent_expired = expired;
        // A (re)started node forgot its fences: it grants nothing before
        // they would all have ended.
        let may_grant = now >= self.started + hold;
        for i in 0..self.peers.len() {
            if i == idx(self.pnn) || self.peers[i].deleted {
                continue;
            }
            let to = pnn_of(i);
            let connected = self.connected(to, now);
            let p = &mut self.peers[i];
            let echo = p.last_rx.map(|_| p.last_stamp);
            let grant =
                may_grant && connected && echo.is_some() && p.fence_until.is_none_or(|f| now >= f);
            if grant {
                p.granted_rx = p.last_rx.max(p.granted_rx);
            }
            if let (true, Some(r)) = (active, p.last_rx) {
                let until = r + hold;
                p.granted_until = Some(p.granted_until.map_or(until, |g| g.max(until)));
            }
            if let (Some(r), Some(s)) = (p.last_rx, self.supports) {
                if s == to {
                    let until = r + hold;
                    self.promise = match self.promise {
                        Some((q, u)) if q == to => Some((to, u.max(until))),
                        _ => Some((to, until)),
                    };
                }
            }
            out.push(Output::Send {
                to,
                msg: ClusterMsg::Heartbeat(Heartbeat {
                    from: self.pnn,
                    to,
                    incarnation: self.incarnation,
                    stamp: now,
                    echo,
                    echo_incarnation: p.incarnation,
                    grant,
                    expired,
                    flags: self.own_flags,
                    can_lead: self.cfg.can_lead,
                    supports: self.supports,
                    active_leader: active,
                    generation: self.published.generation,
                    nodes: self.live,
                    also: self.lists.get(1).copied().unwrap_or(NodeSet::EMPTY),
                }),
            });
        }
        self.next_hb = now + self.t().interval;
    }

    /// This node's own view of every node's flags, into `scratch`.
    fn fill_local_view(&mut self, now: Duration) {
        self.scratch.clear();
        for i in 0..self.peers.len() {
            let p = &self.peers[i];
            let f = if p.deleted {
                NodeFlags::DELETED
            } else if i == idx(self.pnn) {
                self.own_flags
            } else if self.connected(pnn_of(i), now) {
                p.flags
            } else {
                p.flags | NodeFlags::DISCONNECTED
            };
            self.scratch.push(f);
        }
    }

    fn local_view_infos(&self) -> Vec<NodeInfo> {
        self.peers
            .iter()
            .enumerate()
            .map(|(i, p)| NodeInfo {
                pnn: pnn_of(i),
                address: p.address,
                flags: if p.deleted {
                    NodeFlags::DELETED
                } else if i == idx(self.pnn) {
                    self.own_flags
                } else {
                    p.flags | NodeFlags::DISCONNECTED
                },
            })
            .collect()
    }

    fn scratch_differs(&self) -> bool {
        self.published.nodes.len() != self.scratch.len()
            || self
                .published
                .nodes
                .iter()
                .zip(&self.scratch)
                .any(|(n, f)| n.flags != *f)
    }

    fn publish(&mut self, now: Duration, out: &mut Vec<Output>) {
        let active = self.is_active_leader(now);
        let mut adopted_gen = None;
        let leader;
        if active {
            self.fill_local_view(now);
            let stale_peer = self
                .peers
                .iter()
                .any(|p| p.last_rx.is_some() && p.generation > self.leader_gen);
            if self.scratch_differs()
                || self.published.leader != Some(self.pnn)
                || self.leader_gen == 0
                || stale_peer
            {
                self.leader_gen = self.next_generation();
                self.max_gen = self.leader_gen;
                for p in &mut self.peers {
                    p.update_sent = None;
                }
            }
            adopted_gen = Some(self.leader_gen);
            leader = Some(self.pnn);
            self.send_updates(now, out);
        } else {
            self.leader_gen = 0;
            let followed = self
                .supports
                .filter(|&l| l != self.pnn && self.connected(l, now) && self.peers[idx(l)].active);
            match followed {
                Some(l) => {
                    let want = self.peers[idx(l)].generation;
                    match &self.leader_update {
                        Some(u) if u.from == l && u.generation == want => {
                            self.scratch.clear();
                            self.scratch.extend(u.nodes.iter().map(|n| n.flags));
                            adopted_gen = Some(want);
                        }
                        // Wait for the leader's update (it resends when our
                        // heartbeat shows an old generation).
                        _ => {
                            self.scratch.clear();
                            self.scratch
                                .extend(self.published.nodes.iter().map(|n| n.flags));
                        }
                    }
                    leader = if adopted_gen.is_some() {
                        Some(l)
                    } else {
                        self.published.leader
                    };
                }
                None => {
                    self.fill_local_view(now);
                    leader = None;
                }
            }
        }
        let changed = self.scratch_differs()
            || self.published.leader != leader
            || adopted_gen.is_some_and(|g| g != self.published.generation);
        let lease = self.lease_ok(now);
        let lease_changed = lease != self.last_lease;
        if lease_changed {
            self.last_lease = lease;
            self.lease_since = lease.then_some(now);
            out.push(Output::Lease(lease));
        }
        let expiry = if lease { self.lease_expiry(now) } else { None };
        let tell = match (expiry, self.lease_told) {
            // A quarter lease further, or any later end when the told one
            // is within a quarter lease of running out: the majority's
            // grants may move the end in small steps.
            (Some(e), Some(told)) => {
                let q = self.t().lease / 4;
                lease_changed || e >= told + q || (e > told && told < now + q)
            }
            (Some(_), None) | (None, Some(_)) => true,
            (None, None) => false,
        };
        if tell {
            self.lease_told = expiry;
            out.push(Output::LeaseUpdate(self.lease_info(now, expiry)));
        }
        let mut reassign_changed = false;
        if active {
            let mut k = 0;
            for i in 0..self.peers.len() {
                let pnn = pnn_of(i);
                if self.peers[i].deleted || !self.may_reassign(pnn, now) {
                    continue;
                }
                if self.published.reassignable.get(k) != Some(&pnn) {
                    reassign_changed = true;
                }
                k += 1;
            }
            reassign_changed |= k != self.published.reassignable.len();
        } else {
            reassign_changed = !self.published.reassignable.is_empty();
        }
        if !(changed || lease_changed || reassign_changed) {
            return;
        }
        if changed {
            let generation = adopted_gen.unwrap_or_else(|| self.next_generation());
            self.max_gen = self.max_gen.max(generation);
            self.published.generation = generation;
            self.published.leader = leader;
            for (n, f) in self.published.nodes.iter_mut().zip(&self.scratch) {
                n.flags = *f;
            }
        }
        self.published.lease_ok = lease;
        self.published.lease = self.lease_info(now, expiry);
        if reassign_changed {
            self.published.reassignable = if active {
                (0..self.peers.len())
                    .map(pnn_of)
                    .filter(|&p| !self.peers[idx(p)].deleted && self.may_reassign(p, now))
                    .collect()
            } else {
                Vec::new()
            };
        }
        out.push(Output::Publish(self.published.clone()));
    }

    fn send_updates(&mut self, now: Duration, out: &mut Vec<Output>) {
        let interval = self.t().interval;
        let gen = self.leader_gen;
        let mut update: Option<MembershipUpdate> = None;
        for i in 0..self.peers.len() {
            if i == idx(self.pnn) || !self.connected(pnn_of(i), now) {
                continue;
            }
            let p = &self.peers[i];
            if p.generation == gen || p.update_sent.is_some_and(|s| now < s + interval) {
                continue;
            }
            let u = update.get_or_insert_with(|| MembershipUpdate {
                from: self.pnn,
                generation: gen,
                nodes: self
                    .scratch
                    .iter()
                    .enumerate()
                    .map(|(j, f)| NodeState {
                        pnn: pnn_of(j),
                        flags: *f,
                    })
                    .collect(),
            });
            out.push(Output::Send {
                to: pnn_of(i),
                msg: ClusterMsg::Membership(u.clone()),
            });
            self.peers[i].update_sent = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn member() -> Member {
        let file = NodesFile::parse(Path::new("nodes"), "192.0.2.1\n192.0.2.2\n").unwrap();
        Member::new(Config::default(), &file, 1, Duration::ZERO).unwrap()
    }

    #[test]
    fn an_update_of_a_restarted_leader_replaces_its_previous_instances() {
        let file =
            NodesFile::parse(Path::new("nodes"), "192.0.2.1\n192.0.2.2\n192.0.2.3\n").unwrap();
        let mut m = Member::new(Config::default(), &file, 1, Duration::ZERO).unwrap();
        let update = |generation| MembershipUpdate {
            from: 0,
            generation,
            nodes: (0..3)
                .map(|pnn| crate::msg::NodeState {
                    pnn,
                    flags: NodeFlags::OK,
                })
                .collect(),
        };
        let heartbeat = |generation, stamp| crate::msg::Heartbeat {
            from: 0,
            to: 1,
            stamp,
            echo: None,
            echo_incarnation: 0,
            grant: false,
            expired: crate::msg::NodeSet::EMPTY,
            incarnation: 7,
            flags: NodeFlags::OK,
            can_lead: true,
            supports: Some(0),
            active_leader: true,
            generation,
            nodes: crate::msg::NodeSet::EMPTY,
            also: crate::msg::NodeSet::EMPTY,
        };
        m.on_update(&update(1280));
        // The leader's heartbeats say 1280: an update 1024 is reordered.
        m.on_heartbeat(
            Duration::from_millis(10),
            &heartbeat(1280, Duration::from_millis(5)),
        );
        m.on_update(&update(1024));
        assert_eq!(m.leader_update.as_ref().map(|u| u.generation), Some(1280));
        // The leader restarted and announces 1024 now: its update counts.
        m.on_heartbeat(
            Duration::from_millis(20),
            &heartbeat(1024, Duration::from_millis(6)),
        );
        m.on_update(&update(1024));
        assert_eq!(m.leader_update.as_ref().map(|u| u.generation), Some(1024));
    }

    #[test]
    fn next_generation_saturates_instead_of_wrapping() {
        let mut m = member();
        m.max_gen = (MAX_GENERATION_COUNTER << 8) | 7;
        let g = m.next_generation();
        assert_eq!(g, (MAX_GENERATION_COUNTER << 8) | 1);
        m.max_gen = u64::MAX; // cannot happen through inputs; still no wrap
        assert_eq!(m.next_generation(), (MAX_GENERATION_COUNTER << 8) | 1);
    }

    #[test]
    fn plausible_generations_are_within_the_jump_of_the_highest_seen() {
        let mut m = member();
        m.max_gen = 5 << 8;
        assert!(m.plausible_generation(0));
        assert!(m.plausible_generation((5 + MAX_GENERATION_JUMP) << 8 | 0xff));
        assert!(!m.plausible_generation((6 + MAX_GENERATION_JUMP) << 8));
        assert!(!m.plausible_generation(u64::MAX));
    }
}
