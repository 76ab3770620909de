//! `reloadnodes` in the membership state machine: a running [`Member`]
//! takes a new nodes file (CTDB's `ctdb_control_reload_nodes_file`).
//! Nodes may be added at the end, deleted (`#`, only when not connected)
//! or undeleted; a node never changes address in place and entries never
//! vanish ([`NodesFile::check_reload`]). A child module of `membership`,
//! so that it sees the peers; pure like its parent.
//!
//! After a reload the majority counts the new number of configured nodes.
//! Nodes that have reloaded and nodes that have not yet disagree on the
//! length of the list for a moment: a membership update of the other
//! length is ignored (see `on_update`), heartbeats from a node this one
//! does not know are dropped; both end when every node has reloaded, which
//! `ipfailover reloadnodes` does on every connected node at once.

use std::time::Duration;

use super::{idx, Member, Output, Peer};
use crate::flags::NodeFlags;
use crate::msg::NodeSet;
use crate::nodes::{NodesFile, Pnn};

impl Peer {
    /// A peer never heard from.
    pub(super) fn fresh(address: Option<std::net::IpAddr>) -> Peer {
        Peer {
            address,
            deleted: address.is_none(),
            last_rx: None,
            last_stamp: Duration::ZERO,
            heard_us: None,
            heard_us_at: None,
            flags: NodeFlags::OK,
            can_lead: false,
            supports: None,
            support_echo: None,
            active: false,
            generation: 0,
            granted_until: None,
            update_sent: None,
            incarnation: 0,
            grant_end: None,
            granted_rx: None,
            fence_until: None,
            cert: NodeSet::EMPTY,
            cert_echo: None,
        }
    }
}

impl Member {
    /// The running node list (the addresses by PNN, `None`: deleted).
    #[must_use]
    pub fn node_addrs(&self) -> Vec<Option<std::net::IpAddr>> {
        self.peers
            .iter()
            .map(|p| if p.deleted { None } else { p.address })
            .collect()
    }

    /// Why this node may not take `new` at `now`, in CTDB's words, or
    /// `Ok` (see [`Member::reload_nodes`]).
    ///
    /// # Errors
    ///
    /// Every problem, one per line.
    pub fn check_reload(&self, new: &NodesFile, now: Duration) -> Result<(), String> {
        let running = NodesFile::from_addrs(self.node_addrs());
        let mut problems: Vec<String> = match running.check_reload(new) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        };
        if !new.is_live(self.pnn) {
            problems.push(format!("ERROR: Node {} is still connected", self.pnn));
        }
        for (i, p) in self.peers.iter().enumerate() {
            let Ok(pnn) = Pnn::try_from(i) else { break };
            if pnn != self.pnn && !p.deleted && !new.is_live(pnn) && self.connected(pnn, now) {
                problems.push(format!("ERROR: Node {pnn} is still connected"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }

    /// Takes the node list `new` at `now`: new nodes start as never heard
    /// from, deleted ones are forgotten (their grants, votes and
    /// certificates no longer count), undeleted ones start afresh; the
    /// majority is that of the new list, and a new membership is published
    /// at once.
    ///
    /// # Errors
    ///
    /// As [`Member::check_reload`]; nothing changes then.
    pub fn reload_nodes(
        &mut self,
        now: Duration,
        new: &NodesFile,
        out: &mut Vec<Output>,
    ) -> Result<(), String> {
        self.check_reload(new, now)?;
        for (i, entry) in new.nodes.iter().enumerate() {
            match self.peers.get_mut(i) {
                Some(p) if p.deleted == entry.is_deleted() => {}
                Some(p) => *p = Peer::fresh(entry.address),
                None => self.peers.push(Peer::fresh(entry.address)),
            }
        }
        self.configured = new.configured();
        self.scratch = Vec::with_capacity(self.peers.len());
        self.scratch_until = Vec::with_capacity(self.peers.len());
        // An update of the old length can never be adopted again.
        if self
            .leader_update
            .as_ref()
            .is_some_and(|u| u.nodes.len() != self.peers.len())
        {
            self.leader_update = None;
        }
        let mut nodes = self.local_view_infos();
        for n in &mut nodes {
            if let Some(old) = self.published.nodes.get(idx(n.pnn)) {
                if !n.flags.contains(NodeFlags::DELETED) && !old.flags.contains(NodeFlags::DELETED)
                {
                    n.flags = old.flags;
                }
            }
        }
        self.published.nodes = nodes;
        self.published.generation = self.next_generation();
        self.max_gen = self.max_gen.max(self.published.generation);
        self.leader_gen = 0;
        self.next_hb = now;
        out.push(Output::Publish(self.published.clone()));
        self.step(now, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::membership::Config;

    fn file(t: &str) -> NodesFile {
        NodesFile::parse(Path::new("nodes"), t).unwrap()
    }

    #[test]
    fn adds_deletes_and_refuses_as_ctdb() {
        let mut m = Member::new(
            Config::default(),
            &file("192.0.2.1\n192.0.2.2\n192.0.2.3\n"),
            0,
            Duration::ZERO,
        )
        .unwrap();
        let mut out = Vec::new();
        let now = Duration::from_secs(1);
        // A changed address is refused, nothing changes.
        let err = m
            .reload_nodes(now, &file("192.0.2.1\n192.0.2.9\n192.0.2.3\n"), &mut out)
            .unwrap_err();
        assert_eq!(
            err,
            "Node 1 has changed IP address (was 192.0.2.2, now 192.0.2.9)"
        );
        assert_eq!(m.membership().nodes.len(), 3);
        // This node cannot be deleted.
        assert!(m
            .check_reload(&file("#\n192.0.2.2\n192.0.2.3\n"), now)
            .is_err());
        // Add node 3, delete the (disconnected) node 2.
        m.reload_nodes(
            now,
            &file("192.0.2.1\n192.0.2.2\n#192.0.2.3\n192.0.2.4\n"),
            &mut out,
        )
        .unwrap();
        let pub_ = m.membership();
        assert_eq!(pub_.nodes.len(), 4);
        assert!(pub_.nodes[2].flags.contains(NodeFlags::DELETED));
        assert!(pub_.nodes[3].flags.contains(NodeFlags::DISCONNECTED));
        assert_eq!(m.configured, 3);
        assert!(out
            .iter()
            .any(|o| matches!(o, Output::Publish(p) if p.nodes.len() == 4)));
        // Undelete node 2.
        m.reload_nodes(
            now,
            &file("192.0.2.1\n192.0.2.2\n192.0.2.3\n192.0.2.4\n"),
            &mut out,
        )
        .unwrap();
        assert_eq!(m.configured, 4);
        assert!(!m.membership().nodes[2].flags.contains(NodeFlags::DELETED));
    }
}
