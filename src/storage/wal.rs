//! The durable replication log: an append-only file `log` in the data directory holding
//! every [`Write`] the core produced, in order, replayed at start to rebuild the term, the
//! vote, the snapshot base and the log entries. The file format and replay live in
//! `record.rs`; a `Compact` that moves the base forward replaces the file with one holding
//! only the live state, as `rewrite.rs` describes.
//!
//! The file is kept ahead of its records by up to [`PREALLOCATE_BYTES`] of zeros, written
//! and synced with the records before them. A sync that only overwrites such zeros leaves
//! the file's size alone, so `fdatasync` writes the data and flushes the disk's cache, and
//! nothing else; a sync that grew the file also had to write its inode. Measured on the
//! write path: 40 % less CPU and latency per sync. Replay reads the zeros as the end of the
//! log, and a record torn by a crash as a torn tail when only zeros follow it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use super::record::{
    FILE_HEADER_LEN, Known, MAX_RECORD_LEN, RECORD_HEADER_LEN, Recovered, append_record,
    check_entries, encode_payload_into, file_header, last_index, replay, rest_is_zero,
};
use super::rewrite::{remove_stale_temp, rewrite};
use super::{create_dir_durable, io_error, sync_dir};
use crate::replication::{Index, Write};
use crate::{Error, Result};

/// The name of the log file in the data directory.
pub(super) const LOG_FILE: &str = "log";
/// Records are gathered in memory up to this many bytes before they are handed to the OS, so
/// that a batch of small writes costs one `write` system call rather than one each.
const WRITE_BUFFER_LEN: usize = 64 << 10;
/// How far the file is kept ahead of its records, in zeros (see the module's comment).
pub const PREALLOCATE_BYTES: u64 = 1 << 20;

/// The durable replication log in a data directory. It keeps no entries in memory: the
/// caller holds the log it got from [`open`](Self::open) and tells the store what changed.
#[derive(Debug)]
pub struct LogStore {
    /// The data directory, whose entry for the file is synced when the file is replaced.
    dir: PathBuf,
    /// The log file, for error messages.
    path: PathBuf,
    /// Written at explicit offsets (records go over the zeros ahead of them). Reopened when
    /// a compaction replaces the file.
    file: File,
    /// Encoded records not yet handed to the OS.
    buffer: Vec<u8>,
    /// The payload of the record being written, kept between writes for its room.
    encoded: Vec<u8>,
    /// Bytes of records in the file, counting the buffered ones.
    size: u64,
    /// The file's length: `size` (less the buffered records) plus the zeros ahead.
    allocated: u64,
    /// How many zeros to keep ahead of the records; a field so that tests can turn it off.
    preallocate: u64,
    /// The index of the last entry written, or the base index when no entry is left after
    /// it; to refuse a write that would leave a gap.
    last_index: Index,
    /// The last index compacted away (0 if none), below which no entry may be written.
    base_index: Index,
    /// Whether anything was written since the last sync.
    unsynced: bool,
    /// The largest payload of one record; a field so that tests can make splitting cheap.
    max_record_len: u32,
    /// Set by the first failed write or sync. After one, the file may end in a partial record
    /// and the OS may have dropped unsynced pages (a failed fsync cannot be retried), so the
    /// store refuses all further work: the server must restart and replay.
    failed: Option<String>,
}

impl LogStore {
    /// Opens (creating the directory and file if missing) the log in `dir`, replays it and
    /// returns what it holds. A torn write at the end is cut off; any other damage is
    /// [`Error::Corrupt`].
    pub fn open(dir: &Path) -> Result<(LogStore, Recovered)> {
        create_dir_durable(dir)?;
        remove_stale_temp(dir)?;
        let path = dir.join(LOG_FILE);
        let file = open_for_writing(&path)?;
        let replayed = replay(&path, &file, Known::default())?;

        let mut size = replayed.valid_len;
        let mut allocated = replayed.file_len;
        // Zeros after the last record are space kept ahead, written by us; anything else is
        // a torn write, cut off before a record goes over it.
        if replayed.valid_len < replayed.file_len
            && !rest_is_zero(&file, replayed.valid_len, &path)?
        {
            tracing::warn!(
                path = %path.display(),
                offset = replayed.valid_len,
                dropped_bytes = replayed.file_len - replayed.valid_len,
                "discarding a torn write at the end of the log (it was never synced)",
            );
            file.set_len(replayed.valid_len)
                .map_err(io_error("truncating", &path))?;
            allocated = replayed.valid_len;
        }
        if replayed.valid_len < FILE_HEADER_LEN {
            // A new file, or one whose creation crashed before its header was synced.
            file.set_len(0).map_err(io_error("truncating", &path))?;
            file.write_all_at(&file_header(), 0)
                .map_err(io_error("writing header of", &path))?;
            size = FILE_HEADER_LEN;
            allocated = FILE_HEADER_LEN;
        }
        if allocated != replayed.file_len {
            file.sync_all().map_err(io_error("syncing", &path))?;
        }
        if replayed.valid_len < FILE_HEADER_LEN {
            // The file's directory entry is as new as its header; without this a power loss
            // could take the whole file away after we reported it durable.
            sync_dir(dir)?;
        }

        let store = LogStore {
            dir: dir.to_path_buf(),
            path,
            file,
            buffer: Vec::new(),
            encoded: Vec::new(),
            size,
            allocated,
            preallocate: PREALLOCATE_BYTES,
            last_index: last_index(&replayed.state.entries).max(replayed.state.base.index),
            base_index: replayed.state.base.index,
            unsynced: false,
            max_record_len: MAX_RECORD_LEN,
            failed: None,
        };
        Ok((store, replayed.state))
    }

    /// Appends one write to the file (buffered; not durable until [`sync`](Self::sync)).
    ///
    /// A `Compact` that moves the base forward is the exception: it replaces the file with
    /// one holding only the live state, and leaves every write so far durable.
    ///
    /// Panics if an `Entries` write is empty, not contiguous, or starts outside the log (at
    /// or before the base, or past the end): the core never produces one, and on disk it
    /// would make the log unreadable.
    pub fn write(&mut self, write: &Write) -> Result<()> {
        self.check_usable()?;
        if let Write::Entries(entries) = write
            && let Err(reason) = check_entries(self.base_index, self.last_index, entries)
        {
            panic!("log write would break the log: {reason}");
        }
        let mut payload = std::mem::take(&mut self.encoded);
        encode_payload_into(write, &mut payload)?;
        if payload.len() > self.max_record_len as usize {
            return self.write_split(write);
        }
        append_record(&mut self.buffer, &payload);
        self.size += RECORD_HEADER_LEN + payload.len() as u64;
        // Kept for the next write's room, unless a catch-up's large write made it large.
        if payload.capacity() <= WRITE_BUFFER_LEN {
            self.encoded = payload;
        }
        self.unsynced = true;
        match write {
            Write::Entries(entries) => self.last_index = last_index(entries),
            Write::Compact(meta) if meta.index > self.base_index => {
                // The record goes into the old file first: replaying that file is how the
                // rewrite learns the compacted state.
                let result = self.compact_file();
                self.fail_on_error(result)?;
                assert_eq!(
                    self.base_index, meta.index,
                    "the compacted log's base is not the compaction's"
                );
                return Ok(());
            }
            _ => {}
        }
        if self.buffer.len() >= WRITE_BUFFER_LEN {
            let result = self.flush_buffer();
            self.fail_on_error(result)?;
        }
        Ok(())
    }

    /// Hands every write so far to the operating system without waiting for the disk: it
    /// survives a crash of the process, not of the machine. For `--fsync never` only.
    pub fn flush(&mut self) -> Result<()> {
        self.check_usable()?;
        let result = self.flush_buffer();
        self.fail_on_error(result)
    }

    /// Makes every write so far durable (flush + fdatasync). One sync covers all writes
    /// before it (group commit).
    pub fn sync(&mut self) -> Result<()> {
        self.check_usable()?;
        if !self.unsynced {
            return Ok(());
        }
        // fdatasync suffices: it also persists the file size, which is the only metadata
        // replay needs.
        let result = self.flush_buffer().and_then(|()| {
            self.file
                .sync_data()
                .map_err(io_error("syncing", &self.path))
        });
        self.fail_on_error(result)?;
        self.unsynced = false;
        Ok(())
    }

    /// Bytes in the log file, counting writes not yet handed to the OS.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Writes an `Entries` write too large for one record as two halves. Replay gives the
    /// same result: the second half starts right after the first, so it drops nothing.
    fn write_split(&mut self, write: &Write) -> Result<()> {
        match write {
            Write::Entries(entries) if entries.len() > 1 => {
                let (first, second) = entries.split_at(entries.len() / 2);
                self.write(&Write::Entries(first.to_vec()))?;
                self.write(&Write::Entries(second.to_vec()))
            }
            _ => Err(Error::PayloadTooLarge),
        }
    }

    /// Replaces the file with one holding only the live state (see `rewrite.rs`), and
    /// continues from it: everything written so far is in it, and durable.
    ///
    /// This replays the whole file, which is the only way to learn what is live: the store
    /// keeps no entries in memory, and whether the compaction kept the entries after its
    /// index depends on the term the log holds there. The file holds only what came since
    /// the previous compaction, so the cost is bounded by how often the server compacts.
    fn compact_file(&mut self) -> Result<()> {
        self.flush_buffer()?;
        let entries = usize::try_from(self.last_index.saturating_sub(self.base_index)).unwrap_or(0);
        let live = rewrite(
            &self.dir,
            &self.path,
            self.max_record_len,
            self.size,
            entries,
        )?;
        // The old handle names the replaced file; writing to it would lose the writes.
        self.file = open_for_writing(&self.path)?;
        self.size = live.size;
        self.allocated = live.size;
        self.base_index = live.base_index;
        self.last_index = live.last_index;
        self.unsynced = false;
        Ok(())
    }

    /// Lowers the largest record payload, so that tests can make splitting cheap.
    #[cfg(test)]
    pub(super) fn set_max_record_len(&mut self, max_record_len: u32) {
        self.max_record_len = max_record_len;
    }

    /// Turns off the zeros kept ahead, so that tests can see the file end at the records.
    #[cfg(test)]
    pub(super) fn set_preallocate(&mut self, bytes: u64) {
        self.preallocate = bytes;
    }

    /// Hands the buffered records to the OS, over the zeros ahead of them. Records that
    /// reach past those zeros take [`PREALLOCATE_BYTES`] more with them, in the same write,
    /// so the next sync makes the new length durable once for many syncs after it.
    fn flush_buffer(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let offset = self.size - self.buffer.len() as u64;
        if self.size > self.allocated {
            let target = self.size + self.preallocate;
            self.buffer
                .resize(self.buffer.len() + (target - self.size) as usize, 0);
            self.allocated = target;
        }
        self.file
            .write_all_at(&self.buffer, offset)
            .map_err(io_error("writing", &self.path))?;
        self.buffer.clear();
        Ok(())
    }

    /// Refuses work after an earlier failure (see the `failed` field).
    fn check_usable(&self) -> Result<()> {
        match &self.failed {
            Some(reason) => Err(Error::Io(format!(
                "{}: unusable after an earlier failure: {reason}",
                self.path.display()
            ))),
            None => Ok(()),
        }
    }

    /// Remembers a failure so that [`check_usable`](Self::check_usable) refuses from now on.
    fn fail_on_error(&mut self, result: Result<()>) -> Result<()> {
        if let Err(err) = &result {
            self.failed = Some(err.to_string());
            // Never hand these bytes to the OS: behind a partial record they would turn a
            // torn tail, which replay repairs, into damage in the middle, which it refuses.
            self.buffer.clear();
        }
        result
    }
}

/// Opens (creating it if missing) the log file for reading and writing.
fn open_for_writing(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_error("opening", path))
}

impl Drop for LogStore {
    /// Hands buffered records to the OS, as a buffered writer would. This makes nothing
    /// durable that was not synced; it only keeps a clean shutdown from losing them.
    fn drop(&mut self) {
        if self.failed.is_none() {
            // Nobody is left to report an error to, and replay copes with a partial record.
            let _ = self.flush_buffer();
        }
    }
}

/// The tests, and the writes and the model that the compaction tests in `rewrite.rs` share.
#[cfg(test)]
pub(super) mod tests {
    use std::fs;

    use super::*;
    use crate::replication::{Entry, HardState, Payload, Term};
    use crate::storage::record::{MAGIC, encode_record};

    /// An entry whose command names its term and index, so that a mix-up shows.
    pub(in crate::storage) fn entry(term: Term, index: Index) -> Entry {
        Entry {
            term,
            index,
            payload: Payload::Command(format!("set x={term}.{index}").into_bytes()),
        }
    }

    /// `Write::Entries` of the entries `first..=last`, all in `term`.
    pub(in crate::storage) fn entries(term: Term, first: Index, last: Index) -> Write {
        Write::Entries((first..=last).map(|index| entry(term, index)).collect())
    }

    pub(in crate::storage) fn hard_state(term: Term, vote: Option<&str>) -> Write {
        Write::HardState(HardState {
            term,
            vote: vote.map(str::to_string),
        })
    }

    /// The state after `writes`, computed independently of the store: the contract of
    /// `Write` in a few lines.
    pub(in crate::storage) fn model(writes: &[Write]) -> Recovered {
        let mut state = Recovered::default();
        for write in writes {
            match write {
                Write::HardState(hard_state) => state.hard_state = hard_state.clone(),
                Write::Entries(new) => {
                    state.entries.retain(|entry| entry.index < new[0].index);
                    state.entries.extend(new.iter().cloned());
                }
                Write::Compact(meta) if meta.index > state.base.index => {
                    let held = state
                        .entries
                        .iter()
                        .any(|entry| entry.index == meta.index && entry.term == meta.term);
                    state
                        .entries
                        .retain(|entry| held && entry.index > meta.index);
                    state.base = meta.clone();
                }
                Write::Compact(_) => {}
            }
        }
        state
    }

    /// Opens the log in `dir`, applies `writes` and syncs; returns the file offset at which
    /// each write's record starts. The file ends at the last record (no zeros kept ahead),
    /// so that tests can damage its end.
    pub(in crate::storage) fn write_all(dir: &Path, writes: &[Write]) -> Vec<u64> {
        let (mut store, _) = LogStore::open(dir).unwrap();
        store.set_preallocate(0);
        let mut starts = Vec::new();
        for write in writes {
            starts.push(store.size());
            store.write(write).unwrap();
        }
        store.sync().unwrap();
        starts
    }

    /// A history with elections, votes, appends, and a conflicting suffix overwritten by a
    /// newer primary.
    pub(in crate::storage) fn history() -> Vec<Write> {
        vec![
            hard_state(1, Some("n1")),
            entries(1, 1, 3),
            entries(1, 4, 5),
            hard_state(2, None),
            hard_state(2, Some("n2")),
            // The new primary's log diverges at 4: entries 4 and 5 of term 1 go.
            entries(2, 4, 4),
            entries(2, 5, 7),
            hard_state(3, Some("n3")),
            entries(3, 8, 8),
        ]
    }

    fn corrupt_message(result: Result<(LogStore, Recovered)>) -> String {
        match result {
            Err(Error::Corrupt(message)) => message,
            Err(other) => panic!("expected Corrupt, got {other:?}"),
            Ok((_, recovered)) => panic!("expected Corrupt, recovered {recovered:?}"),
        }
    }

    /// Replay rebuilds exactly the state the writes describe: the last hard state, and the
    /// log with a conflicting suffix replaced (`Write::Entries` drops every entry from its
    /// first index on). A second session continues where the first stopped.
    #[test]
    fn round_trip_restores_term_vote_and_overwritten_log() {
        let dir = tempfile::tempdir().unwrap();
        let writes = history();
        write_all(dir.path(), &writes);

        let (_, recovered) = LogStore::open(dir.path()).unwrap();
        let mut expected = vec![entry(1, 1), entry(1, 2), entry(1, 3)];
        expected.extend([entry(2, 4), entry(2, 5), entry(2, 6), entry(2, 7)]);
        expected.push(entry(3, 8));
        assert_eq!(recovered.entries, expected);
        assert_eq!(
            recovered.hard_state,
            HardState {
                term: 3,
                vote: Some("n3".to_string())
            }
        );
        assert_eq!(recovered, model(&writes));

        // Truncating back to the start of the log works across sessions too.
        write_all(dir.path(), &[entries(4, 1, 2)]);
        let (_, recovered) = LogStore::open(dir.path()).unwrap();
        assert_eq!(recovered.entries, vec![entry(4, 1), entry(4, 2)]);
        assert_eq!(recovered.hard_state.term, 3);
    }

    /// A fresh directory (missing parents included) opens as an empty log, and reopening
    /// an empty log is empty too.
    #[test]
    fn new_log_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a").join("data");
        let (store, recovered) = LogStore::open(&data).unwrap();
        assert_eq!(recovered, Recovered::default());
        assert_eq!(store.size(), FILE_HEADER_LEN);
        drop(store);
        let (_, recovered) = LogStore::open(&data).unwrap();
        assert_eq!(recovered, Recovered::default());
        assert_eq!(
            fs::metadata(data.join(LOG_FILE)).unwrap().len(),
            FILE_HEADER_LEN
        );
    }

    /// Writes the history and a last record that overwrites a suffix (so that none of its
    /// effect may survive), then, for every byte at which a crash could cut that record,
    /// opens the file `tear` makes of the whole file and the cut. Replay must give exactly
    /// the writes before it, `check` must hold of the file, the record's start and the cut,
    /// and the
    /// log must take the next write after it.
    fn every_torn_last_record(
        tear: impl Fn(&[u8], usize) -> Vec<u8>,
        check: impl Fn(&Path, u64, u64),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut writes = history();
        writes.push(entries(4, 6, 9));
        let starts = write_all(dir.path(), &writes);
        let full = fs::read(dir.path().join(LOG_FILE)).unwrap();
        let last_start = *starts.last().unwrap();
        let before = model(&writes[..writes.len() - 1]);

        for cut in last_start..full.len() as u64 {
            let torn = tempfile::tempdir().unwrap();
            let path = torn.path().join(LOG_FILE);
            fs::write(&path, tear(&full, cut as usize)).unwrap();

            let (mut store, recovered) = LogStore::open(torn.path()).unwrap();
            assert_eq!(recovered, before, "cut at byte {cut}");
            assert_eq!(store.size(), last_start, "cut at byte {cut}");
            check(&path, last_start, cut);

            let next = entries(5, 9, 9);
            store.write(&next).unwrap();
            store.sync().unwrap();
            drop(store);
            let (_, recovered) = LogStore::open(torn.path()).unwrap();
            let mut after = writes[..writes.len() - 1].to_vec();
            after.push(next);
            assert_eq!(recovered, model(&after), "write after cut at byte {cut}");
        }
    }

    /// Torn tail: a crash while the last write was unsynced can cut the file at any byte of
    /// its record. For every such cut, replay gives exactly the state of the writes before
    /// it, truncates the file to their end, and the log takes new writes after it.
    #[test]
    fn torn_last_record_at_every_offset_recovers_the_prefix() {
        every_torn_last_record(
            |full, cut| full[..cut].to_vec(),
            |path, last_start, cut| {
                assert_eq!(fs::metadata(path).unwrap().len(), last_start, "cut {cut}");
            },
        );
    }

    /// A crash can tear the last record before the zeros kept ahead at any byte, leaving
    /// zeros where the rest of it should be. For every such cut, replay gives the writes
    /// before it, the torn bytes are cut off (a shorter record going over them must not be
    /// followed by their remains), and the log takes new writes after it.
    #[test]
    fn torn_last_record_before_zeros_recovers_the_prefix() {
        every_torn_last_record(
            |full, cut| {
                let mut bytes = full[..cut].to_vec();
                bytes.resize(full.len() + 4096, 0);
                bytes
            },
            |path, last_start, cut| {
                let rest = fs::read(path).unwrap();
                assert!(
                    rest[last_start as usize..].iter().all(|&b| b == 0),
                    "torn bytes left after cut {cut}"
                );
            },
        );
    }

    /// A last record that is whole in length but fails its checksum (a write whose sectors
    /// landed partly) ends at the end of the file: a torn write, cut off like the others.
    #[test]
    fn bad_checksum_in_last_record_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let writes = history();
        let starts = write_all(dir.path(), &writes);
        let path = dir.path().join(LOG_FILE);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        fs::write(&path, &bytes).unwrap();

        let (_, recovered) = LogStore::open(dir.path()).unwrap();
        assert_eq!(recovered, model(&writes[..writes.len() - 1]));
        assert_eq!(fs::metadata(&path).unwrap().len(), *starts.last().unwrap());
    }

    /// Zeros after the last record (kept ahead by the log, or left by a file system that
    /// extended the file before the data landed) are where the log ends, not damage; the
    /// next record goes over them.
    #[test]
    fn zero_filled_tail_is_the_end_of_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let writes = history();
        write_all(dir.path(), &writes);
        let path = dir.path().join(LOG_FILE);
        let len = fs::metadata(&path).unwrap().len();
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend([0u8; 4096]);
        fs::write(&path, &bytes).unwrap();

        let (mut store, recovered) = LogStore::open(dir.path()).unwrap();
        assert_eq!(recovered, model(&writes));
        assert_eq!(store.size(), len);
        let next = entries(9, 9, 9);
        store.write(&next).unwrap();
        store.sync().unwrap();
        drop(store);
        let (_, recovered) = LogStore::open(dir.path()).unwrap();
        let mut after = writes.clone();
        after.push(next);
        assert_eq!(recovered, model(&after));
    }

    /// The zeros kept ahead: a sync that only writes over them leaves the file's length
    /// alone (so `fdatasync` has no inode to write), records that reach past them take more
    /// zeros with them, and a reopened log continues right after its last record.
    #[test]
    fn records_go_over_zeros_kept_ahead_and_the_length_moves_rarely() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let (mut store, _) = LogStore::open(dir.path()).unwrap();
        store.write(&entries(1, 1, 1)).unwrap();
        store.sync().unwrap();
        let allocated = fs::metadata(&path).unwrap().len();
        assert_eq!(allocated, store.size() + PREALLOCATE_BYTES);

        let mut writes = vec![entries(1, 1, 1)];
        let mut lengths = std::collections::BTreeSet::new();
        let mut index = 2;
        while store.size() < 3 * PREALLOCATE_BYTES {
            let write = entries(1, index, index + 99);
            index += 100;
            store.write(&write).unwrap();
            store.sync().unwrap();
            writes.push(write);
            let len = fs::metadata(&path).unwrap().len();
            assert!(len >= store.size(), "records past the file's end");
            lengths.insert(len);
        }
        // Hundreds of syncs, and the length changed only each time the zeros ran out.
        assert!(
            lengths.len() <= 4,
            "the length changed {} times",
            lengths.len()
        );
        let size = store.size();
        drop(store);

        let (mut store, recovered) = LogStore::open(dir.path()).unwrap();
        assert_eq!(recovered, model(&writes));
        assert_eq!(store.size(), size);
        let next = entries(2, index, index);
        store.write(&next).unwrap();
        store.sync().unwrap();
        drop(store);
        writes.push(next);
        let (_, recovered) = LogStore::open(dir.path()).unwrap();
        assert_eq!(recovered, model(&writes));
    }

    /// Damage in the middle: a flipped byte in a record with valid records after it cannot
    /// be a torn write, so the log is refused with the file and the record's offset named,
    /// instead of serving a log with a hole (or a wrong vote) in it.
    #[test]
    fn flipped_byte_mid_log_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let writes = history();
        let starts = write_all(dir.path(), &writes);
        let path = dir.path().join(LOG_FILE);
        let original = fs::read(&path).unwrap();

        // Every payload byte of a record in the middle, one at a time.
        let (start, end) = (starts[2], starts[3]);
        for at in start + RECORD_HEADER_LEN..end {
            let mut bytes = original.clone();
            bytes[at as usize] ^= 0x40;
            fs::write(&path, &bytes).unwrap();
            let message = corrupt_message(LogStore::open(dir.path()));
            assert!(
                message.contains(&format!("byte offset {start}")),
                "{message}"
            );
            assert!(message.contains(&path.display().to_string()), "{message}");
            // Refusing must not repair: the file is left as found for an operator.
            assert_eq!(fs::read(&path).unwrap(), bytes);
        }
    }

    /// A flip in the top bits of a length field makes the record claim more than any writer
    /// writes; that is damage even though it points past the end of the file.
    #[test]
    fn impossible_length_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let starts = write_all(dir.path(), &history());
        let path = dir.path().join(LOG_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes[starts[1] as usize + 3] ^= 0x80;
        fs::write(&path, &bytes).unwrap();
        let message = corrupt_message(LogStore::open(dir.path()));
        assert!(
            message.contains(&format!("byte offset {}", starts[1])),
            "{message}"
        );
    }

    /// A record that passes its checksum but would leave a gap in the log (entries 5.. after
    /// a log ending at 3) is refused: replay keeps the log contiguous from 1.
    #[test]
    fn gap_in_entries_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        write_all(dir.path(), &[entries(1, 1, 3)]);
        let path = dir.path().join(LOG_FILE);
        let gap_at = fs::metadata(&path).unwrap().len();
        let mut bytes = fs::read(&path).unwrap();
        let gap = postcard::to_stdvec(&entries(1, 5, 5)).unwrap();
        bytes.extend(encode_record(&gap));
        fs::write(&path, &bytes).unwrap();

        let message = corrupt_message(LogStore::open(dir.path()));
        assert!(
            message.contains(&format!("byte offset {gap_at}")),
            "{message}"
        );
        assert!(message.contains("log ends at 3"), "{message}");
    }

    /// A file that is not a log of this format is refused, not read as an empty log.
    #[test]
    fn foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        fs::write(&path, b"hello, this is not a log").unwrap();
        let message = corrupt_message(LogStore::open(dir.path()));
        assert!(message.contains("magic"), "{message}");

        let mut future = MAGIC.to_vec();
        future.extend(2u32.to_le_bytes());
        fs::write(&path, &future).unwrap();
        let message = corrupt_message(LogStore::open(dir.path()));
        assert!(message.contains("version 2"), "{message}");
    }

    /// A crash while a new log's header was being written leaves a prefix of the header;
    /// the log opens empty and gets a whole header.
    #[test]
    fn torn_file_header_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        fs::write(&path, &MAGIC[..3]).unwrap();
        let (mut store, recovered) = LogStore::open(dir.path()).unwrap();
        assert_eq!(recovered, Recovered::default());
        assert_eq!(fs::metadata(&path).unwrap().len(), FILE_HEADER_LEN);
        store.write(&hard_state(1, None)).unwrap();
        store.sync().unwrap();
        drop(store);
        let (_, recovered) = LogStore::open(dir.path()).unwrap();
        assert_eq!(recovered.hard_state.term, 1);
    }

    /// Group commit: many writes then one sync make all of them durable, and `size` is the
    /// file's length.
    #[test]
    fn one_sync_covers_many_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = LogStore::open(dir.path()).unwrap();
        let mut writes = Vec::new();
        for index in 1..=2000 {
            let mut batch = vec![entries(1, index, index)];
            if index % 100 == 0 {
                batch.push(hard_state(index, Some("n1")));
            }
            for write in batch {
                store.write(&write).unwrap();
                writes.push(write);
            }
        }
        store.sync().unwrap();
        // The file is the records, then the zeros kept ahead of them.
        let bytes = fs::read(dir.path().join(LOG_FILE)).unwrap();
        assert!(bytes[store.size() as usize..].iter().all(|&b| b == 0));
        // A sync with nothing new is a no-op, not an error.
        store.sync().unwrap();
        drop(store);

        let (_, recovered) = LogStore::open(dir.path()).unwrap();
        assert_eq!(recovered, model(&writes));
    }

    /// An `Entries` write too large for one record is stored as several records that replay
    /// to the same log, including when it overwrites a suffix.
    #[test]
    fn oversized_write_is_split_into_records() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = LogStore::open(dir.path()).unwrap();
        store.max_record_len = 100;
        let writes = [entries(1, 1, 10), entries(2, 4, 30)];
        for write in &writes {
            store.write(write).unwrap();
        }
        store.sync().unwrap();
        drop(store);
        let (_, recovered) = LogStore::open(dir.path()).unwrap();
        assert_eq!(recovered, model(&writes));
    }

    /// A write that would leave a gap is a bug in the caller; it is refused before it can
    /// reach the disk and make the log unreadable.
    #[test]
    #[should_panic(expected = "log ends at 3")]
    fn write_with_gap_panics() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = LogStore::open(dir.path()).unwrap();
        store.write(&entries(1, 1, 3)).unwrap();
        let _ = store.write(&entries(1, 5, 6));
    }
}
