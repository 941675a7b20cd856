//! The replicated log as the core sees it: an in-memory sequence of entries, indexed from 1,
//! with the latest configuration entry at hand. Durability is the driver's job; the core
//! tells it what to write through [`super::Write`].

use super::message::{Entry, Index, NodeId, Payload, Term};

/// The in-memory log. `entries[i].index == i + 1` always holds.
#[derive(Clone, Debug, Default)]
pub struct Log {
    entries: Vec<Entry>,
    /// Indexes of the configuration entries, ascending, so the latest configuration is found
    /// without scanning the log.
    config_indexes: Vec<Index>,
}

impl Log {
    /// A log holding `entries`, which must be contiguous from index 1.
    pub fn new(entries: Vec<Entry>) -> Log {
        for (i, entry) in entries.iter().enumerate() {
            assert_eq!(
                entry.index,
                i as Index + 1,
                "log entries must be contiguous from 1"
            );
        }
        let config_indexes = entries
            .iter()
            .filter(|e| matches!(e.payload, Payload::Config(_)))
            .map(|e| e.index)
            .collect();
        Log {
            entries,
            config_indexes,
        }
    }

    /// The index of the last entry, 0 when empty.
    pub fn last_index(&self) -> Index {
        self.entries.len() as Index
    }

    /// The term of the last entry, 0 when empty.
    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(0, |e| e.term)
    }

    /// The term of the entry at `index`; index 0 has term 0; `None` past the end.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        if index == 0 {
            return Some(0);
        }
        self.get(index).map(|e| e.term)
    }

    /// The entry at `index`.
    pub fn get(&self, index: Index) -> Option<&Entry> {
        let position = usize::try_from(index.checked_sub(1)?).ok()?;
        self.entries.get(position)
    }

    /// Up to `max` entries from `from` on (fewer at the end of the log).
    pub fn entries_from(&self, from: Index, max: usize) -> Vec<Entry> {
        let start = (from.max(1) - 1) as usize;
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
    /// appended. Returns the entries that changed the log (to be persisted), which are
    /// contiguous, and the index the log was cut at, if it was.
    pub fn merge(&mut self, entries: Vec<Entry>) -> (Vec<Entry>, Option<Index>) {
        let mut new = Vec::new();
        let mut cut = None;
        for entry in entries {
            if !new.is_empty() {
                new.push(entry);
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
        self.config_indexes
            .last()
            .and_then(|&index| match &self.get(index)?.payload {
                Payload::Config(members) => Some((index, members.clone())),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// The first index whose entry has the same term as the entry at `index`: used to skip a
    /// whole conflicting term at once when a backup rejects an append.
    pub fn first_index_of_term_at(&self, index: Index) -> Index {
        let Some(term) = self.term_at(index) else {
            return index;
        };
        let mut first = index;
        while first > 1 && self.term_at(first - 1) == Some(term) {
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

    /// Drops every entry from `from` on.
    fn truncate(&mut self, from: Index) {
        self.entries.truncate((from.max(1) - 1) as usize);
        self.config_indexes.retain(|&i| i < from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
