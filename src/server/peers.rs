//! The transport of protocol messages to other servers: one long-lived, authenticated
//! stream per pair of servers (`peer_stream`), opened by whichever side first has something
//! to send, and used by both: the primary's appends go one way, the acknowledgements come
//! back on the same stream.
//!
//! Each peer has a link task with a queue. It sends whatever has queued up as one frame on
//! an open stream with that peer (one it opened, or one the peer opened to us), and opens
//! one if there is none. Messages arrive in order on a stream; the protocol's window
//! (several appends in flight per backup) gives the pipelining.
//!
//! Delivery is best effort. A frame that cannot be written is lost with its stream, along
//! with what queued meanwhile: the protocol resends what matters. When the last stream with
//! a peer closes (EOF or reset: its process died, or the connection broke), the driver is
//! told at once (`connection_lost`): a backup that loses its primary this way starts an
//! election without waiting for a timeout.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::header::{CONNECTION, HOST, UPGRADE};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::auth::{AUTH_HEADER, ClusterSecret};
use super::driver::DriverHandle;
use super::peer_stream::{
    Authenticated, Connection, Frame, HANDSHAKE_TIMEOUT, Inbound, STREAM_PATH, UPGRADE_PROTOCOL,
    dial_handshake,
};
use crate::error::{Error, Result};
use crate::replication::{Envelope, Message, NodeId};
use crate::tls::TlsClientConfig;

/// Most envelopes in one frame.
const MAX_BATCH: usize = 4096;
/// Waits between failed attempts to open a stream: the first retry at once (a connection
/// that broke is usually back), then growing. Counted from the last failed attempt, so a
/// peer that could not be reached long ago is dialled at once when there is something to
/// send (see [`dial_wait`]).
const DIAL_BACKOFF: [Duration; 5] = [
    Duration::ZERO,
    Duration::from_millis(20),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
];

/// The streams with every peer, shared by the driver (which sends) and the HTTP side
/// (which accepts streams peers open). Cheap to clone.
#[derive(Clone)]
pub struct Peers {
    inner: Arc<Shared>,
}

struct Shared {
    me: NodeId,
    secret: ClusterSecret,
    /// Under TLS: dials peers with our certificate, trusting the cluster's CA.
    tls: Option<TlsConnector>,
    shutdown: CancellationToken,
    inbound: ToDriver,
    links: Mutex<BTreeMap<NodeId, Link>>,
    /// How many streams with each peer are open.
    open_streams: Arc<Mutex<BTreeMap<NodeId, usize>>>,
}

/// A peer's link task: its queue, and where streams the peer opened are handed to it.
#[derive(Clone)]
struct Link {
    envelopes: mpsc::UnboundedSender<Envelope>,
    adopt: mpsc::UnboundedSender<Connection>,
}

/// Where the readers of every stream hand what arrives: the driver.
#[derive(Clone)]
pub struct ToDriver {
    pub driver: DriverHandle,
    /// A peer's "you were removed" goes here.
    pub removed: mpsc::UnboundedSender<String>,
}

impl Inbound for ToDriver {
    async fn messages(&self, peer: &NodeId, envelopes: Vec<Envelope>) -> Option<String> {
        // A server that campaigns although it was removed is told so, rather than ignored.
        if envelopes
            .iter()
            .any(|e| matches!(e.message, Message::Vote { .. }))
        {
            let asker = peer.clone();
            let removed = self
                .driver
                .query(move |view| view.node.is_removed(&asker))
                .await
                .unwrap_or(false);
            if removed {
                return Some(format!(
                    "{peer} was removed from the cluster; start it with an empty data dir and --join to add it again"
                ));
            }
        }
        let _ = self.driver.deliver(envelopes).await;
        None
    }

    fn removed(&self, why: String) {
        let _ = self.removed.send(why);
    }
}

impl Peers {
    pub fn new(
        me: NodeId,
        secret: ClusterSecret,
        tls: Option<Arc<TlsClientConfig>>,
        shutdown: CancellationToken,
        inbound: ToDriver,
    ) -> Peers {
        Peers {
            inner: Arc::new(Shared {
                me,
                secret,
                tls: tls.map(TlsConnector::from),
                shutdown,
                inbound,
                links: Mutex::new(BTreeMap::new()),
                open_streams: Arc::default(),
            }),
        }
    }

    /// Queues an envelope for its receiver; never blocks. On the hot path: one brief lock
    /// (the HTTP side takes it only when a peer opens a stream), no copy of the link.
    pub fn send(&self, envelope: Envelope) {
        let mut links = self.inner.links.lock().unwrap_or_else(|e| e.into_inner());
        let link = match links.get(&envelope.to) {
            Some(link) => link,
            None => {
                let to = envelope.to.clone();
                links
                    .entry(to.clone())
                    .or_insert_with(|| self.spawn_link(to))
            }
        };
        if let Err(mpsc::error::SendError(envelope)) = link.envelopes.send(envelope) {
            // The task ended (shutdown); start a fresh one so a later send is not lost.
            let to = envelope.to.clone();
            let fresh = self.spawn_link(to.clone());
            let _ = fresh.envelopes.send(envelope);
            links.insert(to, fresh);
        }
    }

    /// A stream `stream.peer` opened to us, authenticated: read it, and send on it too.
    pub fn accepted<T>(&self, stream: Authenticated<T>)
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        let peer = stream.peer.clone();
        debug!(%peer, "peer opened a stream");
        let connection = self.open(stream);
        let _ = self.link(&peer).adopt.send(connection);
    }

    /// Starts a stream's reader and writer, and tells the driver when the last stream with
    /// its peer closes.
    fn open<T>(&self, stream: Authenticated<T>) -> Connection
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        let peer = stream.peer.clone();
        let connection =
            Connection::spawn(stream, self.inner.inbound.clone(), &self.inner.shutdown);
        let counts = self.inner.open_streams.clone();
        *counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(peer.clone())
            .or_default() += 1;
        let closed = connection.closed.clone();
        let driver = self.inner.inbound.driver.clone();
        let shutdown = self.inner.shutdown.clone();
        tokio::spawn(async move {
            closed.cancelled().await;
            let last = {
                let mut counts = counts.lock().unwrap_or_else(|e| e.into_inner());
                let count = counts.entry(peer.clone()).or_default();
                *count = count.saturating_sub(1);
                *count == 0
            };
            if last && !shutdown.is_cancelled() {
                debug!(%peer, "the last stream with the peer closed");
                driver.connection_lost(peer).await;
            }
        });
        connection
    }

    fn link(&self, peer: &NodeId) -> Link {
        let mut links = self.inner.links.lock().unwrap_or_else(|e| e.into_inner());
        links
            .entry(peer.clone())
            .or_insert_with(|| self.spawn_link(peer.clone()))
            .clone()
    }

    fn spawn_link(&self, peer: NodeId) -> Link {
        let (envelopes, queue) = mpsc::unbounded_channel();
        let (adopt, adopted) = mpsc::unbounded_channel();
        let task = link_loop(self.clone(), peer, queue, adopted);
        let shutdown = self.inner.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = task => {}
            }
        });
        Link { envelopes, adopt }
    }

    /// Opens a stream to `peer`: TCP, the HTTP upgrade (signed), the handshake.
    async fn dial(&self, peer: &NodeId) -> Result<Connection> {
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.dial_stream(peer))
            .await
            .map_err(|_| Error::Unavailable(format!("opening a stream to {peer} timed out")))??;
        Ok(self.open(stream))
    }

    async fn dial_stream(
        &self,
        peer: &NodeId,
    ) -> Result<Authenticated<TokioIo<hyper::upgrade::Upgraded>>> {
        let tcp = TcpStream::connect(peer.as_str())
            .await
            .map_err(|err| Error::Unavailable(format!("cannot reach {peer}: {err}")))?;
        let _ = tcp.set_nodelay(true);
        match &self.inner.tls {
            None => self.upgrade(peer, tcp).await,
            Some(tls) => {
                let name = crate::tls::server_name(peer)?;
                let tls = tls.connect(name, tcp).await.map_err(|err| {
                    Error::Unavailable(format!("TLS handshake with {peer} failed: {err}"))
                })?;
                self.upgrade(peer, tls).await
            }
        }
    }

    /// Asks `peer` over `io` to turn the connection into a stream, and runs the handshake.
    async fn upgrade<I>(
        &self,
        peer: &NodeId,
        io: I,
    ) -> Result<Authenticated<TokioIo<hyper::upgrade::Upgraded>>>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|err| Error::Unavailable(format!("{peer}: {err}")))?;
        tokio::spawn(conn.with_upgrades());
        let request = hyper::Request::get(STREAM_PATH)
            .header(HOST, peer.as_str())
            .header(CONNECTION, "upgrade")
            .header(UPGRADE, UPGRADE_PROTOCOL)
            .header(AUTH_HEADER, self.inner.secret.sign("GET", STREAM_PATH, b""))
            .body(Empty::<Bytes>::new())
            .map_err(|err| Error::Internal(format!("stream request: {err}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| Error::Unavailable(format!("{peer}: {err}")))?;
        match response.status().as_u16() {
            101 => {}
            401 => {
                return Err(Error::Unauthorized(format!(
                    "{peer} refused our credentials; check the cluster secret"
                )));
            }
            status => {
                return Err(Error::Unavailable(format!(
                    "{peer} answered the stream request with {status}"
                )));
            }
        }
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(|err| Error::Unavailable(format!("{peer}: {err}")))?;
        dial_handshake(
            TokioIo::new(upgraded),
            &self.inner.secret,
            &self.inner.me,
            peer,
        )
        .await
    }
}

/// One peer's link: sends what queues up on an open stream, opening one when needed.
async fn link_loop(
    peers: Peers,
    peer: NodeId,
    mut queue: mpsc::UnboundedReceiver<Envelope>,
    mut adopted: mpsc::UnboundedReceiver<Connection>,
) {
    let mut streams: Vec<Connection> = Vec::new();
    let mut failures = 0usize;
    let mut last_failure: Option<Instant> = None;
    loop {
        let first = tokio::select! {
            envelope = queue.recv() => match envelope {
                Some(envelope) => envelope,
                None => return,
            },
            Some(connection) = adopted.recv() => {
                streams.push(connection);
                continue;
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(envelope) => batch.push(envelope),
                Err(_) => break,
            }
        }
        while let Ok(connection) = adopted.try_recv() {
            streams.push(connection);
        }
        streams.retain(Connection::is_open);
        if streams.is_empty() {
            let wait = dial_wait(failures, last_failure.map(|at| at.elapsed()));
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            match peers.dial(&peer).await {
                Ok(connection) => {
                    if failures > 0 {
                        info!(%peer, "stream to the peer open again");
                    }
                    failures = 0;
                    streams.push(connection);
                }
                Err(err) => {
                    failures += 1;
                    last_failure = Some(Instant::now());
                    debug!(%peer, %err, "cannot open a stream");
                    // What queued meanwhile is stale; the protocol resends what matters.
                    while queue.try_recv().is_ok() {}
                    continue;
                }
            }
        }
        // The newest stream: a peer that reconnected is reached on its fresh one.
        if let Some(stream) = streams.last()
            && stream.frames.send(Frame::Messages(batch)).is_err()
        {
            streams.pop();
        }
    }
}

/// How long to wait before dialling a peer after `failures` failed attempts in a row, the
/// last of them `since_last` ago: what is left of the backoff. Without this, a link idle
/// since a failure (a backup's link to another backup that restarted, used only when an
/// election comes) waited the whole backoff before its first message, a vote request,
/// and the other backup's own campaign started meanwhile: a split vote, and an election
/// timeout before the next try.
fn dial_wait(failures: usize, since_last: Option<Duration>) -> Duration {
    let backoff = DIAL_BACKOFF[failures.min(DIAL_BACKOFF.len() - 1)];
    backoff.saturating_sub(since_last.unwrap_or(Duration::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The backoff between failed dials counts from the last failure: right after one the
    /// link waits it out, but a peer that failed long ago is dialled at once.
    #[test]
    fn a_backoff_counts_from_the_last_failure() {
        assert_eq!(
            dial_wait(0, None),
            Duration::ZERO,
            "the first dial goes at once"
        );
        assert_eq!(
            dial_wait(1, Some(Duration::ZERO)),
            DIAL_BACKOFF[1],
            "right after a failure, the whole backoff"
        );
        assert_eq!(
            dial_wait(3, Some(Duration::from_millis(30))),
            DIAL_BACKOFF[3] - Duration::from_millis(30),
            "what is left of it"
        );
        assert_eq!(
            dial_wait(9, Some(Duration::from_secs(5))),
            Duration::ZERO,
            "a failure long ago: at once"
        );
        assert_eq!(
            dial_wait(9, Some(Duration::ZERO)),
            DIAL_BACKOFF[DIAL_BACKOFF.len() - 1],
            "the backoff stops growing"
        );
    }
}
