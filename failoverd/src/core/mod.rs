//! failoverd's core: every decision of the daemon, with no I/O and no clock.
//!
//! Like `clusterd::membership::Member` (and smoltcp's `Interface::poll`),
//! each part takes `now` and its inputs and returns actions; the async
//! shell ([`crate::daemon`]) carries them out with the executor and the
//! transport, and the deterministic simulator (`tests/src/sim`) with models
//! of the kernel and the network.
//!
//! * [`node::NodeCore`]: this node's lease and what to drop when it ends,
//!   which TAKE/RELEASE may be carried out, re-requests after a lease flap,
//!   where a leader-only request goes, leftover addresses.
//! * [`leader::LeaderCore`]: when the leader runs, retries, answers waiting
//!   requests, and which nodes are left out for failing runs.
//! * [`run`]: the pure steps of one run (with [`crate::leader::plan`]).

pub mod leader;
pub mod node;
pub mod run;

#[cfg(test)]
mod tests;

pub use leader::{LeaderAction, LeaderConfig, LeaderCore, RunOrder, RunOutcome};
pub use node::{leader_feed, News, NodeAction, NodeConfig, NodeCore, Refusal, Route};
