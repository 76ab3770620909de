//! The CTDB `public_addresses` file: the public IPs this node may host, one
//! per line as `ADDRESS/PREFIX IFACE[,IFACE...]`. The one reader of the
//! file: failoverd (at start and on `reloadips`), masterd and the CLI use it.
//!
//! Rules (CTDB `ctdb_set_public_addresses`): leading blanks are skipped; a
//! line whose first non-blank character is `#` is a comment; blank lines are
//! skipped; fields are separated by spaces or tabs; the interface list is
//! required; the same address may not appear twice. Interfaces are kept in
//! file order (the first usable one is preferred). IPv4 and IPv6. Line ends
//! `\n` or `\r\n`.
//!
//! Stricter than CTDB, so mistakes are caught instead of guessed at: a
//! prefix that is not plain digits or is out of range (or 0), an address
//! that is not unicast, an interface name the kernel would refuse (longer
//! than 15 bytes, `.`, `..`, or containing `/` or `:`), an empty interface
//! list (`,`), any extra field other than a trailing `# comment`, and the
//! text checks of [`crate::text`], each naming the file and line. Whether an
//! interface exists is not checked here: one may appear later (a bond, a
//! VLAN), and failoverd treats a missing one as down.
//!
//! [`parse`] is pure (text in, entries out); [`load`] is the thin file
//! reader; [`diff`] compares two parsed files for `reloadips`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::text::{self, TextError};

/// Longest Linux interface name (IFNAMSIZ - 1).
pub const MAX_IFACE_LEN: usize = 15;

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PublicAddress {
    /// The public address.
    pub addr: IpAddr,
    /// Its prefix length (the netmask bits passed to event scripts).
    pub prefix: u8,
    /// The interfaces that may carry it, best first.
    pub ifaces: Vec<String>,
}

impl fmt::Display for PublicAddress {
    /// The file's own format: `ADDRESS/PREFIX IFACE[,IFACE...]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} {}", self.addr, self.prefix, self.ifaces.join(","))
    }
}

/// What is wrong with a public_addresses line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// The address part does not parse.
    #[error("bad address '{0}'")]
    BadAddress(String),
    /// An address no host may have (unspecified, multicast, broadcast).
    #[error("{0} is not a unicast address")]
    NotUnicast(IpAddr),
    /// No `/PREFIX`.
    #[error("'{0}' has no /PREFIX")]
    MissingPrefix(String),
    /// Prefix not a number or out of range.
    #[error("bad prefix '{prefix}' for {addr} (expected 1-{max})")]
    BadPrefix {
        /// The address.
        addr: IpAddr,
        /// The prefix text.
        prefix: String,
        /// 32 or 128.
        max: u8,
    },
    /// No interface column.
    #[error("missing interface list after {0}")]
    MissingInterface(String),
    /// An interface name that cannot exist.
    #[error("bad interface name '{0}' (1-15 bytes, not '.' or '..', no '/' or ':')")]
    BadInterface(String),
    /// The interface column has no names (`,`).
    #[error("empty interface list '{0}'")]
    EmptyInterfaceList(String),
    /// Something after the interface list.
    #[error("unexpected '{0}' after the interface list")]
    ExtraField(String),
    /// The address was already given.
    #[error("address {addr} already given on line {first}")]
    Duplicate {
        /// The address.
        addr: IpAddr,
        /// Line of the first occurrence.
        first: usize,
    },
}

/// A public_addresses file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PublicAddressesError {
    /// A bad line.
    #[error("{}:{line}: {source}", file.display())]
    Line {
        /// The file (or a label for text that did not come from a file).
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        #[source]
        source: LineError,
    },
    /// Not acceptable text (unreadable, binary, bad line ends...).
    #[error(transparent)]
    Text(#[from] TextError),
}

impl PublicAddressesError {
    /// True when the file does not exist (a node without the file hosts no
    /// public address, as in CTDB).
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(self, PublicAddressesError::Text(t) if t.is_not_found())
    }
}

fn parse_line(text: &str) -> Result<Option<PublicAddress>, LineError> {
    let line = text.trim_start_matches([' ', '\t']);
    if line.starts_with('#') {
        return Ok(None);
    }
    let mut fields = line.split([' ', '\t']).filter(|f| !f.is_empty());
    let Some(first) = fields.next() else {
        return Ok(None);
    };
    let (a, prefix) = first
        .split_once('/')
        .ok_or_else(|| LineError::MissingPrefix(first.to_string()))?;
    let addr: IpAddr = a
        .parse()
        .map_err(|_| LineError::BadAddress(a.to_string()))?;
    if !crate::nodes::is_unicast(addr) {
        return Err(LineError::NotUnicast(addr));
    }
    let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let prefix_n: u8 = Some(prefix)
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|p| p.parse().ok())
        .filter(|p| (1..=max).contains(p))
        .ok_or_else(|| LineError::BadPrefix {
            addr,
            prefix: prefix.to_string(),
            max,
        })?;
    let iface_field = fields
        .next()
        .filter(|f| !f.starts_with('#'))
        .ok_or_else(|| LineError::MissingInterface(first.to_string()))?;
    let mut ifaces = Vec::new();
    for name in iface_field.split(',').filter(|n| !n.is_empty()) {
        if name.len() > MAX_IFACE_LEN || name == "." || name == ".." || name.contains(['/', ':']) {
            return Err(LineError::BadInterface(name.to_string()));
        }
        ifaces.push(name.to_string());
    }
    if ifaces.is_empty() {
        return Err(LineError::EmptyInterfaceList(iface_field.to_string()));
    }
    if let Some(extra) = fields.next() {
        if !extra.starts_with('#') {
            return Err(LineError::ExtraField(extra.to_string()));
        }
    }
    Ok(Some(PublicAddress {
        addr,
        prefix: prefix_n,
        ifaces,
    }))
}

/// Parses the text of a public_addresses file. `file` only labels errors.
///
/// # Errors
///
/// [`PublicAddressesError::Line`] for the first bad line, with its number,
/// or [`PublicAddressesError::Text`].
pub fn parse(text: &str, file: &Path) -> Result<Vec<PublicAddress>, PublicAddressesError> {
    let mut out: Vec<PublicAddress> = Vec::new();
    let mut first_line: BTreeMap<IpAddr, usize> = BTreeMap::new();
    for (line, raw) in text::lines(text, file)? {
        let err = |source| PublicAddressesError::Line {
            file: file.to_path_buf(),
            line,
            source,
        };
        let Some(entry) = parse_line(raw).map_err(err)? else {
            continue;
        };
        if let Some(&first) = first_line.get(&entry.addr) {
            return Err(err(LineError::Duplicate {
                addr: entry.addr,
                first,
            }));
        }
        first_line.insert(entry.addr, line);
        out.push(entry);
    }
    Ok(out)
}

/// Reads and parses a public_addresses file. A missing file is an error
/// here ([`PublicAddressesError::is_not_found`]); the caller decides
/// whether that means "no public IPs" (CTDB warns and carries on).
///
/// # Errors
///
/// [`PublicAddressesError::Text`] or [`PublicAddressesError::Line`].
pub fn load(path: &Path) -> Result<Vec<PublicAddress>, PublicAddressesError> {
    let text = text::read(path)?;
    parse(&text, path)
}

/// An address whose line changed between two versions of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// The old line.
    pub old: PublicAddress,
    /// The new line.
    pub new: PublicAddress,
}

/// What `reloadips` has to do: the difference between two versions of the
/// file, each list sorted by address.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diff {
    /// Addresses only in the new file.
    pub added: Vec<PublicAddress>,
    /// Addresses only in the old file.
    pub removed: Vec<PublicAddress>,
    /// Addresses in both whose prefix or interface list (order included)
    /// changed. CTDB treats these as remove + add; the caller may too.
    pub changed: Vec<Changed>,
}

impl Diff {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Compares two parsed files (pure).
pub fn diff(old: &[PublicAddress], new: &[PublicAddress]) -> Diff {
    let old_map: BTreeMap<IpAddr, &PublicAddress> = old.iter().map(|e| (e.addr, e)).collect();
    let new_map: BTreeMap<IpAddr, &PublicAddress> = new.iter().map(|e| (e.addr, e)).collect();
    let mut d = Diff::default();
    for (addr, &n) in &new_map {
        match old_map.get(addr) {
            None => d.added.push(n.clone()),
            Some(&o) if o != n => d.changed.push(Changed {
                old: o.clone(),
                new: n.clone(),
            }),
            Some(_) => {}
        }
    }
    for (addr, &o) in &old_map {
        if !new_map.contains_key(addr) {
            d.removed.push(o.clone());
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Vec<PublicAddress>, PublicAddressesError> {
        parse(text, Path::new("public_addresses"))
    }

    fn line_err(text: &str) -> (usize, LineError) {
        match p(text) {
            Err(PublicAddressesError::Line { line, source, .. }) => (line, source),
            other => panic!("expected a line error, got {other:?}"),
        }
    }

    #[test]
    fn parses_ipv4_ipv6_comments_blanks_and_interface_lists() {
        let text = "# public addresses\n\n  192.0.2.10/24 eth0\n\t2001:db8::10/64\teth1,eth2 # second\n   \n   # indented comment\n198.51.100.7/32 bond0,\n";
        let got = p(text).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].addr, "192.0.2.10".parse::<IpAddr>().unwrap());
        assert_eq!(got[0].prefix, 24);
        assert_eq!(got[0].ifaces, vec!["eth0"]);
        assert_eq!(got[1].addr, "2001:db8::10".parse::<IpAddr>().unwrap());
        assert_eq!(got[1].prefix, 64);
        assert_eq!(got[1].ifaces, vec!["eth1", "eth2"]);
        assert_eq!(got[2].ifaces, vec!["bond0"]);
        assert_eq!(got[1].to_string(), "2001:db8::10/64 eth1,eth2");
    }

    #[test]
    fn empty_file_has_no_addresses() {
        assert!(p("").unwrap().is_empty());
        assert!(p("# nothing\n\n").unwrap().is_empty());
    }

    #[test]
    fn missing_interface_is_an_error_with_line() {
        let (line, e) = line_err("192.0.2.1/24 eth0\n192.0.2.2/24\n");
        assert_eq!(line, 2);
        assert_eq!(e, LineError::MissingInterface("192.0.2.2/24".into()));
        let (_, e) = line_err("192.0.2.2/24 # no iface\n");
        assert!(matches!(e, LineError::MissingInterface(_)));
    }

    #[test]
    fn bad_address_and_prefix_are_errors() {
        assert!(matches!(
            line_err("192.0.2.300/24 eth0").1,
            LineError::BadAddress(_)
        ));
        assert!(matches!(
            line_err("192.0.2.3 eth0").1,
            LineError::MissingPrefix(_)
        ));
        assert!(matches!(
            line_err("192.0.2.3/33 eth0").1,
            LineError::BadPrefix { max: 32, .. }
        ));
        assert!(matches!(
            line_err("192.0.2.3/0 eth0").1,
            LineError::BadPrefix { .. }
        ));
        assert!(matches!(
            line_err("192.0.2.3/x eth0").1,
            LineError::BadPrefix { .. }
        ));
        assert!(matches!(
            line_err("2001:db8::1/129 eth0").1,
            LineError::BadPrefix { max: 128, .. }
        ));
        assert!(p("2001:db8::1/128 eth0").is_ok());
        assert!(matches!(
            line_err("192.0.2.3/+24 eth0").1,
            LineError::BadPrefix { .. }
        ));
        assert!(matches!(
            line_err("224.0.0.1/24 eth0").1,
            LineError::NotUnicast(_)
        ));
    }

    #[test]
    fn crlf_line_ends_are_accepted() {
        let got = p("192.0.2.1/24 eth0\r\n\r\n192.0.2.2/24 eth0,eth1\r\n").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].ifaces, vec!["eth0", "eth1"]);
        let (line, _) = line_err("192.0.2.1/24 eth0\r\n192.0.2.2/24\r\n");
        assert_eq!(line, 2);
    }

    #[test]
    fn bad_interfaces_and_extra_fields_are_errors() {
        assert!(matches!(
            line_err("192.0.2.3/24 ,").1,
            LineError::EmptyInterfaceList(_)
        ));
        assert!(matches!(
            line_err("192.0.2.3/24 averyveryverylongname").1,
            LineError::BadInterface(_)
        ));
        assert!(matches!(
            line_err("192.0.2.3/24 eth0 eth1").1,
            LineError::ExtraField(_)
        ));
        for bad in ["eth0:1", "..", "a/b"] {
            assert!(matches!(
                line_err(&format!("192.0.2.3/24 {bad}")).1,
                LineError::BadInterface(_)
            ));
        }
    }

    #[test]
    fn duplicate_address_names_both_lines() {
        let (line, e) = line_err("192.0.2.1/24 eth0\n# x\n192.0.2.1/25 eth1\n");
        assert_eq!(line, 3);
        assert_eq!(
            e,
            LineError::Duplicate {
                addr: "192.0.2.1".parse().unwrap(),
                first: 1
            }
        );
        let msg = p("192.0.2.1/24 eth0\n192.0.2.1/24 eth0\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "public_addresses:2: address 192.0.2.1 already given on line 1"
        );
    }

    #[test]
    fn load_reports_missing_file() {
        let e = load(Path::new("/nonexistent/ipfailover/public_addresses")).unwrap_err();
        assert!(e.is_not_found(), "{e:?}");
        assert!(e
            .to_string()
            .contains("/nonexistent/ipfailover/public_addresses"));
    }

    #[test]
    fn diff_finds_added_removed_and_changed() {
        let old = p("192.0.2.1/24 eth0\n192.0.2.2/24 eth0\n192.0.2.3/24 eth0,eth1\n").unwrap();
        let new = p("192.0.2.3/24 eth1,eth0\n192.0.2.2/24 eth0\n192.0.2.4/24 eth0\n").unwrap();
        let d = diff(&old, &new);
        assert_eq!(d.added.len(), 1);
        assert_eq!(d.added[0].addr.to_string(), "192.0.2.4");
        assert_eq!(d.removed.len(), 1);
        assert_eq!(d.removed[0].addr.to_string(), "192.0.2.1");
        assert_eq!(d.changed.len(), 1);
        assert_eq!(d.changed[0].old.ifaces, vec!["eth0", "eth1"]);
        assert_eq!(d.changed[0].new.ifaces, vec!["eth1", "eth0"]);
        assert!(diff(&old, &old).is_empty());
        assert!(!d.is_empty());
    }
}
