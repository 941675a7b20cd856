//! Snapshots of the applied state, kept in the data directory and sent to backups that are
//! too far behind for the log.
//!
//! A snapshot is one file, `snapshot`: a magic header, the [`SnapshotMeta`] (which entries it
//! covers and the configuration at that point), the application's state as opaque bytes, and
//! a CRC32 over all of it. The same bytes travel to a backup, so the receiver checks exactly
//! what the sender wrote. The file is replaced atomically (`crate::atomic_file`): a crash
//! leaves the old snapshot or the new one, never half.

use std::fs;
use std::io;
use std::path::Path;

use super::{create_dir_durable, io_error};
use crate::atomic_file;
use crate::replication::SnapshotMeta;
use crate::{Error, Result};

const SNAPSHOT_FILE: &str = "snapshot";
const MAGIC: &[u8; 4] = b"USNP";
const VERSION: u32 = 1;

/// A snapshot: what it covers and the application state at that point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    /// The application's state, encoded by the application.
    pub state: Vec<u8>,
}

impl Snapshot {
    /// The snapshot as bytes: the file's contents, and what is sent to a backup.
    pub fn encode(&self) -> Vec<u8> {
        let meta = postcard::to_stdvec(&self.meta).expect("encoding into memory cannot fail");
        let mut bytes = Vec::with_capacity(24 + meta.len() + self.state.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&meta);
        bytes.extend_from_slice(&(self.state.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&self.state);
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Reads a snapshot from bytes made by [`encode`](Self::encode); anything else, or any
    /// damage, is [`Error::Corrupt`] (`what` names the source in the message).
    pub fn decode(bytes: &[u8], what: &str) -> Result<Snapshot> {
        let corrupt = |why: &str| Error::Corrupt(format!("{what}: {why}"));
        if bytes.len() < 4 + 4 + 4 + 8 + 4 {
            return Err(corrupt("too short for a snapshot"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let crc = u32::from_le_bytes(crc.try_into().map_err(|_| corrupt("no checksum"))?);
        if crc32fast::hash(body) != crc {
            return Err(corrupt("checksum mismatch"));
        }
        if &body[..4] != MAGIC {
            return Err(corrupt("not a snapshot"));
        }
        let mut reader = Reader { bytes: &body[4..] };
        let short = || corrupt("cut short");
        let version = reader.u32().ok_or_else(short)?;
        if version != VERSION {
            return Err(corrupt(&format!("unknown snapshot version {version}")));
        }
        let meta_len = reader.u32().ok_or_else(short)? as usize;
        let meta: SnapshotMeta = postcard::from_bytes(reader.take(meta_len).ok_or_else(short)?)
            .map_err(|err| corrupt(&format!("undecodable meta: {err}")))?;
        let state_len = usize::try_from(reader.u64().ok_or_else(short)?)
            .map_err(|_| corrupt("state too large"))?;
        let state = reader.take(state_len).ok_or_else(short)?.to_vec();
        if !reader.bytes.is_empty() {
            return Err(corrupt("trailing bytes"));
        }
        Ok(Snapshot { meta, state })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }
}

/// Replaces the snapshot in `dir` with `bytes` (an encoded [`Snapshot`]), atomically and
/// durably.
pub fn save_snapshot(dir: &Path, bytes: &[u8]) -> Result<()> {
    create_dir_durable(dir)?;
    atomic_file::replace(&dir.join(SNAPSHOT_FILE), bytes)
}

/// The encoded snapshot in `dir`, if there is one (checked).
pub fn load_snapshot_bytes(dir: &Path) -> Result<Option<Vec<u8>>> {
    let path = dir.join(SNAPSHOT_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            Snapshot::decode(&bytes, &path.display().to_string())?;
            Ok(Some(bytes))
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(io_error("reading", &path)(err)),
    }
}

/// The snapshot in `dir`, if there is one.
pub fn load_snapshot(dir: &Path) -> Result<Option<Snapshot>> {
    let path = dir.join(SNAPSHOT_FILE);
    load_snapshot_bytes(dir)?
        .map(|bytes| Snapshot::decode(&bytes, &path.display().to_string()))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                index: 42,
                term: 3,
                members: vec!["a:1".to_string(), "b:2".to_string()],
            },
            state: b"the application state".to_vec(),
        }
    }

    /// A saved snapshot loads back exactly; no snapshot loads as none.
    #[test]
    fn snapshot_round_trips_through_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_snapshot(dir.path()).unwrap(), None);
        save_snapshot(dir.path(), &sample().encode()).unwrap();
        assert_eq!(load_snapshot(dir.path()).unwrap(), Some(sample()));
    }

    /// Every flipped byte and every truncation is reported as corrupt, never served.
    #[test]
    fn any_damage_is_reported() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x40;
            assert!(
                matches!(Snapshot::decode(&damaged, "test"), Err(Error::Corrupt(_))),
                "flip at {i}"
            );
        }
        for len in 0..bytes.len() {
            assert!(
                Snapshot::decode(&bytes[..len], "test").is_err(),
                "cut at {len}"
            );
        }
    }
}
