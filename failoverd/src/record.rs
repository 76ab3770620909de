//! The record of the public addresses this node configured, kept in the run
//! directory (`<run_dir>/failoverd.hosted`) so that a failoverd restarted
//! after a crash knows which addresses in the kernel are its own and since
//! when.
//!
//! Why: a crashed failoverd leaves its addresses configured. If the node's
//! lease lapsed while failoverd was down, the leader may have given them to
//! another node; adopting them again would keep them on two nodes until the
//! next takeover run. An address may be adopted only when the node's lease
//! has been valid without a break since the address was configured: then
//! the leader cannot have given it away (it needs this node's release or
//! the lapse of its lease). clusterd publishes when the current unbroken
//! lease began (`Lease::since_ns`); this record gives when each address was
//! configured, both on `CLOCK_MONOTONIC`. The time recorded is taken before
//! the kernel request, so it is never later than the real one.
//!
//! Format (text, rewritten whole through a temporary file and a rename on
//! every change of the hosted set):
//!
//! ```text
//! # ipfailover failoverd: public addresses configured on this node
//! boot 5f1c2d7e-...
//! 198.51.100.201 81234567890123
//! ```
//!
//! The `boot` line (the kernel's boot id) makes a record from before a
//! reboot worthless: the monotonic clock restarted with the machine. The
//! rule is pure ([`adoptable`]), the rest is file handling.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

/// The file name inside the run directory.
pub const FILE_NAME: &str = "failoverd.hosted";

/// What a record holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// The kernel's boot id when it was written.
    pub boot_id: String,
    /// Address → when it was configured (`CLOCK_MONOTONIC` ns).
    pub entries: BTreeMap<IpAddr, u64>,
}

/// A line of a record that makes no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct RecordError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

impl Record {
    /// The text of the record.
    #[must_use]
    pub fn to_text(&self) -> String {
        let mut out =
            String::from("# ipfailover failoverd: public addresses configured on this node\n");
        out.push_str(&format!("boot {}\n", self.boot_id));
        for (addr, at) in &self.entries {
            out.push_str(&format!("{addr} {at}\n"));
        }
        out
    }

    /// Parses a record.
    ///
    /// # Errors
    ///
    /// The first bad line.
    pub fn parse(text: &str) -> Result<Record, RecordError> {
        let mut r = Record::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: &str| RecordError {
                line: i + 1,
                reason: format!("{reason}: {line:?}"),
            };
            let mut words = line.split_whitespace();
            let (Some(first), Some(second), None) = (words.next(), words.next(), words.next())
            else {
                return Err(bad("expected two words"));
            };
            if first == "boot" {
                r.boot_id = second.to_owned();
                continue;
            }
            let addr: IpAddr = first.parse().map_err(|_| bad("bad address"))?;
            let at: u64 = second.parse().map_err(|_| bad("bad time"))?;
            r.entries.insert(addr, at);
        }
        Ok(r)
    }
}

/// The kernel's boot id (empty when it cannot be read: then no record is
/// ever trusted).
#[must_use]
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The record at `path`: `None` when there is none or it is unreadable or
/// malformed (logged: then nothing is adopted, which is safe).
#[must_use]
pub fn load(path: &Path) -> Option<Record> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the record of configured addresses");
            return None;
        }
    };
    match Record::parse(&text) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "bad record of configured addresses: ignored");
            None
        }
    }
}

/// Writes `record` to `path` atomically (temporary file, then rename).
///
/// # Errors
///
/// The I/O error, with the file named by the caller.
pub fn store(path: &Path, record: &Record) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(record.to_text().as_bytes())?;
    f.sync_data()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// The recorded addresses that may be adopted: written in this boot, and
/// configured no earlier than `lease_since_ns`, the start of the node's
/// current unbroken lease (`None`: no valid lease, nothing may be adopted).
#[must_use]
pub fn adoptable(
    record: Option<&Record>,
    boot_id: &str,
    lease_since_ns: Option<u64>,
) -> BTreeMap<IpAddr, u64> {
    let (Some(r), Some(since)) = (record, lease_since_ns) else {
        return BTreeMap::new();
    };
    if boot_id.is_empty() || r.boot_id != boot_id {
        return BTreeMap::new();
    }
    r.entries
        .iter()
        .filter(|(_, at)| **at >= since)
        .map(|(a, at)| (*a, *at))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn record() -> Record {
        Record {
            boot_id: "b00t".into(),
            entries: BTreeMap::from([(ip("198.51.100.201"), 1_000), (ip("2001:db8::5"), 5_000)]),
        }
    }

    #[test]
    fn text_round_trips() {
        let r = record();
        assert_eq!(Record::parse(&r.to_text()).unwrap(), r);
    }

    #[test]
    fn bad_lines_name_their_line() {
        let e = Record::parse("# x\nboot b\n198.51.100.1 12\nnot-an-ip 3\n").unwrap_err();
        assert_eq!(e.line, 4);
        assert!(e.reason.contains("bad address"), "{e}");
        assert_eq!(Record::parse("198.51.100.1 soon\n").unwrap_err().line, 1);
        assert_eq!(Record::parse("198.51.100.1\n").unwrap_err().line, 1);
    }

    #[test]
    fn only_addresses_configured_during_the_current_lease_are_adoptable() {
        let r = record();
        // The lease has held since before both: both.
        assert_eq!(adoptable(Some(&r), "b00t", Some(1_000)).len(), 2);
        // The lease broke between them: only the later one.
        assert_eq!(
            adoptable(Some(&r), "b00t", Some(1_001))
                .keys()
                .collect::<Vec<_>>(),
            [&ip("2001:db8::5")]
        );
        // No lease, no record, another boot, an unknown boot: nothing.
        assert!(adoptable(Some(&r), "b00t", None).is_empty());
        assert!(adoptable(None, "b00t", Some(0)).is_empty());
        assert!(adoptable(Some(&r), "other", Some(0)).is_empty());
        assert!(adoptable(Some(&r), "", Some(0)).is_empty());
    }

    #[test]
    fn store_then_load() {
        let dir = std::env::temp_dir().join(format!("ipf-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(FILE_NAME);
        assert_eq!(load(&path), None);
        store(&path, &record()).unwrap();
        assert_eq!(load(&path), Some(record()));
        std::fs::write(&path, "garbage here now\n").unwrap();
        assert_eq!(load(&path), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
