//! The replication protocol (placeholder for the module documentation).

mod message;
mod persist;

pub use message::{Entry, Envelope, Index, Message, NodeId, Payload, Term};
pub use persist::{HardState, Write};
