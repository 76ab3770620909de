//! failoverd as real processes: every node of a 3-node [`TestCluster`] runs
//! transportd, clusterd, conntrackd and failoverd in its own namespace; the
//! public addresses 198.51.100.201-206/24 live on each node's `eth1` (a
//! second port on the same switch), the client has 198.51.100.100/24. The
//! lease-loss tests add 198.51.100.210, which only node 1 lists.
//!
//! A sampler thread lists the public addresses configured in every powered
//! node's namespace, over and over (a pass takes a few ms; passes are at most
//! 50 ms apart, the largest gap is printed), and records any address seen on
//! two nodes at once: each node is read twice per sample, and an address
//! counts as double only if node P had it on both of its reads and node Q had
//! it on the read of Q that happened between them.
//!
//! Timing is printed, never asserted tightly: the limits below are generous
//! so that a loaded machine does not fail the tests.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tests::cluster::{bin_path, TestCluster};
use tests::netns::{require_root, wait_for};

const POLL: Duration = Duration::from_millis(50);
const LIMIT: Duration = Duration::from_secs(40);
const PORT: u16 = 7445;

fn public(i: u8) -> IpAddr {
    format!("198.51.100.{i}").parse().unwrap()
}

/// The test bed: the cluster plus each node's `eth1` switch port.
struct Bed {
    c: TestCluster,
    eth1_ports: Vec<String>,
    powered: Arc<Mutex<Vec<bool>>>,
    failoverd_pids: Mutex<Vec<u32>>,
    clusterd_pids: Mutex<Vec<u32>>,
    conntrackd_pids: Mutex<Vec<u32>>,
    /// Extra flags of every transportd (`--group nogroup`).
    transportd_args: Vec<String>,
}

fn public_addresses(list: &[u8]) -> String {
    public_addresses_on(list, "eth1")
}

/// The public_addresses file of `list` on `ifaces` (`eth1,eth2`, say).
fn public_addresses_on(list: &[u8], ifaces: &str) -> String {
    list.iter()
        .map(|i| format!("198.51.100.{i}/24 {ifaces}\n"))
        .collect()
}

impl Bed {
    /// Three nodes that all list `addresses`.
    fn new(tag: &str, addresses: &[u8]) -> Bed {
        Bed::with_toml(tag, addresses, "")
    }

    /// A bed whose nodes' ipfailover.toml starts with `extra` (sections of
    /// its own, such as `[cluster]`).
    fn with_toml(tag: &str, addresses: &[u8], extra: &str) -> Bed {
        Bed::with_ifaces(tag, addresses, extra, false)
    }

    /// [`Bed::with_toml`]; with `eth2`, every node has a second public
    /// interface `eth2` on the same switch, listed after `eth1` for every
    /// address.
    fn with_ifaces(tag: &str, addresses: &[u8], extra: &str, eth2: bool) -> Bed {
        Bed::with_config(tag, &[addresses, addresses, addresses], true, extra, eth2)
    }

    /// One node per list: node `i`'s public_addresses holds `lists[i]`;
    /// failoverd's `kernel_lease` as given, ipfailover.toml starting with
    /// `extra`, and `eth2` as for [`Bed::with_ifaces`].
    fn with_config(tag: &str, lists: &[&[u8]], kernel_lease: bool, extra: &str, eth2: bool) -> Bed {
        Bed::with_transportd_args(tag, lists, kernel_lease, extra, eth2, &[])
    }

    /// [`Bed::with_config`] whose transportds get the flags `args`.
    fn with_transportd_args(
        tag: &str,
        lists: &[&[u8]],
        kernel_lease: bool,
        extra: &str,
        eth2: bool,
        args: &[&str],
    ) -> Bed {
        let ifaces = if eth2 { "eth1,eth2" } else { "eth1" };
        let files: Vec<String> = lists
            .iter()
            .map(|l| public_addresses_on(l, ifaces))
            .collect();
        Bed::with_files(tag, &files, kernel_lease, extra, eth2, args)
    }

    /// [`Bed::with_transportd_args`] with node `i`'s public_addresses file
    /// given whole (`files[i]`); the client also has 2001:db8:1::100/64.
    fn with_files(
        tag: &str,
        files: &[String],
        kernel_lease: bool,
        extra: &str,
        eth2: bool,
        args: &[&str],
    ) -> Bed {
        let c = TestCluster::new(tag, files.len()).unwrap();
        // The client learns eth1's MAC (the configured interface).
        let eth1_ports = c.add_public_ports("198.51.100.100/24").unwrap();
        c.client
            .ip(&["addr", "add", "2001:db8:1::100/64", "dev", "eth0", "nodad"])
            .unwrap();
        if eth2 {
            for n in &c.nodes {
                c.lan.attach(&n.ns, "eth2").unwrap();
                n.ns.ip(&["link", "set", "eth2", "up"]).unwrap();
            }
        }
        let nodes: String = c.nodes.iter().map(|n| format!("{}\n", n.addr)).collect();
        for (n, file) in c.nodes.iter().zip(files) {
            let toml = format!(
                "{extra}[transport]\nrun_dir = \"{}\"\n\n\
                 [failover]\ngarp_count = 3\ngarp_interval_ms = 100\nrelease_timeout_ms = 3000\n\
                 kernel_lease = {kernel_lease}\n\n\
                 [conntrack]\nscan_interval_ms = 200\n\n\
                 [logging]\nlevel = \"info,failoverd=debug\"\n",
                n.run_dir.display()
            );
            std::fs::write(n.config_dir.join("ipfailover.toml"), toml).unwrap();
            std::fs::write(n.config_dir.join("nodes"), &nodes).unwrap();
            std::fs::write(n.config_dir.join("public_addresses"), file).unwrap();
        }
        let bed = Bed {
            powered: Arc::new(Mutex::new(vec![true; c.nodes.len()])),
            failoverd_pids: Mutex::new(vec![0; c.nodes.len()]),
            clusterd_pids: Mutex::new(vec![0; c.nodes.len()]),
            conntrackd_pids: Mutex::new(vec![0; c.nodes.len()]),
            transportd_args: args.iter().map(|a| (*a).to_owned()).collect(),
            c,
            eth1_ports,
        };
        for i in 0..bed.c.nodes.len() {
            bed.start(i);
        }
        bed
    }

    fn start(&self, i: usize) {
        let args: Vec<&str> = self.transportd_args.iter().map(String::as_str).collect();
        self.c.start_transportd_with(i, &args).unwrap();
        for name in ["clusterd", "conntrackd", "failoverd"] {
            self.start_daemon(i, name);
        }
    }

    /// Starts one daemon of node `i`; remembers failoverd's and clusterd's
    /// pids.
    fn start_daemon(&self, i: usize, name: &str) {
        let pid = self.c.start_daemon(i, name).unwrap();
        match name {
            "failoverd" => self.failoverd_pids.lock().unwrap()[i] = pid,
            "clusterd" => self.clusterd_pids.lock().unwrap()[i] = pid,
            "conntrackd" => self.conntrackd_pids.lock().unwrap()[i] = pid,
            _ => {}
        }
    }

    fn power_off(&self, i: usize) {
        self.powered.lock().unwrap()[i] = false;
        self.c.lan.set_port(&self.eth1_ports[i], false).unwrap();
        self.c.power_off(i).unwrap();
    }

    /// `ipfailover ARGS` against node `i`'s sockets.
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

    /// Which powered node hosts each public address (in `list`), if every
    /// one of them is hosted exactly once.
    fn placement(&self, list: &[u8]) -> Option<BTreeMap<IpAddr, usize>> {
        let powered = self.powered.lock().unwrap().clone();
        let mut at: BTreeMap<IpAddr, Vec<usize>> = BTreeMap::new();
        for (i, n) in self.c.nodes.iter().enumerate() {
            if !powered[i] {
                continue;
            }
            for a in addresses_on(n.ns.name()) {
                at.entry(a).or_default().push(i);
            }
        }
        let mut out = BTreeMap::new();
        for &k in list {
            match at.get(&public(k)).map(Vec::as_slice) {
                Some([one]) => {
                    out.insert(public(k), *one);
                }
                _ => return None,
            }
        }
        // Nothing outside the list either.
        if at.keys().any(|a| !out.contains_key(a)) {
            return None;
        }
        Some(out)
    }

    /// A node that hosts something — not node 0 (the leader) if possible,
    /// so that the run that moves its addresses waits for no election —
    /// with its addresses and the other nodes' cluster addresses.
    fn victim(&self, placed: &BTreeMap<IpAddr, usize>) -> (usize, Vec<IpAddr>, Vec<String>) {
        let victim = placed
            .values()
            .copied()
            .find(|n| *n != 0)
            .unwrap_or_else(|| *placed.values().next().unwrap());
        let theirs = placed
            .iter()
            .filter(|(_, n)| **n == victim)
            .map(|(a, _)| *a)
            .collect();
        let others = (0..self.c.nodes.len())
            .filter(|i| *i != victim)
            .map(|i| self.c.nodes[i].addr.to_string())
            .collect();
        (victim, theirs, others)
    }

    fn wait_placed(&self, what: &str, list: &[u8]) -> BTreeMap<IpAddr, usize> {
        match wait_for(what, LIMIT, POLL, || self.placement(list)) {
            Ok(p) => p,
            Err(e) => panic!("{e}\n{}", self.logs()),
        }
    }
}

/// The public (198.51.100.0/24) addresses configured in namespace `ns`.
fn addresses_on(ns: &str) -> Vec<IpAddr> {
    publics(ns, None)
}

/// The public addresses configured in namespace `ns`, on `dev` only when
/// given.
fn publics(ns: &str, dev: Option<&str>) -> Vec<IpAddr> {
    configured(ns, "-4", dev)
        .into_iter()
        .filter(|a| is_public(*a))
        .collect()
}

/// The addresses of `family` (`-4` or `-6`) configured in namespace `ns`,
/// on `dev` only when given.
fn configured(ns: &str, family: &str, dev: Option<&str>) -> Vec<IpAddr> {
    let mut args = vec!["-n", ns, "-o", family, "addr", "show"];
    if let Some(dev) = dev {
        args.extend(["dev", dev]);
    }
    let Ok(out) = Command::new("ip").args(&args).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            f.find(|w| *w == "inet" || *w == "inet6")?;
            f.next()?.split('/').next()?.parse().ok()
        })
        .collect()
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

/// The double-hosting sampler (see the module docs).
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<(Vec<String>, usize, Duration)>>,
}

impl Sampler {
    fn start(bed: &Bed) -> Sampler {
        let names: Vec<String> = bed
            .c
            .nodes
            .iter()
            .map(|n| n.ns.name().to_string())
            .collect();
        Sampler::start_on(names, Arc::clone(&bed.powered))
    }

    /// Samples the namespaces `names` (those marked powered).
    fn start_on(names: Vec<String>, powered: Arc<Mutex<Vec<bool>>>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            // One rtnetlink socket per node namespace, opened from this
            // thread after entering that namespace (a socket keeps the
            // namespace it was created in): a dump takes well under 1 ms,
            // unlike spawning `ip`.
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
            let mut violations = Vec::new();
            let mut samples = 0usize;
            let mut max_gap = Duration::ZERO;
            let mut last = Instant::now();
            // Bounded: stops when told, or after 10 minutes at most.
            let end = Instant::now() + Duration::from_secs(600);
            while !s.load(Ordering::Relaxed) && Instant::now() < end {
                let on = powered.lock().unwrap().clone();
                let read = |i: usize| {
                    if !on[i] {
                        return Vec::new();
                    }
                    rt.block_on(handles[i].all_addresses())
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(_, p)| p.addr())
                        .filter(|a| is_public(*a))
                        .collect::<Vec<IpAddr>>()
                };
                let first: Vec<Vec<IpAddr>> = (0..names.len()).map(read).collect();
                let second: Vec<Vec<IpAddr>> = (0..names.len()).map(read).collect();
                for p in 0..names.len() {
                    for a in &first[p] {
                        if !second[p].contains(a) {
                            continue;
                        }
                        for q in 0..names.len() {
                            if q == p {
                                continue;
                            }
                            // Q's read that happened between P's two reads.
                            let between = if q > p { &first[q] } else { &second[q] };
                            if between.contains(a) && violations.len() < 100 {
                                violations.push(format!("{a} on nodes {p} and {q}"));
                            }
                        }
                    }
                }
                samples += 1;
                let now = Instant::now();
                max_gap = max_gap.max(now - last);
                last = now;
                std::thread::sleep(Duration::from_millis(5));
            }
            (violations, samples, max_gap)
        });
        Sampler {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the sampler: the violations, the number of samples and the
    /// largest gap between two samples.
    fn stop(mut self) -> (Vec<String>, usize, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }

    /// Stops the sampler and fails if an address was ever on two nodes.
    fn finish(self) {
        let (violations, samples, max_gap) = self.stop();
        eprintln!("sampler: {samples} samples, largest gap between samples {max_gap:?}");
        assert!(samples > 10, "the sampler hardly ran ({samples} samples)");
        assert!(
            violations.is_empty(),
            "an address was configured on two nodes at once: {:?}",
            &violations[..violations.len().min(10)]
        );
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn mac_of(ns: &str, iface: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", ns, "-o", "link", "show", iface])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

fn neighbour(ns: &str, addr: IpAddr) -> String {
    let out = Command::new("ip")
        .args(["-n", ns, "neigh", "show", &addr.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn failover_cluster_power_off_moves_addresses_and_resets_idle_clients() {
    require_root();
    let list = [201, 202, 203, 204, 205, 206];
    let bed = Bed::new("foc1", &list);
    let sampler = Sampler::start(&bed);
    let placed = bed.wait_placed("every address hosted exactly once", &list);
    let mut per_node = [0usize; 3];
    for &n in placed.values() {
        per_node[n] += 1;
    }
    assert_eq!(
        per_node,
        [2, 2, 2],
        "LCP2 balances 6 addresses over 3 nodes"
    );

    // `ipfailover ip all` agrees with the kernels.
    let (ok, text) = bed.cli(0, &["ip", "all"]);
    assert!(ok, "{text}");
    assert!(text.starts_with("Public IPs on ALL nodes\n"), "{text}");
    for (a, n) in &placed {
        assert!(
            text.contains(&format!("{a} {n}\n")),
            "{a} {n} not in:\n{text}"
        );
    }

    // An idle client connected to an address of the victim, blocked in a read.
    let victim = placed[&public(201)];
    let stop = Arc::new(AtomicBool::new(false));
    bed.c.listen_everywhere(PORT, &stop).unwrap();
    let server = SocketAddr::new(public(201), PORT);
    let stream = bed
        .c
        .client
        .run(move || TcpStream::connect_timeout(&server, Duration::from_secs(5)).unwrap())
        .unwrap();
    // Wait until a survivor's conntrackd knows the connection (replicated).
    let survivor = (victim + 1) % 3;
    let known = wait_for(
        "the connection replicated to a survivor",
        LIMIT,
        POLL,
        || {
            let (ok, text) = bed.cli(survivor, &["gettickles", "198.51.100.201"]);
            (ok && text.contains("Num connections: 1")).then_some(())
        },
    );
    if let Err(e) = known {
        panic!("{e}\n{}", bed.logs());
    }
    let reader = std::thread::spawn(move || {
        let mut stream = stream;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut buf = [0u8; 8];
        let r = stream.read(&mut buf);
        (r.map_err(|e| e.kind()), Instant::now())
    });

    let t0 = Instant::now();
    bed.power_off(victim);
    let moved = bed.wait_placed("the victim's addresses hosted by survivors", &list);
    let took = t0.elapsed();
    for n in moved.values() {
        assert_ne!(*n, victim);
    }
    let new_owner = moved[&public(201)];
    let (read, at) = reader.join().unwrap();
    assert_eq!(
        read,
        Err(ErrorKind::ConnectionReset),
        "the idle client was not reset by a tickle"
    );
    eprintln!(
        "power-off: all addresses re-hosted after {took:?}, idle client reset after {:?}",
        at - t0
    );
    // The client reaches the address at its new home, and its neighbour
    // entry shows the new owner's MAC.
    let mac = mac_of(bed.c.nodes[new_owner].ns.name(), "eth1");
    let c = bed.c.client.name().to_string();
    let r = wait_for("a new connection to the moved address", LIMIT, POLL, || {
        let s = bed
            .c
            .client
            .run(move || TcpStream::connect_timeout(&server, Duration::from_millis(500)).is_ok())
            .unwrap();
        s.then_some(())
    });
    assert!(r.is_ok(), "{}", bed.logs());
    let n = neighbour(&c, public(201));
    assert!(
        n.contains(&mac),
        "client neighbour entry {n:?} lacks new MAC {mac}"
    );
    stop.store(true, Ordering::Relaxed);
    sampler.finish();
}

/// A restarted conntrackd knows at once what its node hosts (it asks
/// failoverd) instead of at failoverd's next HOSTED (every 3 s): a client
/// that connects right after the restart is replicated to the other nodes,
/// so when the node then dies the new owner tickles it (chaos, fast
/// profile, seed 103: 17 idle clients not reset, one in round 38 this
/// way). Without it the connection reached the peers 2.5 s late and the
/// power-off below left the client hanging.
#[test]
fn failover_cluster_a_client_of_a_node_whose_conntrackd_just_restarted_is_reset() {
    require_root();
    let list = [201, 202, 203, 204, 205, 206];
    let bed = Bed::new("focc", &list);
    let placed = bed.wait_placed("every address hosted exactly once", &list);
    let victim = placed[&public(201)];
    let pid = bed.conntrackd_pids.lock().unwrap()[victim];
    assert!(bed.c.nodes[victim].ns.kill(pid));
    bed.start_daemon(victim, "conntrackd");
    // Long enough for the new conntrackd to start and register, well
    // inside failoverd's 3 s HOSTED period.
    std::thread::sleep(Duration::from_millis(400));
    let (stop, reader) = idle_client_of_201(&bed);
    std::thread::sleep(Duration::from_millis(500));
    bed.power_off(victim);
    bed.wait_placed("the victim's addresses hosted by survivors", &list);
    let read = reader.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    assert_eq!(
        read,
        Err(ErrorKind::ConnectionReset),
        "the idle client of a node whose conntrackd had just restarted was not reset\n{}",
        bed.logs()
    );
}

/// Servers listening everywhere and an idle client connected to
/// 198.51.100.201, reading until the server side ends (20 s at most):
/// the listeners' stop flag and the reader's result (a reset is
/// `Err(ConnectionReset)`).
fn idle_client_of_201(
    bed: &Bed,
) -> (
    Arc<AtomicBool>,
    std::thread::JoinHandle<Result<usize, ErrorKind>>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    bed.c.listen_everywhere(PORT, &stop).unwrap();
    (
        stop,
        idle_client_of(bed, SocketAddr::new(public(201), PORT)),
    )
}

/// An idle client connected to `server` (listeners must be up), reading
/// until the server side ends (20 s at most): the reader's result (a reset
/// is `Err(ConnectionReset)`).
fn idle_client_of(
    bed: &Bed,
    server: SocketAddr,
) -> std::thread::JoinHandle<Result<usize, ErrorKind>> {
    let stream = bed
        .c
        .client
        .run(move || TcpStream::connect_timeout(&server, Duration::from_secs(5)))
        .unwrap()
        .unwrap_or_else(|e| panic!("connecting to {server}: {e}\n{}", bed.logs()));
    std::thread::spawn(move || {
        let mut stream = stream;
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut buf = [0u8; 8];
        stream.read(&mut buf).map_err(|e| e.kind())
    })
}

/// Waits until every node but `victim` knows the one connection of
/// 198.51.100.201 (`gettickles`).
fn wait_replicated(bed: &Bed, victim: usize) {
    wait_replicated_of(bed, victim, "198.51.100.201");
}

/// Waits until every node but `victim` knows the one connection of
/// `address` (`gettickles`).
fn wait_replicated_of(bed: &Bed, victim: usize, address: &str) {
    for survivor in (0..3).filter(|&i| i != victim) {
        let known = wait_for(
            "the connection replicated to the survivors",
            LIMIT,
            POLL,
            || {
                let (ok, text) = bed.cli(survivor, &["gettickles", address]);
                (ok && text.contains("Num connections: 1")).then_some(())
            },
        );
        if let Err(e) = known {
            panic!("{e}\n{}", bed.logs());
        }
    }
}

/// The public link of the server's node goes down: the node releases the
/// address (it cannot host it) and resets the connection's socket, but
/// its reset cannot reach the client; the new owner's tickle must. Chaos
/// (`--kinds link_public`, default profile, seed 21: 3 idle clients not
/// reset in 12 faults) found that the releasing node's own reset took the
/// connection out of every node's table (conntrackd replicated the
/// close) before the new owner could tickle it.
#[test]
fn failover_cluster_an_idle_client_is_reset_when_its_servers_public_link_goes_down() {
    require_root();
    let list = [201, 202, 203, 204, 205, 206];
    let bed = Bed::new("focp", &list);
    let placed = bed.wait_placed("every address hosted exactly once", &list);
    let victim = placed[&public(201)];
    let (stop, reader) = idle_client_of_201(&bed);
    wait_replicated(&bed, victim);
    bed.c.lan.set_port(&bed.eth1_ports[victim], false).unwrap();
    let taken = wait_for(
        "201 taken by another node",
        Duration::from_secs(10),
        Duration::from_millis(10),
        || {
            let p = bed.placement(&list)?;
            (p.get(&public(201)).is_some_and(|&n| n != victim)).then_some(())
        },
    );
    let read = reader.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    bed.c.lan.set_port(&bed.eth1_ports[victim], true).unwrap();
    assert!(taken.is_ok(), "{}", bed.logs());
    assert_eq!(
        read,
        Err(ErrorKind::ConnectionReset),
        "the idle client was not reset after its server's public link went down\n{}",
        bed.logs()
    );
}

/// Kills node `victim`'s clusterd and waits (10 s) until 198.51.100.201,
/// on `victim`, is hosted by another node.
fn kill_clusterd_until_201_moves(bed: &Bed, victim: usize, list: &[u8]) -> anyhow::Result<()> {
    let pid = bed.clusterd_pids.lock().unwrap()[victim];
    assert!(bed.c.nodes[victim].ns.kill(pid));
    wait_for(
        "201 taken by another node",
        Duration::from_secs(10),
        Duration::from_millis(10),
        || {
            let p = bed.placement(list)?;
            (p.get(&public(201)).is_some_and(|&n| n != victim)).then_some(())
        },
    )
}

/// A node whose clusterd dies loses its lease; without the kernel lease
/// it removes its addresses first and resets their sockets after (those
/// resets cannot leave). Its conntrackd must not take the closes of those
/// resets out of the other nodes' tables (the links are up, so a removal
/// would replicate): the new owner tickles the idle client, which is
/// reset. (failoverd's `drop_all` tells conntrackd first, as a release
/// does since finding 14.)
#[test]
fn failover_cluster_a_client_of_a_node_whose_clusterd_died_is_reset_by_the_new_owner() {
    require_root();
    let list = [201, 202, 203, 204, 205, 206];
    let bed = Bed::with_config("focz", &[&list[..], &list[..], &list[..]], false, "", false);
    let placed = bed.wait_placed("every address hosted exactly once", &list);
    let victim = placed[&public(201)];
    let (stop, reader) = idle_client_of_201(&bed);
    wait_replicated(&bed, victim);
    let taken = kill_clusterd_until_201_moves(&bed, victim, &list);
    let read = reader.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    assert!(taken.is_ok(), "{}", bed.logs());
    assert_eq!(
        read,
        Err(ErrorKind::ConnectionReset),
        "the idle client was not reset after its server's clusterd died\n{}",
        bed.logs()
    );
}

/// A node that loses its lease resets its clients before it removes its
/// addresses (the kernel lease lets the resets out), but a reset can be
/// lost (here the client drops every reset from the node's MAC; in chaos,
/// seed 121, a drop running beside it removed the addresses first): then
/// the next owner must tickle the client, so the resets must not take
/// the connection out of conntrackd's tables. Without conntrackd told
/// first (RELEASING), it took the resets' closes for the client's own,
/// the next owner tickled nothing, and this read timed out.
#[test]
fn failover_cluster_a_client_whose_reset_is_lost_at_a_lease_loss_is_tickled_by_the_new_owner() {
    require_root();
    let list = [201, 202, 203, 204, 205, 206];
    let bed = Bed::new("focl", &list);
    let placed = bed.wait_placed("every address hosted exactly once", &list);
    let victim = placed[&public(201)];
    let (stop, reader) = idle_client_of_201(&bed);
    wait_replicated(&bed, victim);
    let mac = mac_of(bed.c.nodes[victim].ns.name(), "eth1");
    let rules = format!(
        "add table inet lost; \
         add chain inet lost in {{ type filter hook input priority 0; }}; \
         add rule inet lost in ether saddr {mac} tcp flags & rst != 0 counter drop"
    );
    bed.c
        .client
        .exec_ok("nft", &[&rules])
        .unwrap_or_else(|e| panic!("nft: {e}"));
    let taken = kill_clusterd_until_201_moves(&bed, victim, &list);
    let read = reader.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let dropped = bed
        .c
        .client
        .exec_ok("nft", &["list", "table", "inet", "lost"])
        .unwrap_or_default();
    assert!(taken.is_ok(), "{}", bed.logs());
    assert!(
        !dropped.contains("packets 0 "),
        "the victim's reset never reached the client's filter (not the case under test):\n{dropped}\n{}",
        bed.logs()
    );
    assert_eq!(
        read,
        Err(ErrorKind::ConnectionReset),
        "the idle client whose reset was lost was not tickled by the new owner\n{}",
        bed.logs()
    );
}

/// The IPv6 public addresses (2001:db8:1::/64) configured in namespace
/// `ns`.
fn v6_publics(ns: &str) -> Vec<IpAddr> {
    configured(ns, "-6", Some("eth1"))
        .into_iter()
        .filter(|a| a.to_string().starts_with("2001:db8:1:"))
        .collect()
}

/// How the IPv6 tests take the address's node away.
#[derive(Clone, Copy, Debug)]
enum Away {
    /// Cables pulled, every process SIGKILLed.
    PowerOff,
    /// failoverd, clusterd and conntrackd SIGSTOPped: the kernel lives on
    /// with the address configured (its kernel lease ends), as with a
    /// frozen node in chaos.
    Frozen,
}

/// An idle client of an IPv6 public address is reset when the address's
/// node goes away: the new owner's unsolicited neighbour advertisement
/// moves the client's neighbour entry, its tickle draws the client's ACK
/// there, and the new owner (no such socket) resets it. The chaos long
/// runs had nearly all their idle clients not reset on the two IPv6
/// addresses (session 9: default 25 of 37, fast 54 of 110; session 11:
/// 5 of 5), with four IPv4 addresses beside them.
fn an_idle_ipv6_client_is_reset(tag: &str, away: Away) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    require_root();
    let v6: IpAddr = "2001:db8:1::c9".parse().unwrap();
    let file = format!("{v6}/64 eth1\n{}", public_addresses(&[202, 203, 204]));
    let bed = Bed::with_files(
        tag,
        &[file.clone(), file.clone(), file],
        true,
        "",
        false,
        &[],
    );
    let owner = wait_for("the IPv6 address hosted once", LIMIT, POLL, || {
        let on: Vec<usize> = (0..3)
            .filter(|&i| v6_publics(bed.c.nodes[i].ns.name()).contains(&v6))
            .collect();
        match on[..] {
            [one] => Some(one),
            _ => None,
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", bed.logs()));
    let stop = Arc::new(AtomicBool::new(false));
    bed.c.listen_everywhere_v6(PORT, &stop).unwrap();
    let reader = idle_client_of(&bed, SocketAddr::new(v6, PORT));
    wait_replicated_of(&bed, owner, &v6.to_string());
    let frozen: Vec<Pid> = match away {
        Away::PowerOff => {
            bed.power_off(owner);
            Vec::new()
        }
        Away::Frozen => {
            let pids = [
                bed.failoverd_pids.lock().unwrap()[owner],
                bed.clusterd_pids.lock().unwrap()[owner],
                bed.conntrackd_pids.lock().unwrap()[owner],
            ];
            let pids: Vec<Pid> = pids
                .iter()
                .map(|p| Pid::from_raw(i32::try_from(*p).unwrap()))
                .collect();
            for p in &pids {
                kill(*p, Signal::SIGSTOP).unwrap();
            }
            pids
        }
    };
    let moved = wait_for("the IPv6 address on a survivor", LIMIT, POLL, || {
        (0..3)
            .filter(|&i| i != owner)
            .find(|&i| v6_publics(bed.c.nodes[i].ns.name()).contains(&v6))
    });
    let read = reader.join().unwrap();
    for p in &frozen {
        let _ = kill(*p, Signal::SIGCONT);
    }
    stop.store(true, Ordering::Relaxed);
    assert!(moved.is_ok(), "{moved:?}\n{}", bed.logs());
    assert_eq!(
        read,
        Err(ErrorKind::ConnectionReset),
        "the idle IPv6 client was not reset after its server went away ({away:?}; new owner {moved:?})\n{}",
        bed.logs()
    );
}

#[test]
fn failover_cluster_an_idle_ipv6_client_is_reset_when_its_server_powers_off() {
    an_idle_ipv6_client_is_reset("foc6", Away::PowerOff);
}

#[test]
fn failover_cluster_an_idle_ipv6_client_is_reset_when_its_server_freezes() {
    an_idle_ipv6_client_is_reset("foc7", Away::Frozen);
}

/// The same node takes the address back after a lease-loss drop whose
/// resets could not leave (removal first, as in the test above): its
/// conntrackd's first dump after the take no longer shows the connection
/// and replaced the node's own view with it — before the take's tickles
/// asked for the list, so nobody tickled the client. Chaos (fast profile,
/// seed 33, round 15: a killed clusterd, the node dropped and took back
/// its addresses 0.3 s later) left an idle client hanging that way. Only
/// node 0 lists 201 here, so the node that dropped it is the one that
/// takes it back.
#[test]
fn failover_cluster_an_idle_client_is_reset_when_its_server_drops_and_takes_back_the_address() {
    require_root();
    let list = [201, 202, 203, 204, 205, 206];
    let rest = [202, 203, 204, 205, 206];
    let bed = Bed::with_config("focq", &[&list[..], &rest[..], &rest[..]], false, "", false);
    let placed = bed.wait_placed("every address hosted exactly once", &list);
    assert_eq!(placed[&public(201)], 0, "only node 0 lists 201");
    let (stop, reader) = idle_client_of_201(&bed);
    wait_replicated(&bed, 0);
    let pid = bed.clusterd_pids.lock().unwrap()[0];
    assert!(bed.c.nodes[0].ns.kill(pid));
    let ns = bed.c.nodes[0].ns.name().to_string();
    let dropped = wait_for(
        "node 0 to drop 201 at its lease end",
        Duration::from_secs(10),
        Duration::from_millis(5),
        || (!addresses_on(&ns).contains(&public(201))).then_some(()),
    );
    bed.start_daemon(0, "clusterd");
    let back = wait_for(
        "201 back on node 0",
        LIMIT,
        Duration::from_millis(10),
        || addresses_on(&ns).contains(&public(201)).then_some(()),
    );
    let read = reader.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    assert!(
        dropped.is_ok() && back.is_ok(),
        "{dropped:?} {back:?}\n{}",
        bed.logs()
    );
    assert_eq!(
        read,
        Err(ErrorKind::ConnectionReset),
        "the idle client was not reset after its server dropped and took back 201\n{}",
        bed.logs()
    );
}

/// The new owner's conntrackd does not answer while the take's first
/// announcement asks for the connections (stopped here; under load in
/// chaos, default profile, seed 104: "no connection list from conntrackd;
/// its clients are not tickled", and the idle client hung): the announcer
/// asks again at its next round, so the client is still reset. Without
/// that, the first failure was final and this read times out.
#[test]
fn failover_cluster_a_client_is_reset_although_the_new_owners_conntrackd_was_busy_at_the_take() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    require_root();
    let list = [201, 202, 203, 204, 205, 206];
    let bed = Bed::new("focb", &list);
    let placed = bed.wait_placed("every address hosted exactly once", &list);
    let victim = placed[&public(201)];
    let (stop, reader) = idle_client_of_201(&bed);
    // Replicated to the survivors' conntrackds (under load it can take
    // more than a fixed pause): the point here is what the new owner
    // does when its conntrackd does not answer at the take.
    wait_replicated(&bed, victim);
    let survivors: Vec<Pid> = (0..3)
        .filter(|&i| i != victim)
        .map(|i| {
            let pid = bed.conntrackd_pids.lock().unwrap()[i];
            Pid::from_raw(i32::try_from(pid).unwrap())
        })
        .collect();
    for &pid in &survivors {
        kill(pid, Signal::SIGSTOP).unwrap();
    }
    bed.power_off(victim);
    let taken = wait_for(
        "201 taken by a survivor",
        Duration::from_secs(10),
        Duration::from_millis(10),
        || {
            let p = bed.placement(&list)?;
            (p[&public(201)] != victim).then_some(())
        },
    );
    // Past both of the first round's requests (500 ms each), well before
    // the second round (a second after the first).
    std::thread::sleep(Duration::from_millis(1300));
    for &pid in &survivors {
        kill(pid, Signal::SIGCONT).unwrap();
    }
    assert!(taken.is_ok(), "{}", bed.logs());
    let read = reader.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    assert_eq!(
        read,
        Err(ErrorKind::ConnectionReset),
        "the idle client was not reset after the new owner's conntrackd came back\n{}",
        bed.logs()
    );
}

#[test]
fn failover_cluster_disable_moveip_link_down_and_reloadips() {
    require_root();
    let list = [201, 202, 203, 204, 205, 206];
    let bed = Bed::new("foc2", &list);
    let sampler = Sampler::start(&bed);
    bed.wait_placed("every address hosted exactly once", &list);

    // disable node 1: it hosts nothing; enable: it gets addresses back.
    let (ok, text) = bed.cli(0, &["-n", "1", "disable"]);
    assert!(ok, "disable: {text}");
    let r = wait_for("node 1 empty after disable", LIMIT, POLL, || {
        let p = bed.placement(&list)?;
        p.values().all(|&n| n != 1).then_some(())
    });
    assert!(r.is_ok(), "{}", bed.logs());
    let (ok, text) = bed.cli(0, &["-n", "1", "enable"]);
    assert!(ok, "enable: {text}");
    let r = wait_for("node 1 hosts addresses after enable", LIMIT, POLL, || {
        let p = bed.placement(&list)?;
        (p.values().filter(|&&n| n == 1).count() == 2).then_some(())
    });
    assert!(r.is_ok(), "{}", bed.logs());

    // moveip: release everywhere, take on the target.
    let placed = bed.wait_placed("placed", &list);
    let from = placed[&public(203)];
    let to = (from + 1) % 3;
    let (ok, text) = bed.cli(0, &["moveip", "198.51.100.203", &to.to_string()]);
    assert!(ok, "moveip: {text}\n{}", bed.logs());
    let r = wait_for("203 on the target", LIMIT, POLL, || {
        let p = bed.placement(&list)?;
        (p[&public(203)] == to).then_some(())
    });
    assert!(r.is_ok(), "{}", bed.logs());

    // Link down on an owner's public interface: its addresses move away.
    let placed = bed.wait_placed("placed", &list);
    let owner = placed[&public(204)];
    bed.c.nodes[owner]
        .ns
        .ip(&["link", "set", "eth1", "down"])
        .unwrap();
    let r = wait_for("204 away from the node with eth1 down", LIMIT, POLL, || {
        let p = bed.placement(&list)?;
        p.values().all(|&n| n != owner).then_some(())
    });
    assert!(r.is_ok(), "{}", bed.logs());
    bed.c.nodes[owner]
        .ns
        .ip(&["link", "set", "eth1", "up"])
        .unwrap();

    // reloadips with a broken file changes nothing: every node's new file
    // (.207 added, .206 removed) has a bad last line. The command names the
    // file and line and, as ctdb, says `Failed to reload IPs on some
    // nodes.` and still runs the takeover run; the old list stays hosted
    // exactly once and .207 is hosted nowhere (placement() refuses anything
    // outside the list).
    let new_list = [201, 202, 203, 204, 205, 207];
    for n in &bed.c.nodes {
        let broken = format!("{}198.51.100.208/33 eth1\n", public_addresses(&new_list));
        std::fs::write(n.config_dir.join("public_addresses"), broken).unwrap();
    }
    let (_, text) = bed.cli(0, &["reloadips", "all"]);
    assert!(
        text.contains("public_addresses:7: bad prefix '33' for 198.51.100.208 (expected 1-32)")
            && text.contains("Failed to reload IPs on some nodes."),
        "{text}"
    );
    bed.wait_placed("the old list still hosted exactly once", &list);
    let end = Instant::now() + Duration::from_secs(1);
    while Instant::now() < end {
        for n in &bed.c.nodes {
            let on = addresses_on(n.ns.name());
            assert!(!on.contains(&public(207)), "{:?}\n{}", on, bed.logs());
        }
        std::thread::sleep(POLL);
    }

    // reloadips: add .207, remove .206 on every node.
    for n in &bed.c.nodes {
        std::fs::write(
            n.config_dir.join("public_addresses"),
            public_addresses(&new_list),
        )
        .unwrap();
    }
    let (ok, text) = bed.cli(0, &["reloadips", "all"]);
    assert!(ok, "reloadips: {text}\n{}", bed.logs());
    let placed = bed.wait_placed("the reloaded list hosted exactly once", &new_list);

    // Restart without a blip: SIGKILL an owner's failoverd and start it
    // again; its addresses never leave its kernel and nothing moves.
    let owner = placed[&public(201)];
    let pid = bed.failoverd_pids.lock().unwrap()[owner];
    assert!(bed.c.nodes[owner].ns.kill(pid));
    bed.start_daemon(owner, "failoverd");
    let ns = bed.c.nodes[owner].ns.name().to_string();
    let mine: Vec<IpAddr> = placed
        .iter()
        .filter(|(_, &n)| n == owner)
        .map(|(a, _)| *a)
        .collect();
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        let now = addresses_on(&ns);
        for a in &mine {
            assert!(
                now.contains(a),
                "{a} vanished from node {owner} during a failoverd restart\n{}",
                bed.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // The restarted failoverd answers and reports them as hosted.
    let r = wait_for("the restarted failoverd to answer", LIMIT, POLL, || {
        let (ok, text) = bed.cli(owner, &["ip", "-v"]);
        (ok && text.contains(&format!("{} node[{owner}] active[eth1]", public(201)))).then_some(())
    });
    assert!(r.is_ok(), "{}", bed.logs());
    assert_eq!(bed.wait_placed("placed", &new_list), placed);
    sampler.finish();
}

/// A leader whose own failoverd is frozen past its lease end (SIGSTOP: an
/// overloaded host) drops its addresses when it resumes. Its clusterd kept
/// the lease, so no membership change follows, and the lease news queued
/// during the freeze renew the lease before the loop tells the leader side
/// of the lapse: the leader must still take its share back. Found by chaos
/// (fast profile, seed 103, round 119: the leader's addresses unhosted for
/// 30 s, until an unrelated membership change).
#[test]
fn failover_cluster_a_leader_frozen_past_its_lease_takes_its_share_back() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    require_root();
    let list = [201, 202, 203, 204, 205, 206];
    let bed = Bed::new("focl", &list);
    let placed = bed.wait_placed("every address hosted exactly once", &list);
    let leader = membership_of(&bed, 0)
        .and_then(|m| m.leader)
        .expect("a leader") as usize;
    assert!(placed.values().any(|&n| n == leader), "{placed:?}");
    let pid = bed.failoverd_pids.lock().unwrap()[leader];
    let pid = Pid::from_raw(i32::try_from(pid).unwrap());
    kill(pid, Signal::SIGSTOP).unwrap();
    // The default profile's lease is well under 2 s.
    std::thread::sleep(Duration::from_secs(2));
    kill(pid, Signal::SIGCONT).unwrap();
    let start = Instant::now();
    // The lapse happened: the resumed failoverd dropped its addresses.
    let log = bed.c.scratch.join(format!("node{leader}-failoverd.log"));
    let dropped = wait_for(
        "the leader drops its addresses",
        Duration::from_secs(5),
        POLL,
        || {
            std::fs::read_to_string(&log)
                .ok()?
                .contains("dropped every public address")
                .then_some(())
        },
    );
    assert!(dropped.is_ok(), "no lapse to test\n{}", bed.logs());
    let r = wait_for(
        "every address hosted exactly once again",
        Duration::from_secs(8),
        POLL,
        || bed.placement(&list),
    );
    assert!(
        r.is_ok(),
        "the leader's share stayed unhosted after its failoverd resumed\n{}",
        bed.logs()
    );
    eprintln!("hosted again {:?} after SIGCONT", start.elapsed());
}

/// disable/enable, stop/continue, ban/unban return only once the flag is
/// in effect and the takeover run after it has finished, as ctdb's do
/// (#17): checked the moment each command returns, with no waiting, in the
/// kernels of all nodes.
#[test]
fn failover_cluster_admin_commands_return_after_their_takeover_run() {
    require_root();
    let list = [201, 202, 203, 204, 205, 206];
    let bed = Bed::new("foca", &list);
    let sampler = Sampler::start(&bed);
    bed.wait_placed("every address hosted exactly once", &list);
    let pairs: [(&[&str], &[&str]); 3] = [
        (&["disable"], &["enable"]),
        (&["stop"], &["continue"]),
        (&["ban", "60"], &["unban"]),
    ];
    for (on, off) in pairs {
        let mut args = vec!["-n", "1"];
        args.extend_from_slice(on);
        let (ok, text) = bed.cli(0, &args);
        assert!(ok, "{on:?}: {text}\n{}", bed.logs());
        let p = bed.placement(&list);
        assert!(
            p.as_ref().is_some_and(|p| p.values().all(|&n| n != 1)),
            "right after {on:?} returned: {p:?}\n{}",
            bed.logs()
        );
        let mut args = vec!["-n", "1"];
        args.extend_from_slice(off);
        let (ok, text) = bed.cli(0, &args);
        assert!(ok, "{off:?}: {text}\n{}", bed.logs());
        let p = bed.placement(&list);
        assert!(
            p.as_ref()
                .is_some_and(|p| p.values().filter(|&&n| n == 1).count() == 2),
            "right after {off:?} returned: {p:?}\n{}",
            bed.logs()
        );
    }
    sampler.finish();
}

/// failoverd's hooks as ctdb's event scripts (#17): `event status`,
/// `event script list|enable|disable`, `event run`, `scriptstatus`, with
/// ctdb's outputs and statuses, against real hooks run by a real node.
#[test]
fn failover_cluster_event_commands_show_and_steer_the_hooks() {
    use std::os::unix::fs::PermissionsExt;

    require_root();
    let list = [201, 202, 203];
    let bed = Bed::new("foce", &list);
    bed.wait_placed("every address hosted exactly once", &list);
    let dir = bed.c.nodes[0].config_dir.join("events");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, body, mode) in [
        ("10.ok", "exit 0", 0o755),
        ("20.fail", "exit 3", 0o755),
        ("30.off", "exit 0", 0o644),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let cli = |args: &[&str]| -> (Option<i32>, String) {
        let out = Command::new(bin_path("ipfailover").unwrap())
            .arg("--run-dir")
            .arg(&bed.c.nodes[0].run_dir)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    assert_eq!(
        cli(&["event", "status", "legacy", "takeip"]),
        (
            Some(22),
            "Event takeip has never run in legacy\n".to_string()
        )
    );
    let (ok, text) = bed.cli(0, &["ipreallocate"]);
    assert!(ok, "ipreallocate: {text}");
    let (code, text) = wait_for("the ipreallocated hooks ran on node 0", LIMIT, POLL, || {
        let r = cli(&["event", "status", "legacy", "ipreallocated"]);
        (r.0 != Some(22)).then_some(r)
    })
    .unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0].starts_with("10.ok                OK         0."),
        "{text}"
    );
    assert!(
        lines[1].starts_with("20.fail              ERROR      0."),
        "{text}"
    );
    assert_eq!(lines[2], "  OUTPUT: exit status 3");
    assert_eq!(lines[3], "30.off               DISABLED  ");

    assert_eq!(
        cli(&["event", "script", "list", "legacy"]),
        (Some(0), "* 10.ok\n* 20.fail\n  30.off\n".to_string())
    );
    assert_eq!(
        cli(&["event", "script", "disable", "legacy", "20.fail"]).0,
        Some(0)
    );
    assert_eq!(
        cli(&["event", "script", "enable", "legacy", "30.off"]).0,
        Some(0)
    );
    assert_eq!(
        cli(&["event", "script", "list", "legacy"]),
        (Some(0), "* 10.ok\n  20.fail\n* 30.off\n".to_string())
    );
    assert_eq!(
        cli(&["event", "script", "enable", "legacy", "40.none"]),
        (
            Some(1),
            "Script 40.none does not exist in legacy\n".to_string()
        )
    );
    let (code, text) = cli(&["event", "run", "10", "legacy", "ipreallocated"]);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = cli(&["event", "status", "legacy", "ipreallocated"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("20.fail              DISABLED"), "{text}");
    assert!(text.contains("30.off               OK"), "{text}");
    assert_eq!(
        cli(&["scriptstatus"]),
        (
            Some(0),
            "Event monitor has never run in legacy\n".to_string()
        )
    );
    assert_eq!(
        cli(&["event", "status", "nosuch", "takeip"]),
        (Some(2), "Event dir for nosuch does not exist\n".to_string())
    );
}

/// `setvar` at run time (#17): NoIPFailback set on every connected node
/// keeps a node that comes back empty; set back to 0, the next run
/// rebalances onto it. What the kernels hold is what is checked.
#[test]
fn failover_cluster_setvar_noipfailback_takes_effect_at_run_time() {
    require_root();
    let list = [201, 202, 203, 204, 205, 206];
    let bed = Bed::new("focv", &list);
    let sampler = Sampler::start(&bed);
    bed.wait_placed("every address hosted exactly once", &list);

    let (ok, text) = bed.cli(0, &["setvar", "NoIPFailback", "1"]);
    assert!(ok, "setvar: {text}");
    for i in 0..3 {
        let (ok, text) = bed.cli(i, &["getvar", "noipfailback"]);
        assert!(
            ok && text == "noipfailback               = 1\n",
            "node {i}: {text}"
        );
    }

    let (ok, text) = bed.cli(0, &["-n", "1", "disable"]);
    assert!(ok, "disable: {text}");
    let r = wait_for("node 1 empty after disable", LIMIT, POLL, || {
        let p = bed.placement(&list)?;
        p.values().all(|&n| n != 1).then_some(())
    });
    assert!(r.is_ok(), "{}", bed.logs());
    let (ok, text) = bed.cli(0, &["-n", "1", "enable"]);
    assert!(ok, "enable: {text}");
    let (ok, text) = bed.cli(0, &["ipreallocate"]);
    assert!(ok, "ipreallocate: {text}");
    // No failback: node 1 stays empty through the enable's run and ours.
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        let on = addresses_on(bed.c.nodes[1].ns.name());
        assert!(
            !on.iter().any(|a| is_public(*a)),
            "node 1 took {on:?} back although NoIPFailback = 1\n{}",
            bed.logs()
        );
        std::thread::sleep(POLL);
    }

    let (ok, text) = bed.cli(2, &["setvar", "NoIPFailback", "0"]);
    assert!(ok, "setvar: {text}");
    let (ok, text) = bed.cli(0, &["ipreallocate"]);
    assert!(ok, "ipreallocate: {text}");
    let r = wait_for("node 1 rebalanced onto", LIMIT, POLL, || {
        let p = bed.placement(&list)?;
        (p.values().filter(|&&n| n == 1).count() == 2).then_some(())
    });
    assert!(r.is_ok(), "{}", bed.logs());
    sampler.finish();
}

/// A public address added by hand on a node that does not host it (a
/// "rogue" copy, #17) is removed by that node on its own, as CTDB's
/// recovery daemon does; the real owner keeps it throughout.
#[test]
fn failover_cluster_a_rogue_copy_added_by_hand_is_removed() {
    require_root();
    let list = [201, 202, 203];
    let bed = Bed::new("focr", &list);
    let placed = bed.wait_placed("every address hosted exactly once", &list);
    let owner = placed[&public(201)];
    let other = (owner + 1) % 3;
    let ns = bed.c.nodes[other].ns.name().to_string();
    let owner_ns = bed.c.nodes[owner].ns.name().to_string();
    bed.c.nodes[other]
        .ns
        .ip(&["addr", "add", "198.51.100.201/24", "dev", "eth1"])
        .unwrap();
    assert!(addresses_on(&ns).contains(&public(201)));
    let start = Instant::now();
    let r = wait_for("the rogue copy removed", LIMIT, POLL, || {
        assert!(
            addresses_on(&owner_ns).contains(&public(201)),
            "the owner lost 198.51.100.201 while a rogue copy was removed\n{}",
            bed.logs()
        );
        (!addresses_on(&ns).contains(&public(201))).then_some(())
    });
    assert!(r.is_ok(), "{}", bed.logs());
    eprintln!(
        "rogue copy on node {other} removed after {:?}",
        start.elapsed()
    );
    let placed = bed.wait_placed("every address hosted exactly once", &list);
    assert_eq!(placed[&public(201)], owner, "{}", bed.logs());
}

#[test]
fn failover_cluster_sampler_catches_an_address_on_two_nodes() {
    require_root();
    // No daemons: the test itself puts one address on two nodes.
    let c = TestCluster::new("focs", 2).unwrap();
    let names: Vec<String> = c.nodes.iter().map(|n| n.ns.name().to_string()).collect();
    let powered = Arc::new(Mutex::new(vec![true, true]));
    c.nodes[0]
        .ns
        .ip(&["addr", "add", "198.51.100.250/24", "dev", "eth0"])
        .unwrap();
    let sampler = Sampler::start_on(names.clone(), Arc::clone(&powered));
    std::thread::sleep(Duration::from_millis(200));
    let (violations, samples, _) = sampler.stop();
    assert!(samples > 3);
    assert!(violations.is_empty(), "{violations:?}");
    c.nodes[1]
        .ns
        .ip(&["addr", "add", "198.51.100.250/24", "dev", "eth0"])
        .unwrap();
    let sampler = Sampler::start_on(names, powered);
    std::thread::sleep(Duration::from_millis(200));
    let (violations, _, _) = sampler.stop();
    assert!(
        violations.iter().any(|v| v.contains("198.51.100.250")),
        "{violations:?}"
    );
}

/// A MEMBERSHIP event that does not come from the node's own clusterd (here:
/// a local client forging "lease lost") is not believed: the node keeps its
/// addresses. (Before the check, failoverd dropped everything at once.)
#[test]
fn failover_cluster_forged_membership_is_ignored() {
    use transport::client::Client;
    use transport::msg::cluster::{Membership, GET_MEMBERSHIP, MEMBERSHIP};
    use transport::proto::service::{BROADCAST_SERVICE, CLUSTERD, LOCAL};
    use transport::proto::Address;

    require_root();
    let list = [201, 202, 203];
    let bed = Bed::new("foc4", &list);
    let placed = bed.wait_placed("every address hosted exactly once", &list);
    let socket = bed.c.nodes[0].run_dir.join("transport.sock");
    let mine: Vec<IpAddr> = placed
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(a, _)| *a)
        .collect();
    assert!(!mine.is_empty(), "node 0 hosts nothing: {placed:?}");
    let node0 = bed.c.nodes[0].ns.name().to_string();
    let forging = AtomicBool::new(true);
    let (sent, missing) = std::thread::scope(|s| {
        // Watch node 0's kernel while the forgeries arrive, and a little after.
        let watcher = s.spawn(|| {
            let mut missing = Vec::new();
            let mut after = 0;
            while after < 25 {
                if !forging.load(Ordering::Relaxed) {
                    after += 1;
                }
                let now = addresses_on(&node0);
                for a in &mine {
                    if !now.contains(a) && !missing.contains(a) {
                        missing.push(*a);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            missing
        });
        let sent = bed.c.nodes[0]
            .ns
            .block_on(move || async move {
                let (client, _incoming) = Client::connect_unix(&socket, "forger").await.unwrap();
                let mut m: Membership = client
                    .request(
                        Address::local(CLUSTERD),
                        GET_MEMBERSHIP,
                        &(),
                        Duration::from_secs(5),
                    )
                    .await
                    .unwrap();
                assert!(m.lease_ok, "node 0 should hold a lease: {m:?}");
                m.lease_ok = false;
                let mut sent = 0;
                for _ in 0..20 {
                    if client
                        .event(Address::new(LOCAL, BROADCAST_SERVICE), MEMBERSHIP, &m)
                        .await
                        .is_ok()
                    {
                        sent += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                sent
            })
            .unwrap();
        forging.store(false, Ordering::Relaxed);
        (sent, watcher.join().unwrap())
    });
    assert!(sent > 0, "no forged event could be sent");
    assert!(
        missing.is_empty(),
        "the forged membership removed {missing:?} from node 0\n{}",
        bed.logs()
    );
    assert_eq!(
        bed.placement(&list).as_ref(),
        Some(&placed),
        "the forged membership moved addresses\n{}",
        bed.logs()
    );
    assert!(
        bed.logs()
            .contains("MEMBERSHIP not from this node's clusterd"),
        "{}",
        bed.logs()
    );
}

/// A node whose clusterd hangs (SIGSTOP) and which is cut off from the
/// others (nftables) loses its lease without anybody saying so — its
/// clusterd cannot publish it, the leader cannot release anything there: its
/// failoverd must remove its addresses when the lease end
/// clusterd last told of passes, before the leader may give them to another
/// node (lease + margin after the last heartbeat). The sampler fails the
/// test if an address is ever seen on two nodes. (With the earlier watchdog
/// of max(2 x lease, 1 s), the node kept its addresses ~400 ms after the
/// survivors had taken them.)
#[test]
fn failover_cluster_hung_clusterd_drops_addresses_before_they_move() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    require_root();
    let list = [201, 202, 203, 204, 205, 206];
    let bed = Bed::new("foc5", &list);
    let placed = bed.wait_placed("every address hosted exactly once", &list);
    let (victim, theirs, others) = bed.victim(&placed);
    let pid = bed.clusterd_pids.lock().unwrap()[victim];
    let sampler = Sampler::start(&bed);
    let t0 = Instant::now();
    // Hung and cut off: nobody can tell its failoverd anything any more.
    kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGSTOP).unwrap();
    bed.c.nodes[victim].ns.cut_from(&others).unwrap();
    let victim_ns = bed.c.nodes[victim].ns.name().to_string();
    let gone = wait_for(
        "the hung node to drop its addresses",
        LIMIT,
        Duration::from_millis(5),
        || addresses_on(&victim_ns).is_empty().then_some(()),
    );
    let dropped_after = t0.elapsed();
    let moved = match wait_for("its addresses on the other nodes", LIMIT, POLL, || {
        let p = bed.placement(&list)?;
        theirs.iter().all(|a| p[a] != victim).then_some(p)
    }) {
        Ok(p) => p,
        Err(e) => {
            let _ = kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGCONT);
            panic!("{e}\n{}", bed.logs());
        }
    };
    let moved_after = t0.elapsed();
    eprintln!(
        "clusterd of node {victim} stopped: its addresses {theirs:?} removed after {dropped_after:?}, \
         hosted elsewhere after {moved_after:?}: {moved:?}"
    );
    kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGCONT).unwrap();
    bed.c.nodes[victim].ns.heal().unwrap();
    assert!(gone.is_ok(), "{}", bed.logs());
    let log = std::fs::read_to_string(bed.c.scratch.join(format!("node{victim}-failoverd.log")))
        .unwrap_or_default();
    // Clusterd is hung: nothing told failoverd the lease was lost. Either
    // the lease watch (its own task) or the core's timer in the loop got
    // to the told end first; both act on it.
    assert!(
        log.contains("the lease ended without renewal")
            || log.contains("the lease is not valid: dropping every public address"),
        "node {victim}'s failoverd did not act on the lease end:\n{}",
        bed.logs()
    );
    // Resumed, the node rejoins; every address stays hosted exactly once.
    bed.wait_placed("placed after clusterd resumed", &list);
    sampler.finish();
}

/// Run steps forged by another local service of the leader's node (any
/// member of the transport group can register one) are refused: a TAKE of
/// an address another node hosts, with a huge generation, and a RELEASE
/// with a huge run stamp (which would make the node refuse the leader's
/// real runs as older). Nothing moves, and the leader's next run works.
#[test]
fn failover_cluster_forged_run_steps_are_refused() {
    use transport::client::Client;
    use transport::msg::failover::{ReleaseIps, StepResult, TakeIps, RELEASE_IPS, TAKE_IPS};
    use transport::proto::service::FAILOVERD;
    use transport::proto::Address;

    require_root();
    let list = [201, 202, 203];
    let bed = Bed::new("foc7", &list);
    let placed = bed.wait_placed("every address hosted exactly once", &list);
    let leader = membership_of(&bed, 0)
        .and_then(|m| m.leader)
        .expect("a leader") as usize;
    // An address hosted by a node that is not the target.
    let target = (leader + 1) % 3;
    let (&addr, _) = placed
        .iter()
        .find(|(_, n)| **n != target)
        .expect("an address elsewhere");
    let socket = bed.c.nodes[leader].run_dir.join("transport.sock");
    let pnn = u32::try_from(target).unwrap();
    let (take, release) = bed.c.nodes[leader]
        .ns
        .block_on(move || async move {
            let (client, _incoming) = Client::connect_unix(&socket, "forger").await.unwrap();
            let to = Address::new(pnn, FAILOVERD);
            let take: Result<StepResult, _> = client
                .request(
                    to,
                    TAKE_IPS,
                    &TakeIps {
                        generation: u64::MAX / 2,
                        run: 1,
                        ips: vec![addr],
                    },
                    Duration::from_secs(5),
                )
                .await;
            let release: Result<StepResult, _> = client
                .request(
                    to,
                    RELEASE_IPS,
                    &ReleaseIps {
                        generation: 0,
                        run: u64::MAX,
                        ips: Vec::new(),
                    },
                    Duration::from_secs(5),
                )
                .await;
            (
                take.map_err(|e| e.to_string()),
                release.map_err(|e| e.to_string()),
            )
        })
        .unwrap();
    assert!(
        take.as_ref()
            .is_err_and(|e| e.contains("only from failoverd")),
        "a forged TAKE was not refused: {take:?}"
    );
    assert!(
        release
            .as_ref()
            .is_err_and(|e| e.contains("only from failoverd")),
        "a forged RELEASE was not refused: {release:?}"
    );
    assert_eq!(
        bed.placement(&list).as_ref(),
        Some(&placed),
        "a forged step moved an address\n{}",
        bed.logs()
    );
    // The leader's own runs still work on the target: move an address there.
    let (ok, out) = bed.cli(leader, &["moveip", &addr.to_string(), &target.to_string()]);
    assert!(
        ok,
        "moveip after the forgeries failed: {out}\n{}",
        bed.logs()
    );
    let moved = wait_for("the moved address on the target", LIMIT, POLL, || {
        let p = bed.placement(&list)?;
        (p.get(&addr) == Some(&target)).then_some(())
    });
    assert!(moved.is_ok(), "{}", bed.logs());
}

/// The `ipreallocated` hook runs on every node after a takeover run, and
/// an IPREALLOCATED event that does not come from a failoverd (a flood from
/// another local service) runs nothing.
#[test]
fn failover_cluster_ipreallocated_hooks_follow_runs_not_forgeries() {
    use transport::client::Client;
    use transport::msg::failover::{Ipreallocated, IPREALLOCATED};
    use transport::proto::service::{ALL_NODES, BROADCAST_SERVICE};
    use transport::proto::Address;

    require_root();
    let list = [201, 202, 203];
    let bed = Bed::new("foc8", &list);
    bed.wait_placed("every address hosted exactly once", &list);
    let logs: Vec<std::path::PathBuf> = (0..3)
        .map(|i| bed.c.scratch.join(format!("node{i}-hooks.log")))
        .collect();
    for (i, n) in bed.c.nodes.iter().enumerate() {
        use std::os::unix::fs::PermissionsExt;
        let dir = n.config_dir.join("events");
        std::fs::create_dir_all(&dir).unwrap();
        let hook = dir.join("50.log");
        std::fs::write(
            &hook,
            format!("#!/bin/sh\necho \"$1\" >> {}\n", logs[i].display()),
        )
        .unwrap();
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let reallocated = |i: usize| {
        std::fs::read_to_string(&logs[i])
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == "ipreallocated")
            .count()
    };
    let (ok, out) = bed.cli(0, &["ipreallocate"]);
    assert!(ok, "ipreallocate: {out}");
    let ran = wait_for("the ipreallocated hook on every node", LIMIT, POLL, || {
        (0..3).all(|i| reallocated(i) > 0).then_some(())
    });
    assert!(ran.is_ok(), "{}", bed.logs());
    std::thread::sleep(Duration::from_millis(500));
    let before: Vec<usize> = (0..3).map(reallocated).collect();
    let socket = bed.c.nodes[1].run_dir.join("transport.sock");
    let sent = bed.c.nodes[1]
        .ns
        .block_on(move || async move {
            let (client, _incoming) = Client::connect_unix(&socket, "forger").await.unwrap();
            let mut sent = 0;
            for _ in 0..200 {
                let to = Address::new(ALL_NODES, BROADCAST_SERVICE);
                if client
                    .event(to, IPREALLOCATED, &Ipreallocated { generation: 1 })
                    .await
                    .is_ok()
                {
                    sent += 1;
                }
            }
            // Let the client's writer hand them all to transportd.
            tokio::time::sleep(Duration::from_millis(300)).await;
            sent
        })
        .unwrap();
    assert!(sent > 0, "no forged event could be sent");
    std::thread::sleep(Duration::from_secs(1));
    let after: Vec<usize> = (0..3).map(reallocated).collect();
    // Real runs may come meanwhile (each broadcasts IPREALLOCATED), but
    // 200 forged events must not make 200 hook runs: at most a couple.
    assert!(
        before.iter().zip(&after).all(|(b, a)| a - b <= 2),
        "forged IPREALLOCATED events ran hooks: {before:?} -> {after:?}\n{}",
        bed.logs()
    );
    let warned = (0..3).any(|i| {
        std::fs::read_to_string(bed.c.scratch.join(format!("node{i}-failoverd.log")))
            .unwrap_or_default()
            .contains("IPREALLOCATED not from a failoverd")
    });
    assert!(warned, "the forgeries were not logged\n{}", bed.logs());
}

/// Node `i`'s clusterd's membership, asked over node `i`'s transportd.
fn membership_of(bed: &Bed, i: usize) -> Option<transport::msg::cluster::Membership> {
    use transport::client::Client;
    use transport::msg::cluster::GET_MEMBERSHIP;
    use transport::proto::service::CLUSTERD;
    use transport::proto::Address;
    let socket = bed.c.nodes[i].run_dir.join("transport.sock");
    bed.c.nodes[i]
        .ns
        .block_on(move || async move {
            let (client, _incoming) = Client::connect_unix(&socket, "test").await.ok()?;
            client
                .request(
                    Address::local(CLUSTERD),
                    GET_MEMBERSHIP,
                    &(),
                    Duration::from_secs(2),
                )
                .await
                .ok()
        })
        .ok()
        .flatten()
}

/// A crashed failoverd leaves its addresses configured; while it is down
/// its node is cut off, so its lease breaks and the survivors take those
/// addresses (both nodes have them now: nothing runs on the crashed node to
/// remove them — the limit docs/failoverd.md states). When the node is back
/// with a valid lease and failoverd restarts, it must not adopt them: they
/// were configured before the lease last broke (its record of configured
/// addresses says when). It removes them, and from then on every address is
/// hosted exactly once, the sampler watching.
#[test]
fn failover_cluster_restart_after_a_lease_break_does_not_adopt() {
    require_root();
    let list = [201, 202, 203, 204, 205, 206];
    let bed = Bed::new("foc6", &list);
    let placed = bed.wait_placed("every address hosted exactly once", &list);
    let (victim, theirs, others) = bed.victim(&placed);
    let leased = || {
        bed.c.nodes[victim]
            .ns
            .exec_ok(
                "nft",
                &["list", "set", "inet", "ipfailover_lease", "lease4"],
            )
            .unwrap()
    };
    let has = |listing: &str, a: &IpAddr| {
        listing.contains(&format!("{a} ")) || listing.contains(&format!("{a},"))
    };
    let before = leased();
    assert!(theirs.iter().all(|a| has(&before, a)), "{before}");
    let pid = bed.failoverd_pids.lock().unwrap()[victim];
    assert!(bed.c.nodes[victim].ns.kill(pid));
    bed.c.nodes[victim].ns.cut_from(&others).unwrap();
    let victim_ns = bed.c.nodes[victim].ns.name().to_string();
    let elsewhere = wait_for(
        "the survivors to take the cut-off node's addresses",
        LIMIT,
        POLL,
        || {
            let mut seen = Vec::new();
            for (i, n) in bed.c.nodes.iter().enumerate() {
                if i != victim {
                    seen.extend(addresses_on(n.ns.name()));
                }
            }
            theirs.iter().all(|a| seen.contains(a)).then_some(())
        },
    );
    assert!(elsewhere.is_ok(), "{}", bed.logs());
    // The crashed node still has them configured (nothing removed them),
    // but the kernel no longer lets it answer for them: their lease
    // elements ran out with the lease.
    assert!(theirs.iter().all(|a| addresses_on(&victim_ns).contains(a)));
    let after = leased();
    for a in &theirs {
        assert!(
            !has(&after, a),
            "{a} still leased in the kernel of the cut-off node: {after}"
        );
    }
    bed.c.nodes[victim].ns.heal().unwrap();
    let lease = wait_for("the node's lease to be valid again", LIMIT, POLL, || {
        membership_of(&bed, victim).filter(|m| m.lease_ok)
    });
    assert!(lease.is_ok(), "{}", bed.logs());
    bed.start_daemon(victim, "failoverd");
    let gone = wait_for(
        "the restarted failoverd to remove them",
        LIMIT,
        Duration::from_millis(10),
        || {
            let now = addresses_on(&victim_ns);
            theirs.iter().all(|a| !now.contains(a)).then_some(())
        },
    );
    assert!(gone.is_ok(), "{}", bed.logs());
    let sampler = Sampler::start(&bed);
    bed.wait_placed("every address hosted exactly once again", &list);
    std::thread::sleep(Duration::from_millis(500));
    sampler.finish();
    let log = std::fs::read_to_string(bed.c.scratch.join(format!("node{victim}-failoverd.log")))
        .unwrap_or_default();
    assert!(
        log.contains("may not keep"),
        "the restarted failoverd did not refuse to adopt:\n{}",
        bed.logs()
    );
    assert!(
        !log.contains("configured before a restart: adopted"),
        "the restarted failoverd adopted addresses:\n{}",
        bed.logs()
    );
}

/// Hole 3 with real processes: node H's failoverd hangs (SIGSTOP; its
/// clusterd goes on, so H stays connected and keeps its lease), then node D
/// powers off. Every run fails on H's missing report until the leader
/// leaves H out (three runs); then D's addresses move to node 0, while H's
/// own stay with it (it may still hold them).
#[test]
fn failover_cluster_hung_failoverd_does_not_block_another_failover() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    require_root();
    let list = [201, 202, 203, 204, 205, 206];
    let bed = Bed::new("foc7", &list);
    let placed = bed.wait_placed("every address hosted exactly once", &list);
    let (dying, theirs, _) = bed.victim(&placed);
    let hung = (1..3).find(|&i| i != dying).unwrap();
    let on_hung: Vec<IpAddr> = placed
        .iter()
        .filter(|(_, n)| **n == hung)
        .map(|(a, _)| *a)
        .collect();
    let pid = bed.failoverd_pids.lock().unwrap()[hung];
    let pid = Pid::from_raw(i32::try_from(pid).unwrap());
    kill(pid, Signal::SIGSTOP).unwrap();
    let t0 = Instant::now();
    bed.power_off(dying);
    let moved = wait_for("the dead node's addresses on node 0", LIMIT, POLL, || {
        let p = bed.placement(&list)?;
        theirs.iter().all(|a| p[a] == 0).then_some(p)
    });
    let after = t0.elapsed();
    kill(pid, Signal::SIGCONT).unwrap();
    let moved = match moved {
        Ok(p) => p,
        Err(e) => panic!("{e}\n{}", bed.logs()),
    };
    eprintln!(
        "failoverd of node {hung} stopped, node {dying} off: its addresses {theirs:?} on node 0 after {after:?}"
    );
    for a in &on_hung {
        assert_eq!(
            moved[a], hung,
            "{a} was given away from the hung node: {moved:?}"
        );
    }
    let log =
        std::fs::read_to_string(bed.c.scratch.join("node0-failoverd.log")).unwrap_or_default();
    assert!(
        log.contains(&format!("left_out={{{hung}}}")),
        "node 0 never left node {hung} out:\n{}",
        bed.logs()
    );
}

/// Makes node `victim`'s failoverd busy: installs a `releaseip` hook that
/// hangs for 20 s, kills failoverd, runs `between`, adds a stray copy of
/// another node's address `stray` (guarded: it does not answer) and
/// restarts failoverd, which removes it at adoption — its hook then keeps
/// the loop waiting. Returns the node's namespace name once the stray is
/// gone.
fn restart_busy(bed: &Bed, victim: usize, stray: IpAddr, between: impl FnOnce()) -> String {
    use std::os::unix::fs::PermissionsExt;

    let node = &bed.c.nodes[victim];
    let hooks = node.config_dir.join("events");
    std::fs::create_dir_all(&hooks).unwrap();
    let hook = hooks.join("50.hang");
    std::fs::write(
        &hook,
        "#!/bin/sh\ncase \"$1\" in releaseip) sleep 20;; esac\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Killed only once its record lists what it hosts: the record is
    // written by a task of its own, and a failoverd killed before that
    // write restarts with addresses unknown to its record, which it rightly
    // removes (seen once at load 10: not what these tests are about).
    let victim_name = node.ns.name().to_string();
    let record = node.run_dir.join("failoverd.hosted");
    let recorded = wait_for(
        "the victim's record lists what it hosts",
        LIMIT,
        Duration::from_millis(10),
        || {
            let text = std::fs::read_to_string(&record).ok()?;
            let listed: Vec<&str> = text
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .collect();
            addresses_on(&victim_name)
                .iter()
                .all(|a| listed.contains(&a.to_string().as_str()))
                .then_some(())
        },
    );
    assert!(recorded.is_ok(), "{}", bed.logs());
    let pid = bed.failoverd_pids.lock().unwrap()[victim];
    assert!(node.ns.kill(pid));
    between();
    // A stray copy of another node's address (guarded: it does not
    // answer): the restarted failoverd removes it at adoption, and its
    // releaseip hook then keeps the loop waiting.
    node.ns
        .exec_ok(
            "ip",
            &["addr", "add", &format!("{stray}/24"), "dev", "eth1"],
        )
        .unwrap();
    bed.start_daemon(victim, "failoverd");
    let victim_ns = node.ns.name().to_string();
    let removing = wait_for(
        "the stray address removed",
        LIMIT,
        Duration::from_millis(10),
        || (!addresses_on(&victim_ns).contains(&stray)).then_some(()),
    );
    assert!(removing.is_ok(), "{}", bed.logs());
    victim_ns
}

/// Hole 1 with real processes: failoverd's loop is kept busy (a restarted
/// failoverd removes a stray address at adoption and its `releaseip` hook
/// hangs for 20 s), and the node is cut off meanwhile. The lease watch, a
/// task of its own, still removes the node's addresses at its lease end,
/// before the survivors take them: the sampler never sees one on two
/// nodes. (When the loop itself acted on the lease end, the node kept them
/// until the hook returned.)
#[test]
fn failover_cluster_busy_failoverd_still_drops_at_its_lease_end() {
    require_root();
    let list = [201, 202, 203, 204, 205, 206];
    let bed = Bed::new("foc8", &list);
    let placed = bed.wait_placed("every address hosted exactly once", &list);
    let (victim, theirs, others) = bed.victim(&placed);
    let stray = *placed.iter().find(|(_, n)| **n != victim).unwrap().0;
    let node = &bed.c.nodes[victim];
    let victim_ns = restart_busy(&bed, victim, stray, || {});
    let t0 = Instant::now();
    let sampler = Sampler::start(&bed);
    node.ns.cut_from(&others).unwrap();
    let moved = wait_for("its addresses on the other nodes", LIMIT, POLL, || {
        let mut seen = Vec::new();
        for (i, n) in bed.c.nodes.iter().enumerate() {
            if i != victim {
                seen.extend(addresses_on(n.ns.name()));
            }
        }
        theirs.iter().all(|a| seen.contains(a)).then_some(())
    });
    let after = t0.elapsed();
    let left = addresses_on(&victim_ns);
    node.ns.heal().unwrap();
    assert!(moved.is_ok(), "{}", bed.logs());
    assert!(
        after < Duration::from_secs(15),
        "moved only after {after:?} (the hook hangs 20 s)"
    );
    assert!(
        theirs.iter().all(|a| !left.contains(a)),
        "the busy node still has {left:?}"
    );
    eprintln!("busy failoverd on node {victim}: its addresses {theirs:?} moved after {after:?}");
    sampler.finish();
}

/// What [`lease_loss`] saw.
struct LeaseLoss {
    /// How the idle client's read ended within [`RESET_WAIT`] of the drop
    /// (`None`: it did not), and when, after the cut.
    read: Option<(Result<usize, ErrorKind>, Duration)>,
    /// When the cut-off node had removed all its addresses, after the cut.
    dropped_after: Duration,
    sampler: Sampler,
    prober: tests::arp::ArpProber,
    bed: Bed,
}

/// How long after the cut-off node dropped its addresses the idle client's
/// read is waited for (a reset sent before the removal arrives at once).
const RESET_WAIT: Duration = Duration::from_secs(5);
/// The address only the victim lists.
const ONLY_VICTIM: u8 = 210;

/// Finding 5 (docs/RELIABILITY.md): node 1 alone lists 198.51.100.210, so
/// no other node can ever take it and tickle its clients. An idle client
/// holds a TCP connection to it; node 1 is cut off from the cluster
/// network (nftables on the cluster addresses: the client still reaches
/// it) and loses its lease. Whatever resets the client now can only come
/// from node 1 itself, before it removes the address. The sampler (every
/// address configured on at most one node) and an ARP prober (at most one
/// MAC answering per round) watch throughout, while node 1's shared
/// addresses move to the survivors.
fn lease_loss(tag: &str, kernel_lease: bool, extra_toml: &str) -> LeaseLoss {
    const VICTIM: usize = 1;
    let shared: [u8; 6] = [201, 202, 203, 204, 205, 206];
    let mut with_only = shared.to_vec();
    with_only.push(ONLY_VICTIM);
    let bed = Bed::with_config(
        tag,
        &[&shared[..], &with_only, &shared[..]],
        kernel_lease,
        extra_toml,
        false,
    );
    let mut placed = bed.wait_placed("every address hosted exactly once", &with_only);
    assert_eq!(placed[&public(ONLY_VICTIM)], VICTIM, "{placed:?}");
    if !placed
        .iter()
        .any(|(a, n)| *n == VICTIM && *a != public(ONLY_VICTIM))
    {
        // The victim must hold a shared address too: that is what the
        // safety watch sees move.
        let (ok, text) = bed.cli(0, &["moveip", "198.51.100.201", &VICTIM.to_string()]);
        assert!(ok, "moveip: {text}\n{}", bed.logs());
        placed = match wait_for("201 on the victim", LIMIT, POLL, || {
            bed.placement(&with_only)
                .filter(|p| p[&public(201)] == VICTIM)
        }) {
            Ok(p) => p,
            Err(e) => panic!("{e}\n{}", bed.logs()),
        };
    }
    let theirs: Vec<IpAddr> = placed
        .iter()
        .filter(|(a, n)| **n == VICTIM && **a != public(ONLY_VICTIM))
        .map(|(a, _)| *a)
        .collect();
    let others: Vec<String> = [0, 2]
        .iter()
        .map(|&i| bed.c.nodes[i].addr.to_string())
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    bed.c.listen_everywhere(PORT, &stop).unwrap();
    let server = SocketAddr::new(public(ONLY_VICTIM), PORT);
    // Retried: on a loaded machine the victim's lease may flap right after
    // the placement, and 210 is briefly gone ("no route to host").
    let stream = match wait_for("a connection to 210", LIMIT, POLL, || {
        bed.c
            .client
            .run(move || TcpStream::connect_timeout(&server, Duration::from_secs(2)))
            .ok()?
            .ok()
    }) {
        Ok(s) => s,
        Err(e) => panic!("{e}\n{}", bed.logs()),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let mut reading = stream.try_clone().unwrap();
    std::thread::spawn(move || {
        reading
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let mut buf = [0u8; 8];
        let r = reading.read(&mut buf);
        let _ = tx.send((r.map_err(|e| e.kind()), Instant::now()));
    });
    let targets: Vec<std::net::Ipv4Addr> = with_only
        .iter()
        .map(|&i| std::net::Ipv4Addr::new(198, 51, 100, i))
        .collect();
    let prober = tests::arp::ArpProber::start(
        &bed.c.client,
        "eth0",
        std::net::Ipv4Addr::new(198, 51, 100, 100),
        targets,
        Duration::from_millis(5),
        Duration::from_secs(120),
    )
    .unwrap();
    let sampler = Sampler::start(&bed);
    std::thread::sleep(Duration::from_millis(200));

    let t0 = Instant::now();
    bed.c.nodes[VICTIM].ns.cut_from(&others).unwrap();
    let victim_ns = bed.c.nodes[VICTIM].ns.name().to_string();
    let gone = wait_for(
        "the cut-off node to drop its addresses",
        LIMIT,
        Duration::from_millis(5),
        || addresses_on(&victim_ns).is_empty().then_some(()),
    );
    let dropped_after = t0.elapsed();
    if let Err(e) = gone {
        let (violations, samples, _) = sampler.stop();
        panic!(
            "{e}\nsampler: {samples} samples, on two nodes: {:?}\n{}",
            &violations[..violations.len().min(10)],
            bed.logs()
        );
    }
    let read = rx.recv_timeout(RESET_WAIT).ok().map(|(r, at)| (r, at - t0));
    // The survivors take the shared addresses (never 210: nobody else
    // lists it) while the victim is still cut off.
    let moved = wait_for("its shared addresses on the survivors", LIMIT, POLL, || {
        let p = bed.placement(&shared)?;
        theirs.iter().all(|a| p[a] != VICTIM).then_some(())
    });
    if let Err(e) = moved {
        // A liveness failure (a loaded machine); say whether the rule held.
        let (violations, samples, _) = sampler.stop();
        panic!(
            "{e}\nsampler: {samples} samples, on two nodes: {:?}\n{}",
            &violations[..violations.len().min(10)],
            bed.logs()
        );
    }
    // Unblocks the reader if it is still waiting (it reports nothing more).
    let _ = stream.shutdown(std::net::Shutdown::Both);
    bed.c.nodes[VICTIM].ns.heal().unwrap();
    // Healed, the victim rejoins and hosts 210 again.
    bed.wait_placed("every address hosted exactly once again", &with_only);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    LeaseLoss {
        read,
        dropped_after,
        sampler,
        prober,
        bed,
    }
}

/// What the cut-off node's failoverd logged about its drop: how long the
/// revoke, the resets and the removal took, or that it removed first.
fn drop_log(o: &LeaseLoss) -> Vec<String> {
    let log =
        std::fs::read_to_string(o.bed.c.scratch.join("node1-failoverd.log")).unwrap_or_default();
    log.lines()
        .filter(|l| {
            [
                "drop: reset before removal",
                "removing first",
                "took too long",
                "reset local connections",
                "lease ended without renewal",
                "lease is not valid",
            ]
            .iter()
            .any(|k| l.contains(k))
        })
        .map(str::to_owned)
        .collect()
}

/// No address on two nodes, no two MACs answering one address in a round.
fn assert_safe(o: LeaseLoss) {
    let replies = o.prober.finish().unwrap();
    let d = tests::arp::duplicates(&replies);
    assert!(
        d.is_empty(),
        "two MACs answered for one address in one round ({} rounds), first: {:?}\n{}",
        d.len(),
        d.first(),
        o.bed.logs()
    );
    assert!(
        replies.len() > 100,
        "the prober saw almost nothing: {} replies",
        replies.len()
    );
    o.sampler.finish();
}

/// With the kernel lease (the default), the node that lost its lease
/// resets its own idle client before it removes the address: the client
/// sees ECONNRESET, which only the cut-off node can have sent. (Before,
/// failoverd removed the address first and destroyed the socket after;
/// the reset then had no route and the client hung.) The resets must end a
/// quarter of the margin (25 ms) after the lease end; when they do not (a
/// loaded machine: these daemons run at normal priority), failoverd
/// removes the address at once and says so, and the client is not reset —
/// allowed, and printed, only with that message in its log. Either way
/// the rule is checked first: no address configured on two nodes (the
/// sampler), no two MACs answering one (the prober).
#[test]
fn failover_cluster_a_node_that_loses_its_lease_resets_its_own_clients() {
    require_root();
    let o = lease_loss("focl", true, "");
    let log = drop_log(&o);
    eprintln!(
        "lease lost: addresses removed {:?} after the cut, idle client's read: {:?}\n{}",
        o.dropped_after,
        o.read,
        log.join("\n")
    );
    let reset = matches!(o.read, Some((Err(ErrorKind::ConnectionReset), _)));
    let out_of_time = log
        .iter()
        .any(|l| l.contains("took too long") || l.contains("removing first"));
    let read = o.read;
    let logs = o.bed.logs();
    assert_safe(o);
    if !reset && out_of_time {
        eprintln!("not reset: the resets ran out of their budget and the address went first");
    }
    assert!(
        reset || out_of_time,
        "the idle client of {} (only the cut-off node lists it) was not reset within \
         {RESET_WAIT:?} of the drop, and failoverd did not run out of time: {read:?}\n{logs}",
        public(ONLY_VICTIM),
    );
}

/// The same cut with `kernel_lease = false`: removal is then the only
/// bound, so the node removes the address first and its reset cannot
/// leave — the client is not reset (the test of the test above, and the
/// order this configuration keeps). Safety holds the same way.
#[test]
fn failover_cluster_without_the_kernel_lease_a_node_that_loses_its_lease_removes_first() {
    require_root();
    let o = lease_loss("focm", false, "");
    eprintln!(
        "lease lost (no kernel lease): addresses removed {:?} after the cut, idle client's read: {:?}",
        o.dropped_after, o.read
    );
    assert!(
        o.read.is_none(),
        "the idle client's read ended ({:?}): without the kernel lease the node must remove \
         the address before it destroys the socket\n{}",
        o.read,
        o.bed.logs()
    );
    assert_safe(o);
}

/// The same cut in the fast profile (10 ms heartbeats, 30 ms lease, 10 ms
/// margin): the resets could use only 2.5 ms after the lease end, less
/// than the 3 ms minimum, so the node removes first and the idle client is
/// not reset by it (printed, not asserted); what must hold is the rule — the sampler sees
/// no address configured on two nodes, the prober no two MACs. Ignored by
/// default, like every fast-profile test with real processes but chaos's
/// (which does not assert liveness): in a debug build on a busy machine the
/// survivors' 30 ms leases flap and the placement this test waits for may
/// not come (a liveness failure, reported with the sampler's findings).
#[test]
#[ignore = "fast profile: needs a machine that schedules 10 ms heartbeats; run explicitly"]
fn failover_cluster_fast_profile_a_node_that_loses_its_lease_keeps_the_rule() {
    require_root();
    let o = lease_loss("focf", true, "[cluster]\nprofile = \"fast\"\n\n");
    eprintln!(
        "lease lost (fast profile): addresses removed {:?} after the cut, idle client's read: {:?}\n{}",
        o.dropped_after,
        o.read,
        drop_log(&o).join("\n")
    );
    assert_safe(o);
}

/// Issue 13 (the flap after a big take): a healthy node keeps its
/// addresses while its failoverd's loop is busy. The restarted failoverd
/// adopts its addresses, then removes a stray one at adoption, and its
/// `releaseip` hook hangs for 20 s: the loop waits for it. clusterd's lease
/// renewals must still reach the lease watch. (When the loop applied them,
/// they queued behind the hook, the watch ran out on the last end it had,
/// and the node dropped every address although its lease never lapsed —
/// as after a take of 256 addresses, whose record write held the loop.)
#[test]
fn failover_cluster_busy_failoverd_keeps_a_valid_lease() {
    require_root();
    let list = [201, 202, 203, 204, 205, 206];
    let bed = Bed::new("foc9", &list);
    bed.wait_placed("every address hosted exactly once", &list);
    // Spread over the nodes (the first run may put all on one): the stray
    // below is another node's.
    let placed = wait_for("addresses on more than one node", LIMIT, POLL, || {
        let p = bed.placement(&list)?;
        let first = *p.values().next()?;
        p.values().any(|n| *n != first).then_some(p)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", bed.logs()));
    let (victim, theirs, _) = bed.victim(&placed);
    let stray = *placed.iter().find(|(_, n)| **n != victim).unwrap().0;
    let log_path = bed.c.scratch.join(format!("node{victim}-failoverd.log"));
    let clusterd_path = bed.c.scratch.join(format!("node{victim}-clusterd.log"));
    let (mut log_from, mut clusterd_from) = (0, 0);
    let victim_ns = restart_busy(&bed, victim, stray, || {
        log_from = std::fs::metadata(&log_path).map_or(0, |m| m.len());
        clusterd_from = std::fs::metadata(&clusterd_path).map_or(0, |m| m.len());
    });
    // Six leases (500 ms each) with the loop waiting for the hook.
    let end = Instant::now() + Duration::from_secs(3);
    let mut missing = Vec::new();
    while Instant::now() < end && missing.is_empty() {
        let here = addresses_on(&victim_ns);
        missing = theirs.iter().filter(|a| !here.contains(a)).collect();
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = std::fs::read(&log_path).unwrap_or_default();
    let log = String::from_utf8_lossy(log.get(usize::try_from(log_from).unwrap()..).unwrap_or(&[]));
    let clusterd_log = std::fs::read(&clusterd_path).unwrap_or_default();
    let clusterd_log = String::from_utf8_lossy(
        clusterd_log
            .get(usize::try_from(clusterd_from).unwrap()..)
            .unwrap_or(&[]),
    );
    if clusterd_log.contains("lease lost") {
        // The machine stalled long enough for clusterd itself to lose the
        // lease (every node at once, on a loaded test machine): dropping
        // was right, and this run cannot tell the two cases apart.
        eprintln!(
            "node {victim}'s clusterd lost its lease during the check (machine stall): nothing to conclude\n{clusterd_log}"
        );
        return;
    }
    assert!(
        missing.is_empty(),
        "node {victim} dropped {missing:?} while its lease was valid:\n{log}\n{}",
        bed.logs()
    );
    assert!(
        !log.contains("the lease ended without renewal"),
        "node {victim}'s lease watch ran out while its loop was busy:\n{log}"
    );
    eprintln!("busy failoverd on node {victim}: kept {theirs:?} for 3 s");
}

/// Stops node `i`'s failoverd (SIGSTOP), does `first`, runs `ipfailover
/// ARGS` against the node and resumes failoverd 300 ms later (the bed's
/// lease must be longer than that plus a quarter lease). The request
/// waits in failoverd's socket beside the link events of `first`, and on
/// resuming failoverd serves it long before a takeover run that those
/// events ask for can reach it (a run needs the leader and a round of
/// reports first).
fn cli_while_frozen(bed: &Bed, i: usize, first: impl FnOnce(), args: &[&str]) -> (bool, String) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    let pid = bed.failoverd_pids.lock().unwrap()[i];
    let pid = Pid::from_raw(i32::try_from(pid).unwrap());
    std::thread::scope(|s| {
        kill(pid, Signal::SIGSTOP).unwrap();
        first();
        let answer = s.spawn(|| bed.cli(i, args));
        std::thread::sleep(Duration::from_millis(300));
        kill(pid, Signal::SIGCONT).unwrap();
        answer.join().unwrap()
    })
}

/// Renames node `i`'s public interface `eth1` to `pub1` (down, rename, up:
/// Linux renames only a link that is down). Its addresses stay on it, but
/// a removal by the old name finds no link.
fn rename_eth1(bed: &Bed, i: usize) {
    let ns = &bed.c.nodes[i].ns;
    ns.ip(&["link", "set", "dev", "eth1", "down"]).unwrap();
    ns.ip(&["link", "set", "dev", "eth1", "name", "pub1"])
        .unwrap();
    ns.ip(&["link", "set", "dev", "pub1", "up"]).unwrap();
}

/// After a renamed node's addresses moved: no address was on two nodes, the
/// sampler ran, the node's kernel has none of them left, and its failed
/// removal was kept as a leftover.
fn assert_renamed_node_cleared(
    bed: &Bed,
    node: usize,
    violations: &[String],
    samples: usize,
    moved: bool,
    left: &[IpAddr],
) {
    assert!(
        violations.is_empty(),
        "an address was configured on two nodes at once: {:?}\n{}",
        &violations[..violations.len().min(10)],
        bed.logs()
    );
    assert!(samples > 10, "the sampler hardly ran ({samples} samples)");
    assert!(
        moved && left.is_empty(),
        "node {node} still has {left:?} on its renamed link\n{}",
        bed.logs()
    );
    assert_leftover(bed, node);
}

/// Hole 6 with real processes: a removal that really fails. failoverd
/// removes an address by interface name; once the interface is renamed
/// (its addresses go with it) the delete finds no link, and the address is
/// still configured. A node hosting addresses has its `eth1` renamed while
/// its failoverd is stopped, then `delip` of one of them (still listed on
/// the other nodes) is run against it; later a second node's `eth1` is
/// renamed the same way and `reloadips` takes one of its addresses out of
/// its list. The removals fail, the addresses stay leftovers (reported as
/// configured, so the leader releases them there before giving them away)
/// and are removed again until they are gone from the renamed link; only
/// then are they hosted elsewhere: the sampler never sees one on two
/// nodes. (When a failed delete was counted as done because the old name
/// could not be listed either, an address stayed on `pub1`, untracked, and
/// was given to another node at once: the sampler saw it on two nodes
/// until a later run happened to release it here again, in 4 of 4 runs.)
#[test]
fn failover_cluster_renamed_interface_leftovers_are_removed_before_they_move() {
    require_root();
    let list = [201, 202, 203, 204, 205, 206];
    // A 3 s lease: stopping a failoverd for 300 ms must not end it (the
    // default 500 ms lease could run out while it is stopped).
    let bed = Bed::with_toml("foc9", &list, "[cluster]\ndead_after_ms = 3000\n\n");
    let placed = bed.wait_placed("every address hosted exactly once", &list);
    let (victim, theirs, _) = bed.victim(&placed);
    let sampler = Sampler::start(&bed);

    // delip on the node whose interface was renamed.
    let t0 = Instant::now();
    let deleted = theirs[0].to_string();
    let (ok, text) = cli_while_frozen(
        &bed,
        victim,
        || rename_eth1(&bed, victim),
        &["delip", &deleted],
    );
    // With the removal failing, delip's own answer is an error (the address
    // stays a leftover), unless a run's release got there first.
    eprintln!("delip {deleted} on node {victim} (eth1 renamed): ok={ok} {text}");
    let victim_ns = bed.c.nodes[victim].ns.name().to_string();
    let moved = wait_for(
        "the renamed node's addresses hosted elsewhere",
        LIMIT,
        POLL,
        || {
            let p = bed.placement(&list)?;
            theirs.iter().all(|a| p[a] != victim).then_some(p)
        },
    );
    let after = t0.elapsed();
    let left = addresses_on(&victim_ns);
    let (violations, samples, _) = sampler.stop();
    eprintln!("node {victim}: {theirs:?} off the renamed link and hosted elsewhere after {after:?}; left there: {left:?}");
    assert_renamed_node_cleared(&bed, victim, &violations, samples, moved.is_ok(), &left);

    // reloadips on a second node whose interface was renamed: node 0 ends
    // up hosting everything.
    let placed = bed.wait_placed("placed", &list);
    let second = (1..3).find(|&i| i != victim).unwrap();
    let mine: Vec<IpAddr> = placed
        .iter()
        .filter(|(_, n)| **n == second)
        .map(|(a, _)| *a)
        .collect();
    assert!(!mine.is_empty(), "node {second} hosts nothing: {placed:?}");
    let sampler = Sampler::start(&bed);
    let t0 = Instant::now();
    let kept: Vec<u8> = list
        .iter()
        .copied()
        .filter(|&k| public(k) != mine[0])
        .collect();
    std::fs::write(
        bed.c.nodes[second].config_dir.join("public_addresses"),
        public_addresses(&kept),
    )
    .unwrap();
    let (ok, text) = cli_while_frozen(
        &bed,
        second,
        || rename_eth1(&bed, second),
        &["reloadips", &second.to_string()],
    );
    eprintln!(
        "reloadips on node {second} without {} (eth1 renamed): ok={ok} {text}",
        mine[0]
    );
    let second_ns = bed.c.nodes[second].ns.name().to_string();
    let moved = wait_for("everything on node 0", LIMIT, POLL, || {
        let p = bed.placement(&list)?;
        p.values().all(|&n| n == 0).then_some(p)
    });
    let after = t0.elapsed();
    let left = addresses_on(&second_ns);
    let (violations, samples, _) = sampler.stop();
    eprintln!("node {second}: {mine:?} off the renamed link and on node 0 after {after:?}; left there: {left:?}");
    assert_renamed_node_cleared(&bed, second, &violations, samples, moved.is_ok(), &left);
    // Which removal failed first: reloadips's own (the usual case), or a
    // run's release that got there first.
    let log = std::fs::read_to_string(bed.c.scratch.join(format!("node{second}-failoverd.log")))
        .unwrap_or_default();
    eprintln!(
        "reloadips's own removal failed: {}",
        log.contains("reloadips: release failed; kept as a leftover")
    );
}

/// Node `i`'s failoverd saw a removal fail and kept the address as a
/// leftover. Without that the test proves nothing: either the rename no
/// longer makes a removal fail (the test does not reach hole 6 any more),
/// or a failed removal was counted as done (hole 6 itself: then the
/// address was on two nodes until some later run happened to release it
/// here again, a window the sampler may or may not catch).
fn assert_leftover(bed: &Bed, i: usize) {
    let log = std::fs::read_to_string(bed.c.scratch.join(format!("node{i}-failoverd.log")))
        .unwrap_or_default();
    assert!(
        log.contains("kept as a leftover"),
        "no failed removal was kept as a leftover on node {i}\n{}",
        bed.logs()
    );
}

/// The public addresses configured on `dev` in namespace `ns`.
fn publics_on_dev(ns: &str, dev: &str) -> Vec<IpAddr> {
    publics(ns, Some(dev))
}

/// Hole 6, a move between interfaces with real processes: every address
/// is listed on `eth1,eth2`. A node's failoverd is stopped while its
/// `eth1` is renamed to `pub1` (down, rename, up: the addresses stay on
/// it); when it runs again, healing moves them to `eth2`, and the delete
/// by the old name reaches nothing. The copies left on `pub1` must be
/// reported as leftovers and removed — only they: the addresses stay
/// hosted on `eth2`, on that node alone. (Before, the copies stayed on
/// `pub1` untracked; and a leftover of an address hosted here would be
/// forgotten at the redundant TAKE of the run that the link change asks
/// for.)
#[test]
fn failover_cluster_a_move_off_a_renamed_interface_leaves_no_copy_behind() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    require_root();
    let list = [201, 202, 203, 204, 205, 206];
    let bed = Bed::with_ifaces("foca", &list, "[cluster]\ndead_after_ms = 3000\n\n", true);
    let placed = bed.wait_placed("every address hosted exactly once", &list);
    let (victim, theirs, _) = bed.victim(&placed);
    let ns = bed.c.nodes[victim].ns.name().to_string();
    let sampler = Sampler::start(&bed);
    let pid = bed.failoverd_pids.lock().unwrap()[victim];
    let pid = Pid::from_raw(i32::try_from(pid).unwrap());
    kill(pid, Signal::SIGSTOP).unwrap();
    rename_eth1(&bed, victim);
    std::thread::sleep(Duration::from_millis(300));
    let stranded = publics_on_dev(&ns, "pub1");
    kill(pid, Signal::SIGCONT).unwrap();
    assert!(
        theirs.iter().all(|a| stranded.contains(a)),
        "the rename did not keep {theirs:?} on pub1 ({stranded:?}): the test proves nothing"
    );
    let t0 = Instant::now();
    let cleared = wait_for("only eth2 has the moved addresses", LIMIT, POLL, || {
        let p = bed.placement(&list)?;
        let on_eth2 = publics_on_dev(&ns, "eth2");
        (publics_on_dev(&ns, "pub1").is_empty()
            && theirs.iter().all(|a| p[a] == victim && on_eth2.contains(a)))
        .then_some(())
    });
    let after = t0.elapsed();
    let left = publics_on_dev(&ns, "pub1");
    let (violations, samples, _) = sampler.stop();
    eprintln!("node {victim}: {theirs:?} moved to eth2; waited {after:?} for pub1 to be cleared; left on pub1: {left:?}");
    assert!(
        violations.is_empty(),
        "an address was configured on two nodes at once: {:?}\n{}",
        &violations[..violations.len().min(10)],
        bed.logs()
    );
    assert!(samples > 10, "the sampler hardly ran ({samples} samples)");
    assert!(
        cleared.is_ok(),
        "node {victim}: pub1 still has {left:?}, eth2 {:?}\n{}",
        publics_on_dev(&ns, "eth2"),
        bed.logs()
    );
    let log = std::fs::read_to_string(bed.c.scratch.join(format!("node{victim}-failoverd.log")))
        .unwrap_or_default();
    assert!(
        log.contains("tracked as a leftover"),
        "node {victim}: no copy was reported as a leftover: the test proves nothing\n{}",
        bed.logs()
    );
}

/// An unprivileged member of the transport group: a uid with no passwd
/// entry and `nogroup` (the group the trust test's transportds name) as its
/// primary group.
const MEMBER: (u32, u32) = (64_000, 65_534);

/// Runs the test crate's `forge` client as [`MEMBER`] against node `i`'s
/// socket: registers `name`, then sends `steps` (see src/bin/forge.rs).
/// Returns its output.
fn forge_as_member(bed: &Bed, i: usize, name: &str, steps: &[String]) -> String {
    use std::os::unix::process::CommandExt;
    let out = Command::new(env!("CARGO_BIN_EXE_forge"))
        .arg(bed.c.nodes[i].run_dir.join("transport.sock"))
        .arg(name)
        .args(steps)
        .uid(MEMBER.0)
        .gid(MEMBER.1)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A forge step: `kind` (request or event) to `(pnn, service)`.
fn step<T: serde::Serialize>(kind: &str, pnn: &str, service: &str, op: u32, payload: &T) -> String {
    let bytes = transport::proto::encode_payload(payload).unwrap();
    tests::forge::step(kind, pnn, service, op, &bytes)
}

/// Local trust (#14 item 1), with a real non-root member of the transport
/// group (`--group nogroup`) on the leader's node and on another node:
/// * the CLI's reads work for it (`ipfailover ip`, `status`);
/// * it cannot register a daemon's name (clusterd, failoverd, conntrackd,
///   masterd: refused by transportd, free or not);
/// * its TAKE_IPS (huge generation, an address another node hosts) and
///   RELEASE_IPS are refused by transportd and never reach a failoverd;
///   its LEASE and IPREALLOCATED events are dropped; no address moves
///   (the target's kernel is watched);
/// * while a node's clusterd is down it can neither register as
///   `clusterd` nor hand failoverd a lease that never ends: the node drops
///   its addresses when its lease ends and the others take them, never on
///   two nodes at once (the sampler watches every kernel).
#[test]
fn failover_cluster_group_member_cannot_forge() {
    use std::os::unix::process::CommandExt;
    use transport::msg::cluster::{monotonic_ns, Lease, LeaseUpdate, LEASE};
    use transport::msg::failover::{
        Ipreallocated, ReleaseIps, TakeIps, IPREALLOCATED, RELEASE_IPS, TAKE_IPS,
    };
    use transport::proto::control::{PingRequest, PING};

    require_root();
    let list = [201, 202, 203];
    let bed = Bed::with_transportd_args(
        "foct",
        &[&list, &list, &list],
        true,
        "",
        false,
        &["--group", "nogroup"],
    );
    let placed = bed.wait_placed("every address hosted exactly once", &list);
    let leader = membership_of(&bed, 0)
        .and_then(|m| m.leader)
        .expect("a leader") as usize;
    let target = (leader + 1) % 3;
    let (&addr, &host) = placed
        .iter()
        .find(|(_, n)| **n == (leader + 2) % 3)
        .or_else(|| placed.iter().find(|(_, n)| **n != target))
        .expect("an address hosted elsewhere than the target");

    // The CLI's reads work for a member.
    for args in [&["ip"][..], &["status"][..]] {
        let out = Command::new(bin_path("ipfailover").unwrap())
            .arg("--run-dir")
            .arg(&bed.c.nodes[leader].run_dir)
            .args(args)
            .uid(MEMBER.0)
            .gid(MEMBER.1)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "ipfailover {args:?} as a group member: {out:?}"
        );
        if args == ["ip"] {
            assert!(text.contains(&addr.to_string()), "ipfailover ip: {text}");
        }
    }

    // Daemon names: refused, whether registered (clusterd) or free (masterd).
    for name in ["clusterd", "failoverd", "conntrackd", "masterd"] {
        let out = forge_as_member(&bed, leader, name, &[]);
        assert!(
            out.starts_with("register refused") && out.contains("reserved for the daemons"),
            "a group member registered as {name}: {out}"
        );
    }

    // Run steps and events from the leader's node.
    let target_ns = bed.c.nodes[target].ns.name().to_string();
    let host_ns = bed.c.nodes[host].ns.name().to_string();
    let watching = AtomicBool::new(true);
    let (out, seen) = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut seen = Vec::new();
            let mut after = 0;
            while after < 25 {
                if !watching.load(Ordering::Relaxed) {
                    after += 1;
                }
                if addresses_on(&target_ns).contains(&addr) {
                    seen.push(format!("{addr} on the target, node {target}"));
                }
                if !addresses_on(&host_ns).contains(&addr) {
                    seen.push(format!("{addr} gone from its host, node {host}"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        });
        let lease = LeaseUpdate {
            this_node: u32::try_from(leader).unwrap(),
            lease: Lease {
                at_ns: monotonic_ns(),
                expires_ns: u64::MAX,
                since_ns: 1,
            },
        };
        let steps = [
            step(
                "request",
                &target.to_string(),
                "2",
                TAKE_IPS,
                &TakeIps {
                    generation: u64::MAX / 2,
                    run: 1,
                    ips: vec![addr],
                },
            ),
            step(
                "request",
                &host.to_string(),
                "2",
                RELEASE_IPS,
                &ReleaseIps {
                    generation: u64::MAX / 2,
                    run: u64::MAX,
                    ips: vec![(addr, Some(u32::try_from(target).unwrap()))],
                },
            ),
            step("event", "local", "broadcast", LEASE, &lease),
            step(
                "event",
                "all",
                "broadcast",
                IPREALLOCATED,
                &Ipreallocated {
                    generation: u64::MAX / 2,
                },
            ),
            step(
                "request",
                "local",
                "0",
                PING,
                &PingRequest { data: vec![7] },
            ),
        ];
        let out = forge_as_member(&bed, leader, "member", &steps);
        std::thread::sleep(Duration::from_millis(300));
        watching.store(false, Ordering::Relaxed);
        (out, watcher.join().unwrap())
    });
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.len() == 6 && lines[0].starts_with("register ok"),
        "{out}"
    );
    for (i, what) in [(1, "TAKE_IPS"), (2, "RELEASE_IPS")] {
        assert!(
            lines[i].starts_with("reply err")
                && lines[i].contains("Refused")
                && lines[i].contains("not one the ipfailover command sends"),
            "transportd did not refuse a member's {what}: {out}"
        );
    }
    assert!(
        lines[5].starts_with("reply ok"),
        "a member's PING failed: {out}"
    );
    assert!(
        seen.is_empty(),
        "a forgery moved an address: {seen:?}\n{}",
        bed.logs()
    );
    assert_eq!(
        bed.placement(&list).as_ref(),
        Some(&placed),
        "a forgery moved an address\n{}",
        bed.logs()
    );
    let tlog = std::fs::read_to_string(bed.c.scratch.join(format!("node{leader}-transportd.log")))
        .unwrap_or_default();
    assert!(
        tlog.contains("frame from a local client refused") && tlog.contains("uid=64000"),
        "the refusals were not logged with the uid:\n{tlog}"
    );
    assert!(
        tlog.contains("local registration refused") && tlog.contains("clusterd"),
        "the registrations were not logged:\n{tlog}"
    );
    assert!(
        !bed.logs().contains("run step not from a failoverd"),
        "a member's run step reached a failoverd\n{}",
        bed.logs()
    );

    // A node's clusterd stops: the member can neither take its name nor
    // keep the node's lease alive, so the node lets its addresses go.
    let victim = (0..3)
        .find(|i| *i != leader && placed.values().any(|n| n == i))
        .expect("a follower hosting an address");
    let theirs: Vec<IpAddr> = placed
        .iter()
        .filter(|(_, n)| **n == victim)
        .map(|(a, _)| *a)
        .collect();
    let others: Vec<String> = (0..3)
        .filter(|i| *i != victim)
        .map(|i| bed.c.nodes[i].addr.to_string())
        .collect();
    let sampler = Sampler::start(&bed);
    let pid = bed.clusterd_pids.lock().unwrap()[victim];
    assert!(
        bed.c.nodes[victim].ns.kill(pid),
        "clusterd of node {victim} not killed"
    );
    // Cut off too, so the leader cannot release anything there: only the
    // node's own lease end removes its addresses.
    bed.c.nodes[victim].ns.cut_from(&others).unwrap();
    let forging = AtomicBool::new(true);
    let victim_ns = bed.c.nodes[victim].ns.name().to_string();
    let (attempts, moved) = std::thread::scope(|s| {
        let forger = s.spawn(|| {
            let mut attempts = Vec::new();
            for _ in 0..200 {
                if !forging.load(Ordering::Relaxed) {
                    break;
                }
                let lease = LeaseUpdate {
                    this_node: u32::try_from(victim).unwrap(),
                    lease: Lease {
                        at_ns: monotonic_ns(),
                        expires_ns: u64::MAX,
                        since_ns: 1,
                    },
                };
                let endless = [step("event", "local", "broadcast", LEASE, &lease)];
                attempts.push(forge_as_member(&bed, victim, "clusterd", &endless));
                attempts.push(forge_as_member(&bed, victim, "member", &endless));
                std::thread::sleep(Duration::from_millis(100));
            }
            attempts
        });
        let moved = wait_for("the node's addresses on the others", LIMIT, POLL, || {
            let p = bed.placement(&list)?;
            (addresses_on(&victim_ns).is_empty() && theirs.iter().all(|a| p[a] != victim))
                .then_some(p)
        });
        forging.store(false, Ordering::Relaxed);
        (forger.join().unwrap(), moved)
    });
    bed.c.nodes[victim].ns.heal().unwrap();
    if let Err(e) = moved {
        panic!("{e}\n{}", bed.logs());
    }
    assert!(attempts.len() >= 2, "no forgery was tried");
    for a in attempts.chunks(2) {
        assert!(
            a[0].starts_with("register refused"),
            "a member registered as clusterd while it was down: {}",
            a[0]
        );
    }
    bed.start_daemon(victim, "clusterd");
    bed.wait_placed("placed after clusterd restarted", &list);
    sampler.finish();
}

/// A client that connects right after its address moved to a node whose
/// lease then ends: the next owner resets it. Written after chaos
/// (default profile, seed 121, `--ips 12`): idle clients connected 0.1-0.3 s
/// after a (re)take were missing from the next owner's tickle list when
/// the node lost its lease 3-5 s later (the capture showed the next owner
/// tickle only old, already reset connections). This simple form passes;
/// what chaos adds (restarts, partitions, many moves) is not found yet.
#[test]
fn failover_cluster_a_client_connecting_right_after_a_take_is_reset_at_the_next_move() {
    require_root();
    let list = [201, 202, 203, 204, 205, 206];
    let bed = Bed::new("foct", &list);
    bed.wait_placed("every address hosted exactly once", &list);
    let stop = Arc::new(AtomicBool::new(false));
    bed.c.listen_everywhere(PORT, &stop).unwrap();
    let mut failures = Vec::new();
    for round in 0..4u64 {
        let from = bed.placement(&list).expect("placed")[&public(201)];
        let to = (from + 1) % 3;
        let target = to.to_string();
        wait_for("moveip 201", LIMIT, Duration::from_millis(200), || {
            bed.cli(from, &["moveip", "198.51.100.201", &target])
                .0
                .then_some(())
        })
        .unwrap();
        let ns = bed.c.nodes[to].ns.name().to_string();
        wait_for(
            "201 on its new node",
            LIMIT,
            Duration::from_millis(2),
            || addresses_on(&ns).contains(&public(201)).then_some(()),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(100 + 50 * round));
        let reader = idle_client_of(&bed, SocketAddr::new(public(201), PORT));
        std::thread::sleep(Duration::from_millis(1500));
        let (_, tickles) = bed.cli((to + 1) % 3, &["gettickles", "198.51.100.201"]);
        let taken = kill_clusterd_until_201_moves(&bed, to, &list);
        let read = reader.join().unwrap();
        if taken.is_err() || read != Err(ErrorKind::ConnectionReset) {
            failures.push(format!("round {round}: node {to}: taken {taken:?}, read {read:?}; tickles before:\n{tickles}"));
        }
        bed.start_daemon(to, "clusterd");
        bed.wait_placed("every address hosted exactly once", &list);
    }
    stop.store(true, Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        bed.logs()
    );
}
