//! understudy: a primary-backup (passive replication) service.
//!
//! Three layers, one folder each:
//!
//! - [`replication`]: the replication protocol as a deterministic state machine (terms, log,
//!   votes, commit). No I/O: messages, proposals and clock ticks go in; messages to send,
//!   entries to persist and entries to apply come out.
//! - [`app`]: the replicated application (clients, users, sessions, the message board), a
//!   pure `apply(command) -> outcome`.
//! - the drivers around them: [`storage`] (the durable log), [`server`] (HTTP, peers,
//!   timers), [`client`] (library and notification listener).

pub mod api;
pub mod app;
pub mod client;
pub mod error;
pub mod replication;
pub mod server;
#[cfg(test)]
mod sim;
pub mod storage;

pub use error::{Error, Result};
