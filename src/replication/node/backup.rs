//! The backup's side of the protocol: following the primary, merging its appends (Raft
//! §5.3), and installing its snapshots.

use tracing::{debug, info};

use super::*;

impl Node {
    /// A snapshot from `from`, the primary of `term`, arrived whole (the driver checked its
    /// checksum). Returns whether the driver should install it: not if it is stale or covers
    /// only what this node has committed already. When installing, the node's log now
    /// starts after the snapshot, and its outputs are a `Write::Compact` and the
    /// acknowledgement, which must follow the durable snapshot file.
    pub fn install_snapshot(&mut self, from: NodeId, term: Term, meta: SnapshotMeta) -> bool {
        if term < self.term {
            debug!(from = %from, term, "dropping a snapshot from an old term");
            return false;
        }
        if term > self.term {
            self.become_backup(term, Some(from.clone()));
        }
        self.follow(&from);
        if meta.index <= self.commit {
            // Covered already; committed entries match the primary's.
            self.send(
                from,
                Message::AppendAccepted {
                    match_index: meta.index,
                    round: 0,
                },
            );
            return false;
        }
        info!(
            index = meta.index,
            term = meta.term,
            "installing a snapshot from the primary"
        );
        self.log.install(meta.clone());
        // Entries committed earlier in this round and not yet drained are covered by the
        // snapshot, which replaces the state they would be applied to.
        self.outputs
            .retain(|output| !matches!(output, Output::Apply(_)));
        self.commit = meta.index;
        self.applied = meta.index;
        self.persisted = self.persisted.min(self.log.last_index()).max(meta.index);
        self.outputs
            .push(Output::Write(Write::Compact(meta.clone())));
        self.send(
            from,
            Message::AppendAccepted {
                match_index: meta.index,
                round: 0,
            },
        );
        self.report_role();
        true
    }

    // ---- Backup side ---------------------------------------------------------------------

    /// An append from the primary of our term (Raft §5.3).
    pub(super) fn on_append(
        &mut self,
        from: NodeId,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
        round: u64,
    ) {
        self.follow(&from);

        let last_index = self.log.last_index();
        // Entries up to our snapshot are committed, so they match the primary's whatever
        // `prev_term` says; `merge` skips the ones the snapshot covers.
        let prev_matches =
            prev_index < self.log.base_index() || self.log.term_at(prev_index) == Some(prev_term);
        if prev_index > last_index {
            // A gap: ask for what is missing instead of applying out of order.
            self.send(
                from,
                Message::AppendRejected {
                    prev_index,
                    hint: last_index,
                    last_index,
                    round,
                },
            );
            return;
        }
        if !prev_matches {
            // Skip the whole conflicting term; committed entries always match.
            let hint = (self.log.first_index_of_term_at(prev_index) - 1).max(self.commit);
            self.send(
                from,
                Message::AppendRejected {
                    prev_index,
                    hint,
                    last_index,
                    round,
                },
            );
            return;
        }

        let last_new = prev_index + entries.len() as Index;
        let (new, cut) = self.log.merge(entries);
        if let Some(cut) = cut {
            assert!(
                cut > self.commit,
                "committed entry {cut} overwritten on {} (commit {})",
                self.id,
                self.commit
            );
            self.persisted = self.persisted.min(cut - 1);
        }
        if !new.is_empty() {
            self.outputs.push(Output::Write(Write::Entries(new)));
        }
        // Only what this append verified may be committed: entries past it may be stale.
        let commit = commit.min(last_new);
        if commit > self.commit {
            self.commit = commit;
            self.emit_apply();
        }
        self.send(
            from,
            Message::AppendAccepted {
                match_index: last_new,
                round,
            },
        );
    }

    /// Something from `from`, the primary of our term, arrived: follow it (a candidate
    /// gives up) and restart the election timer.
    pub(super) fn follow(&mut self, from: &NodeId) {
        match &mut self.role {
            Role::Primary(_) => panic!(
                "two primaries in term {}: {} and {}",
                self.term, self.id, from
            ),
            Role::Candidate(_) => self.become_backup(self.term, Some(from.clone())),
            Role::Backup(backup) => match &backup.primary {
                Some(primary) => assert_eq!(
                    primary, from,
                    "two primaries in term {}: {} and {}",
                    self.term, primary, from
                ),
                None => {
                    backup.primary = Some(from.clone());
                    self.report_role();
                }
            },
        }
        if let Role::Backup(backup) = &mut self.role {
            backup.idle_ticks = 0;
            backup.lost = false;
            backup.campaign_in = None;
        }
    }
}
