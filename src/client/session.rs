//! [`Client`]: one client of an understudy cluster, which finds the primary by itself.
//!
//! Every call goes through one retry loop ([`Client::call`]) that applies the rules in
//! [`routing`](super::routing): follow a `307` at once, move on to another server after a
//! backoff when nobody can serve, jump to a newly notified primary whenever one announces
//! itself, and give up after [`ClientOptions::retry_for`] with the last error.
//!
//! Retrying is safe because of what each call is:
//! - reads (`status`, `messages`, `clients`) and `client/auth` change nothing worth
//!   protecting (a retried login just issues another token);
//! - a demo message carries the client's `seq`, and the server answers a repeat of the last
//!   `(client_id, seq)` with the same index instead of storing it again, so a message sent
//!   during a failover is stored exactly once however often it is retried;
//! - `register` and `logout` are not idempotent on the server. After an attempt whose
//!   outcome is unknown (a timeout, a broken connection, a 503), a `409` to `register` or a
//!   `401` to `logout` most likely means the earlier attempt went through, and is treated as
//!   success.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::http::{HttpClient, Method};
use super::listener::Listener;
use super::routing::{Backoff, Decision, Routing, decide};
use super::saved::{PendingMessage, SavedSession};
use crate::api::{
    self, AuthRequest, AuthResponse, ClientInfo, ClientsResponse, DemoMessageRequest,
    DemoMessageResponse, InitRequest, InitResponse, LogoutRequest, MessageInfo, MessagesResponse,
    NewPrimary, RegisterRequest, RegisterResponse, StatusResponse,
};
use crate::error::{Error, Result};
use crate::tls::TlsClientConfig;

/// How a [`Client`] listens, waits and gives up.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Where the notification listener binds; port 0 picks a free port.
    /// Default `0.0.0.0:0`, so that servers on other hosts can reach it.
    pub listen: SocketAddr,
    /// Whether [`Client::resume`] listens again on the port the session gave to
    /// `client/init` (servers notify that port). Default `true`; one-shot commands that
    /// exit at once turn it off.
    pub listen_on_resume: bool,
    /// How long one call keeps trying before it returns its last error. Default 10 s.
    /// An attempt already under way when this runs out is allowed to finish, so a call can
    /// take up to `retry_for + request_timeout`.
    pub retry_for: Duration,
    /// The bound on one HTTP request. Default 3 s.
    pub request_timeout: Duration,
    /// The waits between attempts that found no primary.
    pub backoff: Backoff,
    /// Cancelling this stops the notification listener (dropping the client does too).
    pub shutdown: CancellationToken,
    /// TLS: `https://` to servers whose certificates this config trusts. Default: none,
    /// plain HTTP.
    pub tls: Option<Arc<TlsClientConfig>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            listen_on_resume: true,
            retry_for: Duration::from_secs(10),
            request_timeout: super::http::DEFAULT_TIMEOUT,
            backoff: Backoff::default(),
            shutdown: CancellationToken::new(),
            tls: None,
        }
    }
}

/// A client of an understudy cluster. All methods take `&self`, so it can be shared
/// (e.g. in an `Arc`); demo messages from one client are still sent one at a time, because
/// their `seq`s must reach the primary in order.
pub struct Client {
    http: HttpClient,
    options: ClientOptions,
    /// From `client/init`; `None` for an [`unattached`](Client::unattached) client.
    client_id: Option<String>,
    listener: Option<Listener>,
    routing: Mutex<Routing>,
    state: Mutex<State>,
    /// Held for the whole of a send, so seqs are assigned and delivered in order.
    send_lock: tokio::sync::Mutex<()>,
}

/// The login state; short critical sections only (never held across an `await`).
#[derive(Clone, Debug)]
pub(super) struct State {
    pub(super) token: Option<String>,
    pub(super) username: Option<String>,
    pub(super) next_seq: u64,
    pub(super) pending: Option<PendingMessage>,
    pub(super) listener_port: Option<u16>,
}

/// Whether a call is a change only the primary may answer, or a read any server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Change,
    Read,
}

/// One logical request, retried as a whole.
struct Call<'a> {
    kind: Kind,
    method: Method,
    path: String,
    body: Option<Bytes>,
    token: Option<&'a str>,
}

/// The answer of a call, and whether an earlier attempt may have taken effect unseen.
struct Answer<T> {
    result: Result<T>,
    uncertain: bool,
}

impl Client {
    /// Starts the notification listener and announces it with `POST /client/init`.
    pub async fn connect(servers: Vec<String>, options: ClientOptions) -> Result<Client> {
        let servers = clean_servers(servers)?;
        let listener = Listener::bind(options.listen, options.shutdown.clone()).await?;
        let port = listener.port();
        let mut client = Client::build(servers, None, None, Some(listener), options);
        let body = encode(&InitRequest {
            port: i64::from(port),
        })?;
        let init: InitResponse = client
            .call(Call {
                kind: Kind::Change,
                method: Method::POST,
                path: "/client/init".to_string(),
                body: Some(body),
                token: None,
            })
            .await
            .result?;
        client.lock_routing().set_primary(&init.primary);
        client.client_id = Some(init.client_id);
        client.lock_state().listener_port = Some(port);
        Ok(client)
    }

    /// Continues a saved session (same client id, token and seq) without a new
    /// `client/init`. `servers` are tried first, then the ones the session learned. With
    /// [`ClientOptions::listen_on_resume`], listens again on the session's port and fails
    /// if that port is taken.
    pub async fn resume(
        servers: Vec<String>,
        saved: SavedSession,
        options: ClientOptions,
    ) -> Result<Client> {
        let mut all = servers;
        all.extend(saved.servers.iter().cloned());
        let servers = clean_servers(all)?;
        let listener = match (
            options.listen_on_resume,
            &saved.client_id,
            saved.listener_port,
        ) {
            (true, Some(_), Some(port)) => {
                let addr = SocketAddr::new(options.listen.ip(), port);
                Some(Listener::bind(addr, options.shutdown.clone()).await?)
            }
            _ => None,
        };
        let state = State {
            token: saved.token,
            username: saved.username,
            next_seq: saved.next_seq.max(1),
            pending: saved.pending,
            listener_port: saved.listener_port,
        };
        let client = Client::build(servers, saved.primary, saved.client_id, listener, options);
        *client.lock_state() = state;
        Ok(client)
    }

    /// A client that never calls `client/init`: enough for `register` and the read
    /// endpoints, without leaving a client record on the servers.
    pub fn unattached(servers: Vec<String>, options: ClientOptions) -> Result<Client> {
        let servers = clean_servers(servers)?;
        Ok(Client::build(servers, None, None, None, options))
    }

    fn build(
        servers: Vec<String>,
        primary: Option<String>,
        client_id: Option<String>,
        listener: Option<Listener>,
        options: ClientOptions,
    ) -> Client {
        Client {
            http: HttpClient::with_tls(options.request_timeout, options.tls.clone()),
            client_id,
            listener,
            routing: Mutex::new(Routing::new(servers, primary)),
            state: Mutex::new(State {
                token: None,
                username: None,
                next_seq: 1,
                pending: None,
                listener_port: None,
            }),
            send_lock: tokio::sync::Mutex::new(()),
            options,
        }
    }

    /// `POST /client/register`: creates a user (409 `Conflict` if the name is taken).
    pub async fn register(&self, username: &str, password: &str) -> Result<()> {
        api::validate_username(username)?;
        api::validate_password(password)?;
        let body = encode(&RegisterRequest {
            username: username.to_string(),
            password: password.to_string(),
        })?;
        let answer: Answer<RegisterResponse> = self
            .call(Call {
                kind: Kind::Change,
                method: Method::POST,
                path: "/client/register".to_string(),
                body: Some(body),
                token: None,
            })
            .await;
        match answer.result {
            Ok(_) => Ok(()),
            // Our own earlier attempt most likely created the user; see the module docs.
            Err(Error::Conflict(_)) if answer.uncertain => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// `POST /client/auth`: logs in as `username` and keeps the token for later calls.
    pub async fn login(&self, username: &str, password: &str) -> Result<()> {
        let client_id = self.require_client_id()?;
        api::validate_username(username)?;
        let body = encode(&AuthRequest {
            client_id: client_id.to_string(),
            username: username.to_string(),
            password: password.to_string(),
        })?;
        let auth: AuthResponse = self
            .call(Call {
                kind: Kind::Change,
                method: Method::POST,
                path: "/client/auth".to_string(),
                body: Some(body),
                token: None,
            })
            .await
            .result?;
        let mut state = self.lock_state();
        state.token = Some(auth.token);
        state.username = Some(username.to_string());
        Ok(())
    }

    /// `POST /client/demo-message` with the next `seq`; returns the message's index on the
    /// board. If the client gave up on an earlier message (its outcome unknown), sending
    /// the same text again reuses that `seq`, so it is stored at most once; a different
    /// text moves past it.
    pub async fn send(&self, message: &str) -> Result<u64> {
        api::validate_message(message)?;
        let _in_order = self.send_lock.lock().await;
        let seq = {
            let mut state = self.lock_state();
            match state.pending.clone() {
                Some(pending) if pending.message == message => pending.seq,
                // The pending seq may be taken on the server; never reuse it for other text.
                Some(pending) => {
                    state.next_seq = state.next_seq.max(pending.seq + 1);
                    state.next_seq
                }
                None => state.next_seq,
            }
        };
        let result = self.send_with_seq(seq, message).await;
        let mut state = self.lock_state();
        match &result {
            // Stored. A different pending message can no longer be retried safely (the
            // server recognises only a client's last seq), so it is dropped either way.
            Ok(_) => {
                state.next_seq = state.next_seq.max(seq + 1);
                state.pending = None;
            }
            // Nobody gave a definite answer: the message may be stored. Remember it so a
            // resend of the same text is recognised as a retry.
            Err(Error::Unavailable(_) | Error::NoPrimary | Error::NotPrimary { .. }) => {
                state.pending = Some(PendingMessage {
                    seq,
                    message: message.to_string(),
                });
                state.next_seq = state.next_seq.max(seq + 1);
            }
            // A definite refusal: nothing was stored, the seq is still free, and an earlier
            // pending message stays pending.
            Err(_) => {}
        }
        result
    }

    /// `POST /client/demo-message` with an explicit `seq`, without touching the client's
    /// own numbering. For tests and tools that exercise the `seq` rules directly.
    pub async fn send_with_seq(&self, seq: u64, message: &str) -> Result<u64> {
        let client_id = self.require_client_id()?;
        let token = self.require_token()?;
        let body = encode(&DemoMessageRequest {
            client_id: client_id.to_string(),
            seq,
            message: message.to_string(),
        })?;
        let answer: DemoMessageResponse = self
            .call(Call {
                kind: Kind::Change,
                method: Method::POST,
                path: "/client/demo-message".to_string(),
                body: Some(body),
                token: Some(&token),
            })
            .await
            .result?;
        Ok(answer.index)
    }

    /// `POST /client/logout`: ends the login; the token is forgotten either way.
    pub async fn logout(&self) -> Result<()> {
        let client_id = self.require_client_id()?;
        let token = self.require_token()?;
        let body = encode(&LogoutRequest {
            client_id: client_id.to_string(),
        })?;
        let answer: Answer<serde_json::Value> = self
            .call(Call {
                kind: Kind::Change,
                method: Method::POST,
                path: "/client/logout".to_string(),
                body: Some(body),
                token: Some(&token),
            })
            .await;
        let result = match answer.result {
            Ok(_) => Ok(()),
            // The earlier attempt most likely logged out and revoked the token.
            Err(Error::Unauthorized(_)) if answer.uncertain => Ok(()),
            Err(err) => Err(err),
        };
        if result.is_ok() {
            let mut state = self.lock_state();
            state.token = None;
            state.username = None;
        }
        result
    }

    /// `GET /messages?from=N&limit=M` from the primary (or, failing it, any server).
    pub async fn messages(&self, from: u64, limit: u64) -> Result<Vec<MessageInfo>> {
        let answer: MessagesResponse = self
            .read(format!("/messages?from={from}&limit={limit}"))
            .await?;
        Ok(answer.messages)
    }

    /// `GET /clients` from the primary (or, failing it, any server).
    pub async fn clients(&self) -> Result<Vec<ClientInfo>> {
        let answer: ClientsResponse = self.read("/clients".to_string()).await?;
        Ok(answer.clients)
    }

    /// `GET /status` of one named server (asked once, no failover), or of the primary
    /// (or, failing it, any server) when `server` is `None`.
    pub async fn status(&self, server: Option<&str>) -> Result<StatusResponse> {
        match server {
            Some(server) => self
                .http
                .get(server, "/status", &self.headers(None))
                .await?
                .into_result(),
            None => self.read("/status".to_string()).await,
        }
    }

    /// The primary the client currently believes in, if any.
    pub fn primary(&self) -> Option<String> {
        self.apply_notification();
        self.lock_routing().primary().map(str::to_string)
    }

    /// Every server the client knows: the configured ones and any it learned of.
    pub fn servers(&self) -> Vec<String> {
        self.lock_routing().servers().to_vec()
    }

    /// The id from `client/init`, unless the client is unattached.
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    /// Who is logged in, if anyone.
    pub fn username(&self) -> Option<String> {
        self.lock_state().username.clone()
    }

    /// Whether the client holds a token.
    pub fn is_logged_in(&self) -> bool {
        self.lock_state().token.is_some()
    }

    /// The notification listener, if this client runs one.
    pub fn listener(&self) -> Option<&Listener> {
        self.listener.as_ref()
    }

    /// Wakes on every accepted `/new-primary` notification (`None` without a listener).
    pub fn notifications(&self) -> Option<watch::Receiver<Option<NewPrimary>>> {
        self.listener.as_ref().map(Listener::subscribe)
    }

    /// What [`Client::resume`] needs to continue as this client.
    pub fn saved(&self) -> SavedSession {
        let primary = self.primary();
        let servers = self.servers();
        let state = self.lock_state().clone();
        SavedSession {
            servers,
            client_id: self.client_id.clone(),
            token: state.token,
            username: state.username,
            next_seq: state.next_seq,
            primary,
            listener_port: state.listener_port,
            pending: state.pending,
        }
    }

    /// Whether `saved` is this client's own login (same client id and token), as another
    /// process using the same session file would have saved it.
    pub fn is_same_login(&self, saved: &SavedSession) -> bool {
        let state = self.lock_state();
        saved.client_id == self.client_id && saved.token.is_some() && saved.token == state.token
    }

    /// Takes in what another process did with this same login since (a one-shot `send`
    /// while a shell is open): the seqs it used are taken, so ours continue after them, and
    /// if it got further its pending message is the one that may be retried. Returns false,
    /// changing nothing, if `saved` is another login.
    pub fn catch_up_with(&self, saved: &SavedSession) -> bool {
        if !self.is_same_login(saved) {
            return false;
        }
        let mut state = self.lock_state();
        if saved.next_seq > state.next_seq {
            state.next_seq = saved.next_seq;
            state.pending = saved.pending.clone();
        }
        true
    }

    /// Stops the notification listener and waits until its port is free again (dropping
    /// the client stops it too, but without waiting).
    pub async fn shutdown(mut self) {
        if let Some(listener) = self.listener.take() {
            listener.shutdown().await;
        }
    }

    async fn read<T: DeserializeOwned>(&self, path: String) -> Result<T> {
        self.call(Call {
            kind: Kind::Read,
            method: Method::GET,
            path,
            body: None,
            token: None,
        })
        .await
        .result
    }

    /// The retry loop shared by every call; see the module docs and [`super::routing`].
    async fn call<T: DeserializeOwned>(&self, call: Call<'_>) -> Answer<T> {
        let deadline = Instant::now() + self.options.retry_for;
        let headers = self.headers(call.token);
        let mut notifications = self.notifications();
        // Consecutive redirects; more than one per known server means the servers disagree
        // about the primary (an election is settling), which deserves a backoff.
        let mut redirects = 0usize;
        let mut failures = 0u32;
        let mut uncertain = false;
        let mut heard_no_primary = false;
        loop {
            self.apply_notification();
            let Some(target) = self.lock_routing().target() else {
                return Answer {
                    result: Err(Error::BadRequest("no servers to ask".to_string())),
                    uncertain,
                };
            };
            let attempt = self.http.request(
                call.method.clone(),
                &target,
                &call.path,
                &headers,
                call.body.clone(),
            );
            tokio::pin!(attempt);
            // A notification naming another primary makes this attempt moot: a paused old
            // primary would otherwise hold the call for the whole request timeout.
            let outcome = loop {
                tokio::select! {
                    result = &mut attempt => break Some(result),
                    () = next_notification(&mut notifications) => {
                        self.apply_notification();
                        if self.lock_routing().target().as_deref() != Some(target.as_str()) {
                            break None;
                        }
                    }
                }
            };
            let err = match outcome {
                None => {
                    tracing::debug!("abandoned {} at {target}: new primary notified", call.path);
                    uncertain = true;
                    if Instant::now() >= deadline {
                        return Answer {
                            result: Err(Error::Unavailable(format!(
                                "gave up on {} after {} ms",
                                call.path,
                                self.options.retry_for.as_millis()
                            ))),
                            uncertain,
                        };
                    }
                    continue;
                }
                Some(Ok(response)) if response.is_success() => {
                    if call.kind == Kind::Change {
                        // Only the primary answers a change with 2xx.
                        self.lock_routing().set_primary(&target);
                    }
                    return Answer {
                        result: response.json(),
                        uncertain,
                    };
                }
                Some(Ok(response)) => response.error(),
                Some(Err(err)) => err,
            };
            match decide(&target, &err) {
                Decision::GiveUp => {
                    return Answer {
                        result: Err(err),
                        uncertain,
                    };
                }
                Decision::Redirect(primary) => {
                    tracing::debug!("{target} redirects {} to {primary}", call.path);
                    self.lock_routing().set_primary(&primary);
                    redirects += 1;
                    if redirects <= self.lock_routing().servers().len() {
                        continue;
                    }
                    redirects = 0;
                }
                Decision::TryElsewhere => {
                    tracing::debug!("{} at {target} failed: {err}", call.path);
                    uncertain = true;
                    redirects = 0;
                    self.lock_routing().failed(&target);
                }
            }
            // A server that answered "no primary" says more than one that could not be
            // reached: that is what the caller hears if time runs out.
            if matches!(err, Error::NoPrimary) {
                heard_no_primary = true;
            }
            failures = failures.saturating_add(1);
            let now = Instant::now();
            if now >= deadline {
                return Answer {
                    result: Err(if heard_no_primary {
                        Error::NoPrimary
                    } else {
                        err
                    }),
                    uncertain,
                };
            }
            let wait = self.options.backoff.delay(failures).min(deadline - now);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                // A new primary announced itself: no reason to wait any longer.
                () = next_notification(&mut notifications) => {}
            }
        }
    }

    /// Switches to the newest notified primary if it was not acted on yet.
    /// Returns whether it switched.
    fn apply_notification(&self) -> bool {
        let Some(notification) = self.listener.as_ref().and_then(Listener::latest) else {
            return false;
        };
        let switched = self.lock_routing().notified(&notification);
        if switched {
            tracing::debug!(
                "switching to notified primary {} (term {})",
                notification.primary,
                notification.term
            );
        }
        switched
    }

    /// `Content-Type` on every request (the contract asks for it), plus the bearer token
    /// on the calls that need one.
    fn headers(&self, token: Option<&str>) -> Vec<(&'static str, String)> {
        let mut headers = vec![("content-type", "application/json".to_string())];
        if let Some(token) = token {
            headers.push(("authorization", format!("Bearer {token}")));
        }
        headers
    }

    fn require_client_id(&self) -> Result<&str> {
        self.client_id.as_deref().ok_or_else(|| {
            Error::BadRequest("this client has no client id: connect it first".to_string())
        })
    }

    fn require_token(&self) -> Result<String> {
        self.lock_state()
            .token
            .clone()
            .ok_or_else(|| Error::Unauthorized("not logged in".to_string()))
    }

    pub(super) fn lock_routing(&self) -> MutexGuard<'_, Routing> {
        // A panic elsewhere cannot leave `Routing` half-updated in a harmful way.
        self.routing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl std::fmt::Debug for Client {
    // By hand, so a token never lands in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.client_id)
            .field("primary", &self.lock_routing().primary())
            .field("username", &self.lock_state().username)
            .field(
                "listener",
                &self.listener.as_ref().map(Listener::local_addr),
            )
            .finish_non_exhaustive()
    }
}

/// Resolves on the next accepted notification; never, without a listener.
async fn next_notification(notifications: &mut Option<watch::Receiver<Option<NewPrimary>>>) {
    match notifications {
        Some(receiver) => {
            if receiver.changed().await.is_err() {
                // The listener stopped: nothing more will come.
                *notifications = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

fn encode<T: Serialize>(body: &T) -> Result<Bytes> {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(|err| Error::Internal(format!("cannot encode request body: {err}")))
}

/// Trims, drops empties and duplicates; at least one server is needed.
fn clean_servers(servers: Vec<String>) -> Result<Vec<String>> {
    let mut clean: Vec<String> = Vec::new();
    for server in servers {
        let server = server.trim();
        if !server.is_empty() && !clean.iter().any(|s| s == server) {
            clean.push(server.to_string());
        }
    }
    if clean.is_empty() {
        return Err(Error::BadRequest("no servers given".to_string()));
    }
    Ok(clean)
}
