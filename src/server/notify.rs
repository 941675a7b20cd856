//! Announcements the primary makes to everyone: the list of backups
//! (`replication/set-backups`, to every backup) and the new primary (`/new-primary`, to every
//! known client). They run in the background with a bound on parallel calls and a short
//! timeout each; a failure is logged and forgotten (a client that misses the call finds the
//! primary through redirects), so they never hold up replication.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tracing::debug;

use super::auth::ClusterSecret;
use super::peer_call::PeerPost;
use crate::api::{NewPrimary, SetBackupsRequest};
use crate::client::http::{HttpClient, HttpResponse, Method};
use crate::error::Result;
use crate::replication::{NodeId, Term};

/// Calls in flight at most, over all announcements.
const MAX_PARALLEL: usize = 32;
/// One call's bound.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
pub const SET_BACKUPS_PATH: &str = "/replication/set-backups";
/// The path of a client's notification listener.
const NEW_PRIMARY_PATH: &str = "/new-primary";

#[derive(Clone)]
pub struct Notifier {
    id: NodeId,
    http: HttpClient,
    secret: ClusterSecret,
    slots: Arc<Semaphore>,
}

impl Notifier {
    pub fn new(id: NodeId, http: HttpClient, secret: ClusterSecret) -> Notifier {
        Notifier {
            id,
            http,
            secret,
            slots: Arc::new(Semaphore::new(MAX_PARALLEL)),
        }
    }

    /// Tells every backup in `members` the full list of backups.
    pub fn set_backups(&self, term: Term, members: &[NodeId]) {
        let backups: Vec<NodeId> = members.iter().filter(|m| **m != self.id).cloned().collect();
        let request = SetBackupsRequest {
            primary: self.id.clone(),
            term,
            backups: backups.clone(),
        };
        let Ok(call) = PeerPost::json(SET_BACKUPS_PATH, &request) else {
            return;
        };
        for backup in backups {
            let (http, secret, call) = (self.http.clone(), self.secret.clone(), call.clone());
            self.spawn(backup.clone(), SET_BACKUPS_PATH, async move {
                call.send(&http, &secret, &backup, CALL_TIMEOUT).await
            });
        }
    }

    /// Tells every client at `addresses` that we are the primary of `term`. Clients are not
    /// peers: these calls are not signed (a client has no cluster secret to check them).
    pub fn new_primary(&self, term: Term, addresses: Vec<String>) {
        let notice = NewPrimary {
            primary: self.id.clone(),
            term,
        };
        let Ok(body) = serde_json::to_vec(&notice) else {
            return;
        };
        let body = Bytes::from(body);
        for address in addresses {
            let (http, body) = (self.http.clone(), body.clone());
            self.spawn(address.clone(), NEW_PRIMARY_PATH, async move {
                let headers = [("content-type", "application/json".to_string())];
                http.request_with_timeout(
                    Method::POST,
                    &address,
                    NEW_PRIMARY_PATH,
                    &headers,
                    Some(body),
                    CALL_TIMEOUT,
                )
                .await
            });
        }
    }

    /// Runs one announcement in the background, once a slot is free, and logs its outcome.
    fn spawn(
        &self,
        to: String,
        path: &'static str,
        call: impl Future<Output = Result<HttpResponse>> + Send + 'static,
    ) {
        let slots = self.slots.clone();
        tokio::spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            match call.await {
                Ok(response) if response.is_success() => debug!(%to, path, "announced"),
                Ok(response) => debug!(%to, path, status = response.status, "announcement refused"),
                Err(err) => debug!(%to, path, %err, "announcement failed"),
            }
        });
    }
}
