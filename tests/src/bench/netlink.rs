//! `bench netlink`: the netlink crate against the obvious baselines, measured
//! in the same run, in namespaces made here (needs root).
//!
//! * `addr_add_del_1024`: add then remove 1,024 IPv6 addresses on one
//!   interface with [`netlink::link::Netlink`] (pipelined), beside
//!   `ip -batch` doing the same (lower is better; target ratio <= 1.0);
//!   `_cpu`: the CPU time (user + system) each side spent, and
//!   `_pair_ratio`: the median of the per-repetition ratios.
//! * `tickle_rate_100k`: tickle ACKs for 100,000 connections through
//!   [`netlink::packet::sender::SegmentSender`] (build + `sendmmsg`), beside a
//!   minimal loop of `sendto` of prebuilt packets on one raw socket (higher is
//!   better; target >= 200,000 pkt/s and ratio >= 0.8). The destinations'
//!   neighbour entries point at a MAC nobody has, so the peer drops the
//!   frames at once and does not answer.
//! * `killtcp_1000`: time from the start of killtcp until every one of 1,000
//!   live clients has seen its reset (target < 1 s).
//!
//! Options: `--reps N` (default 3; the median is reported), `--only
//! addr|tickle|killtcp` (one part).

use std::fmt::Write as _;
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use netlink::addr::IpPrefix;
use netlink::killtcp::{Connection, KillTcp};
use netlink::link::Netlink;
use netlink::packet::sender::SegmentSender;
use netlink::packet::TcpSegment;

use crate::bench::{percentile, Figure};
use crate::netns::{veth, NetNs};

const BENCH: &str = "netlink";

/// `bench netlink` options.
#[derive(Debug, Clone, clap::Args)]
pub struct NetlinkArgs {
    /// Repetitions of each part (the median is reported; 0 counts as 1).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Only this part.
    #[arg(long, value_parser = ["addr", "tickle", "killtcp"])]
    pub only: Option<String>,
}

/// Runs the `netlink` scenario.
///
/// # Errors
///
/// When a namespace cannot be set up or a measured step fails.
pub fn run(args: &NetlinkArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("bench netlink needs root (it builds network namespaces)");
    }
    let reps = args.reps.max(1);
    let only = args.only.as_deref();
    let want = |part: &str| only.is_none_or(|o| o == part);
    if want("addr") {
        addresses(reps)?;
    }
    if want("tickle") {
        tickles(reps)?;
    }
    if want("killtcp") {
        killtcp()?;
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    percentile(&mut v, 50.0)
}

fn addresses(reps: usize) -> Result<()> {
    const N: u16 = 1024;
    let a = NetNs::new("bna")?;
    let b = NetNs::new("bnb")?;
    veth(&a, "eth0", &b, "eth0")?;
    let prefixes: Vec<IpPrefix> = (1..=N)
        .map(|i| format!("2001:db8:2::{i:x}/128").parse())
        .collect::<Result<_, _>>()?;
    let mut add = String::new();
    let mut del = String::new();
    for p in &prefixes {
        writeln!(add, "address add {p} dev eth0 nodad")?;
        writeln!(del, "address del {p} dev eth0")?;
    }
    let dir = std::env::temp_dir();
    let add_file = dir.join(format!("ipf-bench-add-{}", std::process::id()));
    let del_file = dir.join(format!("ipf-bench-del-{}", std::process::id()));
    std::fs::write(&add_file, add)?;
    std::fs::write(&del_file, del)?;

    let mut ours = Vec::new();
    let mut base = Vec::new();
    let mut ours_cpu = Vec::new();
    let mut base_cpu = Vec::new();
    // Alternate which goes first, so that deferred kernel work left by the
    // previous step (freeing, MLD timers) does not always land on one side.
    for rep in 0..reps {
        for ours_turn in [rep % 2 == 0, rep % 2 == 1] {
            if ours_turn {
                let list = prefixes.clone();
                let (t, cpu) = a.block_on(move || async move {
                    let nl = Netlink::new()?;
                    let cpu0 = cpu_ms(nix::libc::RUSAGE_THREAD);
                    let start = Instant::now();
                    nl.add_addresses("eth0", list.clone()).execute().await?;
                    nl.del_addresses("eth0", list).execute().await?;
                    anyhow::Ok((start.elapsed(), cpu_ms(nix::libc::RUSAGE_THREAD) - cpu0))
                })??;
                ours.push(t.as_secs_f64() * 1e3);
                ours_cpu.push(cpu);
            } else {
                let cpu0 = cpu_ms(nix::libc::RUSAGE_CHILDREN);
                let start = Instant::now();
                for f in [&add_file, &del_file] {
                    let f = f.to_str().context("temp path is not UTF-8")?;
                    crate::netns::ip(&["-n", a.name(), "-batch", f])?;
                }
                base.push(start.elapsed().as_secs_f64() * 1e3);
                base_cpu.push(cpu_ms(nix::libc::RUSAGE_CHILDREN) - cpu0);
            }
        }
    }
    // Adjacent runs see about the same background load: the median of the
    // per-pair ratios is steadier than the ratio of the medians.
    let pair_ratios: Vec<f64> = ours.iter().zip(&base).map(|(o, b)| o / b).collect();
    let _ = std::fs::remove_file(&add_file);
    let _ = std::fs::remove_file(&del_file);
    Figure::with_baseline(BENCH, "addr_add_del_1024", median(ours), "ms", median(base)).print();
    Figure::with_baseline(
        BENCH,
        "addr_add_del_1024_cpu",
        median(ours_cpu),
        "ms",
        median(base_cpu),
    )
    .print();
    Figure::plain(
        BENCH,
        "addr_add_del_1024_pair_ratio",
        median(pair_ratios),
        "x",
    )
    .print();
    Ok(())
}

/// User + system CPU time of `who` (`RUSAGE_THREAD` / `RUSAGE_CHILDREN`), ms.
fn cpu_ms(who: nix::libc::c_int) -> f64 {
    // SAFETY: rusage is plain old data; all-zero is valid.
    let mut ru: nix::libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is writable; getrusage only fills it.
    unsafe { nix::libc::getrusage(who, &raw mut ru) };
    let tv = |t: nix::libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Two namespaces; `a` reaches 198.51.100.2 and .3 through neighbour
/// entries that point at a MAC nobody has.
fn tickle_setup() -> Result<(NetNs, NetNs)> {
    let a = NetNs::new("bta")?;
    let b = NetNs::new("btb")?;
    veth(&a, "eth0", &b, "eth0")?;
    a.ip(&["addr", "add", "198.51.100.10/24", "dev", "eth0"])?;
    for ip in ["198.51.100.2", "198.51.100.3"] {
        a.ip(&[
            "neigh",
            "replace",
            ip,
            "lladdr",
            "02:00:00:00:00:99",
            "dev",
            "eth0",
            "nud",
            "permanent",
        ])?;
    }
    Ok((a, b))
}

fn tickle_segments(n: usize) -> Vec<TcpSegment> {
    let server: SocketAddr = "198.51.100.10:445".parse().expect("literal");
    (0..n)
        .map(|i| {
            let host = if i % 2 == 0 {
                [198, 51, 100, 2]
            } else {
                [198, 51, 100, 3]
            };
            let port = u16::try_from(1024 + (i / 2) % 60_000).expect("below 65536");
            TcpSegment::tickle(server, SocketAddr::from((host, port)))
        })
        .collect()
}

/// The baseline: one raw socket, prebuilt packets, one `sendto` each.
fn raw_loop(segs: &[TcpSegment]) -> Result<f64> {
    let mut packets = Vec::with_capacity(segs.len());
    for s in segs {
        let mut b = [0u8; 40];
        s.build(&mut b)?;
        packets.push(b);
    }
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe {
        nix::libc::socket(
            nix::libc::AF_INET,
            nix::libc::SOCK_RAW,
            nix::libc::IPPROTO_RAW,
        )
    };
    if fd < 0 {
        bail!("raw socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd is fresh and owned by nothing else.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let start = Instant::now();
    for (p, s) in packets.iter().zip(segs) {
        let std::net::IpAddr::V4(dst) = s.dst.ip() else {
            bail!("IPv4 only")
        };
        // SAFETY: sockaddr_in is plain old data; all-zero is valid.
        let mut sin: nix::libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sin.sin_family = nix::libc::sa_family_t::try_from(nix::libc::AF_INET)?;
        sin.sin_addr.s_addr = u32::from_ne_bytes(dst.octets());
        let len = nix::libc::socklen_t::try_from(std::mem::size_of::<nix::libc::sockaddr_in>())?;
        // SAFETY: p and sin are valid for the lengths given.
        let r = unsafe {
            nix::libc::sendto(
                fd.as_raw_fd(),
                p.as_ptr().cast(),
                p.len(),
                0,
                (&raw const sin).cast(),
                len,
            )
        };
        if r < 0 {
            bail!("sendto: {}", std::io::Error::last_os_error());
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

fn tickles(reps: usize) -> Result<()> {
    const N: usize = 100_000;
    let (a, _b) = tickle_setup()?;
    let mut ours = Vec::new();
    let mut base = Vec::new();
    for _ in 0..reps {
        let t = a.block_on(|| async {
            let segs = tickle_segments(N);
            let sender = SegmentSender::open()?;
            let start = Instant::now();
            let stats = sender.send(&segs).await?;
            let t = start.elapsed().as_secs_f64();
            if stats.sent != N {
                bail!("sent {} of {N} ({} failed)", stats.sent, stats.failed);
            }
            Ok(t)
        })??;
        ours.push(N as f64 / t);
        let t = a.run(|| raw_loop(&tickle_segments(N)))??;
        base.push(N as f64 / t);
    }
    Figure::with_baseline(
        BENCH,
        "tickle_rate_100k",
        median(ours),
        "pkt/s",
        median(base),
    )
    .print();
    Ok(())
}

fn killtcp() -> Result<()> {
    const N: usize = 1000;
    let a = NetNs::new("bka")?;
    let c = NetNs::new("bkc")?;
    veth(&a, "eth0", &c, "eth0")?;
    a.ip(&["addr", "add", "192.0.2.10/24", "dev", "eth0"])?;
    c.ip(&["addr", "add", "192.0.2.1/24", "dev", "eth0"])?;
    let server: SocketAddr = "192.0.2.10:4450".parse()?;
    let listener = a.run(move || TcpListener::bind(server))??;
    let acceptor = std::thread::spawn(move || -> Result<Vec<TcpStream>> {
        (0..N).map(|_| Ok(listener.accept()?.0)).collect()
    });
    let clients: Vec<TcpStream> = c.run(move || {
        (0..N)
            .map(|_| TcpStream::connect_timeout(&server, Duration::from_secs(5)))
            .collect::<std::io::Result<Vec<_>>>()
    })??;
    let servers = acceptor
        .join()
        .map_err(|_| anyhow::anyhow!("acceptor panicked"))??;
    let conns: Vec<Connection> = clients
        .iter()
        .map(|s| {
            Ok(Connection {
                local: server,
                remote: s.local_addr()?,
            })
        })
        .collect::<Result<_>>()?;
    for s in &clients {
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
    }
    // The watcher reads every client in turn: a read returns as soon as its
    // reset has arrived, so the last return is when all have seen theirs.
    let start = Instant::now();
    let watcher = std::thread::spawn(move || -> Result<(Duration, usize)> {
        let mut reset = 0;
        let mut buf = [0u8; 8];
        for mut s in clients {
            match s.read(&mut buf) {
                Err(e) if e.kind() == ErrorKind::ConnectionReset => reset += 1,
                _ => {}
            }
        }
        Ok((start.elapsed(), reset))
    });
    let report =
        a.block_on(move || async move { KillTcp::new("eth0").execute(&conns).await })??;
    let kill_time = start.elapsed();
    let (all_seen, reset) = watcher
        .join()
        .map_err(|_| anyhow::anyhow!("watcher panicked"))??;
    drop(servers);
    eprintln!(
        "killtcp: {} killed, {} remaining in {:?}; {reset}/{N} clients saw a reset",
        report.killed.len(),
        report.remaining.len(),
        kill_time
    );
    if reset != N {
        bail!("only {reset} of {N} clients saw their reset");
    }
    Figure::plain(BENCH, "killtcp_1000", all_seen.as_secs_f64() * 1e3, "ms").print();
    Ok(())
}
