//! Bad local input closes only the offending connection: garbage, a bad
//! magic/version/kind/flags/reserved field, an oversized length, a frame
//! truncated by EOF, or a first frame that is not a registration. Other
//! clients keep working and transportd never dies.

mod transport_support;

use std::time::Duration;

use tests::netns::{require_root, NetNs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use transport::proto::control::{PingReply, PingRequest, PING};
use transport::proto::service::TRANSPORT;
use transport::proto::{encode_frame, encode_payload, Address, HeaderRepr, Kind};
use transport_support::{connect, runtime, start, stats, Scratch, TIMEOUT};

fn valid_frame() -> Vec<u8> {
    let h = HeaderRepr {
        kind: Kind::Request,
        src: Address::new(0, 0),
        dst: Address::local(TRANSPORT),
        request_id: 1,
        opcode: PING,
    };
    let mut f = Vec::new();
    encode_frame(
        &h,
        &encode_payload(&PingRequest::default()).unwrap(),
        &mut f,
    )
    .unwrap();
    f
}

/// Each case: a name and the bytes a bad client sends (then it waits).
fn bad_inputs() -> Vec<(&'static str, Vec<u8>, bool)> {
    let mut magic = valid_frame();
    magic[0] = b'X';
    let mut version = valid_frame();
    version[4] = 9;
    let mut kind = valid_frame();
    kind[5] = 77;
    let mut flags = valid_frame();
    flags[7] = 1;
    let mut reserved = valid_frame();
    reserved[39] = 1;
    let mut oversized = valid_frame();
    oversized[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
    let truncated = valid_frame()[..30].to_vec();
    let garbage: Vec<u8> = (0..10_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    // (name, bytes, close our write side afterwards)
    vec![
        ("garbage", garbage, false),
        ("bad magic", magic, false),
        ("bad version", version, false),
        ("unknown kind", kind, false),
        ("non-zero flags", flags, false),
        ("non-zero reserved", reserved, false),
        ("oversized length", oversized, false),
        ("truncated by EOF", truncated, true),
        // A valid frame, but not a registration: refused too.
        ("ping before register", valid_frame(), false),
    ]
}

#[test]
fn bad_clients_are_disconnected_while_others_keep_working() {
    require_root();
    let ns = NetNs::new("tr-bad").unwrap();
    let scratch = Scratch::new("tr-bad");
    let d = start(&ns, &scratch, "bad", &[]).unwrap();
    runtime().block_on(async {
        let (good, _in) = connect(&d, "clusterd").await.unwrap();
        for (name, bytes, eof) in bad_inputs() {
            let mut s = UnixStream::connect(d.socket()).await.unwrap();
            let _ = s.write_all(&bytes).await;
            if eof {
                let _ = s.shutdown().await;
            }
            let mut buf = vec![0u8; 4096];
            // transportd closes the connection: read ends with EOF (or a reset),
            // possibly after an error reply.
            let closed = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            assert!(closed.is_ok(), "{name}: connection not closed");
            // The good client is unaffected.
            let pong: PingReply = good
                .request(
                    Address::local(TRANSPORT),
                    PING,
                    &PingRequest {
                        data: name.as_bytes().to_vec(),
                    },
                    TIMEOUT,
                )
                .await
                .unwrap_or_else(|e| panic!("{name}: good client broken: {e}"));
            assert_eq!(pong.data, name.as_bytes());
        }
        let s = stats(&good).await.unwrap();
        assert_eq!(s.get("clients"), Some(1), "{s:?}");
        assert!(s.get("bad_frames").unwrap() >= 9, "{s:?}");
    });
    let log = d.log_text();
    for reason in [
        "bad magic",
        "unsupported protocol version",
        "unknown message kind",
        "exceeds the limit",
        "truncated frame",
        "not a REGISTER request",
    ] {
        assert!(log.contains(reason), "log does not name {reason:?}:\n{log}");
    }
}
