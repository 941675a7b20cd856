//! `understudy server`: runs one server until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::secret::SecretArgs;
use understudy::server::{self, Config};

#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// Address to listen on, HOST:PORT.
    #[arg(long)]
    listen: String,
    /// Directory for the log and the server's identity (created if missing).
    #[arg(long)]
    data_dir: PathBuf,
    #[command(flatten)]
    secret: SecretArgs,
    /// Address others use to reach this server (its name in the cluster); defaults to
    /// --listen, and is required when --listen is an unspecified address (0.0.0.0, [::]).
    #[arg(long)]
    advertise: Option<String>,
    /// Members of an existing cluster to join, HOST:PORT[,HOST:PORT...]. Remembered in the
    /// data dir: a restart without it goes on joining them (a data dir made to join never
    /// starts a cluster of its own). Ignored once the data dir holds a log.
    #[arg(long, value_delimiter = ',')]
    join: Vec<String>,
    /// Heartbeat interval of the primary, in milliseconds.
    #[arg(long, default_value_t = server::DEFAULT_HEARTBEAT_MS)]
    heartbeat_ms: u64,
    /// Least time without a primary before an election, in milliseconds (the actual timeout
    /// is random between this and twice this).
    #[arg(long, default_value_t = server::DEFAULT_ELECTION_TIMEOUT_MS)]
    election_timeout_ms: u64,
    /// Compact the log once the store durably holds this many entries beyond the last
    /// compaction (the store is flushed every few thousand entries or 200 ms).
    #[arg(long, alias = "snapshot-every", default_value_t = server::DEFAULT_COMPACT_EVERY)]
    compact_every: u64,
    /// `always`: every acknowledged write is on disk (fsync). `never`: only handed to the
    /// operating system, which loses it if the machine fails; for measurements only.
    #[arg(long, value_enum, default_value_t = Fsync::Always)]
    fsync: Fsync,
    /// Threads of the async runtime (default: one per core).
    #[arg(long)]
    worker_threads: Option<usize>,
}

impl ServerArgs {
    /// The runtime's worker threads, if given.
    pub fn worker_threads(&self) -> Option<usize> {
        self.worker_threads.filter(|&n| n > 0)
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Fsync {
    Always,
    Never,
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let secret = args.secret.load()?;
    anyhow::ensure!(args.heartbeat_ms > 0, "--heartbeat-ms must be positive");
    anyhow::ensure!(
        args.election_timeout_ms >= 2 * args.heartbeat_ms,
        "--election-timeout-ms must be at least twice --heartbeat-ms"
    );
    let config = Config {
        listen: args.listen,
        advertise: args.advertise,
        data_dir: args.data_dir,
        secret,
        join: args.join,
        heartbeat: Duration::from_millis(args.heartbeat_ms),
        election_timeout: Duration::from_millis(args.election_timeout_ms),
        fsync: args.fsync == Fsync::Always,
        compact_every: args.compact_every.max(1),
    };
    let stop = CancellationToken::new();
    tokio::spawn(cancel_on_signal(stop.clone()));
    server::run(config, stop, CancellationToken::new()).await?;
    Ok(())
}

/// Cancels `stop` on SIGTERM or Ctrl-C: a primary hands over, then the server stops.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    shutdown.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
    shutdown.cancel();
}
