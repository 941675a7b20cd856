//! The commands of the replicated application and their outcomes.
//!
//! A command is everything a backup needs to reach the same state as the primary: it carries
//! no secrets (passwords arrive hashed, tokens as hashes) and nothing a backup would have to
//! compute or invent (ids, hashes and tokens are made by the primary before it proposes).

use serde::{Deserialize, Serialize};

/// One replicated change, as stored in a log entry.
///
/// Its strings are of type `S`: owned (`String`, the default) where a request is made or
/// kept, borrowed from the entry's bytes ([`RequestView`]) where it is only applied, so
/// that applying a committed entry copies just what the tables keep.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request<S = String> {
    /// The address (`IP:PORT`, the TCP peer's) of the client whose request this is: the
    /// seed's `client=<Address>` on every forwarded change.
    pub origin: S,
    /// The change.
    pub command: Command<S>,
}

/// A request decoded in place from a log entry's bytes (see [`Request::view`]).
pub type RequestView<'a> = Request<&'a str>;

/// The changes of the application.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command<S = String> {
    /// A client introduced itself (`client/init`). `address` is the TCP peer's IP and the
    /// port of the client's notification listener; every backup learns it.
    InitClient { client_id: S, address: S },
    /// A new user. The password arrives as an Argon2id PHC string made by the primary.
    Register { username: S, password_hash: S },
    /// A client logged in as `username` (the primary checked the password). `token_hash` is
    /// the SHA-256 (hex) of the bearer token handed to the client.
    Login {
        client_id: S,
        username: S,
        token_hash: S,
    },
    /// A client logged out; it stays listed with `logged_in: false`.
    Logout { client_id: S, token_hash: S },
    /// A demo message for the board. `seq` numbers the client's messages for at-most-once.
    Message {
        client_id: S,
        token_hash: S,
        seq: u64,
        text: S,
    },
    /// A client that never logged in is forgotten (the primary decided it waited too long).
    /// Applied only if the client still never logged in. (Last, so that older logs decode.)
    ExpireClient { client_id: S },
}

/// The deterministic result of applying a command. Every server computes the same one; the
/// primary hands it to the waiting client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// `InitClient` applied.
    ClientAdded { client_id: String },
    /// `Register` applied.
    Registered { username: String },
    /// `Login` applied.
    LoggedIn,
    /// `Logout` applied.
    LoggedOut,
    /// `Message` applied, or its retry found: the message's index on the board.
    Posted { index: u64 },
    /// `ExpireClient` applied: the client is gone.
    ClientExpired { client_id: String },
    /// The command was refused; the state is unchanged.
    Rejected(Rejection),
}

/// Why a command was refused, decided deterministically by `apply`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    /// A username taken, a `seq` reused with other text or gone backwards.
    Conflict(String),
    /// No such client or user.
    NotFound(String),
    /// The token does not belong to the client's current session.
    Unauthorized(String),
}

impl Rejection {
    /// The library error that a client receives for this rejection.
    pub fn into_error(self) -> crate::Error {
        match self {
            Rejection::Conflict(m) => crate::Error::Conflict(m),
            Rejection::NotFound(m) => crate::Error::NotFound(m),
            Rejection::Unauthorized(m) => crate::Error::Unauthorized(m),
        }
    }
}

impl Request {
    /// Encodes the request for a log entry.
    pub fn encode(&self) -> Vec<u8> {
        // Sized first (a walk without allocating): growing the vector as it filled was a
        // reallocation and a copy or two for every request.
        let size = postcard::experimental::serialized_size(self).unwrap_or_default();
        postcard::to_extend(self, Vec::with_capacity(size))
            .expect("encoding a request into memory cannot fail")
    }

    /// Decodes a request from a log entry.
    pub fn decode(bytes: &[u8]) -> crate::Result<Request> {
        postcard::from_bytes(bytes).map_err(undecodable)
    }

    /// Decodes a request from a log entry without copying its strings: postcard writes a
    /// `String` and a `&str` alike, so the view borrows them from `bytes`.
    pub fn view(bytes: &[u8]) -> crate::Result<RequestView<'_>> {
        postcard::from_bytes(bytes).map_err(undecodable)
    }
}

fn undecodable(err: postcard::Error) -> crate::Error {
    crate::Error::Corrupt(format!("undecodable command: {err}"))
}
