//! Joining a cluster: a new server asks a member to take it in
//! (`replication/init-backup`), following redirects to the primary, and tries again with
//! backoff until the primary answers that it is a member. Meanwhile the primary sends it the
//! log through the ordinary protocol, and the server reports itself as `joining`.

use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::auth::{AUTH_HEADER, ClusterSecret};
use crate::api::{InitBackupRequest, InitBackupResponse};
use crate::client::http::{HttpClient, Method};
use crate::error::ErrorBody;
use crate::replication::NodeId;

const INIT_BACKUP_PATH: &str = "/replication/init-backup";
/// The primary answers once the log is transferred and the configuration committed.
const JOIN_CALL_TIMEOUT: Duration = Duration::from_secs(65);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Asks `targets` (any members) to add `id`, until one primary says yes or `shutdown`.
pub async fn join_cluster(
    id: NodeId,
    targets: Vec<String>,
    http: HttpClient,
    secret: ClusterSecret,
    shutdown: CancellationToken,
) {
    let body = match serde_json::to_vec(&InitBackupRequest { id: id.clone() }) {
        Ok(body) => Bytes::from(body),
        Err(_) => return,
    };
    let mut backoff = Duration::from_millis(100);
    let mut next_targets = targets.clone();
    loop {
        let Some(target) = next_targets.first().cloned() else {
            next_targets = targets.clone();
            continue;
        };
        next_targets.remove(0);
        let headers = [
            ("content-type", "application/json".to_string()),
            (AUTH_HEADER, secret.sign("POST", INIT_BACKUP_PATH, &body)),
        ];
        let call = http.request_with_timeout(
            Method::POST,
            &target,
            INIT_BACKUP_PATH,
            &headers,
            Some(body.clone()),
            JOIN_CALL_TIMEOUT,
        );
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = call => result,
        };
        match result {
            Ok(response) if response.is_success() => {
                match response.json::<InitBackupResponse>() {
                    Ok(answer) => {
                        info!(primary = %answer.primary, members = ?answer.members, "joined the cluster as a backup")
                    }
                    Err(_) => info!(%target, "joined the cluster as a backup"),
                }
                return;
            }
            Ok(response) => {
                let primary = response
                    .json::<ErrorBody>()
                    .ok()
                    .and_then(|body| body.primary);
                if let Some(primary) = primary {
                    // Redirected: ask the primary next, at once.
                    next_targets.insert(0, primary);
                    continue;
                }
                if response.status == 401 {
                    warn!(%target, "the cluster refused our credentials; check the cluster secret");
                } else {
                    warn!(%target, status = response.status, "join refused; retrying");
                }
            }
            Err(err) => warn!(%target, %err, "cannot reach the cluster to join; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
