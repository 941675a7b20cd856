//! The replicated application: clients, users, sessions and the message board.
//!
//! Every change is a [`Command`] inside a [`Request`] that the primary proposes to the
//! replication layer; once committed, every server applies it with [`State::apply`], a pure
//! and deterministic function, and so reaches the same state.

mod command;
mod state;

pub use command::{Command, Outcome, Rejection, Request};
pub use state::{Applied, State};
