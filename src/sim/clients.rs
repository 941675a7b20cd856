//! Simulated clients: each introduces itself, registers, logs in, then posts numbered
//! messages one at a time, through whichever server it believes is the primary (an idle
//! one introduces itself and then has its expiry proposed).
//!
//! A client retries the same request (same `client_id`, `seq` and text, so the application
//! can answer it at most once) after a timeout, a crashed server, or a refusal; a
//! `not_primary` answer names the server to try next. Hashes and tokens are made-up strings:
//! the application only compares them, and the simulation must stay cheap.
//!
//! Like the real handlers (`client_api.rs`), a primary serves a request only once it is
//! ready (its own term's no-op applied, and with it every earlier entry), so that its
//! pre-checks against its applied state see everything committed before its term. A
//! refusal from the state (`not_found`, `unauthorized`) is given only after a confirmation
//! round (ReadIndex), so a client whose earlier steps were acknowledged is never refused:
//! any such refusal breaks the client history.

use rand::Rng;

use super::client::Step;
use super::faults::TICK;
use super::runner::{Event, Sim};
use super::server::{Submitted, Waiter};
use super::{Invariant, Violation};
use crate::app::{Outcome, Rejection};
use crate::error::Error;

/// The clients' side of a run: requests go straight to a server (clients and servers are
/// never partitioned; a crashed server refuses the connection, a paused one never answers).
impl Sim {
    /// A client's timer: give up on an attempt past its deadline, then send the current
    /// step's request to the server it believes is the primary.
    pub(super) fn client_wake(&mut self, c: usize) -> Result<(), Violation> {
        let servers = self.servers.len();
        let client = &mut self.clients[c];
        if let Some(attempt) = client.attempt {
            if self.now < attempt.deadline {
                return Ok(());
            }
            self.report.timeouts += 1;
            client.attempt = None;
            client.another_server(servers, &mut self.rng);
        }
        if client.step == Step::Done {
            return Ok(());
        }
        if self.healing && !client.started {
            client.step = Step::Done;
            return Ok(());
        }
        let Some(request) = client.request() else {
            return Ok(());
        };
        if let Step::Message(seq) = client.step {
            self.history
                .sent(&client.id, seq, &client.text(seq), self.now);
        }
        let server = client.target;
        let attempt = client.begin(server, self.now);
        let client_id = client.id.clone();
        let waiter = Waiter {
            client: c,
            attempt: attempt.id,
        };
        let s = &mut self.servers[server];
        if !s.is_up() {
            // Connection refused: try another server soon.
            client.attempt = None;
            client.another_server(servers, &mut self.rng);
            let at = self.now + self.rng.random_range(1..=TICK);
            self.queue.schedule(at, Event::Client(c));
            return Ok(());
        }
        if s.paused {
            // No answer: the client waits until its timeout.
            self.queue.schedule(attempt.deadline, Event::Client(c));
            return Ok(());
        }
        let step = client.step;
        let submitted = s.submit(request, waiter);
        let id = s.id.clone();
        match submitted {
            Submitted::Pending(index) => {
                self.trace(|| format!("{client_id} {step:?} proposed on {id} at {index}"));
                self.queue.schedule(attempt.deadline, Event::Client(c));
                self.drain(server)
            }
            Submitted::Confirming => {
                self.trace(|| format!("{client_id} {step:?} refused by {id}'s state; confirming"));
                self.queue.schedule(attempt.deadline, Event::Client(c));
                self.drain(server)
            }
            Submitted::Answered(outcome) => {
                self.trace(|| format!("{client_id} {step:?} answered by {id}: {outcome:?}"));
                self.client_done(c, outcome)
            }
            Submitted::Refused(err) => {
                self.trace(|| format!("{client_id} {step:?} refused by {id}: {err}"));
                self.client_refused(c, err)
            }
        }
    }

    /// An answer to a proposal; only the client's current attempt counts.
    pub(super) fn client_reply(
        &mut self,
        waiter: Waiter,
        reply: crate::Result<Outcome>,
    ) -> Result<(), Violation> {
        let client = &self.clients[waiter.client];
        if client.attempt.is_none_or(|a| a.id != waiter.attempt) {
            return Ok(());
        }
        let client_id = client.id.clone();
        self.trace(|| format!("{client_id} attempt {} answered: {reply:?}", waiter.attempt));
        match reply {
            Ok(outcome) => self.client_done(waiter.client, outcome),
            Err(err) => self.client_refused(waiter.client, err),
        }
    }

    /// The current step got its outcome: check it, record an acknowledged message, move on.
    fn client_done(&mut self, c: usize, outcome: Outcome) -> Result<(), Violation> {
        let client = &mut self.clients[c];
        let posted = client
            .judge(&outcome)
            .map_err(|m| Violation::new(Invariant::ClientHistory, m))?;
        if let (Some(index), Step::Message(seq)) = (posted, client.step) {
            self.history
                .acknowledged(&client.id, seq, index, self.now)
                .map_err(|m| Violation::new(Invariant::ClientHistory, m))?;
        }
        client.advance();
        let at = self.now + self.rng.random_range(0..=4 * TICK);
        self.queue.schedule(at, Event::Client(c));
        Ok(())
    }

    /// A refusal: go where the server points, or wait and try again.
    fn client_refused(&mut self, c: usize, err: Error) -> Result<(), Violation> {
        let servers = self.servers.len();
        let client = &mut self.clients[c];
        client.attempt = None;
        let delay = match err {
            Error::NotPrimary { primary } => {
                client.target = self.ids[&primary];
                self.rng.random_range(1..=TICK)
            }
            Error::NoPrimary => {
                client.another_server(servers, &mut self.rng);
                self.rng.random_range(2 * TICK..=6 * TICK)
            }
            // The primary is handing over: the same server soon points to the new one.
            Error::Unavailable(_) => self.rng.random_range(1..=2 * TICK),
            // A retried registration finds the user registered by an earlier attempt.
            Error::Conflict(m) if client.step == Step::Register => {
                return self.client_done(c, Outcome::Rejected(Rejection::Conflict(m)));
            }
            // A retried expiry finds the client expired by an earlier attempt.
            Error::NotFound(m) if client.step == Step::Expire => {
                return self.client_done(c, Outcome::Rejected(Rejection::NotFound(m)));
            }
            other => {
                return Err(Violation::new(
                    Invariant::ClientHistory,
                    format!("client {} refused at {:?}: {other}", client.id, client.step),
                ));
            }
        };
        self.queue.schedule(self.now + delay, Event::Client(c));
        Ok(())
    }
}
