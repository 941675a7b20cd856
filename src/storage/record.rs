//! The format of the log file, and replay: how records are framed, and how a file is read
//! back into the state it describes, telling a torn write from damage.
//!
//! The file `log` is an 8-byte header followed by records:
//!
//! ```text
//! header:  "UWAL"  u32 LE version (1)
//! record:  u32 LE payload length | u32 LE crc32 of payload | payload (postcard of a Write)
//! ```
//!
//! Nothing is ever rewritten in place: a conflicting suffix is dropped by appending an
//! `Entries` write that replay applies, and a compaction replaces the whole file with a new
//! one, built aside and renamed over it (`rewrite.rs`). So a crash can only damage the end of
//! the file. That is what lets replay tell the two kinds of damage apart:
//!
//! | what replay finds                                        | meaning          | action     |
//! |----------------------------------------------------------|------------------|------------|
//! | an incomplete record header at the end                   | unsynced write   | truncate   |
//! | a payload running past the end of the file               | unsynced write   | truncate   |
//! | a bad checksum in a record ending exactly at the end     | unsynced write   | truncate   |
//! | only zero bytes from a record to the end                 | unwritten blocks | truncate   |
//! | a bad checksum with more data after it                   | damage           | `Corrupt`  |
//! | a length no writer produces, an undecodable payload that |                  |            |
//! | passed its checksum, entries that leave a gap            | damage           | `Corrupt`  |
//!
//! Truncating is safe because a torn record was never synced, so nothing that depended on it
//! has left the server. The one blind spot is a flipped bit that makes a length field
//! point past the end of the file: that looks exactly like a torn write. [`MAX_RECORD_LEN`]
//! narrows it (a flip in the top bits is reported), and the length is not otherwise
//! checksummed because the format fixes the checksum to the payload.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::io_error;
use crate::replication::{Entry, HardState, Index, SnapshotMeta, Write, retain_after};
use crate::{Error, Result};

/// Identifies the file as ours, so that replay never reads some other file as a log.
pub(super) const MAGIC: [u8; 4] = *b"UWAL";
/// The format version; bumped on any change a reader of the old version would misread.
const VERSION: u32 = 1;
/// Bytes of the file header: magic and version.
pub(super) const FILE_HEADER_LEN: u64 = 8;
/// Bytes of a record header: length and checksum.
pub(super) const RECORD_HEADER_LEN: u64 = 8;
/// The largest payload a record may have. Larger `Entries` writes are split into several
/// records; a length above this on replay can only be damage, never a torn write.
pub const MAX_RECORD_LEN: u32 = 64 << 20;

/// The file header: magic, then version.
pub(crate) fn file_header() -> [u8; FILE_HEADER_LEN as usize] {
    let [v0, v1, v2, v3] = VERSION.to_le_bytes();
    let [m0, m1, m2, m3] = MAGIC;
    [m0, m1, m2, m3, v0, v1, v2, v3]
}

/// What a store held when it was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The latest term and vote written.
    pub hard_state: HardState,
    /// What the entries compacted away ended with (index 0 if none were).
    pub base: SnapshotMeta,
    /// The log after the base: `entries[i].index == base.index + i + 1`.
    pub entries: Vec<Entry>,
}

impl Recovered {
    /// Applies one write the way the core meant it, or says why it cannot be applied.
    pub(super) fn apply(&mut self, write: Write) -> std::result::Result<(), String> {
        match write {
            Write::HardState(hard_state) => self.hard_state = hard_state,
            Write::Entries(entries) => {
                let last = last_index(&self.entries).max(self.base.index);
                check_entries(self.base.index, last, &entries)?;
                // `check_entries` made sure the first index is in base+1..=last+1, so this
                // keeps exactly the entries before it.
                self.entries
                    .truncate((entries[0].index - self.base.index - 1) as usize);
                self.entries.extend(entries);
            }
            Write::Compact(meta) => {
                if meta.index <= self.base.index {
                    return Ok(());
                }
                retain_after(self.base.index, &mut self.entries, &meta);
                self.base = meta;
            }
        }
        Ok(())
    }
}

/// The index of the last entry, or 0 for an empty log.
pub(super) fn last_index(entries: &[Entry]) -> Index {
    entries.last().map_or(0, |entry| entry.index)
}

/// Checks that `entries` can be applied to a log compacted up to `base` and ending at `last`:
/// non-empty, contiguous, and starting in `base + 1..=last + 1`. The one rule both for
/// writing and for replaying.
pub(super) fn check_entries(
    base: Index,
    last: Index,
    entries: &[Entry],
) -> std::result::Result<(), String> {
    let Some(first) = entries.first() else {
        return Err("an Entries write with no entries".to_string());
    };
    if first.index <= base || first.index > last + 1 {
        return Err(format!(
            "entries start at index {} but the log ends at {last}",
            first.index
        ));
    }
    for (expected, entry) in (first.index..).zip(entries) {
        if entry.index != expected {
            return Err(format!(
                "entries not contiguous: index {} where {expected} was expected",
                entry.index
            ));
        }
    }
    Ok(())
}

/// Encodes a write as a record's payload.
pub(crate) fn encode_payload(write: &Write) -> Result<Vec<u8>> {
    let mut payload = Vec::new();
    encode_payload_into(write, &mut payload)?;
    Ok(payload)
}

/// Encodes a write as a record's payload into `payload`, replacing what it held: the log
/// keeps one such vector, so a write costs no allocation once it has grown.
pub(crate) fn encode_payload_into(write: &Write, payload: &mut Vec<u8>) -> Result<()> {
    let mut reused = std::mem::take(payload);
    reused.clear();
    *payload = postcard::to_extend(write, reused)
        .map_err(|err| Error::Internal(format!("encoding a log record: {err}")))?;
    Ok(())
}

/// Frames a payload as a record: length, checksum, payload.
pub(crate) fn encode_record(payload: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(RECORD_HEADER_LEN as usize + payload.len());
    append_record(&mut record, payload);
    record
}

/// Appends a payload, framed as a record, to `out`.
pub(crate) fn append_record(out: &mut Vec<u8>, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("payload bounded by MAX_RECORD_LEN");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// What [`replay`] found in a file.
pub(crate) struct Replayed {
    /// The state after the valid records.
    pub(crate) state: Recovered,
    /// The end of the last valid record (0 if not even the file header is complete).
    pub(crate) valid_len: u64,
    /// The length of the file as found.
    pub(super) file_len: u64,
}

/// What the writer of a file knows of it, which spares [`replay`] work when it compacts its
/// own file (at start nothing is known).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Known {
    /// Where the records end: replay stops there instead of reading the zeros kept ahead.
    pub(crate) end: Option<u64>,
    /// About how many entries the log holds, to size their vector once.
    pub(crate) entries: usize,
}

/// Reads the file from the start and applies every valid record. Stops at a torn write
/// (reporting where the valid part ends), or where `known` says the records end, and fails
/// on damage.
pub(crate) fn replay(path: &Path, file: &File, known: Known) -> Result<Replayed> {
    let file_len = file
        .metadata()
        .map_err(io_error("reading metadata of", path))?
        .len();
    let mut reader = BufReader::new(file);
    // Ends replay with the valid part of the file, which ends at `valid_len`; any bytes after
    // it are a torn write.
    let stop = |state, valid_len| {
        Ok(Replayed {
            state,
            valid_len,
            file_len,
        })
    };

    // The header. A file shorter than the header, if what is there agrees with it, was being
    // created when the server stopped: it holds nothing yet and is started afresh.
    let mut header = [0u8; FILE_HEADER_LEN as usize];
    let header_len = file_len.min(FILE_HEADER_LEN) as usize;
    reader
        .read_exact(&mut header[..header_len])
        .map_err(io_error("reading", path))?;
    if header[..header_len] != file_header()[..header_len] {
        let reason = if header[..4] == MAGIC {
            let version = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            format!("unsupported log format version {version}")
        } else {
            "not a log file (wrong magic bytes)".to_string()
        };
        return Err(Error::Corrupt(format!("{}: {reason}", path.display())));
    }
    if file_len < FILE_HEADER_LEN {
        return stop(Recovered::default(), 0);
    }

    let mut state = Recovered::default();
    state.entries.reserve(known.entries);
    let mut offset = FILE_HEADER_LEN;
    // One buffer for every record's payload.
    let mut payload = Vec::new();
    loop {
        // The clean end of the file, or an incomplete record header, or the end the writer
        // knows.
        if file_len - offset < RECORD_HEADER_LEN || known.end == Some(offset) {
            return stop(state, offset);
        }
        let corrupt = |reason: String| {
            Error::Corrupt(format!(
                "{}: bad record at byte offset {offset}: {reason}",
                path.display()
            ))
        };

        let mut head = [0u8; RECORD_HEADER_LEN as usize];
        reader
            .read_exact(&mut head)
            .map_err(io_error("reading", path))?;
        let [l0, l1, l2, l3, c0, c1, c2, c3] = head;
        let len = u32::from_le_bytes([l0, l1, l2, l3]);
        let checksum = u32::from_le_bytes([c0, c1, c2, c3]);
        // Checked before the end of the file: a torn write has a correct length (its header
        // is either cut short or whole), so a length no writer produces is damage.
        if len > MAX_RECORD_LEN {
            return Err(corrupt(format!(
                "length {len} exceeds the maximum {MAX_RECORD_LEN}"
            )));
        }
        let end = offset + RECORD_HEADER_LEN + u64::from(len);
        if end > file_len {
            return stop(state, offset);
        }
        payload.clear();
        payload.resize(len as usize, 0);
        reader
            .read_exact(&mut payload)
            .map_err(io_error("reading", path))?;

        // No writer produces an empty payload, and an all-zero header would otherwise pass
        // (the crc32 of nothing is 0).
        if len == 0 || crc32fast::hash(&payload) != checksum {
            // A torn write is the last record, or the last before the zeros the log keeps
            // ahead of its records (and some file systems extend a file before its data
            // lands, leaving zeros after a crash). Zeros are where replay ends.
            if end == file_len || rest_is_zero(file, end, path)? {
                return stop(state, offset);
            }
            return Err(corrupt("checksum mismatch".to_string()));
        }
        // From here on the bytes are the ones written, so any failure is damage or a bug,
        // never a torn write.
        let write = match postcard::take_from_bytes::<Write>(&payload) {
            Ok((write, [])) => write,
            Ok((_, rest)) => {
                return Err(corrupt(format!("{} bytes after the write", rest.len())));
            }
            Err(err) => return Err(corrupt(format!("cannot decode: {err}"))),
        };
        state.apply(write).map_err(corrupt)?;
        offset = end;
    }
}

/// Whether every byte of `file` from `from` to its end is zero.
pub(super) fn rest_is_zero(file: &File, from: u64, path: &Path) -> Result<bool> {
    let mut reader = BufReader::new(file);
    let mut chunk = [0u8; 8192];
    let result = reader.seek(SeekFrom::Start(from)).and_then(|_| {
        loop {
            match reader.read(&mut chunk)? {
                0 => return Ok(true),
                n if chunk[..n].iter().any(|&byte| byte != 0) => return Ok(false),
                _ => {}
            }
        }
    });
    result.map_err(io_error("reading", path))
}
