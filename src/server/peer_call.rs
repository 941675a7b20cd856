//! A signed request to whichever server is the primary: try the known servers, follow
//! `not_primary` answers to the primary, and back off while there is none. Used by a
//! joining server (`replication/init-backup`) and by operators (`replication/remove-server`).

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::debug;

use super::auth::{AUTH_HEADER, ClusterSecret};
use crate::client::http::{HttpClient, Method};
use crate::error::{Error, Result};

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
    let body = Bytes::from(
        serde_json::to_vec(body).map_err(|err| Error::Internal(format!("encoding: {err}")))?,
    );
    let deadline = Instant::now() + give_up_after;
    let mut backoff = Duration::from_millis(100);
    let mut rotation = targets.iter().cycle();
    let mut next: Option<String> = None;
    loop {
        let target = match next.take() {
            Some(target) => target,
            None => rotation.next().cloned().unwrap_or_default(),
        };
        let headers = [
            ("content-type", "application/json".to_string()),
            (AUTH_HEADER, secret.sign("POST", path, &body)),
        ];
        let result = http
            .request_with_timeout(
                Method::POST,
                &target,
                path,
                &headers,
                Some(body.clone()),
                attempt_timeout,
            )
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
