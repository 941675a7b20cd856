//! How errors become HTTP answers, and how request bodies are read, in one place so that
//! every endpoint answers the same way (CONTRACT.md, Errors). Which status, code and body
//! each error gets is the wire layer's table (`api::errors`), shared with the client
//! library; this file only puts it into axum's terms.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::AppState;
use crate::api::errors::{self, ErrorBody};
use crate::error::Error;

/// Attached to a `not_primary` answer so that [`finish_response`] can name the primary's URL
/// for the same path (the error alone does not know the path).
#[derive(Clone, Debug)]
struct PrimaryHint(String);

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(errors::status(&self))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() && !matches!(self, Error::NoPrimary | Error::Unavailable(_)) {
            tracing::error!(error = %self, "request failed");
        }
        let mut response = (status, Json(ErrorBody::of(&self))).into_response();
        if let Some(secs) = errors::retry_after_secs(&self) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Error::NotPrimary { primary } = self {
            response.extensions_mut().insert(PrimaryHint(primary));
        }
        response
    }
}

/// Every answer on its way out: a `not_primary` answer gets
/// `Location: http://<primary>/<same path>`, and every answer is counted in the metrics by
/// endpoint (see [`endpoint_name`]) and status.
pub fn finish_response(
    app: &AppState,
    endpoint: &'static str,
    uri: &Uri,
    mut response: Response,
) -> Response {
    if let Some(PrimaryHint(primary)) = response.extensions().get::<PrimaryHint>()
        && let Ok(location) = HeaderValue::from_str(&format!(
            "{}://{primary}{}",
            if app.http.is_tls() { "https" } else { "http" },
            uri.path_and_query().map_or("/", |p| p.as_str())
        ))
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    let status = response.status().as_u16();
    if status == 408 {
        app.metrics.limited("body_timeout");
    }
    app.metrics.request(endpoint, status);
    response
}

/// The routes, by name, so that counting a request allocates nothing.
const ENDPOINTS: &[&str] = &[
    "/",
    "/events",
    "/client/init",
    "/client/register",
    "/client/auth",
    "/client/demo-message",
    "/client/logout",
    "/status",
    "/clients",
    "/messages",
    "/metrics",
    "/health",
    "/primary",
    "/backup",
    "/replication/stream",
    "/replication/hand-over",
    "/replication/init-backup",
    "/replication/set-backups",
    "/replication/remove-server",
    "/replication/state",
];

/// The route a path names (every route is a fixed path), or `unmatched`.
pub fn endpoint_name(path: &str) -> &'static str {
    ENDPOINTS
        .iter()
        .find(|known| **known == path)
        .copied()
        .unwrap_or("unmatched")
}

/// A JSON request body whose every failure is one of our errors: too large is 413, anything
/// malformed, missing or wrong-typed, or not an object, is 400.
pub struct JsonBody<T>(pub T);

impl<T> FromRequest<AppState> for JsonBody<T>
where
    T: DeserializeOwned,
{
    type Rejection = Error;

    async fn from_request(request: Request, app: &AppState) -> Result<Self, Self::Rejection> {
        // A slow sender must not hold a connection and a handler forever.
        let timeout = app.body_read_timeout;
        let bytes = tokio::time::timeout(timeout, Bytes::from_request(request, app))
            .await
            .map_err(|_| Error::RequestTimeout)?
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Error::PayloadTooLarge
                } else {
                    Error::BadRequest(format!("unreadable body: {rejection}"))
                }
            })?;
        parse_json_object(&bytes).map(JsonBody)
    }
}

/// A request body as `T`: a JSON object of exactly `T`'s shape, or `400 bad_request`.
pub(crate) fn parse_json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    // Only an object: serde would also take a struct's fields from an array in order
    // (`[7000]` for `{"port": 7000}`), a shape no client is documented to send.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Error::BadRequest(
            "the body must be a JSON object".to_string(),
        ));
    }
    serde_json::from_slice(bytes)
        .map_err(|err| Error::BadRequest(format!("invalid JSON body: {err}")))
}

/// The answer for a path nobody serves.
pub async fn not_found() -> Error {
    Error::NotFound("no such endpoint".to_string())
}

/// The answer for a method a path does not serve.
pub async fn method_not_allowed() -> Error {
    Error::MethodNotAllowed
}
