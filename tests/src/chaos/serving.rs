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
//!   earlier; a deleted set or table clears its elements), and
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
                    match st.lease_until {
                        Some(u) if u > from => u.min(to),
                        _ => return,
                    }
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
                    Ev::Reach(_) => true,
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
