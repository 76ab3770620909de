//! Codec unit tests: golden bytes both ways (commented per field), every
//! error path, and proptest round trips.

use proptest::prelude::*;
use transport::proto::control::{
    PeerInfo, PeerList, PingReply, RegisterReply, ServiceInfo, ServiceList, Statistics,
};
use transport::proto::{
    check, decode_payload, encode_frame, encode_payload, Address, Check, DecodeError, EncodeError,
    ErrorCode, FrameRef, Header, HeaderRepr, Kind, Message, PayloadError, RemoteError, HEADER_LEN,
    MAX_PAYLOAD,
};

/// A Request from (1, 0x8001) to (2, failoverd), id 0x0102030405060708,
/// opcode 0x00020001, payload the postcard string "hi".
#[rustfmt::skip]
const GOLDEN: [u8; 43] = [
    0x49, 0x50, 0x46, 0x4F,                         // magic "IPFO"
    0x01,                                           // version 1
    0x01,                                           // kind 1 = Request
    0x00, 0x00,                                     // flags 0
    0x00, 0x00, 0x00, 0x03,                         // length 3
    0x00, 0x00, 0x00, 0x01,                         // src_pnn 1
    0x80, 0x01,                                     // src_service 0x8001 (ephemeral)
    0x00, 0x02,                                     // dst_service 2 (failoverd)
    0x00, 0x00, 0x00, 0x02,                         // dst_pnn 2
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // request_id
    0x00, 0x02, 0x00, 0x01,                         // opcode 0x00020001
    0x00, 0x00, 0x00, 0x00,                         // reserved 0
    0x02, b'h', b'i',                               // payload: postcard "hi" (len 2, bytes)
];

fn golden_header() -> HeaderRepr {
    HeaderRepr {
        kind: Kind::Request,
        src: Address::new(1, 0x8001),
        dst: Address::new(2, 2),
        request_id: 0x0102_0304_0506_0708,
        opcode: 0x0002_0001,
    }
}

#[test]
fn golden_frame_encodes() {
    let msg = Message::with_payload(golden_header(), "hi").unwrap();
    assert_eq!(msg.to_bytes().unwrap(), GOLDEN);
}

#[test]
fn golden_frame_decodes() {
    let frame = FrameRef::decode(&GOLDEN).unwrap();
    assert_eq!(frame.header, golden_header());
    assert_eq!(frame.payload, &[0x02, b'h', b'i']);
    assert_eq!(frame.decode_payload::<&str>().unwrap(), "hi");
    let view = Header::new_checked(&GOLDEN[..]).unwrap();
    assert_eq!(view.magic(), 0x4950_464F);
    assert_eq!(view.version(), 1);
    assert_eq!(view.kind(), Kind::Request);
    assert_eq!(view.flags(), 0);
    assert_eq!(view.length(), 3);
    assert_eq!(view.src(), Address::new(1, 0x8001));
    assert_eq!(view.dst(), Address::new(2, 2));
    assert_eq!(view.request_id(), 0x0102_0304_0506_0708);
    assert_eq!(view.opcode(), 0x0002_0001);
    assert_eq!(view.reserved(), 0);
    assert_eq!(check(&GOLDEN), Ok(Check::Complete { frame_len: 43 }));
}

#[test]
fn header_setters_rewrite_in_place() {
    let mut bytes = GOLDEN;
    let mut view = Header::new_checked(&mut bytes[..]).unwrap();
    view.set_src(Address::new(0xAABB_CCDD, 0x1234));
    view.set_dst_pnn(0xFFFF_FFFF);
    view.set_kind(Kind::Event);
    assert_eq!(&bytes[12..18], &[0xAA, 0xBB, 0xCC, 0xDD, 0x12, 0x34]);
    assert_eq!(&bytes[20..24], &[0xFF; 4]);
    assert_eq!(bytes[5], 3);
    // The rest is untouched.
    assert_eq!(&bytes[..5], &GOLDEN[..5]);
    assert_eq!(&bytes[24..], &GOLDEN[24..]);
}

#[test]
#[rustfmt::skip]
fn golden_payloads() {
    // RemoteError { code: UnknownService (1), message: "x" }
    let e = RemoteError::new(ErrorCode::UnknownService, "x");
    let bytes = encode_payload(&e).unwrap();
    assert_eq!(bytes, [
        0x01,       // code 1 as a varint u16
        0x01, b'x', // message: length 1, "x"
    ]);
    assert_eq!(decode_payload::<RemoteError>(&bytes).unwrap(), e);
    // RegisterReply { pnn: 300, service: 2 }
    let r = RegisterReply { pnn: 300, service: 2 };
    assert_eq!(encode_payload(&r).unwrap(), [
        0xAC, 0x02, // pnn 300 as a varint (0x2C | 0x80, 0x02)
        0x02,       // service 2
    ]);
    // () is zero bytes.
    assert_eq!(encode_payload(&()).unwrap(), Vec::<u8>::new());
}

#[test]
fn unknown_error_codes_are_values() {
    let bytes = encode_payload(&(0x0777u16, "later")).unwrap();
    let e: RemoteError = decode_payload(&bytes).unwrap();
    assert_eq!(e.code, ErrorCode::Unknown(0x777));
    assert_eq!(encode_payload(&e).unwrap(), bytes);
    for v in 0..=20u16 {
        assert_eq!(u16::from(ErrorCode::from(v)), v);
    }
}

#[test]
fn kinds_round_trip_and_unknown_is_a_value() {
    for v in 0..=255u8 {
        assert_eq!(u8::from(Kind::from(v)), v);
    }
    assert_eq!(Kind::from(0), Kind::Unknown(0));
    assert_eq!(Kind::from(5), Kind::Unknown(5));
}

fn with(offset: usize, bytes: &[u8]) -> Vec<u8> {
    let mut f = GOLDEN.to_vec();
    f[offset..offset + bytes.len()].copy_from_slice(bytes);
    f
}

#[test]
fn every_header_error() {
    let cases: Vec<(Vec<u8>, DecodeError)> = vec![
        (with(0, b"IPFX"), DecodeError::BadMagic(0x4950_4658)),
        (with(4, &[2]), DecodeError::BadVersion(2)),
        (with(5, &[0]), DecodeError::UnknownKind(0)),
        (with(5, &[9]), DecodeError::UnknownKind(9)),
        (with(6, &[0, 1]), DecodeError::NonZeroFlags(1)),
        (
            with(8, &[0x00, 0x40, 0x00, 0x01]),
            DecodeError::PayloadTooLarge {
                length: 0x0040_0001,
                max: MAX_PAYLOAD,
            },
        ),
        (
            with(8, &[0xFF; 4]),
            DecodeError::PayloadTooLarge {
                length: u32::MAX,
                max: MAX_PAYLOAD,
            },
        ),
        (with(36, &[0, 0, 0, 7]), DecodeError::NonZeroReserved(7)),
    ];
    for (bytes, want) in cases {
        assert_eq!(check(&bytes), Err(want.clone()), "check {want}");
        assert_eq!(FrameRef::decode(&bytes), Err(want.clone()), "decode {want}");
        assert_eq!(Message::decode(&bytes), Err(want.clone()));
        // The header alone (no payload yet) is already rejected.
        assert_eq!(check(&bytes[..HEADER_LEN]), Err(want));
    }
    // Exactly MAX_PAYLOAD is allowed (incomplete here, not invalid).
    let max = with(8, &u32::try_from(MAX_PAYLOAD).unwrap().to_be_bytes());
    assert_eq!(
        check(&max),
        Ok(Check::Incomplete {
            need: HEADER_LEN + MAX_PAYLOAD
        })
    );
}

#[test]
fn incomplete_truncated_and_trailing() {
    for n in 0..HEADER_LEN {
        assert_eq!(
            check(&GOLDEN[..n]),
            Ok(Check::Incomplete { need: HEADER_LEN })
        );
        assert_eq!(
            Header::new_checked(&GOLDEN[..n]),
            Err(DecodeError::Truncated {
                have: n,
                need: HEADER_LEN
            })
        );
    }
    for n in HEADER_LEN..GOLDEN.len() {
        assert_eq!(check(&GOLDEN[..n]), Ok(Check::Incomplete { need: 43 }));
        assert_eq!(
            FrameRef::decode(&GOLDEN[..n]),
            Err(DecodeError::Truncated { have: n, need: 43 })
        );
    }
    let mut two = GOLDEN.to_vec();
    two.extend_from_slice(&GOLDEN);
    assert_eq!(
        FrameRef::decode(&two),
        Err(DecodeError::TrailingBytes { extra: 43 })
    );
    let (first, used) = FrameRef::decode_prefix(&two).unwrap();
    assert_eq!(used, 43);
    assert_eq!(FrameRef::decode(&two[used..]).unwrap(), first);
}

#[test]
fn encode_errors() {
    let h = golden_header();
    let mut small = [0u8; HEADER_LEN - 1];
    assert_eq!(
        h.emit(&mut small, 0),
        Err(EncodeError::BufferTooSmall {
            have: HEADER_LEN - 1,
            need: HEADER_LEN
        })
    );
    let mut buf = [0u8; HEADER_LEN];
    assert_eq!(
        h.emit(&mut buf, MAX_PAYLOAD + 1),
        Err(EncodeError::PayloadTooLarge {
            length: MAX_PAYLOAD + 1,
            max: MAX_PAYLOAD
        })
    );
    let big = vec![0u8; MAX_PAYLOAD + 1];
    let mut out = Vec::new();
    assert!(encode_frame(&h, &big, &mut out).is_err());
    assert!(out.is_empty(), "nothing written on error");
    assert!(matches!(
        encode_payload(&big),
        Err(PayloadError::TooLarge { .. })
    ));
}

#[test]
fn payload_errors() {
    // A string whose length prefix runs past the end.
    assert!(matches!(
        decode_payload::<String>(&[5, b'a']),
        Err(PayloadError::Decode { .. })
    ));
    // Bytes left over.
    assert!(matches!(
        decode_payload::<u8>(&[1, 2]),
        Err(PayloadError::Trailing { extra: 1, .. })
    ));
    // Invalid UTF-8.
    assert!(matches!(
        decode_payload::<String>(&[1, 0xFF]),
        Err(PayloadError::Decode { .. })
    ));
    // A sequence claiming 2^32 elements in 5 bytes fails, it does not allocate 4 GiB.
    assert!(decode_payload::<Vec<u64>>(&[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]).is_err());
}

fn arb_kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Request),
        Just(Kind::Reply),
        Just(Kind::Event),
        Just(Kind::Error)
    ]
}

prop_compose! {
    fn arb_header()(kind in arb_kind(), sp in any::<u32>(), ss in any::<u16>(),
                    dp in any::<u32>(), ds in any::<u16>(), id in any::<u64>(),
                    op in any::<u32>()) -> HeaderRepr {
        HeaderRepr { kind, src: Address::new(sp, ss), dst: Address::new(dp, ds),
                     request_id: id, opcode: op }
    }
}

proptest! {
    #[test]
    fn frames_round_trip(h in arb_header(), payload in proptest::collection::vec(any::<u8>(), 0..512)) {
        let msg = Message::new(h, payload);
        let bytes = msg.to_bytes().unwrap();
        prop_assert_eq!(bytes.len(), HEADER_LEN + msg.payload.len());
        prop_assert_eq!(check(&bytes), Ok(Check::Complete { frame_len: bytes.len() }));
        prop_assert_eq!(Message::decode(&bytes).unwrap(), msg);
    }

    #[test]
    fn remote_errors_round_trip(code in any::<u16>(), message in ".{0,40}") {
        let e = RemoteError { code: ErrorCode::from(code), message };
        let bytes = encode_payload(&e).unwrap();
        prop_assert_eq!(decode_payload::<RemoteError>(&bytes).unwrap(), e);
    }

    #[test]
    fn control_payloads_round_trip(pnn in any::<u32>(), id in any::<u16>(), name in "[a-z]{0,12}",
                                   subs in proptest::collection::vec(any::<u32>(), 0..8),
                                   n in any::<u64>(), up in any::<bool>()) {
        let list = ServiceList { pnn, services: vec![ServiceInfo { id, name: name.clone(), subscriptions: subs }] };
        prop_assert_eq!(decode_payload::<ServiceList>(&encode_payload(&list).unwrap()).unwrap(), list);
        let peers = PeerList { pnn, peers: vec![PeerInfo { pnn, address: name.clone(), connected: up, since_ms: n }] };
        prop_assert_eq!(decode_payload::<PeerList>(&encode_payload(&peers).unwrap()).unwrap(), peers);
        let stats = Statistics { counters: vec![(name, n)] };
        prop_assert_eq!(decode_payload::<Statistics>(&encode_payload(&stats).unwrap()).unwrap(), stats);
        let ping = PingReply { data: vec![1, 2, 3], clients: pnn };
        prop_assert_eq!(decode_payload::<PingReply>(&encode_payload(&ping).unwrap()).unwrap(), ping);
    }
}
