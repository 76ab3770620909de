//! sock_diag and conntrack events against the real kernel: a client
//! namespace connects over a veth to a server namespace; the server side
//! sees the connection in its socket table and in its conntrack events,
//! and sees it go away.

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use netlink::conntrack::{ConntrackEvent, ConntrackEvents};
use netlink::nft::NftTable;
use netlink::sockdiag::{Connection, SockDiag};
use tests::netns::{require_root, veth, wait_for, NetNs};

const SERVER4: &str = "192.0.2.1";
const OTHER4: &str = "192.0.2.3";
const CLIENT4: &str = "192.0.2.2";
const SERVER6: &str = "2001:db8::1";
const CLIENT6: &str = "2001:db8::2";

/// A server and a client namespace joined by a veth, with IPv4 and IPv6.
fn pair(tag: &str) -> (NetNs, NetNs) {
    let server = NetNs::new(&format!("{tag}s")).unwrap();
    let client = NetNs::new(&format!("{tag}c")).unwrap();
    veth(&server, "eth0", &client, "eth0").unwrap();
    for (ns, v4, v6) in [(&server, SERVER4, SERVER6), (&client, CLIENT4, CLIENT6)] {
        ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", "eth0"])
            .unwrap();
        ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"])
            .unwrap();
    }
    server
        .ip(&["addr", "add", &format!("{OTHER4}/24"), "dev", "eth0"])
        .unwrap();
    (server, client)
}

fn listen(ns: &NetNs, addr: SocketAddr) -> TcpListener {
    ns.run(move || TcpListener::bind(addr)).unwrap().unwrap()
}

fn connect(ns: &NetNs, addr: SocketAddr) -> TcpStream {
    ns.run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(3)))
        .unwrap()
        .unwrap()
}

fn established(ns: &NetNs, locals: Vec<IpAddr>) -> Vec<Connection> {
    ns.block_on(move || async move {
        let mut diag = SockDiag::new().unwrap();
        diag.established(&locals).execute().await.unwrap()
    })
    .unwrap()
}

fn sock_diag_sees_a_connection_and_its_close(server_ip: &str, client_ip: &str, tag: &str) {
    require_root();
    let (server, client) = pair(tag);
    let public: IpAddr = server_ip.parse().unwrap();
    let listener = listen(&server, SocketAddr::new(public, 4450));
    let stream = connect(&client, SocketAddr::new(public, 4450));
    let (accepted, peer) = listener.accept().unwrap();
    assert_eq!(peer.ip(), client_ip.parse::<IpAddr>().unwrap());
    let want = Connection {
        local: SocketAddr::new(public, 4450),
        remote: stream.local_addr().unwrap(),
    };

    let seen = established(&server, vec![public]);
    assert_eq!(seen, vec![want], "dump for {public}");
    // Another local address is filtered out; no filter shows it.
    let other: IpAddr = OTHER4.parse().unwrap();
    assert!(established(&server, vec![other]).is_empty());
    assert!(established(&server, vec![]).contains(&want));
    // The client's side is the mirror image.
    let client_ip: IpAddr = client_ip.parse().unwrap();
    let mirror = established(&client, vec![client_ip]);
    assert_eq!(
        mirror,
        vec![Connection {
            local: want.remote,
            remote: want.local
        }]
    );

    drop(stream);
    drop(accepted);
    wait_for(
        "the closed connection to leave the established dump",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || established(&server, vec![public]).is_empty().then_some(()),
    )
    .unwrap();
}

#[test]
fn sock_diag_sees_ipv4_connection_and_close() {
    sock_diag_sees_a_connection_and_its_close(SERVER4, CLIENT4, "sd4");
}

#[test]
fn sock_diag_sees_ipv6_connection_and_close() {
    sock_diag_sees_a_connection_and_its_close(SERVER6, CLIENT6, "sd6");
}

#[test]
fn sock_diag_reports_dual_stack_connections_as_ipv4() {
    require_root();
    let (server, client) = pair("sdm");
    // An IPv6 wildcard listener also accepts IPv4 (v4-mapped) connections.
    let listener = listen(&server, "[::]:4452".parse().unwrap());
    let public: IpAddr = SERVER4.parse().unwrap();
    let stream = connect(&client, SocketAddr::new(public, 4452));
    let (_accepted, _) = listener.accept().unwrap();
    let seen = established(&server, vec![public]);
    assert_eq!(
        seen,
        vec![Connection {
            local: SocketAddr::new(public, 4452),
            remote: stream.local_addr().unwrap(),
        }]
    );
    // The socket is AF_INET6 with mapped addresses: destroy finds it too.
    let report = server
        .block_on(move || async move {
            let mut diag = SockDiag::new().unwrap();
            diag.destroy(&seen).execute().await.unwrap()
        })
        .unwrap();
    assert_eq!(report.destroyed.len(), 1, "{report:?}");
    let mut stream = stream;
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let err = stream.read(&mut [0u8; 8]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err:?}");
}

#[test]
fn sock_destroy_resets_the_client() {
    require_root();
    let (server, client) = pair("sdk");
    let public: IpAddr = SERVER4.parse().unwrap();
    let listener = listen(&server, SocketAddr::new(public, 4453));
    let mut stream = connect(&client, SocketAddr::new(public, 4453));
    let (_accepted, _) = listener.accept().unwrap();
    let conns = established(&server, vec![public]);
    assert_eq!(conns.len(), 1);
    let report = server
        .block_on(move || async move {
            let mut diag = SockDiag::new().unwrap();
            let first = diag.destroy(&conns).execute().await.unwrap();
            let second = diag.destroy(&conns).execute().await.unwrap();
            (first, second)
        })
        .unwrap();
    assert_eq!(report.0.destroyed.len(), 1, "{report:?}");
    assert!(report.0.missing.is_empty());
    assert!(report.1.destroyed.is_empty(), "{report:?}");
    assert_eq!(report.1.missing.len(), 1);

    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut buf = [0u8; 16];
    let err = stream.read(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err:?}");
    assert!(established(&server, vec![public]).is_empty());
    // Destroying a gone connection must not close the listener.
    let _again = connect(&client, SocketAddr::new(public, 4453));
    listener.set_nonblocking(false).unwrap();
    assert!(listener.accept().is_ok(), "the listener was closed");
}

/// Connects from `local` (a port just freed, hence SO_REUSEADDR) to
/// `remote`, inside `ns`; the outcome does not matter, the SYN does.
fn reconnect_from(ns: &NetNs, local: SocketAddr, remote: SocketAddr) -> Option<TcpStream> {
    use nix::sys::socket::{
        bind, connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType,
        SockaddrStorage,
    };
    use std::os::fd::AsRawFd;
    ns.run(move || {
        let family = if local.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let fd = socket(family, SockType::Stream, SockFlag::empty(), None).ok()?;
        setsockopt(&fd, sockopt::ReuseAddr, &true).ok()?;
        bind(fd.as_raw_fd(), &SockaddrStorage::from(local)).ok()?;
        connect(fd.as_raw_fd(), &SockaddrStorage::from(remote)).ok()?;
        Some(TcpStream::from(fd))
    })
    .unwrap()
}

/// Waits (bounded) for an event matching `want` and returns every event
/// seen until then.
fn wait_event(
    rt: &tokio::runtime::Runtime,
    events: &mut ConntrackEvents,
    want: ConntrackEvent,
    limit: Duration,
) -> Vec<ConntrackEvent> {
    let mut seen = Vec::new();
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + limit;
        for _ in 0..10_000 {
            match tokio::time::timeout_at(deadline, events.next()).await {
                Ok(Ok(event)) => {
                    seen.push(event);
                    if event == want {
                        return;
                    }
                }
                Ok(Err(e)) => panic!("event stream failed: {e}"),
                Err(_) => panic!("no {want:?} within {limit:?}; saw {seen:?}"),
            }
        }
    });
    seen
}

fn conntrack_events_follow_a_connection(server_ip: &str, tag: &str) {
    require_root();
    let (server, client) = pair(tag);
    let public: IpAddr = server_ip.parse().unwrap();
    let other: IpAddr = OTHER4.parse().unwrap();
    // Short TCP timeouts after the close, so the entry dies quickly.
    for (key, value) in [
        ("net.netfilter.nf_conntrack_tcp_timeout_time_wait", "1"),
        ("net.netfilter.nf_conntrack_tcp_timeout_close", "1"),
        ("net.netfilter.nf_conntrack_tcp_timeout_fin_wait", "1"),
        ("net.netfilter.nf_conntrack_tcp_timeout_last_ack", "1"),
        ("net.netfilter.nf_conntrack_tcp_timeout_close_wait", "1"),
    ] {
        server
            .exec_ok("sysctl", &["-qw", &format!("{key}={value}")])
            .unwrap();
    }
    // The table's `ct state` rules turn conntrack on in the namespace.
    let table = NftTable::new(&format!("ipf_{tag}")).unwrap();
    let (rt, mut events) = server
        .run(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let events = rt.block_on(async {
                table
                    .install()
                    .tracked(&[public, other])
                    .execute()
                    .await
                    .unwrap();
                ConntrackEvents::subscribe(&[public]).unwrap()
            });
            (rt, events)
        })
        .unwrap();

    // A connection to an unwatched address must not be reported.
    let l_other = listen(&server, SocketAddr::new(other, 4460));
    let s_other = connect(&client, SocketAddr::new(other, 4460));
    drop(l_other.accept().unwrap());
    drop(s_other);

    let listener = listen(&server, SocketAddr::new(public, 4461));
    let mut stream = connect(&client, SocketAddr::new(public, 4461));
    let (mut accepted, _) = listener.accept().unwrap();
    let conn = Connection {
        local: SocketAddr::new(public, 4461),
        remote: stream.local_addr().unwrap(),
    };
    let seen = wait_event(
        &rt,
        &mut events,
        ConntrackEvent::New(conn),
        Duration::from_secs(5),
    );
    stream.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    accepted.read_exact(&mut buf).unwrap();
    // The server closes first, so the client's port is free again at once.
    drop(accepted);
    let mut rest = Vec::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    stream.read_to_end(&mut rest).unwrap();
    drop(stream);
    // The kernel reaps a closed entry when its garbage collector passes
    // (up to a minute) or when a packet of the same tuple arrives: a new
    // SYN from the same client port makes it destroy the old entry now.
    let reconnect = reconnect_from(&client, conn.remote, conn.local);
    let more = wait_event(
        &rt,
        &mut events,
        ConntrackEvent::Destroy(conn),
        Duration::from_secs(90),
    );
    drop(reconnect);
    let all: HashSet<_> = seen.into_iter().chain(more).collect();
    for event in &all {
        match event {
            ConntrackEvent::New(c) | ConntrackEvent::Destroy(c) | ConntrackEvent::Closing(c) => {
                assert_eq!(c.local.ip(), public, "unwatched event {event:?}")
            }
            ConntrackEvent::Lost => {}
        }
    }
}

#[test]
fn conntrack_events_follow_an_ipv4_connection() {
    conntrack_events_follow_a_connection(SERVER4, "ct4");
}

#[test]
fn conntrack_events_follow_an_ipv6_connection() {
    conntrack_events_follow_a_connection(SERVER6, "ct6");
}

#[test]
fn blocked_connections_make_no_conntrack_entry() {
    require_root();
    let (server, client) = pair("ctb");
    let public: IpAddr = SERVER4.parse().unwrap();
    let table = NftTable::new("ipf_ctb").unwrap();
    let t = table.clone();
    let (rt, mut events) = server
        .run(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let events = rt.block_on(async {
                t.install()
                    .tracked(&[public])
                    .blocked(&[public])
                    .execute()
                    .await
                    .unwrap();
                ConntrackEvents::subscribe(&[public]).unwrap()
            });
            (rt, events)
        })
        .unwrap();
    let listener = listen(&server, SocketAddr::new(public, 4462));
    let target = SocketAddr::new(public, 4462);
    let refused = client
        .run(move || TcpStream::connect_timeout(&target, Duration::from_millis(500)))
        .unwrap();
    assert!(refused.is_err(), "connected to a blocked address");
    // Dropped at priority raw, before conntrack: no entry, no event.
    let quiet = rt
        .block_on(async { tokio::time::timeout(Duration::from_millis(500), events.next()).await });
    assert!(quiet.is_err(), "event for a blocked connection: {quiet:?}");

    // Unblocked (a request in the server's namespace), the same address is
    // tracked again.
    server
        .block_on(move || async move {
            table
                .update()
                .remove(netlink::nft::NftSet::Blocked, &[public])
                .execute()
                .await
        })
        .unwrap()
        .unwrap();
    let stream = connect(&client, target);
    let (_accepted, _) = listener.accept().unwrap();
    let conn = Connection {
        local: target,
        remote: stream.local_addr().unwrap(),
    };
    wait_event(
        &rt,
        &mut events,
        ConntrackEvent::New(conn),
        Duration::from_secs(5),
    );
}
