//! The `understudy` binary: `server`, `client`, `demo`, `bench`, `admin` and `certs`.

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// understudy: a primary-backup replication service with quorum elections.
#[derive(Parser, Debug)]
#[command(name = "understudy", version, about, long_about = None)]
struct Cli {
    /// How diagnostics on stderr are written: `text` for people, `json` (one object a
    /// line) for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: TopCommand,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

// The top-level subcommands, one module of `cli` each. (A plain comment: clap would take a
// doc comment as help text.)
#[derive(Subcommand, Debug)]
enum TopCommand {
    /// Run a server: start a new cluster, join one, or resume from the data dir.
    Server(cli::server::ServerArgs),
    /// Talk to a cluster as a client: register, log in, send and read messages.
    Client(cli::client::ClientArgs),
    /// Run a local three-server cluster and a client, showing replication and a failover.
    Demo(cli::demo::DemoArgs),
    /// Measure failover times, throughput, a long soak and a joining server's catch-up on a
    /// local cluster.
    Bench(cli::bench::BenchArgs),
    /// Operator commands: cluster status, removing a server, handing the primary over.
    Admin(cli::admin::AdminArgs),
    /// Make a cluster's CA and a TLS certificate for each server.
    Certs(cli::certs::CertsArgs),
}

/// jemalloc rather than the system allocator or mimalloc, measured on the write path at 64
/// clients: glibc's malloc and free (with its consolidation of free chunks) took about 15 %
/// of the servers' CPU. mimalloc hands out a freed block again only once the rest of its
/// page is used up, so a new record or request mostly lands on memory gone cold: its
/// allocation was the primary's most expensive user-space function (12 % of the runtime
/// workers' user time). jemalloc's per-thread caches reuse the block freed last.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Diagnostics go to stderr; stdout carries only what a command prints for its user (for a
    // server: one line per applied message).
    let default_level = match cli.command {
        TopCommand::Server(_) => "info",
        _ => "warn",
    };
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(log_filter(default_level));
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let TopCommand::Server(args) = &cli.command
        && let Some(threads) = args.worker_threads()
    {
        builder.worker_threads(threads);
    }
    let result = builder
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| match cli.command {
            TopCommand::Server(args) => runtime.block_on(cli::server::run(args)),
            TopCommand::Client(args) => runtime.block_on(cli::client::run(args)),
            TopCommand::Demo(args) => runtime.block_on(cli::demo::run(args)),
            TopCommand::Bench(args) => runtime.block_on(cli::bench::run(args)),
            TopCommand::Admin(args) => runtime.block_on(cli::admin::run(args)),
            TopCommand::Certs(args) => cli::certs::run(args),
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One readable line with its causes, not a backtrace.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `RUST_LOG` if set, else `default_level`. The HTTP libraries' own debug lines (the
/// connection pool's above all) drown everything else at `debug`, so they stay at `info`
/// unless `RUST_LOG` names them.
fn log_filter(default_level: &str) -> EnvFilter {
    let asked = std::env::var("RUST_LOG").ok();
    let mut filter = match &asked {
        Some(directives) => EnvFilter::builder().parse_lossy(directives),
        None => EnvFilter::new(default_level),
    };
    if !asked.as_deref().unwrap_or_default().contains("hyper") {
        for quiet in ["hyper=info", "hyper_util=info"] {
            if let Ok(directive) = quiet.parse() {
                filter = filter.add_directive(directive);
            }
        }
    }
    filter
}
