//! The input format of CTDB's IP-allocation tests (`ctdb_takeover_tests
//! ipalloc`), which `ipfailover ipalloc` reads, so that CTDB's own cases run
//! unchanged. Pure: it parses text and returns [`IpEntry`]s.
//!
//! Address lines are `ADDRESS [CURRENT_PNN [ALLOWED_PNN,...]]`, split on
//! blanks. `-1` (or a missing PNN) means unassigned. Without the third column
//! the address is known on every node; with it, only on the listed nodes.
//! `#` starts a comment. Reading stops at the first empty line, as in CTDB;
//! in `multi` mode there is one such block per node (node N's own view, no
//! third column), and an address's owner is the last node, in PNN order, that
//! reports holding it itself.
//!
//! Where CTDB silently skips or misreads a line (a bad address, a
//! non-numeric PNN, a node number out of range, a duplicate address), this
//! parser fails with the line number instead.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use super::{IpEntry, KnownOn, NodeState, Pnn, RunState};

/// A rejected planner input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// The address column does not parse.
    #[error("line {line}: bad address '{token}'")]
    BadAddress {
        /// 1-based line number.
        line: usize,
        /// The offending text.
        token: String,
    },
    /// A PNN column does not parse.
    #[error("line {line}: bad {what} '{token}' (expected a node number{extra})")]
    BadPnn {
        /// 1-based line number.
        line: usize,
        /// "current PNN" or "allowed PNN".
        what: &'static str,
        /// The offending text.
        token: String,
        /// Hint.
        extra: &'static str,
    },
    /// A PNN names no node.
    #[error("line {line}: {what} {pnn} is not a node (there are {nodes} nodes)")]
    NoSuchNode {
        /// 1-based line number.
        line: usize,
        /// "current PNN" or "allowed PNN".
        what: &'static str,
        /// The PNN.
        pnn: i64,
        /// Node count.
        nodes: usize,
    },
    /// An allowed list with no node in it.
    #[error("line {line}: empty allowed-node list")]
    EmptyAllowed {
        /// 1-based line number.
        line: usize,
    },
    /// Extra columns.
    #[error("line {line}: unexpected '{token}' after the {after}")]
    ExtraToken {
        /// 1-based line number.
        line: usize,
        /// The offending text.
        token: String,
        /// What came before it.
        after: &'static str,
    },
    /// The same address twice in one block.
    #[error("line {line}: address {addr} already given on line {first}")]
    Duplicate {
        /// 1-based line number.
        line: usize,
        /// The address.
        addr: IpAddr,
        /// Where it was first given.
        first: usize,
    },
    /// Lines after the terminating empty line (single-block mode).
    #[error("line {line}: input continues after the empty line {blank} that ends it (per-node blocks need multi mode)")]
    AfterEnd {
        /// 1-based line number.
        line: usize,
        /// The empty line.
        blank: usize,
    },
    /// More blocks than nodes (multi mode).
    #[error("line {line}: block {block} but there are only {nodes} nodes")]
    TooManyBlocks {
        /// 1-based line number.
        line: usize,
        /// 0-based block number.
        block: usize,
        /// Node count.
        nodes: usize,
    },
    /// A node-state list entry that does not parse.
    #[error("node states: bad entry '{0}' (expected CTDB node flags, decimal or 0x hex)")]
    BadNodeState(String),
    /// A run-state list entry that does not parse.
    #[error("run states: bad entry '{0}' (expected a number 0-6 or a name such as RUNNING)")]
    BadRunState(String),
    /// A run-state list of the wrong length.
    #[error("run states: {got} entries for {nodes} nodes")]
    RunStateCount {
        /// Entries given.
        got: usize,
        /// Node count.
        nodes: usize,
    },
}

/// Parses an unsigned number as C's `strtol(s, NULL, 0)` reads it: `0x`
/// hex, leading-zero octal, else decimal. The whole text must be a number.
pub fn parse_c_number(s: &str) -> Option<u32> {
    let s = s.trim();
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u32::from_str_radix(h, 16).ok()
    } else if s.len() > 1 && s.starts_with('0') {
        u32::from_str_radix(&s[1..], 8).ok()
    } else {
        s.parse().ok()
    }
}

/// Parses CTDB's node-state argument: a comma list of node flags, one per
/// node (PNN = position), all RUNNING.
///
/// # Errors
///
/// [`InputError::BadNodeState`] for an entry that is not a number.
pub fn parse_node_states(s: &str) -> Result<Vec<NodeState>, InputError> {
    s.split(',')
        .map(|tok| {
            parse_c_number(tok)
                .map(NodeState::with_flags)
                .ok_or_else(|| InputError::BadNodeState(tok.to_string()))
        })
        .collect()
}

/// Parses a comma list of run states (numbers or names such as `RUNNING`,
/// `STARTUP`), one per node, into `nodes`.
///
/// # Errors
///
/// [`InputError::BadRunState`] or [`InputError::RunStateCount`].
pub fn apply_runstates(nodes: &mut [NodeState], s: &str) -> Result<(), InputError> {
    const NAMES: [&str; 7] = [
        "UNKNOWN",
        "INIT",
        "SETUP",
        "FIRST_RECOVERY",
        "STARTUP",
        "RUNNING",
        "SHUTDOWN",
    ];
    let states: Vec<RunState> = s
        .split(',')
        .map(|tok| {
            let t = tok.trim();
            parse_c_number(t)
                .or_else(|| {
                    NAMES
                        .iter()
                        .position(|n| n.eq_ignore_ascii_case(t))
                        .and_then(|i| u32::try_from(i).ok())
                })
                .map(RunState::from_u32)
                .ok_or_else(|| InputError::BadRunState(tok.to_string()))
        })
        .collect::<Result<_, _>>()?;
    if states.len() != nodes.len() {
        return Err(InputError::RunStateCount {
            got: states.len(),
            nodes: nodes.len(),
        });
    }
    for (n, r) in nodes.iter_mut().zip(states) {
        n.runstate = r;
    }
    Ok(())
}

struct Line<'a> {
    no: usize,
    addr: IpAddr,
    pnn: Option<Pnn>,
    allowed: Option<BTreeSet<Pnn>>,
    _text: &'a str,
}

fn parse_pnn(line: usize, what: &'static str, tok: &str, nodes: usize) -> Result<i64, InputError> {
    let v: i64 = tok.parse().map_err(|_| InputError::BadPnn {
        line,
        what,
        token: tok.to_string(),
        extra: "",
    })?;
    if v < 0 || usize::try_from(v).is_ok_and(|v| v >= nodes) {
        return Err(InputError::NoSuchNode {
            line,
            what,
            pnn: v,
            nodes,
        });
    }
    Ok(v)
}

/// Parses one non-empty line; `None` for a blank or comment-only line.
fn parse_line(
    no: usize,
    text: &str,
    nodes: usize,
    multi: bool,
) -> Result<Option<Line<'_>>, InputError> {
    let body = text.split('#').next().unwrap_or("");
    let mut toks = body.split([' ', '\t', '\r']).filter(|t| !t.is_empty());
    let Some(a) = toks.next() else {
        return Ok(None);
    };
    let addr: IpAddr = a.parse().map_err(|_| InputError::BadAddress {
        line: no,
        token: a.to_string(),
    })?;
    let pnn = match toks.next() {
        None | Some("-1") => None,
        Some(t) => {
            let v = parse_pnn(no, "current PNN", t, nodes).map_err(|e| match e {
                InputError::BadPnn {
                    line, what, token, ..
                } => InputError::BadPnn {
                    line,
                    what,
                    token,
                    extra: " or -1",
                },
                other => other,
            })?;
            Some(u32::try_from(v).expect("checked to be in 0..nodes"))
        }
    };
    let allowed = match toks.next() {
        None => None,
        Some(t) if multi => {
            return Err(InputError::ExtraToken {
                line: no,
                token: t.to_string(),
                after: "current PNN (multi mode has no allowed-node column)",
            })
        }
        Some(t) => {
            let mut set = BTreeSet::new();
            for piece in t.split(',').filter(|s| !s.is_empty()) {
                let v = parse_pnn(no, "allowed PNN", piece, nodes)?;
                set.insert(u32::try_from(v).expect("checked to be in 0..nodes"));
            }
            if set.is_empty() {
                return Err(InputError::EmptyAllowed { line: no });
            }
            Some(set)
        }
    };
    if let Some(t) = toks.next() {
        return Err(InputError::ExtraToken {
            line: no,
            token: t.to_string(),
            after: "allowed-node list",
        });
    }
    Ok(Some(Line {
        no,
        addr,
        pnn,
        allowed,
        _text: text,
    }))
}

/// Parses the planner's stdin for `nodes` nodes. In single mode (`multi`
/// false) the block ends at the first empty line and nothing may follow it.
/// In multi mode, block N (blocks separated by empty lines) is node N's view;
/// missing trailing blocks are empty views.
///
/// # Errors
///
/// [`InputError`] naming the line for anything CTDB would skip or misread.
pub fn parse_known_ips(text: &str, nodes: usize, multi: bool) -> Result<Vec<IpEntry>, InputError> {
    // Split into blocks at exactly-empty lines (CTDB tests `line[0] == 0`).
    let mut blocks: Vec<Vec<(usize, &str)>> = vec![Vec::new()];
    let mut blank_at: Option<usize> = None;
    for (i, raw) in text.split('\n').enumerate() {
        let no = i + 1;
        if raw.is_empty() {
            if blank_at.is_none() {
                blank_at = Some(no);
            }
            if multi {
                blocks.push(Vec::new());
            }
            continue;
        }
        if !multi {
            if let Some(blank) = blank_at {
                return Err(InputError::AfterEnd { line: no, blank });
            }
        }
        let last = blocks.last_mut().expect("blocks starts non-empty");
        last.push((no, raw));
    }
    if !multi {
        return single(&blocks[0], nodes);
    }
    // Trailing empty blocks (from trailing newlines) are not node views.
    while blocks.len() > 1 && blocks.last().is_some_and(Vec::is_empty) {
        blocks.pop();
    }
    if blocks.len() > nodes {
        let line = blocks[nodes].first().map_or(0, |l| l.0);
        return Err(InputError::TooManyBlocks {
            line,
            block: nodes,
            nodes,
        });
    }
    let mut views: Vec<Vec<(IpAddr, Option<Pnn>)>> = Vec::with_capacity(blocks.len());
    for block in &blocks {
        let mut seen: HashMap<IpAddr, usize> = HashMap::new();
        let mut view = Vec::new();
        for &(no, raw) in block {
            let Some(l) = parse_line(no, raw, nodes, true)? else {
                continue;
            };
            if let Some(&first) = seen.get(&l.addr) {
                return Err(InputError::Duplicate {
                    line: l.no,
                    addr: l.addr,
                    first,
                });
            }
            seen.insert(l.addr, l.no);
            view.push((l.addr, l.pnn));
        }
        views.push(view);
    }
    Ok(super::merge_views(&views))
}

fn single(block: &[(usize, &str)], nodes: usize) -> Result<Vec<IpEntry>, InputError> {
    let mut seen: HashMap<IpAddr, usize> = HashMap::new();
    let mut out = Vec::new();
    for &(no, raw) in block {
        let Some(l) = parse_line(no, raw, nodes, false)? else {
            continue;
        };
        if let Some(&first) = seen.get(&l.addr) {
            return Err(InputError::Duplicate {
                line: l.no,
                addr: l.addr,
                first,
            });
        }
        seen.insert(l.addr, l.no);
        out.push(IpEntry {
            addr: l.addr,
            owner: l.pnn,
            known_on: l.allowed.map_or(KnownOn::All, KnownOn::Nodes),
        });
    }
    Ok(out)
}

/// Parses a `home_nodes` text (CTDB master, deterministic only): `ADDRESS
/// PNN` lines, blank lines and `#` comments skipped.
///
/// # Errors
///
/// [`InputError`] naming the line.
pub fn parse_home_nodes(text: &str, nodes: usize) -> Result<BTreeMap<IpAddr, Pnn>, InputError> {
    let mut out = BTreeMap::new();
    let mut first_line: HashMap<IpAddr, usize> = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let no = i + 1;
        let Some(l) = parse_line(no, raw, nodes, true)? else {
            continue;
        };
        let Some(p) = l.pnn else {
            return Err(InputError::BadPnn {
                line: no,
                what: "home PNN",
                token: String::new(),
                extra: "",
            });
        };
        if let Some(&first) = first_line.get(&l.addr) {
            return Err(InputError::Duplicate {
                line: no,
                addr: l.addr,
                first,
            });
        }
        first_line.insert(l.addr, no);
        out.insert(l.addr, p);
    }
    Ok(out)
}

/// Formats a result as the planner prints it: one `ADDRESS PNN` line each.
pub fn format_result(result: &[super::Assignment]) -> String {
    let mut s = String::new();
    for a in result {
        s.push_str(&a.to_string());
        s.push('\n');
    }
    s
}
