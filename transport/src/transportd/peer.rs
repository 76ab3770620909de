//! The TCP side: one authenticated, encrypted link per peer node.
//!
//! The node with the lower PNN dials the higher one (so each pair has one
//! connection); the higher one accepts. Dialling binds the socket to this
//! node's own address, so the receiver can check the source address against
//! its nodes file. A lost link is dialled again with exponential backoff
//! (50 ms doubling to 2 s, ±25 % jitter); an accepted link replaces an older
//! one from the same node (the peer restarted), but only once the dialler
//! confirmed the key in this handshake ([`noise::respond`]): until then the
//! live link carries on, so a replayed first message disturbs nothing.
//!
//! Frames from a peer are only ever delivered locally (see [`super::state`]).
//! Any decryption failure, malformed frame or I/O error closes the link and
//! is logged; the dialler then reconnects.
//!
//! A peer that stops (SIGSTOP, a hung host, a cut cable without RST) is
//! noticed: each side sends a [`KEEPALIVE`] frame after [`KEEPALIVE_INTERVAL`]
//! without other traffic; a link that receives nothing for [`IDLE_TIMEOUT`],
//! or whose write makes no progress for [`WRITE_TIMEOUT`], is closed. Frames
//! for that peer then fail at once with `NodeUnreachable` (instead of
//! queueing unseen) and the dialler reconnects. TCP keepalive would not do:
//! a stopped process's kernel still answers the probes.
//!
//! At most [`MAX_HANDSHAKES`] accepted connections may be in their handshake
//! at once; more are closed at once (a flood from a node address cannot pin
//! tasks and buffers for the handshake time-out each).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::proto::control::KEEPALIVE;
use crate::proto::service::TRANSPORT;
use crate::proto::{check, Address, Check, Header, HeaderRepr, Kind, HEADER_LEN};

use super::buffers::{trim, Direct, Outbox, ReadBuf, SEAL_BATCH};
use super::noise::{self, Cipher, NoiseError, Opener, MAX_CHUNK, MAX_NOISE_MSG};
use super::state::{Origin, Run};
use super::turns::Turn;
use super::Shared;

/// Queue limit towards one peer (bytes not yet sent).
pub const PEER_QUEUE_LIMIT: usize = 64 * 1024 * 1024;
/// First reconnect delay.
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Largest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// An idle link sends a keepalive this often.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(500);
/// A link that receives nothing (not even a keepalive) this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// A link whose write makes no progress this long is closed.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
/// Accepted connections allowed in their handshake at the same time.
pub const MAX_HANDSHAKES: usize = 16;
const PLAIN_BUF: usize = 256 * 1024;
const KEEP: usize = 4 * 1024 * 1024;

/// Accepts peer links until shutdown, then waits for the accepted links to
/// end (each ends on the stop signal).
///
/// The accepted links are tasks of a [`JoinSet`](tokio::task::JoinSet) owned
/// by this future: if it is dropped (transportd's task aborted in masterd's
/// single-process model) they are aborted with it, so no link of a stopped
/// transportd outlives it. A surviving link would keep the peer's dialler
/// content with a connection that leads nowhere, and the restarted
/// transportd would have no link to that peer until the peer noticed.
pub async fn listen(listener: TcpListener, shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let mut links = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            () = super::stopped(&mut stop) => break,
            Some(_) = links.join_next(), if !links.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, from)) => {
                    let Ok(permit) = Arc::clone(&handshakes).try_acquire_owned() else {
                        shared.state().counters.handshake_failures += 1;
                        tracing::warn!(peer = %from, max = MAX_HANDSHAKES, "too many handshakes in progress: connection closed");
                        drop(stream);
                        continue;
                    };
                    let shared = Arc::clone(&shared);
                    links.spawn(async move {
                        let mut stop = shared.stop.subscribe();
                        tokio::select! {
                            () = super::stopped(&mut stop) => {}
                            () = accept(stream, from, Arc::clone(&shared), permit) => {}
                        }
                    });
                }
                Err(err) => {
                    tracing::warn!(%err, "accept on the peer port failed");
                    tokio::time::sleep(BACKOFF_MIN).await;
                }
            }
        }
    }
    // Stop accepting at once (a restarted transportd binds the port again);
    // the links end on the stop signal they have seen too.
    drop(listener);
    while links.join_next().await.is_some() {}
}

async fn accept(
    mut stream: TcpStream,
    from: SocketAddr,
    shared: Arc<Shared>,
    handshake: tokio::sync::OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let own = shared.pnn;
    let nodes = shared.nodes.borrow().clone();
    let expected = nodes.pnn_of(from.ip());
    if expected.is_none() {
        // Not a node address: refuse before spending a handshake (buffers,
        // a task for up to the handshake timeout) on it.
        tracing::warn!(peer = %from, "connection from an address that is not in the nodes file: closed");
        return;
    }
    let check_peer = |pnn: u32| -> Result<(), String> {
        if pnn == own {
            return Err(format!("node {pnn} is this node"));
        }
        match nodes.addr(pnn) {
            None => Err(format!("node {pnn} is not in the nodes file")),
            Some(_) if expected == Some(pnn) => Ok(()),
            Some(addr) => Err(format!(
                "node {pnn} must connect from {addr}, not from {}",
                from.ip()
            )),
        }
    };
    let answered = noise::respond(&mut stream, &shared.key, own, check_peer).await;
    drop(handshake);
    match answered {
        Ok((cipher, pnn)) => {
            tracing::info!(peer = pnn, %from, "peer link accepted");
            run_link(stream, cipher, pnn, &shared).await;
        }
        Err(err) => {
            {
                let mut st = shared.state();
                st.counters.handshake_failures += 1;
                match &err {
                    NoiseError::Refused(_) | NoiseError::Version(_) => {
                        st.counters.handshakes_refused += 1;
                    }
                    NoiseError::Unconfirmed { .. } => st.counters.handshakes_unconfirmed += 1,
                    _ => {}
                }
            }
            tracing::warn!(%from, %err, "peer handshake refused");
        }
    }
}

/// Dials peer `pnn` at `addr` (from our `local` address) until shutdown,
/// reconnecting with backoff.
pub async fn dial(pnn: u32, addr: SocketAddr, local: IpAddr, shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    let mut backoff = BACKOFF_MIN;
    let mut rng = Jitter::new(u64::from(pnn) ^ u64::from(std::process::id()));
    loop {
        let attempt = async {
            let mut stream = connect(addr, local).await.map_err(|e| (false, e))?;
            let cipher = noise::initiate(&mut stream, &shared.key, shared.pnn, pnn)
                .await
                .map_err(|e| (true, e))?;
            Ok::<_, (bool, NoiseError)>((stream, cipher))
        };
        let outcome = tokio::select! {
            () = super::stopped(&mut stop) => return,
            r = attempt => r,
        };
        match outcome {
            Ok((stream, cipher)) => {
                tracing::info!(peer = pnn, %addr, "peer link established");
                backoff = BACKOFF_MIN;
                tokio::select! {
                    () = super::stopped(&mut stop) => return,
                    () = run_link(stream, cipher, pnn, &shared) => {}
                }
            }
            Err((true, err)) => {
                // Connected, but the handshake failed: wrong key, wrong
                // node, or the peer refused our address.
                shared.state().counters.handshake_failures += 1;
                tracing::warn!(peer = pnn, %addr, %err, "peer handshake failed");
            }
            Err((false, err)) => {
                tracing::debug!(peer = pnn, %addr, %err, "peer not reachable");
            }
        }
        let delay = rng.spread(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
        tokio::select! {
            () = super::stopped(&mut stop) => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

async fn connect(addr: SocketAddr, local: IpAddr) -> Result<TcpStream, NoiseError> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(local, 0))?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr))
        .await
        .map_err(|_| NoiseError::Timeout(CONNECT_TIMEOUT))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A small xorshift generator for backoff jitter (not for cryptography).
struct Jitter(u64);

impl Jitter {
    fn new(seed: u64) -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Jitter((seed ^ u64::from(t)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// `d` scaled by a factor in [0.75, 1.25).
    fn spread(&mut self, d: Duration) -> Duration {
        let permille = 750 + self.next() % 500;
        d * u32::try_from(permille).unwrap_or(1000) / 1000
    }
}

/// Runs an established link until it fails or is replaced.
///
/// Frames for the peer are sealed and written by the routing task itself
/// when the link is idle ([`Direct::Link`]); the writer task here writes
/// what the socket did not take at once, seals what was queued meanwhile,
/// and sends the keepalive.
async fn run_link(stream: TcpStream, cipher: Cipher, pnn: u32, shared: &Shared) {
    let link = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let (mut rd, wr) = stream.into_split();
    let wr = Arc::new(wr);
    let outbox = Arc::new(Outbox::with_direct(
        PEER_QUEUE_LIMIT,
        PLAIN_BUF,
        Direct::Link(Arc::clone(&wr), Arc::clone(&cipher)),
    ));
    shared
        .state()
        .peer_up(pnn, link, Arc::clone(&outbox), Instant::now());
    let reader = read_link(&mut rd, &cipher, pnn, shared);
    let mut keepalive = [0u8; HEADER_LEN];
    HeaderRepr {
        kind: Kind::Event,
        src: Address::new(shared.pnn, TRANSPORT),
        dst: Address::new(pnn, TRANSPORT),
        request_id: 0,
        opcode: KEEPALIVE,
    }
    .emit(&mut keepalive, 0)
    .expect("a header fits its buffer, payload 0 is under the limit");
    let writer = async {
        let mut sealed = Vec::with_capacity(SEAL_BATCH + 64 * 1024);
        loop {
            // `take_sealed` is cancel-safe: on a time-out nothing was taken.
            let start =
                match tokio::time::timeout(KEEPALIVE_INTERVAL, outbox.take_sealed(&mut sealed))
                    .await
                {
                    Ok(Some(start)) => start,
                    Ok(None) => break,
                    Err(_) => {
                        // Idle (or only direct writes) for a while: queue a
                        // keepalive; the next take seals and writes it.
                        if outbox.push(&[&keepalive]).is_err() {
                            break;
                        }
                        continue;
                    }
                };
            write_all(&wr, &sealed[start..]).await?;
            trim(&mut sealed, KEEP);
        }
        Err(NoiseError::Refused(
            "link replaced, queue full or a write failed".to_owned(),
        ))
    };
    let result = tokio::select! {
        r = reader => r,
        r = writer => r,
    };
    outbox.close();
    {
        let mut st = shared.state();
        st.peer_down(pnn, link, Instant::now());
        if matches!(
            result,
            Err(NoiseError::Crypto(_) | NoiseError::ShortChunk(_))
        ) {
            st.counters.decrypt_failures += 1;
        }
    }
    match result {
        Ok(()) => tracing::info!(peer = pnn, "peer link closed by the peer"),
        Err(err) => tracing::warn!(peer = pnn, %err, "peer link closed"),
    }
}

/// Writes all of `buf` to the link (whose write half the routing task
/// shares), each write making progress within [`WRITE_TIMEOUT`].
async fn write_all(w: &tokio::net::tcp::OwnedWriteHalf, mut buf: &[u8]) -> Result<(), NoiseError> {
    while !buf.is_empty() {
        tokio::time::timeout(WRITE_TIMEOUT, w.writable())
            .await
            .map_err(|_| NoiseError::Stalled(WRITE_TIMEOUT))??;
        match w.try_write(buf) {
            Ok(0) => return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads, decrypts and routes until EOF or an error.
async fn read_link(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    cipher: &Cipher,
    pnn: u32,
    shared: &Shared,
) -> Result<(), NoiseError> {
    let mut raw = ReadBuf::new(2 * (MAX_NOISE_MSG + 2));
    let mut plain = ReadBuf::new(PLAIN_BUF);
    let mut opener = Opener::default();
    let mut need = HEADER_LEN;
    let mut turn = Turn::default();
    loop {
        raw.reserve(MAX_NOISE_MSG + 2, MAX_NOISE_MSG / 2);
        let read = tokio::time::timeout(IDLE_TIMEOUT, raw.fill(rd))
            .await
            .map_err(|_| NoiseError::Silent(IDLE_TIMEOUT))?;
        if read? == 0 {
            return Ok(());
        }
        loop {
            plain.reserve(need, MAX_CHUNK);
            match opener.open(cipher, raw.data(), plain.spare_mut())? {
                Some((used, n)) => {
                    raw.consume(used);
                    plain.commit(n);
                }
                None => break,
            }
            let (frames, bytes) = route_plain(&mut plain, pnn, shared, &mut need)?;
            // A flood on this link must not hold the thread: the other
            // links' heartbeats and the local deliveries run too.
            turn.routed(frames, bytes).await;
        }
    }
}

/// Routes the whole frames of `plain` (decrypted bytes from `pnn`) and
/// consumes them; `need` becomes what the incomplete rest needs. Returns
/// the frames and bytes routed.
fn route_plain(
    plain: &mut ReadBuf,
    pnn: u32,
    shared: &Shared,
    need: &mut usize,
) -> Result<(usize, usize), NoiseError> {
    let mut st = shared.state();
    let mut run = Run::default();
    let (mut at, mut frames) = (0, 0);
    let data = plain.data_mut();
    let outcome = loop {
        match check(&data[at..]) {
            Err(err) => {
                break Err(NoiseError::Refused(format!(
                    "bad frame from node {pnn}: {err}"
                )))
            }
            Ok(Check::Incomplete { need: more }) => {
                *need = more;
                break Ok((frames, at));
            }
            Ok(Check::Complete { frame_len }) => {
                let frame = &mut data[at..at + frame_len];
                frames += 1;
                if !is_keepalive(frame) {
                    match st.route_fast(Origin::Peer(pnn), frame) {
                        Some(dest) => run.add(&mut st, data, dest, at, frame_len),
                        None => {
                            run.finish(&mut st, data);
                            st.route(Origin::Peer(pnn), &mut data[at..at + frame_len]);
                        }
                    }
                }
                at += frame_len;
            }
        }
    };
    run.finish(&mut st, data);
    plain.consume(at);
    st.flush();
    if st.take_shutdown() {
        shared.request_stop();
    }
    outcome
}

/// Is `frame` a link keepalive (consumed here, never routed)?
fn is_keepalive(frame: &[u8]) -> bool {
    Header::new_checked(frame).is_ok_and(|h| {
        h.kind() == Kind::Event && h.opcode() == KEEPALIVE && h.dst_service() == TRANSPORT
    })
}
