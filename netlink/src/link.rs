//! The [`Netlink`] handle (one rtnetlink socket and the task that drives it)
//! and the link verbs: look an interface up by name, read its state (admin
//! up, carrier, MAC), set it up or down, and set `promote_secondaries`.
//!
//! Invariants: a [`Netlink`] lives in the network namespace of the thread
//! that created it (sockets belong to the namespace they were opened in);
//! its connection task is aborted when the handle is dropped. No cluster or
//! daemon knowledge lives here.

use std::io;
use std::path::PathBuf;

use futures::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use std::os::fd::AsRawFd;

use netlink_sys::AsyncSocket;
use tokio::task::JoinHandle;

/// Receive buffer asked for the request socket, so that many pipelined
/// acknowledgements fit. `SO_RCVBUFFORCE` (root) goes past `rmem_max`;
/// without the privilege the plain `SO_RCVBUF` (capped) is used. Best effort.
const RX_BUF: libc::c_int = 4 << 20;

/// Time limit of one link query or dump: the kernel answers in
/// microseconds, so this only fires when an answer was lost. (A shorter
/// limit with a retry does harm: the abandoned dump's remaining answers
/// find no receiver — netlink_proto's "failed to forward response" — and
/// the retry queues behind whatever delayed the first.)
pub(crate) const LINK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Errors of the link verbs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The netlink socket could not be opened.
    #[error("cannot open the rtnetlink socket: {0}")]
    Socket(#[source] io::Error),
    /// No interface has this name (in this network namespace).
    #[error("no such interface: {name}")]
    NoSuchInterface {
        /// The name asked for.
        name: String,
    },
    /// The kernel refused or the connection failed.
    #[error("netlink request for interface {name} failed: {source}")]
    Netlink {
        /// The interface concerned.
        name: String,
        /// The cause, errno kept matchable.
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// A sysctl file could not be written.
    #[error("cannot write {path}: {source}")]
    Sysctl {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The kernel did not answer in time (the acknowledgement was lost).
    #[error("netlink request for interface {name} timed out")]
    Timeout {
        /// The interface concerned.
        name: String,
    },
    /// The name cannot be an interface name (empty, too long, or with a `/`).
    #[error("invalid interface name {name:?}")]
    InvalidName {
        /// The name given.
        name: String,
    },
}

/// The state of one interface, as `ip link show` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    /// Kernel interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// `IFF_UP`: administratively up.
    pub admin_up: bool,
    /// `IFF_LOWER_UP`: the carrier is present.
    pub carrier: bool,
    /// Hardware address, when it is a 6-byte Ethernet one.
    pub mac: Option<[u8; 6]>,
    /// `IFF_NOARP`, `IFF_LOOPBACK`: no ARP/NA can be sent on it.
    pub no_arp: bool,
}

impl LinkState {
    /// Up for failover purposes: administratively up and carrier present.
    pub fn is_usable(&self) -> bool {
        self.admin_up && self.carrier
    }

    /// Decodes a kernel `RTM_NEWLINK` message.
    pub(crate) fn from_message(msg: &LinkMessage) -> LinkState {
        let mut name = String::new();
        let mut mac = None;
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => name.clone_from(n),
                LinkAttribute::Address(a) => mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
                _ => {}
            }
        }
        let flags = msg.header.flags;
        LinkState {
            index: msg.header.index,
            name,
            admin_up: flags.contains(LinkFlags::Up),
            carrier: flags.contains(LinkFlags::LowerUp),
            mac,
            no_arp: flags.contains(LinkFlags::Noarp) || flags.contains(LinkFlags::Loopback),
        }
    }
}

/// One rtnetlink connection: the front of the task that owns the socket.
/// Share it by reference (or in an `Arc`); requests from concurrent callers
/// are pipelined on the same socket.
#[derive(Debug)]
pub struct Netlink {
    pub(crate) handle: rtnetlink::Handle,
    task: JoinHandle<()>,
    /// Held for the whole of a dump: the kernel runs one dump at a time
    /// per netlink socket and answers a second with `EBUSY` (seen at
    /// failoverd's start, when its reconciliation and a leader's
    /// GET_PUBLIC_IPS both listed the links: the report failed and so did
    /// the leader's run). Concurrent dumps queue here instead.
    pub(crate) dumps: tokio::sync::Mutex<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) fn check_name(name: &str) -> Result<(), LinkError> {
    if name.is_empty() || name.len() > 15 || name.contains('/') || name.contains('\0') {
        return Err(LinkError::InvalidName { name: name.into() });
    }
    Ok(())
}

fn is_no_device(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc::ENODEV)
}

impl Netlink {
    /// Opens an rtnetlink socket in the caller's network namespace and
    /// spawns its connection task on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`LinkError::Socket`] when the socket cannot be opened.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn new() -> Result<Netlink, LinkError> {
        let (mut conn, handle, _unsolicited) =
            rtnetlink::new_connection().map_err(LinkError::Socket)?;
        // Best effort: a bigger buffer only helps pipelining.
        let fd = conn.socket_mut().socket_mut().as_raw_fd();
        let len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).expect("small");
        let size: libc::c_int = RX_BUF;
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
            // SAFETY: fd is the connection's open socket; size is a valid c_int
            // of the given length.
            let rc = unsafe {
                libc::setsockopt(fd, libc::SOL_SOCKET, opt, (&raw const size).cast(), len)
            };
            if rc == 0 {
                break;
            }
        }
        let task = tokio::spawn(conn);
        Ok(Netlink {
            handle,
            task,
            dumps: tokio::sync::Mutex::new(()),
        })
    }

    /// Looks an interface up by name, like `ip link show NAME`.
    ///
    /// # Errors
    ///
    /// [`LinkError::NoSuchInterface`] when it does not exist,
    /// [`LinkError::InvalidName`] for an impossible name,
    /// [`LinkError::Timeout`] when no answer comes, and
    /// [`LinkError::Netlink`] for other failures.
    pub async fn link(&self, name: &str) -> Result<LinkState, LinkError> {
        check_name(name)?;
        let mut stream = self.handle.link().get().match_name(name).execute();
        let first = tokio::time::timeout(LINK_TIMEOUT, stream.try_next())
            .await
            .map_err(|_| LinkError::Timeout { name: name.into() })?;
        match first {
            Ok(Some(msg)) => Ok(LinkState::from_message(&msg)),
            Ok(None) => Err(LinkError::NoSuchInterface { name: name.into() }),
            Err(e) if is_no_device(&e) => Err(LinkError::NoSuchInterface { name: name.into() }),
            Err(source) => Err(LinkError::Netlink {
                name: name.into(),
                source: Box::new(source),
            }),
        }
    }

    /// Looks an interface up by index (events carry indexes).
    ///
    /// # Errors
    ///
    /// [`LinkError::NoSuchInterface`] (named `#INDEX`) when it does not
    /// exist, [`LinkError::Timeout`] and [`LinkError::Netlink`] otherwise.
    pub async fn link_by_index(&self, index: u32) -> Result<LinkState, LinkError> {
        let name = format!("#{index}");
        let mut stream = self.handle.link().get().match_index(index).execute();
        let first = tokio::time::timeout(LINK_TIMEOUT, stream.try_next())
            .await
            .map_err(|_| LinkError::Timeout { name: name.clone() })?;
        match first {
            Ok(Some(msg)) => Ok(LinkState::from_message(&msg)),
            Ok(None) => Err(LinkError::NoSuchInterface { name }),
            Err(e) if is_no_device(&e) => Err(LinkError::NoSuchInterface { name }),
            Err(source) => Err(LinkError::Netlink {
                name,
                source: Box::new(source),
            }),
        }
    }

    /// Lists every interface of the namespace.
    ///
    /// # Errors
    ///
    /// [`LinkError::Netlink`] when the dump fails, [`LinkError::Timeout`]
    /// (named `*`) when it does not complete within 10 s.
    pub async fn links(&self) -> Result<Vec<LinkState>, LinkError> {
        let _one_dump = self.dumps.lock().await;
        let dump = self.handle.link().get().execute().try_collect();
        let msgs: Vec<LinkMessage> = tokio::time::timeout(LINK_TIMEOUT, dump)
            .await
            .map_err(|_| LinkError::Timeout { name: "*".into() })?
            .map_err(|source| LinkError::Netlink {
                name: "*".into(),
                source: Box::new(source),
            })?;
        Ok(msgs.iter().map(LinkState::from_message).collect())
    }

    /// Sets an interface administratively up or down (`ip link set NAME up`).
    ///
    /// # Errors
    ///
    /// As [`Netlink::link`].
    pub async fn set_link_up(&self, name: &str, up: bool) -> Result<(), LinkError> {
        let link = self.link(name).await?;
        let builder = rtnetlink::LinkUnspec::new_with_index(link.index);
        let msg = if up { builder.up() } else { builder.down() }.build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|source| LinkError::Netlink {
                name: name.into(),
                source: Box::new(source),
            })
    }
}

/// Sets `net.ipv4.conf.NAME.promote_secondaries = 1`, so that deleting the
/// primary address of a subnet promotes a secondary one instead of deleting
/// every address of that subnet. The file is per network namespace.
///
/// # Errors
///
/// [`LinkError::InvalidName`] for an impossible name,
/// [`LinkError::NoSuchInterface`] when the sysctl directory is missing, and
/// [`LinkError::Sysctl`] when the write fails.
pub fn set_promote_secondaries(name: &str) -> Result<(), LinkError> {
    check_name(name)?;
    let path = PathBuf::from(format!(
        "/proc/sys/net/ipv4/conf/{name}/promote_secondaries"
    ));
    match std::fs::write(&path, b"1\n") {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(LinkError::NoSuchInterface { name: name.into() })
        }
        Err(source) => Err(LinkError::Sysctl { path, source }),
    }
}

/// Reads `net.ipv4.conf.NAME.promote_secondaries`.
///
/// # Errors
///
/// As [`set_promote_secondaries`].
pub fn promote_secondaries(name: &str) -> Result<bool, LinkError> {
    check_name(name)?;
    let path = PathBuf::from(format!(
        "/proc/sys/net/ipv4/conf/{name}/promote_secondaries"
    ));
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(s.trim() == "1"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(LinkError::NoSuchInterface { name: name.into() })
        }
        Err(source) => Err(LinkError::Sysctl { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("eth0").is_ok());
        assert!(matches!(check_name(""), Err(LinkError::InvalidName { .. })));
        assert!(matches!(
            check_name("a-name-that-is-too-long"),
            Err(LinkError::InvalidName { .. })
        ));
        assert!(matches!(
            check_name("../x"),
            Err(LinkError::InvalidName { .. })
        ));
    }
}
