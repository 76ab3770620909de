//! `sim --schedules N --seed S [--profile default|fast] [--inject-bug NAME]
//! [--jobs J]`:
//! the whole-node deterministic simulator (see `tests::sim`). Prints JSON
//! lines; exits 1 when a violation was found.

use std::process::ExitCode;

use tests::sim::{self, Bug, Options, Profile};

fn usage() -> String {
    let bugs: Vec<&str> = Bug::ALL.iter().map(|(n, _)| *n).collect();
    format!(
        "usage: sim [--schedules N] [--seed S] [--profile default|fast] [--inject-bug NAME] [--jobs J]; bugs: {}",
        bugs.join(", ")
    )
}

fn parse(args: &[String]) -> Result<(Options, u64), String> {
    let mut jobs = 1;
    let mut opts = Options {
        schedules: 1000,
        seed: 1,
        profile: Profile::default_profile(),
        bug: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--schedules" => {
                opts.schedules = value()?.parse().map_err(|e| format!("--schedules: {e}"))?;
            }
            "--jobs" => jobs = value()?.parse().map_err(|e| format!("--jobs: {e}"))?,
            "--seed" => opts.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--profile" => {
                let v = value()?;
                opts.profile = Profile::parse(&v).ok_or_else(|| format!("unknown profile {v}"))?;
            }
            "--inject-bug" => {
                let v = value()?;
                opts.bug = Some(Bug::parse(&v).ok_or_else(|| format!("unknown bug {v}"))?);
            }
            "-h" | "--help" => return Err(usage()),
            other => return Err(format!("unknown option {other}\n{}", usage())),
        }
    }
    Ok((opts, jobs))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (opts, jobs) = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
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
