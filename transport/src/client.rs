//! The client library used by every daemon and by the CLI.
//!
//! A [`Client`] is a cheap clonable handle; a dispatcher task owns the
//! receiving side of the connection. Requests are matched to replies by
//! `request_id` through oneshot channels; every request has a timeout; when
//! the connection closes, pending requests fail at once with
//! [`ClientError::Closed`]. The common controls (ping, version, statistics,
//! log level, shutdown) are answered here, for every service, and never show
//! up in [`Incoming`].
//!
//! The connection itself is a [`Link`]. The in-process router hands out
//! channel links (message channels); [`Link::from_stream`] turns any
//! `AsyncRead + AsyncWrite` byte stream (a Unix socket, a test duplex pipe)
//! into one by running a frame reader and a frame writer task. So the same
//! client code runs over a socket and in-process.
//!
//! Memory and backpressure on a stream link (transportd's socket):
//! * sending encodes the frame straight into the link's write queue (one
//!   reused byte buffer, swapped with the writer task's): no allocation per
//!   frame in steady state. The queue holds at most [`OUTGOING_LIMIT`] bytes;
//!   async senders wait for room, `try_*` senders get
//!   [`ClientError::QueueFull`];
//! * the reader parses frames in place in a reused buffer. A [`FrameTap`]
//!   installed with [`Client::set_frame_tap`] sees each frame borrowed, before
//!   any copy, and may take it (clusterd's heartbeats: no allocation per
//!   received frame). Other frames become [`Message`]s through a bounded
//!   channel ([`LINK_CAPACITY`]) and then [`Incoming`], which holds at most
//!   [`INCOMING_BUDGET`] bytes: a service that stops reading stops the
//!   reader, so the frames back up in transportd, which disconnects it past
//!   its own per-client limit (instead of this process growing without
//!   bound).
//!
//! Replies are matched by request id and by sender: an answer whose source
//! is not the request's destination (or, for `ALL_NODES`, not that service
//! on some node) is dropped and counted (`mismatched_replies`).
//!
//! Registration: the first frame on a link is a `REGISTER` request to
//! `(LOCAL, TRANSPORT)`; the reply gives this node's pnn and the service id.
//! The registration lasts as long as the connection: until the last handle
//! is dropped, or [`Client::close`] (a daemon whose spawned tasks may still
//! hold handles closes it on its way out with [`Client::close_on_drop`], so
//! that a restarted instance in the same process can register the name
//! again at once).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

use crate::controls::{self, ControlContext, LogLevelHook};
use crate::proto::control::{
    self, RegisterReply, RegisterRequest, Statistics, SubscribeRequest, REGISTER, SUBSCRIBE,
    UNSUBSCRIBE,
};
use crate::proto::service::TRANSPORT;
use crate::proto::{
    check, decode_payload, encode_frame, encode_payload, Address, Check, DecodeError, EncodeError,
    ErrorCode, FrameRef, HeaderRepr, Kind, Message, PayloadError, RemoteError, ALL_NODES, LOCAL,
    MAX_PAYLOAD,
};

/// How long registration and transport controls (subscribe...) may take.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// Capacity of the outgoing channel of a channel link (backpressure on
/// senders).
pub const OUTGOING_CAPACITY: usize = 256;

/// Bytes a stream link queues for the socket before senders wait (async
/// sends) or are refused (`try_*` sends). One frame larger than this is
/// still accepted into an empty queue.
pub const OUTGOING_LIMIT: usize = 8 * 1024 * 1024;

/// Frames a stream link's reader may queue for the dispatcher before it
/// stops reading the socket.
pub const LINK_CAPACITY: usize = 64;

/// Bytes of messages (payload plus [`MESSAGE_OVERHEAD`] each) that may wait
/// in [`Incoming`] before the dispatcher stops: as much as transportd queues
/// for one client, so a service that stops reading is disconnected by
/// transportd rather than growing this process.
pub const INCOMING_BUDGET: usize = 32 * 1024 * 1024;

/// What one queued message counts against [`INCOMING_BUDGET`] besides its
/// payload (the header, the channel slot).
pub const MESSAGE_OVERHEAD: usize = 128;

/// Sees every frame addressed to this service that the link reads, borrowed,
/// before the client library copies it into a [`Message`]; returns `true`
/// when it took the frame (it is then not delivered anywhere else).
///
/// It runs on the link's reader task and must not block: hand work to
/// another task with a non-blocking send (`try_send`). It must only take
/// requests or events meant for the daemon, never replies (those answer this
/// client's own requests) nor the common controls.
pub type FrameTap = Box<dyn FnMut(&FrameRef<'_>) -> bool + Send>;

/// Errors of the client library.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection to the transport is closed (or closed while waiting).
    #[error("service {service}: connection to the transport closed")]
    Closed {
        /// This client's registered name.
        service: String,
    },
    /// No answer within the timeout.
    #[error("request {opcode:#010x} to {dst} timed out after {after:?}")]
    Timeout {
        /// Where the request went.
        dst: Address,
        /// Its opcode.
        opcode: u32,
        /// The timeout.
        after: Duration,
    },
    /// The destination (or the transport on its behalf) answered with an error.
    #[error("request {opcode:#010x} to {dst} failed at {from}: {error}")]
    Remote {
        /// Where the request went.
        dst: Address,
        /// Who answered with the error.
        from: Address,
        /// The request's opcode.
        opcode: u32,
        /// The error.
        #[source]
        error: RemoteError,
    },
    /// A payload could not be encoded, or a reply payload decoded.
    #[error("opcode {opcode:#010x} with {peer}: {source}")]
    Payload {
        /// The other end.
        peer: Address,
        /// The opcode.
        opcode: u32,
        /// Why.
        #[source]
        source: PayloadError,
    },
    /// The transport refused the registration (e.g. the well-known name is taken).
    #[error("registration of {name:?} refused: {error}")]
    Register {
        /// Name asked for.
        name: String,
        /// The transport's reason.
        #[source]
        error: RemoteError,
    },
    /// The transport did not answer the registration properly.
    #[error("registration of {name:?} failed: {reason}")]
    Handshake {
        /// Name asked for.
        name: String,
        /// What went wrong.
        reason: String,
    },
    /// The write queue to the transport is over [`OUTGOING_LIMIT`] (a
    /// non-waiting send; the transport does not read).
    #[error("service {service}: the queue to the transport is full")]
    QueueFull {
        /// This client's registered name.
        service: String,
    },
    /// Connecting to the transport failed (socket path, ...).
    #[error("cannot connect to {target}: {source}")]
    Connect {
        /// What we tried to connect to (a socket path...).
        target: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Why a stream link ended (logged by the link tasks).
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Reading or writing the stream failed.
    #[error("stream I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that are not a valid frame.
    #[error("bad frame: {0}")]
    Decode(#[from] DecodeError),
    /// A message could not be framed.
    #[error("cannot frame message: {0}")]
    Encode(#[from] EncodeError),
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({have} of {need} bytes)")]
    Truncated {
        /// Bytes received of the frame.
        have: usize,
        /// Bytes the frame needs.
        need: usize,
    },
}

/// A connection to a transport: where frames go and where they come from.
///
/// Usually handed to [`Client::connect`]; code that speaks the protocol by
/// hand (a fake transport in a test) may use the two sides directly.
/// Dropping every [`Client`] handle (or the [`LinkSender`]) closes the
/// connection; the incoming side ending means the other end closed it.
#[derive(Debug)]
pub struct Link {
    /// Frames to the other end.
    pub outgoing: LinkSender,
    /// Frames from the other end.
    pub incoming: LinkReceiver,
}

/// The sending side of a [`Link`].
#[derive(Debug)]
pub struct LinkSender {
    out: Out,
    tap: Arc<TapSlot>,
    /// Close a stream link when dropped (false once a Client took over).
    close_on_drop: bool,
}

/// The link is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the link is closed")]
pub struct LinkClosed;

impl LinkSender {
    /// Sends one message, waiting for room (a stream link queues at most
    /// [`OUTGOING_LIMIT`] bytes).
    ///
    /// # Errors
    /// [`LinkClosed`] once the link is closed (or the payload is over
    /// [`MAX_PAYLOAD`], which would close a stream).
    pub async fn send(&self, msg: Message) -> Result<(), LinkClosed> {
        match &self.out {
            Out::Channel(tx) => tx.send(msg).await.map_err(|_| LinkClosed),
            Out::Stream(q) => q
                .push(&msg.header, &msg.payload)
                .await
                .map_err(|_| LinkClosed),
        }
    }
}

impl Drop for LinkSender {
    fn drop(&mut self) {
        // Dropping the sending side closes a stream link (the writer drains
        // and shuts the stream down), as dropping a channel's sender does.
        if let (true, Out::Stream(q)) = (self.close_on_drop, &self.out) {
            q.close();
        }
    }
}

/// The receiving side of a [`Link`].
#[derive(Debug)]
pub struct LinkReceiver(LinkRx);

impl LinkReceiver {
    /// The next message, or `None` once the link is closed.
    pub async fn recv(&mut self) -> Option<Message> {
        self.0.recv().await
    }
}

/// The sending side of a link.
#[derive(Debug, Clone)]
enum Out {
    /// Messages to the in-process router.
    Channel(mpsc::Sender<Message>),
    /// Encoded frames for a stream's writer task.
    Stream(Arc<FrameQueue>),
}

/// The receiving side of a link.
#[derive(Debug)]
enum LinkRx {
    /// From the in-process router (which never blocks on delivery).
    Channel(mpsc::UnboundedReceiver<Message>),
    /// From a stream's reader task (bounded: backpressure on the socket).
    Stream(mpsc::Receiver<Message>),
}

impl LinkRx {
    async fn recv(&mut self) -> Option<Message> {
        match self {
            LinkRx::Channel(rx) => rx.recv().await,
            LinkRx::Stream(rx) => rx.recv().await,
        }
    }
}

/// The installed [`FrameTap`], shared by the client and the link's reader.
#[derive(Default)]
struct TapSlot(Mutex<Option<FrameTap>>);

impl std::fmt::Debug for TapSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TapSlot")
    }
}

impl TapSlot {
    /// Offers `frame` to the tap; true if it took it.
    fn offer(&self, frame: &FrameRef<'_>) -> bool {
        match self.0.lock() {
            Ok(mut slot) => slot.as_mut().is_some_and(|tap| tap(frame)),
            Err(_) => false,
        }
    }
}

impl Link {
    /// A link over message channels (the in-process router's side).
    pub(crate) fn from_channels(
        outgoing: mpsc::Sender<Message>,
        incoming: mpsc::UnboundedReceiver<Message>,
    ) -> Link {
        Link {
            outgoing: LinkSender {
                out: Out::Channel(outgoing),
                tap: Arc::default(),
                close_on_drop: true,
            },
            incoming: LinkReceiver(LinkRx::Channel(incoming)),
        }
    }

    /// The raw channels of a channel link (tests that speak the protocol by
    /// hand); `None` for a stream link.
    pub fn into_channels(
        self,
    ) -> Option<(mpsc::Sender<Message>, mpsc::UnboundedReceiver<Message>)> {
        let Link { outgoing, incoming } = self;
        match (outgoing.out.clone(), incoming.0) {
            (Out::Channel(tx), LinkRx::Channel(rx)) => Some((tx, rx)),
            _ => None,
        }
    }

    /// Runs a framed connection over a byte stream (a Unix socket, a
    /// `tokio::io::duplex` pipe...) with a reader and a writer task.
    ///
    /// A malformed frame from the other side, or an I/O error, ends the link
    /// (logged with the reason); pending requests then fail with
    /// [`ClientError::Closed`]. Must be called within a tokio runtime.
    pub fn from_stream<S>(stream: S) -> Link
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let queue = Arc::new(FrameQueue::new(OUTGOING_LIMIT));
        let (in_tx, in_rx) = mpsc::channel(LINK_CAPACITY);
        let tap: Arc<TapSlot> = Arc::default();
        tokio::spawn(run_client_stream(
            stream,
            in_tx,
            Arc::clone(&queue),
            Arc::clone(&tap),
        ));
        Link {
            outgoing: LinkSender {
                out: Out::Stream(queue),
                tap,
                close_on_drop: true,
            },
            incoming: LinkReceiver(LinkRx::Stream(in_rx)),
        }
    }
}

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueueError {
    Closed,
    Full,
}

#[derive(Debug, Default)]
struct QueueInner {
    buf: Vec<u8>,
    closed: bool,
}

/// Encoded frames waiting for a stream's writer task: one byte buffer that
/// the writer swaps with its own (so both keep their capacity).
#[derive(Debug)]
struct FrameQueue {
    inner: Mutex<QueueInner>,
    /// Wakes the writer when frames arrive (or the queue closes).
    data: tokio::sync::Notify,
    /// Wakes senders waiting for room.
    room: tokio::sync::Notify,
    limit: usize,
}

impl FrameQueue {
    fn new(limit: usize) -> Self {
        FrameQueue {
            inner: Mutex::new(QueueInner {
                buf: Vec::with_capacity(64 * 1024),
                closed: false,
            }),
            data: tokio::sync::Notify::new(),
            room: tokio::sync::Notify::new(),
            limit,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueInner> {
        // Nothing panics while holding this lock; a poisoned queue is still
        // a valid byte buffer.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends one frame; the payload length must already be checked.
    fn try_push(&self, header: &HeaderRepr, payload: &[u8]) -> Result<(), QueueError> {
        let was_empty = {
            let mut q = self.lock();
            if q.closed {
                return Err(QueueError::Closed);
            }
            let len = crate::proto::HEADER_LEN + payload.len();
            if !q.buf.is_empty() && q.buf.len() + len > self.limit {
                return Err(QueueError::Full);
            }
            let was_empty = q.buf.is_empty();
            if encode_frame(header, payload, &mut q.buf).is_err() {
                // Only over MAX_PAYLOAD, which callers refuse first.
                return Err(QueueError::Closed);
            }
            was_empty
        };
        if was_empty {
            self.data.notify_one();
        }
        Ok(())
    }

    /// Appends one frame, waiting while the queue is full.
    async fn push(&self, header: &HeaderRepr, payload: &[u8]) -> Result<(), QueueError> {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_push(header, payload) {
                Err(QueueError::Full) => room.await,
                other => return other,
            }
        }
    }

    /// Waits for queued bytes and swaps them into `spare` (emptied by the
    /// caller). False once the queue is closed and drained.
    async fn take(&self, spare: &mut Vec<u8>) -> bool {
        loop {
            let data = self.data.notified();
            tokio::pin!(data);
            data.as_mut().enable();
            {
                let mut q = self.lock();
                if !q.buf.is_empty() {
                    std::mem::swap(&mut q.buf, spare);
                    drop(q);
                    self.room.notify_waiters();
                    return true;
                }
                if q.closed {
                    return false;
                }
            }
            data.await;
        }
    }

    /// Refuses further frames; the writer drains what is queued and stops;
    /// waiting senders are woken (and see `Closed`).
    fn close(&self) {
        self.lock().closed = true;
        self.data.notify_one();
        self.room.notify_waiters();
    }
}

/// The client side of a stream link: frames read go to the tap or to `to_dispatcher`,
/// frames queued in `queue` are written. When either direction ends the
/// queue is closed, so senders see the connection closed.
async fn run_client_stream<S>(
    stream: S,
    to_dispatcher: mpsc::Sender<Message>,
    queue: Arc<FrameQueue>,
    tap: Arc<TapSlot>,
) where
    S: AsyncRead + AsyncWrite + Send,
{
    let (read_half, write_half) = tokio::io::split(stream);
    tokio::select! {
        res = read_frames_to(read_half, Deliver::Client { tx: to_dispatcher, tap: &tap }) => {
            if let Err(err) = res {
                tracing::warn!(%err, "transport link closed while reading");
            }
        }
        res = write_queue(write_half, &queue) => {
            if let Err(err) = res {
                tracing::warn!(%err, "transport link closed while writing");
            }
        }
    }
    queue.close();
}

/// Where the frame reader delivers what it reads.
enum Deliver<'a> {
    /// Every frame becomes a message on an unbounded channel.
    Channel(mpsc::UnboundedSender<Message>),
    /// A client's link: each frame is offered to the tap, else becomes a
    /// message for the dispatcher (waiting while its channel is full, which
    /// stops reading the socket).
    Client {
        tx: mpsc::Sender<Message>,
        tap: &'a TapSlot,
    },
}

impl Deliver<'_> {
    /// Delivers one frame; false when nobody listens any more.
    async fn frame(&self, frame: &FrameRef<'_>) -> bool {
        match self {
            Deliver::Channel(tx) => tx.send(frame.to_message()).is_ok(),
            Deliver::Client { tx, tap } => {
                tap.offer(frame) || tx.send(frame.to_message()).await.is_ok()
            }
        }
    }
}

/// The one frame reader of the client side: reads frames from `reader`
/// until EOF or an error and delivers each to `to`.
async fn read_frames_to<R>(mut reader: R, to: Deliver<'_>) -> Result<(), LinkError>
where
    R: AsyncRead + Unpin,
{
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        let mut start = 0;
        let need = loop {
            let rest = buf.get(start..).unwrap_or_default();
            match check(rest)? {
                Check::Complete { frame_len } => {
                    let (frame, _) = FrameRef::decode_prefix(rest)?;
                    if !to.frame(&frame).await {
                        return Ok(()); // nobody listens any more
                    }
                    start += frame_len;
                }
                Check::Incomplete { need } => break need,
            }
        };
        buf.drain(..start);
        // `need` is bounded by MAX_FRAME (check validated the header).
        buf.reserve(need.saturating_sub(buf.len()));
        let n = reader.read_buf(&mut buf).await?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(());
            }
            return Err(LinkError::Truncated {
                have: buf.len(),
                need,
            });
        }
    }
}

/// Writes what `queue` holds until it is closed and drained; then shuts the
/// writer down.
async fn write_queue<W>(mut writer: W, queue: &FrameQueue) -> Result<(), LinkError>
where
    W: AsyncWrite + Unpin,
{
    const KEEP: usize = 1024 * 1024;
    let mut spare: Vec<u8> = Vec::with_capacity(64 * 1024);
    while queue.take(&mut spare).await {
        writer.write_all(&spare).await?;
        writer.flush().await?;
        spare.clear();
        if spare.capacity() > KEEP {
            // Give memory back after a burst of large frames.
            spare.shrink_to(KEEP);
        }
    }
    writer.shutdown().await?;
    Ok(())
}

/// Carries frames between a byte stream and a pair of channels until either
/// side ends: frames read go to `to_channel`, messages from `from_channel`
/// are written. When one direction ends (EOF, a bad frame, an I/O error, or
/// every sender dropped) the other is dropped too, so the peer and the local
/// side both see the connection close. The reason is logged.
pub async fn run_stream<S>(
    stream: S,
    to_channel: mpsc::UnboundedSender<Message>,
    from_channel: mpsc::Receiver<Message>,
) where
    S: AsyncRead + AsyncWrite + Send,
{
    let (read_half, write_half) = tokio::io::split(stream);
    tokio::select! {
        res = read_frames(read_half, to_channel) => {
            if let Err(err) = res {
                tracing::warn!(%err, "transport link closed while reading");
            }
        }
        res = write_frames(write_half, from_channel) => {
            if let Err(err) = res {
                tracing::warn!(%err, "transport link closed while writing");
            }
        }
    }
}

/// Reads frames from `reader` until EOF or an error; each becomes a message.
///
/// # Errors
/// I/O errors, invalid frames, EOF inside a frame.
pub async fn read_frames<R>(reader: R, tx: mpsc::UnboundedSender<Message>) -> Result<(), LinkError>
where
    R: AsyncRead + Unpin,
{
    read_frames_to(reader, Deliver::Channel(tx)).await
}

/// Writes messages from `rx` to `writer` until all senders are dropped,
/// batching what is queued into one write; then shuts the writer down.
///
/// # Errors
/// I/O errors; a message over the payload limit.
pub async fn write_frames<W>(
    mut writer: W,
    mut rx: mpsc::Receiver<Message>,
) -> Result<(), LinkError>
where
    W: AsyncWrite + Unpin,
{
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    while let Some(msg) = rx.recv().await {
        buf.clear();
        msg.encode_into(&mut buf)?;
        while buf.len() < 64 * 1024 {
            match rx.try_recv() {
                Ok(more) => more.encode_into(&mut buf)?,
                Err(_) => break,
            }
        }
        writer.write_all(&buf).await?;
        writer.flush().await?;
    }
    writer.shutdown().await?;
    Ok(())
}

/// Messages addressed to this service: requests (answer with
/// [`Client::reply`]) and events. Ends when the connection closes.
///
/// Holds at most [`INCOMING_BUDGET`] bytes of messages: when the service
/// does not read, the client stops reading its link.
#[derive(Debug)]
pub struct Incoming {
    rx: mpsc::UnboundedReceiver<Message>,
    budget: Arc<tokio::sync::Semaphore>,
}

/// What `msg` counts against [`INCOMING_BUDGET`] (at most `u32::MAX`).
fn message_cost(msg: &Message) -> u32 {
    u32::try_from(msg.payload.len() + MESSAGE_OVERHEAD).unwrap_or(u32::MAX)
}

impl Incoming {
    fn release(&self, msg: &Message) {
        self.budget.add_permits(message_cost(msg) as usize);
    }

    /// The next request or event, or `None` once the connection is closed.
    pub async fn recv(&mut self) -> Option<Message> {
        let msg = self.rx.recv().await?;
        self.release(&msg);
        Some(msg)
    }

    /// A message if one is already queued.
    pub fn try_recv(&mut self) -> Option<Message> {
        let msg = self.rx.try_recv().ok()?;
        self.release(&msg);
        Some(msg)
    }
}

#[derive(Default)]
struct Counters {
    requests_sent: AtomicU64,
    replies_received: AtomicU64,
    errors_received: AtomicU64,
    timeouts: AtomicU64,
    late_replies: AtomicU64,
    events_sent: AtomicU64,
    replies_sent: AtomicU64,
    messages_delivered: AtomicU64,
    controls_answered: AtomicU64,
    mismatched_replies: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> Statistics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Statistics {
            counters: vec![
                ("requests_sent".into(), get(&self.requests_sent)),
                ("replies_received".into(), get(&self.replies_received)),
                ("errors_received".into(), get(&self.errors_received)),
                ("timeouts".into(), get(&self.timeouts)),
                ("late_replies".into(), get(&self.late_replies)),
                ("events_sent".into(), get(&self.events_sent)),
                ("replies_sent".into(), get(&self.replies_sent)),
                ("messages_delivered".into(), get(&self.messages_delivered)),
                ("controls_answered".into(), get(&self.controls_answered)),
                ("mismatched_replies".into(), get(&self.mismatched_replies)),
            ],
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A request waiting for its answer: where it went, and who waits.
struct Waiter {
    dst: Address,
    tx: oneshot::Sender<Message>,
}

#[derive(Default)]
struct Pending {
    closed: bool,
    waiting: HashMap<u64, Waiter>,
}

/// May an answer of `kind` from `src` answer a request this node (`own`)
/// sent to `dst`? The service must be the one asked; the node the one asked
/// (own node for `LOCAL`), any node for `ALL_NODES`. An error made by a
/// transport on the destination's behalf (unreachable node, unknown
/// service) carries the destination service as source and either the
/// destination node (transportd) or this node (the in-process router), so
/// an Error from this node passes too (local sources are set by the
/// transport, not by the sender).
fn answers(dst: Address, own: u32, src: Address, kind: Kind) -> bool {
    let node_ok = match dst.pnn {
        ALL_NODES => true,
        LOCAL => src.pnn == own || src.pnn == LOCAL,
        p => src.pnn == p || (kind == Kind::Error && src.pnn == own),
    };
    node_ok && src.service == dst.service
}

struct Inner {
    name: String,
    pnn: u32,
    service: u16,
    outgoing: Out,
    tap: Arc<TapSlot>,
    pending: Mutex<Pending>,
    next_id: AtomicU64,
    shutdown: watch::Sender<bool>,
    closed: watch::Sender<bool>,
    /// [`Client::close`] was called: a channel link refuses to send (a
    /// stream link's queue is closed instead).
    shut: AtomicBool,
    log_hook: Mutex<Option<LogLevelHook>>,
    stats_hook: Mutex<Option<StatisticsHook>>,
    /// The raw counters at the last `STATISTICS_RESET` (empty: never).
    stats_base: Mutex<Vec<(String, u64)>>,
    counters: Counters,
}

/// The daemon's own counters, appended to the client's in the
/// `STATISTICS` reply (see [`Client::set_statistics_hook`]).
pub type StatisticsHook = Arc<dyn Fn() -> Vec<(String, u64)> + Send + Sync>;

impl Inner {
    /// Queues `msg` for the transport (waiting for room).
    async fn send(&self, msg: Message) -> Result<(), ()> {
        match &self.outgoing {
            Out::Channel(_) if self.is_shut() => Err(()),
            Out::Channel(tx) => tx.send(msg).await.map_err(|_| ()),
            Out::Stream(q) => q.push(&msg.header, &msg.payload).await.map_err(|_| ()),
        }
    }

    fn is_shut(&self) -> bool {
        self.shut.load(Ordering::Acquire)
    }

    /// Ends the connection for every handle: see [`Client::close`].
    fn close(&self) {
        self.shut.store(true, Ordering::Release);
        if let Out::Stream(q) = &self.outgoing {
            q.close();
        }
        if let Ok(mut p) = self.pending.lock() {
            p.closed = true;
            p.waiting.clear(); // dropping the senders wakes the requesters
        }
        // Also tells a channel link's dispatcher to drop its side.
        self.closed.send_replace(true);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: close the connection (the writer drains
        // what is queued, then shuts the stream down).
        if let Out::Stream(q) = &self.outgoing {
            q.close();
        }
    }
}

/// A handle to a registered service's connection. Clone freely; the
/// connection closes when the last clone is dropped (or on
/// [`Client::close`]).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// Closes a client's connection when dropped, whatever other handles
/// still exist: see [`Client::close_on_drop`]. Holds no handle itself.
#[derive(Debug)]
#[must_use = "the connection is closed when this guard is dropped"]
pub struct CloseOnDrop(Weak<Inner>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            inner.close();
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("name", &self.inner.name)
            .field("pnn", &self.inner.pnn)
            .field("service", &self.inner.service)
            .finish()
    }
}

/// Removes a pending request on every way out of `request_raw` (reply,
/// timeout, cancellation).
struct PendingGuard<'a> {
    inner: &'a Inner,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut p) = self.inner.pending.lock() {
            p.waiting.remove(&self.id);
        }
    }
}

impl Client {
    /// Registers `name` over `link` and starts the dispatcher task.
    ///
    /// # Errors
    /// [`ClientError::Register`] if the transport refuses the name,
    /// [`ClientError::Handshake`] on a malformed or missing answer (within
    /// [`CONTROL_TIMEOUT`]), [`ClientError::Closed`] if the link closes.
    pub async fn connect(link: Link, name: &str) -> Result<(Client, Incoming), ClientError> {
        let Link {
            outgoing: mut sender,
            incoming: LinkReceiver(mut link_rx),
        } = link;
        let outgoing = sender.out.clone();
        let tap = Arc::clone(&sender.tap);
        let closed = || ClientError::Closed {
            service: name.to_owned(),
        };
        let handshake = |reason: String| ClientError::Handshake {
            name: name.to_owned(),
            reason,
        };
        let header = HeaderRepr {
            kind: Kind::Request,
            src: Address::new(LOCAL, TRANSPORT),
            dst: Address::local(TRANSPORT),
            request_id: 0,
            opcode: REGISTER,
        };
        let req = Message::with_payload(
            header,
            &RegisterRequest {
                name: name.to_owned(),
            },
        )
        .map_err(|e| handshake(e.to_string()))?;
        let sent = match &outgoing {
            Out::Channel(tx) => tx.send(req).await.is_ok(),
            Out::Stream(q) => q.push(&req.header, &req.payload).await.is_ok(),
        };
        if !sent {
            return Err(closed());
        }
        let answer = tokio::time::timeout(CONTROL_TIMEOUT, link_rx.recv())
            .await
            .map_err(|_| handshake(format!("no answer within {CONTROL_TIMEOUT:?}")))?
            .ok_or_else(closed)?;
        if answer.header.request_id != 0 || answer.header.opcode != REGISTER {
            return Err(handshake(format!(
                "unexpected first frame {:?}",
                answer.header
            )));
        }
        let reg: RegisterReply = match answer.header.kind {
            Kind::Reply => answer
                .decode_payload()
                .map_err(|e| handshake(e.to_string()))?,
            Kind::Error => {
                let error = decode_remote_error(&answer.payload);
                return Err(ClientError::Register {
                    name: name.to_owned(),
                    error,
                });
            }
            other => return Err(handshake(format!("answer of kind {other:?}"))),
        };
        // Registered: the Client's Inner owns the sending side from here on
        // (and closes a stream link when the last handle is dropped). On the
        // error returns above, dropping `sender` closed the link.
        sender.close_on_drop = false;
        drop(sender);
        let (shutdown, _) = watch::channel(false);
        let (closed, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            name: name.to_owned(),
            pnn: reg.pnn,
            service: reg.service,
            outgoing,
            tap,
            pending: Mutex::new(Pending::default()),
            next_id: AtomicU64::new(1),
            shutdown,
            closed,
            shut: AtomicBool::new(false),
            log_hook: Mutex::new(None),
            stats_hook: Mutex::new(None),
            stats_base: Mutex::new(Vec::new()),
            counters: Counters::default(),
        });
        let (user_tx, user_rx) = mpsc::unbounded_channel();
        let budget = Arc::new(tokio::sync::Semaphore::new(INCOMING_BUDGET));
        tokio::spawn(dispatch(
            Arc::downgrade(&inner),
            inner.closed.subscribe(),
            link_rx,
            user_tx,
            Arc::clone(&budget),
        ));
        tracing::debug!(
            service = name,
            pnn = reg.pnn,
            id = reg.service,
            "registered"
        );
        Ok((
            Client { inner },
            Incoming {
                rx: user_rx,
                budget,
            },
        ))
    }

    /// Registers `name` over a byte stream (see [`Link::from_stream`]).
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub async fn from_stream<S>(stream: S, name: &str) -> Result<(Client, Incoming), ClientError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        Client::connect(Link::from_stream(stream), name).await
    }

    /// This node's number.
    pub fn pnn(&self) -> u32 {
        self.inner.pnn
    }

    /// The service id the transport assigned.
    pub fn service(&self) -> u16 {
        self.inner.service
    }

    /// The registered name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// This service's own address.
    pub fn address(&self) -> Address {
        Address::new(self.inner.pnn, self.inner.service)
    }

    fn closed_error(&self) -> ClientError {
        ClientError::Closed {
            service: self.inner.name.clone(),
        }
    }

    async fn send(&self, msg: Message) -> Result<(), ClientError> {
        if msg.payload.len() > MAX_PAYLOAD {
            // Refused here: on a stream it would close the whole connection.
            return Err(ClientError::Payload {
                peer: msg.header.dst,
                opcode: msg.header.opcode,
                source: PayloadError::TooLarge {
                    type_name: "raw payload",
                    length: msg.payload.len(),
                    max: MAX_PAYLOAD,
                },
            });
        }
        self.inner.send(msg).await.map_err(|()| self.closed_error())
    }

    fn check_payload(&self, dst: Address, opcode: u32, payload: &[u8]) -> Result<(), ClientError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(ClientError::Payload {
                peer: dst,
                opcode,
                source: PayloadError::TooLarge {
                    type_name: "raw payload",
                    length: payload.len(),
                    max: MAX_PAYLOAD,
                },
            });
        }
        Ok(())
    }

    fn event_header(&self, dst: Address, opcode: u32) -> HeaderRepr {
        HeaderRepr {
            kind: Kind::Event,
            src: self.address(),
            dst,
            request_id: 0,
            opcode,
        }
    }

    /// Sends an event whose payload is already encoded, copying `payload`
    /// into the link's write queue: without waiting, and on a stream link
    /// without allocating (the queue's buffer is reused). For senders that
    /// must not block and can lose a frame (heartbeats).
    ///
    /// # Errors
    /// [`ClientError::QueueFull`] when the queue is over its limit (or the
    /// in-process router's channel is full), [`ClientError::Closed`],
    /// [`ClientError::Payload`] over [`MAX_PAYLOAD`].
    pub fn try_event_bytes(
        &self,
        dst: Address,
        opcode: u32,
        payload: &[u8],
    ) -> Result<(), ClientError> {
        self.check_payload(dst, opcode, payload)?;
        let header = self.event_header(dst, opcode);
        let full = || ClientError::QueueFull {
            service: self.inner.name.clone(),
        };
        match &self.inner.outgoing {
            Out::Stream(q) => q.try_push(&header, payload).map_err(|e| match e {
                QueueError::Full => full(),
                QueueError::Closed => self.closed_error(),
            })?,
            Out::Channel(_) if self.inner.is_shut() => return Err(self.closed_error()),
            Out::Channel(tx) => {
                tx.try_send(Message::new(header, payload.to_vec()))
                    .map_err(|e| match e {
                        mpsc::error::TrySendError::Full(_) => full(),
                        mpsc::error::TrySendError::Closed(_) => self.closed_error(),
                    })?;
            }
        }
        bump(&self.inner.counters.events_sent);
        Ok(())
    }

    /// Sends an event whose payload is already encoded, waiting for room in
    /// the write queue; on a stream link it allocates nothing.
    ///
    /// # Errors
    /// [`ClientError::Closed`], [`ClientError::Payload`] over
    /// [`MAX_PAYLOAD`].
    pub async fn event_bytes(
        &self,
        dst: Address,
        opcode: u32,
        payload: &[u8],
    ) -> Result<(), ClientError> {
        self.check_payload(dst, opcode, payload)?;
        let header = self.event_header(dst, opcode);
        match &self.inner.outgoing {
            Out::Stream(q) => q
                .push(&header, payload)
                .await
                .map_err(|_| self.closed_error())?,
            Out::Channel(_) if self.inner.is_shut() => return Err(self.closed_error()),
            Out::Channel(tx) => tx
                .send(Message::new(header, payload.to_vec()))
                .await
                .map_err(|_| self.closed_error())?,
        }
        bump(&self.inner.counters.events_sent);
        Ok(())
    }

    /// Installs `tap` (replacing any earlier one): it sees each frame for
    /// this service before the library copies it, and may take it. See
    /// [`FrameTap`] for what it must and must not do. On a stream link the
    /// frame is borrowed from the read buffer (no allocation); on a channel
    /// link the router's message is borrowed.
    pub fn set_frame_tap(&self, tap: FrameTap) {
        if let Ok(mut slot) = self.inner.tap.0.lock() {
            *slot = Some(tap);
        }
    }

    /// Removes the frame tap.
    pub fn clear_frame_tap(&self) {
        if let Ok(mut slot) = self.inner.tap.0.lock() {
            *slot = None;
        }
    }

    /// Sends a request and waits for its typed reply.
    ///
    /// To `ALL_NODES` the first answer wins (later ones are counted as late).
    ///
    /// # Errors
    /// [`ClientError::Timeout`], [`ClientError::Closed`],
    /// [`ClientError::Remote`] for an Error answer, [`ClientError::Payload`]
    /// when the request cannot be encoded or the reply decoded as `Resp`.
    pub async fn request<Req, Resp>(
        &self,
        dst: Address,
        opcode: u32,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, ClientError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let payload = encode_payload(req).map_err(|source| ClientError::Payload {
            peer: dst,
            opcode,
            source,
        })?;
        let reply = self.request_raw(dst, opcode, payload, timeout).await?;
        decode_payload(&reply.payload).map_err(|source| ClientError::Payload {
            peer: reply.header.src,
            opcode,
            source,
        })
    }

    /// Sends the same request to several destinations at once (e.g. every
    /// connected node from `LIST_PEERS`) and waits for every answer or
    /// timeout; results come back in the order of `dsts`.
    ///
    /// # Errors
    /// [`ClientError::Payload`] if the request cannot be encoded; per
    /// destination, as [`Client::request`].
    pub async fn request_each<Req, Resp>(
        &self,
        dsts: &[Address],
        opcode: u32,
        req: &Req,
        timeout: Duration,
    ) -> Result<Vec<(Address, Result<Resp, ClientError>)>, ClientError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let payload = encode_payload(req).map_err(|source| ClientError::Payload {
            peer: dsts.first().copied().unwrap_or(Address::local(TRANSPORT)),
            opcode,
            source,
        })?;
        let calls = dsts.iter().map(|&dst| {
            let payload = payload.clone();
            async move {
                let result = self
                    .request_raw(dst, opcode, payload, timeout)
                    .await
                    .and_then(|reply| {
                        decode_payload(&reply.payload).map_err(|source| ClientError::Payload {
                            peer: reply.header.src,
                            opcode,
                            source,
                        })
                    });
                (dst, result)
            }
        });
        Ok(futures::future::join_all(calls).await)
    }

    /// Sends a request with an encoded payload; returns the Reply message.
    ///
    /// # Errors
    /// As [`Client::request`], without the decoding.
    pub async fn request_raw(
        &self,
        dst: Address,
        opcode: u32,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Message, ClientError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.inner.pending.lock().map_err(|_| self.closed_error())?;
            if p.closed {
                return Err(self.closed_error());
            }
            p.waiting.insert(id, Waiter { dst, tx });
        }
        let _guard = PendingGuard {
            inner: &self.inner,
            id,
        };
        let header = HeaderRepr {
            kind: Kind::Request,
            src: self.address(),
            dst,
            request_id: id,
            opcode,
        };
        let answer = tokio::time::timeout(timeout, async {
            self.send(Message::new(header, payload)).await?;
            bump(&self.inner.counters.requests_sent);
            rx.await.map_err(|_| self.closed_error())
        })
        .await
        .map_err(|_| {
            bump(&self.inner.counters.timeouts);
            ClientError::Timeout {
                dst,
                opcode,
                after: timeout,
            }
        })??;
        match answer.header.kind {
            Kind::Error => Err(ClientError::Remote {
                dst,
                from: answer.header.src,
                opcode,
                error: decode_remote_error(&answer.payload),
            }),
            _ => Ok(answer),
        }
    }

    /// Sends a one-way event (to a service, or to `(pnn, BROADCAST_SERVICE)`
    /// for the subscribers of `opcode`).
    ///
    /// # Errors
    /// [`ClientError::Payload`], [`ClientError::Closed`].
    pub async fn event<T: Serialize + ?Sized>(
        &self,
        dst: Address,
        opcode: u32,
        payload: &T,
    ) -> Result<(), ClientError> {
        let payload = encode_payload(payload).map_err(|source| ClientError::Payload {
            peer: dst,
            opcode,
            source,
        })?;
        self.event_raw(dst, opcode, payload).await
    }

    /// Sends an event with an encoded payload.
    ///
    /// # Errors
    /// [`ClientError::Closed`].
    pub async fn event_raw(
        &self,
        dst: Address,
        opcode: u32,
        payload: Vec<u8>,
    ) -> Result<(), ClientError> {
        let header = self.event_header(dst, opcode);
        self.send(Message::new(header, payload)).await?;
        bump(&self.inner.counters.events_sent);
        Ok(())
    }

    /// Answers `request` with `resp`.
    ///
    /// # Errors
    /// [`ClientError::Payload`], [`ClientError::Closed`].
    pub async fn reply<T: Serialize + ?Sized>(
        &self,
        request: &Message,
        resp: &T,
    ) -> Result<(), ClientError> {
        let payload = encode_payload(resp).map_err(|source| ClientError::Payload {
            peer: request.header.src,
            opcode: request.header.opcode,
            source,
        })?;
        self.reply_raw(request, Ok(payload)).await
    }

    /// Answers `request` with an error.
    ///
    /// # Errors
    /// [`ClientError::Closed`].
    pub async fn reply_error(
        &self,
        request: &Message,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Result<(), ClientError> {
        self.reply_raw(request, Err(RemoteError::new(code, message)))
            .await
    }

    /// Answers `request` with an encoded payload or an error.
    ///
    /// # Errors
    /// [`ClientError::Closed`].
    pub async fn reply_raw(
        &self,
        request: &Message,
        result: Result<Vec<u8>, RemoteError>,
    ) -> Result<(), ClientError> {
        let mut msg = controls::answer_message(&request.header, result);
        msg.header.src = self.address();
        self.send(msg).await?;
        bump(&self.inner.counters.replies_sent);
        Ok(())
    }

    /// Receives broadcast events with `opcode` (sent to
    /// `(pnn, BROADCAST_SERVICE)`).
    ///
    /// # Errors
    /// As [`Client::request`].
    pub async fn subscribe(&self, opcode: u32) -> Result<(), ClientError> {
        self.request(
            Address::local(TRANSPORT),
            SUBSCRIBE,
            &SubscribeRequest { opcode },
            CONTROL_TIMEOUT,
        )
        .await
    }

    /// Stops receiving broadcast events with `opcode`.
    ///
    /// # Errors
    /// As [`Client::request`].
    pub async fn unsubscribe(&self, opcode: u32) -> Result<(), ClientError> {
        self.request(
            Address::local(TRANSPORT),
            UNSUBSCRIBE,
            &SubscribeRequest { opcode },
            CONTROL_TIMEOUT,
        )
        .await
    }

    /// Resolves when a `SHUTDOWN` control has been received (or the client
    /// is gone). Call before or after: a shutdown already requested resolves
    /// at once.
    pub fn shutdown_requested(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.shutdown.subscribe();
        async move {
            let _ = rx.wait_for(|requested| *requested).await;
        }
    }

    /// Resolves when the connection to the transport has closed (transportd
    /// went away, or sent garbage). A daemon usually exits or reconnects then.
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.closed.subscribe();
        async move {
            let _ = rx.wait_for(|closed| *closed).await;
        }
    }

    /// Closes the connection now, for every handle of this client (clones
    /// held by other tasks included): pending requests fail with
    /// [`ClientError::Closed`], every later send fails, and the transport
    /// ends the registration (on a stream link once the writer has sent
    /// what was queued and shut the stream down; a channel link's
    /// dispatcher drops its side, which frees the name in the in-process
    /// router). Idempotent.
    pub fn close(&self) {
        self.inner.close();
    }

    /// A guard that [closes](Client::close) this client's connection when
    /// it is dropped, even while other handles exist. A daemon's `run` keeps
    /// one for its whole life, so its registration ends with it — returned,
    /// failed, panicked or dropped — and not when the last task it spawned
    /// lets go of its handle: in masterd's single-process model the daemon
    /// is restarted in the same process within 100 ms, and transportd
    /// refuses a name that is still registered.
    pub fn close_on_drop(&self) -> CloseOnDrop {
        CloseOnDrop(Arc::downgrade(&self.inner))
    }

    /// Is the connection to the transport closed?
    pub fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }

    /// Has a `SHUTDOWN` control been received?
    pub fn is_shutdown_requested(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    /// Installs the hook that answers the `LOG_LEVEL` control.
    pub fn set_log_level_hook<F>(&self, hook: F)
    where
        F: Fn(Option<&str>) -> Result<String, String> + Send + Sync + 'static,
    {
        if let Ok(mut slot) = self.inner.log_hook.lock() {
            *slot = Some(Arc::new(hook));
        }
    }

    /// Installs the hook whose counters the `STATISTICS` control reports
    /// after the client's own (a daemon's refusals, its queues...).
    pub fn set_statistics_hook<F>(&self, hook: F)
    where
        F: Fn() -> Vec<(String, u64)> + Send + Sync + 'static,
    {
        if let Ok(mut slot) = self.inner.stats_hook.lock() {
            *slot = Some(Arc::new(hook));
        }
    }

    /// The client's counters and the statistics hook's (as the
    /// `STATISTICS` control reports them).
    pub fn statistics(&self) -> Statistics {
        self.inner.statistics()
    }
}

impl Inner {
    /// The counters since the service started, before any reset.
    fn raw_statistics(&self) -> Statistics {
        let mut s = self.counters.snapshot();
        let hook = self.stats_hook.lock().ok().and_then(|h| h.clone());
        if let Some(hook) = hook {
            s.counters.extend(hook());
        }
        s
    }

    fn statistics(&self) -> Statistics {
        let raw = self.raw_statistics();
        match self.stats_base.lock() {
            Ok(base) => raw.since(&base),
            Err(_) => raw,
        }
    }

    /// `STATISTICS_RESET`: the counters count from now on.
    fn reset_statistics(&self) {
        let raw = self.raw_statistics();
        if let Ok(mut base) = self.stats_base.lock() {
            *base = raw.counters;
        }
    }
}

fn decode_remote_error(payload: &[u8]) -> RemoteError {
    decode_payload(payload).unwrap_or_else(|err| {
        RemoteError::new(
            ErrorCode::Internal,
            format!("undecodable error payload: {err}"),
        )
    })
}

/// The dispatcher: owns the receiving side of the link.
async fn dispatch(
    weak: Weak<Inner>,
    mut closed: watch::Receiver<bool>,
    mut link_rx: LinkRx,
    user_tx: mpsc::UnboundedSender<Message>,
    budget: Arc<tokio::sync::Semaphore>,
) {
    // A closed stream link ends when the transport closes its side (after
    // reading what was queued); a channel link has nothing to shut down but
    // this receiver, so it is dropped at once.
    let channel = matches!(link_rx, LinkRx::Channel(_));
    loop {
        let next = tokio::select! {
            biased;
            m = link_rx.recv() => m,
            _ = closed.wait_for(|c| *c), if channel => None,
        };
        let Some(msg) = next else { break };
        let Some(inner) = weak.upgrade() else {
            break; // every Client handle is gone
        };
        if let (Out::Channel(_), LinkRx::Channel(_)) = (&inner.outgoing, &link_rx) {
            // A stream link's reader offered the frame already.
            let frame = FrameRef {
                header: msg.header,
                payload: &msg.payload,
            };
            if inner.tap.offer(&frame) {
                continue;
            }
        }
        match msg.header.kind {
            Kind::Reply | Kind::Error => {
                let waiter = inner.pending.lock().ok().and_then(|mut p| {
                    let id = msg.header.request_id;
                    let expected = p.waiting.get(&id).map(|w| w.dst)?;
                    if answers(expected, inner.pnn, msg.header.src, msg.header.kind) {
                        p.waiting.remove(&id).map(|w| w.tx)
                    } else {
                        bump(&inner.counters.mismatched_replies);
                        tracing::debug!(
                            service = inner.name,
                            from = %msg.header.src,
                            %expected,
                            "answer from the wrong sender dropped"
                        );
                        None
                    }
                });
                match waiter {
                    Some(tx) => {
                        let c = &inner.counters;
                        bump(if msg.header.kind == Kind::Error {
                            &c.errors_received
                        } else {
                            &c.replies_received
                        });
                        let _ = tx.send(msg);
                    }
                    None => bump(&inner.counters.late_replies),
                }
            }
            Kind::Request if control::is_common(msg.header.opcode) => {
                answer_control(&inner, msg).await;
            }
            Kind::Request | Kind::Event => {
                bump(&inner.counters.messages_delivered);
                // Wait for room in the service's budget without holding a
                // strong handle (so dropping every Client still closes).
                drop(inner);
                let cost = message_cost(&msg);
                match budget.acquire_many(cost).await {
                    Ok(permit) => permit.forget(),
                    Err(_) => break,
                }
                let Some(inner) = weak.upgrade() else { break };
                if let Err(mpsc::error::SendError(msg)) = user_tx.send(msg) {
                    budget.add_permits(cost as usize);
                    if msg.header.kind == Kind::Request {
                        let err = RemoteError::new(
                            ErrorCode::ShuttingDown,
                            format!("{} no longer reads requests", inner.name),
                        );
                        let mut answer = controls::error_message(&msg.header, &err);
                        answer.header.src = Address::new(inner.pnn, inner.service);
                        let _ = inner.send(answer).await;
                    }
                }
            }
            Kind::Unknown(_) => {}
        }
    }
    // The link is closed: fail pending requests now.
    if let Some(inner) = weak.upgrade() {
        if let Ok(mut p) = inner.pending.lock() {
            p.closed = true;
            p.waiting.clear(); // dropping the senders wakes the requesters
        }
        inner.closed.send_replace(true);
        tracing::debug!(service = inner.name, "transport connection closed");
    }
}

async fn answer_control(inner: &Inner, msg: Message) {
    let answer = {
        let hook = inner.log_hook.lock().ok().and_then(|h| h.clone());
        let stats = || inner.statistics();
        let reset = || inner.reset_statistics();
        let ctx = ControlContext {
            name: &inner.name,
            clients: 0,
            statistics: &stats,
            log_level: hook.as_ref(),
            reset_statistics: Some(&reset),
        };
        controls::answer_common(msg.header.opcode, &msg.payload, &ctx)
    };
    let mut reply = controls::answer_message(&msg.header, answer.result);
    reply.header.src = Address::new(inner.pnn, inner.service);
    bump(&inner.counters.controls_answered);
    let _ = inner.send(reply).await;
    if answer.shutdown {
        inner.shutdown.send_replace(true);
    }
}
