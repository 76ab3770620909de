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
//! * The handshake payloads are [`hello`]: `"IPFO"`, the protocol version and
//!   the sender's PNN (big-endian u32). The responder checks the PNN against
//!   its nodes file and the TCP source address (the caller's `accept` check);
//!   the initiator checks the responder is the node it dialled.
//! * After the handshake the plaintext is a byte stream of frames, cut into
//!   chunks of at most [`MAX_CHUNK`] bytes, each one Noise transport message.
//!   Large frames span several chunks; small frames share one. Each direction
//!   counts its nonces from 0 and the receiver expects exactly the next one,
//!   so a replayed, reordered, dropped or injected chunk fails authentication:
//!   the link is then closed (the caller logs why).
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
    /// A chunk shorter than the authentication tag.
    #[error("chunk of {0} bytes is shorter than the authentication tag")]
    ShortChunk(usize),
}

/// The established link's cipher state, shared by the reader and the writer
/// (each keeps its own nonce).
pub type Cipher = Arc<StatelessTransportState>;

/// The handshake payload: `"IPFO"`, version 1, PNN.
pub fn hello(pnn: u32) -> [u8; HELLO_LEN] {
    let mut b = [0u8; HELLO_LEN];
    b[..4].copy_from_slice(b"IPFO");
    b[4] = crate::proto::VERSION;
    b[5..].copy_from_slice(&pnn.to_be_bytes());
    b
}

/// Parses a handshake payload.
///
/// # Errors
/// [`NoiseError::Refused`] if it is not a version-1 hello.
pub fn parse_hello(payload: &[u8]) -> Result<u32, NoiseError> {
    match payload {
        [b'I', b'P', b'F', b'O', v, p0, p1, p2, p3] if *v == crate::proto::VERSION => {
            Ok(u32::from_be_bytes([*p0, *p1, *p2, *p3]))
        }
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
/// `expect_pnn`.
///
/// # Errors
/// I/O, a wrong key (decryption failure), a timeout, or the wrong node.
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
        let n = recv_msg(stream, &mut msg).await?;
        let p = hs.read_message(&msg[..n], &mut payload)?;
        let pnn = parse_hello(&payload[..p])?;
        if pnn != expect_pnn {
            return Err(NoiseError::Refused(format!(
                "dialled node {expect_pnn} but node {pnn} answered"
            )));
        }
        Ok(Arc::new(hs.into_stateless_transport_mode()?))
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, run)
        .await
        .map_err(|_| NoiseError::Timeout(HANDSHAKE_TIMEOUT))?
}

/// Runs the responder side: reads the initiator's hello, asks `accept`
/// whether that PNN may connect (nodes file + source address), answers with
/// our hello. Returns the cipher and the peer's PNN.
///
/// # Errors
/// I/O, a wrong key (decryption failure), a timeout, or `accept`'s refusal.
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
    let run = async {
        let mut hs = builder(key)?.build_responder()?;
        let mut msg = vec![0u8; MAX_NOISE_MSG];
        let mut payload = vec![0u8; MAX_NOISE_MSG];
        let n = recv_msg(stream, &mut msg).await?;
        let p = hs.read_message(&msg[..n], &mut payload)?;
        let pnn = parse_hello(&payload[..p])?;
        accept(pnn).map_err(NoiseError::Refused)?;
        let n = hs.write_message(&hello(own_pnn), &mut msg)?;
        send_msg(stream, &msg[..n]).await?;
        Ok((Arc::new(hs.into_stateless_transport_mode()?), pnn))
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, run)
        .await
        .map_err(|_| NoiseError::Timeout(HANDSHAKE_TIMEOUT))?
}

/// Encrypts `plain` (any length) into `out` as length-prefixed chunks of at
/// most [`MAX_CHUNK`] plaintext bytes, advancing `nonce`. `out` is cleared
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
/// plaintext.
#[derive(Debug, Default)]
pub struct Opener {
    nonce: u64,
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
        let mut nonce = 0;
        seal(&a, &mut nonce, &plain, &mut sealed).unwrap();
        assert_eq!(nonce, 4, "200000 bytes need 4 chunks");
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
        let mut nonce = 0;
        seal(&a, &mut nonce, b"hello", &mut sealed).unwrap();
        let mut out = vec![0u8; MAX_CHUNK];
        let mut opener = Opener::default();
        assert!(opener.open(&b, &sealed, &mut out).unwrap().is_some());
        // The same chunk again: nonce 1 expected, chunk was sealed with 0.
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
        assert!(parse_hello(b"IPFO").is_err());
        let mut h = hello(7);
        h[4] = 2;
        assert!(parse_hello(&h).is_err());
    }
}
