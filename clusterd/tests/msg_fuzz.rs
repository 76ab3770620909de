//! Fuzzing, as an ordinary test: clusterd's node-to-node messages
//! ([`ClusterMsg`]: heartbeats, membership updates, admin requests and
//! replies; `AdminCommand`, the local ADMIN request, is a transport
//! payload target), through the decoder the daemon calls on received bytes
//! (`transport::proto::decode_payload`). Random bytes and mutations of
//! valid encodings (forged varint counts and durations, wrong variants);
//! no panic, no hang, at most `128 * len + 4096` bytes held at once, and
//! every valid encoding round-trips. The harness is transport's
//! (transport/tests/fuzz/mod.rs).
//!
//! Short run: `cargo test -p clusterd --test msg_fuzz`; long run with
//! `FUZZ_CASES=10000000` (docs/RELIABILITY.md, "Fuzzing").

#[path = "../../transport/tests/fuzz/mod.rs"]
mod fuzz;

use std::time::Duration;

use clusterd::msg::{
    AdminReply, AdminRequest, ClusterMsg, Heartbeat, LegacyHeartbeat, MembershipUpdate, NodeSet,
    NodeState,
};
use fuzz::{run, Counting, Outcome, Target};
use transport::msg::cluster::{AdminOp, AdminOutcome, NodeFlags};
use transport::proto::{decode_payload, encode_payload};

#[global_allocator]
static GLOBAL: Counting = Counting;

const SHORT: u64 = 50_000;

/// As transport's payload targets: a forged count preallocates at most
/// `size_of::<element>()` (here `NodeState`, 8 bytes) per input byte.
fn bound(len: usize) -> usize {
    128 * len + 4096
}

fn target<T>(name: &'static str, values: Vec<T>)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let seeds = values
        .iter()
        .map(|v| encode_payload(v).expect("seed encodes"))
        .collect();
    let mut decode = |b: &[u8]| match decode_payload::<T>(b) {
        Ok(v) => {
            let e = encode_payload(&v).expect("a decoded message encodes");
            let again: T = decode_payload(&e).expect("an encoding decodes");
            assert_eq!(again, v, "{name}: round trip changed the value");
            assert_eq!(encode_payload(&again).expect("encodes"), e, "{name}");
            Outcome::Valid
        }
        Err(_) => Outcome::Invalid,
    };
    run(Target {
        name,
        seeds,
        default_cases: SHORT,
        alloc_bound: bound,
        mutate: None,
        decode: &mut decode,
    });
}

#[test]
fn cluster_messages() {
    let mut expired = NodeSet::EMPTY;
    expired.set(2, true);
    expired.set(200, true);
    let hb = Heartbeat {
        from: 1,
        to: 0,
        incarnation: 7,
        stamp: Duration::new(12, 345_678_901),
        echo: Some(Duration::from_millis(11_900)),
        echo_incarnation: 3,
        grant: true,
        expired,
        flags: NodeFlags::OK,
        can_lead: true,
        supports: Some(0),
        active_leader: false,
        generation: 42,
        nodes: clusterd::msg::NodeSet::EMPTY,
        also: clusterd::msg::NodeSet::EMPTY,
    };
    target(
        "clusterd ClusterMsg",
        vec![
            ClusterMsg::Heartbeat(hb),
            ClusterMsg::LegacyHeartbeat(LegacyHeartbeat {
                from: 2,
                to: 1,
                stamp: Duration::from_secs(u64::MAX),
                echo: None,
                flags: NodeFlags::BANNED,
                can_lead: false,
                supports: None,
                active_leader: true,
                generation: 1,
            }),
            ClusterMsg::Membership(MembershipUpdate {
                from: 0,
                generation: 43,
                nodes: vec![
                    NodeState {
                        pnn: 0,
                        flags: NodeFlags::OK,
                    },
                    NodeState {
                        pnn: 1,
                        flags: NodeFlags::DISCONNECTED,
                    },
                ],
            }),
            ClusterMsg::Admin(AdminRequest {
                id: 9,
                from: 1,
                target: 2,
                op: AdminOp::Ban { seconds: 60 },
            }),
            ClusterMsg::AdminReply(AdminReply {
                id: 9,
                from: 2,
                to: 1,
                outcome: AdminOutcome::Already,
            }),
        ],
    );
}

/// A heartbeat whose stamp's nanoseconds carry past `u64::MAX` seconds
/// (`Duration::new` would panic): refused, not a crash.
#[test]
fn overflowing_durations_are_refused() {
    let encode = |secs: u64, nanos: u64| {
        // ClusterMsg::LegacyHeartbeat (variant 0), from 0, to 1, stamp.
        let mut input = vec![0, 0, 1];
        input.extend(fuzz::varint(secs));
        input.extend(fuzz::varint(nanos));
        // echo None, flags 0, can_lead, supports None, active, generation.
        input.extend([0, 0, 1, 0, 1, 1]);
        input
    };
    // The layout is right: a carry that fits decodes (normalised).
    match decode_payload::<ClusterMsg>(&encode(5, 1_500_000_000)) {
        Ok(ClusterMsg::LegacyHeartbeat(h)) => assert_eq!(h.stamp, Duration::from_millis(6_500)),
        other => panic!("a valid legacy heartbeat gave {other:?}"),
    }
    for (secs, nanos) in [
        (u64::MAX, 1_000_000_000u64),
        (u64::MAX, u64::from(u32::MAX)),
    ] {
        let r = decode_payload::<ClusterMsg>(&encode(secs, nanos));
        assert!(r.is_err(), "{secs} s {nanos} ns decoded: {r:?}");
    }
}
