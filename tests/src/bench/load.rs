//! `bench failover-load [--minutes M] [--profile default|fast|both]
//! [--cpu N] [--no-spawn] [--realtime-only]`: no failover without a fault. Three nodes under
//! real masterds (six public addresses) sit idle for `M` minutes while
//! `stress-ng` loads the machine — `N` CPU hogs (default twice the cores)
//! and, unless `--no-spawn`, a process-spawning load — and nothing else
//! happens. Counted: `false_failovers`, every change of an address's
//! hosting node (or an address briefly hosted nowhere), sampled every
//! 50 ms; `lease_losses`, the times a failoverd dropped its addresses for a
//! lost lease (its log; the watch's and the core's lines of one drop count
//! once), and `clusterd_lease_losses`, the times a clusterd saw its lease
//! lapse ("lease lost") — a drop without one is failoverd's alone.
//! `LOAD_BENCH_LOGS=DIR` keeps every node's log. All are measured with the
//! default scheduling (`realtime_priority = 0`) and with the daemons of the lease path at
//! real-time priority (`realtime_priority = 1`, printed as `*_realtime`),
//! one after the other in the same run. Targets: 0 and 0 for both
//! profiles.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::bench::{Figure, Profiles};
use crate::cluster::{bin_path, TestCluster};
use crate::netns::wait_for;

const PUBLIC: [u8; 6] = [201, 202, 203, 204, 205, 206];

fn public(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, i)
}

/// The public addresses configured on `eth0` in namespace `ns`.
fn addresses_on(ns: &str) -> Vec<Ipv4Addr> {
    crate::netns::ipv4_on(ns, "eth0")
        .into_iter()
        .filter(|a| PUBLIC.iter().any(|&i| public(i) == *a))
        .collect()
}

/// Address → the nodes hosting it now.
fn placement(c: &TestCluster) -> BTreeMap<Ipv4Addr, Vec<usize>> {
    let mut at: BTreeMap<Ipv4Addr, Vec<usize>> =
        PUBLIC.iter().map(|&i| (public(i), Vec::new())).collect();
    for (i, n) in c.nodes.iter().enumerate() {
        for a in addresses_on(n.ns.name()) {
            at.entry(a).or_default().push(i);
        }
    }
    at
}

/// One idle period under load.
fn measure(profile: &str, realtime: u8, minutes: f64, cpu: usize, spawn: bool) -> Result<Counts> {
    let c = TestCluster::new(&format!("bl{}{realtime}", &profile[..1]), 3)?;
    let masterd = bin_path("masterd")?;
    let mut logs = Vec::new();
    for n in &c.nodes {
        std::fs::write(
            n.config_dir.join("ipfailover.toml"),
            format!(
                "[transport]\nrun_dir = \"{}\"\n\n[cluster]\nprofile = \"{profile}\"\n{}\
                 realtime_priority = {realtime}\n\n[failover]\ngarp_count = 1\n\n\
                 [logging]\nlevel = \"info\"\n",
                n.run_dir.display(),
                super::cluster_extra()
            ),
        )?;
        let pa: String = PUBLIC
            .iter()
            .map(|i| format!("192.0.2.{i}/24 eth0\n"))
            .collect();
        std::fs::write(n.config_dir.join("public_addresses"), pa)?;
        let log_path = n.run_dir.join("masterd.log");
        std::fs::create_dir_all(&n.run_dir)?;
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = n.ns.command(&masterd.to_string_lossy());
        cmd.arg("--config-dir")
            .arg(&n.config_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        n.spawn(cmd).context("starting masterd")?;
        logs.push(log_path);
    }
    wait_for(
        "every address hosted once",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || placement(&c).values().all(|v| v.len() == 1).then_some(()),
    )?;
    // Settle: the start's runs are over.
    std::thread::sleep(Duration::from_secs(2));
    let marks: Vec<u64> = logs
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .collect();
    let secs = (minutes * 60.0).max(1.0);
    // No load at all with `--cpu 0 --no-spawn` (the control).
    let mut stress = if cpu == 0 && !spawn {
        None
    } else {
        Some(start_stress(cpu, spawn, secs)?)
    };
    let mut last = placement(&c);
    let mut moves = 0usize;
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
        let now = placement(&c);
        for (a, nodes) in &now {
            if last.get(a) != Some(nodes) {
                moves += 1;
                eprintln!("{profile} rt{realtime}: {a} {:?} -> {nodes:?}", last.get(a));
            }
        }
        last = now;
    }
    if let Some(s) = stress.as_mut() {
        let _ = s.kill();
        let _ = s.wait();
    }
    let mut counts = Counts {
        moves,
        ..Counts::default()
    };
    for (i, (p, mark)) in logs.iter().zip(marks).enumerate() {
        let text = std::fs::read(p).unwrap_or_default();
        let from = usize::try_from(mark).unwrap_or(0).min(text.len());
        let tail = String::from_utf8_lossy(&text[from..]);
        let (failoverd, clusterd) = lease_events(&tail);
        counts.losses += failoverd;
        counts.clusterd_losses += clusterd;
        if let Some(dir) = std::env::var_os("LOAD_BENCH_LOGS") {
            let dir = std::path::Path::new(&dir);
            std::fs::create_dir_all(dir)?;
            std::fs::copy(p, dir.join(format!("{profile}-rt{realtime}-node{i}.log")))?;
        }
    }
    Ok(counts)
}

/// What one idle period saw.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    /// Addresses that changed node (or were briefly on none).
    moves: usize,
    /// Times a failoverd dropped its addresses for a lost lease.
    losses: usize,
    /// Of which clusterd itself saw the lease lapse ("lease lost").
    clusterd_losses: usize,
}

/// The lease events in one node's log: (failoverd drops, clusterd losses).
/// A drop logs up to two lines (the lease watch and the core, within a few
/// ms of each other): lines less than 100 ms apart count once.
fn lease_events(log: &str) -> (usize, usize) {
    let mut drops = 0;
    let mut last: Option<f64> = None;
    for l in log
        .lines()
        .filter(|l| l.contains("dropping every public address"))
    {
        let at = line_seconds(l);
        let same = matches!((last, at), (Some(a), Some(b)) if (b - a).abs() < 0.1);
        if !same {
            drops += 1;
        }
        last = at.or(last);
    }
    let lost = log
        .lines()
        .filter(|l| l.contains("clusterd") && l.contains("lease lost"))
        .count();
    (drops, lost)
}

/// Seconds within the day of a log line's timestamp
/// (`2026-12-07T07:01:49.144388Z ...`), if it has one.
fn line_seconds(line: &str) -> Option<f64> {
    let t = line.split_whitespace().next()?;
    let time = t.split_once('T')?.1.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// stress-ng with `cpu` CPU hogs and, with `spawn`, a fork/exec load, for
/// `secs` seconds (it also stops when killed).
fn start_stress(cpu: usize, spawn: bool, secs: f64) -> Result<Child> {
    let mut cmd = Command::new("stress-ng");
    if cpu > 0 {
        cmd.args(["--cpu", &cpu.to_string()]);
    }
    if spawn {
        cmd.args(["--fork", "1", "--exec", "1"]);
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // minutes, positive
    let secs = secs.ceil() as u64 + 5;
    cmd.args(["--timeout", &format!("{secs}s"), "--quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.spawn()
        .context("starting stress-ng (scripts/setup.sh installs it)")
}

/// `bench failover-load` options.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Minutes each measurement lasts (0.05 to 120).
    #[arg(long, default_value_t = 10.0, value_parser = super::float_in(0.05, false, 120.0))]
    pub minutes: f64,
    /// stress-ng CPU hogs (0 to 256; default twice the cores).
    #[arg(long, value_parser = super::count_in(0..=256))]
    pub cpu: Option<usize>,
    /// No process-spawning load (`stress-ng --fork 1 --exec 1`).
    #[arg(long = "no-spawn")]
    pub no_spawn: bool,
    /// Only the product's default scheduling (the lease path at real-time
    /// priority); the normal-scheduling comparison doubles the run's length.
    #[arg(long = "realtime-only")]
    pub realtime_only: bool,
    /// The profile(s) measured.
    #[arg(long, value_enum, default_value_t = Profiles::Both)]
    pub profile: Profiles,
}

/// Runs the scenario.
///
/// # Errors
///
/// A cluster that does not start.
pub fn run(args: &LoadArgs) -> Result<()> {
    crate::netns::require_root();
    let minutes = args.minutes;
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    let cpu = args.cpu.unwrap_or(2 * cores);
    let spawn = !args.no_spawn;
    let normal_too = !args.realtime_only;
    let profiles = args.profile.names();
    for p in profiles {
        let base = if normal_too {
            Some(measure(p, 0, minutes, cpu, spawn)?)
        } else {
            None
        };
        let rt = measure(p, 1, minutes, cpu, spawn)?;
        let mut figures = Vec::new();
        if let Some(base) = &base {
            figures.extend([
                (format!("{p}_false_failovers"), base.moves, "moves"),
                (format!("{p}_lease_losses"), base.losses, "drops"),
                (
                    format!("{p}_clusterd_lease_losses"),
                    base.clusterd_losses,
                    "lapses",
                ),
            ]);
        }
        figures.extend([
            (format!("{p}_false_failovers_realtime"), rt.moves, "moves"),
            (format!("{p}_lease_losses_realtime"), rt.losses, "drops"),
            (
                format!("{p}_clusterd_lease_losses_realtime"),
                rt.clusterd_losses,
                "lapses",
            ),
        ]);
        #[allow(clippy::cast_precision_loss)] // counts
        for (metric, v, unit) in figures {
            Figure::plain("failover-load", &metric, v as f64, unit).print();
        }
        let normal = base.map_or_else(
            || "normal scheduling not run".to_string(),
            |b| {
                format!(
                    "normal scheduling {} moves / {} lease losses ({} seen by clusterd)",
                    b.moves, b.losses, b.clusterd_losses
                )
            },
        );
        eprintln!(
            "{p}: {minutes} min under stress-ng --cpu {cpu}{}: {normal}; real-time {} / {} ({})",
            if spawn { " + fork/exec" } else { "" },
            rt.moves,
            rt.losses,
            rt.clusterd_losses
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_drop_logged_twice_counts_once_and_clusterd_lapses_apart() {
        let log = "\
2026-12-07T07:01:49.144388Z ERROR failoverd::daemon::lease: the lease ended without renewal: dropping every public address
2026-12-07T07:01:49.146020Z ERROR failoverd::daemon: the lease is not valid: dropping every public address
2026-12-07T07:01:50.000000Z  INFO clusterd::shell: lease lost pnn=1 lease=false
2026-12-07T07:01:50.001000Z ERROR failoverd::daemon: the lease is not valid: dropping every public address
2026-12-07T07:01:50.050000Z  INFO clusterd::shell: lease valid pnn=1 lease=true
no timestamp: the lease is not valid: dropping every public address
";
        // Three drops (the first logged twice; the untimed line is apart),
        // one lapse that clusterd saw.
        assert_eq!(lease_events(log), (3, 1));
        assert_eq!(line_seconds("2026-12-07T01:02:03.5Z x"), Some(3723.5));
        assert_eq!(line_seconds("garbage"), None);
    }
}
