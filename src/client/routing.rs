//! Where the client sends its next attempt, and how long it waits before it: the pure part
//! of failover handling, kept free of I/O and clocks so it can be tested as plain functions.
//!
//! The rules, in the order the client meets them:
//!
//! | answer                                   | what the client does                        |
//! |------------------------------------------|---------------------------------------------|
//! | 2xx                                      | done; the server that answered is primary   |
//! | 307 `not_primary` naming another server  | switch to it and retry at once              |
//! | 503 `no_primary` / `unavailable`, or no  | try the next known server after a backoff   |
//! | connection, or a timeout                 | (50 ms doubling up to 1 s)                  |
//! | anything else (400 401 403 404 409 429…) | return the error: retrying cannot help      |
//!
//! A `/new-primary` notification overrides whatever the client believed, at any point.

use std::time::Duration;

use crate::api::NewPrimary;
use crate::error::Error;

/// Exponential backoff between attempts that found no primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure.
    pub initial: Duration,
    /// The longest wait; doubling stops here.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    /// The wait after `failures` consecutive failures (1 = the first): `initial * 2^(n-1)`,
    /// capped at `max`. Zero failures wait nothing.
    pub fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        // Shifting past 31 would overflow; by then the cap applies anyway.
        let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// What to do after a failed attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Ask this server instead, at once.
    Redirect(String),
    /// Nobody could serve it right now: ask the next server after a backoff.
    TryElsewhere,
    /// The answer is final: return the error.
    GiveUp,
}

/// Classifies a failed attempt at `target`.
pub fn decide(target: &str, err: &Error) -> Decision {
    match err {
        // A server that calls itself the primary while refusing is confused (or mid-way
        // through stepping down): treat it as unavailable rather than loop on it.
        Error::NotPrimary { primary } if primary == target => Decision::TryElsewhere,
        Error::NotPrimary { primary } => Decision::Redirect(primary.clone()),
        Error::NoPrimary | Error::Unavailable(_) => Decision::TryElsewhere,
        _ => Decision::GiveUp,
    }
}

/// The client's view of the cluster: the servers it knows and which it thinks is primary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routing {
    /// Every server the client knows of: the configured ones, then any it learned of.
    servers: Vec<String>,
    /// The believed primary, if any.
    primary: Option<String>,
    /// Where the round-robin over `servers` continues when no primary is known.
    cursor: usize,
    /// The last notification acted on, so that each is acted on once.
    applied: Option<NewPrimary>,
}

impl Routing {
    pub fn new(servers: Vec<String>, primary: Option<String>) -> Routing {
        let mut routing = Routing {
            servers: Vec::new(),
            primary: None,
            cursor: 0,
            applied: None,
        };
        for server in servers {
            routing.learn(&server);
        }
        if let Some(primary) = primary {
            routing.learn(&primary);
            routing.primary = Some(primary);
        }
        routing
    }

    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    pub fn primary(&self) -> Option<&str> {
        self.primary.as_deref()
    }

    /// The server for the next attempt: the believed primary, else the next in turn.
    /// `None` only if no server is known at all.
    pub fn target(&self) -> Option<String> {
        if let Some(primary) = &self.primary {
            return Some(primary.clone());
        }
        if self.servers.is_empty() {
            return None;
        }
        Some(self.servers[self.cursor % self.servers.len()].clone())
    }

    /// `primary` was named by a redirect or answered as primary.
    pub fn set_primary(&mut self, primary: &str) {
        self.learn(primary);
        self.primary = Some(primary.to_string());
    }

    /// `target` could not serve: forget it as primary and move the turn past it, so the
    /// next attempt goes to a different server.
    pub fn failed(&mut self, target: &str) {
        if self.primary.as_deref() == Some(target) {
            self.primary = None;
        }
        if let Some(index) = self.servers.iter().position(|s| s == target) {
            self.cursor = index + 1;
        } else {
            self.cursor += 1;
        }
    }

    /// Acts on `notification` if it is one not yet acted on. Returns whether it switched.
    /// The listener already dropped notifications from older terms.
    pub fn notified(&mut self, notification: &NewPrimary) -> bool {
        if self.applied.as_ref() == Some(notification) {
            return false;
        }
        self.applied = Some(notification.clone());
        self.set_primary(&notification.primary);
        true
    }

    fn learn(&mut self, server: &str) {
        if !self.servers.iter().any(|s| s == server) {
            self.servers.push(server.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers() -> Vec<String> {
        vec!["a:1".into(), "b:1".into(), "c:1".into()]
    }

    /// The backoff doubles from 50 ms and stops at 1 s.
    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff::default();
        let ms: Vec<u128> = (0..9).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(ms, vec![0, 50, 100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
    }

    /// Contract, Where requests go: 307 redirects, 503 and transport failures move on,
    /// everything else is the answer.
    #[test]
    fn errors_are_classified_by_what_helps() {
        let redirect = Error::NotPrimary {
            primary: "b:1".into(),
        };
        assert_eq!(decide("a:1", &redirect), Decision::Redirect("b:1".into()));
        assert_eq!(decide("b:1", &redirect), Decision::TryElsewhere);
        assert_eq!(decide("a:1", &Error::NoPrimary), Decision::TryElsewhere);
        assert_eq!(
            decide("a:1", &Error::Unavailable("refused".into())),
            Decision::TryElsewhere
        );
        for err in [
            Error::BadRequest("x".into()),
            Error::Unauthorized("x".into()),
            Error::NotFound("x".into()),
            Error::Conflict("x".into()),
            Error::TooManyRequests {
                retry_after_secs: 1,
            },
            Error::Internal("x".into()),
        ] {
            assert_eq!(decide("a:1", &err), Decision::GiveUp, "{err:?}");
        }
    }

    /// Without a known primary the client goes round every server, starting after the one
    /// that failed, so a dead server is not asked twice in a row.
    #[test]
    fn failures_rotate_through_the_known_servers() {
        let mut r = Routing::new(servers(), Some("b:1".into()));
        assert_eq!(r.target().as_deref(), Some("b:1"));
        r.failed("b:1");
        assert_eq!(r.primary(), None);
        assert_eq!(r.target().as_deref(), Some("c:1"));
        r.failed("c:1");
        assert_eq!(r.target().as_deref(), Some("a:1"));
        r.failed("a:1");
        assert_eq!(r.target().as_deref(), Some("b:1"));
    }

    /// A redirect or a notification may name a server not configured: it is learned, and
    /// stays in the rotation afterwards.
    #[test]
    fn redirects_and_notifications_teach_new_servers() {
        let mut r = Routing::new(servers(), None);
        r.set_primary("d:1");
        assert_eq!(r.target().as_deref(), Some("d:1"));
        assert_eq!(r.servers().len(), 4);
        let n = NewPrimary {
            primary: "e:1".into(),
            term: 7,
        };
        assert!(r.notified(&n));
        assert_eq!(r.primary(), Some("e:1"));
        // The same notification seen again (e.g. after a redirect moved the client on) does
        // not drag the client back.
        r.set_primary("a:1");
        assert!(!r.notified(&n));
        assert_eq!(r.primary(), Some("a:1"));
        assert_eq!(r.servers().len(), 5);
    }

    #[test]
    fn no_servers_means_no_target() {
        assert_eq!(Routing::new(Vec::new(), None).target(), None);
    }
}
