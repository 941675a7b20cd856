//! The read endpoints: `GET /status`, `/clients`, `/messages`. Any server answers them from
//! its own applied state (a backup may lag the primary a little).

use axum::Json;
use axum::extract::{RawQuery, State};

use super::AppState;
use crate::api::{
    ClientsResponse, DEFAULT_MESSAGES_LIMIT, MAX_MESSAGES_LIMIT, MessagesQuery, MessagesResponse,
    StatusResponse,
};
use crate::error::{Error, Result};

pub async fn status(State(app): State<AppState>) -> Result<Json<StatusResponse>> {
    let status = app
        .driver
        .query(|view| {
            let node = view.node.status();
            StatusResponse {
                id: node.id,
                role: node.role.as_str().to_string(),
                term: node.term,
                primary: node.primary,
                members: node.members,
                commit_index: node.commit_index,
                applied_index: view.applied,
                clients: view.state.client_count(),
                logged_in: view.state.logged_in_count(),
                messages: view.state.message_count(),
            }
        })
        .await?;
    Ok(Json(status))
}

pub async fn clients(State(app): State<AppState>) -> Result<Json<ClientsResponse>> {
    let clients = app.driver.query(|view| view.state.clients()).await?;
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
    let messages = app
        .driver
        .query(move |view| view.state.messages(from, limit))
        .await?;
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
            _ => return Err(Error::BadRequest(format!("unknown query parameter {key}"))),
        }
    }
    Ok(parsed)
}
