//! The live dashboard: `GET /` is one HTML page (in the binary, no external assets) that
//! opens `GET /events`, a stream of server-sent events. Every quarter second the server
//! sends what it sees of the cluster: every member's role, term, commit and applied index
//! (its own directly, the others' from their `/status`), from the primary's view each
//! backup's lag and last contact, the newest messages on its board, the clients with their
//! address, login and when they were told of a new primary, and the recent elections with
//! their cause. A page on any server shows a failover as it happens; if its own server
//! goes, the browser reconnects to it when it is back.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::Html;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use futures_util::future::join_all;
use serde::Serialize;

use super::AppState;
use super::driver::ServerView;
use super::events;
use super::read_api::{peer_statuses, status_of};
use crate::api::{PeerStatus, StatusResponse};
use crate::app::{board, client_summaries};
use crate::client::http::HttpClient;
use crate::error::Result;
use crate::replication::NodeId;

/// How often the page is updated.
const EVERY: Duration = Duration::from_millis(250);
/// How long a member may take to answer its `/status`.
const ASK_TIMEOUT: Duration = Duration::from_millis(400);
/// The newest messages shown.
const MESSAGES: u64 = 12;
/// The clients shown (a cluster may have thousands).
const CLIENTS: usize = 50;

/// `GET /`.
pub async fn page() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}

/// `GET /events`: a `cluster` event with a [`View`] every quarter second.
pub async fn events(
    State(app): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let http = app.http.with_request_timeout(ASK_TIMEOUT);
    let mut ticker = tokio::time::interval(EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let updates =
        futures_util::stream::unfold((app, http, ticker), |(app, http, mut ticker)| async move {
            ticker.tick().await;
            let event = match view(&app, &http).await {
                Some(view) => Event::default()
                    .event("cluster")
                    .json_data(&view)
                    .unwrap_or_default(),
                // The driver is gone (the server is stopping): the stream ends.
                None => return None,
            };
            Some((Ok(event), (app, http, ticker)))
        });
    Sse::new(updates).keep_alive(KeepAlive::default())
}

/// What one update carries.
#[derive(Serialize)]
struct View {
    /// The server sending it.
    server: NodeId,
    /// The primary of the highest term any member reports, and that term.
    primary: Option<NodeId>,
    term: u64,
    members: Vec<Member>,
    messages: Vec<Message>,
    clients: Vec<Client>,
    /// All clients, of which at most `CLIENTS` are listed.
    client_count: usize,
    events: Vec<events::Event>,
}

#[derive(Serialize)]
struct Member {
    id: NodeId,
    status: Option<StatusResponse>,
    /// Why it did not answer.
    error: Option<String>,
    /// From the primary's view.
    progress: Option<PeerStatus>,
}

#[derive(Serialize)]
struct Message {
    index: u64,
    username: String,
    text: String,
}

#[derive(Serialize)]
struct Client {
    client_id: String,
    address: String,
    username: Option<String>,
    logged_in: bool,
    /// The term and time (ms since the Unix epoch) this server last told it of a new
    /// primary.
    told_term: Option<u64>,
    told_at_ms: Option<u64>,
}

type Local = (
    StatusResponse,
    Vec<Message>,
    Vec<crate::app::ClientSummary>,
    usize,
);

/// This server's own part of an update, read in one driver turn.
fn local(view: &ServerView<'_>) -> Result<Local> {
    let status = status_of(view)?;
    let from = status.messages.saturating_sub(MESSAGES - 1).max(1);
    let messages = board(view.tables, from, MESSAGES)?
        .into_iter()
        .rev()
        .map(|p| Message {
            index: p.index,
            username: p.username,
            text: p.text,
        })
        .collect();
    let clients = client_summaries(view.tables)?;
    let count = clients.len();
    Ok((
        status,
        messages,
        clients.into_iter().take(CLIENTS).collect(),
        count,
    ))
}

/// An update, or `None` when this server cannot give one (it is stopping, or its store
/// cannot be read): the stream ends, and the page reconnects.
async fn view(app: &AppState, http: &HttpClient) -> Option<View> {
    let (mut own, messages, clients, client_count) = app.driver.query(local).await.ok()?.ok()?;
    let others: Vec<NodeId> = own
        .members
        .iter()
        .filter(|m| **m != app.id)
        .cloned()
        .collect();
    let answers = join_all(others.iter().map(|member| async move {
        let answer = http.get(member, "/status", &[]).await;
        match answer {
            Ok(response) if response.status == 200 => response
                .json::<StatusResponse>()
                .map_err(|err| err.to_string()),
            Ok(response) => Err(format!("HTTP {}", response.status)),
            Err(err) => Err(err.to_string()),
        }
    }))
    .await;
    if let Ok(snapshot) = app.driver.snapshot().await {
        own.peers = peer_statuses(&snapshot);
    }
    let mut members = vec![Member {
        id: app.id.clone(),
        status: Some(own),
        error: None,
        progress: None,
    }];
    members.extend(others.into_iter().zip(answers).map(|(id, answer)| {
        let (status, error) = match answer {
            Ok(status) => (Some(status), None),
            Err(why) => (None, Some(why)),
        };
        Member {
            id,
            status,
            error,
            progress: None,
        }
    }));
    // The cluster's primary: the one of the highest term any member names.
    let (term, primary) = members
        .iter()
        .filter_map(|m| m.status.as_ref())
        .filter(|s| s.role == "primary")
        .map(|s| (s.term, Some(s.id.clone())))
        .max()
        .unwrap_or_else(|| {
            let term = members
                .iter()
                .filter_map(|m| m.status.as_ref().map(|s| s.term))
                .max()
                .unwrap_or(0);
            (term, None)
        });
    let progress: Vec<PeerStatus> = members
        .iter()
        .filter_map(|m| m.status.as_ref())
        .find(|s| Some(&s.id) == primary.as_ref())
        .map(|s| s.peers.clone())
        .unwrap_or_default();
    for member in &mut members {
        member.progress = progress.iter().find(|p| p.id == member.id).cloned();
    }
    let clients = clients
        .into_iter()
        .map(|c| {
            let told = app.told.get(&c.address);
            Client {
                told_term: told.map(|t| t.0),
                told_at_ms: told.map(|t| t.1),
                client_id: c.client_id,
                address: c.address,
                username: c.username,
                logged_in: c.logged_in,
            }
        })
        .collect();
    Some(View {
        server: app.id.clone(),
        primary,
        term,
        members,
        messages,
        clients,
        client_count,
        events: app.events.recent(),
    })
}
