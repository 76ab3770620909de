//! Who may talk to transportd: a peer without the cluster key is refused and
//! cannot inject a frame; a local user that is neither root nor in the
//! configured group is refused, a group member is accepted.

mod transport_support;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use tests::netns::{require_root, NetNs};
use transport::client::ClientError;
use transport::proto::service::{BROADCAST_SERVICE, CLUSTERD};
use transport::proto::{encode_frame, Address, ErrorCode, HeaderRepr, Kind};
use transport_support::{bins, connect, runtime, start, stats, wait_peer, Pair, Scratch, TIMEOUT};

const NEWS: u32 = 0x0001_0005;

#[test]
fn peer_with_wrong_key_is_refused_and_cannot_inject() {
    require_root();
    let pair = Pair::new("tr-key", false).unwrap();
    let d0 = pair.start(0).unwrap();
    let d1 = pair.start(1).unwrap();
    let rt = runtime();
    let (c1, mut sub_in) = rt.block_on(async {
        let (c1, i1) = connect(&d1, "clusterd").await.unwrap();
        c1.subscribe(NEWS).await.unwrap();
        (c1, i1)
    });
    // Node 0 dials node 1 with the wrong key: node 1 counts a failed
    // handshake and never marks the link up.
    rt.block_on(async {
        let start = tokio::time::Instant::now();
        loop {
            let s = stats(&c1).await.unwrap();
            if s.get("handshake_failures").unwrap_or(0) >= 2 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "no handshake failure: {s:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(wait_peer(&c1, 0, true, Duration::from_millis(300)).await.is_err());
        let err = c1
            .request::<_, String>(Address::new(0, CLUSTERD), 0x0001_0001, "x", TIMEOUT)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ClientError::Remote { error, .. } if error.code == ErrorCode::NodeUnreachable),
            "{err}"
        );
    });
    assert!(
        d1.log_text().contains("peer handshake refused"),
        "{}",
        d1.log_text()
    );
    assert!(
        d0.log_text().contains("peer handshake failed"),
        "{}",
        d0.log_text()
    );

    // From node 0's own address, a plain-text frame (a valid broadcast
    // event) sent to node 1's port must not reach the subscriber.
    let before = rt
        .block_on(stats(&c1))
        .unwrap()
        .get("handshake_failures")
        .unwrap();
    let reply = pair
        .a
        .block_on(|| async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind("192.0.2.1:0".parse().unwrap()).unwrap();
            let mut s = sock
                .connect("192.0.2.2:14379".parse().unwrap())
                .await
                .unwrap();
            let h = HeaderRepr {
                kind: Kind::Event,
                src: Address::new(0, CLUSTERD),
                dst: Address::new(1, BROADCAST_SERVICE),
                request_id: 0,
                opcode: NEWS,
            };
            let mut frame = Vec::new();
            encode_frame(
                &h,
                &transport::proto::encode_payload("forged").unwrap(),
                &mut frame,
            )
            .unwrap();
            // Raw, then inside a fake Noise length prefix.
            let mut bytes = (u16::try_from(frame.len()).unwrap()).to_be_bytes().to_vec();
            bytes.extend_from_slice(&frame);
            let _ = s.write_all(&bytes).await;
            let _ = s.write_all(&frame).await;
            let mut buf = [0u8; 64];
            // Node 1 closes the connection without answering.
            tokio::time::timeout(Duration::from_secs(6), s.read(&mut buf)).await
        })
        .unwrap();
    match reply {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        other => panic!("node 1 answered an unauthenticated peer: {other:?}"),
    }
    rt.block_on(async {
        assert!(
            tokio::time::timeout(Duration::from_millis(500), sub_in.recv())
                .await
                .is_err(),
            "an injected frame reached a subscriber"
        );
        let after = stats(&c1).await.unwrap().get("handshake_failures").unwrap();
        assert!(
            after > before,
            "the injection was not counted as a failed handshake"
        );
    });
}

fn ping_as(user: (u32, u32), socket: &std::path::Path) -> std::process::Output {
    let (_, ipfailover) = bins();
    Command::new(ipfailover)
        .args(["ping", "--run-dir"])
        .arg(socket.parent().unwrap())
        .uid(user.0)
        .gid(user.1)
        .output()
        .unwrap()
}

#[test]
fn unprivileged_local_user_is_refused_and_group_member_accepted() {
    require_root();
    let ns = NetNs::new("tr-cred").unwrap();
    let scratch = Scratch::new("tr-cred");
    let strict = start(&ns, &scratch, "strict", &[]).unwrap();
    let out = ping_as((65534, 65534), &strict.socket());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "nobody was allowed: {out:?}");
    assert!(err.contains("Refused") && err.contains("not root"), "{err}");
    assert!(strict.log_text().contains("local client refused"));
    // Root is still served.
    let out = ping_as((0, 0), &strict.socket());
    assert!(out.status.success(), "{out:?}");
    runtime().block_on(async {
        let (c, _) = connect(&strict, "cli").await.unwrap();
        assert_eq!(stats(&c).await.unwrap().get("clients_refused"), Some(1));
    });

    // With --group nogroup, a member of that group may connect.
    let open = start(&ns, &scratch, "group", &["--group", "nogroup"]).unwrap();
    let out = ping_as((65534, 65534), &open.socket());
    assert!(out.status.success(), "group member refused: {out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("response from 0"));
    let out = ping_as((4321, 4321), &open.socket());
    assert!(!out.status.success(), "a non-member was allowed: {out:?}");
}

/// A TCP connection to the peer port from an address that is not in the
/// nodes file is closed at once, before any handshake (no buffers, no task
/// held for the handshake time-out).
#[test]
fn peer_port_closes_connections_from_non_node_addresses_at_once() {
    use std::io::Read;
    require_root();
    let pair = Pair::new("tr-stranger", true).unwrap();
    let d1 = pair.start(1).unwrap();
    // Namespace a reaches node 1 from 192.0.2.9, which no nodes line names.
    pair.a
        .ip(&["addr", "add", "192.0.2.9/32", "dev", "eth0"])
        .unwrap();
    pair.a
        .ip(&[
            "route",
            "replace",
            "192.0.2.2/32",
            "dev",
            "eth0",
            "src",
            "192.0.2.9",
        ])
        .unwrap();
    let outcome = pair
        .a
        .run(|| -> Result<(usize, Duration), String> {
            let start = std::time::Instant::now();
            let mut conn = loop {
                match std::net::TcpStream::connect_timeout(
                    &std::net::SocketAddr::from(([192, 0, 2, 2], transport_support::PORT)),
                    Duration::from_secs(1),
                ) {
                    Ok(c) => break c,
                    Err(e) if start.elapsed() > Duration::from_secs(10) => {
                        return Err(format!("cannot connect: {e}"))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            };
            let connected = std::time::Instant::now();
            // transportd's handshake time-out is 5 s: closed well before 3 s
            // means it did not wait for a handshake.
            conn.set_read_timeout(Some(Duration::from_secs(3)))
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 16];
            match conn.read(&mut buf) {
                Ok(n) => Ok((n, connected.elapsed())),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    Ok((0, connected.elapsed()))
                }
                Err(e) => Err(format!("not closed: {e}")),
            }
        })
        .unwrap();
    let (n, after) = outcome.unwrap_or_else(|e| panic!("{e}\n{}", d1.log_text()));
    assert_eq!(n, 0, "transportd sent {n} bytes to a stranger");
    assert!(
        after < Duration::from_secs(3),
        "closed only after {after:?}"
    );
    assert!(
        d1.log_text().contains("not in the nodes file"),
        "{}",
        d1.log_text()
    );
}

/// An unprivileged member of the `--group` (a uid with no passwd entry,
/// primary group `nogroup`).
const MEMBER: (u32, u32) = (64_000, 65_534);

/// Runs the test crate's `forge` client as [`MEMBER`]: registers `name` on
/// `d`, sends `steps`; its output.
fn forge_as_member(d: &transport_support::Daemon, name: &str, steps: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_forge"))
        .arg(d.socket())
        .arg(name)
        .args(steps)
        .uid(MEMBER.0)
        .gid(MEMBER.1)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

use tests::forge::step;

/// Local trust (#14 item 1) against two real transportds with
/// `--group nogroup`, with a real non-root member of that group:
/// * it may not register any daemon name (`Refused`, logged with its uid
///   and pid, counted), free or taken;
/// * its daemon-only frames — TAKE_IPS and RELEASE_IPS to another node's
///   failoverd, LEASE and MEMBERSHIP broadcasts, a heartbeat to a peer's
///   clusterd, conntrackd replication, SUBSCRIBE, SHUTDOWN — are refused
///   and reach no service (root clients registered as the daemons listen
///   on both nodes), while transportd keeps running;
/// * the CLI's requests still work for it (PING and LIST_PEERS of both
///   nodes, `ipfailover ping -n all`).
#[test]
fn group_member_may_send_only_the_cli_requests() {
    use transport::msg::cluster::{LEASE, MEMBERSHIP};
    use transport::msg::conntrack::REPLICATION;
    use transport::msg::failover::{RELEASE_IPS, TAKE_IPS};
    use transport::proto::control::{
        PingRequest, SubscribeRequest, LIST_PEERS, PING, SHUTDOWN, SUBSCRIBE,
    };
    use transport::proto::encode_payload;

    require_root();
    let pair = Pair::new("tr-grp", true).unwrap();
    let group = ["--group", "nogroup"];
    let d0 = pair.start_with(0, &group).unwrap();
    let d1 = pair.start_with(1, &group).unwrap();
    let rt = runtime();
    // Root daemons listening on node 1 (failoverd, clusterd, conntrackd)
    // and node 0 (failoverd, subscribed to the lease and membership).
    let (root0, mut listeners) = rt.block_on(async {
        let mut listeners = Vec::new();
        for name in ["failoverd", "clusterd", "conntrackd"] {
            let (c, i) = connect(&d1, name).await.unwrap();
            listeners.push((c, i));
        }
        let (f0, i0) = connect(&d0, "failoverd").await.unwrap();
        f0.subscribe(LEASE).await.unwrap();
        f0.subscribe(MEMBERSHIP).await.unwrap();
        listeners.push((f0, i0));
        let (root0, _) = connect(&d0, "root").await.unwrap();
        wait_peer(&root0, 1, true, Duration::from_secs(10))
            .await
            .unwrap();
        (root0, listeners)
    });

    for name in ["clusterd", "failoverd", "conntrackd", "masterd"] {
        let out = forge_as_member(&d0, name, &[]);
        assert!(
            out.starts_with("register refused")
                && out.contains("Refused")
                && out.contains("reserved for the daemons"),
            "a group member registered as {name}: {out}"
        );
    }

    let empty: &[u8] = &[];
    let opaque = b"forged";
    let ping = encode_payload(&PingRequest { data: vec![1] }).unwrap();
    let sub = encode_payload(&SubscribeRequest { opcode: LEASE }).unwrap();
    // Services: 0 transportd, 1 clusterd, 2 failoverd, 3 conntrackd;
    // 0x0001_0100 is clusterd's heartbeat (PEER).
    let forged = [
        step("request", "1", "2", TAKE_IPS, opaque),
        step("request", "1", "2", RELEASE_IPS, opaque),
        step("event", "all", "broadcast", LEASE, opaque),
        step("event", "local", "broadcast", MEMBERSHIP, opaque),
        step("event", "1", "1", 0x0001_0100, opaque),
        step("event", "1", "3", REPLICATION, opaque),
        step("request", "local", "0", SUBSCRIBE, &sub),
        step("request", "local", "0", SHUTDOWN, empty),
        step("request", "local", "0", PING, &ping),
        step("request", "1", "0", PING, &ping),
        step("request", "1", "0", LIST_PEERS, empty),
    ];
    let out = forge_as_member(&d0, "member", &forged);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 12, "{out}");
    assert!(lines[0].starts_with("register ok"), "{out}");
    for i in [1, 2, 7, 8] {
        assert!(
            lines[i].starts_with("reply err") && lines[i].contains("Refused"),
            "step {i} was not refused: {out}"
        );
    }
    for i in [9, 10, 11] {
        assert!(
            lines[i].starts_with("reply ok"),
            "a CLI request failed: {out}"
        );
    }
    rt.block_on(async {
        for (c, incoming) in &mut listeners {
            let got = tokio::time::timeout(Duration::from_millis(300), incoming.recv()).await;
            assert!(
                got.is_err(),
                "{} received a member's forgery: {got:?}",
                c.name()
            );
        }
        let s = stats(&root0).await.unwrap();
        assert_eq!(s.get("registrations_refused"), Some(4), "{s:?}");
        assert_eq!(s.get("frames_refused"), Some(8), "{s:?}");
        assert!(s.get("uptime_ms").is_some(), "transportd stopped");
    });
    let log = d0.log_text();
    assert!(
        log.contains("local registration refused") && log.contains("uid=64000"),
        "{log}"
    );
    assert!(log.contains("frame from a local client refused"), "{log}");
    // The CLI itself, as the member.
    let out = Command::new(bins().1)
        .args(["ping", "-n", "all", "--run-dir"])
        .arg(&d0.run_dir)
        .uid(MEMBER.0)
        .gid(MEMBER.1)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ipfailover ping -n all as a member: {out:?}"
    );
}
