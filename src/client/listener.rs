//! The client's notification listener: a tiny HTTP server on which a newly elected primary
//! announces itself (`POST /new-primary {"primary": "HOST:PORT", "term": N}`).
//!
//! The listener does not act on a notification itself; it keeps the newest one in a
//! [`tokio::sync::watch`] channel. The [`Client`](super::Client) looks at it before every
//! attempt and while it waits between attempts, so a notification redirects the client at
//! once, and tests can await "the client was notified" through [`Listener::subscribe`].
//!
//! Terms only grow, so a notification from an older term than one already seen is a late
//! delivery from a deposed primary: it is answered 200 (the sender did nothing wrong) and
//! otherwise ignored.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::errors::{self, ErrorBody};
use crate::api::{MAX_BODY_BYTES, NewPrimary};
use crate::error::{Error, Result};

/// A running notification listener. Dropping it stops it.
#[derive(Debug)]
pub struct Listener {
    addr: SocketAddr,
    latest: watch::Receiver<Option<NewPrimary>>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Listener {
    /// Binds `addr` (port 0 picks a free port) and serves until `shutdown` is cancelled or
    /// the listener is dropped.
    pub async fn bind(addr: SocketAddr, shutdown: CancellationToken) -> Result<Listener> {
        let socket = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|err| Error::Io(format!("cannot listen on {addr}: {err}")))?;
        let addr = socket.local_addr()?;
        let (sender, latest) = watch::channel(None);
        // A child token: dropping this listener must not cancel the caller's token.
        let stop = shutdown.child_token();
        let app = router(Arc::new(sender));
        let until = stop.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            if let Err(err) = axum::serve(socket, app).with_graceful_shutdown(until).await {
                tracing::warn!("notification listener on {addr} stopped: {err}");
            }
        });
        tracing::debug!("notification listener on {addr}");
        Ok(Listener {
            addr,
            latest,
            stop,
            task: Some(task),
        })
    }

    /// The bound address (with the real port if port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound port: what the client gives to `POST /client/init`.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The newest accepted notification, if any.
    pub fn latest(&self) -> Option<NewPrimary> {
        self.latest.borrow().clone()
    }

    /// A receiver that wakes on every accepted notification. The current value counts as
    /// seen, so `changed()` waits for the next one; use `wait_for` to include the current.
    pub fn subscribe(&self) -> watch::Receiver<Option<NewPrimary>> {
        let mut receiver = self.latest.clone();
        receiver.borrow_and_update();
        receiver
    }

    /// Stops serving and waits until the port is released.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn router(sender: Arc<watch::Sender<Option<NewPrimary>>>) -> Router {
    Router::new()
        .route("/new-primary", post(new_primary))
        .fallback(|| async { error_response(Error::NotFound("no such path".to_string())) })
        .method_not_allowed_fallback(|| async { error_response(Error::MethodNotAllowed) })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(sender)
}

/// `POST /new-primary`. The body is parsed by hand rather than with axum's `Json` so that a
/// missing `Content-Type` is not a 415 and a bad body gets the contract's error shape.
async fn new_primary(
    State(sender): State<Arc<watch::Sender<Option<NewPrimary>>>>,
    body: Bytes,
) -> Response {
    let notification: NewPrimary = match serde_json::from_slice(&body) {
        Ok(notification) => notification,
        Err(err) => return error_response(Error::BadRequest(format!("invalid body: {err}"))),
    };
    if notification.primary.trim().is_empty() {
        return error_response(Error::BadRequest("primary must not be empty".to_string()));
    }
    let accepted = sender.send_if_modified(|current| accept(current, notification.clone()));
    if accepted {
        tracing::info!(
            "notified: primary is now {} (term {})",
            notification.primary,
            notification.term
        );
    } else {
        tracing::debug!(
            "ignored notification {} (term {})",
            notification.primary,
            notification.term
        );
    }
    (StatusCode::OK, axum::Json(serde_json::json!({}))).into_response()
}

/// Records `notification` unless an equal one or one from a newer term is already recorded.
/// Returns whether anything changed (so a repeated notification wakes nobody).
fn accept(current: &mut Option<NewPrimary>, notification: NewPrimary) -> bool {
    match current {
        Some(seen) if notification.term < seen.term || *seen == notification => false,
        _ => {
            *current = Some(notification);
            true
        }
    }
}

fn error_response(err: Error) -> Response {
    let status =
        StatusCode::from_u16(errors::status(&err)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(ErrorBody::of(&err))).into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::client::http::HttpClient;

    fn note(primary: &str, term: u64) -> NewPrimary {
        NewPrimary {
            primary: primary.to_string(),
            term,
        }
    }

    async fn start() -> (Listener, String, HttpClient) {
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap(), CancellationToken::new())
            .await
            .unwrap();
        let addr = listener.local_addr().to_string();
        (
            listener,
            addr,
            HttpClient::with_timeout(Duration::from_secs(5)),
        )
    }

    /// Terms never decrease: an older term's notification is ignored, an equal or newer one
    /// wins, and a repeat changes nothing.
    #[test]
    fn only_newer_or_equal_terms_are_accepted() {
        let mut current = None;
        assert!(accept(&mut current, note("a:1", 3)));
        assert!(!accept(&mut current, note("b:1", 2)));
        assert!(!accept(&mut current, note("a:1", 3)));
        assert!(accept(&mut current, note("b:1", 3)));
        assert!(accept(&mut current, note("c:1", 4)));
        assert_eq!(current, Some(note("c:1", 4)));
    }

    /// Contract, notification listener: the client answers 200 and switches to the primary
    /// of a higher term; a lower term's notification is answered but ignored.
    #[tokio::test]
    async fn post_new_primary_switches_on_higher_term_only() {
        let (listener, addr, http) = start().await;
        let mut notified = listener.subscribe();

        let r = http
            .post_json(&addr, "/new-primary", &[], &note("127.0.0.1:7002", 5))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.json::<serde_json::Value>().unwrap(),
            serde_json::json!({})
        );
        tokio::time::timeout(Duration::from_secs(5), notified.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(listener.latest(), Some(note("127.0.0.1:7002", 5)));

        let r = http
            .post_json(&addr, "/new-primary", &[], &note("127.0.0.1:7001", 4))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(listener.latest(), Some(note("127.0.0.1:7002", 5)));
        assert!(!notified.has_changed().unwrap());

        http.post_json(&addr, "/new-primary", &[], &note("127.0.0.1:7003", 6))
            .await
            .unwrap();
        let seen = tokio::time::timeout(
            Duration::from_secs(5),
            notified.wait_for(|n| n.as_ref().is_some_and(|n| n.term == 6)),
        )
        .await
        .unwrap()
        .unwrap()
        .clone();
        assert_eq!(seen, Some(note("127.0.0.1:7003", 6)));
    }

    /// Contract, Errors: garbage gets a 400 error body and changes nothing.
    #[tokio::test]
    async fn a_bad_body_is_a_bad_request() {
        let (listener, addr, http) = start().await;
        let r = http
            .request(
                hyper::Method::POST,
                &addr,
                "/new-primary",
                &[],
                Some(bytes::Bytes::from_static(b"\x00garbage")),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 400);
        assert!(matches!(r.error(), Error::BadRequest(_)));
        let r = http.get(&addr, "/elsewhere", &[]).await.unwrap();
        assert_eq!(r.status, 404);
        let r = http.get(&addr, "/new-primary", &[]).await.unwrap();
        assert_eq!(r.status, 405);
        assert_eq!(listener.latest(), None);
    }

    /// Shutdown releases the port: later requests cannot connect.
    #[tokio::test]
    async fn cancelling_the_token_stops_the_listener() {
        let token = CancellationToken::new();
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap(), token.clone())
            .await
            .unwrap();
        let addr = listener.local_addr().to_string();
        token.cancel();
        listener.shutdown().await;
        let http = HttpClient::with_timeout(Duration::from_secs(2));
        let err = http
            .post_json(&addr, "/new-primary", &[], &note("x:1", 1))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    }
}
