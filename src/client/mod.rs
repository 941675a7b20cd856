//! The client library and its notification listener.
//!
//! A [`Client`] talks to a cluster without being told which server is the primary: it
//! starts at any server it knows, follows `307 not_primary` redirects, moves on to the next
//! server when one cannot answer, and switches at once when a new primary announces itself
//! on the client's notification [`Listener`] (`POST /new-primary`). A logged-in client stays
//! logged in across a failover, and a demo message retried on the new primary keeps its
//! `seq`, so it is stored once.
//!
//! ```no_run
//! use understudy::client::{Client, ClientOptions};
//!
//! # async fn example() -> understudy::Result<()> {
//! let servers = vec!["127.0.0.1:7001".to_string(), "127.0.0.1:7002".to_string()];
//! // Starts the listener on a free port and calls `POST /client/init` with it.
//! let client = Client::connect(servers, ClientOptions::default()).await?;
//! client.register("alice", "correct horse battery").await?;
//! client.login("alice", "correct horse battery").await?;
//! let index = client.send("hello, board").await?;
//! println!("stored as message #{index}; the primary is {:?}", client.primary());
//! for message in client.messages(1, 10).await? {
//!     println!("{} {}: {}", message.index, message.username, message.message);
//! }
//! client.logout().await?;
//! # Ok(())
//! # }
//! ```
//!
//! The parts, one file each:
//! - [`http`]: a pooled HTTP/1.1 client with timeouts, also used by the server for its
//!   peer calls;
//! - [`listener`]: the `/new-primary` endpoint;
//! - [`routing`]: the retry and failover policy as pure functions;
//! - [`session`]: [`Client`] itself;
//! - [`saved`]: a session stored in a file, for the command line.

pub mod http;
pub mod listener;
pub mod routing;
pub mod saved;
pub mod session;

#[cfg(test)]
mod tests;

pub use http::{HttpClient, HttpResponse};
pub use listener::Listener;
pub use routing::Backoff;
pub use saved::{PendingMessage, SavedSession};
pub use session::{Client, ClientOptions};
