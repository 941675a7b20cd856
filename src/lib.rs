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
//!
//! Below all of them sit the error type ([`error`]), the wire types shared by server and
//! client ([`api`]), and the atomic replacement of small files (`atomic_file`).

pub mod api;
pub mod app;
mod atomic_file;
pub mod client;
pub mod error;
pub mod replication;
pub mod server;
#[cfg(test)]
mod sim;
pub mod storage;

pub use error::{Error, Result};
