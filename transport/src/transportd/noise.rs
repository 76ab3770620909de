//! The encrypted node-to-node link: a Noise handshake that proves both sides
//! hold the cluster key and tells each side the other's PNN, then a stream
//! of encrypted chunks.
//!
//! * Pattern [`PATTERN`] (`Noise_NNpsk0_25519_AESGCM_BLAKE2s`, via the
//!   `snow` crate): fresh ephemeral keys on both sides, the cluster key mixed
//!   in before the first message. A side without the key cannot produce a
//!   message the other accepts, nor read one.
//! * Every Noise message travels as a 2-byte big-endian length followed by at
//!   most [`MAX_NOISE_MSG`] bytes.
//! * Three messages (link version [`LINK_VERSION`]):
//!   1. initiator → responder: Noise message 1, payload [`hello`] (`"IPFO"`,
//!      the link version, the sender's PNN, big-endian u32). The responder
//!      checks the version, then the PNN against its nodes file and the TCP
//!      source address (the caller's `accept` check).
//!   2. responder → initiator: Noise message 2, payload the responder's
//!      hello; the initiator checks the responder is the node it dialled.
//!   3. initiator → responder: the **key confirmation**, the first transport
//!      message of the initiator (nonce 0), plaintext [`CONFIRM`].
//!
//!   Message 1 alone proves nothing: it has no freshness, so a host without
//!   the key that sniffed one can replay it and the responder accepts it.
//!   Message 3 is encrypted under keys that mix the responder's fresh
//!   ephemeral key, so only the holder of the initiator's ephemeral secret
//!   (and the cluster key) can produce it. [`respond`] returns only after a
//!   valid confirmation, so the caller replaces a live link only for a peer
//!   that proved it holds the key *in this handshake*; a replay ends with
//!   [`NoiseError::Unconfirmed`].
//! * An older node (link version 1: no confirmation; its hello carried the
//!   frame protocol version 1 in the same byte) is refused with
//!   [`NoiseError::Version`]; it refuses us as a malformed hello. The
//!   prologue is unchanged so that the version can be read and named.
//! * After the handshake the plaintext is a byte stream of frames, cut into
//!   chunks of at most [`MAX_CHUNK`] bytes, each one Noise transport message.
//!   Large frames span several chunks; small frames share one. Each direction
//!   counts its nonces from [`FIRST_DATA_NONCE`] (nonce 0 of the initiator's
//!   direction is the confirmation; the responder's is unused) and the
//!   receiver expects exactly the next one, so a replayed, reordered,
//!   dropped or injected chunk fails authentication: the link is then closed
//!   (the caller logs why).
//!
//! Nothing here allocates per chunk: callers pass their own buffers.

use std::sync::Arc;
use std::time::Duration;

use snow::StatelessTransportState;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::key::ClusterKey;

/// The Noise protocol name.
pub const PATTERN: &str = "Noise_NNpsk0_25519_AESGCM_BLAKE2s";
/// Bound into the handshake hash: both sides must speak this protocol.
const PROLOGUE: &[u8] = b"ipfailover transport 1";
/// Largest Noise message.
pub const MAX_NOISE_MSG: usize = 65535;
/// Authentication tag length.
pub const TAG_LEN: usize = 16;
/// Largest plaintext chunk per Noise message.
pub const MAX_CHUNK: usize = MAX_NOISE_MSG - TAG_LEN;
/// How long a handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Length of a handshake payload.
pub const HELLO_LEN: usize = 9;
/// The link handshake version in [`hello`]: 2 = with key confirmation.
/// (Version 1, before it, wrote the frame protocol version, 1, there.)
pub const LINK_VERSION: u8 = 2;
/// Plaintext of the initiator's key confirmation (its transport nonce 0).
pub const CONFIRM: &[u8; 12] = b"IPFO confirm";
/// The first nonce of the frame stream, in both directions (nonce 0 of the
/// initiator's direction is the confirmation).
pub const FIRST_DATA_NONCE: u64 = 1;

/// Why a link failed.
#[derive(Debug, thiserror::Error)]
pub enum NoiseError {
    /// The TCP stream failed or closed.
    #[error("link I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Noise refused a message: wrong cluster key, tampering, replay.
    #[error("noise: {0} (wrong cluster key, tampered or replayed data)")]
    Crypto(#[from] snow::Error),
    /// The handshake did not finish in time.
    #[error("handshake timed out after {0:?}")]
    Timeout(Duration),
    /// The peer sent nothing, not even a keepalive, for this long.
    #[error("nothing received for {0:?} (peer stopped or unreachable)")]
    Silent(Duration),
    /// A write to the peer made no progress for this long.
    #[error("write made no progress for {0:?} (peer does not read)")]
    Stalled(Duration),
    /// The other side's hello is malformed or names the wrong node.
    #[error("handshake refused: {0}")]
    Refused(String),
    /// The other side speaks another link handshake version.
    #[error("the peer speaks link handshake version {0}, this node version {LINK_VERSION} (key confirmation): an older ipfailover; upgrade every node to the same version")]
    Version(u8),
    /// The initiator sent a valid first message but no valid key
    /// confirmation: a replayed first message (a host without the key), or
    /// an initiator that went away during the handshake.
    #[error("no key confirmation after a first message as node {pnn} ({why}): a replayed first message, or the initiator went away")]
    Unconfirmed {
        /// The PNN the first message named.
        pnn: u32,
        /// What came instead of a valid confirmation.
        why: Box<NoiseError>,
    },
    /// A chunk shorter than the authentication tag.
    #[error("chunk of {0} bytes is shorter than the authentication tag")]
    ShortChunk(usize),
}

/// The established link's cipher state, shared by the reader and the writer
/// (each keeps its own nonce).
pub type Cipher = Arc<StatelessTransportState>;

/// The handshake payload: `"IPFO"`, [`LINK_VERSION`], PNN.
pub fn hello(pnn: u32) -> [u8; HELLO_LEN] {
    let mut b = [0u8; HELLO_LEN];
    b[..4].copy_from_slice(b"IPFO");
    b[4] = LINK_VERSION;
    b[5..].copy_from_slice(&pnn.to_be_bytes());
    b
}

/// Parses a handshake payload.
///
/// # Errors
/// [`NoiseError::Version`] for a hello of another link version,
/// [`NoiseError::Refused`] if it is not a hello.
pub fn parse_hello(payload: &[u8]) -> Result<u32, NoiseError> {
    match payload {
        [b'I', b'P', b'F', b'O', v, p0, p1, p2, p3] if *v == LINK_VERSION => {
            Ok(u32::from_be_bytes([*p0, *p1, *p2, *p3]))
        }
        [b'I', b'P', b'F', b'O', v, _, _, _, _] => Err(NoiseError::Version(*v)),
        _ => Err(NoiseError::Refused(format!(
            "malformed hello of {} bytes",
            payload.len()
        ))),
    }
}

fn builder(key: &ClusterKey) -> Result<snow::Builder<'_>, NoiseError> {
    let params: snow::params::NoiseParams = PATTERN.parse()?;
    // ring's assembly AES-GCM/ChaCha20-Poly1305 is several times faster than
    // the portable implementations; the default resolver fills any gap.
    let resolver = snow::resolvers::FallbackResolver::new(
        Box::new(snow::resolvers::RingResolver),
        Box::new(snow::resolvers::DefaultResolver),
    );
    Ok(snow::Builder::with_resolver(params, Box::new(resolver))
        .prologue(PROLOGUE)?
        .psk(0, key.as_bytes())?)
}

/// Writes one length-prefixed Noise message.
async fn send_msg<W: AsyncWrite + Unpin>(w: &mut W, msg: &[u8]) -> Result<(), NoiseError> {
    let len = u16::try_from(msg.len())
        .map_err(|_| NoiseError::Refused(format!("message of {} bytes", msg.len())))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(msg).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one length-prefixed Noise message into `buf`, returns its length.
async fn recv_msg<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<usize, NoiseError> {
    let mut len = [0u8; 2];
    r.read_exact(&mut len).await?;
    let len = usize::from(u16::from_be_bytes(len));
    let dst = buf
        .get_mut(..len)
        .ok_or_else(|| NoiseError::Refused(format!("message of {len} bytes")))?;
    r.read_exact(dst).await?;
    Ok(len)
}

/// Runs the initiator side: sends our hello, checks the responder is
/// `expect_pnn`, sends the key confirmation.
///
/// # Errors
/// I/O, a wrong key (decryption failure), a timeout, the wrong node, or a
/// refusal by the responder (it closes the connection: wrong key, our
/// address or pnn, an older version; its log says which).
pub async fn initiate<S>(
    stream: &mut S,
    key: &ClusterKey,
    own_pnn: u32,
    expect_pnn: u32,
) -> Result<Cipher, NoiseError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let run = async {
        let mut hs = builder(key)?.build_initiator()?;
        let mut msg = vec![0u8; MAX_NOISE_MSG];
        let mut payload = vec![0u8; MAX_NOISE_MSG];
        let n = hs.write_message(&hello(own_pnn), &mut msg)?;
        send_msg(stream, &msg[..n]).await?;
        let n = match recv_msg(stream, &mut msg).await {
            Err(NoiseError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                return Err(NoiseError::Refused(format!(
                    "node {expect_pnn} closed the connection during the handshake ({e}): it \
                     refused us (wrong cluster key, our address or pnn) or runs an older \
                     ipfailover (link version 1); its log says which"
                )));
            }
            r => r?,
        };
        let p = hs.read_message(&msg[..n], &mut payload)?;
        let pnn = parse_hello(&payload[..p])?;
        if pnn != expect_pnn {
            return Err(NoiseError::Refused(format!(
                "dialled node {expect_pnn} but node {pnn} answered"
            )));
        }
        let cipher = hs.into_stateless_transport_mode()?;
        let n = cipher.write_message(0, CONFIRM, &mut msg)?;
        send_msg(stream, &msg[..n]).await?;
        Ok(Arc::new(cipher))
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, run)
        .await
        .map_err(|_| NoiseError::Timeout(HANDSHAKE_TIMEOUT))?
}

/// Runs the responder side: reads the initiator's hello, asks `accept`
/// whether that PNN may connect (nodes file + source address), answers with
/// our hello, then waits for the initiator's key confirmation. Returns the
/// cipher and the peer's PNN only once the initiator proved, in this
/// handshake, that it holds the key: a replayed first message never gets
/// that far.
///
/// # Errors
/// I/O, a wrong key (decryption failure), a timeout, another link version,
/// `accept`'s refusal ([`NoiseError::Refused`]), or no valid confirmation
/// ([`NoiseError::Unconfirmed`]).
pub async fn respond<S, F>(
    stream: &mut S,
    key: &ClusterKey,
    own_pnn: u32,
    accept: F,
) -> Result<(Cipher, u32), NoiseError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(u32) -> Result<(), String>,
{
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let mut msg = vec![0u8; MAX_NOISE_MSG];
    let mut payload = vec![0u8; MAX_NOISE_MSG];
    let answered = async {
        let mut hs = builder(key)?.build_responder()?;
        let n = recv_msg(stream, &mut msg).await?;
        let p = hs.read_message(&msg[..n], &mut payload)?;
        let pnn = parse_hello(&payload[..p])?;
        accept(pnn).map_err(NoiseError::Refused)?;
        let n = hs.write_message(&hello(own_pnn), &mut msg)?;
        send_msg(stream, &msg[..n]).await?;
        Ok::<_, NoiseError>((hs.into_stateless_transport_mode()?, pnn))
    };
    let (cipher, pnn) = tokio::time::timeout_at(deadline, answered)
        .await
        .map_err(|_| NoiseError::Timeout(HANDSHAKE_TIMEOUT))??;
    let confirmed = async {
        let n = recv_msg(stream, &mut msg).await?;
        let p = cipher.read_message(0, &msg[..n], &mut payload)?;
        if payload[..p] != CONFIRM[..] {
            return Err(NoiseError::Refused(format!(
                "a confirmation of {p} bytes that is not the confirmation"
            )));
        }
        Ok(())
    };
    match tokio::time::timeout_at(deadline, confirmed).await {
        Ok(Ok(())) => Ok((Arc::new(cipher), pnn)),
        Ok(Err(e)) => Err(NoiseError::Unconfirmed {
            pnn,
            why: Box::new(e),
        }),
        Err(_) => Err(NoiseError::Unconfirmed {
            pnn,
            why: Box::new(NoiseError::Timeout(HANDSHAKE_TIMEOUT)),
        }),
    }
}

/// Encrypts `plain` (any length) into `out` as length-prefixed chunks of at
/// most [`MAX_CHUNK`] plaintext bytes, advancing `nonce` (which starts at
/// [`FIRST_DATA_NONCE`] on a link). `out` is cleared
/// first and only grows if it is too small (callers keep it).
///
/// # Errors
/// [`NoiseError::Crypto`] (nonce exhaustion).
pub fn seal(
    cipher: &StatelessTransportState,
    nonce: &mut u64,
    plain: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), NoiseError> {
    let chunks = plain.len().div_ceil(MAX_CHUNK);
    let need = plain.len() + chunks * (2 + TAG_LEN);
    out.clear();
    if out.capacity() < need {
        out.reserve(need);
    }
    out.resize(need, 0);
    let mut at = 0;
    for chunk in plain.chunks(MAX_CHUNK) {
        let body = &mut out[at + 2..at + 2 + chunk.len() + TAG_LEN];
        let n = cipher.write_message(*nonce, chunk, body)?;
        *nonce += 1;
        let len = u16::try_from(n).map_err(|_| NoiseError::ShortChunk(n))?;
        out[at..at + 2].copy_from_slice(&len.to_be_bytes());
        at += 2 + n;
    }
    out.truncate(at);
    Ok(())
}

/// The receiving side's chunk parser: feeds ciphertext bytes, yields
/// plaintext. Expects the first chunk at [`FIRST_DATA_NONCE`].
#[derive(Debug)]
pub struct Opener {
    nonce: u64,
}

impl Default for Opener {
    fn default() -> Self {
        Opener {
            nonce: FIRST_DATA_NONCE,
        }
    }
}

impl Opener {
    /// If `cipher_buf` starts with a whole chunk, decrypts it into `out`
    /// (which must have room for [`MAX_CHUNK`] bytes) and returns
    /// `(consumed, plaintext_len)`; `None` if more bytes are needed.
    ///
    /// # Errors
    /// [`NoiseError::Crypto`] on an authentication failure (wrong key,
    /// tampering, replay), [`NoiseError::ShortChunk`].
    pub fn open(
        &mut self,
        cipher: &StatelessTransportState,
        cipher_buf: &[u8],
        out: &mut [u8],
    ) -> Result<Option<(usize, usize)>, NoiseError> {
        let [a, b, rest @ ..] = cipher_buf else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([*a, *b]));
        if len < TAG_LEN {
            return Err(NoiseError::ShortChunk(len));
        }
        let Some(msg) = rest.get(..len) else {
            return Ok(None);
        };
        let n = cipher.read_message(self.nonce, msg, out)?;
        self.nonce += 1;
        Ok(Some((2 + len, n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair(
        ka: ClusterKey,
        kb: ClusterKey,
    ) -> (
        Result<Cipher, NoiseError>,
        Result<(Cipher, u32), NoiseError>,
    ) {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let init = async move { initiate(&mut a, &ka, 0, 1).await };
        let resp = async move {
            respond(&mut b, &kb, 1, |pnn| {
                if pnn == 0 {
                    Ok(())
                } else {
                    Err(format!("node {pnn} unknown"))
                }
            })
            .await
        };
        tokio::join!(init, resp)
    }

    #[tokio::test]
    async fn same_key_links_and_large_frames_are_chunked() {
        let key = ClusterKey::from_bytes([9; 32]);
        let (a, b) = pair(key.clone(), key).await;
        let a = a.unwrap();
        let (b, pnn) = b.unwrap();
        assert_eq!(pnn, 0);
        let plain: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut sealed = Vec::new();
        let mut nonce = FIRST_DATA_NONCE;
        seal(&a, &mut nonce, &plain, &mut sealed).unwrap();
        assert_eq!(nonce, FIRST_DATA_NONCE + 4, "200000 bytes need 4 chunks");
        let mut opener = Opener::default();
        let mut got = Vec::new();
        let mut out = vec![0u8; MAX_CHUNK];
        let mut at = 0;
        while let Some((used, n)) = opener.open(&b, &sealed[at..], &mut out).unwrap() {
            got.extend_from_slice(&out[..n]);
            at += used;
        }
        assert_eq!(at, sealed.len());
        assert_eq!(got, plain);
    }

    #[tokio::test]
    async fn replayed_or_tampered_chunks_fail() {
        let key = ClusterKey::from_bytes([3; 32]);
        let (a, b) = pair(key.clone(), key).await;
        let (a, (b, _)) = (a.unwrap(), b.unwrap());
        let mut sealed = Vec::new();
        let mut nonce = FIRST_DATA_NONCE;
        seal(&a, &mut nonce, b"hello", &mut sealed).unwrap();
        let mut out = vec![0u8; MAX_CHUNK];
        let mut opener = Opener::default();
        assert!(opener.open(&b, &sealed, &mut out).unwrap().is_some());
        // The same chunk again: nonce 2 expected, chunk was sealed with 1.
        assert!(matches!(
            opener.open(&b, &sealed, &mut out),
            Err(NoiseError::Crypto(_))
        ));
        let mut opener = Opener::default();
        let mut bad = sealed.clone();
        bad[4] ^= 1;
        assert!(opener.open(&b, &bad, &mut out).is_err());
        assert!(matches!(
            Opener::default().open(&b, &[0, 3, 1, 2, 3], &mut out),
            Err(NoiseError::ShortChunk(3))
        ));
    }

    #[tokio::test]
    async fn wrong_key_is_refused_on_both_sides() {
        let (a, b) = pair(
            ClusterKey::from_bytes([1; 32]),
            ClusterKey::from_bytes([2; 32]),
        )
        .await;
        assert!(b.is_err(), "responder accepted a wrong key");
        assert!(a.is_err(), "initiator accepted a wrong key");
    }

    #[test]
    fn hello_round_trips_and_rejects_garbage() {
        assert_eq!(parse_hello(&hello(7)).unwrap(), 7);
        assert!(matches!(parse_hello(b"IPFO"), Err(NoiseError::Refused(_))));
        let mut h = hello(7);
        h[4] = 1;
        assert!(matches!(parse_hello(&h), Err(NoiseError::Version(1))));
        h[0] = b'X';
        assert!(matches!(parse_hello(&h), Err(NoiseError::Refused(_))));
    }

    /// A stream that keeps a copy of everything written to it: what a host
    /// on the wire sees of one direction.
    struct Tap<S> {
        inner: S,
        written: Vec<u8>,
    }

    impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
            if let std::task::Poll::Ready(Ok(n)) = polled {
                self.written.extend_from_slice(&buf[..n]);
            }
            polled
        }
        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// Everything a real initiator sent (first message, confirmation, a
    /// sealed frame), replayed by someone without the key to a fresh
    /// responder: the first message passes the identity check (it is
    /// genuine) but the responder never returns a link.
    #[tokio::test(start_paused = true)]
    async fn replayed_handshake_is_never_confirmed() {
        let key = ClusterKey::from_bytes([5; 32]);
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut tap = Tap {
            inner: a,
            written: Vec::new(),
        };
        let k2 = key.clone();
        let (init, resp) = tokio::join!(initiate(&mut tap, &key, 0, 1), async move {
            respond(&mut b, &k2, 1, |_| Ok(())).await
        });
        let cipher = init.unwrap();
        resp.unwrap();
        let mut sealed = Vec::new();
        let mut nonce = FIRST_DATA_NONCE;
        seal(&cipher, &mut nonce, b"frame", &mut sealed).unwrap();
        let mut captured = tap.written;
        captured.extend_from_slice(&sealed);

        // The replay: the captured bytes, then the replayer waits; and the
        // first message alone, then the replayer's side closes.
        for (bytes, close) in [(captured.clone(), false), (captured[..59].to_vec(), true)] {
            let (mut atk, mut b) = tokio::io::duplex(1 << 20);
            let asked = std::sync::atomic::AtomicBool::new(false);
            let replay = async {
                atk.write_all(&bytes).await.unwrap();
                if close {
                    atk.shutdown().await.unwrap();
                }
                // Read the answer (message 2), keeping the connection
                // open up to past the handshake time-out.
                let mut sink = Vec::new();
                let _ =
                    tokio::time::timeout(HANDSHAKE_TIMEOUT * 2, atk.read_to_end(&mut sink)).await;
            };
            let resp = respond(&mut b, &key, 1, |pnn| {
                asked.store(pnn == 0, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            });
            let ((), resp) = tokio::join!(replay, resp);
            assert!(
                asked.load(std::sync::atomic::Ordering::Relaxed),
                "the replayed first message was not even read as node 0's"
            );
            match resp {
                Err(NoiseError::Unconfirmed { pnn: 0, why }) => {
                    assert!(
                        matches!(*why, NoiseError::Crypto(_) | NoiseError::Io(_)),
                        "{why}"
                    );
                }
                Err(other) => panic!("refused for another reason: {other}"),
                Ok(_) => panic!("a replayed handshake made a link"),
            }
        }
    }

    /// An initiator that sends its first message and then nothing: the
    /// responder gives up at the handshake time-out, as unconfirmed.
    #[tokio::test(start_paused = true)]
    async fn silent_initiator_is_unconfirmed_at_the_time_out() {
        let key = ClusterKey::from_bytes([6; 32]);
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let mut hs = builder(&key).unwrap().build_initiator().unwrap();
        let mut msg = vec![0u8; MAX_NOISE_MSG];
        let n = hs.write_message(&hello(0), &mut msg).unwrap();
        send_msg(&mut a, &msg[..n]).await.unwrap();
        let err = respond(&mut b, &key, 1, |_| Ok(())).await.unwrap_err();
        assert!(
            matches!(&err, NoiseError::Unconfirmed { why, .. } if matches!(**why, NoiseError::Timeout(_))),
            "{err}"
        );
        drop(a);
    }

    /// A node of link version 1 (no confirmation) is refused by name, and
    /// refuses us; our initiator says the peer closed the handshake.
    #[tokio::test]
    async fn older_link_version_is_refused_with_its_version() {
        let key = ClusterKey::from_bytes([8; 32]);
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let mut old = builder(&key).unwrap().build_initiator().unwrap();
        let mut msg = vec![0u8; MAX_NOISE_MSG];
        let mut v1 = hello(0);
        v1[4] = 1;
        let n = old.write_message(&v1, &mut msg).unwrap();
        send_msg(&mut a, &msg[..n]).await.unwrap();
        let err = respond(&mut b, &key, 1, |_| Ok(())).await.unwrap_err();
        assert!(matches!(err, NoiseError::Version(1)), "{err}");
        assert!(err.to_string().contains("older ipfailover"), "{err}");

        // Our initiator against a responder that closes after message 1
        // (what a version-1 node does with our hello).
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let closer = async move {
            let mut buf = vec![0u8; MAX_NOISE_MSG];
            let _ = recv_msg(&mut b, &mut buf).await;
        };
        let (err, ()) = tokio::join!(initiate(&mut a, &key, 0, 1), closer);
        let err = err.unwrap_err();
        assert!(
            matches!(&err, NoiseError::Refused(m) if m.contains("closed the connection during the handshake")),
            "{err}"
        );
    }
}
