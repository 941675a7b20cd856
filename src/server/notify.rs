//! Announcements the primary makes to everyone: the list of backups
//! (`replication/set-backups`, to every backup) and the new primary (`/new-primary`, to every
//! known client). They run in the background with a bound on parallel calls and a short
//! timeout each; a failure is logged and forgotten (a client that misses the call finds the
//! primary through redirects), so they never hold up replication.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::auth::ClusterSecret;
use super::metrics::Metrics;
#[cfg(target_os = "linux")]
use super::notify_ring::{Ring, RingThread};
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
const CLIENT_CALLS: usize = 512;
/// Threads with a ring each, at most, telling clients (on Linux).
#[cfg(target_os = "linux")]
const MAX_RINGS: usize = 4;
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
    /// The threads that tell clients through io_uring, where the kernel offers it.
    #[cfg(target_os = "linux")]
    rings: Vec<RingThread>,
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
    /// A notifier; with `io_uring`, it tells clients through io_uring where the kernel
    /// offers it.
    #[cfg_attr(not(target_os = "linux"), allow(unused_variables))]
    pub fn new(
        id: NodeId,
        http: HttpClient,
        secret: ClusterSecret,
        metrics: Metrics,
        told: Told,
        io_uring: bool,
    ) -> Notifier {
        Notifier {
            id,
            http,
            secret,
            slots: Arc::new(Semaphore::new(MAX_PARALLEL)),
            announced: Arc::new(AtomicU64::new(0)),
            metrics,
            told,
            #[cfg(target_os = "linux")]
            rings: if io_uring { start_rings() } else { Vec::new() },
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
    /// There may be tens of thousands, so this is cheap per client: a fixed number of calls
    /// are in flight, taking addresses off one list, and each is a bare HTTP/1.1 exchange on
    /// a fresh connection (the body is encoded once), with a short timeout; nothing waits
    /// for it, and a client that misses it finds the primary through redirects. On Linux the
    /// calls run through io_uring on threads of their own ([`super::notify_ring`]); where
    /// the kernel offers no ring, or with `--no-io-uring`, on tokio sockets.
    pub fn new_primary(&self, term: Term, addresses: Vec<String>) {
        let notice = NewPrimary {
            primary: self.id.clone(),
            term,
        };
        let Ok(body) = serde_json::to_vec(&notice) else {
            return;
        };
        let total = addresses.len();
        // Made even for no clients: a newer term ends an older announcement's list.
        let queue = ClientQueue::new(term, self.announced.clone(), addresses);
        if total == 0 {
            return;
        }
        let announcement = Arc::new(Announcement {
            term,
            total,
            queue,
            body,
            metrics: self.metrics.clone(),
            told: self.told.clone(),
            failures: Tally::default(),
            callers: AtomicUsize::new(0),
        });
        #[cfg(target_os = "linux")]
        {
            announcement
                .callers
                .store(self.rings.len(), Ordering::SeqCst);
            let mut running = 0;
            for ring in &self.rings {
                let on_ring = announcement.clone();
                match ring.run(Box::new(move |ring| on_ring.through(ring))) {
                    Ok(()) => running += 1,
                    Err(_) => announcement.caller_done(),
                }
            }
            if running > 0 {
                return;
            }
        }
        announcement.on_tasks();
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

/// One term's announcement to its clients, shared by whatever makes the calls.
struct Announcement {
    term: Term,
    total: usize,
    queue: ClientQueue,
    body: Vec<u8>,
    metrics: Metrics,
    told: Told,
    failures: Tally,
    /// Rings or tasks still making calls: the last one reports.
    callers: AtomicUsize,
}

impl Announcement {
    /// Makes the calls through `ring`, on its thread.
    #[cfg(target_os = "linux")]
    fn through(&self, ring: &mut Ring) {
        let told = ring.tell(
            || self.queue.next(),
            &self.body,
            CLIENT_CALL_TIMEOUT,
            |address, outcome| self.record(address, outcome),
        );
        if let Err(err) = told {
            warn!(term = self.term, %err, "telling clients of the new primary stopped: the ring failed");
        }
        self.caller_done();
    }

    /// Makes the calls on tokio sockets: a fixed number of tasks take addresses off the list.
    fn on_tasks(self: Arc<Self>) {
        let workers = CLIENT_CALLS.min(self.total);
        self.callers.store(workers, Ordering::SeqCst);
        for _ in 0..workers {
            let this = self.clone();
            tokio::spawn(async move {
                while let Some(address) = this.queue.next() {
                    let outcome = tell_client(&address, &this.body).await;
                    this.record(address, outcome);
                }
                this.caller_done();
            });
        }
    }

    /// One client's outcome.
    fn record(&self, address: String, outcome: Outcome) {
        self.metrics.notification(outcome.is_ok());
        match outcome {
            Ok(()) => self.told.record(address, self.term),
            Err(why) => {
                debug!(%address, why, "client not told of the new primary");
                self.failures.add(&address, &why);
            }
        }
    }

    /// A ring or task has no more calls to make. After the last: one line for the
    /// announcement, however many clients failed.
    fn caller_done(&self) {
        if self.callers.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let Some((failed, first)) = self.failures.summary() else {
            return;
        };
        let total = self.total;
        warn!(
            term = self.term,
            failed,
            clients = total,
            first_failure = first,
            "{failed} of {total} clients could not be told of the new primary (first: {first})"
        );
    }
}

/// Rings to tell clients through: one per core, up to a few, sharing the calls in flight.
/// None where the kernel offers no io_uring.
#[cfg(target_os = "linux")]
fn start_rings() -> Vec<RingThread> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let count = cores.clamp(1, MAX_RINGS);
    let mut rings = Vec::with_capacity(count);
    for _ in 0..count {
        match RingThread::start(CLIENT_CALLS / count) {
            Ok(ring) => rings.push(ring),
            Err(err) => {
                info!(%err, "no io_uring here: clients are told on tokio sockets");
                break;
            }
        }
    }
    rings
}

/// The failures of one announcement.
#[derive(Default)]
struct Tally {
    failed: AtomicUsize,
    first: Mutex<Option<String>>,
}

impl Tally {
    fn add(&self, address: &str, why: &str) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.first
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(|| format!("{address}: {why}"));
    }

    /// How many failed and the first of them, if any did.
    fn summary(&self) -> Option<(usize, String)> {
        let failed = self.failed.load(Ordering::Acquire);
        let first = self
            .first
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()?;
        Some((failed, first))
    }
}

/// How one call to a client ended: told, or why not.
pub(super) type Outcome = std::result::Result<(), String>;

/// The bytes of a listener's answer that say whether it took the notice: `HTTP/1.1 200`.
pub(super) const STATUS_LINE: usize = 12;

/// Writes the `POST /new-primary` to the listener at `address` into `request`.
pub(super) fn write_request(request: &mut Vec<u8>, address: &str, body: &[u8]) {
    use std::io::Write;
    request.clear();
    // Writing into a Vec cannot fail.
    let _ = write!(
        request,
        "POST {NEW_PRIMARY_PATH} HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    request.extend_from_slice(body);
}

/// Whether a listener's status line says it took the notice.
pub(super) fn judge_status(status: &[u8; STATUS_LINE]) -> Outcome {
    if status.starts_with(b"HTTP/1.1 2") || status.starts_with(b"HTTP/1.0 2") {
        Ok(())
    } else {
        Err(format!("answered {}", String::from_utf8_lossy(status)))
    }
}

/// One `POST /new-primary` to a client's listener on a tokio socket: connect, send, read the
/// status line. The request goes out in one write, which Nagle's algorithm never holds back
/// (nothing is unacknowledged before it), so the socket is left as it is: one system call
/// fewer a client.
async fn tell_client(address: &str, body: &[u8]) -> Outcome {
    let call = async {
        let mut stream = TcpStream::connect(address)
            .await
            .map_err(|err| err.to_string())?;
        let mut request = Vec::new();
        write_request(&mut request, address, body);
        stream
            .write_all(&request)
            .await
            .map_err(|err| err.to_string())?;
        let mut status = [0u8; STATUS_LINE];
        stream
            .read_exact(&mut status)
            .await
            .map_err(|err| err.to_string())?;
        judge_status(&status)
    };
    tokio::time::timeout(CLIENT_CALL_TIMEOUT, call)
        .await
        .map_err(|_| "timed out".to_string())?
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A client's listener that answers every request with `status` (or, with `None`, never
    /// answers), and keeps what it was sent.
    pub(crate) async fn listener(
        status: Option<&'static str>,
        heard: Arc<Mutex<Vec<String>>>,
    ) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let heard = heard.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !request.ends_with(b"}") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&chunk[..n]),
                        }
                    }
                    heard
                        .lock()
                        .expect("lock")
                        .push(String::from_utf8_lossy(&request).into_owned());
                    match status {
                        Some(status) => {
                            let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                            let _ = stream.write_all(answer.as_bytes()).await;
                        }
                        // Holds the connection open without a word.
                        None => {
                            let _ = stream.read(&mut chunk).await;
                        }
                    }
                });
            }
        });
        address
    }

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

    /// The fallback where the kernel offers no io_uring: each outcome as through a ring.
    #[tokio::test]
    async fn on_tokio_sockets_a_client_is_told_or_the_cause_is_given() {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let body = br#"{"primary":"127.0.0.1:1","term":7}"#;
        let told = listener(Some("200 OK"), heard.clone()).await;
        assert_eq!(tell_client(&told, body).await, Ok(()));
        let refusing = listener(Some("503 Service Unavailable"), heard.clone()).await;
        assert_eq!(
            tell_client(&refusing, body).await,
            Err("answered HTTP/1.1 503".to_string())
        );
        let silent = listener(None, heard.clone()).await;
        assert_eq!(
            tell_client(&silent, body).await,
            Err("timed out".to_string())
        );
        let requests = heard.lock().expect("lock");
        assert_eq!(requests.len(), 3);
        assert!(requests[0].starts_with("POST /new-primary HTTP/1.1\r\n"));
        assert!(requests[0].ends_with(r#"{"primary":"127.0.0.1:1","term":7}"#));
    }
}
