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

use clap::{Parser, ValueEnum};
use tests::chaos::run::{self, Options, Scenario};

/// Random faults against a real cluster in network namespaces, with an
/// exact duplicate detector (see `tests::chaos`): JSON lines on stdout, a
/// human trace on stderr; exits 1 on a violation or a liveness failure.
#[derive(Debug, Parser)]
#[command(name = "chaos")]
struct Args {
    /// Nodes (random scenario), 2 to 20.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=20))]
    nodes: u8,
    /// Base public addresses, 1 to 40.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u8).range(1..=40))]
    ips: u8,
    /// Faults (random scenario) or repetitions per kind (restarts).
    #[arg(long, default_value_t = 40)]
    faults: usize,
    /// Seed: the same seed replays the same faults.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Timing profile.
    #[arg(long, value_enum, default_value_t = Profile::Default)]
    profile: Profile,
    /// Process model.
    #[arg(long, value_enum, default_value_t = Model::Multi)]
    model: Model,
    /// Scenario.
    #[arg(long, value_enum, default_value_t = ScenarioArg::Random)]
    scenario: ScenarioArg,
    /// Bound on convergence after a heal, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0, value_parser = seconds)]
    converge_limit: f64,
    /// Overlaps shorter than this are near misses, not violations (the
    /// detector's stamping resolution).
    #[arg(long, value_name = "US", default_value_t = 0)]
    resolution_us: u64,
    /// Namespace tag.
    #[arg(long, default_value = "chaos")]
    tag: String,
    /// Only these fault kinds (comma-separated names, as in the JSON).
    #[arg(long, value_name = "KIND,KIND...", value_delimiter = ',')]
    kinds: Vec<String>,
    /// failoverd's kernel-enforced lease (off only to show the duplicates
    /// it prevents).
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    kernel_lease: OnOff,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Profile {
    Default,
    Fast,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Model {
    Multi,
    Single,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ScenarioArg {
    Random,
    SplitBrain,
    Restarts,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum OnOff {
    On,
    Off,
}

fn seconds(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 3600.0 => Ok(s),
        _ => Err(format!("{v:?}: want seconds, more than 0 and at most 3600")),
    }
}

impl Args {
    fn options(self) -> Options {
        Options {
            nodes: usize::from(self.nodes),
            ips: usize::from(self.ips),
            faults: self.faults,
            seed: self.seed,
            fast: matches!(self.profile, Profile::Fast),
            single: matches!(self.model, Model::Single),
            scenario: match self.scenario {
                ScenarioArg::Random => Scenario::Random,
                ScenarioArg::SplitBrain => Scenario::SplitBrain,
                ScenarioArg::Restarts => Scenario::Restarts,
            },
            converge_limit: Duration::from_secs_f64(self.converge_limit),
            resolution_us: self.resolution_us,
            tag: self.tag,
            kinds: self.kinds,
            kernel_lease: self.kernel_lease == OnOff::On,
        }
    }
}

fn main() -> ExitCode {
    let o = Args::parse().options();
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
