//! The node lists clusterd counts quorums with, kept on disk so that a
//! restarted clusterd still counts the lists of a node list change in
//! progress (docs/clusterd.md, "Node list changes").
//!
//! One line per list, this node's own first, each the PNNs of the list in
//! increasing order separated by blanks; `#` starts a comment line. The
//! file is replaced atomically (written to a temporary file, then
//! renamed) whenever the lists change, which is rare: at a reload and when
//! a change completes.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::msg::NodeSet;
use crate::nodes::{Pnn, MAX_NODES};

/// The state file's name in the state directory.
pub const FILE_NAME: &str = "clusterd-node-lists";

/// Why a state file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file exists but could not be read.
    #[error("{file}: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A line is not a list of PNNs.
    #[error("{file}:{line}: {reason}")]
    Bad {
        /// The file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// The lists in `file`; none if it does not exist.
///
/// # Errors
///
/// [`StateError`] naming the file (and line) when it cannot be read or a
/// line is not a list of PNNs below [`MAX_NODES`].
pub fn load(file: &Path) -> Result<Vec<NodeSet>, StateError> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(StateError::Read {
                file: file.to_path_buf(),
                source,
            })
        }
    };
    let mut lists = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: String| StateError::Bad {
            file: file.to_path_buf(),
            line: n + 1,
            reason,
        };
        let mut set = NodeSet::EMPTY;
        for word in line.split_whitespace() {
            let pnn: Pnn = word
                .parse()
                .map_err(|_| bad(format!("{word:?} is not a node number")))?;
            if pnn as usize >= MAX_NODES {
                return Err(bad(format!("node {pnn} is beyond the {MAX_NODES} nodes")));
            }
            set.set(pnn, true);
        }
        if lists.len() >= MAX_NODES {
            return Err(bad(format!("more than {MAX_NODES} lists")));
        }
        lists.push(set);
    }
    Ok(lists)
}

/// Replaces `file` with `lists` (creating its directory).
///
/// # Errors
///
/// The I/O error; the old file is then left as it was.
pub fn save(file: &Path, lists: &[NodeSet]) -> std::io::Result<()> {
    let mut text = String::from(
        "# The node lists clusterd counts quorums with (its own first); \
         written by clusterd, do not edit.\n",
    );
    for list in lists {
        let mut first = true;
        for pnn in 0..MAX_NODES {
            let Ok(p) = Pnn::try_from(pnn) else { break };
            if list.contains(p) {
                if !first {
                    text.push(' ');
                }
                first = false;
                let _ = write!(text, "{p}");
            }
        }
        text.push('\n');
    }
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pnns: &[Pnn]) -> NodeSet {
        let mut s = NodeSet::EMPTY;
        for &p in pnns {
            s.set(p, true);
        }
        s
    }

    #[test]
    fn lists_survive_a_round_trip_and_a_missing_file_is_none() {
        let dir = std::env::temp_dir().join(format!("ipf-state-{}", std::process::id()));
        let file = dir.join(FILE_NAME);
        assert!(load(&file).unwrap().is_empty());
        let lists = [set(&[0, 1, 2, 3]), set(&[0, 1, 2]), set(&[255])];
        save(&file, &lists).unwrap();
        assert_eq!(load(&file).unwrap(), lists);
        std::fs::write(&file, "0 1\n0 x\n").unwrap();
        let e = load(&file).unwrap_err().to_string();
        assert!(
            e.ends_with("clusterd-node-lists:2: \"x\" is not a node number"),
            "{e}"
        );
        std::fs::write(&file, "256\n").unwrap();
        let e = load(&file).unwrap_err().to_string();
        assert!(e.contains(":1: node 256 is beyond the 256 nodes"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
