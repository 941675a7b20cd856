//! The read endpoints: `GET /status`, `/clients`, `/messages`. Any server answers them from
//! its own applied state (a backup may lag the primary a little). With `?consistent=true`
//! only the primary answers, after a confirmation round with a majority (ReadIndex), from a
//! state that holds every write acknowledged before the request.

use axum::Json;
use axum::extract::{RawQuery, State};

use super::AppState;
use super::metrics::Snapshot;
use super::millis;
use crate::api::{
    ClientInfo, ClientsResponse, DEFAULT_MESSAGES_LIMIT, MAX_MESSAGES_LIMIT, MessageInfo,
    MessagesQuery, MessagesResponse, PeerStatus, ReadQuery, StatusResponse,
};
use crate::server::driver::{DriverHandle, ServerView};

/// Runs `read` on the replica: at once, or after a confirmation round if `consistent`.
async fn read_state<T, F>(driver: &DriverHandle, consistent: bool, read: F) -> Result<T>
where
    F: FnOnce(&ServerView<'_>) -> T + Send + 'static,
    T: Send + 'static,
{
    if consistent {
        driver.query_consistent(read).await
    } else {
        driver.query(read).await
    }
}
use crate::app::{Tables, board, client_summaries};
use crate::error::{Error, Result};

pub async fn status(
    State(app): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<StatusResponse>> {
    let query = read_query(query.as_deref().unwrap_or(""))?;
    let mut status = read_state(&app.driver, query.consistent, status_of).await??;
    // Best effort: the peers' progress is an operator's view, not part of the answer's
    // consistency.
    if let Ok(snapshot) = app.driver.snapshot().await {
        status.peers = peer_statuses(&snapshot);
        status.primary_since_ms = snapshot.primary_since_ms;
    }
    Ok(Json(status))
}

/// This server's `/status`, without its peers (see [`peer_statuses`]).
pub(super) fn status_of(view: &ServerView<'_>) -> Result<StatusResponse> {
    let node = view.node.status();
    let counters = view.tables.counters()?;
    Ok(StatusResponse {
        id: node.id,
        role: node.role.as_str().to_string(),
        term: node.term,
        primary: node.primary,
        members: node.members,
        commit_index: node.commit_index,
        applied_index: view.applied,
        last_index: node.last_index,
        clients: counters.clients,
        logged_in: counters.logged_in,
        messages: counters.messages,
        peers: Vec::new(),
        primary_since_ms: None,
    })
}

/// What the server knows of its peers, as `/status` reports it.
pub(super) fn peer_statuses(snapshot: &Snapshot) -> Vec<PeerStatus> {
    snapshot
        .peers
        .iter()
        .map(|peer| PeerStatus {
            id: peer.id.clone(),
            match_index: peer.matched,
            lag_entries: peer.matched.map(|m| snapshot.last_index.saturating_sub(m)),
            lag_ms: peer.lag.map(millis),
            last_heard_ms: peer.heard_ago.map(millis),
        })
        .collect()
}

pub async fn clients(
    State(app): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<ClientsResponse>> {
    let query = read_query(query.as_deref().unwrap_or(""))?;
    let clients = read_state(&app.driver, query.consistent, |view| {
        client_summaries(view.tables)
    })
    .await??
    .into_iter()
    .map(|c| ClientInfo {
        client_id: c.client_id,
        address: c.address,
        username: c.username,
        logged_in: c.logged_in,
    })
    .collect();
    Ok(Json(ClientsResponse { clients }))
}

pub async fn messages(
    State(app): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<MessagesResponse>> {
    let query: MessagesQuery = serde_urlencoded_query(query.as_deref().unwrap_or(""))?;
    let from = query.from.unwrap_or(1);
    let limit = query.limit.unwrap_or(DEFAULT_MESSAGES_LIMIT);
    if !(1..=MAX_MESSAGES_LIMIT).contains(&limit) {
        return Err(Error::BadRequest(format!(
            "limit must be 1 to {MAX_MESSAGES_LIMIT}"
        )));
    }
    let messages = read_state(&app.driver, query.consistent, move |view| {
        board(view.tables, from, limit)
    })
    .await??
    .into_iter()
    .map(|m| MessageInfo {
        index: m.index,
        client_id: m.client_id,
        username: m.username,
        seq: m.seq,
        message: m.text,
    })
    .collect();
    Ok(Json(MessagesResponse { messages }))
}

/// Parses `from=N&limit=M`; anything malformed is a 400 in our format.
fn serde_urlencoded_query(query: &str) -> Result<MessagesQuery> {
    let mut parsed = MessagesQuery::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| Error::BadRequest(format!("{key} must be a non-negative integer")))
        };
        match key {
            "from" => parsed.from = Some(number()?),
            "limit" => parsed.limit = Some(number()?),
            "consistent" => parsed.consistent = flag(key, value)?,
            _ => return Err(Error::BadRequest(format!("unknown query parameter {key}"))),
        }
    }
    Ok(parsed)
}

/// Parses `consistent=true|false`; anything else is a 400.
fn read_query(query: &str) -> Result<ReadQuery> {
    let mut parsed = ReadQuery::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "consistent" => parsed.consistent = flag(key, value)?,
            _ => return Err(Error::BadRequest(format!("unknown query parameter {key}"))),
        }
    }
    Ok(parsed)
}

fn flag(key: &str, value: &str) -> Result<bool> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(Error::BadRequest(format!("{key} must be true or false"))),
    }
}
