//! clusterd over a real network: each node's shell runs on a thread inside
//! its own network namespace, plugged into a bridged LAN, and carries its
//! messages over UDP (JSON-encoded; a stand-in until the transport is wired).
//! A node's death is its switch port going down plus its shell stopping; a
//! partition is nftables drop rules; the cluster lock is CTDB's real fcntl
//! helper on a file all namespaces share.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clusterd::lock::{LockSpec, FCNTL_HELPER};
use clusterd::shell::{run, Input, Link};
use clusterd::{ClusterMsg, Config, Membership, NodeFlags, NodesFile, Pnn, Timing};
use tests::netns::{require_root, wait_for, Lan, NetNs};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

const PORT: u16 = 4379;

type Seen = Arc<Mutex<Option<Membership>>>;

struct UdpLink {
    sock: Arc<UdpSocket>,
    peers: Vec<SocketAddr>,
    seen: Seen,
}

impl Link for UdpLink {
    fn send(&mut self, to: Pnn, msg: &ClusterMsg) {
        let Ok(to) = usize::try_from(to) else { return };
        if let (Some(addr), Ok(bytes)) = (self.peers.get(to), serde_json::to_vec(msg)) {
            // Best effort, like any heartbeat: a full buffer drops it.
            let _ = self.sock.try_send_to(&bytes, *addr);
        }
    }
    fn publish(&mut self, m: &Membership) {
        *self.seen.lock().unwrap() = Some(m.clone());
    }
}

fn addr(i: usize) -> String {
    format!("192.0.2.{}", i + 1)
}

struct Node {
    ns: Arc<NetNs>,
    port: String,
    seen: Seen,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Cluster {
    lan: Lan,
    nodes: Vec<Node>,
}

fn start(tag: &str, n: usize, cfg: Config, lock: Option<LockSpec>) -> Cluster {
    require_root();
    let lan = Lan::new(&format!("{tag}sw")).unwrap();
    let text: String = (0..n).map(|i| format!("{}\n", addr(i))).collect();
    let file = NodesFile::parse(Path::new("nodes"), &text).unwrap();
    let peers: Vec<SocketAddr> = (0..n)
        .map(|i| format!("{}:{PORT}", addr(i)).parse().unwrap())
        .collect();
    let mut nodes = Vec::new();
    for i in 0..n {
        let ns = Arc::new(NetNs::new(&format!("{tag}{i}")).unwrap());
        let port = lan.attach(&ns, "eth0").unwrap();
        ns.ip(&["addr", "add", &format!("{}/24", addr(i)), "dev", "eth0"])
            .unwrap();
        let seen: Seen = Arc::new(Mutex::new(None));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (ns2, seen2, file2, peers2, lock2) = (
            ns.clone(),
            seen.clone(),
            file.clone(),
            peers.clone(),
            lock.clone(),
        );
        let thread = std::thread::spawn(move || {
            ns2.block_on(move || async move {
                let sock = Arc::new(UdpSocket::bind(peers2[i]).await.unwrap());
                let (tx, rx) = mpsc::channel::<Input>(1024);
                let recv_sock = sock.clone();
                let recv = tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let Ok((len, _)) = recv_sock.recv_from(&mut buf).await else {
                            break;
                        };
                        if let Ok(msg) = serde_json::from_slice::<ClusterMsg>(&buf[..len]) {
                            if tx.send(Input::Msg(msg)).await.is_err() {
                                break;
                            }
                        }
                    }
                });
                let link = UdpLink {
                    sock,
                    peers: peers2,
                    seen: seen2,
                };
                let pnn = Pnn::try_from(i).unwrap();
                run(cfg, &file2, pnn, lock2, rx, link, async {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
                recv.abort();
                // Let the lock task kill its helper before the runtime ends.
                tokio::time::sleep(Duration::from_millis(50)).await;
            })
            .unwrap();
        });
        nodes.push(Node {
            ns,
            port,
            seen,
            stop: Some(stop_tx),
            thread: Some(thread),
        });
    }
    Cluster { lan, nodes }
}

impl Cluster {
    fn seen(&self, i: usize) -> Option<Membership> {
        self.nodes[i].seen.lock().unwrap().clone()
    }

    fn wait(
        &self,
        what: &str,
        limit: Duration,
        i: usize,
        pred: impl Fn(&Membership) -> bool,
    ) -> Duration {
        let start = Instant::now();
        wait_for(what, limit, Duration::from_millis(1), || {
            self.seen(i).filter(|m| pred(m)).map(|_| ())
        })
        .unwrap();
        start.elapsed()
    }

    /// Pulls the node's cable and stops its clusterd.
    fn kill(&mut self, i: usize) {
        self.lan.set_port(&self.nodes[i].port, false).unwrap();
        self.stop(i);
    }

    fn stop(&mut self, i: usize) {
        if let Some(s) = self.nodes[i].stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.nodes[i].thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i);
        }
    }
}

fn nft(ns: &NetNs, args: &[&str]) {
    ns.exec_ok("nft", args).unwrap();
}

/// Drops all traffic between `ns` and the given addresses, both ways.
fn isolate(ns: &NetNs, from: &[String]) {
    nft(ns, &["add", "table", "inet", "ipftest"]);
    for (chain, hook, dir) in [("in", "input", "saddr"), ("out", "output", "daddr")] {
        nft(
            ns,
            &[
                "add", "chain", "inet", "ipftest", chain, "{", "type", "filter", "hook", hook,
                "priority", "0", ";", "}",
            ],
        );
        for a in from {
            nft(
                ns,
                &[
                    "add", "rule", "inet", "ipftest", chain, "ip", dir, a, "drop",
                ],
            );
        }
    }
}

#[test]
fn clusterd_dead_node_is_disconnected_within_dead_after() {
    let cfg = Config::default();
    let t = cfg.timing;
    let mut c = start("cdd", 3, cfg, None);
    for i in 0..3 {
        c.wait("cluster formed", Duration::from_secs(10), i, |m| {
            m.leader == Some(0) && m.lease_ok
        });
    }
    let start = Instant::now();
    c.kill(2);
    c.wait("node 2 DISCONNECTED", Duration::from_secs(5), 1, |m| {
        m.flags(2)
            .is_some_and(|f| f.contains(NodeFlags::DISCONNECTED))
    });
    let took = start.elapsed();
    eprintln!(
        "node 2 DISCONNECTED on node 1 after {took:?} (dead_after {:?})",
        t.dead_after
    );
    assert!(
        took <= t.dead_after + Duration::from_millis(300),
        "took {took:?}"
    );
    c.wait("node 2 reassignable", Duration::from_secs(5), 0, |m| {
        m.reassignable == vec![2]
    });
}

#[test]
fn clusterd_nftables_partition_only_majority_leads() {
    let cfg = Config {
        timing: Timing::fast(),
        ..Config::default()
    };
    let c = start("cdp", 3, cfg, None);
    for i in 0..3 {
        c.wait("cluster formed", Duration::from_secs(10), i, |m| {
            m.leader == Some(0) && m.lease_ok
        });
    }
    // Cut node 0 (the leader) off from 1 and 2.
    isolate(&c.nodes[0].ns, &[addr(1), addr(2)]);
    c.wait("1 and 2 elect node 1", Duration::from_secs(5), 2, |m| {
        m.leader == Some(1) && m.lease_ok
    });
    c.wait("node 0 loses its lease", Duration::from_secs(5), 0, |m| {
        !m.lease_ok && m.leader.is_none()
    });
    c.wait(
        "node 0's IPs reassignable",
        Duration::from_secs(5),
        1,
        |m| m.reassignable.contains(&0),
    );
    let m0 = c.seen(0).unwrap();
    assert!(m0.flags(1).unwrap().contains(NodeFlags::DISCONNECTED));
}

#[test]
fn clusterd_fcntl_lock_moves_when_its_holder_dies() {
    assert!(
        Path::new(FCNTL_HELPER).exists(),
        "needs CTDB's helper {FCNTL_HELPER}"
    );
    let dir = std::env::temp_dir().join(format!("clusterd-netns-lock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = LockSpec::parse(dir.join("lock").to_str().unwrap()).unwrap();
    let cfg = Config {
        timing: Timing::fast(),
        ..Config::default()
    };
    let mut c = start("cdl", 2, cfg, Some(spec));
    c.wait(
        "node 0 leads with the lock",
        Duration::from_secs(10),
        1,
        |m| m.leader == Some(0) && m.lease_ok,
    );
    let start = Instant::now();
    c.kill(0);
    c.wait("node 1 takes the lock", Duration::from_secs(10), 1, |m| {
        m.leader == Some(1) && m.lease_ok
    });
    eprintln!(
        "lock moved to node 1 {:?} after its holder died",
        start.elapsed()
    );
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // The index is within the slice: q is in [0, 1].
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// Benchmark (run with `cargo test --release -p tests --test clusterd_netns
/// -- --ignored --nocapture`): time from a node's death (its switch port
/// down, then its clusterd stopped) until both survivors publish it
/// DISCONNECTED, over 20 trials per profile, beside dead_after.
#[test]
#[ignore = "benchmark: run explicitly"]
fn clusterd_bench_death_to_membership() {
    use tests::bench::Figure;
    for (name, timing) in [("fast", Timing::fast()), ("default", Timing::default())] {
        let cfg = Config {
            timing,
            ..Config::default()
        };
        let mut times = Vec::new();
        for trial in 0..20 {
            let mut c = start(&format!("cb{trial}"), 3, cfg, None);
            for i in 0..3 {
                c.wait("cluster formed", Duration::from_secs(10), i, |m| {
                    m.leader == Some(0) && m.lease_ok
                });
            }
            // Random phase against the heartbeat schedule.
            std::thread::sleep(timing.interval * (trial % 7) / 7);
            let start = Instant::now();
            c.lan.set_port(&c.nodes[2].port, false).unwrap();
            let stopper = c.nodes[2].stop.take();
            let joiner = c.nodes[2].thread.take();
            let bg = std::thread::spawn(move || {
                if let Some(s) = stopper {
                    let _ = s.send(());
                }
                if let Some(t) = joiner {
                    t.join().unwrap();
                }
            });
            let gone = |m: &Membership| {
                m.flags(2)
                    .is_some_and(|f| f.contains(NodeFlags::DISCONNECTED))
            };
            wait_for(
                "both survivors see node 2 gone",
                Duration::from_secs(5),
                Duration::from_micros(100),
                || {
                    (c.seen(0).is_some_and(|m| gone(&m)) && c.seen(1).is_some_and(|m| gone(&m)))
                        .then_some(())
                },
            )
            .unwrap();
            times.push(start.elapsed().as_secs_f64() * 1000.0);
            bg.join().unwrap();
        }
        times.sort_by(f64::total_cmp);
        let dead = timing.dead_after.as_secs_f64() * 1000.0;
        Figure::with_baseline(
            "cluster",
            &format!("death_to_membership_p50_{name}"),
            percentile(&times, 0.5),
            "ms",
            dead,
        )
        .print();
        Figure::with_baseline(
            "cluster",
            &format!("death_to_membership_p99_{name}"),
            percentile(&times, 0.99),
            "ms",
            dead,
        )
        .print();
    }
}
