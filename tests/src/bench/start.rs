//! `bench start [--profile default|fast|both] [--addresses 1,64,256]
//! [--trials N] [--no-keepalived] [--no-restart] [--keep-logs DIR]`:
//! how long a cold cluster takes to host every public address, and how long
//! a restarted node takes to get its share back, with real masterds (the
//! multi-process model) on 3 node namespaces, beside keepalived's start on
//! the same topology in the same run (the baseline, `bench::keepalived`).
//!
//! **Cold start.** Every node lists the same `N` addresses on `eth1` (the
//! topology of `bench failover`). The exact detector of the chaos tests
//! (`chaos::monitor`: an rtnetlink and nftables subscriber in every node
//! namespace, events stamped on `CLOCK_MONOTONIC` as they arrive) runs
//! from before the start. T0 is taken right before the first of the three
//! masterds is spawned (the three spawns follow at once; their duration is
//! printed). Measured: T0 → the first moment every address is configured
//! on exactly one node (`start_all_hosted_s`), T0 → every address served
//! (configured with a live kernel-lease element, what a client sees:
//! `start_all_served_s`), the last address change within the second that
//! follows (`start_settled_s`: a rebalance or a lease flap right after the
//! start shows here; `added_after_all_hosted` counts the addresses added
//! after that first moment, over all trials), and the number of moments an address was
//! configured on two nodes (`duplicates_configured`) or served by two
//! (`duplicates_served`, the chaos detector's rule), which must be 0.
//!
//! **Phases** (ms after T0, from the daemons' info lines, which carry
//! wall-clock timestamps and are all in the node's masterd log):
//! `daemons_running` (the last node's clusterd and failoverd have
//! started), `links_up` (every node has a transport link to both peers),
//! `first_leader` (a clusterd publishes a membership with a leader),
//! `leases_valid` (every node's clusterd has said `lease valid`),
//! `leader_runs` (the leader's failoverd knows it leads),
//! `first_run_start`, `first_moving_run_end`, and from the detector
//! `first_configured` and `last_configured`. Runs and their timing are
//! listed on stderr.
//!
//! **Restart** (N ≥ 3): once the cluster is settled, one node's masterd
//! (a follower, then the leader) is stopped with SIGTERM, its addresses
//! move to the others, and it is started again. Measured from its new
//! clusterd's `lease valid`: the moment it hosts as many addresses as
//! before the stop, each address on exactly one node
//! (`restart_share_back_after_lease_ms`), beside `lease + margin` of the
//! profile as baseline (the target is at most that).
//!
//! **Baseline.** keepalived (VRRPv3, one instance per address, node 0 the
//! highest priority; its defaults for the default profile, 10 ms adverts
//! for the fast one) started on the three nodes at once: T0 → every
//! address configured on exactly one node (`keepalived_start_all_hosted_s`),
//! for at most 255 addresses (one VRID each).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::failover::{public, public_lan};
use crate::bench::{percentile, Figure, Profiles};
use crate::chaos::monitor::{self, Log, Threads};
use crate::chaos::serving::{self, Ev, Micros, Timed};
use crate::cluster::{bin_path, TestCluster};
use crate::netns::wait_for;

const BENCH: &str = "start";
const LIMIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(5);
/// failoverd's kernel-lease table (its default `nft_table` + `_lease`).
const LEASE_TABLE: &str = "ipfailover_lease";

/// Is `a` one of the benchmark's public addresses (not the client's)?
pub(crate) fn is_public(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[3] != 100 && (o[..3] == [198, 51, 100] || o[..3] == [203, 0, 113])
        }
        IpAddr::V6(_) => false,
    }
}

/// `lease + margin` of a profile (clusterd's timing: lease = dead_after,
/// margin = max(interval, dead_after / 5)), in ms.
fn lease_and_margin_ms(profile: &str) -> f64 {
    if profile == "fast" {
        40.0
    } else {
        600.0
    }
}

/// Milliseconds since the Unix epoch.
fn epoch_ms(t: SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// Three nodes with masterd, the detector watching them.
pub(crate) struct StartBed {
    c: TestCluster,
    addrs: Vec<IpAddr>,
    log: Arc<Log>,
    threads: Threads,
    masterd: Vec<Option<Child>>,
}

impl Drop for StartBed {
    fn drop(&mut self) {
        for m in &mut self.masterd {
            if let Some(mut ch) = m.take() {
                let _ = ch.kill();
                let _ = ch.wait();
            }
        }
        self.threads.stop();
    }
}

impl StartBed {
    /// Namespaces, configuration and the detector; nothing started.
    pub(crate) fn new(tag: &str, profile: &str, count: usize) -> Result<StartBed> {
        let c = TestCluster::new(tag, 3)?;
        public_lan(&c)?;
        let addrs: Vec<IpAddr> = (0..count).map(public).collect();
        let garp_interval = if profile == "fast" { 20 } else { 1000 };
        let log_level = crate::bench::log_level();
        for n in &c.nodes {
            let toml = format!(
                "[transport]\nrun_dir = \"{}\"\n\n[cluster]\nprofile = \"{profile}\"\n\n\
                 [failover]\ngarp_interval_ms = {garp_interval}\nrelease_timeout_ms = 3000\n\n\
                 [logging]\nlevel = \"{log_level}\"\n",
                n.run_dir.display()
            );
            std::fs::write(n.config_dir.join("ipfailover.toml"), toml)?;
            let pa: String = addrs.iter().map(|a| format!("{a}/24 eth1\n")).collect();
            std::fs::write(n.config_dir.join("public_addresses"), pa)?;
        }
        let log = Arc::new(Log::new(3, is_public));
        let mut threads = Threads::new();
        for (i, n) in c.nodes.iter().enumerate() {
            monitor::start_node(&mut threads, &log, n.ns.name(), i, LEASE_TABLE)?;
        }
        let t = log.now();
        for i in 0..3 {
            log.push(t, i, Ev::Reach(true));
        }
        Ok(StartBed {
            c,
            addrs,
            log,
            threads,
            masterd: vec![None, None, None],
        })
    }

    /// Spawns node `i`'s masterd (stderr appended to `node{i}-masterd.log`).
    fn spawn(&mut self, i: usize) -> Result<()> {
        let node = &self.c.nodes[i];
        let _ = std::fs::remove_file(node.run_dir.join("transport.sock"));
        let mut cmd = node.ns.command(&bin_path("masterd")?.to_string_lossy());
        cmd.arg("--config-dir")
            .arg(&node.config_dir)
            .args(["--stop-grace", "5"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.c.log_file(i, "masterd")?);
        self.masterd[i] = Some(cmd.spawn().context("starting masterd")?);
        Ok(())
    }

    /// SIGTERM to node `i`'s masterd; waits (bounded) for it to exit.
    fn terminate(&mut self, i: usize) -> Result<()> {
        let Some(mut ch) = self.masterd[i].take() else {
            bail!("node {i} has no masterd");
        };
        let pid = i32::try_from(ch.id()).context("pid")?;
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if ch.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = ch.kill();
        let _ = ch.wait();
        bail!("node {i}'s masterd did not stop within 20 s of SIGTERM")
    }

    /// Each address → the node it is configured on, when every address is
    /// configured on exactly one node (the detector's view now).
    fn placement(&self) -> Option<BTreeMap<IpAddr, usize>> {
        let p = self.log.placement();
        let mut out = BTreeMap::new();
        for a in &self.addrs {
            match p.get(a).map(Vec::as_slice) {
                Some([one]) => {
                    out.insert(*a, *one);
                }
                _ => return None,
            }
        }
        Some(out)
    }

    /// The logs' tails, for an error message.
    fn logs(&self) -> String {
        self.c.log_tails(&["masterd"], 30)
    }

    /// Lines of node `i`'s masterd log (every daemon's) at or after `t0`
    /// (ms since the epoch), with their time, ANSI escapes removed.
    fn lines(&self, i: usize, t0: f64) -> Vec<(f64, String)> {
        super::failover::log_lines_after(&self.c.scratch.join(format!("node{i}-masterd.log")), t0)
    }
}

/// Where an address event sequence first has every address of `addrs` on
/// exactly one node, and how many times an address came to be configured
/// on two nodes (µs in the log's time).
pub(crate) fn first_all_hosted(
    events: &[Timed],
    addrs: &[IpAddr],
    after: Micros,
) -> (Option<Micros>, usize) {
    let mut evs: Vec<&Timed> = events
        .iter()
        .filter(|e| matches!(e.ev, Ev::Addr(..)))
        .collect();
    evs.sort_by_key(|e| e.t);
    let wanted: BTreeSet<IpAddr> = addrs.iter().copied().collect();
    let mut at: BTreeMap<IpAddr, BTreeSet<usize>> = BTreeMap::new();
    let mut once = 0usize;
    let mut first = None;
    let mut dups = 0usize;
    for e in evs {
        let Ev::Addr(a, on) = e.ev else { continue };
        if !wanted.contains(&a) {
            continue;
        }
        let set = at.entry(a).or_default();
        let was_once = set.len() == 1;
        if on {
            set.insert(e.node);
        } else {
            set.remove(&e.node);
        }
        if on && set.len() == 2 {
            dups += 1;
        }
        match (was_once, set.len() == 1) {
            (false, true) => once += 1,
            (true, false) => once -= 1,
            _ => {}
        }
        if first.is_none() && once == wanted.len() && e.t >= after {
            first = Some(e.t);
        }
    }
    (first, dups)
}

/// When every address of `addrs` is first served (configured with a live
/// lease element) by some node, and the serving overlaps of two nodes.
fn first_all_served(events: &[Timed], addrs: &[IpAddr], end: Micros) -> (Option<Micros>, usize) {
    let iv = serving::intervals(events, end);
    let dups = serving::violations(&iv).len();
    let mut last = 0;
    for a in addrs {
        let first = iv
            .get(a)
            .and_then(|nodes| nodes.values().filter_map(|s| s.first().map(|x| x.0)).min());
        match first {
            Some(t) => last = last.max(t),
            None => return (None, dups),
        }
    }
    (Some(last), dups)
}

/// The phases of a cold start, in ms after `t0` (ms since the epoch).
#[derive(Debug, Default, Clone)]
struct Phases {
    named: Vec<(&'static str, f64)>,
    runs: Vec<String>,
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=");
    let at = line.find(&key)? + key.len();
    line[at..].split_whitespace().next()
}

fn phases_from_logs(bed: &StartBed, t0: f64) -> Phases {
    let mut daemons_running: Option<f64> = Some(0.0);
    let mut links_up: Option<f64> = Some(0.0);
    let mut leases_valid: Option<f64> = Some(0.0);
    let mut first_leader: Option<f64> = None;
    let mut leader_runs: Option<f64> = None;
    let mut first_run_start: Option<f64> = None;
    let mut first_moving_run_end: Option<f64> = None;
    let mut runs = Vec::new();
    let min = |a: Option<f64>, b: f64| Some(a.map_or(b, |a| a.min(b)));
    for i in 0..3 {
        let mut clusterd = None;
        let mut failoverd = None;
        let mut peers: BTreeSet<String> = BTreeSet::new();
        let mut linked = None;
        let mut lease = None;
        for (t, l) in bed.lines(i, t0) {
            let t = t - t0;
            if clusterd.is_none() && l.contains("clusterd running") {
                clusterd = Some(t);
            }
            if failoverd.is_none() && l.contains("failoverd started") {
                failoverd = Some(t);
            }
            if linked.is_none()
                && (l.contains("peer link established") || l.contains("peer link accepted"))
            {
                if let Some(p) = field(&l, "peer") {
                    peers.insert(p.to_string());
                }
                if peers.len() >= 2 {
                    linked = Some(t);
                }
            }
            if lease.is_none() && l.contains(" lease valid") {
                lease = Some(t);
            }
            if l.contains(" membership ")
                && field(&l, "leader").is_some_and(|v| v.starts_with("Some"))
            {
                first_leader = min(first_leader, t);
            }
            if l.contains("this node leads: takeover runs") {
                leader_runs = min(leader_runs, t);
            }
            if l.contains("takeover run starting") {
                first_run_start = min(first_run_start, t);
                runs.push(format!("node{i} {t:.1} ms: run starting"));
            }
            if l.contains("takeover run timing") {
                let moved: usize = field(&l, "moved").and_then(|v| v.parse().ok()).unwrap_or(0);
                let us = |n: &str| {
                    field(&l, n)
                        .and_then(|v| v.parse::<f64>().ok())
                        .map_or(f64::NAN, |v| v / 1e3)
                };
                runs.push(format!(
                    "node{i} {t:.1} ms: run ended, moved {moved} (gather {:.1} plan {:.1} release {:.1} take {:.1} ms)",
                    us("gather_us"),
                    us("plan_us"),
                    us("release_us"),
                    us("take_us")
                ));
                if moved > 0 {
                    first_moving_run_end = min(first_moving_run_end, t);
                }
            }
            if l.contains("takeover run unsuccessful") {
                runs.push(format!("node{i} {t:.1} ms: run unsuccessful: {}", {
                    let s = l.split("error=").nth(1).unwrap_or("");
                    &s[..s.len().min(160)]
                }));
            }
        }
        let max = |acc: Option<f64>, x: Option<f64>| match (acc, x) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        let up = match (clusterd, failoverd) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        daemons_running = max(daemons_running, up);
        links_up = max(links_up, linked);
        leases_valid = max(leases_valid, lease);
    }
    runs.sort_by(|a, b| {
        let t = |s: &str| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        t(a).total_cmp(&t(b))
    });
    let mut named = Vec::new();
    for (name, v) in [
        ("daemons_running", daemons_running),
        ("links_up", links_up),
        ("first_leader", first_leader),
        ("leases_valid", leases_valid),
        ("leader_runs", leader_runs),
        ("first_run_start", first_run_start),
        ("first_moving_run_end", first_moving_run_end),
    ] {
        if let Some(v) = v {
            named.push((name, v));
        }
    }
    Phases { named, runs }
}

/// One cold start: the figures of one trial.
struct StartTrial {
    all_hosted_ms: f64,
    /// The last address change within a second after `all_hosted_ms`.
    settled_ms: f64,
    /// Addresses added after every one was hosted (moves, re-takes).
    readded: usize,
    all_served_ms: Option<f64>,
    spawn_ms: f64,
    dup_configured: usize,
    dup_served: usize,
    phases: Phases,
}

fn cold_start(bed: &mut StartBed) -> Result<StartTrial> {
    let t0_wall = epoch_ms(SystemTime::now());
    let t0 = Instant::now();
    let t0_log = bed.log.at(t0);
    for i in 0..3 {
        bed.spawn(i)?;
    }
    let spawn_ms = t0.elapsed().as_secs_f64() * 1e3;
    wait_for("every address on exactly one node", LIMIT, POLL, || {
        bed.placement()
    })
    .with_context(|| bed.logs())?;
    // One more second: the served figure, and whether the placement stays
    // (a rebalance or a lease flap right after the start moves addresses).
    std::thread::sleep(Duration::from_secs(1));
    let events = bed.log.snapshot();
    let end = bed.log.now();
    let (hosted, dup_configured) = first_all_hosted(&events, &bed.addrs, t0_log);
    let (served, dup_served) = first_all_served(&events, &bed.addrs, end);
    let ms = |t: Micros| (t.saturating_sub(t0_log)) as f64 / 1e3;
    let hosted = hosted.context("the detector saw no moment with every address once")?;
    // The last address change in the window, and how many addresses were
    // added after every one was hosted (moved or dropped and taken again).
    let later: Vec<Micros> = events
        .iter()
        .filter(|e| e.t > hosted && matches!(e.ev, Ev::Addr(..)))
        .map(|e| e.t)
        .collect();
    let settled = later.iter().copied().max().unwrap_or(hosted);
    let readded = events
        .iter()
        .filter(|e| e.t > hosted && matches!(e.ev, Ev::Addr(_, true)))
        .count();
    if bed.placement().is_none() {
        // Moving (a rebalance, or a lease flap on a loaded machine): the
        // figures stand, the next step needs a settled placement again.
        eprintln!("  the placement did not stay every address once: waiting");
        wait_for(
            "every address on exactly one node again",
            LIMIT,
            POLL,
            || bed.placement(),
        )
        .with_context(|| bed.logs())?;
    }
    let mut phases = phases_from_logs(bed, t0_wall);
    let configured: Vec<Micros> = events
        .iter()
        .filter(|e| e.t >= t0_log && matches!(e.ev, Ev::Addr(_, true)))
        .map(|e| e.t)
        .collect();
    if let Some(&first) = configured.iter().min() {
        phases.named.push(("first_configured", ms(first)));
    }
    phases.named.push(("last_configured", ms(hosted)));
    Ok(StartTrial {
        settled_ms: ms(settled),
        readded,
        all_hosted_ms: ms(hosted),
        all_served_ms: served.map(ms),
        spawn_ms,
        dup_configured,
        dup_served,
        phases,
    })
}

/// A restart of node `victim`: SIGTERM, its addresses elsewhere, start;
/// returns (start → lease valid, lease valid → share back) in ms.
fn restart(bed: &mut StartBed, victim: usize, profile: &str) -> Result<(f64, f64)> {
    // Settled: every node hosts some, unchanged for a while.
    let mut placed = wait_for("a settled placement", LIMIT, POLL, || {
        let p = bed.placement()?;
        (0..3).all(|i| p.values().any(|&n| n == i)).then_some(p)
    })
    .with_context(|| bed.logs())?;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(300));
        let now = bed.placement();
        if now.as_ref() == Some(&placed) {
            break;
        }
        if let Some(p) = now {
            placed = p;
        }
    }
    // Its share: what it hosted, or an even third if the allocation splits
    // the addresses differently after the restart (22/21/21 or 21/21/22).
    let count = placed.len();
    let share = placed
        .values()
        .filter(|&&n| n == victim)
        .count()
        .min(count / 3);
    bed.terminate(victim)?;
    wait_for(
        "the stopped node's addresses elsewhere",
        LIMIT,
        POLL,
        || bed.placement().filter(|p| p.values().all(|&n| n != victim)),
    )
    .with_context(|| bed.logs())?;
    let t1_wall = epoch_ms(SystemTime::now());
    let t1 = Instant::now();
    bed.spawn(victim)?;
    let back = wait_for("the restarted node's share back", LIMIT, POLL, || {
        let p = bed.placement()?;
        (p.values().filter(|&&n| n == victim).count() >= share).then(Instant::now)
    })
    .with_context(|| bed.logs())?;
    let back_ms = (back - t1).as_secs_f64() * 1e3;
    let lease_ms = bed
        .lines(victim, t1_wall)
        .iter()
        .find(|(_, l)| l.contains(" lease valid"))
        .map(|(t, _)| t - t1_wall)
        .context("the restarted node's clusterd never said 'lease valid'")?;
    eprintln!(
        "{profile}: node {victim} restarted: lease valid after {lease_ms:.1} ms, its {share} addresses back after {back_ms:.1} ms ({:.1} ms after the lease; lease+margin {:.0} ms)",
        back_ms - lease_ms,
        lease_and_margin_ms(profile)
    );
    Ok((lease_ms, back_ms - lease_ms))
}

/// The leader as node 0's clusterd last logged it.
fn leader_of(bed: &StartBed) -> Option<usize> {
    let lines = bed.lines(0, 0.0);
    lines.iter().rev().find_map(|(_, l)| {
        if !l.contains(" membership ") {
            return None;
        }
        let v = field(l, "leader")?;
        v.strip_prefix("Some(")?.strip_suffix(')')?.parse().ok()
    })
}

/// The load averages (1, 5, 15 min) from /proc/loadavg.
fn loadavg() -> Option<(f64, f64, f64)> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut f = s.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some((f.next()??, f.next()??, f.next()??))
}

fn keep(bed: &StartBed, dir: Option<&std::path::Path>, tag: &str) {
    let Some(dir) = dir else { return };
    let _ = std::fs::create_dir_all(dir);
    for i in 0..3 {
        let from = bed.c.scratch.join(format!("node{i}-masterd.log"));
        let _ = std::fs::copy(from, dir.join(format!("{tag}-node{i}-masterd.log")));
    }
}

/// `bench start` options.
#[derive(Debug, Clone, clap::Args)]
pub struct StartArgs {
    /// The profile(s) measured.
    #[arg(long, value_enum, default_value_t = Profiles::Both)]
    pub profile: Profiles,
    /// Numbers of public addresses measured, comma-separated (each 1 to
    /// 506).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,64,256",
        value_parser = super::count_in(1..=506)
    )]
    pub addresses: Vec<usize>,
    /// Trials per profile and number of addresses (1 to 50).
    #[arg(long, default_value_t = 3, value_parser = super::count_in(1..=50))]
    pub trials: usize,
    /// Skip the keepalived baseline.
    #[arg(long = "no-keepalived")]
    pub no_keepalived: bool,
    /// Skip the restart measurement.
    #[arg(long = "no-restart")]
    pub no_restart: bool,
    /// Copy every node's masterd log of every trial into DIR.
    #[arg(long = "keep-logs", value_name = "DIR")]
    pub keep_logs: Option<std::path::PathBuf>,
}

/// Runs the `start` scenario.
///
/// # Errors
///
/// Not root, a binary missing (build with `cargo build --release
/// --workspace --bins`), or a start that never completes.
pub fn run(args: &StartArgs) -> Result<()> {
    crate::netns::require_root();
    let trials = args.trials;
    let counts = args.addresses.clone();
    let baseline = !args.no_keepalived;
    let do_restart = !args.no_restart;
    let keep_dir = args.keep_logs.clone();
    let profiles = args.profile.names();
    if let Some((l1, l5, l15)) = loadavg() {
        eprintln!("load average at the start: {l1:.2} {l5:.2} {l15:.2}");
        Figure::plain(BENCH, "load_avg_1m_at_start", l1, "").print();
    }
    for p in &profiles {
        for &n in &counts {
            let kl = if baseline {
                let k = n.min(255);
                let mut v = Vec::new();
                for t in 0..trials {
                    let s = super::keepalived::measure_start(p, k)
                        .with_context(|| format!("keepalived {p} start, {k} addresses"))?;
                    eprintln!("keepalived {p} {k} addresses trial {t}: all hosted after {s:.1} ms");
                    v.push(s);
                }
                let m = percentile(&mut v, 50.0);
                Figure::plain(BENCH, "keepalived_start_all_hosted_s", m / 1e3, "s")
                    .tagged(p, k)
                    .print();
                Some(m)
            } else {
                None
            };
            let mut hosted = Vec::new();
            let mut settled = Vec::new();
            let mut readded = 0usize;
            let mut served = Vec::new();
            let mut dups = (0, 0);
            let mut phase_samples: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
            let mut order: Vec<&'static str> = Vec::new();
            for t in 0..trials {
                let mut bed = StartBed::new(&format!("bs{}{n}", &p[..1]), p, n)?;
                let r =
                    cold_start(&mut bed).with_context(|| format!("{p} start, {n} addresses"))?;
                keep(&bed, keep_dir.as_deref(), &format!("{p}-{n}-t{t}"));
                eprintln!(
                    "{p} {n} addresses trial {t}: all hosted {:.1} ms (settled {:.1} ms, {} added after), all served {}, spawning {:.1} ms, duplicates {}/{}",
                    r.all_hosted_ms,
                    r.settled_ms,
                    r.readded,
                    r.all_served_ms.map_or("-".into(), |s| format!("{s:.1} ms")),
                    r.spawn_ms,
                    r.dup_configured,
                    r.dup_served
                );
                let line: Vec<String> = r
                    .phases
                    .named
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.1}"))
                    .collect();
                eprintln!("  phases (ms after T0): {}", line.join(", "));
                for run in &r.phases.runs {
                    eprintln!("  {run}");
                }
                for (k, v) in &r.phases.named {
                    if !order.contains(k) {
                        order.push(k);
                    }
                    phase_samples.entry(k).or_default().push(*v);
                }
                hosted.push(r.all_hosted_ms);
                settled.push(r.settled_ms);
                readded += r.readded;
                if let Some(s) = r.all_served_ms {
                    served.push(s);
                }
                dups.0 += r.dup_configured;
                dups.1 += r.dup_served;
                if do_restart && n >= 3 && t == 0 {
                    let follower = leader_of(&bed).map_or(2, |l| if l == 2 { 1 } else { 2 });
                    for (kind, victim) in
                        [("follower", Some(follower)), ("leader", leader_of(&bed))]
                    {
                        let Some(victim) = victim else {
                            eprintln!("{p}: no leader known: restart of the leader skipped");
                            continue;
                        };
                        let (lease, back) = match restart(&mut bed, victim, p) {
                            Ok(r) => r,
                            Err(e) => {
                                eprintln!("{p}: restart of node {victim} ({kind}) failed: {e:#}");
                                break;
                            }
                        };
                        Figure::plain(
                            BENCH,
                            &format!("restart_{kind}_lease_valid_ms"),
                            lease,
                            "ms",
                        )
                        .tagged(p, n)
                        .print();
                        Figure::with_baseline(
                            BENCH,
                            &format!("restart_{kind}_share_back_after_lease_ms"),
                            back,
                            "ms",
                            lease_and_margin_ms(p),
                        )
                        .tagged(p, n)
                        .print();
                    }
                    keep(&bed, keep_dir.as_deref(), &format!("{p}-{n}-restart"));
                }
            }
            let h = percentile(&mut hosted.clone(), 50.0);
            let f = match kl {
                Some(k) => {
                    Figure::with_baseline(BENCH, "start_all_hosted_s", h / 1e3, "s", k / 1e3)
                }
                None => Figure::plain(BENCH, "start_all_hosted_s", h / 1e3, "s"),
            };
            f.tagged(p, n).print();
            Figure::plain(
                BENCH,
                "start_all_hosted_max_s",
                hosted.iter().copied().fold(0.0, f64::max) / 1e3,
                "s",
            )
            .tagged(p, n)
            .print();
            Figure::plain(
                BENCH,
                "start_settled_s",
                percentile(&mut settled, 50.0) / 1e3,
                "s",
            )
            .tagged(p, n)
            .print();
            #[allow(clippy::cast_precision_loss)] // a few hundred at most
            Figure::plain(BENCH, "added_after_all_hosted", readded as f64, "addresses")
                .tagged(p, n)
                .print();
            if !served.is_empty() {
                Figure::plain(
                    BENCH,
                    "start_all_served_s",
                    percentile(&mut served, 50.0) / 1e3,
                    "s",
                )
                .tagged(p, n)
                .print();
            }
            #[allow(clippy::cast_precision_loss)] // a handful of events
            {
                Figure::plain(BENCH, "duplicates_configured", dups.0 as f64, "events")
                    .tagged(p, n)
                    .print();
                Figure::plain(BENCH, "duplicates_served", dups.1 as f64, "overlaps")
                    .tagged(p, n)
                    .print();
            }
            for k in order {
                if let Some(v) = phase_samples.get_mut(k) {
                    Figure::plain(BENCH, &format!("phase_{k}_p50"), percentile(v, 50.0), "ms")
                        .tagged(p, n)
                        .print();
                }
            }
            if dups.0 + dups.1 > 0 {
                bail!("{p} {n} addresses: an address was on two nodes at once during the start");
            }
        }
    }
    if let Some((l1, l5, l15)) = loadavg() {
        eprintln!("load average at the end: {l1:.2} {l5:.2} {l15:.2}");
        Figure::plain(BENCH, "load_avg_1m_at_end", l1, "").print();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn addr(i: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, i))
    }

    fn ev(t: Micros, node: usize, a: u8, on: bool) -> Timed {
        Timed {
            t,
            node,
            ev: Ev::Addr(addr(a), on),
        }
    }

    #[test]
    fn all_hosted_is_the_first_moment_with_every_address_once() {
        let addrs = [addr(1), addr(2)];
        let events = [
            ev(10, 0, 1, true),
            ev(20, 1, 1, true), // on two nodes: not once
            ev(30, 2, 2, true),
            ev(40, 0, 1, false), // once again: every address once here
            ev(50, 1, 2, true),
        ];
        let (first, dups) = first_all_hosted(&events, &addrs, 0);
        assert_eq!(first, Some(40));
        assert_eq!(dups, 2);
        // Out of order in the log (threads of different nodes): sorted.
        let mut shuffled = events;
        shuffled.reverse();
        assert_eq!(first_all_hosted(&shuffled, &addrs, 0), (Some(40), 2));
        // Never all once.
        assert_eq!(first_all_hosted(&events[..2], &addrs, 0).0, None);
    }

    #[test]
    fn the_public_ranges_exclude_the_client() {
        assert!(is_public(addr(1)));
        assert!(!is_public(addr(100)));
        assert!(is_public(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7))));
        assert!(!is_public(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10))));
    }
}
