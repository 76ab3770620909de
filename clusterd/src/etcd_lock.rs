//! The native etcd lock: `cluster_lock = "etcd://HOST:PORT[,HOST:PORT...]/PREFIX[?OPTIONS]"`,
//! through etcd's v3 API (the `etcd-client` crate: gRPC, TLS by rustls).
//!
//! One key per cluster, `PREFIX/lock`, whose value is the holder's pnn and
//! which is attached to the holder's lease:
//!
//! * **Take.** Read the key. Free: grant a lease of [`Params::ttl`] and, in
//!   one transaction, "the key's create revision is 0 → put it with the
//!   lease". The transaction failing (another node got there first) revokes
//!   the lease at once, so a contended attempt leaves nothing behind. Held
//!   by another node: watch the key and try again as soon as it is deleted
//!   (its holder released it, or etcd expired its lease), so a survivor
//!   takes the lock within the lease TTL plus etcd's expiry check, not at
//!   the next retry; the key is read again every [`CONTENDED_RECHECK`] in
//!   case the watch stopped delivering. Held under this node's own pnn (an
//!   earlier clusterd here that died or lost its connection): revoke that
//!   lease and take it.
//! * **Hold.** A keep-alive every TTL/3. The holder treats the lock as lost
//!   [`Params::safety`] before the lease could end on etcd's side: at
//!   `s + TTL − safety` on its own monotonic clock, `s` being when it *sent*
//!   the newest keep-alive that etcd confirmed (etcd restarts the lease's
//!   TTL when it receives it, so no earlier). A key deleted or replaced
//!   under it, or etcd answering that the lease is gone, is lost at once;
//!   a broken stream is opened again, through the next member if need be,
//!   until that deadline.
//!
//! One member at a time ([`connect`]): the first that answers, the next
//! after an error.
//! * **Release** (and after a loss): revoke the lease, which deletes the
//!   key.
//!
//! The lock runs on a thread of its own with its own tokio runtime
//! ([`spawn`]), so TLS handshakes and gRPC work never delay clusterd's
//! heartbeats, and its deadline is not delayed by them either.

use std::fmt;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, Identity, PutOptions,
    TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::membership::Timing;

/// The etcd client crate, for tests and tools that read the lock's key.
pub use etcd_client as client;

/// The URL scheme of the native etcd lock.
pub const SCHEME: &str = "etcd://";

/// The settings a `cluster_lock = "etcd://..."` URL may carry after `?`.
pub const OPTIONS: &[&str] = &["ca", "cert", "key", "user", "password_file", "ttl"];

/// The longest lease TTL the `ttl` option accepts, in seconds.
pub const MAX_TTL: u64 = 3600;

/// One request to etcd (connect, read, grant, transaction, revoke) that
/// has not answered within this long has failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// HTTP/2 pings on an idle connection (a contended attempt's watch): not
/// under etcd's `--grpc-keepalive-min-time` (5 s by default), or etcd
/// closes the connection ("too many pings"). The lease's own keep-alives
/// and deadline do not depend on them.
pub const HTTP2_PING: Duration = Duration::from_secs(10);

/// A contended attempt that saw no change of the key for this long reads
/// it again (a watch that silently stopped delivering cannot stall it).
pub const CONTENDED_RECHECK: Duration = Duration::from_secs(10);

/// A parsed `etcd://` lock setting. The files it names are read when it is
/// parsed, so a missing certificate is reported at start-up.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdSpec {
    /// The setting as written.
    pub url: String,
    /// `http://HOST:PORT` (or `https://` with TLS), one per member.
    pub endpoints: Vec<String>,
    /// The lock key: the URL's path followed by `/lock`.
    pub key: String,
    /// PEM of the CA that signed the members' certificates (TLS on).
    pub ca: Option<Vec<u8>>,
    /// PEM of the client certificate and its key (TLS client auth).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// etcd user and password (the password read from `password_file`).
    pub user: Option<(String, String)>,
    /// The lease TTL in seconds, when set by the `ttl` option.
    pub ttl: Option<u64>,
}

impl fmt::Debug for EtcdSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdSpec")
            .field("url", &self.url)
            .field("endpoints", &self.endpoints)
            .field("key", &self.key)
            .field("tls", &self.ca.is_some())
            .field("client_cert", &self.identity.is_some())
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .field("ttl", &self.ttl)
            .finish()
    }
}

fn read_file(what: &str, path: &str) -> Result<Vec<u8>, String> {
    if path.is_empty() {
        return Err(format!("option {what}: empty file name"));
    }
    std::fs::read(path).map_err(|e| format!("option {what}: cannot read {path}: {e}"))
}

fn check_host_port(hp: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("member {hp:?}: {why}; expected HOST:PORT"));
    let Some((host, port)) = hp.rsplit_once(':') else {
        return bad("no port");
    };
    if host.is_empty() {
        return bad("no host");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return bad("the port is not a number from 1 to 65535"),
    }
    if let Some(inner) = host.strip_prefix('[') {
        let Some(inner) = inner.strip_suffix(']') else {
            return bad("unclosed [");
        };
        if inner.parse::<std::net::Ipv6Addr>().is_err() {
            return bad("not an IPv6 address between [ ]");
        }
        return Ok(());
    }
    if host.contains(':') {
        return bad("an IPv6 address must be written [ADDRESS]");
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    {
        return bad("the host has a character that is not allowed");
    }
    Ok(())
}

impl EtcdSpec {
    /// Parses `etcd://HOST:PORT[,HOST:PORT...]/PREFIX[?OPTIONS]`; OPTIONS
    /// are `NAME=VALUE` joined by `&`, NAME one of [`OPTIONS`]. The
    /// returned error is the reason alone (the caller names the setting).
    ///
    /// # Errors
    ///
    /// A sentence saying what is wrong: no member, a member that is not
    /// HOST:PORT, no prefix, an unknown or repeated option, a file that
    /// cannot be read, `cert` without `key`, and so on.
    pub fn parse(value: &str) -> Result<Self, String> {
        let Some(rest) = value.strip_prefix(SCHEME) else {
            return Err(format!("does not start with {SCHEME}"));
        };
        let (main, query) = match rest.split_once('?') {
            Some((m, q)) => (m, Some(q)),
            None => (rest, None),
        };
        let Some((members, path)) = main.split_once('/') else {
            return Err("no prefix: write etcd://HOST:PORT/PREFIX, e.g. \
                        etcd://192.0.2.1:2379/ipfailover/cluster1"
                .into());
        };
        if members.contains('@') {
            return Err("no user in the URL: use the options user=NAME&password_file=FILE".into());
        }
        if members.is_empty() {
            return Err("no etcd member: write etcd://HOST:PORT[,HOST:PORT...]/PREFIX".into());
        }
        for m in members.split(',') {
            check_host_port(m)?;
        }
        let path = path.trim_end_matches('/');
        if path.is_empty() {
            return Err("empty prefix: write etcd://HOST:PORT/PREFIX".into());
        }
        if path.split('/').any(str::is_empty) {
            return Err(format!("prefix /{path} has an empty part (//)"));
        }
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("prefix /{path} has a blank or control character"));
        }
        let mut opts: Vec<(&str, &str)> = Vec::new();
        if let Some(q) = query {
            for pair in q.split('&') {
                let Some((k, v)) = pair.split_once('=') else {
                    return Err(format!("option {pair:?}: expected NAME=VALUE"));
                };
                if !OPTIONS.contains(&k) {
                    return Err(format!(
                        "unknown option {k:?}; known: {}",
                        OPTIONS.join(", ")
                    ));
                }
                if opts.iter().any(|(o, _)| *o == k) {
                    return Err(format!("option {k} given twice"));
                }
                opts.push((k, v));
            }
        }
        let get = |k: &str| opts.iter().find(|(o, _)| *o == k).map(|(_, v)| *v);
        let ca = get("ca").map(|p| read_file("ca", p)).transpose()?;
        let identity = match (get("cert"), get("key")) {
            (None, None) => None,
            (Some(c), Some(k)) => Some((read_file("cert", c)?, read_file("key", k)?)),
            (Some(_), None) => return Err("option cert needs option key (its private key)".into()),
            (None, Some(_)) => return Err("option key needs option cert".into()),
        };
        if identity.is_some() && ca.is_none() {
            return Err(
                "options cert and key need option ca (the CA that signed the etcd members' \
                 certificates): TLS is on only with ca"
                    .into(),
            );
        }
        let user = match (get("user"), get("password_file")) {
            (None, None) => None,
            (Some(u), Some(p)) => {
                if u.is_empty() {
                    return Err("option user: empty name".into());
                }
                let pw = read_file("password_file", p)?;
                let pw = String::from_utf8(pw)
                    .map_err(|_| format!("option password_file: {p} is not UTF-8"))?;
                let pw = pw.trim_end_matches(['\n', '\r']).to_string();
                if pw.is_empty() {
                    return Err(format!("option password_file: {p} is empty"));
                }
                Some((u.to_string(), pw))
            }
            (Some(_), None) => {
                return Err(
                    "option user needs option password_file (a file holding the \
                            password)"
                        .into(),
                )
            }
            (None, Some(_)) => return Err("option password_file needs option user".into()),
        };
        let ttl = match get("ttl") {
            None => None,
            Some(t) => match t.parse::<u64>() {
                Ok(n) if (1..=MAX_TTL).contains(&n) => Some(n),
                _ => {
                    return Err(format!(
                        "option ttl={t}: expected whole seconds from 1 to {MAX_TTL}"
                    ))
                }
            },
        };
        let scheme = if ca.is_some() { "https" } else { "http" };
        Ok(Self {
            url: value.to_string(),
            endpoints: members
                .split(',')
                .map(|m| format!("{scheme}://{m}"))
                .collect(),
            key: format!("/{path}/lock"),
            ca,
            identity,
            user,
            ttl,
        })
    }
}

/// The timing of one node's etcd lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// This node's pnn: the key's value.
    pub pnn: u32,
    /// The lease TTL asked for, in seconds (etcd may raise it to its
    /// minimum; the TTL it grants is the one used).
    pub ttl: u64,
    /// How long before the lease could end on etcd's side the holder
    /// treats the lock as lost.
    pub safety: Duration,
}

impl Params {
    /// The lease TTL from clusterd's timing: the largest whole number of
    /// seconds not over `2 (lease + margin) + interval` (the time a leader
    /// failover with a lock takes anyway, docs/clusterd.md), at least 1 s,
    /// unless the URL's `ttl` option sets it. The safety margin is
    /// `max(margin, 100 ms)`, at most a third of the TTL.
    #[must_use]
    pub fn new(spec: &EtcdSpec, timing: &Timing, pnn: u32) -> Self {
        let bound = timing
            .lease
            .saturating_add(timing.margin)
            .saturating_mul(2)
            .saturating_add(timing.interval);
        let ttl = spec
            .ttl
            .unwrap_or_else(|| bound.as_secs().clamp(1, MAX_TTL));
        let safety = timing
            .margin
            .max(Duration::from_millis(100))
            .min(Duration::from_secs(ttl) / 3);
        Self { pnn, ttl, safety }
    }
}

/// What the lock thread reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The lock is held (the lease TTL etcd granted, in seconds).
    Taken {
        /// The granted TTL.
        ttl: i64,
    },
    /// The attempt failed (etcd unreachable, refused, ...): why.
    NotTaken(String),
    /// The held lock is lost: why.
    Lost(String),
}

/// Runs one lock attempt on a thread of its own: it takes the lock
/// (waiting while another node holds it), holds it, and releases it when
/// `stop` fires or is dropped. Reports on `events`; the thread ends after
/// [`Event::NotTaken`], after [`Event::Lost`], or on release, having revoked
/// its lease. The returned receiver resolves when the thread is done.
///
/// # Errors
///
/// The thread or its runtime could not be made.
pub fn spawn(
    spec: EtcdSpec,
    params: Params,
    events: mpsc::UnboundedSender<Event>,
    stop: oneshot::Receiver<()>,
) -> std::io::Result<oneshot::Receiver<()>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("etcd-lock".into())
        .spawn(move || {
            rt.block_on(run(spec, params, events, stop));
            let _ = done_tx.send(());
        })?;
    Ok(done_rx)
}

fn err_text(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => format!("etcd: {}: {}", s.code(), s.message()),
        other => format!("etcd: {other}"),
    }
}

async fn req<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {}", err_text(&e))),
        Err(_) => Err(format!(
            "{what}: no answer within {} ms",
            REQUEST_TIMEOUT.as_millis()
        )),
    }
}

/// A connection to one member at a time: the first that answers, its
/// gRPC client, and which member it is. A request through a client of
/// several members fails whenever it is routed to one that is down, so the
/// lock talks to one member and moves to the next on an error.
pub struct Conn {
    /// The client of the member.
    pub client: Client,
    /// Its index in [`EtcdSpec::endpoints`].
    pub member: usize,
}

async fn connect_one(spec: &EtcdSpec, endpoint: &str) -> Result<Client, String> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(HTTP2_PING, REQUEST_TIMEOUT)
        .with_require_leader(true);
    if let Some((u, p)) = &spec.user {
        // etcd's simple tokens expire after 5 minutes unused (a lock held
        // for hours makes no unary request): authenticate again when told.
        opts = opts
            .with_user(u.clone(), p.clone())
            .with_auto_token_refresh(true);
    }
    if let Some(ca) = &spec.ca {
        let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(ca));
        if let Some((cert, key)) = &spec.identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        opts = opts.with_tls(tls);
    }
    let mut client = req("connecting", Client::connect([endpoint], Some(opts))).await?;
    // The member answers, has a leader, and lets us read the key.
    req("reading the key", client.get(spec.key.as_str(), None)).await?;
    Ok(client)
}

/// Connects to the first member of `spec` that answers, trying them in
/// order from index `first` (modulo their number).
///
/// # Errors
///
/// Every member's failure, in words.
pub async fn connect(spec: &EtcdSpec, first: usize) -> Result<Conn, String> {
    let n = spec.endpoints.len().max(1);
    let mut errors = Vec::new();
    for k in 0..n {
        let member = (first + k) % n;
        let Some(ep) = spec.endpoints.get(member) else {
            break;
        };
        match connect_one(spec, ep).await {
            Ok(client) => return Ok(Conn { client, member }),
            Err(e) => errors.push(format!("{ep}: {e}")),
        }
    }
    Err(format!("no etcd member answered: {}", errors.join("; ")))
}

/// Whether `stop` fired or its sender is gone.
fn stopped(stop: &mut oneshot::Receiver<()>) -> bool {
    matches!(
        stop.try_recv(),
        Ok(()) | Err(oneshot::error::TryRecvError::Closed)
    )
}

async fn run(
    spec: EtcdSpec,
    p: Params,
    events: mpsc::UnboundedSender<Event>,
    mut stop: oneshot::Receiver<()>,
) {
    let first = usize::try_from(p.pnn).unwrap_or(0);
    let conn = tokio::select! {
        c = connect(&spec, first) => c,
        _ = &mut stop => return,
    };
    let mut conn = match conn {
        Ok(c) => c,
        Err(e) => {
            let _ = events.send(Event::NotTaken(e));
            return;
        }
    };
    let held = match acquire(&mut conn, &spec, &p, &mut stop).await {
        Ok(Some(h)) => h,
        Ok(None) => return,
        Err(e) => {
            let _ = events.send(Event::NotTaken(e));
            return;
        }
    };
    let _ = events.send(Event::Taken { ttl: held.ttl });
    let lost = hold(&mut conn, &spec, &p, &held, &mut stop).await;
    if let Some(why) = &lost {
        let _ = events.send(Event::Lost(why.clone()));
    }
    // Released or lost: revoke the lease (deletes the key), through another
    // member if need be. If etcd cannot be reached the lease ends by itself
    // within its TTL.
    let mut revoked = req("revoking the lease", conn.client.lease_revoke(held.lease)).await;
    if revoked.is_err() {
        if let Ok(mut c) = connect(&spec, conn.member + 1).await {
            revoked = req("revoking the lease", c.client.lease_revoke(held.lease)).await;
        }
    }
    match revoked {
        Ok(_) => tracing::info!(key = %spec.key, "cluster lock released: lease revoked"),
        Err(e) => tracing::info!(
            key = %spec.key,
            "cluster lock released: {e}; etcd ends the lease within its TTL"
        ),
    }
}

/// When a lease whose keep-alive (or grant) was sent at `sent` and
/// confirmed with `ttl` is given up: `safety` before it could end on etcd's
/// side (at once if `ttl` is not longer than `safety`).
fn lost_at(sent: Instant, ttl: Duration, safety: Duration) -> Instant {
    sent + ttl.saturating_sub(safety)
}

struct Held {
    lease: i64,
    ttl: i64,
    /// Lost at this instant unless a newer keep-alive is confirmed.
    deadline: Instant,
    /// The revision of the transaction that put the key.
    revision: i64,
}

/// What one round of [`acquire`] found.
enum Round {
    /// The lock is this attempt's.
    Held(Held),
    /// Another node holds it: wait for a change after this revision.
    Wait(i64),
    /// Try again at once (the key went, or this node's stale key was
    /// freed).
    Again,
}

/// What to do about a key found held: wait for it, or free it if it is
/// this node's own (an earlier clusterd here that died or lost etcd: this
/// clusterd does not hold it).
async fn held_by(
    client: &mut Client,
    spec: &EtcdSpec,
    me: &str,
    kv: &etcd_client::KeyValue,
    revision: i64,
    logged_holder: &mut Option<Vec<u8>>,
) -> Result<Round, String> {
    if kv.value() == me.as_bytes() {
        tracing::info!(key = %spec.key, "cluster lock: freeing this node's earlier key");
        req(
            "revoking this node's earlier lease",
            client.lease_revoke(kv.lease()),
        )
        .await?;
        return Ok(Round::Again);
    }
    if logged_holder.as_deref() != Some(kv.value()) {
        tracing::info!(
            key = %spec.key,
            holder = %String::from_utf8_lossy(kv.value()),
            "cluster lock held by another node; waiting for it"
        );
        *logged_holder = Some(kv.value().to_vec());
    }
    Ok(Round::Wait(revision.max(kv.mod_revision()) + 1))
}

/// One round: read the key; free, grant a lease and put the key with it in
/// one transaction ("create revision 0"), revoking the lease at once if
/// another node was faster.
async fn round(
    client: &mut Client,
    spec: &EtcdSpec,
    p: &Params,
    logged_holder: &mut Option<Vec<u8>>,
) -> Result<Round, String> {
    let me = p.pnn.to_string();
    let got = req("reading the key", client.get(spec.key.as_str(), None)).await?;
    if let Some(kv) = got.kvs().first() {
        let revision = got
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision);
        return held_by(client, spec, &me, kv, revision, logged_holder).await;
    }
    let ttl = i64::try_from(p.ttl).unwrap_or(i64::MAX);
    let sent = Instant::now();
    let grant = req("granting a lease", client.lease_grant(ttl, None)).await?;
    let lease = grant.id();
    let txn = Txn::new()
        .when([Compare::create_revision(
            spec.key.as_str(),
            CompareOp::Equal,
            0,
        )])
        .and_then([TxnOp::put(
            spec.key.as_str(),
            me.as_str(),
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(spec.key.as_str(), None)]);
    let resp = match req("taking the key", client.txn(txn)).await {
        Ok(r) => r,
        Err(e) => {
            // Whether the put happened is unknown: revoke the lease,
            // which deletes the key if it did.
            let _ = req("revoking the lease", client.lease_revoke(lease)).await;
            return Err(e);
        }
    };
    let revision = resp
        .header()
        .map_or(0, etcd_client::ResponseHeader::revision);
    if resp.succeeded() {
        let granted = grant.ttl().max(1);
        return Ok(Round::Held(Held {
            lease,
            ttl: granted,
            deadline: lost_at(sent, Duration::from_secs(granted.unsigned_abs()), p.safety),
            revision,
        }));
    }
    // Contended: this attempt's lease goes at once.
    req("revoking the lease", client.lease_revoke(lease)).await?;
    let holder = resp.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Get(g) => g.kvs().first().cloned(),
        _ => None,
    });
    match holder {
        Some(kv) => held_by(client, spec, &me, &kv, revision, logged_holder).await,
        // Deleted between the compare and the get.
        None => Ok(Round::Again),
    }
}

/// Takes the lock, waiting while another node holds it. `Ok(None)`:
/// stopped meanwhile (nothing left behind). An error moves to the next
/// member; errors on every member in a row end the attempt.
async fn acquire(
    conn: &mut Conn,
    spec: &EtcdSpec,
    p: &Params,
    stop: &mut oneshot::Receiver<()>,
) -> Result<Option<Held>, String> {
    let mut logged_holder: Option<Vec<u8>> = None;
    let mut errors = 0usize;
    // Each round takes the lock, waits for a change of the key, or tries
    // again; bounded by `stop` and by errors in a row.
    loop {
        if stopped(stop) {
            return Ok(None);
        }
        let r = match round(&mut conn.client, spec, p, &mut logged_holder).await {
            Ok(Round::Held(held)) => {
                if stopped(stop) {
                    let _ = req("revoking the lease", conn.client.lease_revoke(held.lease)).await;
                    return Ok(None);
                }
                return Ok(Some(held));
            }
            Ok(Round::Again) => Ok(()),
            Ok(Round::Wait(from)) => tokio::select! {
                r = wait_for_change(&mut conn.client, spec, from) => r,
                _ = &mut *stop => return Ok(None),
            },
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => errors = 0,
            Err(e) => {
                errors += 1;
                if errors >= spec.endpoints.len() {
                    return Err(e);
                }
                tracing::info!(key = %spec.key, "cluster lock: {e}; trying the next member");
                *conn = tokio::select! {
                    c = connect(spec, conn.member + 1) => c?,
                    _ = &mut *stop => return Ok(None),
                };
            }
        }
    }
}

/// Waits until the key changes after `from` (a delete: its holder released
/// it or its lease expired) or [`CONTENDED_RECHECK`] passes.
async fn wait_for_change(client: &mut Client, spec: &EtcdSpec, from: i64) -> Result<(), String> {
    let mut watch = req(
        "watching the key",
        client.watch(
            spec.key.as_str(),
            Some(WatchOptions::new().with_start_revision(from)),
        ),
    )
    .await?;
    let deadline = Instant::now() + CONTENDED_RECHECK;
    loop {
        let msg = tokio::select! {
            m = watch.message() => m,
            () = tokio::time::sleep_until(deadline) => return Ok(()),
        };
        match msg {
            Ok(Some(r)) => {
                if r.canceled() {
                    // E.g. compacted past `from`: read the key again.
                    return Ok(());
                }
                if r.events()
                    .iter()
                    .any(|e| e.event_type() == EventType::Delete)
                {
                    return Ok(());
                }
            }
            Ok(None) => return Err("watching the key: the stream ended".into()),
            Err(e) => return Err(format!("watching the key: {}", err_text(&e))),
        }
    }
}

/// Why opening the hold's streams failed.
enum OpenError {
    /// The lock is gone (the lease or the key): lost.
    Gone(String),
    /// etcd could not be asked (a member down, a broken connection): try
    /// again until the deadline.
    Retry(String),
}

/// The streams of a hold: the keep-alive's two halves and the key's watch.
type Streams = (
    etcd_client::LeaseKeeper,
    etcd_client::LeaseKeepAliveStream,
    etcd_client::WatchStream,
);

/// Opens the keep-alive (its first answer confirms the lease: returns when
/// that request was sent) and, after checking that the key is still this
/// lease's, a watch of the key from the revision read.
async fn open(
    client: &mut Client,
    spec: &EtcdSpec,
    held: &Held,
) -> Result<(Streams, Instant), OpenError> {
    let sent = Instant::now();
    let (keeper, stream) =
        match tokio::time::timeout(REQUEST_TIMEOUT, client.lease_keep_alive(held.lease)).await {
            Ok(Ok(k)) => k,
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(e))) => {
                return Err(OpenError::Gone(format!("keep-alive: {e}")))
            }
            // gRPC's NOT_FOUND (5): etcd's "requested lease not found".
            Ok(Err(etcd_client::Error::GRpcStatus(s))) if s.code() as i32 == 5 => {
                return Err(OpenError::Gone(format!("keep-alive: {}", s.message())))
            }
            Ok(Err(e)) => return Err(OpenError::Retry(format!("keep-alive: {}", err_text(&e)))),
            Err(_) => return Err(OpenError::Retry("keep-alive: no answer".into())),
        };
    let got = req("reading the key", client.get(spec.key.as_str(), None))
        .await
        .map_err(OpenError::Retry)?;
    match got.kvs().first() {
        Some(kv) if kv.lease() == held.lease => {}
        Some(_) => return Err(OpenError::Gone("the key was overwritten".into())),
        None => return Err(OpenError::Gone("the key was deleted".into())),
    }
    let from = got
        .header()
        .map_or(held.revision, etcd_client::ResponseHeader::revision)
        + 1;
    let watch = req(
        "watching the key",
        client.watch(
            spec.key.as_str(),
            Some(WatchOptions::new().with_start_revision(from)),
        ),
    )
    .await
    .map_err(OpenError::Retry)?;
    Ok(((keeper, stream, watch), sent))
}

/// Holds the lock until `stop` (returns `None`) or until it is lost
/// (returns why). A broken stream (a member down) is opened again, through
/// any member, until the deadline.
async fn hold(
    conn: &mut Conn,
    spec: &EtcdSpec,
    p: &Params,
    held: &Held,
    stop: &mut oneshot::Receiver<()>,
) -> Option<String> {
    let ttl = Duration::from_secs(held.ttl.unsigned_abs());
    let every = ttl / 3;
    let mut deadline = held.deadline;
    let lost = |why: &str| {
        format!(
            "no keep-alive of the lease confirmed in time (lease TTL {} s, given up {} ms \
             before it could end; last error: {why})",
            held.ttl,
            p.safety.as_millis()
        )
    };
    let mut last_error = String::from("none");
    // Each round opens the streams and keeps the lease alive until they
    // break; the deadline bounds the rounds.
    loop {
        let opened = tokio::select! {
            biased;
            _ = &mut *stop => return None,
            () = tokio::time::sleep_until(deadline) => return Some(lost(&last_error)),
            r = open(&mut conn.client, spec, held) => r,
        };
        let ((mut keeper, mut stream, mut watch), confirmed) = match opened {
            Ok(o) => o,
            Err(OpenError::Gone(why)) => return Some(why),
            Err(OpenError::Retry(why)) => {
                tracing::info!(key = %spec.key, "cluster lock: {why}; trying the next member");
                last_error = why;
                let next = tokio::select! {
                    biased;
                    _ = &mut *stop => return None,
                    () = tokio::time::sleep_until(deadline) => return Some(lost(&last_error)),
                    c = connect(spec, conn.member + 1) => c,
                };
                match next {
                    Ok(c) => *conn = c,
                    Err(e) => {
                        last_error = e;
                        tokio::select! {
                            biased;
                            _ = &mut *stop => return None,
                            () = tokio::time::sleep_until(deadline) => return Some(lost(&last_error)),
                            () = tokio::time::sleep(every.min(Duration::from_millis(200))) => {}
                        }
                    }
                }
                continue;
            }
        };
        deadline = deadline.max(lost_at(confirmed, ttl, p.safety));
        let mut sent: std::collections::VecDeque<Instant> = std::collections::VecDeque::new();
        let mut tick = tokio::time::interval_at(Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let broken = loop {
            tokio::select! {
                biased;
                _ = &mut *stop => return None,
                () = tokio::time::sleep_until(deadline) => return Some(lost(&last_error)),
                m = stream.message() => match m {
                    Ok(Some(r)) => {
                        if r.ttl() <= 0 {
                            return Some("etcd says the lease is gone".into());
                        }
                        if let Some(s) = sent.pop_front() {
                            let t = Duration::from_secs(r.ttl().unsigned_abs());
                            deadline = deadline.max(lost_at(s, t, p.safety));
                        }
                    }
                    Ok(None) => break "the keep-alive stream ended".to_string(),
                    Err(e) => break format!("keep-alive: {}", err_text(&e)),
                },
                w = watch.message() => match w {
                    Ok(Some(r)) => {
                        if r.canceled() {
                            break format!("the watch of the key was cancelled: {}", r.cancel_reason());
                        }
                        for e in r.events() {
                            match e.event_type() {
                                EventType::Delete => return Some("the key was deleted".into()),
                                EventType::Put => {
                                    if e.kv().is_some_and(|kv| kv.lease() != held.lease) {
                                        return Some("the key was overwritten".into());
                                    }
                                }
                            }
                        }
                    }
                    Ok(None) => break "the watch of the key ended".to_string(),
                    Err(e) => break format!("watching the key: {}", err_text(&e)),
                },
                _ = tick.tick() => {
                    sent.push_back(Instant::now());
                    // Bounded: a long queue means etcd stopped answering,
                    // and the deadline ends the hold first.
                    if sent.len() > 64 {
                        sent.pop_front();
                    }
                    if let Err(e) = keeper.keep_alive().await {
                        break format!("keep-alive: {}", err_text(&e));
                    }
                }
            }
        };
        tracing::info!(key = %spec.key, "cluster lock: {broken}; opening the streams again");
        last_error = broken;
        // Through the next member when this one does not answer.
        let probe = tokio::select! {
            biased;
            _ = &mut *stop => return None,
            () = tokio::time::sleep_until(deadline) => return Some(lost(&last_error)),
            r = req("reading the key", conn.client.get(spec.key.as_str(), None)) => r,
        };
        if probe.is_err() {
            let next = tokio::select! {
                biased;
                _ = &mut *stop => return None,
                () = tokio::time::sleep_until(deadline) => return Some(lost(&last_error)),
                c = connect(spec, conn.member + 1) => c,
            };
            if let Ok(c) = next {
                *conn = c;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_members_prefix_and_key() {
        let s = EtcdSpec::parse("etcd://192.0.2.1:2379,192.0.2.2:2379,[2001:db8::3]:2379/ipf/c1")
            .unwrap();
        assert_eq!(
            s.endpoints,
            [
                "http://192.0.2.1:2379",
                "http://192.0.2.2:2379",
                "http://[2001:db8::3]:2379"
            ]
        );
        assert_eq!(s.key, "/ipf/c1/lock");
        assert_eq!(EtcdSpec::parse("etcd://h:1/p/").unwrap().key, "/p/lock");
        assert_eq!(EtcdSpec::parse("etcd://h:1/p?ttl=3").unwrap().ttl, Some(3));
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, words) in [
            ("etcd://192.0.2.1:2379", "no prefix"),
            ("etcd://192.0.2.1:2379/", "empty prefix"),
            ("etcd:///p", "no etcd member"),
            ("etcd://192.0.2.1/p", "no port"),
            ("etcd://192.0.2.1:0/p", "port"),
            ("etcd://192.0.2.1:99999/p", "port"),
            ("etcd://:2379/p", "no host"),
            ("etcd://2001:db8::1:2379/p", "[ADDRESS]"),
            ("etcd://h:1,/p", "no port"),
            ("etcd://u:pw@h:1/p", "password_file"),
            ("etcd://h:1/a//b", "empty part"),
            ("etcd://h:1/p?foo=1", "unknown option \"foo\""),
            ("etcd://h:1/p?ttl=0", "ttl=0"),
            ("etcd://h:1/p?ttl=x", "whole seconds"),
            ("etcd://h:1/p?ttl=1&ttl=2", "twice"),
            ("etcd://h:1/p?ttl", "NAME=VALUE"),
            ("etcd://h:1/p?user=u", "needs option password_file"),
            ("etcd://h:1/p?password_file=/x", "needs option user"),
            ("etcd://h:1/p?cert=/x", "needs option key"),
            (
                "etcd://h:1/p?ca=/nonexistent/ca.pem",
                "cannot read /nonexistent/ca.pem",
            ),
        ] {
            let e = EtcdSpec::parse(url).expect_err(url);
            assert!(e.contains(words), "{url}: {e}");
        }
    }

    #[test]
    fn ttl_follows_clusterds_timing() {
        let s = EtcdSpec::parse("etcd://h:1/p").unwrap();
        let d = Params::new(&s, &Timing::default_profile(), 3);
        // 2 (500 + 100) + 100 = 1300 ms: 1 s.
        assert_eq!((d.ttl, d.safety), (1, Duration::from_millis(100)));
        let f = Params::new(&s, &Timing::fast(), 3);
        assert_eq!((f.ttl, f.safety), (1, Duration::from_millis(100)));
        let slow = Timing {
            lease: Duration::from_secs(3),
            dead_after: Duration::from_secs(3),
            margin: Duration::from_millis(500),
            ..Timing::default_profile()
        };
        let sl = Params::new(&s, &slow, 3);
        assert_eq!((sl.ttl, sl.safety), (7, Duration::from_millis(500)));
        let o = EtcdSpec::parse("etcd://h:1/p?ttl=5").unwrap();
        assert_eq!(Params::new(&o, &Timing::default_profile(), 3).ttl, 5);
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(lost_at(t0, ms(1000), ms(100)), t0 + ms(900));
        assert_eq!(lost_at(t0, ms(100), ms(300)), t0);
    }

    #[test]
    fn debug_hides_the_password() {
        let dir = std::env::temp_dir().join(format!("etcd-pw-{}", std::process::id()));
        std::fs::write(&dir, "s3cret\n").unwrap();
        let s = EtcdSpec::parse(&format!(
            "etcd://h:1/p?user=root&password_file={}",
            dir.display()
        ))
        .unwrap();
        let _ = std::fs::remove_file(&dir);
        assert_eq!(s.user.as_ref().unwrap().1, "s3cret");
        assert!(!format!("{s:?}").contains("s3cret"));
    }
}
