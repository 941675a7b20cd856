//! The subcommands of the binary, one file each.

pub mod client;
pub mod demo;
pub mod server;
