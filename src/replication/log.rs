//! The replicated log as the core sees it: an in-memory sequence of entries after a
//! snapshot base (index 0 when there is no snapshot), with the latest configuration entry at
//! hand. Durability is the driver's job; the core tells it what to write through
//! [`super::Write`].
//!
//! Entries up to the base are compacted away: they are committed and covered by a snapshot
//! of the applied state, which stands in for them (their last index, term and configuration
//! are kept as the base).

use super::message::{Entry, Index, NodeId, Payload, Term};
use super::persist::SnapshotMeta;

/// The one rule for what of a log survives a snapshot at `meta` (Raft §7): `entries` follow
/// `base_index` without a gap (`base_index <= meta.index`). If they hold `meta.index` with
/// `meta.term`, the entries after it agree with whoever took the snapshot and stay; otherwise
/// every entry goes. The entries up to `meta.index` go either way.
pub fn retain_after(base_index: Index, entries: &mut Vec<Entry>, meta: &SnapshotMeta) {
    if meta.index == base_index {
        return;
    }
    let position = meta.index.checked_sub(base_index + 1).map(|i| i as usize);
    match position.and_then(|i| entries.get(i).map(|e| (i, e.term))) {
        Some((i, term)) if term == meta.term => {
            entries.drain(..=i);
        }
        _ => entries.clear(),
    }
}

/// The in-memory log. `entries[i].index == base.index + i + 1` always holds.
#[derive(Clone, Debug, Default)]
pub struct Log {
    /// What the compacted prefix ended with.
    base: SnapshotMeta,
    entries: Vec<Entry>,
    /// Indexes of the configuration entries after the base, ascending, so the latest
    /// configuration is found without scanning the log.
    config_indexes: Vec<Index>,
}

impl Log {
    /// A log holding `entries`, which must be contiguous from index 1.
    #[cfg(test)]
    pub fn new(entries: Vec<Entry>) -> Log {
        Log::with_base(SnapshotMeta::default(), entries)
    }

    /// A log whose entries up to `base.index` are compacted into a snapshot, holding
    /// `entries`, which must be contiguous from `base.index + 1`.
    pub fn with_base(base: SnapshotMeta, entries: Vec<Entry>) -> Log {
        for (i, entry) in entries.iter().enumerate() {
            assert_eq!(
                entry.index,
                base.index + i as Index + 1,
                "log entries must be contiguous after the base"
            );
        }
        let config_indexes = entries
            .iter()
            .filter(|e| matches!(e.payload, Payload::Config(_)))
            .map(|e| e.index)
            .collect();
        Log {
            base,
            entries,
            config_indexes,
        }
    }

    /// The index of the last entry (the base's when no entry follows it).
    pub fn last_index(&self) -> Index {
        self.base.index + self.entries.len() as Index
    }

    /// The term of the last entry (the base's when no entry follows it).
    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(self.base.term, |e| e.term)
    }

    /// The last index compacted into the snapshot (0 if none).
    pub fn base_index(&self) -> Index {
        self.base.index
    }

    /// The term of the entry at `index`: the base's at the base, `None` past the end and
    /// before the base (compacted: committed, but no longer known here).
    pub fn term_at(&self, index: Index) -> Option<Term> {
        if index == self.base.index {
            return Some(self.base.term);
        }
        self.get(index).map(|e| e.term)
    }

    /// The entry at `index`, if it is held (after the base, up to the last).
    pub fn get(&self, index: Index) -> Option<&Entry> {
        let position = usize::try_from(index.checked_sub(self.base.index + 1)?).ok()?;
        self.entries.get(position)
    }

    /// Up to `max` entries from `from` on (fewer at the end of the log; none before the base).
    pub fn entries_from(&self, from: Index, max: usize) -> Vec<Entry> {
        if from <= self.base.index {
            return Vec::new();
        }
        let start = (from - self.base.index - 1) as usize;
        if start >= self.entries.len() {
            return Vec::new();
        }
        let end = (start + max).min(self.entries.len());
        self.entries[start..end].to_vec()
    }

    /// The entries from `from` to `to`, both included.
    pub fn range(&self, from: Index, to: Index) -> Vec<Entry> {
        if to < from {
            return Vec::new();
        }
        self.entries_from(from, (to - from + 1) as usize)
    }

    /// Appends a new entry at the end and returns it.
    pub fn append(&mut self, term: Term, payload: Payload) -> Entry {
        let entry = Entry {
            term,
            index: self.last_index() + 1,
            payload,
        };
        self.push(entry.clone());
        entry
    }

    /// Merges entries received from a primary (Raft §5.3): entries already present with the
    /// same term are kept, the first one that differs cuts the log there, and the rest are
    /// appended. Entries at or before the base are committed and already covered, so they
    /// are skipped. Returns the entries that changed the log (to be persisted), which are
    /// contiguous, and the index the log was cut at, if it was.
    pub fn merge(&mut self, entries: Vec<Entry>) -> (Vec<Entry>, Option<Index>) {
        let mut new = Vec::new();
        let mut cut = None;
        for entry in entries {
            if !new.is_empty() {
                new.push(entry);
                continue;
            }
            if entry.index <= self.base.index {
                continue;
            }
            match self.term_at(entry.index) {
                Some(term) if term == entry.term => {}
                Some(_) => {
                    cut = Some(entry.index);
                    self.truncate(entry.index);
                    new.push(entry);
                }
                None => {
                    assert_eq!(
                        entry.index,
                        self.last_index() + 1,
                        "merged entries must follow the log without a gap"
                    );
                    new.push(entry);
                }
            }
        }
        for entry in &new {
            self.push(entry.clone());
        }
        (new, cut)
    }

    /// The latest configuration in the log (committed or not), with its index.
    pub fn config(&self) -> (Index, Vec<NodeId>) {
        self.config_at(self.last_index())
    }

    /// The latest configuration's members, borrowed (the hot path asks on every
    /// acknowledgement; `config` clones).
    pub fn members(&self) -> &[NodeId] {
        match self
            .config_indexes
            .last()
            .and_then(|&i| self.get(i))
            .map(|entry| &entry.payload)
        {
            Some(Payload::Config(members)) => members,
            _ => &self.base.members,
        }
    }

    /// The configuration in force at `index`: the latest one at or before it.
    pub fn config_at(&self, index: Index) -> (Index, Vec<NodeId>) {
        self.config_indexes
            .iter()
            .rev()
            .filter(|&&i| i <= index)
            .find_map(|&i| match &self.get(i)?.payload {
                Payload::Config(members) => Some((i, members.clone())),
                _ => None,
            })
            .unwrap_or_else(|| (self.base.index, self.base.members.clone()))
    }

    /// What a snapshot taken at `index` (held, or the base) covers.
    pub fn meta_at(&self, index: Index) -> Option<SnapshotMeta> {
        if index == self.base.index {
            return Some(self.base.clone());
        }
        Some(SnapshotMeta {
            index,
            term: self.term_at(index)?,
            members: self.config_at(index).1,
        })
    }

    /// Drops the entries up to `index` (held, and committed: the caller has a snapshot of
    /// the state there). The snapshot's meta becomes the base.
    pub fn compact(&mut self, index: Index) {
        if index <= self.base.index {
            return;
        }
        let meta = self.meta_at(index).expect("compacting only held entries");
        let drop = (index - self.base.index) as usize;
        self.entries.drain(..drop);
        self.config_indexes.retain(|&i| i > index);
        self.base = meta;
    }

    /// Replaces the log with a snapshot received from the primary (Raft §7): if an entry
    /// with the snapshot's index and term is held, the entries after it stay (they agree
    /// with the primary); otherwise the whole log goes.
    pub fn install(&mut self, meta: SnapshotMeta) {
        if meta.index < self.base.index {
            self.entries.clear();
        } else {
            retain_after(self.base.index, &mut self.entries, &meta);
        }
        self.config_indexes = self
            .entries
            .iter()
            .filter(|e| matches!(e.payload, Payload::Config(_)))
            .map(|e| e.index)
            .collect();
        self.base = meta;
    }

    /// The first index whose entry has the same term as the entry at `index`: used to skip a
    /// whole conflicting term at once when a backup rejects an append.
    pub fn first_index_of_term_at(&self, index: Index) -> Index {
        let Some(term) = self.term_at(index) else {
            return index;
        };
        let mut first = index;
        while first > self.base.index + 1 && self.term_at(first - 1) == Some(term) {
            first -= 1;
        }
        first
    }

    fn push(&mut self, entry: Entry) {
        assert_eq!(
            entry.index,
            self.last_index() + 1,
            "log must stay contiguous"
        );
        if matches!(entry.payload, Payload::Config(_)) {
            self.config_indexes.push(entry.index);
        }
        self.entries.push(entry);
    }

    /// Drops every entry from `from` on (never the base).
    fn truncate(&mut self, from: Index) {
        assert!(from > self.base.index, "the compacted prefix is committed");
        self.entries.truncate((from - self.base.index - 1) as usize);
        self.config_indexes.retain(|&i| i < from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::SnapshotMeta;

    fn entry(index: Index, term: Term) -> Entry {
        Entry {
            term,
            index,
            payload: Payload::Command(vec![index as u8]),
        }
    }

    /// Raft §5.3: an entry that conflicts with a new one (same index, other term) is deleted
    /// with all that follow it; entries already present are not written again.
    #[test]
    fn merge_keeps_matching_entries_and_cuts_at_the_first_conflict() {
        let mut log = Log::new(vec![entry(1, 1), entry(2, 1), entry(3, 1)]);
        let (new, cut) = log.merge(vec![entry(2, 1), entry(3, 2), entry(4, 2)]);
        assert_eq!(new, vec![entry(3, 2), entry(4, 2)]);
        assert_eq!(cut, Some(3));
        assert_eq!(log.last_index(), 4);
        assert_eq!(log.term_at(3), Some(2));

        // The same entries again change nothing.
        let (new, cut) = log.merge(vec![entry(3, 2), entry(4, 2)]);
        assert!(new.is_empty());
        assert_eq!(cut, None);
    }

    /// The latest configuration entry wins, and one cut away falls back to the one before.
    #[test]
    fn config_follows_the_latest_config_entry() {
        let config = |index, term, members: &[&str]| Entry {
            term,
            index,
            payload: Payload::Config(members.iter().map(|m| m.to_string()).collect()),
        };
        let mut log = Log::new(vec![config(1, 0, &["a"]), entry(2, 1)]);
        log.merge(vec![config(3, 1, &["a", "b"])]);
        assert_eq!(log.config(), (3, vec!["a".to_string(), "b".to_string()]));
        log.merge(vec![entry(3, 2)]);
        assert_eq!(log.config(), (1, vec!["a".to_string()]));
    }

    /// Compaction keeps what the snapshot cannot stand in for: the entries after it, and the
    /// configuration in force at its index.
    #[test]
    fn compaction_keeps_the_suffix_and_the_configuration() {
        let config = Entry {
            term: 1,
            index: 2,
            payload: Payload::Config(vec!["a".to_string(), "b".to_string()]),
        };
        let mut log = Log::new(vec![entry(1, 1), config, entry(3, 1), entry(4, 2)]);
        log.compact(3);
        assert_eq!(log.base_index(), 3);
        assert_eq!(log.term_at(3), Some(1));
        assert_eq!(log.term_at(2), None, "compacted");
        assert_eq!(log.get(4), Some(&entry(4, 2)));
        assert_eq!(log.last_index(), 4);
        assert_eq!(log.config(), (3, vec!["a".to_string(), "b".to_string()]));
        assert_eq!(log.entries_from(2, 10), Vec::new());
        assert_eq!(log.entries_from(4, 10), vec![entry(4, 2)]);
        // Entries the snapshot covers are skipped when they arrive again.
        let (new, cut) = log.merge(vec![entry(3, 1), entry(4, 2), entry(5, 2)]);
        assert_eq!((new, cut), (vec![entry(5, 2)], None));
    }

    /// Raft §7: a received snapshot keeps the log after it only if the log agrees at its
    /// index; otherwise the log is replaced whole.
    #[test]
    fn installing_a_snapshot_keeps_only_an_agreeing_suffix() {
        let meta = |index, term| SnapshotMeta {
            index,
            term,
            members: vec!["a".to_string()],
        };
        let mut agreeing = Log::new(vec![entry(1, 1), entry(2, 1), entry(3, 2)]);
        agreeing.install(meta(2, 1));
        assert_eq!((agreeing.base_index(), agreeing.last_index()), (2, 3));

        let mut conflicting = Log::new(vec![entry(1, 1), entry(2, 1), entry(3, 2)]);
        conflicting.install(meta(2, 5));
        assert_eq!((conflicting.base_index(), conflicting.last_index()), (2, 2));
        assert_eq!(conflicting.last_term(), 5);

        let mut short = Log::new(vec![entry(1, 1)]);
        short.install(meta(7, 3));
        assert_eq!((short.last_index(), short.last_term()), (7, 3));
        assert_eq!(short.config(), (7, vec!["a".to_string()]));
    }
}
