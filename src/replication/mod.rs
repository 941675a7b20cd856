//! The replication protocol: how one primary and its backups keep one log.
//!
//! understudy replicates a log of entries from the **primary** to the **backups**, using the
//! safety rules of Raft (§5) with pre-vote and check-quorum. This module is the protocol
//! alone, as a deterministic state machine ([`Node`]); the server and the simulation drive
//! the same code.
//!
//! ## Roles and terms
//!
//! ```text
//!                 times out,            majority of
//!   +--------+    pre-vote wins   +-----------+   votes      +---------+
//!   | Backup | -----------------> | Candidate | -----------> | Primary |
//!   +--------+ <----------------- +-----------+              +---------+
//!       ^       hears a primary or a newer term                   |
//!       +---------------------------------------------------------+
//!            a newer term, or no majority heard from (check-quorum)
//! ```
//!
//! Time is cut into **terms** that only grow and are persisted before use. A server votes at
//! most once per term, and only for a candidate whose log is at least as up to date as its
//! own (last term, then last index). A candidate needs a majority of the configuration, so
//! there is at most one primary per term.
//!
//! Before a real election a candidate runs a **pre-vote**: it asks whether it *would* win,
//! without anyone changing term. A server that still hears from a live primary says no. So a
//! server that was cut off and comes back cannot disrupt a healthy primary. A primary that
//! has not heard from a majority within an election timeout steps down (**check-quorum**),
//! so a primary cut off in a minority stops acting as one.
//!
//! ## The log and the commit rule
//!
//! | step | what happens |
//! |---|---|
//! | propose | the primary appends the command at `last_index + 1` with its term |
//! | replicate | `Append { prev_index, prev_term, entries, commit }` to every backup; a backup accepts only if it holds `prev_index` with `prev_term`, else it rejects with a hint and the primary probes back (Raft §5.3) |
//! | persist | a backup acknowledges (`AppendAccepted`) only what is durable; the primary counts itself only once its own copy is durable |
//! | commit | an index is committed once a majority holds it and it is of the primary's term; earlier entries commit with it (§5.4.2) |
//! | apply | every server applies committed entries in order, each once |
//!
//! Appends are batched (many entries per message) and pipelined (several in flight per
//! backup, see [`progress`]). A new primary first appends a no-op of its own term, so that it
//! can commit everything before it.
//!
//! ## Membership
//!
//! The configuration (the voting members) is itself a log entry and takes effect as soon as
//! it is in a server's log. It changes one server at a time, and only once the previous
//! change and the primary's no-op are committed: any two majorities of consecutive
//! configurations then overlap. A joining server first receives the log as a non-voting
//! learner; when it has caught up, the primary proposes the configuration that adds it.
//!
//! ## What is not guaranteed
//!
//! - Reads are served from each server's applied state, so a backup (or a deposed primary
//!   that does not know it yet) may answer with stale data.
//! - Liveness needs a majority of the members up and talking to each other; with no
//!   majority, nothing commits and clients are told `no_primary`.
//! - A proposal answered with an error may still commit later (its primary lost office
//!   after appending it); clients retry with the same `seq`, which the application answers
//!   at most once.

mod log;
mod message;
mod node;
mod persist;
pub mod progress;

pub use log::retain_after;
pub use message::{Entry, Envelope, Index, Message, NodeId, Payload, Term};
#[cfg(test)]
pub use node::PlantedBug;
pub use node::{ElectionCause, Node, Options, Output, PeerView, ReadId, RoleKind, Status};
pub use persist::{HardState, SnapshotMeta, Write};

#[cfg(test)]
mod tests;
