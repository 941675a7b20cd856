//! The safety checks, run on what the servers do as it happens.
//!
//! Each check keeps a small record of the whole run, so that it costs little per step:
//! every term's primary, every server's vote per term, every entry ever committed (applied
//! by anyone) with its outcome, and every server's term in memory and on disk. A check that
//! fails returns a [`Violation`] naming the broken property.
//!
//! The record of committed entries is the simulation's own, independent of the servers'
//! logs, so it stays whole when they compact theirs. Beside it runs a reference replay: the
//! committed commands applied in order to one application state, with a copy kept every
//! [`CHECKPOINT_EVERY`] entries. It gives the state at any committed index cheaply, which is
//! what a snapshot (taken, installed, or read back at a restart) must hold.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use super::storage::LogFile;
use super::{Invariant, Violation};
use crate::app::{Command, MemTables, Outcome, Request, apply};
use crate::replication::{Entry, Envelope, Index, Message, NodeId, Payload, SnapshotMeta, Term};

/// Committed entries between two copies of the reference state.
const CHECKPOINT_EVERY: usize = 32;

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
    /// The committed commands applied in order: the state after every committed entry.
    reference: MemTables,
    /// `checkpoints[k]` is the reference state after the first `k * CHECKPOINT_EVERY`
    /// committed entries.
    checkpoints: Vec<MemTables>,
    /// The indexes of the committed configuration entries, ascending.
    configs: Vec<Index>,
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
            reference: MemTables::default(),
            checkpoints: vec![MemTables::default()],
            configs: Vec::new(),
        }
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
    ///
    /// Entries the primary compacted away are covered by its snapshot: the base must be a
    /// committed entry (its snapshot's state is checked when taken or installed).
    pub fn became_primary(
        &mut self,
        id: &NodeId,
        incarnation: u64,
        term: Term,
        log: &LogFile,
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
        let base = &log.base;
        if base.index > 0 {
            let covered = self.committed.get(base.index as usize - 1);
            if covered.is_none_or(|c| c.term != base.term) {
                return Err(Violation::new(
                    Invariant::PrimaryHasAllCommitted,
                    format!(
                        "{id} became primary of term {term} with its log compacted up to \
                         {}@{}, where {} was committed",
                        base.index,
                        base.term,
                        covered.map_or("nothing yet".to_string(), show)
                    ),
                ));
            }
        }
        for (committed, &committed_in) in self.committed.iter().zip(&self.committed_in) {
            if committed_in >= term || committed.index <= base.index {
                continue;
            }
            let held = log.entries.get((committed.index - base.index) as usize - 1);
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
                let replayed = self.replay(entry);
                if &replayed != outcome {
                    return Err(Violation::new(
                        Invariant::DeterministicApply,
                        format!(
                            "{id} got {outcome:?} applying index {} where a replay of the \
                             committed entries gives {replayed:?}",
                            entry.index
                        ),
                    ));
                }
                self.committed.push(entry.clone());
                self.committed_in.push(term);
                self.outcomes.push(outcome.clone());
                if self.committed.len() % CHECKPOINT_EVERY == 0 {
                    self.checkpoints.push(self.reference.clone());
                }
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

    /// Applies a newly committed entry to the reference state; returns its outcome.
    fn replay(&mut self, entry: &Entry) -> Option<Outcome> {
        match &entry.payload {
            Payload::Noop => None,
            Payload::Config(_) => {
                self.configs.push(entry.index);
                None
            }
            Payload::Command(bytes) => {
                let request =
                    Request::decode(bytes).expect("the simulation proposes valid requests");
                Some(
                    apply(&mut self.reference, &request)
                        .expect("memory never fails")
                        .outcome,
                )
            }
        }
    }

    /// The application state after the committed entries up to `index`.
    fn state_at(&self, index: Index) -> MemTables {
        let checkpoint = index as usize / CHECKPOINT_EVERY;
        let mut state = self.checkpoints[checkpoint].clone();
        for entry in &self.committed[checkpoint * CHECKPOINT_EVERY..index as usize] {
            if let Payload::Command(bytes) = &entry.payload {
                let request =
                    Request::decode(bytes).expect("the simulation proposes valid requests");
                apply(&mut state, &request).expect("memory never fails");
            }
        }
        state
    }

    /// A server's store after a flush, after a swap, or read back at a restart (`what`): it
    /// must cover committed entries only, name the term of its last one and the
    /// configuration in force there, and its tables must be exactly those of the committed
    /// entries up to its index. Equal states at equal applied indexes, whatever the path.
    pub fn store(
        &self,
        id: &NodeId,
        what: &str,
        meta: &SnapshotMeta,
        state: &MemTables,
    ) -> Result<(), Violation> {
        let fail = |why: String| {
            Err(Violation::new(
                Invariant::StoreConsistent,
                format!(
                    "{id} {what} a store at {}@{} that {why}",
                    meta.index, meta.term
                ),
            ))
        };
        if meta.index == 0 {
            return fail("covers nothing".to_string());
        }
        let Some(last) = self.committed.get(meta.index as usize - 1) else {
            return fail(format!(
                "goes beyond the {} committed entries",
                self.committed.len()
            ));
        };
        if last.term != meta.term {
            return fail(format!("ends where {} was committed", show(last)));
        }
        let config = self
            .configs
            .iter()
            .rev()
            .find(|&&i| i <= meta.index)
            .and_then(|&i| match &self.committed[i as usize - 1].payload {
                Payload::Config(members) => Some(members.clone()),
                _ => None,
            })
            .unwrap_or_default();
        if config != meta.members {
            return fail(format!(
                "names the members {:?} where {config:?} were in force",
                meta.members
            ));
        }
        let expected = self.state_at(meta.index);
        if *state != expected {
            return fail(format!(
                "holds another application state than the committed entries give ({} messages \
                 where {} were committed)",
                state.counters.messages, expected.counters.messages
            ));
        }
        Ok(())
    }

    /// A server ends the run with `state` after applying up to `index`: the replay's state
    /// there, whether it got there entry by entry or through snapshots.
    pub fn final_state(
        &self,
        id: &NodeId,
        index: Index,
        state: &MemTables,
    ) -> Result<(), Violation> {
        if index as usize > self.committed.len() {
            return Err(Violation::new(
                Invariant::ClientHistory,
                format!(
                    "{id} ends at index {index}, beyond the {} committed entries",
                    self.committed.len()
                ),
            ));
        }
        let expected = self.state_at(index);
        if *state != expected {
            return Err(Violation::new(
                Invariant::ClientHistory,
                format!(
                    "{id} ends at index {index} with another application state than the \
                     {} committed entries give: {}",
                    self.committed.len(),
                    difference(state, &expected)
                ),
            ));
        }
        Ok(())
    }

    /// A server that is primary of `term` sent something: from then on others may act on its
    /// primacy.
    pub fn spoke(&mut self, from: &NodeId, term: Term) {
        if let Some(claim) = self.primaries.get_mut(&term)
            && claim.id == *from
        {
            claim.spoke = true;
        }
    }

    /// A message left a server: a granted vote must be the voter's only one in that term.
    pub fn sent(&mut self, envelope: &Envelope) -> Result<(), Violation> {
        self.spoke(&envelope.from, envelope.term);
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
            Ok(Command::ExpireClient { client_id }) => format!("expire {client_id}"),
            Err(err) => format!("undecodable command ({err})"),
        },
    };
    format!("{}@{} {what}", entry.index, entry.term)
}

/// Where two application states differ, in a few words.
fn difference(found: &MemTables, expected: &MemTables) -> String {
    if found.counters != expected.counters {
        return format!(
            "counters {:?}, expected {:?}",
            found.counters, expected.counters
        );
    }
    first_difference("user", &found.users, &expected.users)
        .or_else(|| first_difference("client", &found.clients, &expected.clients))
        .or_else(|| first_difference("message", &found.messages, &expected.messages))
        .unwrap_or_else(|| "nothing (equal)".to_string())
}

/// The first key at which two tables differ, with both values.
fn first_difference<K: Ord + Debug, V: PartialEq + Debug>(
    what: &str,
    found: &BTreeMap<K, V>,
    expected: &BTreeMap<K, V>,
) -> Option<String> {
    let keys = found.keys().chain(expected.keys()).collect::<BTreeSet<_>>();
    keys.into_iter()
        .find(|k| found.get(k) != expected.get(k))
        .map(|k| {
            format!(
                "{what} {k:?} is {:?}, expected {:?}",
                found.get(k),
                expected.get(k)
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init(index: Index, term: Term, client: &str) -> Entry {
        let request = Request {
            origin: "client".to_string(),
            command: Command::InitClient {
                client_id: client.to_string(),
                address: "10.0.0.1:9000".to_string(),
            },
        };
        Entry {
            term,
            index,
            payload: Payload::Command(request.encode()),
        }
    }

    /// Commits a configuration of n1 and n2, then `count` commands; returns the record and
    /// the state a server has after applying all of them.
    fn committed(count: u64) -> (Invariants, MemTables) {
        let mut invariants = Invariants::new(2, true);
        let mut state = MemTables::default();
        let config = Entry {
            term: 0,
            index: 1,
            payload: Payload::Config(vec!["n1".to_string(), "n2".to_string()]),
        };
        invariants
            .applied(&"n1".to_string(), 1, &config, &None)
            .unwrap();
        for index in 2..=count + 1 {
            let entry = init(index, 1, &format!("c{index}"));
            let Payload::Command(bytes) = &entry.payload else {
                unreachable!()
            };
            let outcome = apply(&mut state, &Request::decode(bytes).unwrap())
                .unwrap()
                .outcome;
            invariants
                .applied(&"n1".to_string(), 1, &entry, &Some(outcome))
                .unwrap();
        }
        (invariants, state)
    }

    fn meta(index: Index, term: Term) -> SnapshotMeta {
        SnapshotMeta {
            index,
            term,
            members: vec!["n1".to_string(), "n2".to_string()],
        }
    }

    /// A store is checked against the replay of the committed entries, across the
    /// reference's checkpoints: the right state passes, a state missing or repeating an
    /// entry, a wrong term, wrong members or an index beyond the commits are caught.
    #[test]
    fn store_must_hold_the_committed_state() {
        let count = 2 * CHECKPOINT_EVERY as u64 + 5;
        let (invariants, state) = committed(count);
        let id = "n2".to_string();
        let last = count + 1;
        invariants
            .store(&id, "installed", &meta(last, 1), &state)
            .unwrap();

        let (_, shorter) = committed(count - 1);
        let caught = |result: Result<(), Violation>| {
            let violation = result.expect_err("caught");
            assert_eq!(violation.invariant, Invariant::StoreConsistent);
            violation.message
        };
        let message = caught(invariants.store(&id, "installed", &meta(last, 1), &shorter));
        assert!(message.contains("another application state"), "{message}");
        invariants
            .store(&id, "took", &meta(last - 1, 1), &shorter)
            .unwrap();
        caught(invariants.store(&id, "took", &meta(last, 2), &state));
        caught(invariants.store(&id, "took", &meta(last + 1, 1), &state));
        let mut others = meta(last, 1);
        others.members.pop();
        caught(invariants.store(&id, "took", &others, &state));
    }

    /// The first server to apply an entry is checked against the replay too: an outcome
    /// that a correct state machine would not give is caught even with no other server to
    /// compare with.
    #[test]
    fn first_outcome_is_checked_against_the_replay() {
        let (mut invariants, _) = committed(3);
        let entry = init(5, 1, "fresh");
        let wrong = Some(Outcome::Rejected(crate::app::Rejection::Conflict(
            "made up".to_string(),
        )));
        let violation = invariants
            .applied(&"n1".to_string(), 1, &entry, &wrong)
            .expect_err("caught");
        assert_eq!(violation.invariant, Invariant::DeterministicApply);
    }
}
