//! The transport side of a node's configuration directory: the `nodes` file
//! (read by [`config::nodes`]), `[cluster] pnn` checked against it, and the
//! cluster key, needed when the file lists more than one live node (or when
//! the key file exists: a present key is always checked), and the
//! `[transport] group` (it must exist on this host).
//!
//! transportd (`--config-dir`) and masterd (at start and for `--check`) both
//! call [`load`], so masterd never accepts a directory that transportd then
//! refuses. Every error names `FILE:LINE[:COL]`; errors about the key file
//! as a whole name line 1.

use std::path::{Path, PathBuf};

use crate::nodes::{Nodes, NodesError};
use crate::transportd::key::{ClusterKey, KeyError};
use crate::transportd::peercred::{GroupError, Policy};

/// What [`load`] reads.
#[derive(Debug, Clone)]
pub struct NodeTransport {
    /// The nodes file.
    pub nodes: Nodes,
    /// The cluster key, when needed or present.
    pub key: Option<ClusterKey>,
    /// Who may use the local socket (`[transport] group` resolved).
    pub policy: Policy,
}

/// Why the transport configuration of a directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NodeConfigError {
    /// `[cluster] pnn` is not a live node of the nodes file.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The nodes file cannot be read or is invalid.
    #[error(transparent)]
    Nodes(#[from] NodesError),
    /// The cluster key file cannot be used.
    #[error("{}:1: {what}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong, in words.
        what: String,
        /// The loader's error.
        #[source]
        source: KeyError,
    },
    /// `[transport] group` names no group of this host.
    #[error("{}:{line}:{column}: [transport] group: {source}", file.display())]
    Group {
        /// `ipfailover.toml`.
        file: PathBuf,
        /// 1-based line of the `group = ...` key.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The lookup's error.
        #[source]
        source: GroupError,
    },
}

/// Reads the nodes file and the cluster key of the directory of `loaded`.
///
/// # Errors
///
/// [`NodeConfigError`], naming the file and line.
pub fn load(loaded: &config::Loaded) -> Result<NodeTransport, NodeConfigError> {
    let nodes = Nodes::load(&loaded.dir.join("nodes"))?;
    loaded.check_pnn(&nodes)?;
    let key_path = loaded.resolve(&loaded.config.transport.key_file);
    let key = if nodes.configured() > 1 || key_path.exists() {
        Some(load_key(&key_path)?)
    } else {
        None
    };
    let policy = Policy::new(loaded.config.transport.group.as_deref()).map_err(|source| {
        let (line, column) = loaded.key_position("group");
        NodeConfigError::Group {
            file: loaded.file(),
            line,
            column,
            source,
        }
    })?;
    Ok(NodeTransport { nodes, key, policy })
}

/// The cluster key at `path`, with errors in the `FILE:1: what` form.
///
/// # Errors
///
/// [`NodeConfigError::Key`].
pub fn load_key(path: &Path) -> Result<ClusterKey, NodeConfigError> {
    ClusterKey::load(path).map_err(|source| {
        let what = match &source {
            KeyError::Read { source, .. } => format!("cannot read the cluster key: {source}"),
            KeyError::WorldReadable { mode, .. } => format!(
                "the cluster key is readable by other users (mode {mode:o}); run chmod 600 {}",
                path.display()
            ),
            KeyError::Malformed { reason, .. } => format!("not a cluster key: {reason}"),
            other => other.to_string(),
        };
        NodeConfigError::Key {
            path: path.to_path_buf(),
            what,
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(tag: &str, files: &[(&str, &str, u32)]) -> Dir {
        let d =
            std::env::temp_dir().join(format!("transport-nodecfg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        for (name, text, mode) in files {
            let p = d.join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
        }
        Dir(d)
    }

    fn load_dir(d: &Dir) -> Result<NodeTransport, NodeConfigError> {
        load(&config::load(&d.0).unwrap())
    }

    #[test]
    fn two_live_nodes_need_the_key_one_live_node_does_not() {
        let d = dir("nokey", &[("nodes", "192.0.2.1\n192.0.2.2\n", 0o644)]);
        let e = load_dir(&d).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}/cluster.key:1: cannot read", d.0.display())),
            "{e}"
        );
        // A #deleted entry is not a peer: transportd and masterd agree.
        let d = dir("onelive", &[("nodes", "192.0.2.1\n#192.0.2.2\n", 0o644)]);
        let t = load_dir(&d).unwrap();
        assert!(t.key.is_none());
        assert_eq!(t.nodes.len(), 2);
    }

    #[test]
    fn a_world_readable_key_is_refused_at_line_1() {
        let d = dir(
            "worldkey",
            &[
                ("nodes", "192.0.2.1\n192.0.2.2\n", 0o644),
                ("cluster.key", KEY, 0o644),
            ],
        );
        let e = load_dir(&d).unwrap_err().to_string();
        let key = d.0.join("cluster.key");
        assert_eq!(
            e,
            format!(
                "{}:1: the cluster key is readable by other users (mode 644); run chmod 600 {}",
                key.display(),
                key.display()
            )
        );
    }

    #[test]
    fn a_pnn_outside_the_file_is_refused_at_its_line() {
        let d = dir(
            "badpnn",
            &[
                ("nodes", "192.0.2.1\n", 0o644),
                ("ipfailover.toml", "[cluster]\npnn = 3\n", 0o644),
            ],
        );
        let e = load_dir(&d).unwrap_err().to_string();
        assert!(
            e.contains("ipfailover.toml:2:1: pnn = 3: not a node of"),
            "{e}"
        );
    }
}
