//! `chaos [--nodes N] [--ips M] [--faults F] [--seed S] [--profile default|fast]
//! [--model multi|single] [--scenario random|split-brain|restarts]
//! [--converge-limit SECONDS] [--resolution-us US] [--tag TAG] [--kinds KIND,...] [--kernel-lease on|off]`
//!
//! Builds a cluster under masterd in network namespaces and injects faults
//! (see `tests::chaos`); prints one JSON object per line on stdout, a human
//! trace on stderr; exits 1 when a violation or a liveness failure was
//! found. Needs root.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tests::chaos::run::{self, Options, Scenario};

const USAGE: &str = "usage: chaos [--nodes N] [--ips M] [--faults F] [--seed S] \
[--profile default|fast] [--model multi|single] [--scenario random|split-brain|restarts] \
[--converge-limit SECONDS] [--resolution-us US] [--tag TAG] [--kinds KIND,KIND...] [--kernel-lease on|off]";

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--help" || a == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let v = it
            .next()
            .with_context(|| format!("{a} needs a value\n{USAGE}"))?;
        match a.as_str() {
            "--nodes" => o.nodes = v.parse().context("--nodes")?,
            "--ips" => o.ips = v.parse().context("--ips")?,
            "--faults" => o.faults = v.parse().context("--faults")?,
            "--seed" => o.seed = v.parse().context("--seed")?,
            "--profile" => {
                o.fast = match v.as_str() {
                    "default" => false,
                    "fast" => true,
                    _ => bail!("--profile default|fast"),
                }
            }
            "--model" => {
                o.single = match v.as_str() {
                    "multi" => false,
                    "single" => true,
                    _ => bail!("--model multi|single"),
                }
            }
            "--scenario" => {
                o.scenario = match v.as_str() {
                    "random" => Scenario::Random,
                    "split-brain" => Scenario::SplitBrain,
                    "restarts" => Scenario::Restarts,
                    _ => bail!("--scenario random|split-brain|restarts"),
                }
            }
            "--converge-limit" => {
                o.converge_limit = Duration::from_secs_f64(v.parse().context("--converge-limit")?)
            }
            "--resolution-us" => o.resolution_us = v.parse().context("--resolution-us")?,
            "--tag" => o.tag = v.clone(),
            "--kernel-lease" => {
                o.kernel_lease = match v.as_str() {
                    "on" => true,
                    "off" => false,
                    _ => bail!("--kernel-lease on|off"),
                }
            }
            "--kinds" => o.kinds = v.split(',').map(str::to_string).collect(),
            other => bail!("unknown option {other}\n{USAGE}"),
        }
    }
    if !(2..=20).contains(&o.nodes) {
        bail!("--nodes: 2 to 20");
    }
    if !(1..=40).contains(&o.ips) {
        bail!("--ips: 1 to 40");
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("chaos: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = ctrlc::set_handler(|| {
        run::INTERRUPTED.store(true, Ordering::Relaxed);
        eprintln!("\nchaos: interrupted: stopping after this round");
    }) {
        eprintln!("chaos: cannot install the Ctrl-C handler: {e}");
    }
    match run::run(&o) {
        Ok(report) => {
            for l in &report.lines {
                println!("{l}");
            }
            for f in &report.liveness {
                eprintln!("chaos: LIVENESS: {f}");
            }
            for f in &report.unreset {
                eprintln!("chaos: NOT RESET: {f}");
            }
            if report.ok() {
                eprintln!("chaos: seed {}: no violation, no liveness failure", o.seed);
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "chaos: seed {}: {} violation(s), {} liveness failure(s), {} client(s) not reset",
                    o.seed,
                    report.violations,
                    report.liveness.len(),
                    report.unreset.len()
                );
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("chaos: {e:#}");
            ExitCode::FAILURE
        }
    }
}
