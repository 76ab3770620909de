//! `bench conntrack [--conns N] [--addrs A] [--no-net|--net-only|--join-only]
//! [--rate R] [--secs S]`: conntrackd's table, in memory, and
//! over the transport (`--rate`, `--secs`: the latency run there).
//!
//! Figures, each beside a baseline measured in the same run, a plain
//! `std::collections::HashSet<(SocketAddr, SocketAddr)>` (client, public)
//! with std's hasher:
//!
//! * `bytes_per_conn_v4` / `_v6`: live heap bytes (counting global allocator
//!   of the bench binary) per connection with N connections over A public
//!   addresses, one reporter;
//! * `insert_rate` / `remove_rate`: in-order replicated deltas applied one by
//!   one (`Table::apply_delta`), IPv4;
//! * `join_total_ms`: bring a joining node up to date with N connections:
//!   `Table::snapshot` + postcard encode + decode + `Table::apply` on an empty
//!   table (baseline: the same pairs encoded in 2,000-pair chunks, decoded,
//!   inserted in the HashSet), with the phases as plain figures;
//! * `lookup_one_address_us`: the connections of one address;
//! * `pipeline_batch_p50_us` / `_p99_us`, `pipeline_rate`: the in-process
//!   part of "handshake to entry on another node": a batch of 100 conntrack
//!   events (10 ms at 10,000 new connections/s) through `Engine::on_event`,
//!   `Engine::poll`, postcard encode and decode, and `Engine::on_peer` on a
//!   second engine (the transport's latency adds to this);
//! * `net_*` (over the transport, real processes; skipped with `--no-net`,
//!   alone with `--net-only`): see [`net`];
//! * `dump_diff_ms`: a sock_diag dump of N connections on one address
//!   compared with the node's view (`Engine::on_dump`, one connection
//!   changed), against building a std `HashSet` of the dump and taking the
//!   symmetric difference with the previous one.

use std::collections::HashSet;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::bail;
use conntrackd::engine::{Config, Engine, Out};
use conntrackd::msg::{decode, encode, Msg, OpKind, SyncChunk};
use conntrackd::table::{Conn, Table, Version};

use crate::bench::{percentile, Figure};

const BENCH: &str = "conntrack";
const NOW: Duration = Duration::from_secs(1);
const GRACE: Duration = Duration::from_secs(60);
const PUBLIC_PORT: u16 = 445;

pub(super) struct Opts {
    pub(super) conns: usize,
    pub(super) addrs: usize,
    /// Run the daemons over the transport (needs root and release binaries).
    pub(super) net: bool,
    /// Only the transport figures (and the in-memory join as their
    /// baseline).
    pub(super) net_only: bool,
    /// New connections per second of the latency run.
    pub(super) rate: usize,
    /// Seconds of the latency run.
    pub(super) secs: f64,
    /// Stop after the join (no latency run).
    pub(super) join_only: bool,
}

/// `bench conntrack` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ConntrackArgs {
    /// Connections (tables, join, dump).
    #[arg(long, default_value_t = 1_000_000, value_parser = super::count_in(1..=u64::MAX))]
    pub conns: usize,
    /// Public addresses the connections are spread over.
    #[arg(long, default_value_t = 16, value_parser = super::count_in(1..=250))]
    pub addrs: usize,
    /// Skip the figures over the transport (real processes, root, release
    /// binaries).
    #[arg(long = "no-net")]
    pub no_net: bool,
    /// Only the figures over the transport (and the in-memory join as
    /// their baseline).
    #[arg(long = "net-only")]
    pub net_only: bool,
    /// As `--net-only`, and stop after the join (no latency run).
    #[arg(long = "join-only")]
    pub join_only: bool,
    /// New connections per second of the latency run over the transport.
    #[arg(long, default_value_t = 10_000, value_parser = super::count_in(1..=100_000))]
    pub rate: usize,
    /// Seconds of the latency run over the transport, in (0, 10].
    #[arg(long, default_value_t = 2.0, value_parser = super::float_in(0.0, true, 10.0))]
    pub secs: f64,
}

impl From<&ConntrackArgs> for Opts {
    fn from(a: &ConntrackArgs) -> Self {
        Opts {
            conns: a.conns,
            addrs: a.addrs,
            net: !a.no_net,
            net_only: a.net_only || a.join_only,
            rate: a.rate,
            secs: a.secs,
            join_only: a.join_only,
        }
    }
}

fn public(v6: bool, a: usize) -> IpAddr {
    let a = u8::try_from(a + 1).unwrap_or(u8::MAX);
    if v6 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(a)))
    } else {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, a))
    }
}

/// The `j`-th client of an address: 512 hosts (198.51.100.0/24 and
/// 203.0.113.0/24, or 2001:db8:1::/112) times ports from 1024.
fn client(v6: bool, j: usize) -> SocketAddr {
    let host = j % 512;
    let port = u16::try_from(1024 + j / 512).unwrap_or(u16::MAX);
    let low = u8::try_from(host % 256).unwrap_or(0);
    let ip = if v6 {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            1,
            0,
            0,
            0,
            0,
            u16::try_from(host).unwrap_or(0),
        ))
    } else if host < 256 {
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, low))
    } else {
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, low))
    };
    SocketAddr::new(ip, port)
}

/// Connection `i`: address `i % addrs`, client `i / addrs`.
fn conn(v6: bool, addrs: usize, i: usize) -> (IpAddr, Conn) {
    (
        public(v6, i % addrs),
        Conn::new(client(v6, i / addrs), PUBLIC_PORT),
    )
}

/// The in-order version of connection `i`'s add (after a sync at 1) and of
/// its remove.
fn version(addrs: usize, conns: usize, i: usize, remove: bool) -> Version {
    let per = conns.div_ceil(addrs);
    let seq = 2 + i / addrs + if remove { per } else { 0 };
    Version::new(1, u64::try_from(seq).unwrap_or(u64::MAX))
}

fn empty_syncs(t: &mut Table, v6: bool, addrs: usize) -> anyhow::Result<()> {
    for a in 0..addrs {
        let chunk = SyncChunk {
            reporter: 0,
            address: public(v6, a),
            version: Version::new(1, 1),
            index: 0,
            total: 1,
            conns: Vec::new(),
        };
        t.apply_sync(&chunk, NOW)?;
    }
    Ok(())
}

fn fill(t: &mut Table, v6: bool, o: &Opts) -> anyhow::Result<()> {
    empty_syncs(t, v6, o.addrs)?;
    for i in 0..o.conns {
        let (address, c) = conn(v6, o.addrs, i);
        t.apply_delta(
            0,
            address,
            version(o.addrs, o.conns, i, false),
            OpKind::Add,
            c,
            NOW,
        )?;
    }
    Ok(())
}

fn baseline_pairs(v6: bool, o: &Opts) -> impl Iterator<Item = (SocketAddr, SocketAddr)> {
    let addrs = o.addrs;
    (0..o.conns).map(move |i| {
        let (address, c) = conn(v6, addrs, i);
        (c.client, SocketAddr::new(address, PUBLIC_PORT))
    })
}

/// Resident set size in bytes, from /proc/self/statm (for the summary).
fn rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn per_conn(bytes: usize, n: usize) -> f64 {
    // Precision loss above 2^53 bytes is irrelevant here.
    #[allow(clippy::cast_precision_loss)]
    let r = bytes as f64 / n as f64;
    r
}

#[allow(clippy::cast_precision_loss)]
fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn memory(o: &Opts, v6: bool) -> anyhow::Result<()> {
    let fam = if v6 { "v6" } else { "v4" };
    let before = alloccount::live_bytes();
    let rss0 = rss();
    let mut t = Table::new(GRACE);
    fill(&mut t, v6, o)?;
    let table_bytes = alloccount::live_bytes().saturating_sub(before);
    let rss1 = rss();
    if t.len() != o.conns {
        bail!("table holds {} connections, expected {}", t.len(), o.conns);
    }
    drop(t);
    let before = alloccount::live_bytes();
    let set: HashSet<(SocketAddr, SocketAddr)> = baseline_pairs(v6, o).collect();
    let base_bytes = alloccount::live_bytes().saturating_sub(before);
    black_box(&set);
    drop(set);
    Figure::with_baseline(
        BENCH,
        &format!("bytes_per_conn_{fam}"),
        per_conn(table_bytes, o.conns),
        "B",
        per_conn(base_bytes, o.conns),
    )
    .print();
    if let (Some(a), Some(b)) = (rss0, rss1) {
        eprintln!(
            "{:>10} ({fam}: table {} conns, {} heap bytes, RSS grew {} bytes)",
            BENCH,
            o.conns,
            table_bytes,
            b.saturating_sub(a)
        );
    }
    Ok(())
}

fn rates(o: &Opts) -> anyhow::Result<()> {
    let mut t = Table::new(GRACE);
    empty_syncs(&mut t, false, o.addrs)?;
    let ops: Vec<(IpAddr, Conn)> = (0..o.conns).map(|i| conn(false, o.addrs, i)).collect();
    let start = Instant::now();
    for (i, (address, c)) in ops.iter().enumerate() {
        t.apply_delta(
            0,
            *address,
            version(o.addrs, o.conns, i, false),
            OpKind::Add,
            *c,
            NOW,
        )?;
    }
    let insert = start.elapsed();
    let start = Instant::now();
    let probe = public(false, 0);
    let listed = black_box(t.connections(probe)).len();
    let lookup = start.elapsed();
    let start = Instant::now();
    for (i, (address, c)) in ops.iter().enumerate() {
        t.apply_delta(
            0,
            *address,
            version(o.addrs, o.conns, i, true),
            OpKind::Remove,
            *c,
            NOW,
        )?;
    }
    let remove = start.elapsed();
    if !t.is_empty() {
        bail!("{} connections left after removing all", t.len());
    }
    drop(t);

    let pairs: Vec<(SocketAddr, SocketAddr)> = baseline_pairs(false, o).collect();
    let mut set = HashSet::new();
    let start = Instant::now();
    for p in &pairs {
        set.insert(*p);
    }
    let base_insert = start.elapsed();
    let start = Instant::now();
    let base_listed = set.iter().filter(|(_, p)| p.ip() == probe).count();
    let base_lookup = start.elapsed();
    let start = Instant::now();
    for p in &pairs {
        set.remove(p);
    }
    let base_remove = start.elapsed();
    if listed != base_listed {
        bail!("table lists {listed} connections of {probe}, the HashSet {base_listed}");
    }
    Figure::with_baseline(
        BENCH,
        "insert_rate",
        rate(o.conns, insert),
        "conn/s",
        rate(o.conns, base_insert),
    )
    .print();
    Figure::with_baseline(
        BENCH,
        "remove_rate",
        rate(o.conns, remove),
        "conn/s",
        rate(o.conns, base_remove),
    )
    .print();
    Figure::with_baseline(
        BENCH,
        "lookup_one_address_us",
        lookup.as_secs_f64() * 1e6,
        "us",
        base_lookup.as_secs_f64() * 1e6,
    )
    .print();
    Ok(())
}

fn join(o: &Opts) -> anyhow::Result<Duration> {
    let mut m = Table::new(GRACE);
    fill(&mut m, false, o)?;
    let start = Instant::now();
    let snap = m.snapshot(usize::MAX);
    let t_snap = start.elapsed();
    let n_msgs = snap.len();
    let start = Instant::now();
    let wire: Vec<Vec<u8>> = snap.iter().map(encode).collect::<Result<_, _>>()?;
    let t_encode = start.elapsed();
    drop(snap);
    let bytes: usize = wire.iter().map(Vec::len).sum();
    let start = Instant::now();
    let msgs: Vec<Msg> = wire.iter().map(|b| decode(b)).collect::<Result<_, _>>()?;
    let t_decode = start.elapsed();
    let mut j = Table::new(GRACE);
    let start = Instant::now();
    for msg in &msgs {
        j.apply(msg, NOW)?;
    }
    let t_apply = start.elapsed();
    if j.len() != m.len() {
        bail!(
            "joiner holds {} connections, the source {}",
            j.len(),
            m.len()
        );
    }
    let total = t_snap + t_encode + t_decode + t_apply;
    drop((m, j, msgs));

    // Baseline: the naive way, pairs in chunks into a HashSet.
    let pairs: Vec<(SocketAddr, SocketAddr)> = baseline_pairs(false, o).collect();
    let start = Instant::now();
    let wire: Vec<Vec<u8>> = pairs.chunks(2000).map(encode).collect::<Result<_, _>>()?;
    let mut set: HashSet<(SocketAddr, SocketAddr)> = HashSet::new();
    for b in &wire {
        let chunk: Vec<(SocketAddr, SocketAddr)> = decode(b)?;
        set.extend(chunk);
    }
    let base = start.elapsed();
    let base_bytes: usize = wire.iter().map(Vec::len).sum();
    if set.len() != o.conns {
        bail!("baseline holds {} pairs", set.len());
    }

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Figure::with_baseline(BENCH, "join_total_ms", ms(total), "ms", ms(base)).print();
    Figure::plain(BENCH, "join_snapshot_ms", ms(t_snap), "ms").print();
    Figure::plain(BENCH, "join_encode_ms", ms(t_encode), "ms").print();
    Figure::plain(BENCH, "join_decode_ms", ms(t_decode), "ms").print();
    Figure::plain(BENCH, "join_apply_ms", ms(t_apply), "ms").print();
    #[allow(clippy::cast_precision_loss)]
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    Figure::with_baseline(BENCH, "join_wire_mib", mib(bytes), "MiB", mib(base_bytes)).print();
    #[allow(clippy::cast_precision_loss)]
    Figure::plain(BENCH, "join_messages", n_msgs as f64, "msg").print();
    Ok(total)
}

/// Carries `outs` of engine `a` to engine `b` through the wire format.
fn carry(outs: Vec<Out>, b: &mut Engine, now: Duration) -> anyhow::Result<()> {
    for o in outs {
        let (Out::Broadcast(m) | Out::To(_, m)) = o;
        let bytes = encode(&m)?;
        let back: Msg = decode(&bytes)?;
        b.on_peer(0, &back, now)?;
    }
    Ok(())
}

fn pipeline(o: &Opts) -> anyhow::Result<()> {
    const BATCH: usize = 100;
    let n = o.conns.min(200_000);
    let address = public(false, 0);
    let mut now = NOW;
    let mut a = Engine::new(0, 1, Config::default(), now);
    let mut b = Engine::new(1, 1, Config::default(), now);
    let hosts = [(address, Some(0))];
    a.set_hosts(&hosts, now);
    b.set_hosts(&hosts, now);
    let outs = a.on_dump(address, &[], now)?;
    carry(outs, &mut b, now)?;
    let mut samples = Vec::with_capacity(2 * n / BATCH + 2);
    let start = Instant::now();
    for kind in [OpKind::Add, OpKind::Remove] {
        for batch in 0..n.div_ceil(BATCH) {
            now += Duration::from_millis(10);
            let t = Instant::now();
            for i in batch * BATCH..((batch + 1) * BATCH).min(n) {
                let outs =
                    a.on_event(address, kind, Conn::new(client(false, i), PUBLIC_PORT), now)?;
                carry(outs, &mut b, now)?;
            }
            let outs = a.poll(now);
            carry(outs, &mut b, now)?;
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let want = if kind == OpKind::Add { n } else { 0 };
        if b.table().count(address) != want {
            bail!(
                "the second engine holds {} connections, expected {want}",
                b.table().count(address)
            );
        }
    }
    let total = start.elapsed();
    Figure::plain(
        BENCH,
        "pipeline_batch_p50_us",
        percentile(&mut samples, 50.0),
        "us",
    )
    .print();
    Figure::plain(
        BENCH,
        "pipeline_batch_p99_us",
        percentile(&mut samples, 99.0),
        "us",
    )
    .print();
    Figure::plain(BENCH, "pipeline_rate", rate(2 * n, total), "event/s").print();
    Ok(())
}

/// The periodic reconciliation: a dump of N connections on one address
/// compared with the node's view, one connection changed.
fn dump_diff(o: &Opts) -> anyhow::Result<()> {
    let address = public(false, 0);
    let now = NOW;
    let mut a = Engine::new(0, 1, Config::default(), now);
    a.set_hosts(&[(address, Some(0))], now);
    let mut conns: Vec<Conn> = (0..o.conns)
        .map(|i| Conn::new(client(false, i), PUBLIC_PORT))
        .collect();
    let first = a.on_dump(address, &conns, now)?;
    drop(first);
    conns[0] = Conn::new(client(false, o.conns), PUBLIC_PORT);
    let start = Instant::now();
    let outs = a.on_dump(address, &conns, now)?;
    let outs_len = outs.len() + a.poll(now).len();
    let t = start.elapsed();
    if a.table().count(address) != o.conns || outs_len != 1 {
        bail!(
            "dump diff: {} connections, {outs_len} messages",
            a.table().count(address)
        );
    }
    drop(a);

    // Baseline: the same comparison with two std HashSets of pairs.
    let pairs = |skip: usize| -> HashSet<(SocketAddr, SocketAddr)> {
        (skip..o.conns + skip)
            .map(|i| (client(false, i), SocketAddr::new(address, PUBLIC_PORT)))
            .collect()
    };
    let old = pairs(0);
    let start = Instant::now();
    let new = pairs(1);
    let changed = old.symmetric_difference(&new).count();
    let base = start.elapsed();
    if changed != 2 {
        bail!("baseline diff found {changed} changes");
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Figure::with_baseline(BENCH, "dump_diff_ms", ms(t), "ms", ms(base)).print();
    Ok(())
}

/// Runs the `conntrack` scenario.
///
/// # Errors
///
/// A table that does not hold what was put in (a bug).
pub fn run(args: &ConntrackArgs) -> anyhow::Result<()> {
    let o = Opts::from(args);
    if !alloccount::is_installed() {
        bail!("the counting allocator is not installed (run through the bench binary)");
    }
    eprintln!(
        "{:>10} {} connections over {} addresses, one reporter",
        BENCH, o.conns, o.addrs
    );
    if o.net_only {
        let base = join(&o)?;
        return net::run(&o, base);
    }
    memory(&o, false)?;
    memory(&o, true)?;
    rates(&o)?;
    let base = join(&o)?;
    pipeline(&o)?;
    dump_diff(&o)?;
    if o.net {
        net::run(&o, base)?;
    }
    Ok(())
}

/// The daemons over the real transport: two node namespaces on a bridged
/// LAN (tests::cluster::TestCluster), transportd and conntrackd processes
/// (release build, `cargo build --release --workspace --bins`).
///
/// * `net_register_rate`: connections registered on node 0 with
///   `ADD_CONNECTIONS` (batches of 50,000), until node 0 counts them all;
/// * `net_join_ms`: node 0 holds N connections; node 1's conntrackd is
///   started, and the time until node 1 counts all N is measured (process
///   start, connection to transportd, peer discovery, snapshot request, the
///   snapshot over the encrypted link, applying it). Baseline: the
///   in-memory join of the same run (`join_total_ms`);
/// * `net_latency_p50_ms` / `_p99_ms` / `_max_ms`: 16 client threads
///   open real TCP connections to node 0's public address at `--rate` per
///   second in all for `--secs`, each on a fixed schedule (connection k is
///   due at k/rate). Every connection stays established until the end of
///   the run (a closed connection now leaves the table at once, which
///   would hide arrivals in the count): the server never accepts (deep
///   accept queues) and the client's FIN is dropped in its own namespace;
///   conntrack NEW is the input. A
///   poller on node 1 asks its conntrackd for the count of that address
///   every millisecond. The k-th connection started counts as arrived when
///   node 1 holds k new connections; its latency is that moment minus the
///   moment just before its `connect()`. `net_latency_rate` is the rate
///   actually achieved.
mod net {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
    use std::process::Stdio;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use anyhow::{bail, Context, Result};
    use transport::client::Client;
    use transport::msg::conntrack::{AddressCount, TrackedConnection, ADD_CONNECTIONS, GET_COUNTS};
    use transport::proto::service::CONNTRACKD;
    use transport::proto::Address;

    use super::{client, Opts, BENCH, PUBLIC_PORT};
    use crate::bench::{percentile, Figure};
    use crate::cluster::{bin_path, Node, TestCluster};
    use crate::netns::wait_for;

    const PUBLIC: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 50));
    const PUBLIC1: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 51));
    const LATENCY_PORT: u16 = 8080;
    const LATENCY_PORTS: u16 = 8;
    /// Threads of the load client: a blocking `connect()` waits a
    /// handshake (0.1-1 ms on this loaded machine); one thread reached
    /// 10,000/s in one run of five, four threads 9,070/s; each thread
    /// here owns every 16th connection of one schedule.
    const CLIENT_THREADS: usize = 16;

    /// A listener on `addr` whose accept queue holds `somaxconn`
    /// connections (set high in the node's namespace): the latency run never
    /// accepts, so that a connection stays established, without a file
    /// descriptor, until the listener closes.
    fn deep_listener(addr: SocketAddr) -> Result<TcpListener> {
        use nix::sys::socket::{
            bind, listen, setsockopt, socket, sockopt::ReuseAddr, AddressFamily, Backlog, SockFlag,
            SockType, SockaddrIn,
        };
        use std::os::fd::AsRawFd;
        let SocketAddr::V4(v4) = addr else {
            bail!("the latency run listens on IPv4 only, not {addr}");
        };
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        setsockopt(&fd, ReuseAddr, &true)?;
        bind(fd.as_raw_fd(), &SockaddrIn::from(v4))?;
        listen(&fd, Backlog::MAXALLOWABLE)?;
        Ok(TcpListener::from(fd))
    }

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1e3
    }

    fn spawn(node: &Node, bin: &str, args: &[&str]) -> Result<u32> {
        let log = std::fs::File::create(node.run_dir.join(format!("{bin}.log")))?;
        let path = bin_path(bin)?;
        let mut cmd = node.ns.command(path.to_str().context("binary path")?);
        cmd.args(args).stdout(Stdio::null()).stderr(log);
        node.spawn(cmd)
    }

    fn socket(node: &Node) -> std::path::PathBuf {
        node.run_dir.join("transport.sock")
    }

    async fn connect(node: &Node) -> Result<Client> {
        let start = Instant::now();
        loop {
            if let Ok((c, _)) = Client::connect_unix(socket(node), "bench").await {
                return Ok(c);
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!("cannot connect to transportd of node {}", node.pnn);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn count(c: &Client, address: IpAddr) -> Option<u64> {
        let counts: Vec<AddressCount> = c
            .request(
                Address::local(CONNTRACKD),
                GET_COUNTS,
                &(),
                Duration::from_secs(5),
            )
            .await
            .ok()?;
        Some(
            counts
                .iter()
                .find(|a| a.address == address)
                .map_or(0, |a| a.connections),
        )
    }

    pub(super) fn run(o: &Opts, join_base: Duration) -> Result<()> {
        if !nix::unistd::geteuid().is_root() {
            bail!("the transport figures need root (network namespaces); use --no-net");
        }
        let c = TestCluster::new("bct", 2)?;
        let mut transportds = Vec::new();
        for (i, node) in c.nodes.iter().enumerate() {
            let public = if i == 0 { PUBLIC } else { PUBLIC1 };
            node.ns
                .ip(&["addr", "add", &format!("{public}/24"), "dev", "eth0"])?;
            std::fs::write(
                node.config_dir.join("ipfailover.toml"),
                format!(
                    "[transport]\nrun_dir = \"{}\"\n\n[conntrack]\nscan_interval_ms = 3600000\n\
                     sync_interval_ms = 60000\ngrace_period_ms = 3600000\n\
                     max_connections = {}\n\n\
                     [logging]\nlevel = \"info,conntrackd=debug\"\n",
                    node.run_dir.display(),
                    // The default (4,000,000) would refuse a larger join.
                    (2 * o.conns).max(4_000_000)
                ),
            )?;
            let nodes = node.config_dir.join("nodes");
            let key = node.config_dir.join("cluster.key");
            let run_dir = node.run_dir.display().to_string();
            transportds.push(spawn(
                node,
                "transportd",
                &[
                    "--run-dir",
                    &run_dir,
                    "--nodes",
                    nodes.to_str().context("path")?,
                    "--key",
                    key.to_str().context("path")?,
                    "--log-level",
                    "warn",
                ],
            )?);
        }
        for node in &c.nodes {
            let s = socket(node);
            wait_for(
                "transportd socket",
                Duration::from_secs(10),
                Duration::from_millis(20),
                || s.exists().then_some(()),
            )?;
        }
        let config0 = c.nodes[0].config_dir.display().to_string();
        let config1 = c.nodes[1].config_dir.display().to_string();
        let conntrackd0 = spawn(
            &c.nodes[0],
            "conntrackd",
            &["--config-dir", &config0, "--host", &PUBLIC.to_string()],
        )?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let n = o.conns;
        let n64 = u64::try_from(n)?;

        // Register N connections on node 0.
        let node0 = &c.nodes[0];
        let t_register = rt.block_on(async {
            let cl = connect(node0).await?;
            wait_until(|| async { count(&cl, PUBLIC).await }, |v| v.is_some(), 10).await?;
            let start = Instant::now();
            let mut j = 0;
            while j < n {
                let end = (j + 50_000).min(n);
                let batch: Vec<TrackedConnection> = (j..end)
                    .map(|k| TrackedConnection {
                        client: client(false, k),
                        server: SocketAddr::new(PUBLIC, PUBLIC_PORT),
                    })
                    .collect();
                let () = cl
                    .request(
                        Address::local(CONNTRACKD),
                        ADD_CONNECTIONS,
                        &batch,
                        Duration::from_secs(60),
                    )
                    .await
                    .context("registering connections on node 0")?;
                j = end;
            }
            wait_until(
                || async { count(&cl, PUBLIC).await },
                |v| *v == Some(n64),
                60,
            )
            .await?;
            anyhow::Ok(start.elapsed())
        })?;
        #[allow(clippy::cast_precision_loss)]
        let reg_rate = n as f64 / t_register.as_secs_f64();
        Figure::plain(BENCH, "net_register_rate", reg_rate, "conn/s").print();

        // Start node 1 and time until it holds them all.
        let node1 = &c.nodes[1];
        let start = Instant::now();
        let conntrackd1 = spawn(
            node1,
            "conntrackd",
            &["--config-dir", &config1, "--host", &PUBLIC1.to_string()],
        )?;
        let t_join = rt.block_on(async {
            let cl = connect(node1).await?;
            wait_until(
                || async { count(&cl, PUBLIC).await },
                |v| *v == Some(n64),
                120,
            )
            .await?;
            anyhow::Ok(start.elapsed())
        });
        let t_join = match t_join {
            Ok(t) => t,
            Err(e) => {
                let log = std::fs::read_to_string(node1.run_dir.join("conntrackd.log"))
                    .unwrap_or_default();
                bail!("{e}; node 1 log:\n{log}");
            }
        };
        Figure::with_baseline(BENCH, "net_join_ms", ms(t_join), "ms", ms(join_base)).print();
        // Peak memory of each process of the join (VmHWM).
        for (name, pid) in [
            ("net_join_peak_conntrackd0_mib", conntrackd0),
            ("net_join_peak_conntrackd1_mib", conntrackd1),
            ("net_join_peak_transportd0_mib", transportds[0]),
            ("net_join_peak_transportd1_mib", transportds[1]),
        ] {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .with_context(|| format!("{name}: process {pid}"))?;
            let kib: f64 = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("{name}: no VmHWM in /proc/{pid}/status"))?;
            Figure::plain(BENCH, name, kib / 1024.0, "MiB").print();
        }
        if o.join_only {
            return Ok(());
        }

        latency(o, &c, n64)
    }

    /// Polls `f` every 5 ms until `ok`, for at most `secs`.
    async fn wait_until<F, Fut, T>(f: F, ok: impl Fn(&T) -> bool, secs: u64) -> Result<()>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = T>,
        T: std::fmt::Debug,
    {
        let start = Instant::now();
        loop {
            let v = f().await;
            if ok(&v) {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(secs) {
                bail!("timed out after {secs} s (last: {v:?})");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn latency(o: &Opts, c: &TestCluster, base: u64) -> Result<()> {
        // Several ports, so that the client's port range is not exhausted.
        let targets: Vec<SocketAddr> = (0..LATENCY_PORTS)
            .map(|i| SocketAddr::new(PUBLIC, LATENCY_PORT + i))
            .collect();
        // Every connection of the run stays established until the end
        // (a closed one now leaves the table at once, which would hide
        // arrivals in the count), without a file descriptor on either side:
        // the server never accepts (deep accept queues), and the client
        // closes at once but its FIN (or RST) never leaves its namespace.
        c.nodes[0]
            .ns
            .exec_ok("sysctl", &["-qw", "net.core.somaxconn=65535"])?;
        c.client.exec_ok(
            "nft",
            &[&format!(
                "add table inet bench_hold; \
                 add chain inet bench_hold out {{ type filter hook output priority 0; }}; \
                 add rule inet bench_hold out ip daddr {PUBLIC} tcp flags & (fin | rst) != 0 drop"
            )],
        )?;
        let mut listeners = Vec::new();
        for t in &targets {
            let t = *t;
            listeners.push(c.nodes[0].ns.run(move || deep_listener(t))??);
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        // rate <= 100,000 and secs <= 10: at most 1,000,000.
        let total = (o.rate as f64 * o.secs) as usize;
        let rate = o.rate;
        if total > 8 * 65_535 {
            bail!("{total} connections exceed the accept queues of the latency run");
        }
        // Poller on node 1.
        let sock1 = socket(&c.nodes[1]);
        let done = Arc::new(AtomicBool::new(false));
        let done2 = done.clone();
        let poller = std::thread::spawn(move || -> Result<Vec<(Instant, u64)>> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let (cl, _) = Client::connect_unix(&sock1, "bench-poll").await?;
                let mut samples = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(60);
                while Instant::now() < deadline {
                    if let Some(v) = count(&cl, PUBLIC).await {
                        let got = v.saturating_sub(base);
                        samples.push((Instant::now(), got));
                        if done2.load(Ordering::Relaxed)
                            && got >= u64::try_from(total).unwrap_or(u64::MAX)
                        {
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                anyhow::Ok(samples)
            })
        });
        // The load: CLIENT_THREADS threads in the client namespace, thread j
        // opening connections j, j + T, j + 2T, ... each at its due time.
        let start = Instant::now() + Duration::from_millis(20);
        let client_ns = &c.client;
        let runs: Vec<Result<Vec<Instant>>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..CLIENT_THREADS)
                .map(|j| {
                    let targets = targets.clone();
                    s.spawn(move || {
                        client_ns.run(move || -> Result<Vec<Instant>> {
                            let mut t0 = Vec::with_capacity(total / CLIENT_THREADS + 1);
                            for k in (j..total).step_by(CLIENT_THREADS) {
                                #[allow(clippy::cast_precision_loss)]
                                let due = start + Duration::from_secs_f64(k as f64 / rate as f64);
                                let now = Instant::now();
                                if due > now {
                                    std::thread::sleep(due - now);
                                }
                                t0.push(Instant::now());
                                let target = targets[k % targets.len()];
                                // Closed at once; its FIN is dropped.
                                drop(TcpStream::connect_timeout(&target, Duration::from_secs(5))?);
                            }
                            Ok(t0)
                        })?
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("a client thread panicked"))?
                })
                .collect()
        });
        done.store(true, Ordering::Relaxed);
        let samples = poller
            .join()
            .map_err(|_| anyhow::anyhow!("poller panicked"))??;
        let mut started = Vec::with_capacity(total);
        for r in runs {
            started.extend(r?);
        }
        started.sort_unstable();
        drop(listeners);
        let overruns = std::fs::read_to_string(c.nodes[0].run_dir.join("conntrackd.log"))
            .unwrap_or_default()
            .matches("conntrack events lost")
            .count();
        eprintln!(
            "latency run: {} connections opened by {CLIENT_THREADS} threads; \
             node 0 saw {overruns} event overruns",
            started.len()
        );
        let (Some(first), Some(last)) = (started.first(), started.last()) else {
            bail!("no connection made");
        };
        #[allow(clippy::cast_precision_loss)]
        let achieved = started.len() as f64 / last.duration_since(*first).as_secs_f64().max(1e-9);
        let mut lat = Vec::with_capacity(started.len());
        let mut s = 0;
        let mut missing = 0usize;
        for (k, t0) in started.iter().enumerate() {
            let want = u64::try_from(k + 1)?;
            while s < samples.len() && samples[s].1 < want {
                s += 1;
            }
            match samples.get(s) {
                Some((t, _)) => lat.push(ms(t.saturating_duration_since(*t0))),
                None => missing += 1,
            }
        }
        if missing > 0 {
            // Is node 0's conntrackd still answering, and what does it hold?
            let sock0 = socket(&c.nodes[0]);
            let node0_count = c.nodes[0].ns.block_on(move || async move {
                let (cl, _) = Client::connect_unix(&sock0, "bench-diag").await.ok()?;
                count(&cl, PUBLIC).await
            });
            eprintln!(
                "node 0 holds {:?} connections of the address (base {base})",
                node0_count
            );
            for node in &c.nodes {
                for daemon in ["conntrackd", "transportd"] {
                    let log = std::fs::read_to_string(node.run_dir.join(format!("{daemon}.log")))
                        .unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(30).collect();
                    eprintln!(
                        "node {} {daemon} log (last lines, newest first):\n{}",
                        node.pnn,
                        tail.join("\n")
                    );
                }
            }
            bail!(
                "{missing} of {} connections never reached node 1 (last count {:?}, highest {:?}, \
                 {} samples, the last {:?} after the first connection)",
                started.len(),
                samples.last().map(|x| x.1),
                samples.iter().map(|x| x.1).max(),
                samples.len(),
                samples
                    .last()
                    .map(|x| x.0.saturating_duration_since(*first))
            );
        }
        let max = lat.iter().copied().fold(0.0, f64::max);
        Figure::plain(BENCH, "net_latency_rate", achieved, "conn/s").print();
        Figure::plain(
            BENCH,
            "net_latency_p50_ms",
            percentile(&mut lat, 50.0),
            "ms",
        )
        .print();
        Figure::plain(
            BENCH,
            "net_latency_p99_ms",
            percentile(&mut lat, 99.0),
            "ms",
        )
        .print();
        Figure::plain(BENCH, "net_latency_max_ms", max, "ms").print();
        Ok(())
    }
}
