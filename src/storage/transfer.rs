//! A store as a stream of checked chunks: how the primary sends its store to a backup that
//! is behind the compacted log, and how the backup rebuilds it.
//!
//! The sender reads everything through one read transaction ([`ReadView`]), so the stream is
//! one consistent flush of the store while new flushes go on. The stream is the meta first,
//! then every user, every client, and the messages in index order, cut into chunks of about
//! [`CHUNK_BYTES`]. Each chunk carries its sequence number and a CRC32 of its bytes. The
//! receiver checks the order and the checksums, that the messages are gapless from 1, and at
//! the end that what arrived adds up to the meta's counters; only then is the store
//! finished, durably, and handed to the replica to be swapped in.

use serde::{Deserialize, Serialize};

use super::store::{IncomingStore, ReadView};
use crate::app::{ClientRecord, MemTables, MessageRecord};
use crate::error::{Error, Result};
use crate::replica::StoreMeta;

/// About this many bytes of records per chunk.
pub const CHUNK_BYTES: usize = 1 << 20;
/// Messages read from the store at a time while sending.
const MESSAGES_PER_READ: u64 = 4096;

/// One record of the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    Meta(StoreMeta),
    User(String, String),
    Client(String, ClientRecord),
    Message(u64, MessageRecord),
}

/// One chunk's payload: its place in the stream, whether it is the last, and its records
/// (postcard) with their CRC32.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkData {
    pub seq: u64,
    pub last: bool,
    pub crc: u32,
    pub records: Vec<u8>,
}

/// Reads a store view into chunks, one at a time.
pub struct Exporter {
    view: ReadView,
    stage: Stage,
    seq: u64,
    pending: Vec<Record>,
    pending_bytes: usize,
}

enum Stage {
    Meta,
    Users,
    Clients,
    Messages { next: u64 },
    Done,
}

impl Exporter {
    pub fn new(view: ReadView) -> Exporter {
        Exporter {
            view,
            stage: Stage::Meta,
            seq: 0,
            pending: Vec::new(),
            pending_bytes: 0,
        }
    }

    /// The next chunk, or `None` after the last.
    pub fn next_chunk(&mut self) -> Result<Option<ChunkData>> {
        loop {
            if self.pending_bytes >= CHUNK_BYTES {
                return Ok(Some(self.cut(false)));
            }
            match self.stage {
                Stage::Meta => {
                    let meta = self.view.meta()?;
                    self.push(Record::Meta(meta));
                    self.stage = Stage::Users;
                }
                Stage::Users => {
                    for (name, hash) in self.view.users()? {
                        self.push(Record::User(name, hash));
                    }
                    self.stage = Stage::Clients;
                }
                Stage::Clients => {
                    for (id, record) in self.view.clients()? {
                        self.push(Record::Client(id, record));
                    }
                    self.stage = Stage::Messages { next: 1 };
                }
                Stage::Messages { next } => {
                    let batch = self.view.messages(next, MESSAGES_PER_READ)?;
                    match batch.last() {
                        Some((last, _)) => self.stage = Stage::Messages { next: last + 1 },
                        None => self.stage = Stage::Done,
                    }
                    for (index, record) in batch {
                        self.push(Record::Message(index, record));
                    }
                }
                Stage::Done => {
                    if self.seq == u64::MAX {
                        return Ok(None);
                    }
                    let chunk = self.cut(true);
                    self.seq = u64::MAX;
                    return Ok(Some(chunk));
                }
            }
        }
    }

    fn push(&mut self, record: Record) {
        self.pending_bytes += record_size(&record);
        self.pending.push(record);
    }

    fn cut(&mut self, last: bool) -> ChunkData {
        let records = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let bytes = postcard::to_stdvec(&records).expect("encoding records cannot fail");
        let chunk = ChunkData {
            seq: self.seq,
            last,
            crc: crc32fast::hash(&bytes),
            records: bytes,
        };
        self.seq += 1;
        chunk
    }
}

fn record_size(record: &Record) -> usize {
    match record {
        Record::Meta(_) => 64,
        Record::User(name, hash) => name.len() + hash.len() + 8,
        Record::Client(id, record) => {
            id.len()
                + record.address.len()
                + record.username.as_ref().map_or(0, String::len)
                + record.token_hash.as_ref().map_or(0, String::len)
                + 24
        }
        Record::Message(_, record) => {
            record.client_id.len() + record.username.len() + record.text.len() + 24
        }
    }
}

/// Rebuilds a store from chunks, checking each.
pub struct Importer {
    store: IncomingStore,
    next_seq: u64,
    meta: Option<StoreMeta>,
    messages: u64,
    clients: u64,
}

impl Importer {
    pub fn new(store: IncomingStore) -> Importer {
        Importer {
            store,
            next_seq: 0,
            meta: None,
            messages: 0,
            clients: 0,
        }
    }

    /// Adds one chunk. After the last, returns the meta the finished store stands at and
    /// where it is.
    pub fn take(mut self, chunk: ChunkData) -> Result<Step> {
        if chunk.seq != self.next_seq {
            return Err(Error::Conflict(format!(
                "state chunk {} arrived, {} expected",
                chunk.seq, self.next_seq
            )));
        }
        let records = decode_records(&chunk)?;
        self.next_seq += 1;
        let mut batch = MemTables::default();
        for record in records {
            match (record, &self.meta) {
                (Record::Meta(meta), None) => self.meta = Some(meta),
                (_, None) | (Record::Meta(_), Some(_)) => {
                    return Err(Error::Corrupt(
                        "a state transfer must start with its meta, once".to_string(),
                    ));
                }
                (Record::User(name, hash), Some(_)) => {
                    batch.users.insert(name, hash);
                }
                (Record::Client(id, record), Some(_)) => {
                    self.clients += 1;
                    batch.clients.insert(id, record);
                }
                (Record::Message(index, record), Some(_)) => {
                    if index != self.messages + 1 {
                        return Err(Error::Corrupt(format!(
                            "state transfer: message {index} after {}",
                            self.messages
                        )));
                    }
                    self.messages = index;
                    batch.messages.insert(index, record);
                }
            }
        }
        if !batch.is_empty() {
            self.store.add(&batch)?;
        }
        if !chunk.last {
            return Ok(Step::More(self));
        }
        let Some(meta) = self.meta else {
            return Err(Error::Corrupt(
                "a state transfer without its meta".to_string(),
            ));
        };
        if meta.counters.messages != self.messages || meta.counters.clients != self.clients {
            return Err(Error::Corrupt(format!(
                "state transfer: {} messages and {} clients arrived, the meta counts {} and {}",
                self.messages, self.clients, meta.counters.messages, meta.counters.clients
            )));
        }
        let path = self.store.finish(&meta)?;
        Ok(Step::Done { meta, path })
    }
}

/// The records of a chunk, if it passes its checksum and decodes exactly.
pub fn decode_records(chunk: &ChunkData) -> Result<Vec<Record>> {
    if crc32fast::hash(&chunk.records) != chunk.crc {
        return Err(Error::Corrupt(format!(
            "state chunk {} fails its checksum",
            chunk.seq
        )));
    }
    match postcard::take_from_bytes::<Vec<Record>>(&chunk.records) {
        Ok((records, [])) => Ok(records),
        Ok((_, rest)) => Err(Error::Corrupt(format!(
            "state chunk {}: {} bytes after its records",
            chunk.seq,
            rest.len()
        ))),
        Err(err) => Err(Error::Corrupt(format!("state chunk {}: {err}", chunk.seq))),
    }
}

/// Where an import stands after a chunk.
pub enum Step {
    More(Importer),
    Done {
        meta: StoreMeta,
        path: std::path::PathBuf,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{Counters, LastMessage};
    use crate::replica::{Store, StoreWrite};
    use crate::replication::SnapshotMeta;
    use crate::storage::RedbStore;

    /// A store with `messages` messages of one client and user, flushed once.
    fn store_with(dir: &std::path::Path, messages: u64) -> (RedbStore, StoreMeta) {
        let store = RedbStore::open(dir).unwrap();
        let mut tables = MemTables::default();
        tables.users.insert("alice".into(), "$argon2id$x".into());
        tables.clients.insert(
            "c1".into(),
            ClientRecord {
                address: "127.0.0.1:9000".into(),
                username: Some("alice".into()),
                token_hash: Some("t".into()),
                last: Some(LastMessage {
                    seq: messages,
                    index: messages,
                }),
            },
        );
        for index in 1..=messages {
            tables.messages.insert(
                index,
                MessageRecord {
                    client_id: "c1".into(),
                    username: "alice".into(),
                    seq: index,
                    text: format!("message {index} {}", "x".repeat(100)),
                },
            );
        }
        let meta = StoreMeta {
            position: SnapshotMeta {
                index: messages + 3,
                term: 2,
                members: vec!["n1".into()],
            },
            counters: Counters {
                messages,
                clients: 1,
                logged_in: 1,
            },
        };
        tables.counters = meta.counters;
        store.write(&meta, &tables).unwrap();
        (store, meta)
    }

    fn chunks(store: &RedbStore) -> Vec<ChunkData> {
        let mut exporter = Exporter::new(store.read_view().unwrap());
        let mut out = Vec::new();
        while let Some(chunk) = exporter.next_chunk().unwrap() {
            out.push(chunk);
        }
        out
    }

    fn import(
        dir: &std::path::Path,
        chunks: Vec<ChunkData>,
    ) -> Result<(StoreMeta, std::path::PathBuf)> {
        let mut importer = Importer::new(IncomingStore::create(dir, 1)?);
        for chunk in chunks {
            match importer.take(chunk)? {
                Step::More(next) => importer = next,
                Step::Done { meta, path } => return Ok((meta, path)),
            }
        }
        Err(Error::Corrupt("the stream ended early".into()))
    }

    /// A store sent in chunks (several, for 20,000 messages) is rebuilt whole on the other
    /// side and swapped in: the same meta and the same tables.
    #[test]
    fn a_store_sent_in_chunks_is_rebuilt_whole() {
        let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (sender, meta) = store_with(from.path(), 20_000);
        let chunks = chunks(&sender);
        assert!(chunks.len() > 1, "{} chunks", chunks.len());
        let receiver = RedbStore::open(to.path()).unwrap();
        let (received, path) = import(to.path(), chunks).unwrap();
        assert_eq!(received, meta);
        assert_eq!(receiver.install_incoming(&path).unwrap(), meta);
        assert_eq!(
            MemTables::copy_of(&receiver).unwrap(),
            MemTables::copy_of(&sender).unwrap()
        );
        assert_eq!(receiver.meta().unwrap(), meta);
    }

    /// A damaged chunk, a missing chunk, or a stream whose records do not add up to its
    /// meta is refused; nothing is handed on to be swapped in.
    #[test]
    fn damaged_missing_or_short_streams_are_refused() {
        let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (sender, _) = store_with(from.path(), 20_000);
        let good = chunks(&sender);

        let mut damaged = good.clone();
        damaged[1].records[10] ^= 1;
        assert!(matches!(import(to.path(), damaged), Err(Error::Corrupt(_))));

        let mut missing = good.clone();
        missing.remove(1);
        assert!(matches!(
            import(to.path(), missing),
            Err(Error::Conflict(_))
        ));
        let leftovers = std::fs::read_dir(to.path()).unwrap().count();
        assert_eq!(leftovers, 0, "a refused transfer leaves no file behind");

        // The last chunk loses its messages but keeps a valid checksum: the count is short.
        let mut short = good.clone();
        let last = short.last_mut().unwrap();
        let records: Vec<Record> = postcard::from_bytes(&last.records).unwrap();
        let kept: Vec<Record> = records
            .into_iter()
            .filter(|r| !matches!(r, Record::Message(..)))
            .collect();
        last.records = postcard::to_stdvec(&kept).unwrap();
        last.crc = crc32fast::hash(&last.records);
        assert!(matches!(import(to.path(), short), Err(Error::Corrupt(_))));

        assert!(
            import(to.path(), good).is_ok(),
            "the intact stream is taken"
        );
    }

    /// The view a transfer reads is one flush: writes that come after it was opened are not
    /// in the stream.
    #[test]
    fn the_stream_is_one_consistent_flush_while_writes_go_on() {
        let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (sender, meta) = store_with(from.path(), 5_000);
        let mut exporter = Exporter::new(sender.read_view().unwrap());
        let first = exporter.next_chunk().unwrap().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let (later, newer_meta) = store_with(elsewhere.path(), 9_000);
        let newer = MemTables::copy_of(&later).unwrap();
        sender.write(&newer_meta, &newer).unwrap();
        let mut all = vec![first];
        while let Some(chunk) = exporter.next_chunk().unwrap() {
            all.push(chunk);
        }
        let (received, _) = import(to.path(), all).unwrap();
        assert_eq!(received, meta, "the stream is of the flush it started from");
        assert_eq!(sender.meta().unwrap(), newer_meta);
    }
}
