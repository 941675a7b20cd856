//! The safety checks, run on what the servers do as it happens.
//!
//! Each check keeps a small record of the whole run, so that it costs little per step:
//! every term's primary, every server's vote per term, every entry ever committed (applied
//! by anyone) with its outcome, and every server's term in memory and on disk. A check that
//! fails returns a [`Violation`] naming the broken property.

use std::collections::BTreeMap;

use super::{Invariant, Violation};
use crate::app::{Command, Outcome, Request};
use crate::replication::{Entry, Envelope, Message, NodeId, Payload, Term};

/// The record of a run, as far as safety is concerned.
pub struct Invariants {
    /// term → its primary.
    primaries: BTreeMap<Term, Claim>,
    /// (voter, term) → the candidate it granted its vote to.
    votes: BTreeMap<(NodeId, Term), NodeId>,
    check_votes: bool,
    /// Every committed entry, by index - 1: applies go in order from 1 on every server, so
    /// what was ever applied anywhere is a prefix of the log.
    committed: Vec<Entry>,
    /// The term each entry was committed in: the term of the first server that applied it,
    /// which is the primary that committed it.
    committed_in: Vec<Term>,
    /// The application's outcome of each committed command.
    outcomes: Vec<Option<Outcome>>,
    /// Per server: its term in memory (current incarnation) and the highest durable term.
    terms: Vec<Term>,
    durable_terms: Vec<Term>,
}

/// A server that became primary of a term.
struct Claim {
    id: NodeId,
    incarnation: u64,
    /// Whether it sent anything in that term: from then on others may act on its primacy.
    spoke: bool,
}

impl Invariants {
    pub fn new(servers: usize, check_votes: bool) -> Invariants {
        Invariants {
            primaries: BTreeMap::new(),
            votes: BTreeMap::new(),
            check_votes,
            committed: Vec::new(),
            committed_in: Vec::new(),
            outcomes: Vec::new(),
            terms: vec![0; servers],
            durable_terms: vec![0; servers],
        }
    }

    /// The highest term that has had a primary.
    pub fn newest_primary_term(&self) -> Term {
        self.primaries.keys().next_back().copied().unwrap_or(0)
    }

    /// The highest committed index so far.
    pub fn commit_index(&self) -> u64 {
        self.committed.len() as u64
    }

    /// A server became primary: it must be the only one of its term (Raft §5.2), and its log
    /// must hold every entry committed in an earlier term (leader completeness, Raft §5.4.1).
    /// Entries committed in its own term or a later one are not owed: a candidate whose
    /// votes were delayed may win an old term after newer terms committed entries; it can
    /// commit nothing there, since a majority has moved on.
    pub fn became_primary(
        &mut self,
        id: &NodeId,
        incarnation: u64,
        term: Term,
        log: &[Entry],
    ) -> Result<(), Violation> {
        match self.primaries.get(&term) {
            Some(claim) if claim.id != *id || claim.incarnation != incarnation => {
                return Err(Violation::new(
                    Invariant::OnePrimaryPerTerm,
                    format!(
                        "two primaries in term {term}: {} (incarnation {}) and {id} \
                         (incarnation {incarnation})",
                        claim.id, claim.incarnation
                    ),
                ));
            }
            Some(_) => {}
            None => {
                self.primaries.insert(
                    term,
                    Claim {
                        id: id.clone(),
                        incarnation,
                        spoke: false,
                    },
                );
            }
        }
        for (committed, &committed_in) in self.committed.iter().zip(&self.committed_in) {
            if committed_in >= term {
                continue;
            }
            let held = log.get(committed.index as usize - 1);
            if held != Some(committed) {
                return Err(Violation::new(
                    Invariant::PrimaryHasAllCommitted,
                    format!(
                        "{id} became primary of term {term} holding {} where {} was committed \
                         in term {committed_in}",
                        held.map_or(format!("nothing at {}", committed.index), show),
                        show(committed)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A server in `term` applied `entry` (the server checked the order): it must be the
    /// entry every other server applied at that index, with the same outcome.
    pub fn applied(
        &mut self,
        id: &NodeId,
        term: Term,
        entry: &Entry,
        outcome: &Option<Outcome>,
    ) -> Result<(), Violation> {
        let position = entry.index as usize - 1;
        match self.committed.get(position) {
            None => {
                // The server applied every index before this one, so this extends the prefix.
                assert_eq!(
                    position,
                    self.committed.len(),
                    "applies are checked in order"
                );
                self.committed.push(entry.clone());
                self.committed_in.push(term);
                self.outcomes.push(outcome.clone());
                Ok(())
            }
            Some(committed) if committed != entry => Err(Violation::new(
                Invariant::CommittedNeverChanges,
                format!(
                    "{id} applied {} where {} was committed",
                    show(entry),
                    show(committed)
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
        if let Some(claim) = self.primaries.get_mut(&envelope.term)
            && claim.id == envelope.from
        {
            claim.spoke = true;
        }
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
    pub fn durable_term(
        &mut self,
        server: usize,
        id: &NodeId,
        term: Term,
    ) -> Result<(), Violation> {
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

    /// A server crashed with `durable_term` on disk. Its primacy in a later term that it never
    /// made durable nor told anyone about left no trace: electing it again in that term (with
    /// a vote it forgot) harms nobody, so that claim is forgotten too. A primacy that was
    /// spoken of stays, and a second election in its term is a violation.
    pub fn crashed(&mut self, id: &NodeId, incarnation: u64, durable_term: Term) {
        self.primaries.retain(|&term, claim| {
            term <= durable_term
                || claim.spoke
                || claim.id != *id
                || claim.incarnation != incarnation
        });
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

/// An entry in a violation message: `244@5 message c1#121`.
pub fn show(entry: &Entry) -> String {
    let what = match &entry.payload {
        Payload::Noop => "noop".to_string(),
        Payload::Config(members) => format!("config {members:?}"),
        Payload::Command(bytes) => match Request::decode(bytes).map(|r| r.command) {
            Ok(Command::InitClient { client_id, .. }) => format!("init {client_id}"),
            Ok(Command::Register { username, .. }) => format!("register {username}"),
            Ok(Command::Login { client_id, .. }) => format!("login {client_id}"),
            Ok(Command::Logout { client_id, .. }) => format!("logout {client_id}"),
            Ok(Command::Message { client_id, seq, .. }) => format!("message {client_id}#{seq}"),
            Err(err) => format!("undecodable command ({err})"),
        },
    };
    format!("{}@{} {what}", entry.index, entry.term)
}
