//! Elections: the pre-vote that asks whether a candidate could win without disturbing
//! anyone (Raft §9.6), and the vote itself, one per server per term, only for a candidate
//! whose log is at least as up to date (§5.2, §5.4.1).

use std::collections::BTreeSet;

use tracing::{debug, info};

use super::*;

impl Node {
    // ---- Elections -----------------------------------------------------------------------

    /// Asks every member whether it would vote for us, without changing any term (§9.6).
    pub(super) fn pre_campaign(&mut self) {
        if !self.is_voter() {
            return;
        }
        self.role = Role::Candidate(Candidate {
            pre: true,
            votes: BTreeSet::from([self.id.clone()]),
            elapsed: 0,
        });
        self.reset_election_timeout();
        self.report_role();
        if self.has_won() {
            self.campaign();
            return;
        }
        self.ask_for_votes(self.term + 1, true);
    }

    /// A real election: a new term, our own vote, and a request to every member (§5.2).
    pub(super) fn campaign(&mut self) {
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
        self.ask_for_votes(self.term, false);
    }

    pub(super) fn ask_for_votes(&mut self, term: Term, pre: bool) {
        let message = Message::Vote {
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
            pre,
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
                self.campaign();
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
