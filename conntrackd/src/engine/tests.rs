//! Whole-cluster tests of the engine over a simulated network (no I/O).

use std::collections::{BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::*;
use crate::msg::SyncChunk;

const TICK: Duration = Duration::from_millis(5);

fn a() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10))
}

fn b() -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10))
}

fn c(host: u8, port: u16) -> Conn {
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

/// A cluster whose network delivers every message unless told to drop.
struct Net {
    nodes: Vec<Option<Engine>>,
    now: Duration,
    config: Config,
    /// Drop messages to this node while set.
    cut: Option<Pnn>,
}

impl Net {
    fn new(n: u32) -> Self {
        let config = Config {
            sync_interval: Duration::from_secs(20),
            grace: Duration::from_secs(60),
        };
        let now = Duration::from_secs(100);
        Net {
            nodes: (0..n)
                .map(|p| Some(Engine::new(p, 1, config, now).with_chunk(3)))
                .collect(),
            now,
            config,
            cut: None,
        }
    }

    fn node(&mut self, p: Pnn) -> &mut Engine {
        self.nodes[p as usize].as_mut().unwrap()
    }

    fn hosts(&mut self, hosts: &[(IpAddr, Option<Pnn>)]) {
        let now = self.now;
        for e in self.nodes.iter_mut().flatten() {
            e.set_hosts(hosts, now);
        }
    }

    /// Delivers `outs` from `from` and everything they cause (bounded).
    fn deliver(&mut self, from: Pnn, outs: Vec<Out>) {
        let mut q: VecDeque<(Pnn, Out)> = outs.into_iter().map(|o| (from, o)).collect();
        for _ in 0..100_000 {
            let Some((src, out)) = q.pop_front() else {
                return;
            };
            let targets: Vec<(Pnn, Msg)> = match out {
                Out::Broadcast(m) => (0..self.nodes.len())
                    .map(|p| Pnn::try_from(p).unwrap())
                    .filter(|p| *p != src)
                    .map(|p| (p, m.clone()))
                    .collect(),
                Out::To(p, m) => vec![(p, m)],
            };
            for (to, m) in targets {
                if self.cut == Some(to) {
                    continue;
                }
                let now = self.now;
                if let Some(e) = self.nodes[to as usize].as_mut() {
                    let more = e.on_peer(src, &m, now).unwrap();
                    q.extend(more.into_iter().map(|o| (to, o)));
                }
            }
        }
        panic!("messages did not settle");
    }

    /// Advances time by `d` and runs every node's timers.
    fn tick(&mut self, d: Duration) {
        self.now += d;
        for p in 0..self.nodes.len() {
            let now = self.now;
            if let Some(e) = self.nodes[p].as_mut() {
                let outs = e.poll(now);
                self.deliver(Pnn::try_from(p).unwrap(), outs);
            }
        }
    }

    fn dump(&mut self, p: Pnn, address: IpAddr, conns: &[Conn]) {
        let now = self.now;
        let outs = self.node(p).on_dump(address, conns, now).unwrap();
        self.deliver(p, outs);
    }

    fn event(&mut self, p: Pnn, address: IpAddr, kind: OpKind, conn: Conn) {
        let now = self.now;
        let outs = self.node(p).on_event(address, kind, conn, now).unwrap();
        self.deliver(p, outs);
    }

    fn conns(&self, p: Pnn, address: IpAddr) -> BTreeSet<Conn> {
        self.nodes[p as usize]
            .as_ref()
            .unwrap()
            .table()
            .connections(address)
            .into_iter()
            .collect()
    }

    fn assert_all(&self, address: IpAddr, want: &[Conn]) {
        let want: BTreeSet<Conn> = want.iter().copied().collect();
        for (p, e) in self.nodes.iter().enumerate() {
            if e.is_some() {
                assert_eq!(
                    self.conns(Pnn::try_from(p).unwrap(), address),
                    want,
                    "node {p}"
                );
            }
        }
    }
}

#[test]
fn dumps_and_events_reach_every_node() {
    let mut net = Net::new(3);
    net.hosts(&[(a(), Some(0)), (b(), Some(1))]);
    net.dump(0, a(), &[c(1, 1000), c(2, 1000)]);
    net.dump(1, b(), &[c6(1, 1)]);
    net.assert_all(a(), &[c(1, 1000), c(2, 1000)]);
    net.assert_all(b(), &[c6(1, 1)]);
    // Events are batched until the next poll.
    net.event(0, a(), OpKind::Add, c(3, 1000));
    assert_eq!(net.conns(1, a()).len(), 2);
    net.tick(TICK);
    net.assert_all(a(), &[c(1, 1000), c(2, 1000), c(3, 1000)]);
    net.event(0, a(), OpKind::Remove, c(1, 1000));
    net.tick(TICK);
    net.assert_all(a(), &[c(2, 1000), c(3, 1000)]);
    // A second dump sends only the difference.
    let now = net.now;
    let outs = net
        .node(0)
        .on_dump(a(), &[c(3, 1000), c(4, 1000)], now)
        .unwrap();
    assert!(outs.is_empty(), "batched, not yet flushed: {outs:?}");
    assert_eq!(net.node(0).reporter.pending(), 2);
    net.tick(TICK);
    net.assert_all(a(), &[c(3, 1000), c(4, 1000)]);
    // Nodes ignore learning on addresses they do not host.
    net.event(2, a(), OpKind::Add, c(9, 9));
    net.tick(TICK);
    assert!(!net.conns(2, a()).contains(&c(9, 9)));
}

#[test]
fn registration_needs_the_hosting_node() {
    let mut net = Net::new(2);
    net.hosts(&[(a(), Some(0))]);
    let now = net.now;
    let (resp, outs) = net.node(1).on_request(
        &Request::Add {
            address: a(),
            conn: c(1, 1),
        },
        now,
    );
    assert!(
        matches!(&resp[..], [Response::Error(e)] if e.contains("not hosted")),
        "{resp:?}"
    );
    assert!(outs.is_empty());
    let (resp, outs) = net.node(0).on_request(
        &Request::Add {
            address: a(),
            conn: c(1, 1),
        },
        now,
    );
    assert_eq!(resp, vec![Response::Done]);
    net.deliver(0, outs);
    net.tick(TICK);
    net.assert_all(a(), &[c(1, 1)]);
    let (resp, _) = net.node(1).on_request(&Request::Counts, now);
    assert_eq!(resp, vec![Response::Counts(vec![(a(), 1)])]);
    let (resp, outs) = net.node(0).on_request(
        &Request::Remove {
            address: a(),
            conn: c(1, 1),
        },
        now,
    );
    assert_eq!(resp, vec![Response::Done]);
    net.deliver(0, outs);
    net.tick(TICK);
    net.assert_all(a(), &[]);
}

#[test]
fn connections_request_filters_by_port_and_splits_long_lists() {
    let mut net = Net::new(1);
    net.hosts(&[(a(), Some(0))]);
    let mut many: Vec<Conn> = (0..7000u16).map(|p| c(1, p)).collect();
    many.push(Conn::new(c(2, 1).client, 139));
    net.dump(0, a(), &many);
    let now = net.now;
    let (resp, _) = net.node(0).on_request(
        &Request::Connections {
            address: a(),
            port: Some(139),
        },
        now,
    );
    assert_eq!(
        resp,
        vec![Response::Connections {
            conns: vec![Conn::new(c(2, 1).client, 139)],
            more: false
        }]
    );
    let (resp, _) = net.node(0).on_request(
        &Request::Connections {
            address: a(),
            port: None,
        },
        now,
    );
    assert_eq!(resp.len(), 2);
    let mut total = 0;
    for (i, r) in resp.iter().enumerate() {
        let Response::Connections { conns, more } = r else {
            panic!("{r:?}")
        };
        assert_eq!(*more, i == 0);
        total += conns.len();
        assert!(crate::msg::encode(r).unwrap().len() <= MAX_MSG_BYTES);
    }
    assert_eq!(total, 7001);
    let (resp, _) = net.node(0).on_request(
        &Request::Connections {
            address: b(),
            port: None,
        },
        now,
    );
    assert_eq!(
        resp,
        vec![Response::Connections {
            conns: vec![],
            more: false
        }]
    );
}

#[test]
fn a_lost_delta_is_repaired_by_a_sync_request() {
    let mut net = Net::new(2);
    net.hosts(&[(a(), Some(0))]);
    net.dump(0, a(), &[c(1, 1)]);
    net.cut = Some(1);
    net.event(0, a(), OpKind::Add, c(2, 1));
    net.tick(TICK);
    net.cut = None;
    net.event(0, a(), OpKind::Add, c(3, 1));
    // The next batch shows node 1 a gap; its poll asks node 0 for a sync.
    net.tick(TICK);
    net.tick(TICK);
    net.assert_all(a(), &[c(1, 1), c(2, 1), c(3, 1)]);
    assert!(net.node(1).table().gaps().is_empty());
}

#[test]
fn a_lost_last_delta_is_repaired_by_the_periodic_sync() {
    let mut net = Net::new(2);
    net.hosts(&[(a(), Some(0))]);
    net.dump(0, a(), &[c(1, 1)]);
    net.cut = Some(1);
    net.event(0, a(), OpKind::Remove, c(1, 1));
    net.tick(TICK);
    net.cut = None;
    assert_eq!(net.conns(1, a()).len(), 1);
    net.tick(net.config.sync_interval);
    net.assert_all(a(), &[]);
}

#[test]
fn a_joining_node_gets_the_table_by_snapshot() {
    let mut net = Net::new(3);
    net.hosts(&[(a(), Some(0)), (b(), Some(1))]);
    let many: Vec<Conn> = (0..10).map(|p| c(1, p)).collect();
    net.dump(0, a(), &many);
    net.dump(1, b(), &[c6(1, 1), c6(2, 2)]);
    let now = net.now;
    net.nodes.push(Some(Engine::new(3, 1, net.config, now)));
    let hosts = [(a(), Some(0)), (b(), Some(1))];
    net.node(3).set_hosts(&hosts, now);
    let join = net.node(3).join(1);
    net.deliver(3, vec![join]);
    net.assert_all(a(), &many);
    net.assert_all(b(), &[c6(1, 1), c6(2, 2)]);
}

#[test]
fn a_restarted_node_relearns_its_own_and_gets_the_others() {
    let mut net = Net::new(3);
    net.hosts(&[(a(), Some(0)), (b(), Some(1))]);
    net.dump(0, a(), &[c(1, 1), c(2, 2)]);
    net.dump(1, b(), &[c6(1, 1)]);
    // Node 0 restarts (new incarnation) while one connection closed.
    let now = net.now;
    net.nodes[0] = Some(Engine::new(0, 2, net.config, now).with_chunk(3));
    let hosts = [(a(), Some(0)), (b(), Some(1))];
    net.node(0).set_hosts(&hosts, now);
    let join = net.node(0).join(2);
    net.deliver(0, vec![join]);
    net.assert_all(b(), &[c6(1, 1)]);
    net.assert_all(a(), &[c(1, 1), c(2, 2)]);
    net.dump(0, a(), &[c(2, 2), c(3, 3)]);
    net.tick(TICK);
    net.assert_all(a(), &[c(2, 2), c(3, 3)]);
}

#[test]
fn after_failover_the_new_host_holds_the_dead_nodes_connections_until_grace() {
    let mut net = Net::new(3);
    net.hosts(&[(a(), Some(0))]);
    net.dump(0, a(), &[c(1, 1), c(2, 2)]);
    // Node 0 dies; node 1 takes a.
    net.nodes[0] = None;
    net.hosts(&[(a(), Some(1))]);
    net.assert_all(a(), &[c(1, 1), c(2, 2)]);
    // The new host sees one client reconnected.
    net.dump(1, a(), &[c(1, 5)]);
    net.assert_all(a(), &[c(1, 1), c(2, 2), c(1, 5)]);
    net.tick(net.config.grace);
    net.assert_all(a(), &[c(1, 5)]);
}

#[test]
fn partition_heals_to_the_same_table() {
    let mut net = Net::new(3);
    net.hosts(&[(a(), Some(0)), (b(), Some(1))]);
    net.dump(0, a(), &[c(1, 1)]);
    net.cut = Some(2);
    for p in 2..8 {
        net.event(0, a(), OpKind::Add, c(p, 1));
        net.event(1, b(), OpKind::Add, c6(u16::from(p), 1));
        net.tick(TICK);
    }
    net.event(0, a(), OpKind::Remove, c(1, 1));
    net.tick(TICK);
    net.cut = None;
    // Node 2 missed whole histories: the next periodic sync repairs them.
    net.tick(net.config.sync_interval);
    let want_a: Vec<Conn> = (2..8).map(|p| c(p, 1)).collect();
    let want_b: Vec<Conn> = (2..8).map(|p| c6(p, 1)).collect();
    net.assert_all(a(), &want_a);
    net.assert_all(b(), &want_b);
}

#[test]
fn wrong_family_is_refused() {
    let mut net = Net::new(1);
    net.hosts(&[(a(), Some(0))]);
    let now = net.now;
    assert!(net.node(0).on_dump(a(), &[c6(1, 1)], now).is_err());
    assert!(net
        .node(0)
        .on_event(a(), OpKind::Add, c6(1, 1), now)
        .is_err());
    let bad = Msg::Sync(SyncChunk {
        reporter: 1,
        address: a(),
        version: crate::table::Version::new(1, 1),
        index: 0,
        total: 1,
        conns: vec![c6(1, 1)],
    });
    assert!(net.node(0).on_peer(1, &bad, now).is_err());
}

#[test]
fn an_address_that_comes_back_is_synced_in_full() {
    let mut net = Net::new(2);
    net.hosts(&[(a(), Some(0))]);
    net.dump(0, a(), &[c(1, 1)]);
    // a moves to node 1 for longer than the grace period, then back.
    net.hosts(&[(a(), Some(1))]);
    net.dump(1, a(), &[]);
    net.tick(net.config.grace);
    net.assert_all(a(), &[]);
    net.hosts(&[(a(), Some(0))]);
    let now = net.now;
    let outs = net.node(0).on_dump(a(), &[c(2, 2)], now).unwrap();
    assert!(
        matches!(&outs[..], [Out::Broadcast(Msg::Sync(_))]),
        "{outs:?}"
    );
    net.deliver(0, outs);
    net.assert_all(a(), &[c(2, 2)]);
    assert!(net.node(1).table().gaps().is_empty());
}

#[test]
fn versions_reveal_a_lost_sync() {
    let mut net = Net::new(2);
    net.hosts(&[(a(), Some(0))]);
    net.dump(0, a(), &[c(1, 1)]);
    net.cut = Some(1);
    net.event(0, a(), OpKind::Add, c(2, 2));
    // The change and the periodic sync are both lost.
    net.tick(net.config.sync_interval);
    net.cut = None;
    assert_eq!(net.conns(1, a()).len(), 1);
    net.tick(net.config.sync_interval);
    net.assert_all(a(), &[c(1, 1), c(2, 2)]);
}

mod convergence {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Step {
        Event { node: u8, add: bool, conn: u8 },
        Dump { node: u8, conns: Vec<u8> },
        Tick,
        Cut(Option<u8>),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0u8..2, any::<bool>(), 0u8..6).prop_map(|(node, add, conn)| Step::Event { node, add, conn }),
            1 => (0u8..2, proptest::collection::vec(0u8..6, 0..6)).prop_map(|(node, conns)| Step::Dump { node, conns }),
            3 => Just(Step::Tick),
            1 => proptest::option::of(0u8..3).prop_map(Step::Cut),
        ]
    }

    fn conn_of(node: u8, i: u8) -> Conn {
        if node == 0 {
            c(i % 3 + 1, 1000 + u16::from(i / 3))
        } else {
            c6(u16::from(i % 3) + 1, 1000 + u16::from(i / 3))
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Whatever was lost while a node was cut off, once the network is
        /// whole again every node's table converges to what the hosts hold
        /// within two sync intervals.
        #[test]
        fn nodes_converge_after_losses(steps in proptest::collection::vec(step(), 0..40)) {
            let mut net = Net::new(3);
            net.hosts(&[(a(), Some(0)), (b(), Some(1))]);
            let mut truth = [BTreeSet::new(), BTreeSet::new()];
            for s in steps {
                match s {
                    Step::Event { node, add, conn } => {
                        let address = if node == 0 { a() } else { b() };
                        let cn = conn_of(node, conn);
                        let kind = if add { OpKind::Add } else { OpKind::Remove };
                        if add {
                            truth[usize::from(node)].insert(cn);
                        } else {
                            truth[usize::from(node)].remove(&cn);
                        }
                        net.event(Pnn::from(node), address, kind, cn);
                    }
                    Step::Dump { node, conns } => {
                        let address = if node == 0 { a() } else { b() };
                        let set: BTreeSet<Conn> = conns.iter().map(|i| conn_of(node, *i)).collect();
                        let list: Vec<Conn> = set.iter().copied().collect();
                        truth[usize::from(node)] = set;
                        net.dump(Pnn::from(node), address, &list);
                    }
                    Step::Tick => net.tick(TICK),
                    Step::Cut(n) => net.cut = n.map(Pnn::from),
                }
            }
            net.cut = None;
            net.tick(TICK);
            net.tick(net.config.sync_interval);
            net.tick(net.config.sync_interval);
            let want_a: Vec<Conn> = truth[0].iter().copied().collect();
            let want_b: Vec<Conn> = truth[1].iter().copied().collect();
            net.assert_all(a(), &want_a);
            net.assert_all(b(), &want_b);
        }
    }
}

#[test]
fn an_address_dropped_from_the_configuration_expires() {
    let mut net = Net::new(2);
    net.hosts(&[(a(), Some(0)), (b(), Some(1))]);
    net.dump(0, a(), &[c(1, 1)]);
    net.dump(1, b(), &[c6(1, 1)]);
    net.hosts(&[(b(), Some(1))]);
    net.tick(net.config.grace);
    net.assert_all(a(), &[]);
    net.assert_all(b(), &[c6(1, 1)]);
}

#[test]
fn messages_from_or_about_nodes_outside_the_nodes_file_are_refused() {
    let now = Duration::from_secs(100);
    let config = Config::default();
    let mut e = Engine::new(0, 1, config, now).with_nodes([0, 1, 2]);
    e.set_hosts(&[(a(), Some(1))], now);
    // Node 1 reports its own view: accepted.
    let mut r1 = Reporter::new(1, 1);
    let good = r1.sync(a(), &[c(1, 1)]);
    for m in &good {
        e.on_peer(1, m, now).unwrap();
    }
    assert_eq!(e.table().connections(a()), vec![c(1, 1)]);
    // Node 1 relays a view of node 7, which is not in the nodes file.
    let mut r7 = Reporter::new(7, 1);
    for m in r7.sync(a(), &[c(7, 7)]) {
        let err = e.on_peer(1, &m, now).unwrap_err();
        assert_eq!(err, EngineError::UnknownNode { from: 1, pnn: 7 });
    }
    let (_, deltas) = r7.change(a(), OpKind::Add, c(7, 8));
    for m in deltas.into_iter().chain(r7.flush()) {
        assert!(e.on_peer(1, &m, now).is_err());
    }
    let versions = Msg::Versions {
        reporter: 7,
        versions: vec![(a(), Version::new(1, 5))],
    };
    assert!(e.on_peer(1, &versions, now).is_err());
    // A message from node 9 itself, even about node 1.
    let mut r1b = Reporter::new(1, 1);
    for m in r1b.sync(a(), &[c(9, 9)]) {
        assert_eq!(
            e.on_peer(9, &m, now).unwrap_err(),
            EngineError::UnknownNode { from: 9, pnn: 9 }
        );
    }
    // No view for the made-up reporter, nothing of theirs in the table.
    assert_eq!(e.table().reporters(a()), vec![1]);
    assert_eq!(e.table().connections(a()), vec![c(1, 1)]);
    // Without the nodes file, anyone is accepted (tests).
    let mut open = Engine::new(0, 1, config, now);
    open.set_hosts(&[(a(), Some(1))], now);
    for m in Reporter::new(7, 1).sync(a(), &[c(7, 7)]) {
        open.on_peer(1, &m, now).unwrap();
    }
    assert_eq!(open.table().reporters(a()), vec![7]);
}

#[test]
fn reloaded_nodes_are_accepted_and_deleted_ones_refused() {
    let now = Duration::from_secs(100);
    let mut e = Engine::new(0, 1, Config::default(), now).with_nodes([0, 1, 2]);
    e.set_hosts(&[(a(), Some(1))], now);
    // Node 3 is not a node yet.
    let mut r3 = Reporter::new(3, 1);
    let first = r3.sync(a(), &[c(3, 3)]);
    for m in &first {
        assert_eq!(
            e.on_peer(3, m, now).unwrap_err(),
            EngineError::UnknownNode { from: 3, pnn: 3 }
        );
    }
    // reloadnodes: node 3 added, node 2 deleted.
    e.set_nodes([0, 1, 3]);
    for m in &first {
        e.on_peer(3, m, now).unwrap();
    }
    assert_eq!(e.table().reporters(a()), vec![3]);
    let mut r2 = Reporter::new(2, 1);
    for m in r2.sync(a(), &[c(2, 2)]) {
        assert_eq!(
            e.on_peer(2, &m, now).unwrap_err(),
            EngineError::UnknownNode { from: 2, pnn: 2 }
        );
    }
}

#[test]
fn whole_table_requests_are_served_at_most_once_a_second_per_peer() {
    let mut net = Net::new(2);
    net.hosts(&[(a(), Some(0))]);
    net.dump(0, a(), &[c(1, 1), c(2, 2)]);
    let snapshot = Msg::SnapshotRequest { from: 1 };
    let all = Msg::SyncRequest {
        from: 1,
        address: None,
    };
    let now = net.now;
    let first = net.node(0).on_peer(1, &snapshot, now).unwrap();
    assert!(!first.is_empty());
    // Again at once, and a whole-table sync request: nothing.
    for m in [&snapshot, &all] {
        let again = net.node(0).on_peer(1, m, now + SNAPSHOT_EVERY / 2).unwrap();
        assert!(again.is_empty(), "{again:?}");
    }
    // Another peer is served.
    let other = Msg::SnapshotRequest { from: 2 };
    assert!(!net.node(0).on_peer(2, &other, now).unwrap().is_empty());
    // A sync request for one address is not limited.
    let one = Msg::SyncRequest {
        from: 1,
        address: Some(a()),
    };
    assert!(!net.node(0).on_peer(1, &one, now).unwrap().is_empty());
    // After the interval, served again.
    let later = net.node(0).on_peer(1, &all, now + SNAPSHOT_EVERY).unwrap();
    assert!(!later.is_empty());
}

#[test]
fn a_dump_keeps_registered_connections_and_a_full_report_includes_them() {
    let mut net = Net::new(2);
    net.hosts(&[(a(), Some(0))]);
    let registered: std::collections::HashSet<Conn> = [c(9, 1), c(9, 2)].into_iter().collect();
    // The first report is a full sync: the kernel's and the registered.
    let now = net.now;
    let outs = net
        .node(0)
        .on_dump_with(a(), &[c(1, 1)], &registered, now)
        .unwrap();
    net.deliver(0, outs);
    net.assert_all(a(), &[c(1, 1), c(9, 1), c(9, 2)]);
    // A later dump without them removes only what the kernel lost.
    let outs = net
        .node(0)
        .on_dump_with(a(), &[c(2, 2)], &registered, now)
        .unwrap();
    net.deliver(0, outs);
    net.tick(TICK);
    net.assert_all(a(), &[c(2, 2), c(9, 1), c(9, 2)]);
    // Without the registrations, a dump removes them.
    net.dump(0, a(), &[c(2, 2)]);
    net.tick(TICK);
    net.assert_all(a(), &[c(2, 2)]);
}

/// #14 item 2: what a peer sends is refused once the table holds its limit
/// (deltas that add, a sync that would grow it), what it removes is not;
/// a sync that replaces a view of the same size still fits.
#[test]
fn a_full_table_refuses_what_peers_add() {
    use crate::msg::{AddrOps, Deltas, Op};
    let now = Duration::from_secs(1);
    let mut e = Engine::new(0, 1, Config::default(), now).with_max_connections(3);
    let deltas = |from: u64, kind: OpKind, conns: &[Conn]| {
        Msg::Deltas(Deltas {
            reporter: 1,
            groups: vec![AddrOps {
                address: a(),
                ops: conns
                    .iter()
                    .zip(from..)
                    .map(|(conn, seq)| Op {
                        version: Version::new(1, seq),
                        kind,
                        conn: *conn,
                    })
                    .collect(),
            }],
        })
    };
    let sync = SyncChunk {
        reporter: 1,
        address: a(),
        version: Version::new(1, 1),
        index: 0,
        total: 1,
        conns: vec![c(1, 1), c(1, 2), c(1, 3)],
    };
    e.on_peer(1, &Msg::Sync(sync), now).unwrap();
    assert_eq!(e.table().stored(), 3);
    let more = deltas(2, OpKind::Add, &[c(1, 4)]);
    assert!(matches!(
        e.on_peer(1, &more, now),
        Err(EngineError::Full {
            stored: 3,
            limit: 3
        })
    ));
    assert_eq!(e.table().stored(), 3, "nothing added over the limit");
    assert!(e.room_for(1).is_err(), "a registration does not fit either");
    let bigger = SyncChunk {
        reporter: 1,
        address: a(),
        version: Version::new(1, 5),
        index: 0,
        total: 1,
        conns: vec![c(2, 1), c(2, 2), c(2, 3), c(2, 4)],
    };
    assert!(e.on_peer(1, &Msg::Sync(bigger), now).is_err());
    let same = SyncChunk {
        reporter: 1,
        address: a(),
        version: Version::new(1, 5),
        index: 0,
        total: 1,
        conns: vec![c(3, 1), c(3, 2), c(3, 3)],
    };
    e.on_peer(1, &Msg::Sync(same), now).unwrap();
    assert_eq!(e.table().connections(a()).len(), 3);
    let fewer = deltas(6, OpKind::Remove, &[c(3, 1)]);
    e.on_peer(1, &fewer, now).unwrap();
    assert_eq!(e.table().stored(), 2);
    assert!(e.room_for(1).is_ok());
}

/// Node `p`'s [`Engine::ghosts`] of `a()` now.
fn ghosts(net: &Net, p: Pnn) -> Vec<Conn> {
    let e = net.nodes[p as usize].as_ref().unwrap();
    e.ghosts(a(), net.now).to_vec()
}

/// Node `p`'s [`Engine::ghost_addresses`] now.
fn ghost_addresses(net: &Net, p: Pnn) -> Vec<IpAddr> {
    let e = net.nodes[p as usize].as_ref().unwrap();
    e.ghost_addresses(net.now)
}

#[test]
fn connections_a_retake_no_longer_shows_are_kept_for_its_tickles() {
    let mut net = Net::new(2);
    net.hosts(&[(a(), Some(0))]);
    net.dump(0, a(), &[c(1, 1), c(2, 2)]);
    // A drop at the lease end: the address is not hosted here any more,
    // its sockets are reset while nobody watches them.
    net.hosts(&[(a(), None)]);
    net.tick(TICK);
    assert!(ghosts(&net, 0).is_empty());
    // The same node takes it back; the first dump shows one connection
    // (c(2, 2) lived on; c(1, 1)'s socket was reset).
    net.hosts(&[(a(), Some(0))]);
    net.dump(0, a(), &[c(2, 2)]);
    net.assert_all(a(), &[c(2, 2)]);
    assert_eq!(ghosts(&net, 0), vec![c(1, 1)]);
    assert_eq!(ghost_addresses(&net, 0), vec![a()]);
    assert!(ghosts(&net, 1).is_empty(), "only the taker's own view");
    // Listed for GHOST_KEEP, then forgotten.
    net.tick(GHOST_KEEP - TICK * 2);
    assert_eq!(ghosts(&net, 0), vec![c(1, 1)]);
    net.tick(TICK * 2);
    assert!(ghosts(&net, 0).is_empty());
    assert!(ghost_addresses(&net, 0).is_empty());
    // A later dump is no takeover: what it takes out is not listed.
    net.dump(0, a(), &[]);
    assert!(ghosts(&net, 0).is_empty());
}

#[test]
fn a_first_takeover_has_no_ghosts() {
    let mut net = Net::new(2);
    net.hosts(&[(a(), Some(0))]);
    net.dump(0, a(), &[c(1, 1)]);
    // Node 1 takes the address: its own view was empty.
    net.hosts(&[(a(), Some(1))]);
    net.dump(1, a(), &[]);
    assert!(ghosts(&net, 1).is_empty());
    assert!(ghost_addresses(&net, 1).is_empty());
}
