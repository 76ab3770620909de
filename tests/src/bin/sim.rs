//! `sim [--schedules N] [--seed S] [--profile default|fast] [--inject-bug NAME]
//! [--jobs J]`:
//! the whole-node deterministic simulator (see `tests::sim`). Prints JSON
//! lines; exits 1 when a violation was found.

use std::process::ExitCode;

use clap::Parser;

use tests::sim::{self, Bug, Options, Profile};

/// The whole-node deterministic simulator (see `tests::sim`): prints JSON
/// lines; exits 1 when a violation was found.
#[derive(Debug, Parser)]
#[command(name = "sim")]
struct Args {
    /// Schedules to run.
    #[arg(long, default_value_t = 1000)]
    schedules: u64,
    /// Seed of the first schedule (a violation names the seed to replay).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Timing profile: default or fast.
    #[arg(long, default_value = "default", value_parser = profile)]
    profile: Profile,
    /// Plant a known bug, to show the simulator finds it.
    #[arg(long = "inject-bug", value_name = "NAME", value_parser = bug)]
    inject_bug: Option<Bug>,
    /// Schedules run in parallel.
    #[arg(long, default_value_t = 1)]
    jobs: u64,
}

fn profile(v: &str) -> Result<Profile, String> {
    Profile::parse(v).ok_or_else(|| format!("unknown profile {v}: want default or fast"))
}

fn bug(v: &str) -> Result<Bug, String> {
    Bug::parse(v).ok_or_else(|| {
        let bugs: Vec<&str> = Bug::ALL.iter().map(|(n, _)| *n).collect();
        format!("unknown bug {v}: want one of {}", bugs.join(", "))
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let jobs = args.jobs;
    let opts = Options {
        schedules: args.schedules,
        seed: args.seed,
        profile: args.profile,
        bug: args.inject_bug,
    };
    let summary = sim::run_parallel(&opts, jobs);
    for f in &summary.found {
        eprintln!(
            "violation (replay: --schedules 1 --seed {}): {:?}",
            f.seed, f.violation
        );
    }
    eprintln!(
        "sim {}: {} schedules, {} steps, {} violations, worst convergence {:?} (seed {}), {:.1} s",
        opts.profile.name,
        summary.schedules,
        summary.steps,
        summary.violations,
        summary.worst_convergence,
        summary.worst_seed,
        summary.elapsed.as_secs_f64()
    );
    for l in sim::json_lines(&opts, &summary) {
        println!("{l}");
    }
    if summary.violations > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
