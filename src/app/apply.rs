//! The rules of the application: [`apply`] for a committed request, [`check_message`] for the
//! primary's check before it proposes, and the read queries.
//!
//! `apply` is the only way the tables change. Every server applies the same committed
//! requests in the same order, so it must be a pure function of the tables and the request:
//! no clock, no randomness, no `HashMap` iteration. A refused request writes nothing, so a
//! rejection costs a log slot but never makes two servers differ.

use std::borrow::Cow;

use super::command::{Command, Outcome, Rejection, Request};
use super::records::{ClientRecord, ClientSummary, LastMessage, MessageRecord, Posted};
use super::tables::{Tables, TablesMut};
use crate::error::Result;

/// The result of applying one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// What the waiting client is told (the same on every server).
    pub outcome: Outcome,
    /// The index of the message newly stored on the board by this request, if any (a retry
    /// stores nothing, so this is None then). The server prints it on stdout, reading it
    /// from the tables it was just put in rather than from a copy.
    pub posted: Option<u64>,
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

/// What the primary's check of a demo message found, by the same rules as `apply`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageCheck {
    /// A new message that `apply` would store.
    New,
    /// A retry of the client's last seq with the same text: answer this index, store nothing.
    Retry(u64),
    /// What `apply` would reject.
    Rejected(Rejection),
}

/// Applies one committed request. Fails only if the tables cannot be read. The request's
/// strings may be owned or borrowed (see [`Request`]): only what the tables keep is copied.
pub fn apply<S: AsRef<str>>(tables: &mut impl TablesMut, request: &Request<S>) -> Result<Applied> {
    // `request.origin` is informational: the address a client is reached at is the one it
    // gave in `InitClient`, which already carries the peer IP.
    match &request.command {
        Command::InitClient { client_id, address } => {
            init_client(tables, client_id.as_ref(), address.as_ref())
        }
        Command::Register {
            username,
            password_hash,
        } => register(tables, username.as_ref(), password_hash.as_ref()),
        Command::Login {
            client_id,
            username,
            token_hash,
        } => login(
            tables,
            client_id.as_ref(),
            username.as_ref(),
            token_hash.as_ref(),
        ),
        Command::Logout {
            client_id,
            token_hash,
        } => logout(tables, client_id.as_ref(), token_hash.as_ref()),
        Command::Message {
            client_id,
            token_hash,
            seq,
            text,
        } => message(
            tables,
            client_id.as_ref(),
            token_hash.as_ref(),
            *seq,
            text.as_ref(),
        ),
        Command::ExpireClient { client_id } => expire_client(tables, client_id.as_ref()),
    }
}

/// Whether a client is one `ExpireClient` may remove: it never logged in (a username stays
/// on the record from the first login on, across logouts).
pub fn never_logged_in(client: &ClientRecord) -> bool {
    client.username.is_none() && client.token_hash.is_none() && client.last.is_none()
}

fn expire_client(tables: &mut impl TablesMut, client_id: &str) -> Result<Applied> {
    match tables.client(client_id)? {
        None => return Ok(Applied::rejected(unknown_client(client_id))),
        Some(client) if !never_logged_in(&client) => {
            return Ok(Applied::rejected(Rejection::Conflict(format!(
                "client {client_id} has logged in; it does not expire"
            ))));
        }
        Some(_) => {}
    }
    tables.remove_client(client_id);
    let mut counters = tables.counters()?;
    counters.clients = counters.clients.saturating_sub(1);
    tables.set_counters(counters);
    Ok(Applied::outcome(Outcome::ClientExpired {
        client_id: client_id.to_string(),
    }))
}

fn init_client(tables: &mut impl TablesMut, client_id: &str, address: &str) -> Result<Applied> {
    if tables.client(client_id)?.is_some() {
        return Ok(Applied::rejected(Rejection::Conflict(format!(
            "client {client_id} already exists"
        ))));
    }
    tables.put_client(
        client_id,
        ClientRecord {
            address: address.to_string(),
            username: None,
            token_hash: None,
            last: None,
        },
    );
    let mut counters = tables.counters()?;
    counters.clients += 1;
    tables.set_counters(counters);
    Ok(Applied::outcome(Outcome::ClientAdded {
        client_id: client_id.to_string(),
    }))
}

fn register(tables: &mut impl TablesMut, username: &str, password_hash: &str) -> Result<Applied> {
    if tables.user(username)?.is_some() {
        return Ok(Applied::rejected(Rejection::Conflict(format!(
            "username {username} is taken"
        ))));
    }
    tables.put_user(username, password_hash);
    Ok(Applied::outcome(Outcome::Registered {
        username: username.to_string(),
    }))
}

fn login(
    tables: &mut impl TablesMut,
    client_id: &str,
    username: &str,
    token_hash: &str,
) -> Result<Applied> {
    // The primary checked the password before proposing; here only what could have changed
    // since, or what a faulty proposer could get wrong, is checked again.
    let user_known = tables.user(username)?.is_some();
    let Some(mut client) = tables.client(client_id)?.map(Cow::into_owned) else {
        return Ok(Applied::rejected(unknown_client(client_id)));
    };
    if !user_known {
        return Ok(Applied::rejected(Rejection::Unauthorized(format!(
            "unknown user {username}"
        ))));
    }
    let was_logged_in = client.token_hash.is_some();
    // A second login replaces the session: only the newest token is valid.
    client.username = Some(username.to_string());
    client.token_hash = Some(token_hash.to_string());
    tables.put_client(client_id, client);
    if !was_logged_in {
        let mut counters = tables.counters()?;
        counters.logged_in += 1;
        tables.set_counters(counters);
    }
    Ok(Applied::outcome(Outcome::LoggedIn))
}

fn logout(tables: &mut impl TablesMut, client_id: &str, token_hash: &str) -> Result<Applied> {
    let Some(mut client) = tables.client(client_id)?.map(Cow::into_owned) else {
        return Ok(Applied::rejected(unknown_client(client_id)));
    };
    if client.token_hash.as_deref() != Some(token_hash) {
        return Ok(Applied::rejected(not_logged_in(client_id)));
    }
    // The username stays: the client is still listed, with `logged_in: false`.
    client.token_hash = None;
    tables.put_client(client_id, client);
    let mut counters = tables.counters()?;
    counters.logged_in = counters.logged_in.saturating_sub(1);
    tables.set_counters(counters);
    Ok(Applied::outcome(Outcome::LoggedOut))
}

fn message(
    tables: &mut impl TablesMut,
    client_id: &str,
    token_hash: &str,
    seq: u64,
    text: &str,
) -> Result<Applied> {
    // One judgement for both the primary's check and apply, so they cannot disagree.
    let (check, client) = judge_message(tables, client_id, token_hash, seq, text)?;
    match check {
        MessageCheck::Rejected(rejection) => Ok(Applied::rejected(rejection)),
        MessageCheck::Retry(index) => Ok(Applied::outcome(Outcome::Posted { index })),
        MessageCheck::New => {
            // The record is read borrowed; only the username is copied, for the message.
            let Some(username) = client.and_then(|client| client.username.clone()) else {
                unreachable!("check_message accepted client {client_id} without a user");
            };
            let mut counters = tables.counters()?;
            let index = counters.messages + 1;
            counters.messages = index;
            tables.set_last_message(client_id, LastMessage { seq, index })?;
            let record = MessageRecord {
                client_id: client_id.to_string(),
                username,
                seq,
                text: text.to_string(),
            };
            tables.put_message(index, record);
            tables.set_counters(counters);
            Ok(Applied {
                outcome: Outcome::Posted { index },
                posted: Some(index),
            })
        }
    }
}

/// The check of a demo message, with the rules of `apply`.
pub fn check_message(
    tables: &impl Tables,
    client_id: &str,
    token_hash: &str,
    seq: u64,
    text: &str,
) -> Result<MessageCheck> {
    Ok(judge_message(tables, client_id, token_hash, seq, text)?.0)
}

/// The judgement of a demo message, with the client's record it was made on (read once,
/// for `apply` to take the username from).
fn judge_message<'t>(
    tables: &'t impl Tables,
    client_id: &str,
    token_hash: &str,
    seq: u64,
    text: &str,
) -> Result<(MessageCheck, Option<Cow<'t, ClientRecord>>)> {
    let Some(client) = tables.client(client_id)? else {
        return Ok((MessageCheck::Rejected(unknown_client(client_id)), None));
    };
    let check = if client.token_hash.as_deref() != Some(token_hash) || client.username.is_none() {
        MessageCheck::Rejected(not_logged_in(client_id))
    } else {
        match client.last {
            None => MessageCheck::New,
            Some(last) if seq > last.seq => MessageCheck::New,
            Some(last) if seq < last.seq => MessageCheck::Rejected(Rejection::Conflict(format!(
                "seq {seq} is below the last seq {} of client {client_id}",
                last.seq
            ))),
            // The same seq again: a retry if the text matches the stored message.
            Some(last) => {
                if tables
                    .message(last.index)?
                    .is_some_and(|message| message.text == text)
                {
                    MessageCheck::Retry(last.index)
                } else {
                    MessageCheck::Rejected(Rejection::Conflict(format!(
                        "seq {seq} of client {client_id} was already used for another message"
                    )))
                }
            }
        }
    };
    Ok((check, Some(client)))
}

/// Whether the client is logged in with exactly this token hash.
pub fn session_valid(tables: &impl Tables, client_id: &str, token_hash: &str) -> Result<bool> {
    Ok(tables
        .client(client_id)?
        .is_some_and(|client| client.token_hash.as_deref() == Some(token_hash)))
}

/// Every known client, ordered by client_id.
pub fn client_summaries(tables: &impl Tables) -> Result<Vec<ClientSummary>> {
    Ok(tables
        .clients()?
        .into_iter()
        .map(|(id, record)| ClientSummary::new(id, record))
        .collect())
}

/// The messages with index >= `from`, at most `limit` of them, in index order. A `from` of 0
/// reads from the first message (index 1).
pub fn board(tables: &impl Tables, from: u64, limit: u64) -> Result<Vec<Posted>> {
    Ok(tables
        .messages(from.max(1), limit)?
        .into_iter()
        .map(|(index, record)| Posted::new(index, record))
        .collect())
}

/// The notification addresses (IP:PORT) of all known clients, ordered by client_id.
pub fn client_addresses(tables: &impl Tables) -> Result<Vec<String>> {
    Ok(tables
        .clients()?
        .into_iter()
        .map(|(_, record)| record.address)
        .collect())
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
#[path = "apply_tests.rs"]
mod tests;
