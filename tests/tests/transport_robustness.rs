//! Bad local input closes only the offending connection: garbage, a bad
//! magic/version/kind/flags/reserved field, an oversized length, a frame
//! truncated by EOF, or a first frame that is not a registration. Other
//! clients keep working and transportd never dies.

mod transport_support;

use std::time::Duration;

use tests::netns::{require_root, NetNs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use transport::proto::control::{PingReply, PingRequest, PING};
use transport::proto::service::TRANSPORT;
use transport::proto::{encode_frame, encode_payload, Address, HeaderRepr, Kind};
use transport_support::{connect, runtime, start, stats, Scratch, TIMEOUT};

fn valid_frame() -> Vec<u8> {
    let h = HeaderRepr {
        kind: Kind::Request,
        src: Address::new(0, 0),
        dst: Address::local(TRANSPORT),
        request_id: 1,
        opcode: PING,
    };
    let mut f = Vec::new();
    encode_frame(
        &h,
        &encode_payload(&PingRequest::default()).unwrap(),
        &mut f,
    )
    .unwrap();
    f
}

/// Each case: a name and the bytes a bad client sends (then it waits).
fn bad_inputs() -> Vec<(&'static str, Vec<u8>, bool)> {
    let mut magic = valid_frame();
    magic[0] = b'X';
    let mut version = valid_frame();
    version[4] = 9;
    let mut kind = valid_frame();
    kind[5] = 77;
    let mut flags = valid_frame();
    flags[7] = 1;
    let mut reserved = valid_frame();
    reserved[39] = 1;
    let mut oversized = valid_frame();
    oversized[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
    let truncated = valid_frame()[..30].to_vec();
    let garbage: Vec<u8> = (0..10_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    // (name, bytes, close our write side afterwards)
    vec![
        ("garbage", garbage, false),
        ("bad magic", magic, false),
        ("bad version", version, false),
        ("unknown kind", kind, false),
        ("non-zero flags", flags, false),
        ("non-zero reserved", reserved, false),
        ("oversized length", oversized, false),
        ("truncated by EOF", truncated, true),
        // A valid frame, but not a registration: refused too.
        ("ping before register", valid_frame(), false),
    ]
}

#[test]
fn bad_clients_are_disconnected_while_others_keep_working() {
    require_root();
    let ns = NetNs::new("tr-bad").unwrap();
    let scratch = Scratch::new("tr-bad");
    let d = start(&ns, &scratch, "bad", &[]).unwrap();
    runtime().block_on(async {
        let (good, _in) = connect(&d, "clusterd").await.unwrap();
        for (name, bytes, eof) in bad_inputs() {
            let mut s = UnixStream::connect(d.socket()).await.unwrap();
            let _ = s.write_all(&bytes).await;
            if eof {
                let _ = s.shutdown().await;
            }
            let mut buf = vec![0u8; 4096];
            // transportd closes the connection: read ends with EOF (or a reset),
            // possibly after an error reply.
            let closed = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            assert!(closed.is_ok(), "{name}: connection not closed");
            // The good client is unaffected.
            let pong: PingReply = good
                .request(
                    Address::local(TRANSPORT),
                    PING,
                    &PingRequest {
                        data: name.as_bytes().to_vec(),
                    },
                    TIMEOUT,
                )
                .await
                .unwrap_or_else(|e| panic!("{name}: good client broken: {e}"));
            assert_eq!(pong.data, name.as_bytes());
        }
        let s = stats(&good).await.unwrap();
        assert_eq!(s.get("clients"), Some(1), "{s:?}");
        assert!(s.get("bad_frames").unwrap() >= 9, "{s:?}");
    });
    let log = d.log_text();
    for reason in [
        "bad magic",
        "unsupported protocol version",
        "unknown message kind",
        "exceeds the limit",
        "truncated frame",
        "not a REGISTER request",
    ] {
        assert!(log.contains(reason), "log does not name {reason:?}:\n{log}");
    }
}

/// Sends SIGSTOP or SIGCONT to a process this test started.
fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
    nix::sys::signal::kill(pid, sig).unwrap();
}

/// Continues a stopped process when dropped (also when the test fails).
struct Continue(u32);

impl Drop for Continue {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.0).unwrap_or(0));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
    }
}

/// A node whose transportd stops (SIGSTOP: its kernel still ACKs TCP, so
/// only the transport-level keepalive can tell) is declared unreachable
/// within the idle time-out: a request to it then fails at once with
/// `NodeUnreachable` instead of waiting its whole time-out. After SIGCONT
/// the link comes back.
#[test]
fn stopped_peer_becomes_unreachable_and_reconnects_after_continue() {
    use transport::client::ClientError;
    use transport::proto::ErrorCode;
    use transport::transportd::IDLE_TIMEOUT;
    use transport_support::{wait_peer, Pair};
    require_root();
    let pair = Pair::new("tr-stop", true).unwrap();
    let d0 = pair.start(0).unwrap();
    let d1 = pair.start(1).unwrap();
    let rt = runtime();
    rt.block_on(async {
        let (c0, _i0) = connect(&d0, "cli").await.unwrap();
        wait_peer(&c0, 1, true, Duration::from_secs(10))
            .await
            .unwrap();
        let ping = |c: &transport::client::Client| {
            let c = c.clone();
            async move {
                c.request::<_, PingReply>(
                    Address::new(1, TRANSPORT),
                    PING,
                    &PingRequest::default(),
                    Duration::from_millis(500),
                )
                .await
            }
        };
        ping(&c0).await.expect("node 1 answers before the stop");
        signal(d1.pid, nix::sys::signal::Signal::SIGSTOP);
        let _cont = Continue(d1.pid);
        let stopped = std::time::Instant::now();
        let bound = IDLE_TIMEOUT + Duration::from_secs(2);
        let unreachable_after = loop {
            match ping(&c0).await {
                Err(ClientError::Remote { error, .. })
                    if error.code == ErrorCode::NodeUnreachable =>
                {
                    break stopped.elapsed();
                }
                Ok(_) => panic!("a stopped node answered"),
                Err(_) => {} // timed out: the link still looks up
            }
            assert!(
                stopped.elapsed() < bound,
                "still not unreachable after {:?}:\n{}",
                stopped.elapsed(),
                d0.log_text()
            );
        };
        eprintln!("stopped peer unreachable after {unreachable_after:?}");
        assert!(
            d0.log_text().contains("nothing received for"),
            "{}",
            d0.log_text()
        );
        signal(d1.pid, nix::sys::signal::Signal::SIGCONT);
        wait_peer(&c0, 1, true, Duration::from_secs(15))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}\n{}", d0.log_text(), d1.log_text()));
        ping(&c0).await.expect("node 1 answers after SIGCONT");
    });
}

/// A local client whose service stops reading is disconnected by
/// transportd once its queue is over the limit (the client library no
/// longer buffers without bound, so the backlog reaches transportd); the
/// sender and transportd are unaffected. The client learns of the
/// disconnection when its service reads again.
#[test]
fn local_client_that_stops_reading_is_disconnected() {
    require_root();
    let ns = NetNs::new("tr-slow").unwrap();
    let scratch = Scratch::new("tr-slow");
    let d = start(&ns, &scratch, "slow", &[]).unwrap();
    runtime().block_on(async {
        let (sink, mut unread) = connect(&d, "failoverd").await.unwrap();
        let (sender, _i) = connect(&d, "cli").await.unwrap();
        let payload = vec![0u8; 1024 * 1024];
        let dst = Address::local(transport::proto::service::FAILOVERD);
        let mut sent = 0usize;
        let clients = |s: &transport::proto::control::Statistics| s.get("clients");
        loop {
            sender
                .event_bytes(dst, 0x0002_0999, &payload)
                .await
                .unwrap();
            sent += 1;
            if sent % 8 == 0 && clients(&stats(&sender).await.unwrap()) == Some(1) {
                break;
            }
            assert!(
                sent < 600,
                "600 MiB sent and the reader is still connected:\n{}",
                d.log_text()
            );
        }
        eprintln!("disconnected after {sent} MiB sent");
        // 32 MiB in the client library + 128 MiB in transportd + sockets.
        assert!(sent >= 160, "disconnected too early: {sent} MiB");
        // The sink reads again: it drains what it holds and sees the end.
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            let mut n = 0usize;
            while unread.recv().await.is_some() {
                n += 1;
                assert!(n < 1000, "more messages than were sent");
            }
            n
        })
        .await
        .expect("the sink's Incoming ends");
        assert!(drained >= 30, "only {drained} messages were held");
        tokio::time::timeout(Duration::from_secs(5), sink.closed())
            .await
            .expect("the sink's client sees the connection closed");
        // The sender still works.
        let s = stats(&sender).await.unwrap();
        assert_eq!(clients(&s), Some(1), "{s:?}");
    });
    assert!(d.log_text().contains("does not read"), "{}", d.log_text());
}

/// At most MAX_HANDSHAKES connections from node addresses may sit in their
/// handshake; the next one is closed at once, while the first ones are
/// still held (until their handshake time-out).
#[test]
fn peer_handshakes_beyond_the_cap_are_closed_at_once() {
    use std::io::Read;
    use transport::transportd::MAX_HANDSHAKES;
    use transport_support::Pair;
    require_root();
    let pair = Pair::new("tr-flood", true).unwrap();
    let d0 = pair.start(0).unwrap();
    // Node 1's address (namespace b) opens silent connections to node 0.
    let outcome = pair
        .b
        .run(|| -> Result<(Duration, bool), String> {
            let target = std::net::SocketAddr::from(([192, 0, 2, 1], transport_support::PORT));
            let start = std::time::Instant::now();
            let mut held = Vec::new();
            while held.len() < MAX_HANDSHAKES {
                match std::net::TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
                    Ok(c) => held.push(c),
                    Err(e) if start.elapsed() > Duration::from_secs(10) => {
                        return Err(format!("cannot connect: {e}"))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
            // Let transportd accept them all before the extra one.
            std::thread::sleep(Duration::from_millis(300));
            let mut extra = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(1))
                .map_err(|e| e.to_string())?;
            let t = std::time::Instant::now();
            extra
                .set_read_timeout(Some(Duration::from_secs(3)))
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 16];
            let closed_after = match extra.read(&mut buf) {
                Ok(0) => t.elapsed(),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => t.elapsed(),
                other => return Err(format!("extra connection not closed: {other:?}")),
            };
            // The first connection is still open (its handshake may wait).
            held[0]
                .set_read_timeout(Some(Duration::from_millis(200)))
                .map_err(|e| e.to_string())?;
            let first_open = matches!(
                held[0].read(&mut buf),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut
            );
            Ok((closed_after, first_open))
        })
        .unwrap();
    let (after, first_open) = outcome.unwrap_or_else(|e| panic!("{e}\n{}", d0.log_text()));
    assert!(
        after < Duration::from_secs(2),
        "closed only after {after:?}"
    );
    assert!(first_open, "the capped connections were closed too");
    assert!(
        d0.log_text().contains("too many handshakes"),
        "{}",
        d0.log_text()
    );
}

/// Finding 8 of docs/RELIABILITY.md: transportd run as a task (masterd's
/// single-process model), ended by a SHUTDOWN control or by aborting its
/// task, and started again in the same process, is back with its peers at
/// once. Node 1's links are accepted (node 0 dials it): before the fix, the
/// stopped transportd's accepted link kept running, node 0 kept sending it
/// keepalives and never dialled again, and the new transportd had no link to
/// node 0 for as long as that lasted (30 s in chaos runs).
#[test]
fn in_process_transportd_restarted_relinks_with_its_peers_at_once() {
    use transport::client::Client;
    use transport::nodes::Nodes;
    use transport::proto::control::SHUTDOWN;
    use transport::transportd::{self, key::ClusterKey, peercred::Policy};
    use transport_support::{wait_peer, Pair, PORT};
    require_root();
    let pair = Pair::new("tr-rst", true).unwrap();
    let d0 = pair.start(0).unwrap();
    let run_dir = pair.scratch.path("node1");
    let nodes = Nodes::load(&pair.scratch.path("nodes")).unwrap();
    let key = ClusterKey::load(&pair.scratch.path("key1")).unwrap();
    let outcome = pair
        .b
        .block_on(move || async move {
            let config = move || transportd::Settings {
                run_dir: run_dir.clone(),
                nodes: nodes.clone(),
                pnn: Some(1),
                port: PORT,
                key: Some(key.clone()),
                policy: Policy::new(None).expect("no group"),
                log_level: None,
            };
            let start = || async {
                let d = transportd::Daemon::bind(config())
                    .await
                    .map_err(|e| format!("bind: {e}"))?;
                let socket = d.socket().to_path_buf();
                let task = tokio::spawn(d.run(std::future::pending()));
                Ok::<_, String>((task, socket))
            };
            // Node 1 can reach node 0's transportd through the link.
            let linked = |c: Client, limit: Duration| async move {
                wait_peer(&c, 0, true, limit)
                    .await
                    .map_err(|e| e.to_string())?;
                c.request::<_, PingReply>(
                    Address::new(0, TRANSPORT),
                    PING,
                    &PingRequest::default(),
                    TIMEOUT,
                )
                .await
                .map_err(|e| format!("ping node 0: {e}"))?;
                Ok::<_, String>(())
            };
            let (mut task, socket) = start().await?;
            let (c, _in) = Client::connect_unix(&socket, "cli")
                .await
                .map_err(|e| e.to_string())?;
            linked(c.clone(), Duration::from_secs(10)).await?;
            let mut figures = Vec::new();
            for how in ["SHUTDOWN control", "task aborted"] {
                if how == "task aborted" {
                    task.abort();
                    let _ = task.await;
                } else {
                    let (c, _in) = Client::connect_unix(&socket, "cli")
                        .await
                        .map_err(|e| e.to_string())?;
                    // The reply may be lost as transportd stops.
                    let _ = c
                        .request::<(), ()>(Address::local(TRANSPORT), SHUTDOWN, &(), TIMEOUT)
                        .await;
                    tokio::time::timeout(TIMEOUT, task)
                        .await
                        .map_err(|_| "transportd did not stop on SHUTDOWN".to_owned())?
                        .map_err(|e| e.to_string())?;
                }
                let stopped = std::time::Instant::now();
                let (again, socket) = start().await?;
                task = again;
                let (c, _in) = Client::connect_unix(&socket, "cli")
                    .await
                    .map_err(|e| e.to_string())?;
                // A restarted transportd process is back within about a
                // second (node 0's redial backoff starts at 50 ms); the old
                // link surviving meant no link at all.
                linked(c, Duration::from_secs(5))
                    .await
                    .map_err(|e| format!("after {how}: {e}"))?;
                figures.push((how, stopped.elapsed()));
            }
            task.abort();
            Ok::<_, String>(figures)
        })
        .unwrap();
    match outcome {
        Ok(figures) => {
            for (how, t) in figures {
                eprintln!(
                    "in-process transportd ended by {how}: linked with node 0 again after {t:?}"
                );
            }
        }
        Err(e) => panic!("{e}\nnode 0:\n{}", d0.log_text()),
    }
}
