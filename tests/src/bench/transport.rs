//! `bench transport`: transportd against raw sockets, measured in one run.
//!
//! * `rtt_p50` / `rtt_p99`: request/reply round trip between two processes
//!   through transportd (client -> transportd -> echo service -> transportd
//!   -> client), beside a raw Unix-socket ping-pong between two processes.
//! * `throughput_64b`: pipelined 64-byte messages from one process to
//!   another through transportd, beside the same over a raw Unix socket
//!   (windowed: the receiver acknowledges every 1000 messages).
//! * `allocs_per_msg`: heap allocations in the transportd process per routed
//!   message during the throughput run (its counting allocator, read through
//!   STATISTICS; the cost of the STATISTICS request itself is subtracted).
//! * `link_rtt_p50`, `link_throughput_64b`, `link_throughput_16k`: the same
//!   between two transportd processes over their encrypted TCP link (on
//!   loopback addresses 127.0.0.1/127.0.0.2 of a private network namespace),
//!   beside plain TCP between two processes on the same addresses.
//!
//! Endpoints speak frames directly over blocking sockets (no async client
//! library), so the figures measure transportd, not the client library.
//! Child processes are this same binary re-run as `bench transport --role
//! echo|sink` with hidden options ([`TransportArgs`]). Figures are
//! taken over 3 alternating rounds (raw, routed, raw, routed...): round-trip
//! percentiles over all samples, throughput as the median round.
//!
//! The echo service registers under an ephemeral name (`bench-echo`), not as
//! a daemon: requests of a non-daemon client to the daemons' ids are
//! budgeted (2000/s after a burst of 512, docs/SECURITY.md "Floods"), which
//! a benchmark of thousands of round trips per second would hit.
//!
//! Options: `--quick` (fewer iterations), `--rounds N` (default 3),
//! `--only LIST` (comma-separated: `rtt`, `tput`, `link-rtt`, `link-tput`,
//! `link-16k`; the others are skipped and print no figure: for profiling one
//! path at a time), `--repeat N` (run the selected measurements N times
//! more after the figures, without baselines: a steady load to attach a
//! profiler to), `--crypto-only` (only `seal_mb_s`: no processes, no root).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use transport::proto::control::{RegisterReply, RegisterRequest, Statistics, REGISTER, STATISTICS};
use transport::proto::service::{CONNTRACKD, TRANSPORT};
use transport::proto::{
    check, decode_payload, encode_frame, encode_payload, Address, Check, Header, HeaderRepr, Kind,
    LOCAL,
};

use super::{percentile, Figure};
use crate::netns::{wait_for, NetNs};

const BENCH: &str = "transport";
const DATA: u32 = 0x0001_00F0;
const ACK: u32 = 0x0001_00F1;
/// Bytes per acknowledged burst: a burst is `burst_len(frame)` frames.
const BURST_BYTES: usize = 128 * 1024;
/// How long any single read of a measurement may block.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Frames per burst for frames of `frame_len` bytes (both ends compute it
/// from the frame length, so the receiver knows when to acknowledge).
fn burst_len(frame_len: usize) -> usize {
    (BURST_BYTES / frame_len.max(1)).max(1)
}
const WINDOW: usize = 8;
/// Alternating measurement rounds by default (a shared machine is noisy).
const ROUNDS: usize = 3;
/// The paths `--only` can select.
const PATHS: &[&str] = &["rtt", "tput", "link-rtt", "link-tput", "link-16k"];

/// `bench transport` options. `--role` and the options after it are the
/// hidden command line of the child processes this bench starts (this same
/// binary, re-run).
#[derive(Debug, Clone, clap::Args)]
pub struct TransportArgs {
    /// Fewer iterations (2,000 round trips, 100,000 messages).
    #[arg(long)]
    pub quick: bool,
    /// Alternating measurement rounds (at least 1).
    #[arg(long, default_value_t = ROUNDS, value_parser = super::count_in(1..=u64::MAX))]
    pub rounds: usize,
    /// Only these paths, comma-separated (the others are skipped and print
    /// no figure: for profiling one path at a time).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = PATHS.to_vec())]
    pub only: Vec<String>,
    /// Run the selected measurements N times more after the figures, without
    /// baselines: a steady load to attach a profiler to.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub repeat: usize,
    /// Only the seal (encryption) speed figure; no processes, no root.
    #[arg(long = "crypto-only")]
    pub crypto_only: bool,
    /// Child process: `echo` answers every frame, `sink` acknowledges every
    /// burst.
    #[arg(long, hide = true, value_parser = ["echo", "sink"])]
    pub role: Option<String>,
    /// Child process: serve a Unix socket at PATH.
    #[arg(long = "unix-listen", hide = true, requires = "role")]
    pub unix_listen: Option<PathBuf>,
    /// Child process: serve TCP at ADDR.
    #[arg(long = "tcp-listen", hide = true, requires = "role")]
    pub tcp_listen: Option<SocketAddr>,
    /// Child process: register with the transportd of SOCKET...
    #[arg(long, hide = true, requires = "role")]
    pub transportd: Option<PathBuf>,
    /// ... under NAME.
    #[arg(long, hide = true, requires = "transportd")]
    pub name: Option<String>,
    /// Child process: write the service id into PATH once ready.
    #[arg(long, hide = true, requires = "role")]
    pub ready: Option<PathBuf>,
}

/// Runs the scenario, or a child role.
///
/// # Errors
/// When a process cannot be started or a measurement fails.
pub fn run(args: &TransportArgs) -> Result<()> {
    if let Some(kind) = &args.role {
        return role(kind, args);
    }
    let quick = args.quick;
    let rounds = args.rounds;
    let repeat = args.repeat;
    let only: Vec<&str> = if args.only.is_empty() {
        PATHS.to_vec()
    } else {
        args.only.iter().map(String::as_str).collect()
    };
    let on = |p: &str| only.contains(&p);
    let seal_rate = seal_speed()?;
    if args.crypto_only {
        Figure::plain(BENCH, "seal_mb_s", seal_rate, "MB/s").print();
        return Ok(());
    }
    let (rtt_n, tput_n) = if quick {
        (2_000, 100_000)
    } else {
        (20_000, 1_000_000)
    };
    if !nix::unistd::geteuid().is_root() {
        bail!("needs root: the benchmark runs its processes in a network namespace");
    }
    let bins = build_bins()?;
    let ns = NetNs::new("bench-tr")?;
    let dir = Scratch::new()?;
    eprintln!("bench transport: {rtt_n} round trips, {tput_n} messages per throughput run");

    // --- Set up every endpoint first: raw Unix echo/sink, one transportd
    // with an echo and a sink service, two linked transportd with the same,
    // plain TCP echo/sink.
    let raw_sock = dir.0.join("raw.sock");
    let raw_sink = dir.0.join("sink.sock");
    spawn_role(&ns, &dir, &["echo", "--unix-listen", path_str(&raw_sock)?])?;
    spawn_role(&ns, &dir, &["sink", "--unix-listen", path_str(&raw_sink)?])?;
    let d = start_transportd(&ns, &bins.0, &dir.0.join("local"), &dir, &[])?;
    let ds = path_str(&d)?;
    let echo = spawn_role(
        &ns,
        &dir,
        &["echo", "--transportd", ds, "--name", "bench-echo"],
    )?;
    spawn_role(
        &ns,
        &dir,
        &["sink", "--transportd", ds, "--name", "conntrackd"],
    )?;
    wait_service(&d, echo)?;
    wait_service(&d, CONNTRACKD)?;

    let nodes = dir.0.join("nodes");
    std::fs::write(&nodes, "127.0.0.1\n127.0.0.2\n")?;
    let key = dir.0.join("key");
    let out = Command::new(&bins.0)
        .arg("--generate-key")
        .arg(&key)
        .output()?;
    if !out.status.success() {
        bail!("transportd --generate-key failed: {out:?}");
    }
    let link = |pnn: &'static str| -> Result<Vec<String>> {
        Ok([
            "--nodes",
            path_str(&nodes)?,
            "--key",
            path_str(&key)?,
            "--port",
            "24379",
            "--pnn",
            pnn,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect())
    };
    let l0 = link("0")?;
    let l1 = link("1")?;
    let l0: Vec<&str> = l0.iter().map(String::as_str).collect();
    let l1: Vec<&str> = l1.iter().map(String::as_str).collect();
    let n0 = start_transportd(&ns, &bins.0, &dir.0.join("n0"), &dir, &l0)?;
    let n1 = start_transportd(&ns, &bins.0, &dir.0.join("n1"), &dir, &l1)?;
    let n1s = path_str(&n1)?;
    let echo1 = spawn_role(
        &ns,
        &dir,
        &["echo", "--transportd", n1s, "--name", "bench-echo"],
    )?;
    spawn_role(
        &ns,
        &dir,
        &["sink", "--transportd", n1s, "--name", "conntrackd"],
    )?;
    wait_service(&n1, echo1)?;
    wait_service(&n1, CONNTRACKD)?;
    wait_link(&n0)?;
    spawn_role(&ns, &dir, &["echo", "--tcp-listen", "127.0.0.2:24380"])?;
    spawn_role(&ns, &dir, &["sink", "--tcp-listen", "127.0.0.2:24381"])?;

    // Warm up transportd's buffers, then count its allocations over a run.
    let allocs = with_transportd(&d, "cli", |s| {
        throughput(s, Address::local(3), tput_n / 10, 64)?;
        let before = allocations(s)?;
        let base = allocations(s)? - before; // one STATISTICS round trip
        throughput(s, Address::local(3), tput_n, 64)?;
        let after = allocations(s)?;
        let total = after.saturating_sub(before + 2 * base);
        eprintln!("transportd made {total} allocations while routing {tput_n} messages");
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        Ok(total as f64 / tput_n as f64)
    })?;
    // The same over the encrypted link: both transportd of the pair.
    let link_allocs = if on("link-tput") {
        let n1 = n1.clone();
        with_transportd(&n0, "cli", |s| {
            with_transportd(&n1, "cli", |s1| {
                throughput(s, Address::new(1, CONNTRACKD), tput_n / 10, 64)?;
                let (b0, b1) = (allocations(s)?, allocations(s1)?);
                let (c0, c1) = (allocations(s)? - b0, allocations(s1)? - b1);
                throughput(s, Address::new(1, CONNTRACKD), tput_n, 64)?;
                let (a0, a1) = (allocations(s)?, allocations(s1)?);
                let t0 = a0.saturating_sub(b0 + 2 * c0);
                let t1 = a1.saturating_sub(b1 + 2 * c1);
                eprintln!(
                    "over the link, the two transportd made {t0} and {t1} allocations while \
                     routing {tput_n} messages"
                );
                #[allow(clippy::cast_precision_loss)] // counts far below 2^52
                Ok((t0 + t1) as f64 / tput_n as f64)
            })
        })?
    } else {
        0.0
    };

    // The machine may be shared: measure in alternating rounds, each
    // figure beside its baseline; rtt percentiles over all rounds,
    // throughput as the median round.
    let paths = Paths {
        ns: &ns,
        raw_sock: &raw_sock,
        raw_sink: &raw_sink,
        d: &d,
        n0: &n0,
        echo,
        echo1,
        rtt_n,
        tput_n,
    };
    let mut m = Measured::default();
    for _ in 0..rounds {
        m.round(&on, &paths)?;
    }
    let Measured {
        raw_rtt,
        routed_rtt,
        link_rtt,
        tcp_rtt,
        mut raw_tput,
        mut routed_tput,
        mut link_tput,
        mut tcp_tput,
        mut link_big,
        mut tcp_big,
    } = m;
    let (mut r, mut rr, mut l, mut t) = (routed_rtt, raw_rtt, link_rtt, tcp_rtt);
    Figure::plain(BENCH, "seal_mb_s", seal_rate, "MB/s").print();
    if on("rtt") {
        print_rtt(&mut r, &mut rr, "rtt");
    }
    if on("tput") {
        let v = percentile(&mut routed_tput, 50.0);
        let b = percentile(&mut raw_tput, 50.0);
        Figure::with_baseline(BENCH, "throughput_64b", v, "msg/s", b).print();
        spread("throughput_64b", &routed_tput, &raw_tput);
    }
    if on("tput") {
        Figure::plain(BENCH, "allocs_per_msg", allocs, "alloc/msg").print();
    }
    if on("link-rtt") {
        print_rtt(&mut l, &mut t, "link_rtt");
    }
    if on("link-tput") {
        Figure::plain(BENCH, "link_allocs_per_msg", link_allocs, "alloc/msg").print();
    }
    if on("link-tput") {
        let v = percentile(&mut link_tput, 50.0);
        let b = percentile(&mut tcp_tput, 50.0);
        Figure::with_baseline(BENCH, "link_throughput_64b", v, "msg/s", b).print();
        spread("link_throughput_64b", &link_tput, &tcp_tput);
    }
    if on("link-16k") {
        let v = percentile(&mut link_big, 50.0) * 16384.0 / 1e6;
        let b = percentile(&mut tcp_big, 50.0) * 16384.0 / 1e6;
        Figure::with_baseline(BENCH, "link_throughput_16k", v, "MB/s", b).print();
        spread("link_throughput_16k", &link_big, &tcp_big);
    }
    // A steady load for a profiler (perf record -p PID of a transportd).
    for _ in 0..repeat {
        Measured::default().round(&on, &paths)?;
    }
    Ok(())
}

/// Prints the p50 and p99 figures of one round-trip path.
fn print_rtt(v: &mut [f64], base: &mut [f64], name: &str) {
    for p in [50.0, 99.0] {
        Figure::with_baseline(
            BENCH,
            &format!("{name}_p{p:.0}"),
            percentile(v, p),
            "us",
            percentile(base, p),
        )
        .print();
    }
}

/// The per-round ratios of a throughput figure, on stderr (the spread of
/// a loaded machine).
fn spread(name: &str, v: &[f64], base: &[f64]) {
    let ratios: Vec<String> = v
        .iter()
        .zip(base)
        .map(|(a, b)| format!("{:.3}", a / b))
        .collect();
    eprintln!("{name}: ratio per round {}", ratios.join(" "));
}

/// The endpoints of one measurement round.
struct Paths<'a> {
    ns: &'a NetNs,
    raw_sock: &'a Path,
    raw_sink: &'a Path,
    /// The single transportd.
    d: &'a Path,
    /// Node 0 of the linked pair.
    n0: &'a Path,
    /// The echo service's id on `d` and on node 1.
    echo: u16,
    echo1: u16,
    rtt_n: usize,
    tput_n: usize,
}

/// Samples of every round.
#[derive(Default)]
struct Measured {
    raw_rtt: Vec<f64>,
    routed_rtt: Vec<f64>,
    link_rtt: Vec<f64>,
    tcp_rtt: Vec<f64>,
    raw_tput: Vec<f64>,
    routed_tput: Vec<f64>,
    link_tput: Vec<f64>,
    tcp_tput: Vec<f64>,
    link_big: Vec<f64>,
    tcp_big: Vec<f64>,
}

impl Measured {
    /// One round of the selected paths, each beside its baseline.
    fn round(&mut self, on: &dyn Fn(&str) -> bool, p: &Paths<'_>) -> Result<()> {
        let (rtt_n, tput_n, big_n) = (p.rtt_n, p.tput_n, p.tput_n / 20);
        let (echo, echo1) = (p.echo, p.echo1);
        if on("rtt") {
            self.raw_rtt.extend(with_unix(p.raw_sock, |s| {
                rtt(s, Address::local(echo), rtt_n, 64)
            })?);
            self.routed_rtt.extend(with_transportd(p.d, "cli", |s| {
                rtt(s, Address::local(echo), rtt_n, 64)
            })?);
        }
        if on("tput") {
            self.raw_tput.push(with_unix(p.raw_sink, |s| {
                throughput(s, Address::local(CONNTRACKD), tput_n, 64)
            })?);
            self.routed_tput.push(with_transportd(p.d, "cli", |s| {
                throughput(s, Address::local(CONNTRACKD), tput_n, 64)
            })?);
        }
        if on("link-rtt") {
            self.link_rtt.extend(with_transportd(p.n0, "cli", |s| {
                rtt(s, Address::new(1, echo1), rtt_n, 64)
            })?);
            self.tcp_rtt.extend(p.ns.run(move || {
                with_tcp("127.0.0.2:24380", |s| rtt(s, Address::local(1), rtt_n, 64))
            })??);
        }
        if on("link-tput") {
            self.link_tput.push(with_transportd(p.n0, "cli", |s| {
                throughput(s, Address::new(1, CONNTRACKD), tput_n, 64)
            })?);
            self.tcp_tput.push(p.ns.run(move || {
                with_tcp("127.0.0.2:24381", |s| {
                    throughput(s, Address::local(1), tput_n, 64)
                })
            })??);
        }
        if on("link-16k") {
            self.link_big.push(with_transportd(p.n0, "cli", |s| {
                throughput(s, Address::new(1, CONNTRACKD), big_n, 16384)
            })?);
            self.tcp_big.push(p.ns.run(move || {
                with_tcp("127.0.0.2:24381", |s| {
                    throughput(s, Address::local(1), big_n, 16384)
                })
            })??);
        }
        Ok(())
    }
}

/// Encryption speed of the link cipher alone (seal 1 MiB buffers, one core).
fn seal_speed() -> Result<f64> {
    use transport::transportd::key::ClusterKey;
    use transport::transportd::noise;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let key = ClusterKey::from_bytes([7; 32]);
    let (mut a, mut b) = tokio::io::duplex(1 << 20);
    let cipher = rt.block_on(async {
        let k2 = key.clone();
        let (x, y) = tokio::join!(
            noise::initiate(&mut a, &key, 0, 1),
            noise::respond(&mut b, &k2, 1, |_| Ok(()))
        );
        y.map(|_| ())?;
        x
    })?;
    let plain = vec![0x11u8; 1 << 20];
    let mut out = Vec::new();
    let mut nonce = 0;
    let start = Instant::now();
    let mut bytes = 0usize;
    while start.elapsed() < Duration::from_millis(500) {
        noise::seal(&cipher, &mut nonce, &plain, &mut out)?;
        bytes += plain.len();
    }
    #[allow(clippy::cast_precision_loss)] // byte counts far below 2^52
    Ok(bytes as f64 / start.elapsed().as_secs_f64() / 1e6)
}

// ---------------------------------------------------------------- helpers

struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("ipf-bench-transport-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().context("non-UTF-8 path")
}

/// Builds (if needed) and finds `transportd` next to this binary.
///
/// `BENCH_TRANSPORTD=PATH` runs another transportd binary instead (an older
/// build, to measure a change against it on the same loaded machine).
fn build_bins() -> Result<(PathBuf,)> {
    if let Some(path) = std::env::var_os("BENCH_TRANSPORTD") {
        return Ok((PathBuf::from(path),));
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("binary directory")?.to_path_buf();
    let release = dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-q", "-p", "transport", "--bin", "transportd"]);
    if release {
        cmd.arg("--release");
    }
    if let Some(target) = dir.parent() {
        cmd.arg("--target-dir").arg(target);
    }
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    let status = cmd.status().context("running cargo build for transportd")?;
    if !status.success() {
        bail!("building transportd failed");
    }
    Ok((dir.join("transportd"),))
}

/// Starts a role and waits until it is ready; returns the service id it
/// registered (0 for a role that serves a raw socket).
fn spawn_role(ns: &NetNs, dir: &Scratch, role: &[&str]) -> Result<u16> {
    let exe = std::env::current_exe()?;
    let ready = dir
        .0
        .join(format!("ready-{}", role.join("-").replace('/', "_")));
    let mut cmd = ns.command(path_str(&exe)?);
    cmd.args(["transport", "--role"])
        .args(role)
        .arg("--ready")
        .arg(&ready)
        .stdout(Stdio::null());
    ns.spawn(cmd)?;
    wait_for(
        &format!("role {role:?} ready"),
        Duration::from_secs(10),
        Duration::from_millis(10),
        || ready.exists().then_some(()),
    )?;
    // Written before the file is renamed into place: complete when seen.
    let id = std::fs::read_to_string(&ready)?;
    id.trim()
        .parse()
        .with_context(|| format!("role {role:?}: bad ready file {id:?}"))
}

fn start_transportd(
    ns: &NetNs,
    bin: &Path,
    run_dir: &Path,
    dir: &Scratch,
    extra: &[&str],
) -> Result<PathBuf> {
    let log = std::fs::File::create(dir.0.join(format!(
        "{}.log",
        run_dir.file_name().and_then(|n| n.to_str()).unwrap_or("d")
    )))?;
    let mut cmd = ns.command(path_str(bin)?);
    cmd.arg("--run-dir")
        .arg(run_dir)
        .args(["--log-level", "warn"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log);
    ns.spawn(cmd)?;
    let sock = run_dir.join("transport.sock");
    wait_for(
        "transportd socket",
        Duration::from_secs(10),
        Duration::from_millis(10),
        || UnixStream::connect(&sock).ok().map(|_| ()),
    )?;
    Ok(sock)
}

fn with_unix<T>(path: &Path, f: impl FnOnce(&mut UnixStream) -> Result<T>) -> Result<T> {
    let mut s = UnixStream::connect(path).with_context(|| format!("connect {}", path.display()))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    f(&mut s)
}

fn with_tcp<T>(addr: &str, f: impl FnOnce(&mut TcpStream) -> Result<T>) -> Result<T> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    f(&mut s)
}

fn with_transportd<T>(
    sock: &Path,
    name: &str,
    f: impl FnOnce(&mut UnixStream) -> Result<T>,
) -> Result<T> {
    let mut s = UnixStream::connect(sock)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    register(&mut s, name)?;
    f(&mut s)
}

/// Registers `name` over a raw stream; returns (pnn, service).
fn register(s: &mut (impl Read + Write), name: &str) -> Result<(u32, u16)> {
    let payload = encode_payload(&RegisterRequest {
        name: name.to_owned(),
    })?;
    write_frame(
        s,
        Kind::Request,
        Address::local(TRANSPORT),
        REGISTER,
        0,
        &payload,
    )?;
    let mut rd = FrameReader::new();
    let (kind, p) = {
        let f = rd.next(s)?;
        let h = Header::new_checked(&*f)?;
        (h.kind(), f[transport::proto::HEADER_LEN..].to_vec())
    };
    if kind != Kind::Reply {
        bail!("registration of {name} refused");
    }
    let r: RegisterReply = decode_payload(&p)?;
    Ok((r.pnn, r.service))
}

fn request_control<T: serde::de::DeserializeOwned>(s: &mut UnixStream, opcode: u32) -> Result<T> {
    write_frame(s, Kind::Request, Address::local(TRANSPORT), opcode, 1, &[])?;
    let mut rd = FrameReader::new();
    let f = rd.next(s)?;
    Ok(decode_payload(&f[transport::proto::HEADER_LEN..])?)
}

fn allocations(s: &mut UnixStream) -> Result<u64> {
    let st: Statistics = request_control(s, STATISTICS)?;
    st.get("allocations").context("no allocations counter")
}

fn wait_service(sock: &Path, id: u16) -> Result<()> {
    let sock = sock.to_path_buf();
    wait_for(
        "service registration",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let mut s = UnixStream::connect(&sock).ok()?;
            register(&mut s, "bench-probe").ok()?;
            let list: transport::proto::control::ServiceList =
                request_control(&mut s, transport::proto::control::LIST_SERVICES).ok()?;
            list.services.iter().any(|x| x.id == id).then_some(())
        },
    )
}

fn wait_link(sock: &Path) -> Result<()> {
    let sock = sock.to_path_buf();
    wait_for(
        "peer link",
        Duration::from_secs(15),
        Duration::from_millis(20),
        || {
            let mut s = UnixStream::connect(&sock).ok()?;
            register(&mut s, "bench-probe").ok()?;
            let list: transport::proto::control::PeerList =
                request_control(&mut s, transport::proto::control::LIST_PEERS).ok()?;
            list.peers.iter().all(|p| p.connected).then_some(())
        },
    )
}

fn write_frame(
    s: &mut impl Write,
    kind: Kind,
    dst: Address,
    opcode: u32,
    request_id: u64,
    payload: &[u8],
) -> Result<()> {
    let mut buf = Vec::with_capacity(64 + payload.len());
    frame_into(&mut buf, kind, dst, opcode, request_id, payload)?;
    s.write_all(&buf)?;
    Ok(())
}

fn frame_into(
    buf: &mut Vec<u8>,
    kind: Kind,
    dst: Address,
    opcode: u32,
    request_id: u64,
    payload: &[u8],
) -> Result<()> {
    let h = HeaderRepr {
        kind,
        src: Address::new(LOCAL, 0),
        dst,
        request_id,
        opcode,
    };
    encode_frame(&h, payload, buf)?;
    Ok(())
}

/// Reads whole frames from a blocking stream into a reused buffer.
struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl FrameReader {
    fn new() -> Self {
        FrameReader {
            buf: vec![0; 256 * 1024],
            start: 0,
            end: 0,
        }
    }

    /// The next frame (valid until the next call); error at EOF.
    fn next(&mut self, s: &mut impl Read) -> Result<&mut [u8]> {
        loop {
            match check(&self.buf[self.start..self.end])? {
                Check::Complete { frame_len } => {
                    let at = self.start;
                    self.start += frame_len;
                    return Ok(&mut self.buf[at..at + frame_len]);
                }
                Check::Incomplete { need } => {
                    if self.start > 0 {
                        self.buf.copy_within(self.start..self.end, 0);
                        self.end -= self.start;
                        self.start = 0;
                    }
                    if self.buf.len() < need {
                        self.buf.resize(need, 0);
                    }
                    let n = s.read(&mut self.buf[self.end..])?;
                    if n == 0 {
                        bail!("connection closed");
                    }
                    self.end += n;
                }
            }
        }
    }
}

// ------------------------------------------------------------ measurements

/// `n` sequential request/reply round trips; returns microseconds each.
fn rtt(s: &mut (impl Read + Write), dst: Address, n: usize, size: usize) -> Result<Vec<f64>> {
    let payload = vec![0x5a; size];
    let mut req = Vec::new();
    frame_into(&mut req, Kind::Request, dst, DATA, 7, &payload)?;
    let mut rd = FrameReader::new();
    let warmup = n / 10;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + warmup {
        let t = Instant::now();
        s.write_all(&req)?;
        let f = rd.next(s)?;
        let h = Header::new_checked(&*f)?;
        if h.kind() != Kind::Reply {
            let why = transport::proto::FrameRef::decode_prefix(&*f)
                .ok()
                .and_then(|(m, _)| decode_payload::<transport::proto::RemoteError>(m.payload).ok())
                .map_or_else(String::new, |e| format!(": {e}"));
            bail!(
                "round trip {i}: answer is a {:?} (opcode {:#x}), not a reply{why}",
                h.kind(),
                h.opcode()
            );
        }
        if i >= warmup {
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    Ok(samples)
}

/// Sends `n` messages of `size` payload bytes in bursts of [`burst_len`], at
/// most [`WINDOW`] bursts unacknowledged; returns messages per second.
fn throughput(s: &mut (impl Read + Write), dst: Address, n: usize, size: usize) -> Result<f64> {
    let payload = vec![0xa5; size];
    let mut burst = Vec::new();
    let frame_len = transport::proto::HEADER_LEN + size;
    let per_burst = burst_len(frame_len);
    for _ in 0..per_burst {
        frame_into(&mut burst, Kind::Event, dst, DATA, 0, &payload)?;
    }
    let bursts = n.div_ceil(per_burst);
    let mut rd = FrameReader::new();
    let start = Instant::now();
    let (mut sent, mut acked) = (0, 0);
    while acked < bursts {
        if sent < bursts && sent - acked < WINDOW {
            s.write_all(&burst)?;
            sent += 1;
        } else {
            let f = rd.next(s)?;
            if Header::new_checked(&*f)?.opcode() == ACK {
                acked += 1;
            }
        }
    }
    #[allow(clippy::cast_precision_loss)] // message counts far below 2^52
    Ok((bursts * per_burst) as f64 / start.elapsed().as_secs_f64())
}

// ------------------------------------------------------------------ roles

/// A child process: `echo` answers every frame, `sink` acknowledges every
/// [`burst_len`] frames; over `--unix-listen PATH`, `--tcp-listen ADDR` or
/// `--transportd SOCKET --name NAME`.
fn role(kind: &str, args: &TransportArgs) -> Result<()> {
    let kind = kind.to_owned();
    let ready = args.ready.clone();
    let mark_ready = move |service: u16| -> Result<()> {
        if let Some(r) = &ready {
            let tmp = r.with_extension("tmp");
            std::fs::write(&tmp, service.to_string())?;
            std::fs::rename(&tmp, r)?;
        }
        Ok(())
    };
    if let Some(path) = &args.unix_listen {
        let l = UnixListener::bind(path)?;
        mark_ready(0)?;
        return serve_forever_unix(l, kind);
    }
    if let Some(addr) = args.tcp_listen {
        let l = TcpListener::bind(addr)?;
        mark_ready(0)?;
        for conn in l.incoming() {
            let mut s = conn?;
            s.set_nodelay(true)?;
            let k = kind.clone();
            std::thread::spawn(move || serve(&k, &mut s));
        }
        return Ok(());
    }
    if let Some(sock) = &args.transportd {
        let name = args.name.as_deref().context("--transportd needs --name")?;
        let mut s = UnixStream::connect(sock)?;
        let (_, service) = register(&mut s, name)?;
        mark_ready(service)?;
        serve(&kind, &mut s);
        return Ok(());
    }
    bail!("role needs --unix-listen, --tcp-listen or --transportd")
}

fn serve_forever_unix(l: UnixListener, kind: String) -> Result<()> {
    for conn in l.incoming() {
        let mut s = conn?;
        let k = kind.clone();
        std::thread::spawn(move || serve(&k, &mut s));
    }
    Ok(())
}

/// Serves one connection until it closes.
fn serve(kind: &str, s: &mut (impl Read + Write)) {
    let mut rd = FrameReader::new();
    let mut count = 0usize;
    let mut ack = Vec::new();
    loop {
        let Ok(f) = rd.next(s) else { return };
        let Ok(mut h) = Header::new_checked(&mut *f) else {
            return;
        };
        let src = h.src();
        if kind == "echo" {
            h.set_kind(Kind::Reply);
            h.set_src(h.dst());
            h.set_dst(src);
            if s.write_all(f).is_err() {
                return;
            }
        } else {
            count += 1;
            if count % burst_len(f.len()) == 0 {
                ack.clear();
                if frame_into(&mut ack, Kind::Event, src, ACK, 0, &[]).is_err()
                    || s.write_all(&ack).is_err()
                {
                    return;
                }
            }
        }
    }
}
