//! A client request in one turn: the primary checks it against its applied state and, if
//! nothing refuses it, proposes it.
//!
//! The checks are the ones `apply` makes again deterministically (the state may move between
//! the check and the commit); checking first means a bad request changes nothing and costs
//! no log entry, and a retried demo message is answered with its original index without
//! being proposed again. A refusal that rests on the state (404, 401, 409) is given only
//! after a confirmation round (ReadIndex, `reads.rs`) shows this server was still the
//! primary when the request came: a primary deposed without knowing it must not turn a
//! client away on the strength of a state that moved on. The request is checked again
//! then, so if the state moved meanwhile it is proposed after all.

use super::reads::ReadWait;
use super::{Replica, Store, Submitted};
use crate::app::{
    Command, MessageCheck, Outcome, Request, Tables, check_message, never_logged_in, session_valid,
};
use crate::error::{Error, Result};

impl<S: Store, W> Replica<S, W> {
    /// Checks and proposes a client request; `waiter` is answered when it is applied, or at
    /// once (returned) if it is refused or already answered.
    pub fn submit(&mut self, request: Request, waiter: W) -> Submitted<W> {
        self.submit_checked(request, waiter, false)
    }

    /// `confirmed`: a confirmation round began after the request came, so a refusal from
    /// the state is final.
    pub(super) fn submit_checked(
        &mut self,
        request: Request,
        waiter: W,
        confirmed: bool,
    ) -> Submitted<W> {
        match self.check(&request) {
            Ok(Checked::Propose) => {}
            Ok(Checked::Answered(outcome)) => return Submitted::Done(waiter, Ok(outcome)),
            Ok(Checked::Refused(err)) if confirmed => return Submitted::Done(waiter, Err(err)),
            Ok(Checked::Refused(_)) => {
                return match self.node.read_index() {
                    Ok(id) => {
                        self.reads.insert(id, ReadWait::Recheck(request, waiter));
                        Submitted::Confirming
                    }
                    Err(err) => Submitted::Done(waiter, Err(err)),
                };
            }
            Err(err) => return Submitted::Done(waiter, Err(err)),
        }
        match self.node.propose(request.encode()) {
            Ok(index) => {
                self.pending.insert(index, (self.node.term(), waiter));
                Submitted::Pending(index)
            }
            Err(err) => Submitted::Done(waiter, Err(err)),
        }
    }

    /// What the primary's state says of a request; `Err` if it cannot judge (not the
    /// primary, not ready, the store failed).
    fn check(&self, request: &Request) -> Result<Checked> {
        let view = self.view();
        // Only a primary whose state is complete judges against it. A new client id cannot
        // collide with a committed one, so `client/init` needs only the role, which
        // `propose` checks.
        if !matches!(request.command, Command::InitClient { .. }) {
            view.ensure_primary()?;
        }
        let tables = &self.machine;
        match &request.command {
            Command::InitClient { .. } => {}
            Command::Register { username, .. } => {
                if tables.user(username)?.is_some() {
                    return Ok(Checked::Refused(Error::Conflict(format!(
                        "username {username} is taken"
                    ))));
                }
            }
            Command::Login {
                client_id,
                username,
                ..
            } => {
                if tables.client(client_id)?.is_none() {
                    return Ok(Checked::Refused(Error::NotFound(format!(
                        "no client {client_id}"
                    ))));
                }
                // The handler verified the password against the stored hash; the user must
                // still be there.
                if tables.user(username)?.is_none() {
                    return Ok(Checked::Refused(Error::Unauthorized(
                        "wrong username or password".to_string(),
                    )));
                }
            }
            Command::Logout {
                client_id,
                token_hash,
            } => {
                if tables.client(client_id)?.is_none() {
                    return Ok(Checked::Refused(Error::NotFound(format!(
                        "no client {client_id}"
                    ))));
                }
                if !session_valid(tables, client_id, token_hash)? {
                    return Ok(Checked::Refused(Error::Unauthorized(
                        "not logged in with this token".to_string(),
                    )));
                }
            }
            Command::Message {
                client_id,
                token_hash,
                seq,
                text,
            } => match check_message(tables, client_id, token_hash, *seq, text)? {
                MessageCheck::New => {}
                MessageCheck::Retry(index) => {
                    return Ok(Checked::Answered(Outcome::Posted { index }));
                }
                MessageCheck::Rejected(rejection) => {
                    return Ok(Checked::Refused(rejection.into_error()));
                }
            },
            Command::ExpireClient { client_id } => match tables.client(client_id)? {
                None => {
                    return Ok(Checked::Refused(Error::NotFound(format!(
                        "no client {client_id}"
                    ))));
                }
                Some(client) if !never_logged_in(&client) => {
                    return Ok(Checked::Refused(Error::Conflict(format!(
                        "client {client_id} has logged in; it does not expire"
                    ))));
                }
                Some(_) => {}
            },
        }
        Ok(Checked::Propose)
    }
}

/// What the primary's state says of a request.
enum Checked {
    /// Nothing refuses it: propose it.
    Propose,
    /// Answered already (a retried message that is on the board: committed, so final).
    Answered(Outcome),
    /// The state refuses it; final only after a confirmation round.
    Refused(Error),
}
