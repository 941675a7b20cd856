//! What the replica needs of the durable store of application state, and what it tells it.
//!
//! The store holds the application's tables as of one log position (the applied index it
//! was last flushed at, with that entry's term and configuration): that position and the
//! counters are its [`StoreMeta`]. The replica reads the store ([`Store`]); only the storage
//! side writes it ([`StoreWrite`]), one flush at a time, each made durable as a whole.
//! The embedded store (`storage::store`) and the simulation's model implement both.

use serde::{Deserialize, Serialize};

use crate::app::{Counters, MemTables, Tables};
use crate::error::Result;
use crate::replication::SnapshotMeta;

/// Where a store stands: every entry up to `position.index` is applied in it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreMeta {
    pub position: SnapshotMeta,
    pub counters: Counters,
}

/// Reading the store: the tables as of its last flush, and where that was.
pub trait Store: Tables {
    fn meta(&self) -> Result<StoreMeta>;
}

/// Writing the store, by the storage side only.
pub trait StoreWrite {
    /// Writes `changes` and `meta` in one transaction and makes it durable: after a crash the
    /// store holds all of it or none of it.
    fn write(&self, meta: &StoreMeta, changes: &MemTables) -> Result<()>;
}
