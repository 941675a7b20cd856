//! The transport of protocol messages to other servers.
//!
//! Each peer gets one sender task with a queue. The task sends whatever has queued up as one
//! `POST /replication/messages` (a postcard-encoded batch of envelopes) over a kept-alive
//! connection, one request at a time so that messages arrive in order. The receiver only
//! queues the batch for its driver and answers at once, so a request is short: the protocol's
//! own window (several appends in flight per backup) provides the pipelining, and while one
//! request is out, the next batch grows.
//!
//! Delivery is best effort. A batch that fails is dropped, along with everything queued for
//! that peer meanwhile: the protocol resends what matters, and stale heartbeats only waste
//! a dead peer's bandwidth.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::auth::ClusterSecret;
use super::peer_call::PeerPost;
use crate::client::http::HttpClient;
use crate::replication::{Envelope, NodeId};

/// The path protocol messages are posted to.
pub const MESSAGES_PATH: &str = "/replication/messages";
/// Most envelopes in one request.
const MAX_BATCH: usize = 4096;
/// A request that takes longer is abandoned (its messages are stale by then).
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends envelopes to peers. Owned by the driver, the only sender: no lock.
pub struct Peers {
    senders: BTreeMap<NodeId, mpsc::UnboundedSender<Envelope>>,
    http: HttpClient,
    secret: ClusterSecret,
    shutdown: CancellationToken,
    /// Where a peer's "you were removed" answer goes (to the driver).
    removed: mpsc::UnboundedSender<String>,
}

impl Peers {
    /// A peer's answer that this server was removed from the cluster is passed on to
    /// `removed`.
    pub fn new(
        http: HttpClient,
        secret: ClusterSecret,
        shutdown: CancellationToken,
        removed: mpsc::UnboundedSender<String>,
    ) -> Peers {
        Peers {
            removed,
            senders: BTreeMap::new(),
            http,
            secret,
            shutdown,
        }
    }

    /// Queues an envelope for its receiver; never blocks. Called on the driver's task, so
    /// sender tasks are spawned on its runtime.
    pub fn send(&mut self, envelope: Envelope) {
        let to = envelope.to.clone();
        let Peers {
            senders,
            http,
            secret,
            shutdown,
            removed,
        } = self;
        let spawn = |peer: NodeId| spawn_sender(peer, http, secret, shutdown, removed);
        let sender = senders
            .entry(to.clone())
            .or_insert_with(|| spawn(to.clone()));
        if let Err(mpsc::error::SendError(envelope)) = sender.send(envelope) {
            // The task ended (shutdown); start a fresh one so a later send is not lost.
            let fresh = spawn(to.clone());
            let _ = fresh.send(envelope);
            senders.insert(to, fresh);
        }
    }
}

fn spawn_sender(
    peer: NodeId,
    http: &HttpClient,
    secret: &ClusterSecret,
    shutdown: &CancellationToken,
    removed: &mpsc::UnboundedSender<String>,
) -> mpsc::UnboundedSender<Envelope> {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = sender_loop(peer, rx, http.clone(), secret.clone(), removed.clone());
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = task => {}
        }
    });
    tx
}

async fn sender_loop(
    peer: NodeId,
    mut rx: mpsc::UnboundedReceiver<Envelope>,
    http: HttpClient,
    secret: ClusterSecret,
    removed: mpsc::UnboundedSender<String>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(envelope) => batch.push(envelope),
                Err(_) => break,
            }
        }
        let call = match PeerPost::postcard(MESSAGES_PATH, &batch) {
            Ok(call) => call,
            Err(err) => {
                tracing::error!(%peer, %err, "cannot encode messages");
                continue;
            }
        };
        let result = call.send(&http, &secret, &peer, SEND_TIMEOUT).await;
        let failed = match result {
            Ok(response) if response.is_success() => false,
            Ok(response) if response.status == 403 => {
                let _ = removed.send(response.error().detail());
                true
            }
            Ok(response) => {
                debug!(%peer, status = response.status, "peer refused messages");
                true
            }
            Err(err) => {
                debug!(%peer, %err, "cannot reach peer");
                true
            }
        };
        if failed {
            // Everything queued meanwhile is stale; the protocol will resend what matters.
            while rx.try_recv().is_ok() {}
        }
    }
}
