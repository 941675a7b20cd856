//! understudy: a primary-backup (passive replication) service.
//!
//! Layers, one folder each, with the dependencies pointing down:
//!
//! - the drivers: [`server`] (HTTP, peers, timers, the storage worker), [`client`] (library
//!   and notification listener), and the binary's subcommands;
//! - [`storage`]: the durable log, the embedded store of application state, state transfer;
//! - [`replica`]: everything around the protocol that is not I/O (checks, gating, applying,
//!   flushing, compaction, restore), run by the server and by the simulation alike;
//! - [`replication`]: the replication protocol as a deterministic state machine (terms, log,
//!   votes, commit). No I/O: messages, proposals and clock ticks go in; messages to send,
//!   entries to persist and entries to apply come out;
//! - [`app`]: the replicated application (clients, users, sessions, the message board), a
//!   pure `apply(tables, request) -> outcome`.
//!
//! Below all of them sit the error type ([`error`]), the wire types shared by server and
//! client ([`api`]), and the atomic replacement of small files (`atomic_file`).

pub mod api;
pub mod app;
mod atomic_file;
pub mod client;
pub mod error;
#[cfg(test)]
mod fuzz;
pub mod replica;
pub mod replication;
pub mod server;
#[cfg(test)]
mod sim;
pub mod storage;
pub mod tls;
#[cfg(target_os = "linux")]
pub mod uring;

pub use error::{Error, Result};
