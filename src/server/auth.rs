//! Authentication of server-to-server requests with the cluster secret.
//!
//! Every peer request carries `X-Understudy-Auth: t=<unix seconds>,sig=<hex>` where `sig` is
//! HMAC-SHA256 over the timestamp, method, path and a SHA-256 of the body. The secret itself
//! never crosses the wire, a signature covers exactly one body, and the timestamp bounds how
//! long a captured request can be replayed.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::listen::ClientCertificate;
use crate::error::Error;

/// The header that carries a peer request's signature.
pub const AUTH_HEADER: &str = "x-understudy-auth";
/// How far a signature's timestamp may be from our clock, in seconds.
const MAX_SKEW_SECS: u64 = 300;
/// Largest peer request body (appends carry batches of entries).
pub const MAX_PEER_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Shortest accepted secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// The shared secret of a cluster.
#[derive(Clone)]
pub struct ClusterSecret(Vec<u8>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    /// A secret from its text; surrounding white space is ignored.
    pub fn new(text: &str) -> crate::Result<ClusterSecret> {
        let trimmed = text.trim();
        if trimmed.len() < MIN_SECRET_BYTES {
            return Err(Error::BadRequest(format!(
                "the cluster secret must be at least {MIN_SECRET_BYTES} bytes"
            )));
        }
        Ok(ClusterSecret(trimmed.as_bytes().to_vec()))
    }

    /// The secret itself, for keying other MACs (the peer stream's handshake).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The header value that authenticates `method path` with `body`, signed now.
    pub fn sign(&self, method: &str, path: &str, body: &[u8]) -> String {
        let t = unix_now();
        format!("t={t},sig={}", hex::encode(self.mac(t, method, path, body)))
    }

    /// Checks a header value made by [`sign`](Self::sign).
    pub fn verify(&self, header: &str, method: &str, path: &str, body: &[u8]) -> bool {
        let Some((t, sig)) = parse_header(header) else {
            return false;
        };
        if unix_now().abs_diff(t) > MAX_SKEW_SECS {
            return false;
        }
        let Ok(sig) = hex::decode(sig) else {
            return false;
        };
        let mut mac = self.keyed();
        mac.update(&message(t, method, path, body));
        // Constant-time comparison.
        mac.verify_slice(&sig).is_ok()
    }

    fn mac(&self, t: u64, method: &str, path: &str, body: &[u8]) -> Vec<u8> {
        let mut mac = self.keyed();
        mac.update(&message(t, method, path, body));
        mac.finalize().into_bytes().to_vec()
    }

    fn keyed(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }
}

fn message(t: u64, method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let body_hash = hex::encode(Sha256::digest(body));
    format!("{t}\n{method}\n{path}\n{body_hash}").into_bytes()
}

pub(crate) fn parse_header(header: &str) -> Option<(u64, &str)> {
    let (t, sig) = header.split_once(',')?;
    let t = t.strip_prefix("t=")?.parse().ok()?;
    let sig = sig.strip_prefix("sig=")?;
    Some((t, sig))
}

/// Whether a header is well formed and its timestamp within the allowed skew.
fn fresh(header: &str) -> bool {
    parse_header(header).is_some_and(|(t, _)| unix_now().abs_diff(t) <= MAX_SKEW_SECS)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a peer request must show: the cluster secret's signature always, and under TLS also
/// a client certificate the cluster's CA signed.
#[derive(Clone, Debug)]
pub struct PeerGate {
    pub secret: ClusterSecret,
    pub require_certificate: bool,
}

impl PeerGate {
    /// The secret alone (plain HTTP).
    pub fn secret_only(secret: ClusterSecret) -> PeerGate {
        PeerGate {
            secret,
            require_certificate: false,
        }
    }
}

/// Middleware in front of every route: a request to a `/replication` path, existing or not,
/// without a valid signature (or, under TLS, without the cluster's client certificate) gets
/// 401 before any handler (or a 404/405 fallback) sees it.
pub async fn require_peer_auth(
    State(gate): State<PeerGate>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if path != "/replication" && !path.starts_with("/replication/") {
        return next.run(request).await;
    }
    let unauthorized = || {
        Error::Unauthorized("peer requests need valid cluster credentials".to_string())
            .into_response()
    };
    if gate.require_certificate
        && request.extensions().get::<ClientCertificate>() != Some(&ClientCertificate(true))
    {
        return Error::Unauthorized(
            "peer requests need a client certificate from the cluster's CA".to_string(),
        )
        .into_response();
    }
    let secret = gate.secret;
    let (parts, body) = request.into_parts();
    let header = parts
        .headers
        .get(AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    // Refuse a missing, malformed or stale header before reading a body of up to 64 MiB.
    if !fresh(&header) {
        return unauthorized();
    }
    let Ok(bytes) = to_bytes(body, MAX_PEER_BODY_BYTES).await else {
        return Error::PayloadTooLarge.into_response();
    };
    if !secret.verify(&header, parts.method.as_str(), parts.uri.path(), &bytes) {
        return unauthorized();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Security: a signature is valid only for its own secret, method, path and body.
    #[test]
    fn signature_binds_secret_method_path_and_body() {
        let secret = ClusterSecret::new("  correct horse battery staple \n").unwrap();
        let header = secret.sign("POST", "/replication/messages", b"body");
        assert!(secret.verify(&header, "POST", "/replication/messages", b"body"));
        assert!(!secret.verify(&header, "POST", "/replication/messages", b"other"));
        assert!(!secret.verify(&header, "POST", "/replication/set-backups", b"body"));
        assert!(!secret.verify(&header, "GET", "/replication/messages", b"body"));
        let other = ClusterSecret::new("another secret of enough length").unwrap();
        assert!(!other.verify(&header, "POST", "/replication/messages", b"body"));
        assert!(!secret.verify("garbage", "POST", "/replication/messages", b"body"));
        assert!(!secret.verify("t=1,sig=00", "POST", "/replication/messages", b"body"));
    }

    /// Contract: the secret is at least 16 bytes; surrounding white space is ignored.
    #[test]
    fn short_secrets_are_refused() {
        assert!(ClusterSecret::new("   short   ").is_err());
        assert!(ClusterSecret::new("sixteen-bytes-ok").is_ok());
    }
}
