//! The failover history (`ipfailover history`, docs/observability.md): the
//! last `[failover] history_size` takeover runs this node led and the
//! address moves it carried out, with when, why, and how long each phase
//! took.
//!
//! An observer only: the daemon, the leader's run and the executor tell
//! [`HISTORY`] what happened after it happened; nothing here is read by a
//! decision, so recording cannot change a takeover. One history per
//! process, like [`crate::counters::COUNTERS`] (a node runs one failoverd);
//! kept in memory, so a restarted failoverd starts an empty one.
//!
//! What is recorded:
//! * **Runs this node led** that moved an address or failed: the moves
//!   (address, from, to, reason), the run's phases (planning, release,
//!   take) and, when a node's death caused it, *detection* (the node's
//!   last heartbeat heard by clusterd to this node seeing it disconnected)
//!   and *lease wait* (seeing it disconnected to its lease certainly over,
//!   when its addresses may be given away).
//! * **Takes and releases on this node** (one entry per request): the
//!   addresses, the duration, for a take the time to the first
//!   announcement and the tickles sent, for a release the resets.
//! * **Drops**: every address removed because the lease ended.
//!
//! Reasons of a move, the first that applies to the node `from` that held
//! the address: `admin` for a `moveip`; `initial` when nobody held it;
//! `node death` when `from` is disconnected; `admin` when it is disabled,
//! stopped, banned or deleted; `health` when it is unhealthy or cannot
//! host the address (its interfaces are down); `lease loss` when it is
//! connected but no longer has the address (it dropped it when its lease
//! ended); else `rebalancing`. A take or release on a node that does not
//! lead gets its reasons from the leader's run (matched by the run stamp)
//! when the command reads both histories, or when the leader is this node.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use transport::msg::cluster::{Membership, NodeFlags, Pnn};
use transport::msg::failover::{History, HistoryEntry, HistoryKind, HistoryMove, PublicIps};

/// Entries kept when the configuration does not say.
pub const DEFAULT_CAPACITY: usize = 100;

/// How long after a take its announcements and tickles are still added to
/// it (CTDB's defaults announce for 3 s).
const FOLLOW_FOR: Duration = Duration::from_secs(60);

/// Addresses of takes in progress followed at most.
const PENDING_MAX: usize = 4096;

/// Why an address moved, most severe first (an entry's reason is the most
/// severe of its moves').
pub use transport::msg::failover::HISTORY_REASONS as REASONS;

/// What a node's membership showed over time.
#[derive(Debug, Clone, Copy, Default)]
struct NodeSeen {
    /// Flags in the last membership seen (`None`: not seen yet).
    flags: Option<NodeFlags>,
    /// When this node saw it become disconnected (only a change seen, not
    /// a node disconnected since the start).
    disconnected_ns: Option<u64>,
    /// When clusterd last heard it, as clusterd told after that.
    last_heard_ns: Option<u64>,
    /// When it entered the leader's reassignable list.
    reassignable_ns: Option<u64>,
}

/// A take in progress of one address: its start, and the first
/// announcement and tickles seen since.
#[derive(Debug, Clone, Copy, Default)]
struct Pending {
    start_ns: u64,
    first_ns: Option<u64>,
    tickles: u64,
}

#[derive(Debug)]
struct State {
    capacity: usize,
    next_seq: u64,
    /// Entries with the monotonic time each started, oldest first.
    entries: VecDeque<(HistoryEntry, u64)>,
    nodes: BTreeMap<Pnn, NodeSeen>,
    /// Address → the take entry (seq) its announcements go to.
    open_takes: BTreeMap<IpAddr, u64>,
    /// Takes in progress (see [`Recorder::take_started`]).
    pending: BTreeMap<IpAddr, Pending>,
}

/// A node's failover history (see the module docs).
#[derive(Debug)]
pub struct Recorder {
    state: Mutex<State>,
}

/// This process's history.
pub static HISTORY: Recorder = Recorder::new();

/// Monotonic time now, ns (the clock clusterd's lease times are on).
#[must_use]
pub fn now_ns() -> u64 {
    transport::msg::cluster::monotonic_ns()
}

/// Milliseconds since the Unix epoch, now.
#[must_use]
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A new entry of `kind` with nothing measured yet.
#[must_use]
pub fn entry(kind: HistoryKind, at_unix_ms: u64) -> HistoryEntry {
    HistoryEntry::new(kind, at_unix_ms)
}

pub use transport::msg::failover::main_reason;

/// Why `addr` left `from` (see the module docs), from the run's membership
/// and reports.
#[must_use]
pub fn reason(
    addr: IpAddr,
    from: Option<Pnn>,
    m: &Membership,
    reports: &BTreeMap<Pnn, PublicIps>,
) -> &'static str {
    let Some(from) = from else {
        return "initial";
    };
    let flags = m.flags(from).unwrap_or(NodeFlags::OK);
    if flags.contains(NodeFlags::DISCONNECTED) {
        return "node death";
    }
    if flags.intersects(
        NodeFlags::PERMANENTLY_DISABLED
            | NodeFlags::STOPPED
            | NodeFlags::BANNED
            | NodeFlags::DELETED,
    ) {
        return "admin";
    }
    if flags.contains(NodeFlags::UNHEALTHY) {
        return "health";
    }
    let Some(report) = reports.get(&from) else {
        // Connected, left out of the run (it keeps failing to report).
        return "health";
    };
    match report.ips.iter().find(|i| i.addr == addr) {
        Some(i) if i.active.is_none() => "lease loss",
        Some(i) if i.available.is_empty() => "health",
        None => "admin",
        Some(_) => "rebalancing",
    }
}

/// What the leader's run knows once it has carried out a plan.
#[derive(Debug)]
pub struct RunFacts<'a> {
    /// The membership it ran for.
    pub membership: &'a Membership,
    /// The leader's memory of who held what before the run.
    pub last_owner: &'a BTreeMap<IpAddr, Pnn>,
    /// Every answering node's report.
    pub reports: &'a BTreeMap<Pnn, PublicIps>,
    /// The plan's releases: node → (address, new owner).
    pub releases: &'a BTreeMap<Pnn, Vec<(IpAddr, Option<Pnn>)>>,
    /// The takes sent (after failed releases were withheld).
    pub takes: &'a BTreeMap<Pnn, Vec<IpAddr>>,
    /// A `moveip` (every move's reason is `admin`).
    pub admin_move: bool,
}

/// The moves of a run: every address taken (from its releaser, else from
/// the holder the leader remembers) and every address released and not
/// taken anywhere (to nobody).
#[must_use]
pub fn moves(f: &RunFacts<'_>) -> Vec<HistoryMove> {
    // A release is also sent to make sure (a node that may still hold the
    // address, a leftover): the releaser is where it came from only when
    // its report shows it there.
    let held = |pnn: Pnn, addr: IpAddr| {
        f.reports
            .get(&pnn)
            .is_none_or(|r| r.ips.iter().any(|i| i.addr == addr && i.active.is_some()))
    };
    // Every assignment is sent as a take; one the node already has is not
    // a move.
    let already = |pnn: Pnn, addr: IpAddr| {
        f.reports.get(&pnn).is_some_and(|r| {
            r.ips
                .iter()
                .any(|i| i.addr == addr && i.active.as_deref().is_some_and(|a| !a.is_empty()))
        })
    };
    let mut released_by: BTreeMap<IpAddr, Pnn> = BTreeMap::new();
    for (&pnn, list) in f.releases {
        for (addr, _) in list {
            if held(pnn, *addr) {
                released_by.insert(*addr, pnn);
            }
        }
    }
    let mut out = Vec::new();
    let mut taken = BTreeSet::new();
    for (&to, list) in f.takes {
        for &addr in list {
            taken.insert(addr);
            if already(to, addr) {
                continue;
            }
            let from = released_by
                .get(&addr)
                .copied()
                .or_else(|| f.last_owner.get(&addr).copied())
                .filter(|&p| p != to);
            let why = if f.admin_move {
                "admin"
            } else {
                reason(addr, from, f.membership, f.reports)
            };
            out.push(HistoryMove {
                addr,
                from,
                to: Some(to),
                reason: why.to_string(),
            });
        }
    }
    for (&addr, &from) in &released_by {
        if !taken.contains(&addr) {
            let why = if f.admin_move {
                "admin"
            } else {
                reason(addr, Some(from), f.membership, f.reports)
            };
            out.push(HistoryMove {
                addr,
                from: Some(from),
                to: None,
                reason: why.to_string(),
            });
        }
    }
    out.sort_by_key(|m| m.addr);
    out
}

impl Recorder {
    /// An empty history of [`DEFAULT_CAPACITY`] entries.
    #[must_use]
    pub const fn new() -> Recorder {
        Recorder {
            state: Mutex::new(State {
                capacity: DEFAULT_CAPACITY,
                next_seq: 1,
                entries: VecDeque::new(),
                nodes: BTreeMap::new(),
                open_takes: BTreeMap::new(),
                pending: BTreeMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding it leaves plain data; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps at most `n` entries (at least 1).
    pub fn set_capacity(&self, n: usize) {
        let mut s = self.lock();
        s.capacity = n.max(1);
        while s.entries.len() > s.capacity {
            s.entries.pop_front();
        }
    }

    /// Adds an entry that started at `start_ns`; returns its number.
    pub fn push(&self, mut e: HistoryEntry, start_ns: u64) -> u64 {
        let mut s = self.lock();
        let seq = s.next_seq;
        s.next_seq += 1;
        e.seq = seq;
        if e.kind == HistoryKind::Run {
            // This node's own takes and releases of the run get its reasons.
            let reasons: BTreeMap<IpAddr, String> =
                e.moves.iter().map(|m| (m.addr, m.reason.clone())).collect();
            for (old, _) in s.entries.iter_mut().rev().take(16) {
                if old.kind != HistoryKind::Run && old.run == e.run && old.reason.is_empty() {
                    fill_reasons(old, &reasons);
                }
            }
        }
        s.entries.push_back((e, start_ns));
        while s.entries.len() > s.capacity {
            s.entries.pop_front();
        }
        seq
    }

    /// The history as `GET_HISTORY` answers it, newest first.
    #[must_use]
    pub fn snapshot(&self, pnn: Pnn) -> History {
        let s = self.lock();
        History {
            pnn,
            capacity: u32::try_from(s.capacity).unwrap_or(u32::MAX),
            recorded: s.next_seq - 1,
            entries: s.entries.iter().rev().map(|(e, _)| e.clone()).collect(),
        }
    }

    /// A membership this node's failoverd received at `now_ns`: notes when
    /// nodes became disconnected or reassignable. Returns the nodes that
    /// became disconnected (ask clusterd when it last heard them, then call
    /// [`Recorder::heard`]).
    pub fn membership(&self, m: &Membership, now_ns: u64) -> Vec<Pnn> {
        let mut s = self.lock();
        let mut newly = Vec::new();
        for n in &m.nodes {
            let seen = s.nodes.entry(n.pnn).or_default();
            let down = n.flags.contains(NodeFlags::DISCONNECTED);
            let was_down = seen.flags.map(|f| f.contains(NodeFlags::DISCONNECTED));
            match (was_down, down) {
                (Some(false), true) => {
                    seen.disconnected_ns = Some(now_ns);
                    seen.last_heard_ns = None;
                    seen.reassignable_ns = None;
                    newly.push(n.pnn);
                }
                (_, false) => {
                    seen.disconnected_ns = None;
                    seen.reassignable_ns = None;
                }
                _ => {}
            }
            seen.flags = Some(n.flags);
            if m.reassignable.contains(&n.pnn) {
                seen.reassignable_ns.get_or_insert(now_ns);
            }
        }
        newly
    }

    /// clusterd last heard node `pnn` at `at_ns`.
    pub fn heard(&self, pnn: Pnn, at_ns: u64) {
        if let Some(seen) = self.lock().nodes.get_mut(&pnn) {
            if seen.disconnected_ns.is_some() {
                seen.last_heard_ns = Some(at_ns);
            }
        }
    }

    /// Records a run this node led (skipped when it moved nothing and
    /// succeeded). Detection and lease wait come from the first node whose
    /// death moved an address.
    pub fn run(&self, mut e: HistoryEntry, start_ns: u64) {
        if e.moves.is_empty() && e.ok {
            return;
        }
        {
            let s = self.lock();
            if let Some((last, _)) = s.entries.back() {
                // A run failing again the same way adds nothing.
                if !e.ok
                    && e.moves.is_empty()
                    && last.kind == HistoryKind::Run
                    && !last.ok
                    && last.moves.is_empty()
                    && last.error == e.error
                {
                    return;
                }
            }
            let dead = e
                .moves
                .iter()
                .find(|m| m.reason == "node death")
                .and_then(|m| m.from);
            if let Some(seen) = dead.and_then(|p| s.nodes.get(&p)) {
                if let Some(down) = seen.disconnected_ns {
                    e.detection_us = seen
                        .last_heard_ns
                        .filter(|&h| h <= down)
                        .map(|h| us(Duration::from_nanos(down - h)));
                    e.lease_wait_us = seen
                        .reassignable_ns
                        .map(|r| us(Duration::from_nanos(r.saturating_sub(down))));
                }
            }
        }
        self.push(e, start_ns);
    }

    /// A take of `addrs` starts at `start_ns`: their announcements and
    /// tickles from now on belong to it (they start before the take
    /// returns).
    pub fn take_started(&self, addrs: &[IpAddr], start_ns: u64) {
        let mut s = self.lock();
        let follow = u64::try_from(FOLLOW_FOR.as_nanos()).unwrap_or(u64::MAX);
        s.pending
            .retain(|_, p| start_ns.saturating_sub(p.start_ns) <= follow);
        for a in addrs {
            if s.pending.len() >= PENDING_MAX && !s.pending.contains_key(a) {
                break;
            }
            s.pending.insert(
                *a,
                Pending {
                    start_ns,
                    first_ns: None,
                    tickles: 0,
                },
            );
        }
    }

    /// Records a take on this node that started at `start_ns` (after
    /// [`Recorder::take_started`]): its first announcement and tickles,
    /// those already sent and those to come, are added to it.
    pub fn take(&self, mut e: HistoryEntry, start_ns: u64) {
        let addrs: Vec<IpAddr> = e.moves.iter().map(|m| m.addr).collect();
        {
            let mut s = self.lock();
            let mut first: Option<u64> = None;
            for a in &addrs {
                if let Some(p) = s.pending.remove(a).filter(|p| p.start_ns == start_ns) {
                    if let Some(f) = p.first_ns {
                        first = Some(first.map_or(f, |g: u64| g.min(f)));
                    }
                    e.tickles += p.tickles;
                }
            }
            e.announce_us = first.map(|f| us(Duration::from_nanos(f.saturating_sub(start_ns))));
        }
        let seq = self.push(e, start_ns);
        let mut s = self.lock();
        for a in addrs {
            s.open_takes.insert(a, seq);
        }
    }

    /// An announcement of `addr` went out at `at_ns`.
    pub fn announced(&self, addr: IpAddr, at_ns: u64) {
        self.note(addr, at_ns, 0);
    }

    /// `n` tickle ACKs went to the clients of `addr` at `at_ns`.
    pub fn tickled(&self, addr: IpAddr, at_ns: u64, n: usize) {
        self.note(addr, at_ns, u64::try_from(n).unwrap_or(u64::MAX));
    }

    fn note(&self, addr: IpAddr, at_ns: u64, tickles: u64) {
        let mut s = self.lock();
        let follow = u64::try_from(FOLLOW_FOR.as_nanos()).unwrap_or(u64::MAX);
        if let Some(&seq) = s.open_takes.get(&addr) {
            if let Some((e, start)) = s.entries.iter_mut().rev().find(|(e, _)| e.seq == seq) {
                if at_ns.saturating_sub(*start) <= follow {
                    e.tickles += tickles;
                    if e.announce_us.is_none() {
                        e.announce_us =
                            Some(us(Duration::from_nanos(at_ns.saturating_sub(*start))));
                    }
                    return;
                }
            }
            s.open_takes.remove(&addr);
        }
        if let Some(p) = s.pending.get_mut(&addr) {
            if at_ns >= p.start_ns {
                p.first_ns.get_or_insert(at_ns);
                p.tickles += tickles;
            }
        }
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

/// Gives a take's or release's moves the reasons of its run, and the entry
/// the most severe of them ([`HistoryEntry::fill_reasons`]).
pub fn fill_reasons(e: &mut HistoryEntry, reasons: &BTreeMap<IpAddr, String>) {
    e.fill_reasons(reasons);
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use transport::msg::cluster::{Lease, NodeInfo};
    use transport::msg::failover::PublicIp;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, last))
    }

    fn membership(flags: &[u32], reassignable: Vec<Pnn>) -> Membership {
        Membership {
            generation: 7,
            leader: Some(0),
            nodes: flags
                .iter()
                .enumerate()
                .map(|(i, f)| NodeInfo {
                    pnn: Pnn::try_from(i).unwrap(),
                    address: None,
                    flags: NodeFlags::from_bits(*f),
                })
                .collect(),
            this_node: 0,
            lease_ok: true,
            reassignable,
            lease: Lease::default(),
        }
    }

    fn report(pnn: Pnn, active: &[u8], down: &[u8]) -> PublicIps {
        PublicIps {
            pnn,
            can_host: true,
            ips: (1..=4)
                .map(|i| PublicIp {
                    addr: ip(i),
                    prefix: 24,
                    configured: vec!["eth1".into()],
                    available: if down.contains(&i) {
                        vec![]
                    } else {
                        vec!["eth1".into()]
                    },
                    active: active.contains(&i).then(|| "eth1".to_string()),
                    owner: None,
                })
                .collect(),
            ifaces: vec![],
        }
    }

    #[test]
    fn reasons_follow_the_state_of_the_node_that_held_the_address() {
        // Node 1 dead, 2 unhealthy, 3 disabled, 4 connected.
        let m = membership(&[0, 0x01, 0x02, 0x04, 0], vec![]);
        let reports = BTreeMap::from([(0, report(0, &[], &[])), (4, report(4, &[2, 3], &[3]))]);
        assert_eq!(reason(ip(1), None, &m, &reports), "initial");
        assert_eq!(reason(ip(1), Some(1), &m, &reports), "node death");
        assert_eq!(reason(ip(1), Some(2), &m, &reports), "health");
        assert_eq!(reason(ip(1), Some(3), &m, &reports), "admin");
        // Node 4 no longer has .1 (it dropped it): lease loss; it still
        // has .2: rebalancing; its interface for .3 is down: health.
        assert_eq!(reason(ip(1), Some(4), &m, &reports), "lease loss");
        assert_eq!(reason(ip(2), Some(4), &m, &reports), "rebalancing");
        assert_eq!(reason(ip(3), Some(4), &m, &reports), "health");
    }

    #[test]
    fn moves_name_the_releaser_or_the_remembered_holder() {
        let m = membership(&[0, 0x01, 0], vec![1]);
        let reports = BTreeMap::from([(0, report(0, &[], &[])), (2, report(2, &[3, 4], &[]))]);
        let last_owner = BTreeMap::from([(ip(1), 1), (ip(2), 1), (ip(3), 2)]);
        let releases = BTreeMap::from([(2, vec![(ip(3), Some(0)), (ip(4), None)])]);
        let takes = BTreeMap::from([(0, vec![ip(1), ip(2), ip(3)])]);
        let f = RunFacts {
            membership: &m,
            last_owner: &last_owner,
            reports: &reports,
            releases: &releases,
            takes: &takes,
            admin_move: false,
        };
        let mv = moves(&f);
        let got: Vec<(IpAddr, Option<Pnn>, Option<Pnn>, &str)> = mv
            .iter()
            .map(|m| (m.addr, m.from, m.to, m.reason.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (ip(1), Some(1), Some(0), "node death"),
                (ip(2), Some(1), Some(0), "node death"),
                (ip(3), Some(2), Some(0), "rebalancing"),
                (ip(4), Some(2), None, "rebalancing"),
            ]
        );
        assert_eq!(main_reason(&mv), "node death");
        assert_eq!(main_reason(&[]), "none");
    }

    #[test]
    fn a_death_gets_detection_and_lease_wait() {
        let h = Recorder::new();
        h.membership(&membership(&[0, 0], vec![]), 1_000);
        assert_eq!(
            h.membership(&membership(&[0, 0x01], vec![]), 600_000_000),
            [1]
        );
        h.heard(1, 100_000_000);
        h.membership(&membership(&[0, 0x01], vec![1]), 900_000_000);
        let mut e = entry(HistoryKind::Run, 5);
        e.moves = vec![HistoryMove {
            addr: ip(1),
            from: Some(1),
            to: Some(0),
            reason: "node death".into(),
        }];
        h.run(e, 900_000_000);
        // A successful run that moved nothing is not kept.
        h.run(entry(HistoryKind::Run, 6), 1);
        let got = h.snapshot(0);
        assert_eq!(got.entries.len(), 1);
        assert_eq!(got.entries[0].detection_us, Some(500_000));
        assert_eq!(got.entries[0].lease_wait_us, Some(300_000));
    }

    #[test]
    fn announcements_before_and_after_the_entry_reach_the_take() {
        let h = Recorder::new();
        h.announced(ip(1), 10); // before the take started: not its own
        h.take_started(&[ip(1), ip(9)], 1_000_000);
        h.announced(ip(1), 2_000_000);
        h.announced(ip(1), 2_500_000); // a later round: not the first
        let mut e = entry(HistoryKind::Take, 1);
        e.run = 42;
        e.moves = [1, 9]
            .iter()
            .map(|&i| HistoryMove {
                addr: ip(i),
                from: None,
                to: Some(0),
                reason: String::new(),
            })
            .collect();
        h.take(e, 1_000_000);
        h.tickled(ip(1), 3_000_000, 5);
        h.tickled(ip(9), 3_000_000, 2);
        let got = &h.snapshot(0).entries[0];
        assert_eq!(got.announce_us, Some(1_000));
        assert_eq!(got.tickles, 7);
        // The run of this node that ordered it gives the reasons.
        let mut run = entry(HistoryKind::Run, 2);
        run.run = 42;
        run.moves = vec![HistoryMove {
            addr: ip(1),
            from: Some(1),
            to: Some(0),
            reason: "node death".into(),
        }];
        h.run(run, 1_000_000);
        let got = h.snapshot(0);
        assert_eq!(got.entries[1].reason, "node death");
        assert_eq!(got.entries[1].moves[0].reason, "node death");
        assert_eq!(got.entries[1].moves[1].reason, "");
    }

    #[test]
    fn capacity_keeps_the_newest() {
        let h = Recorder::new();
        h.set_capacity(3);
        for i in 0..5 {
            h.push(entry(HistoryKind::Drop, i), 0);
        }
        let got = h.snapshot(0);
        assert_eq!(got.recorded, 5);
        let seqs: Vec<u64> = got.entries.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [5, 4, 3]);
    }
}
