//! The client endpoints: `client/init`, `register`, `auth`, `demo-message`, `logout`.
//!
//! Each handler checks its input, does the primary's own work (hashing, token making,
//! password checking) *before* proposing, and submits a command that carries only results:
//! backups never see a password or a token. The replica checks a submitted command against
//! its applied state and proposes it in the same turn (`Replica::submit`), so a bad request
//! changes nothing and costs no log entry; `apply` checks again deterministically, since the
//! state may move between the check and the commit. Only where the primary must do slow
//! work first (hashing a new password, verifying one) does a read come before.

use std::net::SocketAddr;
use std::time::Instant;

use axum::Json;
use axum::extract::FromRequestParts;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};

use super::AppState;
use super::credentials::{hash_password, new_client_id, new_token, token_hash, verify_password};
use super::listen::Remote;
use super::response::JsonBody;
use crate::api::{
    AuthRequest, AuthResponse, DemoMessageRequest, DemoMessageResponse, InitRequest, InitResponse,
    LogoutRequest, RegisterRequest, RegisterResponse, validate_message, validate_password,
    validate_port, validate_seq, validate_username,
};
use crate::app::{Command, Outcome, Request, Tables};
use crate::error::{Error, Result};
use tracing::warn;

/// Each init and registration stores a replicated record, and anyone may call them: a
/// source address gets so many a minute.
fn limit_inits(app: &AppState, peer: SocketAddr) -> Result<()> {
    app.init_limiter
        .check(peer.ip(), Instant::now())
        .inspect_err(|_| app.metrics.limited("init"))
}

/// `POST /client/init`: registers the client's notification address.
pub async fn init(
    State(app): State<AppState>,
    Remote(peer): Remote,
    JsonBody(body): JsonBody<InitRequest>,
) -> Result<Json<InitResponse>> {
    limit_inits(&app, peer)?;
    let port = validate_port(body.port)?;
    let client_id = new_client_id();
    let command = Command::InitClient {
        client_id: client_id.clone(),
        address: SocketAddr::new(peer.ip(), port).to_string(),
    };
    match propose(&app, peer, command).await? {
        Outcome::ClientAdded { client_id } => {
            app.expiry.note(client_id.clone(), Instant::now());
            Ok(Json(InitResponse {
                client_id,
                primary: app.id.clone(),
            }))
        }
        other => Err(unexpected(other)),
    }
}

/// `POST /client/register`: a new user; the password is hashed here, on the primary.
pub async fn register(
    State(app): State<AppState>,
    Remote(peer): Remote,
    JsonBody(body): JsonBody<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisterResponse>)> {
    limit_inits(&app, peer)?;
    validate_username(&body.username)?;
    validate_password(&body.password)?;
    // Before the costly hash: is the name free? A "taken" is given only after a
    // confirmation round (a deposed primary's state may be stale).
    let username = body.username.clone();
    let taken = move |view: &super::driver::ServerView<'_>| -> Result<bool> {
        view.ensure_primary()?;
        Ok(view.tables.user(&username)?.is_some())
    };
    if app.driver.query(taken.clone()).await?? && app.driver.query_consistent(taken).await?? {
        return Err(Error::Conflict(format!(
            "username {} is taken",
            body.username
        )));
    }
    let password_hash = hash_password(body.password).await?;
    let command = Command::Register {
        username: body.username,
        password_hash,
    };
    match propose(&app, peer, command).await? {
        Outcome::Registered { username } => {
            Ok((StatusCode::CREATED, Json(RegisterResponse { username })))
        }
        other => Err(unexpected(other)),
    }
}

/// `POST /client/auth`: checks the password and opens a session with a fresh token.
pub async fn auth(
    State(app): State<AppState>,
    Remote(peer): Remote,
    JsonBody(body): JsonBody<AuthRequest>,
) -> Result<Json<AuthResponse>> {
    validate_username(&body.username)?;
    validate_password(&body.password)?;
    let attempted = Instant::now();
    app.login_limiter
        .attempt(&body.username, peer.ip(), attempted)
        .inspect_err(|_| {
            app.metrics.login("locked_out");
            app.metrics.limited("login");
            warn!(username = %body.username, from = %peer, "login refused: too many failed attempts for this username");
        })?;
    let (client_id, username) = (body.client_id.clone(), body.username.clone());
    // Read after a confirmation round: an unknown client or user is a refusal, which a
    // deposed primary's stale state must not give (and a login is rare next to the hash).
    let stored = app
        .driver
        .query_consistent(move |view| {
            view.ensure_primary()?;
            if view.tables.client(&client_id)?.is_none() {
                return Err(Error::NotFound(format!("no client {client_id}")));
            }
            view.tables.user(&username)
        })
        .await
        .and_then(|stored| stored)
        // Not a password guess (wrong server, unknown client): this attempt does not count.
        .inspect_err(|_| app.login_limiter.undo(&body.username, peer.ip(), attempted))?;
    if !verify_password(body.password, stored).await? {
        app.metrics.login("failed");
        warn!(username = %body.username, from = %peer, "login failed: wrong username or password");
        // Counted as a failure by `attempt` already.
        return Err(Error::Unauthorized(
            "wrong username or password".to_string(),
        ));
    }
    app.login_limiter.succeeded(&body.username);
    app.metrics.login("ok");
    let token = new_token();
    let command = Command::Login {
        client_id: body.client_id,
        username: body.username,
        token_hash: token_hash(&token),
    };
    match propose(&app, peer, command).await? {
        Outcome::LoggedIn => Ok(Json(AuthResponse { token })),
        other => Err(unexpected(other)),
    }
}

/// `POST /client/demo-message`: puts a message on the board, at most once per `seq`.
pub async fn demo_message(
    State(app): State<AppState>,
    Remote(peer): Remote,
    Bearer(token): Bearer,
    JsonBody(body): JsonBody<DemoMessageRequest>,
) -> Result<Json<DemoMessageResponse>> {
    let token_hash = token_hash(&token);
    validate_seq(body.seq)?;
    validate_message(&body.message)?;
    // Checked (a retry is answered with its index) and proposed in one turn of the driver.
    let command = Command::Message {
        client_id: body.client_id,
        token_hash,
        seq: body.seq,
        text: body.message,
    };
    match propose(&app, peer, command).await? {
        Outcome::Posted { index } => Ok(Json(DemoMessageResponse { index })),
        other => Err(unexpected(other)),
    }
}

/// `POST /client/logout`: ends the session; the client stays listed.
pub async fn logout(
    State(app): State<AppState>,
    Remote(peer): Remote,
    Bearer(token): Bearer,
    JsonBody(body): JsonBody<LogoutRequest>,
) -> Result<Json<serde_json::Value>> {
    let token_hash = token_hash(&token);
    let command = Command::Logout {
        client_id: body.client_id,
        token_hash,
    };
    match propose(&app, peer, command).await? {
        Outcome::LoggedOut => Ok(Json(serde_json::json!({}))),
        other => Err(unexpected(other)),
    }
}

/// Submits a command from the client at `peer` (checked, then proposed) and waits for its
/// outcome; a rejection by `apply` becomes the matching error.
async fn propose(app: &AppState, peer: SocketAddr, command: Command) -> Result<Outcome> {
    let request = Request {
        origin: origin_text(peer),
        command,
    };
    match app.driver.submit(request).await? {
        Outcome::Rejected(rejection) => Err(rejection.into_error()),
        outcome => Ok(outcome),
    }
}

/// The TCP peer's address as `IP:PORT`, as `SocketAddr`'s `Display` writes it. An IPv4
/// address's numbers are written here directly: through the formatter, a call for each of
/// them, it was about 1.5 % of the primary's user time at 64 clients, on every request.
fn origin_text(peer: SocketAddr) -> String {
    let SocketAddr::V4(peer) = peer else {
        return peer.to_string();
    };
    let mut text = String::with_capacity("255.255.255.255:65535".len());
    for (i, octet) in peer.ip().octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        push_decimal(&mut text, u32::from(octet));
    }
    text.push(':');
    push_decimal(&mut text, u32::from(peer.port()));
    text
}

/// Appends `n` in decimal.
fn push_decimal(text: &mut String, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    text.extend(digits[start..].iter().copied().map(char::from));
}

/// The bearer token of a request, read from its `Authorization` header alone (taking the
/// whole header map would copy it for every message).
pub struct Bearer(String);

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Bearer> {
        bearer_token(
            parts
                .headers
                .get(header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
        )
        .map(|token| Bearer(token.to_string()))
        .ok_or_else(|| Error::Unauthorized("missing bearer token".to_string()))
    }
}

/// The token of an `Authorization: Bearer <token>` header's value, if it is one.
pub(crate) fn bearer_token(value: Option<&[u8]>) -> Option<&str> {
    let value = std::str::from_utf8(value?).ok()?;
    let token = value.strip_prefix("Bearer ")?.trim();
    (!token.is_empty()).then_some(token)
}

fn unexpected(outcome: Outcome) -> Error {
    Error::Internal(format!("unexpected outcome {outcome:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_text_is_what_display_writes() {
        for addr in [
            "0.0.0.0:0",
            "127.0.0.1:8080",
            "10.20.3.40:9",
            "255.255.255.255:65535",
            "[::1]:443",
            "[2001:db8::7]:65000",
        ] {
            let peer: SocketAddr = addr.parse().unwrap();
            assert_eq!(origin_text(peer), peer.to_string());
            assert_eq!(origin_text(peer), addr);
        }
    }
}
