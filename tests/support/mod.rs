//! Shared helpers of the integration tests: servers in this process (fast, for the HTTP
//! contract) and servers as real processes (for replication across processes).
#![allow(dead_code)]

pub mod inproc;
pub mod procs;
