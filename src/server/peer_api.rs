//! The peer endpoints under `/replication/`. The cluster-secret check runs before any of
//! them (see `auth::check_peer_request`); here the requests are already authenticated.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;

use super::AppState;
use super::response::JsonBody;
use super::state_transfer::StateChunk;
use axum::extract::Request;
use axum::http::header::{CONNECTION, UPGRADE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tracing::warn;

use super::peer_stream::{HANDSHAKE_TIMEOUT, UPGRADE_PROTOCOL, accept_handshake};
use crate::api::{
    HandOverRequest, HandOverResponse, InitBackupRequest, InitBackupResponse, RemoveServerRequest,
    RemoveServerResponse, SetBackupsRequest,
};
use crate::error::{Error, Result};

/// How long a join may take: the new server must receive the whole log first.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// `GET /replication/stream` with an upgrade: a peer opens its long-lived stream. The
/// request passed the cluster-secret check already; the stream's own handshake follows on
/// the upgraded connection (`peer_stream`), then the stream is handed to the peers.
pub async fn stream(State(app): State<AppState>, mut request: Request) -> Response {
    let upgrade = request
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(UPGRADE_PROTOCOL));
    if !upgrade {
        return Error::BadRequest(format!("a stream needs `upgrade: {UPGRADE_PROTOCOL}`"))
            .into_response();
    }
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let handshake = accept_handshake(TokioIo::new(upgraded), &app.secret, &app.id);
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(stream)) => app.peers.accepted(stream),
            Ok(Err(err)) => warn!(%err, "a peer stream's handshake failed"),
            Err(_) => warn!("a peer stream's handshake timed out"),
        }
    });
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static(UPGRADE_PROTOCOL));
    response
}

/// `POST /replication/hand-over`: the primary hands its office to `to` (or to the most
/// up-to-date backup) and answers with the new primary once it follows it.
pub async fn hand_over(
    State(app): State<AppState>,
    JsonBody(body): JsonBody<HandOverRequest>,
) -> Result<Json<HandOverResponse>> {
    let primary = tokio::time::timeout(HAND_OVER_TIMEOUT, app.driver.hand_over(body.to))
        .await
        .map_err(|_| Error::Unavailable("the hand-over did not complete in time".to_string()))??;
    Ok(Json(HandOverResponse { primary }))
}

/// How long a hand-over may take before its caller is told it did not complete.
const HAND_OVER_TIMEOUT: Duration = Duration::from_secs(10);

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
        let bytes = std::fs::metadata(&received.path).map_or(0, |m| m.len());
        app.metrics.state_transfer("received", bytes, None);
        app.driver
            .install(received.from, received.term, received.meta, received.path)
            .await?;
    }
    Ok(Json(serde_json::json!({})))
}
