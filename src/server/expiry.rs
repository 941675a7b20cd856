//! Clients that never log in expire, so that `client/init` (which anyone may call) cannot
//! fill the state over time.
//!
//! The primary decides when: it notes every client it admits, and once one has waited the
//! configured time without logging in, it proposes `ExpireClient`. Whether the client goes
//! is decided by applying that command, on every server alike: only a client that still
//! never logged in is removed. A server that becomes primary notes the clients that never
//! logged in as of then (one listing of the clients, the cost of one `GET /clients`), so
//! those admitted by an earlier primary expire too, a full wait after the change.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::AppState;
use crate::app::{Command, Outcome, Request, Tables, never_logged_in};

/// How often the primary looks for clients that waited long enough.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Clients remembered at most; past this the newest are not noted (they expire after the
/// next change of primary instead). The init limit keeps this far away in practice.
const MAX_NOTED: usize = 1_000_000;
/// Expiries proposed per check at most, so a backlog is worked off without a burst.
const MAX_PER_CHECK: usize = 1_000;

/// The clients waiting to log in, oldest first.
#[derive(Debug, Default)]
pub struct Expiry {
    noted: Mutex<VecDeque<(Instant, String)>>,
}

impl Expiry {
    /// A client was admitted at `at`.
    pub fn note(&self, client_id: String, at: Instant) {
        let mut noted = self.noted.lock().unwrap_or_else(|p| p.into_inner());
        if noted.len() < MAX_NOTED {
            noted.push_back((at, client_id));
        }
    }

    /// The clients admitted at or before `before`, taken out (at most `limit`).
    fn due(&self, before: Instant, limit: usize) -> Vec<String> {
        let mut noted = self.noted.lock().unwrap_or_else(|p| p.into_inner());
        let mut due = Vec::new();
        while due.len() < limit && noted.front().is_some_and(|(at, _)| *at <= before) {
            if let Some((_, id)) = noted.pop_front() {
                due.push(id);
            }
        }
        due
    }

    fn forget_all(&self) {
        self.noted.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Expires clients that never logged in after `ttl`, while this server is primary.
pub async fn run(app: AppState, ttl: Duration, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(CHECK_EVERY.min(ttl));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_primary = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let Ok(primary) = app.driver.query(|view| view.ensure_primary().is_ok()).await else {
            return; // the driver is gone: the server is stopping
        };
        if !primary {
            if was_primary {
                app.expiry.forget_all();
            }
            was_primary = false;
            continue;
        }
        if !was_primary {
            was_primary = true;
            note_waiting_clients(&app).await;
        }
        let Some(before) = Instant::now().checked_sub(ttl) else {
            continue;
        };
        for client_id in app.expiry.due(before, MAX_PER_CHECK) {
            expire(&app, client_id).await;
        }
    }
}

/// On becoming primary: every client that never logged in starts its wait now.
async fn note_waiting_clients(app: &AppState) {
    let listed = app
        .driver
        .query(|view| {
            view.tables.clients().map(|clients| {
                clients
                    .into_iter()
                    .filter(|(_, client)| never_logged_in(client))
                    .map(|(id, _)| id)
                    .collect::<Vec<_>>()
            })
        })
        .await;
    if let Ok(Ok(waiting)) = listed {
        let now = Instant::now();
        if !waiting.is_empty() {
            info!(
                clients = waiting.len(),
                "clients that never logged in will expire unless they do"
            );
        }
        for id in waiting {
            app.expiry.note(id, now);
        }
    }
}

/// Proposes the expiry of one client; applying it decides.
async fn expire(app: &AppState, client_id: String) {
    let request = Request {
        // The server itself asks, not a client.
        origin: app.id.clone(),
        command: Command::ExpireClient {
            client_id: client_id.clone(),
        },
    };
    match app.driver.submit(request).await {
        Ok(Outcome::ClientExpired { .. }) => {
            app.metrics.client_expired();
            debug!(%client_id, "a client that never logged in expired");
        }
        // It logged in meanwhile, or is gone already: nothing to do.
        Ok(_) | Err(crate::Error::Conflict(_) | crate::Error::NotFound(_)) => {}
        Err(err) => debug!(%client_id, %err, "could not expire a client; it is kept"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expiry: clients come due in the order they were admitted, once their wait is over,
    /// and at most so many at a time.
    #[test]
    fn clients_come_due_oldest_first_after_their_wait() {
        let expiry = Expiry::default();
        let start = Instant::now();
        for i in 0..5u64 {
            expiry.note(format!("c{i}"), start + Duration::from_secs(i));
        }
        assert!(expiry.due(start - Duration::from_secs(1), 10).is_empty());
        assert_eq!(
            expiry.due(start + Duration::from_secs(2), 2),
            vec!["c0", "c1"]
        );
        assert_eq!(expiry.due(start + Duration::from_secs(2), 10), vec!["c2"]);
        assert_eq!(
            expiry.due(start + Duration::from_secs(60), 10),
            vec!["c3", "c4"]
        );
    }
}
