//! The two reusable buffers of a connection: [`ReadBuf`] (bytes read from a
//! socket, frames parsed in place) and [`Outbox`] (frames waiting to be
//! written, shared by every router of a frame towards that connection).
//!
//! Both grow to the largest burst they have seen and then keep their memory,
//! so routing a frame in steady state allocates nothing: the reader parses
//! the frame where it was read, the router copies its bytes into the
//! destination's outbox, and the writer swaps the outbox with its spare
//! buffer and writes it in one call.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{tcp, unix};
use tokio::sync::Notify;

use super::noise::{self, Cipher, MAX_CHUNK};

/// Bytes read from a stream, consumed from the front.
///
/// Invariant: `start <= end <= buf.len()`; `buf[start..end]` is unread data.
#[derive(Debug)]
pub struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    /// A buffer of `size` bytes (grows on demand up to what callers ask for).
    pub fn new(size: usize) -> Self {
        ReadBuf {
            buf: vec![0; size],
            start: 0,
            end: 0,
        }
    }

    /// The unread bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// The unread bytes, writable (routers rewrite header fields in place).
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    /// Drops `n` bytes from the front.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Makes room for at least `spare` bytes after the data, and for a total
    /// of `need` bytes of data, compacting first and growing only if needed.
    pub fn reserve(&mut self, need: usize, spare: usize) {
        let want = need.max(self.end - self.start + spare);
        if self.buf.len() - self.start < want || self.buf.len() - self.end < spare {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
    }

    /// The free space after the data; call [`ReadBuf::commit`] after filling.
    pub fn spare_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.end..]
    }

    /// Marks `n` bytes of the spare space as data.
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Reads once from `r` into the spare space (which must not be empty:
    /// call [`ReadBuf::reserve`] first). Returns the bytes read, 0 at EOF.
    ///
    /// # Errors
    /// The reader's I/O error.
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> std::io::Result<usize> {
        let n = r.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }

    /// Current size of the buffer (memory held).
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }
}

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The connection is closing.
    Closed,
    /// The reader of this connection does not keep up: over the limit.
    Full,
}

/// Runs of at least this many bytes pushed into an idle outbox are written
/// (or sealed and written) straight from the caller's buffer, without
/// being copied into the queue first. Smaller ones are queued and written
/// once per batch ([`Outbox::flush`]), so that a batch of frames for many
/// destinations makes one system call per destination, not one per run.
pub const DIRECT_MIN: usize = 8 * 1024;

/// Plaintext sealed per write on a peer link (a few chunks), bounding the
/// sealed bytes held at once.
pub const SEAL_BATCH: usize = 8 * MAX_CHUNK;

/// Where the routing task may write an idle outbox's bytes itself.
#[derive(Debug)]
pub enum Direct {
    /// Nowhere: the writer task writes everything.
    None,
    /// A local client's socket.
    Unix(Arc<unix::OwnedWriteHalf>),
    /// A peer link: frames are sealed (under the outbox's lock, so chunks
    /// are sealed and written in nonce order) and written to the socket.
    Link(Arc<tcp::OwnedWriteHalf>, Cipher),
}

#[derive(Debug, Default)]
struct OutboxInner {
    /// Queued plaintext frames; for a link, `buf[at..]` is not sealed yet.
    buf: Vec<u8>,
    at: usize,
    /// A link's sealed bytes that the socket did not take at once:
    /// `sealed[sealed_at..]` must be written before anything else.
    sealed: Vec<u8>,
    sealed_at: usize,
    /// A link's next nonce (the first is [`noise::FIRST_DATA_NONCE`]).
    nonce: u64,
    closed: bool,
    /// The writer task holds bytes it has not finished writing: new bytes
    /// must queue behind them.
    busy: bool,
}

impl OutboxInner {
    fn queued(&self) -> usize {
        self.buf.len() - self.at + self.sealed.len() - self.sealed_at
    }

    /// Nothing queued and the writer holds nothing: bytes may go straight
    /// to the socket.
    fn idle(&self) -> bool {
        self.buf.len() == self.at && self.sealed.len() == self.sealed_at && !self.busy
    }
}

/// Frames waiting to be written to one connection.
///
/// The outbox may also hold the socket's write half ([`Direct`]), so the
/// routing task can write queued frames itself at the end of a batch
/// ([`Outbox::flush`]), or a large run of frames at once
/// ([`Outbox::push_deferred`]), when nothing else is pending: that saves
/// waking the connection's writer task on every hop, and for a large run
/// the copy into the queue. Bytes are written in queue order either way: a
/// direct write only happens when the writer task holds no unwritten bytes.
///
/// A peer link's outbox seals what it writes, under its lock: the routing
/// task's direct writes and the writer task's take their nonces from the
/// same counter, and a chunk sealed under nonce n is written before any
/// chunk of nonce n + 1 (the receiver expects exactly the next nonce).
#[derive(Debug)]
pub struct Outbox {
    inner: Mutex<OutboxInner>,
    notify: Notify,
    /// Wakes [`Outbox::wait_closed`].
    closing: Notify,
    limit: usize,
    direct: Direct,
}

impl Outbox {
    /// An empty outbox that refuses frames once `limit` bytes are queued.
    pub fn new(limit: usize, initial: usize) -> Self {
        Self::with_direct(limit, initial, Direct::None)
    }

    /// An outbox whose bytes may also be written directly by
    /// [`Outbox::flush`] and [`Outbox::push_deferred`].
    pub fn with_direct(limit: usize, initial: usize, direct: Direct) -> Self {
        Outbox {
            inner: Mutex::new(OutboxInner {
                buf: Vec::with_capacity(initial),
                nonce: noise::FIRST_DATA_NONCE,
                ..OutboxInner::default()
            }),
            notify: Notify::new(),
            closing: Notify::new(),
            limit,
            direct,
        }
    }

    /// Queues the bytes of one or more whole frames without waking the
    /// writer; returns true when the caller must call [`Outbox::flush`]
    /// once its batch is routed (the queue was idle). A run of at least
    /// [`DIRECT_MIN`] bytes into an idle outbox is written at once, from
    /// `frames` itself. Without a direct writer this is [`Outbox::push`].
    ///
    /// # Errors
    /// As [`Outbox::push`].
    pub fn push_deferred(&self, frames: &[u8]) -> Result<bool, PushError> {
        if matches!(self.direct, Direct::None) {
            return self.push(&[frames]).map(|()| false);
        }
        let mut inner = self.lock();
        if inner.closed {
            return Err(PushError::Closed);
        }
        if inner.queued() + frames.len() > self.limit {
            return Err(PushError::Full);
        }
        let idle = inner.idle();
        if idle && frames.len() >= DIRECT_MIN {
            let rest = self.write_direct(&mut inner, frames);
            return Ok(rest);
        }
        inner.buf.extend_from_slice(frames);
        Ok(idle)
    }

    /// Writes `frames` (plaintext, after whatever is queued: the caller
    /// checked the outbox is idle) to the socket; queues what it does not
    /// take. Returns true if something is left for the writer task.
    fn write_direct(&self, inner: &mut OutboxInner, frames: &[u8]) -> bool {
        match &self.direct {
            Direct::None => {
                inner.buf.extend_from_slice(frames);
                true
            }
            Direct::Unix(w) => {
                // Would block, or an error the writer task will see: 0.
                let n = w.try_write(frames).unwrap_or_default();
                inner.buf.extend_from_slice(&frames[n..]);
                n < frames.len()
            }
            Direct::Link(w, cipher) => {
                let mut at = 0;
                while at < frames.len() {
                    let end = frames.len().min(at + SEAL_BATCH);
                    let mut sealed = std::mem::take(&mut inner.sealed);
                    let result =
                        noise::seal(cipher, &mut inner.nonce, &frames[at..end], &mut sealed);
                    inner.sealed = sealed;
                    inner.sealed_at = 0;
                    if let Err(err) = result {
                        self.fail(inner, &err);
                        return false;
                    }
                    at = end;
                    if !Self::write_sealed(w, inner) {
                        // The socket is full: the rest waits, sealed, for
                        // the writer task; what is not sealed yet is queued.
                        inner.buf.extend_from_slice(&frames[at..]);
                        return true;
                    }
                }
                false
            }
        }
    }

    /// A link whose plaintext cannot be sealed (nonce exhausted) is closed.
    fn fail(&self, inner: &mut OutboxInner, err: &noise::NoiseError) {
        tracing::warn!(%err, "cannot seal for a peer link: closing it");
        inner.closed = true;
        inner.buf.clear();
        inner.at = 0;
        self.notify.notify_one();
        self.closing.notify_waiters();
    }

    /// Writes `inner.sealed[sealed_at..]` to the link; true when all of it
    /// went out (the buffer is then cleared).
    fn write_sealed(w: &tcp::OwnedWriteHalf, inner: &mut OutboxInner) -> bool {
        while inner.sealed_at < inner.sealed.len() {
            match w.try_write(&inner.sealed[inner.sealed_at..]) {
                Ok(0) | Err(_) => return false, // would block, or an error the writer sees
                Ok(n) => inner.sealed_at += n,
            }
        }
        inner.sealed.clear();
        inner.sealed_at = 0;
        true
    }

    /// Writes what is queued straight to the socket if the writer task is
    /// idle; whatever the socket does not take now is left to the writer
    /// task, which is woken.
    pub fn flush(&self) {
        if matches!(self.direct, Direct::None) {
            self.notify.notify_one();
            return;
        }
        let mut inner = self.lock();
        if inner.busy || inner.closed || inner.sealed_at < inner.sealed.len() {
            if inner.queued() > 0 {
                drop(inner);
                self.notify.notify_one();
            }
            return;
        }
        if inner.buf.len() == inner.at {
            return;
        }
        let left = match &self.direct {
            Direct::None => true,
            Direct::Unix(w) => {
                match w.try_write(&inner.buf) {
                    Ok(n) if n == inner.buf.len() => {
                        inner.buf.clear();
                        return;
                    }
                    Ok(n) => {
                        inner.buf.drain(..n);
                    }
                    Err(_) => {} // would block, or an error the writer task will see
                }
                true
            }
            Direct::Link(w, cipher) => {
                let mut left = false;
                while inner.at < inner.buf.len() {
                    if !self.seal_next(&mut inner, cipher) {
                        return;
                    }
                    if !Self::write_sealed(w, &mut inner) {
                        left = true;
                        break;
                    }
                }
                left
            }
        };
        drop(inner);
        if left {
            self.notify.notify_one();
        }
    }

    /// Seals the next [`SEAL_BATCH`] bytes of a link's queued plaintext
    /// into `inner.sealed` (which is empty). False if sealing failed (the
    /// outbox is then closed).
    fn seal_next(&self, inner: &mut OutboxInner, cipher: &Cipher) -> bool {
        let end = inner.buf.len().min(inner.at + SEAL_BATCH);
        let mut sealed = std::mem::take(&mut inner.sealed);
        let at = inner.at;
        let result = noise::seal(cipher, &mut inner.nonce, &inner.buf[at..end], &mut sealed);
        inner.sealed = sealed;
        inner.sealed_at = 0;
        if let Err(err) = result {
            self.fail(inner, &err);
            return false;
        }
        inner.at = end;
        if inner.at == inner.buf.len() {
            inner.buf.clear();
            inner.at = 0;
        } else if inner.at > inner.buf.len() / 2 {
            // Keep the unsealed rest at the front (amortised: it is less
            // than what was just sealed).
            inner.buf.drain(..inner.at);
            inner.at = 0;
        }
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutboxInner> {
        // A panic while holding this lock cannot leave the byte queue in an
        // inconsistent state worse than a lost frame: keep going.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues the bytes of one frame (any number of parts).
    ///
    /// # Errors
    /// [`PushError::Closed`] after [`Outbox::close`]; [`PushError::Full`]
    /// when the queue would exceed its limit (the caller closes the
    /// connection: a reader that does not read must not hold everyone up).
    pub fn push(&self, parts: &[&[u8]]) -> Result<(), PushError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let was_empty = {
            let mut inner = self.lock();
            if inner.closed {
                return Err(PushError::Closed);
            }
            if inner.queued() + len > self.limit {
                return Err(PushError::Full);
            }
            let was_empty = inner.queued() == 0;
            for p in parts {
                inner.buf.extend_from_slice(p);
            }
            was_empty
        };
        // Only the first frame into an empty queue needs to wake the writer:
        // a non-empty queue means a wake-up is already pending (a stored
        // permit or a writer about to swap the queue out).
        if was_empty {
            self.notify.notify_one();
        }
        Ok(())
    }

    /// Waits for queued bytes and swaps them into `spare` (which the caller
    /// has emptied). Returns false once the outbox is closed and drained.
    /// For a local connection's outbox (plaintext, not sealed).
    pub async fn take(&self, spare: &mut Vec<u8>) -> bool {
        loop {
            {
                let mut inner = self.lock();
                if !inner.buf.is_empty() {
                    std::mem::swap(&mut inner.buf, spare);
                    inner.at = 0;
                    inner.busy = true;
                    return true;
                }
                inner.busy = false;
                if inner.closed {
                    return false;
                }
            }
            self.notify.notified().await;
        }
    }

    /// A peer link's writer: waits for bytes to write and puts them,
    /// sealed, into `out` (swapped with the outbox's sealed buffer, or
    /// sealed from the queued plaintext, at most [`SEAL_BATCH`] at a time).
    /// Returns where the bytes to write start in `out`, or `None` once the
    /// outbox is closed and drained. Cancel-safe: nothing is taken while it
    /// waits.
    pub async fn take_sealed(&self, out: &mut Vec<u8>) -> Option<usize> {
        let Direct::Link(_, cipher) = &self.direct else {
            return self.take(out).await.then_some(0);
        };
        loop {
            {
                let mut inner = self.lock();
                if inner.sealed_at < inner.sealed.len() {
                    out.clear();
                    std::mem::swap(&mut inner.sealed, out);
                    let at = std::mem::take(&mut inner.sealed_at);
                    inner.busy = true;
                    return Some(at);
                }
                if inner.at < inner.buf.len() {
                    if !self.seal_next(&mut inner, cipher) {
                        return None;
                    }
                    out.clear();
                    std::mem::swap(&mut inner.sealed, out);
                    inner.sealed_at = 0;
                    inner.busy = true;
                    return Some(0);
                }
                inner.busy = false;
                if inner.closed {
                    return None;
                }
            }
            self.notify.notified().await;
        }
    }

    /// Refuses further frames and wakes the writer (which drains and stops).
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_one();
        self.closing.notify_waiters();
    }

    /// Resolves once [`Outbox::close`] has been called (e.g. by a router
    /// that found the queue over its limit).
    pub async fn wait_closed(&self) {
        loop {
            let closing = self.closing.notified();
            tokio::pin!(closing);
            closing.as_mut().enable();
            if self.is_closed() {
                return;
            }
            closing.await;
        }
    }

    /// Has [`Outbox::close`] been called?
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

/// Gives memory back after a burst of large frames: a spare buffer larger
/// than `keep` is shrunk once it has been written.
pub fn trim(buf: &mut Vec<u8>, keep: usize) {
    buf.clear();
    if buf.capacity() > keep {
        buf.shrink_to(keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn outbox_swaps_batches_and_refuses_over_limit() {
        let ob = Outbox::new(10, 16);
        ob.push(&[b"abc", b"de"]).unwrap();
        ob.push(&[b"fgh"]).unwrap();
        assert_eq!(ob.push(&[b"ijklmn"]), Err(PushError::Full));
        let mut spare = Vec::new();
        assert!(ob.take(&mut spare).await);
        assert_eq!(spare, b"abcdefgh");
        ob.close();
        assert_eq!(ob.push(&[b"x"]), Err(PushError::Closed));
        spare.clear();
        assert!(!ob.take(&mut spare).await);
    }

    #[tokio::test]
    async fn deferred_frames_are_flushed_in_order_directly_or_by_the_writer() {
        use tokio::io::AsyncReadExt;
        let (a, mut b) = tokio::net::UnixStream::pair().unwrap();
        let (_ra, wa) = a.into_split();
        let ob = Outbox::with_direct(1 << 20, 16, Direct::Unix(Arc::new(wa)));
        assert_eq!(
            ob.push_deferred(b"ab"),
            Ok(true),
            "idle queue needs a flush"
        );
        assert_eq!(ob.push_deferred(b"cd"), Ok(false));
        ob.flush();
        let mut got = [0u8; 4];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"abcd");
        // While the writer holds unwritten bytes, frames queue behind them.
        assert_eq!(ob.push_deferred(b"ef"), Ok(true));
        let mut spare = Vec::new();
        assert!(ob.take(&mut spare).await);
        assert_eq!(
            ob.push_deferred(b"gh"),
            Ok(false),
            "writer busy: no direct write"
        );
        ob.flush();
        assert_eq!(spare, b"ef");
        spare.clear();
        assert!(ob.take(&mut spare).await);
        assert_eq!(spare, b"gh");
    }

    /// A peer link's outbox seals in nonce order whoever writes: small
    /// frames flushed by the routing task, a large run written at once, a
    /// queue the socket did not take (left to the writer task), frames
    /// queued while the writer is busy. The receiver opens every chunk in
    /// order and gets the frames back in the order they were pushed.
    #[tokio::test]
    async fn link_outbox_seals_in_nonce_order_direct_or_by_the_writer() {
        use crate::transportd::key::ClusterKey;
        use crate::transportd::noise::{initiate, respond, Opener};
        use tokio::io::AsyncReadExt;
        let key = ClusterKey::from_bytes([5; 32]);
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let (tx, rx) = tokio::join!(
            initiate(&mut a, &key, 0, 1),
            respond(&mut b, &key, 1, |_| Ok(()))
        );
        let (tx, (rx, _)) = (tx.unwrap(), rx.unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let (mut server, _) = accepted.unwrap();
        let (_crd, cwr) = client.unwrap().into_split();
        let cwr = Arc::new(cwr);
        let ob = Arc::new(Outbox::with_direct(
            64 << 20,
            0,
            Direct::Link(Arc::clone(&cwr), Arc::clone(&tx)),
        ));
        // What was pushed, in order: small frames, a large run, then much
        // more than the socket buffers hold while nobody reads.
        let mut sent = Vec::new();
        let mut part = |n: usize, tag: u8| -> Vec<u8> {
            let v: Vec<u8> = (0..n)
                .map(|i| tag ^ u8::try_from(i % 251).unwrap())
                .collect();
            sent.push(v.clone());
            v
        };
        assert_eq!(ob.push_deferred(&part(100, 1)), Ok(true));
        assert_eq!(ob.push_deferred(&part(50, 2)), Ok(false));
        ob.flush();
        assert_eq!(
            ob.push_deferred(&part(3 * DIRECT_MIN, 3)),
            Ok(false),
            "written at once"
        );
        let big = part(32 << 20, 4);
        let left = ob.push_deferred(&big).unwrap();
        assert!(left, "32 MiB do not fit in the socket buffers at once");
        ob.push(&[&part(1000, 5)]).unwrap();
        let tail = part(200, 6);
        let sent: Vec<u8> = sent.concat();
        ob.flush(); // writer owes sealed bytes: queued behind them
        let writer = {
            let ob = Arc::clone(&ob);
            let cwr = Arc::clone(&cwr);
            tokio::spawn(async move {
                let mut out = Vec::new();
                while let Some(start) = ob.take_sealed(&mut out).await {
                    let mut rest = &out[start..];
                    while !rest.is_empty() {
                        cwr.writable().await.unwrap();
                        if let Ok(n) = cwr.try_write(rest) {
                            rest = &rest[n..];
                        }
                    }
                }
            })
        };
        let mut got = Vec::new();
        let mut raw = Vec::new();
        let mut opener = Opener::default();
        let mut out = vec![0u8; MAX_CHUNK];
        let mut buf = vec![0u8; 1 << 16];
        let mut added_tail = false;
        while got.len() < sent.len() {
            let n = server.read(&mut buf).await.unwrap();
            assert!(n > 0, "link closed early");
            raw.extend_from_slice(&buf[..n]);
            let mut at = 0;
            while let Some((used, m)) = opener.open(&rx, &raw[at..], &mut out).unwrap() {
                got.extend_from_slice(&out[..m]);
                at += used;
            }
            raw.drain(..at);
            if !added_tail && got.len() > 16 << 20 {
                // Pushed while the writer is busy: after everything else.
                ob.push_deferred(&tail).unwrap();
                ob.flush();
                added_tail = true;
            }
        }
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "frames reordered or corrupted");
        ob.close();
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn read_buf_compacts_and_grows() {
        let mut rb = ReadBuf::new(8);
        let mut src: &[u8] = b"0123456789abcdef";
        rb.reserve(0, 1);
        assert_eq!(rb.fill(&mut src).await.unwrap(), 8);
        rb.consume(6);
        assert_eq!(rb.data(), b"67");
        rb.reserve(12, 1);
        assert_eq!(rb.data(), b"67");
        assert!(rb.capacity() >= 12);
        for _ in 0..4 {
            if rb.fill(&mut src).await.unwrap() == 0 {
                break;
            }
        }
        assert_eq!(rb.data(), b"6789abcdef");
        rb.consume(100);
        assert!(rb.data().is_empty());
    }
}
