//! `bench SCENARIO [OPTIONS]`: prints one JSON line per figure (see
//! `tests::bench`). Scenarios: transport, netlink, netlink-diag, cluster, alloc, conntrack,
//! failover, memory, failover-node, failover-load, start, scrape.

use std::process::ExitCode;

/// Counts live bytes for the scenarios that measure memory (cheap: two
/// relaxed atomic additions per allocation).
#[global_allocator]
static ALLOC: alloccount::Counting = alloccount::Counting;

const SCENARIOS: &[&str] = &[
    "transport",
    "netlink",
    "netlink-diag",
    "cluster",
    "alloc",
    "conntrack",
    "failover",
    "memory",
    "failover-node",
    "failover-load",
    "start",
    "scrape",
];

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(scenario) = args.next() else {
        eprintln!(
            "usage: bench SCENARIO [OPTIONS]; scenarios: {}",
            SCENARIOS.join(", ")
        );
        return ExitCode::from(2);
    };
    let rest: Vec<String> = args.collect();
    use tests::bench;
    let result: anyhow::Result<()> = match scenario.as_str() {
        "transport" => bench::transport::run(&rest),
        "netlink" => bench::netlink::run(&rest),
        "netlink-diag" => bench::netlink_diag::run(&rest),
        "cluster" => bench::cluster::run(&rest),
        "alloc" => bench::alloc::run(&rest),
        "conntrack" => bench::conntrack::run(&rest),
        "failover" => bench::failover::run(&rest),
        "failover-node" => bench::failover_node::run(&rest),
        "failover-load" => bench::load::run(&rest),
        "memory" => bench::memory::run(&rest),
        "start" => bench::start::run(&rest),
        "scrape" => bench::scrape::run(&rest),
        other => Err(anyhow::anyhow!(
            "unknown scenario '{other}'; scenarios: {}",
            SCENARIOS.join(", ")
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench {scenario}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
