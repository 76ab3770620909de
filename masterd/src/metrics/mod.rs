//! masterd's Prometheus endpoint: `GET /metrics` on `[metrics] listen`
//! (docs/observability.md).
//!
//! Two tasks share an [`Exporter`]:
//! * the event task ([`watch_events`]) keeps a transport client registered
//!   as `masterd-metrics`, subscribed to MEMBERSHIP, LEASE, IPREALLOCATED
//!   and HOSTED, and feeds them to the [`model::Tracker`] (takeover runs
//!   and their durations, lease flaps, addresses taken and released: what
//!   happens between scrapes). It reconnects when transportd restarts.
//! * the HTTP server ([`http::serve`]) answers each scrape by asking the
//!   node's daemons over that client ([`gather`]), each request bounded by
//!   [`ASK_TIMEOUT`], and encoding what came back ([`model::encode`]). A
//!   daemon that does not answer is `ipfailover_daemon_up{daemon=..} 0`,
//!   never a failed scrape.
//!
//! Nothing here touches the daemons' state or the failover path: the
//! endpoint only reads, and a bind failure is logged and retried, never a
//! reason for masterd to stop.

pub mod http;
pub mod model;
pub mod peers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use transport::client::{Client, Incoming};
use transport::msg::cluster::{
    monotonic_ns, LeaseUpdate, Membership, GET_MEMBERSHIP, LEASE, MEMBERSHIP,
};
use transport::msg::conntrack::{AddressCount, GET_COUNTS};
use transport::msg::failover::{
    Hosted, IpStatus, Ipreallocated, PublicIps, GET_IP_STATUS, GET_PUBLIC_IPS, HOSTED,
    IPREALLOCATED,
};
use transport::proto::control::{PeerList, Statistics, LIST_PEERS, STATISTICS};
use transport::proto::service::{CLUSTERD, CONNTRACKD, FAILOVERD, TRANSPORT};
use transport::proto::{Address, Kind};

use crate::daemons::DaemonDef;
use crate::service::MasterState;

use self::model::{Snapshot, Tracker};

/// How long a scrape waits for one daemon's answer: Prometheus's default
/// scrape timeout is 10 s, and a daemon slower than this is as good as
/// down for monitoring.
pub const ASK_TIMEOUT: Duration = Duration::from_millis(1000);

/// Retry interval of the event client's connection.
const RECONNECT: Duration = Duration::from_millis(200);

/// The state the HTTP server and the event task share.
pub struct Exporter {
    shared: Arc<MasterState>,
    daemons: Vec<DaemonDef>,
    client: Mutex<Option<Client>>,
    tracker: Mutex<Tracker>,
    origin: Instant,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

impl Exporter {
    /// An exporter for masterd's `shared` state and its `daemons`.
    pub fn new(shared: Arc<MasterState>, daemons: Vec<DaemonDef>) -> Arc<Exporter> {
        Arc::new(Exporter {
            shared,
            daemons,
            client: Mutex::new(None),
            tracker: Mutex::new(Tracker::new()),
            origin: Instant::now(),
        })
    }

    fn client(&self) -> Option<Client> {
        self.client.lock().ok().and_then(|c| c.clone())
    }

    fn set_client(&self, c: Option<Client>) {
        if let Ok(mut slot) = self.client.lock() {
            *slot = c;
        }
    }

    /// One scrape: asks the daemons and encodes the answers.
    ///
    /// # Errors
    ///
    /// The encoder failed (a bug; the HTTP layer answers 500).
    pub async fn scrape(&self) -> prometheus::Result<String> {
        let snap = gather(self, self.client()).await;
        let tracker = self
            .tracker
            .lock()
            .map_err(|_| prometheus::Error::Msg("metrics tracker lock poisoned".into()))?;
        model::encode(&snap, &tracker)
    }

    fn track(&self, f: impl FnOnce(&mut Tracker, Duration)) {
        let now = self.origin.elapsed();
        if let Ok(mut t) = self.tracker.lock() {
            f(&mut t, now);
        }
    }
}

/// Asks `service` on this node, `None` on any failure (logged at debug).
async fn ask<Resp: serde::de::DeserializeOwned>(
    client: &Client,
    dst: Address,
    opcode: u32,
) -> Option<Resp> {
    match client.request(dst, opcode, &(), ASK_TIMEOUT).await {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::debug!(dst = %dst, opcode = format_args!("{opcode:#010x}"), error = %e, "metrics: no answer");
            None
        }
    }
}

/// Everything one scrape reports, asked concurrently.
async fn gather(exp: &Exporter, client: Option<Client>) -> Snapshot {
    let started = Instant::now();
    let mut snap = Snapshot {
        master: Some(exp.shared.snapshot()),
        ..Snapshot::default()
    };
    let Some(client) = client else {
        snap.statistics = exp
            .daemons
            .iter()
            .map(|d| (d.name.to_owned(), None))
            .collect();
        snap.now_ns = monotonic_ns();
        snap.gather_time = started.elapsed();
        return snap;
    };
    snap.pnn = Some(client.pnn());
    let stats = futures::future::join_all(exp.daemons.iter().map(|d| {
        let client = &client;
        async move {
            let s: Option<Statistics> = ask(client, Address::local(d.service), STATISTICS).await;
            (d.name.to_owned(), s)
        }
    }));
    let has = |service: u16| exp.daemons.iter().any(|d| d.service == service);
    let peers = ask::<PeerList>(&client, Address::local(TRANSPORT), LIST_PEERS);
    let membership = async {
        if has(CLUSTERD) {
            ask::<Membership>(&client, Address::local(CLUSTERD), GET_MEMBERSHIP).await
        } else {
            None
        }
    };
    let ip_status = async {
        if has(FAILOVERD) {
            ask::<IpStatus>(&client, Address::local(FAILOVERD), GET_IP_STATUS).await
        } else {
            None
        }
    };
    let counts = async {
        if has(CONNTRACKD) {
            ask::<Vec<AddressCount>>(&client, Address::local(CONNTRACKD), GET_COUNTS).await
        } else {
            None
        }
    };
    let (statistics, peers, membership, ip_status, counts) =
        tokio::join!(stats, peers, membership, ip_status, counts);
    snap.statistics = statistics;
    snap.membership = membership;
    snap.ip_status = ip_status;
    snap.connection_counts = counts;
    if has(FAILOVERD) {
        // This node's list, then every connected peer's, for the
        // cluster-wide count of addresses nobody hosts. A peer clusterd
        // already declared disconnected is not asked: transportd's link
        // to a node that lost power stays up for seconds, and waiting for
        // its answer made the scrapes during a failover time out.
        let gone = |pnn: u32| {
            snap.membership.as_ref().is_some_and(|m| {
                m.flags(pnn)
                    .is_some_and(|f| f.contains(transport::msg::cluster::NodeFlags::DISCONNECTED))
            })
        };
        let mut dsts = vec![Address::local(FAILOVERD)];
        if let Some(p) = &peers {
            dsts.extend(
                p.peers
                    .iter()
                    .filter(|p| p.connected && !gone(p.pnn))
                    .map(|p| Address::new(p.pnn, FAILOVERD)),
            );
        }
        if let Ok(answers) = client
            .request_each::<(), PublicIps>(&dsts, GET_PUBLIC_IPS, &(), ASK_TIMEOUT)
            .await
        {
            for (dst, r) in answers {
                match r {
                    Ok(list) if dst.pnn == transport::proto::LOCAL => snap.public_ips = Some(list),
                    Ok(list) => snap.peer_public_ips.push(list),
                    Err(e) => tracing::debug!(dst = %dst, error = %e, "metrics: no address list"),
                }
            }
        }
    }
    snap.peers = peers;
    snap.now_ns = monotonic_ns();
    snap.gather_time = started.elapsed();
    snap
}

/// Keeps the exporter's transport client connected and subscribed, and
/// feeds the events to its tracker, until `quit` becomes true.
pub async fn watch_events(socket: PathBuf, exp: Arc<Exporter>, mut quit: watch::Receiver<bool>) {
    while !*quit.borrow() {
        let (client, incoming) = match Client::connect_unix(&socket, "masterd-metrics").await {
            Ok(c) => c,
            Err(e) => {
                tracing::trace!(error = %e, "metrics: transportd not reachable yet");
                tokio::select! {
                    () = tokio::time::sleep(RECONNECT) => {}
                    _ = quit.changed() => {}
                }
                continue;
            }
        };
        let mut subscribed = true;
        for op in [MEMBERSHIP, LEASE, IPREALLOCATED, HOSTED] {
            if let Err(e) = client.subscribe(op).await {
                tracing::debug!(error = %e, "metrics: cannot subscribe");
                subscribed = false;
            }
        }
        if !subscribed {
            tokio::select! {
                () = tokio::time::sleep(RECONNECT) => {}
                _ = quit.changed() => {}
            }
            continue;
        }
        exp.set_client(Some(client.clone()));
        follow(&client, incoming, &exp, &mut quit).await;
        exp.set_client(None);
    }
}

async fn follow(
    client: &Client,
    mut incoming: Incoming,
    exp: &Exporter,
    quit: &mut watch::Receiver<bool>,
) {
    let closed = client.closed();
    tokio::pin!(closed);
    loop {
        let msg = tokio::select! {
            _ = quit.changed() => return,
            () = &mut closed => return,
            m = incoming.recv() => match m {
                Some(m) => m,
                None => return,
            },
        };
        if msg.header.kind != Kind::Event {
            continue;
        }
        let from = msg.header.src.service;
        match msg.header.opcode {
            MEMBERSHIP if from == CLUSTERD => {
                if let Ok(m) = msg.decode_payload::<Membership>() {
                    exp.track(|t, now| t.membership(m.generation, now));
                }
            }
            LEASE if from == CLUSTERD => {
                if let Ok(l) = msg.decode_payload::<LeaseUpdate>() {
                    let now_ns = monotonic_ns();
                    exp.track(|t, _| t.lease(&l.lease, now_ns));
                }
            }
            IPREALLOCATED if from == FAILOVERD => {
                if let Ok(r) = msg.decode_payload::<Ipreallocated>() {
                    exp.track(|t, now| t.run_ended(r.generation, now));
                }
            }
            HOSTED if from == FAILOVERD && msg.header.src.pnn == client.pnn() => {
                if let Ok(h) = msg.decode_payload::<Hosted>() {
                    exp.track(|t, _| t.hosted(&h.addresses));
                }
            }
            _ => {}
        }
    }
}

/// Runs the endpoint until `quit` becomes true: the event task and the
/// HTTP server on `listen`.
pub async fn run(
    listen: SocketAddr,
    socket: PathBuf,
    shared: Arc<MasterState>,
    daemons: Vec<DaemonDef>,
    quit: watch::Receiver<bool>,
) {
    let exp = Exporter::new(shared, daemons);
    let events = tokio::spawn(watch_events(socket, Arc::clone(&exp), quit.clone()));
    http::serve(listen, exp, quit).await;
    let _ = events.await;
}
