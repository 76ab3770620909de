//! The daemon shell (`conntrackd::daemon::run`) over the in-process router:
//! several nodes in one process, no root, no kernel (no nftables table;
//! the sock_diag dumps of addresses that are not local come back empty).
//! Connections are registered with ADD_CONNECTIONS, as a file server or
//! `ipfailover addtickle` would.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use conntrackd::daemon::{self, Hosted, Settings, HOSTED};
use conntrackd::engine;
use transport::client::Client;
use transport::msg::conntrack::{
    get_connections, AddressCount, GetConnections, TrackedConnection, ADD_CONNECTIONS,
    GET_CONNECTIONS, GET_COUNTS, PAGE_CONNECTIONS, REMOVE_CONNECTIONS,
};
use transport::proto::service::CONNTRACKD;
use transport::proto::{Address, BROADCAST_SERVICE, LOCAL};
use transport::router::Router;

const T: Duration = Duration::from_secs(2);

fn public(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 50 + i))
}

fn conn(i: u8, client: u16) -> TrackedConnection {
    TrackedConnection {
        client: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), client),
        server: SocketAddr::new(public(i), 445),
    }
}

fn options(hosted: Vec<IpAddr>) -> Settings {
    Settings {
        engine: engine::Config {
            sync_interval: Duration::from_millis(200),
            grace: Duration::from_secs(60),
        },
        scan_interval: Duration::from_secs(3600),
        nft_table: None,
        announce_interval: Duration::from_millis(100),
        incarnation: 1,
        initial_hosted: hosted,
        nodes: None,
        max_connections: conntrackd::engine::DEFAULT_MAX_CONNECTIONS,
    }
}

/// Starts conntrackd on `r`; returns the stop switch.
async fn start(
    r: &Router,
    hosted: Vec<IpAddr>,
    incarnation: u32,
) -> tokio::sync::oneshot::Sender<()> {
    let (client, incoming) = r.connect("conntrackd").await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut o = options(hosted);
    o.incarnation = incarnation;
    tokio::spawn(async move {
        let stop = async {
            let _ = rx.await;
        };
        daemon::run(o, client, incoming, stop).await.unwrap();
    });
    tx
}

async fn query(c: &Client, address: IpAddr) -> Option<Vec<TrackedConnection>> {
    c.request(
        Address::local(CONNTRACKD),
        GET_CONNECTIONS,
        &GetConnections {
            address,
            port: None,
        },
        T,
    )
    .await
    .ok()
}

/// Waits (at most 10 s) until every client sees exactly `want` for `address`.
async fn wait_all(cs: &[&Client], address: IpAddr, want: &[TrackedConnection]) {
    let mut want = want.to_vec();
    want.sort_unstable();
    let start = Instant::now();
    loop {
        let mut all = true;
        let mut seen = Vec::new();
        for c in cs {
            let got = query(c, address).await;
            all &= got.as_deref() == Some(&want[..]);
            seen.push(got);
        }
        if all {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "want {want:?} for {address}, nodes hold {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn add(c: &Client, list: &[TrackedConnection]) -> Result<(), String> {
    c.request::<_, ()>(
        Address::local(CONNTRACKD),
        ADD_CONNECTIONS,
        &list.to_vec(),
        T,
    )
    .await
    .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_replicate_follow_hosted_and_survive_partitions_and_joins() {
    let routers = Router::cluster(4);
    let mut stops = Vec::new();
    for (i, r) in routers.iter().take(3).enumerate() {
        let i = u8::try_from(i).unwrap();
        stops.push(start(r, vec![public(i)], 1).await);
    }
    let mut cs = Vec::new();
    for r in &routers {
        cs.push(r.connect("test").await.unwrap().0);
    }
    let three: Vec<&Client> = cs.iter().take(3).collect();

    // Registered on node 0, seen everywhere; refused for an address node 0
    // does not host.
    let a = [conn(0, 40000), conn(0, 40001)];
    add(&cs[0], &a).await.unwrap();
    wait_all(&three, public(0), &a).await;
    let err = add(&cs[0], &[conn(1, 40002)]).await.unwrap_err();
    assert!(err.contains("not hosted"), "{err}");

    // failoverd's HOSTED moves public(3) to node 1: registration works there.
    let before = add(&cs[1], &[conn(3, 1)]).await;
    assert!(before.is_err());
    // Only node 1's failoverd may say what node 1 hosts.
    let (failoverd1, _in) = routers[1].connect("failoverd").await.unwrap();
    failoverd1
        .event(
            Address::new(LOCAL, BROADCAST_SERVICE),
            HOSTED,
            &Hosted {
                addresses: vec![public(1), public(3)],
            },
        )
        .await
        .unwrap();
    let start_t = Instant::now();
    while add(&cs[1], &[conn(3, 1)]).await.is_err() {
        assert!(
            start_t.elapsed() < Duration::from_secs(10),
            "HOSTED not followed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_all(&three, public(3), &[conn(3, 1)]).await;

    // Partition node 2 away; changes on node 0 reach it after healing.
    Router::unlink(&routers[0], &routers[2]);
    Router::unlink(&routers[1], &routers[2]);
    cs[0]
        .request::<_, ()>(
            Address::local(CONNTRACKD),
            REMOVE_CONNECTIONS,
            &vec![a[0]],
            T,
        )
        .await
        .unwrap();
    add(&cs[0], &[conn(0, 50000)]).await.unwrap();
    let after = [a[1], conn(0, 50000)];
    wait_all(&three[..2], public(0), &after).await;
    // Past the peer timeout (3 announcements of 100 ms).
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Node 2 was cut off: it has not seen the changes.
    assert_eq!(query(&cs[2], public(0)).await.as_deref(), Some(&a[..]));
    Router::link(&routers[0], &routers[2]);
    Router::link(&routers[1], &routers[2]);
    wait_all(&three, public(0), &after).await;

    // A node that joins late receives the whole table.
    stops.push(start(&routers[3], vec![], 1).await);
    let all: Vec<&Client> = cs.iter().collect();
    wait_all(&all, public(0), &after).await;
    wait_all(&all, public(3), &[conn(3, 1)]).await;
    let counts: Vec<AddressCount> = cs[3]
        .request(Address::local(CONNTRACKD), GET_COUNTS, &(), T)
        .await
        .unwrap();
    assert_eq!(
        counts,
        vec![
            AddressCount {
                address: public(0),
                connections: 2
            },
            AddressCount {
                address: public(3),
                connections: 1
            },
        ]
    );

    // Node 0 restarts (new incarnation): it keeps no registration of its
    // own, so its new first report (an empty dump, as a full sync) replaces
    // its old view everywhere — registrations are the registrant's to
    // repeat, as smbd does with CTDB after a restart.
    drop(stops.remove(0));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _stop0 = start(&routers[0], vec![public(0)], 2).await;
    wait_all(&all, public(0), &[]).await;
    wait_all(&all, public(3), &[conn(3, 1)]).await;
    drop(stops);
}

/// HOSTED is believed only from this node's own failoverd: a local client
/// that is not failoverd, and another node's failoverd, are ignored (each
/// forgery is seen arriving by a subscriber on node 0, so without the check
/// node 0 would host the address and accept the registration).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosted_is_taken_only_from_this_nodes_failoverd() {
    let routers = Router::cluster(2);
    let _stops = [
        start(&routers[0], vec![], 1).await,
        start(&routers[1], vec![], 1).await,
    ];
    let (c0, _i) = routers[0].connect("test").await.unwrap();
    let (watch, mut watched) = routers[0].connect("watcher").await.unwrap();
    watch.subscribe(HOSTED).await.unwrap();
    let hosted = Hosted {
        addresses: vec![public(0)],
    };
    let (forger, _if) = routers[0].connect("forger").await.unwrap();
    let (other_failoverd, _io) = routers[1].connect("failoverd").await.unwrap();
    let forgeries = [
        (&forger, Address::new(LOCAL, BROADCAST_SERVICE), 0),
        (
            &other_failoverd,
            Address::new(transport::proto::ALL_NODES, BROADCAST_SERVICE),
            1,
        ),
    ];
    for (client, dst, from_pnn) in forgeries {
        client.event(dst, HOSTED, &hosted).await.unwrap();
        // The forgery reaches node 0.
        let seen = tokio::time::timeout(T, async {
            loop {
                let m = watched.recv().await.expect("watcher connected");
                if m.header.opcode == HOSTED {
                    return m.header.src;
                }
            }
        })
        .await
        .expect("the forged HOSTED reaches node 0");
        assert_eq!(seen.pnn, from_pnn);
        // For a while, node 0 still does not host the address.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let err = add(&c0, &[conn(0, 40000)]).await.unwrap_err();
            assert!(err.contains("not hosted"), "{err}");
        }
    }
    // The real one is followed.
    let (failoverd0, _i0) = routers[0].connect("failoverd").await.unwrap();
    failoverd0
        .event(Address::new(LOCAL, BROADCAST_SERVICE), HOSTED, &hosted)
        .await
        .unwrap();
    let start_t = Instant::now();
    while add(&c0, &[conn(0, 40000)]).await.is_err() {
        assert!(
            start_t.elapsed() < T * 5,
            "HOSTED of failoverd not followed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An address with more connections than one 4 MiB message holds (300,000
/// IPv4 connections: about 4.7 MiB as one list) is served whole, page by
/// page, on the hosting node and on another; the one-message request
/// refuses it with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_with_more_than_one_message_of_connections_is_served_whole() {
    const N: usize = 300_000;
    let routers = Router::cluster(2);
    let _stops = [
        start(&routers[0], vec![public(0)], 1).await,
        start(&routers[1], vec![], 1).await,
    ];
    let (c0, _i0) = routers[0].connect("test").await.unwrap();
    let (c1, _i1) = routers[1].connect("test").await.unwrap();
    let all: Vec<TrackedConnection> = (0..N)
        .map(|i| {
            let i = u32::try_from(i).unwrap();
            let [_, a, b, _] = i.to_be_bytes();
            TrackedConnection {
                client: SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::new(198, 51, a, b)),
                    u16::try_from(1024 + i % 60_000).unwrap(),
                ),
                server: SocketAddr::new(public(0), 445),
            }
        })
        .collect();
    for chunk in all.chunks(50_000) {
        c0.request::<_, ()>(
            Address::local(CONNTRACKD),
            ADD_CONNECTIONS,
            &chunk.to_vec(),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    }
    let mut want = all.clone();
    want.sort_unstable();
    want.dedup();
    assert_eq!(want.len(), N);
    const { assert!(N > 4 * PAGE_CONNECTIONS) };
    let q = GetConnections {
        address: public(0),
        port: None,
    };
    let got = get_connections(&c0, Address::local(CONNTRACKD), q, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(got == want, "node 0: {} of {N}", got.len());
    // Replicated to node 1 and served whole there too.
    let start_t = Instant::now();
    loop {
        let got = get_connections(&c1, Address::local(CONNTRACKD), q, Duration::from_secs(30))
            .await
            .unwrap();
        if got == want {
            break;
        }
        assert!(
            start_t.elapsed() < Duration::from_secs(30),
            "node 1 holds {} of {N}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // With a port filter, nothing is lost either.
    let none = get_connections(
        &c0,
        Address::local(CONNTRACKD),
        GetConnections {
            address: public(0),
            port: Some(2049),
        },
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert!(none.is_empty());
    // The single-message request cannot carry it, and says so.
    let err = c0
        .request::<_, Vec<TrackedConnection>>(
            Address::local(CONNTRACKD),
            GET_CONNECTIONS,
            &q,
            Duration::from_secs(30),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("GET_CONNECTIONS_PAGE"), "{err}");
}
