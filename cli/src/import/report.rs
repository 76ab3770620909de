//! What the importer says and what it writes: one [`Line`] per input line
//! or setting, and the settings of the new `ipfailover.toml` ([`Toml`]),
//! each remembering the CTDB line it came from. Pure.

use std::fmt;

/// What became of one input line or setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Carried over: what it became.
    Mapped(String),
    /// Dropped, harmlessly: why.
    Ignored(String),
    /// Dropped, and the operator may have to act: why and what to do.
    NotImported(String),
}

/// One line of the report: `AT: WHAT -> TARGET`, `AT: WHAT: ignored (WHY)`
/// or `AT: WHAT: NOT IMPORTED (WHY)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Where: `ctdb.conf:12`, `events/legacy/10.interface.script`.
    pub at: String,
    /// The input, as written (`cluster lock = /x`).
    pub what: String,
    /// What became of it.
    pub outcome: Outcome,
}

impl Line {
    /// A mapped line.
    pub fn mapped(at: impl Into<String>, what: impl Into<String>, to: impl Into<String>) -> Line {
        Line {
            at: at.into(),
            what: what.into(),
            outcome: Outcome::Mapped(to.into()),
        }
    }

    /// An ignored line.
    pub fn ignored(at: impl Into<String>, what: impl Into<String>, why: impl Into<String>) -> Line {
        Line {
            at: at.into(),
            what: what.into(),
            outcome: Outcome::Ignored(why.into()),
        }
    }

    /// A line the operator must look at.
    pub fn not_imported(
        at: impl Into<String>,
        what: impl Into<String>,
        why: impl Into<String>,
    ) -> Line {
        Line {
            at: at.into(),
            what: what.into(),
            outcome: Outcome::NotImported(why.into()),
        }
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Mapped(to) => write!(f, "{}: {} -> {to}", self.at, self.what),
            Outcome::Ignored(why) => write!(f, "{}: {}: ignored ({why})", self.at, self.what),
            Outcome::NotImported(why) => {
                write!(f, "{}: {}: NOT IMPORTED ({why})", self.at, self.what)
            }
        }
    }
}

/// A TOML value of `ipfailover.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A string.
    Str(String),
    /// An integer.
    Int(u64),
    /// A boolean.
    Bool(bool),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => {
                f.write_str("\"")?;
                for c in s.chars() {
                    match c {
                        '"' => f.write_str("\\\"")?,
                        '\\' => f.write_str("\\\\")?,
                        '\t' => f.write_str("\\t")?,
                        c if c.is_control() => write!(f, "\\u{:04X}", u32::from(c))?,
                        c => write!(f, "{c}")?,
                    }
                }
                f.write_str("\"")
            }
            Value::Int(n) => write!(f, "{n}"),
            Value::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// The sections of `ipfailover.toml`, in the order they are written.
pub const SECTIONS: &[&str] = &["cluster", "transport", "failover", "logging", "tunables"];

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    section: &'static str,
    key: &'static str,
    value: Value,
    /// The comment above the key: where it comes from.
    source: String,
}

/// The settings of the new `ipfailover.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Toml {
    entries: Vec<Entry>,
}

impl Toml {
    /// Sets `[section] key = value` (replacing an earlier value), noting
    /// its source.
    pub fn set(&mut self, section: &'static str, key: &'static str, value: Value, source: String) {
        debug_assert!(SECTIONS.contains(&section), "unknown section {section}");
        self.entries
            .retain(|e| !(e.section == section && e.key == key));
        self.entries.push(Entry {
            section,
            key,
            value,
            source,
        });
    }

    /// The value of `[section] key`, if set (tests).
    #[cfg(test)]
    #[must_use]
    pub fn get(&self, section: &str, key: &str) -> Option<&Value> {
        self.entries
            .iter()
            .find(|e| e.section == section && e.key == key)
            .map(|e| &e.value)
    }

    /// `[section] key = value` as the report shows it.
    #[must_use]
    pub fn describe(section: &str, key: &str, value: &Value) -> String {
        format!("[{section}] {key} = {value}")
    }

    /// The file's text: a header naming `from`, then each section that has
    /// settings, each setting under a comment naming its source.
    #[must_use]
    pub fn render(&self, from: &str) -> String {
        let mut out = format!(
            "# ipfailover.toml written by `ipfailover import-ctdb` from the CTDB\n\
             # configuration in\n\
             #   {}\n\
             # Each setting names the CTDB line it comes from; every other setting\n\
             # has ipfailover's default (docs/configuration.md).\n",
            comment(from)
        );
        for section in SECTIONS {
            let mut entries = self
                .entries
                .iter()
                .filter(|e| e.section == *section)
                .peekable();
            if entries.peek().is_none() {
                continue;
            }
            out.push_str(&format!("\n[{section}]\n"));
            for e in entries {
                out.push_str(&format!(
                    "# {}\n{} = {}\n",
                    comment(&e.source),
                    e.key,
                    e.value
                ));
            }
        }
        out
    }
}

/// `s` made safe for a TOML comment (one line, no control characters).
fn comment(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_as_documented() {
        assert_eq!(
            Line::mapped(
                "ctdb.conf:3",
                "log level = INFO",
                "[logging] level = \"info\""
            )
            .to_string(),
            "ctdb.conf:3: log level = INFO -> [logging] level = \"info\""
        );
        assert_eq!(
            Line::ignored("ctdb.tunables:1", "RecoverTimeout=30", "no recovery").to_string(),
            "ctdb.tunables:1: RecoverTimeout=30: ignored (no recovery)"
        );
        assert_eq!(
            Line::not_imported("x", "y", "z").to_string(),
            "x: y: NOT IMPORTED (z)"
        );
    }

    #[test]
    fn strings_are_escaped_and_the_text_parses_back() {
        let mut t = Toml::default();
        t.set(
            "cluster",
            "cluster_lock",
            Value::Str("!/h \"a\"\\b\tc".into()),
            "ctdb.conf:1: x\u{7}".into(),
        );
        t.set(
            "tunables",
            "NoIPFailback",
            Value::Int(1),
            "ctdb.tunables:1".into(),
        );
        t.set(
            "tunables",
            "NoIPFailback",
            Value::Int(0),
            "ctdb.tunables:2".into(),
        );
        let text = t.render("/etc/ctdb");
        let (c, _) = config::parse(&text, std::path::Path::new("x.toml")).expect("parses");
        assert_eq!(c.cluster.cluster_lock.as_deref(), Some("!/h \"a\"\\b\tc"));
        assert_eq!(*c.tunables.no_ip_failback.get_ref(), 0);
        assert!(
            text.contains("# ctdb.tunables:2\nNoIPFailback = 0\n"),
            "{text}"
        );
        assert!(!text.contains("[transport]"), "{text}");
    }
}
