//! `understudy server`: runs one server until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::secret::SecretArgs;
use understudy::server::{self, Config, Limits};
use understudy::tls::{ServerTls, TlsFiles};

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
    /// Tell clients of a new primary on tokio sockets rather than through io_uring (which
    /// is used where the kernel offers it, on Linux).
    #[arg(long, env = "UNDERSTUDY_NO_IO_URING")]
    no_io_uring: bool,
    /// Threads of the async runtime (default: one per core).
    #[arg(long)]
    worker_threads: Option<usize>,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    limits: LimitArgs,
}

/// TLS for clients and peers. All three files together, or none (plain HTTP).
#[derive(clap::Args, Debug)]
struct TlsArgs {
    /// This server's certificate chain (PEM). Reloaded on SIGHUP.
    #[arg(long, requires_all = ["tls_key", "tls_client_ca"])]
    tls_cert: Option<PathBuf>,
    /// This server's private key (PEM). Reloaded on SIGHUP.
    #[arg(long, requires_all = ["tls_cert", "tls_client_ca"])]
    tls_key: Option<PathBuf>,
    /// The cluster's CA (PEM): peers must present a certificate it signed (mutual TLS), and
    /// peers' server certificates are checked against it. Clients may present one too.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_client_ca: Option<PathBuf>,
}

/// Abuse limits.
#[derive(clap::Args, Debug)]
struct LimitArgs {
    /// Open connections at most; more are answered 429 and closed.
    #[arg(long, default_value_t = server::listen::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// How long a request's headers may take to arrive, in milliseconds.
    #[arg(long, default_value_t = millis(server::listen::DEFAULT_HEADER_READ_TIMEOUT))]
    header_read_timeout_ms: u64,
    /// How long a request's body may take to arrive, in milliseconds (then 408).
    #[arg(long, default_value_t = millis(server::limits::DEFAULT_BODY_READ_TIMEOUT))]
    body_read_timeout_ms: u64,
    /// `client/init` plus `client/register` calls per source address per minute (0: no
    /// limit); more are answered 429 with Retry-After.
    #[arg(long, default_value_t = server::limits::DEFAULT_INITS_PER_MINUTE)]
    inits_per_minute: u32,
    /// Seconds a client may stay without ever logging in before it is forgotten (0: never).
    #[arg(long, default_value_t = server::limits::DEFAULT_CLIENT_TTL.as_secs())]
    client_ttl_secs: u64,
}

const fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
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
    let tls = match (args.tls.tls_cert, args.tls.tls_key, args.tls.tls_client_ca) {
        (Some(cert), Some(key), Some(client_ca)) => Some(ServerTls::load(&TlsFiles {
            cert,
            key,
            client_ca,
        })?),
        _ => None,
    };
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
        tls: tls.clone(),
        io_uring: !args.no_io_uring,
        limits: Limits {
            max_connections: args.limits.max_connections.max(1),
            header_read_timeout: Duration::from_millis(args.limits.header_read_timeout_ms.max(1)),
            body_read_timeout: Duration::from_millis(args.limits.body_read_timeout_ms.max(1)),
            inits_per_minute: args.limits.inits_per_minute,
            client_ttl: (args.limits.client_ttl_secs > 0)
                .then(|| Duration::from_secs(args.limits.client_ttl_secs)),
        },
    };
    let stop = CancellationToken::new();
    tokio::spawn(cancel_on_signal(stop.clone()));
    if let Some(tls) = tls {
        tokio::spawn(reload_on_hangup(tls));
    }
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

/// On SIGHUP, reads the certificate and key again; new connections use them. A pair that
/// does not load is reported and the old one kept.
async fn reload_on_hangup(tls: ServerTls) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot watch SIGHUP; certificates will not be reloaded");
            return;
        };
        while hangups.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => tracing::info!("reloaded the TLS certificate and key"),
                Err(err) => {
                    tracing::error!(%err, "could not reload the TLS certificate; keeping the old one")
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tls;
}
