//! Fuzzing, as an ordinary test: conntrackd's peer messages ([`Msg`]: deltas,
//! sync chunks, requests, versions), its local requests and responses, and
//! the `HOSTS` announce, each through the decoder the daemon calls on
//! received bytes. Random bytes and mutations of valid encodings; no panic,
//! no hang, at most `64 * len + 4096` bytes held at once, and every valid
//! encoding round-trips. The harness is transport's (tests/fuzz/mod.rs).
//!
//! Short run: `cargo test -p conntrackd --test msg_fuzz`; long run:
//! `FUZZ_CASES=10000000` (docs/RELIABILITY.md, "Fuzzing").

#[path = "../../transport/tests/fuzz/mod.rs"]
mod fuzz;

use std::fmt::Debug;
use std::net::{IpAddr, SocketAddr};

use conntrackd::daemon::Announce;
use conntrackd::msg::{
    decode, encode, AddrOps, Deltas, Msg, Op, OpKind, Request, Response, SyncChunk,
};
use conntrackd::table::{Conn, Version};
use fuzz::{run, Counting, Outcome, Target};
use serde::{de::DeserializeOwned, Serialize};

#[global_allocator]
static GLOBAL: Counting = Counting;

const SHORT: u64 = 50_000;

/// postcard caps a sequence's preallocation to the bytes left, so a forged
/// count costs at most `size_of::<element>()` per input byte, summed over
/// nested sequences: `Deltas.groups` (`AddrOps`) holding `ops` (`Op`) is
/// the deepest (checked below).
fn bound(len: usize) -> usize {
    128 * len + 4096
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn conn(s: &str, port: u16) -> Conn {
    Conn {
        client: s.parse::<SocketAddr>().expect("test socket address"),
        public_port: port,
    }
}

fn target<T>(name: &'static str, values: Vec<T>, decoder: fn(&[u8]) -> Option<T>)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let seeds = values
        .iter()
        .map(|v| encode(v).expect("seed encodes"))
        .collect();
    let mut decode_one = |b: &[u8]| match decoder(b) {
        Some(v) => {
            let e = encode(&v).expect("a decoded message encodes");
            let again = decoder(&e).expect("an encoding decodes");
            assert_eq!(again, v, "{name}: round trip changed the value");
            assert_eq!(encode(&again).expect("encodes"), e, "{name}: unstable");
            Outcome::Valid
        }
        None => Outcome::Invalid,
    };
    run(Target {
        name,
        seeds,
        default_cases: SHORT,
        alloc_bound: bound,
        mutate: None,
        decode: &mut decode_one,
    });
}

#[test]
fn element_sizes_are_within_the_bound() {
    for (name, size) in [
        ("Op", std::mem::size_of::<Op>()),
        ("AddrOps", std::mem::size_of::<AddrOps>()),
        ("Conn", std::mem::size_of::<Conn>()),
        (
            "(IpAddr, Version)",
            std::mem::size_of::<(IpAddr, Version)>(),
        ),
        ("(IpAddr, u64)", std::mem::size_of::<(IpAddr, u64)>()),
    ] {
        assert!(size <= 64, "{name} is {size} bytes: raise the bound");
    }
    assert!(std::mem::size_of::<AddrOps>() + std::mem::size_of::<Op>() <= 128);
}

/// Forged counts, explicitly, at both levels of a delta batch: counts
/// beyond the input must fail; counts the input could hold (the largest
/// preallocation) stay within the bound.
#[test]
fn huge_declared_counts_cost_at_most_the_bound() {
    for tail in [0usize, 8, 100, 4000] {
        let fits = u64::try_from(tail).expect("small");
        for outer in [u64::MAX, u64::from(u32::MAX), fits] {
            for inner in [u64::MAX, fits, fits / 2] {
                // Msg::Deltas (variant 0), reporter 1, `outer` groups; the
                // first: address V4 (variant 0) 203.0.113.10, `inner` ops.
                let mut input = vec![0, 1];
                input.extend(fuzz::varint(outer));
                input.extend([0, 203, 0, 113, 10]);
                input.extend(fuzz::varint(inner));
                input.extend(std::iter::repeat_n(0x01, tail));
                let (r, peak) = fuzz::peak_of(|| decode::<Msg>(&input));
                if outer > fits || inner > fits {
                    assert!(r.is_err(), "outer {outer} inner {inner} decoded");
                }
                assert!(
                    peak <= bound(input.len()),
                    "outer {outer} inner {inner} tail {tail}: held {peak} bytes"
                );
            }
        }
    }
}

#[test]
fn peer_messages() {
    let v4 = ip("203.0.113.10");
    let v6 = ip("2001:db8::10");
    let c4 = conn("198.51.100.7:40000", 445);
    let c6 = conn("[2001:db8::7]:40001", 2049);
    let version = Version::new(3, 17);
    target(
        "conntrackd Msg",
        vec![
            Msg::Deltas(Deltas {
                reporter: 1,
                groups: vec![
                    AddrOps {
                        address: v4,
                        ops: vec![
                            Op {
                                version,
                                kind: OpKind::Add,
                                conn: c4,
                            },
                            Op {
                                version: version.next(),
                                kind: OpKind::Remove,
                                conn: c4,
                            },
                        ],
                    },
                    AddrOps {
                        address: v6,
                        ops: vec![Op {
                            version,
                            kind: OpKind::Add,
                            conn: c6,
                        }],
                    },
                ],
            }),
            Msg::Sync(SyncChunk {
                reporter: 2,
                address: v6,
                version,
                index: 0,
                total: 2,
                conns: vec![c6, c4],
            }),
            Msg::SyncRequest {
                from: 0,
                address: Some(v4),
            },
            Msg::SnapshotRequest { from: 1 },
            Msg::Versions {
                reporter: 1,
                versions: vec![(v4, version), (v6, Version::default())],
            },
        ],
        |b| decode::<Msg>(b).ok(),
    );
    target(
        "conntrackd Announce",
        vec![Announce {
            incarnation: 5,
            hosted: vec![v4, v6],
        }],
        |b| transport::proto::decode_payload::<Announce>(b).ok(),
    );
}

#[test]
fn local_requests_and_responses() {
    let v4 = ip("203.0.113.10");
    let c4 = conn("198.51.100.7:40000", 445);
    target(
        "conntrackd Request",
        vec![
            Request::Connections {
                address: v4,
                port: Some(445),
            },
            Request::Counts,
            Request::Add {
                address: v4,
                conn: c4,
            },
            Request::Remove {
                address: v4,
                conn: c4,
            },
        ],
        |b| decode::<Request>(b).ok(),
    );
    target(
        "conntrackd Response",
        vec![
            Response::Connections {
                conns: vec![c4, c4],
                more: false,
            },
            Response::Counts(vec![(v4, 3)]),
            Response::Done,
            Response::Error("no".into()),
        ],
        |b| decode::<Response>(b).ok(),
    );
}
