//! The driver's part in snapshots: taking one of its own state every so many entries (so
//! the log can be compacted), sending the saved one to a backup that needs it, and
//! installing one received from the primary.

use std::path::PathBuf;

use tracing::{error, info};

use super::Driver;
use crate::app::State;
use crate::client::http::HttpClient;
use crate::error::Result;
use crate::replication::{NodeId, Term};
use crate::server::auth::ClusterSecret;
use crate::server::persist::Job;
use crate::server::snapshots;
use crate::storage::Snapshot;

/// Where snapshots live and how often to take one.
#[derive(Clone)]
pub struct SnapshotSettings {
    /// The data dir, which holds the snapshot file.
    pub dir: PathBuf,
    /// Take a snapshot (and compact the log) once this many entries were applied since
    /// the last one.
    pub every: u64,
    pub http: HttpClient,
    pub secret: ClusterSecret,
}

impl Driver {
    /// Takes a snapshot of the applied state if enough entries were applied since the last
    /// one. The storage worker saves it, compacts the log, and reports back, and only then
    /// does the node drop the entries.
    pub(super) fn maybe_snapshot(&mut self) -> Result<()> {
        let every = self.io.snapshots.every.max(1);
        if self.applied < self.snapshot_index + every {
            return Ok(());
        }
        let Some(meta) = self.node.snapshot_meta(self.applied) else {
            return Ok(());
        };
        let state = match postcard::to_stdvec(&self.state) {
            Ok(state) => state,
            Err(err) => {
                error!(%err, "cannot encode the state for a snapshot");
                return Ok(());
            }
        };
        self.snapshot_index = meta.index;
        let bytes = Snapshot {
            meta: meta.clone(),
            state,
        }
        .encode();
        self.store(Job::Snapshot {
            bytes,
            meta,
            compact: true,
        })
    }

    /// Streams the saved snapshot to `to` in the background.
    pub(super) fn send_snapshot(&self, to: NodeId) {
        let settings = &self.io.snapshots;
        tokio::spawn(snapshots::send(
            settings.http.clone(),
            settings.secret.clone(),
            settings.dir.clone(),
            self.node.id().clone(),
            to,
            self.node.term(),
        ));
    }

    /// A snapshot arrived from the primary `from` of `term`. If the node takes it, the
    /// application state is replaced (messages in it are not printed: they were applied
    /// elsewhere), and the file is saved before the node's acknowledgement can leave.
    pub(super) fn install_snapshot(
        &mut self,
        from: NodeId,
        term: Term,
        bytes: Vec<u8>,
        snapshot: Snapshot,
    ) {
        let state: State = match postcard::from_bytes(&snapshot.state) {
            Ok(state) => state,
            Err(err) => {
                error!(%from, %err, "a snapshot with an undecodable state; ignored");
                return;
            }
        };
        let meta = snapshot.meta;
        if !self.node.install_snapshot(from, term, meta.clone()) {
            return;
        }
        info!(index = meta.index, "installed a snapshot from the primary");
        // Queued before the node's outputs (the log compaction and the acknowledgement).
        if self
            .store(Job::Snapshot {
                bytes,
                meta: meta.clone(),
                compact: false,
            })
            .is_err()
        {
            error!("the storage worker stopped");
            return;
        }
        self.state = state;
        self.applied = meta.index;
        self.snapshot_index = meta.index;
        self.applied_members = meta.members;
    }
}
