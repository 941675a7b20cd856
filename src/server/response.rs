//! How errors become HTTP answers, and how request bodies are read, in one place so that
//! every endpoint answers the same way (CONTRACT.md, Errors). Which status, code and body
//! each error gets is the wire layer's table (`api::errors`), shared with the client
//! library; this file only puts it into axum's terms.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::api::errors::{self, ErrorBody};
use crate::error::Error;

/// Attached to a `not_primary` answer so that [`add_location`] can name the primary's URL
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

/// Middleware: a `not_primary` answer gets `Location: http://<primary>/<same path>`.
pub async fn add_location(request: Request, next: Next) -> Response {
    let path = request
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    let mut response = next.run(request).await;
    if let Some(PrimaryHint(primary)) = response.extensions().get::<PrimaryHint>().cloned()
        && let Ok(location) = HeaderValue::from_str(&format!("http://{primary}{path}"))
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// A JSON request body whose every failure is one of our errors: too large is 413, anything
/// malformed, missing or wrong-typed is 400.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Error::PayloadTooLarge
                } else {
                    Error::BadRequest(format!("unreadable body: {rejection}"))
                }
            })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|err| Error::BadRequest(format!("invalid JSON body: {err}")))
    }
}

/// The answer for a path nobody serves.
pub async fn not_found() -> Error {
    Error::NotFound("no such endpoint".to_string())
}

/// The answer for a method a path does not serve.
pub async fn method_not_allowed() -> Error {
    Error::MethodNotAllowed
}
