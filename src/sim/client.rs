//! A simulated client's script and state: introduce itself, register, log in, then post
//! numbered messages one at a time; or, for an idle client, introduce itself and never log
//! in, after which its expiry is proposed (as the primary's expiry task does) through the
//! same path. The attempt under way and where it was sent. What a
//! client does when it wakes or is answered is in `clients.rs`, as part of the run.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::clock::Time;
use super::faults::TICK;
use crate::app::{Command, Outcome, Rejection, Request};

/// How long a client waits for an answer before it tries another server.
pub const REQUEST_TIMEOUT: Time = 30 * TICK;

/// Where a client is in its script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Init,
    Register,
    Login,
    /// Posting the message with this `seq`.
    Message(u64),
    /// An idle client's expiry (`ExpireClient` of its own id).
    Expire,
    Done,
}

/// One request sent to one server, waiting for its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub id: u64,
    pub server: usize,
    pub deadline: Time,
}

/// One client.
pub struct Client {
    pub id: String,
    /// The notification address it registers (nothing listens: only stored and compared).
    address: String,
    pub step: Step,
    pub attempt: Option<Attempt>,
    /// The server to ask next.
    pub target: usize,
    /// Whether the current step's request was sent at least once (the healing phase lets
    /// such a request finish, and starts no new one).
    pub started: bool,
    attempts: u64,
    /// Never logs in: its script is `Init`, then `Expire`.
    idle: bool,
}

impl Client {
    pub fn new(number: usize, target: usize) -> Client {
        Client {
            id: format!("c{number}"),
            address: format!("10.0.0.{number}:9000"),
            step: Step::Init,
            attempt: None,
            target,
            started: false,
            attempts: 0,
            idle: false,
        }
    }

    /// A client that introduces itself, never logs in, and is then expired.
    pub fn idle(number: usize, target: usize) -> Client {
        Client {
            idle: true,
            ..Client::new(number, target)
        }
    }

    fn username(&self) -> String {
        format!("user-{}", self.id)
    }

    fn token_hash(&self) -> String {
        format!("token-hash-{}", self.id)
    }

    /// The text of message `seq`: unique per client and seq, so the board shows who sent it.
    pub fn text(&self, seq: u64) -> String {
        format!("{} says {seq}", self.id)
    }

    /// The request of the current step.
    pub fn request(&self) -> Option<Request> {
        let command = match self.step {
            Step::Init => Command::InitClient {
                client_id: self.id.clone(),
                address: self.address.clone(),
            },
            Step::Register => Command::Register {
                username: self.username(),
                password_hash: format!("$argon2id$made-up-hash-of-{}", self.id),
            },
            Step::Login => Command::Login {
                client_id: self.id.clone(),
                username: self.username(),
                token_hash: self.token_hash(),
            },
            Step::Message(seq) => Command::Message {
                client_id: self.id.clone(),
                token_hash: self.token_hash(),
                seq,
                text: self.text(seq),
            },
            Step::Expire => Command::ExpireClient {
                client_id: self.id.clone(),
            },
            Step::Done => return None,
        };
        Some(Request {
            origin: format!("{}:40000", self.id),
            command,
        })
    }

    /// Starts a new attempt at the current step on `server`.
    pub fn begin(&mut self, server: usize, now: Time) -> Attempt {
        self.attempts += 1;
        self.started = true;
        let attempt = Attempt {
            id: self.attempts,
            server,
            deadline: now + REQUEST_TIMEOUT,
        };
        self.attempt = Some(attempt);
        attempt
    }

    /// Judges the outcome of the current step. `Ok(Some(index))` for a posted message.
    /// Retries make some refusals expected: a second `InitClient` or `Register` of our own
    /// finds the first one done, a second `ExpireClient` finds the client gone. An expiry
    /// must never find the idle client logged in.
    pub fn judge(&self, outcome: &Outcome) -> Result<Option<u64>, String> {
        match (self.step, outcome) {
            (Step::Init, Outcome::ClientAdded { .. })
            | (Step::Init, Outcome::Rejected(Rejection::Conflict(_)))
            | (Step::Register, Outcome::Registered { .. })
            | (Step::Register, Outcome::Rejected(Rejection::Conflict(_)))
            | (Step::Login, Outcome::LoggedIn)
            | (Step::Expire, Outcome::ClientExpired { .. })
            | (Step::Expire, Outcome::Rejected(Rejection::NotFound(_))) => Ok(None),
            (Step::Message(_), Outcome::Posted { index }) => Ok(Some(*index)),
            (step, outcome) => Err(format!(
                "client {} got {outcome:?} for its step {step:?}",
                self.id
            )),
        }
    }

    /// The current step is done: on to the next.
    pub fn advance(&mut self) {
        self.step = match self.step {
            Step::Init if self.idle => Step::Expire,
            Step::Expire => Step::Done,
            Step::Init => Step::Register,
            Step::Register => Step::Login,
            Step::Login => Step::Message(1),
            Step::Message(seq) => Step::Message(seq + 1),
            Step::Done => Step::Done,
        };
        self.attempt = None;
        self.started = false;
    }

    /// Another server than the last one tried, for a retry after silence.
    pub fn another_server(&mut self, servers: usize, rng: &mut ChaCha8Rng) {
        if servers > 1 {
            let next = rng.random_range(0..servers - 1);
            self.target = if next >= self.target { next + 1 } else { next };
        }
    }
}
