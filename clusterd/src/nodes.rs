//! The CTDB-format nodes file: which nodes make up the cluster, and which one
//! is this node.
//!
//! Format, exactly as CTDB reads it (`ctdb/conf/node.c`): one private address
//! (IPv4 or IPv6) per line; leading and trailing blanks are stripped; blank
//! lines are skipped and do **not** count; a line whose first non-blank
//! character is `#` is a deleted node's placeholder and **does** count, so
//! commenting a node out keeps the numbering of later nodes. A node's PNN is
//! the index of its line among the non-blank lines.
//!
//! Parsing is pure: [`NodesFile::parse`] takes the text and a name for error
//! messages; [`NodesFile::own_pnn`] takes the local addresses from the caller.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::flags::NodeFlags;

/// A node's number: its line's index among the non-blank lines (defined in
/// [`transport::msg::cluster`]).
pub use transport::msg::cluster::Pnn;

/// Errors reading a nodes file or finding this node in it.
#[derive(Debug, thiserror::Error)]
pub enum NodesError {
    /// The file could not be read.
    #[error("{file}: cannot read nodes file")]
    Io {
        /// The file.
        file: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line is neither blank, a `#` placeholder, nor one IP address.
    #[error("{file}:{line}: bad node address {text:?} (expected one IPv4 or IPv6 address)")]
    BadAddress {
        /// The file.
        file: PathBuf,
        /// 1-based line number in the file.
        line: usize,
        /// The stripped line.
        text: String,
    },
    /// The same address appears twice.
    #[error("{file}:{line}: duplicate node address {address} (already on line {first_line})")]
    Duplicate {
        /// The file.
        file: PathBuf,
        /// 1-based line number of the second occurrence.
        line: usize,
        /// 1-based line number of the first occurrence.
        first_line: usize,
        /// The address.
        address: IpAddr,
    },
    /// No node (only blank lines and placeholders).
    #[error("{file}: no node address in the nodes file")]
    Empty {
        /// The file.
        file: PathBuf,
    },
    /// More nodes than clusterd supports.
    #[error("{file}: {count} nodes, at most {max} are supported")]
    TooMany {
        /// The file.
        file: PathBuf,
        /// Nodes in the file (placeholders included).
        count: usize,
        /// The limit.
        max: usize,
    },
    /// None of the local addresses is in the file.
    #[error("{file}: none of this host's addresses ({local}) is a node address; set the PNN explicitly or fix the file")]
    NoLocalMatch {
        /// The file.
        file: PathBuf,
        /// The local addresses tried, comma-separated.
        local: String,
    },
    /// Local addresses match more than one node.
    #[error("{file}: this host's addresses match several nodes (lines {lines:?}); set the PNN explicitly")]
    SeveralLocalMatches {
        /// The file.
        file: PathBuf,
        /// 1-based line numbers of the matching nodes.
        lines: Vec<usize>,
    },
    /// An explicit PNN that is not a live node of the file.
    #[error(
        "{file}: PNN {pnn} is not a node of this file ({count} nodes; deleted nodes cannot run)"
    )]
    BadPnn {
        /// The file.
        file: PathBuf,
        /// The PNN asked for.
        pnn: Pnn,
        /// Nodes in the file (placeholders included).
        count: usize,
    },
}

/// One entry of the nodes file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEntry {
    /// The node's number.
    pub pnn: Pnn,
    /// Its private address; `None` for a deleted node (`#` placeholder).
    pub address: Option<IpAddr>,
    /// 1-based line number in the file (for error messages).
    pub line: usize,
}

impl NodeEntry {
    /// True for a commented-out (deleted) node.
    #[must_use]
    pub fn is_deleted(&self) -> bool {
        self.address.is_none()
    }

    /// The flags the file gives this node: DELETED for placeholders.
    #[must_use]
    pub fn file_flags(&self) -> NodeFlags {
        if self.is_deleted() {
            NodeFlags::DELETED
        } else {
            NodeFlags::OK
        }
    }
}

/// A parsed nodes file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodesFile {
    /// Name used in error messages (the path).
    pub file: PathBuf,
    /// Entries in PNN order (`nodes[i].pnn == i`).
    pub nodes: Vec<NodeEntry>,
}

/// The most nodes a cluster may have (leader support is tracked in `u64`-sized
/// structures elsewhere; CTDB clusters are far smaller in practice).
pub const MAX_NODES: usize = 256;

impl NodesFile {
    /// Reads and parses a nodes file.
    ///
    /// # Errors
    ///
    /// [`NodesError::Io`] if it cannot be read, else as [`NodesFile::parse`].
    pub fn read(path: &Path) -> Result<Self, NodesError> {
        let text = std::fs::read_to_string(path).map_err(|source| NodesError::Io {
            file: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses the text of a nodes file; `file` names it in errors.
    ///
    /// # Errors
    ///
    /// [`NodesError::BadAddress`], [`NodesError::Duplicate`],
    /// [`NodesError::Empty`] or [`NodesError::TooMany`], with file and line.
    pub fn parse(file: &Path, text: &str) -> Result<Self, NodesError> {
        let mut nodes: Vec<NodeEntry> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let stripped = raw.trim();
            if stripped.is_empty() {
                continue;
            }
            let pnn = Pnn::try_from(nodes.len()).map_err(|_| NodesError::TooMany {
                file: file.to_path_buf(),
                count: nodes.len(),
                max: MAX_NODES,
            })?;
            let address = if stripped.starts_with('#') {
                None
            } else {
                let address: IpAddr = stripped.parse().map_err(|_| NodesError::BadAddress {
                    file: file.to_path_buf(),
                    line,
                    text: stripped.to_string(),
                })?;
                if let Some(first) = nodes.iter().find(|n| n.address == Some(address)) {
                    return Err(NodesError::Duplicate {
                        file: file.to_path_buf(),
                        line,
                        first_line: first.line,
                        address,
                    });
                }
                Some(address)
            };
            nodes.push(NodeEntry { pnn, address, line });
        }
        if nodes.len() > MAX_NODES {
            return Err(NodesError::TooMany {
                file: file.to_path_buf(),
                count: nodes.len(),
                max: MAX_NODES,
            });
        }
        if nodes.iter().all(NodeEntry::is_deleted) {
            return Err(NodesError::Empty {
                file: file.to_path_buf(),
            });
        }
        Ok(Self {
            file: file.to_path_buf(),
            nodes,
        })
    }

    /// Number of nodes, deleted placeholders included (CTDB's "Number of nodes").
    #[must_use]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True if there are no entries (never for a parsed file).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// This node's PNN: `explicit` if given (checked), else the one node whose
    /// address is among `local` (the host's addresses, given by the caller).
    ///
    /// # Errors
    ///
    /// [`NodesError::BadPnn`] for an explicit PNN out of range or deleted,
    /// [`NodesError::NoLocalMatch`] or [`NodesError::SeveralLocalMatches`].
    pub fn own_pnn(&self, explicit: Option<Pnn>, local: &[IpAddr]) -> Result<Pnn, NodesError> {
        if let Some(pnn) = explicit {
            let live = usize::try_from(pnn)
                .ok()
                .and_then(|i| self.nodes.get(i))
                .is_some_and(|n| !n.is_deleted());
            if !live {
                return Err(NodesError::BadPnn {
                    file: self.file.clone(),
                    pnn,
                    count: self.nodes.len(),
                });
            }
            return Ok(pnn);
        }
        let matches: Vec<&NodeEntry> = self
            .nodes
            .iter()
            .filter(|n| n.address.is_some_and(|a| local.contains(&a)))
            .collect();
        match matches.as_slice() {
            [one] => Ok(one.pnn),
            [] => Err(NodesError::NoLocalMatch {
                file: self.file.clone(),
                local: local
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
            many => Err(NodesError::SeveralLocalMatches {
                file: self.file.clone(),
                lines: many.iter().map(|n| n.line).collect(),
            }),
        }
    }

    /// Number of configured (non-deleted) nodes: the base of the majority.
    #[must_use]
    pub fn configured(&self) -> usize {
        self.nodes.iter().filter(|n| !n.is_deleted()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NodesFile, NodesError> {
        NodesFile::parse(Path::new("/etc/ipfailover/nodes"), text)
    }

    fn addrs(f: &NodesFile) -> Vec<Option<String>> {
        f.nodes
            .iter()
            .map(|n| n.address.map(|a| a.to_string()))
            .collect()
    }

    #[test]
    fn plain_file_numbers_lines_from_zero() {
        let f = parse("192.0.2.1\n192.0.2.2\n2001:db8::3\n").unwrap();
        assert_eq!(
            addrs(&f),
            vec![
                Some("192.0.2.1".into()),
                Some("192.0.2.2".into()),
                Some("2001:db8::3".into())
            ]
        );
        assert_eq!(f.nodes[2].pnn, 2);
        assert_eq!(f.configured(), 3);
    }

    #[test]
    fn blank_lines_do_not_count_but_comments_do() {
        // As ctdb.listnodes: the commented line is node 1 (deleted); the
        // blank lines and surrounding blanks are ignored.
        let f = parse("\n  192.0.2.1  \n\n#192.0.2.2\n\t192.0.2.3\n\n\n").unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(f.nodes[1].address, None);
        assert_eq!(f.nodes[1].file_flags(), NodeFlags::DELETED);
        assert_eq!(f.nodes[2].address.unwrap().to_string(), "192.0.2.3");
        assert_eq!(f.nodes[2].pnn, 2);
        assert_eq!(f.nodes[2].line, 5);
        assert_eq!(f.configured(), 2);
    }

    #[test]
    fn bad_address_names_file_and_line() {
        let e = parse("192.0.2.1\n\n192.0.2.300\n").unwrap_err();
        assert!(matches!(e, NodesError::BadAddress { line: 3, .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "/etc/ipfailover/nodes:3: bad node address \"192.0.2.300\" (expected one IPv4 or IPv6 address)"
        );
        // A trailing comment is not allowed on an address line (CTDB parses
        // the whole line as the address).
        let e = parse("192.0.2.1 # node a\n").unwrap_err();
        assert!(matches!(e, NodesError::BadAddress { line: 1, .. }));
        let e = parse("node-a.example\n").unwrap_err();
        assert!(matches!(e, NodesError::BadAddress { line: 1, .. }));
    }

    #[test]
    fn duplicate_names_both_lines() {
        let e = parse("192.0.2.1\n192.0.2.2\n192.0.2.1\n").unwrap_err();
        assert!(
            matches!(
                e,
                NodesError::Duplicate {
                    line: 3,
                    first_line: 1,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e
            .to_string()
            .contains(":3: duplicate node address 192.0.2.1 (already on line 1)"));
    }

    #[test]
    fn empty_and_all_deleted_are_errors() {
        assert!(matches!(parse("").unwrap_err(), NodesError::Empty { .. }));
        assert!(matches!(
            parse("\n#192.0.2.1\n").unwrap_err(),
            NodesError::Empty { .. }
        ));
    }

    #[test]
    fn own_pnn_by_local_address() {
        let f = parse("192.0.2.1\n#192.0.2.9\n192.0.2.3\n").unwrap();
        let local: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "192.0.2.3".parse().unwrap()];
        assert_eq!(f.own_pnn(None, &local).unwrap(), 2);
        // A deleted placeholder never matches.
        let e = f
            .own_pnn(None, &["192.0.2.9".parse().unwrap()])
            .unwrap_err();
        assert!(matches!(e, NodesError::NoLocalMatch { .. }), "{e:?}");
        assert!(e.to_string().contains("192.0.2.9"));
        let both: Vec<IpAddr> = vec!["192.0.2.1".parse().unwrap(), "192.0.2.3".parse().unwrap()];
        let e = f.own_pnn(None, &both).unwrap_err();
        assert!(
            matches!(e, NodesError::SeveralLocalMatches { ref lines, .. } if lines == &[1, 3]),
            "{e:?}"
        );
    }

    #[test]
    fn explicit_pnn_is_checked() {
        let f = parse("192.0.2.1\n#192.0.2.9\n192.0.2.3\n").unwrap();
        assert_eq!(f.own_pnn(Some(0), &[]).unwrap(), 0);
        assert!(matches!(
            f.own_pnn(Some(1), &[]).unwrap_err(),
            NodesError::BadPnn { pnn: 1, .. }
        ));
        assert!(matches!(
            f.own_pnn(Some(3), &[]).unwrap_err(),
            NodesError::BadPnn { pnn: 3, .. }
        ));
    }

    proptest::proptest! {
        /// Blank lines and surrounding blanks never change the numbering;
        /// `#` lines are deleted nodes that keep their place.
        #[test]
        fn numbering_survives_blank_lines(
            entries in proptest::collection::vec((proptest::option::of(1u8..=254), 0usize..3, 0usize..3), 1..20)
        ) {
            let mut text = String::new();
            let mut want = Vec::new();
            for (k, (addr, blanks, pad)) in entries.iter().enumerate() {
                for _ in 0..*blanks {
                    text.push_str("  \n");
                }
                let pad = " ".repeat(*pad);
                match addr {
                    // Distinct addresses: the index makes them unique.
                    Some(_) => {
                        let a: IpAddr = format!("2001:db8::{:x}", k + 1).parse().unwrap();
                        text.push_str(&format!("{pad}{a}{pad}\n"));
                        want.push(Some(a));
                    }
                    None => {
                        text.push_str(&format!("{pad}#192.0.2.{k}\n"));
                        want.push(None);
                    }
                }
            }
            match parse(&text) {
                Ok(f) => {
                    let got: Vec<Option<IpAddr>> = f.nodes.iter().map(|n| n.address).collect();
                    proptest::prop_assert_eq!(got, want);
                    for (i, n) in f.nodes.iter().enumerate() {
                        proptest::prop_assert_eq!(n.pnn as usize, i);
                    }
                }
                Err(NodesError::Empty { .. }) => proptest::prop_assert!(want.iter().all(Option::is_none)),
                Err(e) => proptest::prop_assert!(false, "unexpected error {e}"),
            }
        }
    }

    #[test]
    fn read_missing_file_is_io_error() {
        let e = NodesFile::read(Path::new("/nonexistent/ipfailover/nodes")).unwrap_err();
        assert!(matches!(e, NodesError::Io { .. }));
        assert!(e.to_string().starts_with("/nonexistent/ipfailover/nodes"));
    }
}
