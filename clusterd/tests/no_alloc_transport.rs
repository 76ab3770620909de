//! Rule as a test, end to end: two clusterd daemons heartbeating every
//! 10 ms through two real transportds (TCP over loopback, Noise, the Unix
//! socket, the real client library) allocate nothing in steady state.
//!
//! A counting global allocator counts only on the threads that run clusterd
//! (each on its own current-thread runtime, so the client library's reader,
//! writer and dispatcher tasks run there too); the transportds run on
//! another runtime and are not counted (transportd has its own rule:
//! `transport/src/transportd/alloc.rs`). After a warm-up (cluster formed,
//! buffers grown, channel blocks recycled), the count over three seconds of
//! heartbeating (and of the lease updates and membership republishes that
//! go with it) must be 0.
//!
//! A membership change does allocate (the new membership is cloned,
//! encoded, logged); on a loaded machine the fast profile may flap. So an
//! untracked subscriber watches the published generations, and a window in
//! which a generation changed is measured again (up to 5 times).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clusterd::daemon::{self, Settings};
use clusterd::{Config, NodesFile};
use transport::client::Client;
use transport::msg::cluster::{Membership, MEMBERSHIP};
use transport::transportd::{self, key::ClusterKey, peercred::Policy};

// Counts only on the threads that called `alloccount::track_thread(true)`.
#[global_allocator]
static GLOBAL: alloccount::Counting = alloccount::Counting;

const ADDRS: [Ipv4Addr; 2] = [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)];

fn run_dir(base: &Path, pnn: usize) -> PathBuf {
    base.join(format!("node{pnn}"))
}

fn events_sent(client: &Client) -> u64 {
    client
        .statistics()
        .counters
        .iter()
        .find(|(n, _)| n == "events_sent")
        .map_or(0, |(_, v)| *v)
}

#[test]
fn heartbeats_through_real_transportds_allocate_nothing() {
    let base = std::env::temp_dir().join(format!("ipf-noalloc-{}", std::process::id()));
    let port = 20000 + u16::try_from(std::process::id() % 20000).unwrap();
    let text: String = ADDRS.iter().map(|a| format!("{a}\n")).collect();
    let nodes_file = NodesFile::parse(Path::new("nodes"), &text).unwrap();
    let tnodes =
        transport::nodes::Nodes::from_addrs(ADDRS.iter().map(|a| Some(IpAddr::V4(*a))).collect());

    // The transportds, untracked, on a runtime of their own.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // The transportds stop after the clusterds: with one signal for all, a
    // clusterd could see its transportd close before its own stop (a
    // TransportClosed error at the end, seen once in CI).
    let (tstop_tx, tstop_rx) = tokio::sync::watch::channel(false);
    let mut daemons = Vec::new();
    for pnn in 0..2u32 {
        let cfg = transportd::Settings {
            run_dir: run_dir(&base, pnn as usize),
            nodes: tnodes.clone(),
            pnn: Some(pnn),
            port,
            key: Some(ClusterKey::from_bytes([7; 32])),
            policy: Policy::new(None).unwrap(),
            log_level: None,
        };
        let d = rt.block_on(transportd::Daemon::bind(cfg)).unwrap();
        let mut stop = tstop_rx.clone();
        daemons.push(rt.spawn(d.run(async move {
            let _ = stop.wait_for(|s| *s).await;
        })));
    }

    // The clusterds, each on its own tracked thread.
    let (client_tx, client_rx) = std::sync::mpsc::channel::<Client>();
    let mut threads = Vec::new();
    for pnn in 0..2u32 {
        let settings = Settings {
            member: Config {
                // Heartbeats every 10 ms (as the fast profile) but a
                // tolerant dead_after: a debug build on a loaded machine
                // must not flap (a change allocates, see above).
                timing: daemon::timing(Duration::from_millis(10), Duration::from_millis(500)),
                lock: false,
                can_lead: true,
            },
            nodes: nodes_file.clone(),
            pnn,
            lock: None,
            health: None,
            socket: transportd::socket_path(&run_dir(&base, pnn as usize)),
            log_level: "warn".into(),
            state_file: None,
        };
        let client_tx = client_tx.clone();
        let mut stop = stop_rx.clone();
        threads.push(std::thread::spawn(move || {
            alloccount::track_thread(true);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (client, incoming) = daemon::connect(&settings.socket, Duration::from_secs(5))
                    .await
                    .unwrap();
                client_tx.send(client.clone()).unwrap();
                let res = daemon::run(settings, client, incoming, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
                alloccount::track_thread(false);
                res.unwrap();
            });
        }));
    }
    let clients: Vec<Client> = (0..2).map(|_| client_rx.recv().unwrap()).collect();

    // An untracked subscriber per node: the latest published generation.
    let generations: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let mut watchers = Vec::new();
    for pnn in 0..2usize {
        let socket = transportd::socket_path(&run_dir(&base, pnn));
        let gens = Arc::clone(&generations);
        let (client, mut incoming) = rt
            .block_on(Client::connect_unix(&socket, "test-watch"))
            .unwrap();
        rt.block_on(client.subscribe(MEMBERSHIP)).unwrap();
        watchers.push(rt.spawn(async move {
            while let Some(msg) = incoming.recv().await {
                if msg.header.opcode == MEMBERSHIP {
                    if let Ok(m) = msg.decode_payload::<Membership>() {
                        gens[pnn].store(m.generation, Ordering::SeqCst);
                    }
                }
            }
            drop(client);
        }));
    }
    let gens = || [0, 1].map(|i| generations[i].load(Ordering::SeqCst));

    // Warm-up: the cluster forms (membership published), buffers grow, and
    // the channels' block lists reach their steady size (tokio's mpsc
    // allocates a block of 32 slots until the first ones are recycled: the
    // sender task's channel carries a lease update every quarter lease, so
    // that takes a few seconds).
    std::thread::sleep(Duration::from_secs(6));
    let mut measured = None;
    for _ in 0..5 {
        let g0 = gens();
        let before = alloccount::tracked_allocations();
        let sent0: u64 = clients.iter().map(events_sent).sum();
        std::thread::sleep(Duration::from_secs(3));
        let allocs = alloccount::tracked_allocations() - before;
        let sent = clients.iter().map(events_sent).sum::<u64>() - sent0;
        // The republish (every second) shows any change made in the window.
        std::thread::sleep(Duration::from_millis(1100));
        let g1 = gens();
        if g0 == g1 && g0 != [0, 0] {
            measured = Some((allocs, sent));
            break;
        }
        eprintln!("membership changed during the window ({g0:?} -> {g1:?}): measuring again");
    }

    stop_tx.send_replace(true);
    for t in threads {
        t.join().unwrap();
    }
    tstop_tx.send_replace(true);
    for d in daemons {
        rt.block_on(d).unwrap();
    }
    for w in watchers {
        w.abort();
    }
    let _ = std::fs::remove_dir_all(&base);
    let (allocs, sent) = measured.expect("a window without membership change");

    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    let per = allocs as f64 / sent.max(1) as f64;
    eprintln!("{allocs} allocations for {sent} events sent in 3 s ({per:.3} per event)");
    // Two nodes at 10 ms: about 600 heartbeats in 3 s (half of that on a
    // loaded machine still proves they flowed).
    assert!(sent >= 300, "heartbeats flowed: {sent}");
    assert_eq!(allocs, 0, "allocations while heartbeating ({sent} events)");
}
