//! The stream framing of the client library (`read_frames` / `write_frames`):
//! frames split at arbitrary points arrive whole and in order; garbage or EOF
//! inside a frame ends the stream with a typed error after the good frames.

use proptest::prelude::*;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use transport::client::{read_frames, write_frames, LinkError};
use transport::proto::{Address, DecodeError, HeaderRepr, Kind, Message};

fn msg(i: u32, payload: Vec<u8>) -> Message {
    Message::new(
        HeaderRepr {
            kind: Kind::Event,
            src: Address::new(i, 1),
            dst: Address::new(0, 2),
            request_id: u64::from(i),
            opcode: i,
        },
        payload,
    )
}

/// Writes `bytes` in chunks cut at `cuts` into a small pipe; returns what
/// `read_frames` delivered and how it ended.
fn read_chunked(bytes: Vec<u8>, cuts: Vec<usize>) -> (Vec<Message>, Result<(), LinkError>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (mut w, r) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            let mut start = 0;
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            cuts.push(bytes.len());
            for c in cuts {
                if c > start {
                    if w.write_all(&bytes[start..c]).await.is_err() {
                        return; // the reader gave up (bad frame)
                    }
                    start = c;
                }
            }
            let _ = w.shutdown().await;
        });
        let (tx, mut rx) = mpsc::unbounded_channel();
        let end = read_frames(r, tx).await;
        writer.abort();
        let mut got = Vec::new();
        while let Ok(m) = rx.try_recv() {
            got.push(m);
        }
        (got, end)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn split_frames_arrive_whole_and_in_order(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let msgs: Vec<Message> = payloads.into_iter().enumerate()
            .map(|(i, p)| msg(u32::try_from(i).unwrap(), p)).collect();
        let mut bytes = Vec::new();
        for m in &msgs {
            m.encode_into(&mut bytes).unwrap();
        }
        let (got, end) = read_chunked(bytes, cuts);
        prop_assert!(end.is_ok(), "{end:?}");
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn eof_inside_a_frame_is_truncated_after_the_good_ones(
        n in 1usize..5, cut in 1usize..60, cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let msgs: Vec<Message> = (0..n).map(|i| msg(u32::try_from(i).unwrap(), vec![7; 20])).collect();
        let mut bytes = Vec::new();
        for m in &msgs {
            m.encode_into(&mut bytes).unwrap();
        }
        let whole = bytes.len();
        bytes.truncate(whole - cut); // 60 = one frame: only the last one is cut
        let (got, end) = read_chunked(bytes, cuts);
        prop_assert!(matches!(end, Err(LinkError::Truncated { .. })), "{end:?}");
        prop_assert_eq!(&got[..], &msgs[..n - 1]);
    }
}

#[test]
fn garbage_after_good_frames_is_a_decode_error() {
    let good = msg(1, b"ok".to_vec());
    let mut bytes = good.to_bytes().unwrap();
    bytes.extend_from_slice(&[0x42; 40]);
    let (got, end) = read_chunked(bytes, vec![3, 50]);
    assert_eq!(got, vec![good]);
    assert!(matches!(
        end,
        Err(LinkError::Decode(DecodeError::BadMagic(0x4242_4242)))
    ));
}

#[test]
fn write_frames_batches_and_shuts_down() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (w, r) = tokio::io::duplex(1 << 16);
        let (tx, rx) = mpsc::channel(16);
        let msgs: Vec<Message> = (0..10).map(|i| msg(i, vec![1; 100])).collect();
        for m in &msgs {
            tx.send(m.clone()).await.unwrap();
        }
        drop(tx);
        write_frames(w, rx).await.unwrap();
        let (itx, mut irx) = mpsc::unbounded_channel();
        read_frames(r, itx).await.unwrap(); // clean EOF after shutdown
        let mut got = Vec::new();
        while let Ok(m) = irx.try_recv() {
            got.push(m);
        }
        assert_eq!(got, msgs);
    });
}
