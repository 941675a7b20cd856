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

use super::auth::{AUTH_HEADER, ClusterSecret};
use crate::api::{NewPrimary, SetBackupsRequest};
use crate::client::http::{HttpClient, Method};
use crate::replication::{NodeId, Term};

/// Calls in flight at most, over all announcements.
const MAX_PARALLEL: usize = 32;
/// One call's bound.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
pub const SET_BACKUPS_PATH: &str = "/replication/set-backups";

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
        let Ok(body) = serde_json::to_vec(&request) else {
            return;
        };
        let body = Bytes::from(body);
        for backup in backups {
            let auth = self.secret.sign("POST", SET_BACKUPS_PATH, &body);
            self.call(backup, SET_BACKUPS_PATH, body.clone(), Some(auth));
        }
    }

    /// Tells every client at `addresses` that we are the primary of `term`.
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
            self.call(address, "/new-primary", body.clone(), None);
        }
    }

    fn call(&self, to: String, path: &'static str, body: Bytes, auth: Option<String>) {
        let http = self.http.clone();
        let slots = self.slots.clone();
        tokio::spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            let mut headers = vec![("content-type", "application/json".to_string())];
            if let Some(auth) = auth {
                headers.push((AUTH_HEADER, auth));
            }
            let result = http
                .request_with_timeout(Method::POST, &to, path, &headers, Some(body), CALL_TIMEOUT)
                .await;
            match result {
                Ok(response) if response.is_success() => debug!(%to, path, "announced"),
                Ok(response) => debug!(%to, path, status = response.status, "announcement refused"),
                Err(err) => debug!(%to, path, %err, "announcement failed"),
            }
        });
    }
}
