//! Replay and identity on the node-to-node links (issue #14 item 3), with
//! real transportd and clusterd processes in namespaces:
//!
//! * A host without the key, sending from a node's address, replays the
//!   bytes a real initiator sent (sniffed on the switch) again and again
//!   while the real link carries traffic: the live link is never replaced,
//!   nothing is lost, leases and membership do not move.
//! * A node with the key that claims another PNN — in its handshake hello,
//!   or in a clusterd heartbeat — is refused, logged and counted, and
//!   changes nothing.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clusterd::msg::{Heartbeat, NodeSet};
use clusterd::{ClusterMsg, Membership, NodeFlags};
use pnet::datalink::{self, Channel};
use pnet::packet::ethernet::{EtherTypes, EthernetPacket};
use pnet::packet::ip::IpNextHeaderProtocols;
use pnet::packet::ipv4::Ipv4Packet;
use pnet::packet::tcp::TcpPacket;
use pnet::packet::Packet;
use tests::cluster::TestCluster;
use tests::netns::{require_root, veth, NetNs};
use transport::client::Client;
use transport::msg::cluster::GET_MEMBERSHIP;
use transport::proto::control::{
    PeerList, PingReply, PingRequest, Statistics, LIST_PEERS, PING, STATISTICS,
};
use transport::proto::service::{CLUSTERD, TRANSPORT};
use transport::proto::Address;
use transport::transportd::key::ClusterKey;
use transport::transportd::noise;

/// transportd's default peer port (TestCluster starts it without --port).
const PORT: u16 = 4379;
const TIMEOUT: Duration = Duration::from_secs(2);
/// clusterd's peer message opcode.
const PEER: u32 = clusterd::daemon::PEER;
/// Source ports of the replayer: outside Linux's ephemeral range
/// (32768-60999), so the responder's policy route for them (towards the
/// replayer) never catches the real node's connection.
const REPLAY_PORTS: &str = "62000-62999";
const REPLAY_PORT_BASE: u16 = 62000;

/// Writes node `i`'s ipfailover.toml, starts its transportd and, if asked,
/// its clusterd.
fn start_node(c: &TestCluster, i: usize, clusterd: bool) {
    let node = &c.nodes[i];
    let toml = format!(
        "[transport]\nrun_dir = \"{}\"\n\n[logging]\nlevel = \"info\"\n",
        node.run_dir.display()
    );
    std::fs::write(node.config_dir.join("ipfailover.toml"), toml).unwrap();
    c.start_transportd(i).unwrap();
    if clusterd {
        c.start_daemon(i, "clusterd").unwrap();
    }
}

fn log(c: &TestCluster, i: usize, name: &str) -> String {
    std::fs::read_to_string(c.scratch.join(format!("node{i}-{name}.log"))).unwrap_or_default()
}

fn logs(c: &TestCluster) -> String {
    c.log_tails(&["transportd", "clusterd"], 25)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn connect(c: &TestCluster, i: usize, name: &str) -> Result<Client> {
    let sock = c.nodes[i].run_dir.join("transport.sock");
    let (client, _incoming) = Client::connect_unix(&sock, name).await?;
    Ok(client)
}

async fn statistics(client: &Client, service: u16) -> Result<Statistics> {
    Ok(client
        .request(Address::local(service), STATISTICS, &(), TIMEOUT)
        .await?)
}

async fn peers(client: &Client) -> Result<PeerList> {
    Ok(client
        .request(Address::local(TRANSPORT), LIST_PEERS, &(), TIMEOUT)
        .await?)
}

async fn membership(client: &Client) -> Result<Membership> {
    Ok(client
        .request(Address::local(CLUSTERD), GET_MEMBERSHIP, &(), TIMEOUT)
        .await?)
}

fn counter(s: &Statistics, name: &str) -> u64 {
    s.get(name)
        .unwrap_or_else(|| panic!("no counter {name}: {s:?}"))
}

/// The peer-0 entry of node 1's LIST_PEERS: (connected, since_ms).
fn link_to(list: &PeerList, pnn: u32) -> (bool, u64) {
    list.peers
        .iter()
        .find(|p| p.pnn == pnn)
        .map_or((false, 0), |p| (p.connected, p.since_ms))
}

/// Waits until every client's node holds a lease under one leader, with a
/// membership that stayed the same for half a second (the baseline).
async fn settled(clients: &[&Client], limit: Duration) -> Result<Vec<Membership>> {
    let start = Instant::now();
    let mut last: Option<Vec<Membership>> = None;
    loop {
        let mut all = Vec::new();
        for c in clients {
            if let Ok(m) = membership(c).await {
                all.push(m);
            }
        }
        let leased = all.len() == clients.len()
            && all.iter().all(|m| m.lease_ok && m.leader.is_some())
            && all.iter().all(|m| m.leader == all[0].leader);
        if leased {
            let same = last.as_ref().is_some_and(|l| {
                l.iter().zip(&all).all(|(a, b)| {
                    a.generation == b.generation && a.lease.since_ns == b.lease.since_ns
                })
            });
            if same {
                return Ok(all);
            }
            last = Some(all);
        } else {
            last = None;
            if start.elapsed() > limit {
                bail!("no common lease after {limit:?}: {all:?}");
            }
        }
        if start.elapsed() > limit * 2 {
            bail!("membership still changing after {:?}: {last:?}", limit * 2);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Sniffs, on `port` of the switch (the cable of the responder), the bytes
/// that `from` sends to `to:PORT` on its first TCP connection that carries
/// data, until `after` past its first data (or `limit`): what a host on the
/// cluster network sees of a real handshake and of the start of the link.
fn sniff_first_dial(
    switch: &NetNs,
    port: &str,
    from: Ipv4Addr,
    to: Ipv4Addr,
    after: Duration,
    limit: Duration,
) -> Result<std::thread::JoinHandle<Result<Vec<u8>>>> {
    let port = port.to_owned();
    let mut rx = switch.run(move || -> Result<Box<dyn datalink::DataLinkReceiver>> {
        let nic = datalink::interfaces()
            .into_iter()
            .find(|i| i.name == port)
            .with_context(|| format!("no interface {port} in the switch"))?;
        let config = datalink::Config {
            read_timeout: Some(Duration::from_millis(50)),
            ..datalink::Config::default()
        };
        match datalink::channel(&nic, config).context("packet socket on the switch port")? {
            Channel::Ethernet(_, rx) => Ok(rx),
            _ => bail!("not an Ethernet channel"),
        }
    })??;
    Ok(std::thread::spawn(move || -> Result<Vec<u8>> {
        let start = Instant::now();
        // (source port, first sequence number, first data seen at)
        let mut conn: Option<(u16, u32, Instant)> = None;
        let mut segments: Vec<(u32, Vec<u8>)> = Vec::new();
        while start.elapsed() < limit {
            if let Some((_, _, at)) = conn {
                if at.elapsed() >= after {
                    break;
                }
            }
            let Ok(frame) = rx.next() else { continue };
            let Some(eth) = EthernetPacket::new(frame) else {
                continue;
            };
            if eth.get_ethertype() != EtherTypes::Ipv4 {
                continue;
            }
            let Some(ip) = Ipv4Packet::new(eth.payload()) else {
                continue;
            };
            if ip.get_source() != from
                || ip.get_destination() != to
                || ip.get_next_level_protocol() != IpNextHeaderProtocols::Tcp
            {
                continue;
            }
            let ihl = usize::from(ip.get_header_length()) * 4;
            let total = usize::from(ip.get_total_length());
            let Some(tcp_bytes) = ip.packet().get(ihl..total) else {
                continue;
            };
            let Some(tcp) = TcpPacket::new(tcp_bytes) else {
                continue;
            };
            if tcp.get_destination() != PORT || tcp.payload().is_empty() {
                continue;
            }
            let (sport, seq0, _) =
                *conn.get_or_insert((tcp.get_source(), tcp.get_sequence(), Instant::now()));
            if tcp.get_source() == sport {
                segments.push((
                    tcp.get_sequence().wrapping_sub(seq0),
                    tcp.payload().to_vec(),
                ));
            }
        }
        // Reassemble in sequence order (retransmissions overlap).
        segments.sort_by_key(|(off, _)| *off);
        let mut stream = Vec::new();
        for (off, data) in segments {
            let off = usize::try_from(off)?;
            if off > stream.len() {
                break; // a gap: keep the contiguous start
            }
            if let Some(new) = data.get(stream.len() - off..) {
                stream.extend_from_slice(new);
            }
        }
        Ok(stream)
    }))
}

/// What one replay connection saw.
#[derive(Debug)]
struct Replay {
    /// Bytes the responder answered (its handshake message 2: 59 bytes).
    answered: usize,
    /// The responder closed the connection (within 3 s).
    closed: bool,
}

/// From `ns` (which sends as `from`), connects `count` times to `to:PORT`
/// from source ports [`REPLAY_PORT_BASE`]..., writes `bytes`, reads until
/// the responder closes (at most 3 s), then closes; one every `every`.
fn replay(
    ns: &NetNs,
    from: Ipv4Addr,
    to: Ipv4Addr,
    bytes: Vec<u8>,
    count: u16,
    every: Duration,
) -> Result<Vec<Replay>> {
    ns.block_on(move || async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut seen = Vec::new();
        for i in 0..count {
            let started = tokio::time::Instant::now();
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.set_reuseaddr(true)?;
            sock.bind(SocketAddr::V4(SocketAddrV4::new(
                from,
                REPLAY_PORT_BASE + i,
            )))?;
            let mut s = tokio::time::timeout(
                Duration::from_secs(2),
                sock.connect(SocketAddr::V4(SocketAddrV4::new(to, PORT))),
            )
            .await
            .context("connect timed out")?
            .context("connect")?;
            s.write_all(&bytes).await?;
            let mut answered = 0;
            let mut buf = [0u8; 4096];
            let closed = loop {
                match tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await {
                    Ok(Ok(0) | Err(_)) => break true,
                    Ok(Ok(n)) => answered += n,
                    Err(_) => break false,
                }
            };
            drop(s);
            seen.push(Replay { answered, closed });
            tokio::time::sleep_until(started + every).await;
        }
        Ok::<_, anyhow::Error>(seen)
    })?
}

/// The replayer: a namespace with node 0's address, cabled straight into
/// node 1's namespace (not the LAN, so the LAN keeps one owner of the
/// address and the real link is not confused). Node 1 routes its answers
/// to the replayer's source ports (and only those) back through that cable.
fn replayer_into(c: &TestCluster, own: usize, target: usize) -> Result<NetNs> {
    let atk = NetNs::new("rpl-atk")?;
    let node = &c.nodes[target];
    veth(&atk, "eth0", &node.ns, "atk0")?;
    let (atk_mac, node_mac) = ("02:00:5e:00:53:01", "02:00:5e:00:53:02");
    atk.ip(&["link", "set", "eth0", "address", atk_mac])?;
    node.ns.ip(&["link", "set", "atk0", "address", node_mac])?;
    let own_addr = c.nodes[own].addr.to_string();
    let target_addr = node.addr.to_string();
    atk.ip(&["addr", "add", &format!("{own_addr}/32"), "dev", "eth0"])?;
    atk.ip(&["route", "add", &format!("{target_addr}/32"), "dev", "eth0"])?;
    atk.ip(&[
        "neigh",
        "replace",
        &target_addr,
        "lladdr",
        node_mac,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ])?;
    node.ns.ip(&[
        "neigh",
        "replace",
        &own_addr,
        "lladdr",
        atk_mac,
        "dev",
        "atk0",
        "nud",
        "permanent",
    ])?;
    node.ns.ip(&[
        "route",
        "add",
        &format!("{own_addr}/32"),
        "dev",
        "atk0",
        "table",
        "100",
    ])?;
    node.ns.ip(&[
        "rule",
        "add",
        "to",
        &own_addr,
        "ipproto",
        "tcp",
        "dport",
        REPLAY_PORTS,
        "lookup",
        "100",
        "priority",
        "100",
    ])?;
    // Packets from node 0's address arrive on atk0 while the main table
    // routes that address through eth0: no reverse-path filter.
    node.ns.exec_ok(
        "sysctl",
        &[
            "-qw",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.atk0.rp_filter=0",
        ],
    )?;
    Ok(atk)
}

/// A host without the key, with node 0's address, replays what node 0 sent
/// to open its real link to node 1 — first message, key confirmation and
/// the first encrypted frames, sniffed on the switch — 15 times while the
/// link carries pings and clusterd's heartbeats. Node 1 reads each replayed
/// first message as node 0's (it answers with its message 2) but never
/// replaces the link: LIST_PEERS's `since` of node 0 never goes back,
/// `links_up` does not move on either side, every ping gets through, each
/// replay is counted as `handshakes_unconfirmed` and logged, and clusterd's
/// generation and both nodes' lease start stay the same.
#[test]
fn replayed_handshake_from_a_node_address_never_replaces_the_live_link() {
    require_root();
    let c = TestCluster::new("rpl", 2).unwrap();
    let (a0, a1) = (c.nodes[0].addr, c.nodes[1].addr);
    let sniffer = sniff_first_dial(
        c.lan.switch(),
        &c.nodes[1].port,
        a0,
        a1,
        Duration::from_secs(1),
        Duration::from_secs(20),
    )
    .unwrap();
    // Node 1 first, so node 0's first dial is answered.
    start_node(&c, 1, true);
    start_node(&c, 0, true);
    let captured = sniffer.join().unwrap().unwrap();
    // The first message: length 57 (ephemeral key 32 + hello 9 + tag 16).
    assert!(
        captured.len() > 59 && captured[..2] == [0, 57],
        "not a captured handshake: {} bytes {:02x?}",
        captured.len(),
        &captured[..captured.len().min(8)]
    );
    eprintln!("captured {} bytes of node 0's dial", captured.len());
    let atk = replayer_into(&c, 0, 1).unwrap();

    let rt = runtime();
    let (c0, c1) =
        rt.block_on(async { (connect(&c, 0, "obs").await, connect(&c, 1, "obs").await) });
    let (c0, c1) = (c0.unwrap(), c1.unwrap());
    let before = rt.block_on(async {
        let ms = settled(&[&c0, &c1], Duration::from_secs(20)).await?;
        Ok::<_, anyhow::Error>((
            statistics(&c0, TRANSPORT).await?,
            statistics(&c1, TRANSPORT).await?,
            link_to(&peers(&c1).await?, 0),
            ms,
        ))
    });
    let (s0, s1, (up, _), ms) = before.unwrap_or_else(|e| panic!("{e}\n{}", logs(&c)));
    assert!(up, "no link 0-1 before the replay\n{}", logs(&c));

    const REPLAYS: u16 = 15;
    let done = AtomicBool::new(false);
    let (replays, observed) = std::thread::scope(|s| {
        let atk = &atk;
        let done = &done;
        let captured = captured.clone();
        let replayer = s.spawn(move || {
            let r = replay(atk, a0, a1, captured, REPLAYS, Duration::from_millis(400));
            done.store(true, Ordering::Release);
            r
        });
        // Meanwhile: node 0 pings node 1 over the link, and node 1's view
        // of the link is sampled, every 50 ms.
        let observed = rt.block_on(async {
            let mut pings = 0u32;
            let mut failures = Vec::new();
            let mut samples = Vec::new();
            let start = Instant::now();
            while !done.load(Ordering::Acquire) && start.elapsed() < Duration::from_secs(60) {
                let req = PingRequest { data: vec![7; 64] };
                match c0
                    .request::<_, PingReply>(Address::new(1, TRANSPORT), PING, &req, TIMEOUT)
                    .await
                {
                    Ok(r) if r.data == req.data => pings += 1,
                    Ok(r) => failures.push(format!("wrong echo {r:?}")),
                    Err(e) => failures.push(e.to_string()),
                }
                if let Ok(list) = peers(&c1).await {
                    samples.push((start.elapsed(), link_to(&list, 0)));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (pings, failures, samples)
        });
        (replayer.join().unwrap(), observed)
    });
    let replays = replays.unwrap_or_else(|e| panic!("replay failed: {e}\n{}", logs(&c)));
    let (pings, failures, samples) = observed;
    let after = rt.block_on(async {
        Ok::<_, anyhow::Error>((
            statistics(&c0, TRANSPORT).await?,
            statistics(&c1, TRANSPORT).await?,
            membership(&c0).await?,
            membership(&c1).await?,
        ))
    });
    let (t0, t1, m0, m1) = after.unwrap_or_else(|e| panic!("{e}\n{}", logs(&c)));
    eprintln!(
        "{} replays: {replays:?}; {pings} pings; {} samples of node 1's link to node 0",
        replays.len(),
        samples.len()
    );
    let context = || format!("{replays:?}\n{t1:?}\n{}", logs(&c));

    // The replays were real: node 1 took each first message for node 0's
    // and answered it, then closed the connection.
    for r in &replays {
        assert!(
            r.answered >= 59 && r.closed,
            "a replay was not answered and closed: {}",
            context()
        );
    }
    // The live link never changed.
    assert!(
        failures.is_empty(),
        "pings failed: {failures:?}\n{}",
        context()
    );
    assert!(pings >= 20, "too few pings ({pings}) over the link");
    let mut last = 0;
    for (at, (connected, since)) in &samples {
        assert!(
            *connected,
            "node 1 lost its link to node 0 at {at:?}: {samples:?}\n{}",
            context()
        );
        assert!(
            *since >= last,
            "node 1's link to node 0 was replaced at {at:?} (since {since} ms after {last} ms)\n{}",
            context()
        );
        last = *since;
    }
    assert_eq!(
        counter(&t1, "links_up"),
        counter(&s1, "links_up"),
        "node 1 brought a link up: {}",
        context()
    );
    assert_eq!(
        counter(&t0, "links_up"),
        counter(&s0, "links_up"),
        "node 0 dialled again: {}",
        context()
    );
    // Refused, counted, logged.
    assert_eq!(
        counter(&t1, "handshakes_unconfirmed") - counter(&s1, "handshakes_unconfirmed"),
        u64::from(REPLAYS),
        "{}",
        context()
    );
    assert_eq!(
        counter(&t1, "decrypt_failures"),
        counter(&s1, "decrypt_failures")
    );
    let log1 = log(&c, 1, "transportd");
    assert!(
        log1.contains("no key confirmation after a first message as node 0"),
        "{log1}"
    );
    let log0 = log(&c, 0, "transportd");
    assert!(!log0.contains("peer link closed"), "{log0}");
    // clusterd saw nothing: same generation, leases unbroken.
    for (was, now) in ms.iter().zip([&m0, &m1]) {
        assert_eq!(
            now.generation, was.generation,
            "membership changed: {now:?}"
        );
        assert!(now.lease_ok, "lease lost: {now:?}");
        assert_eq!(
            now.lease.since_ns, was.lease.since_ns,
            "node {}'s lease lapsed and restarted: {now:?}",
            now.this_node
        );
    }
}

/// Node 2 holds the key and sends from its own address, but claims to be
/// someone else:
/// * in its handshake hello: node 0 (whose link to node 1 is live), node 1
///   (the responder itself) and node 7 (not in the nodes file) — each is
///   refused by name, counted (`handshakes_refused`) and logged, and node
///   1's link to node 0 stays as it was;
/// * in clusterd heartbeats (as a root client registered as `clusterd` on
///   node 2, which runs no clusterd): a heartbeat "from node 0" that would
///   ban node 0, certify node 1's lease over and outrun node 0's stamps —
///   node 1's clusterd drops every one (`peer_messages_refused`, logged)
///   and its membership, node 0's flags and both leases do not move.
#[test]
fn key_holder_claiming_another_pnn_is_refused() {
    require_root();
    let c = TestCluster::new("pnn", 3).unwrap();
    start_node(&c, 1, true);
    start_node(&c, 0, true);
    start_node(&c, 2, false);
    let rt = runtime();
    let (c0, c1) = rt.block_on(async {
        (
            connect(&c, 0, "obs").await.unwrap(),
            connect(&c, 1, "obs").await.unwrap(),
        )
    });
    let ms = rt
        .block_on(settled(&[&c0, &c1], Duration::from_secs(20)))
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&c)));
    let (s1, link_before) = rt.block_on(async {
        wait_for_link(&c1, 2).await.unwrap();
        (
            statistics(&c1, TRANSPORT).await.unwrap(),
            link_to(&peers(&c1).await.unwrap(), 0),
        )
    });
    assert!(link_before.0, "no link 0-1");

    // The handshakes, from node 2's namespace and address, with the key.
    let key = ClusterKey::load(&c.nodes[2].config_dir.join("cluster.key")).unwrap();
    let (a1, a2) = (c.nodes[1].addr, c.nodes[2].addr);
    let outcomes = c.nodes[2]
        .ns
        .block_on(move || async move {
            let mut out = Vec::new();
            for claimed in [0u32, 1, 7] {
                let sock = tokio::net::TcpSocket::new_v4().unwrap();
                sock.bind(SocketAddr::V4(SocketAddrV4::new(a2, 0))).unwrap();
                let mut s = sock
                    .connect(SocketAddr::V4(SocketAddrV4::new(a1, PORT)))
                    .await
                    .unwrap();
                out.push(noise::initiate(&mut s, &key, claimed, 1).await.map(|_| ()));
            }
            out
        })
        .unwrap();
    for (claimed, r) in [0, 1, 7].iter().zip(&outcomes) {
        match r {
            Err(noise::NoiseError::Refused(m)) if m.contains("closed the connection") => {}
            other => panic!(
                "a hello claiming node {claimed} got {other:?}\n{}",
                logs(&c)
            ),
        }
    }
    let log1 = log(&c, 1, "transportd");
    for line in [
        "node 0 must connect from 192.0.2.10, not from 192.0.2.12",
        "node 1 is this node",
        "node 7 is not in the nodes file",
    ] {
        assert!(log1.contains(line), "not logged: {line}\n{log1}");
    }

    // The heartbeats, as clusterd on node 2.
    let forged = ClusterMsg::Heartbeat(Heartbeat {
        from: 0,
        to: 1,
        incarnation: 1,
        stamp: Duration::from_secs(1_000_000),
        echo: None,
        echo_incarnation: 0,
        grant: false,
        expired: {
            let mut set = NodeSet::EMPTY;
            set.set(1, true);
            set
        },
        flags: NodeFlags::BANNED,
        can_lead: true,
        supports: Some(0),
        active_leader: true,
        generation: ms[1].generation,
        nodes: clusterd::msg::NodeSet::EMPTY,
        also: clusterd::msg::NodeSet::EMPTY,
    });
    const FORGED: u64 = 40;
    let (s1c, observed) = rt.block_on(async {
        let s1c = statistics(&c1, CLUSTERD).await.unwrap();
        let forger = connect(&c, 2, "clusterd").await.unwrap();
        assert_eq!(forger.service(), CLUSTERD, "the forger is not clusterd");
        let mut observed = Vec::new();
        for _ in 0..FORGED {
            forger
                .event(Address::new(1, CLUSTERD), PEER, &forged)
                .await
                .unwrap();
            observed.push(membership(&c1).await.unwrap());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        // Let the last ones arrive.
        tokio::time::sleep(Duration::from_millis(300)).await;
        observed.push(membership(&c1).await.unwrap());
        (s1c, observed)
    });
    let (t1, t1c, link_after, m0, m1) = rt.block_on(async {
        (
            statistics(&c1, TRANSPORT).await.unwrap(),
            statistics(&c1, CLUSTERD).await.unwrap(),
            link_to(&peers(&c1).await.unwrap(), 0),
            membership(&c0).await.unwrap(),
            membership(&c1).await.unwrap(),
        )
    });
    let context = || format!("{t1:?}\n{t1c:?}\n{}", logs(&c));
    assert_eq!(
        counter(&t1, "handshakes_refused") - counter(&s1, "handshakes_refused"),
        3,
        "{}",
        context()
    );
    assert_eq!(
        counter(&t1, "links_up"),
        counter(&s1, "links_up"),
        "{}",
        context()
    );
    assert!(
        link_after.0 && link_after.1 >= link_before.1,
        "node 1's link to node 0 changed: {link_before:?} -> {link_after:?}\n{}",
        context()
    );
    for m in &observed {
        let f0 = m.flags(0).unwrap();
        assert!(
            !f0.contains(NodeFlags::BANNED) && !f0.contains(NodeFlags::DISCONNECTED),
            "node 1 believed the forgery about node 0: {m:?}\n{}",
            context()
        );
        assert_eq!(m.generation, ms[1].generation, "membership changed: {m:?}");
        assert!(m.lease_ok, "node 1 lost its lease: {m:?}");
    }
    assert_eq!(
        counter(&t1c, "peer_messages_refused") - counter(&s1c, "peer_messages_refused"),
        FORGED,
        "{}",
        context()
    );
    for (was, now) in ms.iter().zip([&m0, &m1]) {
        assert_eq!(
            now.lease.since_ns, was.lease.since_ns,
            "node {}'s lease lapsed: {now:?}",
            now.this_node
        );
    }
    let clog = log(&c, 1, "clusterd");
    assert!(
        clog.contains("peer message claims another sender (node 0, from node 2"),
        "{clog}"
    );
}

/// Waits (bounded) until `client`'s transportd has a link to `pnn`.
async fn wait_for_link(client: &Client, pnn: u32) -> Result<()> {
    let start = Instant::now();
    loop {
        if link_to(&peers(client).await?, pnn).0 {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("no link to node {pnn}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
