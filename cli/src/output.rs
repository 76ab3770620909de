//! Output helpers shared by every command: CTDB's machine-readable form
//! (`-X`: `|f1|f2|` rows after a header row, separator changeable with `-x`)
//! and node selection (`-n PNN|PNN,PNN|all`).

use std::fmt::Write as _;

/// How a command prints what it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// CTDB's human form.
    Human,
    /// CTDB's machine-readable form with this separator.
    Machine(char),
    /// JSON.
    Json,
}

/// Renders a header and rows in CTDB's machine-readable form: every row,
/// the header first, starts and ends with the separator.
pub fn machine(header: &[&str], rows: &[Vec<String>], sep: char) -> String {
    let mut out = String::new();
    let mut line = |fields: &mut dyn Iterator<Item = &str>| {
        out.push(sep);
        for f in fields {
            out.push_str(f);
            out.push(sep);
        }
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// Which nodes a command addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nodes {
    /// The local node (no `-n`).
    Local,
    /// Every node (`-n all`).
    All,
    /// These nodes, in the order given.
    List(Vec<u32>),
}

/// Parses CTDB's `-n` argument: `all`, a PNN, or a comma-separated list.
///
/// # Errors
///
/// A message naming the bad part.
pub fn parse_nodes(arg: &str) -> Result<Nodes, String> {
    if arg == "all" {
        return Ok(Nodes::All);
    }
    let mut list = Vec::new();
    for part in arg.split(',') {
        let pnn = part.trim().parse::<u32>().map_err(|_| {
            format!("invalid node '{part}': expected a PNN, a list such as 0,2, or 'all'")
        })?;
        if !list.contains(&pnn) {
            list.push(pnn);
        }
    }
    Ok(Nodes::List(list))
}

/// Formats seconds as CTDB prints round-trip times (`0.000123`).
pub fn seconds(d: std::time::Duration) -> String {
    let mut s = String::new();
    let _ = write!(s, "{:.6}", d.as_secs_f64());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_rows_have_leading_and_trailing_separators() {
        let out = machine(
            &["Public IP", "Node"],
            &[
                vec!["10.0.0.31".into(), "0".into()],
                vec!["10.0.0.32".into(), "-1".into()],
            ],
            '|',
        );
        assert_eq!(out, "|Public IP|Node|\n|10.0.0.31|0|\n|10.0.0.32|-1|\n");
        assert_eq!(machine(&["A"], &[], ':'), ":A:\n");
    }

    #[test]
    fn node_selection() {
        assert_eq!(parse_nodes("all"), Ok(Nodes::All));
        assert_eq!(parse_nodes("2"), Ok(Nodes::List(vec![2])));
        assert_eq!(parse_nodes("0,2,0"), Ok(Nodes::List(vec![0, 2])));
        let e = parse_nodes("1,x").unwrap_err();
        assert!(e.contains("'x'"), "{e}");
        assert!(parse_nodes("-1").is_err());
    }

    #[test]
    fn seconds_like_ctdb() {
        assert_eq!(seconds(std::time::Duration::from_micros(123)), "0.000123");
    }
}
