//! What an operator can see of a node beyond its status: how far each peer is, when it was
//! last heard from, and whether this server hears a primary at all. Read-only; the metrics
//! and health endpoints are built on it.

use super::{Node, Options, Role};
use crate::replication::{Index, NodeId};

/// One peer as this server sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerView {
    pub id: NodeId,
    /// The highest index known to be durable on the peer (primary only).
    pub matched: Option<Index>,
    /// Ticks since the peer was last heard from; `None` if it never was (or, on a backup,
    /// for any peer but the primary).
    pub heard_ticks_ago: Option<u64>,
}

impl Node {
    /// The timing and limits this node runs with.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// The highest index known durable on `peer` (primary only): a lookup, for the write
    /// path, where [`peers`](Self::peers) would copy every member.
    pub fn match_index(&self, peer: &NodeId) -> Option<Index> {
        match &self.role {
            Role::Primary(primary) => primary.progress.get(peer).map(|p| p.matched),
            _ => None,
        }
    }

    /// Every other member, with what this server knows of it: on the primary, each backup's
    /// progress; on a backup, when the primary was last heard.
    pub fn peers(&self) -> Vec<PeerView> {
        let others = self.members().into_iter().filter(|id| *id != self.id);
        match &self.role {
            Role::Primary(primary) => others
                .map(|id| {
                    let progress = primary.progress.get(&id);
                    PeerView {
                        matched: progress.map(|p| p.matched),
                        heard_ticks_ago: progress
                            .map(|p| p.last_heard())
                            .filter(|&at| at > 0)
                            .map(|at| self.ticks.saturating_sub(at)),
                        id,
                    }
                })
                .collect(),
            Role::Backup(backup) => others
                .map(|id| PeerView {
                    matched: None,
                    heard_ticks_ago: (backup.primary.as_ref() == Some(&id))
                        .then_some(u64::from(backup.idle_ticks)),
                    id,
                })
                .collect(),
            Role::Candidate(_) => others
                .map(|id| PeerView {
                    id,
                    matched: None,
                    heard_ticks_ago: None,
                })
                .collect(),
        }
    }

    /// Whether this server is a member of a cluster with a primary it hears from: it is the
    /// primary (check-quorum deposes a primary that stops hearing a majority), or a member
    /// that follows a primary heard from within an election timeout over a connection that
    /// has not closed.
    pub fn hears_primary(&self) -> bool {
        if !self.members().contains(&self.id) {
            return false;
        }
        match &self.role {
            Role::Primary(_) => true,
            Role::Backup(backup) => {
                backup.primary.is_some()
                    && !backup.lost
                    && backup.idle_ticks < self.opts.election_ticks
            }
            Role::Candidate(_) => false,
        }
    }
}
