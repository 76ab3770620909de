//! clusterd owns membership: the CTDB-format nodes file, heartbeats between
//! nodes, node flags, the leader, the cluster lock and leases, and publishes
//! membership to local subscribers over the transport.
