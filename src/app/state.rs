//! The replicated application state: clients, users, sessions and the message board.
//!
//! [`State::apply`] is the only way the state changes. Every server applies the same
//! committed requests in the same order, so `apply` must be a pure function of the state and
//! the request: no clock, no randomness, no `HashMap` iteration (every collection here is a
//! `BTreeMap` or a `Vec`). A refused request leaves the state exactly as it was, so a
//! rejection costs a log slot but never makes two servers differ.
//!
//! The read-only queries serve two callers: the primary, which checks a request before it
//! proposes it (a login needs the password hash, a demo message needs the at-most-once
//! record), and the read endpoints, which answer from the server's own applied state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::command::{Command, Outcome, Rejection, Request};
use crate::api::{ClientInfo, MessageInfo};

/// The whole replicated application state. It is also what a state transfer or a snapshot
/// carries, hence `Serialize`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Every client that ever introduced itself, by `client_id`.
    clients: BTreeMap<String, Client>,
    /// Every registered user: username to Argon2id PHC string.
    users: BTreeMap<String, String>,
    /// The message board. The message with index `i` sits at position `i - 1`, which keeps
    /// the indexes gapless by construction.
    messages: Vec<Message>,
}

/// One known client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Client {
    /// The notification address, `IP:PORT`.
    address: String,
    /// The user the client last logged in as. Kept across logout, because a logged-out
    /// client stays listed with its username.
    username: Option<String>,
    /// The SHA-256 (hex) of the current bearer token; `Some` exactly while logged in.
    token_hash: Option<String>,
    /// The client's last stored message, for at-most-once. It belongs to the client_id, not
    /// to a session, so a retry after logout and login again is still recognised.
    last: Option<LastMessage>,
}

/// The at-most-once record of a client: its last `seq` and where that message went. The
/// text is not kept here; a retry is compared against the board itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct LastMessage {
    seq: u64,
    index: u64,
}

/// One message on the board. Its index is its position, so it is not stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Message {
    client_id: String,
    username: String,
    seq: u64,
    text: String,
}

/// The result of applying one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// What the waiting client is told (the same on every server).
    pub outcome: Outcome,
    /// The message newly stored on the board by this request, if any (a retry stores nothing,
    /// so this is None then). The server prints it on stdout.
    pub posted: Option<MessageInfo>,
}

impl Applied {
    fn outcome(outcome: Outcome) -> Applied {
        Applied {
            outcome,
            posted: None,
        }
    }

    fn rejected(rejection: Rejection) -> Applied {
        Applied::outcome(Outcome::Rejected(rejection))
    }
}

impl State {
    /// An empty state: no clients, no users, no messages.
    pub fn new() -> State {
        State::default()
    }

    /// Applies one committed request. Pure and deterministic: the same sequence of requests
    /// gives the same states and outcomes on every server. Every refusal is decided before
    /// anything is written, so a rejected request leaves the state unchanged.
    pub fn apply(&mut self, request: &Request) -> Applied {
        // `request.origin` is informational: the address a client is reached at is the one
        // it gave in `InitClient`, which already carries the peer IP.
        match &request.command {
            Command::InitClient { client_id, address } => self.init_client(client_id, address),
            Command::Register {
                username,
                password_hash,
            } => self.register(username, password_hash),
            Command::Login {
                client_id,
                username,
                token_hash,
            } => self.login(client_id, username, token_hash),
            Command::Logout {
                client_id,
                token_hash,
            } => self.logout(client_id, token_hash),
            Command::Message {
                client_id,
                token_hash,
                seq,
                text,
            } => self.message(client_id, token_hash, *seq, text),
        }
    }

    fn init_client(&mut self, client_id: &str, address: &str) -> Applied {
        if self.clients.contains_key(client_id) {
            return Applied::rejected(Rejection::Conflict(format!(
                "client {client_id} already exists"
            )));
        }
        self.clients.insert(
            client_id.to_string(),
            Client {
                address: address.to_string(),
                username: None,
                token_hash: None,
                last: None,
            },
        );
        Applied::outcome(Outcome::ClientAdded {
            client_id: client_id.to_string(),
        })
    }

    fn register(&mut self, username: &str, password_hash: &str) -> Applied {
        if self.username_taken(username) {
            return Applied::rejected(Rejection::Conflict(format!("username {username} is taken")));
        }
        self.users
            .insert(username.to_string(), password_hash.to_string());
        Applied::outcome(Outcome::Registered {
            username: username.to_string(),
        })
    }

    fn login(&mut self, client_id: &str, username: &str, token_hash: &str) -> Applied {
        // The primary checked the password before proposing; here only what could have
        // changed since, or what a faulty proposer could get wrong, is checked again.
        let user_known = self.users.contains_key(username);
        let Some(client) = self.clients.get_mut(client_id) else {
            return Applied::rejected(unknown_client(client_id));
        };
        if !user_known {
            return Applied::rejected(Rejection::Unauthorized(format!("unknown user {username}")));
        }
        // A second login replaces the session: only the newest token is valid.
        client.username = Some(username.to_string());
        client.token_hash = Some(token_hash.to_string());
        Applied::outcome(Outcome::LoggedIn)
    }

    fn logout(&mut self, client_id: &str, token_hash: &str) -> Applied {
        let Some(client) = self.clients.get_mut(client_id) else {
            return Applied::rejected(unknown_client(client_id));
        };
        if client.token_hash.as_deref() != Some(token_hash) {
            return Applied::rejected(not_logged_in(client_id));
        }
        // The username stays: the client is still listed, with `logged_in: false`.
        client.token_hash = None;
        Applied::outcome(Outcome::LoggedOut)
    }

    fn message(&mut self, client_id: &str, token_hash: &str, seq: u64, text: &str) -> Applied {
        // One judgement for both the primary's pre-check and apply, so they cannot disagree.
        match self.check_message(client_id, token_hash, seq, text) {
            Err(rejection) => Applied::rejected(rejection),
            Ok(Some(index)) => Applied::outcome(Outcome::Posted { index }),
            Ok(None) => {
                let Some(client) = self.clients.get_mut(client_id) else {
                    unreachable!("check_message accepted unknown client {client_id}");
                };
                let Some(username) = client.username.clone() else {
                    unreachable!("check_message accepted client {client_id} without a user");
                };
                let index = self.messages.len() as u64 + 1;
                client.last = Some(LastMessage { seq, index });
                let message = Message {
                    client_id: client_id.to_string(),
                    username,
                    seq,
                    text: text.to_string(),
                };
                let posted = message.info(index);
                self.messages.push(message);
                Applied {
                    outcome: Outcome::Posted { index },
                    posted: Some(posted),
                }
            }
        }
    }

    /// Whether a client with this id has introduced itself.
    pub fn client_exists(&self, client_id: &str) -> bool {
        self.clients.contains_key(client_id)
    }

    /// Whether a user with this name is registered.
    pub fn username_taken(&self, username: &str) -> bool {
        self.users.contains_key(username)
    }

    /// The stored Argon2id PHC string of a user, for the primary to verify a login against.
    pub fn password_hash(&self, username: &str) -> Option<&str> {
        self.users.get(username).map(String::as_str)
    }

    /// Whether the client is logged in with exactly this token hash.
    pub fn session_valid(&self, client_id: &str, token_hash: &str) -> bool {
        self.clients
            .get(client_id)
            .is_some_and(|client| client.token_hash.as_deref() == Some(token_hash))
    }

    /// Pre-check of a demo message, with the same rules as apply:
    /// Ok(Some(index)) = a retry of the client's last seq with the same text (answer that index,
    /// propose nothing); Ok(None) = a new message that apply would accept; Err = what apply would reject.
    pub fn check_message(
        &self,
        client_id: &str,
        token_hash: &str,
        seq: u64,
        text: &str,
    ) -> Result<Option<u64>, Rejection> {
        let Some(client) = self.clients.get(client_id) else {
            return Err(unknown_client(client_id));
        };
        if client.token_hash.as_deref() != Some(token_hash) || client.username.is_none() {
            return Err(not_logged_in(client_id));
        }
        let Some(last) = client.last else {
            return Ok(None);
        };
        if seq > last.seq {
            return Ok(None);
        }
        if seq < last.seq {
            return Err(Rejection::Conflict(format!(
                "seq {seq} is below the last seq {} of client {client_id}",
                last.seq
            )));
        }
        // The same seq again: a retry if the text matches the stored message.
        if self.message_at(last.index).is_some_and(|m| m.text == text) {
            Ok(Some(last.index))
        } else {
            Err(Rejection::Conflict(format!(
                "seq {seq} of client {client_id} was already used for another message"
            )))
        }
    }

    /// Every known client, ordered by client_id.
    pub fn clients(&self) -> Vec<ClientInfo> {
        self.clients
            .iter()
            .map(|(client_id, client)| ClientInfo {
                client_id: client_id.clone(),
                address: client.address.clone(),
                username: client.username.clone(),
                logged_in: client.token_hash.is_some(),
            })
            .collect()
    }

    /// The messages with index >= `from`, at most `limit` of them, in index order. A `from`
    /// of 0 reads from the first message (index 1).
    pub fn messages(&self, from: u64, limit: u64) -> Vec<MessageInfo> {
        // Saturate rather than fail: an index beyond usize simply finds nothing.
        let skip = usize::try_from(from.saturating_sub(1)).unwrap_or(usize::MAX);
        let take = usize::try_from(limit).unwrap_or(usize::MAX);
        self.messages
            .iter()
            .enumerate()
            .skip(skip)
            .take(take)
            .map(|(position, message)| message.info(position as u64 + 1))
            .collect()
    }

    /// The number of known clients.
    pub fn client_count(&self) -> u64 {
        self.clients.len() as u64
    }

    /// The number of clients logged in right now.
    pub fn logged_in_count(&self) -> u64 {
        self.clients
            .values()
            .filter(|client| client.token_hash.is_some())
            .count() as u64
    }

    /// The number of messages on the board, which is also the highest index.
    pub fn message_count(&self) -> u64 {
        self.messages.len() as u64
    }

    /// The notification addresses (IP:PORT) of all known clients, ordered by client_id.
    pub fn client_addresses(&self) -> Vec<String> {
        self.clients
            .values()
            .map(|client| client.address.clone())
            .collect()
    }

    /// The message with this index, if it is on the board.
    fn message_at(&self, index: u64) -> Option<&Message> {
        let position = usize::try_from(index.checked_sub(1)?).ok()?;
        self.messages.get(position)
    }
}

impl Message {
    fn info(&self, index: u64) -> MessageInfo {
        MessageInfo {
            index,
            client_id: self.client_id.clone(),
            username: self.username.clone(),
            seq: self.seq,
            message: self.text.clone(),
        }
    }
}

fn unknown_client(client_id: &str) -> Rejection {
    Rejection::NotFound(format!("unknown client {client_id}"))
}

fn not_logged_in(client_id: &str) -> Rejection {
    Rejection::Unauthorized(format!(
        "client {client_id} is not logged in with this token"
    ))
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
