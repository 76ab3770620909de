//! `bench failover-node`: failoverd's node-local executor
//! ([`failoverd::node::Executor`]) against the bare netlink calls it is
//! built on, measured in the same run, in namespaces made here (needs root).
//!
//! * `take_1_p50` / `release_1_p50`: one address taken (added, tracked in
//!   nftables, announcer started) / released (blocked, connections reset,
//!   removed, unblocked), beside a bare `add_address` / `del_address`.
//! * `take_256` / `release_256` / `drop_all_256`: 256 addresses at once,
//!   beside one pipelined `add_addresses` / `del_addresses` of the same 256.
//! * `runtime_stall_max_256`: the longest gap of a 1 ms ticker running on
//!   the executor's (one-thread) runtime during the 256-address steps: how
//!   long the executor kept the thread from doing anything else.
//! * `heal_p50` / `heal_p99`: an address is deleted behind the executor's
//!   back; time until the kernel reports it added again (self-healing),
//!   beside the time until the kernel reports the deletion itself.
//! * `link_move_p50`: the interface of an address goes down; time until the
//!   address is on the other listed interface (updateip), beside the time
//!   until the kernel reports the link change.
//!
//! No hooks run. Options: `--reps N` (default 20; p50/p99 over them).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use failoverd::node::{Executor, ExecutorConfig};
use failoverd::public_addresses::PublicAddress;
use netlink::addr::IpPrefix;
use netlink::events::{Event, Events};
use netlink::link::Netlink;

use crate::bench::{percentile, Figure};
use crate::netns::{veth, NetNs};

const BENCH: &str = "failover-node";

/// `bench failover-node` options.
#[derive(Debug, Clone, clap::Args)]
pub struct FailoverNodeArgs {
    /// Repetitions of each step (p50/p99 over them; 0 counts as 1).
    #[arg(long, default_value_t = 20)]
    pub reps: usize,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn public(i: u32, ifaces: &[&str]) -> PublicAddress {
    let [_, _, a, b] = (0xC633_6400u32 + i).to_be_bytes(); // 198.51.100.0 + i
    let addr = if i < 256 {
        format!("198.51.100.{b}")
    } else {
        format!("198.51.{a}.{b}")
    };
    PublicAddress {
        addr: addr.parse().expect("a valid IPv4 address"),
        prefix: 16,
        ifaces: ifaces.iter().map(|s| s.to_string()).collect(),
    }
}

fn prefix(p: &PublicAddress) -> Result<IpPrefix> {
    IpPrefix::new(p.addr, p.prefix).map_err(|e| anyhow!("{e}"))
}

/// Waits (bounded) for an event matching `f` and returns when it came.
async fn wait_event(
    events: &mut Events,
    limit: Duration,
    f: impl Fn(&Event) -> bool,
) -> Result<Instant> {
    tokio::time::timeout(limit, async {
        loop {
            match events.next().await {
                Some(ev) if f(&ev) => return Ok(Instant::now()),
                Some(_) => {}
                None => bail!("event stream ended"),
            }
        }
    })
    .await
    .map_err(|_| anyhow!("no such event within {limit:?}"))?
}

/// Runs the `failover-node` scenario.
///
/// # Errors
///
/// When a namespace cannot be set up or a measured step fails.
pub fn run(args: &FailoverNodeArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("bench failover-node needs root (it builds network namespaces)");
    }
    let reps = args.reps.max(1);
    let node = NetNs::new("bfnn")?;
    let peer = NetNs::new("bfnp")?;
    veth(&node, "eth0", &peer, "p0")?;
    veth(&node, "eth1", &peer, "p1")?;
    let figures = node.block_on(move || measure(reps))??;
    for f in figures {
        f.print();
    }
    Ok(())
}

async fn measure(reps: usize) -> Result<Vec<Figure>> {
    let nl = Netlink::new()?;
    let config = ExecutorConfig {
        garp_count: 1,
        hooks_dir: None,
        ..ExecutorConfig::default()
    };
    let (ex, _events) = Executor::start(config, None).await?;
    let mut out = Vec::new();

    // One address: take/release against bare add/del.
    let one = public(1, &["eth0"]);
    let (mut take, mut add, mut rel, mut del) = (vec![], vec![], vec![], vec![]);
    for _ in 0..reps {
        let t = Instant::now();
        nl.add_address("eth0", prefix(&one)?).execute().await?;
        add.push(ms(t.elapsed()));
        let t = Instant::now();
        nl.del_address("eth0", prefix(&one)?).execute().await?;
        del.push(ms(t.elapsed()));
        let t = Instant::now();
        ex.take(&one).await?;
        take.push(ms(t.elapsed()));
        let t = Instant::now();
        ex.release(one.addr).await?;
        rel.push(ms(t.elapsed()));
        // A release answers before its nftables clean-up (an RCU grace
        // period or two, on this one-thread runtime): let it finish, or
        // the next bare add, which is the baseline, waits for it.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    out.push(Figure::with_baseline(
        BENCH,
        "take_1_p50",
        percentile(&mut take, 50.0),
        "ms",
        percentile(&mut add, 50.0),
    ));
    out.push(Figure::with_baseline(
        BENCH,
        "release_1_p50",
        percentile(&mut rel, 50.0),
        "ms",
        percentile(&mut del, 50.0),
    ));

    // 256 at once.
    let many: Vec<PublicAddress> = (10..266).map(|i| public(i, &["eth0"])).collect();
    let prefixes: Vec<IpPrefix> = many.iter().map(prefix).collect::<Result<_>>()?;
    let ips: Vec<IpAddr> = many.iter().map(|p| p.addr).collect();
    let t = Instant::now();
    nl.add_addresses("eth0", prefixes.iter().copied())
        .execute()
        .await?;
    let add256 = ms(t.elapsed());
    let t = Instant::now();
    nl.del_addresses("eth0", prefixes.iter().copied())
        .execute()
        .await?;
    let del256 = ms(t.elapsed());
    // A 1 ms ticker on the same (one-thread) runtime: its longest gap is
    // the longest time the executor kept the thread from running anything
    // else (a blocking system call, a long computation).
    let stall = std::sync::Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let ticker = {
        let stall = std::sync::Arc::clone(&stall);
        tokio::spawn(async move {
            let mut last = Instant::now();
            // Bounded: the task is aborted after the 256-address steps, and
            // ends on its own after 10 minutes.
            for _ in 0..600_000 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                let gap = last.elapsed();
                last = Instant::now();
                let mut worst = stall
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                *worst = (*worst).max(gap);
            }
        })
    };
    let t = Instant::now();
    for (a, r) in ex.take_many(&many).await {
        r.with_context(|| format!("take {a}"))?;
    }
    out.push(Figure::with_baseline(
        BENCH,
        "take_256",
        ms(t.elapsed()),
        "ms",
        add256,
    ));
    let t = Instant::now();
    for (a, r) in ex.release_many(&ips).await {
        r.with_context(|| format!("release {a}"))?;
    }
    out.push(Figure::with_baseline(
        BENCH,
        "release_256",
        ms(t.elapsed()),
        "ms",
        del256,
    ));
    for (a, r) in ex.take_many(&many).await {
        r.with_context(|| format!("take {a}"))?;
    }
    let t = Instant::now();
    let n = ex.drop_all(failoverd::node::DropMode::RemoveFirst).await?;
    if n != 256 {
        bail!("drop_all released {n} addresses, expected 256");
    }
    // drop_all closes the lease gate (it is what a lost lease does); open
    // it again for the rest of the measurements.
    ex.set_lease(Some(
        tokio::time::Instant::now() + Duration::from_secs(24 * 3600),
    ));
    out.push(Figure::with_baseline(
        BENCH,
        "drop_all_256",
        ms(t.elapsed()),
        "ms",
        del256,
    ));
    // Let the announcers of the second take end too (garp_count = 1).
    tokio::time::sleep(Duration::from_millis(100)).await;
    ticker.abort();
    let worst = *stall
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    out.push(Figure::plain(
        BENCH,
        "runtime_stall_max_256",
        ms(worst),
        "ms",
    ));

    // Self-healing: delete behind its back, wait for the re-add.
    let healed = public(2, &["eth0"]);
    ex.take(&healed).await?;
    let (mut heal, mut seen) = (vec![], vec![]);
    for _ in 0..reps {
        let mut events = Events::subscribe()?;
        let t = Instant::now();
        nl.del_address("eth0", prefix(&healed)?).execute().await?;
        let addr = healed.addr;
        let removed = wait_event(
            &mut events,
            Duration::from_secs(5),
            |e| matches!(e, Event::AddressRemoved { prefix, .. } if prefix.addr() == addr),
        )
        .await?;
        let added = wait_event(
            &mut events,
            Duration::from_secs(5),
            |e| matches!(e, Event::AddressAdded { prefix, .. } if prefix.addr() == addr),
        )
        .await?;
        seen.push(ms(removed - t));
        heal.push(ms(added - t));
    }
    let seen50 = percentile(&mut seen, 50.0);
    out.push(Figure::with_baseline(
        BENCH,
        "heal_p50",
        percentile(&mut heal, 50.0),
        "ms",
        seen50,
    ));
    out.push(Figure::with_baseline(
        BENCH,
        "heal_p99",
        percentile(&mut heal, 99.0),
        "ms",
        percentile(&mut seen, 99.0),
    ));
    ex.release(healed.addr).await?;

    // Link down: move to the other interface.
    let moving = public(3, &["eth0", "eth1"]);
    let (mut moved, mut link_seen) = (vec![], vec![]);
    for _ in 0..reps {
        ex.take(&moving).await?;
        let mut events = Events::subscribe()?;
        let eth1 = nl.link("eth1").await?.index;
        let t = Instant::now();
        nl.set_link_up("eth0", false).await?;
        let down = wait_event(
            &mut events,
            Duration::from_secs(5),
            |e| matches!(e, Event::Link(s) if s.name == "eth0" && !s.is_usable()),
        )
        .await?;
        let addr = moving.addr;
        let added = wait_event(&mut events, Duration::from_secs(5), |e| {
            matches!(e, Event::AddressAdded { index, prefix } if *index == eth1 && prefix.addr() == addr)
        })
        .await?;
        link_seen.push(ms(down - t));
        moved.push(ms(added - t));
        ex.release(moving.addr).await?;
        nl.set_link_up("eth0", true).await?;
        // Wait (bounded) for the carrier to come back before the next round.
        let mut up = false;
        for _ in 0..200 {
            if nl.link("eth0").await?.is_usable() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !up {
            bail!("eth0 did not come back up");
        }
    }
    out.push(Figure::with_baseline(
        BENCH,
        "link_move_p50",
        percentile(&mut moved, 50.0),
        "ms",
        percentile(&mut link_seen, 50.0),
    ));
    ex.shutdown();
    Ok(out)
}
