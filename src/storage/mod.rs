//! Durable storage in the data directory (`--data-dir`): the replication log, the
//! application's store, the server's identity and the format of the whole.
//!
//! The replica does no I/O. It hands the storage worker jobs in order: log writes (a new
//! term and vote, entries to append after dropping a conflicting suffix, a compaction),
//! flushes of applied changes to the store, and the swap of a store received whole. The
//! worker carries them out here: [`LogStore::write`] for each log write and one
//! [`LogStore::sync`] for all that were queued together (group commit); one durable
//! transaction per flush in [`RedbStore`]; and [`RedbStore::install_incoming`]. The worker
//! reports what is done; the replica releases the messages that waited for it.
//!
//! Layout of the data directory:
//!
//! | file               | contents                                          | written by       |
//! |--------------------|---------------------------------------------------|------------------|
//! | `format`           | the data dir's format version                     | [`check_format`] |
//! | `log`              | every log write since the last compaction, in     | [`LogStore`]     |
//! |                    | order, as checksummed records                     |                  |
//! | `log.tmp`          | a compacted log being built (removed at start)    | [`LogStore`]     |
//! | `store`            | the application's tables at an applied index      | [`RedbStore`]    |
//! | `store.incoming.*` | a store being received from the primary           | [`IncomingStore`]|
//! | `identity`         | the server's advertised address                   | [`save_identity`]|
//!
//! The log grows by appending until the store durably holds enough of it; then the replica
//! writes [`Compact`](crate::replication::Write::Compact), and the log store replaces `log`
//! with a file holding only what is still live (the term and vote, the store's index, term
//! and configuration, and the entries after it), built in `log.tmp` and renamed over
//! `log`, so a crash leaves one whole file or the other. The log is never compacted beyond
//! what the store holds durably.
//!
//! What is guaranteed, and what is not:
//!
//! - Once `sync` returns, every earlier write survives a crash or a power loss.
//! - A write that was never synced may survive, vanish, or leave a torn record at the end of
//!   the log. Replay discards a torn record; the core never relied on it.
//! - Damage anywhere else (a flipped bit in the middle, a foreign file) is reported as
//!   [`Error::Corrupt`] and the server refuses to start: a server that
//!   forgot a vote or an acknowledged entry could break the protocol's safety, so a wrong log
//!   is worse than no server.

mod format;
mod identity;
mod join_targets;
mod message_pages;
pub(crate) mod record;
mod rewrite;
mod store;
pub mod transfer;
mod wal;

pub use format::{FORMAT, check_format};
pub use identity::{load_identity, save_identity};
pub use join_targets::{
    load_join_targets, load_member_since, save_join_targets, save_member_since,
};
pub use record::{MAX_RECORD_LEN, Recovered};
pub use store::{IncomingStore, ReadView, RedbStore};
pub use wal::{LogStore, PREALLOCATE_BYTES as LOG_ZEROS_AHEAD};

use std::fs::File;
use std::io;
use std::path::Path;

use crate::Error;

/// Wraps an I/O error with what was being done and to which path, so an operator reading
/// the error knows which file to look at.
fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    move |err| Error::Io(format!("{action} {}: {err}", path.display()))
}

/// Makes the directory entries in `dir` durable. A newly created or renamed file is only
/// reachable after a power loss if the directory that names it was synced too.
fn sync_dir(dir: &Path) -> crate::Result<()> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error("syncing directory", dir))
}

/// Creates `dir` and any missing parents, syncing each parent after the child appears in it,
/// for the same reason as [`sync_dir`]: a data directory that vanishes on power loss would
/// take the synced log with it.
fn create_dir_durable(dir: &Path) -> crate::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().filter(|parent| !parent.as_os_str().is_empty());
    if let Some(parent) = parent {
        create_dir_durable(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        // Created by somebody else meanwhile: it exists, which is all we need.
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(err) => return Err(io_error("creating directory", dir)(err)),
    }
    sync_dir(parent.unwrap_or(Path::new(".")))
}
