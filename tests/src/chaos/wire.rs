//! Bounded parsers (and two builders) for what the duplicate detector reads:
//! netlink messages (rtnetlink address events, nftables set-element, rule,
//! chain, set, table and generation events) and the ARP replies and IPv6 neighbour advertisements a client sees.
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
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_DELSET: u16 = 11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFT_MSG_NEWGEN: u16 = 15;
/// `NFT_META_TIME_NS`: the packet's wall-clock time, ns since the epoch.
const NFT_META_TIME_NS: u32 = 30;
/// `NFT_CMP_GT`.
const NFT_CMP_GT: u32 = 4;
/// `NFT_BYTEORDER_HTON`.
const NFT_BYTEORDER_HTON: u32 = 1;
/// `NF_DROP`.
const NF_DROP: u32 = 0;

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
    /// A rule was added (NEWRULE) or deleted (DELRULE; a chain flush is
    /// one DELRULE per rule).
    Rule {
        /// NEWRULE (true) or DELRULE.
        add: bool,
        /// Family.
        family: u8,
        /// Table.
        table: String,
        /// Chain.
        chain: String,
        /// The rule's handle (unique in its table, growing).
        handle: u64,
        /// For a rule `meta time > CAP ... drop` (failoverd's kernel lease
        /// cap, netlink/src/lease.rs): CAP, in ns since the epoch on the
        /// wall clock. `None` for any other rule.
        cap: Option<u64>,
    },
    /// A chain was deleted (its rules with it).
    DelChain {
        /// Family.
        family: u8,
        /// Table.
        table: String,
        /// Chain.
        chain: String,
    },
    /// The end of one committed transaction (NFT_MSG_NEWGEN, sent after
    /// the transaction's other notifications).
    NewGen,
}

fn c_string(v: &[u8]) -> String {
    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

fn be64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?))
}

fn be32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

/// The attribute `ty` of a list, if present.
fn attr<'a>(list: &[(u16, &'a [u8])], ty: u16) -> Option<&'a [u8]> {
    list.iter().find(|(t, _)| *t == ty).map(|(_, v)| *v)
}

/// The CAP of a rule `meta time [byteorder hton] cmp gt CAP ... drop`,
/// from its NFTA_RULE_EXPRESSIONS: a list of NFTA_LIST_ELEM, each with
/// NFTA_EXPR_NAME and NFTA_EXPR_DATA (meta: key 2; byteorder: op 3; cmp:
/// op 2, data 3 > NFTA_DATA_VALUE 1; immediate: data 2 > NFTA_DATA_VERDICT
/// 2 > code 1; u32 values big-endian). The compared bytes are the
/// register's: big-endian after a `byteorder hton` (what failoverd and
/// nft write), host order without one.
fn cap_of(exprs: &[u8]) -> Option<u64> {
    let (list, _) = attrs(exprs);
    let mut meta_time = false;
    let mut hton = false;
    let mut cap = None;
    let mut drop = false;
    for (ty, elem) in list {
        if ty != 1 {
            continue;
        }
        let (fields, _) = attrs(elem);
        let name = attr(&fields, 1).map(c_string)?;
        let (data, _) = attrs(attr(&fields, 2).unwrap_or(&[]));
        match name.as_str() {
            "meta" => meta_time = attr(&data, 2).and_then(be32) == Some(NFT_META_TIME_NS),
            "byteorder" if meta_time => {
                hton = attr(&data, 3).and_then(be32) == Some(NFT_BYTEORDER_HTON);
            }
            "cmp" if meta_time && cap.is_none() => {
                if attr(&data, 2).and_then(be32) != Some(NFT_CMP_GT) {
                    return None;
                }
                let (value, _) = attrs(attr(&data, 3)?);
                let bytes: [u8; 8] = attr(&value, 1)?.try_into().ok()?;
                cap = Some(if hton {
                    u64::from_be_bytes(bytes)
                } else {
                    u64::from_ne_bytes(bytes)
                });
            }
            "immediate" => {
                let (verdict, _) = attrs(attr(&data, 2).unwrap_or(&[]));
                let (code, _) = attrs(attr(&verdict, 2).unwrap_or(&[]));
                drop = attr(&code, 1).and_then(be32) == Some(NF_DROP);
            }
            _ => {}
        }
    }
    cap.filter(|_| drop)
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
        NFT_MSG_NEWGEN => Some(NftEvent::NewGen),
        NFT_MSG_DELCHAIN => Some(NftEvent::DelChain {
            family,
            table: text(1)?,
            chain: text(3)?,
        }),
        t @ (NFT_MSG_NEWRULE | NFT_MSG_DELRULE) => Some(NftEvent::Rule {
            add: t == NFT_MSG_NEWRULE,
            family,
            table: text(1)?,
            chain: text(2)?,
            handle: attr(&list, 3).and_then(be64)?,
            cap: attr(&list, 4).and_then(cap_of),
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
            NFT_MSG_DELTABLE
                | NFT_MSG_DELCHAIN
                | NFT_MSG_NEWRULE
                | NFT_MSG_DELRULE
                | NFT_MSG_DELSET
                | NFT_MSG_NEWSETELEM
                | NFT_MSG_DELSETELEM
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

    /// An expression of a rule: NFTA_LIST_ELEM { NAME, DATA { attrs } }.
    fn expr(name: &[u8], data: &[Vec<u8>]) -> Vec<u8> {
        let mut e = nla(1, name);
        e.extend(nla(2 | 0x8000, &data.concat()));
        nla(1 | 0x8000, &e)
    }

    /// A NEWRULE/DELRULE notification as the kernel sends it for one of
    /// failoverd's cap rules: `meta time`, `byteorder hton`, `cmp gt`,
    /// `counter`, `immediate` with the verdict `code`.
    fn rule_msg(ty: u16, handle: u64, chain: &[u8], cmp_op: u32, code: i32, hton: bool) -> Vec<u8> {
        let cap: u64 = 0x1880_0000_0000_1234;
        let mut exprs = expr(
            b"meta\0",
            &[nla(1, &1u32.to_be_bytes()), nla(2, &30u32.to_be_bytes())],
        );
        if hton {
            exprs.extend(expr(
                b"byteorder\0",
                &[
                    nla(1, &1u32.to_be_bytes()),
                    nla(2, &1u32.to_be_bytes()),
                    nla(3, &1u32.to_be_bytes()),
                    nla(4, &8u32.to_be_bytes()),
                    nla(5, &8u32.to_be_bytes()),
                ],
            ));
        }
        let value = if hton {
            cap.to_be_bytes()
        } else {
            cap.to_ne_bytes()
        };
        exprs.extend(expr(
            b"cmp\0",
            &[
                nla(1, &1u32.to_be_bytes()),
                nla(2, &cmp_op.to_be_bytes()),
                nla(3 | 0x8000, &nla(1, &value)),
            ],
        ));
        exprs.extend(expr(
            b"counter\0",
            &[nla(1, &0u64.to_be_bytes()), nla(2, &0u64.to_be_bytes())],
        ));
        let verdict = nla(2 | 0x8000, &nla(1, &code.to_be_bytes()));
        exprs.extend(expr(
            b"immediate\0",
            &[nla(1, &0u32.to_be_bytes()), nla(2 | 0x8000, &verdict)],
        ));
        let mut p = vec![1, 0, 0, 0]; // nfgenmsg: inet
        p.extend(nla(1, b"ipfailover_lease\0")); // NFTA_RULE_TABLE
        p.extend(nla(2, chain)); // NFTA_RULE_CHAIN
        p.extend(nla(3, &handle.to_be_bytes())); // NFTA_RULE_HANDLE
        p.extend(nla(4 | 0x8000, &exprs)); // NFTA_RULE_EXPRESSIONS
        nlmsg((10 << 8) | ty, &p)
    }

    #[test]
    fn nftables_cap_rules_chain_deletion_and_generation_end() {
        let cap: u64 = 0x1880_0000_0000_1234;
        let rule = |ty, handle, chain: &[u8], op, code, hton| {
            let buf = rule_msg(ty, handle, chain, op, code, hton);
            let (msgs, bad) = messages(&buf);
            assert!(!bad);
            assert!(!nft_is_garbage(&msgs[0]));
            nft_event(&msgs[0])
        };
        let want = |add, handle, chain: &str, cap| {
            Some(NftEvent::Rule {
                add,
                family: 1,
                table: "ipfailover_lease".into(),
                chain: chain.into(),
                handle,
                cap,
            })
        };
        // `meta time > CAP counter drop`, as failoverd writes it.
        assert_eq!(
            rule(6, 41, b"cap\0", 4, 0, true),
            want(true, 41, "cap", Some(cap))
        );
        // Without `byteorder` the register holds host order.
        assert_eq!(
            rule(6, 41, b"cap\0", 4, 0, false),
            want(true, 41, "cap", Some(cap))
        );
        // Deleted (a flush is one DELRULE per rule).
        assert_eq!(
            rule(8, 41, b"cap\0", 4, 0, true),
            want(false, 41, "cap", Some(cap))
        );
        // Not a cap: another comparison, or another verdict (-5: return).
        assert_eq!(
            rule(6, 42, b"cap\0", 0, 0, true),
            want(true, 42, "cap", None)
        );
        assert_eq!(
            rule(6, 43, b"cap\0", 4, -5, true),
            want(true, 43, "cap", None)
        );
        assert_eq!(
            rule(6, 44, b"guard_in\0", 4, 0, true),
            want(true, 44, "guard_in", Some(cap))
        );
        // A rule without a handle is garbage.
        let mut p = vec![1, 0, 0, 0];
        p.extend(nla(1, b"t\0"));
        p.extend(nla(2, b"cap\0"));
        let buf = nlmsg((10 << 8) | 6, &p);
        assert!(nft_is_garbage(&messages(&buf).0[0]));
        // DELCHAIN: table 1, name 3.
        let mut c = vec![1, 0, 0, 0];
        c.extend(nla(1, b"ipfailover_lease\0"));
        c.extend(nla(3, b"cap\0"));
        let buf = nlmsg((10 << 8) | 5, &c);
        assert_eq!(
            nft_event(&messages(&buf).0[0]),
            Some(NftEvent::DelChain {
                family: 1,
                table: "ipfailover_lease".into(),
                chain: "cap".into()
            })
        );
        // NEWGEN (generation id 7): the end of a transaction.
        let mut g = vec![0, 0, 0, 7];
        g.extend(nla(1, &7u32.to_be_bytes()));
        let buf = nlmsg((10 << 8) | 15, &g);
        assert_eq!(nft_event(&messages(&buf).0[0]), Some(NftEvent::NewGen));
        // A real rule with random bytes changed or cut: no panic.
        let good = rule_msg(6, 41, b"cap\0", 4, 0, true);
        let mut r = Rng::new(7);
        for _ in 0..5_000 {
            let mut b = good.clone();
            for _ in 0..1 + r.index(3) {
                let i = r.index(b.len());
                b[i] = r.next_u64().to_le_bytes()[0];
            }
            b.truncate(b.len() - r.index(b.len() / 2));
            if r.chance(1, 2) {
                // Keep the header's length true so the body is parsed.
                let l = u32::try_from(b.len()).unwrap();
                b[..4].copy_from_slice(&l.to_ne_bytes());
            }
            for m in &messages(&b).0 {
                let _ = nft_event(m);
                let _ = nft_is_garbage(m);
            }
        }
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
                    (10 << 8) | [12, 6, 8, 5, 15][r.index(5)]
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
