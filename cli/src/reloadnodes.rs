//! `reloadnodes`, as `ctdb reloadnodes` (ctdb/tools/ctdb.c
//! `control_reloadnodes`): every connected node re-reads its nodes file
//! and takes it at run time (transportd's peer links, conntrackd, the
//! membership and so failoverd's allocation).
//!
//! Steps, with ctdb's messages (`Node N is NEW|DELETED|UNDELETED` on
//! stdout, the rest on stderr):
//!
//! 1. the node addressed (`-n`, else this one) gives its membership and
//!    its nodes file as its clusterd reads it now;
//! 2. every other connected node gives its file, which must be the same
//!    (`ERROR: Nodes file on node N differs from current node (M)`);
//! 3. the file is compared with the running list: an entry may not vanish
//!    (`Node N (ADDR) missing from nodes file`) nor change address (`Node
//!    N has changed IP address (was A, now B)`); a deleted node must be
//!    disconnected (`ERROR: Node N is still connected`); any of these ends
//!    with `ERROR: Nodes will not be reloaded due to previous error` and
//!    status 1, nothing changed anywhere. Nothing to do: `No change in
//!    nodes file, skipping unnecessary reload`, status 0;
//! 4. every connected node is asked to reload; each checks again that its
//!    file is the list checked here and refuses it otherwise. A node that
//!    fails is named (`Node N failed to reload nodes`, then `You MUST fix
//!    failed nodes manually!`) and the status is 1 (ctdb: 0).

use std::net::IpAddr;

use anyhow::Result;
use transport::client::Client;
use transport::msg::cluster::{
    Membership, NodeFlags, NodeInfo, GET_MEMBERSHIP, GET_NODES_FILE, RELOAD_NODES,
};
use transport::proto::control::NodeList;
use transport::proto::service::CLUSTERD;

use crate::ctx::{block_on, Exit, Globals};
use crate::output::emit;

/// What the comparison of the running list and the file found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// `(stderr?, line)` in ctdb's order.
    pub lines: Vec<(bool, String)>,
    /// Something to reload.
    pub reload: bool,
    /// A change ctdb refuses.
    pub failed: bool,
}

fn shown(a: Option<IpAddr>) -> String {
    a.map_or_else(|| "0.0.0.0".to_string(), |a| a.to_string())
}

/// ctdb's `check_node_file_changes`: the running nodes `nm` (with their
/// flags as the node addressed sees them) against the file `file`.
#[must_use]
pub fn compare(nm: &[NodeInfo], file: &[Option<IpAddr>]) -> Changes {
    let mut c = Changes::default();
    for (i, n) in nm.iter().enumerate() {
        let Some(f) = file.get(i) else {
            c.lines.push((
                true,
                format!(
                    "Node {} ({}) missing from nodes file",
                    n.pnn,
                    shown(n.address)
                ),
            ));
            c.failed = true;
            continue;
        };
        let was_deleted = n.flags.contains(NodeFlags::DELETED);
        let deleted = f.is_none();
        if was_deleted && deleted {
            continue;
        }
        if !was_deleted && !deleted {
            if n.address != *f {
                c.lines.push((
                    true,
                    format!(
                        "Node {} has changed IP address (was {}, now {})",
                        n.pnn,
                        shown(n.address),
                        shown(*f)
                    ),
                ));
                c.failed = true;
            } else if n.flags.contains(NodeFlags::DISCONNECTED) {
                c.lines.push((
                    true,
                    format!(
                        "WARNING: Node {} is disconnected. You MUST fix this node manually!",
                        n.pnn
                    ),
                ));
            }
            continue;
        }
        if deleted {
            c.lines.push((false, format!("Node {} is DELETED", n.pnn)));
            c.reload = true;
            if !n.flags.contains(NodeFlags::DISCONNECTED) {
                c.lines
                    .push((true, format!("ERROR: Node {} is still connected", n.pnn)));
                c.failed = true;
            }
            continue;
        }
        c.lines
            .push((false, format!("Node {} is UNDELETED", n.pnn)));
        c.reload = true;
    }
    if c.failed {
        c.lines.push((
            true,
            "ERROR: Nodes will not be reloaded due to previous error".to_string(),
        ));
        return c;
    }
    for i in nm.len()..file.len() {
        c.lines.push((false, format!("Node {i} is NEW")));
        c.reload = true;
    }
    c
}

fn print(lines: &[(bool, String)]) -> Result<()> {
    for (stderr, line) in lines {
        if *stderr {
            eprintln!("{line}");
        } else {
            emit(&format!("{line}\n"))?;
        }
    }
    Ok(())
}

/// A node that is up: neither disconnected nor deleted.
fn connected(n: &NodeInfo) -> bool {
    !n.flags
        .intersects(NodeFlags::DISCONNECTED | NodeFlags::DELETED)
}

async fn nodes_file(ctx: &Globals, client: &Client, pnn: u32) -> Result<NodeList> {
    ctx.ask(client, pnn, CLUSTERD, GET_NODES_FILE, &()).await
}

/// `reloadnodes`.
///
/// # Errors
///
/// No transportd or clusterd; [`Exit`]`(1)` after ctdb's messages when a
/// file differs, a change is refused or a node failed to reload.
pub fn run(ctx: &Globals) -> Result<()> {
    block_on(async {
        let (client, _incoming) = ctx.connect().await?;
        let this = ctx.one_node(&client).await?;
        let m: Membership = ctx
            .ask(&client, this, CLUSTERD, GET_MEMBERSHIP, &())
            .await?;
        let file = nodes_file(ctx, &client, this).await?;
        let others: Vec<u32> = m
            .nodes
            .iter()
            .filter(|n| n.pnn != this && connected(n))
            .map(|n| n.pnn)
            .collect();
        let answers = ctx
            .ask_each::<(), NodeList>(&client, &others, CLUSTERD, GET_NODES_FILE, &())
            .await?;
        for (pnn, answer) in answers {
            match answer {
                Err(why) => {
                    eprintln!("{why}");
                    eprintln!("ERROR: Failed to get nodes file from node {pnn}");
                    return Err(Exit(1).into());
                }
                Ok(theirs) if theirs != file => {
                    eprintln!("ERROR: Nodes file on node {pnn} differs from current node ({this})");
                    return Err(Exit(1).into());
                }
                Ok(_) => {}
            }
        }
        let changes = compare(&m.nodes, &file.addrs);
        print(&changes.lines)?;
        if changes.failed {
            return Err(Exit(1).into());
        }
        if !changes.reload {
            eprintln!("No change in nodes file, skipping unnecessary reload");
            return Ok(());
        }
        let mut targets: Vec<u32> = m
            .nodes
            .iter()
            .filter(|n| n.pnn == this || connected(n))
            .map(|n| n.pnn)
            .collect();
        targets.sort_unstable();
        let answers = ctx
            .ask_each::<NodeList, ()>(&client, &targets, CLUSTERD, RELOAD_NODES, &file)
            .await?;
        let mut failed = false;
        for (pnn, answer) in answers {
            if let Err(why) = answer {
                eprintln!("{why}");
                eprintln!("Node {pnn} failed to reload nodes");
                failed = true;
            }
        }
        if failed {
            eprintln!("You MUST fix failed nodes manually!");
            return Err(Exit(1).into());
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(pnn: u32, addr: &str, flags: u32) -> NodeInfo {
        NodeInfo {
            pnn,
            address: if addr.is_empty() {
                None
            } else {
                Some(addr.parse().unwrap())
            },
            flags: NodeFlags::from_bits(flags),
        }
    }

    fn file(addrs: &[&str]) -> Vec<Option<IpAddr>> {
        addrs
            .iter()
            .map(|a| {
                if a.is_empty() {
                    None
                } else {
                    Some(a.parse().unwrap())
                }
            })
            .collect()
    }

    fn text(c: &Changes) -> String {
        c.lines.iter().map(|(_, l)| format!("{l}\n")).collect()
    }

    fn nodemap(flags: [u32; 3]) -> Vec<NodeInfo> {
        vec![
            node(0, "192.168.20.41", flags[0]),
            node(1, "192.168.20.42", flags[1]),
            node(2, "192.168.20.43", flags[2]),
        ]
    }

    /// ctdb's own cases (ctdb/tests/UNIT/tool/ctdb.reloadnodes.0NN.sh).
    #[test]
    fn ctdb_tool_cases() {
        let three = file(&["192.168.20.41", "192.168.20.42", "192.168.20.43"]);
        // 001: no change.
        let c = compare(&nodemap([0, 0, 0]), &three);
        assert!(!c.reload && !c.failed && c.lines.is_empty());
        // 011: one new node.
        let c = compare(
            &nodemap([0, 0, 0]),
            &file(&[
                "192.168.20.41",
                "192.168.20.42",
                "192.168.20.43",
                "192.168.20.44",
            ]),
        );
        assert_eq!(text(&c), "Node 3 is NEW\n");
        assert!(c.reload && !c.failed);
        // 012 (as a # entry): a disconnected node deleted.
        let c = compare(
            &nodemap([0, 0, 1]),
            &file(&["192.168.20.41", "192.168.20.42", ""]),
        );
        assert_eq!(text(&c), "Node 2 is DELETED\n");
        // 013: still connected.
        let c = compare(
            &nodemap([0, 0, 0]),
            &file(&["192.168.20.41", "192.168.20.42", ""]),
        );
        assert_eq!(
            text(&c),
            "Node 2 is DELETED\nERROR: Node 2 is still connected\nERROR: Nodes will not be reloaded due to previous error\n"
        );
        assert!(c.failed);
        // 021: a disconnected node kept, one new.
        let c = compare(
            &nodemap([0, 1, 0]),
            &file(&[
                "192.168.20.41",
                "192.168.20.42",
                "192.168.20.43",
                "192.168.20.44",
            ]),
        );
        assert_eq!(
            text(&c),
            "WARNING: Node 1 is disconnected. You MUST fix this node manually!\nNode 3 is NEW\n"
        );
        // 023: undeleted.
        let mut nm = nodemap([0, 0x11, 0]);
        nm[1].address = None;
        let c = compare(&nm, &three);
        assert_eq!(text(&c), "Node 1 is UNDELETED\n");
        // 034: addresses swapped.
        let c = compare(
            &nodemap([0, 0, 0]),
            &file(&["192.168.20.43", "192.168.20.42", "192.168.20.41"]),
        );
        assert_eq!(
            text(&c),
            "Node 0 has changed IP address (was 192.168.20.41, now 192.168.20.43)\nNode 2 has changed IP address (was 192.168.20.43, now 192.168.20.41)\nERROR: Nodes will not be reloaded due to previous error\n"
        );
        // A shorter file.
        let c = compare(
            &nodemap([0, 0, 1]),
            &file(&["192.168.20.41", "192.168.20.42"]),
        );
        assert_eq!(
            text(&c),
            "Node 2 (192.168.20.43) missing from nodes file\nERROR: Nodes will not be reloaded due to previous error\n"
        );
        // stdout for the node lines, stderr for the rest.
        assert!(c.lines[0].0);
    }
}
