//! Client load: a listener thread in every node namespace, a connector per
//! public address in the client namespace that opens a TCP connection
//! every [`CONNECT_INTERVAL`] and records every gap between two successful
//! connections longer than [`GAP_MIN`], and an idle connection per address
//! that waits for a reset (the tickle or release a move must cause).

use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::monitor::{spawn_in, Log, Threads};
use super::serving::Micros;

/// Port of the connect-and-close service.
pub const PORT_CONNECT: u16 = 7461;
/// Port of the service whose connections stay open.
pub const PORT_IDLE: u16 = 7462;
/// How often the connector of one address connects.
pub const CONNECT_INTERVAL: Duration = Duration::from_millis(10);
/// Gaps shorter than this are not recorded (three intervals).
pub const GAP_MIN: Duration = Duration::from_millis(30);

/// Gaps between successful connections, per address: (from, to) in the
/// log's µs.
pub type Gaps = Mutex<Vec<(IpAddr, Micros, Micros)>>;

/// An idle connection's story, per address.
#[derive(Debug, Clone, Default)]
pub struct Idle {
    /// When the current connection was established, and which node served
    /// the address then (None: nobody or several).
    pub since: Option<(Micros, Option<usize>)>,
    /// The current connection's client port.
    pub port: Option<u16>,
    /// Resets seen.
    pub resets: u64,
    /// Other endings (EOF, timeouts).
    pub other_ends: u64,
    /// How the last other ending looked.
    pub last_other: String,
}

/// The shared state of the load threads.
#[derive(Debug, Default)]
pub struct Load {
    /// Gaps seen.
    pub gaps: Gaps,
    /// Last success per address.
    pub last_ok: Mutex<std::collections::BTreeMap<IpAddr, Micros>>,
    /// Idle connections by address.
    pub idle: Mutex<std::collections::BTreeMap<IpAddr, Idle>>,
    /// Connections made.
    pub connects: std::sync::atomic::AtomicU64,
    /// Bumped to make every idle connection send one byte (see [`Load::poke`]).
    pub poke: std::sync::atomic::AtomicU64,
    /// Idle connections found dead by a poke: the client had not been
    /// reset when its server side went away.
    pub ghosts: std::sync::atomic::AtomicU64,
}

impl Load {
    /// Makes every idle connection send one byte now (the listener never
    /// reads): a connection whose server side is gone is reset by the
    /// kernel that receives it. Call, wait ~300 ms, then look at
    /// [`Load::idle`]: what is open then is really open.
    pub fn poke(&self) {
        self.poke.fetch_add(1, Ordering::Relaxed);
    }
}

/// Starts the listeners of one node namespace: accept and close on
/// [`PORT_CONNECT`], accept and keep on [`PORT_IDLE`] (dual-stack).
///
/// # Errors
///
/// When the namespace cannot be entered or a port cannot be bound.
pub fn start_listeners(threads: &mut Threads, ns: &str) -> Result<()> {
    let stop = threads.flag();
    let h = spawn_in(ns, move |ready| {
        let bind = |port: u16| -> std::io::Result<TcpListener> {
            let l = TcpListener::bind(("::", port))?;
            l.set_nonblocking(true)?;
            Ok(l)
        };
        let (a, b) = match (bind(PORT_CONNECT), bind(PORT_IDLE)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                let _ = ready.send(Err(e.into()));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        let mut kept: Vec<TcpStream> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let mut idle = true;
            while let Ok((s, _)) = a.accept() {
                drop(s);
                idle = false;
            }
            while let Ok((s, _)) = b.accept() {
                kept.push(s);
                idle = false;
            }
            // Forget connections the peer reset or closed (bounded list).
            if kept.len() > 256 {
                kept.drain(..128);
            }
            if idle {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    })?;
    threads.push(h);
    Ok(())
}

/// Starts a connector and an idle connection for each address, in the
/// client namespace.
///
/// # Errors
///
/// When the namespace cannot be entered.
pub fn start_clients(
    threads: &mut Threads,
    log: &Arc<Log>,
    load: &Arc<Load>,
    ns: &str,
    addrs: &[IpAddr],
) -> Result<()> {
    for &a in addrs {
        let (stop, log2, load2) = (threads.flag(), Arc::clone(log), Arc::clone(load));
        let h = spawn_in(ns, move |ready| {
            let _ = ready.send(Ok(()));
            connector(&stop, &log2, &load2, a);
        })?;
        threads.push(h);
        let (stop, log2, load2) = (threads.flag(), Arc::clone(log), Arc::clone(load));
        let h = spawn_in(ns, move |ready| {
            let _ = ready.send(Ok(()));
            idle(&stop, &log2, &load2, a);
        })?;
        threads.push(h);
    }
    Ok(())
}

fn connector(stop: &AtomicBool, log: &Log, load: &Load, a: IpAddr) {
    let to = SocketAddr::new(a, PORT_CONNECT);
    let mut last: Option<Micros> = None;
    let gap_min = u64::try_from(GAP_MIN.as_micros()).unwrap_or(30_000);
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        if TcpStream::connect_timeout(&to, Duration::from_millis(100)).is_ok() {
            let t = log.now();
            load.connects.fetch_add(1, Ordering::Relaxed);
            if let Some(l) = last {
                if t.saturating_sub(l) > gap_min {
                    load.gaps.lock().expect("load").push((a, l, t));
                }
            }
            last = Some(t);
            load.last_ok.lock().expect("load").insert(a, t);
        }
        if let Some(rest) = CONNECT_INTERVAL.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}

fn serving_node(log: &Log, a: IpAddr) -> Option<usize> {
    match log.placement().get(&a).map(Vec::as_slice) {
        Some([one]) => Some(*one),
        _ => None,
    }
}

fn idle(stop: &AtomicBool, log: &Log, load: &Load, a: IpAddr) {
    let to = SocketAddr::new(a, PORT_IDLE);
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_millis(200)) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let owner = serving_node(log, a);
        let port = s.local_addr().ok().map(|l| l.port());
        {
            let mut m = load.idle.lock().expect("load");
            let i = m.entry(a).or_default();
            i.since = Some((log.now(), owner));
            i.port = port;
        }
        let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
        let mut buf = [0u8; 16];
        let mut poked = load.poke.load(Ordering::Relaxed);
        let mut poked_at: Option<Instant> = None;
        let ended = loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let p = load.poke.load(Ordering::Relaxed);
            if p != poked {
                poked = p;
                poked_at = Some(Instant::now());
                let _ = std::io::Write::write(&mut s, b"p");
            }
            match s.read(&mut buf) {
                Ok(0) => break Err("end of file".to_string()),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break Ok(()),
                Err(e) => break Err(e.to_string()),
            }
        };
        if stop.load(Ordering::Relaxed) {
            // The listeners stop first at the end of a run: not a fault.
            return;
        }
        let mut m = load.idle.lock().expect("load");
        let i = m.entry(a).or_default();
        i.since = None;
        if poked_at.is_some_and(|t| t.elapsed() < Duration::from_millis(500)) {
            load.ghosts.fetch_add(1, Ordering::Relaxed);
        }
        match ended {
            Ok(()) => i.resets += 1,
            Err(how) => {
                i.other_ends += 1;
                i.last_other = how;
            }
        }
    }
}
