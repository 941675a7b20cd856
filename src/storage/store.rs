//! The application state on disk: an embedded redb database in the data dir (`store`).
//!
//! Four tables: `message_pages` (the board, in pages of consecutive messages: see
//! `message_pages.rs`), `clients` (id → record), `users` (name → Argon2id PHC string), and
//! `meta` (the [`StoreMeta`]: the applied index, term and configuration the tables are at,
//! and the counters). Every flush from the replica is one write transaction that holds the
//! changed records and the new meta, committed durably: after a crash the store is at one
//! flush's position or the one before, never between. Messages are written once, in index
//! order.
//!
//! Reads take a read transaction, which sees the last committed flush (MVCC: a reader never
//! waits for the writer). A state transfer reads the whole store through one read
//! transaction while flushes go on. A store received from the primary is built beside this
//! one (`store.incoming`) and renamed over it by [`RedbStore::install_incoming`].
//!
//! Why redb: see docs/architecture.md (the figures of redb and fjall on this apply path).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};

use super::message_pages::{self, MESSAGE_PAGES};
use super::sync_dir;
use crate::app::{ClientRecord, Counters, MemTables, MessageRecord, Tables};
use crate::error::{Error, Result};
use crate::replica::{Store, StoreMeta, StoreWrite};

const CLIENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("clients");
const USERS: TableDefinition<&str, &str> = TableDefinition::new("users");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const META_KEY: &str = "meta";

/// The store's file in the data dir; a received store is built beside it in a file named
/// with this prefix and the transfer's id.
pub const STORE_FILE: &str = "store";
pub const INCOMING_PREFIX: &str = "store.incoming.";

/// The redb page cache: a bound on the memory the store uses for reads, whatever its size.
const CACHE_BYTES: usize = 32 << 20;

/// The embedded store. Cheap to clone: every clone is the same database.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<RwLock<Database>>,
    dir: PathBuf,
}

pub(super) fn store_error(what: &str) -> impl Fn(&dyn std::fmt::Display) -> Error + '_ {
    move |err| Error::Io(format!("store: {what}: {err}"))
}

macro_rules! try_store {
    ($what:expr, $e:expr) => {
        $e.map_err(|err| store_error($what)(&err))
    };
}

fn open_database(path: &Path) -> Result<Database> {
    let db = try_store!(
        "open",
        Database::builder().set_cache_size(CACHE_BYTES).create(path)
    )?;
    // Create the tables once, so that every read transaction finds them.
    let txn = try_store!("begin", db.begin_write())?;
    create_tables(&txn)?;
    message_pages::migrate_single_messages(&txn)?;
    try_store!("commit", txn.commit())?;
    Ok(db)
}

fn create_tables(txn: &WriteTransaction) -> Result<()> {
    try_store!("table", txn.open_table(MESSAGE_PAGES))?;
    try_store!("table", txn.open_table(CLIENTS))?;
    try_store!("table", txn.open_table(USERS))?;
    try_store!("table", txn.open_table(META))?;
    Ok(())
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|err| Error::Corrupt(format!("store: {what}: {err}")))
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("encoding a record into memory cannot fail")
}

impl RedbStore {
    /// Opens the store in `dir` (creating an empty one at position 0). Leftover incoming
    /// stores (transfers cut short by a crash) are removed.
    pub fn open(dir: &Path) -> Result<RedbStore> {
        let listing = std::fs::read_dir(dir)
            .map_err(|err| Error::Io(format!("listing {}: {err}", dir.display())))?;
        for entry in listing.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(INCOMING_PREFIX)
            {
                let path = entry.path();
                std::fs::remove_file(&path)
                    .map_err(|err| Error::Io(format!("removing {}: {err}", path.display())))?;
            }
        }
        let db = open_database(&dir.join(STORE_FILE))?;
        Ok(RedbStore {
            db: Arc::new(RwLock::new(db)),
            dir: dir.to_path_buf(),
        })
    }

    fn db(&self) -> RwLockReadGuard<'_, Database> {
        self.db.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A consistent read view of the whole store, for a state transfer.
    pub fn read_view(&self) -> Result<ReadView> {
        Ok(ReadView {
            txn: try_store!("begin read", self.db().begin_read())?,
        })
    }

    /// Replaces the store with the received one at `incoming` (complete and durable),
    /// atomically: a crash leaves the old store or the new one.
    pub fn install_incoming(&self, incoming: &Path) -> Result<StoreMeta> {
        let path = self.dir.join(STORE_FILE);
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        std::fs::rename(incoming, &path)
            .map_err(|err| Error::Io(format!("renaming {}: {err}", incoming.display())))?;
        sync_dir(&self.dir)?;
        *db = open_database(&path)?;
        drop(db);
        self.meta()
    }

    fn read<T>(&self, read: impl FnOnce(&ReadTransaction) -> Result<T>) -> Result<T> {
        let txn = try_store!("begin read", self.db().begin_read())?;
        read(&txn)
    }
}

impl Tables for RedbStore {
    fn client(&self, client_id: &str) -> Result<Option<Cow<'_, ClientRecord>>> {
        Ok(self
            .read(|txn| ReadView::client_in(txn, client_id))?
            .map(Cow::Owned))
    }

    fn user(&self, username: &str) -> Result<Option<String>> {
        self.read(|txn| {
            let table = try_store!("users", txn.open_table(USERS))?;
            Ok(try_store!("users", table.get(username))?.map(|v| v.value().to_string()))
        })
    }

    fn message(&self, index: u64) -> Result<Option<Cow<'_, MessageRecord>>> {
        self.read(|txn| {
            let table = try_store!("messages", txn.open_table(MESSAGE_PAGES))?;
            Ok(message_pages::get(&table, index)?.map(Cow::Owned))
        })
    }

    fn messages(&self, from: u64, limit: u64) -> Result<Vec<(u64, MessageRecord)>> {
        self.read(|txn| ReadView::messages_in(txn, from, limit))
    }

    fn clients(&self) -> Result<Vec<(String, ClientRecord)>> {
        self.read(ReadView::clients_in)
    }

    fn users(&self) -> Result<Vec<(String, String)>> {
        self.read(ReadView::users_in)
    }

    fn counters(&self) -> Result<Counters> {
        Ok(self.meta()?.counters)
    }
}

impl Store for RedbStore {
    fn meta(&self) -> Result<StoreMeta> {
        self.read(ReadView::meta_in)
    }
}

impl StoreWrite for RedbStore {
    fn write(&self, meta: &StoreMeta, changes: &MemTables) -> Result<()> {
        let db = self.db();
        write_records(&db, meta, changes, Durability::Immediate)
    }
}

/// Writes `changes` and `meta` in one transaction of the given durability.
fn write_records(
    db: &Database,
    meta: &StoreMeta,
    changes: &MemTables,
    durability: Durability,
) -> Result<()> {
    let mut txn = try_store!("begin write", db.begin_write())?;
    try_store!("durability", txn.set_durability(durability))?;
    {
        let mut messages = try_store!("messages", txn.open_table(MESSAGE_PAGES))?;
        message_pages::put(&mut messages, &changes.messages)?;
        let mut clients = try_store!("clients", txn.open_table(CLIENTS))?;
        for id in &changes.removed_clients {
            try_store!("clients", clients.remove(id.as_str()))?;
        }
        for (id, record) in &changes.clients {
            try_store!(
                "clients",
                clients.insert(id.as_str(), encode(record).as_slice())
            )?;
        }
        let mut users = try_store!("users", txn.open_table(USERS))?;
        for (name, hash) in &changes.users {
            try_store!("users", users.insert(name.as_str(), hash.as_str()))?;
        }
        let mut table = try_store!("meta", txn.open_table(META))?;
        try_store!("meta", table.insert(META_KEY, encode(meta).as_slice()))?;
    }
    try_store!("commit", txn.commit())
}

/// One read transaction over the whole store: everything read through it is of one flush.
pub struct ReadView {
    txn: ReadTransaction,
}

impl ReadView {
    pub fn meta(&self) -> Result<StoreMeta> {
        Self::meta_in(&self.txn)
    }

    pub fn users(&self) -> Result<Vec<(String, String)>> {
        Self::users_in(&self.txn)
    }

    pub fn clients(&self) -> Result<Vec<(String, ClientRecord)>> {
        Self::clients_in(&self.txn)
    }

    pub fn messages(&self, from: u64, limit: u64) -> Result<Vec<(u64, MessageRecord)>> {
        Self::messages_in(&self.txn, from, limit)
    }

    fn meta_in(txn: &ReadTransaction) -> Result<StoreMeta> {
        let table = try_store!("meta", txn.open_table(META))?;
        match try_store!("meta", table.get(META_KEY))? {
            Some(value) => decode(value.value(), "meta"),
            None => Ok(StoreMeta::default()),
        }
    }

    fn client_in(txn: &ReadTransaction, client_id: &str) -> Result<Option<ClientRecord>> {
        let table = try_store!("clients", txn.open_table(CLIENTS))?;
        try_store!("clients", table.get(client_id))?
            .map(|v| decode(v.value(), "client"))
            .transpose()
    }

    fn users_in(txn: &ReadTransaction) -> Result<Vec<(String, String)>> {
        let table = try_store!("users", txn.open_table(USERS))?;
        let mut all = Vec::new();
        for row in try_store!("users", table.iter())? {
            let (name, hash) = try_store!("users", row)?;
            all.push((name.value().to_string(), hash.value().to_string()));
        }
        Ok(all)
    }

    fn clients_in(txn: &ReadTransaction) -> Result<Vec<(String, ClientRecord)>> {
        let table = try_store!("clients", txn.open_table(CLIENTS))?;
        let mut all = Vec::new();
        for row in try_store!("clients", table.iter())? {
            let (id, record) = try_store!("clients", row)?;
            all.push((id.value().to_string(), decode(record.value(), "client")?));
        }
        Ok(all)
    }

    fn messages_in(
        txn: &ReadTransaction,
        from: u64,
        limit: u64,
    ) -> Result<Vec<(u64, MessageRecord)>> {
        let table = try_store!("messages", txn.open_table(MESSAGE_PAGES))?;
        message_pages::range(&table, from, limit)
    }
}

/// A store being received from the primary, built beside ours. Dropped unfinished (the
/// transfer broke off, failed its checks, or a newer one replaced it), its file is removed.
pub struct IncomingStore {
    db: Option<Database>,
    path: PathBuf,
}

impl IncomingStore {
    /// Starts an empty incoming store for transfer `id`.
    pub fn create(dir: &Path, id: u64) -> Result<IncomingStore> {
        let path = dir.join(format!("{INCOMING_PREFIX}{id:016x}"));
        if path.exists() {
            std::fs::remove_file(&path)
                .map_err(|err| Error::Io(format!("removing {}: {err}", path.display())))?;
        }
        Ok(IncomingStore {
            db: Some(open_database(&path)?),
            path,
        })
    }

    fn db(&self) -> Result<&Database> {
        self.db
            .as_ref()
            .ok_or_else(|| Error::Internal("the incoming store is finished".to_string()))
    }

    /// Adds records. Each batch is committed durably, so that the memory a large transfer
    /// takes stays that of one batch.
    pub fn add(&self, records: &MemTables) -> Result<()> {
        write_records(
            self.db()?,
            &StoreMeta::default(),
            records,
            Durability::Immediate,
        )
    }

    /// Writes the meta the whole store stands at, makes everything durable, and returns
    /// where the finished store is (it is the caller's from now on).
    pub fn finish(mut self, meta: &StoreMeta) -> Result<PathBuf> {
        write_records(
            self.db()?,
            meta,
            &MemTables::default(),
            Durability::Immediate,
        )?;
        drop(self.db.take());
        let dir = self.path.parent().unwrap_or(Path::new("."));
        sync_dir(dir)?;
        Ok(std::mem::take(&mut self.path))
    }
}

impl Drop for IncomingStore {
    fn drop(&mut self) {
        if self.db.take().is_some() && !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
