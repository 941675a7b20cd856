//! `understudy admin`: operator commands. `status` shows the cluster as a table; `remove`
//! takes a (dead) server out of the configuration through the primary, so the rest keep a
//! majority and a new server can join in its place; `transfer` moves the primary's office to
//! another server without stopping anything (what a SIGTERM to the primary does first).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result};

use super::secret::SecretArgs;
use understudy::api::{
    HandOverRequest, HandOverResponse, RemoveServerRequest, RemoveServerResponse, StatusResponse,
};
use understudy::client::HttpClient;
use understudy::server::post_to_primary;

#[derive(clap::Args, Debug)]
pub struct AdminArgs {
    /// Servers to ask, HOST:PORT[,...] (any members).
    #[arg(long, env = "UNDERSTUDY_SERVERS", value_delimiter = ',', global = true)]
    servers: Vec<String>,
    /// The cluster secret (needed for changes).
    #[command(flatten)]
    secret: SecretArgs,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(clap::Subcommand, Debug)]
enum AdminCommand {
    /// Every member's role, term and progress, as a table.
    Status,
    /// Remove a server from the configuration (one at a time; not the primary itself).
    Remove {
        /// The server to remove, HOST:PORT as it is named in `members`.
        #[arg(long)]
        server: String,
    },
    /// Hand the primary's office over to another member (the most up-to-date one if --to
    /// is not given); returns once the old primary follows the new one.
    Transfer {
        /// The member to hand over to, HOST:PORT as it is named in `members`.
        #[arg(long)]
        to: Option<String>,
    },
}

pub async fn run(args: AdminArgs) -> Result<()> {
    if args.servers.is_empty() {
        anyhow::bail!("no servers: pass --servers HOST:PORT[,HOST:PORT...]");
    }
    let http = HttpClient::with_timeout(Duration::from_secs(2));
    match &args.command {
        AdminCommand::Status => status(&http, &args.servers).await,
        AdminCommand::Remove { server } => {
            let secret = args.secret.load()?;
            let answer: RemoveServerResponse = post_to_primary(
                &http,
                &secret,
                &args.servers,
                "/replication/remove-server",
                &RemoveServerRequest { id: server.clone() },
                Duration::from_secs(12),
                Duration::from_secs(15),
            )
            .await
            .with_context(|| format!("cannot remove {server}"))?;
            println!(
                "removed {server}; members now: {}",
                answer.members.join(", ")
            );
            Ok(())
        }
        AdminCommand::Transfer { to } => {
            let secret = args.secret.load()?;
            let answer: HandOverResponse = post_to_primary(
                &http,
                &secret,
                &args.servers,
                "/replication/hand-over",
                &HandOverRequest { to: to.clone() },
                Duration::from_secs(12),
                Duration::from_secs(15),
            )
            .await
            .context("cannot hand over")?;
            println!("the primary is now {}", answer.primary);
            Ok(())
        }
    }
}

/// Asks the given servers and every member they name; prints one row per server.
async fn status(http: &HttpClient, servers: &[String]) -> Result<()> {
    let mut all: BTreeSet<String> = servers.iter().cloned().collect();
    let mut rows = Vec::new();
    let mut asked = BTreeSet::new();
    while let Some(server) = all.iter().find(|s| !asked.contains(*s)).cloned() {
        asked.insert(server.clone());
        let status = match http.get(&server, "/status", &[]).await {
            Ok(response) => response.json::<StatusResponse>().ok(),
            Err(_) => None,
        };
        if let Some(status) = &status {
            all.extend(status.members.iter().cloned());
        }
        rows.push((server, status));
    }
    println!(
        "{:<22} {:<9} {:>5} {:<22} {:>7} {:>7} {:>7} {:>8}",
        "server", "role", "term", "primary", "commit", "applied", "clients", "messages"
    );
    for (server, status) in rows {
        match status {
            Some(s) => println!(
                "{:<22} {:<9} {:>5} {:<22} {:>7} {:>7} {:>7} {:>8}",
                server,
                s.role,
                s.term,
                s.primary.unwrap_or_else(|| "-".to_string()),
                s.commit_index,
                s.applied_index,
                s.clients,
                s.messages
            ),
            None => println!("{server:<22} unreachable"),
        }
    }
    Ok(())
}
