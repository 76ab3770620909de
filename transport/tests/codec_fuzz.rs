//! Fuzz-style property test: one million random and mutated frames through
//! every decoder, with a seeded RNG in a plain loop (runs in the normal
//! `cargo test`). Nothing may panic; the borrowed decoders may not allocate at
//! all; owned decoding may not allocate more than a bound derived from the
//! input (never the 4 GiB a forged length field asks for).
//!
//! Reproduce a run with `IPFO_FUZZ_SEED=<n>`; change the count with
//! `IPFO_FUZZ_CASES=<n>` (at least the default in CI).

use transport::controls::{answer_common, ControlContext};
use transport::proto::control::{
    LogLevelRequest, PeerList, PingRequest, RegisterRequest, ServiceList, Statistics,
    SubscribeRequest,
};
use transport::proto::{
    check, decode_payload, Address, Check, FrameRef, Header, HeaderRepr, Kind, Message,
    RemoteError, HEADER_LEN, MAX_PAYLOAD,
};

/// Counts allocations (per thread) and the peak of live bytes.
#[global_allocator]
static GLOBAL: alloccount::Counting = alloccount::Counting;

/// xorshift64*: tiny, seeded, good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        // n is small (a buffer length); the modulo keeps it in range.
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap()).unwrap()
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let h = |kind, opcode| HeaderRepr {
        kind,
        src: Address::new(1, 0x8001),
        dst: Address::new(2, 2),
        request_id: 7,
        opcode,
    };
    let mk =
        |kind, opcode, payload: Vec<u8>| Message::new(h(kind, opcode), payload).to_bytes().unwrap();
    let enc = |v: &dyn erased::Enc| v.enc();
    vec![
        mk(
            Kind::Request,
            1,
            enc(&PingRequest {
                data: vec![1, 2, 3],
            }),
        ),
        mk(
            Kind::Request,
            0x100,
            enc(&RegisterRequest {
                name: "failoverd".into(),
            }),
        ),
        mk(
            Kind::Request,
            0x101,
            enc(&SubscribeRequest {
                opcode: 0x0001_0002,
            }),
        ),
        mk(
            Kind::Request,
            4,
            enc(&LogLevelRequest {
                set: Some("debug".into()),
            }),
        ),
        mk(
            Kind::Error,
            9,
            enc(&RemoteError::new(
                transport::proto::ErrorCode::Refused,
                "no",
            )),
        ),
        mk(
            Kind::Reply,
            3,
            enc(&Statistics {
                counters: vec![("routed".into(), 5), ("x".into(), u64::MAX)],
            }),
        ),
        mk(
            Kind::Reply,
            0x103,
            enc(&ServiceList {
                pnn: 1,
                services: vec![transport::proto::control::ServiceInfo {
                    id: 2,
                    name: "failoverd".into(),
                    subscriptions: vec![1, 2],
                }],
            }),
        ),
        mk(Kind::Event, 0x0002_0001, vec![]),
    ]
}

mod erased {
    pub trait Enc {
        fn enc(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Enc for T {
        fn enc(&self) -> Vec<u8> {
            transport::proto::encode_payload(self).unwrap()
        }
    }
}

/// Builds the next input: random bytes, or a seed with a few mutations.
fn next_input(rng: &mut Rng, seeds: &[Vec<u8>], buf: &mut Vec<u8>) {
    buf.clear();
    match rng.below(10) {
        0 => {
            let n = rng.below(96);
            buf.extend((0..n).map(|_| rng.byte()));
        }
        1 => {
            // A random header with the right magic/version so the other checks run.
            buf.extend_from_slice(&seeds[rng.below(seeds.len())][..HEADER_LEN]);
            for b in buf.iter_mut().skip(5) {
                *b = rng.byte();
            }
            let n = rng.below(32);
            buf.extend((0..n).map(|_| rng.byte()));
        }
        _ => {
            buf.extend_from_slice(&seeds[rng.below(seeds.len())]);
            for _ in 0..=rng.below(4) {
                match rng.below(6) {
                    0 | 1 if buf.len() > HEADER_LEN => {
                        // Change a payload byte (keeps the header valid: payload decoders run).
                        let i = HEADER_LEN + rng.below(buf.len() - HEADER_LEN);
                        buf[i] = rng.byte();
                    }
                    2 if !buf.is_empty() => {
                        let i = rng.below(buf.len());
                        buf[i] ^= 1 << rng.below(8);
                    }
                    3 => {
                        let keep = rng.below(buf.len() + 1);
                        buf.truncate(keep);
                    }
                    4 => {
                        let n = rng.below(16);
                        buf.extend((0..n).map(|_| rng.byte()));
                    }
                    _ if buf.len() >= HEADER_LEN => {
                        // Forge the length field: small, huge, or exactly off by one.
                        let len = match rng.below(3) {
                            0 => u32::try_from(buf.len() - HEADER_LEN)
                                .unwrap()
                                .wrapping_add(1),
                            1 => u32::try_from(MAX_PAYLOAD + rng.below(1 << 20)).unwrap(),
                            _ => u32::try_from(rng.next() >> 32).unwrap(),
                        };
                        buf[8..12].copy_from_slice(&len.to_be_bytes());
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Decodes the payload as every control type; returns how many decoded.
fn decode_all_payloads(payload: &[u8]) -> usize {
    usize::from(decode_payload::<PingRequest>(payload).is_ok())
        + usize::from(decode_payload::<RegisterRequest>(payload).is_ok())
        + usize::from(decode_payload::<RemoteError>(payload).is_ok())
        + usize::from(decode_payload::<Statistics>(payload).is_ok())
        + usize::from(decode_payload::<ServiceList>(payload).is_ok())
        + usize::from(decode_payload::<PeerList>(payload).is_ok())
        + usize::from(decode_payload::<LogLevelRequest>(payload).is_ok())
}

#[test]
fn one_million_random_and_mutated_frames() {
    let cases: usize = std::env::var("IPFO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let seed: u64 = std::env::var("IPFO_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x1FF0_2026);
    let mut rng = Rng(seed | 1);
    let seeds = seeds();
    let stats_fn = Statistics::default;
    let ctx = ControlContext {
        name: "fuzz",
        clients: 0,
        statistics: &stats_fn,
        log_level: None,
        reset_statistics: None,
    };
    let mut input = Vec::with_capacity(4096);
    let (mut complete, mut incomplete, mut invalid, mut payloads_ok) =
        (0usize, 0usize, 0usize, 0usize);
    let mut worst_peak = 0usize;

    for case in 0..cases {
        next_input(&mut rng, &seeds, &mut input);

        // Borrowed decoding: zero allocations.
        let before = alloccount::thread_allocations();
        let checked = check(&input);
        let prefix = FrameRef::decode_prefix(&input);
        let exact = FrameRef::decode(&input);
        let view = Header::new_checked(&input[..])
            .ok()
            .map(|h| (h.kind(), h.length(), HeaderRepr::parse(&h).is_ok()));
        let after = alloccount::thread_allocations();
        assert_eq!(
            after, before,
            "case {case}: borrowed decoding allocated ({input:02x?})"
        );

        // Consistency between the decoders.
        match checked {
            Ok(Check::Complete { frame_len }) => {
                complete += 1;
                let (frame, used) = prefix.expect("check said complete");
                assert_eq!(used, frame_len);
                assert_eq!(exact.is_ok(), frame_len == input.len(), "case {case}");
                assert!(frame.payload.len() <= MAX_PAYLOAD);
                assert!(view.is_some_and(|(k, _, ok)| ok && !matches!(k, Kind::Unknown(_))));

                // Owned decoding and payload decoders: allocation bounded by the input.
                let ((), peak) = alloccount::peak_of(|| {
                    if let Ok(msg) = Message::decode(&input[..frame_len]) {
                        assert_eq!(msg.payload, frame.payload);
                    }
                    payloads_ok += decode_all_payloads(frame.payload);
                    let answer = answer_common(frame.header.opcode & 0xFF, frame.payload, &ctx);
                    drop(answer);
                });
                worst_peak = worst_peak.max(peak);
                // postcard checks every length prefix against the bytes left,
                // so the peak is bounded by the input, not by a forged length.
                assert!(
                    peak <= 64 * input.len() + 4096,
                    "case {case}: decoding {} bytes peaked at {peak} bytes",
                    input.len()
                );
            }
            Ok(Check::Incomplete { need }) => {
                incomplete += 1;
                assert!(
                    need > input.len() && need <= HEADER_LEN + MAX_PAYLOAD,
                    "case {case}"
                );
                assert!(prefix.is_err() && exact.is_err());
            }
            Err(_) => {
                invalid += 1;
                assert!(prefix.is_err() && exact.is_err());
                assert!(view.is_some_and(|(_, _, ok)| !ok), "case {case}");
            }
        }
    }
    eprintln!(
        "{cases} cases: {complete} complete, {incomplete} incomplete, {invalid} invalid; \
         {payloads_ok} payload decodes succeeded; worst decode peak {worst_peak} bytes"
    );
    assert_eq!(complete + incomplete + invalid, cases);
    // The generator must exercise every outcome, or the test proves little.
    assert!(complete > cases / 10 && incomplete > cases / 20 && invalid > cases / 20);
    assert!(payloads_ok > 0);
}
