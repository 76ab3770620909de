//! `demo [--nodes N] [--no-failover] [--keep]`: a real ipfailover cluster in
//! network namespaces on this machine (root only).
//!
//! It builds N node namespaces and a client namespace on one bridged LAN
//! (documentation addresses 192.0.2.0/24 only), writes each node's
//! configuration directory (public addresses 192.0.2.201-206/24 on eth0),
//! starts masterd on every node, waits until every public address is hosted
//! and shows `ipfailover status` and `ipfailover ip`. Then it powers off the
//! node hosting 192.0.2.201 (cable pulled, masterd SIGKILLed, its daemons
//! die with it) and shows, with measured times, which node takes which
//! address, the gratuitous ARP reaching the client (tcpdump in the client
//! namespace), and the client's idle connection to 192.0.2.201 being reset
//! and a new connection succeeding. Everything it made is removed on exit
//! or Ctrl-C; `--keep` leaves the cluster running until Ctrl-C.
//!
//! masterd runs the daemons that are built (`target/<profile>/`); without
//! failoverd no address is ever hosted, and the demo says so and shows what
//! runs (the transport: nodes connect, and a powered-off node is noticed).
//!
//! `demo --serve PORT` (internal) is the TCP service each node runs: it
//! accepts connections on every address and keeps them open, silent.

use std::io::{BufRead, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{ArgAction, Parser};
use tests::cluster::{bin_path, Node, TestCluster};

/// The TCP port of the demo service on every node.
const PORT: u16 = 8000;
/// How many public addresses the demo configures (192.0.2.201 onwards).
const PUBLIC: u8 = 6;

/// A real ipfailover cluster in network namespaces on this machine (root
/// only): N nodes, a client, a node powered off, the addresses moving.
#[derive(Debug, Parser)]
#[command(name = "demo")]
struct Options {
    /// Nodes to run (2 to 9).
    #[arg(short = 'n', long, default_value_t = 3, value_parser = nodes_in_range)]
    nodes: usize,
    /// Do not power a node off: only build the cluster and show it.
    #[arg(long = "no-failover", action = ArgAction::SetFalse)]
    failover: bool,
    /// Leave the cluster running until Ctrl-C.
    #[arg(long)]
    keep: bool,
    /// Internal: be the TCP service each node runs (accept on every address
    /// on PORT, keep connections open, silent).
    #[arg(long, value_name = "PORT", hide = true)]
    serve: Option<u16>,
}

fn nodes_in_range(v: &str) -> Result<usize, String> {
    let n: usize = v.parse().map_err(|_| format!("'{v}' is not a number"))?;
    if (2..=9).contains(&n) {
        Ok(n)
    } else {
        Err(format!("the demo runs 2 to 9 nodes, not {n}"))
    }
}

/// Set by Ctrl-C; every wait loop checks it so that the guards clean up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

fn step(msg: &str) {
    eprintln!("\x1b[1m==>\x1b[0m {msg}");
}

fn main() -> ExitCode {
    let opts = Options::parse();
    if let Some(port) = opts.serve {
        return match serve(port) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("demo --serve: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Err(e) = ctrlc::set_handler(|| {
        INTERRUPTED.store(true, Ordering::Relaxed);
        eprintln!("\ninterrupted: cleaning up");
    }) {
        eprintln!("demo: cannot install the Ctrl-C handler: {e}");
        return ExitCode::FAILURE;
    }
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The demo service: accept on every address, keep connections open.
fn serve(port: u16) -> Result<()> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
        .with_context(|| format!("binding port {port}"))?;
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
        });
    }
    Ok(())
}

fn public_address(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 201 + i)
}

fn run(opts: &Options) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("needs root: the demo builds network namespaces");
    }
    let masterd = bin_path("masterd")?;
    let cli = bin_path("ipfailover")?;
    let demo = std::env::current_exe().context("locating the demo executable")?;
    let daemons: Vec<&str> = masterd::daemons::ALL
        .iter()
        .filter(|d| bin_path(d.name).is_ok())
        .map(|d| d.name)
        .collect();
    let has_failover = daemons.contains(&"failoverd");

    step(&format!(
        "building {} node namespaces and a client namespace on one bridge",
        opts.nodes
    ));
    let cluster = TestCluster::new("demo", opts.nodes)?;
    let mut pa = String::new();
    for i in 0..PUBLIC {
        pa.push_str(&format!("{}/24 eth0\n", public_address(i)));
    }
    for node in &cluster.nodes {
        std::fs::write(
            node.config_dir.join("ipfailover.toml"),
            format!(
                "# written by the demo\n[transport]\nrun_dir = \"{}\"\n",
                node.run_dir.display()
            ),
        )?;
        std::fs::write(node.config_dir.join("public_addresses"), &pa)?;
        eprintln!(
            "    node {}: namespace {}  eth0 {}  config {}",
            node.pnn,
            node.ns.name(),
            node.addr,
            node.config_dir.display()
        );
    }
    eprintln!(
        "    client: namespace {}  eth0 {}",
        cluster.client.name(),
        tests::cluster::CLIENT_ADDR
    );
    eprintln!(
        "    public addresses on every node: {} .. {} /24 on eth0",
        public_address(0),
        public_address(PUBLIC - 1)
    );

    step(&format!(
        "starting masterd on every node (daemons: {})",
        daemons.join(", ")
    ));
    let logs = cluster.scratch.join("logs");
    std::fs::create_dir_all(&logs)?;
    for node in &cluster.nodes {
        start_masterd(node, &masterd, &daemons, &logs)?;
        start_service(node, &demo)?;
    }
    let t0 = Instant::now();
    wait_until(
        "every node answers `ipfailover ping -n all`",
        Duration::from_secs(20),
        || (responders(&ping_all(&cluster.nodes[0], &cli).ok()?) == opts.nodes).then_some(()),
    )?;
    eprintln!("    cluster connected in {:.0} ms", ms(t0.elapsed()));

    let mut hosted_ok = false;
    if has_failover {
        step("waiting until every public address is hosted");
        let all: Vec<usize> = (0..opts.nodes).collect();
        let r = wait_until(
            "every public address hosted by exactly one node",
            Duration::from_secs(30),
            || {
                let h = hosts(&cluster, &all);
                (h.iter().all(|x| x.len() == 1)).then_some(h)
            },
        );
        match r {
            Ok(h) => {
                eprintln!(
                    "    all {PUBLIC} addresses hosted after {:.0} ms",
                    ms(t0.elapsed())
                );
                for (i, nodes) in h.iter().enumerate() {
                    eprintln!("      {} on node {:?}", public_address(to_u8(i)), nodes);
                }
                hosted_ok = true;
            }
            Err(e) => eprintln!("    {e:#} (see the logs in {})", logs.display()),
        }
    }
    show(&cluster.nodes[0], &cli, &["status"]);
    show(&cluster.nodes[0], &cli, &["ip"]);
    show(&cluster.nodes[0], &cli, &["ping", "-n", "all"]);

    if opts.failover {
        if hosted_ok {
            failover(&cluster, &cli, &logs)?;
        } else {
            transport_only_failover(&cluster, &cli, &masterd, &daemons, &logs)?;
        }
    }
    if !has_failover {
        eprintln!(
            "\nnote: failoverd is not built in this tree, so no public address is hosted;\n\
             this run shows what runs today (masterd, the transport between nodes).\n\
             With failoverd built, the demo shows the takeover, the gratuitous ARP and\n\
             the client's connection being reset and reconnecting."
        );
    }

    if opts.keep {
        step("the cluster keeps running; press Ctrl-C to remove it. Try:");
        for node in &cluster.nodes {
            eprintln!(
                "    ip netns exec {} {} --run-dir {} status",
                node.ns.name(),
                cli.display(),
                node.run_dir.display()
            );
        }
        eprintln!("    logs: {}", logs.display());
        while !INTERRUPTED.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    step("cleaning up");
    Ok(())
}

fn to_u8(i: usize) -> u8 {
    u8::try_from(i).unwrap_or(u8::MAX)
}

/// For each public address, the nodes (among `alive`) that have it on eth0.
fn hosts(cluster: &TestCluster, alive: &[usize]) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); usize::from(PUBLIC)];
    for &i in alive {
        let Some(node) = cluster.nodes.get(i) else {
            continue;
        };
        let Ok(text) = node
            .ns
            .exec_ok("ip", &["-4", "-o", "addr", "show", "dev", "eth0"])
        else {
            continue;
        };
        for (k, slot) in out.iter_mut().enumerate() {
            let needle = format!(" {}/", public_address(to_u8(k)));
            if text.contains(&needle) {
                slot.push(i);
            }
        }
    }
    out
}

/// The real failover: power off the node hosting 192.0.2.201 and watch.
fn failover(cluster: &TestCluster, cli: &Path, logs: &Path) -> Result<()> {
    let n = cluster.nodes.len();
    if n == 2 {
        eprintln!(
            "    note: without a cluster lock, the survivor of a 2-node cluster has no\n    \
             majority and must not take over (CTDB's rule); use 3 nodes or more to see a takeover"
        );
    }
    let all: Vec<usize> = (0..n).collect();
    let before = hosts(cluster, &all);
    let victim = before
        .first()
        .and_then(|v| v.first().copied())
        .context("192.0.2.201 is not hosted")?;
    let target = public_address(0);
    let moving: Vec<usize> = (0..usize::from(PUBLIC))
        .filter(|&k| before[k].contains(&victim))
        .collect();

    step(&format!(
        "client: an idle TCP connection to {target}:{PORT} (served by node {victim}), and tcpdump on its eth0"
    ));
    let capture = logs.join("client-arp.txt");
    let dump = std::fs::File::create(&capture)?;
    let mut tcpdump = cluster.client.command("tcpdump");
    tcpdump
        .args(["-i", "eth0", "-n", "-l", "-tt", "arp"])
        .stdout(dump)
        .stderr(Stdio::null());
    cluster.client.spawn(tcpdump)?;
    let (reset_tx, reset_rx) = mpsc::channel();
    let client_ns = cluster.client.name().to_owned();
    let dst = SocketAddr::new(IpAddr::V4(target), PORT);
    let (ok_tx, ok_rx) = mpsc::channel();
    {
        let ns = client_ns.clone();
        std::thread::spawn(move || idle_connection(&ns, dst, &ok_tx, &reset_tx));
    }
    match ok_rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(())) => eprintln!("    connected; the connection stays idle"),
        Ok(Err(e)) => bail!("client cannot connect to {dst}: {e}"),
        Err(_) => bail!("client: no answer from {dst}"),
    }
    // Let tcpdump start and the connection be learned and replicated.
    std::thread::sleep(Duration::from_millis(1500));

    step(&format!(
        "powering off node {victim} (cable pulled, masterd and its daemons killed)"
    ));
    let wall0 = SystemTime::now();
    let t0 = Instant::now();
    cluster.power_off(victim)?;
    let (reconnect_tx, reconnect_rx) = mpsc::channel();
    {
        let ns = client_ns;
        std::thread::spawn(move || reconnect(&ns, dst, t0, &reconnect_tx));
    }
    let alive: Vec<usize> = all.iter().copied().filter(|&i| i != victim).collect();
    let mut taken: Vec<Option<(usize, Duration)>> = vec![None; usize::from(PUBLIC)];
    let mut reset: Option<Duration> = None;
    let mut reconnected: Option<Duration> = None;
    let limit = Duration::from_secs(30);
    let mut last_progress = Instant::now();
    while t0.elapsed() < limit {
        interrupted()?;
        let h = hosts(cluster, &alive);
        for &k in &moving {
            if taken[k].is_none() {
                if let Some(&node) = h[k].first() {
                    let at = t0.elapsed();
                    taken[k] = Some((node, at));
                    eprintln!(
                        "    {:>7.1} ms  {} taken over by node {node}",
                        ms(at),
                        public_address(to_u8(k))
                    );
                }
            }
        }
        if reset.is_none() {
            if let Ok(at) = reset_rx.try_recv() {
                let at: Instant = at;
                let d = at.saturating_duration_since(t0);
                eprintln!(
                    "    {:>7.1} ms  client: idle connection to {target} reset",
                    ms(d)
                );
                reset = Some(d);
            }
        }
        if reconnected.is_none() {
            if let Ok(d) = reconnect_rx.try_recv() {
                let d: Duration = d;
                eprintln!(
                    "    {:>7.1} ms  client: new connection to {target} succeeded",
                    ms(d)
                );
                reconnected = Some(d);
            }
        }
        let done =
            moving.iter().all(|&k| taken[k].is_some()) && reset.is_some() && reconnected.is_some();
        if done {
            break;
        }
        if last_progress.elapsed() > Duration::from_secs(2) {
            eprintln!("    ... {:.1} s", t0.elapsed().as_secs_f64());
            last_progress = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(300));
    let garps = arp_lines(&capture, wall0, &moving);

    step("summary (times from the power-off)");
    for &k in &moving {
        match taken[k] {
            Some((node, at)) => println!(
                "  {} moved from node {victim} to node {node} in {:.0} ms",
                public_address(to_u8(k)),
                ms(at)
            ),
            None => println!(
                "  {} was NOT taken over within {limit:?}",
                public_address(to_u8(k))
            ),
        }
    }
    match garps.first() {
        Some((at, line)) => {
            println!(
                "  first gratuitous ARP seen by the client at {:.0} ms ({} ARP announcements in all):",
                ms(*at),
                garps.len()
            );
            println!("      {line}");
        }
        None => println!("  no gratuitous ARP for the moved addresses reached the client"),
    }
    match reset {
        Some(d) => println!("  idle client connection reset at {:.0} ms", ms(d)),
        None => println!("  idle client connection was NOT reset within {limit:?}"),
    }
    match reconnected {
        Some(d) => println!("  new client connection succeeded at {:.0} ms", ms(d)),
        None => println!("  no new client connection within {limit:?}"),
    }
    show(&cluster.nodes[alive[0]], cli, &["status"]);
    show(&cluster.nodes[alive[0]], cli, &["ip"]);
    Ok(())
}

/// Enters the named network namespace on the current thread.
fn enter(ns: &str) -> std::io::Result<()> {
    let file = std::fs::File::open(format!("/run/netns/{ns}"))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

/// Connects once, reports, then blocks until the connection ends and
/// reports when (a reset, or the server closing it).
fn idle_connection(
    ns: &str,
    dst: SocketAddr,
    ok: &mpsc::Sender<std::io::Result<()>>,
    ended: &mpsc::Sender<Instant>,
) {
    if let Err(e) = enter(ns) {
        let _ = ok.send(Err(e));
        return;
    }
    let mut stream = match TcpStream::connect_timeout(&dst, Duration::from_secs(3)) {
        Ok(s) => s,
        Err(e) => {
            let _ = ok.send(Err(e));
            return;
        }
    };
    let _ = ok.send(Ok(()));
    let mut buf = [0u8; 64];
    // Blocks while the connection is idle; a reset or FIN ends it.
    let _ = stream.read(&mut buf);
    let _ = ended.send(Instant::now());
}

/// Tries new connections every few ms until one succeeds (30 s at most);
/// reports the time since `t0`.
fn reconnect(ns: &str, dst: SocketAddr, t0: Instant, done: &mpsc::Sender<Duration>) {
    if enter(ns).is_err() {
        return;
    }
    while t0.elapsed() < Duration::from_secs(30) {
        if TcpStream::connect_timeout(&dst, Duration::from_millis(100)).is_ok() {
            let _ = done.send(t0.elapsed());
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// ARP lines of the capture after `since` that announce a moved address,
/// with their time since `since`.
fn arp_lines(capture: &Path, since: SystemTime, moved: &[usize]) -> Vec<(Duration, String)> {
    let Ok(file) = std::fs::File::open(capture) else {
        return Vec::new();
    };
    let since = since
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let names: Vec<String> = moved
        .iter()
        .map(|&k| public_address(to_u8(k)).to_string())
        .collect();
    std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| {
            let ts: f64 = line.split_whitespace().next()?.parse().ok()?;
            if ts < since {
                return None;
            }
            // Gratuitous: "who-has X tell X" (request form) or "X is-at" (reply form).
            let gratuitous = names.iter().any(|a| {
                line.contains(&format!("who-has {a} tell {a}"))
                    || line.contains(&format!("Reply {a} is-at"))
            });
            gratuitous.then(|| (Duration::from_secs_f64(ts - since), line.clone()))
        })
        .collect()
}

/// Without failoverd: show that the cluster notices a powered-off node and
/// takes it back when it returns.
fn transport_only_failover(
    cluster: &TestCluster,
    cli: &Path,
    masterd: &Path,
    daemons: &[&str],
    logs: &Path,
) -> Result<()> {
    let n = cluster.nodes.len();
    let victim = n - 1;
    step(&format!(
        "powering off node {victim} (cable pulled, masterd and its daemons killed)"
    ));
    let t0 = Instant::now();
    cluster.power_off(victim)?;
    let out = wait_until(
        &format!("node 0 to see node {victim} gone"),
        Duration::from_secs(15),
        || {
            let out = ping_all(&cluster.nodes[0], cli).ok()?;
            (responders(&out) == n - 1).then_some(out)
        },
    )?;
    eprintln!(
        "    node 0 reports node {victim} unreachable after {:.0} ms",
        ms(t0.elapsed())
    );
    println!("$ ipfailover ping -n all   (on node 0)\n{out}");

    step(&format!(
        "powering node {victim} back on (masterd restarted)"
    ));
    let t0 = Instant::now();
    cluster.power_on(victim)?;
    start_masterd(&cluster.nodes[victim], masterd, daemons, logs)?;
    wait_until(
        &format!("node {victim} to rejoin"),
        Duration::from_secs(20),
        || (responders(&ping_all(&cluster.nodes[0], cli).ok()?) == n).then_some(()),
    )?;
    eprintln!(
        "    node {victim} rejoined after {:.0} ms",
        ms(t0.elapsed())
    );
    Ok(())
}

fn start_masterd(node: &Node, masterd: &Path, daemons: &[&str], logs: &Path) -> Result<u32> {
    let log = logs.join(format!("node{}-masterd.log", node.pnn));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = node.ns.command(&masterd.to_string_lossy());
    cmd.arg("--config-dir")
        .arg(&node.config_dir)
        .arg("--daemons")
        .arg(daemons.join(","))
        .stdout(Stdio::null())
        .stderr(log);
    node.spawn(cmd)
}

fn start_service(node: &Node, demo: &Path) -> Result<u32> {
    let mut cmd = node.ns.command(&demo.to_string_lossy());
    cmd.arg("--serve")
        .arg(PORT.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    node.spawn(cmd)
}

/// Runs `ipfailover ARGS` on `node` and prints the command and its output
/// (or why it failed).
fn show(node: &Node, cli: &Path, args: &[&str]) {
    let out = node
        .ns
        .command(&cli.to_string_lossy())
        .arg("--run-dir")
        .arg(&node.run_dir)
        .args(args)
        .output();
    println!("$ ipfailover {}   (on node {})", args.join(" "), node.pnn);
    match out {
        Ok(o) if o.status.success() => print!("{}", String::from_utf8_lossy(&o.stdout)),
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let first = err.lines().next().unwrap_or("").trim();
            println!("  (not available in this build: {first})");
        }
        Err(e) => println!("  (cannot run ipfailover: {e})"),
    }
}

fn ping_all(node: &Node, cli: &Path) -> Result<String> {
    let out = node
        .ns
        .command(&cli.to_string_lossy())
        .arg("--run-dir")
        .arg(&node.run_dir)
        .args(["-t", "1", "ping", "-n", "all"])
        .output()
        .context("running ipfailover ping")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn responders(out: &str) -> usize {
    out.lines()
        .filter(|l| l.starts_with("response from"))
        .count()
}

fn wait_until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    let mut last_progress = Instant::now();
    loop {
        interrupted()?;
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        if last_progress.elapsed() > Duration::from_secs(3) {
            eprintln!(
                "    ... still waiting for {what} ({:.0} s)",
                start.elapsed().as_secs_f64()
            );
            last_progress = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
