//! The nodes of the cluster, as transportd sees them: the one reader of
//! CTDB's `nodes` file is [`config::nodes`]; this module only names its
//! type the way transportd uses it (peer addresses by PNN, the PNN of a
//! connecting address).

pub use config::nodes::{NodeEntry, NodesError, NodesFile as Nodes, Pnn};
