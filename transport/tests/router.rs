//! In-process router tests: the routing rules, subscriptions, linked routers,
//! partitions, timeouts and the common controls answered by the client library.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use transport::client::{Client, ClientError};
use transport::proto::control::{
    self, LogLevelReply, LogLevelRequest, PeerList, PingReply, PingRequest, RegisterRequest,
    ServiceList, Statistics, VersionInfo,
};
use transport::proto::service::{CLUSTERD, CONNTRACKD, EPHEMERAL_BASE, FAILOVERD, TRANSPORT};
use transport::proto::{
    encode_payload, Address, ErrorCode, HeaderRepr, Kind, Message, ALL_NODES, BROADCAST_SERVICE,
    LOCAL,
};
use transport::router::Router;

const T: Duration = Duration::from_secs(5);
const ECHO: u32 = 0x0002_0001;
const NEWS: u32 = 0x0001_0002;

/// Answers every ECHO request with its string payload, upper-cased.
fn spawn_echo(client: Client, mut incoming: transport::client::Incoming) {
    tokio::spawn(async move {
        while let Some(msg) = incoming.recv().await {
            if msg.header.kind == Kind::Request && msg.header.opcode == ECHO {
                let s: String = msg.decode_payload().unwrap();
                client.reply(&msg, &s.to_uppercase()).await.unwrap();
            } else if msg.header.kind == Kind::Request {
                client
                    .reply_error(&msg, ErrorCode::UnknownOpcode, "echo only")
                    .await
                    .unwrap();
            }
        }
    });
}

async fn recv_event(incoming: &mut transport::client::Incoming) -> Message {
    tokio::time::timeout(T, incoming.recv())
        .await
        .expect("event within 5 s")
        .expect("connection open")
}

/// Nothing queued after letting every task run.
async fn assert_nothing(incoming: &mut transport::client::Incoming) {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert!(incoming.try_recv().is_none(), "unexpected message");
}

#[tokio::test]
async fn request_reply_between_local_services() {
    let router = Router::new(3);
    let (fo, fo_in) = router.connect("failoverd").await.unwrap();
    assert_eq!((fo.pnn(), fo.service()), (3, FAILOVERD));
    spawn_echo(fo, fo_in);
    let (cli, _cli_in) = router.connect("cli").await.unwrap();
    let r: String = cli
        .request(Address::local(FAILOVERD), ECHO, "hello", T)
        .await
        .unwrap();
    assert_eq!(r, "HELLO");
    // The same by explicit pnn.
    let r: String = cli
        .request(Address::new(3, FAILOVERD), ECHO, "x", T)
        .await
        .unwrap();
    assert_eq!(r, "X");
    // An error reply from the service comes back as Remote.
    let err = cli
        .request::<_, ()>(Address::local(FAILOVERD), 0x0002_0099, &(), T)
        .await
        .unwrap_err();
    match err {
        ClientError::Remote { error, from, .. } => {
            assert_eq!(error.code, ErrorCode::UnknownOpcode);
            assert_eq!(from, Address::new(3, FAILOVERD));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn unknown_service_gets_an_error_and_events_to_nowhere_are_dropped() {
    let router = Router::new(0);
    let (cli, _in) = router.connect("cli").await.unwrap();
    let err = cli
        .request::<_, ()>(Address::local(CONNTRACKD), ECHO, &(), T)
        .await
        .unwrap_err();
    match err {
        ClientError::Remote { error, .. } => assert_eq!(error.code, ErrorCode::UnknownService),
        other => panic!("unexpected {other:?}"),
    }
    cli.event(Address::local(CONNTRACKD), NEWS, &1u8)
        .await
        .unwrap();
    let stats: Statistics = cli
        .request(Address::local(TRANSPORT), control::STATISTICS, &(), T)
        .await
        .unwrap();
    assert!(stats.get("dropped").unwrap() >= 1);
    assert!(stats.get("errors_sent").unwrap() >= 1);
}

/// `close` frees a well-known name at once although handles of the closed
/// client live on (tasks of a daemon that ended), and those handles can no
/// longer send as that service.
#[tokio::test]
async fn a_closed_client_frees_its_name_while_handles_live() {
    let router = Router::new(0);
    let (c, _c_in) = router.connect("clusterd").await.unwrap();
    let held = c.clone();
    c.close();
    drop(c);
    let mut again = None;
    for _ in 0..100 {
        if let Ok(pair) = router.connect("clusterd").await {
            again = Some(pair);
            break;
        }
        tokio::task::yield_now().await;
    }
    let (again, mut again_in) = again.expect("name free again after close");
    assert_eq!(again.service(), CLUSTERD);
    assert!(held.is_closed());
    assert!(matches!(
        held.event(Address::local(CLUSTERD), NEWS, &"old").await,
        Err(ClientError::Closed { .. })
    ));
    assert!(matches!(
        held.try_event_bytes(Address::local(CLUSTERD), NEWS, b"old"),
        Err(ClientError::Closed { .. })
    ));
    assert_nothing(&mut again_in).await;
}

#[tokio::test]
async fn ephemeral_ids_and_duplicate_well_known_names() {
    let router = Router::new(0);
    let (a, _ai) = router.connect("cli").await.unwrap();
    let (b, _bi) = router.connect("cli").await.unwrap();
    assert!(a.service() >= EPHEMERAL_BASE && b.service() >= EPHEMERAL_BASE);
    assert_ne!(a.service(), b.service());

    let (c, c_in) = router.connect("clusterd").await.unwrap();
    assert_eq!(c.service(), CLUSTERD);
    match router.connect("clusterd").await.unwrap_err() {
        ClientError::Register { error, .. } => assert_eq!(error.code, ErrorCode::Refused),
        other => panic!("unexpected {other:?}"),
    }
    // Once the first one is gone, the name is free again.
    drop(c);
    drop(c_in);
    let mut again = None;
    for _ in 0..100 {
        if let Ok(pair) = router.connect("clusterd").await {
            again = Some(pair);
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(again.expect("re-registration").0.service(), CLUSTERD);
    for bad in ["transport", ""] {
        match router.connect(bad).await.unwrap_err() {
            ClientError::Register { error, .. } => assert_eq!(error.code, ErrorCode::BadRequest),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn source_address_cannot_be_spoofed() {
    let router = Router::new(7);
    let (fo, mut fo_in) = router.connect("failoverd").await.unwrap();
    let (outgoing, mut incoming) = router.link_client().into_channels().unwrap();
    let reg = Message::with_payload(
        HeaderRepr {
            kind: Kind::Request,
            src: Address::new(LOCAL, 0),
            dst: Address::local(TRANSPORT),
            request_id: 0,
            opcode: control::REGISTER,
        },
        &RegisterRequest {
            name: "evil".into(),
        },
    )
    .unwrap();
    outgoing.send(reg).await.unwrap();
    let answer = incoming.recv().await.unwrap();
    assert_eq!(answer.header.kind, Kind::Reply);
    let evil: transport::proto::control::RegisterReply = answer.decode_payload().unwrap();
    let forged = Message::new(
        HeaderRepr {
            kind: Kind::Event,
            src: Address::new(1, CLUSTERD), // a lie
            dst: Address::local(FAILOVERD),
            request_id: 0,
            opcode: NEWS,
        },
        vec![],
    );
    outgoing.send(forged).await.unwrap();
    let got = recv_event(&mut fo_in).await;
    assert_eq!(got.header.src, Address::new(7, evil.service));
    drop(fo);
}

#[tokio::test]
async fn subscriptions_receive_broadcast_events() {
    let router = Router::new(0);
    let (sub, mut sub_in) = router.connect("conntrackd").await.unwrap();
    let (_other, mut other_in) = router.connect("failoverd").await.unwrap();
    let (pubr, _p) = router.connect("clusterd").await.unwrap();
    sub.subscribe(NEWS).await.unwrap();
    let list: ServiceList = pubr
        .request(Address::local(TRANSPORT), control::LIST_SERVICES, &(), T)
        .await
        .unwrap();
    let entry = list.services.iter().find(|s| s.id == CONNTRACKD).unwrap();
    assert_eq!(entry.name, "conntrackd");
    assert_eq!(entry.subscriptions, vec![NEWS]);

    pubr.event(Address::local(BROADCAST_SERVICE), NEWS, &42u32)
        .await
        .unwrap();
    let got = recv_event(&mut sub_in).await;
    assert_eq!(got.header.opcode, NEWS);
    assert_eq!(got.header.src, Address::new(0, CLUSTERD));
    assert_eq!(got.decode_payload::<u32>().unwrap(), 42);
    // Another opcode is not delivered; the non-subscriber gets nothing.
    pubr.event(Address::local(BROADCAST_SERVICE), NEWS + 1, &1u32)
        .await
        .unwrap();
    assert_nothing(&mut sub_in).await;
    assert_nothing(&mut other_in).await;

    sub.unsubscribe(NEWS).await.unwrap();
    pubr.event(Address::local(BROADCAST_SERVICE), NEWS, &43u32)
        .await
        .unwrap();
    assert_nothing(&mut sub_in).await;

    // A request cannot be broadcast to subscribers.
    let err = pubr
        .request::<_, ()>(Address::local(BROADCAST_SERVICE), NEWS, &(), T)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Remote { error, .. } if error.code == ErrorCode::BadRequest)
    );
}

#[tokio::test]
async fn linked_routers_route_requests_and_all_nodes_events() {
    let nodes = Router::cluster(3);
    let mut ins = Vec::new();
    for r in &nodes {
        let (c, mut i) = r.connect("conntrackd").await.unwrap();
        c.subscribe(NEWS).await.unwrap();
        ins.push((c, i.try_recv(), i));
    }
    let (fo2, fo2_in) = nodes[2].connect("failoverd").await.unwrap();
    spawn_echo(fo2, fo2_in);
    let (cli, _ci) = nodes[0].connect("cli").await.unwrap();
    let r: String = cli
        .request(Address::new(2, FAILOVERD), ECHO, "far", T)
        .await
        .unwrap();
    assert_eq!(r, "FAR");

    // To ALL_NODES and one service: every node's conntrackd, exactly once.
    cli.event(Address::new(ALL_NODES, CONNTRACKD), NEWS, &5u8)
        .await
        .unwrap();
    for (pnn, (_, _, i)) in ins.iter_mut().enumerate() {
        let got = recv_event(i).await;
        assert_eq!(got.header.src, Address::new(0, cli.service()), "node {pnn}");
        assert_eq!(got.header.dst, Address::new(ALL_NODES, CONNTRACKD));
        assert_nothing(i).await;
    }
    // To ALL_NODES and the broadcast service: every subscriber on every node.
    cli.event(Address::new(ALL_NODES, BROADCAST_SERVICE), NEWS, &6u8)
        .await
        .unwrap();
    for (_, _, i) in ins.iter_mut() {
        assert_eq!(recv_event(i).await.decode_payload::<u8>().unwrap(), 6);
        assert_nothing(i).await;
    }
    let peers: PeerList = cli
        .request(Address::local(TRANSPORT), control::LIST_PEERS, &(), T)
        .await
        .unwrap();
    assert_eq!(
        peers
            .peers
            .iter()
            .map(|p| (p.pnn, p.connected))
            .collect::<Vec<_>>(),
        vec![(1, true), (2, true)]
    );
}

#[tokio::test]
async fn partition_makes_node_unreachable_and_heals() {
    let nodes = Router::cluster(2);
    let (c1, mut c1_in) = nodes[1].connect("clusterd").await.unwrap();
    let (c0, _c0_in) = nodes[0].connect("clusterd").await.unwrap();
    Router::unlink(&nodes[0], &nodes[1]);
    let err = c0
        .request::<_, PingReply>(
            Address::new(1, CLUSTERD),
            control::PING,
            &PingRequest::default(),
            T,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Remote { error, .. } if error.code == ErrorCode::NodeUnreachable),
        "{err:?}"
    );
    // ALL_NODES during the partition reaches only the local node.
    c0.event(Address::new(ALL_NODES, CLUSTERD), NEWS, &())
        .await
        .unwrap();
    assert_nothing(&mut c1_in).await;
    let peers: PeerList = c0
        .request(Address::local(TRANSPORT), control::LIST_PEERS, &(), T)
        .await
        .unwrap();
    assert!(!peers.peers[0].connected);

    Router::link(&nodes[0], &nodes[1]);
    let pong: PingReply = c0
        .request(
            Address::new(1, CLUSTERD),
            control::PING,
            &PingRequest { data: vec![9] },
            T,
        )
        .await
        .unwrap();
    assert_eq!(pong.data, vec![9]);
    drop(c1);
}

#[tokio::test]
async fn asymmetric_cut_and_no_transit_routing() {
    let nodes = Router::cluster(2);
    let (c0, mut c0_in) = nodes[0].connect("clusterd").await.unwrap();
    let (c1, mut c1_in) = nodes[1].connect("clusterd").await.unwrap();
    Router::cut(&nodes[0], &nodes[1]); // 0 no longer reaches 1; 1 still reaches 0
    c0.event(Address::new(1, CLUSTERD), NEWS, &())
        .await
        .unwrap_err_or_ok();
    assert_nothing(&mut c1_in).await;
    c1.event(Address::new(0, CLUSTERD), NEWS, &())
        .await
        .unwrap();
    assert_eq!(recv_event(&mut c0_in).await.header.src.pnn, 1);

    // A chain 0 - 1 - 2 with no 0 - 2 link: 0 cannot reach 2 through 1.
    let a = Router::new(10);
    let b = Router::new(11);
    let c = Router::new(12);
    Router::link(&a, &b);
    Router::link(&b, &c);
    let (_cd, mut cd_in) = c.connect("clusterd").await.unwrap();
    let (ca, _ai) = a.connect("cli").await.unwrap();
    let err = ca
        .request::<_, ()>(Address::new(12, CLUSTERD), ECHO, &(), T)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Remote { error, .. } if error.code == ErrorCode::NodeUnreachable)
    );
    assert_nothing(&mut cd_in).await;
}

trait IgnoreResult {
    fn unwrap_err_or_ok(self);
}
impl<T, E> IgnoreResult for Result<T, E> {
    /// Events never fail at the sender for an unreachable node.
    fn unwrap_err_or_ok(self) {}
}

#[tokio::test(start_paused = true)]
async fn request_times_out_when_nobody_answers() {
    let router = Router::new(0);
    let (_silent, _silent_in) = router.connect("failoverd").await.unwrap();
    let (cli, _i) = router.connect("cli").await.unwrap();
    let started = tokio::time::Instant::now();
    let err = cli
        .request::<_, ()>(
            Address::local(FAILOVERD),
            ECHO,
            &(),
            Duration::from_millis(250),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Timeout { opcode: ECHO, .. }),
        "{err:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(cli.statistics().get("timeouts"), Some(1));
}

#[tokio::test]
async fn common_controls_are_answered_by_the_client_library() {
    let router = Router::new(4);
    let (fo, mut fo_in) = router.connect("failoverd").await.unwrap();
    fo.set_log_level_hook(|set| Ok(set.unwrap_or("info").to_owned()));
    let (cli, _i) = router.connect("cli").await.unwrap();
    let dst = Address::local(FAILOVERD);

    let pong: PingReply = cli
        .request(dst, control::PING, &PingRequest { data: vec![1, 2] }, T)
        .await
        .unwrap();
    assert_eq!(pong.data, vec![1, 2]);
    let v: VersionInfo = cli.request(dst, control::VERSION, &(), T).await.unwrap();
    assert_eq!(v.name, "failoverd");
    assert_eq!(v.protocol_version, transport::proto::VERSION);
    let lvl: LogLevelReply = cli
        .request(
            dst,
            control::LOG_LEVEL,
            &LogLevelRequest {
                set: Some("debug".into()),
            },
            T,
        )
        .await
        .unwrap();
    assert_eq!(lvl.level, "debug");
    let stats: Statistics = cli.request(dst, control::STATISTICS, &(), T).await.unwrap();
    assert_eq!(stats.get("controls_answered"), Some(3));

    // Service 0 answers them too, counting its clients.
    let pong: PingReply = cli
        .request(
            Address::local(TRANSPORT),
            control::PING,
            &PingRequest::default(),
            T,
        )
        .await
        .unwrap();
    assert_eq!(pong.clients, 2);

    assert!(!fo.is_shutdown_requested());
    let waiter = fo.shutdown_requested();
    cli.request::<_, ()>(dst, control::SHUTDOWN, &(), T)
        .await
        .unwrap();
    tokio::time::timeout(T, waiter).await.unwrap();
    assert!(fo.is_shutdown_requested());
    // None of that reached the daemon's incoming queue.
    assert_nothing(&mut fo_in).await;
}

#[tokio::test]
async fn router_shutdown_control() {
    let router = Router::new(0);
    let (cli, _i) = router.connect("cli").await.unwrap();
    let w = router.shutdown_requested();
    cli.request::<_, ()>(Address::local(TRANSPORT), control::SHUTDOWN, &(), T)
        .await
        .unwrap();
    tokio::time::timeout(T, w).await.unwrap();
}

/// A fake transport over a byte pipe: answers REGISTER, then closes as soon
/// as a request arrives. The pending request must fail at once with Closed.
#[tokio::test]
async fn closed_stream_fails_pending_requests_at_once() {
    let (near, far) = tokio::io::duplex(64 * 1024);
    let fake = tokio::spawn(async move {
        let (r, mut w) = tokio::io::split(far);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(transport::client::read_frames(r, tx));
        let reg = rx.recv().await.unwrap();
        assert_eq!(reg.header.opcode, control::REGISTER);
        let reply = Message::new(
            reg.header.answer(Kind::Reply),
            encode_payload(&transport::proto::control::RegisterReply {
                pnn: 5,
                service: 0x8001,
            })
            .unwrap(),
        );
        w.write_all(&reply.to_bytes().unwrap()).await.unwrap();
        let req = rx.recv().await.unwrap();
        assert_eq!(req.header.opcode, ECHO);
        assert_eq!(req.header.src, Address::new(5, 0x8001));
        w.shutdown().await.unwrap(); // EOF for the client
    });
    let (cli, mut cli_in) = Client::from_stream(near, "cli").await.unwrap();
    assert_eq!((cli.pnn(), cli.service()), (5, 0x8001));
    let err = cli
        .request::<_, ()>(
            Address::new(5, FAILOVERD),
            ECHO,
            &(),
            Duration::from_secs(3600),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Closed { .. }), "{err:?}");
    fake.await.unwrap();
    assert!(cli_in.recv().await.is_none());
    tokio::time::timeout(T, cli.closed()).await.unwrap();
    assert!(cli.is_closed());
    // Later requests fail at once too.
    let err = cli
        .request::<_, ()>(
            Address::new(5, FAILOVERD),
            ECHO,
            &(),
            Duration::from_secs(3600),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Closed { .. }), "{err:?}");
}

#[tokio::test]
async fn all_nodes_request_is_answered_by_the_node_that_has_the_service() {
    let nodes = Router::cluster(3);
    let (fo1, fo1_in) = nodes[1].connect("failoverd").await.unwrap();
    spawn_echo(fo1, fo1_in);
    let (cli, _ci) = nodes[0].connect("cli").await.unwrap();
    // Nodes 0 and 2 have no failoverd: they must not answer UnknownService first.
    let r: String = cli
        .request(Address::new(ALL_NODES, FAILOVERD), ECHO, "all", T)
        .await
        .unwrap();
    assert_eq!(r, "ALL");
}

/// The byte-stream path end to end: a client over a small duplex pipe (so
/// frames arrive in pieces) to a router, many requests in flight at once.
#[tokio::test]
async fn stream_clients_and_in_process_clients_share_a_router() {
    let router = Router::new(2);
    let (fo, fo_in) = router.connect("failoverd").await.unwrap();
    spawn_echo(fo, fo_in);
    let (near, far) = tokio::io::duplex(97);
    router.serve_stream(far);
    let (cli, _ci) = Client::from_stream(near, "cli").await.unwrap();
    assert_eq!(cli.pnn(), 2);
    assert!(cli.service() >= EPHEMERAL_BASE);
    let mut calls = Vec::new();
    for i in 0..500u32 {
        let cli = cli.clone();
        calls.push(tokio::spawn(async move {
            let s = format!("req-{i}-{}", "x".repeat(usize::try_from(i % 300).unwrap()));
            let r: String = cli
                .request(Address::local(FAILOVERD), ECHO, &s, T)
                .await
                .unwrap();
            assert_eq!(r, s.to_uppercase());
        }));
    }
    for c in calls {
        c.await.unwrap();
    }
    // The in-process side sees the stream client as a normal service.
    let list = router.list_services();
    assert!(list.services.iter().any(|s| s.name == "cli"));
    // Closing the stream client unregisters it.
    drop(cli);
    drop(_ci);
    for _ in 0..200 {
        if !router
            .list_services()
            .services
            .iter()
            .any(|s| s.name == "cli")
        {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("stream client still registered after close");
}

/// Garbage on one stream connection closes that connection only.
#[tokio::test]
async fn garbage_on_a_stream_closes_only_that_connection() {
    let router = Router::new(0);
    let (fo, fo_in) = router.connect("failoverd").await.unwrap();
    spawn_echo(fo, fo_in);
    let (near, far) = tokio::io::duplex(4096);
    router.serve_stream(far);
    let (good, _gi) = Client::from_stream(near, "good").await.unwrap();

    let (mut evil, far) = tokio::io::duplex(4096);
    router.serve_stream(far);
    evil.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n......................")
        .await
        .unwrap();
    // The router closes the evil connection: reading gives EOF.
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(T, tokio::io::AsyncReadExt::read(&mut evil, &mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);
    let r: String = good
        .request(Address::local(FAILOVERD), ECHO, "still", T)
        .await
        .unwrap();
    assert_eq!(r, "STILL");
}

/// A transport that answers with garbage: the client's pending request
/// fails at once with Closed, not after its timeout.
#[tokio::test]
async fn garbage_from_the_transport_fails_pending_requests() {
    let (near, far) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let (r, mut w) = tokio::io::split(far);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(transport::client::read_frames(r, tx));
        let reg = rx.recv().await.unwrap();
        let reply = Message::new(
            reg.header.answer(Kind::Reply),
            encode_payload(&transport::proto::control::RegisterReply {
                pnn: 0,
                service: 0x8000,
            })
            .unwrap(),
        );
        w.write_all(&reply.to_bytes().unwrap()).await.unwrap();
        let _req = rx.recv().await.unwrap();
        w.write_all(&[0xEE; 64]).await.unwrap();
        // Keep the pipe open: only the bad bytes may end the link.
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    let (cli, _i) = Client::from_stream(near, "cli").await.unwrap();
    let err = cli
        .request::<_, ()>(
            Address::local(FAILOVERD),
            ECHO,
            &(),
            Duration::from_secs(3600),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Closed { .. }), "{err:?}");
}

#[tokio::test]
async fn request_each_collects_every_node_and_oversized_payloads_are_refused() {
    let nodes = Router::cluster(3);
    let (cli, _ci) = nodes[0].connect("cli").await.unwrap();
    Router::unlink(&nodes[0], &nodes[2]);
    let dsts: Vec<Address> = (0..3).map(|p| Address::new(p, TRANSPORT)).collect();
    let answers = cli
        .request_each::<_, PingReply>(&dsts, control::PING, &PingRequest { data: vec![7] }, T)
        .await
        .unwrap();
    assert_eq!(answers.len(), 3);
    assert_eq!(answers[0].1.as_ref().unwrap().clients, 1);
    assert_eq!(answers[1].1.as_ref().unwrap().data, vec![7]);
    assert!(matches!(
        &answers[2].1,
        Err(ClientError::Remote { error, .. }) if error.code == ErrorCode::NodeUnreachable
    ));

    let big = vec![0u8; transport::proto::MAX_PAYLOAD + 1];
    let err = cli
        .request_raw(Address::local(TRANSPORT), control::PING, big, T)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Payload { .. }), "{err:?}");
    // The connection is still fine.
    let _: PingReply = cli
        .request(
            Address::local(TRANSPORT),
            control::PING,
            &PingRequest::default(),
            T,
        )
        .await
        .unwrap();
}

/// Every link pattern of a 4-node cluster (all 64 subsets of the 6 links):
/// a request reaches a node iff the direct link is up, otherwise it fails
/// with NodeUnreachable; an ALL_NODES event reaches exactly the sender's node
/// and its direct peers, once each.
#[tokio::test]
async fn routing_matches_the_link_matrix_for_every_partition() {
    let nodes = Router::cluster(4);
    let mut clients = Vec::new();
    for r in &nodes {
        let (c, i) = r.connect("clusterd").await.unwrap();
        clients.push((c, i));
    }
    let pairs: Vec<(usize, usize)> = (0..4)
        .flat_map(|a| ((a + 1)..4).map(move |b| (a, b)))
        .collect();
    for mask in 0u32..64 {
        let up = |a: usize, b: usize| {
            a == b
                || pairs
                    .iter()
                    .position(|&p| p == (a.min(b), a.max(b)))
                    .is_some_and(|i| mask & (1 << i) != 0)
        };
        for &(a, b) in &pairs {
            if up(a, b) {
                Router::link(&nodes[a], &nodes[b]);
            } else {
                Router::unlink(&nodes[a], &nodes[b]);
            }
        }
        for from in 0..4 {
            for to in 0..4 {
                let dst = Address::new(u32::try_from(to).unwrap(), TRANSPORT);
                let res = clients[from]
                    .0
                    .request::<_, PingReply>(dst, control::PING, &PingRequest::default(), T)
                    .await;
                match res {
                    Ok(_) => assert!(up(from, to), "mask {mask:#x}: {from}->{to} got through"),
                    Err(ClientError::Remote { error, .. }) => {
                        assert_eq!(error.code, ErrorCode::NodeUnreachable);
                        assert!(!up(from, to), "mask {mask:#x}: {from}->{to} refused");
                    }
                    Err(other) => panic!("mask {mask:#x}: {other:?}"),
                }
            }
            let opcode = 0x0001_0100 + mask * 4 + u32::try_from(from).unwrap();
            clients[from]
                .0
                .event(Address::new(ALL_NODES, CLUSTERD), opcode, &())
                .await
                .unwrap();
            // route() forwards to the peers before delivering locally, so
            // once the sender's node has it, every node that will get it has.
            let own = recv_event(&mut clients[from].1).await;
            assert_eq!(own.header.opcode, opcode);
            for (to, (_, incoming)) in clients.iter_mut().enumerate() {
                if up(from, to) && to != from {
                    let got = recv_event(incoming).await;
                    assert_eq!(got.header.opcode, opcode, "mask {mask:#x}: {from}->{to}");
                }
                assert!(
                    incoming.try_recv().is_none(),
                    "mask {mask:#x}: {from}->{to} duplicate or stray event"
                );
            }
        }
    }
}
