//! `demo [--nodes N] [--no-failover] [--keep]`: a real ipfailover cluster in
//! network namespaces on this machine (root only).
//!
//! It builds N node namespaces and a client namespace on one bridged LAN
//! (documentation addresses 192.0.2.0/24 only), starts the node daemons,
//! waits until the cluster is up, shows it, then powers one node off (cable
//! pulled, processes SIGKILLed) and shows, with measured times, what the rest
//! of the cluster does. Everything it made is removed on exit or Ctrl-C;
//! `--keep` leaves the cluster running until Ctrl-C for exploration.

use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tests::cluster::{bin_path, Node, TestCluster};

struct Options {
    nodes: usize,
    failover: bool,
    keep: bool,
}

fn parse_args() -> Result<Options> {
    let mut opts = Options {
        nodes: 3,
        failover: true,
        keep: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--nodes" | "-n" => {
                let v = args.next().context("--nodes needs a number")?;
                opts.nodes = v
                    .parse()
                    .with_context(|| format!("--nodes: '{v}' is not a number"))?;
                if !(2..=9).contains(&opts.nodes) {
                    bail!("--nodes: the demo runs 2 to 9 nodes, not {}", opts.nodes);
                }
            }
            "--no-failover" => opts.failover = false,
            "--keep" => opts.keep = true,
            "--help" | "-h" => {
                println!("usage: demo [--nodes N] [--no-failover] [--keep]");
                std::process::exit(0);
            }
            other => bail!("unknown argument '{other}' (try --help)"),
        }
    }
    Ok(opts)
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
    if let Err(e) = ctrlc::set_handler(|| {
        INTERRUPTED.store(true, Ordering::Relaxed);
        eprintln!("\ninterrupted: cleaning up");
    }) {
        eprintln!("demo: cannot install the Ctrl-C handler: {e}");
        return ExitCode::FAILURE;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let opts = parse_args()?;
    if !nix::unistd::geteuid().is_root() {
        bail!("needs root: the demo builds network namespaces");
    }
    let transportd = bin_path("transportd")?;
    let cli = bin_path("ipfailover")?;

    step(&format!(
        "building {} node namespaces and a client namespace on one bridge",
        opts.nodes
    ));
    let cluster = TestCluster::new("demo", opts.nodes)?;
    for node in &cluster.nodes {
        eprintln!(
            "    node {}: namespace {}  eth0 {}",
            node.pnn,
            node.ns.name(),
            node.addr
        );
    }
    eprintln!(
        "    client: namespace {}  eth0 {}",
        cluster.client.name(),
        tests::cluster::CLIENT_ADDR
    );

    step("starting transportd on every node (encrypted, authenticated node links)");
    for node in &cluster.nodes {
        start_transportd(node, &transportd)?;
    }
    let t0 = Instant::now();
    let all = wait_until(
        "every node answers `ipfailover ping -n all`",
        Duration::from_secs(15),
        || {
            let out = ping_all(&cluster.nodes[0], &cli).ok()?;
            (responders(&out) == opts.nodes).then_some(out)
        },
    )?;
    eprintln!("    cluster connected in {:.0} ms", ms(t0.elapsed()));
    println!("$ ipfailover ping -n all   (on node 0)\n{all}");

    if opts.failover {
        let victim = opts.nodes - 1;
        step(&format!(
            "powering off node {victim} (cable pulled, processes killed)"
        ));
        let t0 = Instant::now();
        cluster.power_off(victim)?;
        let out = wait_until(
            &format!("node 0 to see node {victim} gone"),
            Duration::from_secs(15),
            || {
                let out = ping_all(&cluster.nodes[0], &cli).ok()?;
                (responders(&out) == opts.nodes - 1).then_some(out)
            },
        )?;
        eprintln!(
            "    node 0 reports node {victim} unreachable after {:.0} ms",
            ms(t0.elapsed())
        );
        println!("$ ipfailover ping -n all   (on node 0)\n{out}");

        step(&format!("powering node {victim} back on"));
        let t0 = Instant::now();
        cluster.power_on(victim)?;
        start_transportd(&cluster.nodes[victim], &transportd)?;
        wait_until(
            &format!("node {victim} to rejoin"),
            Duration::from_secs(15),
            || {
                let out = ping_all(&cluster.nodes[0], &cli).ok()?;
                (responders(&out) == opts.nodes).then_some(())
            },
        )?;
        eprintln!(
            "    node {victim} rejoined after {:.0} ms",
            ms(t0.elapsed())
        );
    }

    eprintln!(
        "\nnote: public-IP takeover (failoverd), membership (clusterd) and connection\n\
         tracking (conntrackd) are still being built (see the issues); this demo shows\n\
         the parts that run today."
    );

    if opts.keep {
        step("the cluster keeps running; press Ctrl-C to remove it. Try:");
        for node in &cluster.nodes {
            eprintln!(
                "    ip netns exec {} {} --run-dir {} ping -n all",
                node.ns.name(),
                cli.display(),
                node.run_dir.display()
            );
        }
        while !INTERRUPTED.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    step("cleaning up");
    Ok(())
}

fn start_transportd(node: &Node, transportd: &std::path::Path) -> Result<u32> {
    let mut cmd = node.ns.command(&transportd.to_string_lossy());
    cmd.arg("--run-dir")
        .arg(&node.run_dir)
        .arg("--nodes")
        .arg(node.config_dir.join("nodes"))
        .arg("--pnn")
        .arg(node.pnn.to_string())
        .arg("--key")
        .arg(node.config_dir.join("cluster.key"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    node.spawn(cmd)
}

fn ping_all(node: &Node, cli: &std::path::Path) -> Result<String> {
    let out = node
        .ns
        .command(&cli.to_string_lossy())
        .arg("--run-dir")
        .arg(&node.run_dir)
        .args(["ping", "-n", "all"])
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
    loop {
        interrupted()?;
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
