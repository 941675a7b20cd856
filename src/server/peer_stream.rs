//! One long-lived stream between two servers: how it is opened, authenticated, and read and
//! written.
//!
//! A server opens a stream with `GET /replication/stream` and an HTTP upgrade; the request
//! is signed like every peer request, so the cluster-secret check in front of
//! `/replication/` refuses a stranger with 401 before anything else. On the upgraded
//! connection the two prove to each other, once, that they hold the cluster secret, with a
//! challenge-response that cannot be replayed:
//!
//! ```text
//!   dialer                                   acceptor
//!     ◀──────────── Challenge { nonce_a } ──────
//!     ── Hello { id, nonce_d, mac_d } ─────────▶   mac_d = HMAC(secret, "dial", nonce_a, id, acceptor)
//!     ◀──────────── Welcome { mac_a } ───────────   mac_a = HMAC(secret, "accept", nonce_d, acceptor, id)
//! ```
//!
//! Each side's nonce is fresh, so a recorded handshake is worth nothing on another
//! connection. After it, frames (`[u32 length][postcard]`) carry batches of protocol
//! messages both ways: appends one way, their acknowledgements back on the same stream. The
//! frames themselves are not signed; on an open network the transport is TLS (see the
//! README's security notes).
//!
//! A connection is two tasks, a reader and a writer. The writer drains whatever frames have
//! queued and writes them with one flush, so a busy link costs one `writev` per batch of
//! batches. When either task ends, the connection is closed, and whoever watches it hears
//! (`closed`).

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use super::auth::ClusterSecret;
use crate::error::{Error, Result};
use crate::replication::{Envelope, NodeId};

/// The path a stream is opened on.
pub const STREAM_PATH: &str = "/replication/stream";
/// The protocol named in the upgrade.
pub const UPGRADE_PROTOCOL: &str = "understudy-peer";
/// Largest frame: a batch of appends.
pub(crate) const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
/// The largest frame before the handshake is done (its frames are well under 1 KiB).
const HANDSHAKE_FRAME_BYTES: usize = 4096;
/// How long the handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most frames written before one flush.
const MAX_FRAMES_PER_FLUSH: usize = 256;

/// What travels on a stream.
#[derive(Debug, Serialize, Deserialize)]
pub enum Frame {
    Challenge {
        nonce: [u8; 32],
    },
    Hello {
        id: NodeId,
        nonce: [u8; 32],
        mac: Vec<u8>,
    },
    Welcome {
        mac: Vec<u8>,
    },
    /// Protocol messages, in order.
    Messages(Vec<Envelope>),
    /// The receiver says the sender was removed from the cluster (and why).
    Removed(String),
}

impl Frame {
    pub(crate) fn encode(&self) -> Result<Bytes> {
        postcard::to_stdvec(self)
            .map(Bytes::from)
            .map_err(|err| Error::Internal(format!("cannot encode a frame: {err}")))
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Frame> {
        postcard::from_bytes(bytes).map_err(|err| Error::BadRequest(format!("bad frame: {err}")))
    }
}

/// The codec of an authenticated stream: frames up to [`MAX_FRAME_BYTES`].
pub(crate) fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec()
}

/// HMAC under the secret over length-prefixed parts, so no two part lists collide.
fn keyed_mac(secret: &ClusterSecret, parts: [&[u8]; 4]) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.bytes()).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac
}

fn handshake_mac(secret: &ClusterSecret, role: &str, nonce: &[u8], a: &str, b: &str) -> Vec<u8> {
    keyed_mac(secret, [role.as_bytes(), nonce, a.as_bytes(), b.as_bytes()])
        .finalize()
        .into_bytes()
        .to_vec()
}

fn verify_mac(
    secret: &ClusterSecret,
    role: &str,
    nonce: &[u8],
    a: &str,
    b: &str,
    tag: &[u8],
) -> bool {
    // Constant-time comparison.
    keyed_mac(secret, [role.as_bytes(), nonce, a.as_bytes(), b.as_bytes()])
        .verify_slice(tag)
        .is_ok()
}

fn refused() -> Error {
    Error::Unauthorized("the peer stream's handshake failed".to_string())
}

/// A stream after its handshake, with the peer's name.
pub struct Authenticated<T> {
    pub peer: NodeId,
    read: FramedRead<tokio::io::ReadHalf<T>, LengthDelimitedCodec>,
    write: FramedWrite<tokio::io::WriteHalf<T>, LengthDelimitedCodec>,
}

async fn next_frame<R: AsyncRead + Unpin>(
    read: &mut FramedRead<R, LengthDelimitedCodec>,
) -> Result<Frame> {
    match read.next().await {
        Some(Ok(bytes)) => Frame::decode(&bytes),
        Some(Err(err)) => Err(Error::Io(format!("peer stream: {err}"))),
        None => Err(Error::Io("the peer closed the stream".to_string())),
    }
}

async fn send_frame<W: AsyncWrite + Unpin>(
    write: &mut FramedWrite<W, LengthDelimitedCodec>,
    frame: &Frame,
) -> Result<()> {
    write
        .send(frame.encode()?)
        .await
        .map_err(|err| Error::Io(format!("peer stream: {err}")))
}

/// The codec during the handshake: its frames are small, and a length announced before the
/// peer proved the secret must not make us reserve a large buffer.
pub(crate) fn handshake_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(HANDSHAKE_FRAME_BYTES)
        .new_codec()
}

impl<T> Authenticated<T> {
    /// The stream after a handshake: full-size frames from here on.
    fn open(
        peer: NodeId,
        mut read: FramedRead<tokio::io::ReadHalf<T>, LengthDelimitedCodec>,
        write: FramedWrite<tokio::io::WriteHalf<T>, LengthDelimitedCodec>,
    ) -> Authenticated<T> {
        read.decoder_mut().set_max_frame_length(MAX_FRAME_BYTES);
        Authenticated { peer, read, write }
    }
}

/// The dialer's side of the handshake: we are `me`, the other end should be `peer`.
pub async fn dial_handshake<T: AsyncRead + AsyncWrite>(
    io: T,
    secret: &ClusterSecret,
    me: &NodeId,
    peer: &NodeId,
) -> Result<Authenticated<T>> {
    let (read, write) = tokio::io::split(io);
    let mut read = FramedRead::new(read, handshake_codec());
    let mut write = FramedWrite::new(write, codec());
    let Frame::Challenge { nonce: theirs } = next_frame(&mut read).await? else {
        return Err(refused());
    };
    let ours: [u8; 32] = rand::random();
    let mac = handshake_mac(secret, "dial", &theirs, me, peer);
    send_frame(
        &mut write,
        &Frame::Hello {
            id: me.clone(),
            nonce: ours,
            mac,
        },
    )
    .await?;
    let Frame::Welcome { mac } = next_frame(&mut read).await? else {
        return Err(refused());
    };
    if !verify_mac(secret, "accept", &ours, peer, me, &mac) {
        return Err(refused());
    }
    Ok(Authenticated::open(peer.clone(), read, write))
}

/// The acceptor's side of the handshake: we are `me`; returns who dialed.
pub async fn accept_handshake<T: AsyncRead + AsyncWrite>(
    io: T,
    secret: &ClusterSecret,
    me: &NodeId,
) -> Result<Authenticated<T>> {
    let (read, write) = tokio::io::split(io);
    let mut read = FramedRead::new(read, handshake_codec());
    let mut write = FramedWrite::new(write, codec());
    let ours: [u8; 32] = rand::random();
    send_frame(&mut write, &Frame::Challenge { nonce: ours }).await?;
    let Frame::Hello { id, nonce, mac } = next_frame(&mut read).await? else {
        return Err(refused());
    };
    if id.is_empty() || id.len() > 255 || !verify_mac(secret, "dial", &ours, &id, me, &mac) {
        return Err(refused());
    }
    let mac = handshake_mac(secret, "accept", &nonce, me, &id);
    send_frame(&mut write, &Frame::Welcome { mac }).await?;
    Ok(Authenticated::open(id, read, write))
}

/// What a connection's reader hands on.
pub trait Inbound: Clone + Send + 'static {
    /// Protocol messages from `peer`; returns a reason to tell it that it was removed.
    fn messages(
        &self,
        peer: &NodeId,
        envelopes: Vec<Envelope>,
    ) -> impl std::future::Future<Output = Option<String>> + Send;
    /// `peer` says we were removed from the cluster.
    fn removed(&self, why: String);
}

/// A running connection: frames queued on `frames` are written; `closed` fires when it ends.
#[derive(Clone)]
pub struct Connection {
    pub frames: mpsc::UnboundedSender<Frame>,
    pub closed: CancellationToken,
}

impl Connection {
    /// Starts the reader and writer of an authenticated stream.
    pub fn spawn<T, I>(
        stream: Authenticated<T>,
        inbound: I,
        shutdown: &CancellationToken,
    ) -> Connection
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
        I: Inbound,
    {
        let (frames, queued) = mpsc::unbounded_channel();
        let closed = shutdown.child_token();
        let Authenticated { peer, read, write } = stream;
        tokio::spawn(write_frames(write, queued, closed.clone()));
        tokio::spawn(read_frames(
            read,
            peer,
            inbound,
            frames.clone(),
            closed.clone(),
        ));
        Connection { frames, closed }
    }

    pub fn is_open(&self) -> bool {
        !self.closed.is_cancelled() && !self.frames.is_closed()
    }
}

async fn write_frames<W: AsyncWrite + Unpin>(
    mut write: FramedWrite<W, LengthDelimitedCodec>,
    mut queued: mpsc::UnboundedReceiver<Frame>,
    closed: CancellationToken,
) {
    let _close_on_exit = closed.clone().drop_guard();
    loop {
        let first = tokio::select! {
            _ = closed.cancelled() => return,
            frame = queued.recv() => match frame {
                Some(frame) => frame,
                None => return,
            },
        };
        let mut frame = Some(first);
        let mut written = 0;
        while let Some(next) = frame.take() {
            let Ok(bytes) = next.encode() else { continue };
            if write.feed(bytes).await.is_err() {
                return;
            }
            written += 1;
            if written < MAX_FRAMES_PER_FLUSH {
                frame = queued.try_recv().ok();
            }
        }
        if SinkExt::<Bytes>::flush(&mut write).await.is_err() {
            return;
        }
    }
}

async fn read_frames<R: AsyncRead + Unpin, I: Inbound>(
    mut read: FramedRead<R, LengthDelimitedCodec>,
    peer: NodeId,
    inbound: I,
    frames: mpsc::UnboundedSender<Frame>,
    closed: CancellationToken,
) {
    let _close_on_exit = closed.clone().drop_guard();
    loop {
        let frame = tokio::select! {
            _ = closed.cancelled() => return,
            frame = next_frame(&mut read) => frame,
        };
        match frame {
            Ok(Frame::Messages(envelopes)) => {
                if envelopes.iter().any(|e| e.from != peer) {
                    tracing::warn!(%peer, "a peer sent messages in another's name; closing");
                    return;
                }
                if let Some(why) = inbound.messages(&peer, envelopes).await {
                    let _ = frames.send(Frame::Removed(why));
                }
            }
            Ok(Frame::Removed(why)) => inbound.removed(why),
            Ok(_) => {
                tracing::warn!(%peer, "unexpected handshake frame; closing");
                return;
            }
            Err(err) => {
                tracing::debug!(%peer, %err, "peer stream ended");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> ClusterSecret {
        ClusterSecret::new(text).unwrap()
    }

    /// Security: two servers under the same secret open a stream and learn each other's
    /// names; under another secret the acceptor refuses the dialer.
    #[tokio::test]
    async fn the_handshake_needs_the_same_secret() {
        let (dialer_id, acceptor_id) = ("d:1".to_string(), "a:2".to_string());
        let (a, b) = tokio::io::duplex(4096);
        let ours = secret("the secret of this cluster");
        let (dialer, acceptor) = tokio::join!(
            dial_handshake(a, &ours, &dialer_id, &acceptor_id),
            accept_handshake(b, &ours, &acceptor_id),
        );
        assert_eq!(dialer.unwrap().peer, "a:2");
        assert_eq!(acceptor.unwrap().peer, "d:1");

        let (a, b) = tokio::io::duplex(4096);
        let theirs = secret("the secret of another cluster");
        let (_, acceptor) = tokio::join!(
            dial_handshake(a, &theirs, &dialer_id, &acceptor_id),
            accept_handshake(b, &ours, &acceptor_id),
        );
        assert!(acceptor.is_err(), "a stranger is refused");
    }

    /// Security: a recorded `Hello` is worth nothing on another connection, whose
    /// challenge carries a fresh nonce.
    #[tokio::test]
    async fn a_recorded_hello_cannot_be_replayed() {
        let key = secret("the secret of this cluster");
        let me = "a:2".to_string();
        // A Hello made for some earlier challenge.
        let earlier: [u8; 32] = [7; 32];
        let recorded = Frame::Hello {
            id: "d:1".to_string(),
            nonce: [9; 32],
            mac: handshake_mac(&key, "dial", &earlier, "d:1", &me),
        };
        let (a, b) = tokio::io::duplex(4096);
        let attacker = async move {
            let (read, write) = tokio::io::split(a);
            let mut read = FramedRead::new(read, codec());
            let mut write = FramedWrite::new(write, codec());
            let challenge = next_frame(&mut read).await.unwrap();
            assert!(matches!(challenge, Frame::Challenge { nonce } if nonce != earlier));
            send_frame(&mut write, &recorded).await.unwrap();
            // Keep the pipe open until the acceptor has decided.
            let _ = next_frame(&mut read).await;
        };
        let (_, accepted) = tokio::join!(attacker, accept_handshake(b, &key, &me));
        assert!(accepted.is_err(), "the replayed Hello is refused");
    }
}
