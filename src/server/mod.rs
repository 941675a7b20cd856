//! The server: HTTP endpoints, peer transport and the driver around the replication core.
