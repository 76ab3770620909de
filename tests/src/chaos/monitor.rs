//! The duplicate detector's I/O: one thread per node namespace subscribed to
//! rtnetlink address events and nftables events, and one thread in the
//! client namespace that asks for every public address (ARP request, IPv6
//! neighbour solicitation) every [`PROBE_INTERVAL`] and records who answers.
//!
//! The nftables events read: elements of the guard and lease sets, and
//! the rules of the `cap` chain (the kernel lease's wall-clock bound, see
//! [`super::serving::CapChain`]), all in the node's `inet` lease table
//! (the `arp` table's cap is the same value, set in the same
//! transaction). The cap changes as the transaction ends (NFT_MSG_NEWGEN),
//! converted from `CLOCK_REALTIME` to the run's timeline with the two
//! clocks read together at the start ([`Log::wall`]).
//!
//! Node threads stamp each message with `CLOCK_MONOTONIC` (the one clock
//! of every namespace) as soon as `recv` returns it, and run at real-time
//! priority (SCHED_FIFO) when allowed, so that the stamp is the kernel's
//! change time plus a wake-up latency of microseconds rather than a
//! scheduler slice; they block in `poll` otherwise. The events feed
//! [`super::serving`]. A receive-buffer overrun (ENOBUFS) is counted and
//! addresses are re-read at once (a removal missed during the overrun is
//! stamped when the dump shows it missing, which can only lengthen an
//! interval: the detector errs towards reporting).
//!
//! The client thread's rule: two different MACs answering one address
//! within one probe round (requests are [`PROBE_INTERVAL`] apart, answers
//! arrive within about a millisecond) is a violation. Only solicited
//! answers count (ARP replies to the client, NAs with the S flag):
//! gratuitous announcements of a new owner right after a release are a
//! normal move.
//!
//! Every message and frame goes through the bounded parsers of
//! [`super::wire`]; what does not parse is counted as garbage.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::serving::{wall_to_micros, CapChain, Ev, Micros, Timed};
use super::wire;

/// Interval between two rounds of ARP/NS probes from the client.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(10);

/// Two or more MACs answering one address in one probe round: when, the
/// address, the MACs.
pub type ArpViolation = (Micros, IpAddr, Vec<[u8; 6]>);

/// What every detector thread writes to.
#[derive(Debug)]
pub struct Log {
    base: Instant,
    /// The wall clock (ns since the epoch) read together with `base`.
    real_base_ns: u64,
    /// Every event, in arrival order per node.
    pub events: Mutex<Vec<Timed>>,
    /// The public addresses configured now, per node.
    pub configured: Mutex<Vec<BTreeSet<IpAddr>>>,
    /// Messages or frames that did not parse.
    pub garbage: AtomicU64,
    /// Receive-buffer overruns (ENOBUFS).
    pub overruns: AtomicU64,
    /// Client-side violations: (time, address, MACs).
    pub arp_violations: Mutex<Vec<ArpViolation>>,
    /// The MAC seen answering for each address last, and since when.
    pub answering: Mutex<BTreeMap<IpAddr, ([u8; 6], Micros)>>,
    /// Probe rounds sent.
    pub probe_rounds: AtomicU64,
    /// Solicited answers received.
    pub answers: AtomicU64,
    /// Whether the node threads got real-time priority.
    pub realtime: AtomicBool,
    public: fn(IpAddr) -> bool,
}

impl Log {
    /// A log for `nodes` nodes; `public` says which addresses to follow.
    pub fn new(nodes: usize, public: fn(IpAddr) -> bool) -> Log {
        // The wall clock first, then the monotonic one, back to back: the
        // conversion is off by the time between them (well below a µs).
        let real_base_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Log {
            base: Instant::now(),
            real_base_ns,
            events: Mutex::new(Vec::new()),
            configured: Mutex::new(vec![BTreeSet::new(); nodes]),
            garbage: AtomicU64::new(0),
            overruns: AtomicU64::new(0),
            arp_violations: Mutex::new(Vec::new()),
            answering: Mutex::new(BTreeMap::new()),
            probe_rounds: AtomicU64::new(0),
            answers: AtomicU64::new(0),
            realtime: AtomicBool::new(true),
            public,
        }
    }

    /// Now, in µs since the log was made.
    pub fn now(&self) -> Micros {
        u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// `t` (an `Instant`) in the log's time.
    pub fn at(&self, t: Instant) -> Micros {
        u64::try_from(t.saturating_duration_since(self.base).as_micros()).unwrap_or(u64::MAX)
    }

    /// A wall-clock time (ns since the epoch, nftables' `meta time`) in
    /// the log's time (see [`wall_to_micros`] for the assumption about
    /// wall-clock steps).
    pub fn wall(&self, ns: u64) -> Micros {
        wall_to_micros(ns, self.real_base_ns)
    }

    /// Records an event of `node` at time `t`.
    pub fn push(&self, t: Micros, node: usize, ev: Ev) {
        if let Ev::Addr(a, on) = ev {
            let mut c = self.configured.lock().expect("log poisoned");
            if let Some(set) = c.get_mut(node) {
                if on {
                    set.insert(a);
                } else {
                    set.remove(&a);
                }
            }
        }
        self.events
            .lock()
            .expect("log poisoned")
            .push(Timed { t, node, ev });
    }

    /// A copy of the events so far.
    pub fn snapshot(&self) -> Vec<Timed> {
        self.events.lock().expect("log poisoned").clone()
    }

    /// Which nodes have each public address configured now.
    pub fn placement(&self) -> BTreeMap<IpAddr, Vec<usize>> {
        let c = self.configured.lock().expect("log poisoned");
        let mut out: BTreeMap<IpAddr, Vec<usize>> = BTreeMap::new();
        for (n, set) in c.iter().enumerate() {
            for a in set {
                out.entry(*a).or_default().push(n);
            }
        }
        out
    }
}

/// Stops the threads when dropped (each ends within 200 ms).
#[derive(Debug)]
pub struct Threads {
    stop: Arc<AtomicBool>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Threads {
    /// No threads yet.
    pub fn new() -> Threads {
        Threads {
            stop: Arc::new(AtomicBool::new(false)),
            handles: Vec::new(),
        }
    }

    /// The stop flag the threads watch.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Adds a thread.
    pub fn push(&mut self, h: std::thread::JoinHandle<()>) {
        self.handles.push(h);
    }

    /// Stops and joins every thread.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

impl Default for Threads {
    fn default() -> Self {
        Threads::new()
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Spawns a thread that enters namespace `ns` (by name) and runs `f`.
/// Returns once the thread has entered it (or failed to).
///
/// # Errors
///
/// When the namespace cannot be entered or `f`'s setup fails (`f` returns
/// its setup result through the channel it is given).
pub fn spawn_in<F>(ns: &str, f: F) -> Result<std::thread::JoinHandle<()>>
where
    F: FnOnce(std::sync::mpsc::Sender<Result<()>>) + Send + 'static,
{
    let path = format!("/run/netns/{ns}");
    let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        if let Err(e) = nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET) {
            let _ = tx.send(Err(anyhow::anyhow!("setns: {e}")));
            return;
        }
        f(tx);
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => Ok(h),
        Ok(Err(e)) => Err(e),
        Err(_) => bail!("thread in {ns} did not start"),
    }
}

fn realtime() -> bool {
    let p = libc::sched_param { sched_priority: 10 };
    // SAFETY: sched_setscheduler with pid 0 changes the calling thread's
    // policy; `p` is a valid sched_param that outlives the call.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) == 0 }
}

fn netlink_socket(proto: i32, groups: u32) -> Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            proto,
        )
    };
    if fd < 0 {
        bail!("netlink socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_nl is plain data; zeroed is a valid value.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = u16::try_from(libc::AF_NETLINK).unwrap_or(16);
    sa.nl_groups = groups;
    let len = u32::try_from(std::mem::size_of::<libc::sockaddr_nl>()).unwrap_or(12);
    // SAFETY: sa is a valid sockaddr_nl of `len` bytes.
    let r = unsafe { libc::bind(fd.as_raw_fd(), (&raw const sa).cast(), len) };
    if r < 0 {
        bail!("netlink bind: {}", std::io::Error::last_os_error());
    }
    let size: libc::c_int = 8 << 20;
    // SAFETY: setsockopt with a valid int option value; failure is harmless
    // (SO_RCVBUFFORCE needs CAP_NET_ADMIN; then the default buffer stays).
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const size).cast(),
            4,
        );
    }
    Ok(fd)
}

fn add_membership(fd: &OwnedFd, group: u32) -> Result<()> {
    // SAFETY: setsockopt with a valid u32 option value.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_NETLINK,
            libc::NETLINK_ADD_MEMBERSHIP,
            (&raw const group).cast(),
            4,
        )
    };
    if r < 0 {
        bail!(
            "NETLINK_ADD_MEMBERSHIP {group}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn dump_addresses(fd: &OwnedFd) -> Result<()> {
    // nlmsghdr (16) + rtgenmsg (family AF_UNSPEC, padded to 4)
    let mut req = Vec::with_capacity(20);
    req.extend_from_slice(&20u32.to_ne_bytes());
    req.extend_from_slice(&22u16.to_ne_bytes()); // RTM_GETADDR
    let flags = u16::try_from(libc::NLM_F_REQUEST | libc::NLM_F_DUMP).unwrap_or(0x301);
    req.extend_from_slice(&flags.to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid
    req.extend_from_slice(&[0, 0, 0, 0]);
    // SAFETY: req is a valid buffer of req.len() bytes.
    let r = unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if r < 0 {
        bail!("RTM_GETADDR: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn recv(fd: &OwnedFd, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: buf is valid for buf.len() bytes of writes.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

fn poll2(a: &OwnedFd, b: Option<&OwnedFd>, ms: i32) -> (bool, bool) {
    let mut fds = [
        libc::pollfd {
            fd: a.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: b.map_or(-1, AsRawFd::as_raw_fd),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: fds is a valid array of 2 pollfd (a negative fd is ignored).
    let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
    if r <= 0 {
        return (false, false);
    }
    (fds[0].revents != 0, fds[1].revents != 0)
}

/// Starts node `node`'s detector thread in namespace `ns`. `nft_table` is
/// failoverd's `inet` lease table (its guard and lease sets and its cap chain
/// count).
///
/// # Errors
///
/// When the namespace cannot be entered or a socket cannot be opened.
pub fn start_node(
    threads: &mut Threads,
    log: &Arc<Log>,
    ns: &str,
    node: usize,
    nft_table: &str,
) -> Result<()> {
    let log = Arc::clone(log);
    let stop = threads.flag();
    let table = nft_table.to_string();
    let h = spawn_in(ns, move |ready| {
        if !realtime() {
            log.realtime.store(false, Ordering::Relaxed);
        }
        // RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
        let route = match netlink_socket(libc::NETLINK_ROUTE, 0x10 | 0x100) {
            Ok(s) => s,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let nft = match netlink_socket(libc::NETLINK_NETFILTER, 0)
            .and_then(|s| add_membership(&s, 7).map(|()| s)) // NFNLGRP_NFTABLES
        {
            Ok(s) => s,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        if let Err(e) = dump_addresses(&route) {
            let _ = ready.send(Err(e));
            return;
        }
        let _ = ready.send(Ok(()));
        node_loop(&log, &stop, &route, &nft, node, &table);
    })?;
    threads.push(h);
    Ok(())
}

fn node_loop(
    log: &Log,
    stop: &AtomicBool,
    route: &OwnedFd,
    nft: &OwnedFd,
    node: usize,
    table: &str,
) {
    let mut buf = vec![0u8; 1 << 16];
    // In a dump after an overrun: the addresses seen so far.
    let mut dumping: Option<BTreeSet<IpAddr>> = None;
    let mut cap = CapState::default();
    while !stop.load(Ordering::Relaxed) {
        let (r_ready, n_ready) = poll2(route, Some(nft), 200);
        if r_ready {
            loop {
                match recv(route, &mut buf) {
                    Ok(n) => {
                        let t = log.now();
                        let (msgs, bad) = wire::messages(&buf[..n]);
                        if bad {
                            log.garbage.fetch_add(1, Ordering::Relaxed);
                        }
                        for m in msgs {
                            if m.ty == wire::NLMSG_DONE {
                                if let Some(seen) = dumping.take() {
                                    let gone: Vec<IpAddr> = log.configured.lock().expect("log")
                                        [node]
                                        .difference(&seen)
                                        .copied()
                                        .collect();
                                    for a in gone {
                                        log.push(t, node, Ev::Addr(a, false));
                                    }
                                }
                                continue;
                            }
                            if m.ty != wire::RTM_NEWADDR && m.ty != wire::RTM_DELADDR {
                                continue;
                            }
                            match wire::addr_event(&m) {
                                Some(e) if (log.public)(e.addr) => {
                                    if let (Some(seen), true) = (dumping.as_mut(), e.add) {
                                        seen.insert(e.addr);
                                    }
                                    log.push(t, node, Ev::Addr(e.addr, e.add));
                                }
                                Some(_) => {}
                                None => {
                                    log.garbage.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        log.overruns.fetch_add(1, Ordering::Relaxed);
                        dumping = Some(BTreeSet::new());
                        let _ = dump_addresses(route);
                    }
                    Err(_) => break,
                }
            }
        }
        if n_ready {
            loop {
                match recv(nft, &mut buf) {
                    Ok(n) => {
                        let t = log.now();
                        let (msgs, bad) = wire::messages(&buf[..n]);
                        if bad {
                            log.garbage.fetch_add(1, Ordering::Relaxed);
                        }
                        for m in msgs {
                            if wire::nft_is_garbage(&m) {
                                log.garbage.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            if let Some(e) = wire::nft_event(&m) {
                                nft_to_events(log, t, node, table, e, &mut cap);
                            }
                        }
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        log.overruns.fetch_add(1, Ordering::Relaxed);
                        cap.chain.forget();
                        cap.publish(log, log.now(), node);
                    }
                    Err(_) => break,
                }
            }
        }
    }
}

/// NFPROTO_INET.
const INET: u8 = 1;

/// The regular chain of failoverd's cap rules (netlink/src/lease.rs).
const CAP_CHAIN: &str = "cap";

/// One node's cap chain as seen, and the cap last reported.
#[derive(Debug, Default)]
struct CapState {
    chain: CapChain,
    /// The cap of the last [`Ev::Cap`] pushed (`None`: none, as at the
    /// start).
    reported: Option<Micros>,
}

impl CapState {
    /// Pushes an [`Ev::Cap`] at `t` if the effective cap changed.
    fn publish(&mut self, log: &Log, t: Micros, node: usize) {
        let now = self.chain.effective().map(|ns| log.wall(ns));
        if now != self.reported {
            self.reported = now;
            log.push(t, node, Ev::Cap(now));
        }
    }
}

fn nft_to_events(
    log: &Log,
    t: Micros,
    node: usize,
    table: &str,
    e: wire::NftEvent,
    cap: &mut CapState,
) {
    match e {
        wire::NftEvent::Rule {
            add,
            family,
            table: tb,
            chain,
            handle,
            cap: value,
        } if family == INET && tb == table && chain == CAP_CHAIN => {
            if add {
                cap.chain.add(handle, value);
            } else {
                cap.chain.delete(handle);
            }
        }
        wire::NftEvent::DelChain {
            family,
            table: tb,
            chain,
        } if family == INET && tb == table && chain == CAP_CHAIN => cap.chain.clear(),
        wire::NftEvent::NewGen => cap.publish(log, t, node),
        wire::NftEvent::Elems {
            add,
            family,
            table: tb,
            set,
            elems,
        } if family == INET && tb == table => {
            let guard = matches!(set.as_str(), "guard4" | "guard6");
            let lease = matches!(set.as_str(), "lease4" | "lease6");
            for (a, timeout, expiration) in elems {
                if guard {
                    log.push(t, node, Ev::Guard(a, add));
                } else if lease {
                    let until = if add {
                        Some(match expiration.or(timeout) {
                            Some(ms) => t.saturating_add(ms.saturating_mul(1000)),
                            None => Micros::MAX,
                        })
                    } else {
                        None
                    };
                    log.push(t, node, Ev::Lease(a, until));
                }
            }
        }
        wire::NftEvent::DelSet {
            family,
            table: tb,
            set,
        } if family == INET && tb == table => match set.as_str() {
            "guard4" => log.push(t, node, Ev::GuardClear(false)),
            "guard6" => log.push(t, node, Ev::GuardClear(true)),
            "lease4" => log.push(t, node, Ev::LeaseClear(false)),
            "lease6" => log.push(t, node, Ev::LeaseClear(true)),
            _ => {}
        },
        wire::NftEvent::DelTable { family, table: tb } if family == INET && tb == table => {
            cap.chain.clear();
            for v6 in [false, true] {
                log.push(t, node, Ev::GuardClear(v6));
                log.push(t, node, Ev::LeaseClear(v6));
            }
        }
        _ => {}
    }
}

/// What the client prober needs.
#[derive(Debug, Clone)]
pub struct ProbeSetup {
    /// The client namespace.
    pub ns: String,
    /// Its interface on the LAN.
    pub iface: String,
    /// Its MAC.
    pub mac: [u8; 6],
    /// Its IPv4 address in the public subnet.
    pub ip4: Ipv4Addr,
    /// Its link-local IPv6 address.
    pub ll6: Ipv6Addr,
    /// The addresses to probe.
    pub targets: Vec<IpAddr>,
}

fn packet_socket(iface: &str) -> Result<OwnedFd> {
    let proto = u16::try_from(libc::ETH_P_ALL).unwrap_or(3).to_be();
    // SAFETY: plain socket(2) call, checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            i32::from(proto),
        )
    };
    if fd < 0 {
        bail!("packet socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let index = nix::net::if_::if_nametoindex(iface).with_context(|| iface.to_string())?;
    // SAFETY: sockaddr_ll is plain data; zeroed is valid.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = u16::try_from(libc::AF_PACKET).unwrap_or(17);
    sa.sll_protocol = proto;
    sa.sll_ifindex = i32::try_from(index).unwrap_or(0);
    let len = u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap_or(20);
    // SAFETY: sa is a valid sockaddr_ll of `len` bytes.
    if unsafe { libc::bind(fd.as_raw_fd(), (&raw const sa).cast(), len) } < 0 {
        bail!("packet bind: {}", std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Starts the client prober.
///
/// # Errors
///
/// When the namespace cannot be entered or the socket cannot be opened.
pub fn start_client(threads: &mut Threads, log: &Arc<Log>, setup: ProbeSetup) -> Result<()> {
    let log = Arc::clone(log);
    let stop = threads.flag();
    let ns = setup.ns.clone();
    let h = spawn_in(&ns, move |ready| {
        let sock = match packet_socket(&setup.iface) {
            Ok(s) => s,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        client_loop(&log, &stop, &sock, &setup);
    })?;
    threads.push(h);
    Ok(())
}

fn client_loop(log: &Log, stop: &AtomicBool, sock: &OwnedFd, s: &ProbeSetup) {
    let frames: Vec<Vec<u8>> = s
        .targets
        .iter()
        .map(|t| match t {
            IpAddr::V4(a) => wire::arp_request(s.mac, s.ip4, *a),
            IpAddr::V6(a) => wire::neighbour_solicitation(s.mac, s.ll6, *a),
        })
        .collect();
    let mut round: BTreeMap<IpAddr, Vec<[u8; 6]>> = BTreeMap::new();
    let mut buf = vec![0u8; 2048];
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next {
            round.clear();
            for f in &frames {
                // SAFETY: f is a valid buffer of f.len() bytes.
                unsafe { libc::send(sock.as_raw_fd(), f.as_ptr().cast(), f.len(), 0) };
            }
            log.probe_rounds.fetch_add(1, Ordering::Relaxed);
            // At least PROBE_INTERVAL between rounds, even after a delay.
            next = Instant::now() + PROBE_INTERVAL;
        }
        let wait = next.saturating_duration_since(Instant::now());
        let ms = i32::try_from(wait.as_millis()).unwrap_or(10).max(1);
        let (ready, _) = poll2(sock, None, ms);
        if !ready {
            continue;
        }
        loop {
            // SAFETY: sockaddr_ll is plain data.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap_or(20);
            // SAFETY: buf and from are valid for writes of their sizes.
            let n = unsafe {
                libc::recvfrom(
                    sock.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&raw mut from).cast(),
                    &mut len,
                )
            };
            let Ok(n) = usize::try_from(n) else { break };
            let t = log.now();
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            match wire::answer(&buf[..n.min(buf.len())], s.ip4) {
                Err(()) => {
                    log.garbage.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Some(a)) if a.solicited && s.targets.contains(&a.addr) => {
                    log.answers.fetch_add(1, Ordering::Relaxed);
                    let macs = round.entry(a.addr).or_default();
                    if !macs.contains(&a.mac) {
                        macs.push(a.mac);
                        if macs.len() == 2 {
                            log.arp_violations
                                .lock()
                                .expect("log")
                                .push((t, a.addr, macs.clone()));
                        }
                    }
                    let mut ans = log.answering.lock().expect("log");
                    match ans.get(&a.addr) {
                        Some((m, _)) if *m == a.mac => {}
                        _ => {
                            ans.insert(a.addr, (a.mac, t));
                        }
                    }
                }
                Ok(_) => {}
            }
        }
    }
}
