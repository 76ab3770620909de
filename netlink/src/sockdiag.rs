//! TCP connections from the kernel's socket tables (sock_diag / inet_diag),
//! like `ss -tn state established src ADDR`, and their forced close
//! (`SOCK_DESTROY`, like `ss -K`).
//!
//! Owns: one `NETLINK_SOCK_DIAG` socket per [`SockDiag`] handle, opened in
//! the caller's network namespace. Knows nothing of public IPs or clusters:
//! the caller passes the local addresses it cares about.
//!
//! Invariants: IPv4-mapped IPv6 addresses (a dual-stack listener's
//! connections) are reported as plain IPv4, so a [`Connection`] compares
//! equal whichever socket family carried it. Every request has a time limit.

mod nlsock;

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
    SockDiagDestroy, SockDiagMessage,
};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;

pub use nlsock::WireError;
pub(crate) use nlsock::{messages, NlSocket, NLMSG_DONE, NLMSG_ERROR};

/// How long one dump or destroy request may take before it fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Most datagrams one dump may return (a bound on the read loop; at ~100
/// sockets per datagram this allows millions of sockets).
const MAX_DATAGRAMS: usize = 1 << 16;

/// One TCP connection seen from this host: `local` is this host's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Connection {
    /// This host's address and port (e.g. a public IP and 445).
    pub local: SocketAddr,
    /// The peer's address and port (the client).
    pub remote: SocketAddr,
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} <-> {}", self.local, self.remote)
    }
}

/// Turns `::ffff:a.b.c.d` into `a.b.c.d`; other addresses are unchanged.
pub fn canonical(addr: IpAddr) -> IpAddr {
    addr.to_canonical()
}

fn canonical_sa(sa: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical(sa.ip()), sa.port())
}

/// Errors of sock_diag requests.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SockDiagError {
    /// The netlink socket could not be opened (no tokio runtime, or the
    /// kernel lacks sock_diag).
    #[error("opening a sock_diag netlink socket")]
    Open(#[source] io::Error),
    /// Sending or receiving on the socket failed.
    #[error("sock_diag {op}: socket I/O failed")]
    Io {
        /// The request (`dump` or `destroy`).
        op: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The kernel answered with an error (errno kept matchable).
    #[error("sock_diag {op} for {what}: kernel error {errno}")]
    Kernel {
        /// The request (`dump` or `destroy`).
        op: &'static str,
        /// What was asked (family or connection).
        what: String,
        /// The kernel's errno (positive), e.g. `libc::EOPNOTSUPP` when
        /// `CONFIG_INET_DIAG_DESTROY` is off, `libc::EPERM` without
        /// `CAP_NET_ADMIN`.
        errno: i32,
    },
    /// The kernel's answer could not be parsed.
    #[error("sock_diag {op}: malformed answer from the kernel")]
    Malformed {
        /// The request.
        op: &'static str,
        /// The cause.
        #[source]
        source: WireError,
    },
    /// The kernel's answer could not be decoded by netlink-packet-sock-diag.
    #[error("sock_diag {op}: undecodable answer from the kernel: {detail}")]
    Decode {
        /// The request.
        op: &'static str,
        /// The decoder's message.
        detail: String,
    },
    /// The kernel did not finish answering in time.
    #[error("sock_diag {op}: no complete answer within {limit:?}")]
    Timeout {
        /// The request.
        op: &'static str,
        /// The limit that passed.
        limit: Duration,
    },
}

/// The result of [`DestroyRequest::execute`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestroyReport {
    /// Connections whose socket the kernel closed (it sent a RST).
    pub destroyed: Vec<Connection>,
    /// Connections with no such socket (already gone): not an error.
    pub missing: Vec<Connection>,
}

/// A handle on one sock_diag socket, like `ss`. Requests borrow it mutably,
/// so they never interleave.
#[derive(Debug)]
pub struct SockDiag {
    socket: NlSocket,
    seq: u32,
}

impl SockDiag {
    /// Opens the socket in the calling thread's network namespace. Must be
    /// called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`SockDiagError::Open`] when the socket cannot be opened.
    pub fn new() -> Result<SockDiag, SockDiagError> {
        Ok(SockDiag {
            socket: NlSocket::open(NETLINK_SOCK_DIAG).map_err(SockDiagError::Open)?,
            seq: 0,
        })
    }

    /// The ESTABLISHED TCP connections whose local address is one of
    /// `locals` (all of them when `locals` is empty), IPv4 and IPv6, like
    /// `ss -tn state established src ADDR`.
    pub fn established(&mut self, locals: &[IpAddr]) -> EstablishedRequest<'_> {
        EstablishedRequest {
            handle: self,
            locals: locals.iter().copied().map(canonical).collect(),
        }
    }

    /// Closes the given connections' local sockets (the kernel sends the
    /// peer a RST and the local application gets ECONNABORTED), like
    /// `ss -K`.
    pub fn destroy(&mut self, connections: &[Connection]) -> DestroyRequest<'_> {
        DestroyRequest {
            handle: self,
            connections: connections.to_vec(),
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }
}

/// A dump of established connections; run it with
/// [`EstablishedRequest::execute`].
#[derive(Debug)]
pub struct EstablishedRequest<'a> {
    handle: &'a mut SockDiag,
    locals: HashSet<IpAddr>,
}

fn serialize<T>(mut msg: NetlinkMessage<T>) -> Vec<u8>
where
    T: netlink_packet_core::NetlinkSerializable,
{
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    // The buffer has exactly the length the message asked for.
    msg.serialize(&mut buf);
    buf
}

fn inet_request(family: u8, states: StateFlags, socket_id: SocketId) -> SockDiagMessage {
    SockDiagMessage::InetRequest(InetRequest {
        family,
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::empty(),
        states,
        socket_id,
    })
}

impl EstablishedRequest<'_> {
    /// Runs the dump (one per address family needed).
    ///
    /// # Errors
    ///
    /// Socket I/O failure, a kernel error, a malformed answer or a time-out.
    pub async fn execute(self) -> Result<Vec<Connection>, SockDiagError> {
        let mut found: Vec<Connection> = dump(self.handle, &self.locals)
            .await?
            .into_iter()
            .map(|e| e.conn)
            .collect();
        found.sort();
        found.dedup();
        Ok(found)
    }
}

/// Dumps the established sockets of `locals` (all when empty).
async fn dump(
    handle: &mut SockDiag,
    locals: &HashSet<IpAddr>,
) -> Result<Vec<Entry>, SockDiagError> {
    // A v4 address may also be served by a dual-stack (AF_INET6) socket,
    // so IPv6 is always dumped; IPv4 only when needed.
    let want_v4 = locals.is_empty() || locals.iter().any(IpAddr::is_ipv4);
    let mut families = vec![AF_INET6];
    if want_v4 {
        families.insert(0, AF_INET);
    }
    let mut found = Vec::new();
    for family in families {
        let op = "dump";
        let fut = dump_family(handle, family, locals, &mut found);
        tokio::time::timeout(REQUEST_TIMEOUT, fut)
            .await
            .map_err(|_| SockDiagError::Timeout {
                op,
                limit: REQUEST_TIMEOUT,
            })??;
    }
    Ok(found)
}

async fn dump_family(
    handle: &mut SockDiag,
    family: u8,
    locals: &HashSet<IpAddr>,
    found: &mut Vec<Entry>,
) -> Result<(), SockDiagError> {
    let op = "dump";
    let seq = handle.next_seq();
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let id = if family == AF_INET {
        SocketId::new_v4()
    } else {
        SocketId::new_v6()
    };
    let msg = NetlinkMessage::new(
        header,
        inet_request(family, StateFlags::ESTABLISHED, id).into(),
    );
    let request = serialize(msg);
    handle
        .socket
        .send(&request)
        .await
        .map_err(|source| SockDiagError::Io { op, source })?;
    for _ in 0..MAX_DATAGRAMS {
        let dgram = handle
            .socket
            .recv()
            .await
            .map_err(|source| SockDiagError::Io { op, source })?;
        for msg in messages(dgram) {
            let msg = msg.map_err(|source| SockDiagError::Malformed { op, source })?;
            if msg.seq != seq {
                continue; // a late answer to an earlier, timed-out request
            }
            match msg.ty {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    let errno = msg
                        .error_code()
                        .map_err(|source| SockDiagError::Malformed { op, source })?;
                    if errno == 0 {
                        continue;
                    }
                    return Err(SockDiagError::Kernel {
                        op,
                        what: format!("address family {family}"),
                        errno,
                    });
                }
                _ => {
                    if let Some(entry) = parse_response(msg.whole, op)? {
                        if locals.is_empty() || locals.contains(&entry.conn.local.ip()) {
                            found.push(entry);
                        }
                    }
                }
            }
        }
    }
    Err(SockDiagError::Timeout {
        op,
        limit: REQUEST_TIMEOUT,
    })
}

/// A socket found by a dump: the connection, and how the kernel names the
/// socket (family and id, cookie included) for an exact `SOCK_DESTROY`.
#[derive(Debug, Clone)]
struct Entry {
    conn: Connection,
    family: u8,
    id: SocketId,
}

fn parse_response(whole: &[u8], op: &'static str) -> Result<Option<Entry>, SockDiagError> {
    let parsed = NetlinkMessage::<SockDiagMessage>::deserialize(whole).map_err(|e| {
        SockDiagError::Decode {
            op,
            detail: e.to_string(),
        }
    })?;
    let NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(resp)) = parsed.payload else {
        return Ok(None);
    };
    let id = resp.header.socket_id;
    Ok(Some(Entry {
        conn: Connection {
            local: canonical_sa(SocketAddr::new(id.source_address, id.source_port)),
            remote: canonical_sa(SocketAddr::new(id.destination_address, id.destination_port)),
        },
        family: resp.header.family,
        id,
    }))
}

/// A forced close of connections; run it with [`DestroyRequest::execute`].
#[derive(Debug)]
pub struct DestroyRequest<'a> {
    handle: &'a mut SockDiag,
    connections: Vec<Connection>,
}

impl DestroyRequest<'_> {
    /// Sends every destroy request at once (pipelined on one socket), then
    /// collects the answers.
    ///
    /// # Errors
    ///
    /// Socket I/O failure, a kernel error other than "no such socket" (for
    /// example `EOPNOTSUPP` without `CONFIG_INET_DIAG_DESTROY`), a malformed
    /// answer or a time-out.
    pub async fn execute(self) -> Result<DestroyReport, SockDiagError> {
        let op = "destroy";
        let handle = self.handle;
        let mut pending = std::collections::HashMap::new();
        let mut batch = Vec::new();
        let mut report = DestroyReport::default();
        // Name each socket exactly (cookie included) as a dump reports it:
        // a destroy by addresses alone falls back to the listening socket
        // when the connection is gone, and would close the listener.
        let locals: HashSet<IpAddr> = self
            .connections
            .iter()
            .map(|c| canonical(c.local.ip()))
            .collect();
        let live: std::collections::HashMap<Connection, Entry> = if locals.is_empty() {
            std::collections::HashMap::new()
        } else {
            tokio::time::timeout(REQUEST_TIMEOUT, dump(handle, &locals))
                .await
                .map_err(|_| SockDiagError::Timeout {
                    op,
                    limit: REQUEST_TIMEOUT,
                })??
                .into_iter()
                .map(|e| (e.conn, e))
                .collect()
        };
        for conn in &self.connections {
            let key = Connection {
                local: canonical_sa(conn.local),
                remote: canonical_sa(conn.remote),
            };
            let Some(Entry { family, id, .. }) = live.get(&key).cloned() else {
                report.missing.push(*conn);
                continue;
            };
            let seq = handle.next_seq();
            let mut header = NetlinkHeader::default();
            header.flags = NLM_F_REQUEST | NLM_F_ACK;
            header.sequence_number = seq;
            let msg = NetlinkMessage::new(
                header,
                NetlinkPayload::InnerMessage(SockDiagDestroy::new(inet_request(
                    family,
                    StateFlags::all(),
                    id,
                ))),
            );
            batch.push(serialize(msg));
            pending.insert(seq, *conn);
        }
        let work = async {
            // Datagrams of at most ~64 KiB, each holding many requests.
            let mut dgram = Vec::new();
            for msg in &batch {
                if dgram.len() + msg.len() > 60 * 1024 {
                    handle
                        .socket
                        .send(&dgram)
                        .await
                        .map_err(|source| SockDiagError::Io { op, source })?;
                    dgram.clear();
                }
                dgram.extend_from_slice(msg);
            }
            if !dgram.is_empty() {
                handle
                    .socket
                    .send(&dgram)
                    .await
                    .map_err(|source| SockDiagError::Io { op, source })?;
            }
            let max_rounds = pending.len().saturating_add(1);
            for _ in 0..max_rounds {
                if pending.is_empty() {
                    break;
                }
                let answer = handle
                    .socket
                    .recv()
                    .await
                    .map_err(|source| SockDiagError::Io { op, source })?;
                for msg in messages(answer) {
                    let msg = msg.map_err(|source| SockDiagError::Malformed { op, source })?;
                    if msg.ty != NLMSG_ERROR {
                        continue;
                    }
                    let Some(conn) = pending.remove(&msg.seq) else {
                        continue;
                    };
                    match msg
                        .error_code()
                        .map_err(|source| SockDiagError::Malformed { op, source })?
                    {
                        0 => report.destroyed.push(conn),
                        // Gone meanwhile, or a new socket with the same
                        // addresses (cookie mismatch).
                        libc::ENOENT | libc::ESTALE => report.missing.push(conn),
                        errno => {
                            return Err(SockDiagError::Kernel {
                                op,
                                what: conn.to_string(),
                                errno,
                            })
                        }
                    }
                }
            }
            Ok::<_, SockDiagError>(())
        };
        tokio::time::timeout(REQUEST_TIMEOUT, work)
            .await
            .map_err(|_| SockDiagError::Timeout {
                op,
                limit: REQUEST_TIMEOUT,
            })??;
        if !pending.is_empty() {
            return Err(SockDiagError::Timeout {
                op,
                limit: REQUEST_TIMEOUT,
            });
        }
        Ok(report)
    }
}

#[cfg(test)]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_become_ipv4() {
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(canonical(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }

    #[test]
    fn a_response_from_the_kernel_is_parsed() {
        // nlmsghdr: len 88, type SOCK_DIAG_BY_FAMILY (20), flags MULTI, seq 1, pid 0
        let mut msg = Vec::new();
        msg.extend_from_slice(&88u32.to_ne_bytes());
        msg.extend_from_slice(&20u16.to_ne_bytes());
        msg.extend_from_slice(&2u16.to_ne_bytes());
        msg.extend_from_slice(&1u32.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        // inet_diag_msg: family AF_INET, state ESTABLISHED (1), timer 0, retrans 0
        msg.extend_from_slice(&[2, 1, 0, 0]);
        // id: sport 445, dport 40000 (big endian)
        msg.extend_from_slice(&445u16.to_be_bytes());
        msg.extend_from_slice(&40000u16.to_be_bytes());
        // src 192.0.2.1 (16 bytes), dst 192.0.2.2 (16 bytes)
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[192, 0, 2, 1]);
        let mut dst = [0u8; 16];
        dst[..4].copy_from_slice(&[192, 0, 2, 2]);
        msg.extend_from_slice(&src);
        msg.extend_from_slice(&dst);
        // interface 0, cookie
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&[1; 8]);
        // expires, rqueue, wqueue, uid, inode
        for _ in 0..5 {
            msg.extend_from_slice(&0u32.to_ne_bytes());
        }
        assert_eq!(msg.len(), 88);
        let entry = parse_response(&msg, "dump").unwrap().unwrap();
        assert_eq!(entry.family, AF_INET);
        assert_eq!(entry.id.cookie, [1; 8]);
        let conn = entry.conn;
        assert_eq!(conn.local, "192.0.2.1:445".parse().unwrap());
        assert_eq!(conn.remote, "192.0.2.2:40000".parse().unwrap());
    }

    proptest::proptest! {
        #[test]
        fn decoding_any_answer_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            for msg in messages(&bytes) {
                let Ok(msg) = msg else { break };
                let _ = parse_response(msg.whole, "dump");
            }
            // A well-formed header (SOCK_DIAG_BY_FAMILY) around any payload.
            let framed = nlsock::build_message(20, 0, 1, &bytes);
            let _ = parse_response(&framed, "dump");
        }
    }
}
