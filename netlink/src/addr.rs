//! Address verbs on an interface, like `ip addr add|del|show dev IF`.
//!
//! * Adding an address that is already there and removing one that is not are
//!   both `Ok` (the kernel's `EEXIST` / `EADDRNOTAVAIL`): callers state the
//!   wanted end state, not a transition. Every other kernel refusal is an
//!   [`AddrError::Kernel`] that keeps the errno matchable.
//! * IPv6 addresses are added with `IFA_F_NODAD`, so they are usable at once
//!   (no tentative period) — a public IP must answer as soon as it is taken.
//! * Adding or removing many addresses pipelines the requests on the one
//!   socket of the [`Netlink`] handle (up to [`AddressRequest::window`] in
//!   flight), instead of one round trip after another.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::AddressMessageBuilder;

use crate::link::{LinkError, Netlink};

/// Requests in flight at once by default. Each acknowledgement takes well
/// under 1 KiB of the socket's receive buffer, which [`Netlink::new`]
/// forces to 4 MiB (with `CAP_NET_ADMIN`, the capability address changes
/// need anyway), so 1,024 outstanding acks fit with room to spare.
pub const DEFAULT_WINDOW: usize = 1024;

/// Time limit of a whole request by default: the kernel answers in
/// milliseconds, so this only fires when something is badly wrong (a lost
/// acknowledgement would otherwise hang the caller).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// An address with its prefix length, such as `192.0.2.10/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

impl IpPrefix {
    /// Makes a prefix, checking the length against the family (32 / 128).
    ///
    /// # Errors
    ///
    /// [`AddrError::InvalidPrefix`] when the length is too long.
    pub fn new(addr: IpAddr, len: u8) -> Result<IpPrefix, AddrError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(AddrError::InvalidPrefix {
                text: format!("{addr}/{len}"),
                reason: "prefix length too long for the address family",
            });
        }
        Ok(IpPrefix { addr, len })
    }

    /// The address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// True for a zero-length prefix (`0.0.0.0/0`, `::/0`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for IpPrefix {
    type Err = AddrError;

    /// Parses `ADDR/LEN` (a bare address means a host prefix).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| AddrError::InvalidPrefix {
            text: s.into(),
            reason,
        };
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| bad("not an IP address"))?;
        let len = match l {
            Some(l) => l
                .parse::<u8>()
                .map_err(|_| bad("prefix length is not a number"))?,
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        IpPrefix::new(addr, len).map_err(|_| bad("prefix length too long for the address family"))
    }
}

/// Errors of the address verbs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AddrError {
    /// Text that is not `ADDR/LEN` or a length too long for the family.
    #[error("invalid address prefix {text:?}: {reason}")]
    InvalidPrefix {
        /// The text or value given.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The interface lookup failed (missing interface, bad name, socket).
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The kernel refused the request with this errno.
    #[error("{op} {address} on {interface}: kernel error {errno} ({source})")]
    Kernel {
        /// `add` or `del`.
        op: &'static str,
        /// The interface.
        interface: String,
        /// The address.
        address: IpPrefix,
        /// The positive errno (`libc::EPERM`, ...).
        errno: i32,
        /// The netlink error.
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// The request did not complete in time.
    #[error("{op} of {count} address(es) on {interface} timed out after {after:?}")]
    Timeout {
        /// `add`, `del` or `list`.
        op: &'static str,
        /// The interface.
        interface: String,
        /// How many addresses the request held.
        count: usize,
        /// The limit.
        after: Duration,
    },
    /// The connection task is gone or answered nonsense.
    #[error("{op} {address} on {interface}: netlink request failed ({source})")]
    Request {
        /// `add`, `del` or `list`.
        op: &'static str,
        /// The interface.
        interface: String,
        /// The address (`0.0.0.0/0` for a list).
        address: IpPrefix,
        /// The cause.
        #[source]
        source: Box<rtnetlink::Error>,
    },
}

impl AddrError {
    /// The kernel errno, when the kernel refused.
    pub fn errno(&self) -> Option<i32> {
        match self {
            AddrError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Del,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Add => "add",
            Op::Del => "del",
        }
    }

    /// The errno that means "already in the wanted state".
    fn benign(self) -> i32 {
        match self {
            Op::Add => libc::EEXIST,
            Op::Del => libc::EADDRNOTAVAIL,
        }
    }
}

/// A request to add or remove a set of addresses on one interface; run it
/// with [`AddressRequest::execute`].
#[derive(Debug)]
#[must_use = "a request does nothing until executed"]
pub struct AddressRequest<'a> {
    nl: &'a Netlink,
    interface: String,
    op: Op,
    prefixes: Vec<IpPrefix>,
    window: usize,
    timeout: Duration,
}

fn message(index: u32, p: IpPrefix) -> AddressMessage {
    match p.addr {
        IpAddr::V4(a) => AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(a, p.len)
            .build(),
        IpAddr::V6(a) => {
            let mut m = AddressMessageBuilder::<Ipv6Addr>::new()
                .index(index)
                .address(a, p.len)
                .build();
            m.header.flags |= AddressHeaderFlags::Nodad;
            m.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
            m
        }
    }
}

impl AddressRequest<'_> {
    /// How many requests may be in flight at once (at least 1).
    pub fn window(mut self, n: usize) -> Self {
        self.window = n.max(1);
        self
    }

    /// Time limit for the whole request (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Sends every request, then collects the acknowledgements.
    ///
    /// # Errors
    ///
    /// [`AddrError::Link`] when the interface does not exist,
    /// [`AddrError::Timeout`] when the time limit passes, and the first
    /// [`AddrError::Kernel`] / [`AddrError::Request`] failure otherwise
    /// (the other requests are still carried out).
    pub async fn execute(self) -> Result<(), AddrError> {
        let timeout = self.timeout;
        let op = self.op.name();
        let interface = self.interface.clone();
        let count = self.prefixes.len();
        tokio::time::timeout(timeout, self.run())
            .await
            .unwrap_or(Err(AddrError::Timeout {
                op,
                interface,
                count,
                after: timeout,
            }))
    }

    async fn run(self) -> Result<(), AddrError> {
        let link = self.nl.link(&self.interface).await?;
        let op = self.op;
        let handle = self.nl.handle.clone();
        let iface = self.interface.as_str();
        let results: Vec<Result<(), AddrError>> = futures::stream::iter(self.prefixes)
            .map(|p| {
                let mut handle = handle.clone();
                async move {
                    let payload = match op {
                        Op::Add => RouteNetlinkMessage::NewAddress(message(link.index, p)),
                        Op::Del => RouteNetlinkMessage::DelAddress(message(link.index, p)),
                    };
                    let mut req = NetlinkMessage::from(payload);
                    req.header.flags = match op {
                        Op::Add => NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
                        Op::Del => NLM_F_REQUEST | NLM_F_ACK,
                    };
                    let fail = |source| AddrError::Request {
                        op: op.name(),
                        interface: iface.into(),
                        address: p,
                        source: Box::new(source),
                    };
                    let mut resp = handle.request(req).map_err(fail)?;
                    while let Some(msg) = resp.next().await {
                        if let NetlinkPayload::Error(e) = msg.payload {
                            let errno = -e.raw_code();
                            if errno == op.benign() {
                                continue;
                            }
                            return Err(AddrError::Kernel {
                                op: op.name(),
                                interface: iface.into(),
                                address: p,
                                errno,
                                source: Box::new(rtnetlink::Error::NetlinkError(e)),
                            });
                        }
                    }
                    Ok(())
                }
            })
            .buffer_unordered(self.window)
            .collect()
            .await;
        results.into_iter().collect()
    }
}

fn prefix_of(msg: &AddressMessage) -> Option<IpPrefix> {
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on
    // point-to-point links, so prefer LOCAL when present.
    let mut addr = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(a) => return IpPrefix::new(*a, msg.header.prefix_len).ok(),
            AddressAttribute::Address(a) => addr = Some(*a),
            _ => {}
        }
    }
    addr.and_then(|a| IpPrefix::new(a, msg.header.prefix_len).ok())
}

pub(crate) fn decode_address(msg: &AddressMessage) -> Option<(u32, IpPrefix)> {
    match msg.header.family {
        AddressFamily::Inet | AddressFamily::Inet6 => prefix_of(msg).map(|p| (msg.header.index, p)),
        _ => None,
    }
}

impl Netlink {
    /// Adds one address (`ip addr add P dev IF`, `nodad` for IPv6).
    pub fn add_address(&self, interface: &str, prefix: IpPrefix) -> AddressRequest<'_> {
        self.add_addresses(interface, [prefix])
    }

    /// Adds many addresses, pipelined on one socket.
    pub fn add_addresses(
        &self,
        interface: &str,
        prefixes: impl IntoIterator<Item = IpPrefix>,
    ) -> AddressRequest<'_> {
        AddressRequest {
            nl: self,
            interface: interface.into(),
            op: Op::Add,
            prefixes: prefixes.into_iter().collect(),
            window: DEFAULT_WINDOW,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Removes one address (`ip addr del P dev IF`).
    pub fn del_address(&self, interface: &str, prefix: IpPrefix) -> AddressRequest<'_> {
        self.del_addresses(interface, [prefix])
    }

    /// Removes many addresses, pipelined on one socket.
    pub fn del_addresses(
        &self,
        interface: &str,
        prefixes: impl IntoIterator<Item = IpPrefix>,
    ) -> AddressRequest<'_> {
        AddressRequest {
            nl: self,
            interface: interface.into(),
            op: Op::Del,
            prefixes: prefixes.into_iter().collect(),
            window: DEFAULT_WINDOW,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Lists the IPv4 and IPv6 addresses of an interface (`ip addr show dev IF`).
    ///
    /// # Errors
    ///
    /// [`AddrError::Link`] when the interface does not exist,
    /// [`AddrError::Request`] when the dump fails, [`AddrError::Timeout`]
    /// when it does not complete within [`DEFAULT_TIMEOUT`].
    pub async fn addresses(&self, interface: &str) -> Result<Vec<IpPrefix>, AddrError> {
        let link = self.link(interface).await?;
        let _one_dump = self.dumps.lock().await;
        let dump = self
            .handle
            .address()
            .get()
            .set_link_index_filter(link.index)
            .execute()
            .try_collect();
        let msgs: Vec<AddressMessage> = tokio::time::timeout(DEFAULT_TIMEOUT, dump)
            .await
            .map_err(|_| AddrError::Timeout {
                op: "list",
                interface: interface.into(),
                count: 0,
                after: DEFAULT_TIMEOUT,
            })?
            .map_err(|source| AddrError::Request {
                op: "list",
                interface: interface.into(),
                address: IpPrefix {
                    addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    len: 0,
                },
                source: Box::new(source),
            })?;
        Ok(msgs
            .iter()
            .filter_map(decode_address)
            .map(|(_, p)| p)
            .collect())
    }

    /// Lists every IPv4/IPv6 address of the namespace with its interface
    /// index (`ip addr show`), e.g. to find a public IP configured on an
    /// unexpected interface.
    ///
    /// # Errors
    ///
    /// [`AddrError::Request`] when the dump fails, [`AddrError::Timeout`]
    /// when it does not complete within [`DEFAULT_TIMEOUT`].
    pub async fn all_addresses(&self) -> Result<Vec<(u32, IpPrefix)>, AddrError> {
        let _one_dump = self.dumps.lock().await;
        let dump = self.handle.address().get().execute().try_collect();
        let msgs: Vec<AddressMessage> = tokio::time::timeout(DEFAULT_TIMEOUT, dump)
            .await
            .map_err(|_| AddrError::Timeout {
                op: "list",
                interface: "*".into(),
                count: 0,
                after: DEFAULT_TIMEOUT,
            })?
            .map_err(|source| AddrError::Request {
                op: "list",
                interface: "*".into(),
                address: IpPrefix {
                    addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    len: 0,
                },
                source: Box::new(source),
            })?;
        Ok(msgs.iter().filter_map(decode_address).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_and_reject() {
        let p: IpPrefix = "192.0.2.10/24".parse().unwrap();
        assert_eq!(p.addr(), "192.0.2.10".parse::<IpAddr>().unwrap());
        assert_eq!(p.len(), 24);
        assert_eq!(p.to_string(), "192.0.2.10/24");
        assert_eq!("2001:db8::1".parse::<IpPrefix>().unwrap().len(), 128);
        assert_eq!("192.0.2.1".parse::<IpPrefix>().unwrap().len(), 32);
        for bad in [
            "192.0.2.1/33",
            "2001:db8::1/129",
            "foo/24",
            "192.0.2.1/x",
            "",
            "/24",
        ] {
            assert!(
                matches!(
                    bad.parse::<IpPrefix>(),
                    Err(AddrError::InvalidPrefix { .. })
                ),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn ipv6_messages_carry_nodad() {
        let p: IpPrefix = "2001:db8::5/64".parse().unwrap();
        let m = message(7, p);
        assert_eq!(m.header.index, 7);
        assert!(m
            .attributes
            .contains(&AddressAttribute::Flags(AddressFlags::Nodad)));
        assert_eq!(decode_address(&m), Some((7, p)));
        let v4: IpPrefix = "192.0.2.9/24".parse().unwrap();
        let m4 = message(3, v4);
        assert!(!m4
            .attributes
            .iter()
            .any(|a| matches!(a, AddressAttribute::Flags(_))));
        assert_eq!(decode_address(&m4), Some((3, v4)));
    }
}
