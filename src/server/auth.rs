//! Authentication of server-to-server requests with the cluster secret.
//!
//! Every peer request carries `X-Understudy-Auth: t=<unix seconds>,n=<nonce>,sig=<hex>`
//! where `sig` is HMAC-SHA256 over the timestamp, a fresh random nonce, the method, the path
//! and a SHA-256 of the body. The secret itself never crosses the wire, a signature covers
//! exactly one body, and a request is accepted once: the timestamp bounds how long a
//! signature is valid, and the receiver remembers the nonces it accepted for that long
//! ([`ReplayGuard`]), so a captured request replayed is refused.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::listen::ConnectionInfo;
use crate::error::Error;

/// The header that carries a peer request's signature.
pub const AUTH_HEADER: &str = "x-understudy-auth";
/// How far a signature's timestamp may be from our clock, in seconds.
const MAX_SKEW_SECS: u64 = 300;
/// Largest peer request body (appends carry batches of entries).
pub const MAX_PEER_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Shortest accepted secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;
/// Bytes of a signature's nonce (hex on the wire).
const NONCE_BYTES: usize = 16;
/// Nonces remembered at most. Peers send a few requests a second at most (joins, backup
/// lists, state chunks, hand-overs); past this the guard refuses rather than forgets.
const MAX_REMEMBERED_NONCES: usize = 1_000_000;

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

    /// The header value that authenticates `method path` with `body`, signed now with a
    /// fresh nonce.
    pub fn sign(&self, method: &str, path: &str, body: &[u8]) -> String {
        let t = unix_now();
        let nonce = hex::encode(rand::random::<[u8; NONCE_BYTES]>());
        let sig = hex::encode(self.mac(t, &nonce, method, path, body));
        format!("t={t},n={nonce},sig={sig}")
    }

    /// Checks a header value made by [`sign`](Self::sign): well formed, fresh, and signed
    /// under this secret for exactly this request. (Whether it was used before is the
    /// [`ReplayGuard`]'s question.)
    pub fn verify(&self, header: &str, method: &str, path: &str, body: &[u8]) -> bool {
        parse_header(header).is_some_and(|signed| self.verify_signed(&signed, method, path, body))
    }

    /// [`verify`](Self::verify) on a header already parsed.
    fn verify_signed(&self, signed: &Signed<'_>, method: &str, path: &str, body: &[u8]) -> bool {
        if !signed.is_fresh() {
            return false;
        }
        let Ok(sig) = hex::decode(signed.sig) else {
            return false;
        };
        let mut mac = self.keyed();
        mac.update(&message(signed.t, signed.nonce, method, path, body));
        // Constant-time comparison.
        mac.verify_slice(&sig).is_ok()
    }

    fn mac(&self, t: u64, nonce: &str, method: &str, path: &str, body: &[u8]) -> Vec<u8> {
        let mut mac = self.keyed();
        mac.update(&message(t, nonce, method, path, body));
        mac.finalize().into_bytes().to_vec()
    }

    fn keyed(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }
}

fn message(t: u64, nonce: &str, method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let body_hash = hex::encode(Sha256::digest(body));
    format!("{t}\n{nonce}\n{method}\n{path}\n{body_hash}").into_bytes()
}

/// The parts of a signature header.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Signed<'a> {
    pub t: u64,
    pub nonce: &'a str,
    pub sig: &'a str,
}

pub(crate) fn parse_header(header: &str) -> Option<Signed<'_>> {
    let mut parts = header.split(',');
    let t = parts.next()?.strip_prefix("t=")?.parse().ok()?;
    let nonce = parts.next()?.strip_prefix("n=")?;
    let sig = parts.next()?.strip_prefix("sig=")?;
    let well_formed = parts.next().is_none()
        && nonce.len() == 2 * NONCE_BYTES
        && nonce.bytes().all(|b| b.is_ascii_hexdigit());
    well_formed.then_some(Signed { t, nonce, sig })
}

/// The nonces of the peer requests accepted within a signature's lifetime: a request whose
/// nonce was seen is a replay. Memory is bounded: a nonce is forgotten once a request
/// carrying it could no longer pass the freshness check.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    nonces: HashSet<String>,
    /// (accepted at, nonce), oldest first.
    order: VecDeque<(u64, String)>,
}

impl ReplayGuard {
    /// Whether `nonce` is used for the first time (it is remembered from now on), at Unix
    /// time `now`.
    pub fn first_use(&self, nonce: &str, now: u64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        // A signature is fresh for MAX_SKEW_SECS either side of its time, and was accepted
        // no earlier than MAX_SKEW_SECS before that time: after twice that, no copy of it
        // can pass the freshness check any more.
        while seen
            .order
            .front()
            .is_some_and(|(at, _)| at + 2 * MAX_SKEW_SECS < now)
        {
            if let Some((_, old)) = seen.order.pop_front() {
                seen.nonces.remove(&old);
            }
        }
        if seen.nonces.contains(nonce) || seen.nonces.len() >= MAX_REMEMBERED_NONCES {
            return false;
        }
        seen.nonces.insert(nonce.to_string());
        seen.order.push_back((now, nonce.to_string()));
        true
    }
}

impl Signed<'_> {
    /// Whether the timestamp is within the allowed skew of our clock.
    fn is_fresh(&self) -> bool {
        unix_now().abs_diff(self.t) <= MAX_SKEW_SECS
    }
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
    /// Each signed request is accepted once.
    pub replays: Arc<ReplayGuard>,
}

impl PeerGate {
    /// The secret alone (plain HTTP).
    pub fn secret_only(secret: ClusterSecret) -> PeerGate {
        PeerGate {
            secret,
            require_certificate: false,
            replays: Arc::default(),
        }
    }
}

/// The check in front of every route: a request to a `/replication` path, existing or not,
/// without a valid signature (or, under TLS, without the cluster's client certificate) is
/// refused with 401 before any handler (or a 404/405 fallback) sees it. Any other request
/// passes untouched; a peer request passes with its body read and checked.
pub async fn check_peer_request(gate: &PeerGate, request: Request) -> Result<Request, Response> {
    let path = request.uri().path();
    if path != "/replication" && !path.starts_with("/replication/") {
        return Ok(request);
    }
    let unauthorized = || {
        Error::Unauthorized("peer requests need valid cluster credentials".to_string())
            .into_response()
    };
    if gate.require_certificate
        && !request
            .extensions()
            .get::<ConnectionInfo>()
            .is_some_and(|connection| connection.certified)
    {
        return Err(Error::Unauthorized(
            "peer requests need a client certificate from the cluster's CA".to_string(),
        )
        .into_response());
    }
    let (parts, body) = request.into_parts();
    let header = parts
        .headers
        .get(AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // Refuse a missing, malformed or stale header before reading a body of up to 64 MiB.
    let Some(signed) = parse_header(header).filter(Signed::is_fresh) else {
        return Err(unauthorized());
    };
    let Ok(bytes) = to_bytes(body, MAX_PEER_BODY_BYTES).await else {
        return Err(Error::PayloadTooLarge.into_response());
    };
    if !gate
        .secret
        .verify_signed(&signed, parts.method.as_str(), parts.uri.path(), &bytes)
    {
        return Err(unauthorized());
    }
    if !gate.replays.first_use(signed.nonce, unix_now()) {
        return Err(
            Error::Unauthorized("this peer request was already used".to_string()).into_response(),
        );
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
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
        // The nonce is signed too.
        let signed = parse_header(&header).unwrap();
        let other_nonce = header.replace(signed.nonce, &"0".repeat(2 * NONCE_BYTES));
        assert!(!secret.verify(&other_nonce, "POST", "/replication/messages", b"body"));
    }

    /// Security (replays): two signatures of the same request differ; each nonce is
    /// accepted once, and forgotten only once no copy could pass the freshness check.
    #[test]
    fn each_signed_request_is_accepted_once() {
        let secret = ClusterSecret::new("correct horse battery staple").unwrap();
        let first = secret.sign("POST", "/replication/set-backups", b"{}");
        let second = secret.sign("POST", "/replication/set-backups", b"{}");
        assert_ne!(first, second);
        let guard = ReplayGuard::default();
        let nonce = |header: &str| parse_header(header).unwrap().nonce.to_string();
        let now = 1_000_000;
        assert!(guard.first_use(&nonce(&first), now));
        assert!(guard.first_use(&nonce(&second), now));
        assert!(!guard.first_use(&nonce(&first), now + 1));
        assert!(!guard.first_use(&nonce(&first), now + 2 * MAX_SKEW_SECS));
        assert!(guard.first_use(&nonce(&first), now + 2 * MAX_SKEW_SECS + 1));
    }

    /// Contract: the secret is at least 16 bytes; surrounding white space is ignored.
    #[test]
    fn short_secrets_are_refused() {
        assert!(ClusterSecret::new("   short   ").is_err());
        assert!(ClusterSecret::new("sixteen-bytes-ok").is_ok());
    }
}
