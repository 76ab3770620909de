//! The CTDB-format `nodes` file: which nodes make up the cluster, and which
//! one is this node. The one reader of the file: transportd, clusterd,
//! conntrackd, masterd and the CLI all use it, so they agree on every file.
//!
//! Format, as CTDB reads it (`ctdb/conf/node.c`): one private address (IPv4
//! or IPv6) per line; leading and trailing blanks are stripped; blank lines
//! are skipped and do **not** count; a line whose first non-blank character
//! is `#` is a deleted node's placeholder and **does** count, so commenting
//! a node out keeps the numbering of later nodes. A node's PNN is the index
//! of its line among the non-blank lines. Line ends `\n` or `\r\n`.
//!
//! Stricter than CTDB, each refusal naming `FILE:LINE`: anything after the
//! address on its line, an address that is not unicast (`0.0.0.0`, `::`,
//! multicast, broadcast), the same node twice (an IPv4-mapped IPv6 address
//! is the same node as its IPv4 address), a file without any live node, more
//! than [`MAX_NODES`] entries, and the text checks of [`crate::text`].
//!
//! Parsing is pure: [`NodesFile::parse`] takes the text and a name for error
//! messages; [`NodesFile::own_pnn`] takes the local addresses from the
//! caller.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::text::{self, TextError};

/// A node's number (CTDB's PNN): its line in the nodes file. The one
/// definition: transport, conntrackd and ipalloc re-export it.
pub type Pnn = u32;

/// The most entries (deleted ones included) a nodes file may have (leader
/// support is tracked in fixed-size sets; CTDB clusters are far smaller in
/// practice).
pub const MAX_NODES: usize = 256;

/// Errors reading a nodes file or finding this node in it.
#[derive(Debug, thiserror::Error)]
pub enum NodesError {
    /// Not acceptable text (unreadable, binary, bad line ends...).
    #[error(transparent)]
    Text(#[from] TextError),
    /// A line is neither blank, a `#` placeholder, nor one IP address.
    #[error("{}:{line}: bad node address {text:?} (expected one IPv4 or IPv6 address)", file.display())]
    BadAddress {
        /// The file.
        file: PathBuf,
        /// 1-based line number in the file.
        line: usize,
        /// The stripped line.
        text: String,
    },
    /// An address that cannot be a node's (unspecified, multicast,
    /// broadcast).
    #[error("{}:{line}: node address {address} is not a unicast address", file.display())]
    NotUnicast {
        /// The file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The address.
        address: IpAddr,
    },
    /// The same address appears twice.
    #[error("{}:{line}: duplicate node address {address} (already on line {first_line})", file.display())]
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
    #[error("{}:1: no node address in the nodes file (only blank lines and #deleted entries)", file.display())]
    Empty {
        /// The file.
        file: PathBuf,
    },
    /// More entries than [`MAX_NODES`].
    #[error("{}:{line}: more than {max} nodes", file.display())]
    TooMany {
        /// The file.
        file: PathBuf,
        /// The line of the first entry over the limit.
        line: usize,
        /// The limit.
        max: usize,
    },
    /// None of the local addresses is in the file.
    #[error("{}:1: none of this host's addresses ({local}) is a node address; set [cluster] pnn in ipfailover.toml or fix the file", file.display())]
    NoLocalMatch {
        /// The file.
        file: PathBuf,
        /// The local addresses tried, comma-separated.
        local: String,
    },
    /// Local addresses match more than one node.
    #[error("{}:{}: this host's addresses match several nodes (lines {}); set [cluster] pnn in ipfailover.toml", file.display(), lines.first().copied().unwrap_or(1), join(lines))]
    SeveralLocalMatches {
        /// The file.
        file: PathBuf,
        /// 1-based line numbers of the matching nodes.
        lines: Vec<usize>,
    },
    /// A PNN that is not a live node of the file.
    #[error("{}:1: PNN {pnn} is not a node of this file ({count} entries, numbered from 0; #deleted entries cannot run)", file.display())]
    BadPnn {
        /// The file.
        file: PathBuf,
        /// The PNN asked for.
        pnn: Pnn,
        /// Entries in the file (placeholders included).
        count: usize,
    },
}

fn join(lines: &[usize]) -> String {
    lines
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
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
}

/// A parsed nodes file (empty only when built with `default()`, for a
/// transport without peers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodesFile {
    /// Name used in error messages (the path).
    pub file: PathBuf,
    /// Entries in PNN order (`nodes[i].pnn == i`).
    pub nodes: Vec<NodeEntry>,
}

impl NodesFile {
    /// Reads and parses a nodes file.
    ///
    /// # Errors
    ///
    /// [`NodesError::Text`] if it cannot be read or is not text, else as
    /// [`NodesFile::parse`].
    pub fn load(path: &Path) -> Result<Self, NodesError> {
        let text = text::read(path)?;
        Self::parse(path, &text)
    }

    /// Parses the text of a nodes file; `file` names it in errors.
    ///
    /// # Errors
    ///
    /// The first problem of the file, with file and line (see the module
    /// doc).
    pub fn parse(file: &Path, text: &str) -> Result<Self, NodesError> {
        let mut nodes: Vec<NodeEntry> = Vec::new();
        for (line, raw) in text::lines(text, file)? {
            let stripped = raw.trim();
            if stripped.is_empty() {
                continue;
            }
            if nodes.len() >= MAX_NODES {
                return Err(NodesError::TooMany {
                    file: file.to_path_buf(),
                    line,
                    max: MAX_NODES,
                });
            }
            let pnn = Pnn::try_from(nodes.len()).expect("MAX_NODES fits a PNN");
            let address = if stripped.starts_with('#') {
                None
            } else {
                let address: IpAddr = stripped.parse().map_err(|_| NodesError::BadAddress {
                    file: file.to_path_buf(),
                    line,
                    text: stripped.to_string(),
                })?;
                if !is_unicast(address) {
                    return Err(NodesError::NotUnicast {
                        file: file.to_path_buf(),
                        line,
                        address,
                    });
                }
                let key = canonical(address);
                if let Some(first) = nodes.iter().find(|n| n.address.map(canonical) == Some(key)) {
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

    /// A node list from addresses, `None` for deleted nodes (tests,
    /// command-line setups); not checked.
    #[must_use]
    pub fn from_addrs(addrs: Vec<Option<IpAddr>>) -> Self {
        let nodes = addrs
            .into_iter()
            .enumerate()
            .map_while(|(i, address)| {
                Some(NodeEntry {
                    pnn: Pnn::try_from(i).ok()?,
                    address,
                    line: i + 1,
                })
            })
            .collect();
        Self {
            file: PathBuf::new(),
            nodes,
        }
    }

    /// Number of entries, deleted placeholders included (CTDB's "Number of
    /// nodes").
    #[must_use]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True if there are no entries (never for a parsed file).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The address of node `pnn`, if it exists and is not deleted.
    #[must_use]
    pub fn addr(&self, pnn: Pnn) -> Option<IpAddr> {
        usize::try_from(pnn)
            .ok()
            .and_then(|i| self.nodes.get(i))
            .and_then(|n| n.address)
    }

    /// Is `pnn` a live (not deleted) node of the file?
    #[must_use]
    pub fn is_live(&self, pnn: Pnn) -> bool {
        self.addr(pnn).is_some()
    }

    /// The PNN whose address is `addr` (an IPv4-mapped IPv6 address, as an
    /// IPv6 socket reports an IPv4 peer, matches its IPv4 address).
    #[must_use]
    pub fn pnn_of(&self, addr: IpAddr) -> Option<Pnn> {
        let addr = canonical(addr);
        self.iter()
            .find(|(_, a)| canonical(*a) == addr)
            .map(|(p, _)| p)
    }

    /// Live (not deleted) nodes as `(pnn, address)`, by PNN.
    pub fn iter(&self) -> impl Iterator<Item = (Pnn, IpAddr)> + '_ {
        self.nodes
            .iter()
            .filter_map(|n| n.address.map(|a| (n.pnn, a)))
    }

    /// Number of configured (non-deleted) nodes: the base of the majority.
    #[must_use]
    pub fn configured(&self) -> usize {
        self.nodes.iter().filter(|n| !n.is_deleted()).count()
    }

    /// This node's PNN: `explicit` if given (checked), else the one node
    /// whose address is among `local` (the host's addresses, given by the
    /// caller).
    ///
    /// # Errors
    ///
    /// [`NodesError::BadPnn`] for an explicit PNN out of range or deleted,
    /// [`NodesError::NoLocalMatch`] or [`NodesError::SeveralLocalMatches`].
    pub fn own_pnn(&self, explicit: Option<Pnn>, local: &[IpAddr]) -> Result<Pnn, NodesError> {
        if let Some(pnn) = explicit {
            if !self.is_live(pnn) {
                return Err(NodesError::BadPnn {
                    file: self.file.clone(),
                    pnn,
                    count: self.nodes.len(),
                });
            }
            return Ok(pnn);
        }
        let local: Vec<IpAddr> = local.iter().copied().map(canonical).collect();
        let matches: Vec<&NodeEntry> = self
            .nodes
            .iter()
            .filter(|n| n.address.is_some_and(|a| local.contains(&canonical(a))))
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
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// Can `addr` be a host's own address?
pub(crate) fn is_unicast(addr: IpAddr) -> bool {
    match canonical(addr) {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_multicast() || a.is_broadcast()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast()),
    }
}

/// Why a running node list may not be replaced by another (`ctdb
/// reloadnodes`' rules): entries are never removed from the end, and a
/// node keeps its address; a node may only be added at the end, deleted
/// (`#`) or undeleted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    /// The new list is shorter: node `pnn` would vanish.
    #[error("Node {pnn} ({address}) missing from nodes file")]
    Missing {
        /// The node.
        pnn: Pnn,
        /// Its running address (`deleted` for a deleted entry).
        address: String,
    },
    /// A live node's address changed in place.
    #[error("Node {pnn} has changed IP address (was {was}, now {now})")]
    ChangedAddress {
        /// The node.
        pnn: Pnn,
        /// Its running address.
        was: IpAddr,
        /// The file's.
        now: IpAddr,
    },
}

impl NodesFile {
    /// The addresses in PNN order, `None` for deleted entries (the form
    /// the daemons exchange).
    #[must_use]
    pub fn addrs(&self) -> Vec<Option<IpAddr>> {
        self.nodes.iter().map(|n| n.address).collect()
    }

    /// Checks that this running list may become `new` (see
    /// [`ReloadError`]); whether a deleted node is disconnected is the
    /// caller's to check.
    ///
    /// # Errors
    ///
    /// Every problem, in PNN order.
    pub fn check_reload(&self, new: &NodesFile) -> Result<(), Vec<ReloadError>> {
        let mut errors = Vec::new();
        for (i, old) in self.nodes.iter().enumerate() {
            match (old.address, new.nodes.get(i).map(|n| n.address)) {
                (was, None) => errors.push(ReloadError::Missing {
                    pnn: old.pnn,
                    address: was.map_or_else(|| "deleted".to_string(), |a| a.to_string()),
                }),
                (Some(was), Some(Some(now))) if canonical(was) != canonical(now) => {
                    errors.push(ReloadError::ChangedAddress {
                        pnn: old.pnn,
                        was,
                        now,
                    });
                }
                _ => {}
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
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
        assert!(f.nodes[1].is_deleted());
        assert_eq!(f.nodes[2].address.unwrap().to_string(), "192.0.2.3");
        assert_eq!(f.nodes[2].pnn, 2);
        assert_eq!(f.nodes[2].line, 5);
        assert_eq!(f.configured(), 2);
        assert_eq!(f.addr(1), None);
        assert_eq!(f.pnn_of("::ffff:192.0.2.3".parse().unwrap()), Some(2));
        assert_eq!(f.iter().count(), 2);
    }

    #[test]
    fn crlf_line_ends_are_accepted() {
        let f = parse("192.0.2.1\r\n#192.0.2.2\r\n\r\n192.0.2.3\r\n").unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(f.nodes[2].line, 4);
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
        let e = parse("192.0.2.1\n0.0.0.0\n").unwrap_err();
        assert!(matches!(e, NodesError::NotUnicast { line: 2, .. }), "{e:?}");
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
        let e = parse("192.0.2.1\n::ffff:192.0.2.1\n").unwrap_err();
        assert!(matches!(e, NodesError::Duplicate { line: 2, .. }), "{e:?}");
    }

    #[test]
    fn empty_all_deleted_and_too_many_are_errors() {
        assert!(matches!(parse("").unwrap_err(), NodesError::Empty { .. }));
        assert!(matches!(
            parse("\n#192.0.2.1\n").unwrap_err(),
            NodesError::Empty { .. }
        ));
        let many: String = (0..=MAX_NODES)
            .map(|i| format!("2001:db8::{:x}\n", i + 1))
            .collect();
        let e = parse(&many).unwrap_err();
        assert!(matches!(e, NodesError::TooMany { line: 257, .. }), "{e:?}");
        let ok: String = (0..MAX_NODES)
            .map(|i| format!("2001:db8::{:x}\n", i + 1))
            .collect();
        assert_eq!(parse(&ok).unwrap().len(), MAX_NODES);
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
        assert!(
            e.to_string().starts_with("/etc/ipfailover/nodes:1: "),
            "{e}"
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
    fn read_missing_file_is_a_text_error_naming_the_file() {
        let e = NodesFile::load(Path::new("/nonexistent/ipfailover/nodes")).unwrap_err();
        assert!(
            matches!(e, NodesError::Text(ref t) if t.is_not_found()),
            "{e:?}"
        );
        assert!(e
            .to_string()
            .starts_with("/nonexistent/ipfailover/nodes:1: cannot read"));
    }

    #[test]
    fn reload_allows_adding_deleting_and_undeleting_only() {
        let f = |t: &str| NodesFile::parse(Path::new("nodes"), t).unwrap();
        let old = f("192.0.2.1\n192.0.2.2\n#\n");
        assert_eq!(
            old.check_reload(&f("192.0.2.1\n#192.0.2.2\n192.0.2.3\n192.0.2.4\n")),
            Ok(())
        );
        assert_eq!(old.check_reload(&old), Ok(()));
        assert_eq!(
            old.check_reload(&f("192.0.2.1\n192.0.2.9\n#\n")),
            Err(vec![ReloadError::ChangedAddress {
                pnn: 1,
                was: "192.0.2.2".parse().unwrap(),
                now: "192.0.2.9".parse().unwrap(),
            }])
        );
        let short = old.check_reload(&f("192.0.2.1\n")).unwrap_err();
        assert_eq!(
            short.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "Node 1 (192.0.2.2) missing from nodes file",
                "Node 2 (deleted) missing from nodes file"
            ]
        );
    }
}
