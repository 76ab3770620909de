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
//!     chain guard_in {   # before conntrack and everything else
//!         type filter hook prerouting priority raw - 10; policy accept;
//!         meta nfproto ipv4 ip daddr @guard4 ip daddr != @lease4 counter drop
//!         meta nfproto ipv6 ip6 daddr @guard6 ip6 daddr != @lease6 counter drop
//!         # neighbour solicitation (135) for a guarded target that is not leased
//!         meta nfproto ipv6 meta l4proto ipv6-icmp icmpv6 type 135
//!             @th,64,128 @guard6 @th,64,128 != @lease6 counter drop
//!     }
//!     chain guard_out {
//!         type filter hook output priority raw - 10; policy accept;
//!         meta nfproto ipv4 ip saddr @guard4 ip saddr != @lease4 counter drop
//!         meta nfproto ipv6 ip6 saddr @guard6 ip6 saddr != @lease6 counter drop
//!         # neighbour advertisement (136) for a guarded target that is not leased
//!         meta nfproto ipv6 meta l4proto ipv6-icmp icmpv6 type 136
//!             @th,64,128 @guard6 @th,64,128 != @lease6 counter drop
//!     }
//! }
//! table arp NAME {
//!     set guard4 { type ipv4_addr; }   set lease4 { type ipv4_addr; flags timeout; }
//!     chain guard_in {   # ARP requests for a guarded address that is not leased
//!         type filter hook input priority filter; policy accept;
//!         arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp operation request
//!             arp daddr ip @guard4 arp daddr ip != @lease4 counter drop
//!     }
//!     chain guard_out {  # ARP the kernel sends from such an address
//!         type filter hook output priority filter; policy accept;
//!         arp htype 1 arp ptype ip arp hlen 6 arp plen 4
//!             arp saddr ip @guard4 arp saddr ip != @lease4 counter drop
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
//! * [`KernelLease::install`] creates what is missing and replaces the
//!   rules, and **keeps the elements** of every set: a restarted daemon
//!   inherits the bound its predecessor left (a daemon that died keeps the
//!   kernel from answering once its last renewal runs out, and the next one
//!   must not undo that, nor cut a valid lease short).
//!
//! **Timing.** The kernel counts element timeouts in jiffies: an element
//! given timeout τ at real time t expires within one tick of `t + τ`
//! (msecs are rounded up to ticks, and the current tick started up to one
//! tick before t). [`timeout_for`] therefore gives `end - now - TICK`, so an
//! element expires no later than `end` plus the time between reading the
//! clock and the kernel's commit; [`KernelLease::renew`] measures that time
//! and the caller renews again at once when it is large (a process stopped
//! between the two). `TICK` is 4 ms, one tick of `CONFIG_HZ=250` (Debian's
//! kernels); a kernel with `CONFIG_HZ=100` would add up to 6 ms more.
//!
//! Every call is one nfnetlink batch for both tables (one kernel
//! transaction). Needs `CAP_NET_ADMIN`; acts on the network namespace of the
//! calling thread.

use std::ffi::{c_void, CStr, CString};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use nftnl::expr::{
    Cmp, CmpOp, Counter, Expression, Ipv4HeaderField, Ipv6HeaderField, Meta, NetworkHeaderField,
    Payload, Verdict,
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
/// clock read at `now` (both on one monotonic clock); `None` when nothing
/// is left (revoke instead).
#[must_use]
pub fn timeout_for(now: Instant, end: Instant) -> Option<Duration> {
    let left = end.checked_duration_since(now)?.checked_sub(TICK)?;
    // The kernel takes whole milliseconds: round down.
    let ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
    (ms > 0).then(|| Duration::from_millis(ms))
}

const GUARD4: &CStr = c"guard4";
const GUARD6: &CStr = c"guard6";
const LEASE4: &CStr = c"lease4";
const LEASE6: &CStr = c"lease6";
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

/// The kernel lease tables (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelLease {
    /// Names and errors (`inet NAME`); the `arp` table has the same name.
    table: NftTable,
    name: CString,
    /// The kernel updates a present element's timeout on add (>= 6.10).
    in_place: bool,
}

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
        })
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
    /// had. Returns how long after the call started the request was handed
    /// to the kernel (which handles it within that system call): the most
    /// the elements can outlive the caller's clock reading by.
    ///
    /// # Errors
    ///
    /// As [`KernelLease::guard`].
    pub async fn renew(&self, addrs: &[IpAddr], timeout: Duration) -> Result<Duration, NftError> {
        self.renew_from(Instant::now(), addrs, timeout).await
    }

    async fn renew_from(
        &self,
        started: Instant,
        addrs: &[IpAddr],
        timeout: Duration,
    ) -> Result<Duration, NftError> {
        let ms = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let (bytes, seqs) = build_elems(&self.name, addrs, Elems::Renew(ms), self.in_place);
        let sent = run_batch_timed(&self.table, "renew", bytes, seqs).await?;
        Ok(sent.saturating_duration_since(started))
    }

    /// Gives `addrs` lease elements that expire no later than `end` (plus
    /// the delay it returns, as [`KernelLease::renew`]), reading the clock right
    /// before building the request (see [`timeout_for`]). When less than a
    /// tick is left, revokes them instead and returns `None`.
    ///
    /// # Errors
    ///
    /// As [`KernelLease::guard`].
    pub async fn renew_until(
        &self,
        addrs: &[IpAddr],
        end: Instant,
    ) -> Result<Option<Duration>, NftError> {
        let now = Instant::now();
        match timeout_for(now, end) {
            Some(timeout) => self.renew_from(now, addrs, timeout).await.map(Some),
            None => self.revoke(addrs).await.map(|()| None),
        }
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
                    &mut batch,
                    table,
                    family,
                    GUARD4,
                    &v4,
                    NFT_MSG_NEWSETELEM,
                    FLAGS_ADD,
                    None,
                );
                elems(
                    &mut batch,
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
                    elems(&mut batch, table, family, LEASE4, &v4, ty, flags, t);
                    elems(&mut batch, table, family, LEASE6, v6_here, ty, flags, t);
                }
            }
            Elems::Revoke => {
                elems::<Ipv4Addr>(
                    &mut batch,
                    table,
                    family,
                    LEASE4,
                    &v4,
                    NFT_MSG_DESTROYSETELEM,
                    FLAGS_ACK,
                    None,
                );
                elems(
                    &mut batch,
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
    finish(batch)
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

/// `LOAD @guard LOAD != @lease counter drop`, the load expression given
/// twice (a lookup consumes the register's meaning only, but each lookup
/// reads reg 1 as loaded last).
fn guarded_not_leased(
    rule: &mut Rule<'_>,
    load: &dyn Fn(&mut Rule<'_>),
    guard: &SetLookup,
    lease: &SetLookup,
) {
    load(rule);
    rule.add_expr(guard);
    load(rule);
    rule.add_expr(lease);
    rule.add_expr(&Counter);
    rule.add_expr(&Verdict::Drop);
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

    // Chains: created when missing; their rules are replaced (flush, add)
    // in this same transaction, so the rules never disappear.
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
            let mut rule = Rule::new(c);
            nfproto(&mut rule, v6);
            let field = ip_field(v6, dst);
            guarded_not_leased(&mut rule, &|r| r.add_expr(&field), &guard, &lease);
            batch.add(&rule, MsgType::Add);
        }
        // Neighbour discovery: the target address of an NS (in) or NA (out).
        let ty = if dst { ICMPV6_NS } else { ICMPV6_NA };
        let mut rule = Rule::new(c);
        nfproto(&mut rule, true);
        rule.add_expr(&Meta::L4Proto);
        #[allow(clippy::cast_possible_truncation)] // IPPROTO_ICMPV6 is 58
        rule.add_expr(&Cmp::new(CmpOp::Eq, libc::IPPROTO_ICMPV6 as u8));
        rule.add_expr(&RawPayload {
            base: BASE_TRANSPORT,
            offset: 0,
            len: 1,
        });
        rule.add_expr(&Cmp::new(CmpOp::Eq, ty));
        let target = RawPayload {
            base: BASE_TRANSPORT,
            offset: 8,
            len: 16,
        };
        guarded_not_leased(
            &mut rule,
            &|r| r.add_expr(&target),
            &SetLookup::new(&guard6, false),
            &SetLookup::new(&lease6, true),
        );
        batch.add(&rule, MsgType::Add);
    }

    // arp: requests for, and anything sent from, a guarded address.
    for (c, request_only, offset) in [(&arp_in, true, ARP_TPA), (&arp_out, false, ARP_SPA)] {
        let mut rule = Rule::new(c);
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
        let addr = RawPayload {
            base: BASE_NETWORK,
            offset,
            len: 4,
        };
        guarded_not_leased(
            &mut rule,
            &|r| r.add_expr(&addr),
            &SetLookup::new(&arp_guard4, false),
            &SetLookup::new(&arp_lease4, true),
        );
        batch.add(&rule, MsgType::Add);
    }
    finish(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_ends_a_tick_before_the_lease() {
        let now = Instant::now();
        assert_eq!(
            timeout_for(now, now + Duration::from_millis(500)),
            Some(Duration::from_millis(496))
        );
        // Rounded down to whole milliseconds.
        assert_eq!(
            timeout_for(now, now + Duration::from_micros(30_900)),
            Some(Duration::from_millis(26))
        );
        // Nothing left, or less than a tick and a millisecond: revoke.
        assert_eq!(timeout_for(now, now + Duration::from_millis(4)), None);
        assert_eq!(timeout_for(now, now + Duration::from_micros(4_999)), None);
        assert_eq!(timeout_for(now + Duration::from_millis(1), now), None);
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
