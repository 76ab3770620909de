//! Sockets that put built packets on the wire, and the capture socket.
//!
//! * [`FrameSender`]: an `AF_PACKET`/`SOCK_RAW` socket bound to one
//!   interface, for link-layer frames (gratuitous ARP, neighbour
//!   advertisements). Its source MAC is the interface's MAC, read from the
//!   bound socket's own address.
//! * [`SegmentSender`]: raw IPv4 and IPv6 sockets (`IPPROTO_RAW`, header
//!   included) for tickle ACKs and resets; the kernel routes them and
//!   resolves the next hop, like CTDB's `ctdb_sys_send_tcp`. Many segments go
//!   out per `sendmmsg` call.
//! * [`Capture`]: an `AF_PACKET` socket bound to one interface that sees
//!   packets in both directions (killtcp learns sequence numbers from it).
//!
//! All sockets are non-blocking and registered with tokio; they belong to
//! the network namespace of the thread that opened them.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::{build_garp, build_na, ArpKind, TcpSegment, MAX_LEN};

/// Segments per `sendmmsg` call.
const BATCH: usize = 64;

/// The iovec and mmsghdr arrays of one `sendmmsg` batch.
///
/// They hold raw pointers into buffers and addresses that live in the same
/// async function frame as the arrays (and into the arrays themselves), so
/// they stay valid wherever that frame is polled: the future may move to
/// another thread between polls and still be sound.
struct MsgArrays {
    iovs: [libc::iovec; BATCH],
    msgs: [libc::mmsghdr; BATCH],
}

// SAFETY: the raw pointers inside point only at data owned by the async fn
// frame that owns this value (see the type's doc); nothing they point at is
// shared with another thread, so moving the whole frame across threads is
// sound.
unsafe impl Send for MsgArrays {}

impl MsgArrays {
    fn new() -> Self {
        MsgArrays {
            // SAFETY: iovec is plain old data; all-zero is valid.
            iovs: unsafe { zeroed() },
            // SAFETY: mmsghdr is plain old data; all-zero is valid.
            msgs: unsafe { zeroed() },
        }
    }

    /// `sendmmsg` of messages `done..done + rest` on `fd`.
    fn sendmmsg(&mut self, fd: std::os::fd::RawFd, done: usize, rest: u32) -> io::Result<usize> {
        if done >= BATCH {
            return Ok(0);
        }
        // SAFETY: `done < BATCH`, and msgs[done..done + rest] point at live
        // buffers, iovecs and addresses of the caller's frame that outlive
        // the call.
        let r = unsafe { libc::sendmmsg(fd, self.msgs.as_mut_ptr().add(done), rest, 0) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(usize::try_from(r).expect("non-negative"))
        }
    }
}
/// Receive buffer asked for a capture socket (forced: we are root).
const CAPTURE_RCVBUF: libc::c_int = 16 << 20;
const ETH_P_ALL: u16 = 0x0003;
const ARPHRD_ETHER: u16 = 1;

/// Errors of the senders and the capture socket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// No interface has this name.
    #[error("no such interface: {name}")]
    NoSuchInterface {
        /// The name asked for.
        name: String,
    },
    /// A socket could not be opened, bound or registered.
    #[error("cannot open a {what} socket on {interface}: {source}")]
    Open {
        /// Which socket.
        what: &'static str,
        /// The interface (`*` for raw IP sockets).
        interface: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A send failed.
    #[error("sending on {interface} failed: {source}")]
    Send {
        /// The interface (`*` for raw IP sockets).
        interface: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A receive failed.
    #[error("capture on {interface} failed: {source}")]
    Recv {
        /// The interface.
        interface: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn ifindex(name: &str) -> Result<libc::c_int, SendError> {
    let missing = || SendError::NoSuchInterface { name: name.into() };
    if name.is_empty() || name.len() > 15 {
        return Err(missing());
    }
    let idx = nix::net::if_::if_nametoindex(name).map_err(|_| missing())?;
    libc::c_int::try_from(idx).map_err(|_| missing())
}

fn open_socket(domain: libc::c_int, ty: libc::c_int, proto: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call with constant arguments; the result is
    // checked before it is wrapped.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd stays open and keeps its descriptor for as long as
    // the AsyncFd owns it.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) }
        .map_err(|e| e.into_parts().1)
}

/// Binds a packet socket to `ifindex` and returns its own link address.
fn bind_packet(fd: &OwnedFd, ifindex: libc::c_int, proto: u16) -> io::Result<libc::sockaddr_ll> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
    sll.sll_family = u16::try_from(libc::AF_PACKET).expect("AF_PACKET fits in u16");
    sll.sll_protocol = proto.to_be();
    sll.sll_ifindex = ifindex;
    let len = libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>()).expect("small struct");
    // SAFETY: sll is a valid sockaddr_ll of the given length.
    let rc = unsafe { libc::bind(fd.as_raw_fd(), (&raw const sll).cast(), len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut own: libc::sockaddr_ll = sll;
    let mut olen = len;
    // SAFETY: own is writable and olen holds its size.
    let rc = unsafe { libc::getsockname(fd.as_raw_fd(), (&raw mut own).cast(), &raw mut olen) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(own)
}

/// Sends link-layer frames on one interface.
#[derive(Debug)]
pub struct FrameSender {
    fd: AsyncFd<OwnedFd>,
    interface: String,
    mac: Option<[u8; 6]>,
}

impl FrameSender {
    /// Opens the sender on `interface`.
    ///
    /// # Errors
    ///
    /// [`SendError::NoSuchInterface`], or [`SendError::Open`] (no permission).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn open(interface: &str) -> Result<FrameSender, SendError> {
        let idx = ifindex(interface)?;
        let open = |source| SendError::Open {
            what: "packet",
            interface: interface.into(),
            source,
        };
        // Protocol 0: this socket receives nothing.
        let fd = open_socket(libc::AF_PACKET, libc::SOCK_RAW, 0).map_err(open)?;
        let own = bind_packet(&fd, idx, 0).map_err(open)?;
        let mac = (own.sll_hatype == ARPHRD_ETHER && own.sll_halen == 6).then(|| {
            let mut m = [0u8; 6];
            m.copy_from_slice(&own.sll_addr[..6]);
            m
        });
        Ok(FrameSender {
            fd: register(fd).map_err(open)?,
            interface: interface.into(),
            mac,
        })
    }

    /// The interface's MAC; `None` when it is not Ethernet (loopback, ...).
    pub fn mac(&self) -> Option<[u8; 6]> {
        self.mac
    }

    /// Sends one complete frame.
    ///
    /// # Errors
    ///
    /// [`SendError::Send`] when the kernel refuses it (interface down: `ENETDOWN`).
    pub async fn send(&self, frame: &[u8]) -> Result<(), SendError> {
        self.fd
            .async_io(Interest::WRITABLE, |fd| {
                // SAFETY: frame is a valid readable slice of frame.len() bytes.
                let n =
                    unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            })
            .await
            .map_err(|source| SendError::Send {
                interface: self.interface.clone(),
                source,
            })
    }

    /// The interface's `IFF_*` flags now (`SIOCGIFFLAGS`).
    fn flags(&self) -> io::Result<libc::c_int> {
        // SAFETY: ifreq is plain old data; all-zero is valid.
        let mut req: libc::ifreq = unsafe { zeroed() };
        for (d, s) in req.ifr_name.iter_mut().zip(self.interface.bytes().take(15)) {
            *d = libc::c_char::from_ne_bytes([s]);
        }
        // SAFETY: req is a valid, NUL-terminated ifreq the kernel fills in.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut req) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: SIOCGIFFLAGS fills the flags member of the union.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        // IFF_* flags are a bit set: reinterpret the short's bits.
        Ok(libc::c_int::from(u16::from_ne_bytes(flags.to_ne_bytes())))
    }

    /// Announces `ip` at this interface's MAC, as CTDB's `ctdb_sys_send_arp`
    /// does: for IPv4 a gratuitous ARP request then a reply, both broadcast;
    /// for IPv6 one unsolicited neighbour advertisement to ff02::1. Returns
    /// the number of frames sent: 0 on an interface without a MAC
    /// (loopback), which CTDB counts as success.
    ///
    /// # Errors
    ///
    /// [`SendError::Send`] when a send fails.
    pub async fn announce(&self, ip: IpAddr) -> Result<usize, SendError> {
        let Some(mac) = self.mac else {
            return Ok(0);
        };
        let flags = self.flags().map_err(|source| SendError::Send {
            interface: self.interface.clone(),
            source,
        })?;
        let no_arp = libc::IFF_NOARP | libc::IFF_LOOPBACK;
        if flags & libc::IFF_UP == 0 || flags & no_arp != 0 {
            return Ok(0);
        }
        let mut buf = [0u8; MAX_LEN];
        match ip {
            IpAddr::V4(v4) => {
                for kind in [ArpKind::Request, ArpKind::Reply] {
                    let n = build_garp(&mut buf, mac, v4, kind).expect("buffer holds MAX_LEN");
                    self.send(&buf[..n]).await?;
                }
                Ok(2)
            }
            IpAddr::V6(v6) => {
                let n = build_na(&mut buf, mac, v6).expect("buffer holds MAX_LEN");
                self.send(&buf[..n]).await?;
                Ok(1)
            }
        }
    }
}

/// What a batch send achieved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendStats {
    /// Segments handed to the kernel.
    pub sent: usize,
    /// Segments the kernel refused (unreachable destination, ...).
    pub failed: usize,
}

/// Sends TCP segments (tickle ACKs, resets) through raw IP sockets.
#[derive(Debug)]
pub struct SegmentSender {
    v4: AsyncFd<OwnedFd>,
    v6: Option<AsyncFd<OwnedFd>>,
}

union SockAddrIn {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

fn sockaddr(ip: IpAddr) -> (SockAddrIn, libc::socklen_t) {
    match ip {
        IpAddr::V4(a) => {
            // SAFETY: sockaddr_in is plain old data; all-zero is valid.
            let mut s: libc::sockaddr_in = unsafe { zeroed() };
            s.sin_family = libc::sa_family_t::try_from(libc::AF_INET).expect("AF_INET fits");
            s.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
            let len = libc::socklen_t::try_from(size_of::<libc::sockaddr_in>()).expect("small");
            (SockAddrIn { v4: s }, len)
        }
        IpAddr::V6(a) => {
            // SAFETY: sockaddr_in6 is plain old data; all-zero is valid.
            let mut s: libc::sockaddr_in6 = unsafe { zeroed() };
            s.sin6_family = libc::sa_family_t::try_from(libc::AF_INET6).expect("AF_INET6 fits");
            s.sin6_addr.s6_addr = a.octets();
            let len = libc::socklen_t::try_from(size_of::<libc::sockaddr_in6>()).expect("small");
            (SockAddrIn { v6: s }, len)
        }
    }
}

impl SegmentSender {
    /// Opens the raw IPv4 socket and, when IPv6 is available, the IPv6 one.
    ///
    /// # Errors
    ///
    /// [`SendError::Open`] (no permission).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn open() -> Result<SegmentSender, SendError> {
        let open = |source| SendError::Open {
            what: "raw IP",
            interface: "*".into(),
            source,
        };
        // IPPROTO_RAW implies IP_HDRINCL (IPv4) and IPV6_HDRINCL (IPv6,
        // Linux >= 4.5): we write the whole IP header.
        let v4 = open_socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW).map_err(open)?;
        let v6 = open_socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_RAW)
            .ok()
            .map(register)
            .transpose()
            .map_err(open)?;
        Ok(SegmentSender {
            v4: register(v4).map_err(open)?,
            v6,
        })
    }

    /// Sends every segment, 64 per `sendmmsg` call. Segments the kernel
    /// refuses one by one (no route, ...) are counted in
    /// [`SendStats::failed`] and skipped.
    ///
    /// # Errors
    ///
    /// [`SendError::Send`] when IPv6 segments are given but no IPv6 raw
    /// socket could be opened.
    pub async fn send(&self, segments: &[TcpSegment]) -> Result<SendStats, SendError> {
        let mut stats = SendStats::default();
        let (v4, v6): (Vec<&TcpSegment>, Vec<&TcpSegment>) =
            segments.iter().partition(|s| s.dst.is_ipv4());
        for chunk in v4.chunks(BATCH) {
            self.send_chunk(&self.v4, chunk, &mut stats).await?;
        }
        if !v6.is_empty() {
            let Some(fd) = &self.v6 else {
                return Err(SendError::Send {
                    interface: "*".into(),
                    source: io::Error::from_raw_os_error(libc::EAFNOSUPPORT),
                });
            };
            for chunk in v6.chunks(BATCH) {
                self.send_chunk(fd, chunk, &mut stats).await?;
            }
        }
        Ok(stats)
    }

    async fn send_chunk(
        &self,
        fd: &AsyncFd<OwnedFd>,
        chunk: &[&TcpSegment],
        stats: &mut SendStats,
    ) -> Result<(), SendError> {
        let mut bufs = [[0u8; 64]; BATCH];
        let mut lens = [0usize; BATCH];
        let mut addrs: Vec<(SockAddrIn, libc::socklen_t)> = Vec::with_capacity(chunk.len());
        let mut n = 0;
        for seg in chunk {
            match seg.build(&mut bufs[n]) {
                Ok(len) => {
                    lens[n] = len;
                    addrs.push(sockaddr(seg.dst.ip()));
                    n += 1;
                }
                Err(_) => stats.failed += 1,
            }
        }
        let mut arrays = MsgArrays::new();
        {
            let MsgArrays { iovs, msgs } = &mut arrays;
            for i in 0..n {
                iovs[i].iov_base = bufs[i].as_mut_ptr().cast();
                iovs[i].iov_len = lens[i];
                msgs[i].msg_hdr.msg_name = (&raw mut addrs[i].0).cast();
                msgs[i].msg_hdr.msg_namelen = addrs[i].1;
                msgs[i].msg_hdr.msg_iov = &raw mut iovs[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
        }
        let mut done = 0;
        while done < n {
            let rest = u32::try_from(n - done).expect("BATCH fits in u32");
            let r = fd
                .async_io(Interest::WRITABLE, |fd| {
                    arrays.sendmmsg(fd.as_raw_fd(), done, rest)
                })
                .await;
            match r {
                Ok(k) => {
                    stats.sent += k;
                    done += k;
                }
                Err(e)
                    if e.raw_os_error() == Some(libc::EPERM)
                        || e.raw_os_error() == Some(libc::EACCES) =>
                {
                    return Err(SendError::Send {
                        interface: "*".into(),
                        source: e,
                    })
                }
                // The segment at `done` is refused: skip it.
                Err(_) => {
                    stats.failed += 1;
                    done += 1;
                }
            }
        }
        Ok(())
    }
}

/// What [`Capture`] sees: IP packets (link header stripped) or whole frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureMode {
    /// `SOCK_DGRAM`: the buffer starts at the IP header.
    Packets,
    /// `SOCK_RAW`: the buffer starts at the Ethernet header.
    Frames,
}

/// One captured packet's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Captured {
    /// Bytes written to the buffer.
    pub len: usize,
    /// True when this host sent it (`PACKET_OUTGOING`).
    pub outgoing: bool,
}

/// A capture socket on one interface, seeing both directions.
#[derive(Debug)]
pub struct Capture {
    fd: AsyncFd<OwnedFd>,
    interface: String,
}

impl Capture {
    /// Opens a capture on `interface`. Open it before sending whatever
    /// should provoke the packets to capture.
    ///
    /// # Errors
    ///
    /// [`SendError::NoSuchInterface`], [`SendError::Open`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn open(interface: &str, mode: CaptureMode) -> Result<Capture, SendError> {
        let idx = ifindex(interface)?;
        let open = |source| SendError::Open {
            what: "capture",
            interface: interface.into(),
            source,
        };
        let ty = match mode {
            CaptureMode::Packets => libc::SOCK_DGRAM,
            CaptureMode::Frames => libc::SOCK_RAW,
        };
        let fd =
            open_socket(libc::AF_PACKET, ty, libc::c_int::from(ETH_P_ALL.to_be())).map_err(open)?;
        let size = CAPTURE_RCVBUF;
        let len = libc::socklen_t::try_from(size_of::<libc::c_int>()).expect("small");
        // SAFETY: size is a valid c_int for the option's length. Best effort.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&raw const size).cast(),
                len,
            );
        }
        bind_packet(&fd, idx, ETH_P_ALL).map_err(open)?;
        Ok(Capture {
            fd: register(fd).map_err(open)?,
            interface: interface.into(),
        })
    }

    /// Makes the kernel pass only IPv4/IPv6 TCP packets to this socket (a
    /// classic BPF filter), so a busy interface does not flood userspace.
    /// Only for [`CaptureMode::Packets`], where the data starts at the IP
    /// header; packets queued before the call may still be anything.
    ///
    /// # Errors
    ///
    /// [`SendError::Open`] when the kernel refuses the filter.
    pub fn tcp_only(&self) -> Result<(), SendError> {
        const LDB_ABS: u16 = 0x30;
        const AND_K: u16 = 0x54;
        const JEQ_K: u16 = 0x15;
        const RET_K: u16 = 0x06;
        let ins = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
        let mut prog = [
            ins(LDB_ABS, 0, 0, 0),    // 0: A = version byte
            ins(AND_K, 0, 0, 0xf0),   // 1: A &= 0xf0
            ins(JEQ_K, 0, 2, 0x40),   // 2: IPv4? -> 3 else 5
            ins(LDB_ABS, 0, 0, 9),    // 3: A = IPv4 protocol
            ins(JEQ_K, 3, 4, 6),      // 4: TCP? -> 8 else 9
            ins(JEQ_K, 0, 3, 0x60),   // 5: IPv6? -> 6 else 9
            ins(LDB_ABS, 0, 0, 6),    // 6: A = IPv6 next header
            ins(JEQ_K, 0, 1, 6),      // 7: TCP? -> 8 else 9
            ins(RET_K, 0, 0, 0xffff), // 8: accept
            ins(RET_K, 0, 0, 0),      // 9: drop
        ];
        let fprog = libc::sock_fprog {
            len: u16::try_from(prog.len()).expect("10 instructions"),
            filter: prog.as_mut_ptr(),
        };
        let len = libc::socklen_t::try_from(size_of::<libc::sock_fprog>()).expect("small");
        // SAFETY: fprog points at `prog`, which lives until the call returns;
        // the kernel copies the program.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&raw const fprog).cast(),
                len,
            )
        };
        if rc < 0 {
            return Err(SendError::Open {
                what: "capture filter",
                interface: self.interface.clone(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    fn recv_raw(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Captured> {
        // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
        let mut from: libc::sockaddr_ll = unsafe { zeroed() };
        let mut flen = libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>()).expect("small");
        // SAFETY: buf and from are writable for the lengths given.
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&raw mut from).cast(),
                &raw mut flen,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Captured {
            len: usize::try_from(n).expect("non-negative"),
            outgoing: from.sll_pkttype == libc::PACKET_OUTGOING,
        })
    }

    /// Waits for the next packet.
    ///
    /// # Errors
    ///
    /// [`SendError::Recv`].
    pub async fn recv(&self, buf: &mut [u8]) -> Result<Captured, SendError> {
        self.fd
            .async_io(Interest::READABLE, |fd| Self::recv_raw(fd, buf))
            .await
            .map_err(|source| SendError::Recv {
                interface: self.interface.clone(),
                source,
            })
    }

    /// Returns a packet if one is queued, without waiting.
    ///
    /// # Errors
    ///
    /// [`SendError::Recv`].
    pub fn try_recv(&self, buf: &mut [u8]) -> Result<Option<Captured>, SendError> {
        match Self::recv_raw(self.fd.get_ref(), buf) {
            Ok(c) => Ok(Some(c)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(source) => Err(SendError::Recv {
                interface: self.interface.clone(),
                source,
            }),
        }
    }
}

/// Compile-time check: the sending futures are `Send`, so daemons can
/// spawn them on a multi-threaded runtime (this fails to compile otherwise).
#[cfg(test)]
#[allow(dead_code)]
fn sending_futures_are_send(
    sender: &SegmentSender,
    kill: &crate::killtcp::KillTcp,
    conns: &[crate::sockdiag::Connection],
) {
    fn assert_send<T: Send>(_: &T) {}
    assert_send(&sender.send(&[]));
    assert_send(&kill.execute(conns));
}
