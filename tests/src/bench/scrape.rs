//! `bench scrape [--scrapes N] [--addresses N] [--connections N] [--idle S]
//! [--pause MS]`:
//! what one Prometheus scrape of masterd's `/metrics` costs the node
//! (issue 18, docs/observability.md).
//!
//! Two nodes in namespaces run by masterd with every daemon; node 0 lists
//! and hosts `--addresses` (default 256) public addresses, node 1 none.
//! Node 0's conntrackd is fed `--connections` (default 100,000) synthetic
//! connections spread evenly over those addresses through its registration
//! request (`ADD_CONNECTIONS`, the `addtickle` path, 5,000 per request;
//! they replicate to node 1 like learned ones). Then:
//!
//! * **idle**: the CPU time (utime + stime from `/proc/PID/stat`) of node
//!   0's masterd and daemons, and of node 1's, over `--idle` seconds
//!   (default 10) without scrapes: heartbeats, syncs, monitors;
//! * **scrapes**: `--scrapes` (default 200) scrapes one after the other,
//!   `--pause` ms apart (default 20: back to back, about a third of the
//!   scrapes lacked failoverd's `GET_IP_STATUS` answer; not investigated,
//!   no real scraper asks 250 times a second), from inside node 0's
//!   namespace; the CPU time over them minus the idle
//!   rate over the same time, divided by the number of scrapes, per
//!   process. Also the wall time of a scrape, its size and series, and
//!   `promtool check metrics` on the last one when promtool is there.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use transport::msg::conntrack::{AddressCount, TrackedConnection, ADD_CONNECTIONS, GET_COUNTS};
use transport::proto::service::CONNTRACKD;
use transport::proto::Address;

use super::failover::{public, public_lan};
use crate::bench::{percentile, Figure};
use crate::cluster::{bin_path, Node, TestCluster};
use crate::netns::wait_for;

const PORT: u16 = 9379;

struct Bed {
    c: TestCluster,
    masterd: Vec<Child>,
}

impl Drop for Bed {
    fn drop(&mut self) {
        for m in &mut self.masterd {
            let _ = m.kill();
            let _ = m.wait();
        }
    }
}

/// One scrape from inside the namespace: (body, wall time).
fn scrape_once(addr: SocketAddr) -> Option<(String, Duration)> {
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let took = t.elapsed();
    let raw = String::from_utf8(raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    (head.split(' ').nth(1) == Some("200")).then(|| (body.to_string(), took))
}

fn scrapes(n: &Node, count: usize, pause: Duration) -> Result<Vec<(String, Duration)>> {
    let addr: SocketAddr = format!("127.0.0.1:{PORT}").parse()?;
    n.ns.run(move || -> Vec<(String, Duration)> {
        (0..count)
            .filter_map(|_| {
                let r = scrape_once(addr);
                std::thread::sleep(pause);
                r
            })
            .collect()
    })
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// CPU time (user + system) of a process so far, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may contain spaces: fields follow the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, utime 14, stime 15 (1-based overall).
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads its argument.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    #[allow(clippy::cast_precision_loss)]
    let tck = if tck > 0 { tck as f64 } else { 100.0 };
    Some((utime + stime) / tck)
}

/// `(name, pid)` of a node's masterd and its daemons.
fn processes(n: &Node) -> Result<Vec<(String, u32)>> {
    let st = n.masterd_status().context("masterd status")?;
    let mut out = vec![("masterd".to_string(), st.pid)];
    for d in st.daemons {
        if let Some(pid) = d.pid {
            out.push((d.name, pid));
        }
    }
    Ok(out)
}

fn cpu_of(procs: &[(String, u32)]) -> Vec<f64> {
    procs
        .iter()
        .map(|(_, p)| cpu_seconds(*p).unwrap_or(f64::NAN))
        .collect()
}

/// Registers `count` connections on node 0, spread over `addrs`.
fn register(n: &Node, addrs: &[IpAddr], count: usize) -> Result<()> {
    let sock = n.run_dir.join("transport.sock");
    let addrs = addrs.to_vec();
    n.ns.block_on(move || async move {
        let (client, _incoming) =
            transport::client::Client::connect_unix(&sock, "bench-scrape").await?;
        let all: Vec<TrackedConnection> = (0..count)
            .map(|i| {
                let server = addrs[i % addrs.len()];
                let k = i / addrs.len();
                let client_ip = IpAddr::from([192, 0, 2, u8::try_from(1 + k % 250).unwrap_or(1)]);
                let port = u16::try_from(10_000 + k / 250).unwrap_or(u16::MAX);
                TrackedConnection {
                    client: SocketAddr::new(client_ip, port),
                    server: SocketAddr::new(server, 445),
                }
            })
            .collect();
        for chunk in all.chunks(5_000) {
            let () = client
                .request(
                    Address::local(CONNTRACKD),
                    ADD_CONNECTIONS,
                    &chunk.to_vec(),
                    Duration::from_secs(10),
                )
                .await?;
        }
        anyhow::Ok(())
    })?
}

fn tracked(n: &Node) -> Option<u64> {
    let sock = n.run_dir.join("transport.sock");
    n.ns.block_on(move || async move {
        let (client, _incoming) = transport::client::Client::connect_unix(&sock, "bench-scrape")
            .await
            .ok()?;
        let counts: Vec<AddressCount> = client
            .request(
                Address::local(CONNTRACKD),
                GET_COUNTS,
                &(),
                Duration::from_secs(5),
            )
            .await
            .ok()?;
        Some(counts.iter().map(|c| c.connections).sum())
    })
    .ok()
    .flatten()
}

/// `bench scrape` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ScrapeArgs {
    /// Scrapes, one after the other (at least 1).
    #[arg(long, default_value_t = 200, value_parser = super::count_in(1..=u64::MAX))]
    pub scrapes: usize,
    /// Public addresses node 0 hosts (1 to 506).
    #[arg(long, default_value_t = 256, value_parser = super::count_in(1..=506))]
    pub addresses: usize,
    /// Synthetic connections fed to node 0's conntrackd.
    #[arg(long, default_value_t = 100_000)]
    pub connections: usize,
    /// Seconds of the idle measurement (no scrapes).
    #[arg(long, default_value_t = 10)]
    pub idle: u64,
    /// Milliseconds between two scrapes.
    #[arg(long, default_value_t = 20)]
    pub pause: u64,
}

/// The scenario (see the module docs).
///
/// # Errors
///
/// The bed cannot be built, or the cluster does not settle.
pub fn run(args: &ScrapeArgs) -> Result<()> {
    let n_scrapes = args.scrapes;
    let n_addrs = args.addresses;
    let n_conns = args.connections;
    let idle_s = args.idle;
    let pause_ms = args.pause;
    let c = TestCluster::new("scrape", 2)?;
    public_lan(&c)?;
    let addrs: Vec<IpAddr> = (0..n_addrs).map(public).collect();
    for n in &c.nodes {
        let toml = format!(
            "[transport]\nrun_dir = \"{}\"\n\n[metrics]\nlisten = \"127.0.0.1:{PORT}\"\n\n\
             [logging]\nlevel = \"{}\"\n",
            n.run_dir.display(),
            crate::bench::log_level()
        );
        std::fs::write(n.config_dir.join("ipfailover.toml"), toml)?;
        let pa: String = if n.pnn == 0 {
            addrs.iter().map(|a| format!("{a}/24 eth1\n")).collect()
        } else {
            String::new()
        };
        std::fs::write(n.config_dir.join("public_addresses"), pa)?;
    }
    let mut bed = Bed {
        masterd: Vec::new(),
        c,
    };
    for i in 0..2 {
        let node = &bed.c.nodes[i];
        let mut cmd = node.ns.command(&bin_path("masterd")?.to_string_lossy());
        cmd.arg("--config-dir")
            .arg(&node.config_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(bed.c.log_file(i, "masterd")?);
        bed.masterd.push(cmd.spawn().context("starting masterd")?);
    }
    let n0 = &bed.c.nodes[0];
    #[allow(clippy::cast_precision_loss)]
    let want = n_addrs as f64;
    let settled = wait_for(
        "node 0 hosts every address",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let (body, _) = scrapes(n0, 1, Duration::ZERO).ok()?.pop()?;
            (sample(&body, "ipfailover_addresses_hosted") == Some(want)
                && sample(&body, "ipfailover_address_lists_answered") == Some(2.0))
            .then_some(())
        },
    );
    if let Err(e) = settled {
        let last = scrapes(n0, 1, Duration::ZERO)
            .ok()
            .and_then(|mut v| v.pop())
            .map(|(b, _)| {
                b.lines()
                    .filter(|l| l.starts_with("ipfailover_address") || l.contains("daemon_up"))
                    .filter(|l| !l.contains("address=\""))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        bail!(
            "{e}\nlast scrape: {last:?}\n{}",
            bed.c.log_tails(&["masterd"], 20)
        );
    }
    let t = Instant::now();
    register(n0, &addrs, n_conns)?;
    let want_conns = u64::try_from(n_conns)?;
    wait_for(
        "node 0 tracks every connection",
        Duration::from_secs(120),
        Duration::from_millis(200),
        || (tracked(n0)? >= want_conns).then_some(()),
    )?;
    eprintln!(
        "registered {n_conns} connections on {n_addrs} addresses in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let n1 = &bed.c.nodes[1];
    wait_for(
        "node 1 has the replicas",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || (tracked(n1)? >= want_conns).then_some(()),
    )?;
    let procs0 = processes(n0)?;
    let procs1 = processes(n1)?;
    // Let the registration's replication and syncs settle.
    std::thread::sleep(Duration::from_secs(5));

    let (a0, a1, t0) = (cpu_of(&procs0), cpu_of(&procs1), Instant::now());
    std::thread::sleep(Duration::from_secs(idle_s));
    let (b0, b1, idle) = (cpu_of(&procs0), cpu_of(&procs1), t0.elapsed());
    let done = scrapes(n0, n_scrapes, Duration::from_millis(pause_ms))?;
    let (c0, c1, busy) = (cpu_of(&procs0), cpu_of(&procs1), t0.elapsed() - idle);
    if done.len() != n_scrapes {
        bail!("{} of {n_scrapes} scrapes answered", done.len());
    }
    #[allow(clippy::cast_precision_loss)]
    let per = |a: &[f64], b: &[f64], c: &[f64], i: usize| {
        let idle_rate = (b[i] - a[i]) / idle.as_secs_f64();
        ((c[i] - b[i]) - idle_rate * busy.as_secs_f64()) / n_scrapes as f64 * 1e3
    };
    let mut total0 = 0.0;
    for (i, (name, _)) in procs0.iter().enumerate() {
        let ms = per(&a0, &b0, &c0, i);
        total0 += ms;
        Figure::plain("scrape", &format!("cpu_per_scrape_node0_{name}"), ms, "ms").print();
    }
    Figure::plain("scrape", "cpu_per_scrape_node0", total0, "ms").print();
    let total1: f64 = (0..procs1.len()).map(|i| per(&a1, &b1, &c1, i)).sum();
    Figure::plain("scrape", "cpu_per_scrape_node1", total1, "ms").print();
    let idle0: f64 = (0..procs0.len()).map(|i| b0[i] - a0[i]).sum::<f64>() / idle.as_secs_f64();
    Figure::plain("scrape", "idle_cpu_node0", idle0 * 1e3, "ms/s").print();
    let mut walls: Vec<f64> = done.iter().map(|(_, d)| d.as_secs_f64() * 1e3).collect();
    Figure::plain("scrape", "wall_p50", percentile(&mut walls, 50.0), "ms").print();
    Figure::plain("scrape", "wall_p99", percentile(&mut walls, 99.0), "ms").print();
    // A scrape where a daemon did not answer in time is smaller and
    // cheaper: count them, and show the first.
    let complete = |b: &str| {
        ["transportd", "clusterd", "conntrackd", "failoverd"]
            .iter()
            .all(|d| sample(b, &format!("ipfailover_daemon_up{{daemon=\"{d}\"}}")) == Some(1.0))
            && sample(b, "ipfailover_address_lists_answered") == Some(2.0)
            && sample(b, "ipfailover_addresses_hosted") == Some(want)
    };
    let full = done.iter().filter(|(b, _)| complete(b)).count();
    #[allow(clippy::cast_precision_loss)]
    Figure::plain("scrape", "complete_scrapes", full as f64, "").print();
    if let Some((b, _)) = done.iter().find(|(b, _)| !complete(b)) {
        let lines: Vec<&str> = b
            .lines()
            .filter(|l| {
                l.starts_with("ipfailover_daemon_up")
                    || l.starts_with("ipfailover_address_lists")
                    || l.starts_with("ipfailover_addresses_hosted")
            })
            .collect();
        eprintln!("an incomplete scrape: {lines:?}");
    }
    let (last, _) = done
        .iter()
        .rev()
        .find(|(b, _)| complete(b))
        .unwrap_or(&done[done.len() - 1]);
    #[allow(clippy::cast_precision_loss)]
    let size = last.len() as f64;
    Figure::plain("scrape", "body", size, "B").print();
    #[allow(clippy::cast_precision_loss)]
    let series = last
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count() as f64;
    Figure::plain("scrape", "series", series, "").print();
    if let Some(g) = sample(last, "ipfailover_scrape_gather_seconds") {
        Figure::plain("scrape", "gather_last", g * 1e3, "ms").print();
    }
    eprintln!(
        "{n_scrapes} scrapes in {:.2} s; idle measured over {:.1} s",
        busy.as_secs_f64(),
        idle.as_secs_f64()
    );
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(last.as_bytes())?;
            }
            let out = child.wait_with_output()?;
            eprintln!(
                "promtool check metrics: {}{}",
                if out.status.success() {
                    "ok"
                } else {
                    "FAILED "
                },
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Err(e) => eprintln!("promtool not run: {e}"),
    }
    Ok(())
}
