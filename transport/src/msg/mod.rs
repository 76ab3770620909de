//! Message types shared between daemons and the CLI, one module per daemon
//! that serves them. Daemons never depend on each other: a type that crosses
//! from one daemon to another (or to the CLI) lives here. Payloads are
//! postcard-encoded serde values (see [`crate::proto`]).
//!
//! Opcode ranges: 0x0001_xxxx clusterd, 0x0002_xxxx failoverd,
//! 0x0003_xxxx conntrackd, 0x0004_xxxx masterd.

pub mod cluster;
pub mod conntrack;
pub mod failover;
pub mod master;
