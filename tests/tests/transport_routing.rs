//! Two transportd processes in two network namespaces joined by a veth route
//! requests, replies and broadcasts between services on both nodes; unknown
//! services and nodes get error replies; a killed peer is reconnected after
//! its restart.

mod transport_support;

use std::time::Duration;

use tests::netns::require_root;
use transport::client::{Client, ClientError, Incoming};
use transport::proto::service::{BROADCAST_SERVICE, CLUSTERD, CONNTRACKD};
use transport::proto::{Address, ErrorCode, Kind, ALL_NODES};
use transport_support::{connect, runtime, wait_peer, Pair, TIMEOUT};

const ECHO: u32 = 0x0001_0001;
const NEWS: u32 = 0x0001_0005;

/// Answers every request with its own payload, prefixed by the server's pnn.
fn spawn_echo(client: Client, mut incoming: Incoming) {
    tokio::spawn(async move {
        while let Some(msg) = incoming.recv().await {
            if msg.header.kind == Kind::Request {
                let text: String = msg.decode_payload().unwrap_or_default();
                let answer = format!("{}:{text}", client.pnn());
                let _ = client.reply(&msg, &answer).await;
            }
        }
    });
}

async fn next_event(incoming: &mut Incoming) -> Option<(u32, String)> {
    let msg = tokio::time::timeout(Duration::from_secs(5), incoming.recv())
        .await
        .ok()??;
    assert_eq!(msg.header.kind, Kind::Event);
    Some((msg.header.src.pnn, msg.decode_payload().ok()?))
}

#[test]
fn requests_and_broadcasts_cross_nodes_and_errors_come_back() {
    require_root();
    let pair = Pair::new("tr-route", true).unwrap();
    let d0 = pair.start(0).unwrap();
    let d1 = pair.start(1).unwrap();
    runtime().block_on(async move {
        let (c0, i0) = connect(&d0, "clusterd").await.unwrap();
        let (c1, mut i1) = connect(&d1, "cli").await.unwrap();
        assert_eq!((c0.pnn(), c0.service()), (0, CLUSTERD));
        assert_eq!(c1.pnn(), 1);
        wait_peer(&c1, 0, true, Duration::from_secs(10)).await.unwrap();
        let (cluster1, mut cluster1_in) = connect(&d1, "clusterd").await.unwrap();
        c0.subscribe(NEWS).await.unwrap();
        cluster1.subscribe(NEWS).await.unwrap();
        spawn_echo(c0.clone(), i0);

        // Request/reply across the link, and locally via LOCAL.
        let got: String = c1
            .request(Address::new(0, CLUSTERD), ECHO, "hello", TIMEOUT)
            .await
            .unwrap();
        assert_eq!(got, "0:hello");
        // A 300 KB request and reply span several Noise chunks each way.
        let big = "x".repeat(300_000);
        let got: String = c1
            .request(Address::new(0, CLUSTERD), ECHO, &big, TIMEOUT)
            .await
            .unwrap();
        assert_eq!(got.len(), 300_002);
        assert!(got.starts_with("0:xxx"));

        // A broadcast from node 1 reaches the subscribers of both nodes,
        // but not the non-subscribed sender.
        let (c0_events, mut c0_events_in) = connect(&d0, "conntrackd").await.unwrap();
        assert_eq!(c0_events.service(), CONNTRACKD);
        c0_events.subscribe(NEWS).await.unwrap();
        c1.event(Address::new(ALL_NODES, BROADCAST_SERVICE), NEWS, "news")
            .await
            .unwrap();
        assert_eq!(
            next_event(&mut cluster1_in).await,
            Some((1, "news".to_owned()))
        );
        assert_eq!(
            next_event(&mut c0_events_in).await,
            Some((1, "news".to_owned()))
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(200), i1.recv())
                .await
                .is_err(),
            "the sender got its own broadcast without subscribing"
        );

        // Unknown service on the remote node, and an unknown node.
        let err = c1
            .request::<_, String>(Address::new(0, 0x0042), ECHO, "x", TIMEOUT)
            .await
            .unwrap_err();
        match err {
            ClientError::Remote { error, from, .. } => {
                assert_eq!(error.code, ErrorCode::UnknownService);
                assert_eq!(from.pnn, 0, "the error comes from node 0");
            }
            other => panic!("expected UnknownService, got {other}"),
        }
        let err = c1
            .request::<_, String>(Address::new(7, CLUSTERD), ECHO, "x", TIMEOUT)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ClientError::Remote { error, .. } if error.code == ErrorCode::NodeUnreachable),
            "{err}"
        );
        // `ipfailover ping -n all` sees both nodes.
        let (_, ipfailover) = transport_support::bins();
        let out = std::process::Command::new(ipfailover)
            .args(["ping", "-n", "all", "--run-dir"])
            .arg(d1.socket().parent().unwrap())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text} {out:?}");
        assert!(text.contains("response from 0 time="), "{text}");
        assert!(text.contains("response from 1 time="), "{text}");
    });
}

#[test]
fn killed_peer_is_reconnected_after_restart() {
    require_root();
    let pair = Pair::new("tr-restart", true).unwrap();
    let d0 = pair.start(0).unwrap();
    let d1 = pair.start(1).unwrap();
    let rt = runtime();
    let c0 = rt.block_on(async {
        let (c0, _i0) = connect(&d0, "cli").await.unwrap();
        wait_peer(&c0, 1, true, Duration::from_secs(10))
            .await
            .unwrap();
        c0
    });
    assert!(pair.b.kill(d1.pid), "node 1 was not started by this test");
    rt.block_on(async {
        wait_peer(&c0, 1, false, Duration::from_secs(10))
            .await
            .unwrap();
    });
    let d1 = pair.start(1).unwrap();
    rt.block_on(async {
        wait_peer(&c0, 1, true, Duration::from_secs(15))
            .await
            .unwrap();
        let (c1, i1) = connect(&d1, "clusterd").await.unwrap();
        spawn_echo(c1, i1);
        let got: String = c0
            .request(Address::new(1, CLUSTERD), ECHO, "again", TIMEOUT)
            .await
            .unwrap();
        assert_eq!(got, "1:again");
    });
}
