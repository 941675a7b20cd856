//! Accepting connections: the cap on open connections, the TLS handshake, HTTP/1.1 with a
//! bound on how long a request's headers may take, and a graceful end.
//!
//! Each accepted connection runs in a task of its own, so a slow handshake or a slow sender
//! holds up nobody else. Every request is handed to the server's service ([`Front`]) with
//! one extension, the [`ConnectionInfo`] of the connection it came on: the remote address
//! (for limits kept per source, and the origin stored with a command) and whether the
//! connection presented a client certificate the cluster's CA signed (which peer routes
//! require under TLS).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::front::Front;
use super::metrics::Metrics;
use crate::error::Error;
use crate::tls::ServerTls;

/// Default cap on open connections (clients, peers, scrapers together).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default bound on receiving a request's headers, from the first byte expected.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After an `accept` error (out of file descriptors, say), wait this long before the next.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// How connections are accepted.
#[derive(Clone, Debug)]
pub struct ListenOptions {
    /// TLS, or plain HTTP if none.
    pub tls: Option<ServerTls>,
    /// Connections over this many are answered `429` and closed (plain HTTP) or closed.
    pub max_connections: usize,
    /// A request whose headers take longer closes its connection.
    pub header_read_timeout: Duration,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            tls: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

/// The connection a request came on. One extension for both facts: every extension is a
/// box and a map entry of its own, made and dropped for every request.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionInfo {
    /// The TCP peer.
    pub remote: SocketAddr,
    /// Whether it presented a client certificate signed by the cluster's CA (always false
    /// without TLS).
    pub certified: bool,
}

/// The remote address of the connection a request came on, for handlers.
pub struct Remote(pub SocketAddr);

impl<S: Send + Sync> FromRequestParts<S> for Remote {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Remote, Error> {
        parts
            .extensions
            .get::<ConnectionInfo>()
            .map(|connection| Remote(connection.remote))
            .ok_or_else(|| Error::Internal("a request without its connection".to_string()))
    }
}

/// What a connection over the cap is told before it is closed.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\ncontent-type: application/json\r\ncontent-length: 89\r\nconnection: close\r\n\r\n{\"error\":\"too_many_requests\",\"message\":\"too many open connections\",\"retry_after_ms\":1000}";

/// Serves `front` on `listener` until `shutdown`; then lets open requests finish for at
/// most `drain` and returns.
pub async fn serve(
    listener: TcpListener,
    front: Front,
    options: ListenOptions,
    metrics: Metrics,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let acceptor = options
        .tls
        .as_ref()
        .map(|tls| TlsAcceptor::from(tls.server.clone()));
    let connections = TaskTracker::new();
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    warn!(%err, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        // Small frames and small answers must leave at once, not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.limited("connections");
            if acceptor.is_none() {
                connections.spawn(refuse_over_capacity(tcp));
            }
            continue;
        };
        let front = front.clone();
        let acceptor = acceptor.clone();
        // A token of its own: every poll of a waiting connection looks at its token, and
        // one token shared by all connections would have them all take one lock.
        let shutdown = shutdown.child_token();
        let metrics = metrics.clone();
        let header_timeout = options.header_read_timeout;
        connections.spawn(async move {
            let _slot = slot;
            match acceptor {
                None => {
                    let service = with_connection_info(
                        front,
                        ConnectionInfo {
                            remote,
                            certified: false,
                        },
                    );
                    serve_http(tcp, service, header_timeout, &metrics, shutdown).await;
                }
                Some(acceptor) => {
                    let tls =
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(err)) => {
                                debug!(%remote, %err, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                metrics.limited("header_timeout");
                                return;
                            }
                        };
                    // The verifier accepted a certificate only if the cluster's CA signed it.
                    let certified = tls.get_ref().1.peer_certificates().is_some();
                    let service = with_connection_info(front, ConnectionInfo { remote, certified });
                    serve_http(tls, service, header_timeout, &metrics, shutdown).await;
                }
            }
        });
    }
    connections.close();
    if tokio::time::timeout(drain, connections.wait())
        .await
        .is_err()
    {
        warn!("open connections did not close in time");
    }
}

/// The server's service, with the connection's facts added to every request.
fn with_connection_info(
    front: Front,
    connection: ConnectionInfo,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = Infallible,
    Future = impl Future<Output = Result<axum::response::Response, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(connection);
        let front = front.clone();
        async move { Ok(front.call(request).await) }
    })
}

/// One HTTP/1.1 connection (with upgrades, for the peer stream) until it ends or, on
/// `shutdown`, until its request in progress is answered.
async fn serve_http<I, S>(
    io: I,
    service: S,
    header_timeout: Duration,
    metrics: &Metrics,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<Incoming>,
            Response = axum::response::Response,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        if err.is_timeout() {
            metrics.limited("header_timeout");
        }
        debug!(%err, "connection ended with an error");
    }
}

/// Tells a connection over the cap to come back later, and closes it.
async fn refuse_over_capacity(mut tcp: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = tcp.write_all(OVER_CAPACITY).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}
