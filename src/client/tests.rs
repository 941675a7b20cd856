//! The client against a fake cluster: small axum servers that share one in-memory board
//! (standing in for replication) and can each be made primary, backup, leaderless or dead.
//! They check the client's side of the contract: redirects, failover with the same `seq`,
//! notifications, backoff and giving up, and the headers it sends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::api::NewPrimary;
use crate::api::errors::{self, ErrorBody};
use crate::error::Error;

/// What one fake server does with client requests.
#[derive(Clone, Debug, PartialEq)]
enum Role {
    Primary,
    /// Redirects to this address.
    Backup(String),
    /// Answers 503 `no_primary`.
    Electing,
}

/// The replicated state all fake servers share.
#[derive(Default)]
struct Board {
    next_client: u64,
    /// client id -> (listener port, last seq, last text, last index).
    clients: HashMap<String, (i64, u64, String, u64)>,
    users: HashMap<String, String>,
    /// token -> (client id, username).
    tokens: HashMap<String, (String, String)>,
    messages: Vec<(String, String, u64, String)>,
    /// Every request seen: (server, path, content type, authorization).
    seen: Vec<(String, String, Option<String>, Option<String>)>,
    /// Woken after each request is answered, for tests that wait for one ([`until_seen`]).
    answered: Arc<Notify>,
}

struct Fake {
    addr: String,
    role: Arc<Mutex<Role>>,
    stop: CancellationToken,
}

type Shared = (String, Arc<Mutex<Role>>, Arc<Mutex<Board>>);

async fn start(board: &Arc<Mutex<Board>>, role: Role) -> Fake {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    let role = Arc::new(Mutex::new(role));
    let stop = CancellationToken::new();
    let app =
        Router::new()
            .fallback(handle)
            .with_state((addr.clone(), role.clone(), board.clone()));
    let until = stop.clone().cancelled_owned();
    tokio::spawn(async move {
        axum::serve(socket, app)
            .with_graceful_shutdown(until)
            .await
            .unwrap();
    });
    Fake { addr, role, stop }
}

impl Fake {
    fn set(&self, role: Role) {
        *self.role.lock().unwrap() = role;
    }
}

fn reply(status: u16, body: Value) -> Response {
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

fn fail(err: Error) -> Response {
    reply(
        errors::status(&err),
        serde_json::to_value(ErrorBody::of(&err)).unwrap(),
    )
}

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answered = shared.2.lock().unwrap().answered.clone();
    let response = respond(shared, method, uri, headers, body);
    // Only once the answer is decided, so a test reacting to this request cannot change it.
    answered.notify_waiters();
    response
}

/// Waits until the requests the fake servers have answered satisfy `done`.
async fn until_seen(board: &Arc<Mutex<Board>>, done: impl Fn(&Board) -> bool) {
    let answered = board.lock().unwrap().answered.clone();
    loop {
        let next = answered.notified();
        tokio::pin!(next);
        // Registered before looking, so an answer in between is not missed.
        next.as_mut().enable();
        let seen = done(&board.lock().unwrap());
        if seen {
            return;
        }
        next.await;
    }
}

fn respond(
    (me, role, board): Shared,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let path = uri.path().to_string();
    let mut board = board.lock().unwrap();
    board.seen.push((
        me.clone(),
        path.clone(),
        header("content-type"),
        header("authorization"),
    ));
    if method == Method::GET {
        return match path.as_str() {
            "/status" => reply(
                200,
                json!({"id": me, "role": "primary", "term": 1, "primary": me, "members": [me],
                       "commit_index": 0, "applied_index": 0, "clients": board.clients.len(),
                       "logged_in": board.tokens.len(), "messages": board.messages.len()}),
            ),
            "/messages" => {
                let messages: Vec<Value> = board
                    .messages
                    .iter()
                    .enumerate()
                    .map(|(i, (client_id, username, seq, message))| {
                        json!({"index": i + 1, "client_id": client_id, "username": username,
                               "seq": seq, "message": message})
                    })
                    .collect();
                reply(200, json!({ "messages": messages }))
            }
            _ => fail(Error::NotFound("no such path".into())),
        };
    }
    match role.lock().unwrap().clone() {
        Role::Primary => {}
        Role::Backup(primary) => {
            let body = json!({"error": "not_primary", "message": "ask the primary",
                              "primary": primary});
            let mut response = reply(307, body);
            response.headers_mut().insert(
                "location",
                format!("http://{primary}{path}").parse().unwrap(),
            );
            return response;
        }
        Role::Electing => return fail(Error::NoPrimary),
    }
    let body: Value = serde_json::from_slice(&body).unwrap();
    let text = |field: &str| body[field].as_str().unwrap_or_default().to_string();
    match path.as_str() {
        "/client/init" => {
            board.next_client += 1;
            let id = format!("c{}", board.next_client);
            let port = body["port"].as_i64().unwrap();
            board
                .clients
                .insert(id.clone(), (port, 0, String::new(), 0));
            reply(200, json!({"client_id": id, "primary": me}))
        }
        "/client/register" => {
            let username = text("username");
            if board.users.contains_key(&username) {
                return fail(Error::Conflict("username taken".into()));
            }
            board.users.insert(username.clone(), text("password"));
            reply(201, json!({ "username": username }))
        }
        "/client/auth" => {
            let username = text("username");
            if board.users.get(&username) != Some(&text("password")) {
                return fail(Error::Unauthorized("bad credentials".into()));
            }
            let token = format!("t{}", board.tokens.len() + 1);
            board
                .tokens
                .insert(token.clone(), (text("client_id"), username));
            reply(200, json!({ "token": token }))
        }
        "/client/demo-message" => {
            let token = header("authorization")
                .and_then(|h| h.strip_prefix("Bearer ").map(str::to_string))
                .unwrap_or_default();
            let Some((client_id, username)) = board.tokens.get(&token).cloned() else {
                return fail(Error::Unauthorized("bad token".into()));
            };
            let seq = body["seq"].as_u64().unwrap();
            let message = text("message");
            let (port, last_seq, last_text, last_index) = board.clients[&client_id].clone();
            if seq == last_seq && message == last_text {
                return reply(200, json!({ "index": last_index }));
            }
            if seq <= last_seq {
                return fail(Error::Conflict("seq reused".into()));
            }
            board
                .messages
                .push((client_id.clone(), username, seq, message.clone()));
            let index = board.messages.len() as u64;
            board.clients.insert(client_id, (port, seq, message, index));
            reply(200, json!({ "index": index }))
        }
        "/client/logout" => {
            let token = header("authorization")
                .and_then(|h| h.strip_prefix("Bearer ").map(str::to_string))
                .unwrap_or_default();
            if board.tokens.remove(&token).is_none() {
                return fail(Error::Unauthorized("bad token".into()));
            }
            reply(200, json!({}))
        }
        _ => fail(Error::NotFound("no such path".into())),
    }
}

fn options() -> ClientOptions {
    ClientOptions {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        retry_for: Duration::from_secs(5),
        request_timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    }
}

/// Two servers, the first primary and the second its backup, sharing one board.
async fn pair() -> (Arc<Mutex<Board>>, Fake, Fake) {
    let board = Arc::new(Mutex::new(Board::default()));
    let a = start(&board, Role::Primary).await;
    let b = start(&board, Role::Backup(a.addr.clone())).await;
    (board, a, b)
}

async fn logged_in(servers: Vec<String>) -> Client {
    let client = Client::connect(servers, options()).await.unwrap();
    client.register("alice", "password1").await.unwrap();
    client.login("alice", "password1").await.unwrap();
    client
}

/// Contract, Where requests go: a client that starts at a backup is redirected to the
/// primary and stays there; every request carries `Content-Type: application/json`, and
/// demo messages and logout carry the bearer token.
#[tokio::test]
async fn starts_at_a_backup_and_follows_the_redirect() {
    let (board, a, b) = pair().await;
    let client = logged_in(vec![b.addr.clone()]).await;
    assert_eq!(client.primary(), Some(a.addr.clone()));
    assert_eq!(client.client_id(), Some("c1"));
    assert_eq!(client.send("hello").await.unwrap(), 1);
    assert_eq!(client.send("again").await.unwrap(), 2);
    let messages = client.messages(1, 10).await.unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1].seq, 2);
    client.logout().await.unwrap();
    assert!(!client.is_logged_in());

    let board = board.lock().unwrap();
    // One request went to the backup (init); everything after went to the primary.
    let at_backup: Vec<_> = board.seen.iter().filter(|s| s.0 == b.addr).collect();
    assert_eq!(at_backup.len(), 1);
    assert!(
        board
            .seen
            .iter()
            .all(|s| s.2.as_deref() == Some("application/json"))
    );
    for (_, path, _, auth) in &board.seen {
        let wants_token = path == "/client/demo-message" || path == "/client/logout";
        assert_eq!(auth.is_some(), wants_token, "{path}");
    }
}

/// Contract: a retry of the last `(client_id, seq)` after a failover returns the same index
/// and never stores the message twice. The client keeps the seq of a message it gave up on
/// and reuses it when the same text is sent again.
#[tokio::test]
async fn a_message_whose_outcome_is_unknown_is_retried_with_the_same_seq() {
    let (board, a, b) = pair().await;
    let client = Client::connect(
        vec![a.addr.clone(), b.addr.clone()],
        ClientOptions {
            retry_for: Duration::from_millis(300),
            ..options()
        },
    )
    .await
    .unwrap();
    client.register("bob", "password1").await.unwrap();
    client.login("bob", "password1").await.unwrap();
    assert_eq!(client.send("one").await.unwrap(), 1);

    // The message is stored, but the answer never reaches the client: the cluster then
    // has no primary until the client gives up.
    assert_eq!(client.send_with_seq(2, "two").await.unwrap(), 2);
    a.set(Role::Electing);
    b.set(Role::Electing);
    // The client's own numbering is untouched by `send_with_seq`: its next seq is still 2,
    // as if the answer to seq 2 had been lost.
    assert_eq!(client.saved().next_seq, 2);
    let err = client.send("two").await.unwrap_err();
    assert_eq!(err, Error::NoPrimary);
    assert_eq!(client.saved().pending.map(|p| p.seq), Some(2));

    // b wins the election; the resend reuses seq 2 and gets the same index back.
    b.set(Role::Primary);
    a.set(Role::Backup(b.addr.clone()));
    assert_eq!(client.send("two").await.unwrap(), 2);
    assert_eq!(client.send("three").await.unwrap(), 3);
    let saved = client.saved();
    assert_eq!(saved.next_seq, 4);
    assert_eq!(saved.pending, None);
    assert_eq!(board.lock().unwrap().messages.len(), 3);
}

/// A dead primary (connection refused) makes the client try the next server; while that
/// one has no primary yet the client keeps trying, and once it is primary the same call
/// succeeds there.
#[tokio::test]
async fn a_dead_primary_is_replaced_by_the_next_server() {
    let (board, a, b) = pair().await;
    let client = logged_in(vec![a.addr.clone(), b.addr.clone()]).await;
    assert_eq!(client.send("before").await.unwrap(), 1);
    a.stop.cancel();
    b.set(Role::Electing);
    let asked_b = {
        let b = b.addr.clone();
        move |board: &Board| {
            board
                .seen
                .iter()
                .filter(|s| s.0 == b && s.1 == "/client/demo-message")
                .count()
        }
    };
    // b wins its election only after it has turned the client away once.
    let elected = tokio::spawn({
        let (board, b_role, asked_b) = (board.clone(), b.role.clone(), asked_b.clone());
        async move {
            until_seen(&board, |board| asked_b(board) >= 1).await;
            *b_role.lock().unwrap() = Role::Primary;
        }
    });
    assert_eq!(client.send("after").await.unwrap(), 2);
    elected.await.unwrap();
    assert!(
        asked_b(&board.lock().unwrap()) >= 2,
        "refused, then accepted"
    );
    assert_eq!(client.primary(), Some(b.addr.clone()));
    assert!(client.is_logged_in());
}

/// Contract, notification listener: after `POST /new-primary` the client talks to the
/// new primary directly, without asking the old one first.
#[tokio::test]
async fn a_notification_switches_the_primary_at_once() {
    let (board, a, b) = pair().await;
    let client = logged_in(vec![a.addr.clone()]).await;
    assert_eq!(client.send("one").await.unwrap(), 1);
    b.set(Role::Primary);
    a.set(Role::Backup(b.addr.clone()));

    let listener = client.listener().unwrap().local_addr();
    let mut notified = client.notifications().unwrap();
    let answer = HttpClient::new()
        .post_json(
            &listener.to_string(),
            "/new-primary",
            &[],
            &NewPrimary {
                primary: b.addr.clone(),
                term: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    tokio::time::timeout(Duration::from_secs(5), notified.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(client.primary(), Some(b.addr.clone()));

    board.lock().unwrap().seen.clear();
    assert_eq!(client.send("two").await.unwrap(), 2);
    let board = board.lock().unwrap();
    assert!(board.seen.iter().all(|s| s.0 == b.addr), "{:?}", board.seen);
}

/// A notification ends the wait for a primary that does not answer (a paused process):
/// the client drops the attempt and sends to the new primary at once. Without that, the
/// attempt would only end with its request timeout, after `retry_for` has run out, and the
/// send would fail.
#[tokio::test]
async fn a_notification_cuts_short_a_request_to_a_silent_primary() {
    let board = Arc::new(Mutex::new(Board::default()));
    let b = start(&board, Role::Primary).await;
    // A "paused" primary: accepts connections, never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let (accepted, mut connections) = tokio::sync::mpsc::unbounded_channel();
    let hold = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
            let _ = accepted.send(());
        }
    });
    let client = Client::connect(
        vec![b.addr.clone()],
        ClientOptions {
            retry_for: Duration::from_secs(10),
            request_timeout: Duration::from_secs(20),
            ..options()
        },
    )
    .await
    .unwrap();
    client.register("carol", "password1").await.unwrap();
    client.login("carol", "password1").await.unwrap();
    client.lock_routing().set_primary(&silent_addr);

    let listener = client.listener().unwrap().local_addr().to_string();
    let notify = tokio::spawn({
        let primary = b.addr.clone();
        async move {
            // The client's attempt is under way at the silent primary.
            connections
                .recv()
                .await
                .expect("the client reached the silent primary");
            HttpClient::new()
                .post_json(
                    &listener,
                    "/new-primary",
                    &[],
                    &NewPrimary { primary, term: 9 },
                )
                .await
                .unwrap();
        }
    });
    assert_eq!(client.send("hi").await.unwrap(), 1);
    notify.await.unwrap();
    assert_eq!(client.primary(), Some(b.addr.clone()));
    assert_eq!(board.lock().unwrap().messages.len(), 1);
    hold.abort();
}

/// Errors that retrying cannot fix come back at once, typed: each call is asked exactly
/// once, and what the client can check itself is never sent.
#[tokio::test]
async fn final_errors_are_returned_at_once() {
    let (board, a, _b) = pair().await;
    let client = logged_in(vec![a.addr.clone()]).await;
    board.lock().unwrap().seen.clear();
    assert!(matches!(
        client.register("alice", "password1").await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        client.login("alice", "wrong-password").await,
        Err(Error::Unauthorized(_))
    ));
    assert!(matches!(
        client.send_with_seq(0, "x").await,
        Err(Error::Conflict(_))
    ));
    // Checked before sending: nothing invalid leaves the client.
    assert!(matches!(client.send("").await, Err(Error::BadRequest(_))));
    assert!(matches!(
        client.register("bad name", "password1").await,
        Err(Error::BadRequest(_))
    ));
    let asked: Vec<String> = board
        .lock()
        .unwrap()
        .seen
        .iter()
        .map(|s| s.1.clone())
        .collect();
    assert_eq!(
        asked,
        ["/client/register", "/client/auth", "/client/demo-message"],
        "one attempt each, and none for the invalid calls"
    );
}

/// With no primary anywhere the client asks the servers in turn, waits out its backoff
/// between attempts instead of asking again at once, and gives up with the last error when
/// `retry_for` has run out. A backoff as long as `retry_for` leaves room for exactly one
/// attempt after the first: the wait runs to the end of the bound. (How the backoff grows
/// is `routing`'s `backoff_doubles_up_to_the_cap`.)
#[tokio::test]
async fn without_a_primary_the_client_gives_up_after_the_bound() {
    let board = Arc::new(Mutex::new(Board::default()));
    let a = start(&board, Role::Electing).await;
    let b = start(&board, Role::Electing).await;
    let retry_for = Duration::from_secs(1);
    let err = Client::connect(
        vec![a.addr.clone(), b.addr.clone()],
        ClientOptions {
            retry_for,
            backoff: Backoff {
                initial: retry_for,
                max: retry_for,
            },
            ..options()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err, Error::NoPrimary);
    let asked: Vec<String> = board
        .lock()
        .unwrap()
        .seen
        .iter()
        .map(|s| s.0.clone())
        .collect();
    assert_eq!(asked, [a.addr.clone(), b.addr.clone()]);
}

/// Two backups that name each other as primary cannot trap the client in a tight loop.
#[tokio::test]
async fn disagreeing_backups_do_not_loop_forever() {
    let board = Arc::new(Mutex::new(Board::default()));
    let a = start(&board, Role::Electing).await;
    let b = start(&board, Role::Backup(a.addr.clone())).await;
    a.set(Role::Backup(b.addr.clone()));
    let err = Client::connect(
        vec![a.addr.clone()],
        ClientOptions {
            retry_for: Duration::from_millis(300),
            ..options()
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::NotPrimary { .. }), "{err:?}");
    let attempts = board.lock().unwrap().seen.len();
    assert!(attempts < 40, "{attempts} attempts");
}

/// A saved session resumes as the same client: same id, token and seq numbering.
#[tokio::test]
async fn a_resumed_session_continues_the_same_client() {
    let (board, a, b) = pair().await;
    let client = logged_in(vec![b.addr.clone()]).await;
    assert_eq!(client.send("one").await.unwrap(), 1);
    let saved = client.saved();
    let port = client.listener().unwrap().port();
    assert_eq!(saved.listener_port, Some(port));
    client.shutdown().await;

    let resumed = Client::resume(vec![b.addr.clone()], saved, options())
        .await
        .unwrap();
    assert_eq!(resumed.client_id(), Some("c1"));
    assert_eq!(resumed.primary(), Some(a.addr.clone()));
    assert_eq!(resumed.listener().map(Listener::port), Some(port));
    assert_eq!(resumed.send("two").await.unwrap(), 2);
    let board = board.lock().unwrap();
    assert_eq!(board.messages[1].2, 2, "seq continues");
    assert_eq!(board.clients.len(), 1, "no second init");
}

/// An unattached client reads and registers without creating a client on the servers.
#[tokio::test]
async fn an_unattached_client_reads_without_init() {
    let (board, a, b) = pair().await;
    let client = Client::unattached(vec![b.addr.clone()], options()).unwrap();
    client.register("dave", "password1").await.unwrap();
    assert_eq!(client.primary(), Some(a.addr.clone()));
    assert_eq!(client.status(Some(&b.addr)).await.unwrap().id, b.addr);
    assert!(client.messages(1, 5).await.unwrap().is_empty());
    assert!(matches!(
        client.login("dave", "password1").await,
        Err(Error::BadRequest(_))
    ));
    assert!(board.lock().unwrap().clients.is_empty());
}

/// A definite refusal (here 401) of a resend leaves the earlier message pending, so a later
/// resend of the same text still reuses its seq.
#[tokio::test]
async fn a_refused_resend_keeps_the_message_pending() {
    let (_board, a, _b) = pair().await;
    let client = logged_in(vec![a.addr.clone()]).await;
    {
        let mut state = client.lock_state();
        state.next_seq = 4;
        state.pending = Some(PendingMessage {
            seq: 3,
            message: "lost?".into(),
        });
        state.token = Some("revoked".into());
    }
    assert!(matches!(
        client.send("lost?").await,
        Err(Error::Unauthorized(_))
    ));
    let saved = client.saved();
    assert_eq!(saved.pending.map(|p| p.seq), Some(3));
    assert_eq!(saved.next_seq, 4);
}
