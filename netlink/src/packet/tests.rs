//! Golden bytes for every builder, each field commented (the checksums were
//! computed independently with a one's-complement sum in Python), plus
//! round trips through the parser and a no-panic sweep of truncated input.

use super::*;

const MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0a];

fn v4(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn garp_request_golden() {
    let mut buf = [0u8; 64];
    let n = build_garp(
        &mut buf,
        MAC,
        "192.0.2.10".parse().unwrap(),
        ArpKind::Request,
    )
    .unwrap();
    #[rustfmt::skip]
    let want: [u8; ARP_FRAME_LEN] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // Ethernet dst: broadcast
        0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, // Ethernet src: interface MAC
        0x08, 0x06,                         // ethertype ARP
        0x00, 0x01,                         // htype Ethernet
        0x08, 0x00,                         // ptype IPv4
        0x06,                               // hlen
        0x04,                               // plen
        0x00, 0x01,                         // op: request
        0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, // sender MAC
        192, 0, 2, 10,                      // sender IP = public IP
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // target MAC: zero
        192, 0, 2, 10,                      // target IP = public IP
    ];
    assert_eq!(&buf[..n], &want[..]);
}

#[test]
fn garp_reply_golden() {
    let mut buf = [0u8; ARP_FRAME_LEN];
    let n = build_garp(&mut buf, MAC, "192.0.2.10".parse().unwrap(), ArpKind::Reply).unwrap();
    #[rustfmt::skip]
    let want: [u8; ARP_FRAME_LEN] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // Ethernet dst: broadcast
        0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, // Ethernet src
        0x08, 0x06,                         // ethertype ARP
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, // htype, ptype, hlen, plen
        0x00, 0x02,                         // op: reply
        0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, // sender MAC
        192, 0, 2, 10,                      // sender IP
        0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, // target MAC = own MAC (CTDB)
        192, 0, 2, 10,                      // target IP
    ];
    assert_eq!(&buf[..n], &want[..]);
}

#[test]
fn na_golden() {
    let mut buf = [0u8; NA_FRAME_LEN];
    let n = build_na(&mut buf, MAC, "2001:db8::10".parse().unwrap()).unwrap();
    #[rustfmt::skip]
    let want: [u8; NA_FRAME_LEN] = [
        0x33, 0x33, 0x00, 0x00, 0x00, 0x01, // Ethernet dst: all-nodes multicast
        0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, // Ethernet src
        0x86, 0xdd,                         // ethertype IPv6
        0x60, 0x00, 0x00, 0x00,             // version 6, class 0, flow 0
        0x00, 0x20,                         // payload length 32
        58,                                 // next header ICMPv6
        255,                                // hop limit
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, // src = public IP
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,       // dst ff02::1
        136,                                // ICMPv6 type: neighbour advertisement
        0,                                  // code
        0xf9, 0x03,                         // checksum
        0x20, 0x00, 0x00, 0x00,             // flags: Override only
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, // target
        0x02,                               // option: target link-layer address
        0x01,                               // option length (8 bytes)
        0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, // the MAC
    ];
    assert_eq!(&buf[..n], &want[..]);
}

#[test]
fn tickle4_golden() {
    let seg = TcpSegment::tickle(v4("192.0.2.10:445"), v4("198.51.100.7:51234"));
    let mut buf = [0u8; 64];
    let n = seg.build(&mut buf).unwrap();
    #[rustfmt::skip]
    let want: [u8; TCP4_LEN] = [
        0x45, 0x00,             // version 4, IHL 5, DSCP/ECN 0
        0x00, 0x28,             // total length 40
        0x00, 0x00, 0x00, 0x00, // id 0, no fragmentation
        0xff,                   // TTL 255
        0x06,                   // protocol TCP
        0xcf, 0x8a,             // header checksum
        192, 0, 2, 10,          // src = public IP
        198, 51, 100, 7,        // dst = client
        0x01, 0xbd,             // src port 445
        0xc8, 0x22,             // dst port 51234
        0, 0, 0, 0,             // seq 0
        0, 0, 0, 0,             // ack 0
        0x50,                   // data offset 5
        0x10,                   // flags ACK
        0x04, 0xd2,             // window 1234
        0xf4, 0xdd,             // TCP checksum
        0x00, 0x00,             // urgent pointer
    ];
    assert_eq!(&buf[..n], &want[..]);
    assert_eq!(seg.len(), n);
}

#[test]
fn reset4_golden() {
    let seg = TcpSegment::reset(
        v4("198.51.100.7:51234"),
        v4("192.0.2.10:445"),
        0x1122_3344,
        0x5566_7788,
    );
    let mut buf = [0u8; TCP4_LEN];
    seg.build(&mut buf).unwrap();
    #[rustfmt::skip]
    let want: [u8; TCP4_LEN] = [
        0x45, 0x00, 0x00, 0x28, // version/IHL, DSCP, total length 40
        0x00, 0x00, 0x00, 0x00, // id, fragment
        0xff, 0x06, 0xcf, 0x8a, // TTL 255, TCP, header checksum
        198, 51, 100, 7,        // src = client
        192, 0, 2, 10,          // dst = server
        0xc8, 0x22, 0x01, 0xbd, // ports 51234 -> 445
        0x11, 0x22, 0x33, 0x44, // seq
        0x55, 0x66, 0x77, 0x88, // ack
        0x50, 0x14,             // data offset 5, flags RST|ACK
        0x04, 0xd2,             // window 1234
        0xe3, 0x84,             // TCP checksum
        0x00, 0x00,             // urgent pointer
    ];
    assert_eq!(buf, want);
}

#[test]
fn tickle6_golden() {
    let seg = TcpSegment::tickle(v4("[2001:db8::10]:2049"), v4("[2001:db8::7]:40000"));
    let mut buf = [0u8; TCP6_LEN];
    assert_eq!(seg.build(&mut buf).unwrap(), TCP6_LEN);
    #[rustfmt::skip]
    let want: [u8; TCP6_LEN] = [
        0x60, 0x00, 0x00, 0x00, // version 6, class, flow
        0x00, 0x14,             // payload length 20
        0x06,                   // next header TCP
        64,                     // hop limit
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, // src
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x07, // dst
        0x08, 0x01,             // src port 2049
        0x9c, 0x40,             // dst port 40000
        0, 0, 0, 0, 0, 0, 0, 0, // seq 0, ack 0
        0x50, 0x10,             // data offset 5, flags ACK
        0x04, 0xd2,             // window 1234
        0xab, 0x38,             // TCP checksum
        0x00, 0x00,             // urgent pointer
    ];
    assert_eq!(buf, want);
}

#[test]
fn short_buffers_and_mixed_families_are_errors() {
    let mut small = [0u8; 10];
    assert_eq!(
        build_garp(
            &mut small,
            MAC,
            "192.0.2.1".parse().unwrap(),
            ArpKind::Reply
        ),
        Err(PacketError::BufferTooSmall { need: 42, have: 10 })
    );
    assert!(build_na(&mut small, MAC, "2001:db8::1".parse().unwrap()).is_err());
    let seg = TcpSegment::tickle(v4("192.0.2.1:1"), v4("[2001:db8::1]:2"));
    assert!(matches!(
        seg.build(&mut [0u8; 64]),
        Err(PacketError::MixedFamilies { .. })
    ));
    let seg = TcpSegment::tickle(v4("[2001:db8::1]:1"), v4("[2001:db8::2]:2"));
    assert!(matches!(
        seg.build(&mut [0u8; 59]),
        Err(PacketError::BufferTooSmall { need: 60, .. })
    ));
}

#[test]
fn built_segments_parse_back() {
    for (s, d) in [
        ("192.0.2.1:80", "198.51.100.2:1234"),
        ("[2001:db8::1]:80", "[2001:db8::2]:1234"),
    ] {
        let seg = TcpSegment::reset(v4(s), v4(d), 7, 9);
        let mut buf = [0u8; 64];
        let n = seg.build(&mut buf).unwrap();
        let info = parse_tcp(&buf[..n]).unwrap();
        assert_eq!(
            (info.src, info.dst, info.seq, info.ack),
            (seg.src, seg.dst, 7, 9)
        );
        assert_eq!(info.flags, TCP_RST | TCP_ACK);
        assert!(info.is_ours());
        let tickle = TcpSegment::tickle(v4(s), v4(d));
        tickle.build(&mut buf).unwrap();
        assert!(parse_tcp(&buf[..n]).unwrap().is_ours());
    }
}

#[test]
fn parser_never_panics_on_truncated_or_garbage_input() {
    let seg = TcpSegment::tickle(v4("[2001:db8::1]:80"), v4("[2001:db8::2]:1234"));
    let mut buf = [0u8; 64];
    let n = seg.build(&mut buf).unwrap();
    for cut in 0..n {
        assert!(parse_tcp(&buf[..cut]).is_none(), "cut {cut}");
        let _ = parse_tcp_frame(&buf[..cut]);
    }
    let mut x: u32 = 12345;
    for _ in 0..2000 {
        let mut g = [0u8; 80];
        for b in g.iter_mut() {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = x.to_be_bytes()[1];
        }
        let len = usize::try_from(x % 80).unwrap();
        let _ = parse_tcp(&g[..len]);
        let _ = parse_tcp_frame(&g[..len]);
    }
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn addr_pair() -> impl Strategy<Value = (SocketAddr, SocketAddr)> {
        prop_oneof![
            (
                any::<[u8; 4]>(),
                any::<u16>(),
                any::<[u8; 4]>(),
                any::<u16>()
            )
                .prop_map(|(a, p, b, q)| (SocketAddr::from((a, p)), SocketAddr::from((b, q)))),
            (
                any::<[u8; 16]>(),
                any::<u16>(),
                any::<[u8; 16]>(),
                any::<u16>()
            )
                .prop_map(|(a, p, b, q)| (SocketAddr::from((a, p)), SocketAddr::from((b, q)))),
        ]
    }

    /// One's-complement sum of the pseudo header and the TCP header; 0 when
    /// the checksum is right (independent of the builder's code).
    fn verify(pkt: &[u8], v6: bool) -> u16 {
        let (src, dst, tcp) = if v6 {
            (&pkt[8..24], &pkt[24..40], &pkt[40..])
        } else {
            (&pkt[12..16], &pkt[16..20], &pkt[20..])
        };
        let mut words: Vec<u8> = Vec::new();
        words.extend_from_slice(src);
        words.extend_from_slice(dst);
        words.extend_from_slice(&[0, 6, 0, 20]);
        words.extend_from_slice(tcp);
        let mut sum: u32 = words
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !u16::try_from(sum).unwrap()
    }

    proptest! {
        #[test]
        fn segments_round_trip_with_valid_checksums(
            (src, dst) in addr_pair(), seq in any::<u32>(), ack in any::<u32>(), rst in any::<bool>()
        ) {
            let seg = TcpSegment { src, dst, seq, ack, rst };
            let mut buf = [0u8; 64];
            let n = seg.build(&mut buf).unwrap();
            let info = parse_tcp(&buf[..n]).unwrap();
            prop_assert_eq!((info.src, info.dst, info.seq, info.ack), (src, dst, seq, ack));
            prop_assert_eq!(verify(&buf[..n], dst.is_ipv6()), 0);
            if dst.is_ipv4() {
                // The IPv4 header checksum verifies too.
                prop_assert_eq!(pnet::packet::util::checksum(&buf[..20], 99), 0);
            }
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = parse_tcp(&bytes);
            let _ = parse_tcp_frame(&bytes);
        }
    }
}
