//! The kernel lease: nftables rules that stop this host answering for its
//! public addresses when the lease ends, with no process of ours alive.
//!
//! A lease that lives only in a process ends only when that process acts on
//! it: a daemon that is killed, frozen or starved keeps answering for its
//! addresses after the leader has given them away. Here the kernel ends it:
//! every hosted address has an element in a set with a timeout, renewed
//! with the lease; when the element expires the kernel drops the address's
//! traffic (IP both ways, ARP, neighbour discovery) whatever our processes
//! are doing. Removing the address from the interface comes later, as soon
//! as a process can.
//!
//! Two tables of one name (`<name>` is `<nft_table>_lease` in failoverd):
//!
//! ```text
//! table inet NAME {
//!     set guard4 { type ipv4_addr; }   set guard6 { type ipv6_addr; }
//!     set lease4 { type ipv4_addr; flags timeout; }
//!     set lease6 { type ipv6_addr; flags timeout; }
//!     chain cap {        # each renewal inserts its pair at the head (see "The cap")
//!         meta time > CAP counter drop
//!         return
//!         (older renewals' pairs, never reached)
//!     }
//!     chain guard_in {   # before conntrack and everything else
//!         type filter hook prerouting priority raw - 10; policy accept;
//!         meta nfproto ipv4 ip daddr @guard4 ip daddr != @lease4 counter drop
//!         meta nfproto ipv4 ip daddr @guard4 jump cap
//!         meta nfproto ipv6 ip6 daddr @guard6 ip6 daddr != @lease6 counter drop
//!         meta nfproto ipv6 ip6 daddr @guard6 jump cap
//!         # neighbour solicitation (135) for a guarded target that is not leased
//!         meta nfproto ipv6 meta l4proto ipv6-icmp icmpv6 type 135
//!             @th,64,128 @guard6 @th,64,128 != @lease6 counter drop
//!         meta nfproto ipv6 meta l4proto ipv6-icmp icmpv6 type 135
//!             @th,64,128 @guard6 jump cap
//!     }
//!     chain guard_out {
//!         type filter hook output priority raw - 10; policy accept;
//!         # a TCP reset passes: it cannot serve (see "Resets" below)
//!         meta l4proto tcp @th,104,8 & 0x04 != 0 accept
//!         (then the rules of guard_in with saddr, and type 136:
//!          neighbour advertisements)
//!     }
//! }
//! table arp NAME {
//!     set guard4 { type ipv4_addr; }   set lease4 { type ipv4_addr; flags timeout; }
//!     chain cap { meta time > CAP counter drop }   # the same cap
//!     chain guard_in {   # ARP requests for a guarded address that is not leased
//!         type filter hook input priority filter; policy accept;
//!         arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp operation request
//!             arp daddr ip @guard4 arp daddr ip != @lease4 counter drop
//!         (the same match) arp daddr ip @guard4 jump cap
//!     }
//!     chain guard_out {  # ARP the kernel sends from such an address
//!         type filter hook output priority filter; policy accept;
//!         arp htype 1 arp ptype ip arp hlen 6 arp plen 4
//!             arp saddr ip @guard4 arp saddr ip != @lease4 counter drop
//!         (the same match) arp saddr ip @guard4 jump cap
//!     }
//! }
//! ```
//!
//! * **guard** sets: the addresses the rules apply to (every public address
//!   the node may host). An address in no guard set is never touched.
//! * **lease** sets: an element per address this node may answer for now,
//!   with a timeout. [`KernelLease::renew`] sets an element's timeout
//!   whether it is present or not: an add on Linux >= 6.10 (which updates a
//!   present element in place, ~30 µs), a delete and an add in one
//!   transaction before (an element is never absent, but the commit then
//!   waits for an RCU grace period, ~16 ms here); [`KernelLease::revoke`]
//!   and [`KernelLease::revoke_all`] end them at once.
//! * **Resets** leave a guarded address whose lease ended: the output guard
//!   lets every TCP segment with RST set through (and nothing else). A
//!   reset answers nothing and starts nothing — the node still receives
//!   nothing for the address and answers no ARP or neighbour solicitation —
//!   but it lets a node that lost its lease reset its own clients when it
//!   destroys their sockets, which it must do before it removes the address
//!   (after that the kernel has no route from it). Without it those clients
//!   hang until the new owner tickles them, which it can do only for the
//!   connections its conntrackd knows.
//! * [`KernelLease::install`] creates what is missing and replaces the
//!   rules of the base chains, and **keeps the elements** of every set and
//!   the cap: a restarted daemon inherits the bound its predecessor left (a
//!   daemon that died keeps the kernel from answering once its last
//!   renewal runs out, and the next one must not undo that, nor cut a
//!   valid lease short). On tables of an older version it adds the cap
//!   chains (empty: no cap until the first renewal).
//!
//! **Timing.** The kernel counts element timeouts in jiffies and rounds
//! the milliseconds it is given *down* to whole ticks (Linux 6.18: 14 ms
//! is kept as 12 ms); the element expires at the tick boundary that many
//! ticks after the current one, which started up to a tick before the
//! commit. So an element given a whole number `k` of ticks at time t
//! expires in `(t + (k - 1)·TICK, t + k·TICK]`, whichever way a kernel
//! rounds. [`timeout_for`] gives the largest whole number of ticks that
//! fits before `end` (its caller adds the slack the leader's margin
//! allows, [`KernelLease::with_slack`]), so an element expires no later
//! than `end` plus the slack plus the time between reading the clock and
//! the kernel's commit, and no earlier than two ticks before that. (Until
//! session 6 it gave `end - now - TICK` in milliseconds, on the belief that
//! kernels round up: elements then ended 4 to 12 ms before the lease end,
//! and in the fast profile, whose renewals come every 10 ms with about 18
//! ms left, guarded addresses stopped answering for a few ms between
//! renewals whenever one was a little late: the first SYNs of 196 of 256
//! addresses taken over were dropped.) `TICK` is 4 ms, one tick of
//! `CONFIG_HZ=250` (Debian's kernels); a kernel with `CONFIG_HZ=100` would
//! cut up to 6 ms more off the end.
//!
//! **The cap.** That time is unbounded: a process stopped (SIGSTOP, an
//! overloaded host) between its clock reading and its `sendmsg` for F ms
//! gives elements that outlive `end` by F, and past the leader's margin the
//! address may already answer on another node. So every renewal also sets,
//! in the same transaction, an absolute bound no delay can stretch: the
//! `cap` chains drop a guarded address's traffic when `meta time` (the
//! packet's wall-clock time, `CLOCK_REALTIME`, Linux >= 5.4) is past CAP,
//! the renewal's end on the wall clock: `real + (end - mono)` from
//! one [`Clocks`] reading (wall clock first, so a stop between the two
//! readings only makes CAP earlier). A renewal committed late therefore
//! sets CAP to its own end, already past or near: it can only cut early.
//! The cap is one value for every guarded address, written by the last
//! renewal committed: a renewal raises it for addresses it does not renew,
//! so a caller must end, in the same transaction
//! ([`KernelLease::renew_until_revoking`]), the elements of addresses
//! whose own lease ended before this one (failoverd: those of an earlier
//! lease epoch). Deleting a rule makes the kernel's commit wait for an RCU
//! grace period (8 to 16 ms here), so a renewal deletes nothing: it
//! inserts `meta time > CAP counter drop` and `return` at the head of each
//! `cap` chain (the pair of the last renewal committed decides), and every
//! [`COMPACT_EVERY`]th renewal empties the chains first. Cost: about 0.05
//! ms per renewal, and one grace period every [`COMPACT_EVERY`] renewals.
//!
//! **Wall-clock steps.** The cap trusts `CLOCK_REALTIME` between a renewal
//! and the next (a few ms to a quarter of a lease). A step backwards makes
//! the cap later: the element timeouts still bound, as before the cap. A
//! step forwards makes it earlier: the addresses stop answering until the
//! next renewal. Slewing (NTP's normal mode) changes both by parts per
//! million.
//!
//! Every call is one nfnetlink batch for both tables (one kernel
//! transaction). Needs `CAP_NET_ADMIN`; acts on the network namespace of the
//! calling thread.

use std::ffi::{c_void, CStr, CString};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nftnl::expr::{
    Bitwise, Cmp, CmpOp, Counter, Expression, Ipv4HeaderField, Ipv6HeaderField, Meta,
    NetworkHeaderField, Payload, Verdict,
};
use nftnl::nftnl_sys as sys;
use nftnl::set::{Set, SetKey};
use nftnl::{Batch, Chain, ChainType, Hook, MsgType, NlMsg, Policy, ProtoFamily, Rule, Table};

use crate::nft::{
    finish, run_batch, run_batch_timed, split, ElemsMsg, NftError, NftTable, ELEMS_PER_MSG,
    FLAGS_ACK, FLAGS_ADD, NFT_MSG_DESTROYSETELEM, NFT_MSG_NEWSETELEM, PRIORITY_RAW,
};

/// One kernel timer tick at `CONFIG_HZ=250`: the most an element can
/// outlive the timeout it was given.
pub const TICK: Duration = Duration::from_millis(4);

/// The timeout that makes an element expire no later than `end`, for a
/// clock read at `now` (both on one monotonic clock): the largest whole
/// number of ticks that fits (see "Timing" in the module documentation);
/// `None` when less than a tick is left (revoke instead).
#[must_use]
pub fn timeout_for(now: Instant, end: Instant) -> Option<Duration> {
    let left = end.checked_duration_since(now)?;
    let tick_ns = TICK.as_nanos();
    let ticks = u64::try_from(left.as_nanos() / tick_ns).unwrap_or(u64::MAX);
    (ticks > 0).then(|| TICK.saturating_mul(u32::try_from(ticks).unwrap_or(u32::MAX)))
}

/// One reading of both clocks, the wall clock first: the cap of a
/// renewal to `end` is `real + (end - mono)` (less a tick), so a process
/// stopped between the two readings only makes the cap earlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clocks {
    /// `CLOCK_REALTIME`, the clock of nftables' `meta time`.
    pub real: SystemTime,
    /// `CLOCK_MONOTONIC`, the clock lease ends are measured on.
    pub mono: Instant,
}

impl Clocks {
    /// Reads the wall clock, then the monotonic clock.
    #[must_use]
    pub fn now() -> Clocks {
        let real = SystemTime::now();
        let mono = Instant::now();
        Clocks { real, mono }
    }
}

/// The cap for an element that runs `left` from the reading `read`: ns
/// since the epoch on the wall clock (0, which stops every guarded
/// address, for a wall clock before 1970).
fn cap_at(read: Clocks, left: Duration) -> u64 {
    read.real
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|since| since.checked_add(left))
        .map_or(0, |t| u64::try_from(t.as_nanos()).unwrap_or(u64::MAX))
}

const GUARD4: &CStr = c"guard4";
const GUARD6: &CStr = c"guard6";
const LEASE4: &CStr = c"lease4";
const LEASE6: &CStr = c"lease6";
/// The regular chain holding the cap rules, in both tables.
const CAP: &CStr = c"cap";
/// Every this many renewals (counted per [`KernelLease`] and its clones,
/// the first included), a renewal empties the cap chains before it adds
/// its rules. Deleting a rule makes the kernel's commit wait for an RCU
/// grace period (8 to 16 ms here), so the others only insert: the chains
/// grow by two rules per renewal, of which only the first two are ever
/// evaluated.
pub const COMPACT_EVERY: u32 = 256;
/// `NFT_META_TIME_NS`.
const NFT_META_TIME_NS: u32 = 30;
/// `NFT_MSG_DELSETELEM` without elements: flush the set.
const NFT_MSG_DELSETELEM: u16 = 14;
/// `NFT_MSG_DELRULE` without a handle: every rule of the chain.
const NFT_MSG_DELRULE: u16 = 8;
/// `NFT_SET_TIMEOUT`.
const SET_FLAG_TIMEOUT: u32 = 0x10;
/// `NFT_LOOKUP_F_INV`.
const LOOKUP_INV: u32 = 1;
/// `NFT_PAYLOAD_NETWORK_HEADER`, `NFT_PAYLOAD_TRANSPORT_HEADER`.
const BASE_NETWORK: u32 = 1;
const BASE_TRANSPORT: u32 = 2;
/// Before the main table's `raw` chains (which are at `raw`).
const PRIORITY_GUARD: i32 = PRIORITY_RAW - 10;
/// Offset of the flags byte in the TCP header, and its RST bit.
const TCP_FLAGS: u32 = 13;
const TCP_RST: u8 = 0x04;
/// ICMPv6 neighbour solicitation and advertisement.
const ICMPV6_NS: u8 = 135;
const ICMPV6_NA: u8 = 136;
/// ARP header start for Ethernet + IPv4: htype 1, ptype 0x0800, hlen 6, plen 4.
const ARP_ETH_IP4: [u8; 6] = [0, 1, 8, 0, 6, 4];
/// ARP operation "request", big-endian.
const ARP_REQUEST: [u8; 2] = [0, 1];
/// Offsets in the ARP header (Ethernet + IPv4).
const ARP_OP: u32 = 6;
const ARP_SPA: u32 = 14;
const ARP_TPA: u32 = 24;

/// The kernel lease tables (see the module documentation). Clones share
/// one count of renewals (see [`COMPACT_EVERY`]).
#[derive(Debug, Clone)]
pub struct KernelLease {
    /// Names and errors (`inet NAME`); the `arp` table has the same name.
    table: NftTable,
    name: CString,
    /// The kernel updates a present element's timeout on add (>= 6.10).
    in_place: bool,
    /// Renewals sent through this value and its clones: every
    /// [`COMPACT_EVERY`]th (the first included) empties the cap chains.
    renewals: Arc<AtomicU32>,
    /// How long past a renewal's end its elements may live (see
    /// [`KernelLease::with_slack`]); the cap is the end itself.
    slack: Duration,
    /// Renewals still to be refused as busy without being sent (see
    /// [`KernelLease::refuse_next_as_busy`]); shared by clones.
    busy: Arc<AtomicU32>,
}

impl PartialEq for KernelLease {
    fn eq(&self, other: &KernelLease) -> bool {
        self.table == other.table && self.in_place == other.in_place
    }
}

impl Eq for KernelLease {}

impl KernelLease {
    /// The tables called `name` (`inet` and `arp`).
    ///
    /// # Errors
    ///
    /// [`NftError::InvalidName`] as for [`NftTable::new`].
    pub fn new(name: &str) -> Result<KernelLease, NftError> {
        let table = NftTable::new(name)?;
        let name = CString::new(name).map_err(|_| NftError::InvalidName {
            name: name.to_owned(),
            reason: "contains a NUL byte",
        })?;
        let in_place = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .and_then(|r| kernel_version(&r))
            .is_some_and(|v| v >= (6, 10));
        Ok(KernelLease {
            table,
            name,
            in_place,
            renewals: Arc::new(AtomicU32::new(0)),
            busy: Arc::new(AtomicU32::new(0)),
            slack: Duration::ZERO,
        })
    }

    /// Lets the elements of a renewal to `end` live up to `slack` past it
    /// (at most [`TICK`]: more buys nothing), while the cap still stops
    /// guarded traffic at `end` on the wall clock. Without slack an element
    /// ends up to two ticks before `end`, and guarded addresses stop
    /// answering between renewals whenever less than two ticks separate a
    /// renewal's arrival from the previous end. Safe when the leader's
    /// margin (how long after a node's lease end it may give the node's
    /// addresses away) exceeds the slack: failoverd gives half the margin,
    /// at most a tick.
    #[must_use]
    pub fn with_slack(mut self, slack: Duration) -> KernelLease {
        self.slack = slack.min(TICK);
        self
    }

    /// The tables' name.
    pub fn name(&self) -> &str {
        self.table.name()
    }

    /// Creates the tables and sets that are missing, replaces the rules,
    /// keeps every element, and adds `guarded` to the guard sets.
    ///
    /// # Errors
    ///
    /// As [`NftTable::install`]; on error nothing changed.
    pub async fn install(&self, guarded: &[IpAddr]) -> Result<(), NftError> {
        let (bytes, seqs) = build_install(&self.name, guarded);
        run_batch(&self.table, "install", bytes, seqs).await
    }

    /// Adds addresses to the guard sets (their traffic now needs a lease).
    ///
    /// # Errors
    ///
    /// As [`NftTable::update`] ([`NftError::TableMissing`] before
    /// [`KernelLease::install`]).
    pub async fn guard(&self, addrs: &[IpAddr]) -> Result<(), NftError> {
        let (bytes, seqs) = build_elems(&self.name, addrs, Elems::Guard, self.in_place);
        run_batch(&self.table, "guard", bytes, seqs).await
    }

    /// Gives `addrs` a lease element that expires `timeout` after the
    /// kernel's commit (rounded up to a tick), replacing the elements they
    /// had, and sets the cap (see "The cap" in the module documentation)
    /// to `timeout` plus a tick after the clock reading this call starts
    /// with. Returns how long after that reading the request was handed to
    /// the kernel (which handles it within that system call): the most
    /// the elements can outlive the reading by (the cap does not).
    ///
    /// # Errors
    ///
    /// As [`KernelLease::guard`] ([`NftError::TableMissing`] also when the
    /// tables were installed by a version without the cap chains and not
    /// installed again since).
    pub async fn renew(&self, addrs: &[IpAddr], timeout: Duration) -> Result<Duration, NftError> {
        let read = Clocks::now();
        let ms = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let cap = cap_at(read, Duration::from_millis(ms).saturating_add(TICK));
        self.commit_renewal(read.mono, addrs, &[], ms, cap, true)
            .await
    }

    /// Gives `addrs` lease elements that expire no later than `end` plus
    /// the slack ([`KernelLease::with_slack`]) plus the delay it returns
    /// (as [`KernelLease::renew`]), and sets the cap to `end` on the wall
    /// clock, reading the clocks right before building the request (see
    /// [`timeout_for`] and [`Clocks`]). When `end` has passed or less than
    /// a tick is left, revokes them instead and returns `None`.
    ///
    /// # Errors
    ///
    /// As [`KernelLease::renew`].
    pub async fn renew_until(
        &self,
        addrs: &[IpAddr],
        end: Instant,
    ) -> Result<Option<Duration>, NftError> {
        self.renew_until_at(addrs, &[], end, Clocks::now()).await
    }

    /// [`KernelLease::renew_until`], and ends the elements of `stale` in
    /// the same transaction: addresses whose elements must not outlive
    /// their own (earlier) lease now that this renewal moves the cap
    /// later (a renewal raises the cap for every guarded address, and only
    /// the cap bounds an element whose renewal was delayed; see "The cap").
    ///
    /// # Errors
    ///
    /// As [`KernelLease::renew`].
    pub async fn renew_until_revoking(
        &self,
        addrs: &[IpAddr],
        stale: &[IpAddr],
        end: Instant,
    ) -> Result<Option<Duration>, NftError> {
        self.renew_until_at(addrs, stale, end, Clocks::now()).await
    }

    /// [`KernelLease::renew_until_revoking`] with the clock readings given
    /// instead of taken: exists so that tests can renew as a process does
    /// that was frozen for `Instant::now() - read.mono` between reading its
    /// clocks and sending the request (the elements' relative timeouts
    /// then outlive `end` by that much; the cap does not).
    ///
    /// # Errors
    ///
    /// As [`KernelLease::renew`].
    pub async fn renew_until_at(
        &self,
        addrs: &[IpAddr],
        stale: &[IpAddr],
        end: Instant,
        read: Clocks,
    ) -> Result<Option<Duration>, NftError> {
        self.renew_until_with(addrs, stale, end, read, true).await
    }

    /// [`KernelLease::renew_until`] for addresses about to be added (a
    /// take): never empties the cap chains and is not counted towards
    /// [`COMPACT_EVERY`]. A compaction waits for an RCU grace period (10–20
    /// ms), and the first renewal of a new `KernelLease` compacts: a
    /// restarted failoverd hosting nothing renews nothing until its first
    /// take, which then paid that wait in the middle of a failover. The
    /// renewals that follow (the keeper's) compact as before; the chains
    /// grow by one pair per take in between.
    ///
    /// # Errors
    ///
    /// As [`KernelLease::renew`].
    pub async fn renew_for_take(
        &self,
        addrs: &[IpAddr],
        end: Instant,
    ) -> Result<Option<Duration>, NftError> {
        self.renew_until_with(addrs, &[], end, Clocks::now(), false)
            .await
    }

    /// Fault injection for tests: the next `n` renewals through this
    /// value or its clones fail as the kernel fails a transaction it
    /// refuses as busy ([`NftError::is_busy`]), without reaching the
    /// kernel. The kernel's EBUSY (seen on renewals at real-time priority
    /// under load) cannot be provoked on demand, and the callers' retries
    /// must be testable.
    #[doc(hidden)]
    pub fn refuse_next_as_busy(&self, n: u32) {
        self.busy.store(n, Ordering::Release);
    }

    async fn renew_until_with(
        &self,
        addrs: &[IpAddr],
        stale: &[IpAddr],
        end: Instant,
        read: Clocks,
        counted: bool,
    ) -> Result<Option<Duration>, NftError> {
        if self
            .busy
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| b.checked_sub(1))
            .is_ok()
        {
            return Err(NftError::Kernel {
                table: format!("inet {}", self.table.name()),
                op: "renew",
                errno: libc::EBUSY,
            });
        }
        let timeout = if end > read.mono {
            timeout_for(read.mono, end + self.slack)
        } else {
            None
        };
        match timeout {
            Some(timeout) => {
                let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
                let cap = cap_at(read, end.saturating_duration_since(read.mono));
                self.commit_renewal(read.mono, addrs, stale, ms, cap, counted)
                    .await
                    .map(Some)
            }
            None => {
                let all: Vec<IpAddr> = addrs.iter().chain(stale).copied().collect();
                self.revoke(&all).await.map(|()| None)
            }
        }
    }

    async fn commit_renewal(
        &self,
        read: Instant,
        addrs: &[IpAddr],
        stale: &[IpAddr],
        ms: u64,
        cap_ns: u64,
        counted: bool,
    ) -> Result<Duration, NftError> {
        let compact = counted && self.renewals.fetch_add(1, Ordering::Relaxed) % COMPACT_EVERY == 0;
        let (bytes, seqs) = build_renewal(
            &self.name,
            addrs,
            stale,
            ms,
            Cap {
                ns: cap_ns,
                compact,
            },
            self.in_place,
        );
        let sent = run_batch_timed(&self.table, "renew", bytes, seqs).await?;
        Ok(sent.saturating_duration_since(read))
    }

    /// Ends the lease elements of `addrs` now (absent ones are fine).
    ///
    /// # Errors
    ///
    /// As [`KernelLease::guard`].
    pub async fn revoke(&self, addrs: &[IpAddr]) -> Result<(), NftError> {
        let (bytes, seqs) = build_elems(&self.name, addrs, Elems::Revoke, self.in_place);
        run_batch(&self.table, "revoke", bytes, seqs).await
    }

    /// Ends every lease element now.
    ///
    /// # Errors
    ///
    /// As [`KernelLease::guard`].
    pub async fn revoke_all(&self) -> Result<(), NftError> {
        let (bytes, seqs) = build_flush(&self.name);
        run_batch(&self.table, "revoke", bytes, seqs).await
    }

    /// Deletes both tables; Ok when they are not there. (After this the
    /// guarded addresses answer without a lease: for tests and uninstall.)
    ///
    /// # Errors
    ///
    /// As [`NftTable::remove`].
    pub async fn remove(&self) -> Result<(), NftError> {
        self.table.remove().execute().await?;
        let (bytes, seqs) = build_remove_arp(&self.name);
        run_batch(&self.table, "remove", bytes, seqs).await
    }
}

/// What [`build_elems`] does to the elements.
#[derive(Debug, Clone, Copy)]
enum Elems {
    Guard,
    /// Delete and add with this timeout (ms).
    Renew(u64),
    Revoke,
}

/// `(major, minor)` of a kernel release string such as `6.18.44-fc`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// `payload load LEN @ BASE + OFFSET => reg 1`, any offset (nftnl's
/// `Payload` knows only named header fields).
struct RawPayload {
    base: u32,
    offset: u32,
    len: u32,
}

impl Expression for RawPayload {
    #[allow(clippy::cast_possible_truncation)] // libnftnl attribute ids are below 64
    fn to_expr(&self, _rule: &Rule) -> NonNull<sys::nftnl_expr> {
        // SAFETY: allocation is checked; the attributes set are the
        // payload expression's own, with plain integer values.
        unsafe {
            let Some(expr) = NonNull::new(sys::nftnl_expr_alloc(c"payload".as_ptr())) else {
                std::process::abort(); // out of memory, as nftnl does
            };
            let e = expr.as_ptr();
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_PAYLOAD_BASE as u16, self.base);
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_PAYLOAD_OFFSET as u16, self.offset);
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_PAYLOAD_LEN as u16, self.len);
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_PAYLOAD_DREG as u16, 1);
            expr
        }
    }
}

/// `meta time => reg 1`: ns since the epoch on the wall clock, in host
/// byte order (`NFT_META_TIME_NS`, Linux >= 5.4, every family).
struct MetaTime;

impl Expression for MetaTime {
    #[allow(clippy::cast_possible_truncation)] // libnftnl attribute ids are below 64
    fn to_expr(&self, _rule: &Rule) -> NonNull<sys::nftnl_expr> {
        // SAFETY: allocation is checked; the attributes set are the meta
        // expression's own, with plain integer values.
        unsafe {
            let Some(expr) = NonNull::new(sys::nftnl_expr_alloc(c"meta".as_ptr())) else {
                std::process::abort();
            };
            let e = expr.as_ptr();
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_META_KEY as u16, NFT_META_TIME_NS);
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_META_DREG as u16, 1);
            expr
        }
    }
}

/// `byteorder reg 1 = hton(reg 1, 8, 8)`: one 64-bit value to big-endian.
struct Hton64;

impl Expression for Hton64 {
    #[allow(clippy::cast_possible_truncation)] // libnftnl attribute ids are below 64
    fn to_expr(&self, _rule: &Rule) -> NonNull<sys::nftnl_expr> {
        // SAFETY: allocation is checked; the attributes set are the
        // byteorder expression's own, with plain integer values.
        unsafe {
            let Some(expr) = NonNull::new(sys::nftnl_expr_alloc(c"byteorder".as_ptr())) else {
                std::process::abort();
            };
            let e = expr.as_ptr();
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_BYTEORDER_SREG as u16, 1);
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_BYTEORDER_DREG as u16, 1);
            sys::nftnl_expr_set_u32(
                e,
                sys::NFTNL_EXPR_BYTEORDER_OP as u16,
                libc::NFT_BYTEORDER_HTON as u32,
            );
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_BYTEORDER_LEN as u16, 8);
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_BYTEORDER_SIZE as u16, 8);
            expr
        }
    }
}

/// `lookup reg 1 @SET` (or `!= @SET`); nftnl's `Lookup` cannot invert.
struct SetLookup {
    set: CString,
    id: u32,
    inverted: bool,
}

impl SetLookup {
    fn new<K>(set: &Set<'_, K>, inverted: bool) -> SetLookup {
        SetLookup {
            set: set.get_name().to_owned(),
            id: set.get_id(),
            inverted,
        }
    }
}

impl Expression for SetLookup {
    #[allow(clippy::cast_possible_truncation)] // libnftnl attribute ids are below 64
    fn to_expr(&self, _rule: &Rule) -> NonNull<sys::nftnl_expr> {
        // SAFETY: allocation is checked; the set name outlives the call
        // (nftnl copies strings).
        unsafe {
            let Some(expr) = NonNull::new(sys::nftnl_expr_alloc(c"lookup".as_ptr())) else {
                std::process::abort();
            };
            let e = expr.as_ptr();
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_LOOKUP_SREG as u16, 1);
            sys::nftnl_expr_set_str(e, sys::NFTNL_EXPR_LOOKUP_SET as u16, self.set.as_ptr());
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_LOOKUP_SET_ID as u16, self.id);
            if self.inverted {
                sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_LOOKUP_FLAGS as u16, LOOKUP_INV);
            }
            expr
        }
    }
}

/// `NFT_MSG_DELRULE` for a chain without a handle: deletes all its rules.
struct FlushChain<'c> {
    family: ProtoFamily,
    table: &'c CStr,
    chain: &'c CStr,
}

// SAFETY: a rule message with a table and a chain name is far below
// `nft_nlmsg_maxsize()`.
unsafe impl NlMsg for FlushChain<'_> {
    #[allow(clippy::cast_possible_truncation)] // libnftnl attribute ids are below 64
    unsafe fn write(&self, buf: *mut c_void, seq: u32, _msg_type: MsgType) {
        // SAFETY: `buf` has room for the largest message (the caller's
        // contract); the rule object is allocated, checked and freed here.
        unsafe {
            let header = sys::nftnl_nlmsg_build_hdr(
                buf.cast(),
                NFT_MSG_DELRULE,
                self.family as u16,
                FLAGS_ACK,
                seq,
            );
            let rule = sys::nftnl_rule_alloc();
            if rule.is_null() {
                std::process::abort();
            }
            sys::nftnl_rule_set_u32(rule, sys::NFTNL_RULE_FAMILY as u16, self.family as u32);
            sys::nftnl_rule_set_str(rule, sys::NFTNL_RULE_TABLE as u16, self.table.as_ptr());
            sys::nftnl_rule_set_str(rule, sys::NFTNL_RULE_CHAIN as u16, self.chain.as_ptr());
            sys::nftnl_rule_nlmsg_build_payload(header, rule);
            sys::nftnl_rule_free(rule);
        }
    }
}

#[allow(clippy::cast_possible_truncation)] // libnftnl attribute ids are below 64
fn set_timeout_flag<K>(set: &Set<'_, K>) {
    // SAFETY: the set object is alive; NFTNL_SET_FLAGS takes a u32.
    unsafe {
        sys::nftnl_set_set_u32(
            set.as_ptr().as_ptr(),
            sys::NFTNL_SET_FLAGS as u16,
            SET_FLAG_TIMEOUT,
        );
    }
}

/// How long a lease element lives, on an add.
#[derive(Debug, Clone, Copy)]
enum Life {
    /// A timeout only: the expiry of a new element. A present element
    /// keeps its expiry when the timeout is the one it already has.
    Timeout(u64),
    /// A timeout and an expiration of the same length: on Linux >= 6.10 a
    /// present element's expiry is set again whatever its timeout was.
    /// (With only a timeout equal to the element's, the kernel changes
    /// nothing and says nothing: found when renewals a few ms apart, each
    /// to "end minus now" rounded to the same ms, left the element to run
    /// out — connections to a healthy node's addresses timed out.)
    Refresh(u64),
}

/// Adds element messages for `keys` to `batch`, each with the `life`
/// given.
#[allow(clippy::cast_possible_truncation, clippy::too_many_arguments)] // attribute ids < 64; one message shape
fn elems<K: SetKey>(
    batch: &mut Batch,
    table: &Table,
    family: ProtoFamily,
    set_name: &CStr,
    keys: &[K],
    ty: u16,
    flags: u16,
    life: Option<Life>,
) {
    for chunk in keys.chunks(ELEMS_PER_MSG) {
        let set: Set<'_, K> = Set::new_named(set_name, 0, table, family);
        for key in chunk {
            let data = key.data();
            // SAFETY: the element is allocated and checked; the key bytes
            // are copied by nftnl; the set takes ownership of the element.
            unsafe {
                let elem = sys::nftnl_set_elem_alloc();
                if elem.is_null() {
                    std::process::abort();
                }
                sys::nftnl_set_elem_set(
                    elem,
                    sys::NFTNL_SET_ELEM_KEY as u16,
                    data.as_ref().as_ptr().cast(),
                    data.len() as u32,
                );
                match life {
                    Some(Life::Timeout(ms)) => {
                        sys::nftnl_set_elem_set_u64(elem, sys::NFTNL_SET_ELEM_TIMEOUT as u16, ms);
                    }
                    Some(Life::Refresh(ms)) => {
                        sys::nftnl_set_elem_set_u64(elem, sys::NFTNL_SET_ELEM_TIMEOUT as u16, ms);
                        sys::nftnl_set_elem_set_u64(
                            elem,
                            sys::NFTNL_SET_ELEM_EXPIRATION as u16,
                            ms,
                        );
                    }
                    None => {}
                }
                sys::nftnl_set_elem_add(set.as_ptr().as_ptr(), elem);
            }
        }
        batch.add(
            &ElemsMsg {
                set: &set,
                family,
                ty,
                flags,
            },
            MsgType::Add,
        );
    }
}

/// A flush of one set (`NFT_MSG_DELSETELEM` without elements).
fn flush_set<K: SetKey>(batch: &mut Batch, table: &Table, family: ProtoFamily, set_name: &CStr) {
    let set: Set<'_, K> = Set::new_named(set_name, 0, table, family);
    batch.add(
        &ElemsMsg {
            set: &set,
            family,
            ty: NFT_MSG_DELSETELEM,
            flags: FLAGS_ACK,
        },
        MsgType::Add,
    );
}

fn build_elems(
    name: &CStr,
    addrs: &[IpAddr],
    what: Elems,
    in_place: bool,
) -> (Vec<u8>, Range<u32>) {
    let mut batch = Batch::new();
    add_elems(&mut batch, name, addrs, what, in_place);
    finish(batch)
}

/// The cap a renewal sets.
#[derive(Debug, Clone, Copy)]
struct Cap {
    /// Wall-clock ns since the epoch.
    ns: u64,
    /// Empty the cap chains first (see [`COMPACT_EVERY`]).
    compact: bool,
}

/// A renewal: the lease elements of `addrs`, the end of those of `stale`,
/// and the cap, in one transaction. The cap is two rules inserted at the
/// head of each `cap` chain — `meta time > CAP counter drop`, then
/// `return` — so the last renewal committed decides, whatever rules older
/// renewals left below.
fn build_renewal(
    name: &CStr,
    addrs: &[IpAddr],
    stale: &[IpAddr],
    ms: u64,
    cap: Cap,
    in_place: bool,
) -> (Vec<u8>, Range<u32>) {
    let mut batch = Batch::new();
    add_elems(&mut batch, name, addrs, Elems::Renew(ms), in_place);
    if !stale.is_empty() {
        add_elems(&mut batch, name, stale, Elems::Revoke, in_place);
    }
    let inet = Table::new(name, ProtoFamily::Inet);
    let arp = Table::new(name, ProtoFamily::Arp);
    // `meta time` is in host byte order; `cmp` compares bytes, so both
    // sides are big-endian (as nft does it: a `byteorder` first).
    let value = cap.ns.to_be_bytes();
    for (table, family) in [(&inet, ProtoFamily::Inet), (&arp, ProtoFamily::Arp)] {
        let chain = Chain::new(CAP, table);
        if cap.compact {
            batch.add(
                &FlushChain {
                    family,
                    table: name,
                    chain: CAP,
                },
                MsgType::Del,
            );
        }
        // Each goes to the head: `return` first, then the drop before it.
        let mut ret = Rule::new(&chain);
        ret.add_expr(&Verdict::Return);
        batch.add(&AtHead(&ret), MsgType::Add);
        let mut drop = Rule::new(&chain);
        drop.add_expr(&MetaTime);
        drop.add_expr(&Hton64);
        drop.add_expr(&Cmp::new(CmpOp::Gt, &value[..]));
        drop.add_expr(&Counter);
        drop.add_expr(&Verdict::Drop);
        batch.add(&AtHead(&drop), MsgType::Add);
    }
    finish(batch)
}

/// A rule added at the head of its chain (`nft insert rule`): nftnl's add
/// appends (`NLM_F_APPEND`).
struct AtHead<'r>(&'r Rule<'r>);

// SAFETY: the message nftnl writes for the rule, with one header flag
// cleared: the same size, within the buffer nftnl guarantees.
unsafe impl NlMsg for AtHead<'_> {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        // SAFETY: `buf` has room for the largest message (the caller's
        // contract), and nftnl writes an `nlmsghdr` at its start, whose
        // `nlmsg_flags` is the u16 at offset 6.
        unsafe {
            self.0.write(buf, seq, msg_type);
            let flags = buf.cast::<u8>().add(6).cast::<u16>();
            #[allow(clippy::cast_possible_truncation)] // NLM_F_APPEND is 0x800
            flags.write_unaligned(flags.read_unaligned() & !(libc::NLM_F_APPEND as u16));
        }
    }
}

fn add_elems(batch: &mut Batch, name: &CStr, addrs: &[IpAddr], what: Elems, in_place: bool) {
    let inet = Table::new(name, ProtoFamily::Inet);
    let arp = Table::new(name, ProtoFamily::Arp);
    let (v4, v6) = split(addrs);
    let tables: [(&Table, ProtoFamily); 2] = [(&inet, ProtoFamily::Inet), (&arp, ProtoFamily::Arp)];
    for (table, family) in tables {
        let v6_here: &[Ipv6Addr] = if family == ProtoFamily::Inet {
            &v6
        } else {
            &[]
        };
        match what {
            Elems::Guard => {
                elems(
                    batch,
                    table,
                    family,
                    GUARD4,
                    &v4,
                    NFT_MSG_NEWSETELEM,
                    FLAGS_ADD,
                    None,
                );
                elems(
                    batch,
                    table,
                    family,
                    GUARD6,
                    v6_here,
                    NFT_MSG_NEWSETELEM,
                    FLAGS_ADD,
                    None,
                );
            }
            Elems::Renew(ms) => {
                // Linux >= 6.10 updates a present element's timeout on
                // add; before, only delete-and-add in one transaction
                // does (which costs an RCU grace period, ~16 ms here).
                let passes: &[bool] = if in_place { &[false] } else { &[true, false] };
                for &destroy in passes {
                    // In place, the expiration must be given too (see
                    // `Life::Refresh`); before 6.10 the add makes a new
                    // element, whose expiry is its timeout.
                    let (ty, flags, t) = if destroy {
                        (NFT_MSG_DESTROYSETELEM, FLAGS_ACK, None)
                    } else if in_place {
                        (NFT_MSG_NEWSETELEM, FLAGS_ADD, Some(Life::Refresh(ms)))
                    } else {
                        (NFT_MSG_NEWSETELEM, FLAGS_ADD, Some(Life::Timeout(ms)))
                    };
                    elems(batch, table, family, LEASE4, &v4, ty, flags, t);
                    elems(batch, table, family, LEASE6, v6_here, ty, flags, t);
                }
            }
            Elems::Revoke => {
                elems::<Ipv4Addr>(
                    batch,
                    table,
                    family,
                    LEASE4,
                    &v4,
                    NFT_MSG_DESTROYSETELEM,
                    FLAGS_ACK,
                    None,
                );
                elems(
                    batch,
                    table,
                    family,
                    LEASE6,
                    v6_here,
                    NFT_MSG_DESTROYSETELEM,
                    FLAGS_ACK,
                    None,
                );
            }
        }
    }
}

fn build_flush(name: &CStr) -> (Vec<u8>, Range<u32>) {
    let mut batch = Batch::new();
    let inet = Table::new(name, ProtoFamily::Inet);
    let arp = Table::new(name, ProtoFamily::Arp);
    flush_set::<Ipv4Addr>(&mut batch, &inet, ProtoFamily::Inet, LEASE4);
    flush_set::<Ipv6Addr>(&mut batch, &inet, ProtoFamily::Inet, LEASE6);
    flush_set::<Ipv4Addr>(&mut batch, &arp, ProtoFamily::Arp, LEASE4);
    finish(batch)
}

fn build_remove_arp(name: &CStr) -> (Vec<u8>, Range<u32>) {
    // The arp table is deleted with a plain DELTABLE after checking it
    // exists would race; add-then-delete in one batch is "delete if
    // present" on every kernel.
    let mut batch = Batch::new();
    let arp = Table::new(name, ProtoFamily::Arp);
    batch.add(&arp, MsgType::Add);
    batch.add(&arp, MsgType::Del);
    finish(batch)
}

fn chain<'t>(table: &'t Table, name: &CStr, hook: Hook, prio: i32) -> Chain<'t> {
    let mut c = Chain::new(name, table);
    c.set_hook(hook, prio);
    c.set_type(ChainType::Filter);
    c.set_policy(Policy::Accept);
    c
}

/// `meta nfproto ipvX` (inet rules).
#[allow(clippy::cast_possible_truncation)] // NFPROTO_* are below 256
fn nfproto(rule: &mut Rule<'_>, v6: bool) {
    rule.add_expr(&Meta::NfProto);
    let p = if v6 {
        libc::NFPROTO_IPV6
    } else {
        libc::NFPROTO_IPV4
    };
    rule.add_expr(&Cmp::new(CmpOp::Eq, p as u8));
}

/// `ip daddr` / `ip6 saddr` ... of the network header.
fn ip_field(v6: bool, dst: bool) -> Payload {
    Payload::Network(match (v6, dst) {
        (false, true) => NetworkHeaderField::Ipv4(Ipv4HeaderField::Daddr),
        (false, false) => NetworkHeaderField::Ipv4(Ipv4HeaderField::Saddr),
        (true, true) => NetworkHeaderField::Ipv6(Ipv6HeaderField::Daddr),
        (true, false) => NetworkHeaderField::Ipv6(Ipv6HeaderField::Saddr),
    })
}

/// Two rules in `chain`, both after the matches `prefix` adds:
/// `LOAD @guard LOAD != @lease counter drop` and `LOAD @guard jump cap`
/// (the load expression is given before each lookup).
fn guard_rules(
    batch: &mut Batch,
    chain: &Chain<'_>,
    prefix: &dyn Fn(&mut Rule<'_>),
    load: &dyn Fn(&mut Rule<'_>),
    guard: &SetLookup,
    lease: &SetLookup,
) {
    let mut rule = Rule::new(chain);
    prefix(&mut rule);
    load(&mut rule);
    rule.add_expr(guard);
    load(&mut rule);
    rule.add_expr(lease);
    rule.add_expr(&Counter);
    rule.add_expr(&Verdict::Drop);
    batch.add(&rule, MsgType::Add);

    let mut rule = Rule::new(chain);
    prefix(&mut rule);
    load(&mut rule);
    rule.add_expr(guard);
    rule.add_expr(&Verdict::Jump {
        chain: CAP.to_owned(),
    });
    batch.add(&rule, MsgType::Add);
}

#[allow(clippy::too_many_lines)] // one table layout, read top to bottom
fn build_install(name: &CStr, guarded: &[IpAddr]) -> (Vec<u8>, Range<u32>) {
    let mut batch = Batch::new();
    let inet = Table::new(name, ProtoFamily::Inet);
    let arp = Table::new(name, ProtoFamily::Arp);
    // NEWTABLE without NLM_F_EXCL: created when missing, kept otherwise.
    batch.add(&inet, MsgType::Add);
    batch.add(&arp, MsgType::Add);

    // Sets: NEWSET with NLM_F_CREATE and without NLM_F_EXCL keeps an
    // existing set and its elements.
    let guard4: Set<'_, Ipv4Addr> = Set::new_named(GUARD4, 1, &inet, ProtoFamily::Inet);
    let guard6: Set<'_, Ipv6Addr> = Set::new_named(GUARD6, 2, &inet, ProtoFamily::Inet);
    let lease4: Set<'_, Ipv4Addr> = Set::new_named(LEASE4, 3, &inet, ProtoFamily::Inet);
    let lease6: Set<'_, Ipv6Addr> = Set::new_named(LEASE6, 4, &inet, ProtoFamily::Inet);
    let arp_guard4: Set<'_, Ipv4Addr> = Set::new_named(GUARD4, 5, &arp, ProtoFamily::Arp);
    let arp_lease4: Set<'_, Ipv4Addr> = Set::new_named(LEASE4, 6, &arp, ProtoFamily::Arp);
    set_timeout_flag(&lease4);
    set_timeout_flag(&lease6);
    set_timeout_flag(&arp_lease4);
    batch.add(&guard4, MsgType::Add);
    batch.add(&guard6, MsgType::Add);
    batch.add(&lease4, MsgType::Add);
    batch.add(&lease6, MsgType::Add);
    batch.add(&arp_guard4, MsgType::Add);
    batch.add(&arp_lease4, MsgType::Add);

    // The cap chains: created when missing, and otherwise kept with their
    // rule (the cap a previous daemon's last renewal set, like the
    // elements); only a renewal replaces it. Before the jumps to them.
    let inet_cap = Chain::new(CAP, &inet);
    let arp_cap = Chain::new(CAP, &arp);
    batch.add(&inet_cap, MsgType::Add);
    batch.add(&arp_cap, MsgType::Add);

    // Base chains: created when missing; their rules are replaced (flush,
    // add) in this same transaction, so the rules never disappear.
    let inet_in = chain(&inet, c"guard_in", Hook::PreRouting, PRIORITY_GUARD);
    let inet_out = chain(&inet, c"guard_out", Hook::Out, PRIORITY_GUARD);
    // The arp family's hooks are NF_ARP_IN (0) and NF_ARP_OUT (1), which
    // nftnl names after the inet hooks of the same numbers.
    let arp_in = chain(&arp, c"guard_in", Hook::PreRouting, 0);
    let arp_out = chain(&arp, c"guard_out", Hook::In, 0);
    for (c, family) in [
        (&inet_in, ProtoFamily::Inet),
        (&inet_out, ProtoFamily::Inet),
        (&arp_in, ProtoFamily::Arp),
        (&arp_out, ProtoFamily::Arp),
    ] {
        batch.add(c, MsgType::Add);
        batch.add(
            &FlushChain {
                family,
                table: name,
                chain: c.get_name(),
            },
            MsgType::Del,
        );
    }

    // Set contents: the guard additions (lease elements are only ever
    // given by renew).
    let (g4, g6) = split(guarded);
    elems(
        &mut batch,
        &inet,
        ProtoFamily::Inet,
        GUARD4,
        &g4,
        NFT_MSG_NEWSETELEM,
        FLAGS_ADD,
        None,
    );
    elems(
        &mut batch,
        &inet,
        ProtoFamily::Inet,
        GUARD6,
        &g6,
        NFT_MSG_NEWSETELEM,
        FLAGS_ADD,
        None,
    );
    elems(
        &mut batch,
        &arp,
        ProtoFamily::Arp,
        GUARD4,
        &g4,
        NFT_MSG_NEWSETELEM,
        FLAGS_ADD,
        None,
    );

    // inet, out: a TCP reset passes (before the drops below).
    {
        let mut rule = Rule::new(&inet_out);
        rule.add_expr(&Meta::L4Proto);
        #[allow(clippy::cast_possible_truncation)] // IPPROTO_TCP is 6
        rule.add_expr(&Cmp::new(CmpOp::Eq, libc::IPPROTO_TCP as u8));
        rule.add_expr(&RawPayload {
            base: BASE_TRANSPORT,
            offset: TCP_FLAGS,
            len: 1,
        });
        rule.add_expr(&Bitwise::new(TCP_RST, 0u8));
        rule.add_expr(&Cmp::new(CmpOp::Neq, 0u8));
        rule.add_expr(&Verdict::Accept);
        batch.add(&rule, MsgType::Add);
    }

    // inet: IP both ways.
    for (c, dst) in [(&inet_in, true), (&inet_out, false)] {
        for (v6, guard, lease) in [
            (
                false,
                SetLookup::new(&guard4, false),
                SetLookup::new(&lease4, true),
            ),
            (
                true,
                SetLookup::new(&guard6, false),
                SetLookup::new(&lease6, true),
            ),
        ] {
            let field = ip_field(v6, dst);
            guard_rules(
                &mut batch,
                c,
                &|r| nfproto(r, v6),
                &|r| r.add_expr(&field),
                &guard,
                &lease,
            );
        }
        // Neighbour discovery: the target address of an NS (in) or NA (out).
        let ty = if dst { ICMPV6_NS } else { ICMPV6_NA };
        let prefix = |rule: &mut Rule<'_>| {
            nfproto(rule, true);
            rule.add_expr(&Meta::L4Proto);
            #[allow(clippy::cast_possible_truncation)] // IPPROTO_ICMPV6 is 58
            rule.add_expr(&Cmp::new(CmpOp::Eq, libc::IPPROTO_ICMPV6 as u8));
            rule.add_expr(&RawPayload {
                base: BASE_TRANSPORT,
                offset: 0,
                len: 1,
            });
            rule.add_expr(&Cmp::new(CmpOp::Eq, ty));
        };
        let target = RawPayload {
            base: BASE_TRANSPORT,
            offset: 8,
            len: 16,
        };
        guard_rules(
            &mut batch,
            c,
            &prefix,
            &|r| r.add_expr(&target),
            &SetLookup::new(&guard6, false),
            &SetLookup::new(&lease6, true),
        );
    }

    // arp: requests for, and anything sent from, a guarded address.
    for (c, request_only, offset) in [(&arp_in, true, ARP_TPA), (&arp_out, false, ARP_SPA)] {
        let prefix = |rule: &mut Rule<'_>| {
            rule.add_expr(&RawPayload {
                base: BASE_NETWORK,
                offset: 0,
                len: 6,
            });
            rule.add_expr(&Cmp::new(CmpOp::Eq, &ARP_ETH_IP4[..]));
            if request_only {
                rule.add_expr(&RawPayload {
                    base: BASE_NETWORK,
                    offset: ARP_OP,
                    len: 2,
                });
                rule.add_expr(&Cmp::new(CmpOp::Eq, &ARP_REQUEST[..]));
            }
        };
        let addr = RawPayload {
            base: BASE_NETWORK,
            offset,
            len: 4,
        };
        guard_rules(
            &mut batch,
            c,
            &prefix,
            &|r| r.add_expr(&addr),
            &SetLookup::new(&arp_guard4, false),
            &SetLookup::new(&arp_lease4, true),
        );
    }
    finish(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_is_the_whole_ticks_that_fit_before_the_end() {
        let now = Instant::now();
        assert_eq!(
            timeout_for(now, now + Duration::from_millis(500)),
            Some(Duration::from_millis(500))
        );
        // Whole ticks only, so that no kernel rounds it either way: 18.9 ms
        // left is 4 ticks (16 ms), never 18 ms (which a kernel rounding
        // down keeps as 16, and one rounding up as 20, past the end).
        assert_eq!(
            timeout_for(now, now + Duration::from_micros(18_900)),
            Some(Duration::from_millis(16))
        );
        assert_eq!(
            timeout_for(now, now + Duration::from_millis(4)),
            Some(Duration::from_millis(4))
        );
        // Less than a tick, or nothing left: revoke.
        assert_eq!(timeout_for(now, now + Duration::from_micros(3_999)), None);
        assert_eq!(timeout_for(now + Duration::from_millis(1), now), None);
        for us in (0..100_000u64).step_by(137) {
            if let Some(t) = timeout_for(now, now + Duration::from_micros(us)) {
                assert!(t <= Duration::from_micros(us), "{us} us: {t:?}");
                assert!(t + TICK > Duration::from_micros(us), "{us} us: {t:?}");
                assert_eq!(t.as_nanos() % TICK.as_nanos(), 0, "{us} us: {t:?}");
            }
        }
    }

    fn types(bytes: &[u8]) -> Vec<u16> {
        crate::sockdiag::messages(bytes)
            .map(|m| m.expect("well-formed batch").ty)
            .collect()
    }

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(kernel_version("6.18.44-fc-v1272\n"), Some((6, 18)));
        assert_eq!(kernel_version("6.1.0-28-amd64"), Some((6, 1)));
        assert_eq!(kernel_version("garbage"), None);
        assert!(kernel_version("6.9.0").is_some_and(|v| v < (6, 10)));
    }

    #[test]
    fn renew_adds_in_place_on_new_kernels() {
        let addrs: Vec<IpAddr> = vec!["192.0.2.1".parse().unwrap()];
        let (bytes, _) = build_elems(c"t", &addrs, Elems::Renew(100), true);
        let kinds: Vec<u16> = types(&bytes).into_iter().map(|t| t & 0xff).collect();
        // begin; inet add lease4; arp add lease4; end.
        assert_eq!(
            kinds[1..kinds.len() - 1].to_vec(),
            vec![NFT_MSG_NEWSETELEM, NFT_MSG_NEWSETELEM]
        );
    }

    #[test]
    fn a_renewal_puts_the_cap_at_the_head_of_both_chains_in_its_transaction() {
        const NEWRULE: u16 = 6;
        let addrs: Vec<IpAddr> = vec!["192.0.2.1".parse().unwrap()];
        let stale: Vec<IpAddr> = vec!["192.0.2.9".parse().unwrap()];
        for compact in [false, true] {
            let cap = Cap {
                ns: 0x0102_0304_0506_0708,
                compact,
            };
            let (bytes, _) = build_renewal(c"t", &addrs, &stale, 100, cap, true);
            let msgs: Vec<_> = crate::sockdiag::messages(&bytes)
                .map(|m| m.expect("well-formed batch"))
                .collect();
            let kinds: Vec<u16> = msgs.iter().map(|m| m.ty & 0xff).collect();
            // begin; elements (inet, arp); the stale ends (inet, arp); per
            // table: (a flush when compacting,) return, drop; end.
            let mut want = vec![
                NFT_MSG_NEWSETELEM,
                NFT_MSG_NEWSETELEM,
                NFT_MSG_DESTROYSETELEM,
                NFT_MSG_DESTROYSETELEM,
            ];
            for _ in 0..2 {
                if compact {
                    want.push(NFT_MSG_DELRULE);
                }
                want.extend([NEWRULE, NEWRULE]);
            }
            assert_eq!(kinds[1..kinds.len() - 1].to_vec(), want);
            // Rules are inserted at the head: no NLM_F_APPEND.
            for m in msgs.iter().filter(|m| m.ty & 0xff == NEWRULE) {
                let flags = u16::from_ne_bytes([m.whole[6], m.whole[7]]);
                assert_eq!(flags & 0x800, 0, "appended: {flags:#x}");
                assert_ne!(flags & 0x4, 0, "no ACK asked: {flags:#x}");
            }
            // The cap goes in big-endian (compared after `byteorder hton`).
            let be = cap.ns.to_be_bytes();
            assert!(bytes.windows(8).any(|w| w == be));
        }
    }

    #[test]
    fn the_cap_is_the_reading_plus_what_is_left() {
        let read = Clocks {
            real: UNIX_EPOCH + Duration::from_secs(1_000),
            mono: Instant::now(),
        };
        assert_eq!(cap_at(read, Duration::from_millis(96)), 1_000_096_000_000);
        // A wall clock before 1970 caps at 0: nothing answers.
        let before = Clocks {
            real: UNIX_EPOCH - Duration::from_secs(1),
            mono: read.mono,
        };
        assert_eq!(cap_at(before, Duration::from_secs(5)), 0);
    }

    #[test]
    fn renew_deletes_then_adds_in_one_batch_on_old_kernels() {
        let addrs: Vec<IpAddr> = vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()];
        let (bytes, _) = build_elems(c"t", &addrs, Elems::Renew(100), false);
        let kinds: Vec<u16> = types(&bytes).into_iter().map(|t| t & 0xff).collect();
        // begin; inet: destroy lease4, destroy lease6, add lease4, add lease6;
        // arp: destroy lease4, add lease4; end.
        let elem_msgs: Vec<u16> = kinds[1..kinds.len() - 1].to_vec();
        assert_eq!(
            elem_msgs,
            vec![
                NFT_MSG_DESTROYSETELEM,
                NFT_MSG_DESTROYSETELEM,
                NFT_MSG_NEWSETELEM,
                NFT_MSG_NEWSETELEM,
                NFT_MSG_DESTROYSETELEM,
                NFT_MSG_NEWSETELEM,
            ]
        );
    }
}
