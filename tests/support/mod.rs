//! Shared helpers of the integration tests: servers in this process (fast, for the HTTP
//! contract), servers as real processes (for replication across processes), and network
//! namespaces of our own (for partitions).
#![allow(dead_code)]

pub mod inproc;
pub mod netns;
pub mod procs;
