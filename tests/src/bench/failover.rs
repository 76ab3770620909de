//! `bench failover [--trials N] [--profile default|fast|both] [--mass N]
//! [--keepalived-mass N] [--no-keepalived] [--no-phases]`:
//! failover as a client sees it, with real daemons (transportd, clusterd,
//! conntrackd, failoverd) on 3 node namespaces and a client namespace,
//! beside keepalived on the same topology in the same run (the baseline,
//! `bench::keepalived`: VRRPv3, one instance per address, its default 1 s
//! adverts for the default profile and 10 ms adverts for the fast one).
//!
//! Every figure counts every kind of victim: even trials kill the leader
//! (the address is moved to it first if needed), odd trials a follower;
//! `*_reconnect_p50` is over all trials, `*_victim_leader` and
//! `*_victim_not_leader` split them, each with keepalived's reconnect p50
//! as baseline. Mass failover runs once with node 0 leading and once with
//! node 0 unable to lead.
//!
//! Each trial: every public address is hosted exactly once; the client
//! holds an idle connection (blocked in a read) to 198.51.100.1 and its
//! connection is known to the survivors' conntrackd; at T0 the node hosting
//! that address is powered off (both switch ports down at once, then
//! SIGKILL of its daemons). Measured: T0 → the first new TCP connection to the address that
//! succeeds (attempts every few ms), and T0 → the idle connection's reset
//! (the tickle). The node is then "rebooted" (its public addresses flushed,
//! ports up, daemons restarted) for the next trial.
//!
//! Mass failover: nodes 0 and 1 list `--mass` addresses (node 2 none, it
//! only makes the majority), with `NoIPFailback = 1`; nodes 0 and 2 start
//! first, so node 0 hosts them all, then node 1 joins (and, without
//! failback, takes none); node 0 is powered off; measured T0 → every one of
//! its addresses accepts a new connection from the client. Its baseline is
//! the single-address reconnect p50 of the same profile and victim kind,
//! measured in the same run; the same with `--keepalived-mass` addresses
//! (default 64) has keepalived's time for as many addresses as baseline.
//!
//! Phases (unless `--no-phases`): each single-address trial is broken down
//! into when a survivor's clusterd published the victim DISCONNECTED, when
//! the leader's failoverd heard it was reassignable, when the moving run
//! started, had its reports and its release acknowledgements, when the new
//! owner added the address, when the client saw the first gratuitous ARP
//! and the first SYN-ACK (tcpdump in the client's namespace), and when the
//! run's takes were acknowledged — all in ms after T0, from the daemons'
//! info lines (wall-clock timestamps) and the capture's. p50s are printed
//! separately for trials whose victim led and those whose victim did not.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bench::{percentile, Figure, Profiles};
use crate::cluster::{bin_path, TestCluster};
use crate::netns::wait_for;

pub(crate) const PORT: u16 = 7446;
const POLL: Duration = Duration::from_millis(20);
const LIMIT: Duration = Duration::from_secs(60);

/// The i-th public address (0-based): 198.51.100.1-254 then
/// 203.0.113.1-254, skipping the client's .100 (up to 506 addresses).
pub(crate) fn public(i: usize) -> IpAddr {
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
        let eth1_ports = public_lan(&c)?;
        let nodes: String = c.nodes.iter().map(|n| format!("{}\n", n.addr)).collect();
        let (garp_interval, scan) = if profile == "fast" {
            (20, 100)
        } else {
            (1000, 200)
        };
        let log_level = crate::bench::log_level();
        let cluster_extra = crate::bench::cluster_extra();
        for (i, n) in c.nodes.iter().enumerate() {
            let lead = if non_leaders.contains(&i) {
                "leader_capability = false\n"
            } else {
                ""
            };
            let toml = format!(
                "[transport]\nrun_dir = \"{}\"\n\n[cluster]\nprofile = \"{profile}\"\n{lead}{cluster_extra}\n\
                 [failover]\ngarp_interval_ms = {garp_interval}\nrelease_timeout_ms = 3000\n\n\
                 [conntrack]\nscan_interval_ms = {scan}\n\n[logging]\nlevel = \"{log_level}\"\n\n{extra_toml}",
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
        // As masterd starts them by default (`realtime_priority = 1`):
        // failoverd at SCHED_RR 1, the heartbeat path (transportd,
        // clusterd) one step above, conntrackd normal; `BENCH_REALTIME=0`
        // runs them all at normal priority.
        let command = |name: &str, prio: u8| -> Result<std::process::Command> {
            let bin = path(&bin_path(name)?);
            if prio == 0 || std::env::var("BENCH_REALTIME").is_ok_and(|v| v == "0") {
                return Ok(node.ns.command(&bin));
            }
            let mut c = node.ns.command("chrt");
            c.args(["--rr", "--reset-on-fork", &prio.to_string(), &bin]);
            Ok(c)
        };
        let mut t = command("transportd", 2)?;
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
        for (name, prio) in [("clusterd", 2), ("conntrackd", 0), ("failoverd", 1)] {
            let mut d = command(name, prio)?;
            d.args(["--config-dir", &path(&node.config_dir)])
                .stdout(Stdio::null())
                .stderr(log(name)?);
            node.spawn(d)?;
        }
        Ok(())
    }

    /// The first half of a power-off: both cables pulled at once, and T0.
    /// The measuring threads start right after; [`Bed::kill`] then
    /// SIGKILLs the daemons (which can take seconds on a loaded machine
    /// with hundreds of addresses, and must not delay the measurement's
    /// start).
    ///
    /// Both switch ports are set down by two pipelined requests on one
    /// rtnetlink socket opened beforehand in the switch's namespace, and
    /// T0 is taken right before them: a power-off cuts both cables at the
    /// same instant. (Two `ip link set` processes in a row, as before,
    /// pulled the cluster cable one or two process start-ups — 5-10 ms on
    /// the loaded test machine — after T0, and that delay was counted as
    /// failover time.) Returns T0 as an `Instant` and in ms since the epoch.
    fn unplug(&mut self, i: usize) -> Result<(Instant, f64)> {
        self.powered[i] = false;
        let ports = [self.eth1_ports[i].clone(), self.c.nodes[i].port.clone()];
        self.c.lan.switch().block_on(move || async move {
            let nl = netlink::link::Netlink::new()?;
            for p in &ports {
                nl.link(p).await?;
            }
            let wall = epoch_ms(std::time::SystemTime::now());
            let t0 = Instant::now();
            futures::future::try_join(
                nl.set_link_up(&ports[0], false),
                nl.set_link_up(&ports[1], false),
            )
            .await?;
            anyhow::Ok((t0, wall))
        })?
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
                // A backlog for a mass failover's burst: std listens with
                // 128, and the kernel drops a SYN that finds the accept
                // queue full (the client then waits for its next attempt,
                // which measured the bench's server, not the failover).
                // listen() again on a listening socket only sets the backlog.
                nix::sys::socket::listen(&l, nix::sys::socket::Backlog::MAXALLOWABLE)?;
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
pub(crate) fn addresses_on(ns: &str) -> Vec<IpAddr> {
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

/// Gives every node a public port `eth1` on the LAN (the client's side of
/// it has 198.51.100.100/24 and 203.0.113.100/24), the topology of the
/// benchmark for ipfailover and for keepalived alike. Returns the switch
/// ports of the `eth1`s.
pub(crate) fn public_lan(c: &TestCluster) -> Result<Vec<String>> {
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
    Ok(eth1_ports)
}

/// Runs `f` on a new thread inside the client's namespace (not joined).
fn in_client<F, R>(bed: &Bed, f: F) -> std::thread::JoinHandle<Result<R>>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    in_ns(bed.c.client.name(), f)
}

/// Runs `f` on a new thread inside namespace `ns` (not joined).
pub(crate) fn in_ns<F, R>(ns: &str, f: F) -> std::thread::JoinHandle<Result<R>>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || -> Result<R> {
        let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .context("entering the client namespace")?;
        Ok(f())
    })
}

/// Tries new connections to `to` until one succeeds (bounded by LIMIT);
/// returns when it did.
pub(crate) fn first_connect(to: SocketAddr, phase: Duration) -> Option<Instant> {
    std::thread::sleep(phase);
    let end = Instant::now() + LIMIT;
    while Instant::now() < end {
        if TcpStream::connect_timeout(&to, Duration::from_millis(10)).is_ok() {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

/// One attempt of [`first_connect`] takes this long when nothing answers
/// (the 10 ms connect timeout and the 1 ms pause).
const ATTEMPT_PERIOD: Duration = Duration::from_millis(11);

/// Where trial `n`'s client starts its attempts after T0: spread evenly
/// over one attempt period, every tenth of it in turn. A real client
/// connecting every 10 ms is not in step with the failure; a client that
/// always starts at T0 is, and rounds every figure to the next multiple
/// of 11 ms (a failover 2 ms faster could gain 11 ms or nothing).
pub(crate) fn client_phase(n: usize) -> Duration {
    // n % 10 < 10: fits in u32.
    #[allow(clippy::cast_possible_truncation)]
    let tenth = (n % 10) as u32;
    ATTEMPT_PERIOD * tenth / 10
}

struct Trial {
    victim_led: bool,
    reconnect_ms: f64,
    reset_ms: Option<f64>,
    phases: Option<Phases>,
}

/// One single-address failover; trial `n` (names its capture file). With
/// `phases`, also breaks it down into phases (logs and a packet capture).
fn trial(bed: &mut Bed, n: usize, phases: bool, leader_victim: bool) -> Result<Trial> {
    // The victim kind asked for: move the address to the leader, or away
    // from it, first (a figure counts over every kind of victim).
    let settled = bed.wait_settled()?;
    let leader: Option<usize> =
        (0..3).find_map(|i| bed.cli(i, &["leader"]).ok()?.trim().parse().ok());
    if let Some(leader) = leader {
        let at = settled[&public(0)];
        let want = if leader_victim {
            leader
        } else {
            (0..3).find(|&i| i != leader).unwrap_or(0)
        };
        if (at == leader) != leader_victim {
            let _ = bed.cli(
                leader,
                &["moveip", &public(0).to_string(), &want.to_string()],
            );
        }
    }
    // Settled, and still the same 300 ms later (the last run's
    // announcements are over, and no run was still moving addresses: a
    // trial that starts while the address moves measures nothing).
    let mut placed = bed.wait_settled()?;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(300));
        let now = bed.wait_settled()?;
        if now == placed {
            break;
        }
        placed = now;
    }
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
    let capture = if phases { Capture::start(bed, n) } else { None };
    let (t0, t0_wall) = bed.unplug(victim)?;
    let phase = client_phase(n);
    let connector = in_client(bed, move || first_connect(server, phase));
    bed.kill(victim);
    let connected = connector
        .join()
        .map_err(|_| anyhow::anyhow!("connector panicked"))??
        .context("no new connection within the limit")?;
    let (reset, at) = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))?;
    let phases = phases.then(|| {
        let mut p = phases_from_logs(bed, victim, addr, t0_wall);
        if let Some(c) = capture {
            (p.first_garp, p.syn_ack) = c.finish(bed, addr, t0_wall);
        }
        p
    });
    let result = Trial {
        victim_led,
        reconnect_ms: (connected - t0).as_secs_f64() * 1e3,
        // A reset before T0 (something moved the address early) is no
        // measurement.
        reset_ms: (reset && at > t0).then(|| (at - t0).as_secs_f64() * 1e3),
        phases,
    };
    if reset && at <= t0 {
        eprintln!("the idle client was reset before T0");
    }
    bed.power_on(victim)?;
    Ok(result)
}

/// Mass failover of `count` addresses hosted by node 0, which leads when
/// `victim_leads` (it starts first, with node 2) and otherwise cannot
/// lead.
fn mass(profile: &str, count: usize, victim_leads: bool) -> Result<(f64, f64)> {
    let addrs: Vec<IpAddr> = (0..count).map(public).collect();
    let non_leaders: &[usize] = if victim_leads { &[] } else { &[0] };
    let mut bed = Bed::new(
        &format!("bfm{}{}", &profile[..1], u8::from(victim_leads)),
        profile,
        vec![addrs.clone(), addrs.clone(), Vec::new()],
        "[tunables]\nNoIPFailback = 1\n",
        &[0, 2],
        non_leaders,
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
    let (t0, t0_wall) = bed.unplug(0)?;
    if std::env::var_os("FAILOVER_BENCH_LOGS").is_some() {
        eprintln!("T0 at {t0_wall:.3} ms since the epoch");
    }
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
            // One attempt per address at a time, each kept up to 250 ms:
            // the client never resolved these addresses, so an attempt's
            // SYN waits in the client's neighbour queue and leaves as soon
            // as the new owner's gratuitous ARP resolves the address — the
            // answer is seen without polling. (Attempts of 20 ms every
            // 22 ms, as before, made the client open and close 11,600
            // sockets a second, load that made the 30 ms leases of the
            // fast profile flap on the 2 shared cores.)
            let tasks = targets.into_iter().map(|to| async move {
                let end = tokio::time::Instant::now() + LIMIT;
                while tokio::time::Instant::now() < end {
                    let c = tokio::time::timeout(
                        Duration::from_millis(250),
                        tokio::net::TcpStream::connect(to),
                    )
                    .await;
                    if matches!(c, Ok(Ok(_))) {
                        return Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
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
        keep_logs(
            &bed,
            std::path::Path::new(&dir),
            &format!(
                "{profile}-mass{}",
                if victim_leads { "-leader" } else { "" }
            ),
        )?;
    }
    let configured = configured
        .join()
        .map_err(|_| anyhow::anyhow!("configured-poller panicked"))?
        .map_or(f64::NAN, |t| (t - t0).as_secs_f64() * 1e3);
    Ok(((last - t0).as_secs_f64() * 1e3, configured))
}

/// Copies every log and capture of `bed` into `dir`, names prefixed with
/// `tag` (`FAILOVER_BENCH_LOGS=DIR`: kept for inspection).
fn keep_logs(bed: &Bed, dir: &std::path::Path, tag: &str) -> Result<()> {
    for e in std::fs::read_dir(&bed.c.scratch)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".log") || name.ends_with(".txt") {
            let _ = std::fs::copy(e.path(), dir.join(format!("{tag}-{name}")));
        }
    }
    Ok(())
}

/// `bench failover` options.
#[derive(Debug, Clone, clap::Args)]
pub struct FailoverArgs {
    /// Single-address trials per profile (1 to 100).
    #[arg(long, default_value_t = 10, value_parser = super::count_in(1..=100))]
    pub trials: usize,
    /// The profile(s) measured.
    #[arg(long, value_enum, default_value_t = Profiles::Both)]
    pub profile: Profiles,
    /// Addresses of the mass failover (0 to 506; 0: none).
    #[arg(long, default_value_t = 256, value_parser = super::count_in(0..=506))]
    pub mass: usize,
    /// Addresses of the mass failover measured beside keepalived's (0 to
    /// 255, one VRRP instance each; 0: none).
    #[arg(long = "keepalived-mass", default_value_t = 64, value_parser = super::count_in(0..=255))]
    pub keepalived_mass: usize,
    /// Skip the keepalived baseline.
    #[arg(long = "no-keepalived")]
    pub no_keepalived: bool,
    /// Skip the breakdown of each trial into phases (from the daemons' logs
    /// and a capture in the client's namespace).
    #[arg(long = "no-phases")]
    pub no_phases: bool,
}

/// Runs the `failover` scenario.
///
/// # Errors
///
/// Not root, a binary missing (build with `cargo build --release
/// --workspace --bins`), or a trial that never completes.
pub fn run(args: &FailoverArgs) -> Result<()> {
    crate::netns::require_root();
    let trials = args.trials;
    let mass_count = args.mass;
    let phases = !args.no_phases;
    let baseline = !args.no_keepalived;
    let kl_mass = args.keepalived_mass;
    let profiles = args.profile.names();
    for p in profiles {
        // The baseline first, on the same topology, in the same run.
        let kl = if baseline {
            Some(super::keepalived::measure(p, trials, kl_mass, 3)?)
        } else {
            None
        };
        let kl_p50 = kl
            .as_ref()
            .map(|k| percentile(&mut k.reconnect.clone(), 50.0));
        if let Some(k) = &kl {
            let mut r = k.reconnect.clone();
            Figure::plain(
                "failover",
                &format!("keepalived_{p}_reconnect_p50"),
                percentile(&mut r, 50.0),
                "ms",
            )
            .print();
            Figure::plain(
                "failover",
                &format!("keepalived_{p}_reconnect_p99"),
                percentile(&mut r, 99.0),
                "ms",
            )
            .print();
            if !k.mass_all.is_empty() {
                Figure::plain(
                    "failover",
                    &format!("keepalived_{p}_mass{kl_mass}_all_answer_p50"),
                    percentile(&mut k.mass_all.clone(), 50.0),
                    "ms",
                )
                .print();
            }
        }
        let with_kl = |metric: String, value: f64| match kl_p50 {
            Some(b) => Figure::with_baseline("failover", &metric, value, "ms", b),
            None => Figure::plain("failover", &metric, value, "ms"),
        };
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
        let mut leader_reconnect = Vec::new();
        let (mut follower_reset, mut leader_reset) = (Vec::new(), Vec::new());
        let (mut follower_phases, mut leader_phases) = (Vec::new(), Vec::new());
        for t in 0..trials {
            // Half the trials kill the leader, half a follower.
            let r =
                trial(&mut bed, t, phases, t % 2 == 0).with_context(|| format!("{p} trial {t}"))?;
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
            if let Some(ph) = &r.phases {
                let steps: Vec<String> = ph
                    .named()
                    .iter()
                    .map(|(n, v)| v.map_or(format!("{n} -"), |v| format!("{n} {v:.1}")))
                    .collect();
                eprintln!("{p} trial {t} phases (ms after T0): {}", steps.join(", "));
                let row = (ph.clone(), r.reconnect_ms, r.reset_ms);
                if r.victim_led {
                    leader_phases.push(row);
                } else {
                    follower_phases.push(row);
                }
            }
            reconnect.push(r.reconnect_ms);
            if r.victim_led {
                leader_reconnect.push(r.reconnect_ms);
                leader_reset.extend(r.reset_ms);
            } else {
                follower_reconnect.push(r.reconnect_ms);
                follower_reset.extend(r.reset_ms);
            }
            match r.reset_ms {
                Some(v) => reset.push(v),
                None => not_reset += 1,
            }
        }
        if let Some(dir) = std::env::var_os("FAILOVER_BENCH_LOGS") {
            keep_logs(&bed, std::path::Path::new(&dir), p)?;
        }
        drop(bed);
        print_phases(p, "", &follower_phases);
        print_phases(p, "leader_victim_", &leader_phases);
        let p50 = percentile(&mut reconnect.clone(), 50.0);
        // Over every trial, whichever node died, beside keepalived's.
        with_kl(format!("{p}_reconnect_p50"), p50).print();
        with_kl(
            format!("{p}_reconnect_p99"),
            percentile(&mut reconnect, 99.0),
        )
        .print();
        for (kind, rec, res) in [
            ("leader", &leader_reconnect, &leader_reset),
            ("not_leader", &follower_reconnect, &follower_reset),
        ] {
            if rec.is_empty() {
                eprintln!("{p}: no trial whose victim was {kind}");
                continue;
            }
            with_kl(
                format!("{p}_reconnect_p50_victim_{kind}"),
                percentile(&mut rec.clone(), 50.0),
            )
            .print();
            with_kl(
                format!("{p}_reconnect_p99_victim_{kind}"),
                percentile(&mut rec.clone(), 99.0),
            )
            .print();
            if !res.is_empty() {
                Figure::plain(
                    "failover",
                    &format!("{p}_idle_reset_p50_victim_{kind}"),
                    percentile(&mut res.clone(), 50.0),
                    "ms",
                )
                .print();
            }
        }
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
        if mass_count > 0 {
            // Against the same profile's single-address reconnect p50 of
            // the same victim kind.
            for (leads, kind, rec) in [
                (true, "leader", &leader_reconnect),
                (false, "not_leader", &follower_reconnect),
            ] {
                let single = if rec.is_empty() {
                    p50
                } else {
                    percentile(&mut rec.clone(), 50.0)
                };
                let (m, configured) = mass(p, mass_count, leads)?;
                Figure::plain(
                    "failover",
                    &format!("{p}_mass{mass_count}_all_configured_victim_{kind}"),
                    configured,
                    "ms",
                )
                .print();
                Figure::with_baseline(
                    "failover",
                    &format!("{p}_mass{mass_count}_all_answer_victim_{kind}"),
                    m,
                    "ms",
                    single,
                )
                .print();
            }
        }
        if let Some(k) = kl.as_ref().filter(|k| !k.mass_all.is_empty()) {
            // The same count as keepalived's, against keepalived's.
            let kl_m = percentile(&mut k.mass_all.clone(), 50.0);
            for (leads, kind) in [(true, "leader"), (false, "not_leader")] {
                let (m, _) = mass(p, kl_mass, leads)?;
                Figure::with_baseline(
                    "failover",
                    &format!("{p}_mass{kl_mass}_all_answer_victim_{kind}"),
                    m,
                    "ms",
                    kl_m,
                )
                .print();
            }
        }
    }
    Ok(())
}

/// When each step of one failover happened, in ms after T0, from the
/// daemons' logs (their info lines carry wall-clock timestamps) and a
/// packet capture in the client's namespace. `None`: not seen.
#[derive(Debug, Clone, Default)]
struct Phases {
    /// A survivor's clusterd publishes the victim DISCONNECTED.
    disconnected: Option<f64>,
    /// The leader's failoverd hears that the victim's addresses may be
    /// given away (its lease certainly lapsed).
    reassignable: Option<f64>,
    /// The takeover run that moves them starts.
    run_start: Option<f64>,
    /// Its reports (GET_PUBLIC_IPS) are in.
    reports: Option<f64>,
    /// Its releases are acknowledged (plan included).
    releases_acked: Option<f64>,
    /// The new owner has added the address ("took addresses").
    taken: Option<f64>,
    /// The client sees the first gratuitous ARP for the address.
    first_garp: Option<f64>,
    /// The client sees the first SYN-ACK from the address.
    syn_ack: Option<f64>,
    /// The run's takes are acknowledged.
    takes_acked: Option<f64>,
}

impl Phases {
    /// The phases in the order they happen, with their names.
    fn named(&self) -> [(&'static str, Option<f64>); 9] {
        [
            ("disconnected", self.disconnected),
            ("reassignable", self.reassignable),
            ("run_start", self.run_start),
            ("reports", self.reports),
            ("releases_acked", self.releases_acked),
            ("taken", self.taken),
            ("first_garp", self.first_garp),
            ("syn_ack", self.syn_ack),
            ("takes_acked", self.takes_acked),
        ]
    }
}

/// Milliseconds since the Unix epoch.
fn epoch_ms(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// `line` without ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Days from 1970-01-01 to a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The leading RFC 3339 UTC timestamp of a tracing line
/// (`2026-11-24T05:50:01.123456Z ...`), in ms since the epoch.
fn log_time(line: &str) -> Option<f64> {
    let ts = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(str::parse::<i64>);
    let (y, mo, da) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let h: i64 = t.next()?.parse().ok()?;
    let mi: i64 = t.next()?.parse().ok()?;
    let s: f64 = t.next()?.parse().ok()?;
    let whole = days_from_civil(y, mo, da) * 86_400 + h * 3_600 + mi * 60;
    #[allow(clippy::cast_precision_loss)] // seconds since 1970: far below 2^52
    Some((whole as f64 + s) * 1e3)
}

/// The value of `name=` in a tracing line (up to the next space).
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=");
    let at = line.find(&key)? + key.len();
    line[at..].split_whitespace().next()
}

/// Lines of a log written after `t0` (ms since the epoch), with their time.
pub(crate) fn log_lines_after(path: &std::path::Path, t0: f64) -> Vec<(f64, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(strip_ansi)
        .filter_map(|l| log_time(&l).filter(|&t| t >= t0).map(|t| (t, l)))
        .collect()
}

/// `tcpdump` in the client's namespace, writing gratuitous ARPs and
/// SYN-ACKs from public addresses to a file, for the phases a client sees.
struct Capture {
    pid: u32,
    out: std::path::PathBuf,
}

impl Capture {
    /// Starts the capture and waits (bounded) until tcpdump listens.
    /// `None` (with a warning) when tcpdump cannot run.
    fn start(bed: &Bed, n: usize) -> Option<Capture> {
        let out = bed.c.scratch.join(format!("capture{n}.txt"));
        let err = bed.c.scratch.join(format!("capture{n}.err"));
        let files = std::fs::File::create(&out)
            .and_then(|o| Ok((o, std::fs::File::create(&err)?)))
            .ok()?;
        let mut cmd = bed.c.client.command("tcpdump");
        cmd.args([
            "-i",
            "eth0",
            "-n",
            "-l",
            "-tt",
            "--immediate-mode",
            "-s",
            "128",
        ])
        .arg(format!(
            "arp or (tcp and src port {PORT} and tcp[tcpflags] & tcp-syn != 0)"
        ))
        .stdout(files.0)
        .stderr(files.1);
        let pid = match bed.c.client.spawn(cmd) {
            Ok(pid) => pid,
            Err(e) => {
                eprintln!("warning: no packet capture ({e}): client-side phases not measured");
                return None;
            }
        };
        let listening = wait_for("tcpdump listening", Duration::from_secs(5), POLL, || {
            std::fs::read_to_string(&err)
                .is_ok_and(|t| t.contains("listening on"))
                .then_some(())
        });
        if let Err(e) = listening {
            eprintln!("warning: {e}: client-side phases not measured");
            bed.c.client.kill(pid);
            return None;
        }
        Some(Capture { pid, out })
    }

    /// Stops the capture; returns (first gratuitous ARP for `addr`, first
    /// SYN-ACK from it), in ms after `t0` (ms since the epoch).
    fn finish(self, bed: &Bed, addr: IpAddr, t0: f64) -> (Option<f64>, Option<f64>) {
        // Let the last packets reach the file.
        std::thread::sleep(Duration::from_millis(50));
        bed.c.client.kill(self.pid);
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let (mut garp, mut syn_ack) = (None, None);
        let announce = [format!("tell {addr},"), format!("Reply {addr} is-at")];
        let answer = format!("IP {addr}.{PORT} >");
        for line in text.lines() {
            let Some(t) = line
                .split_whitespace()
                .next()
                .and_then(|s| s.parse::<f64>().ok())
                .map(|s| s * 1e3 - t0)
                .filter(|&t| t >= 0.0)
            else {
                continue;
            };
            if garp.is_none() && announce.iter().any(|a| line.contains(a.as_str())) {
                garp = Some(t);
            }
            if syn_ack.is_none() && line.contains(&answer) && line.contains("Flags [S.]") {
                syn_ack = Some(t);
            }
        }
        (garp, syn_ack)
    }
}

/// The phases of the failover of `addr` from `victim` that began at `t0`
/// (ms since the epoch), from the survivors' logs.
fn phases_from_logs(bed: &Bed, victim: usize, addr: IpAddr, t0: f64) -> Phases {
    let mut p = Phases::default();
    let log = |i: usize, name: &str| {
        log_lines_after(&bed.c.scratch.join(format!("node{i}-{name}.log")), t0)
    };
    let earliest = |a: Option<f64>, b: f64| Some(a.map_or(b, |a| a.min(b)));
    let me = victim.to_string();
    // (end, gather, plan, release, take) of every run that moved something.
    let mut runs: Vec<(f64, f64, f64, f64, f64)> = Vec::new();
    for s in (0..bed.c.nodes.len()).filter(|&i| i != victim) {
        for (t, l) in log(s, "clusterd") {
            let down = l.contains(" membership ")
                && l.split_once("nodes=").is_some_and(|(_, nodes)| {
                    nodes.split_whitespace().any(|n| {
                        n.split_once(':')
                            .is_some_and(|(pnn, f)| pnn == me && f.contains("DISCONNECTED"))
                    })
                });
            if down {
                p.disconnected = earliest(p.disconnected, t - t0);
                break;
            }
        }
        let took = [format!("{addr}]"), format!("{addr},")];
        let mut seen_reassignable = false;
        let mut seen_take = false;
        for (t, l) in log(s, "failoverd") {
            if !seen_reassignable && l.contains("reassignable nodes changed") {
                let listed = field(&l, "reassignable").is_some_and(|v| {
                    v.trim_matches(|c| c == '[' || c == ']')
                        .split(',')
                        .any(|x| x.trim() == me)
                });
                if listed {
                    seen_reassignable = true;
                    p.reassignable = earliest(p.reassignable, t - t0);
                }
            }
            if l.contains("takeover run timing") {
                let us = |name: &str| field(&l, name).and_then(|v| v.parse::<f64>().ok());
                if let (Some(g), Some(pl), Some(r), Some(tk)) = (
                    us("gather_us"),
                    us("plan_us"),
                    us("release_us"),
                    us("take_us"),
                ) {
                    if us("moved").unwrap_or(0.0) >= 1.0 {
                        runs.push((t - t0, g / 1e3, pl / 1e3, r / 1e3, tk / 1e3));
                    }
                }
            }
            if !seen_take
                && l.contains("took addresses")
                && took.iter().any(|a| l.contains(a.as_str()))
            {
                seen_take = true;
                p.taken = earliest(p.taken, t - t0);
            }
        }
    }
    // The run that moved the address: the first to end after the new
    // owner added it (or the first that moved anything).
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let run = runs
        .iter()
        .find(|r| p.taken.is_some_and(|t| r.0 >= t))
        .or_else(|| runs.first());
    if let Some(&(end, g, pl, r, tk)) = run {
        let start = end - (g + pl + r + tk);
        p.run_start = Some(start);
        p.reports = Some(start + g);
        p.releases_acked = Some(start + g + pl + r);
        p.takes_acked = Some(end);
    }
    p
}

/// Prints the p50 of each phase over `trials` (stderr summary and one
/// figure per phase, named `{profile}_{tag}phase_{name}_p50`).
fn print_phases(profile: &str, tag: &str, trials: &[(Phases, f64, Option<f64>)]) {
    if trials.is_empty() {
        return;
    }
    let mut line = format!(
        "{profile}: phases p50 (ms after T0){} over {} trials:",
        if tag.is_empty() {
            ""
        } else {
            ", victim also the leader"
        },
        trials.len()
    );
    let mut names: Vec<(&str, Vec<f64>)> = Phases::default()
        .named()
        .iter()
        .map(|(n, _)| (*n, Vec::new()))
        .collect();
    for (p, _, _) in trials {
        for (k, (_, v)) in p.named().iter().enumerate() {
            if let Some(v) = v {
                names[k].1.push(*v);
            }
        }
    }
    names.push(("connected", trials.iter().map(|t| t.1).collect()));
    names.push(("idle_reset", trials.iter().filter_map(|t| t.2).collect()));
    for (name, mut v) in names {
        if v.is_empty() {
            continue;
        }
        let p50 = percentile(&mut v, 50.0);
        line.push_str(&format!(" {name} {p50:.1}"));
        Figure::plain(
            "failover",
            &format!("{profile}_{tag}phase_{name}_p50"),
            p50,
            "ms",
        )
        .print();
    }
    eprintln!("{line}");
}
