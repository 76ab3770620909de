//! conntrackd owns the tracked-connection table: which TCP clients are
//! connected to which public IP, learned from the kernel and by registration,
//! and replicated to every node.
