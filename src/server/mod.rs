//! The server: the drivers around the replication core.
//!
//! ```text
//!   HTTP (axum) ──calls──▶ driver task ──jobs (log, flush, swap)──▶ storage worker ──▶ disk
//!        ▲                  │  owns the Replica                            │
//!        └── answers ◀──────┘  ▲ ticks   ▲ done (what is durable) ◀────────┘
//!                              │
//!   peers (HTTP, one sender task per peer) ◀── messages the replica released
//! ```
//!
//! [`run`] binds the listener, opens the data dir (format, log, store), and serves until the
//! shutdown token is cancelled.

pub(crate) mod auth;
pub(crate) mod client_api;
mod credentials;
mod dashboard;
pub(crate) mod driver;
mod events;
mod expiry;
mod front;
mod join;
pub mod limits;
pub mod listen;
pub(crate) mod metrics;
mod notify;
#[cfg(target_os = "linux")]
mod notify_ring;
mod ops_api;
mod peer_api;
mod peer_call;
pub(crate) mod peer_stream;
mod peers;
pub(crate) mod persist;
mod printer;
mod read_api;
pub(crate) mod response;
pub(crate) mod state_transfer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use auth::{AUTH_HEADER, ClusterSecret, PeerGate};
pub use credentials::LoginLimiter;
pub use limits::Limits;
pub use peer_call::post_to_primary;

use crate::api::MAX_BODY_BYTES;
use crate::client::http::HttpClient;
use crate::error::{Error, Result};
use crate::replica::{Replica, Settings};
use crate::replication::{NodeId, Options};
use crate::storage::{
    LogStore, RedbStore, check_format, load_identity, load_join_targets, load_member_since,
    save_identity, save_join_targets,
};
use crate::tls::ServerTls;
use driver::{Driver, DriverHandle, DriverIo};
use events::Events;
use front::Front;
use metrics::Metrics;
use notify::{Notifier, Told};
use peers::{Peers, ToDriver};
use printer::Printer;
use state_transfer::Receiver;

/// Everything a server needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    /// The address to listen on.
    pub listen: String,
    /// The address other servers and clients use to reach this one; its name in the cluster.
    /// Defaults to the listening address.
    pub advertise: Option<String>,
    /// Where the log and the server's identity live.
    pub data_dir: PathBuf,
    /// The shared secret that authenticates peers.
    pub secret: ClusterSecret,
    /// Members to ask to join; empty to start a new cluster.
    pub join: Vec<String>,
    /// How often the primary sends heartbeats.
    pub heartbeat: Duration,
    /// The least time without a primary before a backup starts an election.
    pub election_timeout: Duration,
    /// Compact the log once the store durably holds this many entries beyond the last
    /// compaction.
    pub compact_every: u64,
    /// Whether writes are fsynced before they are acknowledged. Without, an acknowledged
    /// write survives a crash of the server process but not of the machine: for measuring
    /// what fsync costs, not for keeping data.
    pub fsync: bool,
    /// TLS for clients and peers; plain HTTP if none.
    pub tls: Option<ServerTls>,
    /// The abuse limits: connections, read timeouts, inits per source.
    pub limits: Limits,
    /// Whether clients are told of a new primary through io_uring where the kernel offers
    /// it (Linux); otherwise on tokio sockets.
    pub io_uring: bool,
}

/// Default heartbeat interval.
pub const DEFAULT_HEARTBEAT_MS: u64 = 50;
/// Default number of entries between log compactions.
pub const DEFAULT_COMPACT_EVERY: u64 = 10_000;
/// Default election timeout (lower bound; the actual one is random in `[T, 2T)`).
pub const DEFAULT_ELECTION_TIMEOUT_MS: u64 = 300;

/// What every handler shares: cloned for every request, so one reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] holds.
pub struct Shared {
    pub id: NodeId,
    pub driver: DriverHandle,
    pub login_limiter: LoginLimiter,
    /// The store being received from the primary.
    pub transfers: Receiver,
    /// The streams with other servers (peers open theirs through `/replication/stream`).
    pub peers: Peers,
    pub secret: ClusterSecret,
    /// For calls to peers (and, from the dashboard, to every member): TLS if the server has it.
    pub http: HttpClient,
    /// Client inits and registrations per source address.
    pub init_limiter: limits::SourceLimiter,
    /// Clients admitted here that have not logged in yet, for their expiry.
    pub expiry: expiry::Expiry,
    /// How long a request body may take to arrive.
    pub body_read_timeout: Duration,
    pub metrics: Metrics,
    /// The data dir, for the sizes of its files.
    pub data_dir: PathBuf,
    /// Elections and changes of primary, for the dashboard.
    pub events: Events,
    /// When each client was told of a new primary, for the dashboard.
    pub told: Told,
}

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Binds `config.listen` and serves until `stop` is cancelled (then a primary hands its
/// office over first, see [`serve_until`]) or `shutdown` is (at once).
pub async fn run(
    config: Config,
    stop: CancellationToken,
    shutdown: CancellationToken,
) -> Result<()> {
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|err| Error::Io(format!("cannot listen on {}: {err}", config.listen)))?;
    serve_until(config, listener, stop, shutdown).await
}

/// Serves on an already bound listener (tests bind port 0 and read the port first) until
/// `shutdown` is cancelled.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<()> {
    serve_until(config, listener, CancellationToken::new(), shutdown).await
}

/// How long a stopping primary tries to hand over before it stops anyway.
const HAND_OVER_ON_STOP: Duration = Duration::from_secs(5);

/// Serves until `stop` or `shutdown` is cancelled. On `stop` (SIGTERM) a primary first
/// hands its office to the most up-to-date backup (Raft thesis 3.10): it takes no new
/// writes, brings that backup fully up to date, tells it to campaign at once, and stops
/// once it follows the new primary, so a planned restart costs a few milliseconds rather
/// than an election timeout. Writes it had not committed by then are answered with a
/// retryable 503; the client library retries them with the same `seq`.
pub async fn serve_until(
    config: Config,
    listener: TcpListener,
    stop: CancellationToken,
    shutdown: CancellationToken,
) -> Result<()> {
    let local = listener.local_addr()?;
    let advertise = config
        .advertise
        .clone()
        .unwrap_or_else(|| local.to_string());
    check_format(&config.data_dir)?;
    let (log, recovered) = LogStore::open(&config.data_dir)?;
    let id = match load_identity(&config.data_dir)? {
        Some(id) => {
            if id != advertise {
                warn!(stored = %id, advertise = %advertise, "keeping the identity stored in the data dir");
            }
            id
        }
        None => {
            refuse_unreachable_name(&advertise)?;
            save_identity(&config.data_dir, &advertise)?;
            advertise
        }
    };
    refuse_unreachable_name(&id)?;
    let store = RedbStore::open(&config.data_dir)?;
    let (tick, options) = timing(config.heartbeat, config.election_timeout);
    let settings = Settings {
        compact_every: config.compact_every,
        ..Settings::default()
    };
    let mut replica = Replica::restore(
        id.clone(),
        store.clone(),
        recovered.hard_state,
        recovered.base,
        recovered.entries,
        options,
        settings,
        rand::random(),
    )
    .map_err(|err| match err {
        Error::Corrupt(why) => Error::Corrupt(format!("{}: {why}", config.data_dir.display())),
        other => other,
    })?;
    let fresh = replica.is_fresh();
    if !fresh {
        let status = replica.node().status();
        info!(
            term = status.term,
            log_entries = status
                .last_index
                .saturating_sub(replica.node().snapshot_base().index),
            last_index = status.last_index,
            applied_index = replica.applied(),
            "resumed from the data dir: term {}, applied index {}, log to {}",
            status.term,
            replica.applied(),
            status.last_index
        );
    }
    // A data dir made to join never starts a cluster of its own: without --join it goes on
    // joining the members it was given first.
    // What this data dir remembers of joining: whom (a data dir made to join never starts a
    // cluster of its own; without --join it goes on joining them), and since when it is a
    // member (removals of its address before that were of an earlier server; see
    // `Replica::joined`).
    let remembered = load_join_targets(&config.data_dir)?;
    let join = if fresh && !config.join.is_empty() {
        save_join_targets(&config.data_dir, &config.join)?;
        config.join.clone()
    } else {
        if fresh && !remembered.is_empty() {
            info!(members = ?remembered, "this data dir was made to join a cluster and has not joined yet; joining the members it was given");
        }
        remembered
    };
    if let Some(since) = load_member_since(&config.data_dir)? {
        replica.joined(since);
    } else if !join.is_empty() {
        replica.start_joining();
    }
    if fresh && join.is_empty() {
        info!(%id, "starting a new cluster");
        replica.bootstrap();
    } else if !fresh && !config.join.is_empty() {
        info!("resuming from the data dir; --join is ignored");
    }

    let http = HttpClient::with_tls(
        crate::client::http::DEFAULT_TIMEOUT,
        config.tls.as_ref().map(|tls| tls.peer_client.clone()),
    );
    let (removed_tx, removed_rx) = mpsc::unbounded_channel();
    let (handle, calls) = Driver::channel();
    let peers = Peers::new(
        id.clone(),
        config.secret.clone(),
        config.tls.as_ref().map(|tls| tls.peer_client.clone()),
        shutdown.clone(),
        ToDriver {
            driver: handle.clone(),
            removed: removed_tx,
        },
    );
    let (worker_tx, worker_rx) = mpsc::unbounded_channel();
    if !config.fsync {
        warn!("fsync is off: acknowledged writes can be lost if the machine fails");
    }
    let metrics = Metrics::new();
    let (events, told) = (Events::default(), Told::default());
    let storage = persist::spawn(log, store.clone(), config.fsync, worker_tx, metrics.clone())?;
    let io = DriverIo {
        peers: peers.clone(),
        notifier: Notifier::new(
            id.clone(),
            http.clone(),
            config.secret.clone(),
            metrics.clone(),
            told.clone(),
            config.io_uring,
        ),
        printer: Printer::spawn()?,
        http: http.clone(),
        secret: config.secret.clone(),
        handle: handle.clone(),
        metrics: metrics.clone(),
        events: events.clone(),
    };
    let driver = Driver::new(replica, store, storage, io);
    let app = AppState::new(Shared {
        id: id.clone(),
        driver: handle,
        login_limiter: LoginLimiter::default(),
        transfers: Receiver::new(config.data_dir.clone()),
        peers,
        secret: config.secret.clone(),
        http: http.clone(),
        init_limiter: limits::SourceLimiter::per_minute(config.limits.inits_per_minute),
        expiry: expiry::Expiry::default(),
        body_read_timeout: config.limits.body_read_timeout,
        metrics: metrics.clone(),
        data_dir: config.data_dir.clone(),
        events,
        told,
    });
    let handle_for_stop = app.driver.clone();
    if let Some(ttl) = config.limits.client_ttl {
        tokio::spawn(expiry::run(app.clone(), ttl, shutdown.clone()));
    }

    if fresh && !join.is_empty() {
        tokio::spawn(join::join_cluster(
            id.clone(),
            config.data_dir.clone(),
            app.driver.clone(),
            join,
            http.clone(),
            config.secret.clone(),
            shutdown.clone(),
        ));
    }

    if config.tls.is_none() && !local.ip().is_loopback() {
        warn!(listen = %local, "serving plain HTTP on a non-loopback address: passwords, tokens and the log travel in clear; give --tls-cert, --tls-key and --tls-client-ca");
    }
    let gate = PeerGate {
        secret: config.secret.clone(),
        require_certificate: config.tls.is_some(),
        replays: Arc::default(),
    };
    let listen_options = listen::ListenOptions {
        tls: config.tls.clone(),
        max_connections: config.limits.max_connections,
        header_read_timeout: config.limits.header_read_timeout,
    };
    let server = tokio::spawn(listen::serve(
        listener,
        Front::new(router(app.clone()), app, gate),
        listen_options,
        metrics,
        shutdown.clone(),
        Duration::from_secs(5),
    ));
    info!(%id, listen = %local, "serving");
    tokio::spawn(stop_gracefully(handle_for_stop, stop, shutdown.clone()));

    // The driver is a task among the handlers, not a thread of its own: a handler's call
    // then wakes it on the same worker, with no thread switch per request.
    let driven = tokio::spawn(driver.run(calls, worker_rx, removed_rx, tick, shutdown.clone()))
        .await
        .unwrap_or_else(|err| Err(Error::Internal(format!("the driver task failed: {err}"))));
    shutdown.cancel();
    if let Err(err) = server.await {
        error!(%err, "HTTP server task failed");
    }
    driven
}

/// Whole milliseconds, as a number that logs and serializes as one.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch, for times shown to people: the unit of `/status`'s
/// `primary_since_ms` and of the dashboard's times.
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, millis)
}

/// A server's name is how peers and clients reach it; an unspecified address (`0.0.0.0`,
/// `::`) reaches nobody, so it is refused with what to do instead.
fn refuse_unreachable_name(id: &str) -> Result<()> {
    match id.parse::<SocketAddr>() {
        Ok(addr) if addr.ip().is_unspecified() => Err(Error::BadRequest(format!(
            "this server would be named {id}, which no peer or client can reach; give the address others use with --advertise HOST:PORT"
        ))),
        _ => Ok(()),
    }
}

/// On `stop`: hands over if primary (for at most `HAND_OVER_ON_STOP`), then shuts down.
async fn stop_gracefully(
    driver: DriverHandle,
    stop: CancellationToken,
    shutdown: CancellationToken,
) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = shutdown.cancelled() => return,
    }
    match tokio::time::timeout(HAND_OVER_ON_STOP, driver.hand_over(None)).await {
        Ok(Ok(primary)) => info!(%primary, "handed over; stopping"),
        Ok(Err(Error::NotPrimary { .. } | Error::NoPrimary)) => info!("stopping"),
        Ok(Err(err)) => warn!(%err, "could not hand over; stopping"),
        Err(_) => warn!("the hand-over did not complete in time; stopping"),
    }
    shutdown.cancel();
}

/// The routes of a server (the peer gate and the answers' finishing are in front of them:
/// [`Front`]).
pub fn router(app: AppState) -> Router {
    let peer = Router::new()
        .route(peer_stream::STREAM_PATH, get(peer_api::stream))
        .route("/replication/hand-over", post(peer_api::hand_over))
        .route("/replication/init-backup", post(peer_api::init_backup))
        .route("/replication/set-backups", post(peer_api::set_backups))
        .route("/replication/remove-server", post(peer_api::remove_server))
        .route(state_transfer::STATE_PATH, post(peer_api::state_chunk))
        .layer(DefaultBodyLimit::max(auth::MAX_PEER_BODY_BYTES));
    Router::new()
        .route("/client/init", post(client_api::init))
        .route("/client/register", post(client_api::register))
        .route("/client/auth", post(client_api::auth))
        .route("/client/demo-message", post(client_api::demo_message))
        .route("/client/logout", post(client_api::logout))
        .route("/status", get(read_api::status))
        .route("/clients", get(read_api::clients))
        .route("/messages", get(read_api::messages))
        .route("/", get(dashboard::page))
        .route("/events", get(dashboard::events))
        .route("/metrics", get(ops_api::metrics))
        .route("/health", get(ops_api::health))
        .route("/primary", get(ops_api::primary))
        .route("/backup", get(ops_api::backup))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .merge(peer)
        .fallback(response::not_found)
        .method_not_allowed_fallback(response::method_not_allowed)
        .with_state(app)
}

/// The tick length and the protocol's timing in ticks. A tick of 10 ms (finer for very short
/// heartbeats) keeps timers precise to a few percent at the defaults.
fn timing(heartbeat: Duration, election_timeout: Duration) -> (Duration, Options) {
    let tick = Duration::from_millis(10)
        .min(heartbeat / 2)
        .max(Duration::from_millis(1));
    let ticks = |d: Duration| (d.as_micros() / tick.as_micros().max(1)) as u32;
    let options = Options {
        heartbeat_ticks: ticks(heartbeat).max(1),
        election_ticks: ticks(election_timeout).max(2),
        ..Options::default()
    };
    (tick, options)
}
