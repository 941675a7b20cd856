//! The client library and its notification listener.
