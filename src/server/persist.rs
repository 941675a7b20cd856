//! The storage worker: a dedicated thread that carries out the replica's jobs in order and
//! reports what became durable. It never sends on the network: the replica releases the
//! messages that waited for the jobs, and the driver sends them.
//!
//! The worker takes every job that is waiting. Log writes are appended as they come and
//! covered by a single fsync at the end (group commit): under load many proposals share one
//! sync. When the last round held log writes of more than one job (writes arrive faster
//! than a sync takes), the worker first waits as long as that sync took, at most
//! [`MAX_GATHER`], so that about twice as many share the next one: half the syncs, and
//! their CPU, for a wait that a primary's commit rarely sees (its own copy is one of three,
//! and a backup's answer usually completes the majority first). A lone writer never waits.
//!
//! A flush of applied changes is one durable transaction in the store; the swap of a
//! received store renames it over ours. Jobs are done in order, so whatever was queued after
//! a swap finds the new store in place. The driver task never waits on disk.

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::info;

use super::metrics::Metrics;
use crate::error::{Error, Result};
use crate::replica::{Job, Persisted, StoreWrite};
use crate::replication::Write;
use crate::storage::{LogStore, RedbStore};

/// The longest the worker waits for more log writes before a sync (see the module's
/// comment): on a slow disk the batches are large already.
const MAX_GATHER: Duration = Duration::from_millis(1);

/// A job with what the server adds to it: the file a received store waits in.
#[derive(Debug)]
pub struct WorkItem {
    pub job: Job,
    pub incoming: Option<PathBuf>,
}

/// What the worker tells the driver.
#[derive(Debug)]
pub enum WorkerEvent {
    Done(Persisted),
    /// Storage failed; the server must stop rather than acknowledge what it cannot keep.
    Failed(Error),
}

struct Worker {
    log: LogStore,
    store: RedbStore,
    fsync: bool,
    jobs_done: u64,
    /// How long to wait before the next round, if the last one showed concurrent writers.
    gather: Option<Duration>,
    events: mpsc::UnboundedSender<WorkerEvent>,
    metrics: Metrics,
}

/// Starts the worker; it ends when the sender is dropped.
pub fn spawn(
    log: LogStore,
    store: RedbStore,
    fsync: bool,
    events: mpsc::UnboundedSender<WorkerEvent>,
    metrics: Metrics,
) -> std::io::Result<mpsc::UnboundedSender<WorkItem>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<WorkItem>();
    let mut worker = Worker {
        log,
        store,
        fsync,
        jobs_done: 0,
        gather: None,
        events,
        metrics,
    };
    thread::Builder::new()
        .name("understudy-storage".to_string())
        .spawn(move || {
            while let Some(first) = rx.blocking_recv() {
                if let Some(gather) = worker.gather.take() {
                    thread::sleep(gather);
                }
                let mut items = vec![first];
                while let Ok(more) = rx.try_recv() {
                    items.push(more);
                }
                match worker.run(items) {
                    Ok(report) => {
                        let _ = worker.events.send(WorkerEvent::Done(report));
                    }
                    Err(err) => {
                        // The driver stops the server with this error as its last word.
                        let _ = worker.events.send(WorkerEvent::Failed(err));
                        return;
                    }
                }
            }
        })?;
    Ok(tx)
}

impl Worker {
    /// Carries out `items` in order; the log writes among them share one sync.
    fn run(&mut self, items: Vec<WorkItem>) -> Result<Persisted> {
        let mut report = Persisted::default();
        let mut entries = 0;
        // Jobs that wrote to the log: none, no sync; more than one, writers are queueing.
        let mut log_jobs = 0;
        for item in items {
            match item.job {
                Job::Log(writes) => {
                    for write in &writes {
                        self.log.write(write)?;
                        match write {
                            // Each entry write ends the log at its last entry.
                            Write::Entries(written) => {
                                entries += written.len();
                                if let Some(entry) = written.last() {
                                    report.log = Some((entry.index, entry.term));
                                }
                            }
                            Write::HardState(state) => report.term = Some(state.term),
                            Write::Compact(meta) => info!(
                                index = meta.index,
                                log_bytes = self.log.size(),
                                "log compacted"
                            ),
                        }
                    }
                    log_jobs += usize::from(!writes.is_empty());
                }
                Job::Flush { meta, changes } => {
                    self.store.write(&meta, &changes)?;
                    report.flushed = Some(meta.position.index);
                }
                Job::Install { meta } => {
                    let Some(path) = item.incoming else {
                        return Err(Error::Internal(
                            "a store to install without its file".to_string(),
                        ));
                    };
                    let installed = self.store.install_incoming(&path)?;
                    if installed != meta {
                        return Err(Error::Corrupt(format!(
                            "the received store stands at {:?}, not at {:?}",
                            installed.position, meta.position
                        )));
                    }
                    info!(index = meta.position.index, "received store swapped in");
                    report.installed += 1;
                }
            }
            self.jobs_done += 1;
        }
        if log_jobs > 0 {
            let started = Instant::now();
            self.sync_log()?;
            let took = started.elapsed();
            self.metrics.log_sync(took, entries);
            if self.fsync && log_jobs > 1 {
                self.gather = Some(took.min(MAX_GATHER));
            }
        }
        report.jobs = self.jobs_done;
        Ok(report)
    }

    /// Syncs the log (or, without fsync, hands it to the OS).
    fn sync_log(&mut self) -> Result<()> {
        if self.fsync {
            self.log.sync()
        } else {
            self.log.flush()
        }
    }
}
