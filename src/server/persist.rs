//! The storage worker: a dedicated thread that makes the core's writes durable and then
//! releases the messages that depended on them.
//!
//! The driver hands it batches in the core's order. The worker takes every batch that is
//! waiting, writes them all, and covers them with a single fsync (group commit): under load
//! many proposals share one sync. Only then does it send the batches' messages (an
//! acknowledgement or a vote promises what is on disk) and tell the driver how far the log
//! is durable, so the primary can count its own copy. The driver task never waits on disk.

use std::thread;

use tokio::sync::mpsc;
use tracing::error;

use super::peers::Peers;
use crate::error::Error;
use crate::replication::{Envelope, Index, Term, Write};
use crate::storage::LogStore;

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

/// What the worker tells the driver.
#[derive(Debug)]
pub enum Persisted {
    /// Writes are durable: the log up to `log` (if entries were written), and a term and vote
    /// of `term` (if one was written).
    Durable {
        log: Option<(Index, Term)>,
        term: Option<Term>,
    },
    /// Storage failed; the server must stop rather than acknowledge what it cannot keep.
    Failed(Error),
}

/// Starts the worker; it ends when the sender is dropped.
pub fn spawn(
    mut store: LogStore,
    fsync: bool,
    peers: Peers,
    events: mpsc::UnboundedSender<Persisted>,
) -> std::io::Result<mpsc::UnboundedSender<Batch>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Batch>();
    thread::Builder::new()
        .name("understudy-storage".to_string())
        .spawn(move || {
            while let Some(first) = rx.blocking_recv() {
                let mut batches = vec![first];
                while let Ok(more) = rx.try_recv() {
                    batches.push(more);
                }
                match write_all(&mut store, &batches, fsync) {
                    Ok((None, None)) => {}
                    Ok((log, term)) => {
                        let _ = events.send(Persisted::Durable { log, term });
                    }
                    Err(err) => {
                        error!(%err, "storage failed");
                        let _ = events.send(Persisted::Failed(err));
                        return;
                    }
                }
                for envelope in batches.into_iter().flat_map(|b| b.sends) {
                    peers.send(envelope);
                }
            }
        })?;
    Ok(tx)
}

/// Writes every batch and syncs once (or, without fsync, only hands them to the OS).
/// Returns the last entry now durable, if entries were written (each entry write ends the log
/// at its last entry, so the last one written is the log's end), and the last term written.
fn write_all(
    store: &mut LogStore,
    batches: &[Batch],
    fsync: bool,
) -> crate::Result<(Option<(Index, Term)>, Option<Term>)> {
    let mut last = None;
    let mut term = None;
    let mut wrote = false;
    for write in batches.iter().flat_map(|b| &b.writes) {
        store.write(write)?;
        wrote = true;
        match write {
            Write::Entries(entries) => {
                if let Some(entry) = entries.last() {
                    last = Some((entry.index, entry.term));
                }
            }
            Write::HardState(state) => term = Some(state.term),
        }
    }
    match (wrote, fsync) {
        (true, true) => store.sync()?,
        (true, false) => store.flush()?,
        (false, _) => {}
    }
    Ok((last, term))
}
