//! The pure half of the metrics: what one scrape gathered ([`Snapshot`]),
//! what masterd learns from events between scrapes ([`Tracker`]), and the
//! mapping of both to Prometheus families ([`encode`]).
//!
//! No I/O and no clock here: times come in as arguments, so the mapping is
//! tested on values. Every metric name and its meaning is listed in
//! docs/observability.md; a test checks that the two agree.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use transport::msg::cluster::{Lease, Membership, NodeFlags};
use transport::msg::conntrack::AddressCount;
use transport::msg::failover::{IpStatus, PublicIps};
use transport::msg::master::MasterStatus;
use transport::proto::control::{PeerList, Statistics};

/// Buckets of the takeover-run duration histogram, in seconds: a fast
/// profile failover is tens of milliseconds, a default one under a
/// second, a slow hook or a lease wait several seconds.
pub const RUN_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The flags of [`NodeFlags`] as metric labels, CTDB's names in lower case.
const FLAGS: [(&str, NodeFlags); 7] = [
    ("disconnected", NodeFlags::DISCONNECTED),
    ("unhealthy", NodeFlags::UNHEALTHY),
    ("disabled", NodeFlags::PERMANENTLY_DISABLED),
    ("banned", NodeFlags::BANNED),
    ("deleted", NodeFlags::DELETED),
    ("stopped", NodeFlags::STOPPED),
    ("unknown", NodeFlags::UNKNOWN),
];

/// transportd's counters of frames, by where they went (its STATISTICS
/// names).
const TRANSPORT_FRAMES: [&str; 4] = ["local_in", "peer_in", "delivered", "forwarded"];
/// transportd's counters of frames or links that failed, by kind.
const TRANSPORT_ERRORS: [&str; 12] = [
    "unknown_service",
    "unreachable",
    "queue_drops",
    "misrouted",
    "clients_over_limit",
    "requests_throttled",
    "frames_refused",
    "bad_frames",
    "handshake_failures",
    "handshakes_refused",
    "handshakes_unconfirmed",
    "decrypt_failures",
];

/// What one scrape gathered from the node's daemons; `None` where a daemon
/// did not answer in time.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// This node's PNN (`None`: transportd not reached yet).
    pub pnn: Option<u32>,
    /// masterd's own status (always there: it is in-process).
    pub master: Option<MasterStatus>,
    /// Each daemon's STATISTICS answer, by daemon name, in start order.
    pub statistics: Vec<(String, Option<Statistics>)>,
    /// transportd's LIST_PEERS.
    pub peers: Option<PeerList>,
    /// clusterd's GET_MEMBERSHIP.
    pub membership: Option<Membership>,
    /// The local failoverd's GET_PUBLIC_IPS.
    pub public_ips: Option<PublicIps>,
    /// GET_PUBLIC_IPS of every other connected node that answered.
    pub peer_public_ips: Vec<PublicIps>,
    /// The local failoverd's GET_IP_STATUS.
    pub ip_status: Option<IpStatus>,
    /// The local conntrackd's GET_COUNTS.
    pub connection_counts: Option<Vec<AddressCount>>,
    /// `CLOCK_MONOTONIC` now, in ns (for the lease's time left).
    pub now_ns: u64,
    /// How long gathering took.
    pub gather_time: Duration,
}

/// What masterd counts from the events it subscribes to (MEMBERSHIP,
/// LEASE, IPREALLOCATED, HOSTED) between scrapes: things a single scrape
/// cannot see because they happen and are gone.
#[derive(Debug)]
pub struct Tracker {
    last_generation: Option<u64>,
    /// A membership change seen whose takeover run has not ended yet:
    /// (generation, when it was seen).
    pending: Option<(u64, Duration)>,
    lease_valid: Option<bool>,
    hosted: Option<BTreeSet<IpAddr>>,
    runs: IntCounter,
    run_duration: Histogram,
    membership_changes: IntCounter,
    lease_flaps: IntCounter,
    taken: IntCounter,
    released: IntCounter,
}

impl Default for Tracker {
    fn default() -> Self {
        Self::new()
    }
}

/// Builds a metric whose name and options are constants of this module.
fn fixed<T>(r: prometheus::Result<T>) -> T {
    r.expect("constant metric names and options are valid")
}

impl Tracker {
    /// Nothing seen yet.
    pub fn new() -> Self {
        Tracker {
            last_generation: None,
            pending: None,
            lease_valid: None,
            hosted: None,
            runs: fixed(IntCounter::new(
                "ipfailover_takeover_runs_total",
                "Takeover runs that ended (IPREALLOCATED events seen by this node, from whichever node led them).",
            )),
            run_duration: fixed(Histogram::with_opts(
                HistogramOpts::new(
                    "ipfailover_takeover_run_duration_seconds",
                    "From a membership change seen by this node to the end of the takeover run for it.",
                )
                .buckets(RUN_BUCKETS.to_vec()),
            )),
            membership_changes: fixed(IntCounter::new(
                "ipfailover_membership_changes_total",
                "New membership generations seen by this node since masterd started.",
            )),
            lease_flaps: fixed(IntCounter::new(
                "ipfailover_lease_flaps_total",
                "Times this node's lease ended after having been valid.",
            )),
            taken: fixed(IntCounter::new(
                "ipfailover_addresses_taken_total",
                "Public addresses that appeared on this node (HOSTED events).",
            )),
            released: fixed(IntCounter::new(
                "ipfailover_addresses_released_total",
                "Public addresses that left this node (HOSTED events).",
            )),
        }
    }

    /// A MEMBERSHIP event with `generation`, seen at `now` (any monotonic
    /// origin). The first one only sets the baseline: masterd cannot know
    /// when that generation began.
    pub fn membership(&mut self, generation: u64, now: Duration) {
        match self.last_generation {
            Some(g) if g == generation => {}
            Some(_) => {
                self.membership_changes.inc();
                self.last_generation = Some(generation);
                // A newer change before the run ended: the run that ends
                // it still started from the first change.
                if self.pending.is_none() {
                    self.pending = Some((generation, now));
                } else if let Some(p) = &mut self.pending {
                    p.0 = generation;
                }
            }
            None => self.last_generation = Some(generation),
        }
    }

    /// An IPREALLOCATED event (a takeover run ended) for `generation`.
    pub fn run_ended(&mut self, generation: u64, now: Duration) {
        self.runs.inc();
        if let Some((g, at)) = self.pending {
            if generation >= g {
                self.run_duration
                    .observe(now.saturating_sub(at).as_secs_f64());
                self.pending = None;
            }
        }
    }

    /// A LEASE event: this node's lease as clusterd published it.
    pub fn lease(&mut self, lease: &Lease, now_ns: u64) {
        let valid = lease.valid_at(now_ns);
        if self.lease_valid == Some(true) && !valid {
            self.lease_flaps.inc();
        }
        self.lease_valid = Some(valid);
    }

    /// A HOSTED event: the addresses configured on this node now.
    pub fn hosted(&mut self, addresses: &[IpAddr]) {
        let now: BTreeSet<IpAddr> = addresses.iter().copied().collect();
        if let Some(before) = &self.hosted {
            self.taken
                .inc_by(u64::try_from(now.difference(before).count()).unwrap_or(0));
            self.released
                .inc_by(u64::try_from(before.difference(&now).count()).unwrap_or(0));
        }
        self.hosted = Some(now);
    }

    /// Registers the tracker's metrics (shared, not copied) in `r`.
    fn register(&self, r: &Registry) -> prometheus::Result<()> {
        r.register(Box::new(self.runs.clone()))?;
        r.register(Box::new(self.run_duration.clone()))?;
        r.register(Box::new(self.membership_changes.clone()))?;
        r.register(Box::new(self.lease_flaps.clone()))?;
        r.register(Box::new(self.taken.clone()))?;
        r.register(Box::new(self.released.clone()))
    }
}

/// A gauge with one label set to `v`.
fn gauge_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn gauge(r: &Registry, name: &str, help: &str, v: i64) -> prometheus::Result<()> {
    let g = IntGauge::new(name, help)?;
    g.set(v);
    r.register(Box::new(g))
}

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn usize_int(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Addresses that some answering node lists and none of the answers shows
/// an owner for: the addresses no client can reach (the alert).
pub fn unhosted(lists: &[&PublicIps]) -> BTreeSet<IpAddr> {
    let mut owned: BTreeMap<IpAddr, bool> = BTreeMap::new();
    for list in lists {
        for ip in &list.ips {
            *owned.entry(ip.addr).or_insert(false) |= ip.owner.is_some();
        }
    }
    owned
        .into_iter()
        .filter(|(_, o)| !*o)
        .map(|(a, _)| a)
        .collect()
}

/// The Prometheus text (format 0.0.4) of `snap` and `tracker`.
///
/// # Errors
///
/// A metric that cannot be registered or encoded (a bug: names are
/// constants, label values are escaped by the encoder).
pub fn encode(snap: &Snapshot, tracker: &Tracker) -> prometheus::Result<String> {
    let r = Registry::new();
    tracker.register(&r)?;
    let build = gauge_vec(
        &r,
        "ipfailover_build_info",
        "Always 1; the labels give masterd's version and protocol version.",
        &["version", "protocol"],
    )?;
    build
        .with_label_values(&[
            env!("CARGO_PKG_VERSION"),
            &transport::proto::VERSION.to_string(),
        ])
        .set(1);
    let took = prometheus::Gauge::new(
        "ipfailover_scrape_gather_seconds",
        "How long masterd took to ask the daemons for this scrape.",
    )?;
    took.set(snap.gather_time.as_secs_f64());
    r.register(Box::new(took))?;
    daemons(&r, snap)?;
    if let Some(pnn) = snap.pnn {
        let node = gauge_vec(
            &r,
            "ipfailover_node_info",
            "Always 1; the label is this node's PNN.",
            &["pnn"],
        )?;
        node.with_label_values(&[&pnn.to_string()]).set(1);
    }
    if let Some(m) = &snap.membership {
        membership(&r, m, snap.now_ns)?;
    }
    addresses(&r, snap)?;
    if let Some(counts) = &snap.connection_counts {
        let tracked = gauge_vec(
            &r,
            "ipfailover_tracked_connections",
            "TCP connections conntrackd tracks for a public address (all nodes' reports).",
            &["address"],
        )?;
        for c in counts {
            tracked
                .with_label_values(&[&c.address.to_string()])
                .set(int(c.connections));
        }
    }
    transport(&r, snap)?;
    let failoverd_stats = statistics_of(snap, "failoverd");
    if let Some(f) = failoverd_stats {
        failoverd(&r, f)?;
    }
    let mut families = r.gather();
    if let Some(f) = failoverd_stats {
        families.extend(failoverd_histograms(f));
    }
    let per_peer: Vec<&Statistics> = ["clusterd", "conntrackd"]
        .iter()
        .filter_map(|d| statistics_of(snap, d))
        .collect();
    families.extend(super::peers::families(&per_peer));
    let mut out = String::new();
    TextEncoder::new().encode_utf8(&families, &mut out)?;
    Ok(out)
}

fn statistics_of<'a>(snap: &'a Snapshot, daemon: &str) -> Option<&'a Statistics> {
    snap.statistics
        .iter()
        .find(|(d, _)| d == daemon)
        .and_then(|(_, s)| s.as_ref())
}

/// failoverd's counters (failoverd/src/counters.rs) under their metric
/// names: `(statistic, metric, help)`.
const FAILOVERD_COUNTERS: [(&str, &str, &str); 7] = [
    (
        "announcements_sent",
        "ipfailover_announcements_sent_total",
        "Gratuitous ARPs and unsolicited neighbour advertisements this node sent.",
    ),
    (
        "tickles_sent",
        "ipfailover_tickles_sent_total",
        "Tickle ACKs this node sent to the clients of addresses it took.",
    ),
    (
        "resets_sent",
        "ipfailover_resets_sent_total",
        "Connections this node reset (killtcp, sock_diag destroy) on release or on request.",
    ),
    (
        "hook_runs",
        "ipfailover_hook_runs_total",
        "Events for which this node ran its event hooks.",
    ),
    (
        "hook_failures",
        "ipfailover_hook_script_failures_total",
        "Event hook scripts that failed on this node.",
    ),
    (
        "takeover_runs_led",
        "ipfailover_takeover_runs_led_total",
        "Takeover runs this node led (as leader) that ended.",
    ),
    (
        "takeover_runs_failed",
        "ipfailover_takeover_run_failures_total",
        "Takeover runs this node led in which a report, a release or a take failed.",
    ),
];

/// failoverd's duration histograms: `(statistic prefix, metric, help)`.
const FAILOVERD_HISTOGRAMS: [(&str, &str, &str); 3] = [
    (
        "take",
        "ipfailover_address_take_duration_seconds",
        "Duration of the take requests that added addresses on this node (address, announcement start, hooks).",
    ),
    (
        "release",
        "ipfailover_address_release_duration_seconds",
        "Duration of the release requests that removed addresses from this node (resets, removal, hooks).",
    ),
    (
        "takeover_run",
        "ipfailover_takeover_run_led_duration_seconds",
        "Duration of the takeover runs this node led, from gathering the reports to the last take.",
    ),
];

fn failoverd(r: &Registry, f: &Statistics) -> prometheus::Result<()> {
    for (stat, name, help) in FAILOVERD_COUNTERS {
        if let Some(v) = f.get(stat) {
            let c = IntCounter::new(name, help)?;
            c.inc_by(v);
            r.register(Box::new(c))?;
        }
    }
    for (op, name, help) in [
        (
            "take",
            "ipfailover_address_takes_total",
            "Addresses this node was asked to take, by result (ok: added, failed).",
        ),
        (
            "release",
            "ipfailover_address_releases_total",
            "Addresses this node was asked to release, by result (ok: removed, failed).",
        ),
    ] {
        if let (Some(ok), Some(failed)) =
            (f.get(&format!("{op}s")), f.get(&format!("{op}_failures")))
        {
            let c = counter_vec(r, name, help, &["result"])?;
            c.with_label_values(&["ok"]).inc_by(ok);
            c.with_label_values(&["failed"]).inc_by(failed);
        }
    }
    Ok(())
}

/// A histogram family from failoverd's `PREFIX_us_le_BOUND`,
/// `PREFIX_us_sum` and `PREFIX_count` counters; `None` when they are
/// not all there.
fn histogram_family(
    f: &Statistics,
    prefix: &str,
    name: &str,
    help: &str,
) -> Option<prometheus::proto::MetricFamily> {
    use prometheus::proto;
    let le = format!("{prefix}_us_le_");
    let mut buckets: Vec<(u64, u64)> = f
        .counters
        .iter()
        .filter_map(|(n, v)| Some((n.strip_prefix(&le)?.parse::<u64>().ok()?, *v)))
        .collect();
    buckets.sort_unstable();
    let sum_us = f.get(&format!("{prefix}_us_sum"))?;
    let count = f.get(&format!("{prefix}_count"))?;
    if buckets.is_empty() {
        return None;
    }
    let mut h = proto::Histogram::default();
    h.set_sample_count(count);
    #[allow(clippy::cast_precision_loss)] // microseconds: exact below 2^53
    h.set_sample_sum(sum_us as f64 / 1e6);
    h.set_bucket(
        buckets
            .into_iter()
            .map(|(bound_us, n)| {
                let mut b = proto::Bucket::default();
                #[allow(clippy::cast_precision_loss)]
                b.set_upper_bound(bound_us as f64 / 1e6);
                b.set_cumulative_count(n);
                b
            })
            .collect(),
    );
    let mut m = proto::Metric::default();
    m.set_histogram(h);
    let mut fam = proto::MetricFamily::default();
    fam.set_name(name.to_string());
    fam.set_help(help.to_string());
    fam.set_field_type(proto::MetricType::HISTOGRAM);
    fam.set_metric(vec![m]);
    Some(fam)
}

fn failoverd_histograms(f: &Statistics) -> Vec<prometheus::proto::MetricFamily> {
    FAILOVERD_HISTOGRAMS
        .iter()
        .filter_map(|(prefix, name, help)| histogram_family(f, prefix, name, help))
        .collect()
}

fn daemons(r: &Registry, snap: &Snapshot) -> prometheus::Result<()> {
    let up = gauge_vec(
        r,
        "ipfailover_daemon_up",
        "1 if the daemon answered masterd's STATISTICS request for this scrape.",
        &["daemon"],
    )?;
    up.with_label_values(&["masterd"]).set(1);
    let stat = gauge_vec(
        r,
        "ipfailover_daemon_statistic",
        "A counter or level from the daemon's STATISTICS answer, as it names it (most count since that daemon started; ipfailover statistics shows the same).",
        &["daemon", "name"],
    )?;
    for (daemon, s) in &snap.statistics {
        up.with_label_values(&[daemon.as_str()])
            .set(i64::from(s.is_some()));
        // Histogram buckets are exported as histograms (see `failoverd`),
        // transportd's per-peer and per-service traffic as its own
        // families (see `transport`).
        for (name, v) in s.iter().flat_map(|s| s.counters.iter()).filter(|(n, _)| {
            !n.contains("_us_le_")
                && traffic_counter(n).is_none()
                && super::peers::per_peer(n).is_none()
        }) {
            stat.with_label_values(&[daemon.as_str(), name.as_str()])
                .set(int(*v));
        }
    }
    if let Some(m) = &snap.master {
        let restarts = counter_vec(
            r,
            "ipfailover_daemon_restarts_total",
            "Restarts of a daemon by masterd after an exit nobody asked for.",
            &["daemon"],
        )?;
        let running = gauge_vec(
            r,
            "ipfailover_daemon_running",
            "1 if masterd has the daemon running (a process, or a task in the single-process model).",
            &["daemon"],
        )?;
        for d in &m.daemons {
            restarts
                .with_label_values(&[d.name.as_str()])
                .inc_by(u64::from(d.restarts));
            running.with_label_values(&[d.name.as_str()]).set(i64::from(
                d.state == transport::msg::master::DaemonState::Running,
            ));
        }
        gauge(
            r,
            "ipfailover_masterd_ready",
            "1 once every daemon has answered masterd (readiness as told to systemd).",
            i64::from(m.ready),
        )?;
    }
    Ok(())
}

fn membership(r: &Registry, m: &Membership, now_ns: u64) -> prometheus::Result<()> {
    let flags = gauge_vec(
        r,
        "ipfailover_node_flag",
        "1 if the node has the flag, as this node's clusterd sees it (CTDB's node flags).",
        &["node", "flag"],
    )?;
    let bits = gauge_vec(
        r,
        "ipfailover_node_flags",
        "The node's flags word in CTDB's bit values (0: OK), as this node's clusterd sees it.",
        &["node"],
    )?;
    for n in &m.nodes {
        let node = n.pnn.to_string();
        bits.with_label_values(&[node.as_str()])
            .set(i64::from(n.flags.bits()));
        for (name, f) in FLAGS {
            flags
                .with_label_values(&[node.as_str(), name])
                .set(i64::from(n.flags.contains(f)));
        }
    }
    gauge(
        r,
        "ipfailover_leader",
        "1 if this node is the leader.",
        i64::from(m.leader == Some(m.this_node)),
    )?;
    gauge(
        r,
        "ipfailover_leader_pnn",
        "The leader's PNN as this node sees it; -1 when there is none.",
        m.leader.map_or(-1, i64::from),
    )?;
    gauge(
        r,
        "ipfailover_membership_generation",
        "The membership generation (changes with every membership change).",
        int(m.generation),
    )?;
    gauge(
        r,
        "ipfailover_lease_valid",
        "1 if this node's lease is valid (it may host public addresses).",
        i64::from(m.lease_ok && m.lease.valid_at(now_ns)),
    )?;
    let left = prometheus::Gauge::new(
        "ipfailover_lease_remaining_seconds",
        "Time left on this node's lease when the scrape asked clusterd.",
    )?;
    left.set(m.lease.remaining(now_ns).as_secs_f64());
    r.register(Box::new(left))
}

fn addresses(r: &Registry, snap: &Snapshot) -> prometheus::Result<()> {
    if let Some(own) = &snap.public_ips {
        let hosted = gauge_vec(
            r,
            "ipfailover_address_hosted",
            "1 if the public address (listed in this node's public_addresses) is configured on this node.",
            &["address"],
        )?;
        let owner = gauge_vec(
            r,
            "ipfailover_address_owner",
            "The PNN that hosts the public address as this node knows it; -1 when nobody does.",
            &["address"],
        )?;
        let here: BTreeSet<IpAddr> = snap
            .ip_status
            .as_ref()
            .map(|s| s.hosted.iter().copied().collect())
            .unwrap_or_default();
        for ip in &own.ips {
            let a = ip.addr.to_string();
            let on_me = if snap.ip_status.is_some() {
                here.contains(&ip.addr)
            } else {
                ip.owner == Some(own.pnn)
            };
            hosted
                .with_label_values(&[a.as_str()])
                .set(i64::from(on_me));
            owner
                .with_label_values(&[a.as_str()])
                .set(ip.owner.map_or(-1, i64::from));
        }
        gauge(
            r,
            "ipfailover_public_addresses",
            "Public addresses this node may host (its public_addresses file).",
            usize_int(own.ips.len()),
        )?;
        let mut lists: Vec<&PublicIps> = vec![own];
        lists.extend(snap.peer_public_ips.iter());
        gauge(
            r,
            "ipfailover_addresses_unhosted",
            "Public addresses listed by an answering node that no answering node shows an owner for (alert when > 0 for longer than a failover takes).",
            usize_int(unhosted(&lists).len()),
        )?;
        gauge(
            r,
            "ipfailover_address_lists_answered",
            "Nodes whose failoverd answered this scrape's GET_PUBLIC_IPS (this node included).",
            usize_int(lists.len()),
        )?;
    }
    if let Some(s) = &snap.ip_status {
        gauge(
            r,
            "ipfailover_addresses_hosted",
            "Public addresses configured on this node now.",
            usize_int(s.hosted.len()),
        )?;
        gauge(
            r,
            "ipfailover_addresses_missing",
            "Addresses this node should host but are not configured on it.",
            usize_int(s.missing.len()),
        )?;
        gauge(
            r,
            "ipfailover_addresses_unexpected",
            "Addresses configured on this node that it should not host.",
            usize_int(s.unexpected.len()),
        )?;
        gauge(
            r,
            "ipfailover_hook_failures",
            "Failed hook runs failoverd remembers (the 16 latest; ipfailover status lists them).",
            usize_int(s.hook_failures.len()),
        )?;
    }
    Ok(())
}

fn transport(r: &Registry, snap: &Snapshot) -> prometheus::Result<()> {
    if let Some(peers) = &snap.peers {
        let connected = gauge_vec(
            r,
            "ipfailover_transport_peer_connected",
            "1 if transportd's link to the peer node is up.",
            &["peer"],
        )?;
        let since = gauge_vec(
            r,
            "ipfailover_transport_peer_state_age_seconds",
            "Seconds since the link to the peer last went up or down.",
            &["peer"],
        )?;
        for p in &peers.peers {
            let peer = p.pnn.to_string();
            connected
                .with_label_values(&[peer.as_str()])
                .set(i64::from(p.connected));
            since
                .with_label_values(&[peer.as_str()])
                .set(int(p.since_ms / 1000));
        }
    }
    let Some(Some(t)) = snap
        .statistics
        .iter()
        .find(|(d, _)| d == "transportd")
        .map(|(_, s)| s)
    else {
        return Ok(());
    };
    let frames = counter_vec(
        r,
        "ipfailover_transport_frames_total",
        "Frames transportd handled: local_in from this node's daemons, peer_in from other nodes, delivered to local daemons, forwarded to other nodes.",
        &["direction"],
    )?;
    for name in TRANSPORT_FRAMES {
        if let Some(v) = t.get(name) {
            frames.with_label_values(&[name]).inc_by(v);
        }
    }
    let errors = counter_vec(
        r,
        "ipfailover_transport_errors_total",
        "Frames or links transportd refused or could not deliver, by kind (its STATISTICS names).",
        &["kind"],
    )?;
    for name in TRANSPORT_ERRORS {
        if let Some(v) = t.get(name) {
            errors.with_label_values(&[name]).inc_by(v);
        }
    }
    let families = [
        (
            "ipfailover_transport_peer_frames_total",
            "Frames transportd received from (in) or queued to (out) the peer node.",
            "peer",
        ),
        (
            "ipfailover_transport_peer_bytes_total",
            "Bytes of the frames transportd received from (in) or queued to (out) the peer node (before encryption).",
            "peer",
        ),
        (
            "ipfailover_transport_service_frames_total",
            "Frames transportd received from (in) or delivered to (out) a local service; clients: every non-daemon client together.",
            "service",
        ),
        (
            "ipfailover_transport_service_bytes_total",
            "Bytes of the frames transportd received from (in) or delivered to (out) a local service.",
            "service",
        ),
    ];
    let mut vecs = Vec::with_capacity(families.len());
    for (name, help, label) in families {
        vecs.push(counter_vec(r, name, help, &[label, "direction"])?);
    }
    for (n, v) in &t.counters {
        if let Some((who, unit, dir)) = traffic_counter(n) {
            let i = match (who, unit) {
                (Traffic::Peer(_), "frames") => 0,
                (Traffic::Peer(_), _) => 1,
                (Traffic::Service(_), "frames") => 2,
                (Traffic::Service(_), _) => 3,
            };
            let label = match who {
                Traffic::Peer(p) | Traffic::Service(p) => p,
            };
            vecs[i].with_label_values(&[label, dir]).inc_by(*v);
        }
    }
    Ok(())
}

/// Whose traffic a transportd counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Traffic<'a> {
    /// `peerN_...`: the peer's PNN.
    Peer(&'a str),
    /// `service_NAME_...`: the local service's name.
    Service(&'a str),
}

/// Splits transportd's `peerN_{frames,bytes}_{in,out}` and
/// `service_NAME_{frames,bytes}_{in,out}` counters into (whose, unit,
/// direction).
fn traffic_counter(name: &str) -> Option<(Traffic<'_>, &str, &str)> {
    let (rest, dir) = name.rsplit_once('_')?;
    let (who, unit) = rest.rsplit_once('_')?;
    if !matches!(dir, "in" | "out") || !matches!(unit, "frames" | "bytes") {
        return None;
    }
    if let Some(pnn) = who.strip_prefix("peer") {
        return (!pnn.is_empty() && pnn.bytes().all(|b| b.is_ascii_digit())).then_some((
            Traffic::Peer(pnn),
            unit,
            dir,
        ));
    }
    let service = who.strip_prefix("service_")?;
    (!service.is_empty()).then_some((Traffic::Service(service), unit, dir))
}

#[cfg(test)]
mod tests;
