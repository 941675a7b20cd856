//! What the replication core asks the driver to make durable.

use serde::{Deserialize, Serialize};

use super::message::{Entry, Index, NodeId, Term};

/// The state a server must never forget: the latest term it has seen and whom it voted for
/// in that term. Persisted before any message that depends on it is sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    pub term: Term,
    pub vote: Option<NodeId>,
}

/// One durable change, in the order the core produced it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    /// Replace the term and vote.
    HardState(HardState),
    /// Drop every entry from `entries[0].index` on, then append `entries` (contiguous,
    /// never empty). Appending at the end drops nothing.
    Entries(Vec<Entry>),
    /// A snapshot covering the log up to `meta.index` is durable (the driver saved it before
    /// this write): drop the entries it covers. Entries after it stay if the log holds
    /// `meta.index` with `meta.term`; otherwise they go too (Raft §7).
    Compact(SnapshotMeta),
}

/// What a snapshot of the applied state covers: every entry up to `index` (whose term is
/// `term`), and the configuration in force at that point.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub index: Index,
    pub term: Term,
    pub members: Vec<NodeId>,
}
