//! The one error type of the library.
//!
//! Every variant has a meaning a caller can act on. How a variant travels between server
//! and client is the wire layer's business ([`crate::api::errors`]), not this type's: the
//! core, the storage and the application use it without knowing there is a network.

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
    /// The request's body did not arrive within the server's read timeout.
    #[error("request timeout: the body did not arrive in time")]
    RequestTimeout,
    /// Too many failed attempts; try again after the given number of seconds.
    #[error("too many requests, retry after {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    /// This server is a backup; `primary` is the server to ask instead.
    #[error("not the primary; the primary is {primary}")]
    NotPrimary { primary: String },
    /// No primary is known (an election is running, or there is no quorum).
    #[error("no primary: an election is running, or a majority of the servers cannot be reached")]
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
    /// The message for a person, without the kind of error in front.
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
}
