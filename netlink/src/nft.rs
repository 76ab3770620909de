//! The ipfailover nftables table, through libnftnl (the `nftnl` crate).
//!
//! Owns one table (`inet ipfailover` by default; the name is configurable so
//! that tests and several instances can have their own):
//!
//! ```text
//! table inet ipfailover {
//!     set public4  { type ipv4_addr; }   set public6  { type ipv6_addr; }
//!     set blocked4 { type ipv4_addr; }   set blocked6 { type ipv6_addr; }
//!     chain block {       # before conntrack: a blocked SYN leaves no entry
//!         type filter hook prerouting priority raw; policy accept;
//!         meta nfproto ipv4 meta l4proto tcp ip daddr @blocked4 counter drop
//!         meta nfproto ipv6 meta l4proto tcp ip6 daddr @blocked6 counter drop
//!     }
//!     chain track_in {    # the `ct` expression turns connection tracking on
//!         type filter hook prerouting priority filter; policy accept;
//!         meta nfproto ipv4 meta l4proto tcp ip daddr @public4 ct state new counter
//!         meta nfproto ipv6 meta l4proto tcp ip6 daddr @public6 ct state new counter
//!     }
//!     chain track_out {   # the same for connections made from this host
//!         type filter hook output priority filter; policy accept;
//!         (same two rules)
//!     }
//! }
//! ```
//!
//! Every change is one nfnetlink batch, i.e. one kernel transaction: it
//! applies completely or not at all. [`NftTable::install`] replaces the whole
//! table atomically (add, delete, add); [`NftTable::update`] only adds and
//! removes set elements, so the table, its chains and rules (and their
//! handles and counters) stay. Adding a present element and removing a
//! missing one are no-ops (`NLM_F_CREATE` without `NLM_F_EXCL`, and
//! `NFT_MSG_DESTROYSETELEM`, Linux >= 6.3). [`NftTable::remove`] of a
//! missing table is Ok (`NFT_MSG_DESTROYTABLE`).
//!
//! This module keeps the non-`Send` libnftnl objects inside synchronous
//! builder functions: requests hold only bytes, so their futures are `Send`.

use std::ffi::{c_void, CString};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::time::Duration;

use netlink_sys::protocols::NETLINK_NETFILTER;
use nftnl::expr::{
    Bitwise, Cmp, CmpOp, Conntrack, Counter, Ipv4HeaderField, Ipv6HeaderField, Lookup, Meta,
    NetworkHeaderField, Payload, States, Verdict,
};
use nftnl::nftnl_sys as sys;
use nftnl::set::{Set, SetKey};
use nftnl::{Batch, Chain, ChainType, Hook, MsgType, NlMsg, Policy, ProtoFamily, Rule, Table};

use crate::sockdiag::{canonical, messages, NlSocket, WireError, NLMSG_ERROR};

/// The table name used when none is configured.
pub const DEFAULT_TABLE: &str = "ipfailover";

/// `NFT_TABLE_MAXNAMELEN` (256) minus the terminating NUL.
const MAX_NAME: usize = 255;
/// `NFT_MSG_NEWSETELEM`.
pub(crate) const NFT_MSG_NEWSETELEM: u16 = 12;
/// `NFT_MSG_DESTROYTABLE` (Linux >= 6.3): delete, and no error if missing.
const NFT_MSG_DESTROYTABLE: u16 = 26;
/// `NFT_MSG_DESTROYSETELEM` (Linux >= 6.3): delete, no error if missing.
pub(crate) const NFT_MSG_DESTROYSETELEM: u16 = 30;
/// Elements per set-element message: keeps each message far below the
/// 64 KiB netlink attribute limit (an IPv6 element takes ~36 bytes).
pub(crate) const ELEMS_PER_MSG: usize = 512;
/// Priority `raw`.
pub(crate) const PRIORITY_RAW: i32 = -300;
/// Priority `filter`.
const PRIORITY_FILTER: i32 = 0;
/// How long the kernel may take to answer one batch.
const BATCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Batches up to this size fit the default socket send buffer.
const SMALL_BATCH: usize = 64 * 1024;
/// After an error, how long to wait for the remaining answers.
const DRAIN_AFTER_ERROR: Duration = Duration::from_millis(100);

const SET_PUBLIC4: &std::ffi::CStr = c"public4";
const SET_PUBLIC6: &std::ffi::CStr = c"public6";
const SET_BLOCKED4: &std::ffi::CStr = c"blocked4";
const SET_BLOCKED6: &std::ffi::CStr = c"blocked6";

/// Which pair of sets an address goes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NftSet {
    /// `public4`/`public6`: TCP connections to these addresses are tracked
    /// (they appear in conntrack and its events).
    Tracked,
    /// `blocked4`/`blocked6`: incoming TCP packets to these addresses are
    /// dropped (while an address is being released).
    Blocked,
}

impl NftSet {
    fn names(self) -> (&'static std::ffi::CStr, &'static std::ffi::CStr) {
        match self {
            NftSet::Tracked => (SET_PUBLIC4, SET_PUBLIC6),
            NftSet::Blocked => (SET_BLOCKED4, SET_BLOCKED6),
        }
    }
}

/// Errors of the nftables table.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NftError {
    /// The table name is empty, too long or contains a NUL byte.
    #[error("invalid nftables table name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The netfilter netlink socket could not be opened.
    #[error("opening a netfilter netlink socket for table {table}")]
    Open {
        /// The table.
        table: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Sending or receiving failed.
    #[error("nftables {op} of table {table}: socket I/O failed")]
    Io {
        /// The table.
        table: String,
        /// The operation (`install`, `update`, `remove`).
        op: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The kernel refused for lack of `CAP_NET_ADMIN` (EPERM).
    #[error("nftables {op} of table {table}: permission denied (needs CAP_NET_ADMIN)")]
    PermissionDenied {
        /// The table.
        table: String,
        /// The operation.
        op: &'static str,
    },
    /// The kernel does not support the `inet` family or an operation used
    /// here (EAFNOSUPPORT, EOPNOTSUPP).
    #[error("nftables {op} of table {table}: not supported by this kernel (errno {errno})")]
    Unsupported {
        /// The table.
        table: String,
        /// The operation.
        op: &'static str,
        /// The errno.
        errno: i32,
    },
    /// The table (or one of its sets) does not exist: install it first.
    #[error("nftables {op}: table {table} (or one of its sets) does not exist")]
    TableMissing {
        /// The table.
        table: String,
        /// The operation.
        op: &'static str,
    },
    /// Any other kernel error; the errno stays matchable.
    #[error("nftables {op} of table {table}: kernel error {errno}")]
    Kernel {
        /// The table.
        table: String,
        /// The operation.
        op: &'static str,
        /// The kernel's errno (positive).
        errno: i32,
    },
    /// The kernel's answer could not be parsed.
    #[error("nftables {op} of table {table}: malformed answer")]
    Malformed {
        /// The table.
        table: String,
        /// The operation.
        op: &'static str,
        /// The cause.
        #[source]
        source: WireError,
    },
    /// The kernel did not acknowledge the whole batch in time.
    #[error("nftables {op} of table {table}: no complete answer within {limit:?}")]
    Timeout {
        /// The table.
        table: String,
        /// The operation.
        op: &'static str,
        /// The limit that passed.
        limit: Duration,
    },
}

impl NftError {
    /// The kernel refused the transaction as busy (EBUSY), which a retry
    /// can cure: seen on renewals at real-time priority under load.
    #[must_use]
    pub fn is_busy(&self) -> bool {
        matches!(self, NftError::Kernel { errno, .. } if *errno == libc::EBUSY)
    }
}

/// The ipfailover table of the current network namespace (a name, not a
/// connection: every request opens its own netfilter socket in the
/// namespace of the thread that executes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftTable {
    name: CString,
    /// `inet NAME`, for error messages.
    display: String,
    plain: String,
}

impl NftTable {
    /// A table called `name` in the `inet` family.
    ///
    /// # Errors
    ///
    /// [`NftError::InvalidName`] for an empty name, one longer than 255
    /// bytes or one containing a NUL byte.
    pub fn new(name: &str) -> Result<NftTable, NftError> {
        let invalid = |reason| NftError::InvalidName {
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("empty"));
        }
        if name.len() > MAX_NAME {
            return Err(invalid("longer than 255 bytes"));
        }
        let cname = CString::new(name).map_err(|_| invalid("contains a NUL byte"))?;
        Ok(NftTable {
            name: cname,
            display: format!("inet {name}"),
            plain: name.to_owned(),
        })
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.plain
    }

    /// Creates (or atomically re-creates, emptying it) the table with its
    /// sets, chains and rules; initial set contents are given on the
    /// request ([`InstallRequest::tracked`], [`InstallRequest::blocked`]).
    pub fn install(&self) -> InstallRequest<'_> {
        InstallRequest {
            table: self,
            tracked: Vec::new(),
            blocked: Vec::new(),
        }
    }

    /// Adds and removes set elements in one transaction, without touching
    /// the rest of the table.
    pub fn update(&self) -> UpdateRequest<'_> {
        UpdateRequest {
            table: self,
            changes: Vec::new(),
        }
    }

    /// Deletes the table and everything in it; Ok when it is not there.
    pub fn remove(&self) -> RemoveRequest<'_> {
        RemoveRequest { table: self }
    }

    fn error(&self, op: &'static str, errno: i32) -> NftError {
        let table = self.display.clone();
        match errno {
            libc::EPERM => NftError::PermissionDenied { table, op },
            libc::ENOENT => NftError::TableMissing { table, op },
            libc::EAFNOSUPPORT | libc::EOPNOTSUPP => NftError::Unsupported { table, op, errno },
            _ => NftError::Kernel { table, op, errno },
        }
    }
}

/// See [`NftTable::install`].
#[derive(Debug)]
pub struct InstallRequest<'a> {
    table: &'a NftTable,
    tracked: Vec<IpAddr>,
    blocked: Vec<IpAddr>,
}

impl InstallRequest<'_> {
    /// Addresses whose TCP connections are tracked from the start.
    #[must_use]
    pub fn tracked(mut self, addrs: &[IpAddr]) -> Self {
        self.tracked.extend_from_slice(addrs);
        self
    }

    /// Addresses blocked from the start.
    #[must_use]
    pub fn blocked(mut self, addrs: &[IpAddr]) -> Self {
        self.blocked.extend_from_slice(addrs);
        self
    }

    /// Sends the transaction and waits for the kernel's verdict.
    ///
    /// # Errors
    ///
    /// Socket failure, EPERM ([`NftError::PermissionDenied`]), no `inet`
    /// support ([`NftError::Unsupported`]), any other kernel error, or a
    /// time-out. On error nothing changed.
    pub async fn execute(self) -> Result<(), NftError> {
        let (bytes, seqs) = build_install(&self.table.name, &self.tracked, &self.blocked);
        run_batch(self.table, "install", bytes, seqs).await
    }
}

/// One change to a set, for [`UpdateRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Add(NftSet, IpAddr),
    Remove(NftSet, IpAddr),
}

/// See [`NftTable::update`]. Changes are applied in the order given.
#[derive(Debug)]
pub struct UpdateRequest<'a> {
    table: &'a NftTable,
    changes: Vec<Change>,
}

impl UpdateRequest<'_> {
    /// Adds `addrs` to `set` (already present ones are left alone).
    #[must_use]
    pub fn add(mut self, set: NftSet, addrs: &[IpAddr]) -> Self {
        self.changes
            .extend(addrs.iter().map(|a| Change::Add(set, canonical(*a))));
        self
    }

    /// Removes `addrs` from `set` (missing ones are ignored).
    #[must_use]
    pub fn remove(mut self, set: NftSet, addrs: &[IpAddr]) -> Self {
        self.changes
            .extend(addrs.iter().map(|a| Change::Remove(set, canonical(*a))));
        self
    }

    /// Sends all changes as one transaction.
    ///
    /// # Errors
    ///
    /// [`NftError::TableMissing`] when the table is not installed; socket
    /// failure, EPERM, other kernel errors or a time-out. On error nothing
    /// changed.
    pub async fn execute(self) -> Result<(), NftError> {
        if self.changes.is_empty() {
            return Ok(());
        }
        let (bytes, seqs) = build_update(&self.table.name, &self.changes);
        run_batch(self.table, "update", bytes, seqs).await
    }
}

/// See [`NftTable::remove`].
#[derive(Debug)]
pub struct RemoveRequest<'a> {
    table: &'a NftTable,
}

impl RemoveRequest<'_> {
    /// Deletes the table.
    ///
    /// # Errors
    ///
    /// Socket failure, EPERM, other kernel errors or a time-out.
    pub async fn execute(self) -> Result<(), NftError> {
        let (bytes, seqs) = build_remove(&self.table.name);
        run_batch(self.table, "remove", bytes, seqs).await
    }
}

/// A finished batch: its bytes (one datagram) and the sequence numbers
/// that ask for an acknowledgement.
pub(crate) fn finish(batch: Batch) -> (Vec<u8>, Range<u32>) {
    let finalized = batch.finalize();
    let mut bytes = Vec::new();
    for page in &finalized {
        bytes.extend_from_slice(page);
    }
    (bytes, finalized.sequence_numbers())
}

/// A set-element message of our own type and flags (nftnl's own always
/// uses `NLM_F_EXCL` on add and `DELSETELEM` on delete, which fail the whole
/// transaction on a present or missing element).
pub(crate) struct ElemsMsg<'s, K> {
    pub(crate) set: &'s Set<'s, K>,
    pub(crate) family: ProtoFamily,
    pub(crate) ty: u16,
    pub(crate) flags: u16,
}

// SAFETY: `write` emits one header and the set's elements; callers put at
// most ELEMS_PER_MSG elements in the set, which stays far below
// `nft_nlmsg_maxsize()` (64 KiB + a page), the buffer size nftnl guarantees.
unsafe impl<K> NlMsg for ElemsMsg<'_, K> {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, _msg_type: MsgType) {
        // SAFETY: `buf` has room for the largest message (the caller's
        // contract); the set pointer is valid while `self.set` lives.
        unsafe {
            let header = sys::nftnl_nlmsg_build_hdr(
                buf.cast(),
                self.ty,
                self.family as u16,
                self.flags,
                seq,
            );
            sys::nftnl_set_elems_nlmsg_build_payload(header, self.set.as_ptr().as_ptr());
        }
    }
}

#[allow(clippy::cast_possible_truncation)] // NLM_F_* flags are below 0x1000
pub(crate) const FLAGS_ADD: u16 = (libc::NLM_F_CREATE | libc::NLM_F_ACK) as u16;
#[allow(clippy::cast_possible_truncation)] // NLM_F_ACK is 4
pub(crate) const FLAGS_ACK: u16 = libc::NLM_F_ACK as u16;

fn add_elems<K: SetKey>(
    batch: &mut Batch,
    table: &Table,
    set_name: &std::ffi::CStr,
    keys: &[K],
    ty: u16,
    flags: u16,
) {
    for chunk in keys.chunks(ELEMS_PER_MSG) {
        let mut set: Set<'_, K> = Set::new_named(set_name, 0, table, ProtoFamily::Inet);
        for key in chunk {
            set.add(key);
        }
        batch.add(
            &ElemsMsg {
                set: &set,
                family: ProtoFamily::Inet,
                ty,
                flags,
            },
            MsgType::Add,
        );
    }
}

pub(crate) fn split(addrs: &[IpAddr]) -> (Vec<Ipv4Addr>, Vec<Ipv6Addr>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for addr in addrs {
        match canonical(*addr) {
            IpAddr::V4(a) => v4.push(a),
            IpAddr::V6(a) => v6.push(a),
        }
    }
    (v4, v6)
}

#[allow(clippy::cast_possible_truncation)] // NFPROTO_* and IPPROTO_TCP are below 256
fn match_tcp_to(rule: &mut Rule<'_>, v6: bool, set: &Lookup) {
    rule.add_expr(&Meta::NfProto);
    let nfproto = if v6 {
        libc::NFPROTO_IPV6
    } else {
        libc::NFPROTO_IPV4
    };
    rule.add_expr(&Cmp::new(CmpOp::Eq, nfproto as u8));
    rule.add_expr(&Meta::L4Proto);
    rule.add_expr(&Cmp::new(CmpOp::Eq, libc::IPPROTO_TCP as u8));
    let field = if v6 {
        NetworkHeaderField::Ipv6(Ipv6HeaderField::Daddr)
    } else {
        NetworkHeaderField::Ipv4(Ipv4HeaderField::Daddr)
    };
    rule.add_expr(&Payload::Network(field));
    rule.add_expr(set);
}

fn build_install(name: &CString, tracked: &[IpAddr], blocked: &[IpAddr]) -> (Vec<u8>, Range<u32>) {
    let mut batch = Batch::new();
    let table = Table::new(name, ProtoFamily::Inet);
    // Add (no-op if present), delete, add: an atomic "replace".
    batch.add(&table, MsgType::Add);
    batch.add(&table, MsgType::Del);
    batch.add(&table, MsgType::Add);

    let public4: Set<'_, Ipv4Addr> = Set::new_named(SET_PUBLIC4, 1, &table, ProtoFamily::Inet);
    let public6: Set<'_, Ipv6Addr> = Set::new_named(SET_PUBLIC6, 2, &table, ProtoFamily::Inet);
    let blocked4: Set<'_, Ipv4Addr> = Set::new_named(SET_BLOCKED4, 3, &table, ProtoFamily::Inet);
    let blocked6: Set<'_, Ipv6Addr> = Set::new_named(SET_BLOCKED6, 4, &table, ProtoFamily::Inet);
    // Sets are created empty; elements follow in chunked messages.
    batch.add(&public4, MsgType::Add);
    batch.add(&public6, MsgType::Add);
    batch.add(&blocked4, MsgType::Add);
    batch.add(&blocked6, MsgType::Add);
    let (t4, t6) = split(tracked);
    let (b4, b6) = split(blocked);
    add_elems(
        &mut batch,
        &table,
        SET_PUBLIC4,
        &t4,
        NFT_MSG_NEWSETELEM,
        FLAGS_ADD,
    );
    add_elems(
        &mut batch,
        &table,
        SET_PUBLIC6,
        &t6,
        NFT_MSG_NEWSETELEM,
        FLAGS_ADD,
    );
    add_elems(
        &mut batch,
        &table,
        SET_BLOCKED4,
        &b4,
        NFT_MSG_NEWSETELEM,
        FLAGS_ADD,
    );
    add_elems(
        &mut batch,
        &table,
        SET_BLOCKED6,
        &b6,
        NFT_MSG_NEWSETELEM,
        FLAGS_ADD,
    );

    let mut block = Chain::new(c"block", &table);
    block.set_hook(Hook::PreRouting, PRIORITY_RAW);
    block.set_type(ChainType::Filter);
    block.set_policy(Policy::Accept);
    batch.add(&block, MsgType::Add);
    for (v6, lookup) in [
        (false, Lookup::new(&blocked4)),
        (true, Lookup::new(&blocked6)),
    ] {
        let mut rule = Rule::new(&block);
        match_tcp_to(&mut rule, v6, &lookup);
        rule.add_expr(&Counter);
        rule.add_expr(&Verdict::Drop);
        batch.add(&rule, MsgType::Add);
    }

    for (chain_name, hook) in [(c"track_in", Hook::PreRouting), (c"track_out", Hook::Out)] {
        let mut chain = Chain::new(chain_name, &table);
        chain.set_hook(hook, PRIORITY_FILTER);
        chain.set_type(ChainType::Filter);
        chain.set_policy(Policy::Accept);
        batch.add(&chain, MsgType::Add);
        for (v6, lookup) in [
            (false, Lookup::new(&public4)),
            (true, Lookup::new(&public6)),
        ] {
            let mut rule = Rule::new(&chain);
            match_tcp_to(&mut rule, v6, &lookup);
            rule.add_expr(&Conntrack::State);
            rule.add_expr(&Bitwise::new(States::NEW.bits(), 0u32));
            rule.add_expr(&Cmp::new(CmpOp::Neq, 0u32));
            rule.add_expr(&Counter);
            batch.add(&rule, MsgType::Add);
        }
    }
    finish(batch)
}

fn build_update(name: &CString, changes: &[Change]) -> (Vec<u8>, Range<u32>) {
    let mut batch = Batch::new();
    let table = Table::new(name, ProtoFamily::Inet);
    // Consecutive changes of the same kind and set share messages.
    let mut i = 0;
    while i < changes.len() {
        let (is_add, set) = match changes[i] {
            Change::Add(set, _) => (true, set),
            Change::Remove(set, _) => (false, set),
        };
        let mut run = Vec::new();
        while let Some(change) = changes.get(i) {
            match *change {
                Change::Add(s, addr) if is_add && s == set => run.push(addr),
                Change::Remove(s, addr) if !is_add && s == set => run.push(addr),
                _ => break,
            }
            i += 1;
        }
        let (v4, v6) = split(&run);
        let (name4, name6) = set.names();
        let (ty, flags) = if is_add {
            (NFT_MSG_NEWSETELEM, FLAGS_ADD)
        } else {
            (NFT_MSG_DESTROYSETELEM, FLAGS_ACK)
        };
        add_elems(&mut batch, &table, name4, &v4, ty, flags);
        add_elems(&mut batch, &table, name6, &v6, ty, flags);
    }
    finish(batch)
}

fn build_remove(name: &CString) -> (Vec<u8>, Range<u32>) {
    let mut batch = Batch::new();
    let table = Table::new(name, ProtoFamily::Inet);
    batch.add(&DestroyTable(&table), MsgType::Del);
    finish(batch)
}

#[allow(clippy::cast_possible_truncation)] // libnftnl attribute ids are below 16
const ATTR_TABLE_NAME: u16 = sys::NFTNL_TABLE_NAME as u16;
#[allow(clippy::cast_possible_truncation)] // libnftnl attribute ids are below 16
const ATTR_TABLE_FAMILY: u16 = sys::NFTNL_TABLE_FAMILY as u16;

/// `NFT_MSG_DESTROYTABLE` for a table (nftnl only knows NEW and DEL).
struct DestroyTable<'t>(&'t Table);

// SAFETY: a table message is a header plus the table name and family: far
// below `nft_nlmsg_maxsize()`.
unsafe impl NlMsg for DestroyTable<'_> {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, _msg_type: MsgType) {
        // SAFETY: `buf` has room for the largest message (the caller's
        // contract). The table object is built by nftnl and alive.
        unsafe {
            let header = sys::nftnl_nlmsg_build_hdr(
                buf.cast(),
                NFT_MSG_DESTROYTABLE,
                ProtoFamily::Inet as u16,
                FLAGS_ACK,
                seq,
            );
            let raw = sys::nftnl_table_alloc();
            if raw.is_null() {
                std::process::abort(); // out of memory, as nftnl does
            }
            sys::nftnl_table_set_str(raw, ATTR_TABLE_NAME, self.0.get_name().as_ptr());
            sys::nftnl_table_set_u32(raw, ATTR_TABLE_FAMILY, ProtoFamily::Inet as u32);
            sys::nftnl_table_nlmsg_build_payload(header, raw);
            sys::nftnl_table_free(raw);
        }
    }
}

/// Sends one batch and collects an answer for every sequence number in
/// `seqs` (or the first error, after a short drain).
pub(crate) async fn run_batch(
    table: &NftTable,
    op: &'static str,
    bytes: Vec<u8>,
    seqs: Range<u32>,
) -> Result<(), NftError> {
    run_batch_timed(table, op, bytes, seqs).await.map(|_| ())
}

/// [`run_batch`], returning when the batch was handed to the kernel (the
/// kernel handles it within that `sendmsg`, and a process can be stopped
/// only before or after it).
pub(crate) async fn run_batch_timed(
    table: &NftTable,
    op: &'static str,
    bytes: Vec<u8>,
    seqs: Range<u32>,
) -> Result<std::time::Instant, NftError> {
    let tname = || table.display.clone();
    let mut socket = NlSocket::open(NETLINK_NETFILTER).map_err(|source| NftError::Open {
        table: tname(),
        source,
    })?;
    let io_err = |source| NftError::Io {
        table: tname(),
        op,
        source,
    };
    // The whole batch must go in one datagram (one transaction).
    if bytes.len() > SMALL_BATCH {
        socket
            .set_send_buffer(bytes.len().saturating_add(SMALL_BATCH))
            .map_err(io_err)?;
    }
    let sent = std::time::Instant::now();
    tokio::time::timeout(BATCH_TIMEOUT, socket.send(&bytes))
        .await
        .map_err(|_| NftError::Timeout {
            table: tname(),
            op,
            limit: BATCH_TIMEOUT,
        })?
        .map_err(io_err)?;
    let mut waiting: std::collections::BTreeSet<u32> = seqs.collect();
    let mut first_error: Option<i32> = None;
    let deadline = tokio::time::Instant::now() + BATCH_TIMEOUT;
    // Bounded: every round either consumes an answer or ends the loop.
    let max_rounds = waiting.len().saturating_mul(2).saturating_add(8);
    for _ in 0..max_rounds {
        if waiting.is_empty() {
            break;
        }
        let limit = if first_error.is_some() {
            DRAIN_AFTER_ERROR
        } else {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        };
        let Some(dgram) = socket.recv_timeout(limit).await.map_err(io_err)? else {
            break;
        };
        for msg in messages(dgram) {
            let msg = msg.map_err(|source| NftError::Malformed {
                table: tname(),
                op,
                source,
            })?;
            if msg.ty != NLMSG_ERROR {
                continue;
            }
            let code = msg.error_code().map_err(|source| NftError::Malformed {
                table: tname(),
                op,
                source,
            })?;
            waiting.remove(&msg.seq);
            if code != 0 && first_error.is_none() {
                first_error = Some(code);
            }
        }
    }
    if let Some(errno) = first_error {
        return Err(table.error(op, errno));
    }
    if !waiting.is_empty() {
        return Err(NftError::Timeout {
            table: tname(),
            op,
            limit: BATCH_TIMEOUT,
        });
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(NftTable::new("ipfailover").is_ok());
        assert_eq!(NftTable::new("t1").unwrap().name(), "t1");
        for bad in ["", "a\0b", &"x".repeat(256)] {
            assert!(
                matches!(NftTable::new(bad), Err(NftError::InvalidName { .. })),
                "{bad:?} accepted"
            );
        }
        assert!(NftTable::new(&"x".repeat(255)).is_ok());
    }

    #[test]
    fn errno_maps_to_typed_errors() {
        let t = NftTable::new("t").unwrap();
        assert!(matches!(
            t.error("update", libc::EPERM),
            NftError::PermissionDenied { .. }
        ));
        assert!(matches!(
            t.error("update", libc::ENOENT),
            NftError::TableMissing { .. }
        ));
        assert!(matches!(
            t.error("install", libc::EAFNOSUPPORT),
            NftError::Unsupported { .. }
        ));
        assert!(matches!(
            t.error("install", libc::EBUSY),
            NftError::Kernel {
                errno: libc::EBUSY,
                ..
            }
        ));
        assert!(t.error("renew", libc::EBUSY).is_busy());
        assert!(!t.error("renew", libc::EINVAL).is_busy());
        assert!(!t.error("renew", libc::ENOENT).is_busy());
    }

    /// The message types of the netlink messages in a batch.
    fn types(bytes: &[u8]) -> Vec<u16> {
        messages(bytes).map(|m| m.unwrap().ty).collect()
    }

    #[test]
    fn update_batch_groups_changes_into_messages() {
        let name = CString::new("t").unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let changes = [
            Change::Add(NftSet::Tracked, a),
            Change::Add(NftSet::Tracked, b),
            Change::Remove(NftSet::Blocked, a),
        ];
        let (bytes, seqs) = build_update(&name, &changes);
        let subsys_nft = 10u16 << 8;
        // batch begin (0x10), add v4, add v6, destroy v4, batch end (0x11)
        assert_eq!(
            types(&bytes),
            vec![
                0x10,
                subsys_nft | NFT_MSG_NEWSETELEM,
                subsys_nft | NFT_MSG_NEWSETELEM,
                subsys_nft | NFT_MSG_DESTROYSETELEM,
                0x11
            ]
        );
        // Every message asks for an ACK, batch begin and end included.
        assert_eq!(seqs.len(), 5);
    }

    #[test]
    fn large_updates_are_split_into_bounded_messages() {
        let name = CString::new("t").unwrap();
        let addrs: Vec<IpAddr> = (0..1300u32)
            .map(|i| IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i))))
            .collect();
        let changes: Vec<_> = addrs
            .iter()
            .map(|a| Change::Add(NftSet::Blocked, *a))
            .collect();
        let (bytes, seqs) = build_update(&name, &changes);
        assert_eq!(seqs.len(), 2 + 3); // begin, 512 + 512 + 276, end
        for msg in messages(&bytes) {
            assert!(msg.unwrap().whole.len() < 32 * 1024);
        }
    }
}
