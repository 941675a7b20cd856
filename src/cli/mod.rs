//! The subcommands of the binary, one file each.

pub mod admin;
pub mod bench;
mod bench_failover;
mod bench_throughput;
pub mod client;
mod client_output;
pub mod demo;
mod local_cluster;
mod password;
mod secret;
pub mod server;
