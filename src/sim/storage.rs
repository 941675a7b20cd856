//! The disk of one simulated server: what is durable, and the jobs not yet synced.
//!
//! The model follows the storage worker (`src/server/persist.rs`): the replica's jobs are
//! carried out in its order; a sync makes every job so far durable at once (group commit)
//! and reports what became durable, with the count of jobs done, which is what releases the
//! messages the replica holds back. A crash keeps the durable state plus a prefix of the
//! jobs not yet synced (the tail of a log file that the OS happened to flush, a store
//! transaction that committed), and the replica with everything it held is gone.
//!
//! A disk holds what a data dir does:
//!
//! | file | model | real |
//! |---|---|---|
//! | log | hard state, the base the log was compacted to, the entries after it | `LogStore`, replayed as `Recovered::apply` does (`src/storage/record.rs`) |
//! | store | the application's tables and the position they stand at, changed only by whole flushes and swaps | `RedbStore` (`src/storage/store.rs`) |
//! | received store | a store received whole from the primary, kept until swapped in | `IncomingStore` |
//!
//! The replica reads the store through a [`SimStore`] handle on the same tables, as the
//! server's replica reads the redb file the worker writes.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use crate::app::{ClientRecord, Counters, MemTables, MessageRecord, Tables, detached};
use crate::error::Result as StoreResult;
use crate::replica::{Job, Persisted, Store, StoreMeta, StoreWrite};
use crate::replication::{Entry, HardState, Index, SnapshotMeta, Write, retain_after};

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
                retain_after(self.base.index, &mut self.entries, meta);
                self.base = meta.clone();
            }
        }
        Ok(())
    }
}

/// A store's contents: its tables and the position they stand at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreFile {
    pub meta: StoreMeta,
    pub tables: MemTables,
}

/// The store as the replica reads it: the durable store file itself (writes reach it only
/// when a sync carries out a flush, whole).
#[derive(Clone, Default)]
pub struct SimStore(Rc<RefCell<StoreFile>>);

impl SimStore {
    /// A copy of what the store holds now.
    pub fn contents(&self) -> StoreFile {
        self.0.borrow().clone()
    }

    fn replace(&self, file: StoreFile) {
        *self.0.borrow_mut() = file;
    }
}

impl Tables for SimStore {
    fn client(&self, client_id: &str) -> StoreResult<Option<Cow<'_, ClientRecord>>> {
        Ok(detached(self.0.borrow().tables.client(client_id)?))
    }

    fn user(&self, username: &str) -> StoreResult<Option<String>> {
        self.0.borrow().tables.user(username)
    }

    fn message(&self, index: u64) -> StoreResult<Option<Cow<'_, MessageRecord>>> {
        Ok(detached(self.0.borrow().tables.message(index)?))
    }

    fn messages(&self, from: u64, limit: u64) -> StoreResult<Vec<(u64, MessageRecord)>> {
        self.0.borrow().tables.messages(from, limit)
    }

    fn clients(&self) -> StoreResult<Vec<(String, ClientRecord)>> {
        self.0.borrow().tables.clients()
    }

    fn users(&self) -> StoreResult<Vec<(String, String)>> {
        self.0.borrow().tables.users()
    }

    fn counters(&self) -> StoreResult<Counters> {
        Ok(self.0.borrow().meta.counters)
    }
}

impl Store for SimStore {
    fn meta(&self) -> StoreResult<StoreMeta> {
        Ok(self.0.borrow().meta.clone())
    }
}

impl StoreWrite for SimStore {
    fn write(&self, meta: &StoreMeta, changes: &MemTables) -> StoreResult<()> {
        let mut file = self.0.borrow_mut();
        file.tables.overwrite_with(changes);
        file.tables.counters = meta.counters;
        file.meta = meta.clone();
        Ok(())
    }
}

/// One job for the disk, in the replica's order.
#[derive(Clone, Debug)]
enum DiskJob {
    Log(Vec<Write>),
    Flush(StoreMeta, Arc<MemTables>),
    /// Swap in this received store (the driver names the file).
    Install(StoreFile),
}

/// One server's disk.
pub struct Storage {
    log: LogFile,
    store: SimStore,
    /// Queued in this order since the last sync, not yet durable.
    unsynced: Vec<DiskJob>,
    /// Jobs carried out since the replica started (what a sync reports).
    jobs_done: u64,
    /// The log as written (durable plus unsynced): the same entries as the node's own log,
    /// which is what the checks inspect when the node becomes primary.
    written: LogFile,
}

/// How a sync changed the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreChange {
    Flushed,
    Installed,
}

impl StoreChange {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreChange::Flushed => "flushed",
            StoreChange::Installed => "installed",
        }
    }
}

/// What a sync did.
pub struct Synced {
    /// What the replica is told.
    pub report: Persisted,
    /// The store's contents after each flush or swap the sync carried out (for the checks).
    pub stores: Vec<(StoreChange, StoreFile)>,
    /// Log compactions carried out.
    pub compactions: u64,
}

impl Storage {
    /// A disk holding `hard_state` and `log` (from index 1), all durable, and an empty store.
    pub fn new(hard_state: HardState, log: Vec<Entry>) -> Storage {
        let log = LogFile {
            hard_state,
            base: SnapshotMeta::default(),
            entries: log,
        };
        Storage {
            written: log.clone(),
            log,
            store: SimStore::default(),
            unsynced: Vec::new(),
            jobs_done: 0,
        }
    }

    /// The durable log, as a restarted server reads it back.
    pub fn durable_log(&self) -> &LogFile {
        &self.log
    }

    /// The store, as the replica reads it.
    pub fn store(&self) -> SimStore {
        self.store.clone()
    }

    pub fn durable_term(&self) -> crate::replication::Term {
        self.log.hard_state.term
    }

    /// The log as written so far, durable or not.
    pub fn written(&self) -> &LogFile {
        &self.written
    }

    pub fn has_unsynced(&self) -> bool {
        !self.unsynced.is_empty()
    }

    /// Queues a job of the replica. Fails if the real store would refuse it (a log write
    /// with a gap, or at or before the base), which no correct replica asks for. An
    /// `Install` comes with the received store the driver keeps for it.
    pub fn submit(&mut self, job: Job, received: Option<StoreFile>) -> Result<(), String> {
        let job = match job {
            Job::Log(writes) => {
                for write in &writes {
                    self.written.apply(write)?;
                }
                DiskJob::Log(writes)
            }
            Job::Flush { meta, changes } => DiskJob::Flush(meta, changes),
            Job::Install { meta } => {
                let Some(file) = received else {
                    return Err("a store to install without a received one".to_string());
                };
                if file.meta != meta {
                    return Err(format!(
                        "installing {:?} from a received store at {:?}",
                        meta.position, file.meta.position
                    ));
                }
                DiskJob::Install(file)
            }
        };
        self.unsynced.push(job);
        Ok(())
    }

    /// Makes every job durable, as the worker does, and reports it.
    pub fn sync(&mut self) -> Synced {
        let mut report = Persisted::default();
        let mut stores = Vec::new();
        let mut compactions = 0;
        for job in std::mem::take(&mut self.unsynced) {
            match &job {
                DiskJob::Log(writes) => {
                    for write in writes {
                        match write {
                            Write::Entries(entries) => {
                                let last =
                                    entries.last().expect("the core never writes no entries");
                                report.log = Some((last.index, last.term));
                            }
                            Write::HardState(state) => report.term = Some(state.term),
                            Write::Compact(_) => compactions += 1,
                        }
                    }
                }
                DiskJob::Flush(meta, _) => report.flushed = Some(meta.position.index),
                DiskJob::Install(_) => report.installed += 1,
            }
            let what = match &job {
                DiskJob::Log(_) => None,
                DiskJob::Flush(..) => Some(StoreChange::Flushed),
                DiskJob::Install(_) => Some(StoreChange::Installed),
            };
            self.carry_out(job);
            if let Some(what) = what {
                stores.push((what, self.store.contents()));
            }
        }
        report.jobs = self.jobs_done;
        Synced {
            report,
            stores,
            compactions,
        }
    }

    /// A crash: the first `keep` unsynced jobs reach the disk after all, the rest are lost.
    /// Returns how many unsynced jobs there were.
    pub fn crash(&mut self, keep: impl FnOnce(usize) -> usize) -> usize {
        let unsynced = std::mem::take(&mut self.unsynced);
        let total = unsynced.len();
        for job in unsynced.into_iter().take(keep(total)) {
            self.carry_out(job);
        }
        self.written = self.log.clone();
        // The next replica counts its jobs from its own start.
        self.jobs_done = 0;
        total
    }

    fn carry_out(&mut self, job: DiskJob) {
        match job {
            DiskJob::Log(writes) => {
                for write in &writes {
                    self.log
                        .apply(write)
                        .expect("a write accepted once applies to the durable log as well");
                }
            }
            DiskJob::Flush(meta, changes) => self
                .store
                .write(&meta, &changes)
                .expect("the simulated store never fails"),
            DiskJob::Install(file) => self.store.replace(file),
        }
        self.jobs_done += 1;
    }
}
