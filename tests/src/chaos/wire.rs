//! Bounded parsers (and two builders) for what the duplicate detector reads:
//! netlink messages (rtnetlink address events, nftables set-element events)
//! and the ARP replies and IPv6 neighbour advertisements a client sees.
//!
//! Layouts (netlink is host byte order, packets network byte order):
//!
//! ```text
//! nlmsghdr   len:u32 type:u16 flags:u16 seq:u32 pid:u32   (16 bytes, 4-aligned)
//! nlattr     len:u16 type:u16 (low 14 bits) value...      (4-aligned)
//! ifaddrmsg  family:u8 prefixlen:u8 flags:u8 scope:u8 index:u32
//! nfgenmsg   family:u8 version:u8 res_id:be16
//! ARP/Eth    htype:be16=1 ptype:be16=0x0800 hlen=6 plen=4 oper:be16
//!            sha[6] spa[4] tha[6] tpa[4]
//! NA         IPv6 header (40) + type=136 code cksum flags:be32 target[16]
//!            options (type 2 = target link-layer address)
//! ```
//!
//! No function here panics on any input: every length is checked before it
//! is used, and what does not parse is returned as `None` or counted by the
//! caller as garbage (a fuzz-style test feeds random bytes to each parser).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// rtnetlink message types.
pub const RTM_NEWADDR: u16 = 20;
/// rtnetlink message types.
pub const RTM_DELADDR: u16 = 21;
/// Netlink control messages.
pub const NLMSG_ERROR: u16 = 2;
/// Netlink control messages.
pub const NLMSG_DONE: u16 = 3;
/// The nftables subsystem of nfnetlink.
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_DELSET: u16 = 11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;

/// One netlink message: its type and its payload (after the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NlMsg<'a> {
    /// `nlmsg_type`.
    pub ty: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// The bytes after the 16-byte header, `len - 16` of them.
    pub payload: &'a [u8],
}

fn u16_ne(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_ne(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

/// Splits a datagram into netlink messages. Returns them and whether
/// anything was malformed (a header shorter than 16 bytes or a length past
/// the end): parsing stops there.
pub fn messages(buf: &[u8]) -> (Vec<NlMsg<'_>>, bool) {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < buf.len() {
        let Some(len) = u32_ne(buf, at).and_then(|l| usize::try_from(l).ok()) else {
            return (out, true);
        };
        if len < 16 || at.checked_add(len).is_none_or(|end| end > buf.len()) {
            return (out, true);
        }
        let (Some(ty), Some(flags)) = (u16_ne(buf, at + 4), u16_ne(buf, at + 6)) else {
            return (out, true);
        };
        out.push(NlMsg {
            ty,
            flags,
            payload: &buf[at + 16..at + len],
        });
        at = at.saturating_add(align4(len));
    }
    (out, false)
}

/// Netlink attributes `(type without flag bits, value)`, and whether the
/// tail was malformed.
pub fn attrs(buf: &[u8]) -> (Vec<(u16, &[u8])>, bool) {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 4 <= buf.len() {
        let (Some(len), Some(ty)) = (u16_ne(buf, at), u16_ne(buf, at + 2)) else {
            return (out, true);
        };
        let len = usize::from(len);
        if len < 4 || at + len > buf.len() {
            return (out, true);
        }
        out.push((ty & 0x3fff, &buf[at + 4..at + len]));
        at += align4(len);
    }
    (out, at < buf.len() && buf.len() - at >= 4)
}

fn ip_from(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(bytes).ok()?,
        ))),
        _ => None,
    }
}

/// An address added to or removed from an interface (RTM_NEWADDR /
/// RTM_DELADDR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrEvent {
    /// Added (true) or removed.
    pub add: bool,
    /// The address (IFA_LOCAL for IPv4, else IFA_ADDRESS).
    pub addr: IpAddr,
    /// The interface index.
    pub ifindex: u32,
}

/// Parses an rtnetlink address message; `None` for other types or a
/// malformed one.
pub fn addr_event(m: &NlMsg<'_>) -> Option<AddrEvent> {
    let add = match m.ty {
        RTM_NEWADDR => true,
        RTM_DELADDR => false,
        _ => return None,
    };
    let ifindex = u32_ne(m.payload, 4)?;
    let (list, _) = attrs(m.payload.get(8..)?);
    let find = |t: u16| {
        list.iter()
            .find(|(ty, _)| *ty == t)
            .and_then(|(_, v)| ip_from(v))
    };
    // IFA_LOCAL (2) is the interface's own address for IPv4 (IFA_ADDRESS
    // is the peer on point-to-point links); IPv6 has IFA_ADDRESS (1) only.
    let addr = find(2).or_else(|| find(1))?;
    Some(AddrEvent { add, addr, ifindex })
}

/// What the detector needs from the nftables multicast group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NftEvent {
    /// Set elements added (or their timeout renewed) or deleted.
    Elems {
        /// NEWSETELEM (true) or DELSETELEM.
        add: bool,
        /// nfgenmsg family (1 inet, 2 ip, 3 arp, 10 ip6).
        family: u8,
        /// Table name.
        table: String,
        /// Set name.
        set: String,
        /// Each element: its key as an address (other key sizes are
        /// skipped), its timeout and its remaining time (ms) when given.
        elems: Vec<(IpAddr, Option<u64>, Option<u64>)>,
    },
    /// A set was deleted (its elements with it).
    DelSet {
        /// Family.
        family: u8,
        /// Table.
        table: String,
        /// Set.
        set: String,
    },
    /// A table was deleted (its sets with it).
    DelTable {
        /// Family.
        family: u8,
        /// Table.
        table: String,
    },
}

fn c_string(v: &[u8]) -> String {
    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

fn be64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?))
}

/// Parses an nftables notification; `None` for messages the detector does
/// not use (or malformed ones: the caller cannot tell, both are ignored,
/// and [`nft_is_garbage`] says which).
pub fn nft_event(m: &NlMsg<'_>) -> Option<NftEvent> {
    if m.ty >> 8 != NFNL_SUBSYS_NFTABLES {
        return None;
    }
    let family = *m.payload.first()?;
    let (list, _) = attrs(m.payload.get(4..)?);
    let text = |t: u16| {
        list.iter()
            .find(|(ty, _)| *ty == t)
            .map(|(_, v)| c_string(v))
    };
    match m.ty & 0xff {
        NFT_MSG_DELTABLE => Some(NftEvent::DelTable {
            family,
            table: text(1)?,
        }),
        NFT_MSG_DELSET => Some(NftEvent::DelSet {
            family,
            table: text(1)?,
            set: text(2)?,
        }),
        t @ (NFT_MSG_NEWSETELEM | NFT_MSG_DELSETELEM) => {
            let table = text(1)?;
            let set = text(2)?;
            let mut elems = Vec::new();
            for (ty, v) in &list {
                if *ty != 3 {
                    continue;
                }
                let (items, _) = attrs(v);
                for (ity, iv) in items {
                    if ity != 1 {
                        continue;
                    }
                    let (fields, _) = attrs(iv);
                    let mut key = None;
                    let mut timeout = None;
                    let mut expiration = None;
                    for (fty, fv) in fields {
                        match fty {
                            1 => {
                                let (data, _) = attrs(fv);
                                key = data
                                    .iter()
                                    .find(|(dty, _)| *dty == 1)
                                    .and_then(|(_, d)| ip_from(d));
                            }
                            4 => timeout = be64(fv),
                            5 => expiration = be64(fv),
                            _ => {}
                        }
                    }
                    if let Some(k) = key {
                        elems.push((k, timeout, expiration));
                    }
                }
            }
            Some(NftEvent::Elems {
                add: t == NFT_MSG_NEWSETELEM,
                family,
                table,
                set,
                elems,
            })
        }
        _ => None,
    }
}

/// Whether an nftables message of a type [`nft_event`] handles failed to
/// parse (garbage, to be counted).
pub fn nft_is_garbage(m: &NlMsg<'_>) -> bool {
    m.ty >> 8 == NFNL_SUBSYS_NFTABLES
        && matches!(
            m.ty & 0xff,
            NFT_MSG_DELTABLE | NFT_MSG_DELSET | NFT_MSG_NEWSETELEM | NFT_MSG_DELSETELEM
        )
        && nft_event(m).is_none()
}

/// Who answered for an address, seen by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The address answered for.
    pub addr: IpAddr,
    /// The MAC that answers for it.
    pub mac: [u8; 6],
    /// Addressed to `to` (the client) as an answer to a request
    /// (ARP reply to the client's IP, solicited NA), rather than a
    /// gratuitous announcement.
    pub solicited: bool,
}

const ETH_HEADER: usize = 14;

/// Parses an Ethernet frame holding an ARP reply or an IPv6 neighbour
/// advertisement; `client` (v4, v6) decides what is solicited. `None` for
/// any other frame; `Err(())` for an ARP/NA frame too short or malformed.
#[allow(clippy::result_unit_err)]
pub fn answer(frame: &[u8], client_v4: Ipv4Addr) -> Result<Option<Answer>, ()> {
    let Some(ethertype) = frame.get(12..14) else {
        return Err(());
    };
    let body = &frame[ETH_HEADER.min(frame.len())..];
    match u16::from_be_bytes([ethertype[0], ethertype[1]]) {
        0x0806 => {
            let p = body.get(..28).ok_or(())?;
            if p[0..2] != [0, 1] || p[2..4] != [8, 0] || p[4] != 6 || p[5] != 4 {
                return Err(());
            }
            let oper = u16::from_be_bytes([p[6], p[7]]);
            if oper != 2 {
                return Ok(None);
            }
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&p[8..14]);
            let spa = Ipv4Addr::new(p[14], p[15], p[16], p[17]);
            let tpa = Ipv4Addr::new(p[24], p[25], p[26], p[27]);
            Ok(Some(Answer {
                addr: IpAddr::V4(spa),
                mac,
                solicited: tpa == client_v4 && spa != tpa,
            }))
        }
        0x86dd => {
            let ip6 = body.get(..40).ok_or(())?;
            if ip6[0] >> 4 != 6 {
                return Err(());
            }
            if ip6[6] != 58 {
                return Ok(None);
            }
            let icmp = &body[40..];
            match icmp.first() {
                Some(136) => {}
                Some(_) => return Ok(None),
                None => return Err(()),
            }
            let na = icmp.get(..24).ok_or(())?;
            let solicited = na[4] & 0x40 != 0;
            let mut t = [0u8; 16];
            t.copy_from_slice(&na[8..24]);
            let mut mac = [0u8; 6];
            mac.copy_from_slice(frame.get(6..12).ok_or(())?);
            // Options: type 2 (target link-layer address) overrides.
            let mut opts = &icmp[24..];
            while opts.len() >= 8 {
                let len = usize::from(opts[1]) * 8;
                if len == 0 || len > opts.len() {
                    return Err(());
                }
                if opts[0] == 2 && len >= 8 {
                    mac.copy_from_slice(&opts[2..8]);
                }
                opts = &opts[len..];
            }
            Ok(Some(Answer {
                addr: IpAddr::V6(Ipv6Addr::from(t)),
                mac,
                solicited,
            }))
        }
        _ => Ok(None),
    }
}

/// An ARP request frame (42 bytes): who has `target`, tell `ip` at `mac`.
pub fn arp_request(mac: [u8; 6], ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]); // Ethernet destination: broadcast
    f.extend_from_slice(&mac); // Ethernet source
    f.extend_from_slice(&[0x08, 0x06]); // ethertype ARP
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]); // Ethernet/IPv4, request
    f.extend_from_slice(&mac); // sha
    f.extend_from_slice(&ip.octets()); // spa
    f.extend_from_slice(&[0; 6]); // tha
    f.extend_from_slice(&target.octets()); // tpa
    f
}

/// An IPv6 neighbour solicitation frame for `target`, from link-local
/// `src` at `mac`, to the target's solicited-node multicast group.
pub fn neighbour_solicitation(mac: [u8; 6], src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let t = target.octets();
    let dst = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(t[13]),
        u16::from_be_bytes([t[14], t[15]]),
    );
    let mut icmp = Vec::with_capacity(32);
    icmp.extend_from_slice(&[135, 0, 0, 0, 0, 0, 0, 0]); // type, code, cksum, reserved
    icmp.extend_from_slice(&t); // target
    icmp.extend_from_slice(&[1, 1]); // option: source link-layer address, 8 bytes
    icmp.extend_from_slice(&mac);
    let ck = icmpv6_checksum(src, dst, &icmp);
    icmp[2..4].copy_from_slice(&ck.to_be_bytes());
    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    f.extend_from_slice(&[0x33, 0x33, 0xff, t[13], t[14], t[15]]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x86, 0xdd]);
    f.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, class, flow
    let plen = u16::try_from(icmp.len()).expect("an NS is 32 bytes");
    f.extend_from_slice(&plen.to_be_bytes());
    f.extend_from_slice(&[58, 255]); // ICMPv6, hop limit 255
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&icmp);
    f
}

fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            sum = sum.wrapping_add(u32::from(w));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    let len = u32::try_from(msg.len()).unwrap_or(0);
    add(&len.to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(msg);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let folded = u16::try_from(sum).unwrap_or(0xffff);
    !folded
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::rng::Rng;

    fn nlmsg(ty: u16, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(16 + payload.len()).unwrap();
        let mut v = Vec::new();
        v.extend_from_slice(&len.to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(&0u16.to_ne_bytes()); // flags
        v.extend_from_slice(&[0; 8]); // seq, pid
        v.extend_from_slice(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn nla(ty: u16, value: &[u8]) -> Vec<u8> {
        let len = u16::try_from(4 + value.len()).unwrap();
        let mut v = Vec::new();
        v.extend_from_slice(&len.to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(value);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn rtnetlink_new_and_del_address() {
        let mut p = vec![2, 24, 0x80, 0]; // AF_INET, /24, permanent, universe
        p.extend_from_slice(&3u32.to_ne_bytes()); // ifindex 3
        p.extend(nla(1, &[198, 51, 100, 201])); // IFA_ADDRESS
        p.extend(nla(2, &[198, 51, 100, 201])); // IFA_LOCAL
        p.extend(nla(3, b"eth1\0")); // IFA_LABEL
        let mut buf = nlmsg(RTM_NEWADDR, &p);
        buf.extend(nlmsg(RTM_DELADDR, &p));
        let (msgs, bad) = messages(&buf);
        assert!(!bad);
        assert_eq!(msgs.len(), 2);
        let a = addr_event(&msgs[0]).unwrap();
        assert_eq!(
            a,
            AddrEvent {
                add: true,
                addr: "198.51.100.201".parse().unwrap(),
                ifindex: 3
            }
        );
        assert!(!addr_event(&msgs[1]).unwrap().add);
        let mut p6 = vec![10, 64, 0, 0];
        p6.extend_from_slice(&4u32.to_ne_bytes());
        p6.extend(nla(
            1,
            &"2001:db8:1::201".parse::<Ipv6Addr>().unwrap().octets(),
        ));
        let buf = nlmsg(RTM_NEWADDR, &p6);
        let (msgs, _) = messages(&buf);
        assert_eq!(
            addr_event(&msgs[0]).unwrap().addr,
            "2001:db8:1::201".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn nftables_set_element_with_timeout_and_set_and_table_deletion() {
        // NEWSETELEM: nfgenmsg(inet), table, set, elements { elem { key {
        // value 198.51.100.201 }, timeout 480 ms, expiration 470 ms } }
        let key = nla(1 | 0x8000, &nla(1, &[198, 51, 100, 201]));
        let mut elem = key;
        elem.extend(nla(4, &480u64.to_be_bytes()));
        elem.extend(nla(5, &470u64.to_be_bytes()));
        let list = nla(3 | 0x8000, &nla(1 | 0x8000, &elem));
        let mut p = vec![1, 0, 0, 0];
        p.extend(nla(1, b"ipfailover\0"));
        p.extend(nla(2, b"lease4\0"));
        p.extend(list);
        let buf = nlmsg((10 << 8) | 12, &p);
        let (msgs, bad) = messages(&buf);
        assert!(!bad);
        assert_eq!(
            nft_event(&msgs[0]),
            Some(NftEvent::Elems {
                add: true,
                family: 1,
                table: "ipfailover".into(),
                set: "lease4".into(),
                elems: vec![("198.51.100.201".parse().unwrap(), Some(480), Some(470))],
            })
        );
        let mut d = vec![1, 0, 0, 0];
        d.extend(nla(1, b"ipfailover\0"));
        d.extend(nla(2, b"guard4\0"));
        let buf = nlmsg((10 << 8) | 11, &d);
        assert_eq!(
            nft_event(&messages(&buf).0[0]),
            Some(NftEvent::DelSet {
                family: 1,
                table: "ipfailover".into(),
                set: "guard4".into()
            })
        );
        let mut t = vec![3, 0, 0, 0];
        t.extend(nla(1, b"ipfailover\0"));
        let buf = nlmsg((10 << 8) | 2, &t);
        assert_eq!(
            nft_event(&messages(&buf).0[0]),
            Some(NftEvent::DelTable {
                family: 3,
                table: "ipfailover".into()
            })
        );
        // A DELSETELEM without its table attribute is garbage.
        let buf = nlmsg((10 << 8) | 14, &[1, 0, 0, 0]);
        assert!(nft_is_garbage(&messages(&buf).0[0]));
    }

    #[test]
    fn truncated_netlink_is_reported_not_read() {
        let mut buf = nlmsg(RTM_NEWADDR, &[2, 24, 0, 0, 1, 0, 0, 0]);
        buf.truncate(buf.len() - 2);
        let (msgs, bad) = messages(&buf);
        assert!(msgs.is_empty() && bad);
        // A length below the header size.
        let (msgs, bad) = messages(&[4, 0, 0, 0, 0, 0, 0, 0]);
        assert!(msgs.is_empty() && bad);
    }

    #[test]
    fn arp_reply_and_gratuitous_arp() {
        let client = Ipv4Addr::new(198, 51, 100, 100);
        let mac = [2, 0, 0, 0, 0, 7];
        // A request as built, turned into a reply by hand.
        let mut f = arp_request(mac, "198.51.100.201".parse().unwrap(), client);
        assert_eq!(f.len(), 42);
        f[21] = 2; // oper = reply
        let a = answer(&f, client).unwrap().unwrap();
        assert_eq!(a.addr, "198.51.100.201".parse::<IpAddr>().unwrap());
        assert_eq!(a.mac, mac);
        assert!(a.solicited);
        // Gratuitous: target = sender.
        let mut g = arp_request(
            mac,
            "198.51.100.201".parse().unwrap(),
            "198.51.100.201".parse().unwrap(),
        );
        g[21] = 2;
        assert!(!answer(&g, client).unwrap().unwrap().solicited);
        // A request is no answer.
        let r = arp_request(mac, client, "198.51.100.201".parse().unwrap());
        assert_eq!(answer(&r, client), Ok(None));
        assert_eq!(answer(&f[..30], client), Err(()));
    }

    #[test]
    fn neighbour_solicitation_checksum_and_na_parse() {
        let mac = [2, 0, 0, 0, 0, 9];
        let src: Ipv6Addr = "fe80::1".parse().unwrap();
        let target: Ipv6Addr = "2001:db8:1::201".parse().unwrap();
        let f = neighbour_solicitation(mac, src, target);
        assert_eq!(f.len(), 14 + 40 + 32);
        assert_eq!(&f[0..6], &[0x33, 0x33, 0xff, 0, 0x02, 0x01]);
        // The checksum over the pseudo-header verifies to 0.
        let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&f[38..54]).unwrap());
        assert_eq!(icmpv6_checksum(src, dst, &f[54..]), 0);
        // An NA built from it: type 136, solicited flag, TLLA option.
        let mut na = f.clone();
        na[54] = 136;
        na[58] = 0x60; // solicited + override
        na[78] = 2; // option type: target link-layer address
        let a = answer(&na, Ipv4Addr::new(198, 51, 100, 100))
            .unwrap()
            .unwrap();
        assert_eq!(a.addr, IpAddr::V6(target));
        assert_eq!(a.mac, mac);
        assert!(a.solicited);
        // An option claiming more bytes than there are.
        na[79] = 9;
        assert_eq!(answer(&na, Ipv4Addr::new(198, 51, 100, 100)), Err(()));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut r = Rng::new(99);
        for _ in 0..20_000 {
            let len = r.index(200);
            let mut b: Vec<u8> = (0..len).map(|_| r.next_u64().to_le_bytes()[0]).collect();
            // Make some look like the real thing so that deeper paths run.
            if len > 14 && r.chance(1, 2) {
                b[12] = if r.chance(1, 2) { 0x08 } else { 0x86 };
                b[13] = if b[12] == 0x08 { 0x06 } else { 0xdd };
            }
            let _ = answer(&b, Ipv4Addr::new(198, 51, 100, 100));
            if len >= 4 {
                let l = u32::try_from(len).unwrap();
                b[..4].copy_from_slice(&l.to_ne_bytes());
            }
            if len >= 6 && r.chance(1, 2) {
                let ty: u16 = if r.chance(1, 2) {
                    RTM_NEWADDR
                } else {
                    (10 << 8) | 12
                };
                b[4..6].copy_from_slice(&ty.to_ne_bytes());
            }
            let (msgs, _) = messages(&b);
            for m in &msgs {
                let _ = addr_event(m);
                let _ = nft_event(m);
                let _ = nft_is_garbage(m);
            }
            let _ = attrs(&b);
        }
    }
}
