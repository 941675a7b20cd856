//! Calls from one server to another. Every one is a [`PeerPost`]: a body signed with the
//! cluster secret (`auth`) over exactly the method, path and bytes that go out, with a
//! fresh timestamp at each attempt. The protocol's messages (`peers`), the primary's
//! announcements (`notify`) and snapshot chunks (`snapshots`) send one at a time;
//! [`post_to_primary`] sends one to whichever server is the primary: it tries the known
//! servers, follows `not_primary` answers to the primary, and backs off while there is none
//! (used by a joining server for `replication/init-backup` and by operators for
//! `replication/remove-server`).

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::debug;

use super::auth::{AUTH_HEADER, ClusterSecret};
use crate::client::http::{HttpClient, HttpResponse, Method};
use crate::error::{Error, Result};

/// A POST to another server, encoded once and signed anew for every send.
#[derive(Clone, Debug)]
pub struct PeerPost<'a> {
    path: &'a str,
    content_type: &'static str,
    body: Bytes,
}

impl<'a> PeerPost<'a> {
    /// `body` as JSON: the control calls under `/replication/`.
    pub fn json<T: Serialize + ?Sized>(path: &'a str, body: &T) -> Result<PeerPost<'a>> {
        let body = serde_json::to_vec(body)
            .map_err(|err| Error::Internal(format!("cannot encode a call to {path}: {err}")))?;
        Ok(PeerPost::raw(path, "application/json", body))
    }

    /// `body` in postcard: protocol messages and snapshot chunks, compact and binary.
    pub fn postcard<T: Serialize + ?Sized>(path: &'a str, body: &T) -> Result<PeerPost<'a>> {
        let body = postcard::to_stdvec(body)
            .map_err(|err| Error::Internal(format!("cannot encode a call to {path}: {err}")))?;
        Ok(PeerPost::raw(path, "application/octet-stream", body))
    }

    fn raw(path: &'a str, content_type: &'static str, body: Vec<u8>) -> PeerPost<'a> {
        PeerPost {
            path,
            content_type,
            body: Bytes::from(body),
        }
    }

    /// The size of the encoded body.
    pub fn len(&self) -> usize {
        self.body.len()
    }

    /// Sends the call to `to` and reads the answer, whatever its status. Signed now, so a
    /// retry of the same call carries a fresh timestamp.
    pub async fn send(
        &self,
        http: &HttpClient,
        secret: &ClusterSecret,
        to: &str,
        timeout: Duration,
    ) -> Result<HttpResponse> {
        let headers = [
            ("content-type", self.content_type.to_string()),
            (AUTH_HEADER, secret.sign("POST", self.path, &self.body)),
        ];
        http.request_with_timeout(
            Method::POST,
            to,
            self.path,
            &headers,
            Some(self.body.clone()),
            timeout,
        )
        .await
    }
}

const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// POSTs `body` to `path` on the primary, found from `targets`, until an answer that is not
/// "ask someone else" or "try later", or until `give_up_after`. Each attempt may take up to
/// `attempt_timeout`.
pub async fn post_to_primary<B: Serialize, T: DeserializeOwned>(
    http: &HttpClient,
    secret: &ClusterSecret,
    targets: &[String],
    path: &str,
    body: &B,
    attempt_timeout: Duration,
    give_up_after: Duration,
) -> Result<T> {
    if targets.is_empty() {
        return Err(Error::BadRequest("no server to ask".to_string()));
    }
    let call = PeerPost::json(path, body)?;
    let deadline = Instant::now() + give_up_after;
    let mut backoff = Duration::from_millis(100);
    let mut rotation = targets.iter().cycle();
    let mut next: Option<String> = None;
    loop {
        let target = match next.take() {
            Some(target) => target,
            None => rotation.next().cloned().unwrap_or_default(),
        };
        let result = call
            .send(http, secret, &target, attempt_timeout)
            .await
            .and_then(|response| response.into_result::<T>());
        let err = match result {
            Ok(answer) => return Ok(answer),
            Err(Error::NotPrimary { primary }) => {
                // Ask the primary next, at once.
                next = Some(primary);
                if Instant::now() < deadline {
                    continue;
                }
                Error::NoPrimary
            }
            Err(err @ (Error::NoPrimary | Error::Unavailable(_))) => err,
            Err(err) => return Err(err),
        };
        debug!(%target, %err, "no answer from the primary yet");
        if Instant::now() + backoff >= deadline {
            return Err(err);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::{Request, State};
    use axum::http::HeaderMap;
    use axum::middleware::{self, Next};
    use axum::routing::post;

    use super::*;
    use crate::server::auth::{PeerGate, check_peer_request};

    /// A peer endpoint behind the receiving side's check, echoing what arrived.
    async fn peer(secret: ClusterSecret) -> String {
        let app = Router::new()
            .route(
                "/replication/echo",
                post(|headers: HeaderMap, body: Bytes| async move {
                    let content_type = headers["content-type"].to_str().unwrap().to_string();
                    format!("{content_type} {}", body.len())
                }),
            )
            .layer(middleware::from_fn_with_state(
                PeerGate::secret_only(secret),
                |State(gate): State<PeerGate>, request: Request, next: Next| async move {
                    match check_peer_request(&gate, request).await {
                        Ok(request) => next.run(request).await,
                        Err(refusal) => refusal,
                    }
                },
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    /// Security (`auth`): a peer call passes the receiver's check exactly when both hold the
    /// same cluster secret, and arrives with its content type and body unchanged.
    #[tokio::test]
    async fn a_peer_call_is_accepted_only_under_the_same_secret() {
        let secret = ClusterSecret::new("the secret of this cluster").unwrap();
        let addr = peer(secret.clone()).await;
        let http = HttpClient::new();
        let timeout = Duration::from_secs(5);

        let json = PeerPost::json("/replication/echo", &[1, 2, 3]).unwrap();
        let answer = json.send(&http, &secret, &addr, timeout).await.unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, "application/json 7");

        let binary = PeerPost::postcard("/replication/echo", &[1u8, 2, 3]).unwrap();
        let answer = binary.send(&http, &secret, &addr, timeout).await.unwrap();
        assert_eq!(answer.body, "application/octet-stream 3");

        let stranger = ClusterSecret::new("the secret of another cluster").unwrap();
        let answer = json.send(&http, &stranger, &addr, timeout).await.unwrap();
        assert_eq!(answer.status, 401);
    }
}
