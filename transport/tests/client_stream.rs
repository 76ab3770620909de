//! The client library over a byte stream, against a hand-written fake
//! transport on the other end of a duplex pipe: reply matching by sender,
//! the frame tap, non-waiting byte events, and the bounded incoming side.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use transport::client::{Client, ClientError, Incoming, INCOMING_BUDGET, MESSAGE_OVERHEAD};
use transport::proto::control::{RegisterReply, REGISTER};
use transport::proto::service::{CLUSTERD, FAILOVERD};
use transport::proto::{check, Address, Check, HeaderRepr, Kind, Message};

const PNN: u32 = 3;

/// The transport's end of the pipe: reads whole frames, writes frames.
struct Fake {
    io: DuplexStream,
    buf: Vec<u8>,
}

impl Fake {
    async fn read(&mut self) -> Message {
        loop {
            if let Check::Complete { frame_len } = check(&self.buf).unwrap() {
                let msg = Message::decode(&self.buf[..frame_len]).unwrap();
                self.buf.drain(..frame_len);
                return msg;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), self.io.read(&mut chunk))
                .await
                .expect("a frame within 5 s")
                .unwrap();
            assert!(n > 0, "client closed the stream");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn write(&mut self, msg: &Message) {
        self.io.write_all(&msg.to_bytes().unwrap()).await.unwrap();
    }
}

/// A registered client (as FAILOVERD on node PNN) and the fake transport.
async fn connected(pipe: usize) -> (Client, Incoming, Fake) {
    let (ours, theirs) = tokio::io::duplex(pipe);
    let mut fake = Fake {
        io: theirs,
        buf: Vec::new(),
    };
    let register = async {
        let req = fake.read().await;
        assert_eq!(req.header.opcode, REGISTER);
        let reply = Message::with_payload(
            req.header.answer(Kind::Reply),
            &RegisterReply {
                pnn: PNN,
                service: FAILOVERD,
            },
        )
        .unwrap();
        fake.write(&reply).await;
    };
    let (client, ()) = tokio::join!(Client::from_stream(ours, "failoverd"), register);
    let (client, incoming) = client.unwrap();
    (client, incoming, fake)
}

fn event(src: Address, opcode: u32, payload: Vec<u8>) -> Message {
    Message::new(
        HeaderRepr {
            kind: Kind::Event,
            src,
            dst: Address::new(PNN, FAILOVERD),
            request_id: 0,
            opcode,
        },
        payload,
    )
}

#[tokio::test]
async fn a_reply_from_another_sender_does_not_answer_the_request() {
    let (client, _incoming, mut fake) = connected(1 << 16).await;
    let asked = Address::new(5, CLUSTERD);
    let req = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .request::<u32, u32>(asked, 0x0001_0042, &7, Duration::from_secs(5))
                .await
        }
    });
    let sent = fake.read().await;
    assert_eq!(sent.header.dst, asked);
    // Same request id, but from node 6 (another node's clusterd), then from
    // the right node but another service: both are dropped.
    for liar in [Address::new(6, CLUSTERD), Address::new(5, FAILOVERD)] {
        let mut forged = Message::with_payload(sent.header.answer(Kind::Reply), &666u32).unwrap();
        forged.header.src = liar;
        fake.write(&forged).await;
    }
    let real = Message::with_payload(sent.header.answer(Kind::Reply), &8u32).unwrap();
    fake.write(&real).await;
    assert_eq!(req.await.unwrap().unwrap(), 8);
    let stats = client.statistics();
    let mismatched = stats
        .counters
        .iter()
        .find(|(n, _)| n == "mismatched_replies")
        .map(|(_, v)| *v);
    assert_eq!(mismatched, Some(2));
}

#[tokio::test]
async fn the_tap_takes_frames_before_they_become_messages() {
    let (client, mut incoming, mut fake) = connected(1 << 16).await;
    let taken = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&taken);
    client.set_frame_tap(Box::new(move |frame| {
        if frame.header.kind == Kind::Event && frame.header.opcode == 0x77 {
            assert_eq!(frame.payload, b"hb");
            seen.fetch_add(1, Ordering::SeqCst);
            return true;
        }
        false
    }));
    let from = Address::new(1, CLUSTERD);
    for _ in 0..3 {
        fake.write(&event(from, 0x77, b"hb".to_vec())).await;
    }
    fake.write(&event(from, 0x78, b"other".to_vec())).await;
    let got = tokio::time::timeout(Duration::from_secs(5), incoming.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.header.opcode, 0x78, "the untapped event arrives");
    assert_eq!(taken.load(Ordering::SeqCst), 3);
    assert!(
        incoming.try_recv().is_none(),
        "tapped frames are not delivered"
    );
}

#[tokio::test]
async fn byte_events_are_framed_in_order_and_refused_when_the_queue_is_full() {
    // A pipe of 4 KiB that the fake does not read: the client's queue fills.
    let (client, _incoming, mut fake) = connected(4096).await;
    let dst = Address::new(2, CLUSTERD);
    client.try_event_bytes(dst, 0x10, b"one").unwrap();
    client.event_bytes(dst, 0x11, b"two").await.unwrap();
    let a = fake.read().await;
    let b = fake.read().await;
    assert_eq!((a.header.opcode, a.payload.as_slice()), (0x10, &b"one"[..]));
    assert_eq!((b.header.opcode, b.payload.as_slice()), (0x11, &b"two"[..]));
    assert_eq!(a.header.src, Address::new(PNN, FAILOVERD));
    assert_eq!(a.header.kind, Kind::Event);
    // Now stop reading: 1 MiB frames fill the pipe, then the 8 MiB queue.
    let big = vec![0u8; 1024 * 1024];
    let mut refused = None;
    for i in 0..64 {
        match client.try_event_bytes(dst, 0x12, &big) {
            Ok(()) => {}
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
        tokio::task::yield_now().await;
    }
    let (i, err) = refused.expect("the queue refuses once full");
    assert!(matches!(err, ClientError::QueueFull { .. }), "{err}");
    assert!((8..=10).contains(&i), "refused after {i} MiB");
    drop(fake);
}

#[tokio::test]
async fn a_service_that_does_not_read_stops_the_reader() {
    let (client, incoming, mut fake) = connected(1 << 16).await;
    // Events of 64 KiB until the fake cannot write any more (the client
    // stopped reading): it must stop at about INCOMING_BUDGET plus what the
    // link channel and the pipe hold, not read without bound.
    let payload = vec![1u8; 64 * 1024];
    let msg = event(Address::new(1, CLUSTERD), 0x99, payload);
    let bytes = msg.to_bytes().unwrap();
    let mut written = 0usize;
    for _ in 0..4096 {
        match tokio::time::timeout(Duration::from_millis(500), fake.io.write_all(&bytes)).await {
            Ok(r) => {
                r.unwrap();
                written += bytes.len();
            }
            Err(_) => break,
        }
    }
    let per = bytes.len();
    let budget_msgs = INCOMING_BUDGET / (64 * 1024 + MESSAGE_OVERHEAD);
    let max = (budget_msgs + transport::client::LINK_CAPACITY + 4) * per;
    assert!(
        written < max,
        "the client kept reading: {written} bytes, bound {max}"
    );
    assert!(written >= budget_msgs * per, "only {written} bytes read");
    drop((client, incoming));
}

#[tokio::test]
async fn transport_answers_on_behalf_of_the_destination_pass() {
    let (client, _incoming, mut fake) = connected(1 << 16).await;
    let asked = Address::new(9, CLUSTERD);
    let req = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .request::<u32, u32>(asked, 0x0001_0042, &7, Duration::from_secs(5))
                .await
        }
    });
    let sent = fake.read().await;
    // transportd's NodeUnreachable: source = the destination.
    let err = transport::controls::error_message(
        &sent.header,
        &transport::proto::RemoteError::new(
            transport::proto::ErrorCode::NodeUnreachable,
            "node 9 is not connected",
        ),
    );
    fake.write(&err).await;
    let res = req.await.unwrap();
    assert!(
        matches!(&res, Err(ClientError::Remote { error, .. }) if error.code == transport::proto::ErrorCode::NodeUnreachable),
        "{res:?}"
    );
}

/// A daemon's guard closes its connection when the daemon ends, although a
/// task it spawned still holds a handle: the pending request fails at once,
/// later sends fail, and the transport sees the stream end (so it frees the
/// name for a restarted instance).
#[tokio::test]
async fn close_on_drop_ends_the_connection_while_clones_live() {
    let (client, _incoming, mut fake) = connected(64 * 1024).await;
    let guard = client.close_on_drop();
    let held = client.clone();
    let pending = tokio::spawn({
        let held = held.clone();
        async move {
            held.request_raw(
                Address::new(PNN, CLUSTERD),
                0x0001_0001,
                Vec::new(),
                Duration::from_secs(30),
            )
            .await
        }
    });
    let req = fake.read().await;
    assert_eq!(req.header.kind, Kind::Request);
    drop(client);
    drop(guard);
    let failed = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("the pending request ends at once")
        .unwrap();
    assert!(
        matches!(failed, Err(ClientError::Closed { .. })),
        "{failed:?}"
    );
    assert!(held.is_closed());
    assert!(matches!(
        held.event_bytes(Address::new(PNN, CLUSTERD), 0x0001_0002, b"x")
            .await,
        Err(ClientError::Closed { .. })
    ));
    // The transport's end reads EOF although `held` is alive.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), fake.io.read_to_end(&mut rest))
        .await
        .expect("the stream ends at once")
        .unwrap();
    assert_eq!(n, 0, "unexpected bytes after close: {rest:?}");
}
