//! `understudy admin`: operator commands. `status` shows the cluster as a table; `remove`
//! takes a (dead) server out of the configuration through the primary, so the rest keep a
//! majority and a new server can join in its place; `transfer` moves the primary's office to
//! another server without stopping anything (what a SIGTERM to the primary does first).

use std::time::Duration;

use anyhow::{Context, Result};

use super::client_tls::ClientTlsArgs;
use super::cluster_status::ClusterStatus;
use super::secret::SecretArgs;
use understudy::api::{
    HandOverRequest, HandOverResponse, RemoveServerRequest, RemoveServerResponse,
};
use understudy::client::HttpClient;
use understudy::server::post_to_primary;

#[derive(clap::Args, Debug)]
pub struct AdminArgs {
    /// Servers to ask, HOST:PORT[,...] (any members).
    #[arg(long, env = "UNDERSTUDY_SERVERS", value_delimiter = ',', global = true)]
    servers: Vec<String>,
    /// Print answers as JSON instead of text (errors too, as `{"error": ...}`).
    #[arg(long, global = true)]
    json: bool,
    /// The cluster secret (needed for changes).
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    tls: ClientTlsArgs,
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
    let json = args.json;
    let result = run_command(args).await;
    if json && let Err(err) = &result {
        println!("{}", serde_json::json!({ "error": format!("{err:#}") }));
    }
    result
}

async fn run_command(args: AdminArgs) -> Result<()> {
    if args.servers.is_empty() {
        anyhow::bail!("no servers: pass --servers HOST:PORT[,HOST:PORT...]");
    }
    let http = HttpClient::with_tls(Duration::from_secs(2), args.tls.config()?);
    match &args.command {
        AdminCommand::Status => status(&http, &args.servers, args.json).await,
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
            if args.json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                println!(
                    "removed {server}; members now: {}",
                    answer.members.join(", ")
                );
            }
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
            if args.json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                println!("the primary is now {}", answer.primary);
            }
            Ok(())
        }
    }
}

/// Asks the given servers and every member they name; prints one row per server. Fails
/// when no primary answered.
async fn status(http: &HttpClient, servers: &[String], json: bool) -> Result<()> {
    let cluster = ClusterStatus::gather(http, servers).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&cluster.json())?);
    } else {
        println!("{}", cluster.table());
    }
    if cluster.primary().is_none() {
        anyhow::bail!(
            "no primary reachable: an election is running, or a majority of the servers cannot be reached"
        );
    }
    Ok(())
}
