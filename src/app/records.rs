//! The records of the replicated application, as every store keeps them: one per client,
//! one per user, one per message on the board, and the counters `/status` reports.
//!
//! They are plain data with `serde`, so the embedded store, the in-memory tables and a state
//! transfer all carry the same bytes.

use serde::{Deserialize, Serialize};

/// One known client, under its `client_id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRecord {
    /// The notification address, `IP:PORT`.
    pub address: String,
    /// The user the client last logged in as. Kept across logout, because a logged-out
    /// client stays listed with its username.
    pub username: Option<String>,
    /// The SHA-256 (hex) of the current bearer token; `Some` exactly while logged in.
    pub token_hash: Option<String>,
    /// The client's last stored message, for at-most-once. It belongs to the client_id, not
    /// to a session, so a retry after logout and login again is still recognised.
    pub last: Option<LastMessage>,
}

/// The at-most-once record of a client: its last `seq` and where that message went. The
/// text is not kept here; a retry is compared against the board itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastMessage {
    pub seq: u64,
    pub index: u64,
}

/// One message on the board, under its index. Written once, never rewritten.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub client_id: String,
    pub username: String,
    pub seq: u64,
    pub text: String,
}

/// What `/status` counts, kept up to date by `apply` so that nobody has to count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Messages on the board, which is also the highest index (indexes are gapless).
    pub messages: u64,
    /// Known clients.
    pub clients: u64,
    /// Clients logged in right now.
    pub logged_in: u64,
}

/// A message as read: its index with its record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posted {
    pub index: u64,
    pub client_id: String,
    pub username: String,
    pub seq: u64,
    pub text: String,
}

impl Posted {
    pub fn new(index: u64, record: MessageRecord) -> Posted {
        Posted {
            index,
            client_id: record.client_id,
            username: record.username,
            seq: record.seq,
            text: record.text,
        }
    }
}

/// A client as listed: id, address, user and whether it is logged in (never its token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSummary {
    pub client_id: String,
    pub address: String,
    pub username: Option<String>,
    pub logged_in: bool,
}

impl ClientSummary {
    pub fn new(client_id: String, record: ClientRecord) -> ClientSummary {
        ClientSummary {
            client_id,
            address: record.address,
            username: record.username,
            logged_in: record.token_hash.is_some(),
        }
    }
}
