//! The only place that talks to the kernel's netlink and raw-packet interfaces:
//! addresses and links (rtnetlink), packets (pnet: gratuitous ARP, unsolicited
//! neighbour advertisements, tickle ACKs, resets), sockets (sock_diag),
//! conntrack events (ctnetlink) and the ipfailover nftables table (nftnl).
//!
//! It offers verbs, not packets, and knows nothing of clusters or daemons.

pub mod addr;
pub mod conntrack;
pub mod events;
pub mod killtcp;
pub mod lease;
pub mod link;
pub mod nft;
pub mod packet;
pub mod sockdiag;
