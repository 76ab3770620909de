//! From timestamped kernel events to serving intervals and violations
//! (pure: no clock, no I/O).
//!
//! A node SERVES address A during time t iff
//!
//! * A is configured in the node's kernel (rtnetlink RTM_NEWADDR ..
//!   RTM_DELADDR), and
//! * either A is not guarded by failoverd's kernel lease (not in the
//!   `guard4`/`guard6` set of the node's `inet` table: no rule drops its
//!   traffic), or its element of `lease4`/`lease6` is alive (added or
//!   renewed at time r with timeout T: alive until r + T, unless deleted
//!   earlier; a deleted set or table clears its elements) and t is before
//!   the node's cap (the wall-clock bound `meta time > CAP drop` that
//!   every renewal puts at the head of the table's `cap` chain, through
//!   which guarded traffic passes: see [`CapChain`]; no cap rule, no
//!   bound), and
//! * the node reaches the client (its public port is plugged in and it is
//!   powered: the chaos driver records these).
//!
//! Before the kernel lease exists there is no guard set, so "serving" is
//! "configured" (and reachable). Two nodes serving A at overlapping times
//! is a violation of the safety rule; [`violations`] lists every such
//! overlap with its length. Overlaps shorter than the detector's resolution
//! (the wake-up latency of the detector threads, which stamp events when
//! they receive them) are returned too; the caller decides how to count
//! them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Time in microseconds since the start of the run (CLOCK_MONOTONIC).
pub type Micros = u64;

/// One event of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ev {
    /// Address configured (true) or removed.
    Addr(IpAddr, bool),
    /// Address put in (true) or taken out of the guard set.
    Guard(IpAddr, bool),
    /// Lease element added/renewed, alive until the given time; `None`:
    /// deleted.
    Lease(IpAddr, Option<Micros>),
    /// Every guard element of one family (true: IPv6) gone (set or table
    /// deleted).
    GuardClear(bool),
    /// Every lease element of one family gone.
    LeaseClear(bool),
    /// The node reaches the client (true) or not.
    Reach(bool),
    /// The node's kernel lease cap changed (the end of one nftables
    /// transaction): a guarded address serves only before this time;
    /// `None`: no cap rule.
    Cap(Option<Micros>),
}

/// The rules of one node's `cap` chain that the detector has seen, and
/// which one decides (pure: the monitor feeds it the chain's rule events).
///
/// failoverd only ever inserts at the head of the chain (each renewal a
/// pair `meta time > CAP counter drop`, `return`; netlink/src/lease.rs),
/// so the rule evaluated first — the effective cap — is the cap rule
/// inserted last that is still present: the one with the highest handle
/// (the kernel numbers a table's rules in increasing order). A flush (the
/// renewal that compacts the chain) deletes every rule one DELRULE at a
/// time, in the same transaction as the new pair; the monitor reads the
/// chain only at the end of a transaction (NFT_MSG_NEWGEN), so the
/// moment without any rule inside it is never seen.
///
/// Rules present before the detector started, or whose events were lost
/// in a receive-buffer overrun ([`CapChain::forget`]), are unknown: until
/// the next renewal the node counts as having no cap, which can only
/// lengthen its serving intervals (the detector errs towards reporting).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapChain {
    /// Present cap rules: handle → CAP (wall-clock ns since the epoch).
    rules: BTreeMap<u64, u64>,
}

impl CapChain {
    /// A rule added (`cap`: its CAP if it is a cap rule).
    pub fn add(&mut self, handle: u64, cap: Option<u64>) {
        if let Some(c) = cap {
            self.rules.insert(handle, c);
        }
    }

    /// A rule deleted.
    pub fn delete(&mut self, handle: u64) {
        self.rules.remove(&handle);
    }

    /// The chain (or its table) deleted.
    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// Events were lost: forget every rule (see the type's documentation).
    pub fn forget(&mut self) {
        self.rules.clear();
    }

    /// The CAP of the rule that decides, if any.
    pub fn effective(&self) -> Option<u64> {
        self.rules.last_key_value().map(|(_, c)| *c)
    }
}

/// A wall-clock time (`CLOCK_REALTIME`, ns since the epoch, the clock of
/// nftables' `meta time`) on the detector's timeline, given the wall clock
/// at the timeline's start (`real_base_ns`, read together with the
/// monotonic start). Rounded up to the next µs: a packet at exactly CAP
/// still passes. Assumes no wall-clock step during the run (slewing moves
/// `CLOCK_MONOTONIC` and `CLOCK_REALTIME` alike); a step of S moves every
/// later cap by S on this timeline.
pub fn wall_to_micros(ns: u64, real_base_ns: u64) -> Micros {
    ns.saturating_sub(real_base_ns).div_ceil(1000)
}

/// An event with its time and node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timed {
    /// When it was seen.
    pub t: Micros,
    /// Which node (PNN).
    pub node: usize,
    /// What.
    pub ev: Ev,
}

/// Half-open serving intervals `[from, to)` of each (address, node).
pub type Intervals = BTreeMap<IpAddr, BTreeMap<usize, Vec<(Micros, Micros)>>>;

#[derive(Default, Clone, Copy)]
struct St {
    configured: bool,
    guarded: bool,
    lease_until: Option<Micros>,
    /// The node's cap (see [`Ev::Cap`]); `None`: none.
    cap: Option<Micros>,
}

/// Serving intervals of every address on every node, up to `end`. Events
/// must be in time order per node (they are sorted by time here, stably).
/// Nodes start unreachable until a `Reach(true)`.
pub fn intervals(events: &[Timed], end: Micros) -> Intervals {
    let mut by_node: BTreeMap<usize, Vec<Timed>> = BTreeMap::new();
    for e in events {
        by_node.entry(e.node).or_default().push(*e);
    }
    let mut out: Intervals = BTreeMap::new();
    for (node, mut evs) in by_node {
        evs.sort_by_key(|e| e.t);
        let addrs: BTreeSet<IpAddr> = evs
            .iter()
            .filter_map(|e| match e.ev {
                Ev::Addr(a, _) | Ev::Guard(a, _) | Ev::Lease(a, _) => Some(a),
                _ => None,
            })
            .collect();
        for a in addrs {
            let v6 = a.is_ipv6();
            let mut st = St::default();
            let mut reach = false;
            let mut prev = 0;
            let mut segs: Vec<(Micros, Micros)> = Vec::new();
            let mut emit = |from: Micros, to: Micros, st: &St, reach: bool| {
                if !(st.configured && reach) || to <= from {
                    return;
                }
                let stop = if st.guarded {
                    let until = match (st.lease_until, st.cap) {
                        (Some(u), Some(c)) => u.min(c),
                        (Some(u), None) => u,
                        (None, _) => return,
                    };
                    if until <= from {
                        return;
                    }
                    until.min(to)
                } else {
                    to
                };
                match segs.last_mut() {
                    Some(last) if last.1 == from => last.1 = stop,
                    _ => segs.push((from, stop)),
                }
            };
            for e in &evs {
                let relevant = match e.ev {
                    Ev::Addr(x, _) | Ev::Guard(x, _) | Ev::Lease(x, _) => x == a,
                    Ev::GuardClear(f) | Ev::LeaseClear(f) => f == v6,
                    Ev::Reach(_) | Ev::Cap(_) => true,
                };
                if !relevant {
                    continue;
                }
                let t = e.t.min(end);
                emit(prev, t, &st, reach);
                prev = t.max(prev);
                match e.ev {
                    Ev::Addr(_, on) => st.configured = on,
                    Ev::Guard(_, on) => st.guarded = on,
                    Ev::Lease(_, until) => st.lease_until = until,
                    Ev::GuardClear(_) => st.guarded = false,
                    Ev::LeaseClear(_) => st.lease_until = None,
                    Ev::Reach(r) => reach = r,
                    Ev::Cap(c) => st.cap = c,
                }
            }
            emit(prev, end, &st, reach);
            if !segs.is_empty() {
                out.entry(a).or_default().insert(node, segs);
            }
        }
    }
    out
}

/// Two nodes serving one address at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    /// The address.
    pub addr: IpAddr,
    /// The lower PNN.
    pub a: usize,
    /// The higher PNN.
    pub b: usize,
    /// Start of the overlap.
    pub from: Micros,
    /// End of the overlap.
    pub to: Micros,
}

impl Violation {
    /// The overlap in milliseconds.
    pub fn overlap_ms(&self) -> f64 {
        (self.to - self.from) as f64 / 1000.0
    }
}

/// Every overlap of two nodes' serving intervals of one address.
pub fn violations(iv: &Intervals) -> Vec<Violation> {
    let mut out = Vec::new();
    for (addr, nodes) in iv {
        let list: Vec<(&usize, &Vec<(Micros, Micros)>)> = nodes.iter().collect();
        for i in 0..list.len() {
            for j in i + 1..list.len() {
                let (a, xs) = list[i];
                let (b, ys) = list[j];
                let (mut p, mut q) = (0, 0);
                while p < xs.len() && q < ys.len() {
                    let from = xs[p].0.max(ys[q].0);
                    let to = xs[p].1.min(ys[q].1);
                    if from < to {
                        out.push(Violation {
                            addr: *addr,
                            a: *a,
                            b: *b,
                            from,
                            to,
                        });
                    }
                    if xs[p].1 < ys[q].1 {
                        p += 1;
                    } else {
                        q += 1;
                    }
                }
            }
        }
    }
    out.sort_by_key(|v| (v.from, v.addr, v.a, v.b));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ev(t: Micros, node: usize, ev: Ev) -> Timed {
        Timed { t, node, ev }
    }

    #[test]
    fn configured_on_two_reachable_nodes_overlaps_exactly() {
        let x = a("198.51.100.201");
        let evs = [
            ev(0, 0, Ev::Reach(true)),
            ev(0, 1, Ev::Reach(true)),
            ev(100, 0, Ev::Addr(x, true)),
            ev(400, 1, Ev::Addr(x, true)),
            ev(650, 0, Ev::Addr(x, false)),
        ];
        let iv = intervals(&evs, 1000);
        assert_eq!(iv[&x][&0], vec![(100, 650)]);
        assert_eq!(iv[&x][&1], vec![(400, 1000)]);
        let v = violations(&iv);
        assert_eq!(
            v,
            vec![Violation {
                addr: x,
                a: 0,
                b: 1,
                from: 400,
                to: 650
            }]
        );
        assert!((v[0].overlap_ms() - 0.25).abs() < 1e-9);
    }

    #[test]
    fn release_before_take_is_no_violation() {
        let x = a("198.51.100.201");
        let evs = [
            ev(0, 0, Ev::Reach(true)),
            ev(0, 1, Ev::Reach(true)),
            ev(100, 0, Ev::Addr(x, true)),
            ev(500, 0, Ev::Addr(x, false)),
            ev(500, 1, Ev::Addr(x, true)),
        ];
        assert!(violations(&intervals(&evs, 1000)).is_empty());
    }

    #[test]
    fn an_unreachable_node_does_not_count() {
        let x = a("198.51.100.201");
        let evs = [
            ev(0, 0, Ev::Reach(true)),
            ev(0, 1, Ev::Reach(true)),
            ev(100, 0, Ev::Addr(x, true)),
            ev(200, 0, Ev::Reach(false)), // power-off: the address stays
            ev(300, 1, Ev::Addr(x, true)),
            ev(900, 0, Ev::Reach(true)), // back with the stale address
        ];
        let v = violations(&intervals(&evs, 1000));
        assert_eq!(v.len(), 1);
        assert_eq!((v[0].from, v[0].to), (900, 1000));
    }

    #[test]
    fn an_expired_lease_element_ends_serving_without_any_event() {
        let x = a("198.51.100.201");
        let evs = [
            ev(0, 0, Ev::Reach(true)),
            ev(0, 1, Ev::Reach(true)),
            ev(10, 0, Ev::Guard(x, true)),
            ev(20, 0, Ev::Lease(x, Some(520))),
            ev(30, 0, Ev::Addr(x, true)),
            ev(300, 0, Ev::Lease(x, Some(800))), // renewed
            // node 0 frozen: no more renewals; the address stays configured
            ev(900, 1, Ev::Addr(x, true)),
        ];
        let iv = intervals(&evs, 2000);
        assert_eq!(iv[&x][&0], vec![(30, 800)]);
        assert!(violations(&iv).is_empty());
        // Without the lease (no guard), the same node serves until the end.
        let plain: Vec<Timed> = evs
            .iter()
            .copied()
            .filter(|e| !matches!(e.ev, Ev::Guard(..) | Ev::Lease(..)))
            .collect();
        let v = violations(&intervals(&plain, 2000));
        assert_eq!(v.len(), 1);
        assert_eq!((v[0].from, v[0].to), (900, 2000));
    }

    #[test]
    fn a_deleted_table_unguards_and_a_deleted_element_stops_serving() {
        let x = a("198.51.100.201");
        let evs = [
            ev(0, 0, Ev::Reach(true)),
            ev(10, 0, Ev::Guard(x, true)),
            ev(20, 0, Ev::Addr(x, true)), // guarded, no lease: not serving
            ev(100, 0, Ev::Lease(x, Some(10_000))),
            ev(200, 0, Ev::Lease(x, None)),    // deleted
            ev(300, 0, Ev::GuardClear(false)), // table replaced: unguarded
            ev(400, 0, Ev::Addr(x, false)),
        ];
        let iv = intervals(&evs, 1000);
        assert_eq!(iv[&x][&0], vec![(100, 200), (300, 400)]);
        // The other family's clear does not touch it.
        let evs2 = [
            ev(0, 0, Ev::Reach(true)),
            ev(10, 0, Ev::Guard(x, true)),
            ev(20, 0, Ev::Addr(x, true)),
            ev(30, 0, Ev::GuardClear(true)),
        ];
        assert!(!intervals(&evs2, 100).contains_key(&x));
    }

    /// A renewal delayed between its clock reading and its commit leaves
    /// an element that outlives the lease; the cap it sets does not.
    #[test]
    fn an_element_alive_past_the_cap_stops_serving_at_the_cap() {
        let x = a("198.51.100.201");
        let evs = [
            ev(0, 0, Ev::Reach(true)),
            ev(0, 1, Ev::Reach(true)),
            ev(10, 0, Ev::Guard(x, true)),
            ev(20, 0, Ev::Lease(x, Some(10_000))), // element: 10 ms
            ev(20, 0, Ev::Cap(Some(800))),         // its cap: 0.8 ms
            ev(30, 0, Ev::Addr(x, true)),
            ev(900, 1, Ev::Addr(x, true)), // after the cap: no overlap
        ];
        let iv = intervals(&evs, 2000);
        assert_eq!(iv[&x][&0], vec![(30, 800)]);
        assert!(violations(&iv).is_empty());
        // Taken at 700, before the cap: the overlap ends at the cap, not
        // at the element's expiry.
        let mut early = evs;
        early[6] = ev(700, 1, Ev::Addr(x, true));
        let v = violations(&intervals(&early, 20_000));
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!((v[0].from, v[0].to), (700, 800));
        // Without the cap event the element decides: until 10 ms.
        let plain: Vec<Timed> = early
            .iter()
            .copied()
            .filter(|e| !matches!(e.ev, Ev::Cap(_)))
            .collect();
        let v = violations(&intervals(&plain, 20_000));
        assert_eq!((v[0].from, v[0].to), (700, 10_000));
    }

    #[test]
    fn a_later_renewals_higher_cap_resumes_serving() {
        let x = a("198.51.100.201");
        let evs = [
            ev(0, 0, Ev::Reach(true)),
            ev(10, 0, Ev::Guard(x, true)),
            ev(20, 0, Ev::Addr(x, true)),
            ev(100, 0, Ev::Lease(x, Some(5_000))),
            ev(100, 0, Ev::Cap(Some(800))),
            // Past the cap, the element still alive: not serving until
            // the next renewal raises the cap.
            ev(1_200, 0, Ev::Lease(x, Some(6_000))),
            ev(1_200, 0, Ev::Cap(Some(1_500))),
            // The cap rule deleted with nothing after it (its table's
            // chain removed): the element alone decides again.
            ev(2_000, 0, Ev::Cap(None)),
        ];
        let iv = intervals(&evs, 10_000);
        assert_eq!(iv[&x][&0], vec![(100, 800), (1_200, 1_500), (2_000, 6_000)]);
    }

    #[test]
    fn no_cap_serves_as_before_and_a_cap_leaves_unguarded_addresses_alone() {
        let x = a("198.51.100.201");
        let y = a("198.51.100.202");
        let evs = [
            ev(0, 0, Ev::Reach(true)),
            ev(10, 0, Ev::Guard(x, true)),
            ev(20, 0, Ev::Lease(x, Some(900))),
            ev(30, 0, Ev::Addr(x, true)),
            ev(30, 0, Ev::Addr(y, true)), // not guarded
            ev(40, 0, Ev::Cap(None)),
            ev(50, 0, Ev::Cap(Some(60))),
        ];
        let iv = intervals(&evs[..6], 2000);
        assert_eq!(iv[&x][&0], vec![(30, 900)]);
        let iv = intervals(&evs, 2000);
        assert_eq!(iv[&x][&0], vec![(30, 60)]);
        assert_eq!(iv[&y][&0], vec![(30, 2000)]);
    }

    #[test]
    fn the_cap_chain_follows_the_head_through_a_compaction() {
        let mut c = CapChain::default();
        assert_eq!(c.effective(), None);
        // A renewal's pair: `return` (no cap), then the drop at the head.
        c.add(1, None);
        c.add(2, Some(100));
        assert_eq!(c.effective(), Some(100));
        // A later renewal with an earlier cap (a shorter lease): the last
        // one inserted decides, whatever its value.
        c.add(3, None);
        c.add(4, Some(90));
        assert_eq!(c.effective(), Some(90));
        c.add(5, None);
        c.add(6, Some(300));
        assert_eq!(c.effective(), Some(300));
        // The head deleted alone: the pair below decides.
        c.delete(6);
        c.delete(5);
        assert_eq!(c.effective(), Some(90));
        // Compaction: every rule deleted, then a new pair, in one
        // transaction (read at its end).
        for h in 1..=4 {
            c.delete(h);
        }
        c.add(7, None);
        c.add(8, Some(400));
        assert_eq!(c.effective(), Some(400));
        // The chain or table deleted; events lost.
        c.clear();
        assert_eq!(c.effective(), None);
        c.add(9, Some(500));
        c.forget();
        assert_eq!(c.effective(), None);
        // Deleting an unknown rule (from before the detector) is fine.
        c.delete(77);
        assert_eq!(c.effective(), None);
    }

    #[test]
    fn wall_clock_caps_land_on_the_timeline_rounded_up() {
        let base = 1_765_000_000_000_000_000; // ns since the epoch
        assert_eq!(wall_to_micros(base, base), 0);
        assert_eq!(wall_to_micros(base + 1_500_000, base), 1_500);
        assert_eq!(wall_to_micros(base + 1_500_001, base), 1_501);
        // Before the run's start: at its start.
        assert_eq!(wall_to_micros(base - 5, base), 0);
    }

    #[test]
    fn three_nodes_each_pair_reported() {
        let x = a("2001:db8:1::201");
        let mut evs = Vec::new();
        for n in 0..3 {
            evs.push(ev(0, n, Ev::Reach(true)));
            evs.push(ev(100 + n as u64, n, Ev::Addr(x, true)));
        }
        let v = violations(&intervals(&evs, 200));
        let pairs: Vec<(usize, usize)> = v.iter().map(|v| (v.a, v.b)).collect();
        assert_eq!(pairs.len(), 3);
        for p in [(0, 1), (0, 2), (1, 2)] {
            assert!(pairs.contains(&p), "{pairs:?}");
        }
    }
}
