//! A client request in one turn: the primary checks it against its applied state and, if
//! nothing refuses it, proposes it.
//!
//! The checks are the ones `apply` makes again deterministically (the state may move between
//! the check and the commit); checking first means a bad request changes nothing and costs
//! no log entry, and a retried demo message is answered with its original index without
//! being proposed again. A refusal that rests on the state (404, 401, 409) is given only
//! while the primary heard from a majority recently (`View::refuse`).

use super::{Replica, Store, Submitted};
use crate::app::{Command, MessageCheck, Outcome, Request, Tables, check_message, session_valid};
use crate::error::{Error, Result};

impl<S: Store, W> Replica<S, W> {
    /// Checks and proposes a client request; `waiter` is answered when it is applied, or at
    /// once (returned) if it is refused or already answered.
    pub fn submit(&mut self, request: Request, waiter: W) -> Submitted<W> {
        match self.check(&request) {
            Ok(None) => {}
            Ok(Some(outcome)) => return Submitted::Done(waiter, Ok(outcome)),
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

    /// `Ok(None)`: propose it. `Ok(Some)`: already answered. `Err`: refused.
    fn check(&self, request: &Request) -> Result<Option<Outcome>> {
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
                    return Err(
                        view.refuse(Error::Conflict(format!("username {username} is taken")))
                    );
                }
            }
            Command::Login {
                client_id,
                username,
                ..
            } => {
                if tables.client(client_id)?.is_none() {
                    return Err(view.refuse(Error::NotFound(format!("no client {client_id}"))));
                }
                // The handler verified the password against the stored hash; the user must
                // still be there.
                if tables.user(username)?.is_none() {
                    return Err(view.refuse(Error::Unauthorized(
                        "wrong username or password".to_string(),
                    )));
                }
            }
            Command::Logout {
                client_id,
                token_hash,
            } => {
                if tables.client(client_id)?.is_none() {
                    return Err(view.refuse(Error::NotFound(format!("no client {client_id}"))));
                }
                if !session_valid(tables, client_id, token_hash)? {
                    return Err(view.refuse(Error::Unauthorized(
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
                MessageCheck::Retry(index) => return Ok(Some(Outcome::Posted { index })),
                MessageCheck::Rejected(rejection) => {
                    return Err(view.refuse(rejection.into_error()));
                }
            },
        }
        Ok(None)
    }
}
