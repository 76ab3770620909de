//! failoverd owns public IPs: the CTDB-format public_addresses file, the
//! allocation of IPs to nodes (LCP2, deterministic, non-deterministic), takeover
//! runs, adding and removing addresses, announcements, tickles and event hooks.

/// The allocation (the `ipalloc` crate: pure, shared with the CLI).
pub use ipalloc as alloc;
pub mod core;
pub mod counters;
pub mod daemon;
pub mod entry;
pub mod history;
pub mod leader;
pub mod node;
pub mod record;

/// The public_addresses file, read by config's reader (the one reader of the
/// file, shared with masterd and the CLI).
pub use config::public_addresses;
