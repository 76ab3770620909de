//! The ipfailover transport: the one protocol and the one routing layer that
//! every daemon and the `ipfailover` command use.
//!
//! * [`proto`] — pure frame encode/decode (no I/O);
//! * `client` — the client library (Unix socket or in-process);
//! * `router` — the in-process router (a whole node or cluster in one process);
//! * `transportd` — the routing daemon (Unix socket + authenticated TCP to peers).
//!
//! This crate knows no daemon: message types shared between daemons and the
//! CLI live here, never in a daemon crate.

pub mod client;
pub mod controls;
pub mod msg;
pub mod nodes;
pub mod proto;
pub mod router;
pub mod transportd;
pub mod unix;
