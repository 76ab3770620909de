//! conntrackd owns the tracked-connection table: which TCP clients are
//! connected to which public IP, learned from the kernel and by registration,
//! and replicated to every node.
//!
//! The pure core, with no I/O and no clock:
//!
//! * [`table`]: the compact per-address table and its replication merge
//!   (idempotent, order-independent, versioned per reporter and address);
//! * [`reporter`]: the local side that stamps this node's observations with
//!   versions and turns them into messages;
//! * [`msg`]: the serde messages (postcard, at most 64 KiB each);
//! * [`engine`]: one node's conntrackd as a state machine (inputs: dumps,
//!   events, requests, peer messages, `now`; outputs: messages to send).
//!
//! The only module that does I/O is [`daemon`], the async shell around
//! [`engine::Engine`] (sock_diag dumps, conntrack events, failoverd's hosted
//! addresses and the transport).

pub mod daemon;
pub mod engine;
pub mod entry;
pub mod lag;
pub mod msg;
pub mod reporter;
pub mod table;

pub use engine::{Engine, Out};
pub use msg::{
    decode, encode, DeltaBatcher, Deltas, Msg, MsgError, OpKind, Request, Response, SyncChunk,
};
pub use reporter::Reporter;
pub use table::{Conn, Pnn, Table, TableError, Version};
