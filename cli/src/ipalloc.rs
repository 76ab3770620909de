//! `ipfailover ipalloc`: the offline allocation planner. It reads CTDB's
//! takeover-test input on stdin (`ADDRESS CURRENT_PNN [ALLOWED_PNN,...]`
//! lines) and prints where each address would go, one `ADDRESS PNN` line per
//! address in CTDB's order, exactly as CTDB's `ctdb_takeover_tests ipalloc`
//! does. Nothing is contacted or changed: it answers "what moves if ...".

use std::io::Read;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use ipalloc::ctdb_input::{
    apply_runstates, format_result, parse_c_number, parse_home_nodes, parse_known_ips,
    parse_node_states,
};
use ipalloc::{allocate, Algorithm, AllocInput, Pnn, Tunables};

/// Arguments of `ipfailover ipalloc`.
#[derive(Debug, clap::Args)]
pub struct IpallocArgs {
    /// Allocation algorithm: lcp2, det or nondet.
    #[arg(long, default_value = "lcp2")]
    algorithm: String,
    /// Node flags, one per node (PNN = position), decimal or 0x hex, e.g.
    /// `0,0x20,0` (0 healthy, 0x02 unhealthy, 0x20 stopped, ...).
    #[arg(long, value_name = "S0,S1,...")]
    node_states: String,
    /// A tunable as NAME=VALUE: NoIPFailback, NoIPTakeover, IPAllocAlgorithm
    /// (overrides --algorithm). Repeatable.
    #[arg(long = "tunable", value_name = "NAME=VALUE")]
    tunables: Vec<String>,
    /// Run state per node (numbers or names, e.g. `5,5,STARTUP`); default:
    /// all RUNNING.
    #[arg(long, value_name = "R0,R1,...")]
    runstate: Option<String>,
    /// Deterministic only: file of `ADDRESS PNN` home-node lines.
    #[arg(long, value_name = "FILE")]
    home_nodes: Option<PathBuf>,
    /// Nodes that may receive addresses in LCP2's rebalance although they
    /// hold some (as after `addip`/`reloadips`).
    #[arg(long, value_name = "PNN,...")]
    force_rebalance: Option<String>,
    /// Read one block per node (node N's own view), blocks separated by
    /// empty lines, instead of one list.
    #[arg(long)]
    multi: bool,
}

/// Builds the allocation input from the arguments and the stdin text.
fn input(args: &IpallocArgs, stdin: &str) -> anyhow::Result<AllocInput> {
    let mut nodes =
        parse_node_states(&args.node_states).map_err(|e| anyhow!("--node-states: {e}"))?;
    if let Some(r) = &args.runstate {
        apply_runstates(&mut nodes, r).map_err(|e| anyhow!("--runstate: {e}"))?;
    }
    let mut tunables = Tunables {
        algorithm: args.algorithm.parse::<Algorithm>()?,
        ..Tunables::default()
    };
    for t in &args.tunables {
        let (name, value) = t
            .split_once('=')
            .ok_or_else(|| anyhow!("--tunable '{t}': expected NAME=VALUE"))?;
        let value = parse_c_number(value)
            .ok_or_else(|| anyhow!("--tunable '{t}': value is not a number"))?;
        tunables
            .set(name.trim(), value)
            .map_err(|e| anyhow!("--tunable: {e}"))?;
    }
    let home_nodes = match &args.home_nodes {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            parse_home_nodes(&text, nodes.len()).map_err(|e| anyhow!("{}: {e}", path.display()))?
        }
        None => Default::default(),
    };
    let mut force_rebalance: Vec<Pnn> = Vec::new();
    if let Some(list) = &args.force_rebalance {
        for p in list.split(',') {
            force_rebalance.push(
                p.trim()
                    .parse()
                    .map_err(|_| anyhow!("--force-rebalance: bad PNN '{p}'"))?,
            );
        }
    }
    let ips = parse_known_ips(stdin, nodes.len(), args.multi).map_err(|e| anyhow!("stdin: {e}"))?;
    if nodes.is_empty() {
        bail!("--node-states: no nodes");
    }
    Ok(AllocInput {
        nodes,
        ips,
        tunables,
        force_rebalance,
        home_nodes,
    })
}

/// Runs the planner: stdin in, result on stdout.
///
/// # Errors
///
/// Bad arguments, unreadable or bad input (naming the line), or an
/// inconsistent input.
pub fn run(args: &IpallocArgs) -> anyhow::Result<()> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read stdin")?;
    let input = input(args, &text)?;
    let result = allocate(&input)?;
    crate::output::emit(&format_result(&result))
}
