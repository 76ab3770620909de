//! `bench failover [--trials N] [--profile default|fast|both] [--mass N]`:
//! failover as a client sees it, with real daemons (transportd, clusterd,
//! conntrackd, failoverd) on 3 node namespaces and a client namespace.
//!
//! Each trial: every public address is hosted exactly once; the client
//! holds an idle connection (blocked in a read) to 198.51.100.201 and its
//! connection is known to the survivors' conntrackd; at T0 the node hosting
//! that address is powered off (both switch ports down, then SIGKILL of its
//! daemons). Measured: T0 → the first new TCP connection to the address that
//! succeeds (attempts every few ms), and T0 → the idle connection's reset
//! (the tickle). The node is then "rebooted" (its public addresses flushed,
//! ports up, daemons restarted) for the next trial.
//!
//! Mass failover: nodes 0 and 1 list `--mass` addresses (node 2 none, it
//! only makes the majority), with `NoIPFailback = 1`; nodes 0 and 2 start
//! first, so node 0 hosts them all, then node 1 joins (and, without
//! failback, takes none); node 0 is powered off; measured T0 → every one of
//! its addresses accepts a new connection from the client.
//! Its baseline is the single-address reconnect p50 of the same profile
//! over the trials whose victim was not the leader (the mass victim is not
//! the leader either), measured in the same run.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bench::{percentile, Figure};
use crate::cluster::{bin_path, TestCluster};
use crate::netns::wait_for;

const PORT: u16 = 7446;
const POLL: Duration = Duration::from_millis(20);
const LIMIT: Duration = Duration::from_secs(60);

/// The i-th public address (0-based): 198.51.100.1-254 then
/// 203.0.113.1-254, skipping the client's .100 (up to 506 addresses).
fn public(i: usize) -> IpAddr {
    let per_net = 253;
    let (net, k) = if i < per_net {
        ([198, 51, 100], i)
    } else {
        ([203, 0, 113], i - per_net)
    };
    let host = if k < 99 { k + 1 } else { k + 2 };
    let host = u8::try_from(host).expect("at most 506 public addresses");
    IpAddr::V4(Ipv4Addr::new(net[0], net[1], net[2], host))
}

fn is_public(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[3] != 100 && (o[..3] == [198, 51, 100] || o[..3] == [203, 0, 113])
        }
        IpAddr::V6(_) => false,
    }
}

struct Bed {
    c: TestCluster,
    eth1_ports: Vec<String>,
    powered: Vec<bool>,
    /// Per node: the addresses its public_addresses lists.
    lists: Vec<Vec<IpAddr>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Bed {
    fn new(
        tag: &str,
        profile: &str,
        lists: Vec<Vec<IpAddr>>,
        extra_toml: &str,
        start: &[usize],
        non_leaders: &[usize],
    ) -> Result<Bed> {
        let c = TestCluster::new(tag, 3)?;
        let mut eth1_ports = Vec::new();
        for n in &c.nodes {
            eth1_ports.push(c.lan.attach(&n.ns, "eth1")?);
            n.ns.ip(&["link", "set", "eth1", "up"])?;
            for (k, v) in [("arp_ignore", "1"), ("arp_announce", "2")] {
                n.ns.exec_ok("sysctl", &["-qw", &format!("net.ipv4.conf.all.{k}={v}")])?;
            }
        }
        c.client
            .ip(&["addr", "add", "198.51.100.100/24", "dev", "eth0"])?;
        c.client
            .ip(&["addr", "add", "203.0.113.100/24", "dev", "eth0"])?;
        let nodes: String = c.nodes.iter().map(|n| format!("{}\n", n.addr)).collect();
        let (garp_interval, scan) = if profile == "fast" {
            (20, 100)
        } else {
            (1000, 200)
        };
        for (i, n) in c.nodes.iter().enumerate() {
            let lead = if non_leaders.contains(&i) {
                "leader_capability = false\n"
            } else {
                ""
            };
            let toml = format!(
                "[transport]\nrun_dir = \"{}\"\n\n[cluster]\nprofile = \"{profile}\"\n{lead}\n\
                 [failover]\ngarp_interval_ms = {garp_interval}\nrelease_timeout_ms = 3000\n\n\
                 [conntrack]\nscan_interval_ms = {scan}\n\n[logging]\nlevel = \"info\"\n\n{extra_toml}",
                n.run_dir.display()
            );
            std::fs::write(n.config_dir.join("ipfailover.toml"), toml)?;
            std::fs::write(n.config_dir.join("nodes"), &nodes)?;
            let pa: String = lists[i]
                .iter()
                .map(|a| {
                    let iface = "eth1";
                    format!("{a}/24 {iface}\n")
                })
                .collect();
            std::fs::write(n.config_dir.join("public_addresses"), pa)?;
        }
        let bed = Bed {
            powered: vec![true; c.nodes.len()],
            c,
            eth1_ports,
            lists,
            stop: Arc::new(AtomicBool::new(false)),
        };
        for &i in start {
            bed.start(i)?;
        }
        bed.listen_everywhere()?;
        Ok(bed)
    }

    fn start(&self, i: usize) -> Result<()> {
        let node = &self.c.nodes[i];
        let sock = node.run_dir.join("transport.sock");
        let _ = std::fs::remove_file(&sock);
        let log = |name: &str| -> Result<std::fs::File> {
            Ok(std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.c.scratch.join(format!("node{i}-{name}.log")))?)
        };
        let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
        let mut t = node.ns.command(&path(&bin_path("transportd")?));
        t.args(["--run-dir", &path(&node.run_dir)])
            .args(["--nodes", &path(&node.config_dir.join("nodes"))])
            .args(["--key", &path(&node.config_dir.join("cluster.key"))])
            .args(["--pnn", &i.to_string()])
            .stdout(Stdio::null())
            .stderr(log("transportd")?);
        node.spawn(t)?;
        wait_for("transportd socket", Duration::from_secs(10), POLL, || {
            sock.exists().then_some(())
        })?;
        for name in ["clusterd", "conntrackd", "failoverd"] {
            let mut d = node.ns.command(&path(&bin_path(name)?));
            d.args(["--config-dir", &path(&node.config_dir)])
                .stdout(Stdio::null())
                .stderr(log(name)?);
            node.spawn(d)?;
        }
        Ok(())
    }

    /// The first half of a power-off: both cables pulled. The measuring
    /// threads start right after; [`Bed::kill`] then SIGKILLs the daemons
    /// (which can take seconds on a loaded machine with hundreds of
    /// addresses, and must not delay the measurement's start).
    fn unplug(&mut self, i: usize) -> Result<()> {
        self.powered[i] = false;
        self.c.lan.set_port(&self.eth1_ports[i], false)?;
        self.c.lan.set_port(&self.c.nodes[i].port, false)
    }

    /// The second half of a power-off: SIGKILL of the node's daemons.
    fn kill(&self, i: usize) {
        self.c.nodes[i].kill_all();
    }

    /// A reboot: the kernel forgets its public addresses, the cables are
    /// plugged in, the daemons start.
    fn power_on(&mut self, i: usize) -> Result<()> {
        let ns = self.c.nodes[i].ns.name().to_string();
        for a in addresses_on(&ns) {
            let _ = self.c.nodes[i]
                .ns
                .ip(&["addr", "del", &format!("{a}/24"), "dev", "eth1"]);
        }
        self.c.power_on(i)?;
        self.c.lan.set_port(&self.eth1_ports[i], true)?;
        self.powered[i] = true;
        self.start(i)
    }

    /// Each listed address → the one powered node hosting it, when every
    /// address is hosted exactly once.
    fn placement(&self) -> Option<BTreeMap<IpAddr, usize>> {
        let mut all: Vec<IpAddr> = self.lists.iter().flatten().copied().collect();
        all.sort();
        all.dedup();
        let mut at: BTreeMap<IpAddr, Vec<usize>> = BTreeMap::new();
        for (i, n) in self.c.nodes.iter().enumerate() {
            if self.powered[i] {
                for a in addresses_on(n.ns.name()) {
                    at.entry(a).or_default().push(i);
                }
            }
        }
        let mut out = BTreeMap::new();
        for a in all {
            match at.get(&a).map(Vec::as_slice) {
                Some([one]) => {
                    out.insert(a, *one);
                }
                _ => return None,
            }
        }
        Some(out)
    }

    fn wait_placed(&self) -> Result<BTreeMap<IpAddr, usize>> {
        wait_for("every address hosted exactly once", LIMIT, POLL, || {
            self.placement()
        })
    }

    /// Waits until every address is hosted once and every powered node that
    /// lists addresses hosts some (the failback after a reboot is over).
    fn wait_settled(&self) -> Result<BTreeMap<IpAddr, usize>> {
        wait_for("a settled placement", LIMIT, POLL, || {
            let p = self.placement()?;
            (0..self.c.nodes.len())
                .filter(|&i| self.powered[i] && !self.lists[i].is_empty())
                .all(|i| p.values().any(|&n| n == i))
                .then_some(p)
        })
    }

    /// A listener on 0.0.0.0:PORT in every node namespace that accepts and
    /// keeps connections without answering (threads of this process: they
    /// survive a power-off, as a kernel socket would not matter then).
    fn listen_everywhere(&self) -> Result<()> {
        for n in &self.c.nodes {
            let l = n.ns.run(|| -> std::io::Result<TcpListener> {
                let l = TcpListener::bind(("0.0.0.0", PORT))?;
                l.set_nonblocking(true)?;
                Ok(l)
            })??;
            let stop = Arc::clone(&self.stop);
            std::thread::spawn(move || {
                let mut kept = Vec::new();
                let end = Instant::now() + Duration::from_secs(3600);
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    match l.accept() {
                        Ok((s, _)) => {
                            kept.push(s);
                            if kept.len() > 10_000 {
                                kept.clear();
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        Ok(())
    }

    /// The last lines of every node's failoverd and clusterd logs.
    fn logs(&self) -> String {
        let mut out = String::new();
        for i in 0..self.c.nodes.len() {
            for name in ["clusterd", "failoverd"] {
                let p = self.c.scratch.join(format!("node{i}-{name}.log"));
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = text
                    .lines()
                    .rev()
                    .filter(|l| !l.contains("netlink_proto"))
                    .map(|l| if l.len() > 300 { &l[..300] } else { l })
                    .take(25)
                    .collect();
                out.push_str(&format!("--- node{i} {name}\n"));
                for l in tail.iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }

    fn cli(&self, i: usize, args: &[&str]) -> Result<String> {
        let out = Command::new(bin_path("ipfailover")?)
            .arg("--run-dir")
            .arg(&self.c.nodes[i].run_dir)
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The public addresses configured in namespace `ns`.
fn addresses_on(ns: &str) -> Vec<IpAddr> {
    let Ok(out) = Command::new("ip")
        .args(["-n", ns, "-o", "-4", "addr", "show"])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            f.find(|w| *w == "inet")?;
            let a: IpAddr = f.next()?.split('/').next()?.parse().ok()?;
            is_public(a).then_some(a)
        })
        .collect()
}

/// Runs `f` on a new thread inside the client's namespace (not joined).
fn in_client<F, R>(bed: &Bed, f: F) -> std::thread::JoinHandle<Result<R>>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let path = format!("/run/netns/{}", bed.c.client.name());
    std::thread::spawn(move || -> Result<R> {
        let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .context("entering the client namespace")?;
        Ok(f())
    })
}

/// Tries new connections to `to` until one succeeds (bounded by LIMIT);
/// returns when it did.
fn first_connect(to: SocketAddr) -> Option<Instant> {
    let end = Instant::now() + LIMIT;
    while Instant::now() < end {
        if TcpStream::connect_timeout(&to, Duration::from_millis(10)).is_ok() {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

struct Trial {
    victim_led: bool,
    reconnect_ms: f64,
    reset_ms: Option<f64>,
}

fn trial(bed: &mut Bed) -> Result<Trial> {
    let placed = bed.wait_settled()?;
    // Let the last run's announcements finish.
    std::thread::sleep(Duration::from_millis(300));
    let addr = public(0);
    let victim = placed[&addr];
    let server = SocketAddr::new(addr, PORT);
    // The idle client.
    let stream = in_client(bed, move || {
        TcpStream::connect_timeout(&server, Duration::from_secs(5))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("client thread panicked"))???;
    let survivors: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    let replicated = wait_for(
        "the connection known to every survivor",
        LIMIT,
        POLL,
        || {
            survivors
                .iter()
                .all(|&s| {
                    bed.cli(s, &["gettickles", &addr.to_string()])
                        .is_ok_and(|t| !t.contains("Num connections: 0") && t.contains("SRC:"))
                })
                .then_some(())
        },
    );
    if let Err(e) = replicated {
        eprintln!("warning: {e}");
    }
    let reader = std::thread::spawn(move || {
        let mut stream = stream;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
        let mut buf = [0u8; 8];
        let r = stream.read(&mut buf);
        let reset = matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset);
        if !reset {
            eprintln!("idle client's read ended with {r:?}");
        }
        (reset, Instant::now())
    });
    let victim_led = bed
        .cli(survivors[0], &["leader"])
        .is_ok_and(|t| t.trim() == victim.to_string());
    let t0 = Instant::now();
    bed.unplug(victim)?;
    let connector = in_client(bed, move || first_connect(server));
    bed.kill(victim);
    let connected = connector
        .join()
        .map_err(|_| anyhow::anyhow!("connector panicked"))??
        .context("no new connection within the limit")?;
    let (reset, at) = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))?;
    let result = Trial {
        victim_led,
        reconnect_ms: (connected - t0).as_secs_f64() * 1e3,
        // A reset before T0 (something moved the address early) is no
        // measurement.
        reset_ms: (reset && at > t0).then(|| (at - t0).as_secs_f64() * 1e3),
    };
    if reset && at <= t0 {
        eprintln!("the idle client was reset before T0");
    }
    let result = Trial { ..result };
    bed.power_on(victim)?;
    Ok(result)
}

fn mass(profile: &str, count: usize) -> Result<(f64, f64)> {
    let addrs: Vec<IpAddr> = (0..count).map(public).collect();
    let mut bed = Bed::new(
        &format!("bfm{}", &profile[..1]),
        profile,
        vec![addrs.clone(), addrs.clone(), Vec::new()],
        "[tunables]\nNoIPFailback = 1\n",
        &[0, 2],
        // Node 0 cannot lead, so the victim is not the leader: the figure
        // compares with single-address trials whose victim did not lead.
        &[0],
    )?;
    bed.powered[1] = false;
    wait_for("node 0 hosting every address", LIMIT, POLL, || {
        let p = bed.placement()?;
        p.values().all(|&n| n == 0).then_some(())
    })
    .with_context(|| {
        format!(
            "node 0 has {} addresses\n{}",
            addresses_on(bed.c.nodes[0].ns.name()).len(),
            bed.logs()
        )
    })?;
    bed.powered[1] = true;
    bed.start(1)?;
    // Node 1 has taken part in a run once it believes node 0 is the owner.
    let first = format!("{} 0\n", public(0));
    wait_for("node 1 in the takeover runs", LIMIT, POLL, || {
        bed.cli(1, &["ip"])
            .is_ok_and(|t| t.contains(&first))
            .then_some(())
    })
    .with_context(|| format!("{:?}\n{}", bed.cli(1, &["ip"]), bed.logs()))?;
    let placed = bed.wait_placed()?;
    let on0: Vec<IpAddr> = placed
        .iter()
        .filter(|(_, &n)| n == 0)
        .map(|(a, _)| *a)
        .collect();
    eprintln!("mass: node 0 hosts {} addresses", on0.len());
    let targets: Vec<SocketAddr> = on0.iter().map(|a| SocketAddr::new(*a, PORT)).collect();
    let t0 = Instant::now();
    if std::env::var_os("FAILOVER_BENCH_LOGS").is_some() {
        eprintln!(
            "T0 at {:?} (since the epoch)",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)
        );
    }
    bed.unplug(0)?;
    let ns1 = bed.c.nodes[1].ns.name().to_string();
    // Node 1 must end up with every address (it may already host some if
    // node 0 lost its lease once during the set-up).
    let want = count;
    if on0.len() != count {
        eprintln!(
            "warning: node 0 hosts {} of {count} addresses at T0 (its lease flapped during the set-up)",
            on0.len()
        );
    }
    let configured = std::thread::spawn(move || {
        let end = Instant::now() + LIMIT;
        while Instant::now() < end {
            if addresses_on(&ns1).len() >= want {
                return Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    });
    let connector = in_client(&bed, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async move {
            let tasks = targets.into_iter().map(|to| async move {
                let end = tokio::time::Instant::now() + LIMIT;
                while tokio::time::Instant::now() < end {
                    let c = tokio::time::timeout(
                        Duration::from_millis(20),
                        tokio::net::TcpStream::connect(to),
                    )
                    .await;
                    if matches!(c, Ok(Ok(_))) {
                        return Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                None
            });
            let all = futures::future::join_all(tasks).await;
            all.into_iter().try_fold(t0, |acc, t| t.map(|t| t.max(acc)))
        })
    });
    bed.kill(0);
    let done = connector
        .join()
        .map_err(|_| anyhow::anyhow!("mass connector panicked"))??;
    let Some(last) = done else {
        bail!("not every address of the dead node answered within {LIMIT:?}");
    };
    if let Some(dir) = std::env::var_os("FAILOVER_BENCH_LOGS") {
        // Keep every log of the mass run for inspection.
        let dir = std::path::PathBuf::from(dir);
        for e in std::fs::read_dir(&bed.c.scratch)?.flatten() {
            let name = e.file_name();
            if name.to_string_lossy().ends_with(".log") {
                let _ = std::fs::copy(e.path(), dir.join(name));
            }
        }
    }
    let configured = configured
        .join()
        .map_err(|_| anyhow::anyhow!("configured-poller panicked"))?
        .map_or(f64::NAN, |t| (t - t0).as_secs_f64() * 1e3);
    Ok(((last - t0).as_secs_f64() * 1e3, configured))
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{name} needs a value")),
    }
}

/// Runs the `failover` scenario.
///
/// # Errors
///
/// Not root, a binary missing (build with `cargo build --release
/// --workspace --bins`), or a trial that never completes.
pub fn run(args: &[String]) -> Result<()> {
    crate::netns::require_root();
    let trials: usize = arg(args, "--trials", 10)?;
    let profile: String = arg(args, "--profile", "both".to_string())?;
    let mass_count: usize = arg(args, "--mass", 256)?;
    if trials == 0 || trials > 100 || mass_count > 506 {
        bail!("--trials 1..=100, --mass 0..=506");
    }
    let profiles: Vec<&str> = match profile.as_str() {
        "both" => vec!["default", "fast"],
        "default" => vec!["default"],
        "fast" => vec!["fast"],
        other => bail!("--profile default|fast|both, not {other}"),
    };
    for p in profiles {
        let list: Vec<IpAddr> = (0..6).map(public).collect();
        let mut bed = Bed::new(
            &format!("bf{}", &p[..1]),
            p,
            vec![list.clone(), list.clone(), list],
            "",
            &[0, 1, 2],
            &[],
        )?;
        let mut reconnect = Vec::new();
        let mut reset = Vec::new();
        let mut not_reset = 0usize;
        let mut follower_reconnect = Vec::new();
        for t in 0..trials {
            let r = trial(&mut bed).with_context(|| format!("{p} trial {t}"))?;
            eprintln!(
                "{p} trial {t}: reconnect {:.1} ms, idle reset {}{}",
                r.reconnect_ms,
                r.reset_ms
                    .map_or("never".to_string(), |v| format!("{v:.1} ms")),
                if r.victim_led {
                    " (the victim was the leader)"
                } else {
                    ""
                }
            );
            reconnect.push(r.reconnect_ms);
            if !r.victim_led {
                follower_reconnect.push(r.reconnect_ms);
            }
            match r.reset_ms {
                Some(v) => reset.push(v),
                None => not_reset += 1,
            }
        }
        drop(bed);
        let p50 = percentile(&mut reconnect.clone(), 50.0);
        Figure::plain("failover", &format!("{p}_reconnect_p50"), p50, "ms").print();
        Figure::plain(
            "failover",
            &format!("{p}_reconnect_p99"),
            percentile(&mut reconnect, 99.0),
            "ms",
        )
        .print();
        if !reset.is_empty() {
            Figure::plain(
                "failover",
                &format!("{p}_idle_reset_p50"),
                percentile(&mut reset.clone(), 50.0),
                "ms",
            )
            .print();
            Figure::plain(
                "failover",
                &format!("{p}_idle_reset_p99"),
                percentile(&mut reset, 99.0),
                "ms",
            )
            .print();
        }
        #[allow(clippy::cast_precision_loss)] // at most 100 trials
        Figure::plain(
            "failover",
            &format!("{p}_idle_not_reset"),
            not_reset as f64,
            "trials",
        )
        .print();
        let follower_p50 = if follower_reconnect.is_empty() {
            p50
        } else {
            percentile(&mut follower_reconnect, 50.0)
        };
        Figure::plain(
            "failover",
            &format!("{p}_reconnect_p50_victim_not_leader"),
            follower_p50,
            "ms",
        )
        .print();
        if mass_count > 0 {
            let (m, configured) = mass(p, mass_count)?;
            Figure::plain(
                "failover",
                &format!("{p}_mass{mass_count}_all_configured"),
                configured,
                "ms",
            )
            .print();
            Figure::with_baseline(
                "failover",
                &format!("{p}_mass{mass_count}_all_answer"),
                m,
                "ms",
                follower_p50,
            )
            .print();
        }
    }
    Ok(())
}
