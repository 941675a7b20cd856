//! The peer endpoints under `/replication/`. The cluster-secret check runs before any of
//! them (see `auth::require_peer_auth`); here the requests are already authenticated.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;

use super::AppState;
use super::response::JsonBody;
use super::state_transfer::StateChunk;
use crate::api::{
    InitBackupRequest, InitBackupResponse, RemoveServerRequest, RemoveServerResponse,
    SetBackupsRequest,
};
use crate::error::{Error, Result};
use crate::replication::{Envelope, Message};

/// How long a join may take: the new server must receive the whole log first.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// `POST /replication/messages`: a batch of protocol messages (postcard), queued for the
/// driver. Answered at once; replies travel as messages of their own.
pub async fn messages(State(app): State<AppState>, body: Bytes) -> Result<Json<serde_json::Value>> {
    let envelopes: Vec<Envelope> = postcard::from_bytes(&body)
        .map_err(|err| Error::BadRequest(format!("undecodable messages: {err}")))?;
    // A server that campaigns although it was removed is told so, rather than ignored.
    if let Some(candidate) = envelopes
        .iter()
        .find(|e| matches!(e.message, Message::Vote { .. }))
        .map(|e| e.from.clone())
    {
        let asker = candidate.clone();
        if app
            .driver
            .query(move |view| view.node.is_removed(&asker))
            .await?
        {
            return Err(Error::Forbidden(format!(
                "{candidate} was removed from the cluster; start it with an empty data dir and --join to add it again"
            )));
        }
    }
    app.driver.deliver(envelopes).await?;
    Ok(Json(serde_json::json!({})))
}

/// `POST /replication/init-backup`: a new server wants to be a backup. The primary brings it
/// up to date and answers once a configuration holding it is applied.
pub async fn init_backup(
    State(app): State<AppState>,
    JsonBody(body): JsonBody<InitBackupRequest>,
) -> Result<Json<InitBackupResponse>> {
    if body.id.trim().is_empty() || body.id.len() > 255 {
        return Err(Error::BadRequest("id must be HOST:PORT".to_string()));
    }
    tokio::time::timeout(JOIN_TIMEOUT, app.driver.join(body.id))
        .await
        .map_err(|_| Error::Unavailable("the join did not complete in time".to_string()))?
        .map(Json)
}

/// `POST /replication/set-backups`: the primary's full list of backups.
pub async fn set_backups(
    State(app): State<AppState>,
    JsonBody(body): JsonBody<SetBackupsRequest>,
) -> Result<Json<serde_json::Value>> {
    app.driver.set_backups(body).await?;
    Ok(Json(serde_json::json!({})))
}

/// `POST /replication/remove-server`: an operator (holding the cluster secret) removes a
/// server; answered once the configuration without it is applied on the primary.
pub async fn remove_server(
    State(app): State<AppState>,
    JsonBody(body): JsonBody<RemoveServerRequest>,
) -> Result<Json<RemoveServerResponse>> {
    let members = tokio::time::timeout(Duration::from_secs(10), app.driver.remove(body.id))
        .await
        .map_err(|_| Error::Unavailable("the removal did not commit in time".to_string()))??;
    Ok(Json(RemoveServerResponse { members }))
}

/// `POST /replication/state`: one chunk of the primary's store (postcard). It is checked and
/// written beside our store; after the last one the whole store goes to the driver.
pub async fn state_chunk(
    State(app): State<AppState>,
    body: Bytes,
) -> Result<Json<serde_json::Value>> {
    let chunk: StateChunk = postcard::from_bytes(&body)
        .map_err(|err| Error::BadRequest(format!("undecodable state chunk: {err}")))?;
    let receiver = app.transfers.clone();
    let received = tokio::task::spawn_blocking(move || receiver.add(chunk))
        .await
        .map_err(|err| Error::Internal(format!("state chunk task: {err}")))??;
    if let Some(received) = received {
        app.driver
            .install(received.from, received.term, received.meta, received.path)
            .await?;
    }
    Ok(Json(serde_json::json!({})))
}
