//! `bench netlink-diag`: sock_diag and the nftables table against the tools
//! a shell script would use, measured in the same run, in namespaces made
//! here (needs root).
//!
//! * `sockdiag_dump_N`: one dump of the N established connections of a
//!   public address with [`netlink::sockdiag::SockDiag`], beside
//!   `ss -tnH state established src ADDR` (what CTDB's `update_tickles`
//!   runs) in the same namespace; median of `--reps`.
//! * `nft_block_unblock`: block then unblock one address (two transactions)
//!   with [`netlink::nft::NftTable::update`], beside `nft add element` +
//!   `nft delete element`; median.
//! * `nft_add_1000`: add 1,000 addresses to a set in one transaction, beside
//!   `nft -f` of one `add element` statement with the same addresses; median.
//! * `conntrack_new_events_N`: time from the first connect until the event
//!   stream delivered all N `New` events (no baseline).
//!
//! Options: `--reps N` (default 5), `--conns N` (default 2000).

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use netlink::conntrack::{ConntrackEvent, ConntrackEvents};
use netlink::nft::{NftSet, NftTable};
use netlink::sockdiag::SockDiag;

use crate::bench::{percentile, Figure};
use crate::netns::{veth, NetNs};

const BENCH: &str = "netlink-diag";
const PUBLIC: &str = "192.0.2.1";
const CLIENT: &str = "192.0.2.2";
const PORT: u16 = 4480;

/// `bench netlink-diag` options.
#[derive(Debug, Clone, clap::Args)]
pub struct NetlinkDiagArgs {
    /// Repetitions of each measurement (the median is reported; 0 counts
    /// as 1).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Established connections dumped and conntrack events awaited (0
    /// counts as 1).
    #[arg(long, default_value_t = 2000)]
    pub conns: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    percentile(&mut v, 50.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs the `netlink-diag` scenario.
///
/// # Errors
///
/// When a namespace cannot be set up or a measured step fails.
pub fn run(args: &NetlinkDiagArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("bench netlink-diag needs root (it builds network namespaces)");
    }
    let reps = args.reps.max(1);
    let conns = args.conns.max(1);
    let server = NetNs::new("bdiag-s")?;
    let client = NetNs::new("bdiag-c")?;
    veth(&server, "eth0", &client, "eth0")?;
    server.ip(&["addr", "add", &format!("{PUBLIC}/24"), "dev", "eth0"])?;
    client.ip(&["addr", "add", &format!("{CLIENT}/24"), "dev", "eth0"])?;
    let public: IpAddr = PUBLIC.parse()?;
    let table = NftTable::new("ipf_bench")?;
    let t = table.clone();
    let (rt, mut events) = server.run(move || -> Result<_> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let events = rt.block_on(async {
            t.install().tracked(&[public]).execute().await?;
            anyhow::Ok(ConntrackEvents::subscribe(&[public])?)
        })?;
        Ok((rt, events))
    })??;

    // N connections, accepted in the server namespace while the client
    // namespace connects; the conntrack stream counts the New events.
    let listener = server.run(move || TcpListener::bind(SocketAddr::new(public, PORT)))??;
    let start = Instant::now();
    let (accepted, streams) = std::thread::scope(|scope| -> Result<_> {
        let acceptor = scope.spawn(move || -> Result<Vec<TcpStream>> {
            (0..conns).map(|_| Ok(listener.accept()?.0)).collect()
        });
        let target = SocketAddr::new(public, PORT);
        let streams = client.run(move || -> Result<Vec<TcpStream>> {
            (0..conns)
                .map(|_| Ok(TcpStream::connect_timeout(&target, Duration::from_secs(3))?))
                .collect()
        })??;
        let accepted = acceptor
            .join()
            .map_err(|_| anyhow::anyhow!("acceptor panicked"))??;
        Ok((accepted, streams))
    })?;
    let seen = rt.block_on(async {
        let mut seen = 0usize;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while seen < conns {
            match tokio::time::timeout_at(deadline, events.next()).await {
                Ok(Ok(ConntrackEvent::New(_))) => seen += 1,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(anyhow::Error::from(e)),
                Err(_) => break,
            }
        }
        Ok(seen)
    })?;
    let events_time = start.elapsed();
    if seen < conns {
        eprintln!("conntrack events: only {seen} of {conns} New events within 30 s");
    }
    Figure::plain(
        BENCH,
        &format!("conntrack_new_events_{conns}"),
        ms(events_time),
        "ms",
    )
    .print();

    // sock_diag dump versus ss.
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..reps {
        let (count, took) = server.block_on(move || async move {
            let mut diag = SockDiag::new()?;
            let t0 = Instant::now();
            let found = diag.established(&[public]).execute().await?;
            anyhow::Ok((found.len(), t0.elapsed()))
        })??;
        if count != conns {
            bail!("sock_diag found {count} connections, expected {conns}");
        }
        ours.push(ms(took));
        let t0 = Instant::now();
        let out = server.exec_ok("ss", &["-tnH", "state", "established", "src", PUBLIC])?;
        theirs.push(ms(t0.elapsed()));
        let lines = out.lines().count();
        if lines != conns {
            bail!("ss found {lines} connections, expected {conns}");
        }
    }
    Figure::with_baseline(
        BENCH,
        &format!("sockdiag_dump_{conns}"),
        median(ours),
        "ms",
        median(theirs),
    )
    .print();
    drop((accepted, streams));

    // One address blocked and unblocked.
    let blocked = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9));
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..reps {
        let t = table.clone();
        let took = server.block_on(move || async move {
            let t0 = Instant::now();
            t.update()
                .add(NftSet::Blocked, &[blocked])
                .execute()
                .await?;
            t.update()
                .remove(NftSet::Blocked, &[blocked])
                .execute()
                .await?;
            anyhow::Ok(t0.elapsed())
        })??;
        ours.push(ms(took));
        let t0 = Instant::now();
        let set = "blocked4";
        let elem = format!("{{ {blocked} }}");
        server.exec_ok("nft", &["add", "element", "inet", "ipf_bench", set, &elem])?;
        server.exec_ok(
            "nft",
            &["delete", "element", "inet", "ipf_bench", set, &elem],
        )?;
        theirs.push(ms(t0.elapsed()));
    }
    Figure::with_baseline(
        BENCH,
        "nft_block_unblock",
        median(ours),
        "ms",
        median(theirs),
    )
    .print();

    // 1,000 addresses in one transaction.
    let many: Vec<IpAddr> = (0..1000u128)
        .map(|i| IpAddr::V6(Ipv6Addr::from((0x2001_0db8_u128 << 96) | (0x1_0000 + i))))
        .collect();
    let list = many
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let script = std::env::temp_dir().join(format!("ipf-bench-nft-{}.nft", std::process::id()));
    std::fs::File::create(&script)?
        .write_all(format!("add element inet ipf_bench public6 {{ {list} }}\n").as_bytes())?;
    let script_arg = script.to_string_lossy().into_owned();
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..reps {
        let t = table.clone();
        let addrs = many.clone();
        let took = server.block_on(move || async move {
            t.update().remove(NftSet::Tracked, &addrs).execute().await?;
            let t0 = Instant::now();
            t.update().add(NftSet::Tracked, &addrs).execute().await?;
            let took = t0.elapsed();
            t.update().remove(NftSet::Tracked, &addrs).execute().await?;
            anyhow::Ok(took)
        })??;
        ours.push(ms(took));
        let t0 = Instant::now();
        server.exec_ok("nft", &["-f", &script_arg])?;
        theirs.push(ms(t0.elapsed()));
        let t = table.clone();
        let addrs = many.clone();
        server.block_on(move || async move {
            t.update().remove(NftSet::Tracked, &addrs).execute().await
        })??;
    }
    let _ = std::fs::remove_file(&script);
    Figure::with_baseline(BENCH, "nft_add_1000", median(ours), "ms", median(theirs)).print();

    let t = table.clone();
    server.block_on(move || async move { t.remove().execute().await })??;
    drop(rt);
    Ok(())
}
