//! The executor's internals: its shared state, the take/release/update
//! operations and the background tasks (monitor, announcers, publisher).
//!
//! Locking: `op` (async) serialises every operation that changes the kernel
//! (take, release, update, healing, link moves); `state` (sync) is held only
//! for short reads and writes, never across an `.await`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use netlink::addr::IpPrefix;
use netlink::events::{Event, Events};
use netlink::killtcp::KillTcp;
use netlink::lease::KernelLease;
use netlink::link::{self as nllink, Netlink};
use netlink::nft::{NftSet, NftTable};
use netlink::packet::sender::{FrameSender, SegmentSender};
use netlink::packet::TcpSegment;
use netlink::sockdiag::{canonical, Connection, SockDiag};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;
use transport::client::Client;
use transport::msg::conntrack::{
    get_connections, AddressCount, GetConnections, TrackedConnection, GET_COUNTS,
};
use transport::msg::failover::{Hosted, HOSTED};
use transport::proto::service::CONNTRACKD;
use transport::proto::{Address, BROADCAST_SERVICE, LOCAL};

use super::hooks::{HookEvent, HookOutcome, Hooks};
use super::plan::choose_interface;
use super::{
    Discrepancies, DropMode, ExecutorConfig, HostedAddress, NodeError, NodeEvent, NodeStatus, Taken,
};
use crate::counters::{self, COUNTERS};
use crate::history::{self, HISTORY};
use crate::public_addresses::PublicAddress;

/// Which addresses have tracked connections, fetched once per take.
type CountsCell = tokio::sync::OnceCell<Option<HashSet<IpAddr>>>;

/// Hook failures kept for the status.
const MAX_HOOK_FAILURES: usize = 16;
/// Interval of the HOSTED re-publication and of the kernel resync.
const RESYNC_INTERVAL: Duration = Duration::from_secs(3);

/// The lease gate: may addresses be configured now?
#[derive(Debug, Default, Clone, Copy)]
enum Permit {
    /// No daemon manages the lease (an executor driven directly).
    #[default]
    Unlimited,
    /// Until this instant.
    Until(tokio::time::Instant),
    /// Closed.
    Closed,
}

#[derive(Debug, Default)]
struct State {
    hosted: BTreeMap<IpAddr, HostedAddress>,
    permit: Permit,
    /// Addresses a release has taken out of `hosted` but not yet removed
    /// from the kernel (it resets their connections first): address →
    /// (interface, prefix length). `drop_all` removes these too.
    releasing: HashMap<IpAddr, (String, u8)>,
    announcers: HashMap<IpAddr, JoinHandle<()>>,
    link_override: HashMap<String, bool>,
    /// Kernel usability (admin up and carrier) of every link, by name, from
    /// the last dump and the link events since: announcers consult it
    /// instead of asking the kernel once per address and round.
    links: HashMap<String, bool>,
    hook_failures: VecDeque<super::HookFailure>,
    /// The last run of each event's hooks (event name → every hook of the
    /// directory then), for `ipfailover event status`.
    hook_status: BTreeMap<String, Vec<super::hooks::ScriptRun>>,
    /// One frame sender per interface, opened on first use and kept.
    /// Closing an `AF_PACKET` socket waits for an RCU grace period in the
    /// kernel (`synchronize_net` in `packet_release`: ~10 ms on a loaded
    /// machine), so a sender per announcement blocked a runtime thread that
    /// long per address — 256 addresses kept both threads blocked for
    /// seconds (slow mass releases, late lease news, lease flaps).
    senders: HashMap<String, Arc<FrameSender>>,
    /// Addresses already reported as CannotHost (reported once per loss).
    cannot_host: HashSet<IpAddr>,
    /// Counts unbroken leases: bumped whenever the gate closes or news of
    /// a lease comes more than `lapse_grace` after the previous one ran
    /// out. See `leased_in`.
    lease_epoch: u64,
    /// Addresses this executor put in the kernel lease's guard sets (the
    /// tables keep them: nothing takes an address out). Only these may be
    /// reset before their removal when the lease is lost (see
    /// [`DropMode::LeaseLost`]): for any other address the removal is the
    /// only thing that stops this node serving it.
    guarded: HashSet<IpAddr>,
    /// The end of the earliest lease that ended (the gate closed on it, or
    /// news came only after it ran out) and whose addresses no `drop_all`
    /// has removed yet: the addresses a drop removes may have been held
    /// under it, so the drop counts its deadline from it, not from when
    /// the drop started (the lease watch or the loop may act late; the
    /// leader counts from the end). See [`drop_reset_by`].
    ended: Option<tokio::time::Instant>,
    /// The lease (epoch) in which each address got its kernel lease
    /// element (a take, or an adoption). The keeper renews only addresses
    /// of the current epoch: an address held across a lapse — frozen over
    /// its lease end, say, while the leader gave it away — must never be
    /// re-leased by the next lease's news before it is dropped.
    leased_in: HashMap<IpAddr, u64>,
    /// `drop_all` calls under way: while any runs, the gate stays shut
    /// whatever lease news come (see [`permitted`]). Otherwise a lease
    /// that came back during a drop reopened it, and the heal (which runs
    /// on the drop's own address removals) restored every hosted address
    /// before the drop forgot them: configured, no longer hosted, known to
    /// no plan (seen with 256 addresses: all of them, for 100 ms).
    dropping: u32,
}

/// Counts a `drop_all` in [`State::dropping`] for as long as it lives
/// (dropped at its end, or when its future is dropped half way).
struct Dropping<'a>(&'a Inner);

impl Drop for Dropping<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.dropping = st.dropping.saturating_sub(1);
    }
}

pub(super) struct Inner {
    config: ExecutorConfig,
    nl: Netlink,
    nft: NftTable,
    /// The kernel lease (`<nft_table>_lease`), when configured: see
    /// [`lease_keeper`].
    pub(super) lease: Option<KernelLease>,
    /// Wakes [`lease_keeper`]: the lease gate changed (or addresses were
    /// adopted).
    lease_wake: Arc<Notify>,
    segments: Arc<SegmentSender>,
    state: Mutex<State>,
    op: tokio::sync::Mutex<()>,
    pub(super) hosted_tx: watch::Sender<Vec<IpAddr>>,
    events: mpsc::UnboundedSender<NodeEvent>,
    client: Option<Client>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    hooks_tx: mpsc::UnboundedSender<HookJob>,
    /// The hooks (to skip the queue when the directory has none).
    hooks: Hooks,
    /// A coalesced reconcile is queued and has not started yet.
    reconcile_pending: AtomicBool,
}

/// One event for the hook runner, and who waits for its outcome.
type HookJob = (HookEvent, oneshot::Sender<HookOutcome>);

/// Waits for queued hooks. The runner handles jobs in order, so waiting for
/// the last one is waiting for all (one wake-up instead of one per address:
/// a current-thread runtime took a scheduler tick per wake-up, 3.7 s for 256).
/// Returns at once if the runner has stopped.
async fn wait_hooks(mut waits: Vec<oneshot::Receiver<HookOutcome>>) {
    if let Some(last) = waits.pop() {
        drop(waits);
        let _ = last.await;
    }
}

/// The addresses of `prefixes` that are on `iface` now, for sorting out
/// which members of a failed pipelined batch went through.
async fn present_on(nl: &Netlink, iface: &str) -> HashSet<IpAddr> {
    match nl.addresses(iface).await {
        Ok(list) => list.into_iter().map(|p| p.addr()).collect(),
        Err(e) => {
            tracing::debug!(%iface, error = %e, "cannot list addresses");
            HashSet::new()
        }
    }
}

/// Sorts `prefixes` into the reverse of the kernel's order on `iface`:
/// secondaries before their primary. Deleting a primary makes Linux promote
/// the next secondary (with `promote_secondaries`), which costs a pass over
/// the subnet's addresses each time; deleting the secondaries first avoids
/// it (256 addresses of one subnet: 15 ms instead of 280 ms).
async fn order_for_removal(nl: &Netlink, iface: &str, prefixes: &mut [IpPrefix]) {
    let Ok(kernel) = nl.addresses(iface).await else {
        return;
    };
    let rank: HashMap<IpAddr, usize> = kernel
        .iter()
        .enumerate()
        .map(|(i, p)| (p.addr(), i))
        .collect();
    prefixes.sort_by_key(|p| std::cmp::Reverse(rank.get(&p.addr()).copied().unwrap_or(0)));
}

/// A kernel lease renewal slower than this is redone at once (see
/// `Inner::renew_kernel_lease`).
const RENEW_SLOP: Duration = Duration::from_millis(2);

/// A renewal the kernel refused as busy (EBUSY) is tried again this many
/// times, each after [`BUSY_PAUSE`], while its lease has time left (a
/// renewal whose end has passed revokes instead): otherwise the addresses
/// stop answering until the next lease news, a quarter of a lease later.
const BUSY_RETRIES: u32 = 3;

/// The pause before a renewal refused as busy is retried. Not zero: at
/// real-time priority an immediate retry can keep the kernel worker that
/// would end the busy state (they run at normal priority) off the CPU.
const BUSY_PAUSE: Duration = Duration::from_millis(1);

/// After a failed renewal (`refused` busy refusals before it): the pause
/// before retrying it, or `None` to give up (the elements then run out by
/// themselves; the next lease news renews them).
fn busy_retry(e: &netlink::nft::NftError, refused: u32) -> Option<Duration> {
    (e.is_busy() && refused < BUSY_RETRIES).then_some(BUSY_PAUSE)
}

/// Keeps the kernel lease (`netlink::lease`) in step with the lease gate:
/// renews the element of every hosted address whenever the daemon gives
/// news of the lease (four times a lease), and revokes them all when the
/// gate closes. It waits for nothing but its wake-up and the kernel: no
/// operation lock, hook or request can delay it — and if it is delayed
/// anyway (the process is frozen or dead), the elements run out by
/// themselves when the lease does, which is the point.
async fn lease_keeper(inner: Weak<Inner>, lease: KernelLease, wake: Arc<Notify>) {
    let mut keeper = Keeper::default();
    loop {
        wake.notified().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner.renew_kernel_lease(&lease, &mut keeper).await;
    }
}

/// What one keeper renewal does, address by address.
#[derive(Debug, PartialEq, Eq)]
struct KeeperSets {
    /// Hosted or releasing, leased in this unbroken lease (see
    /// `State::leased_in`): renewed.
    renew: Vec<IpAddr>,
    /// Hosted or releasing, not leased in this lease: left out.
    skipped: Vec<IpAddr>,
    /// Every address leased in an earlier lease, hosted or not (a take of
    /// an earlier lease may still be in flight), and the skipped ones:
    /// their elements are ended in the renewal's transaction, since the
    /// renewal raises the kernel's cap for them too.
    stale: Vec<IpAddr>,
}

fn keeper_sets(
    hosted: impl Iterator<Item = IpAddr>,
    leased_in: &HashMap<IpAddr, u64>,
    epoch: u64,
) -> KeeperSets {
    let (renew, skipped): (Vec<IpAddr>, Vec<IpAddr>) =
        hosted.partition(|a| leased_in.get(a) == Some(&epoch));
    let stale: Vec<IpAddr> = leased_in
        .iter()
        .filter(|(_, e)| **e != epoch)
        .map(|(a, _)| *a)
        .chain(skipped.iter().copied())
        .collect::<std::collections::BTreeSet<IpAddr>>()
        .into_iter()
        .collect();
    KeeperSets {
        renew,
        skipped,
        stale,
    }
}

/// What the lease keeper remembers between renewals.
#[derive(Debug, Default)]
struct Keeper {
    /// A lease was ever renewed (a gate closed since the start revokes
    /// nothing, see `renew_kernel_lease`).
    leased_before: bool,
    /// The end the elements were last renewed to, and the addresses: a
    /// renewal after it is a gap in which they did not answer (logged, it
    /// is what clients see as dropped packets).
    last: Option<(std::time::Instant, Vec<IpAddr>)>,
    /// Hosted addresses left out of the last renewal (and their elements
    /// ended) because they were not leased in the current lease (logged
    /// when the set changes).
    skipped: Vec<IpAddr>,
}

/// The most `drop_all` waits for the reset of local connections (and, on a
/// lost lease, the revoke of their kernel lease elements) before it removes
/// the addresses (the safety rule comes first).
const DROP_RESET_LIMIT: Duration = Duration::from_millis(200);
/// `drop_all` resets before it removes only if at least this much is left
/// before its deadline: less is not enough for one socket's reset (a
/// sock_diag dump and a destroy: 5 ms and more measured on a loaded 2-core
/// machine), and the addresses are then removed first rather than kept
/// for nothing. It is more than the fast profile's whole budget (2.5 ms):
/// there a lost lease always removes first, as before.
const MIN_RESET_BUDGET: Duration = Duration::from_millis(3);

/// Until when `drop_all` may reset local connections before it removes the
/// addresses, given the end of the lease they were held under as this
/// executor knows it (`ended`: `None` when it was never given one), the
/// leader's `margin` and the drop's start `now`; `None` means remove
/// first.
///
/// The leader gives the addresses away `margin` after the lease end on its
/// own clock; what clusterd guarantees (and its cluster simulator checks,
/// clusterd/tests/cluster_sim.rs, with clock-rate drift and message delays)
/// is that at least half the margin has passed in real time since the end
/// this node was told. The resets get half of that: they end by
/// `ended + margin / 4`, and never more than [`DROP_RESET_LIMIT`] after
/// `now` (a lease reported lost before its end, an orderly stop). The last
/// quarter is for the removal itself (one pipelined rtnetlink request per
/// interface, under a millisecond for 100 addresses) and scheduling. The
/// end is on this host's `CLOCK_MONOTONIC` (the clock of clusterd's LEASE
/// events; tokio's `Instant` reads the same clock), so the deadline needs
/// no conversion between clocks. When it has passed or less than
/// [`MIN_RESET_BUDGET`] is left (a lease watch that fired late; always in
/// the fast profile, whose 10 ms margin leaves 2.5 ms in all), the
/// addresses are removed first. Without a known end: the limit.
fn drop_reset_by(
    ended: Option<tokio::time::Instant>,
    margin: Duration,
    now: tokio::time::Instant,
) -> Option<tokio::time::Instant> {
    let limit = now + DROP_RESET_LIMIT;
    let by = ended.map_or(limit, |e| (e + margin / 4).min(limit));
    (by >= now + MIN_RESET_BUDGET).then_some(by)
}
/// Every link of the namespace. (There was a retry after 250 ms here, for
/// dumps "stalled on the shared rtnetlink handle"; the stall was the
/// runtime's threads blocked in `close()` of per-announcement packet
/// sockets, see `State::senders`, and the retry only abandoned dumps
/// half-read. The dump has its own 10 s limit.)
async fn links_of(nl: &Netlink) -> Result<Vec<netlink::link::LinkState>, NodeError> {
    Ok(nl.links().await?)
}

/// Every address of the namespace with its interface index.
async fn addresses_of(nl: &Netlink) -> Result<Vec<(u32, IpPrefix)>, NodeError> {
    Ok(nl.all_addresses().await?)
}

/// The copies of `wanted` in a dump of the kernel's addresses (`present`:
/// link index and prefix), except each one's hosted copy: a copy on the
/// link `hosted_on` names for its address (`None`: every copy counts).
/// What a removal must verify by a dump rather than trust its answer: a
/// delete by interface name removes nothing from a link renamed meanwhile,
/// whether it fails (no such link) or succeeds (a new link took the name:
/// "not there" is `Ok`), and the renamed link keeps its addresses (hole 6).
fn copies_left(
    wanted: &[IpAddr],
    present: &[(u32, IpPrefix)],
    hosted_on: &dyn Fn(IpAddr) -> Option<u32>,
) -> Vec<(u32, IpPrefix)> {
    present
        .iter()
        .filter(|(index, p)| wanted.contains(&p.addr()) && hosted_on(p.addr()) != Some(*index))
        .copied()
        .collect()
}

/// The lease gate is open now.
fn permitted(st: &State) -> bool {
    if st.dropping > 0 {
        return false;
    }
    match st.permit {
        Permit::Unlimited => true,
        Permit::Until(t) => tokio::time::Instant::now() < t,
        Permit::Closed => false,
    }
}

fn prefix_of(p: &PublicAddress) -> Result<IpPrefix, NodeError> {
    IpPrefix::new(p.addr, p.prefix).map_err(|_| NodeError::BadPrefix {
        addr: p.addr,
        prefix: p.prefix,
    })
}

/// Sends segments through the shared raw sockets.
async fn send_segments(
    sender: &Arc<SegmentSender>,
    segments: Vec<TcpSegment>,
) -> Result<netlink::packet::sender::SendStats, NodeError> {
    Ok(sender.send(&segments).await?)
}

/// killtcp on one interface.
async fn kill_connections(
    kill: KillTcp,
    conns: Vec<Connection>,
) -> Result<netlink::killtcp::KillReport, NodeError> {
    let report = kill.execute(&conns).await?;
    counters::add(&COUNTERS.resets, report.killed.len());
    Ok(report)
}

/// Drops a frame sender on the blocking pool: closing its socket waits for
/// an RCU grace period, which must not stall a runtime thread.
fn close_sender(sender: Arc<FrameSender>) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn_blocking(move || drop(sender));
        }
        Err(_) => drop(sender),
    }
}

fn set_promote(iface: &str) {
    if let Err(e) = nllink::set_promote_secondaries(iface) {
        tracing::warn!(%iface, error = %e, "cannot set promote_secondaries: removing the primary address of a subnet would remove its secondaries");
    }
}

impl Inner {
    pub(super) async fn start(
        config: ExecutorConfig,
        client: Option<Client>,
        lease_rt: Option<&tokio::runtime::Handle>,
    ) -> Result<(Arc<Inner>, mpsc::UnboundedReceiver<NodeEvent>), NodeError> {
        let nl = Netlink::new()?;
        let nft = NftTable::new(&config.nft_table)?;
        nft.install().execute().await?;
        let lease = if config.kernel_lease {
            let lease = KernelLease::new(&format!("{}_lease", config.nft_table))?
                .with_slack(config.lease_slack);
            // Keeps the elements a previous failoverd left: they end when
            // its last renewal runs out, not now and not later.
            lease.install(&[]).await?;
            Some(lease)
        } else {
            None
        };
        let lease_wake = Arc::new(Notify::new());
        let events_stream = Events::subscribe()?;
        let segments = Arc::new(SegmentSender::open()?);
        let (tx, rx) = mpsc::unbounded_channel();
        let (hosted_tx, _) = watch::channel(Vec::new());
        let (hooks_tx, hooks_rx) = mpsc::unbounded_channel();
        let mut hooks = Hooks::new(config.hooks_dir.clone(), config.hook_timeout);
        // CTDB's event scripts call `ctdb`: they find a private one that
        // answers for this node.
        if let (Some(run_dir), Some(_)) = (&config.run_dir, &config.hooks_dir) {
            match config::ctdb_shim::setup(run_dir) {
                Ok(env) => hooks = hooks.with_env(env),
                Err(e) => tracing::warn!("event hooks: {e}"),
            }
        }
        let inner = Arc::new(Inner {
            hooks_tx,
            hooks: hooks.clone(),
            reconcile_pending: AtomicBool::new(false),
            config,
            nl,
            nft,
            lease: lease.clone(),
            lease_wake: Arc::clone(&lease_wake),
            segments,
            state: Mutex::new(State::default()),
            op: tokio::sync::Mutex::new(()),
            hosted_tx,
            events: tx,
            client,
            tasks: Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&inner);
        let mut tasks = vec![
            tokio::spawn(monitor(weak.clone(), events_stream)),
            tokio::spawn(hook_runner(weak.clone(), hooks, hooks_rx)),
        ];
        if let Some(client) = &inner.client {
            tasks.push(tokio::spawn(publish_hosted(
                client.clone(),
                inner.hosted_tx.subscribe(),
            )));
        }
        if let Some(lease) = lease {
            let keeper = lease_keeper(weak.clone(), lease, lease_wake);
            tasks.push(match lease_rt {
                Some(rt) => rt.spawn(keeper),
                None => tokio::spawn(keeper),
            });
        }
        if let Some(every) = inner.config.garp_refresh {
            tasks.push(tokio::spawn(refresh(weak, every)));
        }
        *inner.tasks.lock().unwrap_or_else(PoisonError::into_inner) = tasks;
        Ok((inner, rx))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn set_lease(&self, until: Option<tokio::time::Instant>) {
        {
            let mut st = self.lock();
            let now = tokio::time::Instant::now();
            let lapsed = match (st.permit, until) {
                // Closing, or a lease after a closed gate: a new epoch.
                (_, None) | (Permit::Closed, Some(_)) => true,
                // News well after the previous lease ran out: a new
                // lease (see `ExecutorConfig::lapse_grace`).
                (Permit::Until(old), Some(_)) => old + self.config.lapse_grace <= now,
                (Permit::Unlimited, Some(_)) => false,
            };
            if lapsed {
                st.lease_epoch += 1;
                if let Permit::Until(old) = st.permit {
                    st.ended = Some(st.ended.map_or(old, |e| e.min(old)));
                }
            }
            st.permit = until.map_or(Permit::Closed, Permit::Until);
        }
        self.lease_wake.notify_one();
    }

    /// Adds addresses to the kernel lease's guard sets: from now on they
    /// answer only while this node holds a lease element for them.
    pub(super) async fn guard(&self, addrs: &[IpAddr]) -> Result<(), NodeError> {
        if let Some(lease) = &self.lease {
            lease.guard(addrs).await?;
            self.lock().guarded.extend(addrs.iter().copied());
        }
        Ok(())
    }

    /// Before adding `ips` to the kernel: guards them and gives them a
    /// lease element ending with the gate's lease, so that they answer from
    /// the first packet and stop answering when the lease ends even if no
    /// process of ours is left to remove them. Err when they must not be
    /// added: `None` when the lease is over, else why the kernel refused.
    async fn lease_for_take(&self, ips: &[IpAddr]) -> Result<(), Option<String>> {
        let Some(lease) = &self.lease else {
            return Ok(());
        };
        // Recorded before the kernel commit: a keeper renewal of a later
        // lease that runs while this one is in flight then ends these
        // elements (see `renew_kernel_lease`); restored if this fails.
        let (end, epoch, before) = {
            let mut st = self.lock();
            if st.dropping > 0 {
                return Err(None);
            }
            match st.permit {
                Permit::Unlimited => return Ok(()),
                Permit::Closed => return Err(None),
                Permit::Until(t) => {
                    let epoch = st.lease_epoch;
                    let before: Vec<(IpAddr, Option<u64>)> = ips
                        .iter()
                        .map(|ip| (*ip, st.leased_in.insert(*ip, epoch)))
                        .collect();
                    (t.into_std(), epoch, before)
                }
            }
        };
        let outcome = match lease.guard(ips).await {
            Ok(()) => {
                self.lock().guarded.extend(ips.iter().copied());
                lease.renew_for_take(ips, end).await
            }
            Err(e) => Err(e),
        };
        if !matches!(outcome, Ok(Some(_))) {
            let mut st = self.lock();
            for (ip, prev) in before {
                if st.leased_in.get(&ip) == Some(&epoch) {
                    match prev {
                        Some(p) => st.leased_in.insert(ip, p),
                        None => st.leased_in.remove(&ip),
                    };
                }
            }
        }
        match outcome {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(None),
            Err(e) => Err(Some(e.to_string())),
        }
    }

    /// Renews the kernel lease of every hosted or releasing address to the
    /// gate's lease end, or revokes them all when the gate is closed. The
    /// renewal moves the kernel's cap (one wall-clock bound for every
    /// guarded address, see `netlink::lease`) to this lease's end, so it
    /// also ends, in the same transaction, the elements of every address
    /// leased in an earlier lease (their own lease is over; an element of
    /// theirs can still be there only if its renewal was delayed, and the
    /// raised cap must not let it answer). A
    /// renewal that took long (the process was stopped between reading the
    /// clock and the kernel's commit, so the element may outlive the lease
    /// by that much) is redone at once, at most three times; one the kernel
    /// refused as busy is retried after a pause of a millisecond, at most
    /// [`BUSY_RETRIES`] times (each retry reads the lease end again, and
    /// revokes once it has passed). A gate that has
    /// been closed since the start (the lease not known yet) revokes
    /// nothing: a restarted failoverd leaves its predecessor's elements to
    /// run out when that lease does, so that addresses it adopts do not
    /// blip.
    async fn renew_kernel_lease(&self, lease: &KernelLease, keeper: &mut Keeper) {
        // Each pass renews, or returns; `slow` and `refused` bound the
        // passes (three slow ones, BUSY_RETRIES refused ones).
        let (mut slow, mut refused) = (0, 0);
        while slow < 3 {
            let (permit, sets) = {
                let st = self.lock();
                let sets = keeper_sets(
                    st.hosted.keys().chain(st.releasing.keys()).copied(),
                    &st.leased_in,
                    st.lease_epoch,
                );
                (st.permit, sets)
            };
            let KeeperSets {
                renew: addrs,
                skipped,
                stale,
            } = sets;
            if skipped != keeper.skipped {
                if !skipped.is_empty() {
                    tracing::warn!(
                        ?skipped,
                        "kernel lease: hosted addresses not leased in this lease do not answer until taken again (their elements are ended)"
                    );
                }
                keeper.skipped = skipped;
            }
            let end = match permit {
                Permit::Unlimited => return,
                Permit::Closed if !keeper.leased_before => return,
                Permit::Closed => None,
                Permit::Until(t) => {
                    keeper.leased_before = true;
                    Some(t.into_std())
                }
            };
            if let (Some((last_end, last_addrs)), Some(_)) = (&keeper.last, end) {
                let now = std::time::Instant::now();
                let gap: Vec<&IpAddr> = addrs.iter().filter(|a| last_addrs.contains(a)).collect();
                if now > *last_end && !gap.is_empty() {
                    tracing::warn!(
                        late_ms = (now - *last_end).as_secs_f64() * 1e3,
                        addresses = ?gap,
                        "kernel lease renewed after its elements ran out: the addresses did not answer in between"
                    );
                }
            }
            keeper.last = match end {
                Some(e) if !addrs.is_empty() => Some((e, addrs.clone())),
                _ => None,
            };
            tracing::debug!(
                ends_in_ms = end.map(|e| e
                    .saturating_duration_since(std::time::Instant::now())
                    .as_secs_f64()
                    * 1e3),
                count = addrs.len(),
                "kernel lease: renewing"
            );
            let outcome = match end {
                Some(end) if !addrs.is_empty() => {
                    lease.renew_until_revoking(&addrs, &stale, end).await
                }
                Some(_) if !stale.is_empty() => {
                    if let Err(e) = lease.revoke(&stale).await {
                        tracing::warn!(error = %e, "kernel lease: cannot end the elements of an earlier lease");
                    }
                    return;
                }
                Some(_) => return,
                None => lease.revoke_all().await.map(|()| None),
            };
            match outcome {
                Ok(Some(took)) if took > RENEW_SLOP => {
                    slow += 1;
                    tracing::warn!(
                        took_ms = took.as_secs_f64() * 1e3,
                        "kernel lease renewal was slow: renewing again"
                    );
                }
                Ok(None) if end.is_some() => {
                    tracing::warn!(
                        addresses = ?addrs,
                        "kernel lease: the lease ended before the renewal reached the kernel: elements revoked"
                    );
                    keeper.last = None;
                    return;
                }
                Ok(_) => return,
                Err(e) if busy_retry(&e, refused).is_some() => {
                    refused += 1;
                    tracing::warn!(error = %e, attempt = refused, "kernel lease renewal refused as busy: retrying");
                    tokio::time::sleep(BUSY_PAUSE).await;
                }
                Err(e) => {
                    // The elements run out by themselves: safe, but the
                    // addresses stop answering until a renewal succeeds.
                    tracing::error!(error = %e, "cannot renew the kernel lease");
                    return;
                }
            }
        }
    }

    fn emit(&self, ev: NodeEvent) {
        // The daemon may not listen (tests); that is fine.
        let _ = self.events.send(ev);
    }

    fn publish(&self) {
        let ips = self.hosted_ips();
        self.hosted_tx.send_replace(ips.clone());
        self.emit(NodeEvent::HostedChanged(ips));
    }

    pub(super) fn hosted_ips(&self) -> Vec<IpAddr> {
        self.lock().hosted.keys().copied().collect()
    }

    pub(super) fn hosted(&self) -> Vec<HostedAddress> {
        self.lock().hosted.values().cloned().collect()
    }

    pub(super) fn status(&self) -> NodeStatus {
        let st = self.lock();
        NodeStatus {
            hosted: st.hosted.values().cloned().collect(),
            hook_failures: st.hook_failures.iter().cloned().collect(),
        }
    }

    pub(super) fn set_link_override(&self, iface: &str, up: Option<bool>) {
        let mut st = self.lock();
        match up {
            Some(false) => st.link_override.insert(iface.to_owned(), false),
            _ => st.link_override.remove(iface),
        };
    }

    pub(super) fn shutdown(&self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            t.abort();
        }
        let senders = {
            let mut st = self.lock();
            for (_, t) in st.announcers.drain() {
                t.abort();
            }
            std::mem::take(&mut st.senders)
        };
        for (_, s) in senders {
            close_sender(s);
        }
    }

    /// The frame sender of `iface`, opened on first use (see
    /// `State::senders`).
    fn sender(&self, iface: &str) -> Result<Arc<FrameSender>, NodeError> {
        if let Some(s) = self.lock().senders.get(iface) {
            return Ok(Arc::clone(s));
        }
        let opened = Arc::new(FrameSender::open(iface)?);
        let mut st = self.lock();
        let kept = Arc::clone(st.senders.entry(iface.to_owned()).or_insert(opened.clone()));
        drop(st);
        if !Arc::ptr_eq(&kept, &opened) {
            // Another task opened one meanwhile.
            close_sender(opened);
        }
        Ok(kept)
    }

    /// Forgets the sender of `iface` (the interface is gone, or a send
    /// failed: it may be bound to a deleted interface of the same name);
    /// the next announcement opens a new one.
    fn forget_sender(&self, iface: &str) {
        let old = self.lock().senders.remove(iface);
        if let Some(s) = old {
            close_sender(s);
        }
    }

    /// Whether `addr` may be announced now: it is hosted, the lease gate
    /// is open and, with the kernel lease, it was leased in this lease.
    /// Announcements leave through a packet socket, which the kernel
    /// lease's ARP rules do not see, so this is their only guard: a node
    /// whose lease has ended must not tell the clients to send to it while
    /// the survivors serve its addresses. (Found by
    /// `kernel_lease_cluster::a_frozen_node_leaves_no_duplicate`: a
    /// gratuitous ARP round pending when every process of the node was
    /// stopped went out at the SIGCONT, 3.3 s after the lease end and 4 ms
    /// after the new owner's last answer.)
    fn may_announce(&self, addr: IpAddr) -> bool {
        let st = self.lock();
        st.hosted.contains_key(&addr)
            && permitted(&st)
            && (self.lease.is_none()
                || matches!(st.permit, Permit::Unlimited)
                || st.leased_in.get(&addr) == Some(&st.lease_epoch))
    }

    /// Sends one announcement of `addr` on `iface` through the interface's
    /// kept sender, if it may be announced (see `may_announce`). Returns
    /// the frames sent.
    async fn announce_on(&self, iface: &str, addr: IpAddr) -> Result<usize, NodeError> {
        if !self.may_announce(addr) {
            tracing::debug!(%addr, %iface, "not announced: not hosted under the current lease");
            return Ok(0);
        }
        let sender = self.sender(iface)?;
        let r = sender.announce(addr).await;
        match &r {
            Ok(n) => {
                counters::add(&COUNTERS.announcements, *n);
                if *n > 0 {
                    HISTORY.announced(addr, history::now_ns());
                }
            }
            Err(_) => self.forget_sender(iface),
        }
        Ok(r?)
    }

    /// Interface name → usable (admin up, carrier, not forced down).
    pub(super) async fn usable_map(&self) -> Result<HashMap<String, bool>, NodeError> {
        let links = links_of(&self.nl).await?;
        let mut st = self.lock();
        st.links = links
            .iter()
            .map(|l| (l.name.clone(), l.is_usable()))
            .collect();
        Ok(links
            .into_iter()
            .map(|l| {
                let forced_down = st.link_override.get(&l.name) == Some(&false);
                let up = l.is_usable() && !forced_down;
                (l.name, up)
            })
            .collect())
    }

    async fn link_usable(&self, iface: &str) -> bool {
        {
            let st = self.lock();
            if st.link_override.get(iface) == Some(&false) {
                return false;
            }
            if let Some(up) = st.links.get(iface) {
                return *up;
            }
        }
        match self.nl.link(iface).await {
            Ok(l) => l.is_usable(),
            Err(_) => false,
        }
    }

    /// Queues the hooks of `ev` behind those of earlier operations (so
    /// they run in the order of the operations, outside the operation
    /// lock); the receiver gets the outcome.
    fn queue_hook(&self, ev: HookEvent) -> oneshot::Receiver<HookOutcome> {
        let (tx, rx) = oneshot::channel();
        if self.hooks.entries().is_empty() {
            // No hook to run: do not go through the runner at all.
            let _ = tx.send(HookOutcome::default());
            return rx;
        }
        // A send error means the runner has stopped (shutdown): the
        // receiver then reports an empty outcome.
        let _ = self.hooks_tx.send((ev, tx));
        rx
    }

    /// The last run of `event`'s hooks, if they ran since start.
    pub(super) fn hook_status(&self, event: &str) -> Option<Vec<super::hooks::ScriptRun>> {
        self.lock().hook_status.get(event).cloned()
    }

    /// The hooks (event scripts).
    pub(super) fn hooks(&self) -> &Hooks {
        &self.hooks
    }

    /// Runs the hooks of `ev` in turn and waits for them.
    pub(super) async fn run_hooks(&self, ev: HookEvent) -> HookOutcome {
        self.queue_hook(ev).await.unwrap_or_default()
    }

    fn record(&self, ev: &HookEvent, outcome: &HookOutcome) {
        self.lock()
            .hook_status
            .insert(ev.name(), outcome.scripts.clone());
        if !outcome.failures.is_empty() {
            let mut st = self.lock();
            for f in &outcome.failures {
                if st.hook_failures.len() == MAX_HOOK_FAILURES {
                    st.hook_failures.pop_front();
                }
                st.hook_failures.push_back(f.clone());
            }
            drop(st);
            for f in &outcome.failures {
                self.emit(NodeEvent::HookFailed(f.clone()));
            }
        }
    }

    /// Starts (replacing any running one) the announcement task of `addr`.
    fn spawn_announcer(self: &Arc<Self>, addr: IpAddr, iface: &str, rounds: u32, tickle: bool) {
        let tickle = tickle.then(|| Arc::new(CountsCell::new()));
        self.spawn_announcer_with(addr, iface, rounds, tickle);
    }

    /// [`Inner::spawn_announcer`]; announcers of one take share `tickle`,
    /// so that one GET_COUNTS tells all of them which addresses have
    /// clients worth a GET_CONNECTIONS (`None`: no tickles).
    fn spawn_announcer_with(
        self: &Arc<Self>,
        addr: IpAddr,
        iface: &str,
        rounds: u32,
        tickle: Option<Arc<CountsCell>>,
    ) {
        let task = tokio::spawn(announce_rounds(
            Arc::downgrade(self),
            addr,
            iface.to_owned(),
            rounds,
            tickle,
        ));
        if let Some(old) = self.lock().announcers.insert(addr, task) {
            old.abort();
        }
    }

    fn stop_announcer(&self, addr: IpAddr) {
        if let Some(t) = self.lock().announcers.remove(&addr) {
            t.abort();
        }
    }

    /// The addresses conntrackd tracks connections of (`None` when it cannot
    /// say: then every address is asked for its connections).
    async fn with_connections(&self) -> Option<HashSet<IpAddr>> {
        let client = self.client.as_ref()?;
        let r: Result<Vec<AddressCount>, _> = client
            .request(
                Address::new(LOCAL, CONNTRACKD),
                GET_COUNTS,
                &(),
                self.config.conntrack_timeout,
            )
            .await;
        match r {
            Ok(list) => Some(
                list.into_iter()
                    .filter(|c| c.connections > 0)
                    .map(|c| canonical(c.address))
                    .collect(),
            ),
            Err(e) => {
                tracing::debug!(error = %e, "no connection counts from conntrackd");
                None
            }
        }
    }

    /// The connections conntrackd tracks for `addr`, or `None` when it did
    /// not say (logged; the take goes on, and the announcer asks again in
    /// its next round: a conntrackd busy for a moment must not cost the
    /// clients their reset).
    async fn tracked(&self, addr: IpAddr) -> Option<Vec<TrackedConnection>> {
        let Some(client) = &self.client else {
            return Some(Vec::new());
        };
        let req = GetConnections {
            address: addr,
            port: None,
        };
        // Paged: an address may have more connections than one message.
        let r = get_connections(
            client,
            Address::new(LOCAL, CONNTRACKD),
            req,
            self.config.conntrack_timeout,
        )
        .await;
        match r {
            Ok(list) => Some(
                list.into_iter()
                    .filter(|c| canonical(c.server.ip()) == canonical(addr))
                    .collect(),
            ),
            Err(e) => {
                tracing::info!(%addr, error = %e, "no connection list from conntrackd: asking again at the next announcement");
                None
            }
        }
    }

    pub(super) async fn adopt(
        self: &Arc<Self>,
        known: &[(PublicAddress, u64)],
    ) -> Result<Vec<IpAddr>, NodeError> {
        let _op = self.op.lock().await;
        let links = links_of(&self.nl).await?;
        let names: HashMap<u32, String> = links.into_iter().map(|l| (l.index, l.name)).collect();
        let present = addresses_of(&self.nl).await?;
        let mut adopted = Vec::new();
        for (p, since_ns) in known {
            let found = present.iter().find_map(|(index, prefix)| {
                let name = names.get(index)?;
                (prefix.addr() == p.addr && p.ifaces.contains(name)).then(|| name.clone())
            });
            let Some(iface) = found else { continue };
            if p.addr.is_ipv4() {
                set_promote(&iface);
            }
            let mut st = self.lock();
            if st.hosted.contains_key(&p.addr) {
                continue;
            }
            // Adopted during the current lease (the daemon checked that it
            // was configured since this unbroken lease began).
            let epoch = st.lease_epoch;
            st.leased_in.insert(p.addr, epoch);
            st.hosted.insert(
                p.addr,
                HostedAddress {
                    public: p.clone(),
                    iface: iface.clone(),
                    since_ns: *since_ns,
                },
            );
            drop(st);
            tracing::info!(addr = %p.addr, %iface, "adopted an address already configured");
            adopted.push(p.addr);
        }
        if !adopted.is_empty() {
            if let Err(e) = self
                .nft
                .update()
                .add(NftSet::Tracked, &adopted)
                .execute()
                .await
            {
                tracing::warn!(error = %e, "cannot add adopted addresses to the tracked set");
            }
            self.publish();
            self.lease_wake.notify_one();
        }
        Ok(adopted)
    }

    pub(super) async fn take_many(
        self: &Arc<Self>,
        publics: &[PublicAddress],
        still: &(dyn Fn() -> Result<(), String> + Sync),
    ) -> Vec<(IpAddr, Result<Taken, NodeError>)> {
        let started = std::time::Instant::now();
        let (results, waits) = {
            let _op = self.op.lock().await;
            let refuse = |e: &dyn Fn(IpAddr) -> NodeError| {
                publics.iter().map(|p| (p.addr, Err(e(p.addr)))).collect()
            };
            if let Err(reason) = still() {
                (
                    refuse(&|addr| NodeError::Stale {
                        addr,
                        reason: reason.clone(),
                    }),
                    Vec::new(),
                )
            } else if !permitted(&self.lock()) {
                (refuse(&|addr| NodeError::NoLease { addr }), Vec::new())
            } else {
                self.take_locked(publics).await
            }
        };
        wait_hooks(waits).await;
        let added = results
            .iter()
            .filter(|(_, r)| matches!(r, Ok(Taken::Added { .. })))
            .count();
        counters::add(&COUNTERS.takes, added);
        counters::add(
            &COUNTERS.take_failures,
            results.iter().filter(|(_, r)| r.is_err()).count(),
        );
        if added > 0 {
            COUNTERS.take_time.observe(started.elapsed());
        }
        results
    }

    /// `addr` is still hosted and the lease gate open (one critical
    /// section: see take_locked).
    fn still_hosted_and_permitted(&self, addr: IpAddr) -> bool {
        let st = self.lock();
        permitted(&st) && st.hosted.contains_key(&addr)
    }

    /// Removes freshly added prefixes again (an add that raced with the
    /// end of the lease). One still in the kernel afterwards, on any link
    /// (see [`Inner::remove_from_kernel`]), is reported as a
    /// [`NodeEvent::Leftover`]: no plan knows it, so the daemon tracks it
    /// and removes it again until it is gone (hole 6).
    async fn undo_adds(&self, by_iface: &BTreeMap<String, Vec<IpPrefix>>) {
        let targets: Vec<(IpAddr, String, u8)> = by_iface
            .iter()
            .flat_map(|(iface, list)| list.iter().map(|p| (p.addr(), iface.clone(), p.len())))
            .collect();
        for (iface, (addr, e)) in self.remove_from_kernel(&targets).await {
            tracing::error!(%addr, %iface, error = %e, "cannot undo an address added as the lease ended: reported as a leftover");
            self.emit(NodeEvent::Leftover { addr });
        }
    }

    async fn take_locked(
        self: &Arc<Self>,
        publics: &[PublicAddress],
    ) -> (
        Vec<(IpAddr, Result<Taken, NodeError>)>,
        Vec<oneshot::Receiver<HookOutcome>>,
    ) {
        let mut waits = Vec::new();
        let mut results: Vec<Option<Result<Taken, NodeError>>> =
            publics.iter().map(|_| None).collect();
        let usable = match self.usable_map().await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list links");
                HashMap::new()
            }
        };
        // Interface → (index into publics, prefix).
        let mut by_iface: BTreeMap<String, Vec<(usize, IpPrefix)>> = BTreeMap::new();
        {
            let st = self.lock();
            for (i, p) in publics.iter().enumerate() {
                if let Some(h) = st.hosted.get(&p.addr) {
                    results[i] = Some(Ok(Taken::AlreadyHosted {
                        iface: h.iface.clone(),
                    }));
                    continue;
                }
                let prefix = match prefix_of(p) {
                    Ok(x) => x,
                    Err(e) => {
                        results[i] = Some(Err(e));
                        continue;
                    }
                };
                match choose_interface(&p.ifaces, |n| usable.get(n).copied().unwrap_or(false)) {
                    Some(iface) => by_iface
                        .entry(iface.to_owned())
                        .or_default()
                        .push((i, prefix)),
                    None => {
                        results[i] = Some(Err(NodeError::NoUsableInterface {
                            addr: p.addr,
                            ifaces: p.ifaces.clone(),
                        }))
                    }
                }
            }
        }
        // An address already hosted, taken again by the leader under a
        // lease in which it was not leased (its kernel element was left to
        // run out across a lapse): the leader, which released it
        // everywhere else first, gives it to this node in this lease, so
        // it is leased again here.
        let stale: Vec<IpAddr> = {
            let st = self.lock();
            publics
                .iter()
                .map(|p| p.addr)
                .filter(|a| {
                    st.hosted.contains_key(a) && st.leased_in.get(a) != Some(&st.lease_epoch)
                })
                .collect()
        };
        if !stale.is_empty() {
            if let Err(why) = self.lease_for_take(&stale).await {
                tracing::warn!(
                    reason = why.as_deref().unwrap_or("the lease is over"),
                    "cannot lease again addresses taken again: {stale:?}"
                );
            }
        }
        let mut added: Vec<(usize, String)> = Vec::new();
        let to_add: Vec<IpAddr> = by_iface.values().flatten().map(|(_, p)| p.addr()).collect();
        if !to_add.is_empty() {
            if let Err(why) = self.lease_for_take(&to_add).await {
                tracing::warn!(
                    reason = why.as_deref().unwrap_or("the lease is over"),
                    "no kernel lease for the addresses to take: not adding them"
                );
                for (iface, items) in &by_iface {
                    for (i, p) in items {
                        results[*i] = Some(Err(match &why {
                            None => NodeError::NoLease { addr: p.addr() },
                            Some(reason) => NodeError::Kernel {
                                op: "lease",
                                addr: p.addr(),
                                iface: iface.clone(),
                                reason: reason.clone(),
                            },
                        }));
                    }
                }
                by_iface.clear();
            }
        }
        // Before the kernel request: never later than the real time.
        let since_ns = transport::msg::cluster::monotonic_ns();
        for (iface, items) in &by_iface {
            if items.iter().any(|(_, p)| p.addr().is_ipv4()) {
                set_promote(iface);
            }
            let r = self
                .nl
                .add_addresses(iface, items.iter().map(|(_, p)| *p))
                .execute()
                .await;
            match r {
                Ok(()) => added.extend(items.iter().map(|(i, _)| (*i, iface.clone()))),
                Err(e) => {
                    let reason = e.to_string();
                    let present = present_on(&self.nl, iface).await;
                    for (i, p) in items {
                        if present.contains(&p.addr()) {
                            added.push((*i, iface.clone()));
                        } else {
                            results[*i] = Some(Err(NodeError::Kernel {
                                op: "add",
                                addr: p.addr(),
                                iface: iface.clone(),
                                reason: reason.clone(),
                            }));
                        }
                    }
                }
            }
        }
        if !added.is_empty() {
            // Recording the addresses as hosted and checking the lease gate
            // happen under one lock, so drop_all either sees them hosted or
            // this sees the gate closed and undoes the adds.
            let allowed = {
                let mut st = self.lock();
                let ok = permitted(&st);
                if ok {
                    for (i, iface) in &added {
                        let p = &publics[*i];
                        st.cannot_host.remove(&p.addr);
                        st.hosted.insert(
                            p.addr,
                            HostedAddress {
                                public: p.clone(),
                                iface: iface.clone(),
                                since_ns,
                            },
                        );
                    }
                }
                ok
            };
            if !allowed {
                let mut undo: BTreeMap<String, Vec<IpPrefix>> = BTreeMap::new();
                for (i, iface) in &added {
                    if let Ok(p) = prefix_of(&publics[*i]) {
                        undo.entry(iface.clone()).or_default().push(p);
                    }
                    results[*i] = Some(Err(NodeError::NoLease {
                        addr: publics[*i].addr,
                    }));
                }
                tracing::warn!("the lease ended while taking addresses: removed them again");
                self.undo_adds(&undo).await;
                added.clear();
            }
        }
        if !added.is_empty() {
            // Renew their elements now, with the lease's latest end: the
            // ones the take gave them end with the lease it read before the
            // adds, which a take of many addresses may outlast by more than
            // the keeper waits for its next news (then the first packets
            // after their announcement were dropped: 34 of 256 first SYNs).
            // Before the announcers are spawned, so it runs ahead of them.
            self.lease_wake.notify_one();
            let ips: Vec<IpAddr> = added.iter().map(|(i, _)| publics[*i].addr).collect();
            let counts = Arc::new(CountsCell::new());
            for (i, iface) in &added {
                let rounds = self.config.garp_count;
                let tickle = Some(Arc::clone(&counts));
                self.spawn_announcer_with(publics[*i].addr, iface, rounds, tickle);
                results[*i] = Some(Ok(Taken::Added {
                    iface: iface.clone(),
                }));
            }
            self.publish();
            if let Err(e) = self.nft.update().add(NftSet::Tracked, &ips).execute().await {
                tracing::warn!(error = %e, "cannot add taken addresses to the tracked set");
            }
            tracing::info!(count = ips.len(), "took addresses: {ips:?}");
            for (i, iface) in &added {
                let p = &publics[*i];
                waits.push(self.queue_hook(HookEvent::TakeIp {
                    iface: iface.clone(),
                    addr: p.addr,
                    prefix: p.prefix,
                }));
            }
        }
        let results = publics
            .iter()
            .zip(results)
            .map(|(p, r)| {
                let r = r.unwrap_or(Err(NodeError::NoUsableInterface {
                    addr: p.addr,
                    ifaces: p.ifaces.clone(),
                }));
                (p.addr, r)
            })
            .collect();
        (results, waits)
    }

    /// Tells this node's conntrackd that `ips` are being released, before
    /// their sockets are reset ([`transport::msg::conntrack::RELEASING`]):
    /// without it, conntrackd saw the resets' closes first and took the
    /// connections out of every node's table — also when the resets could
    /// not reach the clients, whose next owner then had nothing to tickle.
    /// Bounded by `conntrack_timeout`; a conntrackd that does not answer
    /// costs only that.
    async fn releasing(&self, ips: &[IpAddr]) {
        let Some(client) = &self.client else {
            return;
        };
        let r: Result<(), _> = client
            .request(
                Address::new(LOCAL, CONNTRACKD),
                transport::msg::conntrack::RELEASING,
                &ips.to_vec(),
                self.config.conntrack_timeout,
            )
            .await;
        if let Err(e) = r {
            tracing::info!(error = %e, "conntrackd did not take the release before the resets: their closes may take the connections out of the tables");
        }
    }

    /// Resets the connections of `ips` (configured, blocked): local sockets
    /// through sock_diag destroy; when `thorough`, also conntrackd's other
    /// clients through killtcp.
    async fn reset_connections(&self, targets: &[(IpAddr, String, u8)], thorough: bool) {
        let ips: Vec<IpAddr> = targets.iter().map(|(a, _, _)| *a).collect();
        let mut local: HashSet<(SocketAddr, SocketAddr)> = HashSet::new();
        match SockDiag::new() {
            Ok(mut diag) => match diag.established(&ips).execute().await {
                Ok(conns) => {
                    local.extend(conns.iter().map(|c| (c.local, c.remote)));
                    if !conns.is_empty() {
                        match diag.destroy(&conns).execute().await {
                            Ok(r) => {
                                counters::add(&COUNTERS.resets, r.destroyed.len());
                                tracing::info!(
                                    destroyed = r.destroyed.len(),
                                    gone = r.missing.len(),
                                    "reset local connections of released addresses"
                                );
                            }
                            Err(e) => tracing::warn!(error = %e, "sock_diag destroy failed"),
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "sock_diag dump failed"),
            },
            Err(e) => tracing::warn!(error = %e, "cannot open sock_diag"),
        }
        if !thorough || self.client.is_none() {
            return;
        }
        let mut by_iface: BTreeMap<String, Vec<Connection>> = BTreeMap::new();
        let lists =
            futures::future::join_all(targets.iter().map(|(a, _, _)| self.tracked(*a))).await;
        for ((_, iface, _), list) in targets.iter().zip(lists) {
            for c in list.unwrap_or_default() {
                let conn = Connection {
                    local: c.server,
                    remote: c.client,
                };
                if !local.contains(&(conn.local, conn.remote)) {
                    by_iface.entry(iface.clone()).or_default().push(conn);
                }
            }
        }
        let kills = by_iface.into_iter().map(|(iface, conns)| async move {
            let kill = KillTcp::new(&iface).timeout(self.config.killtcp_timeout);
            let r = kill_connections(kill, conns).await;
            match r {
                Ok(rep) => tracing::info!(%iface, killed = rep.killed.len(), remaining = rep.remaining.len(), "killtcp"),
                Err(e) => tracing::warn!(%iface, error = %e, "killtcp failed"),
            }
        });
        futures::future::join_all(kills).await;
    }

    /// Releases `addrs`. With `keep_hosted` (leftovers only), an address
    /// hosted when the operation lock is taken is left alone and reported
    /// [`NodeError::Retaken`]: a take may have hosted it since the caller
    /// decided it was a leftover.
    pub(super) async fn release_many(
        self: &Arc<Self>,
        addrs: &[IpAddr],
        keep_hosted: bool,
    ) -> Vec<(IpAddr, Result<(), NodeError>)> {
        let started = std::time::Instant::now();
        // Phase 1, under the operation lock: forget, block.
        let op = self.op.lock().await;
        // (address, interface, prefix length) of everything to remove.
        let mut targets: Vec<(IpAddr, String, u8)> = Vec::new();
        let mut removed_hosted = false;
        let mut unknown: Vec<IpAddr> = Vec::new();
        let mut failed: HashMap<IpAddr, NodeError> = HashMap::new();
        {
            let mut st = self.lock();
            for a in addrs {
                if keep_hosted && st.hosted.contains_key(a) {
                    failed.insert(*a, NodeError::Retaken { addr: *a });
                    continue;
                }
                if let Some(h) = st.hosted.remove(a) {
                    st.releasing.insert(*a, (h.iface.clone(), h.public.prefix));
                    targets.push((*a, h.iface, h.public.prefix));
                    st.cannot_host.remove(a);
                    removed_hosted = true;
                    if let Some(t) = st.announcers.remove(a) {
                        t.abort();
                    }
                } else {
                    unknown.push(*a);
                }
            }
        }
        if !unknown.is_empty() {
            // Leftovers: configured in the kernel but not hosted, on
            // whichever link has them now (it may have been renamed).
            match (links_of(&self.nl).await, addresses_of(&self.nl).await) {
                (Ok(links), Ok(present)) => {
                    let names: HashMap<u32, String> =
                        links.into_iter().map(|l| (l.index, l.name)).collect();
                    let mut st = self.lock();
                    for (index, prefix) in present {
                        if unknown.contains(&prefix.addr()) {
                            if let Some(name) = names.get(&index) {
                                st.releasing
                                    .insert(prefix.addr(), (name.clone(), prefix.len()));
                                targets.push((prefix.addr(), name.clone(), prefix.len()));
                            }
                        }
                    }
                }
                // Whether they are there is not known: not removed (hole 6).
                (Err(e), _) | (_, Err(e)) => {
                    for a in &unknown {
                        failed.insert(
                            *a,
                            NodeError::Kernel {
                                op: "remove",
                                addr: *a,
                                iface: "*".into(),
                                reason: format!("cannot list the kernel's addresses: {e}"),
                            },
                        );
                    }
                }
            }
        }
        if removed_hosted {
            self.publish();
        }
        let mut waits = Vec::new();
        if !targets.is_empty() {
            let ips: Vec<IpAddr> = targets.iter().map(|(a, _, _)| *a).collect();
            if let Err(e) = self.nft.update().add(NftSet::Blocked, &ips).execute().await {
                tracing::warn!(error = %e, "cannot block released addresses");
            }
            // Phase 2, unlocked (killtcp may take up to killtcp_timeout):
            // reset the connections while the addresses are still
            // configured. The addresses are in `releasing`, so a drop_all
            // meanwhile removes them without waiting for this.
            drop(op);
            // conntrackd stops following them first: the resets below are
            // ours and may not reach the clients (a public link down), so
            // their connections must stay for the next owner's tickles.
            self.releasing(&ips).await;
            self.reset_connections(&targets, true).await;
            // Phase 3: remove. An address taken again in between stays
            // configured, and its release is reported as failed: a release
            // is acknowledged only when the address is gone.
            let _op = self.op.lock().await;
            {
                let mut st = self.lock();
                for (a, _, _) in &targets {
                    st.releasing.remove(a);
                    if st.hosted.contains_key(a) {
                        failed.insert(*a, NodeError::Retaken { addr: *a });
                    }
                }
                targets.retain(|(a, _, _)| !st.hosted.contains_key(a));
            }
            for (_, (addr, err)) in self.remove_from_kernel(&targets).await {
                failed.insert(addr, err);
            }
            // Phase 4, not waited for: the nftables clean-up (see
            // `clean_up_released`).
            let removed: Vec<IpAddr> = targets.iter().map(|(a, _, _)| *a).collect();
            tokio::spawn(Arc::clone(self).clean_up_released(ips.clone(), removed));
            tracing::info!(count = ips.len(), "released addresses: {ips:?}");
            for (a, iface, len) in &targets {
                if !failed.contains_key(a) {
                    waits.push(self.queue_hook(HookEvent::ReleaseIp {
                        iface: iface.clone(),
                        addr: *a,
                        prefix: *len,
                    }));
                }
            }
        }
        wait_hooks(waits).await;
        let released = targets
            .iter()
            .filter(|(a, _, _)| !failed.contains_key(a))
            .count();
        counters::add(&COUNTERS.releases, released);
        counters::add(&COUNTERS.release_failures, failed.len());
        if released > 0 {
            COUNTERS.release_time.observe(started.elapsed());
        }
        addrs
            .iter()
            .map(|a| match failed.remove(a) {
                Some(e) => (*a, Err(e)),
                None => (*a, Ok(())),
            })
            .collect()
    }

    /// After a release: unblocks `unblock`, and stops tracking and ends
    /// the kernel lease elements of `removed` (gone from the kernel) — of
    /// those not hosted again by then: an address retaken meanwhile keeps
    /// its tracking and the elements its take gave it (it stays blocked
    /// only until this runs, right after the take). Runs under the
    /// operation lock, after the release has answered: each nftables
    /// removal waits for an RCU grace period in the kernel (12-23 ms
    /// measured, docs/bench/failover-node.md), and with the addresses gone
    /// their block, tracking and lease elements no longer matter, so the
    /// release's answer — which every move of a live node's address waits
    /// for — need not wait for it.
    async fn clean_up_released(self: Arc<Self>, unblock: Vec<IpAddr>, removed: Vec<IpAddr>) {
        let _op = self.op.lock().await;
        let gone: Vec<IpAddr> = {
            let st = self.lock();
            removed
                .into_iter()
                .filter(|a| !st.hosted.contains_key(a))
                .collect()
        };
        self.clear_sets(&unblock, &gone).await;
        if let Some(lease) = &self.lease {
            if let Err(e) = lease.revoke(&gone).await {
                tracing::warn!(error = %e, "cannot revoke the kernel lease of released addresses (it runs out by itself)");
            }
        }
    }

    /// Takes released addresses out of the blocked and tracked sets.
    /// Unblocks `unblock` and stops tracking `untrack`.
    async fn clear_sets(&self, unblock: &[IpAddr], untrack: &[IpAddr]) {
        if let Err(e) = self
            .nft
            .update()
            .remove(NftSet::Blocked, unblock)
            .remove(NftSet::Tracked, untrack)
            .execute()
            .await
        {
            tracing::warn!(error = %e, "cannot take released addresses out of the nftables sets");
        }
    }

    /// Removes `targets` (address, interface, prefix length) from the
    /// kernel: one pipelined request per interface, secondaries first.
    /// Every removal is then verified by one dump, whatever the kernel
    /// answered: returns the addresses the kernel still has on any link,
    /// not only the one named, with the error — a link renamed meanwhile
    /// keeps its addresses while a delete by the old name finds no link, or
    /// finds a new link that took the name and answers "not there", which
    /// counts as done (hole 6) — and all of them when the dump fails.
    async fn remove_from_kernel(
        &self,
        targets: &[(IpAddr, String, u8)],
    ) -> Vec<(String, (IpAddr, NodeError))> {
        let mut by_iface: BTreeMap<&str, Vec<IpPrefix>> = BTreeMap::new();
        for (a, iface, len) in targets {
            if let Ok(p) = IpPrefix::new(*a, *len) {
                by_iface.entry(iface).or_default().push(p);
            }
        }
        if by_iface.is_empty() {
            return Vec::new();
        }
        let mut refused: HashMap<&str, String> = HashMap::new();
        for (iface, prefixes) in &mut by_iface {
            order_for_removal(&self.nl, iface, prefixes).await;
            if let Err(e) = self
                .nl
                .del_addresses(iface, prefixes.iter().copied())
                .execute()
                .await
            {
                refused.insert(*iface, e.to_string());
            }
        }
        let wanted: Vec<IpAddr> = by_iface.values().flatten().map(|p| p.addr()).collect();
        let left: Option<HashSet<IpAddr>> = match addresses_of(&self.nl).await {
            Ok(present) => Some(
                copies_left(&wanted, &present, &|_| None)
                    .into_iter()
                    .map(|(_, p)| p.addr())
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list addresses after a removal: counted as still there");
                None
            }
        };
        let mut failed = Vec::new();
        for (iface, prefixes) in &by_iface {
            for p in prefixes {
                if left.as_ref().is_some_and(|s| !s.contains(&p.addr())) {
                    continue;
                }
                let reason = match (refused.get(iface), &left) {
                    (Some(r), _) => r.clone(),
                    (None, Some(_)) => {
                        "removed from this link, still configured on another one".to_owned()
                    }
                    (None, None) => "the kernel's addresses cannot be listed".to_owned(),
                };
                failed.push((
                    (*iface).to_owned(),
                    (
                        p.addr(),
                        NodeError::Kernel {
                            op: "remove",
                            addr: p.addr(),
                            iface: (*iface).to_owned(),
                            reason,
                        },
                    ),
                ));
            }
        }
        failed
    }

    /// For [`DropMode::LeaseLost`]: the members of `targets` whose serving
    /// the kernel lease bounds — those in its guard sets — with their lease
    /// elements revoked now if `revoke` (the lease was reported lost
    /// before its end, so they may still be live), so that from here on
    /// the guard stops this node serving them (no packet in, nothing out
    /// but TCP resets, no ARP/NA) and their local sockets can be reset
    /// before they are removed: the resets leave through the guard's reset
    /// exception while the kernel still has a route from the address.
    /// After the lease end the guard stops them already (the wall-clock
    /// cap ends guarded traffic there, and the elements time out at most
    /// `lease_slack` later): no revoke then — one
    /// nftables transaction that deletes elements takes 11–12 ms here,
    /// half the budget of the resets in the default profile and far more
    /// than the fast profile's (the keeper revokes them anyway once the
    /// gate is closed, in the background).
    ///
    /// Why this is safe only with the kernel lease: without it, removal is
    /// the only thing that stops the node serving, and must not wait for
    /// anything. With it, the node stops serving a guarded address when
    /// its element is gone — revoked here, and in any case run out at the
    /// lease end, which is before the leader may give the address to
    /// another node (`margin` after the end on the leader's clock): an
    /// element still valid when the lease was reported lost early, or one a
    /// renewal already under way sets again, still ends at that lease end.
    /// A guarded address with no element (not leased in this lease, or
    /// added but not yet leased) is not served at all. An address not in
    /// the guard sets (a leftover this executor never guarded; every
    /// address without the kernel lease) is left out: the caller removes
    /// it first.
    /// When the revoke fails or is not done by `by` (the deadline of the
    /// resets, see [`drop_reset_by`]), nothing is returned and
    /// everything is removed first, as without the kernel lease.
    async fn stop_serving(
        &self,
        targets: &[(IpAddr, String, u8)],
        by: tokio::time::Instant,
        revoke: bool,
    ) -> Vec<(IpAddr, String, u8)> {
        let Some(lease) = &self.lease else {
            return Vec::new();
        };
        let covered: Vec<(IpAddr, String, u8)> = {
            let st = self.lock();
            targets
                .iter()
                .filter(|(a, _, _)| st.guarded.contains(a))
                .cloned()
                .collect()
        };
        if covered.is_empty() || !revoke {
            return covered;
        }
        let ips: Vec<IpAddr> = covered.iter().map(|(a, _, _)| *a).collect();
        match tokio::time::timeout_at(by, lease.revoke(&ips)).await {
            Ok(Ok(())) => covered,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot revoke the kernel lease of dropped addresses: removing them before resetting their connections");
                Vec::new()
            }
            Err(_) => {
                tracing::warn!("revoking the kernel lease of dropped addresses took too long: removing them before resetting their connections");
                Vec::new()
            }
        }
    }

    /// A copy of `addr` is configured on a link other than `iface` (or the
    /// kernel cannot say: counted as yes).
    async fn configured_elsewhere(&self, addr: IpAddr, iface: &str) -> bool {
        let (index, present) = match (self.nl.link(iface).await, addresses_of(&self.nl).await) {
            (Ok(link), Ok(present)) => (link.index, present),
            (Err(e), _) => {
                tracing::warn!(%addr, %iface, error = %e, "cannot look the link up: a copy elsewhere is assumed");
                return true;
            }
            (_, Err(e)) => {
                tracing::warn!(%addr, error = %e, "cannot list addresses: a copy elsewhere is assumed");
                return true;
            }
        };
        !copies_left(&[addr], &present, &|_| Some(index)).is_empty()
    }

    /// See [`super::Executor::remove_leftovers`].
    pub(super) async fn remove_leftovers(
        self: &Arc<Self>,
        addrs: &[IpAddr],
    ) -> Vec<(IpAddr, Result<(), NodeError>)> {
        let mut results: HashMap<IpAddr, Result<(), NodeError>> = HashMap::new();
        let loose: Vec<IpAddr> = {
            let _op = self.op.lock().await;
            let hosted: BTreeMap<IpAddr, String> = {
                let st = self.lock();
                addrs
                    .iter()
                    .filter_map(|a| st.hosted.get(a).map(|h| (*a, h.iface.clone())))
                    .collect()
            };
            if !hosted.is_empty() {
                results.extend(self.remove_strays(&hosted).await);
            }
            addrs
                .iter()
                .copied()
                .filter(|a| !hosted.contains_key(a))
                .collect()
        };
        if !loose.is_empty() {
            // Not hosted: released from wherever they are (block, reset,
            // remove, hooks); one taken meanwhile is left alone.
            results.extend(self.release_many(&loose, true).await);
        }
        addrs
            .iter()
            .map(|a| (*a, results.remove(a).unwrap_or(Ok(()))))
            .collect()
    }

    /// Removes the copies of hosted addresses (address → the interface it
    /// is hosted on) found on any other link, and only those: no block, no
    /// reset, no hook, since the address stays hosted. The caller holds
    /// `op`. An address whose hosting link cannot be found (renamed itself)
    /// is left alone, as failed: removing "the other copies" could then hit
    /// the hosted one; healing moves it first.
    async fn remove_strays(
        &self,
        hosted: &BTreeMap<IpAddr, String>,
    ) -> Vec<(IpAddr, Result<(), NodeError>)> {
        let wanted: Vec<IpAddr> = hosted.keys().copied().collect();
        let fail = |addr: IpAddr, iface: &str, reason: String| -> Result<(), NodeError> {
            Err(NodeError::Kernel {
                op: "remove",
                addr,
                iface: iface.to_owned(),
                reason,
            })
        };
        let mut pass = 0;
        loop {
            let listing = match (links_of(&self.nl).await, addresses_of(&self.nl).await) {
                (Ok(links), Ok(present)) => Ok((links, present)),
                (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
            };
            let (links, present) = match listing {
                Ok(x) => x,
                Err(e) => {
                    return wanted
                        .iter()
                        .map(|a| {
                            let why = format!("cannot list the kernel's addresses: {e}");
                            (*a, fail(*a, "*", why))
                        })
                        .collect();
                }
            };
            let names: HashMap<u32, String> =
                links.into_iter().map(|l| (l.index, l.name)).collect();
            let index_of: HashMap<&str, u32> =
                names.iter().map(|(i, n)| (n.as_str(), *i)).collect();
            let hosted_on = |a: IpAddr| {
                hosted
                    .get(&a)
                    .and_then(|n| index_of.get(n.as_str()).copied())
            };
            let lost: Vec<IpAddr> = wanted
                .iter()
                .copied()
                .filter(|a| hosted_on(*a).is_none())
                .collect();
            let strays: Vec<(u32, IpPrefix)> = copies_left(&wanted, &present, &hosted_on)
                .into_iter()
                .filter(|(_, p)| !lost.contains(&p.addr()))
                .collect();
            if strays.is_empty() || pass == 1 {
                return wanted
                    .iter()
                    .map(|a| {
                        if lost.contains(a) {
                            let why = "its hosting link is not found: not touched".to_owned();
                            return (*a, fail(*a, &hosted[a], why));
                        }
                        match strays.iter().find(|(_, p)| p.addr() == *a) {
                            Some((index, _)) => {
                                let link = names.get(index).map_or("?", String::as_str);
                                (*a, fail(*a, link, "still configured there".to_owned()))
                            }
                            None => (*a, Ok(())),
                        }
                    })
                    .collect();
            }
            let mut by_link: BTreeMap<&str, Vec<IpPrefix>> = BTreeMap::new();
            for (index, p) in &strays {
                if let Some(name) = names.get(index) {
                    by_link.entry(name.as_str()).or_default().push(*p);
                }
            }
            for (link, prefixes) in by_link {
                tracing::warn!(%link, "removing copies of hosted addresses left on another link: {prefixes:?}");
                if let Err(e) = self.nl.del_addresses(link, prefixes).execute().await {
                    tracing::warn!(%link, error = %e, "cannot remove copies left on another link");
                }
            }
            pass += 1;
        }
    }

    /// See [`super::Executor::drop_all`].
    pub(super) async fn drop_all(self: &Arc<Self>, mode: DropMode) -> Result<usize, NodeError> {
        // Close the gate and see everything configured, in one critical
        // section with every add's "record as hosted" (see take_locked).
        // The gate stays shut until this drop has forgotten what it
        // removes, even if news of a lease reopen it meanwhile (`dropping`).
        self.lock().dropping += 1;
        let _dropping = Dropping(self);
        // The first time, also the end of the lease the addresses were
        // held under (see `State::ended`): the gate's if it was open, or an
        // earlier one that ended since the last drop. It stays recorded
        // until this drop has removed them, so that a drop that starts
        // meanwhile (the lease watch's and the loop's come together) keeps
        // the same deadline instead of removing first under the resets.
        let snapshot = |inner: &Inner, first: bool| {
            let mut st = inner.lock();
            let ended = if first {
                if let Permit::Until(t) = st.permit {
                    st.ended = Some(st.ended.map_or(t, |e| e.min(t)));
                }
                st.ended
            } else {
                None
            };
            st.permit = Permit::Closed;
            st.lease_epoch += 1;
            inner.lease_wake.notify_one();
            let mut t: Vec<(IpAddr, String, u8)> = st
                .hosted
                .values()
                .map(|h| (h.public.addr, h.iface.clone(), h.public.prefix))
                .collect();
            t.extend(st.releasing.iter().map(|(a, (i, l))| (*a, i.clone(), *l)));
            (t, ended)
        };
        let (first, ended) = snapshot(self, true);
        // Which addresses get their local sockets reset before they are
        // removed: all of them on an orderly stop, none when removal is
        // the bound, the kernel lease's when that is the bound. Whatever is
        // done before their removal is done by `reset_by`, inside the
        // leader's margin after the lease end (see `drop_reset_by`): on a
        // lost lease, without a known end, removal comes first.
        let started = tokio::time::Instant::now();
        let reset_by = match (mode, ended) {
            (DropMode::RemoveFirst, _) | (DropMode::LeaseLost, None) => None,
            (DropMode::ResetFirst | DropMode::LeaseLost, _) => {
                drop_reset_by(ended, self.config.lease_margin, started)
            }
        };
        if reset_by.is_none() && mode != DropMode::RemoveFirst && !first.is_empty() {
            tracing::info!(
                ?mode,
                late_ms = ended.map(|e| started.saturating_duration_since(e).as_secs_f64() * 1e3),
                "too late to reset connections before removing the addresses: removing first"
            );
        }
        let reset_first: Vec<(IpAddr, String, u8)> = match (mode, reset_by) {
            (DropMode::ResetFirst, Some(_)) => first.clone(),
            (DropMode::LeaseLost, Some(by)) => {
                let live = ended.is_some_and(|e| e > started);
                self.stop_serving(&first, by, live).await
            }
            (DropMode::RemoveFirst, _) | (_, None) => Vec::new(),
        };
        let revoked = started.elapsed();
        // Remove without waiting for the operation lock: a take waiting for
        // its hooks or a release resetting connections must not delay it.
        // First what nothing but the removal stops serving, then, after
        // their resets (bounded), the others.
        let remove_now: Vec<(IpAddr, String, u8)> = first
            .iter()
            .filter(|t| !reset_first.contains(t))
            .cloned()
            .collect();
        let mut errors: Vec<(IpAddr, NodeError)> = self
            .remove_from_kernel(&remove_now)
            .await
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        if let (false, Some(by)) = (reset_first.is_empty(), reset_by) {
            let t = tokio::time::Instant::now();
            // conntrackd first, in at most half of what is left: these
            // resets may not reach their clients (a drop that runs beside
            // this one removes the addresses first, the link or the
            // client's neighbour entry fails, a frame is lost), and
            // conntrackd must not take their closes for the clients' own
            // — it would take the connections out of every node's table,
            // and the next owner would have nothing to tickle (chaos seed
            // 121: six idle clients hung so). A tickle to a client that
            // the reset did reach costs one segment.
            let ips: Vec<IpAddr> = reset_first.iter().map(|(a, _, _)| *a).collect();
            let half = t + by.saturating_duration_since(t) / 2;
            if tokio::time::timeout_at(half, self.releasing(&ips))
                .await
                .is_err()
            {
                tracing::info!("conntrackd did not take the release in time: resetting anyway; their closes may take the connections out of the tables");
            }
            let reset = self.reset_connections(&reset_first, false);
            if tokio::time::timeout_at(by, reset).await.is_err() {
                tracing::warn!("resetting connections took too long: removing the addresses now");
            }
            let (reset, t) = (t.elapsed(), tokio::time::Instant::now());
            errors.extend(
                self.remove_from_kernel(&reset_first)
                    .await
                    .into_iter()
                    .map(|(_, e)| e),
            );
            tracing::debug!(
                ?mode,
                addresses = reset_first.len(),
                revoke_ms = revoked.as_secs_f64() * 1e3,
                reset_ms = reset.as_secs_f64() * 1e3,
                remove_ms = t.elapsed().as_secs_f64() * 1e3,
                left_ms = by
                    .saturating_duration_since(tokio::time::Instant::now())
                    .as_secs_f64()
                    * 1e3,
                "drop: reset before removal"
            );
        }
        // Then, in turn with the other operations: forget them, clear the
        // sets, reset what is left of their local connections, run hooks.
        let op = self.op.lock().await;
        let (second, _) = snapshot(self, false);
        let late: Vec<(IpAddr, String, u8)> = second
            .iter()
            .filter(|t| !first.contains(t))
            .cloned()
            .collect();
        if !late.is_empty() {
            errors.extend(
                self.remove_from_kernel(&late)
                    .await
                    .into_iter()
                    .map(|(_, e)| e),
            );
        }
        {
            // Removed: the next drop counts from a later end, if any.
            let mut st = self.lock();
            if st.ended == ended {
                st.ended = None;
            }
        }
        let mut all = first;
        all.extend(late);
        {
            let mut st = self.lock();
            st.hosted.clear();
            for (_, t) in st.announcers.drain() {
                t.abort();
            }
        }
        if all.is_empty() {
            return Ok(0);
        }
        self.publish();
        let ips: Vec<IpAddr> = all.iter().map(|(a, _, _)| *a).collect();
        if mode != DropMode::ResetFirst || reset_by.is_none() {
            // Sockets that outlive their address — of what was removed
            // first, or accepted after the resets — are freed (their resets
            // cannot leave any more: the kernel has no route from the
            // address; their clients are tickled by the address's next
            // owner, if it knows them).
            // conntrackd first (bounded): these resets cannot reach the
            // clients, whose connections must stay for the next owner's
            // tickles (as in a release over a dead link, finding 14).
            let _ = tokio::time::timeout(DROP_RESET_LIMIT, self.releasing(&ips)).await;
            let _ =
                tokio::time::timeout(DROP_RESET_LIMIT, self.reset_connections(&all, false)).await;
        }
        self.clear_sets(&ips, &ips).await;
        drop(op);
        tracing::info!(count = ips.len(), "dropped addresses: {ips:?}");
        let waits: Vec<_> = all
            .iter()
            .filter(|(a, _, _)| !errors.iter().any(|(e, _)| e == a))
            .map(|(a, iface, len)| {
                self.queue_hook(HookEvent::ReleaseIp {
                    iface: iface.clone(),
                    addr: *a,
                    prefix: *len,
                })
            })
            .collect();
        wait_hooks(waits).await;
        let count = all.len() - errors.len();
        match errors.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok(count),
        }
    }

    pub(super) async fn update(
        self: &Arc<Self>,
        addr: IpAddr,
        new_iface: &str,
    ) -> Result<(), NodeError> {
        let wait = {
            let _op = self.op.lock().await;
            self.move_locked(addr, new_iface).await?
        };
        wait_hooks(wait.into_iter().collect()).await;
        Ok(())
    }

    /// Moves a hosted address; the caller holds `op`. Returns the queued
    /// updateip hooks (`None` when nothing moved).
    async fn move_locked(
        self: &Arc<Self>,
        addr: IpAddr,
        new_iface: &str,
    ) -> Result<Option<oneshot::Receiver<HookOutcome>>, NodeError> {
        let h = self
            .lock()
            .hosted
            .get(&addr)
            .cloned()
            .ok_or(NodeError::NotHosted { addr })?;
        if !h.public.ifaces.iter().any(|i| i == new_iface) {
            return Err(NodeError::NotListed {
                addr,
                iface: new_iface.to_owned(),
            });
        }
        if h.iface == new_iface {
            return Ok(None);
        }
        let prefix = prefix_of(&h.public)?;
        if !permitted(&self.lock()) {
            return Err(NodeError::NoLease { addr });
        }
        if addr.is_ipv4() {
            set_promote(new_iface);
        }
        self.nl.add_address(new_iface, prefix).execute().await?;
        self.stop_announcer(addr);
        let allowed = {
            let mut st = self.lock();
            let ok = permitted(&st);
            if ok {
                if let Some(e) = st.hosted.get_mut(&addr) {
                    e.iface = new_iface.to_owned();
                }
            }
            ok
        };
        if !allowed {
            let undo = BTreeMap::from([(new_iface.to_owned(), vec![prefix])]);
            self.undo_adds(&undo).await;
            return Err(NodeError::NoLease { addr });
        }
        if let Err(e) = self.nl.del_address(&h.iface, prefix).execute().await {
            // The old link may be gone with its addresses, or renamed.
            tracing::info!(%addr, iface = %h.iface, error = %e, "cannot remove from the old interface");
        }
        // Verified by a dump, whatever the answer: a link renamed meanwhile
        // (down, rename, up) keeps the address while the executor tracks
        // only the new interface. Such a copy is a leftover (hole 6): the
        // daemon removes it, and only it (see `remove_leftovers`).
        if self.configured_elsewhere(addr, new_iface).await {
            tracing::warn!(%addr, from = %h.iface, to = %new_iface, "moved, but a copy is left on another link: reported as a leftover");
            self.emit(NodeEvent::Leftover { addr });
        }
        self.spawn_announcer(addr, new_iface, self.config.garp_count, true);
        tracing::info!(%addr, from = %h.iface, to = %new_iface, "moved between interfaces");
        self.emit(NodeEvent::Moved {
            addr,
            from: h.iface.clone(),
            to: new_iface.to_owned(),
        });
        Ok(Some(self.queue_hook(HookEvent::UpdateIp {
            old_iface: h.iface,
            new_iface: new_iface.to_owned(),
            addr,
            prefix: h.public.prefix,
        })))
    }

    /// Makes the kernel match the hosted set again: every hosted address
    /// whose interface is not usable moves to a usable listed one (or is
    /// reported CannotHost); every hosted address missing from its usable
    /// interface is re-added and re-announced. `announce_on` re-announces
    /// the addresses of that interface (it has just come up).
    async fn reconcile(self: &Arc<Self>, announce_on: Option<&str>) {
        let _op = self.op.lock().await;
        // Events from now on need another pass.
        self.reconcile_pending.store(false, Ordering::Release);
        let usable = match self.usable_map().await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list links");
                return;
            }
        };
        let (Ok(links), Ok(present)) = (links_of(&self.nl).await, addresses_of(&self.nl).await)
        else {
            return;
        };
        let names: HashMap<u32, String> = links.into_iter().map(|l| (l.index, l.name)).collect();
        let present: HashSet<(String, IpAddr)> = present
            .into_iter()
            .filter_map(|(i, p)| Some((names.get(&i)?.clone(), p.addr())))
            .collect();
        let is_up = |n: &str| usable.get(n).copied().unwrap_or(false);
        for h in self.hosted() {
            let addr = h.public.addr;
            if !is_up(&h.iface) {
                match choose_interface(&h.public.ifaces, is_up) {
                    Some(to) => {
                        let to = to.to_owned();
                        if let Err(e) = self.move_locked(addr, &to).await {
                            tracing::warn!(%addr, to = %to, error = %e, "cannot move to another interface");
                        }
                    }
                    None => {
                        let first = self.lock().cannot_host.insert(addr);
                        if first {
                            tracing::warn!(%addr, iface = %h.iface, "link down and no other listed interface up: this node cannot host it");
                            self.emit(NodeEvent::CannotHost { addr });
                        }
                    }
                }
                continue;
            }
            self.lock().cannot_host.remove(&addr);
            if !present.contains(&(h.iface.clone(), addr)) {
                let Ok(prefix) = prefix_of(&h.public) else {
                    continue;
                };
                if !permitted(&self.lock()) {
                    continue;
                }
                if addr.is_ipv4() {
                    set_promote(&h.iface);
                }
                match self.nl.add_address(&h.iface, prefix).execute().await {
                    Ok(()) if !self.still_hosted_and_permitted(addr) => {
                        let undo = BTreeMap::from([(h.iface.clone(), vec![prefix])]);
                        self.undo_adds(&undo).await;
                    }
                    Ok(()) => {
                        tracing::warn!(%addr, iface = %h.iface, "hosted address vanished from the kernel: restored");
                        self.spawn_announcer(addr, &h.iface, self.config.garp_count, false);
                        self.emit(NodeEvent::Restored { addr });
                    }
                    Err(e) => tracing::warn!(%addr, iface = %h.iface, error = %e, "cannot restore"),
                }
            } else if announce_on == Some(h.iface.as_str()) {
                self.spawn_announcer(addr, &h.iface, self.config.garp_count, false);
            }
        }
    }

    pub(super) async fn on_link(self: &Arc<Self>, iface: &str) {
        self.reconcile(Some(iface)).await;
        self.emit(NodeEvent::InterfacesChanged);
    }

    pub(super) async fn announce_once(&self, addr: IpAddr) -> Result<usize, NodeError> {
        let iface = self
            .lock()
            .hosted
            .get(&addr)
            .map(|h| h.iface.clone())
            .ok_or(NodeError::NotHosted { addr })?;
        if !self.link_usable(&iface).await {
            return Ok(0);
        }
        self.announce_on(&iface, addr).await
    }

    pub(super) async fn tickle(&self, conns: &[TrackedConnection]) -> Result<usize, NodeError> {
        let segs: Vec<TcpSegment> = conns
            .iter()
            .map(|c| TcpSegment::tickle(c.server, c.client))
            .collect();
        let sent = send_segments(&self.segments, segs).await?.sent;
        counters::add(&COUNTERS.tickles, sent);
        Ok(sent)
    }

    pub(super) async fn killtcp(&self, conns: &[TrackedConnection]) -> Result<usize, NodeError> {
        let mut by_iface: BTreeMap<String, Vec<Connection>> = BTreeMap::new();
        {
            let st = self.lock();
            for c in conns {
                let addr = c.server.ip();
                let h = st.hosted.get(&addr).ok_or(NodeError::NotHosted { addr })?;
                by_iface
                    .entry(h.iface.clone())
                    .or_default()
                    .push(Connection {
                        local: c.server,
                        remote: c.client,
                    });
            }
        }
        let mut killed = 0;
        for (iface, list) in by_iface {
            killed += kill_connections(KillTcp::new(&iface), list)
                .await?
                .killed
                .len();
        }
        Ok(killed)
    }

    pub(super) async fn check(&self, known: &[PublicAddress]) -> Result<Discrepancies, NodeError> {
        let links = links_of(&self.nl).await?;
        let names: HashMap<u32, String> = links.into_iter().map(|l| (l.index, l.name)).collect();
        let present = addresses_of(&self.nl).await?;
        let present: HashSet<(String, IpAddr)> = present
            .into_iter()
            .filter_map(|(i, p)| Some((names.get(&i)?.clone(), p.addr())))
            .collect();
        let hosted = self.hosted();
        let mut d = Discrepancies::default();
        for h in &hosted {
            if !present.contains(&(h.iface.clone(), h.public.addr)) {
                d.missing.push(h.public.addr);
            }
        }
        for p in known {
            let configured = present.iter().any(|(_, a)| *a == p.addr);
            if configured && !hosted.iter().any(|h| h.public.addr == p.addr) {
                d.unexpected.push(p.addr);
            }
        }
        Ok(d)
    }
}

/// How many tickled clients the take's log line names.
const TICKLED_NAMED: usize = 8;

/// `rounds` announcement rounds of `addr` on `iface`; the first at once.
/// With `tickle`, fetches the address's clients from conntrackd after the
/// first announcement and sends each a tickle ACK in each of the first
/// `tickle_count` rounds. Ends early when the executor is gone.
async fn announce_rounds(
    inner: Weak<Inner>,
    addr: IpAddr,
    iface: String,
    rounds: u32,
    tickle: Option<Arc<CountsCell>>,
) {
    let mut segments: Option<Vec<TcpSegment>> = None;
    for round in 0..rounds.max(1) {
        let interval = {
            let Some(inner) = inner.upgrade() else { return };
            if inner.link_usable(&iface).await {
                if let Err(e) = inner.announce_on(&iface, addr).await {
                    tracing::debug!(%addr, %iface, error = %e, "announcement failed");
                }
            } else {
                tracing::debug!(%addr, %iface, "link down: announcement skipped");
            }
            if let Some(counts) = tickle
                .as_ref()
                .filter(|_| round < inner.config.tickle_count)
            {
                if segments.is_none() {
                    // One GET_COUNTS per take, shared by its announcers: a
                    // take of 256 addresses asks for the connections of
                    // those that have any, not 256 times.
                    let with = counts.get_or_init(|| inner.with_connections()).await;
                    let list = match with {
                        Some(set) if !set.contains(&canonical(addr)) => Some(Vec::new()),
                        _ => inner.tracked(addr).await,
                    };
                    if round > 0 && list.as_ref().is_some_and(|l| !l.is_empty()) {
                        tracing::info!(%addr, round, "connection list from conntrackd at a later announcement: tickling now");
                    }
                    // Not known: asked again next round (the rounds are
                    // `tickle_count` chances, a second apart by default).
                    segments = list.map(|list| {
                        list.iter()
                            .map(|c| TcpSegment::tickle(c.server, c.client))
                            .collect()
                    });
                }
                if let Some(segs) = segments.as_ref().filter(|s| !s.is_empty()) {
                    match send_segments(&inner.segments, segs.clone()).await {
                        Ok(st) => {
                            counters::add(&COUNTERS.tickles, st.sent);
                            HISTORY.tickled(addr, history::now_ns(), st.sent);
                            // The first round at info: how many clients a take
                            // told to reconnect is what an operator (and a
                            // chaos run's post-mortem) asks after a move.
                            if round == 0 || st.failed > 0 {
                                // The first few clients by name: which ones a
                                // take told is what a post-mortem compares with
                                // a client-side capture.
                                let first: Vec<String> = segs
                                    .iter()
                                    .take(TICKLED_NAMED)
                                    .map(|t| t.dst.to_string())
                                    .collect();
                                tracing::info!(%addr, round, sent = st.sent, failed = st.failed, clients = ?first, "tickled the address's clients");
                            } else {
                                tracing::debug!(%addr, round, sent = st.sent, failed = st.failed, "tickles");
                            }
                        }
                        Err(e) => tracing::warn!(%addr, round, error = %e, "tickles failed"),
                    }
                }
            }
            inner.config.garp_interval
        };
        if round + 1 < rounds {
            tokio::time::sleep(interval).await;
        }
    }
}

/// Runs queued hooks one event after the other, records failures.
async fn hook_runner(inner: Weak<Inner>, hooks: Hooks, mut rx: mpsc::UnboundedReceiver<HookJob>) {
    while let Some((ev, done)) = rx.recv().await {
        let outcome = hooks.run(&ev).await;
        if !outcome.scripts.is_empty() {
            counters::add(&COUNTERS.hook_runs, 1);
        }
        counters::add(&COUNTERS.hook_failures, outcome.failures.len());
        if let Some(inner) = inner.upgrade() {
            inner.record(&ev, &outcome);
        }
        // The waiter may have gone (cancelled request): fine.
        let _ = done.send(outcome);
    }
}

/// Queues one reconcile unless one is queued and not started yet (an
/// `ip addr flush` of 256 addresses gives 256 events, one pass is enough).
fn schedule_reconcile(inner: Arc<Inner>) {
    if !inner.reconcile_pending.swap(true, Ordering::AcqRel) {
        tokio::spawn(async move { inner.reconcile(None).await });
    }
}

/// Follows link and address events; also resyncs with the kernel every
/// few seconds (netlink multicast is lossy).
async fn monitor(inner: Weak<Inner>, mut events: Events) {
    let mut resync = tokio::time::interval(RESYNC_INTERVAL);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ev = events.next() => {
                let Some(ev) = ev else {
                    tracing::warn!("netlink event stream ended; relying on the periodic resync");
                    break;
                };
                let Some(inner) = inner.upgrade() else { return };
                match ev {
                    Event::AddressRemoved { prefix, .. }
                        if inner.lock().hosted.contains_key(&prefix.addr()) =>
                    {
                        schedule_reconcile(inner);
                    }
                    Event::Link(state) => {
                        inner.lock().links.insert(state.name.clone(), state.is_usable());
                        tokio::spawn(async move { inner.on_link(&state.name).await });
                    }
                    Event::LinkRemoved { name, .. } => {
                        inner.lock().links.remove(&name);
                        inner.forget_sender(&name);
                        tokio::spawn(async move { inner.on_link(&name).await });
                    }
                    _ => {}
                }
            }
            _ = resync.tick() => {
                let Some(inner) = inner.upgrade() else { return };
                schedule_reconcile(inner);
            }
        }
    }
    // Without events: resync only.
    loop {
        resync.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        inner.reconcile(None).await;
    }
}

/// Re-announces every hosted address every `every` (garp_refresh_s).
async fn refresh(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        for h in inner.hosted() {
            let running = inner
                .lock()
                .announcers
                .get(&h.public.addr)
                .is_some_and(|t| !t.is_finished());
            if !running {
                inner.spawn_announcer(h.public.addr, &h.iface, 1, false);
            }
        }
    }
}

/// Sends HOSTED to the local subscribers on every change and every few
/// seconds, until the client closes.
async fn publish_hosted(client: Client, mut rx: watch::Receiver<Vec<IpAddr>>) {
    let mut tick = tokio::time::interval(RESYNC_INTERVAL);
    let closed = client.closed();
    tokio::pin!(closed);
    loop {
        tokio::select! {
            _ = &mut closed => return,
            _ = tick.tick() => {}
            r = rx.changed() => if r.is_err() { return },
        }
        let addresses = rx.borrow_and_update().clone();
        let msg = Hosted { addresses };
        if let Err(e) = client
            .event(Address::new(LOCAL, BROADCAST_SERVICE), HOSTED, &msg)
            .await
        {
            tracing::debug!(error = %e, "cannot publish HOSTED");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    /// The resets before a removal end inside the leader's margin, counted
    /// from the lease end, not from the drop: a quarter of it, capped by
    /// the limit when the lease was reported lost before its end; past
    /// that, or with less than the minimum left, removal comes first.
    #[test]
    fn drop_resets_end_a_quarter_margin_after_the_lease_end() {
        let ms = Duration::from_millis;
        let us = Duration::from_micros;
        let now = tokio::time::Instant::now();
        let (default, fast) = (ms(100), ms(10));
        // Ended just now: a quarter of the margin.
        assert_eq!(drop_reset_by(Some(now), default, now), Some(now + ms(25)));
        // The watch fired 10 ms late: 15 ms are left, not 25.
        assert_eq!(
            drop_reset_by(Some(now - ms(10)), default, now),
            Some(now + ms(15))
        );
        // Past the deadline, or too little left: remove first.
        assert_eq!(drop_reset_by(Some(now - ms(1_000)), default, now), None);
        assert_eq!(drop_reset_by(Some(now - ms(25)), default, now), None);
        assert_eq!(drop_reset_by(Some(now - ms(23)), default, now), None);
        assert_eq!(
            drop_reset_by(Some(now - ms(22)), default, now),
            Some(now + ms(3))
        );
        // The fast profile's whole budget is below the minimum.
        assert_eq!(drop_reset_by(Some(now), fast, now), None);
        assert_eq!(
            drop_reset_by(Some(now + ms(1)), fast, now),
            Some(now + us(3_500))
        );
        // Lost before its end (or an orderly stop): the limit.
        assert_eq!(
            drop_reset_by(Some(now + ms(60_000)), default, now),
            Some(now + DROP_RESET_LIMIT)
        );
        assert_eq!(
            drop_reset_by(None, default, now),
            Some(now + DROP_RESET_LIMIT)
        );
    }

    fn prefix(s: &str, len: u8) -> IpPrefix {
        IpPrefix::new(ip(s), len).expect("test prefix")
    }

    /// What a removal's verification dump counts as left (hole 6): every
    /// copy of a wanted address on any link — a renamed link's copy too,
    /// which a delete by the old name never reaches — but not the hosted
    /// copy when one is named, and nothing of other addresses. The undo of
    /// an add (`undo_adds`) reports exactly these as leftovers; its window
    /// (a rename between an add and its undo as the lease ends) cannot be
    /// hit on purpose in a real kernel, so this is its test.
    #[test]
    fn a_removal_is_verified_on_every_link_but_the_hosted_copy() {
        let (a, b, other) = (ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.9"));
        // Link 2: the old interface, renamed; 3: the new one; 4: elsewhere.
        let present = vec![
            (2, prefix("192.0.2.1", 24)),
            (3, prefix("192.0.2.1", 24)),
            (4, prefix("192.0.2.9", 24)),
            (4, prefix("192.0.2.2", 32)),
        ];
        // Removed for good (undo, release, drop): every copy counts.
        let left = copies_left(&[a, b], &present, &|_| None);
        assert_eq!(
            left,
            vec![
                (2, prefix("192.0.2.1", 24)),
                (3, prefix("192.0.2.1", 24)),
                (4, prefix("192.0.2.2", 32)),
            ]
        );
        // Moved to link 3: only the copy on link 2 is left over.
        let left = copies_left(&[a], &present, &|x| (x == a).then_some(3));
        assert_eq!(left, vec![(2, prefix("192.0.2.1", 24))]);
        // Gone everywhere: nothing left; another address is not looked at.
        assert!(copies_left(&[ip("192.0.2.3")], &present, &|_| None).is_empty());
        assert!(!copies_left(&[a], &present, &|_| None)
            .iter()
            .any(|(_, p)| p.addr() == other));
    }

    /// Every address leased in an earlier lease is ended with the renewal
    /// (the renewal raises the kernel's cap for it too): hosted across a
    /// break, released, or a take of that lease still in flight.
    #[test]
    fn a_busy_renewal_is_retried_a_few_times_and_nothing_else_is() {
        let err = |errno| netlink::nft::NftError::Kernel {
            table: "inet t".into(),
            op: "renew",
            errno,
        };
        const EBUSY: i32 = 16; // Linux
        const EINVAL: i32 = 22;
        for refused in 0..BUSY_RETRIES {
            assert_eq!(busy_retry(&err(EBUSY), refused), Some(BUSY_PAUSE));
        }
        assert_eq!(busy_retry(&err(EBUSY), BUSY_RETRIES), None);
        assert_eq!(busy_retry(&err(EINVAL), 0), None);
        let missing = netlink::nft::NftError::TableMissing {
            table: "inet t".into(),
            op: "renew",
        };
        assert_eq!(busy_retry(&missing, 0), None);
    }

    #[test]
    fn the_keeper_ends_every_element_of_an_earlier_lease() {
        let (a, b, c, d, e) = (
            ip("192.0.2.1"),
            ip("192.0.2.2"),
            ip("192.0.2.3"),
            ip("192.0.2.4"),
            ip("192.0.2.5"),
        );
        // a: hosted, this lease. b: hosted across a break. c: taken under
        // the earlier lease, not hosted (yet). d: hosted, never leased.
        // e: a take of this lease in flight (recorded, not hosted).
        let leased_in: HashMap<IpAddr, u64> = [(a, 7), (b, 6), (c, 5), (e, 7)].into();
        let sets = keeper_sets([a, b, d].into_iter(), &leased_in, 7);
        assert_eq!(
            sets,
            KeeperSets {
                renew: vec![a],
                skipped: vec![b, d],
                stale: vec![b, c, d],
            }
        );
    }
}
