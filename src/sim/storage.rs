//! The disk of one simulated server: what is durable, what is only written, and the
//! messages that wait for a sync.
//!
//! The model follows the storage worker (`src/server/persist.rs`): jobs are carried out in
//! the driver's order; a sync makes every job so far durable at once (group commit), reports
//! how far the log is durable, and only then lets the waiting messages leave. A crash keeps
//! the durable state plus a prefix of the jobs not yet synced (the tail of a log file that
//! the OS happened to flush), and loses every waiting message.
//!
//! A disk holds two files, as a data dir does:
//!
//! | file | model | real |
//! |---|---|---|
//! | log | hard state, the base the log was compacted to, the entries after it | `LogStore`, replayed as `Recovered::apply` does (`src/storage/record.rs`) |
//! | snapshot | the encoded snapshot (meta, application state, checksum), replaced whole | `save_snapshot` (`src/storage/snapshot.rs`) |
//!
//! Saving a snapshot is a job in the same queue as the writes, as in the worker: whatever
//! was queued before it is durable first, and whatever is queued after it finds it on disk.
//! A server's own snapshot is followed by the compaction of its log and a report back to
//! the node, which only then drops the entries (`Job::Snapshot { compact: true }`).

use crate::replication::{Entry, Envelope, HardState, Index, SnapshotMeta, Term, Write};

/// The log file's contents: what `LogStore::open` recovers from it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogFile {
    pub hard_state: HardState,
    /// What the compacted prefix ended with (index 0 if nothing was compacted).
    pub base: SnapshotMeta,
    /// The log after the base: `entries[i].index == base.index + i + 1`.
    pub entries: Vec<Entry>,
}

impl LogFile {
    /// The index of the last entry (the base's when none follows it).
    pub fn last_index(&self) -> Index {
        self.entries.last().map_or(self.base.index, |e| e.index)
    }

    /// Carries out one write as replay does (`Recovered::apply`): entries replace everything
    /// from their first index on and must start after the base, without a gap; a compaction
    /// drops the entries it covers, and the ones after it too unless the log holds its index
    /// with its term. Fails on what the real store would refuse.
    fn apply(&mut self, write: &Write) -> Result<(), String> {
        match write {
            Write::HardState(state) => self.hard_state = state.clone(),
            Write::Entries(entries) => {
                let Some(first) = entries.first() else {
                    return Err("a write of no entries".to_string());
                };
                let contiguous = entries
                    .iter()
                    .enumerate()
                    .all(|(i, e)| e.index == first.index + i as Index);
                let last = self.last_index();
                if first.index <= self.base.index || first.index > last + 1 || !contiguous {
                    return Err(format!(
                        "write of entries {}..={} onto a log compacted to {} ending at {last}",
                        first.index,
                        entries.last().map_or(0, |e| e.index),
                        self.base.index,
                    ));
                }
                self.entries
                    .truncate((first.index - self.base.index - 1) as usize);
                self.entries.extend(entries.iter().cloned());
            }
            Write::Compact(meta) => {
                if meta.index <= self.base.index {
                    return Ok(());
                }
                let held = self
                    .entries
                    .get((meta.index - self.base.index - 1) as usize);
                if held.is_some_and(|e| e.term == meta.term) {
                    self.entries
                        .drain(..(meta.index - self.base.index) as usize);
                } else {
                    self.entries.clear();
                }
                self.base = meta.clone();
            }
        }
        Ok(())
    }
}

/// A saved snapshot file: the bytes of `storage::Snapshot::encode`, and what it covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    pub meta: SnapshotMeta,
    pub bytes: Vec<u8>,
}

/// Everything that survives a crash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Durable {
    pub log: LogFile,
    pub snapshot: Option<SnapshotFile>,
}

/// One job for the disk, in the driver's order.
#[derive(Clone, Debug)]
enum Job {
    Write(Write),
    /// Replace the snapshot file (atomic: a crash leaves the old one or the new one).
    SaveSnapshot(SnapshotFile),
    /// Our own snapshot up to here is saved: compact the log and tell the node.
    CompactOwn(SnapshotMeta),
}

/// One server's disk.
pub struct Storage {
    durable: Durable,
    /// Queued in this order since the last sync, not yet durable.
    unsynced: Vec<Job>,
    /// Messages that may leave only once `unsynced` is durable.
    waiting: Vec<Envelope>,
    /// The log as written (durable plus unsynced): the same entries as the node's own log,
    /// which is what the checks inspect when the node becomes primary. Its base may be ahead
    /// of the node's while an own compaction waits for its sync.
    written: LogFile,
}

/// What the storage worker tells the driver, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Persisted {
    /// The log is durable up to this entry: for `Node::persisted`.
    Log(Index, Term),
    /// Our own snapshot is saved and the log compacted up to this index: for `Node::compact`.
    Compacted(Index),
}

/// What a sync did.
pub struct Synced {
    /// What the node is told, in the order the worker would report it.
    pub reports: Vec<Persisted>,
    /// The messages released by the sync, in the order the core produced them.
    pub released: Vec<Envelope>,
}

impl Storage {
    /// A disk holding `hard_state` and `log` (from index 1), all durable, and no snapshot.
    pub fn new(hard_state: HardState, log: Vec<Entry>) -> Storage {
        let log = LogFile {
            hard_state,
            base: SnapshotMeta::default(),
            entries: log,
        };
        Storage {
            written: log.clone(),
            durable: Durable {
                log,
                snapshot: None,
            },
            unsynced: Vec::new(),
            waiting: Vec::new(),
        }
    }

    /// The durable state, as a restarted server reads it back.
    pub fn durable(&self) -> &Durable {
        &self.durable
    }

    pub fn durable_term(&self) -> Term {
        self.durable.log.hard_state.term
    }

    /// The snapshot file on disk now (what a primary streams to a backup).
    pub fn saved_snapshot(&self) -> Option<&SnapshotFile> {
        self.durable.snapshot.as_ref()
    }

    /// The log as written so far, durable or not.
    pub fn written(&self) -> &LogFile {
        &self.written
    }

    pub fn has_unsynced(&self) -> bool {
        !self.unsynced.is_empty()
    }

    /// Appends a write. Fails if the real store would refuse it (a gap, entries at or before
    /// the base), which no correct core asks for.
    pub fn write(&mut self, write: Write) -> Result<(), String> {
        self.written.apply(&write)?;
        self.unsynced.push(Job::Write(write));
        Ok(())
    }

    /// Queues the saving of a snapshot received from the primary; the node's `Compact`
    /// follows as a write of its own.
    pub fn save_snapshot(&mut self, snapshot: SnapshotFile) {
        self.unsynced.push(Job::SaveSnapshot(snapshot));
    }

    /// Queues the saving of our own snapshot, then the compaction of the log up to it.
    pub fn save_own_snapshot(&mut self, snapshot: SnapshotFile) {
        let meta = snapshot.meta.clone();
        self.written
            .apply(&Write::Compact(meta.clone()))
            .expect("a compaction always applies");
        self.unsynced.push(Job::SaveSnapshot(snapshot));
        self.unsynced.push(Job::CompactOwn(meta));
    }

    /// Holds a message until the jobs before it are durable. With nothing unsynced it may
    /// leave at once, which is returned.
    pub fn send_after_writes(&mut self, envelope: Envelope) -> Option<Envelope> {
        if self.unsynced.is_empty() {
            return Some(envelope);
        }
        self.waiting.push(envelope);
        None
    }

    /// Makes every job durable and releases the messages that waited for them. As the
    /// worker does, the log reported durable before a compaction is reported before it.
    pub fn sync(&mut self) -> Synced {
        let mut reports = Vec::new();
        let mut log = None;
        for job in std::mem::take(&mut self.unsynced) {
            if let Job::Write(Write::Entries(entries)) = &job {
                let last = entries.last().expect("the core never writes no entries");
                log = Some(Persisted::Log(last.index, last.term));
            }
            if let Job::CompactOwn(meta) = &job {
                reports.extend(log.take());
                reports.push(Persisted::Compacted(meta.index));
            }
            self.carry_out(job);
        }
        reports.extend(log);
        Synced {
            reports,
            released: std::mem::take(&mut self.waiting),
        }
    }

    /// A crash: the first `keep` unsynced jobs reach the disk after all, the rest and every
    /// waiting message are lost. Returns how many unsynced jobs there were.
    pub fn crash(&mut self, keep: impl FnOnce(usize) -> usize) -> usize {
        let unsynced = std::mem::take(&mut self.unsynced);
        let total = unsynced.len();
        for job in unsynced.into_iter().take(keep(total)) {
            self.carry_out(job);
        }
        self.waiting.clear();
        self.written = self.durable.log.clone();
        total
    }

    fn carry_out(&mut self, job: Job) {
        match job {
            Job::Write(write) => self
                .durable
                .log
                .apply(&write)
                .expect("a write accepted once applies to the durable log as well"),
            Job::SaveSnapshot(snapshot) => self.durable.snapshot = Some(snapshot),
            Job::CompactOwn(meta) => self
                .durable
                .log
                .apply(&Write::Compact(meta))
                .expect("a compaction always applies"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::{Message, Payload};

    fn entry(index: Index, term: Term) -> Entry {
        Entry {
            term,
            index,
            payload: Payload::Noop,
        }
    }

    fn envelope() -> Envelope {
        Envelope {
            from: "n1".to_string(),
            to: "n2".to_string(),
            term: 1,
            message: Message::AppendAccepted { match_index: 2 },
        }
    }

    fn meta(index: Index, term: Term) -> SnapshotMeta {
        SnapshotMeta {
            index,
            term,
            members: vec!["n1".to_string()],
        }
    }

    fn snapshot(index: Index, term: Term) -> SnapshotFile {
        SnapshotFile {
            meta: meta(index, term),
            bytes: vec![index as u8],
        }
    }

    /// Contract of the driver: a message that follows a write leaves only once the write is
    /// durable; a crash before the sync loses both the unsynced tail and the message.
    #[test]
    fn gated_message_leaves_after_the_sync_and_dies_in_a_crash() {
        let mut disk = Storage::new(HardState::default(), vec![entry(1, 0)]);
        assert!(
            disk.send_after_writes(envelope()).is_some(),
            "nothing to wait for"
        );
        disk.write(Write::Entries(vec![entry(2, 1)])).unwrap();
        assert!(disk.send_after_writes(envelope()).is_none());
        let synced = disk.sync();
        assert_eq!(synced.reports, vec![Persisted::Log(2, 1)]);
        assert_eq!(synced.released, vec![envelope()]);

        disk.write(Write::Entries(vec![entry(2, 2), entry(3, 2)]))
            .unwrap();
        disk.send_after_writes(envelope());
        assert_eq!(disk.written().entries.len(), 3);
        disk.crash(|_| 0);
        assert_eq!(disk.durable().log.entries, vec![entry(1, 0), entry(2, 1)]);
        assert_eq!(disk.written().entries, vec![entry(1, 0), entry(2, 1)]);
        assert!(
            disk.sync().released.is_empty(),
            "the waiting message was lost"
        );
    }

    /// A write past the end of the log is refused rather than stored with a gap, and so is
    /// one at or before the compacted base.
    #[test]
    fn write_with_a_gap_or_before_the_base_is_refused() {
        let mut disk = Storage::new(HardState::default(), vec![entry(1, 0)]);
        assert!(disk.write(Write::Entries(vec![entry(3, 1)])).is_err());
        disk.write(Write::Entries(vec![entry(2, 1), entry(3, 1)]))
            .unwrap();
        disk.save_own_snapshot(snapshot(2, 1));
        assert!(disk.write(Write::Entries(vec![entry(2, 2)])).is_err());
        assert!(disk.write(Write::Entries(vec![entry(4, 2)])).is_ok());
    }

    /// `Recovered::apply`'s rule: a compaction keeps the entries after its index only if the
    /// log holds that index with the snapshot's term.
    #[test]
    fn compaction_keeps_only_an_agreeing_suffix() {
        let log = vec![entry(1, 0), entry(2, 1), entry(3, 1)];
        let mut agreeing = Storage::new(HardState::default(), log.clone());
        agreeing.write(Write::Compact(meta(2, 1))).unwrap();
        assert_eq!(agreeing.written().entries, vec![entry(3, 1)]);
        assert_eq!(agreeing.written().last_index(), 3);

        let mut conflicting = Storage::new(HardState::default(), log);
        conflicting.write(Write::Compact(meta(2, 5))).unwrap();
        assert!(conflicting.written().entries.is_empty());
        assert_eq!(conflicting.written().last_index(), 2);
        conflicting.write(Write::Compact(meta(1, 0))).unwrap();
        assert_eq!(
            conflicting.written().base,
            meta(2, 5),
            "an older one is a no-op"
        );
    }

    /// The worker's order for an own snapshot: what was queued before it is durable and
    /// reported first, then the snapshot is saved, the log compacted and that reported; a
    /// crash keeps a prefix, so the snapshot file may be newer than the log's base but never
    /// older.
    #[test]
    fn own_snapshot_is_saved_before_the_compaction_and_reported_after_it() {
        let mut disk = Storage::new(HardState::default(), vec![entry(1, 0)]);
        disk.write(Write::Entries(vec![entry(2, 1), entry(3, 1)]))
            .unwrap();
        disk.save_own_snapshot(snapshot(3, 1));
        disk.write(Write::Entries(vec![entry(4, 1)])).unwrap();
        assert_eq!(disk.written().base.index, 3);
        assert_eq!(disk.durable().log.base.index, 0, "nothing durable yet");
        let synced = disk.sync();
        assert_eq!(
            synced.reports,
            vec![
                Persisted::Log(3, 1),
                Persisted::Compacted(3),
                Persisted::Log(4, 1)
            ]
        );
        assert_eq!(disk.durable().log.entries, vec![entry(4, 1)]);
        assert_eq!(disk.saved_snapshot(), Some(&snapshot(3, 1)));

        // Saved, then the crash: the snapshot file is ahead of the log's base.
        disk.write(Write::Entries(vec![entry(5, 1), entry(6, 1)]))
            .unwrap();
        disk.save_own_snapshot(snapshot(6, 1));
        disk.crash(|total| total - 1);
        assert_eq!(disk.saved_snapshot(), Some(&snapshot(6, 1)));
        assert_eq!(disk.durable().log.base.index, 3);
        assert_eq!(disk.written().last_index(), 6);
    }
}
