//! The replicated application: clients, users, sessions and the message board.
//!
//! Every change is a [`Command`] inside a [`Request`] that the primary proposes to the
//! replication layer; once committed, every server applies it with [`apply`], a pure and
//! deterministic function of the [`Tables`] it writes to, and so reaches the same state.
//! Where the tables live (memory, the embedded store, a simulated store) is not this
//! layer's business.

mod apply;
mod command;
mod memory;
mod records;
mod tables;

pub use apply::{
    Applied, MessageCheck, apply, board, check_message, client_addresses, client_summaries,
    never_logged_in, session_valid,
};
pub use command::{Command, Outcome, Rejection, Request};
pub use memory::MemTables;
pub use records::{ClientRecord, ClientSummary, Counters, LastMessage, MessageRecord, Posted};
pub use tables::{Tables, TablesMut, detached};
