//! Elections: the pre-vote that asks whether a candidate could win without disturbing
//! anyone (Raft §9.6), and the vote itself, one per server per term, only for a candidate
//! whose log is at least as up to date (§5.2, §5.4.1). An election starts when a backup
//! has heard nothing for an election timeout, or at once when its connection from the
//! primary closes (`connection_lost`), or when the primary hands its office over.

use std::collections::BTreeSet;

use tracing::{debug, info};

use super::*;

impl Node {
    // ---- Elections -----------------------------------------------------------------------

    /// The connection from `peer` closed (EOF or reset). If `peer` is our primary, it is
    /// probably gone: its kernel closed the socket when its process died. Rather than wait
    /// an election timeout, this backup starts a pre-vote soon: the first backup (by name,
    /// among the voters other than the primary) at once, the next two ticks later, and so
    /// on, so that two backups rarely split the vote. A backup whose log is behind is
    /// refused by the others' up-to-date check, and the next one follows. The pre-vote wins
    /// only if a majority has lost the primary too, or has not heard from it within two
    /// heartbeats (`in_lease`): one broken connection cannot depose a healthy primary.
    pub fn connection_lost(&mut self, peer: &NodeId) {
        let mut others: Vec<NodeId> = self
            .log
            .members()
            .iter()
            .filter(|m| *m != peer)
            .cloned()
            .collect();
        others.sort();
        let Some(rank) = others.iter().position(|m| m == &self.id) else {
            return;
        };
        let Role::Backup(backup) = &mut self.role else {
            return;
        };
        if backup.primary.as_ref() != Some(peer) || backup.lost {
            return;
        }
        backup.lost = true;
        let wait = 2 * rank as u32;
        backup.campaign_in = Some(wait);
        info!(primary = %peer, wait_ticks = wait, "the connection from the primary closed");
        if wait == 0 {
            let ticks = backup.idle_ticks;
            self.pre_campaign(ElectionCause::ConnectionLost {
                primary: peer.clone(),
                ticks,
            });
        }
    }

    /// Asks every member whether it would vote for us, without changing any term (§9.6).
    pub(super) fn pre_campaign(&mut self, cause: ElectionCause) {
        if !self.is_voter() {
            return;
        }
        self.outputs.push(Output::Election {
            term: self.term + 1,
            cause,
        });
        self.role = Role::Candidate(Candidate {
            pre: true,
            votes: BTreeSet::from([self.id.clone()]),
            elapsed: 0,
        });
        self.reset_election_timeout();
        self.report_role();
        if self.has_won() {
            self.campaign(false);
            return;
        }
        self.ask_for_votes(self.term + 1, true, false);
    }

    /// A real election: a new term, our own vote, and a request to every member (§5.2).
    /// `transfer`: the primary handed over to us, so voters answer despite their lease.
    pub(super) fn campaign(&mut self, transfer: bool) {
        self.term += 1;
        self.vote = Some(self.id.clone());
        self.persist_hard_state();
        self.role = Role::Candidate(Candidate {
            pre: false,
            votes: BTreeSet::from([self.id.clone()]),
            elapsed: 0,
        });
        self.report_role();
        info!(term = self.term, "campaigning");
        if self.has_won() {
            self.become_primary();
            return;
        }
        self.ask_for_votes(self.term, false, transfer);
    }

    /// `TimeoutNow` from `from`: if it is our primary, it hands its office to us. Campaign
    /// at once, in a new term, without a pre-vote (Raft thesis 3.10).
    pub(super) fn on_timeout_now(&mut self, from: NodeId) {
        let follows = matches!(&self.role, Role::Backup(b) if b.primary.as_ref() == Some(&from));
        if !follows || !self.is_voter() {
            debug!(%from, "ignoring a hand-over from a server we do not follow");
            return;
        }
        self.outputs.push(Output::Election {
            term: self.term + 1,
            cause: ElectionCause::HandOver { from },
        });
        self.campaign(true);
    }

    pub(super) fn ask_for_votes(&mut self, term: Term, pre: bool, transfer: bool) {
        let message = Message::Vote {
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
            pre,
            transfer,
        };
        for member in self.members() {
            if member != self.id {
                self.send_with_term(member, term, message.clone());
            }
        }
    }

    /// A (pre-)vote request in a term at least ours (§5.2, §5.4.1).
    pub(super) fn on_vote(
        &mut self,
        from: NodeId,
        term: Term,
        last_index: Index,
        last_term: Term,
        pre: bool,
    ) {
        let up_to_date = (last_term, last_index) >= (self.log.last_term(), self.log.last_index());
        let granted = if pre {
            term > self.term && up_to_date
        } else {
            #[allow(unused_mut)]
            let mut free = self.vote.as_ref().is_none_or(|vote| vote == &from);
            #[cfg(test)]
            if self.opts.planted_bug == Some(PlantedBug::VoteTwicePerTerm) {
                free = true;
            }
            up_to_date && free
        };
        if granted && !pre {
            self.vote = Some(from.clone());
            self.persist_hard_state();
            if let Role::Backup(backup) = &mut self.role {
                backup.idle_ticks = 0;
            }
        }
        debug!(candidate = %from, term, pre, granted, "vote requested");
        let reply_term = if pre && granted { term } else { self.term };
        self.send_with_term(from, reply_term, Message::VoteResponse { granted, pre });
    }

    pub(super) fn on_vote_response(&mut self, from: NodeId, term: Term, granted: bool, pre: bool) {
        let expected_term = if pre { self.term + 1 } else { self.term };
        let is_member = self.members().contains(&from);
        let Role::Candidate(candidate) = &mut self.role else {
            return;
        };
        if candidate.pre != pre || term != expected_term || !granted || !is_member {
            return;
        }
        candidate.votes.insert(from);
        if self.has_won() {
            if pre {
                self.campaign(false);
            } else {
                self.become_primary();
            }
        }
    }

    pub(super) fn has_won(&self) -> bool {
        let Role::Candidate(candidate) = &self.role else {
            return false;
        };
        let members = self.members();
        let votes = members
            .iter()
            .filter(|m| candidate.votes.contains(*m))
            .count();
        votes >= quorum(members.len())
    }
}
