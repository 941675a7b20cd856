//! Passwords, tokens and the brake on password guessing.
//!
//! Passwords are hashed with Argon2id on the primary, on tokio's blocking pool (a hash takes
//! tens of milliseconds of CPU, which must not stall the async workers), and only the PHC
//! string is replicated. Tokens are 128 random bits handed to the client once; servers keep
//! only their SHA-256.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
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
    // Every demo message hashes its token: into a buffer of the right size at once, not a
    // character at a time as `hex::encode` builds its string.
    let mut hex = [0u8; 64];
    hex::encode_to_slice(Sha256::digest(token.as_bytes()), &mut hex)
        .expect("a SHA-256 is 64 hex digits");
    String::from_utf8(hex.to_vec()).expect("hex digits are ASCII")
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

/// Slows down password guessing without letting anyone lock a user out. Failures are
/// counted per username *and source address*: after `per_source` failed logins for one
/// username from one address within `window`, that address's further attempts for that
/// username are refused until the oldest failure leaves the window, while the user can
/// still log in from elsewhere. Across all sources a username takes `per_user` failures per
/// window (a slower back-off against guessing from many addresses). A refused attempt is
/// not counted, so one address hammering a username cannot fill the username's budget.
/// Kept in the primary's memory only: a failover resets it, which costs an attacker an
/// election.
pub struct LoginLimiter {
    per_source: usize,
    per_user: usize,
    window: Duration,
    failures: Mutex<HashMap<String, UserFailures>>,
}

/// One username's recent failures: all of them, and by source address.
#[derive(Default)]
struct UserFailures {
    all: VecDeque<Instant>,
    by_source: HashMap<IpAddr, VecDeque<Instant>>,
}

impl UserFailures {
    /// Drops the failures that left the window.
    fn age(&mut self, now: Instant, window: Duration) {
        let old = |t: &Instant| now.duration_since(*t) >= window;
        while self.all.front().is_some_and(old) {
            self.all.pop_front();
        }
        self.by_source.retain(|_, times| {
            while times.front().is_some_and(old) {
                times.pop_front();
            }
            !times.is_empty()
        });
    }
}

/// Usernames tracked at most; beyond it, entries whose failures all left the window go.
const MAX_TRACKED_USERNAMES: usize = 100_000;

impl Default for LoginLimiter {
    fn default() -> Self {
        LoginLimiter::new(10, 100, Duration::from_secs(60))
    }
}

impl LoginLimiter {
    pub fn new(per_source: usize, per_user: usize, window: Duration) -> LoginLimiter {
        LoginLimiter {
            per_source,
            per_user,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a login attempt for `username` from `source`: refused with 429 if that
    /// source, or the username over all sources, has too many recent failures; else
    /// counted as a failure right away. Counting before the (slow) password check means
    /// concurrent guesses cannot all slip in before the first is recorded; a successful
    /// attempt clears the count with [`succeeded`](Self::succeeded).
    pub fn attempt(&self, username: &str, source: IpAddr, now: Instant) -> Result<()> {
        let window = self.window;
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_TRACKED_USERNAMES && !failures.contains_key(username) {
            failures.retain(|_, user| {
                user.age(now, window);
                !user.all.is_empty()
            });
        }
        let user = failures.entry(username.to_string()).or_default();
        user.age(now, window);
        let refuse = |times: &VecDeque<Instant>| {
            let oldest = times.front().copied().unwrap_or(now);
            let wait = window.saturating_sub(now.duration_since(oldest));
            Err(Error::TooManyRequests {
                retry_after_secs: wait.as_secs().max(1),
            })
        };
        let from_source = user.by_source.entry(source).or_default();
        if from_source.len() >= self.per_source {
            return refuse(from_source);
        }
        from_source.push_back(now);
        if user.all.len() >= self.per_user {
            if let Some(times) = user.by_source.get_mut(&source) {
                times.pop_back();
            }
            return refuse(&user.all);
        }
        user.all.push_back(now);
        Ok(())
    }

    /// Takes back the attempt started at `at`, which turned out not to test a password.
    pub fn undo(&self, username: &str, source: IpAddr, at: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let Some(user) = failures.get_mut(username) else {
            return;
        };
        if let Some(position) = user.all.iter().rposition(|&t| t == at) {
            user.all.remove(position);
        }
        if let Some(times) = user.by_source.get_mut(&source)
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

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    /// Contract, Security: after at most 10 failures in a minute from one address, that
    /// address's further attempts get 429 with a Retry-After, until the failures age out.
    #[test]
    fn limiter_refuses_after_ten_failures_in_a_minute() {
        let limiter = LoginLimiter::default();
        let start = Instant::now();
        for i in 0..10 {
            assert!(
                limiter.attempt("mallory", ip(1), start).is_ok(),
                "attempt {i}"
            );
        }
        let refused = limiter.attempt("mallory", ip(1), start + Duration::from_secs(1));
        assert_eq!(
            refused,
            Err(Error::TooManyRequests {
                retry_after_secs: 59
            })
        );
        assert!(
            limiter.attempt("alice", ip(1), start).is_ok(),
            "other users are not affected"
        );
        assert!(
            limiter
                .attempt("mallory", ip(1), start + Duration::from_secs(61))
                .is_ok()
        );
        limiter.succeeded("mallory");
        for _ in 0..10 {
            assert!(
                limiter
                    .attempt("mallory", ip(1), start + Duration::from_secs(62))
                    .is_ok()
            );
        }
    }

    /// Security: nobody can lock a user out. A thousand wrong guesses for alice from one
    /// address are refused there after ten, and do not count against alice elsewhere.
    #[test]
    fn a_thousand_guesses_from_one_address_do_not_lock_alice_out_elsewhere() {
        let limiter = LoginLimiter::default();
        let start = Instant::now();
        let refused = (0..1000)
            .filter(|_| limiter.attempt("alice", ip(66), start).is_err())
            .count();
        assert_eq!(refused, 990);
        assert!(limiter.attempt("alice", ip(7), start).is_ok());
    }

    /// Security: guesses spread over many addresses meet the slower back-off per username:
    /// at most 100 counted failures a minute, whatever the sources.
    #[test]
    fn many_addresses_meet_the_per_user_back_off() {
        let limiter = LoginLimiter::default();
        let start = Instant::now();
        for source in 0..100u8 {
            assert!(limiter.attempt("alice", ip(source), start).is_ok());
        }
        assert!(limiter.attempt("alice", ip(200), start).is_err());
        assert!(
            limiter
                .attempt("alice", ip(200), start + Duration::from_secs(60))
                .is_ok(),
            "the back-off ends with the window"
        );
    }

    /// Tokens carry 128 random bits and are stored only as a hash.
    #[test]
    fn tokens_are_random_and_hashed() {
        let t1 = new_token();
        assert_eq!(t1.len(), 32);
        assert_ne!(t1, new_token());
        assert_eq!(token_hash(&t1).len(), 64);
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(token_hash(&t1), t1);
    }
}
