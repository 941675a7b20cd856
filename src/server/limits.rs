//! Abuse limits that are not about passwords (those are `credentials::LoginLimiter`): the
//! server's configurable bounds, and a per-source-address rate limit for the calls anyone
//! may make without credentials (`client/init`, `client/register`), each of which stores a
//! replicated record. (Clients that never log in expire: `expiry.rs`.)

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::listen::{DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_CONNECTIONS};
use crate::error::{Error, Result};

/// Default bound on receiving a request's body once its headers are in.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default client inits plus registrations per source address per minute (with a burst of
/// as many): a few hundred people behind one address start comfortably, and a loop of inits
/// stores ten a second rather than thousands.
pub const DEFAULT_INITS_PER_MINUTE: u32 = 600;
/// Default time a client may stay without ever logging in before it is forgotten.
pub const DEFAULT_CLIENT_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Sources remembered at most; past this the idle ones are forgotten first.
const MAX_SOURCES: usize = 100_000;

/// A server's abuse limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Open connections at most (clients, peers and scrapers together).
    pub max_connections: usize,
    /// How long a request's headers may take to arrive.
    pub header_read_timeout: Duration,
    /// How long a request's body may take to arrive.
    pub body_read_timeout: Duration,
    /// `client/init` plus `client/register` per source address per minute; 0 for no limit.
    pub inits_per_minute: u32,
    /// How long a client may stay without ever logging in; `None`: forever.
    pub client_ttl: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            inits_per_minute: DEFAULT_INITS_PER_MINUTE,
            client_ttl: Some(DEFAULT_CLIENT_TTL),
        }
    }
}

/// A token bucket per source address: `per_minute` tokens a minute, at most `per_minute`
/// saved up. Cheap enough for every unauthenticated call; memory is bounded.
#[derive(Debug)]
pub struct SourceLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl SourceLimiter {
    /// A limiter allowing `per_minute` calls a minute per source; 0 allows everything.
    pub fn per_minute(per_minute: u32) -> SourceLimiter {
        SourceLimiter {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one call's token for `source` at `now`, or says how long to wait for one.
    pub fn check(&self, source: IpAddr, now: Instant) -> Result<()> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_SOURCES && !buckets.contains_key(&source) {
            // Forget the sources whose buckets have filled up again: they lose nothing.
            let full_after = Duration::from_secs(60);
            buckets.retain(|_, bucket| now.duration_since(bucket.at) < full_after);
            if buckets.len() >= MAX_SOURCES {
                // Under a flood from many addresses, keep the limit rather than the memory.
                return Err(Error::TooManyRequests {
                    retry_after_secs: 60,
                });
            }
        }
        let bucket = buckets.entry(source).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let elapsed = now.duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / per_second;
            Err(Error::TooManyRequests {
                retry_after_secs: (wait.ceil() as u64).max(1),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    /// Limits (inits per source): a source gets its burst, then one call per refill
    /// interval, and is told how long to wait; another source is not affected.
    #[test]
    fn a_source_gets_its_burst_then_waits_and_others_do_not() {
        let limiter = SourceLimiter::per_minute(60);
        let start = Instant::now();
        for _ in 0..60 {
            limiter.check(ip(1), start).unwrap();
        }
        let refused = limiter.check(ip(1), start).unwrap_err();
        assert_eq!(
            refused,
            Error::TooManyRequests {
                retry_after_secs: 1
            }
        );
        limiter.check(ip(2), start).unwrap();
        limiter
            .check(ip(1), start + Duration::from_secs(1))
            .unwrap();
        assert!(
            limiter
                .check(ip(1), start + Duration::from_secs(1))
                .is_err()
        );
    }

    /// Limits: 0 means no limit.
    #[test]
    fn zero_allows_everything() {
        let limiter = SourceLimiter::per_minute(0);
        let now = Instant::now();
        for _ in 0..10_000 {
            limiter.check(ip(1), now).unwrap();
        }
    }
}
