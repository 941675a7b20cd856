//! The primary's side of the protocol: replicating to every backup within its window,
//! committing what a majority holds (Raft §5.3, §5.4.2), membership changes one server at a
//! time, and check-quorum.

use tracing::{debug, info, warn};

use super::*;

impl Node {
    // ---- Primary side --------------------------------------------------------------------

    pub(super) fn on_append_accepted(&mut self, from: NodeId, match_index: Index, round: u64) {
        let last_index = self.log.last_index();
        let Role::Primary(primary) = &mut self.role else {
            return;
        };
        let Some(progress) = primary.progress.get_mut(&from) else {
            return;
        };
        progress.heard(self.ticks);
        progress.echoed(round);
        if match_index > last_index {
            warn!(from = %from, match_index, "backup claims entries we never sent; ignored");
            return;
        }
        if progress.accepted(match_index) {
            self.maybe_commit();
            self.maybe_promote_learner();
        }
    }

    pub(super) fn on_append_rejected(
        &mut self,
        from: NodeId,
        prev_index: Index,
        hint: Index,
        round: u64,
    ) {
        let last_index = self.log.last_index();
        let Role::Primary(primary) = &mut self.role else {
            return;
        };
        if let Some(progress) = primary.progress.get_mut(&from) {
            progress.heard(self.ticks);
            progress.echoed(round);
            debug!(from = %from, prev_index, hint, "append rejected; probing back");
            progress.rejected(prev_index, hint.min(last_index));
        }
    }

    /// Sends every backup what it lacks, as far as its window allows.
    pub(super) fn send_appends(&mut self) {
        let Role::Primary(primary) = &mut self.role else {
            return;
        };
        let last_index = self.log.last_index();
        let base_index = self.log.base_index();
        let mut sends = Vec::new();
        let mut snapshots = Vec::new();
        for (peer, progress) in primary.progress.iter_mut() {
            if progress.next <= base_index {
                // What it needs next was compacted away: it gets the snapshot instead.
                if progress.start_snapshot(base_index) {
                    snapshots.push(peer.clone());
                }
                continue;
            }
            while progress.next <= last_index
                && progress.can_send(
                    self.opts.max_inflight,
                    last_index + 1 - progress.next >= self.opts.max_append_entries as Index,
                )
            {
                let entries = self
                    .log
                    .entries_from(progress.next, self.opts.max_append_entries);
                let Some(last) = entries.last().map(|e| e.index) else {
                    break;
                };
                let prev_index = progress.next - 1;
                let prev_term = self.log.term_at(prev_index).unwrap_or_default();
                progress.sent(last);
                sends.push((
                    peer.clone(),
                    Message::Append {
                        prev_index,
                        prev_term,
                        entries,
                        commit: self.commit,
                        round: primary.round,
                    },
                ));
            }
        }
        for (to, message) in sends {
            self.send(to, message);
        }
        for to in snapshots {
            info!(backup = %to, "backup is behind the compacted log; sending the snapshot");
            self.outputs.push(Output::SendSnapshot { to });
        }
    }

    /// An empty append to every backup: keeps them from starting elections, carries the
    /// commit index, and finds backups whose log fell behind.
    pub(super) fn heartbeat(&mut self) {
        let Role::Primary(primary) = &self.role else {
            return;
        };
        let beats: Vec<_> = primary
            .progress
            .iter()
            .map(|(peer, progress)| {
                let prev_index = progress.heartbeat_index();
                let message = Message::Append {
                    prev_index,
                    prev_term: self.log.term_at(prev_index).unwrap_or_default(),
                    entries: Vec::new(),
                    commit: self.commit,
                    round: primary.round,
                };
                (peer.clone(), message)
            })
            .collect();
        for (to, message) in beats {
            self.send(to, message);
        }
    }

    /// Commits the highest index that a majority of the members hold durably, if it is of
    /// this term (Raft §5.4.2: older entries are committed only through it).
    pub(super) fn maybe_commit(&mut self) {
        #[allow(unused_mut)]
        let mut needed = quorum(self.log.members().len());
        #[cfg(test)]
        if self.opts.planted_bug == Some(PlantedBug::CommitWithoutQuorum) {
            needed = 1;
        }
        let quorum_index = self.reached_by(needed, self.persisted, |p| p.matched);
        if quorum_index > self.commit && self.log.term_at(quorum_index) == Some(self.term) {
            self.commit = quorum_index;
            self.emit_apply();
        }
    }

    /// The highest value that at least `needed` members reach, this primary counting with
    /// `own` and every other member with `of` its progress (0 if it has none): what a
    /// majority holds (commit) or has echoed (ReadIndex). 0 on any other role.
    pub(super) fn reached_by(&self, needed: usize, own: u64, of: impl Fn(&Progress) -> u64) -> u64 {
        let Role::Primary(primary) = &self.role else {
            return 0;
        };
        let mut values: Vec<u64> = self
            .log
            .members()
            .iter()
            .map(|member| {
                if member == &self.id {
                    own
                } else {
                    primary.progress.get(member).map_or(0, &of)
                }
            })
            .collect();
        values.sort_unstable_by(|a, b| b.cmp(a));
        values
            .get(needed.min(values.len()).saturating_sub(1))
            .copied()
            .unwrap_or(0)
    }

    /// Proposes a configuration adding the first learner that has caught up, once no other
    /// configuration change is in flight and this term's first entry is committed (both
    /// needed for single-server changes to keep majorities overlapping).
    pub(super) fn maybe_promote_learner(&mut self) {
        let Role::Primary(primary) = &mut self.role else {
            return;
        };
        if primary.learners.is_empty() {
            return;
        }
        let (config_index, mut members) = self.log.config();
        if config_index > self.commit || primary.term_start > self.commit {
            return;
        }
        let ready = primary.learners.iter().find(|learner| {
            primary
                .progress
                .get(*learner)
                .is_some_and(|p| p.matched >= self.commit)
        });
        let Some(learner) = ready.cloned() else {
            return;
        };
        primary.learners.remove(&learner);
        info!(server = %learner, "server caught up; adding it to the configuration");
        members.push(learner);
        members.sort();
        let entry = self.log.append(self.term, Payload::Config(members));
        self.outputs
            .push(Output::Write(Write::Entries(vec![entry])));
    }

    /// Check-quorum: whether a majority (this primary included) answered at or after tick
    /// `since`, the tick of the previous check. An answer handled in the tick of that check
    /// came after it (a check runs inside `tick`, before any message of that tick).
    pub(super) fn heard_from_majority_since(&self, since: u64) -> bool {
        self.majority_where(|p| p.last_heard() >= since)
    }

    /// How far the log may be compacted without cutting off a backup that is catching up
    /// (on a primary; `None` elsewhere, or if nobody needs holding back): the lowest index a
    /// backup heard from within an election timeout still needs, that is the entry after
    /// its snapshot in flight, or after what it matched. A backup more than `slack`
    /// entries behind `upto` without a snapshot in flight does not hold the log: it will
    /// get a snapshot instead. The log is held for a snapshot in flight whatever its age,
    /// since a large one can take long, and a log compacted beyond it would need another.
    pub fn compaction_floor(&self, upto: Index, slack: Index) -> Option<Index> {
        let Role::Primary(primary) = &self.role else {
            return None;
        };
        let recent = u64::from(self.opts.election_ticks);
        primary
            .progress
            .values()
            .filter(|p| p.last_heard() + recent >= self.ticks)
            .filter_map(|p| match p.snapshot_index() {
                Some(snapshot) => Some(snapshot),
                None if p.matched + slack >= upto => Some(p.matched),
                None => None,
            })
            .min()
    }

    /// The driver is still sending the snapshot to `to` (a piece of it was taken): keep
    /// waiting for it rather than start it again.
    pub fn snapshot_moving(&mut self, to: &NodeId) {
        if let Role::Primary(primary) = &mut self.role
            && let Some(progress) = primary.progress.get_mut(to)
        {
            progress.snapshot_moving();
        }
    }

    /// Whether this primary and the backups whose progress satisfies `holds` make a majority
    /// of the members (false on any other role).
    pub(super) fn majority_where(&self, holds: impl Fn(&Progress) -> bool) -> bool {
        let Role::Primary(primary) = &self.role else {
            return false;
        };
        let members = self.log.members();
        let count = members
            .iter()
            .filter(|member| {
                *member == &self.id || primary.progress.get(*member).is_some_and(&holds)
            })
            .count();
        count >= quorum(members.len())
    }
}
