//! The leader's side of failoverd: takeover runs.
//!
//! [`plan`] is the pure planner (membership + every node's report → release
//! and take steps, with the safety rules); [`run`] carries a plan out over
//! the transport: RELEASE on every node concerned, wait for all
//! acknowledgements, only then TAKE, then broadcast IPREALLOCATED.

pub mod plan;
