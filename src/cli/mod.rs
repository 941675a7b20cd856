//! The subcommands of the binary, one file each.

pub mod admin;
pub mod bench;
mod bench_catch_up;
mod bench_failover;
mod bench_notify;
#[cfg(target_os = "linux")]
mod bench_notify_ring;
mod bench_proc;
mod bench_rolling;
mod bench_soak;
mod bench_steady;
mod bench_throughput;
mod bench_writers;
pub mod certs;
pub mod client;
mod client_output;
mod client_tls;
mod cluster_status;
pub mod demo;
mod local_cluster;
mod password;
mod secret;
pub mod server;
mod shell_input;
