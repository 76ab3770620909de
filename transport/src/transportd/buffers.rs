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
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::Notify;

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

#[derive(Debug, Default)]
struct OutboxInner {
    buf: Vec<u8>,
    closed: bool,
    /// The writer task holds bytes it has not finished writing: new bytes
    /// must queue behind them.
    busy: bool,
}

/// Frames waiting to be written to one connection.
///
/// A local connection's outbox also holds the socket's write half, so the
/// routing task can write queued frames itself at the end of a batch
/// ([`Outbox::flush`]) when nothing else is pending: that saves waking the
/// connection's writer task on every hop. Bytes are written in queue order
/// either way: a direct write only happens when the writer task holds no
/// unwritten bytes.
#[derive(Debug)]
pub struct Outbox {
    inner: Mutex<OutboxInner>,
    notify: Notify,
    /// Wakes [`Outbox::wait_closed`].
    closing: Notify,
    limit: usize,
    direct: Option<Arc<OwnedWriteHalf>>,
}

impl Outbox {
    /// An empty outbox that refuses frames once `limit` bytes are queued.
    pub fn new(limit: usize, initial: usize) -> Self {
        Self::with_direct(limit, initial, None)
    }

    /// An outbox whose bytes may also be written directly to `direct` by
    /// [`Outbox::flush`].
    pub fn with_direct(limit: usize, initial: usize, direct: Option<Arc<OwnedWriteHalf>>) -> Self {
        Outbox {
            inner: Mutex::new(OutboxInner {
                buf: Vec::with_capacity(initial),
                closed: false,
                busy: false,
            }),
            notify: Notify::new(),
            closing: Notify::new(),
            limit,
            direct,
        }
    }

    /// Queues one frame without waking the writer; returns true when the
    /// caller must call [`Outbox::flush`] once its batch is routed (the
    /// queue was idle). Without a direct writer this is [`Outbox::push`].
    ///
    /// # Errors
    /// As [`Outbox::push`].
    pub fn push_deferred(&self, frame: &[u8]) -> Result<bool, PushError> {
        if self.direct.is_none() {
            return self.push(&[frame]).map(|()| false);
        }
        let mut inner = self.lock();
        if inner.closed {
            return Err(PushError::Closed);
        }
        if inner.buf.len() + frame.len() > self.limit {
            return Err(PushError::Full);
        }
        let idle = inner.buf.is_empty() && !inner.busy;
        inner.buf.extend_from_slice(frame);
        Ok(idle)
    }

    /// Writes what is queued straight to the socket if the writer task is
    /// idle; whatever the socket does not take now is left to the writer
    /// task, which is woken.
    pub fn flush(&self) {
        let Some(direct) = &self.direct else {
            self.notify.notify_one();
            return;
        };
        let mut inner = self.lock();
        if inner.busy || inner.closed || inner.buf.is_empty() {
            if !inner.buf.is_empty() {
                drop(inner);
                self.notify.notify_one();
            }
            return;
        }
        match direct.try_write(&inner.buf) {
            Ok(n) if n == inner.buf.len() => {
                inner.buf.clear();
                return;
            }
            Ok(n) => {
                inner.buf.drain(..n);
            }
            Err(_) => {} // would block, or an error the writer task will see
        }
        drop(inner);
        self.notify.notify_one();
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
            if inner.buf.len() + len > self.limit {
                return Err(PushError::Full);
            }
            let was_empty = inner.buf.is_empty();
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
    pub async fn take(&self, spare: &mut Vec<u8>) -> bool {
        loop {
            {
                let mut inner = self.lock();
                if !inner.buf.is_empty() {
                    std::mem::swap(&mut inner.buf, spare);
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
        let ob = Outbox::with_direct(1 << 20, 16, Some(Arc::new(wa)));
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
