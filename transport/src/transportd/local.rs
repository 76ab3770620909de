//! The Unix socket side: accepts local clients, checks their credentials,
//! registers them and routes their frames.
//!
//! A client that stops reading is disconnected once [`LOCAL_QUEUE_LIMIT`]
//! bytes wait for it ([`MEMBER_QUEUE_LIMIT`] for a group member; its
//! registration ends; it may reconnect). Connections are limited in total
//! ([`MAX_LOCAL_CLIENTS`]), for the group's members together
//! ([`MAX_MEMBER_CLIENTS`]) and per member uid ([`MAX_CLIENTS_PER_UID`]);
//! one over a limit is refused, counted (`clients_over_limit`) and logged
//! (the first 8, then one per 1000). A member's requests are also limited
//! per uid (a burst of [`super::state::MEMBER_BURST`], then
//! [`super::state::MEMBER_RATE`] per second; `requests_throttled`): the
//! frames of a daemon's socket are read in order, and a burst of
//! thousands queued in front of a heartbeat delays it past the lease.
//!
//! A connection's first frame must be a REGISTER request; a well-known
//! service name only from root or transportd's own user. A client (a group
//! member) may then send only what [`super::access`] allows: anything else
//! is refused (a Request gets a `Refused` answer), counted and logged. A
//! frame that is
//! oversized, truncated (EOF mid-frame) or has a bad magic, version, kind,
//! flags or reserved field closes that one connection with a logged reason;
//! other connections are not affected.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};

use crate::proto::{check, Check, ErrorCode, FrameRef, Header, Kind, RemoteError, HEADER_LEN};

use super::access::client_may_send;
use super::buffers::{trim, Direct, Outbox, ReadBuf};
use super::peercred::{peer_credentials, Credentials, Privilege};
use super::state::{register_first, Origin, Run};
use super::Shared;

/// Queue limit of one local client (bytes not yet read by it): root's and
/// the daemons' connections. A joining conntrackd receives the whole
/// cluster's table at once (86 MiB for 10,000,000 connections) and applies
/// it more slowly than the encrypted link delivers it: at 32 MiB it was
/// disconnected in the middle (`bench conntrack --join-only --conns
/// 10000000`). There is no flow control towards a slow local reader yet.
pub const LOCAL_QUEUE_LIMIT: usize = 128 * 1024 * 1024;
const READ_BUF: usize = 64 * 1024;
const KEEP: usize = 4 * 1024 * 1024;

/// Most local connections at once (every uid together). Connections
/// over it are refused (counted: `clients_over_limit`).
pub const MAX_LOCAL_CLIENTS: usize = 1024;
/// Most local connections of the group's members together (every uid
/// other than root and transportd's own): they never take the daemons'
/// places (a daemon that restarts must get back in).
pub const MAX_MEMBER_CLIENTS: usize = 256;
/// Most local connections of one uid that is not root nor transportd's
/// user (a member of the group).
pub const MAX_CLIENTS_PER_UID: usize = 32;
/// Queue limit of a group member's connection: two frames of the largest
/// size (the `ipfailover` command reads its answers; one that does not
/// read holds this much at most, not [`LOCAL_QUEUE_LIMIT`]).
pub const MEMBER_QUEUE_LIMIT: usize = 2 * (crate::proto::MAX_PAYLOAD + HEADER_LEN);
/// Refused connections answered at once (the reason is written back to
/// the first request); more are closed at once without an answer.
pub const MAX_REFUSING: usize = 16;
/// How long a refused connection may take to send its first request
/// before it is closed (it holds no client place meanwhile).
pub const REFUSE_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// Accepts local clients until shutdown, then waits for their connections
/// to end (each ends on the stop signal).
///
/// Credentials and the connection limits are checked here, before a
/// connection gets a task: a refused connection holds no client place
/// ([`MAX_LOCAL_CLIENTS`], [`MAX_CLIENTS_PER_UID`]); at most
/// [`MAX_REFUSING`] refused ones wait (at most [`REFUSE_WAIT`]) to be told
/// why, the others are closed at once.
///
/// The connections are tasks of a [`JoinSet`](tokio::task::JoinSet) owned by
/// this future, so they cannot outlive it: when transportd runs as a task
/// (masterd's single-process model) and that task is aborted, no
/// registration of the stopped transportd stays behind.
pub async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    let mut clients = tokio::task::JoinSet::new();
    let mut refusing = tokio::task::JoinSet::new();
    let mut per_uid: HashMap<u32, usize> = HashMap::new();
    let mut over_limit: u64 = 0;
    loop {
        tokio::select! {
            () = super::stopped(&mut stop) => break,
            Some(done) = clients.join_next(), if !clients.is_empty() => {
                if let Ok(Some(uid)) = done {
                    if let Some(n) = per_uid.get_mut(&uid) {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            per_uid.remove(&uid);
                        }
                    }
                }
            }
            Some(_) = refusing.join_next(), if !refusing.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let cred = match peer_credentials(&stream) {
                        Ok(c) => c,
                        Err(err) => {
                            tracing::warn!(%err, "cannot read SO_PEERCRED; closing");
                            continue;
                        }
                    };
                    let checked = match shared.policy.check(&cred) {
                        Err(reason) => {
                            shared.state().counters.clients_refused += 1;
                            tracing::warn!(uid = cred.uid, gid = cred.gid, pid = ?cred.pid, %reason, "local client refused");
                            Err(reason)
                        }
                        Ok(privilege) => match admit(privilege, cred.uid, clients.len(), &per_uid) {
                            Ok(()) => Ok(privilege),
                            Err(reason) => {
                                shared.state().counters.clients_over_limit += 1;
                                over_limit += 1;
                                if crate::limit::should_log(over_limit) {
                                    tracing::warn!(
                                        uid = cred.uid,
                                        pid = ?cred.pid,
                                        refused = over_limit,
                                        %reason,
                                        "local connection over the limit refused"
                                    );
                                }
                                Err(reason)
                            }
                        },
                    };
                    match checked {
                        Ok(privilege) => {
                            let uid = (privilege != Privilege::Daemon).then_some(cred.uid);
                            if let Some(uid) = uid {
                                *per_uid.entry(uid).or_insert(0) += 1;
                            }
                            let shared = Arc::clone(&shared);
                            clients.spawn(async move {
                                client(stream, shared, cred, privilege).await;
                                uid
                            });
                        }
                        // Told why while few wait; else closed at once.
                        Err(reason) if refusing.len() < MAX_REFUSING => {
                            refusing.spawn(async move { refuse(stream, &reason).await });
                        }
                        Err(_) => drop(stream),
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, "accept on the local socket failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
    drop(listener);
    refusing.abort_all();
    while clients.join_next().await.is_some() {}
}

/// May one more connection of `uid` with `privilege` come in, with
/// `clients` connections open and `per_uid` of each group member's?
fn admit(
    privilege: Privilege,
    uid: u32,
    clients: usize,
    per_uid: &HashMap<u32, usize>,
) -> Result<(), String> {
    if clients >= MAX_LOCAL_CLIENTS {
        return Err(format!(
            "too many local connections: {MAX_LOCAL_CLIENTS} are open, transportd's limit"
        ));
    }
    if privilege == Privilege::Daemon {
        return Ok(());
    }
    let members: usize = per_uid.values().sum();
    if members >= MAX_MEMBER_CLIENTS {
        return Err(format!(
            "too many local connections: {members} of users other than root are open, \
             the limit for them"
        ));
    }
    if per_uid.get(&uid).copied().unwrap_or(0) >= MAX_CLIENTS_PER_UID {
        return Err(format!(
            "too many local connections of uid {uid}: {MAX_CLIENTS_PER_UID} are open, \
             the limit per user"
        ));
    }
    Ok(())
}

async fn client(stream: UnixStream, shared: Arc<Shared>, cred: Credentials, privilege: Privilege) {
    let conn = shared.next_id.fetch_add(1, Ordering::Relaxed);
    shared.state().client_connected();
    let (mut rd, wr) = stream.into_split();
    let wr = Arc::new(wr);
    let queue_limit = if privilege == Privilege::Daemon {
        LOCAL_QUEUE_LIMIT
    } else {
        MEMBER_QUEUE_LIMIT
    };
    let outbox = Arc::new(Outbox::with_direct(
        queue_limit,
        READ_BUF,
        Direct::Unix(Arc::clone(&wr)),
    ));
    let mut service = None;
    let mut stop = shared.stop.subscribe();
    let result = {
        let reader = read_loop(
            &mut rd,
            &shared,
            Peer {
                conn,
                cred,
                privilege,
            },
            &outbox,
            &mut service,
        );
        let writer = async {
            let mut spare = Vec::with_capacity(READ_BUF);
            while outbox.take(&mut spare).await {
                if let Err(err) = write_all(&wr, &spare).await {
                    return Err(format!("write: {err}"));
                }
                trim(&mut spare, KEEP);
            }
            Err("queue closed (client too slow or replaced)".to_owned())
        };
        tokio::select! {
            r = reader => r,
            r = writer => r,
            () = outbox.wait_closed() => Err(format!(
                "the client does not read: over {queue_limit} bytes queued"
            )),
            // Also a stop requested before this connection subscribed.
            () = super::stopped(&mut stop) => Ok(()),
        }
    };
    outbox.close();
    if service.is_none() {
        // A refused registration: its Error answer is queued; write it (or
        // give up after a second) so the client learns why.
        let flush = async {
            let mut spare = Vec::new();
            while outbox.take(&mut spare).await {
                if write_all(&wr, &spare).await.is_err() {
                    return;
                }
                spare.clear();
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), flush).await;
    }
    {
        let mut st = shared.state();
        st.client_disconnected(conn, service);
        if result.is_err() {
            st.counters.bad_frames += 1;
        }
    }
    match result {
        Ok(()) => tracing::debug!(conn, ?service, "local client left"),
        Err(reason) => {
            tracing::warn!(conn, ?service, uid = cred.uid, pid = ?cred.pid, %reason, "local client closed")
        }
    }
}

/// Writes all of `buf` through a shared write half (the routing task may
/// also write to it directly, see `Outbox::flush`).
async fn write_all(w: &OwnedWriteHalf, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        w.writable().await?;
        match w.try_write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Who is at the other end of a local connection.
#[derive(Debug, Clone, Copy)]
struct Peer {
    conn: u64,
    cred: Credentials,
    privilege: Privilege,
}

/// How many refused frames of one connection are logged one by one; after
/// that, one line per [`LOG_REFUSED_EVERY`] (a flood must not flood the
/// log).
const LOG_REFUSED_FIRST: u64 = 8;
const LOG_REFUSED_EVERY: u64 = 1000;

/// Reads frames until EOF (`Ok`) or a bad frame / I/O error (`Err(reason)`).
async fn read_loop(
    rd: &mut tokio::net::unix::OwnedReadHalf,
    shared: &Shared,
    peer: Peer,
    outbox: &Arc<Outbox>,
    service: &mut Option<u16>,
) -> Result<(), String> {
    let conn = peer.conn;
    let mut refused: u64 = 0;
    let mut buf = ReadBuf::new(READ_BUF);
    let mut need = HEADER_LEN;
    // A flooding client must not hold the thread (see `turns`): what the
    // last batch routed counts before the next read.
    let mut turn = super::turns::Turn::default();
    let mut last = (0, 0);
    loop {
        turn.routed(last.0, last.1).await;
        buf.reserve(need, READ_BUF / 4);
        let n = buf.fill(rd).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return if buf.data().is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "truncated frame: connection closed with {} of {need} bytes",
                    buf.data().len()
                ))
            };
        }
        let mut st = shared.state();
        // Frames are routed in place and consumed after the batch: runs of
        // frames for one destination are queued together.
        let mut run = Run::default();
        let (mut at, mut frames) = (0, 0);
        let data = buf.data_mut();
        let outcome = loop {
            match check(&data[at..]) {
                Err(err) => break Err(format!("bad frame: {err}")),
                Ok(Check::Incomplete { need: more }) => {
                    need = more;
                    break Ok(());
                }
                Ok(Check::Complete { frame_len }) => {
                    let frame = &mut data[at..at + frame_len];
                    match *service {
                        Some(id) => match allowed(peer.privilege, frame)
                            .and_then(|()| throttle(&mut st, peer.privilege, peer.cred.uid, frame))
                        {
                            Ok(()) => match st.route_fast(Origin::Local(id), frame) {
                                Some(dest) => run.add(&mut st, data, dest, at, frame_len),
                                None => {
                                    run.finish(&mut st, data);
                                    st.route(Origin::Local(id), &mut data[at..at + frame_len]);
                                }
                            },
                            Err(reason) => {
                                run.finish(&mut st, data);
                                let frame = &mut data[at..at + frame_len];
                                refused += 1;
                                if refused <= LOG_REFUSED_FIRST || refused % LOG_REFUSED_EVERY == 0
                                {
                                    tracing::warn!(
                                        conn,
                                        service = id,
                                        uid = peer.cred.uid,
                                        pid = ?peer.cred.pid,
                                        refused,
                                        %reason,
                                        "frame from a local client refused"
                                    );
                                }
                                st.refuse_local(id, frame, &reason);
                            }
                        },
                        None => {
                            match register_first(&mut st, frame, conn, outbox, peer.privilege) {
                                Ok(id) => {
                                    tracing::debug!(conn, service = id, "local client registered");
                                    *service = Some(id);
                                }
                                Err(reason) => {
                                    tracing::warn!(
                                        conn,
                                        uid = peer.cred.uid,
                                        pid = ?peer.cred.pid,
                                        %reason,
                                        "local registration refused"
                                    );
                                    break Err(reason);
                                }
                            }
                        }
                    }
                    at += frame_len;
                    frames += 1;
                }
            }
        };
        last = (frames, at);
        run.finish(&mut st, data);
        buf.consume(at);
        // Deliver what this batch routed before anything else.
        st.flush();
        if st.take_shutdown() {
            shared.request_stop();
        }
        outcome?;
    }
}

/// May a client with `privilege` send `frame` (a whole checked frame)?
fn allowed(privilege: Privilege, frame: &[u8]) -> Result<(), String> {
    if privilege == Privilege::Daemon {
        return Ok(());
    }
    let header = Header::new_checked(frame).map_err(|e| e.to_string())?;
    client_may_send(header.kind(), header.dst_service(), header.opcode())
}

/// A group member's request over its uid's budget
/// ([`super::state::MEMBER_BURST`], [`super::state::MEMBER_RATE`]) is
/// refused (counted: `requests_throttled`).
fn throttle(
    st: &mut super::state::RoutingState,
    privilege: Privilege,
    uid: u32,
    frame: &[u8],
) -> Result<(), String> {
    if privilege == Privilege::Daemon {
        return Ok(());
    }
    let request = Header::new_checked(frame).is_ok_and(|h| h.kind() == Kind::Request);
    if !request || st.member_may_request(uid, std::time::Instant::now()) {
        return Ok(());
    }
    Err(format!(
        "uid {uid} sends requests faster than {} per second (after a burst of {}): refused; try again",
        super::state::MEMBER_RATE,
        super::state::MEMBER_BURST
    ))
}

/// Answers the first request of a refused client with a `Refused` error
/// (so its `connect` fails with a clear reason), then closes.
async fn refuse(mut stream: UnixStream, reason: &str) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    let mut have = 0;
    let read = async {
        while have < buf.len() {
            match stream.read(&mut buf[have..]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => have += n,
            }
            if let Ok(Check::Complete { .. }) = check(&buf[..have]) {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(REFUSE_WAIT, read).await;
    if let Ok((req, _)) = FrameRef::decode_prefix(&buf[..have]) {
        if req.header.kind == Kind::Request {
            let err = RemoteError::new(ErrorCode::Refused, format!("transportd: {reason}"));
            if let Ok(bytes) = crate::controls::error_message(&req.header, &err).to_bytes() {
                let _ = stream.write_all(&bytes).await;
            }
        }
    }
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_limits_per_uid_for_members_and_in_total() {
        let mut per_uid = HashMap::new();
        assert!(admit(Privilege::Client, 64_000, 0, &per_uid).is_ok());
        per_uid.insert(64_000, MAX_CLIENTS_PER_UID);
        let e = admit(Privilege::Client, 64_000, 40, &per_uid).unwrap_err();
        assert!(e.contains("of uid 64000"), "{e}");
        assert!(admit(Privilege::Client, 64_001, 40, &per_uid).is_ok());
        assert!(
            admit(Privilege::Daemon, 0, 40, &per_uid).is_ok(),
            "root is not a member"
        );
        for uid in 64_001..64_008 {
            per_uid.insert(uid, MAX_CLIENTS_PER_UID);
        }
        let e = admit(Privilege::Client, 64_100, 300, &per_uid).unwrap_err();
        assert!(e.contains("users other than root"), "{e}");
        assert!(
            admit(Privilege::Daemon, 0, 300, &per_uid).is_ok(),
            "the daemons' places"
        );
        let e = admit(Privilege::Daemon, 0, MAX_LOCAL_CLIENTS, &per_uid).unwrap_err();
        assert!(e.contains("transportd's limit"), "{e}");
    }
}
