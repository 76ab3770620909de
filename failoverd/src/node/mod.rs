//! The node-local executor: makes this node's kernel match what the leader
//! decided, and keeps it so. No cluster logic lives here.
//!
//! [`Executor`] owns, for one node (one network namespace): the rtnetlink
//! handle, the packet senders, the ipfailover nftables table and the event
//! hooks. It
//!
//! * takes a public address (add it on the first listed interface whose link
//!   is usable, with `promote_secondaries` set first; announce it in a
//!   background task; tickle the clients conntrackd knows; run `takeip`),
//! * releases one (block it in nftables, reset its connections, remove it,
//!   unblock, run `releaseip`),
//! * moves one between interfaces of this node (`updateip`),
//! * follows the netlink event stream: a hosted address that disappears from
//!   the kernel is re-added and re-announced at once (self-healing); a link
//!   that goes down moves its addresses to another listed interface that is
//!   up, or reports [`NodeEvent::CannotHost`] so that the leader moves them
//!   to another node,
//! * adopts, at start, public addresses already configured in the kernel
//!   (restart without a blip),
//! * publishes `transport::msg::failover::HOSTED` whenever the hosted set
//!   changes and every few seconds.
//!
//! Invariants: an address is in the hosted set from the moment `take` has
//! added it until `release` has removed it; the executor never adds an
//! address it does not host; announcements are sent only while the address
//! is hosted and only on a link that is usable (admin up and carrier).
//! State-changing operations (take, release, update, healing) are
//! serialised by one operation lock, so they never interleave on one address.
//!
//! **The lease gate** ([`Executor::set_lease`]): the daemon tells the
//! executor until when this node may hold public addresses. Every path that
//! adds an address (take, move between interfaces, self-healing) checks the
//! gate before the kernel request and again, together with recording the
//! address as hosted, after it: an add that raced with the end of the lease
//! is undone at once. [`Executor::drop_all`] closes the gate and removes
//! every hosted or half-released address from the kernel *before* it waits
//! for the operation lock, so neither a take waiting on hooks nor a release
//! resetting connections can delay it. When the lease is lost
//! ([`DropMode::LeaseLost`]) the local connections of the addresses the
//! kernel lease guards are reset before they are removed — the guard
//! already keeps the node from serving them, and lets the resets out — by
//! a deadline inside the leader's margin after the lease end, and those of
//! any other address afterwards.

mod hooks;
mod ops;
mod plan;

pub use hooks::{HookEvent, HookFailure, HookOutcome, Hooks, ScriptResult, ScriptRun};
pub use plan::choose_interface;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::public_addresses::PublicAddress;
use transport::msg::conntrack::TrackedConnection;

use ops::Inner;

/// Settings of the executor, from `[failover]` of ipfailover.toml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorConfig {
    /// Announcement rounds after a take (the first at once); at least 1.
    pub garp_count: u32,
    /// Time between announcement rounds.
    pub garp_interval: Duration,
    /// Periodic re-announcement of every hosted address; `None` = off.
    pub garp_refresh: Option<Duration>,
    /// Tickle ACKs sent to each client of a taken address (one per round,
    /// capped by `garp_count` rounds).
    pub tickle_count: u32,
    /// Directory of event hooks; `None` runs no hooks.
    pub hooks_dir: Option<PathBuf>,
    /// The node's run directory: hooks find a private `ctdb` for this node
    /// first on their `PATH` (`config::ctdb_shim`); `None`: not set up.
    pub run_dir: Option<PathBuf>,
    /// Time limit of one hook executable.
    pub hook_timeout: Duration,
    /// Name of the nftables table (family inet).
    pub nft_table: String,
    /// Time limit of a GET_CONNECTIONS request to the local conntrackd.
    pub conntrack_timeout: Duration,
    /// Overall time limit of killtcp for one release.
    pub killtcp_timeout: Duration,
    /// Enforce the lease in the kernel (`netlink::lease`, tables
    /// `<nft_table>_lease`): hosted addresses stop answering when the lease
    /// ends even if no process of ours is alive. Off for an executor driven
    /// directly (tests, benchmarks), on in the daemon by default.
    pub kernel_lease: bool,
    /// News of a lease that comes more than this after the previous lease
    /// ended starts a new lease for the kernel lease: addresses held
    /// across it are not renewed (they must be dropped and taken again).
    /// Half of `lease + margin`: a lease that broke and came back needs
    /// the peers' fences to end, `lease + margin` after the break, so
    /// later news is either the old lease, late, or a new one.
    pub lapse_grace: Duration,
    /// How long past the lease end the kernel lease's elements may live
    /// (`netlink::lease::KernelLease::with_slack`; the cap still stops
    /// guarded traffic at the end): half the leader's margin, at most a
    /// tick. Without it elements end up to two ticks early, and guarded
    /// addresses go silent between renewals that come a little late.
    pub lease_slack: Duration,
    /// clusterd's lease margin (`ClusterConfig::margin_ms`): the leader
    /// gives this node's addresses to another node no earlier than this
    /// after this node's lease ended. A drop on a lost lease
    /// ([`DropMode::LeaseLost`]) resets connections before removing only
    /// until a quarter of it has passed since the lease end, so the removal
    /// is done well inside it (see [`DropMode::LeaseLost`]).
    pub lease_margin: Duration,
}

impl ExecutorConfig {
    /// The settings of a loaded configuration (`hooks_dir` resolved against
    /// the configuration directory).
    pub fn from_config(loaded: &config::Loaded) -> ExecutorConfig {
        let f = &loaded.config.failover;
        ExecutorConfig {
            garp_count: f.garp_count.max(1),
            garp_interval: Duration::from_millis(f.garp_interval_ms),
            garp_refresh: (f.garp_refresh_s > 0).then(|| Duration::from_secs(f.garp_refresh_s)),
            tickle_count: f.tickle_count,
            hooks_dir: Some(loaded.resolve(&f.hooks_dir)),
            run_dir: Some(loaded.resolve(&loaded.config.transport.run_dir)),
            hook_timeout: Duration::from_millis(f.hook_timeout_ms),
            nft_table: f.nft_table.clone(),
            conntrack_timeout: Duration::from_millis(500),
            killtcp_timeout: Duration::from_millis(1_000),
            kernel_lease: f.kernel_lease,
            lapse_grace: {
                let c = &loaded.config.cluster;
                Duration::from_millis((c.dead_after_ms() + c.margin_ms()) / 2)
            },
            lease_margin: Duration::from_millis(loaded.config.cluster.margin_ms()),
            lease_slack: {
                let margin = loaded.config.cluster.margin_ms();
                Duration::from_millis(margin / 2).min(netlink::lease::TICK)
            },
        }
    }
}

impl Default for ExecutorConfig {
    /// CTDB-like defaults: 3 announcements 1 s apart, 3 tickles, no hooks.
    fn default() -> Self {
        ExecutorConfig {
            garp_count: 3,
            garp_interval: Duration::from_millis(1_000),
            garp_refresh: None,
            tickle_count: 3,
            hooks_dir: None,
            run_dir: None,
            hook_timeout: Duration::from_secs(30),
            nft_table: "ipfailover".into(),
            conntrack_timeout: Duration::from_millis(500),
            killtcp_timeout: Duration::from_millis(1_000),
            kernel_lease: false,
            lapse_grace: Duration::from_millis(20),
            lease_slack: Duration::ZERO,
            // The default profile's.
            lease_margin: Duration::from_millis(100),
        }
    }
}

/// Errors of the executor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The rtnetlink socket or a link query failed.
    #[error("link: {0}")]
    Link(#[from] netlink::link::LinkError),
    /// Adding or removing an address failed.
    #[error("address: {0}")]
    Addr(#[from] netlink::addr::AddrError),
    /// The nftables table could not be installed or updated.
    #[error("nftables table: {0}")]
    Nft(#[from] netlink::nft::NftError),
    /// The netlink event stream could not be opened.
    #[error("netlink events: {0}")]
    Events(#[from] netlink::events::EventError),
    /// A packet socket failed.
    #[error("packets: {0}")]
    Send(#[from] netlink::packet::sender::SendError),
    /// A sock_diag request failed.
    #[error("sock_diag: {0}")]
    SockDiag(#[from] netlink::sockdiag::SockDiagError),
    /// killtcp failed.
    #[error("killtcp: {0}")]
    KillTcp(#[from] netlink::killtcp::KillError),
    /// None of the address's interfaces is usable (exists, admin up, carrier).
    #[error("cannot host {addr}: none of its interfaces {ifaces:?} is up")]
    NoUsableInterface {
        /// The public address.
        addr: IpAddr,
        /// Its interfaces.
        ifaces: Vec<String>,
    },
    /// `update` named an interface that is not listed for the address.
    #[error("{iface} is not an interface of {addr}")]
    NotListed {
        /// The public address.
        addr: IpAddr,
        /// The interface asked for.
        iface: String,
    },
    /// The operation needs an address this node does not host.
    #[error("{addr} is not hosted on this node")]
    NotHosted {
        /// The address.
        addr: IpAddr,
    },
    /// This node's lease is not valid (or ended during the operation): it
    /// may not configure public addresses.
    #[error("cannot configure {addr}: this node's lease is not valid")]
    NoLease {
        /// The address.
        addr: IpAddr,
    },
    /// The operation's own precondition (checked under the operation lock)
    /// no longer holds, e.g. the run it belongs to was overtaken.
    #[error("{addr}: {reason}")]
    Stale {
        /// The address.
        addr: IpAddr,
        /// Why.
        reason: String,
    },
    /// A release was overtaken by a take of the same address: the address is
    /// still configured here.
    #[error("{addr} was taken again while it was being released: still configured")]
    Retaken {
        /// The address.
        addr: IpAddr,
    },
    /// The prefix length does not fit the address.
    #[error("bad prefix /{prefix} for {addr}")]
    BadPrefix {
        /// The address.
        addr: IpAddr,
        /// The prefix length.
        prefix: u8,
    },
    /// The kernel refused to add or remove the address on this interface
    /// (one address of a pipelined batch).
    #[error("{op} {addr} on {iface}: {reason}")]
    Kernel {
        /// `add` or `remove`.
        op: &'static str,
        /// The address.
        addr: IpAddr,
        /// The interface.
        iface: String,
        /// The kernel's answer.
        reason: String,
    },
}

/// How [`Executor::drop_all`] orders removal and connection resets.
///
/// The order decides whether the clients of this node's local sockets see
/// a reset: a socket destroyed after its address was removed sends a reset
/// the kernel cannot route (no route from an address the host no longer
/// has), and its idle client hangs until the address's next owner tickles
/// it — which it can do only for connections its conntrackd knows, and
/// never for an address no other node may host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropMode {
    /// Remove the addresses at once, reset local connections afterwards
    /// (their resets do not leave). The lease ended and removal is the only
    /// bound: without the kernel lease.
    RemoveFirst,
    /// Reset local connections first, then remove (an orderly stop while
    /// the lease is still valid): at most 200 ms, and no later than half
    /// a quarter of the leader's margin after the lease end (as for
    /// [`DropMode::LeaseLost`]).
    ResetFirst,
    /// The lease ended or was lost. Addresses the kernel lease guards
    /// ([`ExecutorConfig::kernel_lease`], [`Executor::guard`]) have their
    /// lease elements revoked, then their local connections reset (the
    /// resets leave through the guard's exception for TCP resets), then
    /// are removed; any other address is removed first, as with
    /// [`DropMode::RemoveFirst`] (without the kernel lease: all of them).
    ///
    /// The address stays *configured* during the resets, though not
    /// served, and the rule is that no address is ever configured on two
    /// nodes at once: the leader may give it away
    /// [`ExecutorConfig::lease_margin`] after the lease end (at least half
    /// of it in real time, with clock-rate drift and delays). So the
    /// revoke and the resets must be done by a quarter of that margin
    /// after the end of the lease the addresses were held under — the
    /// gate's last end, or an earlier one that ended since the last drop,
    /// not when the drop started (the lease watch may fire late) — and at
    /// most 200 ms after the drop started; what is not done by then is
    /// abandoned and the addresses removed at once. When that deadline has
    /// passed (or less than 3 ms is left, or no lease end is known) every
    /// address is removed first. The default profile's 100 ms margin
    /// leaves 25 ms; the fast profile's 10 ms leaves 2.5 ms, less than the
    /// minimum, so there a lost lease always removes first.
    ///
    /// Not serving is what the kernel lease gives: a guarded address
    /// without a live element takes no packet in, sends nothing but TCP
    /// resets and answers no ARP/NS, and an element runs out at the lease
    /// end at the latest (see `Inner::stop_serving`).
    LeaseLost,
}

/// One address hosted on this node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostedAddress {
    /// The public address, its prefix and its listed interfaces.
    pub public: PublicAddress,
    /// The interface it is configured on now.
    pub iface: String,
    /// When this node configured it (`CLOCK_MONOTONIC` ns, read before the
    /// kernel request; for an adopted address, what the record said). See
    /// [`crate::record`].
    pub since_ns: u64,
}

/// What `take` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// The address was added on this interface.
    Added {
        /// The interface.
        iface: String,
    },
    /// It was already hosted (redundant take): nothing changed.
    AlreadyHosted {
        /// The interface it is on.
        iface: String,
    },
}

/// What a link or address event made the executor do, for the daemon
/// (F2): the leader must hear about `CannotHost` and `InterfacesChanged`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// The set of hosted addresses changed (after take, release, update,
    /// drop_all, adoption).
    HostedChanged(Vec<IpAddr>),
    /// A listed interface went up or down: the set of addresses this node
    /// can host may have changed (run [`Executor::can_host`] again).
    InterfacesChanged,
    /// A hosted address's interface went down and no other listed interface
    /// is up: the address stays configured (on a dead link it carries no
    /// traffic) until the leader releases it here and gives it to another
    /// node.
    CannotHost {
        /// The address.
        addr: IpAddr,
    },
    /// A hosted address moved to another interface of this node.
    Moved {
        /// The address.
        addr: IpAddr,
        /// Interface it was on.
        from: String,
        /// Interface it is on now.
        to: String,
    },
    /// A hosted address vanished from the kernel and was re-added.
    Restored {
        /// The address.
        addr: IpAddr,
    },
    /// A hook exited non-zero, was killed by a signal or timed out.
    HookFailed(HookFailure),
    /// A copy of `addr` that no plan accounts for is still configured
    /// (hole 6): an add undone as the lease ended whose removal did not
    /// work, or, after a move between interfaces, a copy left on a link
    /// other than the new one (the old link was renamed). The daemon
    /// tracks it as a leftover and removes it with
    /// [`Executor::remove_leftovers`] until that works.
    Leftover {
        /// The address.
        addr: IpAddr,
    },
}

/// One interface, for `ipfailover ifaces`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// Its name.
    pub name: String,
    /// Usable: exists, admin up, carrier, and not forced down by
    /// [`Executor::set_link_override`].
    pub up: bool,
    /// Hosted addresses configured on it.
    pub references: usize,
}

/// Differences between what this node hosts and what the kernel has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discrepancies {
    /// Hosted here but not configured in the kernel.
    pub missing: Vec<IpAddr>,
    /// Public addresses configured in the kernel that this node does not
    /// host.
    pub unexpected: Vec<IpAddr>,
}

/// Status of the executor, for `ipfailover status` style reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// Hosted addresses, sorted.
    pub hosted: Vec<HostedAddress>,
    /// The last failures of hooks (most recent last, at most 16).
    pub hook_failures: Vec<HookFailure>,
}

/// The node-local executor (see the module docs). Cheap to clone: clones
/// share one executor. Create it inside the node's network namespace, in a
/// tokio runtime.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").finish_non_exhaustive()
    }
}

impl Executor {
    /// Opens the netlink handle, installs the nftables table (empty sets;
    /// a block left by a crashed release is lifted), subscribes to link and
    /// address events and spawns the monitor task (self-healing, link
    /// changes, a resync every few seconds, periodic re-announcement) and,
    /// when `client` is given, the HOSTED publisher. Events for the daemon
    /// come out of the returned receiver.
    ///
    /// `client` is also used for GET_CONNECTIONS to the local conntrackd;
    /// without it no clients are tickled from conntrackd's list.
    ///
    /// # Errors
    ///
    /// [`NodeError::Link`], [`NodeError::Nft`], [`NodeError::Events`],
    /// [`NodeError::Send`] when a socket cannot be opened (not root, no
    /// tokio runtime).
    pub async fn start(
        config: ExecutorConfig,
        client: Option<transport::client::Client>,
    ) -> Result<(Executor, mpsc::UnboundedReceiver<NodeEvent>), NodeError> {
        Self::start_on(config, client, None).await
    }

    /// [`Executor::start`], with the kernel lease's keeper (the task that
    /// renews the lease elements of every hosted address on each lease
    /// news) on `lease_rt` when given: a runtime of its own, so that no
    /// take, release or hook on the executor's runtime delays a renewal
    /// (a release holds a runtime thread in the kernel for up to ~20 ms;
    /// with the lease's elements ending at the lease end, a renewal that
    /// late lets them run out and the node's other addresses stop
    /// answering in between) — and not the thread that reads the lease
    /// news either, since a renewal can itself wait in the kernel.
    ///
    /// # Errors
    ///
    /// As [`Executor::start`].
    pub async fn start_on(
        config: ExecutorConfig,
        client: Option<transport::client::Client>,
        lease_rt: Option<&tokio::runtime::Handle>,
    ) -> Result<(Executor, mpsc::UnboundedReceiver<NodeEvent>), NodeError> {
        let (inner, rx) = Inner::start(config, client, lease_rt).await?;
        Ok((Executor { inner }, rx))
    }

    /// Adopts the addresses of `known` (this node's public_addresses) that
    /// are already configured in the kernel on one of their listed
    /// interfaces: they become hosted without being removed or re-added
    /// (restart without a blip), `promote_secondaries` is set on their
    /// interface and they are added to the tracked nftables set. Nothing is
    /// announced. Returns the adopted addresses.
    ///
    /// # Errors
    ///
    /// [`NodeError::Addr`] / [`NodeError::Link`] when the kernel's
    /// addresses or links cannot be listed.
    /// `known` pairs each address with when it was configured (from
    /// [`crate::record`]; 0 when unknown).
    pub async fn adopt(&self, known: &[(PublicAddress, u64)]) -> Result<Vec<IpAddr>, NodeError> {
        self.inner.adopt(known).await
    }

    /// Takes one public address: see [`Executor::take_many`]. A redundant
    /// take of an address already hosted is a success
    /// ([`Taken::AlreadyHosted`]).
    ///
    /// # Errors
    ///
    /// [`NodeError::NoUsableInterface`], [`NodeError::BadPrefix`],
    /// [`NodeError::Kernel`] when the kernel refuses the address.
    pub async fn take(&self, public: &PublicAddress) -> Result<Taken, NodeError> {
        let mut r = self
            .inner
            .take_many(std::slice::from_ref(public), &|| Ok(()))
            .await;
        match r.pop() {
            Some((_, result)) => result,
            None => unreachable!("take_many answers once per address"),
        }
    }

    /// Takes several addresses at once (a takeover run): chooses each one's
    /// interface (first listed usable), sets `promote_secondaries`, adds
    /// them all (pipelined netlink), starts their announcements
    /// (`garp_count` rounds `garp_interval` apart, in background tasks
    /// cancelled on release; the first round at once; a round is skipped
    /// while the link is down), asks conntrackd for their clients and
    /// tickles them (one tickle per round, `tickle_count` rounds), then
    /// runs the `takeip IFACE ADDRESS PREFIX` hooks. The address answers
    /// before the hooks run. One result per address, in order. Refused
    /// ([`NodeError::NoLease`]) while the lease gate is closed.
    pub async fn take_many(
        &self,
        publics: &[PublicAddress],
    ) -> Vec<(IpAddr, Result<Taken, NodeError>)> {
        self.inner.take_many(publics, &|| Ok(())).await
    }

    /// [`Executor::take_many`], with `still` checked under the operation
    /// lock right before the kernel is touched: when it fails (the run this
    /// take belongs to was overtaken while the take waited for an earlier
    /// operation), nothing is added and every address gets
    /// [`NodeError::Stale`] with its reason.
    pub async fn take_many_if(
        &self,
        publics: &[PublicAddress],
        still: &(dyn Fn() -> Result<(), String> + Sync),
    ) -> Vec<(IpAddr, Result<Taken, NodeError>)> {
        self.inner.take_many(publics, still).await
    }

    /// Releases one address: see [`Executor::release_many`]. Releasing an
    /// address that is not hosted (and not in the kernel) is a success.
    ///
    /// # Errors
    ///
    /// [`NodeError::Kernel`] when the kernel refuses the removal.
    pub async fn release(&self, addr: IpAddr) -> Result<(), NodeError> {
        let mut r = self.inner.release_many(&[addr], false).await;
        match r.pop() {
            Some((_, result)) => result,
            None => unreachable!("release_many answers once per address"),
        }
    }

    /// Releases several addresses: stops their announcements, adds them to
    /// the nftables blocked set, resets their established connections
    /// (sock_diag destroy of the local sockets, which resets the clients
    /// too; killtcp, bounded by `killtcp_timeout`, of the other clients
    /// conntrackd lists for them), removes them, unblocks them, then runs
    /// the `releaseip IFACE ADDRESS PREFIX` hooks. An address in the kernel
    /// that is not hosted (a leftover) is removed too, from whichever
    /// interface carries it. One result per address, in order.
    pub async fn release_many(&self, addrs: &[IpAddr]) -> Vec<(IpAddr, Result<(), NodeError>)> {
        self.inner.release_many(addrs, false).await
    }

    /// Removes leftovers (hole 6): copies of `addrs` that no plan accounts
    /// for. Whether an address is hosted is decided under the operation
    /// lock, and its hosted copy is never touched: of a hosted address,
    /// only the copies on other links are deleted (left by a move whose old
    /// link was renamed, see [`NodeEvent::Leftover`]; no block, reset or
    /// hook); one not hosted is released from whichever links have it (as
    /// [`Executor::release_many`]), unless a take hosts it before that
    /// starts ([`NodeError::Retaken`]). Ok means no such copy is left,
    /// verified by a dump. One result per address, in order.
    pub async fn remove_leftovers(&self, addrs: &[IpAddr]) -> Vec<(IpAddr, Result<(), NodeError>)> {
        self.inner.remove_leftovers(addrs).await
    }

    /// The last run of `event`'s hooks since start (`None`: never ran).
    pub fn hook_status(&self, event: &str) -> Option<Vec<ScriptRun>> {
        self.inner.hook_status(event)
    }

    /// The hooks directory's scripts and whether each is enabled.
    pub fn hook_scripts(&self) -> Vec<(std::path::PathBuf, bool)> {
        self.inner.hooks().entries()
    }

    /// Whether the hooks directory is configured and exists.
    pub fn hooks_dir_exists(&self) -> bool {
        self.inner
            .hooks()
            .dir()
            .is_some_and(std::path::Path::is_dir)
    }

    /// Enables or disables one hook ([`Hooks::set_enabled`]).
    ///
    /// # Errors
    ///
    /// No such hook; the chmod failed.
    pub fn set_hook_enabled(&self, name: &str, enabled: bool) -> Result<(), String> {
        self.inner.hooks().set_enabled(name, enabled)
    }

    /// Runs `event`'s hooks now, in turn with those of address operations,
    /// and waits for them (`ipfailover event run`).
    pub async fn run_event(&self, event: HookEvent) -> HookOutcome {
        self.inner.run_hooks(event).await
    }

    /// Moves a hosted address to `new_iface` (one of its listed interfaces):
    /// adds it there, removes it from the old one, announces it and tickles
    /// its clients, runs `updateip OLDIFACE NEWIFACE ADDRESS PREFIX`. Moving
    /// to the interface it is on is a no-op.
    ///
    /// # Errors
    ///
    /// [`NodeError::NotHosted`], [`NodeError::NotListed`],
    /// [`NodeError::Addr`].
    pub async fn update(&self, addr: IpAddr, new_iface: &str) -> Result<(), NodeError> {
        self.inner.update(addr, new_iface).await
    }

    /// Releases every address at once and closes the lease gate until the
    /// next [`Executor::set_lease`] (lease lost, shutdown). Every hosted or
    /// half-released address is removed from the kernel in one pipelined
    /// request per interface, without waiting for the operation lock, a
    /// hook or any other operation. With [`DropMode::RemoveFirst`] it is
    /// removed first and local sockets are destroyed afterwards (their
    /// resets cannot leave). With [`DropMode::ResetFirst`] (orderly
    /// shutdown with a valid lease) local connections are reset first
    /// so that clients see a reset. With [`DropMode::LeaseLost`] (lease
    /// lost: the leader may give the addresses away a margin after the
    /// lease ended) the addresses the kernel lease guards stop being
    /// served at once (their elements are revoked) and have their local
    /// connections reset before they are removed, the others are removed
    /// first. Resets before a removal end by a quarter of the leader's
    /// margin ([`ExecutorConfig::lease_margin`]) after the end of the lease the
    /// addresses were held under, and 200 ms after the start at most; when
    /// that has passed (or less than 3 ms is left) the addresses are
    /// removed first. Then the
    /// nftables sets are cleared and the `releaseip` hooks run (no killtcp
    /// of conntrackd's other clients: it could take seconds). Returns the
    /// number of addresses released.
    ///
    /// # Errors
    ///
    /// The first error met; the other addresses are still removed.
    pub async fn drop_all(&self, mode: DropMode) -> Result<usize, NodeError> {
        self.inner.drop_all(mode).await
    }

    /// Opens the lease gate until `until` (`None`: closed). Until the first
    /// call the gate is open without limit (an executor driven directly,
    /// without clusterd, as in tests and benchmarks); the daemon closes it
    /// at start and opens it from clusterd's lease news.
    pub fn set_lease(&self, until: Option<tokio::time::Instant>) {
        self.inner.set_lease(until);
    }

    /// Fault injection for tests: the next `n` kernel lease renewals fail
    /// as if the kernel refused them as busy (EBUSY), which cannot be
    /// provoked on demand (`netlink::lease::KernelLease::refuse_next_as_busy`).
    /// Nothing without [`ExecutorConfig::kernel_lease`].
    #[doc(hidden)]
    pub fn refuse_kernel_lease_renewals_as_busy(&self, n: u32) {
        if let Some(l) = &self.inner.lease {
            l.refuse_next_as_busy(n);
        }
    }

    /// Puts addresses under the kernel lease (with
    /// [`ExecutorConfig::kernel_lease`]): from now on this host answers for
    /// them only while it holds a lease element for them, so a leftover
    /// copy (added by hand, left by a crash) never answers. The daemon
    /// guards every public address it knows at start; takes guard theirs.
    ///
    /// # Errors
    ///
    /// [`NodeError::Nft`] when the kernel refuses.
    pub async fn guard(&self, addrs: &[IpAddr]) -> Result<(), NodeError> {
        self.inner.guard(addrs).await
    }

    /// The addresses hosted now, sorted.
    pub fn hosted(&self) -> Vec<HostedAddress> {
        self.inner.hosted()
    }

    /// A watch of the hosted addresses (sorted), updated on every change.
    pub fn watch_hosted(&self) -> watch::Receiver<Vec<IpAddr>> {
        self.inner.hosted_tx.subscribe()
    }

    /// The interface `public` would be added on now (first listed usable
    /// one), `None` when this node cannot host it. The leader counts an
    /// address as available on this node only when this is `Some`.
    ///
    /// # Errors
    ///
    /// [`NodeError::Link`] when the link query fails.
    pub async fn can_host(&self, public: &PublicAddress) -> Result<Option<String>, NodeError> {
        let usable = self.inner.usable_map().await?;
        Ok(
            choose_interface(&public.ifaces, |i| usable.get(i).copied().unwrap_or(false))
                .map(str::to_owned),
        )
    }

    /// The state of these interfaces (for `ipfailover ifaces`); a missing
    /// interface is reported down.
    ///
    /// # Errors
    ///
    /// [`NodeError::Link`] when the links cannot be listed.
    pub async fn interfaces(&self, names: &[String]) -> Result<Vec<InterfaceInfo>, NodeError> {
        let usable = self.inner.usable_map().await?;
        let hosted = self.inner.hosted();
        Ok(names
            .iter()
            .map(|n| InterfaceInfo {
                name: n.clone(),
                up: usable.get(n).copied().unwrap_or(false),
                references: hosted.iter().filter(|h| &h.iface == n).count(),
            })
            .collect())
    }

    /// CTDB's `setifacelink`: `Some(false)` makes the executor treat the
    /// interface as down whatever the kernel says (its hosted addresses are
    /// moved to another listed interface or reported
    /// [`NodeEvent::CannotHost`]), `Some(true)` or `None` clears that and
    /// follows the kernel again.
    pub async fn set_link_override(&self, iface: &str, up: Option<bool>) {
        self.inner.set_link_override(iface, up);
        self.inner.on_link(iface).await;
    }

    /// Sends one announcement round for a hosted address now (`gratarp`).
    /// Returns the frames sent (0 when its link is down).
    ///
    /// # Errors
    ///
    /// [`NodeError::NotHosted`], [`NodeError::Send`].
    pub async fn announce(&self, addr: IpAddr) -> Result<usize, NodeError> {
        self.inner.announce_once(addr).await
    }

    /// Sends one tickle ACK per connection, from the server end to the
    /// client (`ipfailover tickle`). Returns how many were sent.
    ///
    /// # Errors
    ///
    /// [`NodeError::Send`] when the raw socket fails.
    pub async fn tickle(&self, connections: &[TrackedConnection]) -> Result<usize, NodeError> {
        self.inner.tickle(connections).await
    }

    /// Resets connections with killtcp (`ipfailover killtcp`): both ends,
    /// through the interface of the hosted server address. Returns how many
    /// were reset.
    ///
    /// # Errors
    ///
    /// [`NodeError::NotHosted`] when a server address is not hosted here,
    /// [`NodeError::KillTcp`].
    pub async fn killtcp(&self, connections: &[TrackedConnection]) -> Result<usize, NodeError> {
        self.inner.killtcp(connections).await
    }

    /// Runs the `ipreallocated` hooks (after a takeover run); failures are
    /// also recorded in the status and reported as events.
    pub async fn ipreallocated(&self) -> HookOutcome {
        self.inner.run_hooks(HookEvent::IpReallocated).await
    }

    /// Compares the hosted set with the kernel: hosted but missing, and
    /// addresses of `known` configured in the kernel but not hosted.
    ///
    /// # Errors
    ///
    /// [`NodeError::Addr`] / [`NodeError::Link`] when the kernel's
    /// addresses or links cannot be listed.
    pub async fn check(&self, known: &[PublicAddress]) -> Result<Discrepancies, NodeError> {
        self.inner.check(known).await
    }

    /// Hosted addresses and recent hook failures.
    pub fn status(&self) -> NodeStatus {
        self.inner.status()
    }

    /// Stops the background tasks (monitor, announcements, publisher).
    /// Addresses stay configured: call [`Executor::drop_all`] first to
    /// release them.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }
}
