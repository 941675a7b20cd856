//! The one error type of the library.
//!
//! Every variant has a meaning a caller can act on; the HTTP layer maps each to exactly one
//! status code and `error` code (see `server::response`), and the client library maps an
//! error answer back to the same variant, so both ends speak the same vocabulary.

use serde::{Deserialize, Serialize};

/// Errors of understudy. `Err` is for what the environment or a caller can cause; a broken
/// internal invariant is an `assert!`, not an `Error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Malformed JSON, a missing or wrong-typed field, or a field out of bounds.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Missing or wrong credentials (bearer token, password, or cluster secret).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The caller is known but not allowed to do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Unknown path, client or user.
    #[error("not found: {0}")]
    NotFound(String),
    /// The method is not served on this path.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The request contradicts the state: a taken username, a reused `seq`.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The body is larger than the bound.
    #[error("payload too large")]
    PayloadTooLarge,
    /// Too many failed attempts; try again after the given number of seconds.
    #[error("too many requests, retry after {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    /// This server is a backup; `primary` is the server to ask instead.
    #[error("not the primary; the primary is {primary}")]
    NotPrimary { primary: String },
    /// No primary is known (an election is running, or there is no quorum).
    #[error("no primary is known right now")]
    NoPrimary,
    /// The server cannot serve the request right now (shutting down, overloaded, timed out).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A storage or network error.
    #[error("i/o error: {0}")]
    Io(String),
    /// Stored data failed a checksum or could not be decoded.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// Anything else; a bug or an unexpected answer.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A `Result` with understudy's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Error::Io(err.to_string())
    }
}

impl Error {
    /// The snake_case code that goes into the `error` field of an error answer.
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "bad_request",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::Conflict(_) => "conflict",
            Error::PayloadTooLarge => "payload_too_large",
            Error::TooManyRequests { .. } => "too_many_requests",
            Error::NotPrimary { .. } => "not_primary",
            Error::NoPrimary => "no_primary",
            Error::Unavailable(_) => "unavailable",
            Error::Io(_) | Error::Corrupt(_) | Error::Internal(_) => "internal",
        }
    }

    /// The HTTP status code that goes with the error.
    pub fn status(&self) -> u16 {
        match self {
            Error::BadRequest(_) => 400,
            Error::Unauthorized(_) => 401,
            Error::Forbidden(_) => 403,
            Error::NotFound(_) => 404,
            Error::MethodNotAllowed => 405,
            Error::Conflict(_) => 409,
            Error::PayloadTooLarge => 413,
            Error::TooManyRequests { .. } => 429,
            Error::NotPrimary { .. } => 307,
            Error::NoPrimary | Error::Unavailable(_) => 503,
            Error::Io(_) | Error::Corrupt(_) | Error::Internal(_) => 500,
        }
    }

    /// The message for a person, without the code in front.
    pub fn detail(&self) -> String {
        match self {
            Error::BadRequest(m)
            | Error::Unauthorized(m)
            | Error::Forbidden(m)
            | Error::NotFound(m)
            | Error::Conflict(m)
            | Error::Unavailable(m) => m.clone(),
            other => other.to_string(),
        }
    }

    /// The body of the error answer.
    pub fn to_body(&self) -> ErrorBody {
        ErrorBody {
            error: self.code().to_string(),
            message: self.detail(),
            primary: match self {
                Error::NotPrimary { primary } => Some(primary.clone()),
                _ => None,
            },
            retry_after_ms: match self {
                Error::NoPrimary => Some(1000),
                Error::TooManyRequests { retry_after_secs } => Some(retry_after_secs * 1000),
                _ => None,
            },
        }
    }

    /// Rebuilds the error from an error answer (the client library's side of `to_body`).
    pub fn from_body(status: u16, body: &ErrorBody) -> Error {
        let message = body.message.clone();
        match body.error.as_str() {
            "bad_request" => Error::BadRequest(message),
            "unauthorized" => Error::Unauthorized(message),
            "forbidden" => Error::Forbidden(message),
            "not_found" => Error::NotFound(message),
            "method_not_allowed" => Error::MethodNotAllowed,
            "conflict" => Error::Conflict(message),
            "payload_too_large" => Error::PayloadTooLarge,
            "too_many_requests" => Error::TooManyRequests {
                retry_after_secs: body.retry_after_ms.unwrap_or(1000).div_ceil(1000),
            },
            "not_primary" => match &body.primary {
                Some(primary) => Error::NotPrimary {
                    primary: primary.clone(),
                },
                None => Error::NoPrimary,
            },
            "no_primary" => Error::NoPrimary,
            "unavailable" => Error::Unavailable(message),
            _ => Error::Internal(format!("HTTP {status}: {message}")),
        }
    }
}

/// The JSON body of every error answer: `{"error": "<code>", "message": "<for a person>"}`,
/// plus `primary` on `not_primary` and `retry_after_ms` where waiting helps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}
