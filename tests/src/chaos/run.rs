//! The chaos driver: builds a [`Bed`], carries out a fault plan round by
//! round (faults, heal, convergence, liveness checks), and turns what the
//! detector recorded into the JSON summary.
//!
//! Liveness, checked after every round: within [`Options::converge_limit`]
//! of the heal, every masterd is ready with every daemon running and every
//! address listed by some node is configured on exactly one node that
//! lists it (nothing anywhere else), and that placement holds unchanged
//! for [`STABLE`]; no daemon restarted more often than the faults explain
//! and no masterd exited on its own; every idle client connection to an
//! address that changed hands was reset.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

use super::bed::{mac_text, Bed, BedOptions, CLIENT_V4, CLIENT_V6};
use super::plan::{self, Daemon, Fault, Kind, PlanOptions};
use super::serving::{self, Micros};

/// How long a placement must hold, unchanged, to count as converged.
pub const STABLE: Duration = Duration::from_secs(1);

/// Set by a Ctrl-C handler: the run stops after the current round.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Which scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Random faults from the seed.
    Random,
    /// 2+2 with a cluster lock, then 3+2 without.
    SplitBrain,
    /// Kill and restart each daemon and masterd under client load.
    Restarts,
}

/// Options of a run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Nodes (random scenario).
    pub nodes: usize,
    /// Base public addresses.
    pub ips: usize,
    /// Faults (random scenario) or repetitions per kind (restarts).
    pub faults: usize,
    /// Seed.
    pub seed: u64,
    /// Fast profile.
    pub fast: bool,
    /// Single-process model.
    pub single: bool,
    /// Scenario.
    pub scenario: Scenario,
    /// Bound on convergence after a heal.
    pub converge_limit: Duration,
    /// Overlaps shorter than this (µs) are near misses, not violations:
    /// the detector's stamping resolution.
    pub resolution_us: u64,
    /// Namespace tag.
    pub tag: String,
    /// Only these fault kinds (by name; empty: all).
    pub kinds: Vec<String>,
    /// failoverd's kernel-enforced lease (`false` only to show the
    /// duplicates it prevents).
    pub kernel_lease: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nodes: 3,
            ips: 6,
            faults: 40,
            seed: 1,
            fast: false,
            single: false,
            scenario: Scenario::Random,
            converge_limit: Duration::from_secs(30),
            resolution_us: 0,
            tag: "chaos".into(),
            kinds: Vec::new(),
            kernel_lease: true,
        }
    }
}

/// The outcome: JSON lines and the failures found.
#[derive(Debug, Default)]
pub struct Report {
    /// One JSON object per line.
    pub lines: Vec<Value>,
    /// Safety violations (detector and client).
    pub violations: usize,
    /// Liveness failures (no convergence, unexpected exits), described.
    pub liveness: Vec<String>,
    /// Idle clients of moved addresses that were not reset, described.
    pub unreset: Vec<String>,
}

impl Report {
    /// Whether the run found nothing wrong.
    pub fn ok(&self) -> bool {
        self.violations == 0 && self.liveness.is_empty() && self.unreset.is_empty()
    }
}

fn profile(o: &Options) -> &'static str {
    if o.fast {
        "fast"
    } else {
        "default"
    }
}

fn model(o: &Options) -> &'static str {
    if o.single {
        "single"
    } else {
        "multi"
    }
}

/// One round's (or one restart's) time window and its fault kinds.
#[derive(Debug, Clone)]
struct Window {
    from: Micros,
    to: Micros,
    kinds: Vec<String>,
}

/// Restart bookkeeping: each node's restart counts at the last check and
/// the restarts the faults since then explain.
struct Exits {
    baseline: Vec<BTreeMap<String, u64>>,
    allowed: Vec<BTreeMap<String, u64>>,
    unexpected: Vec<String>,
}

impl Exits {
    fn new(n: usize) -> Exits {
        Exits {
            baseline: vec![BTreeMap::new(); n],
            allowed: vec![BTreeMap::new(); n],
            unexpected: Vec::new(),
        }
    }

    fn masterd_restarted(&mut self, i: usize) {
        self.baseline[i].clear();
        self.allowed[i].clear();
    }

    fn killed(&mut self, i: usize, d: Daemon) {
        *self.allowed[i].entry(d.name().into()).or_default() += 1;
        if d == Daemon::Transportd {
            // The daemons that lose their connection end and restart too,
            // possibly more than once while transportd comes back.
            for o in Daemon::ALL {
                if o != d {
                    *self.allowed[i].entry(o.name().into()).or_default() += 1_000;
                }
            }
        }
    }

    fn check(&mut self, bed: &Bed) {
        for i in 0..bed.n() {
            for _ in 0..5 {
                if let Some(list) = bed.daemons(i) {
                    for (name, restarts, last) in list {
                        let base = self.baseline[i].get(&name).copied().unwrap_or(0);
                        let allowed = self.allowed[i].get(&name).copied().unwrap_or(0);
                        if restarts > base + allowed {
                            self.unexpected.push(format!(
                                "node {i} {name}: {} unexpected restart(s), last exit {}",
                                restarts - base - allowed,
                                last.unwrap_or_else(|| "-".into())
                            ));
                        }
                        self.baseline[i].insert(name, restarts);
                    }
                    self.allowed[i].clear();
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// Waits until every powered node is ready and [`Bed::placed`] holds
/// unchanged for [`STABLE`]; returns when that placement was first seen.
fn converge(
    bed: &Bed,
    limit: Duration,
    exits: &mut Exits,
) -> Result<(Instant, BTreeMap<IpAddr, usize>)> {
    let end = Instant::now() + limit;
    let mut stable: Option<(Instant, BTreeMap<IpAddr, usize>)> = None;
    let mut all_ready = false;
    while Instant::now() < end {
        check_masterds(bed, exits);
        if !all_ready {
            let powered = bed.powered.lock().expect("powered").clone();
            all_ready = (0..bed.n()).all(|i| !powered[i] || bed.ready(i));
            if !all_ready {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        }
        match (bed.placed(), &stable) {
            (Some(p), Some((since, q))) if p == *q => {
                if since.elapsed() >= STABLE {
                    // And every node sees every node OK under a leader (a
                    // node that has not rejoined yet would take addresses
                    // after "convergence").
                    let powered = bed.powered.lock().expect("powered").clone();
                    if (0..bed.n()).all(|i| !powered[i] || bed.members_ok(i)) {
                        return Ok((*since, p));
                    }
                    stable = None;
                }
            }
            (Some(p), _) => stable = Some((Instant::now(), p)),
            (None, _) => stable = None,
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!(
        "not converged within {limit:?} (ready: {all_ready}): {}",
        bed.where_now()
    )
}

/// Notes masterds that exited without being told to, and restarts them.
fn check_masterds(bed: &Bed, exits: &mut Exits) {
    for i in 0..bed.n() {
        if let Some(st) = bed.masterd_exited(i) {
            exits
                .unexpected
                .push(format!("node {i}: masterd exited on its own ({st})"));
            if bed.start_masterd(i).is_ok() {
                exits.masterd_restarted(i);
            }
        }
    }
}

/// What a fault left to undo.
enum Undo {
    Nothing,
    Cont(Vec<i32>),
}

struct Driver<'a> {
    bed: &'a Bed,
    exits: Exits,
    faults_by_kind: BTreeMap<String, u64>,
    failed_actions: BTreeMap<String, u64>,
    relist: bool,
    flags: bool,
}

impl Driver<'_> {
    fn cli(&mut self, i: usize, kind: Kind, args: &[&str]) {
        let (ok, text) = self.bed.cli(i, args);
        if !ok {
            *self.failed_actions.entry(kind.name()).or_default() += 1;
            eprintln!("chaos: node {i}: ipfailover {}: {text}", args.join(" "));
        }
    }

    fn begin(&mut self, f: &Fault) -> Result<Undo> {
        let bed = self.bed;
        let i = f.node;
        *self.faults_by_kind.entry(f.kind.name()).or_default() += 1;
        let addr = |k: usize| bed.pool[k % bed.pool.len()];
        Ok(match f.kind {
            Kind::KillDaemon(d) => {
                if bed.kill_daemon(i, d) {
                    self.exits.killed(i, d);
                } else {
                    *self.failed_actions.entry(f.kind.name()).or_default() += 1;
                }
                Undo::Nothing
            }
            Kind::KillFailoverdClusterd => {
                let both = [Daemon::Failoverd, Daemon::Clusterd];
                if bed.kill_daemons(i, &both) < 2 {
                    *self.failed_actions.entry(f.kind.name()).or_default() += 1;
                }
                for dm in both {
                    self.exits.killed(i, dm);
                }
                Undo::Nothing
            }
            Kind::KillMasterd => {
                bed.kill_masterd(i);
                Undo::Nothing
            }
            Kind::KillNode => {
                bed.power_off(i)?;
                Undo::Nothing
            }
            Kind::RestartNode => {
                if bed.has_masterd(i) {
                    bed.terminate_masterd(i);
                    bed.start_masterd(i)?;
                    self.exits.masterd_restarted(i);
                }
                Undo::Nothing
            }
            Kind::StopDaemonShort | Kind::StopDaemonLong => {
                let d = Daemon::ALL[f.target % Daemon::ALL.len()];
                match bed.signal_daemon(i, d, Signal::SIGSTOP) {
                    Some(p) => Undo::Cont(vec![p]),
                    None => Undo::Nothing,
                }
            }
            Kind::StopNodeShort | Kind::StopNodeLong => {
                let pids = bed.node_pids(i);
                for p in &pids {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p), Signal::SIGSTOP);
                }
                Undo::Cont(pids)
            }
            Kind::LinkPublic => {
                bed.set_link(i, true, false)?;
                Undo::Nothing
            }
            Kind::LinkCluster => {
                bed.set_link(i, false, false)?;
                Undo::Nothing
            }
            Kind::PartitionFull | Kind::PartitionOneWay => {
                bed.partition(&f.group, f.kind == Kind::PartitionOneWay)?;
                Undo::Nothing
            }
            Kind::Disable => {
                self.flags = true;
                self.cli(i, f.kind, &["disable"]);
                Undo::Nothing
            }
            Kind::Ban => {
                self.flags = true;
                let secs = f.target.to_string();
                self.cli(i, f.kind, &["ban", &secs]);
                Undo::Nothing
            }
            Kind::MoveIp => {
                let (a, _) = addr(f.addr);
                let to = (f.target % bed.n()).to_string();
                self.cli(i, f.kind, &["moveip", &a.to_string(), &to]);
                Undo::Nothing
            }
            Kind::AddIp => {
                self.relist = true;
                let extras = bed.pool.len() - bed.ips;
                let k = if extras == 0 {
                    f.addr
                } else {
                    bed.ips + f.addr % extras
                };
                let (a, p) = addr(k);
                self.cli(i, f.kind, &["addip", &format!("{a}/{p}"), "eth1"]);
                Undo::Nothing
            }
            Kind::DelIp => {
                self.relist = true;
                let (a, _) = addr(f.addr);
                self.cli(i, f.kind, &["delip", &a.to_string()]);
                Undo::Nothing
            }
            Kind::ReloadIps => {
                self.relist = true;
                let extras = bed.pool.len() - bed.ips;
                if extras > 0 {
                    let k = bed.ips + f.addr % extras;
                    {
                        let mut files = bed.files.lock().expect("files");
                        if !files[i].remove(&k) {
                            files[i].insert(k);
                        }
                    }
                    bed.write_public_addresses(i)?;
                }
                self.cli(i, f.kind, &["reloadips", "all"]);
                Undo::Nothing
            }
            Kind::IpReallocate => {
                self.cli(i, f.kind, &["ipreallocate"]);
                Undo::Nothing
            }
            Kind::HookSlow => {
                let ms = 300 + (f.addr as u64 * 397 + f.hold_ms) % 1200;
                bed.set_hook(i, Some(&format!("sleep {}.{:03}", ms / 1000, ms % 1000)))?;
                Undo::Nothing
            }
            Kind::HookHang => {
                bed.set_hook(i, Some("exec sleep 600"))?;
                Undo::Nothing
            }
        })
    }

    fn end(&mut self, f: &Fault, undo: Undo) -> Result<()> {
        let bed = self.bed;
        let i = f.node;
        let powered = bed.powered.lock().expect("powered")[i];
        match f.kind {
            Kind::KillMasterd if powered && !bed.has_masterd(i) => {
                bed.start_masterd(i)?;
                self.exits.masterd_restarted(i);
            }
            Kind::KillNode if !powered => {
                bed.power_on(i)?;
                self.exits.masterd_restarted(i);
            }
            Kind::LinkPublic if powered => bed.set_link(i, true, true)?,
            Kind::LinkCluster if powered => bed.set_link(i, false, true)?,
            Kind::PartitionFull | Kind::PartitionOneWay => bed.heal_partitions(),
            Kind::Disable => self.cli(i, f.kind, &["enable"]),
            Kind::HookSlow | Kind::HookHang => bed.set_hook(i, None)?,
            _ => {}
        }
        if let Undo::Cont(pids) = undo {
            for p in pids {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), Signal::SIGCONT);
            }
        }
        Ok(())
    }

    /// Undoes whatever is left: processes continued, partitions and hooks
    /// removed, nodes powered and cabled, masterds running, flags cleared,
    /// address lists back to the files.
    fn heal(&mut self, limit: Duration) -> Result<()> {
        let bed = self.bed;
        for i in 0..bed.n() {
            bed.signal_node(i, Signal::SIGCONT);
            bed.set_hook(i, None)?;
        }
        bed.heal_partitions();
        for i in 0..bed.n() {
            if !bed.powered.lock().expect("powered")[i] {
                bed.power_on(i)?;
                self.exits.masterd_restarted(i);
            } else {
                bed.set_link(i, false, true)?;
                bed.set_link(i, true, true)?;
                if !bed.has_masterd(i) {
                    bed.start_masterd(i)?;
                    self.exits.masterd_restarted(i);
                }
            }
        }
        if !(self.flags || self.relist) {
            return Ok(());
        }
        let end = Instant::now() + limit;
        while !(0..bed.n()).all(|i| bed.ready(i)) {
            if Instant::now() > end {
                bail!("nodes not ready after heal: {}", bed.log_tails(10));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if self.flags {
            for i in 0..bed.n() {
                for cmd in ["enable", "unban"] {
                    let (ok, text) = bed.cli(i, &[cmd]);
                    if !ok {
                        eprintln!("chaos: heal: node {i}: {cmd}: {text}");
                    }
                }
            }
        }
        if self.relist {
            // Each node on its own: `reloadips all` asks only the nodes
            // its node sees connected, and just after a partition heals
            // that may not be all of them (seed 31: a node kept an
            // `addip` address for three rounds, read as no convergence).
            for i in 0..bed.n() {
                let mut done = false;
                for _ in 0..20 {
                    let (ok, text) = bed.cli(i, &["reloadips"]);
                    if ok && !text.contains("Failed") {
                        done = true;
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
                if !done {
                    eprintln!("chaos: heal: reloadips on node {i} kept failing");
                }
            }
        }
        self.flags = false;
        self.relist = false;
        Ok(())
    }
}

fn line(o: &Options, metric: &str, value: Value, extra: Value) -> Value {
    let mut v = json!({
        "bench": "chaos",
        "metric": metric,
        "value": value,
        "profile": profile(o),
        "model": model(o),
        "seed": o.seed,
        "kernel_lease": o.kernel_lease,
    });
    if let (Some(m), Value::Object(e)) = (v.as_object_mut(), extra) {
        m.extend(e);
    }
    v
}

/// Builds the bed and waits for the first convergence.
fn bed_for(o: &Options, tag: &str, nodes: usize, lock: Option<std::path::PathBuf>) -> Result<Bed> {
    let bed = Bed::new(BedOptions {
        tag: tag.into(),
        nodes,
        ips: o.ips,
        extras: 2,
        fast: o.fast,
        single: o.single,
        lock,
        kernel_lease: o.kernel_lease,
    })?;
    let mut exits = Exits::new(nodes);
    if let Err(e) = converge(&bed, Duration::from_secs(60), &mut exits) {
        bail!(
            "the cluster never converged at start: {e}\n{}",
            bed.log_tails(30)
        );
    }
    Ok(bed)
}

/// Runs the scenario of `o`.
///
/// # Errors
///
/// When the bed cannot be built or a fault cannot be carried out (not
/// for what the faults do to the cluster: that is in the report).
pub fn run(o: &Options) -> Result<Report> {
    crate::netns::require_root();
    match o.scenario {
        Scenario::Random => random(o),
        Scenario::Restarts => restarts(o),
        Scenario::SplitBrain => split_brain(o),
    }
}

fn random(o: &Options) -> Result<Report> {
    let bed = bed_for(o, &o.tag, o.nodes, None)?;
    let rounds = plan::plan(&PlanOptions {
        seed: o.seed,
        nodes: o.nodes,
        ips: o.ips,
        extras: 2,
        faults: o.faults,
        timing: bed.timing,
        only: plan::kinds_named(&o.kinds)?,
    });
    let mut d = Driver {
        bed: &bed,
        exits: Exits::new(o.nodes),
        faults_by_kind: BTreeMap::new(),
        failed_actions: BTreeMap::new(),
        relist: false,
        flags: false,
    };
    d.exits.check(&bed);
    let mut report = Report::default();
    let mut windows = Vec::new();
    let mut worst = Duration::ZERO;
    let mut not_reset = 0usize;
    for (r, round) in rounds.iter().enumerate() {
        if INTERRUPTED.load(Ordering::Relaxed) {
            report
                .liveness
                .push(format!("interrupted before round {r}"));
            break;
        }
        bed.load.poke();
        std::thread::sleep(Duration::from_millis(300));
        let t0 = bed.log.now();
        let before = idle_snapshot(&bed, t0);
        let start = Instant::now();
        let mut acts: Vec<(u64, usize, bool)> = Vec::new();
        for (k, f) in round.faults.iter().enumerate() {
            acts.push((f.start_ms, k, true));
            if f.hold_ms > 0 {
                acts.push((f.start_ms + f.hold_ms, k, false));
            }
        }
        acts.sort();
        let mut undo: Vec<Option<Undo>> = round.faults.iter().map(|_| None).collect();
        for (at, k, begin) in acts {
            let due = start + Duration::from_millis(at);
            if let Some(w) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(w);
            }
            check_masterds(&bed, &mut d.exits);
            let f = &round.faults[k];
            if begin {
                undo[k] = Some(d.begin(f)?);
            } else {
                let u = undo[k].take().unwrap_or(Undo::Nothing);
                d.end(f, u)?;
            }
        }
        for (k, u) in undo.iter_mut().enumerate() {
            if let Some(u) = u.take() {
                d.end(&round.faults[k], u)?;
            }
        }
        d.heal(o.converge_limit)?;
        let healed = Instant::now();
        let kinds: Vec<String> = round.faults.iter().map(|f| f.kind.name()).collect();
        match converge(&bed, o.converge_limit, &mut d.exits) {
            Ok((at, placed)) => {
                let took = at.saturating_duration_since(healed);
                worst = worst.max(took);
                not_reset += check_resets(&bed, r, &kinds, t0, &before, &placed, &mut report);
            }
            Err(e) => {
                report.liveness.push(format!(
                    "round {r} ({}): {e}\n{}",
                    kinds.join(","),
                    bed.log_tails(15)
                ));
                worst = worst.max(o.converge_limit);
            }
        }
        d.exits.check(&bed);
        // The round's window runs until the next round begins: what the
        // clients see until then is the round's doing.
        windows.push(Window {
            from: t0,
            to: bed.log.now(),
            kinds: kinds.clone(),
        });
        eprintln!(
            "chaos: round {r}: {} converged after {:.2}s",
            kinds.join(", "),
            healed.elapsed().as_secs_f64()
        );
    }
    let end = bed.log.now();
    bed.stop_threads();
    let mut lines = summarise(o, &bed, end, &windows, &mut report);
    for (k, n) in &d.faults_by_kind {
        lines.push(line(o, "faults", json!(n), json!({ "kind": k })));
    }
    let total: u64 = d.faults_by_kind.values().sum();
    lines.push(line(o, "faults_total", json!(total), json!({})));
    for (k, n) in &d.failed_actions {
        lines.push(line(o, "failed_actions", json!(n), json!({ "kind": k })));
    }
    lines.push(line(
        o,
        "worst_converge_s",
        json!(round3(worst.as_secs_f64())),
        json!({}),
    ));
    let idle = bed.load.idle.lock().expect("load").clone();
    let resets: u64 = idle.values().map(|i| i.resets).sum();
    let other_ends: u64 = idle.values().map(|i| i.other_ends).sum();
    let other_how: BTreeSet<String> = idle
        .values()
        .map(|i| i.last_other.clone())
        .filter(|s| !s.is_empty())
        .collect();
    lines.push(line(
        o,
        "clients_not_reset",
        json!(not_reset),
        json!({
            "idle_resets": resets,
            "idle_other_ends": other_ends,
            "other_ends_like": other_how,
            "ghosts_found_by_poke": bed.load.ghosts.load(Ordering::Relaxed),
        }),
    ));
    lines.push(line(
        o,
        "unexpected_exits",
        json!(d.exits.unexpected.len()),
        json!({ "details": d.exits.unexpected }),
    ));
    report.liveness.extend(d.exits.unexpected.iter().cloned());
    lines.push(line(
        o,
        "liveness_failures",
        json!(report.liveness.len()),
        json!({}),
    ));
    report.lines.extend(lines);
    keep_logs_on_failure(o, &bed, &mut report);
    Ok(report)
}

/// When something was found, the daemons' logs go to
/// `$TMPDIR/ipf-chaos-logs-<tag>-<seed>-<pid>` (reported as a JSON line).
fn keep_logs_on_failure(o: &Options, bed: &Bed, report: &mut Report) {
    if report.ok() {
        return;
    }
    let dest = std::env::temp_dir().join(format!(
        "ipf-chaos-logs-{}-{}-{}",
        bed.opts.tag,
        o.seed,
        std::process::id()
    ));
    if let Ok(d) = bed.keep_logs(&dest) {
        report.lines.push(line(
            o,
            "logs_kept",
            json!(d.display().to_string()),
            json!({}),
        ));
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// conntrackd's full sync interval (`sync_interval_ms`, 5 s) plus 1 s: a
/// conntrackd (re)started more recently may not know older connections
/// of other nodes' addresses yet.
const SYNC_US: Micros = 6_000_000;

/// The idle connections open at a round's start that go to the address's
/// owner then (and are old enough for conntrackd to have replicated them,
/// 1 s): address -> (connected at, owner).
fn idle_snapshot(bed: &Bed, round_start: Micros) -> BTreeMap<IpAddr, (Micros, usize)> {
    let owners = bed.placed().unwrap_or_default();
    let idle = bed.load.idle.lock().expect("load").clone();
    idle.into_iter()
        .filter_map(|(a, st)| {
            let (since, Some(owner)) = st.since? else {
                return None;
            };
            (since + 1_000_000 <= round_start && owners.get(&a) == Some(&owner))
                .then_some((a, (since, owner)))
        })
        .collect()
}

/// An idle connection open at the round's start to an address that is on
/// another node now must have been reset (by the old owner's release or
/// the new owner's tickle).
fn check_resets(
    bed: &Bed,
    round: usize,
    kinds: &[String],
    round_start: Micros,
    before: &BTreeMap<IpAddr, (Micros, usize)>,
    placed: &BTreeMap<IpAddr, usize>,
    report: &mut Report,
) -> usize {
    let idle = bed.load.idle.lock().expect("load").clone();
    let mut n = 0;
    for (a, (since, owner)) in before {
        let still_open = idle
            .get(a)
            .and_then(|st| st.since)
            .is_some_and(|(s, _)| s == *since);
        let port = idle.get(a).and_then(|st| st.port);
        if let (true, Some(now)) = (still_open, placed.get(a)) {
            // The new owner knows the connection only if its conntrackd has
            // run for a full sync interval (5 s) since it last started.
            let fresh =
                bed.conntrackd_started.lock().expect("started")[*now] + SYNC_US > round_start;
            if now != owner && !fresh {
                n += 1;
                report.unreset.push(format!(
                    "round {round} ({}): idle client of {a} (connected to node {owner} at {:.3}s) \
                     not reset although {a} moved to node {now}; {}",
                    kinds.join(","),
                    *since as f64 / 1e6,
                    who_knows(bed, *a, port),
                ));
            }
        }
    }
    n
}

/// Which nodes' conntrackd list the idle client (by its port) among the
/// connections of `a` now (`gettickles`): what a post-mortem of a client
/// not reset starts from.
fn who_knows(bed: &Bed, a: IpAddr, port: Option<u16>) -> String {
    let Some(port) = port else {
        return "client port unknown".into();
    };
    let addr = a.to_string();
    let client = match a {
        IpAddr::V4(_) => format!("{CLIENT_V4}:{port}"),
        IpAddr::V6(_) => format!("[{CLIENT_V6}]:{port}"),
    };
    let known: Vec<String> = (0..bed.opts.nodes)
        .map(|i| {
            let (ok, text) = bed.cli(i, &["gettickles", &addr]);
            let state = if !ok {
                "?"
            } else if text.contains(&client) {
                "yes"
            } else {
                "no"
            };
            format!("{i}:{state}")
        })
        .collect();
    format!("client port {port}, listed by node {}", known.join(" "))
}

/// Consecutive client-side violations of one address by the same MACs:
/// first and last probe round's time, address, MACs, rounds.
type ArpEpisode = (Micros, Micros, IpAddr, Vec<[u8; 6]>, u64);

/// Violations, near misses, client-side violations, gaps, detector health.
fn summarise(
    o: &Options,
    bed: &Bed,
    end: Micros,
    windows: &[Window],
    report: &mut Report,
) -> Vec<Value> {
    let mut lines = Vec::new();
    let events = bed.log.snapshot();
    let iv = serving::intervals(&events, end);
    let all = serving::violations(&iv);
    let (real, near): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|v| v.to - v.from >= o.resolution_us.max(1));
    let kinds_at = |t: Micros| -> String {
        windows
            .iter()
            .find(|w| w.from <= t && t <= w.to)
            .map(|w| w.kinds.join(","))
            .unwrap_or_else(|| "none".into())
    };
    // What made each edge of an overlap: an event of one of the two nodes
    // at that instant (address added/removed, lease renewed/deleted, cap
    // moved...), the node's kernel lease cap passing (`cap`), or a lease
    // element's computed expiry (known to one kernel tick, 4 ms
    // at HZ=250: the kernel reports remaining time in whole jiffies).
    let edge = |t: Micros, nodes: [usize; 2], addr: IpAddr| -> String {
        let mut what = Vec::new();
        for e in events.iter().filter(|e| nodes.contains(&e.node)) {
            match e.ev {
                serving::Ev::Addr(a, on) if a == addr && e.t == t => {
                    what.push(format!(
                        "node {} {}",
                        e.node,
                        if on { "add" } else { "remove" }
                    ));
                }
                serving::Ev::Lease(a, Some(u)) if a == addr && u == t => {
                    what.push(format!("node {} lease expiry", e.node));
                }
                serving::Ev::Lease(a, _) if a == addr && e.t == t => {
                    what.push(format!("node {} lease change", e.node));
                }
                serving::Ev::Reach(_) if e.t == t => {
                    what.push(format!("node {} cable", e.node));
                }
                // The node's kernel lease cap (its wall-clock bound) passed,
                // or a renewal moved it.
                serving::Ev::Cap(Some(c)) if c == t => {
                    what.push(format!("node {} cap", e.node));
                }
                serving::Ev::Cap(_) if e.t == t => {
                    what.push(format!("node {} cap change", e.node));
                }
                _ => {}
            }
        }
        what.dedup();
        what.join(", ")
    };
    for v in &real {
        lines.push(line(
            o,
            "violation",
            json!(round3(v.overlap_ms())),
            json!({
                "unit": "ms",
                "address": v.addr.to_string(),
                "node_a": v.a,
                "node_b": v.b,
                "at_s": round3(v.from as f64 / 1e6),
                "faults": kinds_at(v.from),
                "starts_with": edge(v.from, [v.a, v.b], v.addr),
                "ends_with": edge(v.to, [v.a, v.b], v.addr),
            }),
        ));
    }
    // Client side: consecutive probe rounds with the same MACs for one
    // address are one episode.
    let mut arp: Vec<ArpEpisode> = Vec::new();
    let mut raw = bed.log.arp_violations.lock().expect("log").clone();
    for r in &mut raw {
        r.2.sort_unstable();
    }
    raw.sort_by_key(|r| (r.1, r.2.clone(), r.0));
    for (t, a, macs) in raw {
        match arp.last_mut() {
            Some(last) if last.2 == a && last.3 == macs && t <= last.1 + 100_000 => {
                last.1 = t;
                last.4 += 1;
            }
            _ => arp.push((t, t, a, macs, 1)),
        }
    }
    let owner_of = |m: &[u8; 6]| bed.macs.iter().position(|x| x == m);
    for (from, to, a, macs, rounds) in &arp {
        lines.push(line(
            o,
            "arp_violation",
            json!(round3((to - from) as f64 / 1000.0)),
            json!({
                "unit": "ms",
                "address": a.to_string(),
                "macs": macs.iter().map(mac_text).collect::<Vec<_>>(),
                "nodes": macs.iter().map(&owner_of).collect::<Vec<_>>(),
                "probe_rounds": rounds,
                "at_s": round3(*from as f64 / 1e6),
                "faults": kinds_at(*from),
            }),
        ));
    }
    report.violations = real.len() + arp.len();
    lines.push(line(
        o,
        "violations",
        json!(report.violations),
        json!({ "kernel": real.len(), "client_arp_na": arp.len() }),
    ));
    lines.push(line(
        o,
        "near_misses",
        json!(near.len()),
        json!({ "below_us": o.resolution_us }),
    ));
    let worst_overlap = real.iter().map(|v| v.overlap_ms()).fold(0.0, f64::max);
    lines.push(line(
        o,
        "worst_overlap_ms",
        json!(round3(worst_overlap)),
        json!({}),
    ));
    // Longest client gap per fault kind: a gap counts for every kind of
    // the round (or restart) in which it began; "none" outside any.
    let gaps = bed.load.gaps.lock().expect("load").clone();
    let mut longest: BTreeMap<String, f64> = BTreeMap::new();
    for w in windows {
        for k in &w.kinds {
            longest.entry(k.clone()).or_default();
        }
    }
    for (_, from, to) in &gaps {
        let ms = (to - from) as f64 / 1000.0;
        let kinds: Vec<String> = match windows.iter().find(|w| w.from <= *from && *from <= w.to) {
            Some(w) => w.kinds.clone(),
            // Before the first fault: the cluster's start.
            None if windows.first().is_none_or(|w| *from < w.from) => vec!["startup".into()],
            None => vec!["none".into()],
        };
        for k in kinds {
            let e = longest.entry(k).or_default();
            *e = e.max(ms);
        }
    }
    for (k, ms) in &longest {
        lines.push(line(
            o,
            "longest_gap_ms",
            json!(round3(*ms)),
            json!({ "kind": k }),
        ));
    }
    lines.push(line(
        o,
        "detector",
        json!(events.len()),
        json!({
            "garbage": bed.log.garbage.load(Ordering::Relaxed),
            "overruns": bed.log.overruns.load(Ordering::Relaxed),
            "realtime": bed.log.realtime.load(Ordering::Relaxed),
            "probe_rounds": bed.log.probe_rounds.load(Ordering::Relaxed),
            "answers": bed.log.answers.load(Ordering::Relaxed),
            "connects": bed.load.connects.load(Ordering::Relaxed),
            "guarded": events.iter().any(|e| matches!(e.ev, serving::Ev::Guard(_, true))),
            "caps": events.iter().filter(|e| matches!(e.ev, serving::Ev::Cap(Some(_)))).count(),
        }),
    ));
    lines
}

fn restarts(o: &Options) -> Result<Report> {
    let bed = bed_for(o, &o.tag, o.nodes.max(3), None)?;
    let mut exits = Exits::new(bed.n());
    exits.check(&bed);
    let mut report = Report::default();
    let mut windows = Vec::new();
    let mut worst = Duration::ZERO;
    let kinds: [Option<Daemon>; 5] = [
        Some(Daemon::Failoverd),
        Some(Daemon::Clusterd),
        Some(Daemon::Conntrackd),
        Some(Daemon::Transportd),
        None, // masterd
    ];
    for rep in 0..o.faults.max(1) {
        for kind in kinds {
            if INTERRUPTED.load(Ordering::Relaxed) {
                break;
            }
            let name = kind.map_or("masterd", Daemon::name);
            // The node that hosts the first address: its clients see it.
            let placed = bed.placed().unwrap_or_default();
            let victim = placed.get(&bed.pool[0].0).copied().unwrap_or(rep % bed.n());
            let t0 = bed.log.now();
            let start = Instant::now();
            match kind {
                Some(dm) => {
                    if bed.kill_daemon(victim, dm) {
                        exits.killed(victim, dm);
                    }
                }
                None => {
                    bed.kill_masterd(victim);
                    // systemd's RestartSec.
                    std::thread::sleep(Duration::from_secs(1));
                    bed.start_masterd(victim)?;
                    exits.masterd_restarted(victim);
                }
            }
            match converge(&bed, o.converge_limit, &mut exits) {
                Ok((at, _)) => {
                    worst = worst.max(at.saturating_duration_since(start));
                    // Let the clients see the end of the gap.
                    std::thread::sleep(Duration::from_millis(200));
                    windows.push(Window {
                        from: t0,
                        to: bed.log.now(),
                        kinds: vec![format!("restart_{name}")],
                    });
                }
                Err(e) => {
                    report.liveness.push(format!(
                        "restart {name} on node {victim}: {e}\n{}",
                        bed.log_tails(15)
                    ));
                    windows.push(Window {
                        from: t0,
                        to: bed.log.now(),
                        kinds: vec![format!("restart_{name}")],
                    });
                }
            }
            exits.check(&bed);
            eprintln!(
                "chaos: restart {name} on node {victim} done ({:.2}s)",
                start.elapsed().as_secs_f64()
            );
        }
    }
    let end = bed.log.now();
    bed.stop_threads();
    let mut lines = summarise(o, &bed, end, &windows, &mut report);
    lines.push(line(
        o,
        "worst_converge_s",
        json!(round3(worst.as_secs_f64())),
        json!({}),
    ));
    lines.push(line(
        o,
        "unexpected_exits",
        json!(exits.unexpected.len()),
        json!({ "details": exits.unexpected }),
    ));
    report.liveness.extend(exits.unexpected.iter().cloned());
    lines.push(line(
        o,
        "liveness_failures",
        json!(report.liveness.len()),
        json!({}),
    ));
    report.lines.extend(lines);
    keep_logs_on_failure(o, &bed, &mut report);
    Ok(report)
}

fn leader_seen_by(bed: &Bed, i: usize) -> Option<usize> {
    let (ok, text) = bed.cli(i, &["leader"]);
    if !ok {
        return None;
    }
    text.trim().parse().ok()
}

fn split_brain(o: &Options) -> Result<Report> {
    let mut report = Report::default();
    let cases: [(&str, usize, Vec<usize>, bool); 2] = [
        ("2+2-lock", 4, vec![2, 3], true),
        ("3+2-nolock", 5, vec![3, 4], false),
    ];
    for (name, nodes, group, lock) in cases {
        let lock_path = lock.then(|| {
            std::env::temp_dir().join(format!("ipf-chaos-lock-{}-{name}", std::process::id()))
        });
        let bed = bed_for(o, &format!("{}{}", o.tag, nodes), nodes, lock_path.clone())?;
        let mut exits = Exits::new(nodes);
        exits.check(&bed);
        let t0 = bed.log.now();
        bed.partition(&group, false)?;
        let cut_at = Instant::now();
        let other: Vec<usize> = (0..nodes).filter(|i| !group.contains(i)).collect();
        // Settle: leases lapse, the side allowed to lead takes everything.
        let end = Instant::now() + o.converge_limit;
        let mut outcome: Option<(Vec<usize>, BTreeMap<IpAddr, usize>)> = None;
        let mut since: Option<(Instant, BTreeMap<IpAddr, usize>)> = None;
        while Instant::now() < end {
            let p = bed.placed();
            match (p, &since) {
                (Some(p), Some((s, q))) if p == *q => {
                    if s.elapsed() >= Duration::from_secs(2) {
                        let hosts: BTreeSet<usize> = p.values().copied().collect();
                        let side = if hosts.iter().all(|h| group.contains(h)) {
                            group.clone()
                        } else if hosts.iter().all(|h| other.contains(h)) {
                            other.clone()
                        } else {
                            Vec::new()
                        };
                        outcome = Some((side, p));
                        break;
                    }
                }
                (Some(p), _) => since = Some((Instant::now(), p)),
                (None, _) => since = None,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let leaders: Vec<Option<usize>> = (0..nodes).map(|i| leader_seen_by(&bed, i)).collect();
        let expected_ok = match &outcome {
            Some((side, _)) if !side.is_empty() => {
                // The hosting side must be the one allowed to lead: the
                // majority without a lock, the lock holder's side with one
                // (its nodes follow a leader of their own side).
                let leads_here = side
                    .iter()
                    .all(|i| leaders[*i].is_some_and(|l| side.contains(&l)));
                let majority = side.len() * 2 > nodes;
                leads_here && (lock || majority)
            }
            _ => false,
        };
        if !expected_ok {
            report.liveness.push(format!(
                "split brain {name}: hosting side {:?}, leaders {leaders:?}, now {}\n{}",
                outcome.as_ref().map(|(s, _)| s.clone()),
                bed.where_now(),
                bed.log_tails(15)
            ));
        }
        bed.heal_partitions();
        let healed = Instant::now();
        let conv = converge(&bed, o.converge_limit, &mut exits);
        let converge_s = match &conv {
            Ok((at, _)) => round3(at.saturating_duration_since(healed).as_secs_f64()),
            Err(e) => {
                report
                    .liveness
                    .push(format!("split brain {name}: after heal: {e}"));
                -1.0
            }
        };
        exits.check(&bed);
        let end_t = bed.log.now();
        bed.stop_threads();
        let windows = vec![Window {
            from: t0,
            to: end_t,
            kinds: vec![format!("split_brain_{name}")],
        }];
        let mut sub = Report::default();
        let lines = summarise(o, &bed, end_t, &windows, &mut sub);
        report.violations += sub.violations;
        report.lines.extend(
            lines
                .into_iter()
                .filter(|l| {
                    matches!(
                        l["metric"].as_str(),
                        Some("violation" | "arp_violation" | "violations" | "near_misses")
                    )
                })
                .map(|mut l| {
                    l["case"] = json!(name);
                    l
                }),
        );
        report.lines.push(line(
            o,
            "split_brain",
            json!(if expected_ok && sub.violations == 0 {
                "pass"
            } else {
                "fail"
            }),
            json!({
                "case": name,
                "side_hosting": outcome.as_ref().map(|(s, _)| s.clone()),
                "partition": [group.clone(), other.clone()],
                "leaders": leaders,
                "held_s": round3(healed.saturating_duration_since(cut_at).as_secs_f64()),
                "converge_after_heal_s": converge_s,
                "violations": sub.violations,
                "lock": lock_path.as_ref().map(|p| p.display().to_string()),
            }),
        ));
        report.liveness.extend(exits.unexpected.iter().cloned());
        if let Some(p) = lock_path {
            let _ = std::fs::remove_file(p);
        }
    }
    report.lines.push(line(
        o,
        "liveness_failures",
        json!(report.liveness.len()),
        json!({}),
    ));
    Ok(report)
}
