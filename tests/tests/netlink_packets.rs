//! Packets on a real kernel, in namespaces this test makes (needs root):
//! gratuitous ARP and unsolicited NA seen by a peer (its neighbour table and
//! a capture), a tickle ACK that makes an orphaned client reset, and
//! killtcp resetting live IPv4 and IPv6 connections on both ends.
//!
//! Layout: `a` (the node under test, eth0 with 192.0.2.10 and
//! 2001:db8::10) and `c` (peer / client, eth0 with 192.0.2.1 and
//! 2001:db8::1), joined by a veth pair. The peer sets
//! `net.ipv4.conf.eth0.arp_accept=1` so that a gratuitous ARP may create a
//! neighbour entry.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netlink::killtcp::{Connection, KillError, KillTcp};
use netlink::packet::sender::{Capture, CaptureMode, FrameSender, SegmentSender, SendError};
use netlink::packet::{build_garp, build_na, ArpKind, TcpSegment, ARP_FRAME_LEN, NA_FRAME_LEN};
use tests::netns::{require_root, veth, wait_for, NetNs};

use std::sync::Arc;

fn pair(tag: &str) -> (Arc<NetNs>, Arc<NetNs>) {
    require_root();
    let a = NetNs::new(&format!("{tag}a")).unwrap();
    let c = NetNs::new(&format!("{tag}c")).unwrap();
    veth(&a, "eth0", &c, "eth0").unwrap();
    a.ip(&["addr", "add", "192.0.2.10/24", "dev", "eth0"])
        .unwrap();
    a.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8::10/64",
        "dev",
        "eth0",
        "nodad",
    ])
    .unwrap();
    c.ip(&["addr", "add", "192.0.2.1/24", "dev", "eth0"])
        .unwrap();
    c.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8::1/64",
        "dev",
        "eth0",
        "nodad",
    ])
    .unwrap();
    (Arc::new(a), Arc::new(c))
}

fn mac_of(ns: &NetNs, ifname: &str) -> [u8; 6] {
    let name = ifname.to_string();
    ns.block_on(move || async move { FrameSender::open(&name).unwrap().mac().unwrap() })
        .unwrap()
}

fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Captures whole frames on `ifname` in `ns` for `dur`, on a thread; returns
/// once the capture socket is open.
fn capture(ns: &Arc<NetNs>, ifname: &str, dur: Duration) -> JoinHandle<Vec<Vec<u8>>> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let ns = Arc::clone(ns);
    let name = ifname.to_string();
    let h = std::thread::spawn(move || {
        ns.block_on(move || async move {
            let cap = Capture::open(&name, CaptureMode::Frames).unwrap();
            ready_tx.send(()).unwrap();
            let mut frames = Vec::new();
            let end = tokio::time::Instant::now() + dur;
            let mut buf = vec![0u8; 2048];
            while let Ok(got) = tokio::time::timeout_at(end, cap.recv(&mut buf)).await {
                let c = got.unwrap();
                frames.push(buf[..c.len].to_vec());
            }
            frames
        })
        .unwrap()
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    h
}

fn neigh(ns: &NetNs, ip: &str) -> String {
    ns.exec_ok("ip", &["neigh", "show", ip]).unwrap()
}

#[test]
fn gratuitous_arp_updates_the_peer_and_has_ctdbs_fields() {
    let (a, c) = pair("pga");
    c.exec_ok("sysctl", &["-qw", "net.ipv4.conf.eth0.arp_accept=1"])
        .unwrap();
    let mac = mac_of(&a, "eth0");
    assert!(
        neigh(&c, "192.0.2.10").trim().is_empty(),
        "entry exists before"
    );
    let cap = capture(&c, "eth0", Duration::from_millis(700));
    let sent = a
        .block_on(|| async {
            FrameSender::open("eth0")
                .unwrap()
                .announce("192.0.2.10".parse().unwrap())
                .await
                .unwrap()
        })
        .unwrap();
    assert_eq!(sent, 2);
    let frames = cap.join().unwrap();
    let arps: Vec<&Vec<u8>> = frames
        .iter()
        .filter(|f| f.get(12..14) == Some(&[0x08, 0x06][..]))
        .collect();
    assert_eq!(arps.len(), 2, "{frames:?}");
    let ip = "192.0.2.10".parse().unwrap();
    let mut want = [0u8; ARP_FRAME_LEN];
    for (frame, kind) in arps.iter().zip([ArpKind::Request, ArpKind::Reply]) {
        build_garp(&mut want, mac, ip, kind).unwrap();
        assert_eq!(&frame[..ARP_FRAME_LEN], &want[..], "{kind:?}");
        // Spot-check the fields against CTDB's description, independent of
        // the builder: broadcast, op, target MAC.
        assert_eq!(&frame[0..6], &[0xff; 6]);
        let op = u16::from_be_bytes([frame[20], frame[21]]);
        let tha = &frame[32..38];
        match kind {
            ArpKind::Request => assert_eq!((op, tha), (1, &[0u8; 6][..])),
            ArpKind::Reply => assert_eq!((op, tha), (2, &mac[..])),
        }
        assert_eq!(&frame[28..32], &[192, 0, 2, 10]);
        assert_eq!(&frame[38..42], &[192, 0, 2, 10]);
    }
    let entry = wait_for(
        "peer learns the MAC",
        Duration::from_secs(3),
        Duration::from_millis(50),
        || {
            let n = neigh(&c, "192.0.2.10");
            n.contains(&mac_text(mac)).then_some(n)
        },
    )
    .unwrap();
    assert!(entry.contains("192.0.2.10"), "{entry}");
}

#[test]
fn unsolicited_na_updates_the_peers_ipv6_neighbour() {
    let (a, c) = pair("pna");
    let mac = mac_of(&a, "eth0");
    // An unsolicited NA only updates an existing entry: give the peer a
    // stale one pointing elsewhere (the previous owner).
    c.ip(&[
        "-6",
        "neigh",
        "replace",
        "2001:db8::10",
        "lladdr",
        "02:00:00:00:00:99",
        "dev",
        "eth0",
        "nud",
        "stale",
    ])
    .unwrap();
    let cap = capture(&c, "eth0", Duration::from_millis(700));
    let sent = a
        .block_on(|| async {
            FrameSender::open("eth0")
                .unwrap()
                .announce("2001:db8::10".parse().unwrap())
                .await
                .unwrap()
        })
        .unwrap();
    assert_eq!(sent, 1);
    let frames = cap.join().unwrap();
    let mut want = [0u8; NA_FRAME_LEN];
    build_na(&mut want, mac, "2001:db8::10".parse().unwrap()).unwrap();
    assert!(
        frames.iter().any(|f| f.as_slice() == want.as_slice()),
        "NA not captured: {frames:?}"
    );
    wait_for(
        "peer's v6 entry moves",
        Duration::from_secs(3),
        Duration::from_millis(50),
        || {
            neigh(&c, "2001:db8::10")
                .contains(&mac_text(mac))
                .then_some(())
        },
    )
    .unwrap();
}

fn set_linger_zero(s: &TcpStream) {
    nix::sys::socket::setsockopt(
        s,
        nix::sys::socket::sockopt::Linger,
        &nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .unwrap();
}

/// A connection from `c` to `a` at `server`: (client stream, server stream).
fn connect(a: &NetNs, c: &NetNs, server: SocketAddr) -> (TcpStream, TcpStream) {
    let listener = a.run(move || TcpListener::bind(server).unwrap()).unwrap();
    let client = c
        .run(move || TcpStream::connect_timeout(&server, Duration::from_secs(3)).unwrap())
        .unwrap();
    let (srv, _) = listener.accept().unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    srv.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    (client, srv)
}

fn expect_reset(s: &mut TcpStream, who: &str) {
    let mut b = [0u8; 16];
    match s.read(&mut b) {
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("{who}: expected ECONNRESET, got {other:?}"),
    }
}

fn tickle_resets_orphaned_client(tag: &str, server: &str) {
    let (a, c) = pair(tag);
    let server: SocketAddr = server.parse().unwrap();
    let port = server.port().to_string();
    let (mut client, srv) = connect(&a, &c, server);
    let client_addr = client.local_addr().unwrap();
    // Make the server socket vanish without the client hearing of it: drop
    // A's outgoing packets of that port, abort the socket (its RST is
    // dropped), then lift the block.
    let table = format!("add table inet {tag}; add chain inet {tag} out {{ type filter hook output priority 0; }}; add rule inet {tag} out tcp sport {port} drop");
    a.exec_ok("nft", &[&table]).unwrap();
    set_linger_zero(&srv);
    drop(srv);
    a.exec_ok("nft", &[&format!("delete table inet {tag}")])
        .unwrap();
    // Without a tickle the idle client notices nothing.
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut b = [0u8; 4];
    let idle = client.read(&mut b);
    assert!(
        matches!(&idle, Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut),
        "{idle:?}"
    );
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let stats = a
        .block_on(move || async move {
            SegmentSender::open()
                .unwrap()
                .send(&[TcpSegment::tickle(server, client_addr)])
                .await
                .unwrap()
        })
        .unwrap();
    assert_eq!(stats.sent, 1);
    expect_reset(&mut client, "client");
}

#[test]
fn tickle_ack_resets_a_client_whose_server_socket_vanished() {
    tickle_resets_orphaned_client("ptk", "192.0.2.10:4455");
}

#[test]
fn ipv6_tickle_ack_resets_a_client_whose_server_socket_vanished() {
    tickle_resets_orphaned_client("ptk6", "[2001:db8::10]:4459");
}

fn kill_both_ends(tag: &str, server: &str) {
    let (a, c) = pair(tag);
    let server: SocketAddr = server.parse().unwrap();
    let (mut client, mut srv) = connect(&a, &c, server);
    // The connection is live.
    client.write_all(b"ping").unwrap();
    let mut b = [0u8; 4];
    srv.read_exact(&mut b).unwrap();
    let conn = Connection {
        local: server,
        remote: client.local_addr().unwrap(),
    };
    let start = Instant::now();
    let report = a
        .block_on(move || async move { KillTcp::new("eth0").execute(&[conn]).await.unwrap() })
        .unwrap();
    assert_eq!(
        report.killed,
        vec![conn],
        "{report:?} after {:?}",
        start.elapsed()
    );
    assert!(report.remaining.is_empty());
    expect_reset(&mut client, "client");
    expect_reset(&mut srv, "server");
}

#[test]
fn killtcp_resets_a_live_ipv4_connection_on_both_ends() {
    kill_both_ends("pk4", "192.0.2.10:4456");
}

#[test]
fn killtcp_resets_a_live_ipv6_connection_on_both_ends() {
    kill_both_ends("pk6", "[2001:db8::10]:4457");
}

#[test]
fn killtcp_reports_what_it_could_not_kill() {
    let (a, _c) = pair("pkr");
    // Nobody answers for this connection: it stays remaining, in bounded time.
    let ghost = Connection {
        local: "192.0.2.10:9".parse().unwrap(),
        remote: "192.0.2.77:1234".parse().unwrap(),
    };
    let report = a
        .block_on(move || async move {
            KillTcp::new("eth0")
                .attempts(3)
                .interval(Duration::from_millis(20))
                .execute(&[ghost])
                .await
                .unwrap()
        })
        .unwrap();
    assert_eq!(report.remaining, vec![ghost]);
    assert!(report.killed.is_empty());
}

#[test]
fn missing_interfaces_give_typed_errors() {
    let (a, _c) = pair("pkx");
    a.block_on(|| async {
        assert!(matches!(
            FrameSender::open("nosuch0"),
            Err(SendError::NoSuchInterface { .. })
        ));
        assert!(matches!(
            Capture::open("nosuch0", CaptureMode::Packets),
            Err(SendError::NoSuchInterface { .. })
        ));
        let conn = Connection {
            local: "192.0.2.10:1".parse().unwrap(),
            remote: "192.0.2.1:2".parse().unwrap(),
        };
        let e = KillTcp::new("nosuch0").execute(&[conn]).await.unwrap_err();
        assert!(
            matches!(&e, KillError::Socket { interface, source: SendError::NoSuchInterface { .. } } if interface == "nosuch0"),
            "{e:?}"
        );
        // Loopback has no MAC: announcing is a successful no-op, as in CTDB.
        let lo = FrameSender::open("lo").unwrap();
        assert_eq!(lo.announce(IpAddr::from([127, 0, 0, 1])).await.unwrap(), 0);
    })
    .unwrap();
}

#[test]
fn tcp_only_capture_drops_everything_but_tcp() {
    let (a, c) = pair("pcf");
    let (ready_tx, ready_rx) = mpsc::channel();
    let cap_ns = Arc::clone(&c);
    let h = std::thread::spawn(move || {
        cap_ns
            .block_on(move || async move {
                let cap = Capture::open("eth0", CaptureMode::Packets).unwrap();
                cap.tcp_only().unwrap();
                // Drop whatever was queued before the filter was attached.
                let mut buf = vec![0u8; 2048];
                while cap.try_recv(&mut buf).unwrap().is_some() {}
                ready_tx.send(()).unwrap();
                let mut seen = Vec::new();
                let end = tokio::time::Instant::now() + Duration::from_millis(1500);
                while let Ok(got) = tokio::time::timeout_at(end, cap.recv(&mut buf)).await {
                    let n = got.unwrap().len;
                    seen.push(netlink::packet::parse_tcp(&buf[..n]).is_some());
                }
                seen
            })
            .unwrap()
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    // ICMP both ways (v4 and v6), then one TCP connection attempt.
    assert!(c
        .exec("ping", &["-c", "2", "-i", "0.2", "192.0.2.10"])
        .unwrap()
        .status
        .success());
    assert!(c
        .exec("ping", &["-c", "1", "2001:db8::10"])
        .unwrap()
        .status
        .success());
    let server: SocketAddr = "192.0.2.10:4458".parse().unwrap();
    let (_client, _srv) = connect(&a, &c, server);
    let seen = h.join().unwrap();
    assert!(!seen.is_empty(), "no TCP captured");
    assert!(
        seen.iter().all(|tcp| *tcp),
        "non-TCP passed the filter: {seen:?}"
    );
}

#[test]
fn announce_is_a_successful_no_op_on_down_and_noarp_interfaces() {
    let (a, _c) = pair("pan");
    a.ip(&["link", "add", "v1", "type", "veth", "peer", "name", "v1p"])
        .unwrap();
    let ns = Arc::clone(&a);
    a.block_on(move || async move {
        let v1 = FrameSender::open("v1").unwrap();
        assert!(v1.mac().is_some());
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        // Down (as created).
        assert_eq!(v1.announce(ip).await.unwrap(), 0);
        // Up but NOARP.
        ns.ip(&["link", "set", "v1", "up", "arp", "off"]).unwrap();
        assert_eq!(v1.announce(ip).await.unwrap(), 0);
        // Up with ARP: both frames go out.
        ns.ip(&["link", "set", "v1", "arp", "on"]).unwrap();
        ns.ip(&["link", "set", "v1p", "up"]).unwrap();
        assert_eq!(v1.announce(ip).await.unwrap(), 2);
    })
    .unwrap();
}

#[test]
fn moved_address_is_reachable_at_once_after_the_new_owners_garp() {
    // Two nodes and a client on one switch; the client already has an ARP
    // entry for the public IP (pointing at node 1) and default sysctls
    // (arp_accept=0): the GARP must update it.
    require_root();
    let lan = tests::netns::Lan::new("pmvs").unwrap();
    let n1 = Arc::new(NetNs::new("pmv1").unwrap());
    let n2 = Arc::new(NetNs::new("pmv2").unwrap());
    let cl = NetNs::new("pmvc").unwrap();
    for ns in [&*n1, &*n2, &cl] {
        lan.attach(ns, "eth0").unwrap();
    }
    n1.ip(&["addr", "add", "192.0.2.11/24", "dev", "eth0"])
        .unwrap();
    n2.ip(&["addr", "add", "192.0.2.12/24", "dev", "eth0"])
        .unwrap();
    cl.ip(&["addr", "add", "192.0.2.1/24", "dev", "eth0"])
        .unwrap();
    let public: IpAddr = "192.0.2.10".parse().unwrap();
    let prefix: netlink::addr::IpPrefix = "192.0.2.10/24".parse().unwrap();
    let add = move || async move {
        let nl = netlink::link::Netlink::new().unwrap();
        nl.add_address("eth0", prefix).execute().await.unwrap();
    };
    n1.block_on(add).unwrap();
    assert!(cl
        .exec("ping", &["-c", "1", "-W", "1", "192.0.2.10"])
        .unwrap()
        .status
        .success());
    let mac1 = mac_text(mac_of(&n1, "eth0"));
    let mac2 = mac_text(mac_of(&n2, "eth0"));
    assert!(neigh(&cl, "192.0.2.10").contains(&mac1));

    // Move: release on node 1, take on node 2 and announce.
    n1.block_on(move || async move {
        let nl = netlink::link::Netlink::new().unwrap();
        nl.del_address("eth0", prefix).execute().await.unwrap();
    })
    .unwrap();
    n2.block_on(move || async move {
        let nl = netlink::link::Netlink::new().unwrap();
        nl.add_address("eth0", prefix).execute().await.unwrap();
        FrameSender::open("eth0")
            .unwrap()
            .announce(public)
            .await
            .unwrap()
    })
    .unwrap();
    let entry = wait_for(
        "client's entry moves to node 2",
        Duration::from_secs(3),
        Duration::from_millis(50),
        || {
            let n = neigh(&cl, "192.0.2.10");
            n.contains(&mac2).then_some(n)
        },
    )
    .unwrap();
    assert!(!entry.contains(&mac1), "{entry}");
    assert!(cl
        .exec("ping", &["-c", "1", "-W", "1", "192.0.2.10"])
        .unwrap()
        .status
        .success());
}
