//! `bench memory [--connections N] [--addresses N] [--model multi|single|both]`:
//! resident memory of one
//! node's daemons, idle in a running 3-node cluster with N public addresses
//! (default 64) and N tracked connections (default 10,000, registered with
//! conntrackd's ADD_CONNECTIONS on node 0), in the multi-process model (sum
//! over masterd and its daemons) and the single-process model (masterd's one
//! process). RSS and PSS come from `/proc/PID/smaps_rollup`.
//!
//! The baseline is keepalived's RSS (all its processes, one VRRP instance
//! with the same N addresses, idle in a namespace) when keepalived is
//! installed; otherwise the figures have no baseline.
//!
//! masterd runs the daemons that are built (release profile); the figures'
//! stderr lines say which. Connections are only registered when conntrackd
//! runs; the `connections_tracked` figure says how many it accepted.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use transport::client::Client;
use transport::msg::conntrack::{TrackedConnection, ADD_CONNECTIONS};
use transport::msg::master::MasterStatus;
use transport::proto::service::CONNTRACKD;
use transport::proto::Address;

use crate::bench::Figure;
use crate::cluster::{bin_path, Node, TestCluster};

const BENCH: &str = "memory";

/// `bench memory` options.
#[derive(Debug, Clone, clap::Args)]
pub struct MemoryArgs {
    /// Connections registered with node 0's conntrackd.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Public addresses (1 to 250).
    #[arg(long, default_value_t = 64, value_parser = super::count_in(1..=250))]
    pub addresses: usize,
    /// The process model(s) measured.
    #[arg(long, value_enum, default_value_t = Model::Both)]
    pub model: Model,
}

/// `bench memory --model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Model {
    /// masterd and its daemons, one process each.
    Multi,
    /// masterd's one process.
    Single,
    /// Multi, then single.
    Both,
}

impl MemoryArgs {
    fn multi(&self) -> bool {
        self.model != Model::Single
    }

    fn single(&self) -> bool {
        self.model != Model::Multi
    }
}

/// Public address `i` (203.0.113.1 onwards).
fn public(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 113, u8::try_from(i + 1).unwrap_or(u8::MAX))
}

/// RSS and PSS of a process, in kB.
fn rss_pss(pid: u32) -> Option<(u64, u64)> {
    rollup(pid).map(|r| (r.rss, r.pss))
}

/// The figures of `/proc/PID/smaps_rollup` the bench reports, in kB.
struct Rollup {
    rss: u64,
    pss: u64,
    /// Anonymous (heap, stacks): the part a process does not share.
    anon: u64,
}

fn rollup(pid: u32) -> Option<Rollup> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some(Rollup {
        rss: field("Rss:")?,
        pss: field("Pss:")?,
        anon: field("Anonymous:")?,
    })
}

/// Runs the `memory` scenario.
///
/// # Errors
///
/// When the cluster cannot be built, masterd does not become ready, or a
/// process cannot be measured.
pub fn run(a: &MemoryArgs) -> Result<()> {
    let masterd = bin_path("masterd")?;
    let multi: Vec<&str> = masterd::daemons::ALL
        .iter()
        .filter(|d| bin_path(d.name).is_ok())
        .map(|d| d.name)
        .collect();
    let single: Vec<&str> = multi
        .iter()
        .copied()
        .filter(|d| masterd::single::entry(d).is_some())
        .collect();
    eprintln!(
        "memory: 3 nodes, {} public addresses, {} connections; multi-process daemons: {}; single-process daemons: {}",
        a.addresses,
        a.connections,
        multi.join(","),
        single.join(",")
    );

    let keepalived = keepalived_rss(a.addresses)?;
    if let Some((rss, pss)) = keepalived {
        Figure::plain(BENCH, "keepalived_rss", kb_to_mb(rss), "MB").print();
        Figure::plain(BENCH, "keepalived_pss", kb_to_mb(pss), "MB").print();
    } else {
        eprintln!("memory: keepalived not installed: no baseline");
    }
    let figure = |metric: &str, kb: u64, base: Option<u64>| match base {
        Some(b) => Figure::with_baseline(BENCH, metric, kb_to_mb(kb), "MB", kb_to_mb(b)).print(),
        None => Figure::plain(BENCH, metric, kb_to_mb(kb), "MB").print(),
    };

    let cluster = TestCluster::new("bm-mem", 3)?;
    let mut pa = String::new();
    for i in 0..a.addresses {
        pa.push_str(&format!("{}/24 eth0\n", public(i)));
    }
    for node in &cluster.nodes {
        std::fs::write(
            node.config_dir.join("ipfailover.toml"),
            format!(
                "[transport]\nrun_dir = \"{}\"\n[logging]\nlevel = \"warn\"\n",
                node.run_dir.display()
            ),
        )?;
        std::fs::write(node.config_dir.join("public_addresses"), &pa)?;
    }

    if a.multi() {
        let mut procs = start_all(&cluster, &masterd, &multi, false)?;
        let tracked = settle(&cluster, a, &multi)?;
        connections_figure("multi_connections_tracked", tracked);
        let st = status(&cluster.nodes[0]).context("masterd status on node 0")?;
        let mut total = (0u64, 0u64);
        let mut pids = vec![("masterd".to_owned(), st.pid)];
        for d in &st.daemons {
            if let Some(pid) = d.pid {
                pids.push((d.name.clone(), pid));
            }
        }
        let mut threads = 0;
        for (name, pid) in &pids {
            let r = rollup(*pid).with_context(|| format!("measuring {name} ({pid})"))?;
            Figure::plain(BENCH, &format!("multi_rss_{name}"), kb_to_mb(r.rss), "MB").print();
            Figure::plain(BENCH, &format!("multi_anon_{name}"), kb_to_mb(r.anon), "MB").print();
            total.0 += r.rss;
            total.1 += r.pss;
            threads += thread_count(*pid).unwrap_or(0);
        }
        figure("multi_rss_node", total.0, keepalived.map(|k| k.0));
        figure("multi_pss_node", total.1, keepalived.map(|k| k.1));
        Figure::plain(BENCH, "multi_threads_node", f64::from(threads), "threads").print();
        for p in &mut procs {
            terminate(p);
        }
    }

    if a.single() {
        let mut procs = start_all(&cluster, &masterd, &single, true)?;
        let tracked = settle(&cluster, a, &single)?;
        connections_figure("single_connections_tracked", tracked);
        let st = status(&cluster.nodes[0]).context("masterd status on node 0")?;
        let r = rollup(st.pid).context("measuring masterd")?;
        figure("single_rss_node", r.rss, keepalived.map(|k| k.0));
        figure("single_pss_node", r.pss, keepalived.map(|k| k.1));
        Figure::plain(BENCH, "single_anon_node", kb_to_mb(r.anon), "MB").print();
        let threads = thread_count(st.pid).unwrap_or(0);
        Figure::plain(BENCH, "single_threads_node", f64::from(threads), "threads").print();
        for p in &mut procs {
            terminate(p);
        }
    }
    Ok(())
}

/// Waits until the addresses are hosted, registers the connections with
/// node 0's conntrackd (when they run), then lets the node idle for 3 s.
/// Returns how many connections conntrackd accepted.
fn settle(cluster: &TestCluster, a: &MemoryArgs, daemons: &[&str]) -> Result<usize> {
    let hosted = if daemons.contains(&"failoverd") {
        wait_hosted(cluster, a.addresses)
    } else {
        Vec::new()
    };
    let tracked = if daemons.contains(&"conntrackd") {
        register(&cluster.nodes[0], a.connections, &hosted)?
    } else {
        0
    };
    std::thread::sleep(Duration::from_secs(3));
    Ok(tracked)
}

fn connections_figure(metric: &str, tracked: usize) {
    Figure::plain(
        BENCH,
        metric,
        f64::from(u32::try_from(tracked).unwrap_or(u32::MAX)),
        "conns",
    )
    .print();
}

/// The number of threads of a process (`Threads:` in /proc/PID/status).
fn thread_count(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("Threads:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn kb_to_mb(kb: u64) -> f64 {
    f64::from(u32::try_from(kb).unwrap_or(u32::MAX)) / 1024.0
}

/// Starts masterd on every node and waits until each is ready.
fn start_all(
    cluster: &TestCluster,
    masterd: &Path,
    daemons: &[&str],
    single: bool,
) -> Result<Vec<Child>> {
    let mut procs = Vec::new();
    for node in &cluster.nodes {
        let mut cmd = node.ns.command(&masterd.to_string_lossy());
        cmd.arg("--config-dir")
            .arg(&node.config_dir)
            .arg("--daemons")
            .arg(daemons.join(","))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if single {
            cmd.arg("--single-process");
        }
        procs.push(cmd.spawn().context("starting masterd")?);
    }
    let start = Instant::now();
    for node in &cluster.nodes {
        loop {
            if status(node).is_some_and(|s| s.ready) {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("masterd on node {} not ready after 30 s", node.pnn);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(procs)
}

/// SIGTERM and wait (SIGKILL after 15 s).
fn terminate(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn status(node: &Node) -> Option<MasterStatus> {
    node.masterd_status()
}

/// Waits (30 s at most) until every public address is on some node's eth0;
/// returns those on node 0's.
fn wait_hosted(cluster: &TestCluster, addresses: usize) -> Vec<Ipv4Addr> {
    let start = Instant::now();
    loop {
        let mut all = 0;
        let mut mine = Vec::new();
        for node in &cluster.nodes {
            let Ok(text) = node
                .ns
                .exec_ok("ip", &["-4", "-o", "addr", "show", "dev", "eth0"])
            else {
                continue;
            };
            for i in 0..addresses {
                if text.contains(&format!(" {}/", public(i))) {
                    all += 1;
                    if node.pnn == 0 {
                        mine.push(public(i));
                    }
                }
            }
        }
        if all >= addresses || start.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "memory: {all} of {addresses} public addresses hosted, {} on node 0",
                mine.len()
            );
            return mine;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Registers `n` connections with node 0's conntrackd, spread over the
/// addresses node 0 hosts (all public addresses when none is known), with
/// clients in 198.51.100.0/24; returns how many were accepted (batches
/// conntrackd refuses are counted as not tracked).
fn register(node: &Node, n: usize, hosted: &[Ipv4Addr]) -> Result<usize> {
    let sock = node.run_dir.join("transport.sock");
    let servers: Vec<Ipv4Addr> = if hosted.is_empty() {
        (0..64).map(public).collect()
    } else {
        hosted.to_vec()
    };
    node.ns.block_on(move || async move {
        let (client, _incoming) = Client::connect_unix(&sock, "bench-memory")
            .await
            .context("connecting to transportd")?;
        let conns: Vec<TrackedConnection> = (0..n)
            .map(|i| TrackedConnection {
                client: SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::new(
                        198,
                        51,
                        100,
                        u8::try_from(i % 250 + 1).unwrap_or(1),
                    )),
                    u16::try_from(10_000 + i / 250).unwrap_or(u16::MAX),
                ),
                server: SocketAddr::new(IpAddr::V4(servers[i % servers.len()]), 445),
            })
            .collect();
        let mut accepted = 0;
        let mut refused = None;
        for batch in conns.chunks(1000) {
            match client
                .request::<_, ()>(
                    Address::local(CONNTRACKD),
                    ADD_CONNECTIONS,
                    &batch.to_vec(),
                    Duration::from_secs(10),
                )
                .await
            {
                Ok(()) => accepted += batch.len(),
                Err(e) => {
                    let mut e = e.to_string();
                    if e.len() > 200 {
                        e.truncate(200);
                        e.push_str("...");
                    }
                    refused = Some(e);
                }
            }
        }
        if let Some(e) = refused {
            eprintln!("memory: conntrackd refused some connections: {e}");
        }
        Ok(accepted)
    })?
}

/// keepalived's RSS and PSS (kB, summed over its processes), idle with one
/// VRRP instance holding `addresses` virtual addresses, or None when it is
/// not installed.
fn keepalived_rss(addresses: usize) -> Result<Option<(u64, u64)>> {
    let Ok(keepalived) = which("keepalived") else {
        return Ok(None);
    };
    let ns = crate::netns::NetNs::new("bm-ka")?;
    let peer = crate::netns::NetNs::new("bm-kp")?;
    crate::netns::veth(&ns, "eth0", &peer, "eth0")?;
    ns.ip(&["addr", "add", "192.0.2.10/24", "dev", "eth0"])?;
    let dir = std::env::temp_dir().join(format!("ipf-bm-ka-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut conf = String::from(
        "global_defs {\n  router_id bench\n}\nvrrp_instance VI_1 {\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n  priority 100\n  advert_int 1\n  virtual_ipaddress {\n",
    );
    for i in 0..addresses {
        conf.push_str(&format!("    {}/24\n", public(i)));
    }
    conf.push_str("  }\n}\n");
    let conf_path = dir.join("keepalived.conf");
    std::fs::write(&conf_path, conf)?;
    let mut cmd = ns.command(&keepalived.to_string_lossy());
    cmd.arg("--dont-fork")
        .arg("--log-console")
        .arg("-f")
        .arg(&conf_path)
        .arg("-p")
        .arg(dir.join("keepalived.pid"))
        .arg("-r")
        .arg(dir.join("vrrp.pid"))
        .arg("-c")
        .arg(dir.join("checkers.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let pid = ns.spawn(cmd)?;
    // Let it start its children and settle as MASTER (it holds the addresses).
    std::thread::sleep(Duration::from_secs(5));
    let mut total = (0, 0);
    let children = children_of(pid);
    for &p in std::iter::once(&pid).chain(children.iter()) {
        if let Some((rss, pss)) = rss_pss(p) {
            total.0 += rss;
            total.1 += pss;
        }
    }
    for &p in &children {
        if let Ok(raw) = i32::try_from(p) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(raw),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    ns.kill(pid);
    let _ = std::fs::remove_dir_all(&dir);
    drop(peer);
    Ok(Some(total))
}

/// Direct children of `pid` (from /proc/*/stat).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let child: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let ppid: u32 = stat
            .rsplit(')')
            .next()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        (ppid == pid).then_some(child)
    })
    .collect()
}

fn which(name: &str) -> Result<std::path::PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("{name} not found")
}
