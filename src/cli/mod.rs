//! The subcommands of the binary, one file each.

pub mod admin;
pub mod bench;
pub mod client;
pub mod demo;
mod local_cluster;
mod secret;
pub mod server;
