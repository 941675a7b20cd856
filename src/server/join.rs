//! Joining a cluster: a new server asks a member to take it in
//! (`replication/init-backup`), following redirects to the primary, and tries again until
//! the primary answers that it is a member. Meanwhile the primary sends it the log through
//! the ordinary protocol, and the server reports itself as `joining`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::auth::ClusterSecret;
use super::peer_call::post_to_primary;
use crate::api::{InitBackupRequest, InitBackupResponse};
use crate::client::http::HttpClient;
use crate::error::Error;
use crate::replication::NodeId;
use crate::storage::save_member_since;

const INIT_BACKUP_PATH: &str = "/replication/init-backup";
/// The primary answers once the log is transferred and the configuration committed.
const JOIN_CALL_TIMEOUT: Duration = Duration::from_secs(65);
/// One round of asking, after which the failure is logged and a new round starts.
const ROUND: Duration = Duration::from_secs(10);

/// Asks `targets` (any members) to add `id`, until the primary says yes or `shutdown`.
pub async fn join_cluster(
    id: NodeId,
    data_dir: std::path::PathBuf,
    driver: super::driver::DriverHandle,
    targets: Vec<String>,
    http: HttpClient,
    secret: ClusterSecret,
    shutdown: CancellationToken,
) {
    let request = InitBackupRequest { id };
    loop {
        let call = post_to_primary::<_, InitBackupResponse>(
            &http,
            &secret,
            &targets,
            INIT_BACKUP_PATH,
            &request,
            JOIN_CALL_TIMEOUT,
            ROUND,
        );
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = call => result,
        };
        match result {
            Ok(answer) => {
                info!(primary = %answer.primary, members = ?answer.members, since = answer.since, "joined the cluster as a backup");
                // Remembered before the replica acts on it: a restart must not take an old
                // removal of this address for its own either.
                if let Err(err) = save_member_since(&data_dir, answer.since) {
                    warn!(%err, "cannot save since when this server is a member");
                }
                driver.joined(answer.since).await;
                return;
            }
            Err(Error::Unauthorized(_)) => {
                warn!("the cluster refused our credentials; check the cluster secret");
            }
            Err(err) => warn!(%err, "not joined yet; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
