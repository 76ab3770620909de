//! `bench cluster`: how fast clusterd notices a dead node, and what
//! heartbeating costs.
//!
//! 1. **Detection.** A 3-node [`TestCluster`] runs transportd and clusterd
//!    (release binaries) in each node namespace; the bench subscribes to
//!    MEMBERSHIP on both survivors (nodes 0 and 1). Each trial pulls node 2's
//!    cable and SIGKILLs its processes, then measures the time until *both*
//!    survivors have published a membership with node 2 DISCONNECTED; node 2
//!    is then restarted and the cluster reconverges. p50/p99 over the
//!    trials, for the default and the fast profile, each beside its
//!    configured `dead_after`.
//! 2. **Cost.** 32 clusterd instances (the real daemon code, with real
//!    transport clients) over 32 linked in-process routers, fast profile, on
//!    one thread: process CPU time per second of wall time, whole cluster and
//!    per node, and heap allocations per heartbeat (whole path: encode, route,
//!    decode, state machine). Also the CPU of one real clusterd process and
//!    its transportd in the 3-node namespace cluster at the fast profile.
//! 3. **Allocations over the real transport.** Two clusterd daemons in this
//!    process, each registered with a real `transportd` process in its node
//!    namespace (Unix socket, Noise-encrypted TCP between the namespaces),
//!    10 ms heartbeats (dead_after 500 ms, so a loaded machine does not make
//!    the membership flap: a change allocates, and the figure is about the
//!    steady heartbeat path; the changes seen are printed)
//!    heap allocations in this process per event sent
//!    (every thread of this process is counted: clusterd, its client
//!    library's reader, writer and dispatcher), beside the in-process
//!    router figure.
//!
//! Usage: `bench cluster [--trials N]` (default 20).

use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clusterd::daemon::{self, Settings};
use clusterd::membership::Config;
use clusterd::{Membership, NodeFlags, NodesFile};
use transport::client::Client;
use transport::msg::cluster::{GET_MEMBERSHIP, MEMBERSHIP};
use transport::proto::service::CLUSTERD;
use transport::proto::Address;
use transport::router::Router;

use crate::bench::{percentile, Figure};
use crate::cluster::{bin_path, TestCluster};
use crate::netns::wait_for;

const POLL: Duration = Duration::from_millis(20);

/// `bench cluster` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Detection trials per profile (p50/p99 over them).
    #[arg(long, default_value_t = 20)]
    pub trials: usize,
}

/// Runs the `cluster` scenario.
///
/// # Errors
///
/// A namespace, process or measurement that fails.
pub fn run(args: &ClusterArgs) -> Result<()> {
    let trials = args.trials;
    eprintln!(
        "machine: {} cores, kernel {}",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        kernel()
    );
    let in_process = cpu_in_process(32, Duration::from_secs(10))?;
    allocations_real_transport(Duration::from_secs(5), in_process)?;
    for (name, toml, dead_after) in [
        ("default", "profile = \"default\"", 500.0),
        ("fast", "profile = \"fast\"", 30.0),
    ] {
        detection(name, toml, dead_after, trials)?;
    }
    Ok(())
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// CPU seconds (user + system) of a process, from `/proc/PID/stat`.
fn cpu_seconds(pid: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may contain blanks) start at ')'.
    let rest = stat.rsplit_once(')').context("bad stat line")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is the state (field 3); utime and stime are fields 14 and 15.
    let utime: f64 = f.get(11).context("no utime")?.parse()?;
    let stime: f64 = f.get(12).context("no stime")?.parse()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100);
    // Clock ticks per second are a small number.
    #[allow(clippy::cast_precision_loss)]
    Ok((utime + stime) / hz as f64)
}

fn nodes_text(n: usize) -> String {
    (0..n).map(|i| format!("192.0.2.{}\n", 10 + i)).collect()
}

/// 32 (or `n`) clusterd instances over linked in-process routers; returns
/// the allocations per heartbeat.
fn cpu_in_process(n: u32, window: Duration) -> Result<f64> {
    let nodes = NodesFile::parse(Path::new("nodes"), &nodes_text(usize::try_from(n)?))?;
    let timing = daemon::timing(Duration::from_millis(10), Duration::from_millis(30));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (cpu, allocs, converged) = rt.block_on(async {
        let routers = Router::cluster(n);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for r in &routers {
            let (client, incoming) = r.connect("clusterd").await?;
            let settings = Settings {
                member: Config {
                    timing,
                    lock: false,
                    can_lead: true,
                },
                nodes: nodes.clone(),
                pnn: r.pnn(),
                lock: None,
                health: None,
                socket: "unused".into(),
                log_level: "off".into(),
                state_file: None,
            };
            let mut stop = stop_rx.clone();
            tasks.push(tokio::spawn(daemon::run(
                settings,
                client,
                incoming,
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            )));
        }
        let (probe, _probe_in) = routers[0].connect("probe").await?;
        // Converge first (every node sees every other OK and has a lease).
        let start = Instant::now();
        let mut converged = false;
        while start.elapsed() < Duration::from_secs(20) {
            let m: Result<Membership, _> = probe
                .request(
                    Address::local(CLUSTERD),
                    GET_MEMBERSHIP,
                    &(),
                    Duration::from_secs(2),
                )
                .await;
            if let Ok(m) = m {
                if m.lease_ok && m.nodes.iter().all(|x| x.flags.is_ok()) {
                    converged = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let cpu0 = cpu_seconds("self")?;
        let a0 = alloccount::allocations();
        let t0 = Instant::now();
        tokio::time::sleep(window).await;
        let wall = t0.elapsed().as_secs_f64();
        let cpu = (cpu_seconds("self")? - cpu0) / wall;
        let allocs = alloccount::allocations() - a0;
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = t.await;
        }
        anyhow::Ok((cpu, allocs, converged))
    })?;
    if !converged {
        eprintln!("warning: the 32-node in-process cluster did not converge in 20 s");
    }
    let nf = f64::from(n);
    // Heartbeats sent in the window: every node to every other, each 10 ms.
    let heartbeats = nf * (nf - 1.0) * window.as_secs_f64() / 0.010;
    Figure::plain("cluster", "cpu_32_nodes_fast_total", cpu * 100.0, "%core").print();
    Figure::plain(
        "cluster",
        "cpu_per_node_fast_32_nodes",
        cpu * 100.0 / nf,
        "%core",
    )
    .print();
    // Counts are far below 2^52.
    #[allow(clippy::cast_precision_loss)]
    let per = allocs as f64 / heartbeats;
    Figure::plain(
        "cluster",
        "allocations_per_heartbeat_in_process",
        per,
        "alloc",
    )
    .print();
    Ok(per)
}

/// Starts node `i`'s transportd (real binary, in its namespace); returns
/// its pid once its socket exists.
fn start_transportd(c: &TestCluster, i: usize) -> Result<u32> {
    let node = &c.nodes[i];
    std::fs::write(node.config_dir.join("nodes"), nodes_text(c.nodes.len()))?;
    let sock = node.run_dir.join("transport.sock");
    let _ = std::fs::remove_file(&sock);
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(c.scratch.join(format!("node{i}-transportd.log")))?;
    let mut t = node.ns.command(&path(&bin_path("transportd")?));
    t.args(["--run-dir", &path(&node.run_dir)])
        .args(["--nodes", &path(&node.config_dir.join("nodes"))])
        .args(["--key", &path(&node.config_dir.join("cluster.key"))])
        .args(["--pnn", &i.to_string()])
        .args(["--log-level", "warn"])
        .stdout(Stdio::null())
        .stderr(log);
    let pid = node.spawn(t)?;
    wait_for("transportd socket", Duration::from_secs(10), POLL, || {
        sock.exists().then_some(())
    })?;
    Ok(pid)
}

fn events_sent(client: &Client) -> u64 {
    client
        .statistics()
        .counters
        .iter()
        .find(|(n, _)| n == "events_sent")
        .map_or(0, |(_, v)| *v)
}

/// Two in-process clusterds over two real transportd processes: heap
/// allocations of this process per event sent (heartbeats, plus the
/// once-a-second membership republish), over `window` once converged.
fn allocations_real_transport(window: Duration, in_process: f64) -> Result<()> {
    let c = TestCluster::new("bcz", 2)?;
    for i in 0..2 {
        start_transportd(&c, i)?;
    }
    let nodes = NodesFile::parse(Path::new("nodes"), &nodes_text(2))?;
    let timing = daemon::timing(Duration::from_millis(10), Duration::from_millis(500));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (client_tx, client_rx) = mpsc::channel::<Client>();
    let mut threads = Vec::new();
    for i in 0..2u32 {
        let settings = Settings {
            member: Config {
                timing,
                lock: false,
                can_lead: true,
            },
            nodes: nodes.clone(),
            pnn: i,
            lock: None,
            health: None,
            socket: c.nodes[usize::try_from(i)?].run_dir.join("transport.sock"),
            log_level: "off".into(),
            state_file: None,
        };
        let client_tx = client_tx.clone();
        let mut stop = stop_rx.clone();
        threads.push(std::thread::spawn(move || -> Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let (client, incoming) =
                    daemon::connect(&settings.socket, Duration::from_secs(5)).await?;
                let _ = client_tx.send(client.clone());
                daemon::run(settings, client, incoming, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await?;
                anyhow::Ok(())
            })
        }));
    }
    let clients: Vec<Client> = (0..2)
        .map(|_| client_rx.recv_timeout(Duration::from_secs(10)))
        .collect::<Result<_, _>>()
        .context("clusterd did not connect to transportd")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    wait_for(
        "a converged membership",
        Duration::from_secs(20),
        POLL,
        || {
            c.nodes
                .iter()
                .all(|n| {
                    rt.block_on(get(&n.run_dir.join("transport.sock")))
                        .is_some_and(|m| m.lease_ok && m.nodes.iter().all(|x| x.flags.is_ok()))
                })
                .then_some(())
        },
    )?;
    // Buffers grow, and tokio's channel blocks get recycled (the sender
    // task's channel carries a lease update every quarter lease), during
    // the first seconds.
    std::thread::sleep(Duration::from_secs(6));
    let generations = || -> Vec<Option<u64>> {
        c.nodes
            .iter()
            .map(|n| {
                rt.block_on(get(&n.run_dir.join("transport.sock")))
                    .map(|m| m.generation)
            })
            .collect()
    };
    let g0 = generations();
    let sent0: u64 = clients.iter().map(events_sent).sum();
    let a0 = alloccount::allocations();
    std::thread::sleep(window);
    let allocs = alloccount::allocations() - a0;
    let sent = clients.iter().map(events_sent).sum::<u64>() - sent0;
    let g1 = generations();
    let _ = stop_tx.send(true);
    drop(clients);
    for t in threads {
        match t.join() {
            Ok(r) => r?,
            Err(_) => bail!("a clusterd thread panicked"),
        }
    }
    // Counts are far below 2^52.
    #[allow(clippy::cast_precision_loss)]
    let per = allocs as f64 / sent.max(1) as f64;
    Figure::with_baseline(
        "cluster",
        "allocations_per_heartbeat_real_transport",
        per,
        "alloc",
        in_process,
    )
    .print();
    eprintln!(
        "real transport, 2 nodes, 10 ms heartbeats: {allocs} allocations in this process for {sent} events sent in {window:?}; generations {g0:?} -> {g1:?} (a membership change allocates); the in-process router path: {in_process:.2} per heartbeat"
    );
    Ok(())
}

/// Writes node `i`'s configuration and starts its transportd and clusterd;
/// returns their pids.
fn start_node(c: &TestCluster, i: usize, cluster_toml: &str) -> Result<(u32, u32)> {
    let node = &c.nodes[i];
    let toml = format!(
        "[transport]\nrun_dir = \"{}\"\n\n[cluster]\n{cluster_toml}\n\n[logging]\nlevel = \"warn\"\n",
        node.run_dir.display()
    );
    std::fs::write(node.config_dir.join("ipfailover.toml"), toml)?;
    // TestCluster's nodes file starts with a `#` line, which CTDB's format
    // reads as a deleted node 0: write one where line N is node N.
    std::fs::write(node.config_dir.join("nodes"), nodes_text(c.nodes.len()))?;
    let sock = node.run_dir.join("transport.sock");
    let _ = std::fs::remove_file(&sock);
    let log = |name: &str| -> Result<std::fs::File> {
        Ok(std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(c.scratch.join(format!("node{i}-{name}.log")))?)
    };
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let mut t = node.ns.command(&path(&bin_path("transportd")?));
    t.args(["--run-dir", &path(&node.run_dir)])
        .args(["--nodes", &path(&node.config_dir.join("nodes"))])
        .args(["--key", &path(&node.config_dir.join("cluster.key"))])
        .args(["--pnn", &i.to_string()])
        .args(["--log-level", "warn"])
        .stdout(Stdio::null())
        .stderr(log("transportd")?);
    let tpid = node.spawn(t)?;
    wait_for("transportd socket", Duration::from_secs(10), POLL, || {
        sock.exists().then_some(())
    })?;
    let mut d = node.ns.command(&path(&bin_path("clusterd")?));
    d.args(["--config-dir", &path(&node.config_dir)])
        .stdout(Stdio::null())
        .stderr(log("clusterd")?);
    let cpid = node.spawn(d)?;
    Ok((tpid, cpid))
}

async fn get(sock: &Path) -> Option<Membership> {
    let (client, _incoming) = Client::connect_unix(sock, "bench").await.ok()?;
    client
        .request::<_, Membership>(
            Address::local(CLUSTERD),
            GET_MEMBERSHIP,
            &(),
            Duration::from_secs(2),
        )
        .await
        .ok()
}

/// Waits until all nodes hold a lease under one leader and see each other.
fn wait_converged(c: &TestCluster, rt: &tokio::runtime::Runtime, limit: Duration) -> Result<()> {
    wait_for("a converged membership", limit, POLL, || {
        for n in &c.nodes {
            let m = rt.block_on(get(&n.run_dir.join("transport.sock")))?;
            if !m.lease_ok || m.leader.is_none() || !m.nodes.iter().all(|x| x.flags.is_ok()) {
                return None;
            }
        }
        Some(())
    })
}

/// A MEMBERSHIP event seen by the subscriber of node `from`.
struct Seen {
    from: usize,
    at: Instant,
    m: Membership,
}

/// Subscribes to MEMBERSHIP on each given node; forwards events to `tx`
/// from a thread of its own until every receiver is gone.
fn subscribe(socks: Vec<(usize, std::path::PathBuf)>, tx: mpsc::Sender<Seen>) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            let mut tasks = Vec::new();
            for (from, sock) in socks {
                let tx = tx.clone();
                tasks.push(tokio::spawn(async move {
                    let Ok((client, mut incoming)) = Client::connect_unix(&sock, "bench-sub").await
                    else {
                        return;
                    };
                    if client.subscribe(MEMBERSHIP).await.is_err() {
                        return;
                    }
                    while let Some(msg) = incoming.recv().await {
                        let at = Instant::now();
                        if msg.header.opcode != MEMBERSHIP {
                            continue;
                        }
                        if let Ok(m) = msg.decode_payload::<Membership>() {
                            if tx.send(Seen { from, at, m }).is_err() {
                                return;
                            }
                        }
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        });
    });
}

fn detection(profile: &str, toml: &str, dead_after_ms: f64, trials: usize) -> Result<()> {
    let c = TestCluster::new(&format!("bc{}", &profile[..1]), 3)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut pids = Vec::new();
    for i in 0..3 {
        pids.push(start_node(&c, i, toml)?);
    }
    wait_converged(&c, &rt, Duration::from_secs(30))?;
    if profile == "fast" {
        // The real processes' cost with two peers, idle cluster.
        let window = Duration::from_secs(5);
        let (t0, c0) = (
            cpu_seconds(&pids[0].0.to_string())?,
            cpu_seconds(&pids[0].1.to_string())?,
        );
        std::thread::sleep(window);
        let (t1, c1) = (
            cpu_seconds(&pids[0].0.to_string())?,
            cpu_seconds(&pids[0].1.to_string())?,
        );
        let w = window.as_secs_f64();
        Figure::plain(
            "cluster",
            "cpu_clusterd_process_fast_3_nodes",
            (c1 - c0) / w * 100.0,
            "%core",
        )
        .print();
        Figure::plain(
            "cluster",
            "cpu_transportd_process_fast_3_nodes",
            (t1 - t0) / w * 100.0,
            "%core",
        )
        .print();
    }
    let (tx, rx) = mpsc::channel();
    subscribe(
        vec![
            (0, c.nodes[0].run_dir.join("transport.sock")),
            (1, c.nodes[1].run_dir.join("transport.sock")),
        ],
        tx,
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut samples = Vec::new();
    let mut missed = 0;
    for trial in 0..trials {
        wait_converged(&c, &rt, Duration::from_secs(30))
            .with_context(|| format!("{profile} trial {trial}: cluster did not reconverge"))?;
        while rx.try_recv().is_ok() {}
        let t0 = Instant::now();
        c.power_off(2)?;
        let mut seen: [Option<Duration>; 2] = [None, None];
        let deadline = t0 + Duration::from_secs(10);
        while seen.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(ev) = rx.recv_timeout(left) else { break };
            let dead =
                ev.m.flags(2)
                    .is_some_and(|f| f.contains(NodeFlags::DISCONNECTED));
            if dead && ev.from < 2 && seen[ev.from].is_none() {
                seen[ev.from] = Some(ev.at.saturating_duration_since(t0));
            }
        }
        match seen {
            [Some(a), Some(b)] => samples.push(a.max(b).as_secs_f64() * 1000.0),
            _ => missed += 1,
        }
        c.power_on(2)?;
        start_node(&c, 2, toml)?;
    }
    if samples.is_empty() {
        bail!("{profile}: no trial saw the dead node");
    }
    eprintln!(
        "{profile}: {} trials, {missed} missed; samples (ms): {:?}",
        samples.len(),
        samples
            .iter()
            .map(|s| (s * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    );
    let p50 = percentile(&mut samples, 50.0);
    let p99 = percentile(&mut samples, 99.0);
    Figure::with_baseline(
        "cluster",
        &format!("death_to_membership_p50_{profile}"),
        p50,
        "ms",
        dead_after_ms,
    )
    .print();
    Figure::with_baseline(
        "cluster",
        &format!("death_to_membership_p99_{profile}"),
        p99,
        "ms",
        dead_after_ms,
    )
    .print();
    // Killing is done by TestCluster's drop (every process it started).
    drop(c);
    Ok(())
}
