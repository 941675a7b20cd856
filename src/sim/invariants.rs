//! The safety checks, run on what the servers do as it happens.
//!
//! Each check keeps a small record of the whole run, so that it costs little per step:
//! every term's primary, every server's vote per term, every entry ever committed (applied
//! by anyone) with its outcome, and every server's term in memory and on disk. A check that
//! fails returns a [`Violation`] naming the broken property.

use std::collections::BTreeMap;

use super::{Invariant, Violation};
use crate::app::Outcome;
use crate::replication::{Entry, Envelope, Message, NodeId, Term};

/// The record of a run, as far as safety is concerned.
pub struct Invariants {
    /// term → (primary, its incarnation).
    primaries: BTreeMap<Term, (NodeId, u64)>,
    /// (voter, term) → the candidate it granted its vote to.
    votes: BTreeMap<(NodeId, Term), NodeId>,
    check_votes: bool,
    /// Every committed entry, by index - 1: applies go in order from 1 on every server, so
    /// what was ever applied anywhere is a prefix of the log.
    committed: Vec<Entry>,
    /// The application's outcome of each committed command.
    outcomes: Vec<Option<Outcome>>,
    /// Per server: its term in memory (current incarnation) and the highest durable term.
    terms: Vec<Term>,
    durable_terms: Vec<Term>,
}

impl Invariants {
    pub fn new(servers: usize, check_votes: bool) -> Invariants {
        Invariants {
            primaries: BTreeMap::new(),
            votes: BTreeMap::new(),
            check_votes,
            committed: Vec::new(),
            outcomes: Vec::new(),
            terms: vec![0; servers],
            durable_terms: vec![0; servers],
        }
    }

    /// The highest committed index so far.
    pub fn commit_index(&self) -> u64 {
        self.committed.len() as u64
    }

    /// A server became primary: it must be the only one of its term (Raft §5.2), and its log
    /// must hold every entry committed so far (leader completeness, Raft §5.4.1).
    pub fn became_primary(
        &mut self,
        id: &NodeId,
        incarnation: u64,
        term: Term,
        log: &[Entry],
    ) -> Result<(), Violation> {
        match self.primaries.get(&term) {
            Some((other, other_incarnation)) if other != id || *other_incarnation != incarnation => {
                return Err(Violation::new(
                    Invariant::OnePrimaryPerTerm,
                    format!(
                        "two primaries in term {term}: {other} (incarnation {other_incarnation}) \
                         and {id} (incarnation {incarnation})"
                    ),
                ));
            }
            _ => {
                self.primaries.insert(term, (id.clone(), incarnation));
            }
        }
        for committed in &self.committed {
            let held = log.get(committed.index as usize - 1);
            if held != Some(committed) {
                return Err(Violation::new(
                    Invariant::PrimaryHasAllCommitted,
                    format!(
                        "{id} became primary of term {term} with {} at index {} where {}@{} \
                         ({:?}) is committed",
                        held.map_or("nothing".to_string(), |e| format!(
                            "{}@{} ({:?})",
                            e.index, e.term, e.payload
                        )),
                        committed.index,
                        committed.index,
                        committed.term,
                        committed.payload
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A server applied `entry` (the server checked the order): it must be the entry every
    /// other server applied at that index, with the same outcome.
    pub fn applied(
        &mut self,
        id: &NodeId,
        entry: &Entry,
        outcome: &Option<Outcome>,
    ) -> Result<(), Violation> {
        let position = entry.index as usize - 1;
        match self.committed.get(position) {
            None => {
                // The server applied every index before this one, so this extends the prefix.
                assert_eq!(position, self.committed.len(), "applies are checked in order");
                self.committed.push(entry.clone());
                self.outcomes.push(outcome.clone());
                Ok(())
            }
            Some(committed) if committed != entry => Err(Violation::new(
                Invariant::CommittedNeverChanges,
                format!(
                    "{id} applied {}@{} ({:?}) at index {} where {}@{} ({:?}) was committed",
                    entry.index,
                    entry.term,
                    entry.payload,
                    entry.index,
                    committed.index,
                    committed.term,
                    committed.payload
                ),
            )),
            Some(_) if &self.outcomes[position] != outcome => Err(Violation::new(
                Invariant::DeterministicApply,
                format!(
                    "{id} got {outcome:?} applying index {} where others got {:?}",
                    entry.index, self.outcomes[position]
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    /// A message left a server: a granted vote must be the voter's only one in that term.
    pub fn sent(&mut self, envelope: &Envelope) -> Result<(), Violation> {
        if !self.check_votes {
            return Ok(());
        }
        if let Message::VoteResponse {
            granted: true,
            pre: false,
        } = envelope.message
        {
            let key = (envelope.from.clone(), envelope.term);
            match self.votes.get(&key) {
                Some(candidate) if candidate != &envelope.to => {
                    return Err(Violation::new(
                        Invariant::OneVotePerTerm,
                        format!(
                            "{} voted for {candidate} and for {} in term {}",
                            envelope.from, envelope.to, envelope.term
                        ),
                    ));
                }
                _ => {
                    self.votes.insert(key, envelope.to.clone());
                }
            }
        }
        Ok(())
    }

    /// The term a running server is in now: never lower than before in this incarnation.
    pub fn term_now(&mut self, server: usize, id: &NodeId, term: Term) -> Result<(), Violation> {
        if term < self.terms[server] {
            return Err(Violation::new(
                Invariant::TermsNeverDecrease,
                format!("{id} went from term {} to {term}", self.terms[server]),
            ));
        }
        self.terms[server] = term;
        Ok(())
    }

    /// The server's durable term changed (a sync, a crash keeping some writes): never lower
    /// than a term it had made durable before, whatever happened in between.
    pub fn durable_term(&mut self, server: usize, id: &NodeId, term: Term) -> Result<(), Violation> {
        if term < self.durable_terms[server] {
            return Err(Violation::new(
                Invariant::TermsNeverDecrease,
                format!(
                    "{id}'s durable term went from {} to {term}",
                    self.durable_terms[server]
                ),
            ));
        }
        self.durable_terms[server] = term;
        Ok(())
    }

    /// A server restarted: it resumes from its durable term, which the next `term_now` checks
    /// against.
    pub fn restarted(&mut self, server: usize, id: &NodeId, term: Term) -> Result<(), Violation> {
        if term != self.durable_terms[server] {
            return Err(Violation::new(
                Invariant::TermsNeverDecrease,
                format!(
                    "{id} restarted in term {term}, but its durable term is {}",
                    self.durable_terms[server]
                ),
            ));
        }
        self.terms[server] = term;
        Ok(())
    }
}
