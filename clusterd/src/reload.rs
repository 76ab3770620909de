//! `reloadnodes` in the membership state machine: a running [`Member`]
//! takes a new nodes file (CTDB's `ctdb_control_reload_nodes_file`).
//! Nodes may be added at the end, deleted (`#`, only when not connected)
//! or undeleted; a node never changes address in place and entries never
//! vanish ([`NodesFile::check_reload`]). A child module of `membership`,
//! so that it sees the peers; pure like its parent.
//!
//! While a change is being completed, every quorum is counted jointly
//! (docs/clusterd.md, "Node list changes"): a node counts votes, grants
//! and certificates in its own list *and* in every other list some node
//! may still count with alone — its own earlier lists, the lists peers'
//! heartbeats carry (`nodes`) and the lists they say they still count
//! (`also`). An earlier list K is dropped once it is harmless: every node
//! of both K and this node's list has carried this node's list in its
//! heartbeats for `lease + margin` (so none counts K alone any more, and
//! whatever it granted or was granted under K alone has ended). A node
//! that never heard of the change (it started with the new file, or
//! missed the reload) learns it from the first heartbeat of a node that
//! counts both lists. Membership updates of another length are ignored
//! (see `on_update`) and heartbeats from a node this one does not know are
//! dropped; both end when every node has reloaded, which `ipfailover
//! reloadnodes` does on every connected node at once.

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
            list: NodeSet::EMPTY,
            list_since: None,
            also: NodeSet::EMPTY,
        }
    }
}

impl Member {
    /// The node lists every quorum is counted with now: this node's own
    /// first, then the lists a node list change in progress may still have
    /// some node count with alone (empty beyond the first when no change
    /// is in progress).
    #[must_use]
    pub fn node_lists(&self) -> &[NodeSet] {
        &self.lists
    }

    /// List `other` can no longer be counted alone by anyone, as far as
    /// this node can tell at `now`: every node of both `other` and this
    /// node's list (this one included) has counted with this node's list
    /// for at least `lease + margin` (heard so in its heartbeats).
    /// Nodes of `other` that this node's list deleted are not waited for:
    /// a node is deleted only when disconnected, and must stay shut down
    /// (docs/clusterd.md).
    fn harmless(&self, other: &NodeSet, now: Duration) -> bool {
        if *other == self.live {
            return true;
        }
        let hold = self.hold();
        for (i, p) in self.peers.iter().enumerate() {
            let pnn = super::pnn_of(i);
            if !other.contains(pnn) || !self.live.contains(pnn) {
                continue;
            }
            let settled = if pnn == self.pnn {
                now >= self.live_since + hold
            } else {
                p.list == self.live && p.list_since.is_some_and(|s| now >= s + hold)
            };
            if !settled {
                return false;
            }
        }
        true
    }

    /// Recomputes [`Member::node_lists`] at `now`. Allocates only while a
    /// change is in progress (the first time a list is added).
    pub(super) fn refresh_lists(&mut self, now: Duration) {
        self.lists.clear();
        self.lists.push(self.live);
        if self.bug == Some(super::InjectedBug::OwnListOnly) {
            self.earlier_lists.clear();
            return;
        }
        let mut earlier = std::mem::take(&mut self.earlier_lists);
        earlier.retain(|k| !self.harmless(k, now));
        for k in &earlier {
            if !self.lists.contains(k) {
                self.lists.push(*k);
            }
        }
        self.earlier_lists = earlier;
        for i in 0..self.peers.len() {
            let p = &self.peers[i];
            if p.deleted || p.list_since.is_none() {
                continue;
            }
            for k in [p.list, p.also] {
                if !k.is_empty() && !self.lists.contains(&k) && !self.harmless(&k, now) {
                    self.lists.push(k);
                }
            }
        }
    }

    /// The same machine, also counting with `lists`: what an earlier
    /// instance of this node counted with when it stopped (the state file
    /// of `clusterd::state`). A node restarted with a new nodes file while
    /// a node list change is in progress thus still counts the lists it
    /// knew, until they are harmless. Call before the first input.
    #[must_use]
    pub fn with_remembered_lists(mut self, lists: &[NodeSet]) -> Self {
        for k in lists {
            if !k.is_empty() && *k != self.live && !self.earlier_lists.contains(k) {
                self.earlier_lists.push(*k);
            }
        }
        let now = self.live_since;
        self.refresh_lists(now);
        self
    }

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
        // Nodes that join (added or undeleted) may start before some node
        // has taken the new list, and until a node that counts both lists
        // reaches them they count the new list alone: they must not be a
        // quorum of it by themselves (docs/clusterd.md, "Node list
        // changes"). A deliberate difference from CTDB, which adds any
        // number at once.
        let joining = (0..new.nodes.len())
            .filter(|&i| {
                let pnn = super::pnn_of(i);
                new.is_live(pnn) && !self.live.contains(pnn)
            })
            .count();
        let size = new.configured();
        let too_many = if self.cfg.lock {
            2 * joining >= size
        } else {
            2 * joining > size
        };
        if joining > 0 && too_many {
            let most = if self.cfg.lock {
                (size - joining).saturating_sub(1)
            } else {
                size - joining
            };
            let advice = if most == 0 {
                "a one-node cluster with a cluster lock cannot grow by reloadnodes: restart \
                 it with the new file"
                    .to_string()
            } else {
                format!("add at most {most} in one reload")
            };
            problems.push(format!(
                "ERROR: {joining} nodes would join {} running ones at once: the joining nodes \
                 would be {} of the new list of {size} by themselves; {advice}",
                size - joining,
                if self.cfg.lock {
                    "half or more"
                } else {
                    "a majority"
                },
            ));
        }
        if self.earlier_lists.len() >= super::MAX_EARLIER_LISTS {
            problems.push(format!(
                "ERROR: {} earlier node list changes are still being completed (a node of \
                 the old lists has not yet been heard with the new one); wait until \
                 every node is connected and try again",
                self.earlier_lists.len()
            ));
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
        let before = self.live;
        for (i, entry) in new.nodes.iter().enumerate() {
            match self.peers.get_mut(i) {
                Some(p) if p.deleted == entry.is_deleted() => {}
                Some(p) => *p = Peer::fresh(entry.address),
                None => self.peers.push(Peer::fresh(entry.address)),
            }
        }
        self.live = super::list_of(&self.peers);
        if self.live != before {
            // Counted jointly until harmless (see `refresh_lists`).
            if !self.earlier_lists.contains(&before) {
                self.earlier_lists.push(before);
            }
            self.live_since = now;
        }
        self.refresh_lists(now);
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
        assert_eq!(m.live.len(), 3);
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
        assert_eq!(m.live.len(), 4);
        assert!(!m.membership().nodes[2].flags.contains(NodeFlags::DELETED));
        // Both changes are counted jointly until harmless.
        assert_eq!(m.node_lists().len(), 3);
    }

    fn nodes(n: usize) -> NodesFile {
        file(
            &(1..=n)
                .map(|i| format!("192.0.2.{i}\n"))
                .collect::<String>(),
        )
    }

    #[test]
    fn the_joining_nodes_may_not_be_a_quorum_of_the_new_list_alone() {
        let now = Duration::from_secs(1);
        for (lock, running, most) in [(false, 1, 1), (false, 3, 3), (true, 2, 1), (true, 3, 2)] {
            let cfg = Config {
                lock,
                ..Config::default()
            };
            let m = Member::new(cfg, &nodes(running), 0, Duration::ZERO).unwrap();
            assert_eq!(m.check_reload(&nodes(running + most), now), Ok(()));
            let err = m.check_reload(&nodes(running + most + 1), now).unwrap_err();
            assert!(
                err.contains(&format!("add at most {most} in one reload")),
                "lock {lock}, {running} running: {err}"
            );
        }
        let m = Member::new(
            Config {
                lock: true,
                ..Config::default()
            },
            &nodes(1),
            0,
            Duration::ZERO,
        )
        .unwrap();
        let err = m.check_reload(&nodes(2), now).unwrap_err();
        assert!(
            err.contains("a one-node cluster with a cluster lock cannot grow"),
            "{err}"
        );
    }

    #[test]
    fn an_earlier_list_is_dropped_once_every_node_of_it_runs_the_new_one() {
        let mut m = Member::new(Config::default(), &nodes(3), 0, Duration::ZERO).unwrap();
        let mut out = Vec::new();
        let now = Duration::from_secs(1);
        m.reload_nodes(now, &nodes(4), &mut out).unwrap();
        assert_eq!(m.node_lists().len(), 2);
        let hold = m.hold();
        let live = m.live;
        // Nodes 1 and 2 (of both lists) heard with the new list.
        for pnn in [1, 2] {
            let p = &mut m.peers[pnn];
            p.list = live;
            p.list_since = Some(now);
        }
        m.refresh_lists(now + hold - Duration::from_millis(1));
        assert_eq!(m.node_lists().len(), 2, "not before lease + margin");
        m.refresh_lists(now + hold);
        assert_eq!(m.node_lists(), [live].as_slice());
    }
}
