//! The JSON bodies of the public HTTP interface (CONTRACT.md), shared by the server and the
//! client library so that both ends agree on every field, plus the bounds on each field.
//! How errors are answered, and read back, is in [`errors`].

pub mod errors;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest username, in characters.
pub const MAX_USERNAME_CHARS: usize = 64;
/// Shortest and longest password, in bytes.
pub const MIN_PASSWORD_BYTES: usize = 8;
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest demo message, in bytes of UTF-8.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Default and largest page of `GET /messages`.
pub const DEFAULT_MESSAGES_LIMIT: u64 = 100;
pub const MAX_MESSAGES_LIMIT: u64 = 1000;

/// `POST /client/init`. The port is taken as a wide integer so that out-of-range values are
/// a `bad_request` with a clear message rather than a parse error.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitRequest {
    pub port: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitResponse {
    pub client_id: String,
    pub primary: String,
}

/// `POST /client/register`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub username: String,
    pub password: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub username: String,
}

/// `POST /client/auth`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthRequest {
    pub client_id: String,
    pub username: String,
    pub password: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthResponse {
    pub token: String,
}

/// `POST /client/demo-message` (with `Authorization: Bearer <token>`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoMessageRequest {
    pub client_id: String,
    pub seq: u64,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoMessageResponse {
    pub index: u64,
}

/// `POST /client/logout` (with the bearer token).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogoutRequest {
    pub client_id: String,
}

/// `GET /status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    pub id: String,
    /// `primary`, `backup`, `candidate` or `joining`.
    pub role: String,
    pub term: u64,
    pub primary: Option<String>,
    pub members: Vec<String>,
    pub commit_index: u64,
    pub applied_index: u64,
    /// The last entry in this server's log (committed or not).
    #[serde(default)]
    pub last_index: u64,
    pub clients: u64,
    pub logged_in: u64,
    pub messages: u64,
    /// What this server knows of the other members: on the primary, each backup's
    /// progress; on a backup, when its primary was last heard from.
    #[serde(default)]
    pub peers: Vec<PeerStatus>,
    /// On the primary: when it became the primary of this term, in milliseconds since the
    /// Unix epoch (what an operator reads as "primary since", and how long an election took).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_since_ms: Option<u64>,
}

/// One other member, as a server sees it (`GET /status`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub id: String,
    /// The highest index durable on it (the primary's view only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_index: Option<u64>,
    /// Entries of the primary's log it does not hold yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_entries: Option<u64>,
    /// How long the oldest entry sent to it and not yet acknowledged has waited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<u64>,
    /// Since it was last heard from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heard_ms: Option<u64>,
}

/// One entry of `GET /clients`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    pub client_id: String,
    pub address: String,
    pub username: Option<String>,
    pub logged_in: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientsResponse {
    pub clients: Vec<ClientInfo>,
}

/// One message of `GET /messages`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageInfo {
    pub index: u64,
    pub client_id: String,
    pub username: String,
    pub seq: u64,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagesResponse {
    pub messages: Vec<MessageInfo>,
}

/// The query of `GET /messages?from=N&limit=M`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MessagesQuery {
    pub from: Option<u64>,
    pub limit: Option<u64>,
    /// Answer only from a state that holds every write acknowledged before the request
    /// (primary only; see `ReadQuery`).
    pub consistent: bool,
}

/// The query of `GET /status` and `GET /clients`: `consistent=true` asks the primary for a
/// linearizable read (a confirmation round with a majority first); without it any server
/// answers from its own applied state, which may lag.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadQuery {
    pub consistent: bool,
}

/// `POST /replication/hand-over`: the primary hands its office over.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandOverRequest {
    /// The backup to hand over to; the most up-to-date one if absent.
    #[serde(default)]
    pub to: Option<String>,
}

/// The answer to a hand-over: the new primary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandOverResponse {
    pub primary: String,
}

/// `POST /new-primary` on a client's notification listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPrimary {
    pub primary: String,
    pub term: u64,
}

/// `POST /replication/init-backup`: a new server asks to join as a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitBackupRequest {
    /// The joining server's advertised address.
    pub id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitBackupResponse {
    pub primary: String,
    pub term: u64,
    pub members: Vec<String>,
    /// The index of a configuration holding the new server: it is a member from there on
    /// (a removal of its address before it was of an earlier server).
    #[serde(default)]
    pub since: u64,
}

/// `POST /replication/set-backups`: the primary tells a backup every backup there is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetBackupsRequest {
    pub primary: String,
    pub term: u64,
    pub backups: Vec<String>,
}

/// `POST /replication/remove-server`: an operator removes a (dead) server from the
/// configuration, through the primary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveServerRequest {
    pub id: String,
}

/// The configuration once the removal is committed and applied on the primary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveServerResponse {
    pub members: Vec<String>,
}

/// Checks a username: 1 to 64 characters of `A-Z a-z 0-9 _ . -`.
pub fn validate_username(username: &str) -> Result<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if username.is_empty() || username.chars().count() > MAX_USERNAME_CHARS {
        return Err(Error::BadRequest(format!(
            "username must be 1 to {MAX_USERNAME_CHARS} characters"
        )));
    }
    if !username.chars().all(allowed) {
        return Err(Error::BadRequest(
            "username may contain only A-Z a-z 0-9 _ . -".to_string(),
        ));
    }
    Ok(())
}

/// Checks a password: 8 to 1024 bytes.
pub fn validate_password(password: &str) -> Result<()> {
    if !(MIN_PASSWORD_BYTES..=MAX_PASSWORD_BYTES).contains(&password.len()) {
        return Err(Error::BadRequest(format!(
            "password must be {MIN_PASSWORD_BYTES} to {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Checks a demo message: 1 to 4096 bytes of UTF-8 (a `String` is UTF-8 already).
pub fn validate_message(message: &str) -> Result<()> {
    if message.is_empty() || message.len() > MAX_MESSAGE_BYTES {
        return Err(Error::BadRequest(format!(
            "message must be 1 to {MAX_MESSAGE_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Checks a notification port: 1 to 65535.
pub fn validate_port(port: i64) -> Result<u16> {
    u16::try_from(port)
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| Error::BadRequest("port must be 1 to 65535".to_string()))
}

/// Checks a `seq`: demo messages are numbered from 1.
pub fn validate_seq(seq: u64) -> Result<()> {
    if seq == 0 {
        return Err(Error::BadRequest("seq starts at 1".to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Contract, Bounds: username 1 to 64 characters of `A-Z a-z 0-9 _ . -`.
    #[test]
    fn usernames_are_bounded_in_length_and_alphabet() {
        assert!(validate_username("alice_1.x-y").is_ok());
        assert!(validate_username(&"a".repeat(64)).is_ok());
        assert!(validate_username("").is_err());
        assert!(validate_username(&"a".repeat(65)).is_err());
        assert!(validate_username("al ice").is_err());
        assert!(validate_username("älice").is_err());
    }

    /// Contract, Bounds: password 8 to 1024 bytes; message 1 to 4096; port 1 to 65535.
    #[test]
    fn passwords_messages_and_ports_are_bounded() {
        assert!(validate_password("12345678").is_ok());
        assert!(validate_password("1234567").is_err());
        assert!(validate_password(&"p".repeat(1025)).is_err());
        assert!(validate_message("x").is_ok());
        assert!(validate_message("").is_err());
        assert!(validate_message(&"m".repeat(4097)).is_err());
        assert_eq!(validate_port(7000).unwrap(), 7000);
        assert!(validate_port(0).is_err());
        assert!(validate_port(65536).is_err());
        assert!(validate_port(-1).is_err());
    }
}
