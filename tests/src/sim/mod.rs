//! The whole-node deterministic simulator (`cargo run --release -p tests
//! --bin sim -- --schedules N --seed S [--profile default|fast]
//! [--inject-bug NAME]`).
//!
//! Each schedule is one simulated cluster ([`world::World`]) drawn from one
//! seed: schedule `k` of a run with `--seed S` uses seed `S + k`, so
//! `--schedules 1 --seed S+k` replays it exactly. Invariants, checked after
//! every step:
//!
//! 1. no address is served by two nodes at once (both powered, so both
//!    reach clients): served = configured in the kernel, in the lease set,
//!    and the node's lease element alive on its own clock;
//! 2. after the faults stop, every address some node lists is served by
//!    exactly one node that lists it, and nothing is configured that does
//!    not serve, within the profile's bound (`Profile::bound`);
//! 3. no queue grows without bound (events in flight, executor operations,
//!    requests waiting for the leader, pending forwards, steps).
//!
//! Output: JSON lines as the benchmarks print them (`schedules`, `steps`,
//! `violations`, `schedules_per_s`, `worst_convergence`); each violation's
//! seed and description go to stderr.

pub mod rng;
pub mod world;

use std::time::{Duration, Instant};

pub use world::{Bug, Fault, Outcome, Profile, Violation, World};

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Number of schedules.
    pub schedules: u64,
    /// Seed of the first.
    pub seed: u64,
    /// Timings.
    pub profile: Profile,
    /// A broken variant to run instead of the real code.
    pub bug: Option<Bug>,
}

/// A violation and the seed that replays it.
#[derive(Debug, Clone)]
pub struct Found {
    /// The schedule's seed.
    pub seed: u64,
    /// What broke.
    pub violation: Violation,
}

/// Totals of a run.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Schedules run.
    pub schedules: u64,
    /// Steps over all schedules.
    pub steps: u64,
    /// Violations found (the first few are kept in `found`).
    pub violations: u64,
    /// The first violations, with their seeds.
    pub found: Vec<Found>,
    /// Longest time from the end of the faults to convergence.
    pub worst_convergence: Duration,
    /// Seed of that schedule.
    pub worst_seed: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// Runs one schedule.
#[must_use]
pub fn run_one(profile: Profile, seed: u64, bug: Option<Bug>) -> Outcome {
    World::new(profile, seed, bug).run()
}

/// Runs `opts.schedules` schedules; stops early after `stop_after`
/// violations (`None`: never).
#[must_use]
pub fn run(opts: &Options, stop_after: Option<u64>) -> Summary {
    run_part(opts, stop_after, 0, 1)
}

/// [`run`] on `jobs` threads (schedule `k` on thread `k % jobs`): the same
/// schedules, the same totals.
#[must_use]
pub fn run_parallel(opts: &Options, jobs: u64) -> Summary {
    let jobs = jobs.max(1);
    let started = Instant::now();
    let parts: Vec<Summary> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..jobs)
            .map(|j| scope.spawn(move || run_part(opts, None, j, jobs)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut s = Summary::default();
    for p in parts {
        s.schedules += p.schedules;
        s.steps += p.steps;
        s.violations += p.violations;
        s.found.extend(p.found);
        if p.worst_convergence > s.worst_convergence {
            s.worst_convergence = p.worst_convergence;
            s.worst_seed = p.worst_seed;
        }
    }
    s.found.sort_by_key(|f| f.seed);
    s.found.truncate(10);
    s.elapsed = started.elapsed();
    s
}

fn run_part(opts: &Options, stop_after: Option<u64>, part: u64, parts: u64) -> Summary {
    let started = Instant::now();
    let mut s = Summary::default();
    for k in (part..opts.schedules).step_by(usize::try_from(parts).unwrap_or(1)) {
        let seed = opts.seed.wrapping_add(k);
        let o = run_one(opts.profile, seed, opts.bug);
        s.schedules += 1;
        s.steps += o.steps;
        if let Some(c) = o.convergence {
            if c > s.worst_convergence {
                s.worst_convergence = c;
                s.worst_seed = seed;
            }
        }
        if let Some(v) = o.violation {
            s.violations += 1;
            if s.found.len() < 10 {
                s.found.push(Found { seed, violation: v });
            }
            if stop_after.is_some_and(|n| s.violations >= n) {
                break;
            }
        }
    }
    s.elapsed = started.elapsed();
    s
}

/// The JSON lines of a summary.
#[must_use]
pub fn json_lines(opts: &Options, s: &Summary) -> Vec<String> {
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    #[allow(clippy::cast_precision_loss)]
    let per_s = s.schedules as f64 / secs;
    let bug = opts
        .bug
        .and_then(|b| Bug::ALL.iter().find(|(_, x)| *x == b).map(|(n, _)| *n))
        .unwrap_or("none");
    let line = |metric: &str, value: String, unit: &str| {
        format!(
            r#"{{"bench":"sim","metric":"{metric}","value":{value},"unit":"{unit}","profile":"{}","seed":{},"bug":"{bug}"}}"#,
            opts.profile.name, opts.seed
        )
    };
    vec![
        line("schedules", s.schedules.to_string(), "count"),
        line("steps", s.steps.to_string(), "count"),
        line("violations", s.violations.to_string(), "count"),
        line("schedules_per_s", format!("{per_s:.1}"), "1/s"),
        line(
            "worst_convergence",
            format!("{:.1}", s.worst_convergence.as_secs_f64() * 1000.0),
            "ms",
        ),
    ]
}
