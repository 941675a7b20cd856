//! The `understudy` binary: `server`, `client`, `demo` and `bench` subcommands.

mod cli;

use clap::{Parser, Subcommand};

/// understudy: a primary-backup replication service with quorum elections.
#[derive(Parser, Debug)]
#[command(name = "understudy", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Talk to a cluster as a client: register, log in, send and read messages.
    Client(cli::client::ClientArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Client(args) => runtime.block_on(cli::client::run(args)),
    }
}
