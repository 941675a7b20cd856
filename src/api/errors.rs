//! How an [`Error`] travels over HTTP, both ways (CONTRACT.md, Errors): the status and the
//! `error` code each variant is answered with, the JSON body, the `Retry-After` hint, and
//! the way back from an answer to the variant.
//!
//! | variant | status | `error` |
//! |---|---|---|
//! | `BadRequest` | 400 | `bad_request` |
//! | `Unauthorized` | 401 | `unauthorized` |
//! | `Forbidden` | 403 | `forbidden` |
//! | `NotFound` | 404 | `not_found` |
//! | `MethodNotAllowed` | 405 | `method_not_allowed` |
//! | `Conflict` | 409 | `conflict` |
//! | `PayloadTooLarge` | 413 | `payload_too_large` |
//! | `RequestTimeout` | 408 | `request_timeout` |
//! | `TooManyRequests` | 429 (+ `Retry-After`) | `too_many_requests` |
//! | `NotPrimary` | 307 (+ `Location`, `primary`) | `not_primary` |
//! | `NoPrimary` | 503 (+ `Retry-After: 1`) | `no_primary` |
//! | `Unavailable` | 503 | `unavailable` |
//! | `Io`, `Corrupt`, `Internal` | 500 | `internal` |
//!
//! The server answers with [`status`], [`ErrorBody::of`] and [`retry_after_secs`]; the
//! client library turns an answer back into the variant with [`ErrorBody::to_error`], or
//! with [`from_status`] when the answer lacks the contract's body (a proxy's error page).
//! Both ends use this one table, so they cannot drift apart.

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The HTTP status an error is answered with.
pub fn status(err: &Error) -> u16 {
    match err {
        Error::BadRequest(_) => 400,
        Error::Unauthorized(_) => 401,
        Error::Forbidden(_) => 403,
        Error::NotFound(_) => 404,
        Error::MethodNotAllowed => 405,
        Error::Conflict(_) => 409,
        Error::PayloadTooLarge => 413,
        Error::RequestTimeout => 408,
        Error::TooManyRequests { .. } => 429,
        Error::NotPrimary { .. } => 307,
        Error::NoPrimary | Error::Unavailable(_) => 503,
        Error::Io(_) | Error::Corrupt(_) | Error::Internal(_) => 500,
    }
}

/// The snake_case code in the `error` field of the answer.
pub fn code(err: &Error) -> &'static str {
    match err {
        Error::BadRequest(_) => "bad_request",
        Error::Unauthorized(_) => "unauthorized",
        Error::Forbidden(_) => "forbidden",
        Error::NotFound(_) => "not_found",
        Error::MethodNotAllowed => "method_not_allowed",
        Error::Conflict(_) => "conflict",
        Error::PayloadTooLarge => "payload_too_large",
        Error::RequestTimeout => "request_timeout",
        Error::TooManyRequests { .. } => "too_many_requests",
        Error::NotPrimary { .. } => "not_primary",
        Error::NoPrimary => "no_primary",
        Error::Unavailable(_) => "unavailable",
        // The details of a server's own failure are for its log, not for the caller.
        Error::Io(_) | Error::Corrupt(_) | Error::Internal(_) => "internal",
    }
}

/// How long the caller should wait before trying again, where waiting helps: the
/// `Retry-After` header (in seconds) and the body's `retry_after_ms`.
pub fn retry_after_secs(err: &Error) -> Option<u64> {
    match err {
        // An election takes about a second.
        Error::NoPrimary => Some(1),
        Error::TooManyRequests { retry_after_secs } => Some(*retry_after_secs),
        _ => None,
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

impl ErrorBody {
    /// The body that answers `err`.
    pub fn of(err: &Error) -> ErrorBody {
        ErrorBody {
            error: code(err).to_string(),
            message: err.detail(),
            primary: match err {
                Error::NotPrimary { primary } => Some(primary.clone()),
                _ => None,
            },
            retry_after_ms: retry_after_secs(err).map(|secs| secs.saturating_mul(1000)),
        }
    }

    /// The error this body (answered with `status`) stands for: the client library's side
    /// of [`ErrorBody::of`].
    pub fn to_error(&self, status: u16) -> Error {
        let message = self.message.clone();
        match self.error.as_str() {
            "bad_request" => Error::BadRequest(message),
            "unauthorized" => Error::Unauthorized(message),
            "forbidden" => Error::Forbidden(message),
            "not_found" => Error::NotFound(message),
            "method_not_allowed" => Error::MethodNotAllowed,
            "conflict" => Error::Conflict(message),
            "payload_too_large" => Error::PayloadTooLarge,
            "request_timeout" => Error::RequestTimeout,
            "too_many_requests" => Error::TooManyRequests {
                retry_after_secs: self.retry_after_ms.unwrap_or(1000).div_ceil(1000),
            },
            "not_primary" => match &self.primary {
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

/// The error an answer stands for when it has no contract body (say, a proxy's HTML page),
/// from its status alone: `primary` is the authority of a redirect's `Location`,
/// `retry_after_secs` the `Retry-After` header, `text` the start of the body.
pub fn from_status(
    status: u16,
    primary: Option<String>,
    retry_after_secs: Option<u64>,
    text: String,
) -> Error {
    match status {
        307 | 308 => match primary {
            Some(primary) => Error::NotPrimary { primary },
            None => Error::NoPrimary,
        },
        400 => Error::BadRequest(text),
        401 => Error::Unauthorized(text),
        403 => Error::Forbidden(text),
        404 => Error::NotFound(text),
        405 => Error::MethodNotAllowed,
        409 => Error::Conflict(text),
        408 => Error::RequestTimeout,
        413 => Error::PayloadTooLarge,
        429 => Error::TooManyRequests {
            retry_after_secs: retry_after_secs.unwrap_or(1),
        },
        // A gateway that could not reach the server, or a server that cannot serve now:
        // worth trying again, perhaps elsewhere.
        502..=504 => Error::Unavailable(format!("HTTP {status}: {text}")),
        status => Error::Internal(format!("HTTP {status}: {text}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_variant() -> Vec<Error> {
        vec![
            Error::BadRequest("b".into()),
            Error::Unauthorized("u".into()),
            Error::Forbidden("f".into()),
            Error::NotFound("n".into()),
            Error::MethodNotAllowed,
            Error::Conflict("c".into()),
            Error::PayloadTooLarge,
            Error::RequestTimeout,
            Error::TooManyRequests {
                retry_after_secs: 7,
            },
            Error::NotPrimary {
                primary: "127.0.0.1:7001".into(),
            },
            Error::NoPrimary,
            Error::Unavailable("shutting down".into()),
            Error::Io("disk".into()),
            Error::Corrupt("crc".into()),
            Error::Internal("bug".into()),
        ]
    }

    /// Contract, Errors: what the server answers, the client reads back as the same error;
    /// only a server's own failures (`Io`, `Corrupt`) arrive as `Internal`.
    #[test]
    fn every_error_survives_the_wire() {
        for err in every_variant() {
            let status = status(&err);
            let body: ErrorBody =
                serde_json::from_slice(&serde_json::to_vec(&ErrorBody::of(&err)).unwrap()).unwrap();
            let back = body.to_error(status);
            match err {
                Error::Io(_) | Error::Corrupt(_) | Error::Internal(_) => {
                    assert_eq!(status, 500);
                    assert!(matches!(back, Error::Internal(_)), "{err:?} -> {back:?}");
                }
                _ => assert_eq!(back, err),
            }
        }
    }

    /// Contract, Errors: an answer without the contract's body still maps, by its status,
    /// to the same kind of error the server would have sent with one.
    #[test]
    fn a_bare_status_maps_to_the_same_kind_of_error() {
        for err in every_variant() {
            let primary = match &err {
                Error::NotPrimary { primary } => Some(primary.clone()),
                _ => None,
            };
            let bare = from_status(status(&err), primary, retry_after_secs(&err), "x".into());
            assert_eq!(
                std::mem::discriminant(&bare),
                std::mem::discriminant(&match err {
                    // A bare 503 cannot tell "no primary" from "unavailable", and a bare 500
                    // carries no detail: both are what a caller can still act on.
                    Error::NoPrimary => Error::Unavailable(String::new()),
                    Error::Io(_) | Error::Corrupt(_) => Error::Internal(String::new()),
                    other => other,
                }),
                "{bare:?}"
            );
        }
    }
}
