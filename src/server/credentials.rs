//! Passwords, tokens and the brake on password guessing.
//!
//! Passwords are hashed with Argon2id on the primary, on tokio's blocking pool (a hash takes
//! tens of milliseconds of CPU, which must not stall the async workers), and only the PHC
//! string is replicated. Tokens are 128 random bits handed to the client once; servers keep
//! only their SHA-256.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Hashes a password with Argon2id and a fresh random salt (off the async workers).
pub async fn hash_password(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = new_salt()?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|err| Error::Internal(format!("hashing failed: {err}")))
    })
    .await
    .map_err(|err| Error::Internal(format!("hashing task failed: {err}")))?
}

/// Checks a password against a stored PHC string (off the async workers). With no stored
/// hash it still spends the time of one check, so that an unknown username cannot be told
/// from a wrong password by the answer's delay.
pub async fn verify_password(password: String, stored: Option<String>) -> Result<bool> {
    tokio::task::spawn_blocking(move || {
        let Some(stored) = stored else {
            let salt = new_salt()?;
            let _ = Argon2::default().hash_password(password.as_bytes(), &salt);
            return Ok(false);
        };
        let parsed = PasswordHash::new(&stored)
            .map_err(|err| Error::Corrupt(format!("stored password hash: {err}")))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
    .map_err(|err| Error::Internal(format!("verification task failed: {err}")))?
}

/// A new random bearer token (128 bits, hex).
pub fn new_token() -> String {
    random_hex(16)
}

/// A new random client id (64 bits, hex): unguessable enough that ids are not enumerable.
pub fn new_client_id() -> String {
    random_hex(8)
}

/// What servers store of a token: its SHA-256, hex.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh 128-bit salt from the OS's generator.
fn new_salt() -> Result<SaltString> {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    SaltString::encode_b64(&bytes).map_err(|err| Error::Internal(format!("salt: {err}")))
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// Slows down password guessing: after `max_failures` failed logins for one username within
/// `window`, further attempts are refused until the oldest failure leaves the window. Kept
/// in the primary's memory only: a failover resets it, which costs an attacker an election.
pub struct LoginLimiter {
    max_failures: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

/// Usernames tracked at most; beyond it, entries whose failures all left the window go.
const MAX_TRACKED_USERNAMES: usize = 100_000;

impl Default for LoginLimiter {
    fn default() -> Self {
        LoginLimiter::new(10, Duration::from_secs(60))
    }
}

impl LoginLimiter {
    pub fn new(max_failures: usize, window: Duration) -> LoginLimiter {
        LoginLimiter {
            max_failures,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a login attempt for `username`: refused with 429 if it has too many recent
    /// failures, else counted as a failure right away. Counting before the (slow) password
    /// check means concurrent guesses cannot all slip in before the first is recorded; a
    /// successful attempt clears the count with [`succeeded`](Self::succeeded).
    pub fn attempt(&self, username: &str, now: Instant) -> Result<()> {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_TRACKED_USERNAMES && !failures.contains_key(username) {
            let window = self.window;
            failures.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|&t| now.duration_since(t) < window)
            });
        }
        let times = failures.entry(username.to_string()).or_default();
        while times
            .front()
            .is_some_and(|&t| now.duration_since(t) >= self.window)
        {
            times.pop_front();
        }
        if times.len() >= self.max_failures {
            let oldest = times.front().copied().unwrap_or(now);
            let wait = self.window.saturating_sub(now.duration_since(oldest));
            return Err(Error::TooManyRequests {
                retry_after_secs: wait.as_secs().max(1),
            });
        }
        times.push_back(now);
        Ok(())
    }

    /// Takes back the attempt started at `at`, which turned out not to test a password.
    pub fn undo(&self, username: &str, at: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(times) = failures.get_mut(username)
            && let Some(position) = times.iter().rposition(|&t| t == at)
        {
            times.remove(position);
        }
    }

    /// Forgets the failures of `username` after a successful login (or an attempt that
    /// failed for another reason than the password).
    pub fn succeeded(&self, username: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(username);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Security: passwords are stored only as salted Argon2id hashes.
    #[tokio::test]
    async fn password_hash_is_salted_argon2id_and_verifies() {
        let a = hash_password("correct horse".to_string()).await.unwrap();
        let b = hash_password("correct horse".to_string()).await.unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "salts differ");
        assert!(!a.contains("correct horse"));
        assert!(
            verify_password("correct horse".into(), Some(a.clone()))
                .await
                .unwrap()
        );
        assert!(
            !verify_password("wrong horse".into(), Some(a))
                .await
                .unwrap()
        );
        assert!(!verify_password("anything".into(), None).await.unwrap());
    }

    /// Contract, Security: after at most 10 failures in a minute, further attempts get 429
    /// with a Retry-After, until the failures age out.
    #[test]
    fn limiter_refuses_after_ten_failures_in_a_minute() {
        let limiter = LoginLimiter::default();
        let start = Instant::now();
        for i in 0..10 {
            assert!(limiter.attempt("mallory", start).is_ok(), "attempt {i}");
        }
        let refused = limiter.attempt("mallory", start + Duration::from_secs(1));
        assert_eq!(
            refused,
            Err(Error::TooManyRequests {
                retry_after_secs: 59
            })
        );
        assert!(
            limiter.attempt("alice", start).is_ok(),
            "other users are not affected"
        );
        assert!(
            limiter
                .attempt("mallory", start + Duration::from_secs(61))
                .is_ok()
        );
        limiter.succeeded("mallory");
        for _ in 0..10 {
            assert!(
                limiter
                    .attempt("mallory", start + Duration::from_secs(62))
                    .is_ok()
            );
        }
    }

    /// Tokens carry 128 random bits and are stored only as a hash.
    #[test]
    fn tokens_are_random_and_hashed() {
        let t1 = new_token();
        assert_eq!(t1.len(), 32);
        assert_ne!(t1, new_token());
        assert_eq!(token_hash(&t1).len(), 64);
        assert_ne!(token_hash(&t1), t1);
    }
}
