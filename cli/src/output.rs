//! Output helpers shared by every command: CTDB's machine-readable form
//! (`-X`: `|f1|f2|` rows after a header row, separator changeable with `-x`),
//! node selection (`-n PNN|PNN,PNN|all`), and the rendering of one report
//! per node when a reading command addresses several nodes.
//!
//! One node: exactly CTDB's output. Several nodes (`-n all`, `-n 0,2`):
//! * human form: each node's CTDB block after a `>> NODE: PNN <<` line,
//!   blank line first, as CTDB's `onnode` prints them;
//! * `-X`: one header row with a leading `PNN` column, then every node's
//!   rows prefixed with its PNN;
//! * `--json`: an array of `{"pnn": N, ...}` objects (the one-node JSON
//!   under `"result"`, or `"error"` for a node that did not answer).
//!
//! A node that did not answer never hides the others: its reason goes to
//! stderr and the command exits with status 1 after printing the rest.

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

/// Writes a command's output to stdout. A reader that went away (`ipfailover
/// ip | head -1`) ends the command quietly with status 0 instead of a
/// panic, as a pipe reader expects.
///
/// # Errors
///
/// [`crate::ctx::Exit`]`(0)` on a closed pipe; any other write error.
pub fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(crate::ctx::Exit(0).into()),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
    }
}

/// Pretty JSON text with a final newline.
pub fn json_text(v: &serde_json::Value) -> String {
    format!("{v:#}\n")
}

/// What one node answered to a reading command, in every output form.
pub trait Report {
    /// CTDB's human form.
    fn human(&self) -> String;
    /// The machine-readable header.
    fn header(&self) -> Vec<&'static str>;
    /// The machine-readable rows.
    fn rows(&self) -> Vec<Vec<String>>;
    /// The JSON value.
    fn json(&self) -> serde_json::Value;
    /// The `-X` form for one node (CTDB's header and rows unless a command
    /// prints something else, as `pnn` does).
    fn machine_one(&self, sep: char) -> String {
        machine(&self.header(), &self.rows(), sep)
    }
}

/// One node's report in `format`.
pub fn render_one(r: &dyn Report, format: Format) -> String {
    match format {
        Format::Human => r.human(),
        Format::Machine(sep) => r.machine_one(sep),
        Format::Json => json_text(&r.json()),
    }
}

/// Several nodes' reports in `format` (see the module doc); failed nodes
/// are left out of the text (JSON: listed with their error).
pub fn render_many<R: Report>(results: &[(u32, Result<R, String>)], format: Format) -> String {
    match format {
        Format::Human => {
            let mut out = String::new();
            for (pnn, r) in results {
                if let Ok(r) = r {
                    let _ = write!(out, "\n>> NODE: {pnn} <<\n{}", r.human());
                }
            }
            out
        }
        Format::Machine(sep) => {
            let mut header: Option<Vec<&'static str>> = None;
            let mut rows = Vec::new();
            for (pnn, r) in results {
                if let Ok(r) = r {
                    header.get_or_insert_with(|| {
                        let mut h = vec!["PNN"];
                        h.extend(r.header());
                        h
                    });
                    for row in r.rows() {
                        let mut full = vec![pnn.to_string()];
                        full.extend(row);
                        rows.push(full);
                    }
                }
            }
            header.map_or_else(String::new, |h| machine(&h, &rows, sep))
        }
        Format::Json => {
            let items: Vec<serde_json::Value> = results
                .iter()
                .map(|(pnn, r)| match r {
                    Ok(r) => serde_json::json!({ "pnn": pnn, "result": r.json() }),
                    Err(e) => serde_json::json!({ "pnn": pnn, "error": e }),
                })
                .collect();
            json_text(&serde_json::Value::Array(items))
        }
    }
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
            format!("Invalid node '{part}': expected a PNN, a list such as 0,2, or 'all'")
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

    struct Two(u32);
    impl Report for Two {
        fn human(&self) -> String {
            format!("value {}\n", self.0)
        }
        fn header(&self) -> Vec<&'static str> {
            vec!["Value"]
        }
        fn rows(&self) -> Vec<Vec<String>> {
            vec![vec![self.0.to_string()]]
        }
        fn json(&self) -> serde_json::Value {
            serde_json::json!({ "value": self.0 })
        }
    }

    #[test]
    fn several_nodes_like_onnode_and_with_a_node_column() {
        let results = vec![
            (0, Ok(Two(7))),
            (1, Err("node 1 is not connected".into())),
            (2, Ok(Two(9))),
        ];
        assert_eq!(
            render_many(&results, Format::Human),
            "\n>> NODE: 0 <<\nvalue 7\n\n>> NODE: 2 <<\nvalue 9\n"
        );
        assert_eq!(
            render_many(&results, Format::Machine('|')),
            "|PNN|Value|\n|0|7|\n|2|9|\n"
        );
        let v: serde_json::Value =
            serde_json::from_str(&render_many(&results, Format::Json)).unwrap();
        assert_eq!(v[1]["error"], "node 1 is not connected");
        assert_eq!(v[2]["result"]["value"], 9);
        let none: Vec<(u32, Result<Two, String>)> = vec![(1, Err("x".into()))];
        assert_eq!(render_many(&none, Format::Machine('|')), "");
    }
}
