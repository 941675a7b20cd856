//! Starting a replica from disk: the store at the position it was last flushed at, and the
//! log after it.
//!
//! The log is compacted only up to what the store holds durably, so its base is never ahead
//! of the store. The store can be ahead of the log: flushes are not synced with the log,
//! and a store received from the primary is swapped in before the log is compacted to it.
//! Then the log keeps only what agrees with the store's position (`retain_after`, the one
//! rule for it) and is compacted to it before anything else is written.

use std::collections::{BTreeMap, VecDeque};

use super::machine::Machine;
use super::{Job, Output, Replica, Settings, Store};
use crate::error::{Error, Result};
use crate::replication::{
    Entry, HardState, Node, NodeId, Options, SnapshotMeta, Write, retain_after,
};

impl<S: Store, W> Replica<S, W> {
    /// A replica from its store and its recovered log (term and vote, the base the log was
    /// compacted to, the entries after it). `seed` drives the election timeouts.
    #[allow(clippy::too_many_arguments)]
    pub fn restore(
        id: NodeId,
        store: S,
        hard_state: HardState,
        log_base: SnapshotMeta,
        mut entries: Vec<Entry>,
        options: Options,
        settings: Settings,
        seed: u64,
    ) -> Result<Replica<S, W>> {
        let meta = store.meta()?;
        let position = meta.position.clone();
        if log_base.index > position.index {
            return Err(Error::Corrupt(format!(
                "the log is compacted up to {} but the store holds only up to {}",
                log_base.index, position.index
            )));
        }
        let compact_first = position.index > log_base.index;
        #[cfg(test)]
        if options.planted_bug == Some(crate::replication::PlantedBug::ReapplyAfterRecovery)
            && compact_first
            && entries.last().is_some_and(|e| e.index >= position.index)
        {
            // The bug: start the node at the log's base, over a store that is further on.
            let node = Node::restore(id, hard_state, log_base.clone(), entries, options, seed);
            return Ok(Self::assemble(node, store, meta, log_base, settings, false));
        }
        if compact_first {
            retain_after(log_base.index, &mut entries, &position);
        }
        let node = Node::restore(id, hard_state, position.clone(), entries, options, seed);
        Ok(Self::assemble(
            node,
            store,
            meta,
            position,
            settings,
            compact_first,
        ))
    }

    /// The replica around a restored node, at `position`; with `compact_first` its first job
    /// compacts the log to there.
    fn assemble(
        node: Node,
        store: S,
        meta: super::StoreMeta,
        position: SnapshotMeta,
        settings: Settings,
        compact_first: bool,
    ) -> Replica<S, W> {
        let durable_term = node.term();
        let mut replica = Replica {
            node,
            machine: Machine::new(store, meta.counters),
            settings,
            applied: position.index,
            applied_members: position.members.clone(),
            noop_applied: false,
            installing: 0,
            deferred: Vec::new(),
            durable_term,
            pending: BTreeMap::new(),
            joins: Vec::new(),
            removals: Vec::new(),
            reads: BTreeMap::new(),
            confirmed: Vec::new(),
            hand_overs: Vec::new(),
            removed: false,
            joining: false,
            member_since: 0,
            jobs_issued: 0,
            jobs_done: 0,
            gated: VecDeque::new(),
            frozen_upto: position.index,
            ticks_since_flush: 0,
            flushing: VecDeque::new(),
            store_durable: position.index,
            compacted: position.index,
            outputs: Vec::new(),
        };
        if compact_first {
            // The log continues where the store ends: the next entry written would otherwise
            // leave a gap, or follow a stale one.
            replica.jobs_issued += 1;
            replica
                .outputs
                .push(Output::Persist(Job::Log(vec![Write::Compact(position)])));
        }
        replica
    }

    /// Nothing was ever written: no entries, an empty store.
    pub fn is_fresh(&self) -> bool {
        self.node.status().last_index == 0
    }
}
