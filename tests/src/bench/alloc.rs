//! `bench alloc`: LCP2 allocation time and balance.
//!
//! Inputs: N nodes, A addresses in one contiguous IPv4 block (10.0.0.0/20).
//! Two situations each: "from empty" (no address placed yet, every node
//! healthy) and "node fails" (a balanced placement, the result of the first,
//! after node 1 becomes DISCONNECTED). The measured value is
//! `failoverd::alloc::allocate` (incremental LCP2); the baseline is
//! `failoverd::alloc::reference::allocate` (CTDB's definition computed the
//! obvious way, as CTDB does) on the same input in the same run, when it
//! finishes in reasonable time. Both results must be identical, or the run
//! fails. Also printed: the imbalance of the result, max - min addresses per
//! healthy node.
//!
//! Options: `--quick` runs only the 256-address case.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use failoverd::alloc::{allocate, reference, AllocInput, Assignment, IpEntry, KnownOn, NodeState};

use super::{percentile, Figure};

fn addresses(count: u32) -> Vec<IpAddr> {
    (0..count)
        .map(|k| IpAddr::V4(Ipv4Addr::from(0x0A00_0001u32 + k)))
        .collect()
}

fn from_empty(nodes: usize, count: u32) -> AllocInput {
    AllocInput {
        nodes: vec![NodeState::healthy(); nodes],
        ips: addresses(count)
            .into_iter()
            .map(|addr| IpEntry {
                addr,
                owner: None,
                known_on: KnownOn::All,
            })
            .collect(),
        ..AllocInput::default()
    }
}

fn after_failure(nodes: usize, placed: &[Assignment], failed: usize) -> AllocInput {
    let mut states = vec![NodeState::healthy(); nodes];
    states[failed] = NodeState::with_flags(0x01);
    AllocInput {
        nodes: states,
        ips: placed
            .iter()
            .map(|a| IpEntry {
                addr: a.addr,
                owner: a.pnn,
                known_on: KnownOn::All,
            })
            .collect(),
        ..AllocInput::default()
    }
}

/// max - min addresses per node that can host.
fn spread(input: &AllocInput, result: &[Assignment]) -> f64 {
    let mut count = vec![0u32; input.nodes.len()];
    for a in result {
        if let Some(p) = a.pnn {
            count[p as usize] += 1;
        }
    }
    let healthy: Vec<u32> = input
        .nodes
        .iter()
        .zip(&count)
        .filter(|(n, _)| n.can_host())
        .map(|(_, &c)| c)
        .collect();
    let max = healthy.iter().max().copied().unwrap_or(0);
    let min = healthy.iter().min().copied().unwrap_or(0);
    f64::from(max - min)
}

/// Median wall time in ms of `runs` calls, and the last result.
fn time_ms<T>(runs: usize, mut f: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<(f64, T)> {
    let mut samples = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        let r = f()?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
        last = Some(r);
    }
    let r = last.ok_or_else(|| anyhow::anyhow!("no run"))?;
    Ok((percentile(&mut samples, 50.0), r))
}

fn case(label: &str, input: &AllocInput, with_baseline: bool) -> anyhow::Result<Vec<Assignment>> {
    let (fast_ms, fast) = time_ms(5, || Ok(allocate(input)?))?;
    if with_baseline {
        let (ref_ms, slow) = time_ms(1, || Ok(reference::allocate(input)?))?;
        if slow != fast {
            anyhow::bail!("{label}: incremental LCP2 and the reference disagree");
        }
        Figure::with_baseline("alloc", &format!("{label}_ms"), fast_ms, "ms", ref_ms).print();
    } else {
        Figure::plain("alloc", &format!("{label}_ms"), fast_ms, "ms").print();
    }
    Figure::plain(
        "alloc",
        &format!("{label}_imbalance"),
        spread(input, &fast),
        "addrs",
    )
    .print();
    Ok(fast)
}

/// Runs the `alloc` scenario.
///
/// # Errors
///
/// Unknown option, or the two implementations disagree.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut quick = false;
    for a in args {
        match a.as_str() {
            "--quick" => quick = true,
            other => anyhow::bail!("unknown option '{other}' (options: --quick)"),
        }
    }
    let mut sizes = vec![(8usize, 256u32, true, true)];
    if !quick {
        // The reference from empty would take hours at this size (O(U²·N·I));
        // after one failure only 64 addresses move, so it is measured.
        sizes.push((64, 4096, false, true));
    }
    for (nodes, count, ref_empty, ref_fail) in sizes {
        let empty = from_empty(nodes, count);
        let placed = case(
            &format!("lcp2_{count}x{nodes}_from_empty"),
            &empty,
            ref_empty,
        )?;
        let failed = after_failure(nodes, &placed, 1);
        case(
            &format!("lcp2_{count}x{nodes}_node_fails"),
            &failed,
            ref_fail,
        )?;
    }
    Ok(())
}
