//! `bench alloc`: LCP2 allocation time and balance.
//!
//! Inputs: N nodes, A addresses in one contiguous IPv4 block (10.0.0.0/20).
//! Two situations each: "from empty" (no address placed yet, every node
//! healthy) and "node fails" (a balanced placement, the result of the first,
//! after node 1 becomes DISCONNECTED). The measured value is
//! `ipalloc::allocate` (incremental LCP2); the baseline is
//! `ipalloc::reference::allocate` (CTDB's definition computed the
//! obvious way, as CTDB does) on the same input in the same run, when it
//! finishes in reasonable time. Both results must be identical, or the run
//! fails. Also printed: the imbalance of the result, max - min addresses per
//! healthy node.
//!
//! Options: `--quick` runs only the 256-address case; `--large-only` only
//! the 4,096-address cases, without the reference (for profiling).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use ipalloc::{allocate, reference, AllocInput, Assignment, IpEntry, KnownOn, NodeState};

use super::{percentile, Figure};

/// Which addresses a case uses.
#[derive(Debug, Clone, Copy)]
enum Family {
    /// 10.0.0.1 onwards.
    V4,
    /// 2001:db8::1:0:1 onwards (one /96).
    V6,
    /// Half of each: the general path (no common top 96 bits).
    Mixed,
}

fn addresses(count: u32, family: Family) -> Vec<IpAddr> {
    let v4 = |k: u32| IpAddr::V4(Ipv4Addr::from(0x0A00_0001u32 + k));
    let v6 = |k: u32| {
        IpAddr::V6(Ipv6Addr::from(
            (0x2001_0db8u128 << 96) | (1u128 << 32) | u128::from(k + 1),
        ))
    };
    (0..count)
        .map(|k| match family {
            Family::V4 => v4(k),
            Family::V6 => v6(k),
            Family::Mixed if k % 2 == 0 => v4(k),
            Family::Mixed => v6(k),
        })
        .collect()
}

fn from_empty(nodes: usize, count: u32, family: Family) -> AllocInput {
    AllocInput {
        nodes: vec![NodeState::healthy(); nodes],
        ips: addresses(count, family)
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

/// This thread's CPU time in ns (first field of /proc/thread-self/schedstat),
/// so figures survive a machine shared with other work.
fn thread_cpu_ns() -> anyhow::Result<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    s.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("unexpected /proc/thread-self/schedstat: {s}"))
}

/// Median CPU time in ms of `runs` calls, median wall time in ms, and the
/// last result.
fn time_ms<T>(
    runs: usize,
    mut f: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<(f64, f64, T)> {
    // The kernel updates the CPU clock read here at scheduler ticks, so a
    // sample is a batch of calls lasting at least ~50 ms, divided by its size.
    let t = Instant::now();
    let mut last = Some(f()?);
    let once = t.elapsed().as_secs_f64();
    // At most a few thousand calls per batch for sub-ms runs.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let batch = ((0.05 / once.max(1e-6)).ceil() as usize).clamp(1, 5000);
    let mut cpu = Vec::with_capacity(runs);
    let mut wall = Vec::with_capacity(runs);
    for _ in 0..runs {
        let c = thread_cpu_ns()?;
        let t = Instant::now();
        for _ in 0..batch {
            last = Some(f()?);
        }
        // A batch is far shorter than 2^53 ns; batch is small.
        #[allow(clippy::cast_precision_loss)]
        let n = batch as f64;
        wall.push(t.elapsed().as_secs_f64() * 1e3 / n);
        #[allow(clippy::cast_precision_loss)]
        cpu.push((thread_cpu_ns()?.saturating_sub(c)) as f64 / 1e6 / n);
    }
    let r = last.ok_or_else(|| anyhow::anyhow!("no run"))?;
    Ok((percentile(&mut cpu, 50.0), percentile(&mut wall, 50.0), r))
}

fn case(label: &str, input: &AllocInput, with_baseline: bool) -> anyhow::Result<Vec<Assignment>> {
    let (fast_cpu, fast_wall, fast) = time_ms(5, || Ok(allocate(input)?))?;
    if with_baseline {
        let (ref_cpu, ref_wall, slow) = time_ms(1, || Ok(reference::allocate(input)?))?;
        if slow != fast {
            anyhow::bail!("{label}: incremental LCP2 and the reference disagree");
        }
        Figure::with_baseline("alloc", &format!("{label}_cpu_ms"), fast_cpu, "ms", ref_cpu).print();
        Figure::with_baseline(
            "alloc",
            &format!("{label}_wall_ms"),
            fast_wall,
            "ms",
            ref_wall,
        )
        .print();
    } else {
        Figure::plain("alloc", &format!("{label}_cpu_ms"), fast_cpu, "ms").print();
        Figure::plain("alloc", &format!("{label}_wall_ms"), fast_wall, "ms").print();
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

/// `bench alloc` options.
#[derive(Debug, Clone, clap::Args)]
pub struct AllocArgs {
    /// Only the 256-address case (8 nodes), with both references.
    #[arg(long)]
    pub quick: bool,
    /// Only the 4096-address cases, without the reference after a failure
    /// (for profiling).
    #[arg(long = "large-only")]
    pub large_only: bool,
}

/// Runs the `alloc` scenario.
///
/// # Errors
///
/// The two implementations disagree.
pub fn run(args: &AllocArgs) -> anyhow::Result<()> {
    let (quick, large_only) = (args.quick, args.large_only);
    // (nodes, addresses, family, reference from empty, reference after failure)
    let mut sizes = Vec::new();
    if !large_only {
        sizes.push((8usize, 256u32, Family::V4, true, true));
    }
    if !quick {
        // The reference from empty would take hours at this size (O(U²·N·I));
        // after one failure only 64 addresses move, so it is measured
        // (except with --large-only, for profiling).
        sizes.push((64, 4096, Family::V4, false, !large_only));
        sizes.push((64, 4096, Family::V6, false, false));
        sizes.push((64, 4096, Family::Mixed, false, false));
    }
    for (nodes, count, family, ref_empty, ref_fail) in sizes {
        let tag = match family {
            Family::V4 => String::new(),
            Family::V6 => "_v6".to_string(),
            Family::Mixed => "_mixed".to_string(),
        };
        let empty = from_empty(nodes, count, family);
        let placed = case(
            &format!("lcp2_{count}x{nodes}{tag}_from_empty"),
            &empty,
            ref_empty,
        )?;
        let failed = after_failure(nodes, &placed, 1);
        case(
            &format!("lcp2_{count}x{nodes}{tag}_node_fails"),
            &failed,
            ref_fail,
        )?;
    }
    Ok(())
}
