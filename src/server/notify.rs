//! Announcements the primary makes to everyone: the list of backups
//! (`replication/set-backups`, to every backup) and the new primary (`/new-primary`, to every
//! known client). They run in the background with a bound on parallel calls and a short
//! timeout each; a failure is logged and forgotten (a client that misses the call finds the
//! primary through redirects), so they never hold up replication.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::auth::ClusterSecret;
use super::metrics::Metrics;
use super::peer_call::PeerPost;
use crate::api::{NewPrimary, SetBackupsRequest};
use crate::client::http::{HttpClient, HttpResponse};
use crate::error::Result;
use crate::replication::{NodeId, Term};

/// Calls in flight at most, over all announcements.
const MAX_PARALLEL: usize = 32;
/// One call's bound.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
pub const SET_BACKUPS_PATH: &str = "/replication/set-backups";
/// The path of a client's notification listener.
const NEW_PRIMARY_PATH: &str = "/new-primary";
/// Calls to clients' listeners in flight at once (they are many, and each is short).
const CLIENT_WORKERS: usize = 512;
/// One call to a client's listener: loopback or a LAN answers in well under this.
const CLIENT_CALL_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct Notifier {
    id: NodeId,
    http: HttpClient,
    secret: ClusterSecret,
    slots: Arc<Semaphore>,
    /// The latest term announced to clients: an older announcement's workers stop.
    announced: Arc<AtomicU64>,
    metrics: Metrics,
    told: Told,
}

/// When each client was last told of a new primary (address → term and milliseconds since
/// the Unix epoch), for the dashboard. Cheap to clone.
#[derive(Clone, Default)]
pub struct Told(Arc<Mutex<std::collections::HashMap<String, (Term, u64)>>>);

impl Told {
    fn record(&self, address: String, term: Term) {
        let at_ms = super::unix_millis();
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(address, (term, at_ms));
    }

    /// The term and time the client at `address` was last told, if it was.
    pub fn get(&self, address: &str) -> Option<(Term, u64)> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(address)
            .copied()
    }
}

impl Notifier {
    pub fn new(
        id: NodeId,
        http: HttpClient,
        secret: ClusterSecret,
        metrics: Metrics,
        told: Told,
    ) -> Notifier {
        Notifier {
            id,
            http,
            secret,
            slots: Arc::new(Semaphore::new(MAX_PARALLEL)),
            announced: Arc::new(AtomicU64::new(0)),
            metrics,
            told,
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
    ///
    /// There may be tens of thousands, so this is cheap per client: a fixed number of
    /// workers take addresses off one list, and each call is a bare HTTP/1.1 exchange on a
    /// fresh connection (the body is encoded once), with a short timeout; nothing waits
    /// for it, and a client that misses it finds the primary through redirects.
    pub fn new_primary(&self, term: Term, addresses: Vec<String>) {
        let notice = NewPrimary {
            primary: self.id.clone(),
            term,
        };
        let Ok(body) = serde_json::to_vec(&notice) else {
            return;
        };
        let body: Arc<[u8]> = body.into();
        let workers = CLIENT_WORKERS.min(addresses.len());
        let total = addresses.len();
        let queue = Arc::new(ClientQueue::new(term, self.announced.clone(), addresses));
        let tally = Arc::new(Tally::new(workers));
        for _ in 0..workers {
            let (queue, body, metrics) = (queue.clone(), body.clone(), self.metrics.clone());
            let (tally, told) = (tally.clone(), self.told.clone());
            tokio::spawn(async move {
                while let Some(address) = queue.next() {
                    let result = tell_client(&address, &body).await;
                    metrics.notification(result.is_ok());
                    match result {
                        Ok(()) => told.record(address, term),
                        Err(why) => {
                            debug!(%address, why, "client not told of the new primary");
                            tally.failed(&address, &why);
                        }
                    }
                }
                // One line per announcement, however many clients failed.
                if let Some((failed, first)) = tally.worker_done() {
                    warn!(
                        term,
                        failed,
                        clients = total,
                        first_failure = first,
                        "{failed} of {total} clients could not be told of the new primary (first: {first})"
                    );
                }
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

/// The clients still to tell of one term's primary. Once a later term is announced, the
/// rest of this list would only be told of a primary that is no longer one (and would
/// slow the newer announcement down), so it ends.
struct ClientQueue {
    term: Term,
    announced: Arc<AtomicU64>,
    addresses: Mutex<std::vec::IntoIter<String>>,
}

impl ClientQueue {
    /// A queue for `term`, which becomes the latest announced (unless a later one is).
    fn new(term: Term, announced: Arc<AtomicU64>, addresses: Vec<String>) -> ClientQueue {
        announced.fetch_max(term, Ordering::SeqCst);
        ClientQueue {
            term,
            announced,
            addresses: Mutex::new(addresses.into_iter()),
        }
    }

    /// The next client to tell, or `None` when all were taken or a later term was announced.
    fn next(&self) -> Option<String> {
        if self.announced.load(Ordering::SeqCst) > self.term {
            return None;
        }
        self.addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next()
    }
}

/// The failures of one announcement, reported once when its last worker is done.
struct Tally {
    workers_left: std::sync::atomic::AtomicUsize,
    failed: std::sync::atomic::AtomicUsize,
    first: Mutex<Option<String>>,
}

impl Tally {
    fn new(workers: usize) -> Tally {
        Tally {
            workers_left: workers.into(),
            failed: 0.into(),
            first: Mutex::new(None),
        }
    }

    fn failed(&self, address: &str, why: &str) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.first
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(|| format!("{address}: {why}"));
    }

    /// A worker finished; for the last one, the failures (if any) and the first of them.
    fn worker_done(&self) -> Option<(usize, String)> {
        if self.workers_left.fetch_sub(1, Ordering::AcqRel) != 1 {
            return None;
        }
        let failed = self.failed.load(Ordering::Acquire);
        let first = self
            .first
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()?;
        Some((failed, first))
    }
}

/// One `POST /new-primary` to a client's listener: connect, send, read the status line.
/// The request goes out in one write, which Nagle's algorithm never holds back (nothing is
/// unacknowledged before it), so the socket is left as it is: one system call fewer a client.
async fn tell_client(address: &str, body: &[u8]) -> std::result::Result<(), String> {
    let call = async {
        let mut stream = TcpStream::connect(address)
            .await
            .map_err(|err| err.to_string())?;
        let head = format!(
            "POST {NEW_PRIMARY_PATH} HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        let mut request = Vec::with_capacity(head.len() + body.len());
        request.extend_from_slice(head.as_bytes());
        request.extend_from_slice(body);
        stream
            .write_all(&request)
            .await
            .map_err(|err| err.to_string())?;
        let mut status = [0u8; 12];
        stream
            .read_exact(&mut status)
            .await
            .map_err(|err| err.to_string())?;
        if status.starts_with(b"HTTP/1.1 2") || status.starts_with(b"HTTP/1.0 2") {
            Ok(())
        } else {
            Err(format!("answered {}", String::from_utf8_lossy(&status)))
        }
    };
    tokio::time::timeout(CLIENT_CALL_TIMEOUT, call)
        .await
        .map_err(|_| "timed out".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("127.0.0.1:{}", 10_000 + i))
            .collect()
    }

    /// A newer term's announcement ends an older one's list: its remaining clients would
    /// only be told of a deposed primary. The newer list is told whole.
    #[test]
    fn a_later_announcement_ends_an_earlier_ones_list() {
        let announced = Arc::new(AtomicU64::new(0));
        let old = ClientQueue::new(4, announced.clone(), addresses(3));
        assert_eq!(old.next().as_deref(), Some("127.0.0.1:10000"));
        let new = ClientQueue::new(5, announced.clone(), addresses(2));
        assert_eq!(old.next(), None);
        assert_eq!(new.next().as_deref(), Some("127.0.0.1:10000"));
        assert_eq!(new.next().as_deref(), Some("127.0.0.1:10001"));
        assert_eq!(new.next(), None);
        // A late, older announcement does not stop the newer one, and tells nobody.
        let late = ClientQueue::new(3, announced, addresses(1));
        assert_eq!(late.next(), None);
    }
}
