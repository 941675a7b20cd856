//! Compaction of the log file: reclaiming the space of entries a snapshot stands in for.
//!
//! Appending a `Compact` record tells replay to drop the entries it covers, but the bytes of
//! those entries, and of every term, vote and overwritten suffix before them, stay in the
//! file. So once a `Compact` moves the base forward, [`rewrite`] replaces the file with one
//! that holds only what is live:
//!
//! ```text
//! header | HardState | Compact(base) | Entries(base+1 ..) | Entries(..) | ... | Entries(.. last)
//! ```
//!
//! The replacement never edits the old file; it is the usual atomic swap:
//!
//! | step                                       | a crash here leaves                             |
//! |--------------------------------------------|-------------------------------------------------|
//! | 1. flush the buffered records to `log`     | `log`, possibly with a torn unsynced tail       |
//! | 2. replay `log`, write `log.tmp`, fsync it | `log` as in 1, and a stray `log.tmp`            |
//! | 3. rename `log.tmp` over `log`             | the old `log` or the new one (rename is atomic) |
//! | 4. fsync the directory                     | the old `log` or the new one                    |
//! | 5. reopen `log` for appending              | the new `log`                                   |
//!
//! Both files replay to the same state as far as synced writes go: the new one holds
//! everything the old one held up to and including the `Compact` record, already durable;
//! the old one holds every synced write, and its unsynced tail is what a crash may take
//! anyway. A stray `log.tmp` (step 2) was never renamed, so nothing depends on it: `open`
//! removes it without reading it.
//!
//! Cost: each compaction replays the whole file and writes the live part again. The file
//! holds only what was written since the previous compaction plus the entries kept then, and
//! the server compacts every few thousand entries, so this reads a few thousand entries'
//! worth of records and writes the kept ones, on the storage thread, once per compaction.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write as _};
use std::path::Path;

use super::record::{
    FILE_HEADER_LEN, Known, RECORD_HEADER_LEN, encode_payload, encode_record, file_header,
    last_index, replay,
};
use super::{io_error, sync_dir};
use crate::replication::{Entry, Index, Write};
use crate::{Error, Result};

/// The name of the file a compacted log is built in before it replaces `log`.
pub(super) const TEMP_FILE: &str = "log.tmp";

/// What the rewritten file holds, for the store to continue from.
#[derive(Debug)]
pub(super) struct Rewritten {
    /// The length of the new file.
    pub(super) size: u64,
    /// The index the entries compacted away ended with.
    pub(super) base_index: Index,
    /// The last live entry's index, or `base_index` when none is left.
    pub(super) last_index: Index,
}

/// Replaces the log file at `path` (in `dir`) with one holding only the state it replays
/// to, durably. The caller must have handed every buffered record to the OS first, and must
/// reopen its handle afterwards: the old one names the replaced file.
///
/// The caller knows where its records end (`records_end`) and about how many entries the
/// log holds: replay stops there, without reading the zeros the log keeps ahead (see
/// `wal.rs`), and sizes the entries' vector once.
pub(super) fn rewrite(
    dir: &Path,
    path: &Path,
    max_record_len: u32,
    records_end: u64,
    entries: usize,
) -> Result<Rewritten> {
    // A fresh handle for reading from the start.
    let file = File::open(path).map_err(io_error("opening", path))?;
    let known = Known {
        end: Some(records_end),
        entries,
    };
    let replayed = replay(path, &file, known)?;
    if replayed.valid_len != records_end {
        // The store appends whole records only, so this is some other writer, or a failure
        // that should have stopped the store: rewriting would silently drop those bytes.
        return Err(Error::Corrupt(format!(
            "{}: the records end at byte {}, not at {records_end}, while compacting",
            path.display(),
            replayed.valid_len,
        )));
    }
    drop(file);
    let state = replayed.state;
    let base_index = state.base.index;
    let last_index = last_index(&state.entries).max(base_index);

    let mut writes = vec![
        Write::HardState(state.hard_state),
        Write::Compact(state.base),
    ];
    writes.extend(split_entries(state.entries, max_record_len));

    let temp = dir.join(TEMP_FILE);
    let size = write_file(&temp, &writes, max_record_len)?;
    fs::rename(&temp, path).map_err(io_error("renaming into", path))?;
    sync_dir(dir)?;
    Ok(Rewritten {
        size,
        base_index,
        last_index,
    })
}

/// Removes a `log.tmp` left by a crash during [`rewrite`]. It was never renamed into place,
/// so the log does not depend on it, whatever it holds.
pub(super) fn remove_stale_temp(dir: &Path) -> Result<()> {
    let temp = dir.join(TEMP_FILE);
    match fs::remove_file(&temp) {
        Ok(()) => {
            tracing::warn!(
                path = %temp.display(),
                "removed a compacted log that a crash kept from replacing the log",
            );
            Ok(())
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(io_error("removing", &temp)(err)),
    }
}

/// Writes a log file holding `writes` to `path` (replacing whatever is there) and syncs it;
/// returns its length.
fn write_file(path: &Path, writes: &[Write], max_record_len: u32) -> Result<u64> {
    let file = File::create(path).map_err(io_error("creating", path))?;
    let mut out = BufWriter::new(file);
    out.write_all(&file_header())
        .map_err(io_error("writing", path))?;
    let mut size = FILE_HEADER_LEN;
    for write in writes {
        let payload = encode_payload(write)?;
        if payload.len() > max_record_len as usize {
            // Only a single entry larger than a record can get here, and the store refuses
            // to write one in the first place.
            return Err(Error::PayloadTooLarge);
        }
        out.write_all(&encode_record(&payload))
            .map_err(io_error("writing", path))?;
        size += RECORD_HEADER_LEN + payload.len() as u64;
    }
    let file = out
        .into_inner()
        .map_err(|err| io_error("writing", path)(err.into_error()))?;
    // sync_all, not sync_data: the file is new, so its metadata must be durable too before
    // a rename makes it the log.
    file.sync_all().map_err(io_error("syncing", path))?;
    Ok(size)
}

/// Splits `entries` into `Entries` writes whose payloads fit in `max_record_len`, filling
/// each record as far as it goes (fewer, larger records than halving until they fit).
fn split_entries(entries: Vec<Entry>, max_record_len: u32) -> Vec<Write> {
    // An `Entries` payload is the variant tag and the entry count (varints: at most 1 + 10
    // bytes), then the entries one after the other.
    const PAYLOAD_OVERHEAD: usize = 16;
    let budget = (max_record_len as usize).saturating_sub(PAYLOAD_OVERHEAD);
    let mut writes = Vec::new();
    let mut chunk = Vec::new();
    let mut chunk_len = 0;
    for entry in entries {
        let len = postcard::experimental::serialized_size(&entry)
            .expect("an entry that was decoded encodes again");
        if !chunk.is_empty() && chunk_len + len > budget {
            writes.push(Write::Entries(std::mem::take(&mut chunk)));
            chunk_len = 0;
        }
        chunk_len += len;
        chunk.push(entry);
    }
    if !chunk.is_empty() {
        writes.push(Write::Entries(chunk));
    }
    writes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::{HardState, SnapshotMeta, Term};
    use crate::storage::LogStore;
    use crate::storage::record::Recovered;
    use crate::storage::wal::LOG_FILE;
    use crate::storage::wal::tests::{entries, entry, hard_state, history, model, write_all};

    /// A snapshot's meta at `index` in `term`, with a configuration to show it is kept whole.
    fn meta(index: Index, term: Term) -> SnapshotMeta {
        SnapshotMeta {
            index,
            term,
            members: vec!["n1".to_string(), "n2".to_string(), "n3".to_string()],
        }
    }

    fn compact(index: Index, term: Term) -> Write {
        Write::Compact(meta(index, term))
    }

    fn file_len(dir: &Path) -> u64 {
        fs::metadata(dir.join(LOG_FILE)).unwrap().len()
    }

    /// The records of a log file: where each starts, and the write it holds.
    fn records(bytes: &[u8]) -> Vec<(u64, Write)> {
        let mut records = Vec::new();
        let mut offset = FILE_HEADER_LEN as usize;
        while offset < bytes.len() {
            let len = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
            let start = offset + RECORD_HEADER_LEN as usize;
            let write = postcard::from_bytes(&bytes[start..start + len]).unwrap();
            records.push((offset as u64, write));
            offset = start + len;
        }
        records
    }

    /// Raft §7, the usual case: a snapshot up to an entry the log holds (5 in term 2) drops
    /// the entries up to it and keeps those after it. Writes still buffered when the
    /// compaction comes are part of it. After a reopen the log starts at the snapshot, and it
    /// takes appends and an overwritten suffix like any log, across reopens.
    #[test]
    fn compaction_at_a_held_entry_keeps_the_suffix() {
        let dir = tempfile::tempdir().unwrap();
        let mut writes = history();
        writes.push(compact(5, 2));
        let (mut store, _) = LogStore::open(dir.path()).unwrap();
        for write in &writes {
            store.write(write).unwrap();
        }
        // Everything is durable after the rewrite; this sync has nothing left to do.
        store.sync().unwrap();
        assert_eq!(store.size(), file_len(dir.path()));
        drop(store);

        let (mut store, recovered) = LogStore::open(dir.path()).unwrap();
        assert_eq!(recovered.base, meta(5, 2));
        assert_eq!(
            recovered.entries,
            vec![entry(2, 6), entry(2, 7), entry(3, 8)]
        );
        assert_eq!(recovered.hard_state.term, 3);
        assert_eq!(recovered, model(&writes));

        // The log goes on after the compacted part: appends, a new term, and a new primary
        // overwriting part of the kept suffix.
        let more = [
            entries(3, 9, 10),
            hard_state(4, Some("n1")),
            entries(4, 7, 8),
        ];
        for write in &more {
            store.write(write).unwrap();
        }
        store.sync().unwrap();
        drop(store);
        writes.extend(more);
        let (_, recovered) = LogStore::open(dir.path()).unwrap();
        assert_eq!(recovered, model(&writes));
        assert_eq!(
            recovered.entries,
            vec![entry(2, 6), entry(4, 7), entry(4, 8)]
        );
    }

    /// A compaction reads the records up to where the log knows they end, not past them:
    /// the zeros kept ahead are not read again. A file cut short by another writer is
    /// refused, not rewritten without its lost part.
    #[test]
    fn compaction_refuses_a_file_cut_short_under_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = LogStore::open(dir.path()).unwrap();
        for write in history() {
            store.write(&write).unwrap();
        }
        store.sync().unwrap();
        assert!(file_len(dir.path()) > store.size(), "zeros are kept ahead");
        let cut = store.size() - 3;
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join(LOG_FILE))
            .unwrap()
            .set_len(cut)
            .unwrap();
        let refused = store.write(&compact(5, 2)).unwrap_err();
        assert!(matches!(refused, Error::Corrupt(_)), "{refused}");
    }

    /// Raft §7, an installed snapshot that does not match the log: entry 5 is in term 2, the
    /// snapshot says term 1. Nothing after it can be trusted, so every entry goes, and the
    /// log continues right after the snapshot.
    #[test]
    fn compaction_at_another_term_drops_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        let mut writes = history();
        writes.push(compact(5, 1));
        writes.push(entries(3, 6, 6));
        write_all(dir.path(), &writes);

        let (_, recovered) = LogStore::open(dir.path()).unwrap();
        assert_eq!(recovered.base, meta(5, 1));
        assert_eq!(recovered.entries, vec![entry(3, 6)]);
        assert_eq!(recovered, model(&writes));
    }

    /// An installed snapshot beyond the end of the log (a backup far behind) drops every
    /// entry; the log then ends at the snapshot, so the next write starts right after it.
    #[test]
    fn compaction_beyond_the_end_drops_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        let mut writes = history();
        writes.push(compact(20, 3));
        let (mut store, _) = LogStore::open(dir.path()).unwrap();
        for write in &writes {
            store.write(write).unwrap();
        }
        let next = entries(3, 21, 22);
        store.write(&next).unwrap();
        store.sync().unwrap();
        drop(store);
        writes.push(next);

        let (_, recovered) = LogStore::open(dir.path()).unwrap();
        assert_eq!(recovered.base, meta(20, 3));
        assert_eq!(recovered.entries, vec![entry(3, 21), entry(3, 22)]);
        assert_eq!(recovered, model(&writes));
    }

    /// After a compaction that dropped every entry, the log ends at the snapshot's index,
    /// not at the old last entry: a write leaving a gap after the snapshot is refused.
    #[test]
    #[should_panic(expected = "log ends at 20")]
    fn write_after_dropping_compaction_must_start_right_after_the_base() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = LogStore::open(dir.path()).unwrap();
        for write in &history() {
            store.write(write).unwrap();
        }
        store.write(&compact(20, 3)).unwrap();
        let _ = store.write(&entries(3, 22, 22));
    }

    /// A compaction that drops entries the log holds (5 in term 1, where the log has term 2)
    /// also refuses a write that would reach back into the old log.
    #[test]
    #[should_panic(expected = "log ends at 5")]
    fn write_after_mismatched_compaction_cannot_continue_the_old_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = LogStore::open(dir.path()).unwrap();
        for write in &history() {
            store.write(write).unwrap();
        }
        store.write(&compact(5, 1)).unwrap();
        // The old log ended at 8; after the compaction it ends at 5.
        let _ = store.write(&entries(3, 9, 9));
    }

    /// Compaction reclaims the space: a log of 10,000 entries compacted at 9,990 keeps 10
    /// entries, and its file (as the store counts it and as the file system does) shrinks
    /// more than a hundredfold.
    #[test]
    fn compaction_shrinks_the_file_a_hundredfold() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = LogStore::open(dir.path()).unwrap();
        store.write(&hard_state(1, Some("n1"))).unwrap();
        for index in 1..=10_000 {
            store.write(&entries(1, index, index)).unwrap();
        }
        store.sync().unwrap();
        let before = store.size();
        assert!(file_len(dir.path()) > before, "zeros are kept ahead");

        store.write(&compact(9_990, 1)).unwrap();
        let after = store.size();
        assert_eq!(file_len(dir.path()), after);
        assert!(
            after * 100 < before,
            "{before} bytes before compaction, {after} after"
        );
        drop(store);

        let (_, recovered) = LogStore::open(dir.path()).unwrap();
        assert_eq!(recovered.base, meta(9_990, 1));
        let kept: Vec<Entry> = (9_991..=10_000).map(|index| entry(1, index)).collect();
        assert_eq!(recovered.entries, kept);
    }

    /// The rewritten file holds only the live state, in order: the header, the hard state,
    /// the base, then the kept entries in records no larger than the limit, each as full as
    /// it can be.
    #[test]
    fn rewritten_file_holds_only_the_live_state() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = LogStore::open(dir.path()).unwrap();
        store.set_max_record_len(100);
        let writes = [hard_state(2, Some("n2")), entries(2, 1, 40), compact(10, 2)];
        for write in &writes {
            store.write(write).unwrap();
        }
        drop(store);

        let bytes = fs::read(dir.path().join(LOG_FILE)).unwrap();
        let records = records(&bytes);
        let kinds: Vec<Write> = records.iter().take(2).map(|(_, w)| w.clone()).collect();
        assert_eq!(kinds, vec![hard_state(2, Some("n2")), compact(10, 2)]);
        let mut kept = Vec::new();
        for (i, (start, write)) in records.iter().enumerate().skip(2) {
            let Write::Entries(chunk) = write else {
                panic!("record {i} is {write:?}, not entries");
            };
            let end = records.get(i + 1).map_or(bytes.len() as u64, |(s, _)| *s);
            assert!(
                end - start - RECORD_HEADER_LEN <= 100,
                "record {i} too large"
            );
            kept.extend(chunk.iter().cloned());
        }
        assert!(records.len() > 4, "the split was not exercised");
        assert_eq!(
            kept,
            (11..=40).map(|index| entry(2, index)).collect::<Vec<_>>()
        );
    }

    /// A crash during a compaction can leave `log.tmp` behind: garbage (cut while being
    /// written), or a whole compacted log that was never renamed. Either way `log` is the
    /// log: `open` replays it alone, removes the stray file, and a later compaction works.
    #[test]
    fn stale_temp_file_is_ignored_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let writes = history();
        write_all(dir.path(), &writes);
        let temp = dir.path().join(TEMP_FILE);

        fs::write(&temp, b"UWAL\x01\0\0\0 half a record").unwrap();
        let (_, recovered) = LogStore::open(dir.path()).unwrap();
        assert_eq!(recovered, model(&writes));
        assert!(!temp.exists());

        // A complete compacted log from another directory, as if the rename never happened.
        let other = tempfile::tempdir().unwrap();
        write_all(other.path(), &[entries(9, 1, 3), compact(2, 9)]);
        fs::copy(other.path().join(LOG_FILE), &temp).unwrap();
        let (mut store, recovered) = LogStore::open(dir.path()).unwrap();
        assert_eq!(recovered, model(&writes));
        assert!(!temp.exists());

        store.write(&compact(6, 2)).unwrap();
        drop(store);
        let mut compacted = writes.clone();
        compacted.push(compact(6, 2));
        let (_, recovered) = LogStore::open(dir.path()).unwrap();
        assert_eq!(recovered, model(&compacted));
    }

    /// Torn tail after a compaction: the rewritten file is appended to like any log, so a
    /// crash can cut its last record at any byte. For every cut, replay gives exactly the
    /// state of the records before it (the base and the entries of the earlier records),
    /// truncates the file there, and the log takes the lost entries again.
    #[test]
    fn torn_last_record_after_compaction_recovers_the_previous_record() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = LogStore::open(dir.path()).unwrap();
        store.set_max_record_len(100);
        let mut writes = history();
        writes.extend([entries(3, 9, 30), compact(5, 2)]);
        for write in &writes {
            store.write(write).unwrap();
        }
        drop(store);
        let full = fs::read(dir.path().join(LOG_FILE)).unwrap();
        let records = records(&full);
        assert!(
            records.len() > 3,
            "the kept entries should span several records"
        );
        let (last_start, Write::Entries(last)) = records.last().unwrap().clone() else {
            panic!("the rewritten file should end with entries");
        };
        let lost_from = last[0].index;
        let compacted = model(&writes);
        let before = Recovered {
            entries: compacted
                .entries
                .iter()
                .filter(|entry| entry.index < lost_from)
                .cloned()
                .collect(),
            ..compacted.clone()
        };
        assert_eq!(before.base, meta(5, 2));
        assert_eq!(
            before.hard_state,
            HardState {
                term: 3,
                vote: Some("n3".to_string())
            }
        );

        for cut in last_start..full.len() as u64 {
            let torn = tempfile::tempdir().unwrap();
            let path = torn.path().join(LOG_FILE);
            fs::write(&path, &full[..cut as usize]).unwrap();

            let (mut store, recovered) = LogStore::open(torn.path()).unwrap();
            assert_eq!(recovered, before, "cut at byte {cut}");
            assert_eq!(fs::metadata(&path).unwrap().len(), last_start, "cut {cut}");
            assert_eq!(store.size(), last_start, "cut at byte {cut}");

            // The log ends where the previous record ended; the lost entries fit right after.
            store.write(&Write::Entries(last.clone())).unwrap();
            store.sync().unwrap();
            drop(store);
            let (_, recovered) = LogStore::open(torn.path()).unwrap();
            assert_eq!(recovered, compacted, "rewrite after cut at byte {cut}");
        }
    }
}
