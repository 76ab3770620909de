//! A minimal reader for CTDB's `nodes` file: line N (counting only non-blank
//! lines) is node N (its PNN).
//!
//! As in CTDB, a line starting with `#` is a *deleted* node: it keeps its PNN
//! slot (so the numbering of later nodes does not change) but has no
//! address. Blank lines are skipped. Only the first word of a line is read
//! (an IPv4 or IPv6 address). clusterd owns the full reader; this one is just
//! enough for transportd to find its peers.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Why a nodes file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NodesError {
    /// The file cannot be read.
    #[error("nodes file {path}: cannot read: {source}")]
    Read {
        /// The nodes file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not an address.
    #[error("nodes file {path} line {line}: {text:?} is not an IP address")]
    BadAddress {
        /// The nodes file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The offending word.
        text: String,
    },
    /// The same address appears twice.
    #[error("nodes file {path} line {line}: address {addr} is already node {first}")]
    Duplicate {
        /// The nodes file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The address.
        addr: IpAddr,
        /// The PNN that has it first.
        first: u32,
    },
    /// More nodes than PNNs.
    #[error("nodes file {path}: too many nodes")]
    TooMany {
        /// The nodes file.
        path: PathBuf,
    },
}

/// The nodes of a cluster, by PNN; `None` for a deleted node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nodes {
    nodes: Vec<Option<IpAddr>>,
}

impl Nodes {
    /// Reads a nodes file.
    ///
    /// # Errors
    /// [`NodesError::Read`], or any parse error of [`Nodes::parse`].
    pub fn load(path: &Path) -> Result<Self, NodesError> {
        let text = std::fs::read_to_string(path).map_err(|source| NodesError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses the text of a nodes file; `path` only names it in errors.
    ///
    /// # Errors
    /// [`NodesError::BadAddress`], [`NodesError::Duplicate`], [`NodesError::TooMany`].
    pub fn parse(text: &str, path: &Path) -> Result<Self, NodesError> {
        let mut nodes: Vec<Option<IpAddr>> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            if line.starts_with('#') {
                nodes.push(None);
                continue;
            }
            let word = line.split_whitespace().next().unwrap_or(line);
            let addr: IpAddr = word.parse().map_err(|_| NodesError::BadAddress {
                path: path.to_path_buf(),
                line: i + 1,
                text: word.to_owned(),
            })?;
            if let Some(first) = nodes.iter().position(|n| *n == Some(addr)) {
                return Err(NodesError::Duplicate {
                    path: path.to_path_buf(),
                    line: i + 1,
                    addr,
                    first: u32::try_from(first).map_err(|_| NodesError::TooMany {
                        path: path.to_path_buf(),
                    })?,
                });
            }
            nodes.push(Some(addr));
        }
        if u32::try_from(nodes.len()).is_err() {
            return Err(NodesError::TooMany {
                path: path.to_path_buf(),
            });
        }
        Ok(Nodes { nodes })
    }

    /// A node list from addresses (tests).
    pub fn from_addrs(addrs: Vec<Option<IpAddr>>) -> Self {
        Nodes { nodes: addrs }
    }

    /// The address of node `pnn`, if it exists and is not deleted.
    pub fn addr(&self, pnn: u32) -> Option<IpAddr> {
        usize::try_from(pnn)
            .ok()
            .and_then(|i| self.nodes.get(i).copied().flatten())
    }

    /// The PNN whose address is `addr`.
    pub fn pnn_of(&self, addr: IpAddr) -> Option<u32> {
        let addr = canonical(addr);
        self.iter()
            .find(|(_, a)| canonical(*a) == addr)
            .map(|(p, _)| p)
    }

    /// Live (not deleted) nodes as `(pnn, address)`, by PNN.
    pub fn iter(&self) -> impl Iterator<Item = (u32, IpAddr)> + '_ {
        self.nodes.iter().enumerate().filter_map(|(i, a)| {
            // parse() checked the count fits in u32.
            let pnn = u32::try_from(i).ok()?;
            a.map(|a| (pnn, a))
        })
    }

    /// Number of PNN slots (deleted nodes included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// No node at all?
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// IPv4-mapped IPv6 addresses compare as IPv4 (how an IPv6 socket reports
/// an IPv4 peer).
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleted_nodes_keep_their_pnn_and_blank_lines_do_not() {
        let text = "192.0.2.1\n\n  #192.0.2.2\n192.0.2.3   extra\n2001:db8::4\n";
        let nodes = Nodes::parse(text, Path::new("nodes")).unwrap();
        assert_eq!(nodes.len(), 4);
        assert_eq!(nodes.addr(0), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(nodes.addr(1), None);
        assert_eq!(nodes.addr(2), Some("192.0.2.3".parse().unwrap()));
        assert_eq!(nodes.pnn_of("2001:db8::4".parse().unwrap()), Some(3));
        assert_eq!(nodes.pnn_of("::ffff:192.0.2.3".parse().unwrap()), Some(2));
        assert_eq!(nodes.iter().count(), 3);
    }

    #[test]
    fn bad_and_duplicate_lines_name_file_and_line() {
        let err = Nodes::parse("192.0.2.1\nnode-b\n", Path::new("/etc/n")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "nodes file /etc/n line 2: \"node-b\" is not an IP address"
        );
        let err = Nodes::parse("192.0.2.1\n192.0.2.1\n", Path::new("n")).unwrap_err();
        assert!(matches!(
            err,
            NodesError::Duplicate {
                line: 2,
                first: 0,
                ..
            }
        ));
    }
}
