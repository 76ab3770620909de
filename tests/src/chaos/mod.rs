//! Chaos on real kernels: random faults against real daemons under
//! masterd, in network namespaces, with an exact duplicate detector.
//!
//! * [`plan`]: the seeded fault plan (pure; same seed, same faults).
//! * [`serving`]: kernel events to serving intervals and overlaps (pure).
//! * [`wire`]: bounded parsers of netlink messages and ARP/NA frames.
//! * [`monitor`]: the detector threads (rtnetlink + nftables events in each
//!   node namespace, ARP/NS probes in the client namespace).
//! * [`load`]: listeners, a client connecting every 10 ms, idle clients.
//! * [`bed`]: the cluster under masterd and the fault primitives.
//! * [`run`]: the driver, the liveness checks and the JSON summary.
//!
//! Entry point: `cargo run --release -p tests --bin chaos -- --help`;
//! results and definitions in docs/RELIABILITY.md, section "Chaos".

pub mod bed;
pub mod load;
pub mod monitor;
pub mod plan;
pub mod rng;
pub mod run;
pub mod serving;
pub mod wire;
