//! Packets of an IP takeover: gratuitous ARP (request and reply forms),
//! IPv6 unsolicited neighbour advertisements, TCP tickle ACKs and resets.
//!
//! Two layers, as CTDB's `system_socket.c` separates `tcp4_build` from
//! `ctdb_sys_send_tcp`:
//! * pure builders (this module): write one packet into a caller's
//!   `&mut [u8]` and return its length. No I/O, no clock, no allocation; they
//!   never panic: a short buffer is [`PacketError::BufferTooSmall`].
//! * senders and the capture socket ([`sender`]): sockets that put built
//!   packets on the wire, many per system call.
//!
//! Byte layouts (all fields big-endian):
//! * ARP frame, 42 bytes: Ethernet (dst ff:ff:ff:ff:ff:ff, src = interface
//!   MAC, type 0x0806), then htype 1, ptype 0x0800, hlen 6, plen 4, op
//!   (1 request, 2 reply), sender MAC, sender IP = the public IP, target MAC
//!   (00:00:00:00:00:00 for the request, the interface MAC for the reply),
//!   target IP = the public IP. Exactly CTDB's two frames.
//! * NA frame, 86 bytes: Ethernet (dst 33:33:00:00:00:01, type 0x86dd), IPv6
//!   (payload 32, next header 58, hop limit 255, src = public IP, dst ff02::1),
//!   ICMPv6 type 136 code 0, flags = Override only, target = public IP,
//!   option type 2 (target link-layer address), length 1, the MAC.
//! * TCP segment without link header: IPv4 (20 bytes, TTL 255, protocol 6) or
//!   IPv6 (40 bytes, hop limit 64, next header 6), then a 20-byte TCP header
//!   (data offset 5, no options), flags ACK or RST|ACK, window 1234 as CTDB
//!   ("easy to spot in a sniffer"), urgent 0.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use pnet::packet::ip::IpNextHeaderProtocols;
use pnet::packet::util;

pub mod sender;

/// Length of a gratuitous ARP frame (without the Ethernet padding the
/// driver adds).
pub const ARP_FRAME_LEN: usize = 42;
/// Length of an unsolicited neighbour advertisement frame.
pub const NA_FRAME_LEN: usize = 86;
/// Length of an IPv4 TCP segment built here.
pub const TCP4_LEN: usize = 40;
/// Length of an IPv6 TCP segment built here.
pub const TCP6_LEN: usize = 60;
/// The window CTDB puts in tickles and resets, and how our own packets are
/// recognised in a capture.
pub const TICKLE_WINDOW: u16 = 1234;
/// The largest packet built here.
pub const MAX_LEN: usize = NA_FRAME_LEN;

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// TCP flag bits (byte 13 of the header).
pub const TCP_RST: u8 = 0x04;
/// TCP ACK flag bit.
pub const TCP_ACK: u8 = 0x10;

/// Errors of the builders.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// The buffer cannot hold the packet.
    #[error("buffer of {have} bytes is too small for a {need}-byte packet")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        have: usize,
    },
    /// Source and destination are of different address families.
    #[error("mixed address families: {src} -> {dst}")]
    MixedFamilies {
        /// Source.
        src: SocketAddr,
        /// Destination.
        dst: SocketAddr,
    },
}

fn room(buf: &mut [u8], need: usize) -> Result<&mut [u8], PacketError> {
    let have = buf.len();
    buf.get_mut(..need)
        .ok_or(PacketError::BufferTooSmall { need, have })
}

/// Which of CTDB's two gratuitous ARP frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpKind {
    /// op 1, target MAC zero.
    Request,
    /// op 2, target MAC = the sender's MAC.
    Reply,
}

/// Writes a gratuitous ARP frame announcing `ip` at `mac`; returns its length.
///
/// # Errors
///
/// [`PacketError::BufferTooSmall`] below [`ARP_FRAME_LEN`] bytes.
pub fn build_garp(
    buf: &mut [u8],
    mac: [u8; 6],
    ip: Ipv4Addr,
    kind: ArpKind,
) -> Result<usize, PacketError> {
    let b = room(buf, ARP_FRAME_LEN)?;
    b[0..6].copy_from_slice(&[0xff; 6]);
    b[6..12].copy_from_slice(&mac);
    b[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    b[14..16].copy_from_slice(&1u16.to_be_bytes()); // htype Ethernet
    b[16..18].copy_from_slice(&ETH_P_IPV4.to_be_bytes()); // ptype IPv4
    b[18] = 6; // hlen
    b[19] = 4; // plen
    let (op, tha) = match kind {
        ArpKind::Request => (1u16, [0u8; 6]),
        ArpKind::Reply => (2u16, mac),
    };
    b[20..22].copy_from_slice(&op.to_be_bytes());
    b[22..28].copy_from_slice(&mac);
    b[28..32].copy_from_slice(&ip.octets());
    b[32..38].copy_from_slice(&tha);
    b[38..42].copy_from_slice(&ip.octets());
    Ok(ARP_FRAME_LEN)
}

/// The all-nodes multicast address the advertisement goes to.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Writes an unsolicited neighbour advertisement frame announcing `ip` at
/// `mac` (Override set, to ff02::1); returns its length.
///
/// # Errors
///
/// [`PacketError::BufferTooSmall`] below [`NA_FRAME_LEN`] bytes.
pub fn build_na(buf: &mut [u8], mac: [u8; 6], ip: Ipv6Addr) -> Result<usize, PacketError> {
    let b = room(buf, NA_FRAME_LEN)?;
    b[0..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    b[6..12].copy_from_slice(&mac);
    b[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
    let ip6 = &mut b[14..54];
    ip6[0..4].copy_from_slice(&0x6000_0000u32.to_be_bytes()); // version 6
    ip6[4..6].copy_from_slice(&32u16.to_be_bytes()); // payload length
    ip6[6] = 58; // ICMPv6
    ip6[7] = 255; // hop limit (RFC 4861 requires 255)
    ip6[8..24].copy_from_slice(&ip.octets());
    ip6[24..40].copy_from_slice(&ALL_NODES.octets());
    let icmp = &mut b[54..86];
    icmp[0] = 136; // neighbour advertisement
    icmp[1] = 0; // code
    icmp[2..4].copy_from_slice(&[0, 0]); // checksum, below
    icmp[4..8].copy_from_slice(&0x2000_0000u32.to_be_bytes()); // R=0 S=0 O=1
    icmp[8..24].copy_from_slice(&ip.octets());
    icmp[24] = 2; // option: target link-layer address
    icmp[25] = 1; // length in units of 8 bytes
    icmp[26..32].copy_from_slice(&mac);
    let sum = util::ipv6_checksum(icmp, 1, &[], &ip, &ALL_NODES, IpNextHeaderProtocols::Icmpv6);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    Ok(NA_FRAME_LEN)
}

/// A TCP segment with no payload: a tickle ACK or a reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpSegment {
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// RST|ACK instead of ACK.
    pub rst: bool,
}

impl TcpSegment {
    /// CTDB's tickle ACK: flags ACK, seq 0, ack 0, from `src` to `dst`.
    pub fn tickle(src: SocketAddr, dst: SocketAddr) -> TcpSegment {
        TcpSegment {
            src,
            dst,
            seq: 0,
            ack: 0,
            rst: false,
        }
    }

    /// A reset (RST|ACK) with the given numbers.
    pub fn reset(src: SocketAddr, dst: SocketAddr, seq: u32, ack: u32) -> TcpSegment {
        TcpSegment {
            src,
            dst,
            seq,
            ack,
            rst: true,
        }
    }

    /// The built length: [`TCP4_LEN`] or [`TCP6_LEN`].
    pub fn len(&self) -> usize {
        if self.dst.is_ipv4() {
            TCP4_LEN
        } else {
            TCP6_LEN
        }
    }

    /// Never empty; here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the IP header and TCP header into `buf`; returns the length.
    ///
    /// # Errors
    ///
    /// [`PacketError::MixedFamilies`] when src and dst differ in family,
    /// [`PacketError::BufferTooSmall`] when `buf` is short.
    pub fn build(&self, buf: &mut [u8]) -> Result<usize, PacketError> {
        match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let b = room(buf, TCP4_LEN)?;
                let ip = &mut b[..20];
                ip[0] = 0x45; // version 4, IHL 5
                ip[1] = 0; // DSCP/ECN
                ip[2..4].copy_from_slice(&40u16.to_be_bytes()); // total length
                ip[4..6].copy_from_slice(&[0, 0]); // id
                ip[6..8].copy_from_slice(&[0, 0]); // flags, fragment offset
                ip[8] = 255; // TTL
                ip[9] = 6; // TCP
                ip[10..12].copy_from_slice(&[0, 0]); // checksum, below
                ip[12..16].copy_from_slice(&s.octets());
                ip[16..20].copy_from_slice(&d.octets());
                let sum = util::checksum(ip, 5);
                ip[10..12].copy_from_slice(&sum.to_be_bytes());
                let tcp = &mut b[20..40];
                self.tcp_header(tcp);
                let sum = util::ipv4_checksum(tcp, 8, &[], &s, &d, IpNextHeaderProtocols::Tcp);
                tcp[16..18].copy_from_slice(&sum.to_be_bytes());
                Ok(TCP4_LEN)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let b = room(buf, TCP6_LEN)?;
                let ip = &mut b[..40];
                ip[0..4].copy_from_slice(&0x6000_0000u32.to_be_bytes());
                ip[4..6].copy_from_slice(&20u16.to_be_bytes()); // payload length
                ip[6] = 6; // TCP
                ip[7] = 64; // hop limit
                ip[8..24].copy_from_slice(&s.octets());
                ip[24..40].copy_from_slice(&d.octets());
                let tcp = &mut b[40..60];
                self.tcp_header(tcp);
                let sum = util::ipv6_checksum(tcp, 8, &[], &s, &d, IpNextHeaderProtocols::Tcp);
                tcp[16..18].copy_from_slice(&sum.to_be_bytes());
                Ok(TCP6_LEN)
            }
            _ => Err(PacketError::MixedFamilies {
                src: self.src,
                dst: self.dst,
            }),
        }
    }

    fn tcp_header(&self, tcp: &mut [u8]) {
        tcp[0..2].copy_from_slice(&self.src.port().to_be_bytes());
        tcp[2..4].copy_from_slice(&self.dst.port().to_be_bytes());
        tcp[4..8].copy_from_slice(&self.seq.to_be_bytes());
        tcp[8..12].copy_from_slice(&self.ack.to_be_bytes());
        tcp[12] = 5 << 4; // data offset 5 words, no options
        tcp[13] = if self.rst { TCP_RST | TCP_ACK } else { TCP_ACK };
        tcp[14..16].copy_from_slice(&TICKLE_WINDOW.to_be_bytes());
        tcp[16..18].copy_from_slice(&[0, 0]); // checksum, filled by caller
        tcp[18..20].copy_from_slice(&[0, 0]); // urgent pointer
    }
}

/// The TCP fields of a captured IP packet, as killtcp needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpInfo {
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10).
    pub flags: u8,
    /// Window.
    pub window: u16,
}

impl TcpInfo {
    /// True for a packet that looks like one of ours (CTDB's test: window
    /// 1234 and either RST or seq 0).
    pub fn is_ours(&self) -> bool {
        self.window == TICKLE_WINDOW && (self.flags & TCP_RST != 0 || self.seq == 0)
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Parses an IPv4 or IPv6 packet (no link header) carrying TCP; `None` for
/// anything else or anything truncated. Never panics. IPv6 extension
/// headers are not followed (the kernel does not put any on plain TCP).
pub fn parse_tcp(pkt: &[u8]) -> Option<TcpInfo> {
    let version = pkt.first()? >> 4;
    let (src, dst, tcp) = match version {
        4 => {
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            if ihl < 20 || *pkt.get(9)? != 6 || be16(pkt, 6)? & 0x1fff != 0 {
                return None;
            }
            let s: [u8; 4] = pkt.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = pkt.get(16..20)?.try_into().ok()?;
            (IpAddr::from(s), IpAddr::from(d), pkt.get(ihl..)?)
        }
        6 => {
            if *pkt.get(6)? != 6 {
                return None;
            }
            let s: [u8; 16] = pkt.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = pkt.get(24..40)?.try_into().ok()?;
            (IpAddr::from(s), IpAddr::from(d), pkt.get(40..)?)
        }
        _ => return None,
    };
    if tcp.len() < 20 {
        return None;
    }
    Some(TcpInfo {
        src: SocketAddr::new(src, be16(tcp, 0)?),
        dst: SocketAddr::new(dst, be16(tcp, 2)?),
        seq: be32(tcp, 4)?,
        ack: be32(tcp, 8)?,
        flags: *tcp.get(13)?,
        window: be16(tcp, 14)?,
    })
}

/// Parses an Ethernet frame carrying IPv4/IPv6 TCP (see [`parse_tcp`]).
pub fn parse_tcp_frame(frame: &[u8]) -> Option<TcpInfo> {
    match be16(frame, 12)? {
        ETH_P_IPV4 | ETH_P_IPV6 => parse_tcp(frame.get(14..)?),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
