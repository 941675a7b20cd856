//! Sending a snapshot to a backup that is too far behind for the log, in chunks.
//!
//! The primary streams its saved snapshot file as a sequence of
//! `POST /replication/snapshot` requests, each carrying one [`Chunk`] (signed like every
//! peer request, so the offsets and term are covered by the signature). The backup
//! reassembles the chunks, checks the snapshot's own checksum, and hands it to its driver,
//! which installs it and lets the core acknowledge. A transfer that breaks off is simply
//! started again by the primary later.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::auth::ClusterSecret;
use super::peer_call::PeerPost;
use crate::client::http::HttpClient;
use crate::error::{Error, Result};
use crate::replication::{NodeId, Term};
use crate::storage::{Snapshot, load_snapshot_bytes};

pub const SNAPSHOT_PATH: &str = "/replication/snapshot";
/// Bytes of snapshot per request.
const CHUNK_BYTES: usize = 1 << 20;
/// The largest snapshot a backup accepts.
const MAX_SNAPSHOT_BYTES: u64 = 4 << 30;
const CHUNK_TIMEOUT: Duration = Duration::from_secs(10);

/// One piece of a snapshot on its way.
#[derive(Debug, Serialize, Deserialize)]
pub struct Chunk {
    pub from: NodeId,
    pub term: Term,
    pub offset: u64,
    pub total: u64,
    pub data: Vec<u8>,
}

/// Sends the snapshot saved in `dir` to `to`, as the primary `from` of `term`.
pub async fn send(
    http: HttpClient,
    secret: ClusterSecret,
    dir: PathBuf,
    from: NodeId,
    to: NodeId,
    term: Term,
) {
    let bytes = match tokio::task::spawn_blocking(move || load_snapshot_bytes(&dir)).await {
        Ok(Ok(Some(bytes))) => bytes,
        Ok(Ok(None)) => {
            warn!(%to, "a snapshot is needed but none is saved");
            return;
        }
        Ok(Err(err)) => {
            warn!(%to, %err, "cannot read the snapshot to send");
            return;
        }
        Err(err) => {
            warn!(%to, %err, "snapshot read task failed");
            return;
        }
    };
    let total = bytes.len() as u64;
    info!(%to, bytes = total, "sending the snapshot");
    for (i, data) in bytes.chunks(CHUNK_BYTES).enumerate() {
        let chunk = Chunk {
            from: from.clone(),
            term,
            offset: (i * CHUNK_BYTES) as u64,
            total,
            data: data.to_vec(),
        };
        let Ok(call) = PeerPost::postcard(SNAPSHOT_PATH, &chunk) else {
            return;
        };
        let result = call.send(&http, &secret, &to, CHUNK_TIMEOUT).await;
        match result {
            Ok(response) if response.is_success() => {}
            Ok(response) => {
                debug!(%to, status = response.status, "snapshot chunk refused");
                return;
            }
            Err(err) => {
                debug!(%to, %err, "snapshot chunk failed");
                return;
            }
        }
    }
}

/// Snapshots being received, one per sender.
#[derive(Clone, Default)]
pub struct Assemblies {
    inner: Arc<Mutex<HashMap<NodeId, Assembly>>>,
}

struct Assembly {
    term: Term,
    total: u64,
    bytes: Vec<u8>,
}

impl Assemblies {
    /// Adds a chunk. Returns the whole snapshot (checked) once its last chunk arrived.
    pub fn add(&self, chunk: Chunk) -> Result<Option<(Vec<u8>, Snapshot)>> {
        if chunk.total > MAX_SNAPSHOT_BYTES {
            return Err(Error::PayloadTooLarge);
        }
        let mut assemblies = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if chunk.offset == 0 {
            assemblies.insert(
                chunk.from.clone(),
                Assembly {
                    term: chunk.term,
                    total: chunk.total,
                    bytes: Vec::with_capacity(chunk.total.min(64 << 20) as usize),
                },
            );
        }
        let Some(assembly) = assemblies.get_mut(&chunk.from) else {
            return Err(Error::Conflict(
                "no snapshot transfer under way".to_string(),
            ));
        };
        if assembly.term != chunk.term
            || assembly.total != chunk.total
            || assembly.bytes.len() as u64 != chunk.offset
            || chunk.offset + chunk.data.len() as u64 > chunk.total
        {
            assemblies.remove(&chunk.from);
            return Err(Error::Conflict("snapshot chunk out of order".to_string()));
        }
        assembly.bytes.extend_from_slice(&chunk.data);
        if (assembly.bytes.len() as u64) < assembly.total {
            return Ok(None);
        }
        let Some(done) = assemblies.remove(&chunk.from) else {
            return Ok(None);
        };
        let snapshot = Snapshot::decode(&done.bytes, &format!("snapshot from {}", chunk.from))?;
        Ok(Some((done.bytes, snapshot)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::SnapshotMeta;

    fn chunks(bytes: &[u8], size: usize) -> Vec<Chunk> {
        bytes
            .chunks(size)
            .enumerate()
            .map(|(i, data)| Chunk {
                from: "p".to_string(),
                term: 2,
                offset: (i * size) as u64,
                total: bytes.len() as u64,
                data: data.to_vec(),
            })
            .collect()
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                index: 9,
                term: 2,
                members: vec!["p".to_string()],
            },
            state: vec![7; 1000],
        }
    }

    /// A snapshot sent in chunks arrives whole and checked.
    #[test]
    fn chunks_reassemble_into_the_snapshot() {
        let bytes = snapshot().encode();
        let assemblies = Assemblies::default();
        let mut result = None;
        for chunk in chunks(&bytes, 100) {
            assert!(result.is_none());
            result = assemblies.add(chunk).unwrap();
        }
        let (received, decoded) = result.expect("complete");
        assert_eq!(received, bytes);
        assert_eq!(decoded, snapshot());
    }

    /// A chunk out of order, or a damaged snapshot, is refused, never installed.
    #[test]
    fn gaps_and_damage_are_refused() {
        let bytes = snapshot().encode();
        let assemblies = Assemblies::default();
        let mut parts = chunks(&bytes, 100);
        assemblies.add(parts.remove(0)).unwrap();
        parts.remove(0);
        assert!(assemblies.add(parts.remove(0)).is_err(), "a gap");

        let mut damaged = bytes.clone();
        damaged[500] ^= 1;
        let mut last = Ok(None);
        for chunk in chunks(&damaged, 100) {
            last = assemblies.add(chunk);
        }
        assert!(matches!(last, Err(Error::Corrupt(_))));
    }
}
