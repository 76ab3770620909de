//! Fuzzing of every parser of kernel replies and captured packets in this
//! crate, as an ordinary unit test (it lives under `sockdiag` to reach the
//! private dump-reply parser): the netlink datagram splitter
//! ([`messages`]), sock_diag dump replies ([`parse_response`], NLMSG_ERROR
//! codes), ctnetlink events ([`crate::conntrack::parse_event`]) and
//! captured TCP packets ([`crate::packet::parse_tcp_frame`]). Random bytes
//! and mutations of valid messages (forged netlink and attribute lengths,
//! truncations, wrong types, duplicated attributes); checks: no panic, no
//! hang, at most `16 * len + 4096` bytes held at once, and every valid
//! message re-encodes to bytes that parse to the same value. The harness is
//! transport's (transport/tests/fuzz/mod.rs).
//!
//! Short run: `cargo test -p netlink --lib fuzz_`; long run with
//! `FUZZ_CASES=10000000` (docs/RELIABILITY.md, "Fuzzing").

#[path = "../../../transport/tests/fuzz/mod.rs"]
mod harness;

use std::net::{IpAddr, SocketAddr};

use harness::{run, Counting, Outcome, Rng, Target};

use super::nlsock::{self, NLMSG_HDRLEN};
use super::{messages, parse_response, NLMSG_DONE, NLMSG_ERROR};
use crate::conntrack::{parse_event, CtKind, CtMessage, TcpState, NLM_F_CREATE};
use crate::packet::{parse_tcp, parse_tcp_frame, TcpSegment};

// The per-thread counting allocator for this crate's unit-test binary (the
// counts are per thread, so the other unit tests running in parallel do not
// disturb them).
#[global_allocator]
static GLOBAL: Counting = Counting;

const SHORT: u64 = 100_000;

/// The splitter and the ctnetlink and packet parsers borrow and never
/// allocate; netlink-packet-sock-diag's parser keeps at most a few small
/// attribute values per input byte.
fn bound(len: usize) -> usize {
    16 * len + 4096
}

const NESTED: u16 = 0x8000;

fn nla(ty: u16, value: &[u8]) -> Vec<u8> {
    let len = u16::try_from(4 + value.len()).expect("test attribute under 64 KiB");
    let mut out = Vec::new();
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(value);
    while out.len() % 4 != 0 {
        out.push(0);
    }
    out
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The netlink message ctnetlink would send for `m`.
fn encode_event(m: &CtMessage) -> Vec<u8> {
    let (src_ty, dst_ty) = if m.tuple.src.is_ipv4() {
        (1, 2)
    } else {
        (3, 4)
    };
    let ip = [
        nla(src_ty, &ip_bytes(m.tuple.src.ip())),
        nla(dst_ty, &ip_bytes(m.tuple.dst.ip())),
    ]
    .concat();
    let proto = [
        nla(1, &[m.tuple.proto]),
        nla(2, &m.tuple.src.port().to_be_bytes()),
        nla(3, &m.tuple.dst.port().to_be_bytes()),
    ]
    .concat();
    let orig = [nla(1 | NESTED, &ip), nla(2 | NESTED, &proto)].concat();
    let mut payload = vec![2, 0, 0, 0];
    payload.extend(nla(1 | NESTED, &orig));
    if let Some(state) = m.tcp_state {
        let state = match state {
            TcpState::None => 0,
            TcpState::SynSent => 1,
            TcpState::SynRecv => 2,
            TcpState::Established => 3,
            TcpState::FinWait => 4,
            TcpState::CloseWait => 5,
            TcpState::LastAck => 6,
            TcpState::TimeWait => 7,
            TcpState::Close => 8,
            TcpState::SynSent2 => 9,
            TcpState::Unknown(v) => v,
        };
        let tcp = nla(1, &[state]);
        payload.extend(nla(4 | NESTED, &nla(1 | NESTED, &tcp)));
    }
    let (ty, flags) = match m.kind {
        CtKind::New => (0x0100, NLM_F_CREATE),
        CtKind::Update => (0x0100, 0),
        CtKind::Destroy => (0x0102, 0),
    };
    nlsock::build_message(ty, flags, 0, &payload)
}

fn nlmsg_flags(whole: &[u8]) -> u16 {
    u16::from_ne_bytes([whole[6], whole[7]])
}

/// Netlink-aware mutation: forge a message or attribute length (u32 or u16
/// at a 4-byte boundary, native order), or a message type.
#[allow(clippy::ptr_arg)] // the harness's mutator type
fn mutate_netlink(rng: &mut Rng, buf: &mut Vec<u8>) {
    if buf.len() < 4 {
        return;
    }
    let at = rng.below(buf.len() / 4) * 4;
    let len = u32::try_from(buf.len() - at).unwrap_or(u32::MAX);
    let v: u32 = match rng.below(6) {
        0 => 0,
        1 => 3,
        2 => len + 1,
        3 => len.saturating_sub(1),
        4 => u32::from(u16::MAX),
        _ => u32::MAX,
    };
    match rng.below(3) {
        0 if at + 4 <= buf.len() => buf[at..at + 4].copy_from_slice(&v.to_ne_bytes()),
        1 => {
            let v16 = u16::try_from(v & 0xFFFF).unwrap_or(u16::MAX);
            buf[at..at + 2].copy_from_slice(&v16.to_ne_bytes());
        }
        _ if at + 6 <= buf.len() => {
            let ty = [0u16, 2, 3, 20, 0x0100, 0x0102, 0x0101][rng.below(7)];
            buf[at + 4..at + 6].copy_from_slice(&ty.to_ne_bytes());
        }
        _ => {}
    }
}

#[test]
fn fuzz_ctnetlink_events() {
    let v4 = CtMessage {
        kind: CtKind::New,
        tuple: crate::conntrack::CtTuple {
            proto: 6,
            src: "198.51.100.7:40000".parse().expect("test address"),
            dst: "203.0.113.10:445".parse().expect("test address"),
        },
        tcp_state: None,
    };
    let v6 = CtMessage {
        kind: CtKind::Update,
        tuple: crate::conntrack::CtTuple {
            proto: 6,
            src: "[2001:db8::7]:40001".parse().expect("test address"),
            dst: "[2001:db8::10]:2049".parse().expect("test address"),
        },
        tcp_state: Some(TcpState::FinWait),
    };
    let destroy = CtMessage {
        kind: CtKind::Destroy,
        ..v4
    };
    let seeds = vec![
        encode_event(&v4),
        encode_event(&v6),
        [encode_event(&destroy), encode_event(&v6)].concat(),
    ];
    let mut decode = |b: &[u8]| {
        let mut any = false;
        for msg in messages(b) {
            let Ok(msg) = msg else {
                return Outcome::Invalid;
            };
            match parse_event(msg.ty, nlmsg_flags(msg.whole), msg.payload) {
                Ok(Some(m)) => {
                    let again = encode_event(&m);
                    let mut split = messages(&again);
                    let one = split.next().expect("one message").expect("valid");
                    let back = parse_event(one.ty, nlmsg_flags(one.whole), one.payload);
                    assert_eq!(back, Ok(Some(m)), "ctnetlink round trip");
                    any = true;
                }
                Ok(None) => {}
                Err(_) => return Outcome::Invalid,
            }
        }
        if any {
            Outcome::Valid
        } else {
            Outcome::Invalid
        }
    };
    run(Target {
        name: "ctnetlink events",
        seeds,
        default_cases: SHORT,
        alloc_bound: bound,
        mutate: Some(&mutate_netlink),
        decode: &mut decode,
    });
}

/// A sock_diag dump answer for one socket (`inet_diag_msg`), as the kernel
/// sends it.
fn encode_diag(family: u8, id: &netlink_packet_sock_diag::inet::SocketId, nlas: &[u8]) -> Vec<u8> {
    let addr = |ip: IpAddr| {
        let mut b = [0u8; 16];
        let raw = ip_bytes(ip);
        b[..raw.len()].copy_from_slice(&raw);
        b
    };
    let mut p = vec![family, 1, 0, 0];
    p.extend_from_slice(&id.source_port.to_be_bytes());
    p.extend_from_slice(&id.destination_port.to_be_bytes());
    p.extend_from_slice(&addr(id.source_address));
    p.extend_from_slice(&addr(id.destination_address));
    p.extend_from_slice(&id.interface_id.to_ne_bytes());
    p.extend_from_slice(&id.cookie);
    for _ in 0..5 {
        p.extend_from_slice(&0u32.to_ne_bytes());
    }
    p.extend_from_slice(nlas);
    nlsock::build_message(20, 2, 1, &p)
}

#[test]
fn fuzz_sock_diag_dump_replies() {
    use netlink_packet_sock_diag::inet::SocketId;
    let mut id4 = SocketId::new_v4();
    id4.source_address = "203.0.113.10".parse().expect("test address");
    id4.destination_address = "198.51.100.7".parse().expect("test address");
    id4.source_port = 445;
    id4.destination_port = 40000;
    id4.cookie = [1, 2, 3, 4, 5, 6, 7, 8];
    let mut id6 = SocketId::new_v6();
    id6.source_address = "2001:db8::10".parse().expect("test address");
    id6.destination_address = "::ffff:198.51.100.7".parse().expect("test address");
    id6.source_port = 2049;
    id6.destination_port = 700;
    // INET_DIAG_INFO-like attributes after the header (skipped by us).
    let nlas = [nla(2, &[0; 12]), nla(5, &[1])].concat();
    let done = nlsock::build_message(NLMSG_DONE, 2, 1, &0u32.to_ne_bytes());
    let err = nlsock::build_message(NLMSG_ERROR, 0, 1, &(-95i32).to_ne_bytes());
    let seeds = vec![
        [encode_diag(2, &id4, &[]), done.clone()].concat(),
        [
            encode_diag(10, &id6, &nlas),
            encode_diag(2, &id4, &nlas),
            done,
        ]
        .concat(),
        err,
    ];
    let mut decode = |b: &[u8]| {
        let mut any = false;
        for msg in messages(b) {
            let Ok(msg) = msg else {
                return Outcome::Invalid;
            };
            assert!(msg.whole.len() >= NLMSG_HDRLEN);
            match msg.ty {
                NLMSG_DONE => {}
                NLMSG_ERROR => {
                    if msg.error_code().is_err() {
                        return Outcome::Invalid;
                    }
                }
                _ => match parse_response(msg.whole, "dump") {
                    Ok(Some(entry)) => {
                        let again = encode_diag(entry.family, &entry.id, &[]);
                        let back = parse_response(&again, "dump")
                            .expect("a re-encoded answer parses")
                            .expect("is an inet answer");
                        assert_eq!(back.conn, entry.conn, "sock_diag round trip");
                        assert_eq!(back.id, entry.id);
                        assert_eq!(back.family, entry.family);
                        any = true;
                    }
                    Ok(None) => {}
                    Err(_) => return Outcome::Invalid,
                },
            }
        }
        if any {
            Outcome::Valid
        } else {
            Outcome::Invalid
        }
    };
    run(Target {
        name: "sock_diag dump replies",
        seeds,
        default_cases: SHORT,
        alloc_bound: bound,
        mutate: Some(&mutate_netlink),
        decode: &mut decode,
    });
}

fn ether(payload: &[u8], v6: bool) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    f.extend_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
    f.extend_from_slice(payload);
    f
}

#[test]
fn fuzz_captured_tcp_packets() {
    let seg = |src: &str, dst: &str, rst| {
        let src: SocketAddr = src.parse().expect("test address");
        let dst: SocketAddr = dst.parse().expect("test address");
        let s = if rst {
            TcpSegment::reset(src, dst, 7, 9)
        } else {
            TcpSegment::tickle(src, dst)
        };
        let mut buf = [0u8; 80];
        let n = s.build(&mut buf).expect("builds");
        ether(&buf[..n], src.is_ipv6())
    };
    let seeds = vec![
        seg("203.0.113.10:445", "198.51.100.7:40000", false),
        seg("[2001:db8::10]:2049", "[2001:db8::7]:700", true),
    ];
    let mut decode = |b: &[u8]| match parse_tcp_frame(b) {
        Some(info) => {
            // The frame parser is the packet parser after the link header.
            assert_eq!(parse_tcp(&b[14..]), Some(info));
            if info.src.is_ipv4() == info.dst.is_ipv4() {
                let s = TcpSegment {
                    src: info.src,
                    dst: info.dst,
                    seq: info.seq,
                    ack: info.ack,
                    rst: info.flags & 0x04 != 0,
                };
                let mut buf = [0u8; 80];
                let n = s.build(&mut buf).expect("a parsed segment builds");
                let back = parse_tcp(&buf[..n]).expect("a built segment parses");
                assert_eq!(
                    (back.src, back.dst, back.seq, back.ack),
                    (info.src, info.dst, info.seq, info.ack),
                    "packet round trip"
                );
            }
            Outcome::Valid
        }
        None => Outcome::Invalid,
    };
    run(Target {
        name: "captured TCP packets",
        seeds,
        default_cases: SHORT,
        alloc_bound: bound,
        mutate: None,
        decode: &mut decode,
    });
}
