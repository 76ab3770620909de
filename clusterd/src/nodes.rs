//! The CTDB-format nodes file: which nodes make up the cluster, and which one
//! is this node. Read by [`config::nodes`], the one reader of the file
//! (transportd, conntrackd, masterd and the CLI use it too); the format and
//! its rules are documented there and in docs/configuration.md.

pub use config::nodes::{NodeEntry, NodesError, NodesFile, MAX_NODES};

/// A node's number: its line's index among the non-blank lines (defined in
/// [`transport::msg::cluster`]).
pub use transport::msg::cluster::Pnn;
