//! CTDB's INI reader, as ctdbd reads `ctdb.conf` and `ctdb.tunables`
//! (Samba's `lib/util/tini.c`), so that the importer sees exactly the
//! settings ctdbd saw.
//!
//! Rules: leading blanks are skipped; a line whose first non-blank
//! character is `#` or `;` is a comment (there are no end-of-line comments:
//! `key = v # x` has the value `v # x`); a line ending in `\` (or `\ `)
//! continues on the next one; every run of blanks becomes one blank; `[NAME]`
//! starts a section (anything after `]` is dropped); `NAME = VALUE` is an
//! option, with one blank removed on each side of the name and the value.
//! A line without `=` is ignored by ctdb.conf's reader and is an error in
//! ctdb.tunables; the caller decides. Pure: text in, items out.

/// One logical line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// `[NAME]` on `line`.
    Section {
        /// 1-based line number.
        line: usize,
        /// The text between `[` and `]`, as written.
        name: String,
    },
    /// `KEY = VALUE` on `line` (the first physical line of a continued one).
    Option {
        /// 1-based line number.
        line: usize,
        /// The name, blanks around it trimmed once.
        key: String,
        /// The value, blanks around it trimmed once (may be empty).
        value: String,
    },
    /// A line without `=`.
    NoEquals {
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// A line ctdb cannot parse at all (`[` without `]`, `= value` without
    /// a name): ctdb refuses the whole file.
    Invalid {
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
        /// What is wrong.
        what: &'static str,
    },
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\u{b}' | '\u{c}' | '\r')
}

/// Splits `lines` (1-based number and text, line ends removed) into items.
#[must_use]
pub fn parse(lines: &[(usize, &str)]) -> Vec<Item> {
    let mut items = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let (first, raw) = lines[i];
        i += 1;
        let start = raw.trim_start_matches(is_space);
        if start.is_empty() || start.starts_with('#') || start.starts_with(';') {
            continue;
        }
        // Collect the logical line: zap blank runs, follow continuations.
        let mut buf = String::new();
        let mut chunk = start;
        loop {
            for c in chunk.chars() {
                if is_space(c) && buf.chars().last().is_some_and(is_space) {
                    continue;
                }
                buf.push(c);
            }
            let continued = if buf.ends_with('\\') {
                buf.pop();
                true
            } else if buf.len() >= 2
                && buf.chars().last().is_some_and(is_space)
                && buf[..buf.len() - 1].ends_with('\\')
            {
                buf.pop();
                buf.pop();
                true
            } else {
                false
            };
            if !continued || i >= lines.len() {
                break;
            }
            chunk = lines[i].1;
            i += 1;
        }
        items.push(item(first, &buf));
    }
    items
}

fn trim_one(s: &str) -> &str {
    let s = s.strip_prefix(is_space).unwrap_or(s);
    s.strip_suffix(is_space).unwrap_or(s)
}

fn item(line: usize, buf: &str) -> Item {
    if let Some(rest) = buf.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((name, _)) => Item::Section {
                line,
                name: name.to_string(),
            },
            None => Item::Invalid {
                line,
                text: buf.to_string(),
                what: "a section header without ']'",
            },
        };
    }
    let Some((key, value)) = buf.split_once('=') else {
        return Item::NoEquals {
            line,
            text: buf.to_string(),
        };
    };
    let key = trim_one(key);
    if key.is_empty() {
        return Item::Invalid {
            line,
            text: buf.to_string(),
            what: "a value without a name",
        };
    }
    Item::Option {
        line,
        key: key.to_string(),
        value: trim_one(value).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Vec<Item> {
        let lines: Vec<(usize, &str)> = text.lines().enumerate().map(|(i, l)| (i + 1, l)).collect();
        parse(&lines)
    }

    fn opt(line: usize, key: &str, value: &str) -> Item {
        Item::Option {
            line,
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn sections_options_and_comments() {
        let items = p("# c\n[cluster]\n\tcluster lock = /x\n ; c\n\n[ logging ] junk\n");
        assert_eq!(
            items,
            vec![
                Item::Section {
                    line: 2,
                    name: "cluster".into()
                },
                opt(3, "cluster lock", "/x"),
                Item::Section {
                    line: 6,
                    name: " logging ".into()
                },
            ]
        );
    }

    #[test]
    fn blank_runs_become_one_and_no_end_of_line_comments() {
        assert_eq!(
            p("cluster    lock   =   !/h  a\t\tb # c")[0],
            opt(1, "cluster lock", "!/h a\tb # c")
        );
    }

    #[test]
    fn continuation_lines_join_and_keep_the_first_line_number() {
        let items = p("x = a \\\n  b\\\nc\ny = 1\n");
        assert_eq!(items, vec![opt(1, "x", "a bc"), opt(4, "y", "1")]);
    }

    #[test]
    fn lines_without_equals_or_name_or_bracket() {
        assert_eq!(
            p("NoIPFailback\n")[0],
            Item::NoEquals {
                line: 1,
                text: "NoIPFailback".into()
            }
        );
        assert!(matches!(p(" = 3\n")[0], Item::Invalid { line: 1, .. }));
        assert!(matches!(p("[cluster\n")[0], Item::Invalid { line: 1, .. }));
        assert_eq!(p("a=\n")[0], opt(1, "a", ""));
    }
}
