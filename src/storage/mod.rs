//! Durable storage of the replication log.
