//! Sending the primary's store to a backup that is too far behind for the log, and
//! receiving it.
//!
//! The primary reads its store through one read transaction (a consistent view of one
//! flush, while writes go on) and posts it as a sequence of `POST /replication/state`
//! requests, each carrying one [`StateChunk`] (signed like every peer request, so its place
//! in the stream and its term are covered by the signature). The reading runs on the
//! blocking pool, a chunk ahead of the network. The backup checks and writes each chunk
//! into a store of its own beside the one it uses (`storage::transfer`), and once the last
//! chunk checks out hands it to its driver, which lets the replica swap it in. A transfer
//! that breaks off is started again by the primary later, from a fresh view.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::auth::ClusterSecret;
use super::peer_call::PeerPost;
use crate::client::http::HttpClient;
use crate::error::{Error, Result};
use crate::replica::StoreMeta;
use crate::replication::{NodeId, Term};
use crate::storage::transfer::{ChunkData, Exporter, Importer, Step};
use crate::storage::{IncomingStore, RedbStore};

pub const STATE_PATH: &str = "/replication/state";
const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);

/// One piece of a store on its way.
#[derive(Debug, Serialize, Deserialize)]
pub struct StateChunk {
    pub from: NodeId,
    pub term: Term,
    /// Names the transfer: chunks of another transfer are not mixed in.
    pub transfer: u64,
    pub data: ChunkData,
}

/// What a sender needs besides the store: the way to the backup, and whom to tell.
pub struct Sending {
    pub http: HttpClient,
    pub secret: ClusterSecret,
    /// Told of every chunk taken, so the transfer counts as moving.
    pub driver: super::driver::DriverHandle,
    pub metrics: super::metrics::Metrics,
}

/// Sends our store to `to`, as the primary `from` of `term`.
pub async fn send(sending: Sending, store: RedbStore, from: NodeId, to: NodeId, term: Term) {
    let Sending {
        http,
        secret,
        driver,
        metrics,
    } = sending;
    let started = std::time::Instant::now();
    let transfer: u64 = rand::random();
    // A chunk is read while the one before it is on the wire.
    let (tx, mut rx) = mpsc::channel::<Result<ChunkData>>(1);
    let reader = tokio::task::spawn_blocking(move || {
        let mut exporter = match store.read_view() {
            Ok(view) => Exporter::new(view),
            Err(err) => {
                let _ = tx.blocking_send(Err(err));
                return;
            }
        };
        loop {
            match exporter.next_chunk() {
                Ok(Some(chunk)) => {
                    if tx.blocking_send(Ok(chunk)).is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(err) => {
                    let _ = tx.blocking_send(Err(err));
                    return;
                }
            }
        }
    });
    info!(%to, "sending the store");
    let mut sent = 0u64;
    while let Some(chunk) = rx.recv().await {
        let data = match chunk {
            Ok(data) => data,
            Err(err) => {
                warn!(%to, %err, "cannot read the store to send");
                break;
            }
        };
        let chunk = StateChunk {
            from: from.clone(),
            term,
            transfer,
            data,
        };
        let Ok(call) = PeerPost::postcard(STATE_PATH, &chunk) else {
            break;
        };
        sent += call.len() as u64;
        let result = call.send(&http, &secret, &to, CHUNK_TIMEOUT).await;
        match result {
            Ok(response) if response.is_success() => driver.transfer_moving(to.clone()),
            Ok(response) => {
                debug!(%to, status = response.status, "state chunk refused");
                break;
            }
            Err(err) => {
                debug!(%to, %err, "state chunk failed");
                break;
            }
        }
        if chunk.data.last {
            info!(%to, bytes = sent, "store sent");
            metrics.state_transfer("sent", sent, Some(started.elapsed()));
        }
    }
    drop(rx);
    let _ = reader.await;
}

/// The store being received (one at a time: a new transfer replaces an unfinished one).
#[derive(Clone)]
pub struct Receiver {
    dir: PathBuf,
    current: Arc<Mutex<Option<Receiving>>>,
}

struct Receiving {
    from: NodeId,
    term: Term,
    transfer: u64,
    importer: Importer,
}

/// A store received whole and checked.
pub struct Received {
    pub from: NodeId,
    pub term: Term,
    pub meta: StoreMeta,
    pub path: PathBuf,
}

impl Receiver {
    pub fn new(dir: PathBuf) -> Receiver {
        Receiver {
            dir,
            current: Arc::default(),
        }
    }

    /// Adds a chunk (blocking: it writes to disk). Returns the store once its last chunk
    /// arrived and it checked out.
    pub fn add(&self, chunk: StateChunk) -> Result<Option<Received>> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if chunk.data.seq == 0 {
            *current = Some(Receiving {
                from: chunk.from.clone(),
                term: chunk.term,
                transfer: chunk.transfer,
                importer: Importer::new(IncomingStore::create(&self.dir, chunk.transfer)?),
            });
        }
        let Some(receiving) = current.take() else {
            return Err(Error::Conflict("no state transfer under way".to_string()));
        };
        if receiving.transfer != chunk.transfer
            || receiving.from != chunk.from
            || receiving.term != chunk.term
        {
            // Chunks of a transfer that was replaced: the newer one goes on.
            *current = Some(receiving);
            return Err(Error::Conflict(
                "a chunk of another state transfer".to_string(),
            ));
        }
        let Receiving {
            from,
            term,
            transfer,
            importer,
        } = receiving;
        match importer.take(chunk.data)? {
            Step::More(importer) => {
                *current = Some(Receiving {
                    from,
                    term,
                    transfer,
                    importer,
                });
                Ok(None)
            }
            Step::Done { meta, path } => {
                info!(
                    index = meta.position.index,
                    messages = meta.counters.messages,
                    "received the primary's store"
                );
                Ok(Some(Received {
                    from,
                    term,
                    meta,
                    path,
                }))
            }
        }
    }
}
