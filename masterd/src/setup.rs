//! Loading and validating a node's configuration directory before anything
//! starts: `ipfailover.toml`, `nodes`, the cluster key and
//! `public_addresses` (optional: a node without it hosts no public address).
//! Everything is checked up front so that a bad file stops masterd with an
//! error naming the file and line (`FILE:LINE[:COL]: what`), and nothing is
//! started.
//!
//! The checks are the daemons' own, not copies: the files are read by
//! config's readers, and [`load`] runs transportd's
//! ([`transport::transportd::entry::load`]: ipfailover.toml, nodes, pnn,
//! key, group), failoverd's
//! ([`failoverd::entry::load`]: public_addresses) and clusterd's
//! ([`clusterd::entry::load`]: this host's PNN, cluster lock, health command,
//! timing), in that order.
//! conntrackd reads only `ipfailover.toml` and `nodes`, both checked by the
//! former. So `masterd --check` accepts exactly what the daemons accept.

use std::path::{Path, PathBuf};

use transport::nodes::Nodes;
use transport::transportd::entry::EntryError;
use transport::transportd::key::ClusterKey;

use crate::MasterError;

/// The CTDB-format nodes file's name in the configuration directory.
pub const NODES_FILE: &str = "nodes";
/// The CTDB-format public addresses file's name.
pub const PUBLIC_ADDRESSES_FILE: &str = "public_addresses";

/// A validated configuration directory.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The loaded `ipfailover.toml` (and its directory).
    pub loaded: config::Loaded,
    /// The nodes file.
    pub nodes: Nodes,
    /// The cluster key, when the file exists (required with more than one
    /// live node).
    pub key: Option<ClusterKey>,
    /// How many public addresses `public_addresses` lists (0 without it).
    pub public_addresses: usize,
    /// Who may use transportd's socket (`[transport] group`, resolved).
    pub policy: transport::transportd::peercred::Policy,
}

impl NodeConfig {
    /// The configuration directory.
    pub fn dir(&self) -> &Path {
        &self.loaded.dir
    }

    /// The run directory (transport.sock lives there).
    pub fn run_dir(&self) -> PathBuf {
        self.loaded.resolve(&self.loaded.config.transport.run_dir)
    }

    /// transportd's socket.
    pub fn socket(&self) -> PathBuf {
        transport::transportd::socket_path(&self.run_dir())
    }

    /// Where to serve `/metrics` (`[metrics] listen`, checked by the
    /// loader); `None` when turned off.
    pub fn metrics_listen(&self) -> Option<std::net::SocketAddr> {
        self.loaded.config.metrics.listen_addr().ok().flatten()
    }
}

/// Loads and checks every file of the configuration directory `dir`, with
/// the daemons' own checks (see the module doc).
///
/// # Errors
///
/// [`MasterError::Config`], [`MasterError::NodeConfig`],
/// [`MasterError::Clusterd`] or [`MasterError::Failoverd`], each naming the
/// file and line.
pub fn load(dir: &Path) -> Result<NodeConfig, MasterError> {
    let transport::transportd::entry::Loaded {
        loaded,
        transport: transport::node_config::NodeTransport { nodes, key, policy },
    } = transport::transportd::entry::load(dir).map_err(|e| match e {
        EntryError::Config(e) => MasterError::Config(e),
        EntryError::NodeConfig(e) => MasterError::NodeConfig(e),
        EntryError::Bind(e) => MasterError::Transport(e),
    })?;
    // Every file is read before clusterd's checks of this host (which
    // node it is) and of the settings' meaning.
    let failover = failoverd::entry::load(dir).map_err(|e| MasterError::Failoverd(Box::new(e)))?;
    clusterd::entry::load(dir).map_err(|e| MasterError::Clusterd(Box::new(e)))?;
    Ok(NodeConfig {
        loaded,
        nodes,
        key,
        public_addresses: failover.settings.publics.len(),
        policy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(tag: &str, files: &[(&str, &str)]) -> Dir {
        let d = std::env::temp_dir().join(format!("masterd-setup-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        for (name, text) in files {
            let p = d.join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        Dir(d)
    }

    const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";

    #[test]
    fn a_good_directory_loads() {
        let d = dir(
            "good",
            &[
                ("nodes", "192.0.2.10\n192.0.2.11\n"),
                ("cluster.key", KEY),
                (
                    "public_addresses",
                    "192.0.2.201/24 eth0\n192.0.2.202/24 eth0\n",
                ),
                (
                    "ipfailover.toml",
                    "[cluster]\npnn = 1\n[logging]\nlevel = \"debug\"\n",
                ),
            ],
        );
        let c = load(&d.0).unwrap();
        assert_eq!(c.public_addresses, 2);
        assert!(c.key.is_some());
        assert_eq!(c.loaded.config.logging.level, "debug");
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let d = dir(
            "badtoml",
            &[
                ("nodes", "192.0.2.10\n"),
                ("ipfailover.toml", "\n[cluster]\nbogus = 1\n"),
            ],
        );
        let e = load(&d.0).unwrap_err().to_string();
        assert!(e.contains("ipfailover.toml:3"), "{e}");

        let d = dir(
            "badpa",
            &[
                ("nodes", "192.0.2.10\n"),
                ("ipfailover.toml", "[cluster]\npnn = 0\n"),
                (
                    "public_addresses",
                    "192.0.2.201/24 eth0\n192.0.2.300/24 eth0\n",
                ),
            ],
        );
        let e = load(&d.0).unwrap_err().to_string();
        assert!(e.contains("public_addresses:2"), "{e}");

        let d = dir("nonodes", &[]);
        let e = load(&d.0).unwrap_err().to_string();
        assert!(e.contains("nodes"), "{e}");
    }

    #[test]
    fn several_nodes_need_the_key() {
        let d = dir("nokey", &[("nodes", "192.0.2.10\n192.0.2.11\n")]);
        let e = load(&d.0).unwrap_err().to_string();
        assert!(e.contains("cluster.key:1: cannot read"), "{e}");
    }

    /// clusterd's own checks run: a host none of whose addresses is a node
    /// (and no pnn set) is refused as clusterd refuses it, and so are a bad
    /// cluster lock and an empty health command.
    #[test]
    fn clusterd_checks_run() {
        let d = dir("notme", &[("nodes", "192.0.2.10\n")]);
        let e = load(&d.0).unwrap_err().to_string();
        assert!(e.contains("nodes:1: none of this host's addresses"), "{e}");
        let d = dir(
            "badlock",
            &[
                ("nodes", "192.0.2.10\n"),
                (
                    "ipfailover.toml",
                    "[cluster]\npnn = 0\ncluster_lock = \"!\"\n",
                ),
            ],
        );
        let e = load(&d.0).unwrap_err().to_string();
        assert!(e.contains("ipfailover.toml:3:1: cluster_lock"), "{e}");
    }
}
