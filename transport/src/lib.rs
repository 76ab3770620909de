//! The ipfailover transport: the one protocol and the one routing layer that
//! every daemon and the `ipfailover` command use.
//!
//! * [`proto`] — pure frame encode/decode and message types (no I/O); the
//!   wire format is documented there and in docs/protocol.md;
//! * [`controls`] — the common controls (ping, version, statistics, log
//!   level, shutdown), implemented once; [`limit`] bounds the requests a
//!   daemon serves at once and counts refusals; [`logging`] installs the tracing
//!   subscriber whose filter the log-level control changes;
//! * [`client`] — the client library, generic over its connection ([`client::Link`]):
//!   a Unix socket (`Client::connect_unix`, in [`unix`]), any byte stream,
//!   or the in-process router;
//! * [`tdaemon`] — the one daemon skeleton (configuration, logging,
//!   connection, signals, reloads) every daemon is built on;
//! * [`routing`] — the routing rules, once: a pure decision used by both
//!   routers below;
//! * [`router`] — the in-process router (a whole node or cluster in one process);
//! * [`transportd`] — the routing daemon (Unix socket + authenticated TCP to
//!   peers), with [`nodes`] (the CTDB nodes file, read by [`config::nodes`])
//!   and [`node_config`] (the nodes file and cluster key of a configuration
//!   directory, checked the same way for transportd and masterd).
//!
//! Features: `daemon` adds [`tdaemon`] and [`logging`] (journald);
//! `transportd` (default, implies `daemon`) adds transportd itself (snow).
//! Without them, as the CLI takes it, the crate is the client side only;
//! [`transportd::key`] and [`transportd::peercred`] stay for it.
//!
//! Layers: `proto` ← `controls` ← `client` ← `routing` ← `router` / `transportd`.
//! This crate knows no daemon: message types shared between daemons and the
//! CLI live here, never in a daemon crate.

pub mod client;
pub mod controls;
pub mod limit;
#[cfg(feature = "daemon")]
pub mod logging;
pub mod msg;
pub mod node_config;
pub mod nodes;
pub mod proto;
pub mod router;
pub mod routing;
#[cfg(feature = "daemon")]
pub mod tdaemon;
pub mod transportd;
pub mod unix;
