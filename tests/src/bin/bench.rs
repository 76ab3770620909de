//! `bench SCENARIO [OPTIONS]`: prints one JSON line per figure (see
//! `tests::bench`). Scenarios: transport, netlink, netlink-diag, cluster, alloc, conntrack,
//! failover, memory, failover-node, failover-load, start, scrape; `bench
//! SCENARIO --help` lists a scenario's options.

use std::process::ExitCode;

use clap::Parser;

/// Counts live bytes for the scenarios that measure memory (cheap: two
/// relaxed atomic additions per allocation).
#[global_allocator]
static ALLOC: alloccount::Counting = alloccount::Counting;

fn main() -> ExitCode {
    let cli = tests::bench::Cli::parse();
    match cli.scenario.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench {}: {e:#}", cli.scenario.name());
            ExitCode::FAILURE
        }
    }
}
