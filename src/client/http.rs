//! A small HTTP/1.1 client for JSON calls, shared by the client library and the server's
//! calls to its peers.
//!
//! It wraps hyper-util's pooled client, so keep-alive connections to a server are reused
//! across requests (a heartbeat every few milliseconds must not open a socket each time),
//! and adds the two things every caller here needs: a timeout on the whole exchange and a
//! mapping of every transport failure to [`Error::Unavailable`], which callers treat as
//! "try again, perhaps elsewhere". Redirects are never followed: a `307 not_primary` is an
//! answer the caller must see.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, LOCATION, RETRY_AFTER};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as PooledClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use hyper::Method;

use crate::api::errors::{self, ErrorBody};
use crate::error::{Error, Result};
use crate::tls::TlsClientConfig;

/// Default bound on one whole request: connect, send, wait, and read the answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default bound on an answer's body. Large enough for a state transfer of a demo-sized
/// cluster; a server can raise it with [`HttpClient::with_max_response_bytes`].
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Idle pooled connections are closed after this long, so a dead peer's sockets do not pile
/// up; before a server's default header read timeout (30 s) closes them from its side, so a
/// request never races that close.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// A reusable HTTP/1.1 client. Cloning is cheap and clones share the connection pool.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: PooledClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `https` when the client was given a TLS config, else `http`.
    scheme: &'static str,
    timeout: Duration,
    max_response_bytes: usize,
}

/// An answer of any status: callers decide what a status means.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    /// A client with the default timeout ([`DEFAULT_TIMEOUT`]).
    pub fn new() -> Self {
        Self::with_timeout(DEFAULT_TIMEOUT)
    }

    /// A client whose requests each give up after `timeout`.
    pub fn with_timeout(timeout: Duration) -> Self {
        Self::with_tls(timeout, None)
    }

    /// A client whose requests each give up after `timeout`, speaking `https://` under
    /// `tls` if given (plain `http://` otherwise).
    pub fn with_tls(timeout: Duration, tls: Option<Arc<TlsClientConfig>>) -> Self {
        let mut connector = HttpConnector::new();
        // Small JSON requests; Nagle's algorithm would only add latency to heartbeats.
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        // hyper-rustls hands plain `http://` through, so one type serves both modes.
        connector.enforce_http(false);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let tls = tls.map_or_else(
            || {
                // Never used for `http://`; a config that trusts nobody.
                crate::tls::client_config_trusting_nobody()
            },
            |config| {
                let mut config = (*config).clone();
                // hyper-rustls sets the protocols it speaks itself.
                config.alpn_protocols.clear();
                config
            },
        );
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let inner = PooledClient::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            // Without a timer the pool never evicts idle connections.
            .pool_timer(TokioTimer::new())
            .build(connector);
        HttpClient {
            inner,
            scheme,
            timeout,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }

    /// The same pool with a different timeout per request.
    pub fn with_request_timeout(&self, timeout: Duration) -> Self {
        HttpClient {
            timeout,
            ..self.clone()
        }
    }

    /// Whether requests go over TLS.
    pub fn is_tls(&self) -> bool {
        self.scheme == "https"
    }

    /// The same pool with a different bound on answer bodies.
    pub fn with_max_response_bytes(mut self, max: usize) -> Self {
        self.max_response_bytes = max;
        self
    }

    /// The timeout applied by [`request`](Self::request).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends one request to `addr` (`HOST:PORT`) and reads the whole answer, whatever its
    /// status. Fails with [`Error::Unavailable`] if the server cannot be reached, the
    /// connection breaks, or the exchange takes longer than the client's timeout.
    pub async fn request(
        &self,
        method: Method,
        addr: &str,
        path_and_query: &str,
        headers: &[(&str, String)],
        body: Option<Bytes>,
    ) -> Result<HttpResponse> {
        self.request_with_timeout(method, addr, path_and_query, headers, body, self.timeout)
            .await
    }

    /// [`request`](Self::request) with a timeout for this one call (e.g. a long state
    /// transfer, or a heartbeat that is useless if late).
    pub async fn request_with_timeout(
        &self,
        method: Method,
        addr: &str,
        path_and_query: &str,
        headers: &[(&str, String)],
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<HttpResponse> {
        let request = build_request(self.scheme, method, addr, path_and_query, headers, body)?;
        let exchange = async {
            let response = self.inner.request(request).await.map_err(|err| {
                // `is_connect` separates "nobody there" from "broke mid-way"; both mean
                // the caller should look elsewhere, but the message helps an operator.
                if err.is_connect() {
                    Error::Unavailable(format!("cannot connect to {addr}: {err}"))
                } else {
                    Error::Unavailable(format!("request to {addr} failed: {err}"))
                }
            })?;
            let (parts, incoming) = response.into_parts();
            let body = Limited::new(incoming, self.max_response_bytes)
                .collect()
                .await
                .map_err(|err| {
                    Error::Unavailable(format!("reading the answer from {addr} failed: {err}"))
                })?
                .to_bytes();
            Ok(HttpResponse {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Error::Unavailable(format!(
                "{addr} did not answer within {} ms",
                timeout.as_millis()
            ))),
        }
    }

    /// POSTs `body` as JSON, adding `Content-Type: application/json` unless `headers`
    /// already has a content type.
    pub async fn post_json<T: Serialize + ?Sized>(
        &self,
        addr: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &T,
    ) -> Result<HttpResponse> {
        let bytes = serde_json::to_vec(body)
            .map_err(|err| Error::Internal(format!("cannot encode request body: {err}")))?;
        let has_content_type = headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
        let mut all: Vec<(&str, String)> = headers.to_vec();
        if !has_content_type {
            all.push(("content-type", "application/json".to_string()));
        }
        self.request(Method::POST, addr, path, &all, Some(Bytes::from(bytes)))
            .await
    }

    /// GETs `path_and_query` without a body.
    pub async fn get(
        &self,
        addr: &str,
        path_and_query: &str,
        headers: &[(&str, String)],
    ) -> Result<HttpResponse> {
        self.request(Method::GET, addr, path_and_query, headers, None)
            .await
    }
}

/// Builds the request; a malformed address or header is the caller's mistake.
fn build_request(
    scheme: &str,
    method: Method,
    addr: &str,
    path_and_query: &str,
    headers: &[(&str, String)],
    body: Option<Bytes>,
) -> Result<hyper::Request<Full<Bytes>>> {
    if !path_and_query.starts_with('/') {
        return Err(Error::BadRequest(format!(
            "path must start with '/': {path_and_query:?}"
        )));
    }
    let uri: hyper::Uri = format!("{scheme}://{addr}{path_and_query}")
        .parse()
        .map_err(|err| Error::BadRequest(format!("invalid address {addr:?}: {err}")))?;
    let mut builder = hyper::Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|err| Error::BadRequest(format!("invalid header name {name:?}: {err}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|err| Error::BadRequest(format!("invalid value for header {name}: {err}")))?;
        builder = builder.header(name, value);
    }
    builder
        .body(Full::new(body.unwrap_or_default()))
        .map_err(|err| Error::BadRequest(format!("invalid request: {err}")))
}

impl HttpResponse {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The `Content-Type` header, if present and readable.
    pub fn content_type(&self) -> Option<&str> {
        self.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok())
    }

    /// Decodes the body as JSON. A body that does not decode is an unexpected answer
    /// ([`Error::Internal`]), never a panic: the other side may be anything.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|err| {
            Error::Internal(format!(
                "unexpected answer (HTTP {}): {err}: {}",
                self.status,
                preview(&self.body)
            ))
        })
    }

    /// The decoded body of a 2xx answer, or the error the answer stands for.
    pub fn into_result<T: DeserializeOwned>(self) -> Result<T> {
        if self.is_success() {
            self.json()
        } else {
            Err(self.error())
        }
    }

    /// The [`Error`] a non-2xx answer stands for, by the wire layer's one mapping
    /// ([`errors`]). Uses the contract's error body where there is one; otherwise falls back
    /// on the status (and, for a 307, the `Location` header), so a proxy's HTML error page
    /// still maps to something a caller can act on.
    pub fn error(&self) -> Error {
        match serde_json::from_slice::<ErrorBody>(&self.body) {
            Ok(mut body) => {
                if body.error == "not_primary" && body.primary.is_none() {
                    body.primary = self.location_authority();
                }
                body.to_error(self.status)
            }
            Err(_) => errors::from_status(
                self.status,
                self.location_authority(),
                self.retry_after_secs(),
                preview(&self.body),
            ),
        }
    }

    /// The `Retry-After` header in seconds, if present and a number.
    fn retry_after_secs(&self) -> Option<u64> {
        self.headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
    }

    /// `HOST:PORT` of a `Location: http://HOST:PORT/...` header.
    fn location_authority(&self) -> Option<String> {
        let location = self.headers.get(LOCATION)?.to_str().ok()?;
        let uri: hyper::Uri = location.parse().ok()?;
        uri.authority().map(|a| a.as_str().to_string())
    }
}

/// The start of a body, for error messages: enough to recognise, never a flood.
fn preview(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]).into_owned();
    if body.len() > MAX {
        format!("{text}...")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> HttpResponse {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        HttpResponse {
            status,
            headers: map,
            body: Bytes::from(body.to_string()),
        }
    }

    /// Contract, Where requests go: a backup's 307 names the primary in its body.
    #[test]
    fn a_redirect_names_the_primary_from_the_body() {
        let r = response(
            307,
            &[("location", "http://10.0.0.9:1/client/auth")],
            r#"{"error":"not_primary","message":"m","primary":"127.0.0.1:7001"}"#,
        );
        assert_eq!(
            r.error(),
            Error::NotPrimary {
                primary: "127.0.0.1:7001".into()
            }
        );
    }

    /// A 307 whose body lacks `primary` (or is not JSON) still redirects via `Location`.
    #[test]
    fn a_redirect_without_a_body_uses_the_location_header() {
        let r = response(
            307,
            &[("location", "http://127.0.0.1:7002/client/auth")],
            r#"{"error":"not_primary","message":"m"}"#,
        );
        assert_eq!(
            r.error(),
            Error::NotPrimary {
                primary: "127.0.0.1:7002".into()
            }
        );
        let r = response(307, &[("location", "http://127.0.0.1:7003/x")], "");
        assert_eq!(
            r.error(),
            Error::NotPrimary {
                primary: "127.0.0.1:7003".into()
            }
        );
    }

    /// Contract, Errors: every error body maps back to its typed error.
    #[test]
    fn error_bodies_map_to_typed_errors() {
        let r = response(409, &[], r#"{"error":"conflict","message":"taken"}"#);
        assert_eq!(r.error(), Error::Conflict("taken".into()));
        let r = response(503, &[], r#"{"error":"no_primary","message":"x"}"#);
        assert_eq!(r.error(), Error::NoPrimary);
        let r = response(502, &[], "<html>bad gateway</html>");
        assert!(matches!(r.error(), Error::Unavailable(_)));
        let r = response(200, &[], "not json");
        assert!(matches!(
            r.into_result::<crate::api::AuthResponse>(),
            Err(Error::Internal(_))
        ));
    }

    /// A server that cannot be reached is `Unavailable`, the error callers retry elsewhere.
    #[tokio::test]
    async fn an_unreachable_server_is_unavailable() {
        // Bind then drop, so the port is (almost certainly) closed.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let client = HttpClient::with_timeout(Duration::from_secs(2));
        let err = client
            .get(&format!("127.0.0.1:{port}"), "/status", &[])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    }

    /// A server that accepts a request but never answers is cut off by the client's
    /// timeout: the call ends `Unavailable` while the server still holds the connection.
    /// Once the request has arrived the clock is paused, so the timeout passes in virtual
    /// time; a client without one would hit the test's own (virtual) bound instead.
    #[tokio::test]
    async fn a_silent_server_times_out() {
        use tokio::io::AsyncReadExt;

        const TIMEOUT: Duration = Duration::from_secs(60);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (arrived, request_arrived) = tokio::sync::oneshot::channel();
        let hold = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut buf = [0; 1024];
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client hung up before sending its request");
                head.extend_from_slice(&buf[..n]);
            }
            arrived.send(()).unwrap();
            // Never answers, never closes.
            std::future::pending::<()>().await;
            drop(socket);
        });
        let client = HttpClient::with_timeout(TIMEOUT);
        let call = tokio::spawn(async move { client.get(&addr, "/status", &[]).await });
        request_arrived.await.unwrap();

        tokio::time::pause();
        let outcome = tokio::time::timeout(2 * TIMEOUT, call)
            .await
            .expect("the client waited past its own timeout");
        let err = outcome.unwrap().unwrap_err();
        assert!(
            matches!(&err, Error::Unavailable(m) if m.contains("did not answer within 60000 ms")),
            "{err:?}"
        );
        assert!(!hold.is_finished(), "the server still holds the connection");
        hold.abort();
    }

    #[test]
    fn bad_addresses_are_rejected_before_sending() {
        assert!(build_request("http", Method::GET, "no spaces here", "/x", &[], None).is_err());
        assert!(build_request("http", Method::GET, "127.0.0.1:1", "x", &[], None).is_err());
    }
}
