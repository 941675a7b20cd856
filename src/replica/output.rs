//! What a replica asks of its driver, and what the driver reports back.

use std::sync::Arc;

use super::store::StoreMeta;
use crate::app::{MemTables, Outcome};
use crate::error::Result;
use crate::replication::{ElectionCause, Entry, Envelope, Index, NodeId, RoleKind, Term, Write};

/// What the driver must do, in the order given.
#[derive(Debug)]
pub enum Output<W> {
    /// Hand this job to the storage side; jobs are carried out in the order given.
    Persist(Job),
    /// Send this message now (it waited for whatever it had to).
    Send(Envelope),
    /// Stream a consistent view of our store to a backup that is behind the compacted log.
    SendState { to: NodeId, term: Term },
    /// Answer whoever waits.
    Reply(W, Answer),
    /// The message at this index was stored on the board (every server prints it, reading
    /// it from the replica's tables, where it is in memory).
    Posted { index: u64 },
    /// This server became a ready primary: tell every backup the members, every client
    /// (at these notification addresses) the new primary.
    Announce {
        term: Term,
        members: Vec<NodeId>,
        clients: Vec<String>,
    },
    /// The primary applied a new configuration: tell the backups.
    SetBackups { term: Term, members: Vec<NodeId> },
    /// The role, term or known primary changed.
    RoleChanged {
        role: RoleKind,
        term: Term,
        primary: Option<NodeId>,
    },
    /// An entry was applied, with the application's outcome for a command. Only with
    /// `Settings::observe` (the simulation checks every one).
    Applied {
        entry: Entry,
        outcome: Option<Outcome>,
    },
    /// A configuration without this server was applied: it no longer takes part.
    Removed,
    /// This server starts an election, for this reason (to be logged).
    Election { term: Term, cause: ElectionCause },
}

/// Work for the storage side. Carried out in order; each is reported done in order.
#[derive(Debug)]
pub enum Job {
    /// Make these log writes durable (consecutive ones may share one sync).
    Log(Vec<Write>),
    /// Write these changes to the store with `meta` in one durable transaction.
    Flush {
        meta: StoreMeta,
        changes: Arc<MemTables>,
    },
    /// Replace the store with the one received whole from the primary (kept durably
    /// beside it); it stands at `meta`.
    Install { meta: StoreMeta },
}

/// What the storage side reports: the jobs done so far and what they made durable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Persisted {
    /// How many jobs are done, counted from the replica's start.
    pub jobs: u64,
    /// The log is durable up to this entry (if entries were written).
    pub log: Option<(Index, Term)>,
    /// A term (and vote) is durable (if one was written).
    pub term: Option<Term>,
    /// The store is durable up to this applied index (if a flush was done).
    pub flushed: Option<Index>,
    /// How many received stores were swapped in.
    pub installed: u32,
}

/// The answer to a waiter.
#[derive(Debug)]
pub enum Answer {
    /// A proposal's outcome (a rejection by `apply` is an `Ok(Rejected)`).
    Outcome(Result<Outcome>),
    /// A join: the server is a member.
    Joined(Result<Membership>),
    /// A removal: the remaining members.
    Removed(Result<Vec<NodeId>>),
    /// A read: confirmed (answer it from the state as it is now), or refused.
    Read(Result<()>),
    /// A hand-over: the new primary.
    HandedOver(Result<NodeId>),
}

/// Who the primary is and who the members are, as a joining server is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub primary: NodeId,
    pub term: Term,
    pub members: Vec<NodeId>,
    /// The index of a configuration that holds the joiner (or later): the joiner's
    /// membership starts there, and a removal of its address before it was of an earlier
    /// server under the same address.
    pub since: Index,
}

/// What became of a client request.
#[derive(Debug)]
pub enum Submitted<W> {
    /// Proposed at this index; the answer comes when it is applied.
    Pending(Index),
    /// The state says no; the refusal is given (as a `Reply`) once a confirmation round
    /// shows this server is still the primary, or the request is proposed after all if the
    /// state moved meanwhile.
    Confirming,
    /// Answered at once: refused, or a retry of a message already on the board.
    Done(W, Result<Outcome>),
}
