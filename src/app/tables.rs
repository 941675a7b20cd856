//! What the application needs of a store: point reads, ordered scans, and writes.
//!
//! [`apply`](super::apply) is written against these traits only, so the same rules run on
//! the in-memory tables ([`MemTables`](super::MemTables)), on the layers of recent changes
//! over the embedded store that a server keeps, and on the simulation's model of that store.
//! Reads return `Result` because a real store can fail to read its file; a store that fails
//! stops the server rather than letting it guess.

use std::borrow::Cow;

use super::records::{ClientRecord, Counters, LastMessage, MessageRecord};
use crate::error::{Error, Result};

/// Reading the application's tables.
pub trait Tables {
    /// The client with this id: borrowed where the tables hold it in memory, so that a check
    /// reads it without a copy.
    fn client(&self, client_id: &str) -> Result<Option<Cow<'_, ClientRecord>>>;
    /// The Argon2id PHC string of this user.
    fn user(&self, username: &str) -> Result<Option<String>>;
    /// The message with this index: borrowed where the tables hold it in memory, so that a
    /// server prints a message it just applied without a copy.
    fn message(&self, index: u64) -> Result<Option<Cow<'_, MessageRecord>>>;
    /// The messages with index >= `from` (at least 1), at most `limit`, in index order.
    fn messages(&self, from: u64, limit: u64) -> Result<Vec<(u64, MessageRecord)>>;
    /// Every client, ordered by id.
    fn clients(&self) -> Result<Vec<(String, ClientRecord)>>;
    /// Every user, ordered by name.
    fn users(&self) -> Result<Vec<(String, String)>>;
    /// The counters.
    fn counters(&self) -> Result<Counters>;
}

/// Writing them. Only `apply` writes, and it writes nothing for a refused request.
pub trait TablesMut: Tables {
    fn put_client(&mut self, client_id: &str, record: ClientRecord);
    /// Sets the `last` of a client that exists: what every stored message changes. Here by
    /// a copy of the record; tables that hold it in memory change it in place.
    fn set_last_message(&mut self, client_id: &str, last: LastMessage) -> Result<()> {
        let Some(mut client) = self.client(client_id)?.map(Cow::into_owned) else {
            return Err(not_in_the_tables(client_id));
        };
        client.last = Some(last);
        self.put_client(client_id, client);
        Ok(())
    }
    /// Forgets a client (only `ExpireClient` does, for clients that never logged in).
    fn remove_client(&mut self, client_id: &str);
    fn put_user(&mut self, username: &str, password_hash: &str);
    /// Stores a new message; indexes come in order and are never written twice.
    fn put_message(&mut self, index: u64, record: MessageRecord);
    fn set_counters(&mut self, counters: Counters);
}

/// A record read from tables behind a `RefCell`, as an owned copy: such tables cannot lend
/// a record past the read, so their `client` and `message` hand out the inner tables'
/// answer through this.
pub fn detached<T: Clone>(found: Option<Cow<'_, T>>) -> Option<Cow<'static, T>> {
    found.map(|record| Cow::Owned(record.into_owned()))
}

/// A message for a client the tables do not hold: `apply` judged it against that client's
/// record, so this is a bug, never a client's mistake.
pub(super) fn not_in_the_tables(client_id: &str) -> Error {
    Error::Internal(format!(
        "a message for client {client_id}, which is not in the tables"
    ))
}
