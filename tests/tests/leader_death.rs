//! The leader's death touches no other node (issue 13, docs/clusterd.md
//! "Leases"): a 3-node [`TestCluster`] running transportd, clusterd,
//! conntrackd and failoverd as processes in each node's namespace, six
//! public addresses 198.51.100.201-206/24 on each node's `eth1`, the default
//! timing profile. The leader is powered off (cable pulled, every process
//! SIGKILLed) in one test and stopped cleanly (SIGTERM to each of its
//! daemons, as `systemctl stop` does through masterd) in the other.
//!
//! While it happens:
//! * a sampler reads every node's addresses over rtnetlink every few ms and
//!   fails if a survivor ever lacks one of the addresses it hosted before
//!   (or if an address is on two nodes at once, with the two-read rule of
//!   failover_cluster.rs);
//! * an idle client connection to a survivor's address, blocked in a read,
//!   must not be reset;
//! * a client connects to every survivor address every 10 ms and fails if
//!   one connection fails;
//! * the survivors' failoverd logs must not say `lease not valid: dropping
//!   public addresses`.
//!
//! The time until the leader's addresses are hosted by the survivors is
//! printed (one lease + margin + the takeover run is expected), never
//! asserted. Measured in a debug build on a loaded 2-core machine: 545-650
//! ms after a power-off, 615-710 ms after SIGTERM (1.2-1.3 s before
//! majority leases, when the same test saw survivor addresses dropped).
//!
//! The default profile only: with the fast one (30 ms leases) a debug build
//! on a busy machine loses leases in steady state, before any fault, with
//! or without majority leases (issue 13, item 5).

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tests::cluster::{bin_path, TestCluster};
use tests::netns::{require_root, wait_for};

const POLL: Duration = Duration::from_millis(50);
const LIMIT: Duration = Duration::from_secs(40);
/// The idle connection's port (the server side never answers).
const IDLE_PORT: u16 = 7447;
/// The connector's port (the server side accepts and closes).
const CONNECT_PORT: u16 = 7448;
const LIST: [u8; 6] = [201, 202, 203, 204, 205, 206];
/// How long the survivors are watched after the leader's addresses moved.
const AFTER: Duration = Duration::from_secs(2);

fn public(i: u8) -> IpAddr {
    format!("198.51.100.{i}").parse().unwrap()
}

/// 198.51.100.0/24 but the client's own address.
fn is_public(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[..3] == [198, 51, 100] && o[3] != 100
        }
        IpAddr::V6(_) => false,
    }
}

struct Bed {
    c: TestCluster,
    eth1_ports: Vec<String>,
    /// Nodes whose addresses count (a powered-off node's kernel keeps its
    /// addresses, but nobody reaches them).
    powered: Arc<Mutex<Vec<bool>>>,
    /// Every daemon's pid per node, in start order.
    pids: Mutex<Vec<Vec<(String, u32)>>>,
}

impl Bed {
    fn new(tag: &str) -> Bed {
        let c = TestCluster::new(tag, 3).unwrap();
        let eth1_ports = c.add_public_ports("198.51.100.100/24").unwrap();
        let nodes: String = c.nodes.iter().map(|n| format!("{}\n", n.addr)).collect();
        let pa: String = LIST
            .iter()
            .map(|i| format!("198.51.100.{i}/24 eth1\n"))
            .collect();
        for n in &c.nodes {
            let toml = format!(
                "[transport]\nrun_dir = \"{}\"\n\n\
                 [failover]\ngarp_count = 3\ngarp_interval_ms = 100\nrelease_timeout_ms = 3000\n\n\
                 [conntrack]\nscan_interval_ms = 200\n\n\
                 [logging]\nlevel = \"info\"\n",
                n.run_dir.display()
            );
            std::fs::write(n.config_dir.join("ipfailover.toml"), toml).unwrap();
            std::fs::write(n.config_dir.join("nodes"), &nodes).unwrap();
            std::fs::write(n.config_dir.join("public_addresses"), &pa).unwrap();
        }
        let bed = Bed {
            powered: Arc::new(Mutex::new(vec![true; c.nodes.len()])),
            pids: Mutex::new(vec![Vec::new(); c.nodes.len()]),
            c,
            eth1_ports,
        };
        for i in 0..bed.c.nodes.len() {
            let t = bed.c.start_transportd(i).unwrap();
            bed.pids.lock().unwrap()[i].push(("transportd".into(), t));
            for name in ["clusterd", "conntrackd", "failoverd"] {
                let pid = bed.c.start_daemon(i, name).unwrap();
                bed.pids.lock().unwrap()[i].push((name.into(), pid));
            }
        }
        bed
    }

    fn power_off(&self, i: usize) {
        self.powered.lock().unwrap()[i] = false;
        self.c.lan.set_port(&self.eth1_ports[i], false).unwrap();
        self.c.power_off(i).unwrap();
    }

    /// SIGTERM to node `i`'s daemons, the last started first (failoverd,
    /// conntrackd, clusterd, transportd), each waited for up to 10 s.
    fn stop_cleanly(&self, i: usize) {
        let pids: Vec<(String, u32)> = self.pids.lock().unwrap()[i].clone();
        for (name, pid) in pids.iter().rev() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(*pid).unwrap());
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
            let gone = wait_for(&format!("{name} to exit"), LIMIT / 4, POLL, || {
                // A zombie until the guard reaps it: look at its state.
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
                stat.is_none_or(|s| s.contains(") Z ")).then_some(())
            });
            assert!(gone.is_ok(), "node {i}: {name} ignored SIGTERM");
        }
    }

    fn cli(&self, i: usize, args: &[&str]) -> (bool, String) {
        let out = Command::new(bin_path("ipfailover").unwrap())
            .arg("--run-dir")
            .arg(&self.c.nodes[i].run_dir)
            .args(["-t", "20"])
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn logs(&self) -> String {
        self.c.log_tails(&["clusterd", "failoverd"], 25)
    }

    fn failoverd_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.c.scratch.join(format!("node{i}-failoverd.log")))
            .unwrap_or_default()
    }

    /// Which powered node hosts each public address, if every one of them
    /// is hosted exactly once.
    fn placement(&self) -> Option<BTreeMap<IpAddr, usize>> {
        let powered = self.powered.lock().unwrap().clone();
        let mut at: BTreeMap<IpAddr, Vec<usize>> = BTreeMap::new();
        for (i, n) in self.c.nodes.iter().enumerate() {
            if powered[i] {
                for a in addresses_on(n.ns.name()) {
                    at.entry(a).or_default().push(i);
                }
            }
        }
        let mut out = BTreeMap::new();
        for &k in &LIST {
            match at.get(&public(k)).map(Vec::as_slice) {
                Some([one]) => {
                    out.insert(public(k), *one);
                }
                _ => return None,
            }
        }
        Some(out)
    }

    fn wait_placed(&self, what: &str) -> BTreeMap<IpAddr, usize> {
        match wait_for(what, LIMIT, POLL, || self.placement()) {
            Ok(p) => p,
            Err(e) => panic!("{e}\n{}", self.logs()),
        }
    }
}

/// The public addresses configured in namespace `ns` (`ip addr`).
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

/// What the sampler saw.
struct Seen {
    /// A survivor without one of its addresses, or an address on two nodes.
    violations: Vec<String>,
    samples: usize,
    max_gap: Duration,
    /// When every one of the leader's addresses was first on a survivor.
    moved_at: Option<Instant>,
}

/// Samples every node's addresses (rtnetlink, one socket per namespace)
/// until `stop`, at most 10 minutes.
fn sample(
    names: Vec<String>,
    powered: Arc<Mutex<Vec<bool>>>,
    keep: BTreeMap<usize, Vec<IpAddr>>,
    leaders: Vec<IpAddr>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Seen> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let handles: Vec<netlink::link::Netlink> = names
            .iter()
            .map(|name| {
                let file = std::fs::File::open(format!("/run/netns/{name}")).unwrap();
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                rt.block_on(async { netlink::link::Netlink::new() })
                    .unwrap()
            })
            .collect();
        let mut seen = Seen {
            violations: Vec::new(),
            samples: 0,
            max_gap: Duration::ZERO,
            moved_at: None,
        };
        let mut last = Instant::now();
        let end = Instant::now() + Duration::from_secs(600);
        while !stop.load(Ordering::Relaxed) && Instant::now() < end {
            let on = powered.lock().unwrap().clone();
            let read = |i: usize| -> Vec<IpAddr> {
                if !on[i] {
                    return Vec::new();
                }
                rt.block_on(handles[i].all_addresses())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(_, p)| p.addr())
                    .filter(|a| is_public(*a))
                    .collect()
            };
            let first: Vec<Vec<IpAddr>> = (0..names.len()).map(read).collect();
            let second: Vec<Vec<IpAddr>> = (0..names.len()).map(read).collect();
            let now = Instant::now();
            for (s, addrs) in &keep {
                for a in addrs {
                    if (!first[*s].contains(a) || !second[*s].contains(a))
                        && seen.violations.len() < 100
                    {
                        seen.violations
                            .push(format!("survivor {s} lacked its address {a}"));
                    }
                }
            }
            for p in 0..names.len() {
                for a in first[p].iter().filter(|a| second[p].contains(a)) {
                    for q in (0..names.len()).filter(|q| *q != p) {
                        let between = if q > p { &first[q] } else { &second[q] };
                        if between.contains(a) && seen.violations.len() < 100 {
                            seen.violations.push(format!("{a} on nodes {p} and {q}"));
                        }
                    }
                }
            }
            if seen.moved_at.is_none()
                && leaders
                    .iter()
                    .all(|a| keep.keys().any(|s| first[*s].contains(a)))
            {
                seen.moved_at = Some(now);
            }
            seen.samples += 1;
            seen.max_gap = seen.max_gap.max(now - last);
            last = now;
            std::thread::sleep(Duration::from_millis(3));
        }
        seen
    })
}

/// A listener on every node that accepts connections and closes them.
fn accept_and_close_everywhere(c: &TestCluster, stop: &Arc<AtomicBool>) {
    for n in &c.nodes {
        let l =
            n.ns.run(move || -> std::io::Result<std::net::TcpListener> {
                let l = std::net::TcpListener::bind(("0.0.0.0", CONNECT_PORT))?;
                l.set_nonblocking(true)?;
                Ok(l)
            })
            .unwrap()
            .unwrap();
        let stop = Arc::clone(stop);
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(600);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                if l.accept().is_err() {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
    }
}

fn leader_death(tag: &str, clean: bool) {
    require_root();
    let bed = Bed::new(tag);
    let placed = bed.wait_placed("every address hosted exactly once");
    // The leader as the nodes see it (they agree once placement is done).
    let leader = wait_for("a leader", LIMIT, POLL, || {
        let (ok, text) = bed.cli(1, &["leader"]);
        text.trim().parse::<usize>().ok().filter(|_| ok)
    })
    .unwrap();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let keep: BTreeMap<usize, Vec<IpAddr>> = survivors
        .iter()
        .map(|s| {
            let mine = placed
                .iter()
                .filter(|(_, n)| **n == *s)
                .map(|(a, _)| *a)
                .collect();
            (*s, mine)
        })
        .collect();
    let leaders: Vec<IpAddr> = placed
        .iter()
        .filter(|(_, n)| **n == leader)
        .map(|(a, _)| *a)
        .collect();
    assert!(
        keep.values().all(|v| !v.is_empty()) && !leaders.is_empty(),
        "every node hosts something: {placed:?}"
    );
    let survivor_addrs: Vec<IpAddr> = keep.values().flatten().copied().collect();

    let stop = Arc::new(AtomicBool::new(false));
    bed.c.listen_everywhere(IDLE_PORT, &stop).unwrap();
    accept_and_close_everywhere(&bed.c, &stop);

    // The idle client, on the first survivor address, blocked in a read.
    let idle = SocketAddr::new(survivor_addrs[0], IDLE_PORT);
    let stream = bed
        .c
        .client
        .run(move || TcpStream::connect_timeout(&idle, Duration::from_secs(5)).unwrap())
        .unwrap();
    // Reads in slices of 100 ms until the test ends: `Ok(())` if the
    // connection stayed open and silent, else what ended it.
    let reader_stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = Arc::clone(&reader_stop);
        std::thread::spawn(move || -> Result<(), String> {
            let mut stream = stream;
            stream
                .set_read_timeout(Some(Duration::from_millis(100)))
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 8];
            let end = Instant::now() + Duration::from_secs(600);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                match stream.read(&mut buf) {
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) => return Err(e.to_string()),
                    Ok(0) => return Err("closed by the server".into()),
                    Ok(n) => return Err(format!("{n} unexpected bytes")),
                }
            }
            Ok(())
        })
    };

    // The connector: every 10 ms, one connection to each survivor address,
    // from the client's namespace.
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let attempts = Arc::new(AtomicUsize::new(0));
    let connector_stop = Arc::new(AtomicBool::new(false));
    let connector = {
        let (stop, failures, attempts) = (
            Arc::clone(&connector_stop),
            Arc::clone(&failures),
            Arc::clone(&attempts),
        );
        let addrs = survivor_addrs.clone();
        let file = std::fs::File::open(format!("/run/netns/{}", bed.c.client.name())).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let end = Instant::now() + Duration::from_secs(600);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                for a in &addrs {
                    let to = SocketAddr::new(*a, CONNECT_PORT);
                    attempts.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = TcpStream::connect_timeout(&to, Duration::from_millis(500)) {
                        // Wall-clock time, to find the moment in the logs.
                        let at = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap_or_default();
                        failures.lock().unwrap().push(format!(
                            "{to}: {e} (tried at {:.3} s since the epoch)",
                            at.as_secs_f64() - 0.5
                        ));
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    let names: Vec<String> = bed
        .c
        .nodes
        .iter()
        .map(|n| n.ns.name().to_string())
        .collect();
    let sampler_stop = Arc::new(AtomicBool::new(false));
    let sampler = sample(
        names,
        Arc::clone(&bed.powered),
        keep.clone(),
        leaders.clone(),
        Arc::clone(&sampler_stop),
    );
    std::thread::sleep(Duration::from_millis(500));

    // Only what the survivors log from now on counts (failoverd starts
    // without a lease and says so).
    let log_start: Vec<usize> = (0..3).map(|i| bed.failoverd_log(i).len()).collect();
    let t0 = Instant::now();
    if clean {
        bed.stop_cleanly(leader);
    } else {
        bed.power_off(leader);
    }
    let moved = wait_for(
        "the leader's addresses on the survivors",
        LIMIT,
        POLL,
        || {
            let p = bed.placement()?;
            leaders
                .iter()
                .all(|a| p.get(a).is_some_and(|n| *n != leader))
                .then_some(())
        },
    );
    if let Err(e) = moved {
        panic!("{e}\n{}", bed.logs());
    }
    std::thread::sleep(AFTER);
    sampler_stop.store(true, Ordering::Relaxed);
    let seen = sampler.join().unwrap();
    // The reader and the connector first: the listeners close what they
    // kept when they stop.
    reader_stop.store(true, Ordering::Relaxed);
    let read = reader.join().unwrap();
    connector_stop.store(true, Ordering::Relaxed);
    connector.join().unwrap();
    stop.store(true, Ordering::Relaxed);

    let how = if clean { "SIGTERM" } else { "power-off" };
    let moved_after = seen.moved_at.map(|m| m.saturating_duration_since(t0));
    eprintln!(
        "leader {leader} {how}: its addresses {leaders:?} hosted by the survivors after {moved_after:?}; \
         sampler: {} samples, largest gap {:?}; connector: {} attempts, {} failed",
        seen.samples,
        seen.max_gap,
        attempts.load(Ordering::Relaxed),
        failures.lock().unwrap().len()
    );
    assert!(
        seen.samples > 50,
        "the sampler hardly ran ({})",
        seen.samples
    );
    assert!(
        seen.violations.is_empty(),
        "{how} of the leader: {:?}\n{}",
        &seen.violations[..seen.violations.len().min(10)],
        bed.logs()
    );
    for s in &survivors {
        let log = bed.failoverd_log(*s);
        let log = log.get(log_start[*s]..).unwrap_or_default();
        assert!(
            !log.contains("dropping every public address"),
            "survivor {s} dropped its addresses for a lost lease\n{}",
            bed.logs()
        );
    }
    assert!(
        read.is_ok(),
        "the idle connection to survivor address {} ended: {read:?}\n{}",
        survivor_addrs[0],
        bed.logs()
    );
    let failures = failures.lock().unwrap();
    // A survivor address that left its kernel is caught by the sampler and
    // the log check above; here a refused or reset connection fails at
    // once; time-outs are reported (see below).
    let timeouts = failures.iter().filter(|f| f.contains("timed out")).count();
    let others: Vec<&String> = failures
        .iter()
        .filter(|f| !f.contains("timed out"))
        .collect();
    // A time-out fails the test unless a survivor's failoverd logged that
    // its kernel lease ran out before a renewal: then the machine was too
    // busy to keep the survivor's lease going (heartbeats or lease news
    // late by hundreds of ms, seen at CPU pressure ~90 %: the load problem
    // of #13 item 5, not a leader-death one), which is reported. Before the
    // kernel-lease fix (a renewal with the timeout the element already had
    // was a no-op in the kernel, see `netlink::lease`) 1-3 time-outs came
    // in most runs on any machine.
    let mut starved = false;
    if timeouts > 0 {
        eprintln!("{timeouts} connection time-out(s) to survivor addresses: {failures:?}");
        for s in &survivors {
            let log = bed.failoverd_log(*s);
            let log = log.get(log_start[*s]..).unwrap_or_default();
            starved |= log.contains("kernel lease renewed after its elements ran out");
            eprintln!("--- survivor {s}: failoverd since the leader's death ---\n{log}");
        }
    }
    assert!(
        timeouts == 0 || starved,
        "{timeouts} connection(s) to survivor addresses timed out with every kernel lease renewed in time: {:?}",
        &failures[..failures.len().min(10)]
    );
    if timeouts > 0 {
        eprintln!("NOTE: time-outs while a survivor's kernel lease ran out before its renewal (machine too busy): reported, not failed");
    }
    assert!(
        attempts.load(Ordering::Relaxed) > 50 && others.is_empty(),
        "connections to survivor addresses failed: {:?}",
        &failures[..failures.len().min(10)]
    );
}

#[test]
fn leader_power_off_touches_no_survivor_address() {
    leader_death("ld1", false);
}

#[test]
fn leader_clean_stop_touches_no_survivor_address() {
    leader_death("ld2", true);
}
