use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::msg::{Deltas, Msg, OpKind, SyncChunk};
use crate::reporter::Reporter;

const GRACE: Duration = Duration::from_secs(60);
const T0: Duration = Duration::from_secs(1000);

fn a4() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10))
}

fn a6() -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10))
}

fn c4(host: u8, port: u16) -> Conn {
    Conn::new(
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, host)), port),
        445,
    )
}

fn c6(host: u16, port: u16) -> Conn {
    Conn::new(
        SocketAddr::new(
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, host)),
            port,
        ),
        2049,
    )
}

fn v(seq: u64) -> Version {
    Version::new(1, seq)
}

fn sorted(mut c: Vec<Conn>) -> Vec<Conn> {
    c.sort();
    c
}

fn sync(
    t: &mut Table,
    reporter: Pnn,
    address: IpAddr,
    version: Version,
    conns: &[Conn],
) -> Outcome {
    let mut last = Outcome::Stale;
    for chunk in SyncChunk::split(reporter, address, version, conns, usize::MAX) {
        last = t.apply_sync(&chunk, T0).unwrap();
    }
    last
}

fn add(t: &mut Table, reporter: Pnn, address: IpAddr, version: Version, c: Conn) -> Outcome {
    t.apply_delta(reporter, address, version, OpKind::Add, c, T0)
        .unwrap()
}

fn remove(t: &mut Table, reporter: Pnn, address: IpAddr, version: Version, c: Conn) -> Outcome {
    t.apply_delta(reporter, address, version, OpKind::Remove, c, T0)
        .unwrap()
}

#[test]
fn add_remove_and_per_address_lookup() {
    let mut t = Table::new(GRACE);
    assert_eq!(add(&mut t, 0, a4(), v(1), c4(1, 1000)), Outcome::Applied);
    assert_eq!(add(&mut t, 0, a4(), v(2), c4(2, 1000)), Outcome::Applied);
    assert_eq!(add(&mut t, 0, a6(), v(1), c6(1, 1000)), Outcome::Applied);
    assert_eq!(sorted(t.connections(a4())), vec![c4(1, 1000), c4(2, 1000)]);
    assert_eq!(t.connections(a6()), vec![c6(1, 1000)]);
    assert_eq!((t.count(a4()), t.count(a6()), t.len()), (2, 1, 3));
    assert_eq!(remove(&mut t, 0, a4(), v(3), c4(1, 1000)), Outcome::Applied);
    assert_eq!(t.connections(a4()), vec![c4(2, 1000)]);
    assert_eq!(t.count(a4()), 1);
    // Removing an absent connection is a valid operation that changes nothing.
    assert_eq!(remove(&mut t, 0, a4(), v(4), c4(9, 9)), Outcome::Applied);
    assert_eq!(t.count(a4()), 1);
    assert!(t
        .connections(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99)))
        .is_empty());
    // No sync yet: a delta alone does not prove that earlier ones were seen.
    assert_eq!(t.gaps().len(), 2);
}

#[test]
fn sets_give_memory_back_after_mass_removal() {
    let mut t = Table::new(GRACE);
    let capacity = |t: &Table| match &t.addrs[&a4()].family {
        Family::V4(vs) => vs.views[0].set.capacity(),
        Family::V6(_) => unreachable!("a4 is IPv4"),
    };
    let n = 100_000u64;
    for i in 0..n {
        let c = c4(
            u8::try_from(i % 200).unwrap(),
            u16::try_from(i / 200).unwrap(),
        );
        add(&mut t, 0, a4(), v(i + 1), c);
    }
    let full = capacity(&t);
    assert!(full >= 100_000);
    for i in 0..n - 10 {
        let c = c4(
            u8::try_from(i % 200).unwrap(),
            u16::try_from(i / 200).unwrap(),
        );
        remove(&mut t, 0, a4(), v(n + i + 1), c);
    }
    assert_eq!(t.count(a4()), 10);
    assert!(
        capacity(&t) <= 2 * SHRINK_ABOVE,
        "{} of {full}",
        capacity(&t)
    );
}

#[test]
fn duplicate_and_old_deltas_are_stale() {
    let mut t = Table::new(GRACE);
    add(&mut t, 0, a4(), v(1), c4(1, 1));
    assert_eq!(add(&mut t, 0, a4(), v(1), c4(1, 1)), Outcome::Stale);
    remove(&mut t, 0, a4(), v(2), c4(1, 1));
    // A replay of the add must not resurrect the connection.
    assert_eq!(add(&mut t, 0, a4(), v(1), c4(1, 1)), Outcome::Stale);
    assert_eq!(t.count(a4()), 0);
}

#[test]
fn ipv4_mapped_clients_are_stored_as_ipv4_and_families_are_checked() {
    let mut t = Table::new(GRACE);
    let mapped = Conn::new(
        SocketAddr::new(
            IpAddr::V6(Ipv4Addr::new(198, 51, 100, 1).to_ipv6_mapped()),
            1000,
        ),
        445,
    );
    add(&mut t, 0, a4(), v(1), mapped);
    assert_eq!(t.connections(a4()), vec![c4(1, 1000)]);
    // The public address itself may come IPv4-mapped.
    assert_eq!(
        t.count(IpAddr::V6(Ipv4Addr::new(192, 0, 2, 10).to_ipv6_mapped())),
        1
    );
    let err = t
        .apply_delta(0, a4(), v(2), OpKind::Add, c6(1, 1), T0)
        .unwrap_err();
    assert!(matches!(err, TableError::FamilyMismatch { .. }), "{err}");
    let err = t
        .apply_delta(0, a6(), v(1), OpKind::Add, c4(1, 1), T0)
        .unwrap_err();
    assert!(matches!(err, TableError::FamilyMismatch { .. }), "{err}");
    let chunk = SyncChunk {
        reporter: 0,
        address: a6(),
        version: v(2),
        index: 0,
        total: 1,
        conns: vec![c6(1, 1), c4(1, 1)],
    };
    assert!(t.apply_sync(&chunk, T0).is_err());
    assert_eq!(t.count(a6()), 0);
}

#[test]
fn sync_replaces_only_that_reporters_view() {
    let mut t = Table::new(GRACE);
    add(&mut t, 0, a4(), v(1), c4(1, 1));
    add(&mut t, 0, a4(), v(2), c4(2, 1));
    add(&mut t, 1, a4(), v(1), c4(2, 1)); // same connection from another node
    add(&mut t, 1, a4(), v(2), c4(3, 1));
    assert_eq!(t.count(a4()), 3);
    assert_eq!(sync(&mut t, 0, a4(), v(3), &[c4(4, 1)]), Outcome::Applied);
    assert_eq!(sorted(t.view_connections(a4(), 0)), vec![c4(4, 1)]);
    assert_eq!(
        sorted(t.view_connections(a4(), 1)),
        vec![c4(2, 1), c4(3, 1)]
    );
    assert_eq!(
        sorted(t.connections(a4())),
        vec![c4(2, 1), c4(3, 1), c4(4, 1)]
    );
    assert_eq!(t.count(a4()), 3);
    remove(&mut t, 1, a4(), v(3), c4(2, 1));
    assert_eq!(t.count(a4()), 2);
    sync(&mut t, 1, a4(), v(4), &[]);
    assert_eq!(t.count(a4()), 1);
}

#[test]
fn stale_sync_never_overwrites_newer_deltas() {
    // Reporter history: sync@1 {a}, remove a @2, add b @3. Received backwards.
    let mut t = Table::new(GRACE);
    add(&mut t, 0, a4(), v(3), c4(2, 1));
    remove(&mut t, 0, a4(), v(2), c4(1, 1));
    assert_eq!(t.gaps(), vec![(0, a4())]);
    assert_eq!(sync(&mut t, 0, a4(), v(1), &[c4(1, 1)]), Outcome::Applied);
    assert_eq!(t.connections(a4()), vec![c4(2, 1)]);
    assert!(t.gaps().is_empty());
    assert_eq!(
        t.view_info(a4(), 0),
        Some(ViewInfo {
            complete_to: v(3),
            pending: 0,
            len: 1
        })
    );
    // A sync older than what is accounted for is ignored.
    assert_eq!(sync(&mut t, 0, a4(), v(2), &[c4(7, 7)]), Outcome::Stale);
    assert_eq!(t.connections(a4()), vec![c4(2, 1)]);
}

#[test]
fn newer_sync_drops_older_deltas_but_keeps_newer_ones() {
    let mut t = Table::new(GRACE);
    sync(&mut t, 0, a4(), v(1), &[]);
    add(&mut t, 0, a4(), v(5), c4(5, 5)); // gap: 2..4 missing
    add(&mut t, 0, a4(), v(3), c4(3, 3));
    assert_eq!(t.count(a4()), 2);
    // The sync at 4 says c4(3,3) is gone (removed at 4 or before); 5 is newer.
    sync(&mut t, 0, a4(), v(4), &[c4(9, 9)]);
    assert_eq!(sorted(t.connections(a4())), vec![c4(5, 5), c4(9, 9)]);
    assert_eq!(t.view_info(a4(), 0).unwrap().complete_to, v(5));
    assert!(t.gaps().is_empty());
}

#[test]
fn chunked_sync_applies_when_complete() {
    let mut t = Table::new(GRACE);
    add(&mut t, 0, a4(), v(1), c4(1, 1));
    let conns: Vec<Conn> = (1..=5).map(|p| c4(2, p)).collect();
    let chunks: Vec<SyncChunk> = SyncChunk::split(0, a4(), v(2), &conns, 2).collect();
    assert_eq!(chunks.len(), 3);
    assert_eq!(t.apply_sync(&chunks[2], T0).unwrap(), Outcome::Buffered);
    assert_eq!(t.apply_sync(&chunks[2], T0).unwrap(), Outcome::Stale);
    assert_eq!(t.apply_sync(&chunks[0], T0).unwrap(), Outcome::Buffered);
    assert_eq!(
        t.connections(a4()),
        vec![c4(1, 1)],
        "incomplete syncs do not apply"
    );
    assert_eq!(t.apply_sync(&chunks[1], T0).unwrap(), Outcome::Applied);
    assert_eq!(sorted(t.connections(a4())), conns);
    assert_eq!(t.apply_sync(&chunks[1], T0).unwrap(), Outcome::Stale);

    let mut bad = chunks[0].clone();
    bad.version = v(3);
    bad.index = 3;
    assert!(matches!(
        t.apply_sync(&bad, T0),
        Err(TableError::BadChunk { .. })
    ));
    bad.index = 0;
    bad.total = 0;
    assert!(matches!(
        t.apply_sync(&bad, T0),
        Err(TableError::BadChunk { .. })
    ));
    bad.total = 3;
    t.apply_sync(&bad, T0).unwrap();
    bad.total = 4;
    bad.index = 1;
    assert!(matches!(
        t.apply_sync(&bad, T0),
        Err(TableError::ChunkTotalChanged { .. })
    ));
}

#[test]
fn new_incarnation_supersedes_old() {
    let mut t = Table::new(GRACE);
    add(&mut t, 0, a4(), Version::new(1, 1), c4(1, 1));
    add(&mut t, 0, a4(), Version::new(1, 2), c4(2, 1));
    // Restarted: first a sync, then deltas from 2.
    add(&mut t, 0, a4(), Version::new(2, 2), c4(3, 1));
    assert_eq!(t.gaps(), vec![(0, a4())]);
    sync(&mut t, 0, a4(), Version::new(2, 1), &[c4(1, 1)]);
    assert_eq!(sorted(t.connections(a4())), vec![c4(1, 1), c4(3, 1)]);
    assert!(t.gaps().is_empty());
    // Late deltas of the old incarnation change nothing.
    assert_eq!(
        add(&mut t, 0, a4(), Version::new(1, 3), c4(4, 1)),
        Outcome::Stale
    );
}

#[test]
fn unhosted_address_expires_after_grace() {
    let mut t = Table::new(GRACE);
    add(&mut t, 0, a4(), v(1), c4(1, 1));
    add(&mut t, 1, a6(), v(1), c6(1, 1));
    t.set_host(a4(), Some(0), T0);
    t.set_host(a6(), Some(1), T0);
    assert_eq!(t.expire(T0 + 10 * GRACE), Expired::default());
    t.set_host(a4(), None, T0 + Duration::from_secs(5));
    assert_eq!(
        t.expire(T0 + Duration::from_secs(5) + GRACE - Duration::from_millis(1)),
        Expired::default()
    );
    assert_eq!(t.count(a4()), 1);
    assert_eq!(
        t.expire(T0 + Duration::from_secs(5) + GRACE),
        Expired {
            addresses: 1,
            views: 0
        }
    );
    assert_eq!(t.count(a4()), 0);
    assert_eq!(t.count(a6()), 1);
    // An address only ever heard of by replication counts from first sight.
    let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11));
    t.apply_delta(2, a, v(1), OpKind::Add, c4(3, 3), T0 + GRACE)
        .unwrap();
    assert_eq!(t.expire(T0 + GRACE + GRACE / 2).addresses, 0);
    assert_eq!(t.expire(T0 + 2 * GRACE).addresses, 1);
}

#[test]
fn old_hosts_views_expire_after_takeover() {
    let mut t = Table::new(GRACE);
    t.set_host(a4(), Some(0), T0);
    add(&mut t, 0, a4(), v(1), c4(1, 1));
    // Node 0 dies; node 1 takes the address and learns one connection.
    t.set_host(a4(), Some(1), T0 + GRACE);
    add(&mut t, 1, a4(), v(1), c4(1, 1));
    add(&mut t, 1, a4(), v(2), c4(2, 1));
    assert_eq!(t.count(a4()), 2);
    assert_eq!(t.expire(T0 + GRACE + GRACE / 2), Expired::default());
    assert_eq!(t.reporters(a4()), vec![0, 1]);
    assert_eq!(
        t.expire(T0 + 2 * GRACE),
        Expired {
            addresses: 0,
            views: 1
        }
    );
    assert_eq!(t.reporters(a4()), vec![1]);
    assert_eq!(sorted(t.connections(a4())), vec![c4(1, 1), c4(2, 1)]);
    assert_eq!(t.count(a4()), 2);
}

#[test]
fn reporter_starts_each_address_with_a_sync_and_batches() {
    let mut r = Reporter::new(3, 7).with_chunk(2);
    let (first, msgs) = r.change(a4(), OpKind::Add, c4(1, 1));
    assert_eq!(first, Version::new(7, 2));
    assert_eq!(msgs.len(), 1, "the empty first sync");
    assert!(
        matches!(&msgs[0], Msg::Sync(c) if c.version == Version::new(7, 1) && c.conns.is_empty())
    );
    assert_eq!(r.pending(), 1);
    let mut out = msgs;
    out.extend(r.sync(a6(), &[c6(1, 1), c6(2, 2), c6(3, 3)]));
    out.extend(r.change(a4(), OpKind::Remove, c4(1, 1)).1);
    out.extend(r.flush());
    let mut t = Table::new(GRACE);
    for m in &out {
        t.apply(m, T0).unwrap();
    }
    assert_eq!(t.count(a4()), 0);
    assert_eq!(t.count(a6()), 3);
    assert!(t.gaps().is_empty());
    let mut b = DeltaBatcher::new(1);
    let full: Vec<Deltas> = (0..2100u16)
        .filter_map(|i| b.push(a4(), v(u64::from(i) + 1), OpKind::Add, c4(1, i)))
        .collect();
    assert_eq!(full.len(), 2);
    assert_eq!(
        b.finish().map(|d| d.len()),
        Some(2100 - 2 * crate::msg::MAX_OPS_PER_DELTAS)
    );
}

// ---------------------------------------------------------------------------
// Property tests.

type Dump = BTreeMap<(IpAddr, Pnn), BTreeSet<Conn>>;

fn dump(t: &Table) -> Dump {
    let mut out = Dump::new();
    for (address, _) in t.counts() {
        for r in t.reporters(address) {
            let conns: BTreeSet<Conn> = t.view_connections(address, r).into_iter().collect();
            if !conns.is_empty() {
                out.insert((address, r), conns);
            }
        }
        let union: BTreeSet<Conn> = t.connections(address).into_iter().collect();
        assert_eq!(t.count(address), union.len(), "distinct count of {address}");
    }
    out
}

/// One generated action of a reporter.
#[derive(Debug, Clone)]
enum Action {
    Add { v6: bool, conn: u8 },
    Remove { v6: bool, conn: u8 },
    Sync { v6: bool, conns: Vec<u8> },
    Flush,
}

fn pool(v6: bool, i: u8) -> Conn {
    let i = i % 6;
    if v6 {
        c6(u16::from(i % 3) + 1, 1000 + u16::from(i / 3))
    } else {
        c4(i % 3 + 1, 1000 + u16::from(i / 3))
    }
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (any::<bool>(), 0u8..6).prop_map(|(v6, conn)| Action::Add { v6, conn }),
        3 => (any::<bool>(), 0u8..6).prop_map(|(v6, conn)| Action::Remove { v6, conn }),
        1 => (any::<bool>(), proptest::collection::vec(0u8..6, 0..5)).prop_map(|(v6, conns)| Action::Sync { v6, conns }),
        2 => Just(Action::Flush),
    ]
}

/// Per reporter, the actions; returns all messages and each view's truth.
fn run(histories: &[Vec<Action>]) -> (Vec<Msg>, Dump) {
    let mut msgs = Vec::new();
    let mut truth = Dump::new();
    for (pnn, actions) in histories.iter().enumerate() {
        let pnn = Pnn::try_from(pnn).unwrap();
        let mut r = Reporter::new(pnn, 1).with_chunk(2);
        for a in actions {
            match a {
                Action::Add { v6, conn } | Action::Remove { v6, conn } => {
                    let address = if *v6 { a6() } else { a4() };
                    let c = pool(*v6, *conn);
                    let set = truth.entry((address, pnn)).or_default();
                    let kind = if matches!(a, Action::Add { .. }) {
                        set.insert(c);
                        OpKind::Add
                    } else {
                        set.remove(&c);
                        OpKind::Remove
                    };
                    msgs.extend(r.change(address, kind, c).1);
                }
                Action::Sync { v6, conns } => {
                    let address = if *v6 { a6() } else { a4() };
                    let set: BTreeSet<Conn> = conns.iter().map(|i| pool(*v6, *i)).collect();
                    let list: Vec<Conn> = set.iter().copied().collect();
                    truth.insert((address, pnn), set);
                    msgs.extend(r.sync(address, &list));
                }
                Action::Flush => msgs.extend(r.flush()),
            }
        }
        msgs.extend(r.flush());
    }
    truth.retain(|_, s| !s.is_empty());
    (msgs, truth)
}

fn syncs_per_view(msgs: &[Msg]) -> usize {
    let mut n: BTreeMap<(Pnn, IpAddr), BTreeSet<Version>> = BTreeMap::new();
    for m in msgs {
        if let Msg::Sync(c) = m {
            n.entry((c.reporter, c.address))
                .or_default()
                .insert(c.version);
        }
    }
    n.values().map(BTreeSet::len).max().unwrap_or(0)
}

/// A sync's announced total and the chunks received, by index.
type Received = (u32, BTreeMap<u32, Vec<Conn>>);

/// The specification: per view, each connection's state is that of the
/// received operation with the highest version that mentions it (a complete
/// sync mentions every connection).
fn model(received: &[&Msg]) -> Dump {
    // (address, reporter) -> conn -> (version, present)
    let mut latest: BTreeMap<(IpAddr, Pnn), BTreeMap<Conn, (Version, bool)>> = BTreeMap::new();
    let mut chunks: BTreeMap<(IpAddr, Pnn, Version), Received> = BTreeMap::new();
    for m in received {
        match m {
            Msg::Deltas(d) => {
                for g in &d.groups {
                    let view = latest.entry((g.address, d.reporter)).or_default();
                    for op in &g.ops {
                        let e = view.entry(op.conn).or_insert((Version::default(), false));
                        if op.version > e.0 {
                            *e = (op.version, op.kind == OpKind::Add);
                        }
                    }
                }
            }
            Msg::Sync(c) => {
                let e = chunks
                    .entry((c.address, c.reporter, c.version))
                    .or_insert((c.total, BTreeMap::new()));
                e.1.insert(c.index, c.conns.clone());
            }
            _ => {}
        }
    }
    for ((address, reporter, version), (total, parts)) in chunks {
        if parts.len() != total as usize {
            continue;
        }
        let listed: BTreeSet<Conn> = parts.into_values().flatten().collect();
        let view = latest.entry((address, reporter)).or_default();
        let all: BTreeSet<Conn> = (0..6).map(|i| pool(address.is_ipv6(), i)).collect();
        for c in all {
            let e = view.entry(c).or_insert((Version::default(), false));
            if version > e.0 {
                *e = (version, listed.contains(&c));
            }
        }
    }
    latest
        .into_iter()
        .map(|(k, m)| {
            (
                k,
                m.into_iter()
                    .filter(|(_, (_, p))| *p)
                    .map(|(c, _)| c)
                    .collect::<BTreeSet<_>>(),
            )
        })
        .filter(|(_, s)| !s.is_empty())
        .collect()
}

fn apply_all<'a>(t: &mut Table, msgs: impl IntoIterator<Item = &'a Msg>) {
    for m in msgs {
        t.apply(m, T0).unwrap();
    }
}

fn histories() -> impl Strategy<Value = Vec<Vec<Action>>> {
    proptest::collection::vec(proptest::collection::vec(action(), 0..24), 1..4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// All messages, shuffled and with duplicates: every view equals what its
    /// reporter holds, no gap is left, and the result does not depend on the
    /// order.
    #[test]
    fn full_delivery_in_any_order_gives_the_truth(
        h in histories(),
        seed1 in any::<u64>(),
        seed2 in any::<u64>(),
    ) {
        let (msgs, truth) = run(&h);
        prop_assume!(syncs_per_view(&msgs) <= MAX_PARTIAL_SYNCS);
        let mut a = Table::new(GRACE);
        let mut b = Table::new(GRACE);
        apply_all(&mut a, &shuffled(&msgs, seed1, true));
        apply_all(&mut b, &shuffled(&msgs, seed2, true));
        prop_assert_eq!(&dump(&a), &truth);
        prop_assert_eq!(&dump(&b), &truth);
        prop_assert!(a.gaps().is_empty());
        prop_assert!(b.gaps().is_empty());
    }

    /// Any subset of the messages, in two different orders with duplicates,
    /// gives the same table, and that table is the last-writer-wins model.
    #[test]
    fn merge_is_idempotent_and_order_independent(
        h in histories(),
        keep in proptest::collection::vec(any::<bool>(), 64),
        seed1 in any::<u64>(),
        seed2 in any::<u64>(),
    ) {
        let (msgs, _) = run(&h);
        prop_assume!(syncs_per_view(&msgs) <= MAX_PARTIAL_SYNCS);
        let subset: Vec<Msg> = msgs.iter().enumerate().filter(|(i, _)| keep[i % keep.len()]).map(|(_, m)| m.clone()).collect();
        let mut a = Table::new(GRACE);
        let mut b = Table::new(GRACE);
        apply_all(&mut a, &shuffled(&subset, seed1, true));
        apply_all(&mut b, &shuffled(&subset, seed2, false));
        let want = model(&subset.iter().collect::<Vec<_>>());
        prop_assert_eq!(&dump(&a), &want);
        prop_assert_eq!(&dump(&b), &want);
        // Applying everything again changes nothing.
        apply_all(&mut a, &subset);
        prop_assert_eq!(&dump(&a), &want);
    }

    /// A full sync of each view's final state gives the same table as the
    /// incremental history, and changes nothing on a table that has it.
    #[test]
    fn full_sync_equals_incremental(h in histories(), seed in any::<u64>()) {
        let (msgs, truth) = run(&h);
        prop_assume!(syncs_per_view(&msgs) <= MAX_PARTIAL_SYNCS);
        let mut inc = Table::new(GRACE);
        apply_all(&mut inc, &shuffled(&msgs, seed, false));
        let mut full = Table::new(GRACE);
        let mut syncs = Vec::new();
        for ((address, pnn), set) in &truth {
            let list: Vec<Conn> = set.iter().copied().collect();
            // The next version after everything the reporter sent.
            let next = inc.view_info(*address, *pnn).unwrap().complete_to.next();
            syncs.extend(SyncChunk::split(*pnn, *address, next, &list, 2).map(Msg::Sync));
        }
        apply_all(&mut full, &syncs);
        prop_assert_eq!(dump(&full), dump(&inc));
        apply_all(&mut inc, &syncs);
        prop_assert_eq!(dump(&full), dump(&inc));
    }

    /// A joining node that applies another node's snapshot holds the same
    /// table, gaps included, and converges with it on later messages.
    #[test]
    fn snapshot_brings_a_joiner_up_to_date(
        h in histories(),
        keep in proptest::collection::vec(any::<bool>(), 64),
        seed in any::<u64>(),
    ) {
        let (msgs, truth) = run(&h);
        prop_assume!(syncs_per_view(&msgs) <= MAX_PARTIAL_SYNCS);
        let (first, rest): (Vec<_>, Vec<_>) = msgs.iter().enumerate().partition(|(i, _)| keep[i % keep.len()]);
        let mut m = Table::new(GRACE);
        apply_all(&mut m, first.iter().map(|(_, x)| *x));
        let mut j = Table::new(GRACE);
        let snap = m.snapshot(3);
        for s in &snap {
            let bytes = crate::msg::encode(s).unwrap();
            let back: Msg = crate::msg::decode(&bytes).unwrap();
            j.apply(&back, T0).unwrap();
        }
        prop_assert_eq!(dump(&j), dump(&m));
        let rest: Vec<Msg> = rest.into_iter().map(|(_, x)| x.clone()).collect();
        apply_all(&mut j, &shuffled(&rest, seed, true));
        apply_all(&mut m, &rest);
        prop_assert_eq!(&dump(&j), &truth);
        prop_assert_eq!(&dump(&m), &truth);
    }
}

/// A deterministic shuffle of `msgs` (xorshift), with some duplicated if
/// `dups`.
fn shuffled(msgs: &[Msg], seed: u64, dups: bool) -> Vec<Msg> {
    let mut s = seed | 1;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut out: Vec<Msg> = msgs.to_vec();
    if dups {
        for m in msgs {
            if rnd() % 3 == 0 {
                out.push(m.clone());
            }
        }
    }
    for i in (1..out.len()).rev() {
        let j = usize::try_from(rnd() % (i as u64 + 1)).unwrap();
        out.swap(i, j);
    }
    out
}
