//! An ARP prober for a client namespace: who answers for an address, and
//! when. It broadcasts an ARP request for every target each `every` and
//! records every reply with the round it answers, so that two hosts
//! answering for one address in one round — both configured and both not
//! blocked: a duplicate a client can reach — is seen directly, from the
//! wire, whatever the nodes' own state says.
//!
//! **Which round a reply answers** is decided on the kernel's clock: each
//! reply carries the time the client's kernel received it
//! (`SO_TIMESTAMPNS`), and it belongs to the last round whose requests
//! were sent before that time — not to the round that was current when
//! the prober thread got to read it, which under load can be a later one
//! (a thread descheduled for a few rounds reads an old reply together
//! with newer ones). Both attributions are kept ([`Reply::round`],
//! [`Reply::read_round`]). A round that starts late (the thread was
//! descheduled) starts when it is sent: missed rounds are skipped, not
//! sent in a burst.
//!
//! Every ARP reply counts, gratuitous ones included (marked
//! [`Reply::gratuitous`]: target address = sender address, or not
//! addressed to the client): a node that announces an address tells the
//! clients to send to it, which it must not do while another node serves
//! the address. An announcement counts in the round *after* the one it
//! was received in: it collides with another MAC's answer to a request
//! sent after it. Two answers to one request show both hosts had the
//! address when the request arrived; an announcement received after
//! another host's answer to the same round's request shows no overlap — a
//! handover (release, then take and announce) completes within one 5 ms
//! round since releases answer in ~2 ms, and was reported as a duplicate
//! when an announcement counted in its own round.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use pnet::datalink;

use crate::netns::NetNs;

/// One reply: to which probe round, for which address, from which MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// The probe round (1, 2, ...; 0: before the first) it answers: the
    /// last one sent before the kernel received the reply, or for an
    /// announcement the next one (see [`round_of`]).
    pub round: u64,
    /// When the client's kernel received it, since the prober started
    /// (kernel timestamp).
    pub at: Duration,
    /// When the prober read it, since it started.
    pub read_at: Duration,
    /// The round that was current when the prober read it.
    pub read_round: u64,
    /// The address answered for.
    pub target: Ipv4Addr,
    /// Who answered.
    pub mac: [u8; 6],
    /// An announcement (target address = sender address, or not addressed
    /// to the client), not an answer to the client's request.
    pub gratuitous: bool,
}

/// A running prober; [`ArpProber::finish`] stops it and returns the replies.
pub struct ArpProber {
    stop: Arc<AtomicBool>,
    replies: Arc<Mutex<Vec<Reply>>>,
    /// When each round's requests were sent, since the start (wall clock).
    rounds: Arc<Mutex<Vec<Duration>>>,
    thread: Option<JoinHandle<Result<()>>>,
    started: Instant,
}

/// 42-byte Ethernet + ARP request from `mac`/`ip` for `target`.
#[must_use]
pub fn request(mac: [u8; 6], ip: Ipv4Addr, target: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]); // broadcast
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    f[14..20].copy_from_slice(&[0, 1, 8, 0, 6, 4]); // Ethernet, IPv4, 6, 4
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    // target hardware address: zero
    f[38..42].copy_from_slice(&target.octets());
    f
}

/// The sender of an ARP reply frame: (its IPv4 address, its MAC); `None`
/// for anything else (bounds-checked).
#[must_use]
pub fn parse_reply(frame: &[u8]) -> Option<(Ipv4Addr, [u8; 6])> {
    let f = frame.get(..42)?;
    if f[12..14] != [0x08, 0x06] || f[14..20] != [0, 1, 8, 0, 6, 4] || f[20..22] != [0, 2] {
        return None;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&f[22..28]);
    let ip = Ipv4Addr::new(f[28], f[29], f[30], f[31]);
    Some((ip, mac))
}

/// The target protocol address of an ARP frame (checked by
/// [`parse_reply`] first).
fn target_of(frame: &[u8]) -> Option<Ipv4Addr> {
    let t = frame.get(38..42)?;
    Some(Ipv4Addr::new(t[0], t[1], t[2], t[3]))
}

/// Ns since the epoch on the wall clock (0 before 1970).
fn wall_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A packet socket for ARP frames on interface `index`, with kernel
/// receive timestamps.
fn arp_socket(index: u32) -> Result<OwnedFd> {
    let proto = u16::try_from(libc::ETH_P_ARP).unwrap_or(0x0806).to_be();
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
    // SAFETY: sockaddr_ll is plain data; zeroed is valid.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = u16::try_from(libc::AF_PACKET).unwrap_or(17);
    sa.sll_protocol = proto;
    sa.sll_ifindex = i32::try_from(index).context("interface index")?;
    let len = u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap_or(20);
    // SAFETY: sa is a valid sockaddr_ll of `len` bytes.
    if unsafe { libc::bind(fd.as_raw_fd(), (&raw const sa).cast(), len) } < 0 {
        bail!("packet bind: {}", std::io::Error::last_os_error());
    }
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with a valid int option value.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&raw const on).cast(),
            4,
        )
    };
    if r < 0 {
        bail!("SO_TIMESTAMPNS: {}", std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// One received frame: its length, whether it was outgoing, and the
/// kernel's receive time (ns since the epoch; 0 when the kernel gave none).
fn recv_frame(fd: &OwnedFd, buf: &mut [u8]) -> Option<(usize, bool, u64)> {
    // SAFETY: sockaddr_ll is plain data.
    let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut control = [0u64; 16]; // 128 bytes, aligned for cmsghdr
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; zeroed is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut from).cast();
    msg.msg_namelen = u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap_or(20);
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: every pointer in msg is valid for its length for this call.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &raw mut msg, 0) };
    let n = usize::try_from(n).ok()?;
    let mut ns = 0u64;
    // SAFETY: CMSG_FIRSTHDR/NXTHDR walk the control buffer the kernel
    // filled (msg_controllen says how much); the data is read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&raw const msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
                let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
                ns = secs.saturating_mul(1_000_000_000).saturating_add(nanos);
            }
            c = libc::CMSG_NXTHDR(&raw const msg, c);
        }
    }
    Some((
        n.min(buf.len()),
        from.sll_pkttype == libc::PACKET_OUTGOING,
        ns,
    ))
}

fn poll_in(fd: &OwnedFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: p is one valid pollfd.
    unsafe { libc::poll(&raw mut p, 1, ms) > 0 }
}

/// The round a reply counts in: [`round_at`] its kernel receive time for
/// an answer; the round after that for an announcement, which collides
/// only with answers to requests sent after it (see the module's doc).
#[must_use]
pub fn round_of(rounds: &[Duration], r: &Reply) -> u64 {
    round_at(rounds, r.at).saturating_add(u64::from(r.gratuitous))
}

/// The round a reply received at `at` answers: how many rounds were sent
/// at or before it (`rounds` in sending order).
#[must_use]
pub fn round_at(rounds: &[Duration], at: Duration) -> u64 {
    u64::try_from(rounds.partition_point(|s| *s <= at)).unwrap_or(u64::MAX)
}

impl ArpProber {
    /// Starts probing `targets` from interface `iface` (address `ip`) of
    /// namespace `ns`, one round every `every`, for at most `limit`.
    ///
    /// # Errors
    ///
    /// When the namespace, interface or packet socket cannot be opened.
    pub fn start(
        ns: &NetNs,
        iface: &str,
        ip: Ipv4Addr,
        targets: Vec<Ipv4Addr>,
        every: Duration,
        limit: Duration,
    ) -> Result<ArpProber> {
        let stop = Arc::new(AtomicBool::new(false));
        let replies = Arc::new(Mutex::new(Vec::new()));
        let rounds = Arc::new(Mutex::new(Vec::new()));
        // Both clocks, back to back: kernel timestamps are wall-clock.
        let started_wall = wall_ns(SystemTime::now());
        let started = Instant::now();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let path = format!("/run/netns/{}", ns.name());
        let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        let iface = iface.to_owned();
        let (s, r, sent) = (Arc::clone(&stop), Arc::clone(&replies), Arc::clone(&rounds));
        let since = move |wall: u64| Duration::from_nanos(wall.saturating_sub(started_wall));
        let thread = std::thread::spawn(move || -> Result<()> {
            let setup = || -> Result<_> {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .context("setns into the client namespace")?;
                let nic = datalink::interfaces()
                    .into_iter()
                    .find(|i| i.name == iface)
                    .with_context(|| format!("no interface {iface}"))?;
                let mac = nic.mac.context("interface without a MAC")?.octets();
                Ok((mac, arp_socket(nic.index)?))
            };
            let (mac, sock) = match setup() {
                Ok(x) => {
                    let _ = ready_tx.send(Ok(()));
                    x
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::anyhow!("{e:#}")));
                    return Err(e);
                }
            };
            let frames: Vec<[u8; 42]> = targets.iter().map(|t| request(mac, ip, *t)).collect();
            let wanted: BTreeSet<Ipv4Addr> = targets.iter().copied().collect();
            let mut round = 0u64;
            let mut next = Instant::now();
            let mut buf = [0u8; 256];
            while !s.load(Ordering::Relaxed) && started.elapsed() < limit {
                if Instant::now() >= next {
                    round += 1;
                    // The round starts before its first request leaves.
                    sent.lock()
                        .expect("rounds")
                        .push(since(wall_ns(SystemTime::now())));
                    for f in &frames {
                        // SAFETY: f is a valid buffer of f.len() bytes.
                        unsafe { libc::send(sock.as_raw_fd(), f.as_ptr().cast(), f.len(), 0) };
                    }
                    // After a delay, the next round is `every` from now:
                    // missed rounds are skipped, not sent in a burst.
                    next = (next + every).max(Instant::now());
                }
                // At most 20 ms, so that a stop is seen soon.
                let wait = next
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(20));
                if !poll_in(&sock, i32::try_from(wait.as_millis()).unwrap_or(5).max(1)) {
                    continue;
                }
                while let Some((n, outgoing, ns)) = recv_frame(&sock, &mut buf) {
                    if outgoing {
                        continue;
                    }
                    let frame = &buf[..n];
                    let Some((from, mac)) = parse_reply(frame) else {
                        continue;
                    };
                    if !wanted.contains(&from) {
                        continue;
                    }
                    let read_at = started.elapsed();
                    let to = target_of(frame);
                    r.lock().expect("replies").push(Reply {
                        round: 0, // set by `finish`, from `at`
                        at: if ns == 0 { read_at } else { since(ns) },
                        read_at,
                        read_round: round,
                        target: from,
                        mac,
                        gratuitous: to != Some(ip),
                    });
                }
            }
            Ok(())
        });
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => bail!("the ARP prober did not start"),
        }
        Ok(ArpProber {
            stop,
            replies,
            rounds,
            thread: Some(thread),
            started,
        })
    }

    /// Time since the prober started (the clock of [`Reply::at`]).
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops probing and returns every reply, each with the round it
    /// answers.
    ///
    /// # Errors
    ///
    /// When the probing thread failed.
    pub fn finish(mut self) -> Result<Vec<Reply>> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(r) => r?,
                Err(_) => bail!("the ARP prober panicked"),
            }
        }
        let rounds = self.rounds.lock().expect("rounds").clone();
        let mut replies = std::mem::take(&mut *self.replies.lock().expect("replies"));
        for r in &mut replies {
            r.round = round_of(&rounds, r);
        }
        Ok(replies)
    }
}

impl Drop for ArpProber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Rounds in which two different MACs answered (or announced) one
/// address: (address, round, the MACs).
#[must_use]
pub fn duplicates(replies: &[Reply]) -> Vec<(Ipv4Addr, u64, Vec<[u8; 6]>)> {
    duplicates_by(replies, |r| Some(r.round))
}

/// [`duplicates`] with the round each reply counts in given by `round`
/// (`None`: the reply does not count).
pub fn duplicates_by(
    replies: &[Reply],
    round: impl Fn(&Reply) -> Option<u64>,
) -> Vec<(Ipv4Addr, u64, Vec<[u8; 6]>)> {
    let mut by: BTreeMap<(Ipv4Addr, u64), BTreeSet<[u8; 6]>> = BTreeMap::new();
    for r in replies {
        if let Some(n) = round(r) {
            by.entry((r.target, n)).or_default().insert(r.mac);
        }
    }
    by.into_iter()
        .filter(|(_, macs)| macs.len() > 1)
        .map(|((a, round), macs)| (a, round, macs.into_iter().collect()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_parses_as_no_reply_and_a_reply_parses() {
        let mac = [2, 0, 0, 0, 0, 1];
        let ip = Ipv4Addr::new(192, 0, 2, 100);
        let target = Ipv4Addr::new(192, 0, 2, 201);
        let mut f = request(mac, ip, target);
        assert_eq!(parse_reply(&f), None);
        f[21] = 2; // make it a reply from `ip`
        assert_eq!(parse_reply(&f), Some((ip, mac)));
        assert_eq!(parse_reply(&f[..41]), None);
    }

    fn reply(round: u64, m: u8) -> Reply {
        Reply {
            round,
            at: Duration::ZERO,
            read_at: Duration::ZERO,
            read_round: round,
            target: Ipv4Addr::new(192, 0, 2, 201),
            mac: [m; 6],
            gratuitous: false,
        }
    }

    #[test]
    fn two_macs_in_one_round_are_a_duplicate() {
        let a = Ipv4Addr::new(192, 0, 2, 201);
        let r = reply;
        // A move between rounds is fine; two answers in one round are not.
        assert!(duplicates(&[r(1, 1), r(2, 2), r(3, 2)]).is_empty());
        assert_eq!(
            duplicates(&[r(1, 1), r(2, 1), r(2, 2)]),
            vec![(a, 2, vec![[1; 6], [2; 6]])]
        );
        // An announcement counts as an answer.
        let garp = Reply {
            gratuitous: true,
            ..r(2, 2)
        };
        assert_eq!(duplicates(&[r(1, 1), r(2, 1), garp]).len(), 1);
    }

    #[test]
    fn an_announcement_collides_with_answers_to_later_requests_only() {
        let ms = Duration::from_millis;
        let rounds = [ms(0), ms(5), ms(10)];
        let at = |at: Duration, m: u8, gratuitous: bool| {
            let mut r = Reply {
                at,
                gratuitous,
                ..reply(0, m)
            };
            r.round = round_of(&rounds, &r);
            r
        };
        // Node 1 answers round 2's request (sent at 5 ms), is released,
        // node 2 takes and announces at 8 ms: a handover, no overlap.
        let handover = [at(ms(5), 1, false), at(ms(8), 2, true)];
        assert!(duplicates(&handover).is_empty());
        // Node 1 still answering round 3's request after node 2's
        // announcement: both had it.
        let both = [at(ms(8), 2, true), at(ms(10), 1, false)];
        assert_eq!(duplicates(&both).len(), 1);
        // Two answers to one request are a duplicate, announcements or not.
        assert_eq!(
            duplicates(&[at(ms(6), 1, false), at(ms(7), 2, false)]).len(),
            1
        );
    }

    #[test]
    fn a_reply_answers_the_last_round_sent_before_the_kernel_received_it() {
        let ms = Duration::from_millis;
        let rounds = [ms(0), ms(5), ms(10), ms(40)];
        assert_eq!(round_at(&rounds, ms(1)), 1);
        assert_eq!(round_at(&rounds, ms(5)), 2);
        assert_eq!(round_at(&rounds, ms(39)), 3);
        assert_eq!(round_at(&rounds, ms(41)), 4);
        assert_eq!(round_at(&[], ms(1)), 0);
        // Received in round 3 (before a 30 ms stall of the prober), read
        // with round 4's answers: the old attribution made a duplicate.
        let old = Reply {
            at: ms(12),
            read_round: 4,
            ..reply(round_at(&rounds, ms(12)), 1)
        };
        let new = Reply {
            at: ms(41),
            ..reply(round_at(&rounds, ms(41)), 2)
        };
        assert!(duplicates(&[old, new]).is_empty());
        assert_eq!(duplicates_by(&[old, new], |r| Some(r.read_round)).len(), 1);
    }
}
