//! A small async netlink socket for the hand-driven protocols of this crate
//! (sock_diag, nfnetlink for nftables and ctnetlink), and a bounds-checked
//! splitter for the netlink messages of one datagram.
//!
//! The socket is opened in the caller's network namespace (the thread that
//! calls [`NlSocket::open`]) and stays there even when tokio later polls it
//! from another thread.
//!
//! Wire layout of one netlink message (host byte order, as the kernel sends):
//!
//! ```text
//! 0      4      6       8     12     16
//! | len  | type | flags | seq | pid  | payload (len - 16) ... | pad to 4 |
//! ```
//!
//! [`messages`] never panics: a length field shorter than the header or
//! longer than the datagram ends the iteration with [`WireError`].

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_sys::Socket;
use tokio::io::unix::AsyncFd;

/// Size of `struct nlmsghdr`.
pub(crate) const NLMSG_HDRLEN: usize = 16;
/// `NLMSG_ERROR` (also carries the ACK, with error 0).
pub(crate) const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`, the end of a dump.
pub(crate) const NLMSG_DONE: u16 = 3;

/// Receive buffer size: large enough for any single netlink datagram the
/// kernel sends to a dump or event listener (it caps them at 32 KiB).
const RECV_BUF: usize = 64 * 1024;

/// A malformed netlink datagram.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Fewer bytes than a field needs.
    #[error("truncated netlink data: need {need} bytes at offset {offset}, have {have}")]
    Truncated {
        /// Offset of the field in the datagram or attribute block.
        offset: usize,
        /// Bytes the field needs.
        need: usize,
        /// Bytes present from `offset`.
        have: usize,
    },
    /// A length field that cannot be right (shorter than its own header).
    #[error("invalid netlink length {len} at offset {offset}")]
    BadLength {
        /// Offset of the header carrying the length.
        offset: usize,
        /// The length found.
        len: usize,
    },
}

/// One netlink message inside a datagram.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawMsg<'a> {
    pub ty: u16,
    pub seq: u32,
    /// The whole message, header included (for crates that parse it).
    pub whole: &'a [u8],
    /// The payload after the 16-byte header.
    pub payload: &'a [u8],
}

impl RawMsg<'_> {
    /// For an `NLMSG_ERROR` message, the errno it carries (0 for an ACK).
    pub(crate) fn error_code(&self) -> Result<i32, WireError> {
        let bytes = self.payload.get(..4).ok_or(WireError::Truncated {
            offset: NLMSG_HDRLEN,
            need: 4,
            have: self.payload.len(),
        })?;
        let mut raw = [0u8; 4];
        raw.copy_from_slice(bytes);
        Ok(-i32::from_ne_bytes(raw))
    }
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

fn read_u16(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_ne_bytes([b[0], b[1]]))
}

/// Splits a datagram into its netlink messages. Stops after the first error.
pub(crate) fn messages(buf: &[u8]) -> impl Iterator<Item = Result<RawMsg<'_>, WireError>> {
    let mut offset = 0usize;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || offset >= buf.len() {
            return None;
        }
        let rest = &buf[offset..];
        let header = (|| {
            let len = usize::try_from(read_u32(rest, 0)?).ok()?;
            Some((len, read_u16(rest, 4)?, read_u32(rest, 8)?))
        })();
        let Some((len, ty, seq)) = header else {
            failed = true;
            return Some(Err(WireError::Truncated {
                offset,
                need: NLMSG_HDRLEN,
                have: rest.len(),
            }));
        };
        if len < NLMSG_HDRLEN {
            failed = true;
            return Some(Err(WireError::BadLength { offset, len }));
        }
        let Some(whole) = rest.get(..len) else {
            failed = true;
            return Some(Err(WireError::Truncated {
                offset,
                need: len,
                have: rest.len(),
            }));
        };
        let aligned = len.saturating_add(3) & !3;
        offset = offset.saturating_add(aligned);
        Some(Ok(RawMsg {
            ty,
            seq,
            whole,
            payload: &whole[NLMSG_HDRLEN..],
        }))
    })
}

/// Builds a netlink message header followed by `payload` (for tests).
#[cfg(test)]
pub(crate) fn build_message(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + payload.len();
    let len32 = u32::try_from(len).expect("netlink requests built here are far below 4 GiB");
    let mut msg = Vec::with_capacity(len + 3);
    msg.extend_from_slice(&len32.to_ne_bytes());
    msg.extend_from_slice(&ty.to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(payload);
    while msg.len() % 4 != 0 {
        msg.push(0);
    }
    msg
}

/// An async netlink socket of one protocol, bound to an automatic port id.
pub(crate) struct NlSocket {
    fd: AsyncFd<Socket>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for NlSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NlSocket")
            .field("fd", &self.fd.get_ref().as_raw_fd())
            .finish()
    }
}

impl NlSocket {
    /// Opens a socket of `protocol` (e.g. `NETLINK_SOCK_DIAG`) in the calling
    /// thread's network namespace.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with I/O enabled (tokio's reactor is needed).
    pub(crate) fn open(protocol: isize) -> io::Result<NlSocket> {
        let mut socket = Socket::new(protocol)?;
        socket.bind_auto()?;
        socket.set_non_blocking(true)?;
        // SAFETY: `socket` owns its fd (closed only when the socket drops)
        // and moves into the AsyncFd, so the fd stays open and unchanged for
        // the AsyncFd's whole life; `as_raw_fd` always returns that same fd.
        let fd = unsafe { AsyncFd::register(socket) }?;
        Ok(NlSocket {
            fd,
            buf: vec![0; RECV_BUF],
        })
    }

    /// Joins a multicast group (by number, not mask).
    pub(crate) fn join(&self, group: u32) -> io::Result<()> {
        self.fd.get_ref().add_membership(group)
    }

    /// Sets the kernel receive buffer (for event listeners that must not
    /// overrun under bursts).
    /// Uses `SO_RCVBUFFORCE` (needs CAP_NET_ADMIN, above `rmem_max`) and
    /// falls back to `SO_RCVBUF`.
    pub(crate) fn set_recv_buffer(&self, bytes: usize) -> io::Result<()> {
        let value = libc::c_int::try_from(bytes).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "receive buffer over 2 GiB")
        })?;
        let fd = self.fd.get_ref().as_raw_fd();
        // SAFETY: `fd` is this socket's open fd; the option value is a
        // c_int on the stack whose size is passed alongside.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                std::ptr::from_ref(&value).cast(),
                libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>())
                    .expect("size of c_int fits socklen_t"),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            self.fd.get_ref().set_rx_buf_sz(bytes)
        }
    }

    /// Makes room for one datagram of `bytes` in the kernel send buffer
    /// (netlink refuses a datagram larger than the buffer with EMSGSIZE).
    /// Uses `SO_SNDBUFFORCE` (needs CAP_NET_ADMIN, above `wmem_max`) and
    /// falls back to `SO_SNDBUF`.
    pub(crate) fn set_send_buffer(&self, bytes: usize) -> io::Result<()> {
        let value = libc::c_int::try_from(bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "send buffer over 2 GiB"))?;
        let fd = self.fd.get_ref().as_raw_fd();
        let set = |opt| {
            // SAFETY: `fd` is this socket's open fd; the option value is a
            // c_int on the stack whose size is passed alongside.
            let rc = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    std::ptr::from_ref(&value).cast(),
                    libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>())
                        .expect("size of c_int fits socklen_t"),
                )
            };
            if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        };
        set(libc::SO_SNDBUFFORCE).or_else(|_| set(libc::SO_SNDBUF))
    }

    /// Sends one datagram to the kernel.
    pub(crate) async fn send(&self, datagram: &[u8]) -> io::Result<()> {
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|inner| {
                nix::sys::socket::send(
                    inner.get_ref().as_raw_fd(),
                    datagram,
                    nix::sys::socket::MsgFlags::empty(),
                )
                .map_err(io::Error::from)
            }) {
                Ok(result) => {
                    let sent = result?;
                    if sent != datagram.len() {
                        return Err(io::Error::new(
                            io::ErrorKind::WriteZero,
                            format!("netlink send wrote {sent} of {} bytes", datagram.len()),
                        ));
                    }
                    return Ok(());
                }
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives one datagram; the returned slice lives until the next call.
    pub(crate) async fn recv(&mut self) -> io::Result<&[u8]> {
        let n = loop {
            let mut guard = self.fd.readable().await?;
            let buf = &mut self.buf;
            match guard.try_io(|inner| {
                nix::sys::socket::recv(
                    inner.get_ref().as_raw_fd(),
                    buf,
                    nix::sys::socket::MsgFlags::empty(),
                )
                .map_err(io::Error::from)
            }) {
                Ok(result) => break result?,
                Err(_would_block) => continue,
            }
        };
        Ok(&self.buf[..n])
    }

    /// Like [`NlSocket::recv`], with a time limit; `Ok(None)` on time-out.
    pub(crate) async fn recv_timeout(&mut self, limit: Duration) -> io::Result<Option<&[u8]>> {
        let n = match tokio::time::timeout(limit, self.recv()).await {
            Ok(result) => result?.len(),
            Err(_elapsed) => return Ok(None),
        };
        Ok(Some(&self.buf[..n]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_two_messages_and_reads_the_error_code() {
        let mut dgram = build_message(NLMSG_ERROR, 0, 7, &(-2i32).to_ne_bytes());
        dgram.extend(build_message(NLMSG_DONE, 2, 8, &[1, 2, 3]));
        let msgs: Vec<_> = messages(&dgram).collect::<Result<_, _>>().unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].ty, NLMSG_ERROR);
        assert_eq!(msgs[0].seq, 7);
        assert_eq!(msgs[0].error_code().unwrap(), 2);
        assert_eq!(msgs[1].ty, NLMSG_DONE);
        assert_eq!(msgs[1].payload, &[1, 2, 3]);
    }

    #[test]
    fn rejects_short_and_overlong_lengths() {
        let mut dgram = build_message(NLMSG_DONE, 0, 1, &[]);
        dgram[0..4].copy_from_slice(&8u32.to_ne_bytes());
        let first = messages(&dgram).next().unwrap();
        assert_eq!(
            first.unwrap_err(),
            WireError::BadLength { offset: 0, len: 8 }
        );
        dgram[0..4].copy_from_slice(&100u32.to_ne_bytes());
        let first = messages(&dgram).next().unwrap();
        assert!(matches!(first, Err(WireError::Truncated { need: 100, .. })));
        let first = messages(&dgram[..5]).next().unwrap();
        assert!(matches!(first, Err(WireError::Truncated { need: 16, .. })));
    }

    #[test]
    fn error_code_of_a_truncated_error_message_is_an_error() {
        let dgram = build_message(NLMSG_ERROR, 0, 1, &[0, 0]);
        let msg = messages(&dgram).next().unwrap().unwrap();
        assert!(msg.error_code().is_err());
    }
}
