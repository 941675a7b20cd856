//! The storage worker: a dedicated thread that makes the core's writes durable and then
//! releases the messages that depended on them.
//!
//! The driver hands it jobs in the core's order. The worker takes every job that is
//! waiting, writes the batches, and covers them with a single fsync (group commit): under
//! load many proposals share one sync. Only then does it send the batches' messages (an
//! acknowledgement or a vote promises what is on disk) and tell the driver how far the log
//! is durable, so the primary can count its own copy. Snapshots are saved in the same order,
//! so whatever was queued after a snapshot finds it on disk. The driver task never waits on
//! disk.

use std::path::PathBuf;
use std::thread;

use tokio::sync::mpsc;
use tracing::{error, info};

use super::peers::Peers;
use crate::error::{Error, Result};
use crate::replication::{Envelope, Index, SnapshotMeta, Term, Write};
use crate::storage::{LogStore, save_snapshot};

/// Writes, and the messages that may leave only once the writes are durable.
#[derive(Debug, Default)]
pub struct Batch {
    pub writes: Vec<Write>,
    pub sends: Vec<Envelope>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.sends.is_empty()
    }
}

/// Work for the storage worker, carried out in order.
#[derive(Debug)]
pub enum Job {
    Batch(Batch),
    /// Save an encoded snapshot durably. With `compact`, then compact the log up to it and
    /// report [`Persisted::Snapshot`] (a snapshot of our own state); without, the core's
    /// `Write::Compact` follows in a later batch (a snapshot received from the primary).
    Snapshot {
        bytes: Vec<u8>,
        meta: SnapshotMeta,
        compact: bool,
    },
}

/// What the worker tells the driver.
#[derive(Debug)]
pub enum Persisted {
    /// Writes are durable: the log up to `log` (if entries were written), and a term and vote
    /// of `term` (if one was written).
    Durable {
        log: Option<(Index, Term)>,
        term: Option<Term>,
    },
    /// Our own snapshot is saved and the log compacted up to it.
    Snapshot(SnapshotMeta),
    /// Storage failed; the server must stop rather than acknowledge what it cannot keep.
    Failed(Error),
}

/// The worker's state.
struct Worker {
    store: LogStore,
    dir: PathBuf,
    fsync: bool,
    peers: Peers,
    events: mpsc::UnboundedSender<Persisted>,
}

/// Starts the worker; it ends when the sender is dropped.
pub fn spawn(
    store: LogStore,
    dir: PathBuf,
    fsync: bool,
    peers: Peers,
    events: mpsc::UnboundedSender<Persisted>,
) -> std::io::Result<mpsc::UnboundedSender<Job>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
    let mut worker = Worker {
        store,
        dir,
        fsync,
        peers,
        events,
    };
    thread::Builder::new()
        .name("understudy-storage".to_string())
        .spawn(move || {
            while let Some(first) = rx.blocking_recv() {
                let mut jobs = vec![first];
                while let Ok(more) = rx.try_recv() {
                    jobs.push(more);
                }
                if let Err(err) = worker.run(jobs) {
                    error!(%err, "storage failed");
                    let _ = worker.events.send(Persisted::Failed(err));
                    return;
                }
            }
        })?;
    Ok(tx)
}

impl Worker {
    /// Carries out `jobs` in order; consecutive batches share one sync.
    fn run(&mut self, jobs: Vec<Job>) -> Result<()> {
        let mut pending = Batch::default();
        for job in jobs {
            match job {
                Job::Batch(batch) => {
                    pending.writes.extend(batch.writes);
                    pending.sends.extend(batch.sends);
                }
                Job::Snapshot {
                    bytes,
                    meta,
                    compact,
                } => {
                    self.flush(std::mem::take(&mut pending))?;
                    save_snapshot(&self.dir, &bytes)?;
                    if compact {
                        self.store.write(&Write::Compact(meta.clone()))?;
                        self.store.sync()?;
                        info!(
                            index = meta.index,
                            bytes = bytes.len(),
                            log_bytes = self.store.size(),
                            "snapshot saved; log compacted"
                        );
                        let _ = self.events.send(Persisted::Snapshot(meta));
                    }
                }
            }
        }
        self.flush(pending)
    }

    /// Writes a batch, syncs once (or, without fsync, only hands it to the OS), reports what
    /// is durable, then sends the batch's messages.
    fn flush(&mut self, batch: Batch) -> Result<()> {
        let mut log = None;
        let mut term = None;
        for write in &batch.writes {
            self.store.write(write)?;
            match write {
                // Each entry write ends the log at its last entry.
                Write::Entries(entries) => {
                    if let Some(entry) = entries.last() {
                        log = Some((entry.index, entry.term));
                    }
                }
                Write::HardState(state) => term = Some(state.term),
                Write::Compact(_) => {}
            }
        }
        if !batch.writes.is_empty() {
            if self.fsync {
                self.store.sync()?;
            } else {
                self.store.flush()?;
            }
        }
        if log.is_some() || term.is_some() {
            let _ = self.events.send(Persisted::Durable { log, term });
        }
        for envelope in batch.sends {
            self.peers.send(envelope);
        }
        Ok(())
    }
}
