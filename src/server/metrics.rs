//! The server's metrics in the Prometheus (OpenMetrics) text format, for `GET /metrics`.
//!
//! Two kinds of series. Events (elections, requests, logins, notifications, syncs, state
//! transfers) are counted where they happen, with atomic counters and histograms that cost a
//! few nanoseconds on the write path. Positions (role, term, indexes, each peer's progress
//! and silence, the store's size) are read from the replica when scraped, so nothing on the
//! write path keeps them up to date.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::replication::{ElectionCause, RoleKind};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// What the replica shows when scraped.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub role: Option<RoleKind>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_index: u64,
    pub hears_primary: bool,
    pub peers: Vec<PeerSnapshot>,
    pub messages: u64,
    pub clients: u64,
    pub logged_in: u64,
    pub store_bytes: u64,
    pub log_bytes: u64,
    /// When this server became the primary (milliseconds since the Unix epoch), if it is.
    pub primary_since_ms: Option<u64>,
}

/// One peer when scraped.
#[derive(Clone, Debug, Default)]
pub struct PeerSnapshot {
    pub id: String,
    /// Durable on the peer up to here (known on the primary only).
    pub matched: Option<u64>,
    /// Since the peer was last heard from.
    pub heard_ago: Option<Duration>,
    /// How long the oldest entry sent to the peer and not yet acknowledged has waited.
    pub lag: Option<Duration>,
}

struct Inner {
    registry: Registry,
    role: Family<RoleLabel, Gauge>,
    term: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    last_index: Gauge,
    hears_primary: Gauge,
    elections: Family<CauseLabel, Counter>,
    leader_changes: Family<CauseLabel, Counter>,
    peer_match: Family<PeerLabel, Gauge>,
    peer_lag_entries: Family<PeerLabel, Gauge>,
    peer_lag_seconds: Family<PeerLabel, FloatGauge>,
    peer_heard_seconds: Family<PeerLabel, FloatGauge>,
    replication_round_trip: Histogram,
    fsync: Histogram,
    log_batch: Histogram,
    requests: Family<RequestLabels, Counter>,
    logins: Family<ResultLabel, Counter>,
    limited: Family<LimitLabel, Counter>,
    clients_expired: Counter,
    notifications: Family<ResultLabel, Counter>,
    transfers: Family<DirectionLabel, Counter>,
    transfer_bytes: Family<DirectionLabel, Counter>,
    transfer_seconds: Histogram,
    messages: Gauge,
    clients: Gauge,
    logged_in: Gauge,
    store_bytes: Gauge,
    log_bytes: Gauge,
}

/// The server's metrics: one registry per server. Cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Seconds, from 100 µs to about 13 s.
fn seconds_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0001, 2.0, 18)
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("understudy");
        let inner = Inner {
            role: Family::default(),
            term: Gauge::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            last_index: Gauge::default(),
            hears_primary: Gauge::default(),
            elections: Family::default(),
            leader_changes: Family::default(),
            peer_match: Family::default(),
            peer_lag_entries: Family::default(),
            peer_lag_seconds: Family::default(),
            peer_heard_seconds: Family::default(),
            replication_round_trip: Histogram::new(seconds_buckets()),
            fsync: Histogram::new(seconds_buckets()),
            log_batch: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            requests: Family::default(),
            logins: Family::default(),
            limited: Family::default(),
            clients_expired: Counter::default(),
            notifications: Family::default(),
            transfers: Family::default(),
            transfer_bytes: Family::default(),
            transfer_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 16)),
            messages: Gauge::default(),
            clients: Gauge::default(),
            logged_in: Gauge::default(),
            store_bytes: Gauge::default(),
            log_bytes: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "role",
            "1 for this server's role (primary, backup, candidate)",
            inner.role.clone(),
        );
        r.register("term", "The current term", inner.term.clone());
        r.register(
            "commit_index",
            "The highest index known committed",
            inner.commit_index.clone(),
        );
        r.register(
            "applied_index",
            "The highest index applied to the state",
            inner.applied_index.clone(),
        );
        r.register(
            "last_index",
            "The last index in this server's log",
            inner.last_index.clone(),
        );
        r.register(
            "hears_primary",
            "1 if this server is a member with a primary it hears from (what /health reports)",
            inner.hears_primary.clone(),
        );
        r.register(
            "elections",
            "Elections this server started, by cause",
            inner.elections.clone(),
        );
        r.register(
            "leader_changes",
            "Times the primary this server knows changed, by cause (other_server: elected elsewhere)",
            inner.leader_changes.clone(),
        );
        r.register(
            "peer_match_index",
            "Per backup: the highest index durable on it (primary only)",
            inner.peer_match.clone(),
        );
        r.register(
            "peer_lag_entries",
            "Per backup: entries in the primary's log it does not hold yet",
            inner.peer_lag_entries.clone(),
        );
        r.register(
            "peer_lag_seconds",
            "Per backup: how long the oldest entry sent to it and not yet acknowledged has waited",
            inner.peer_lag_seconds.clone(),
        );
        r.register(
            "peer_last_heard_seconds",
            "Per peer: time since it was last heard from (the primary's backups; a backup's primary)",
            inner.peer_heard_seconds.clone(),
        );
        r.register(
            "replication_round_trip_seconds",
            "From sending entries to a backup to its acknowledgement of them",
            inner.replication_round_trip.clone(),
        );
        r.register(
            "log_sync_seconds",
            "One fdatasync of the log (group commit)",
            inner.fsync.clone(),
        );
        r.register(
            "log_batch_entries",
            "Entries made durable by one log sync",
            inner.log_batch.clone(),
        );
        r.register(
            "http_requests",
            "Client and peer HTTP requests answered, by endpoint and status",
            inner.requests.clone(),
        );
        r.register(
            "logins",
            "Login attempts, by result (ok, failed, locked_out)",
            inner.logins.clone(),
        );
        r.register(
            "limited",
            "Requests and connections refused by an abuse limit, by limit",
            inner.limited.clone(),
        );
        r.register(
            "clients_expired",
            "Clients forgotten because they never logged in within the configured time",
            inner.clients_expired.clone(),
        );
        r.register(
            "new_primary_notifications",
            "POST /new-primary calls to clients, by result (ok, failed)",
            inner.notifications.clone(),
        );
        r.register(
            "state_transfers",
            "Whole stores sent or received",
            inner.transfers.clone(),
        );
        r.register(
            "state_transfer_bytes",
            "Bytes of stores sent or received",
            inner.transfer_bytes.clone(),
        );
        r.register(
            "state_transfer_seconds",
            "Duration of one store sent",
            inner.transfer_seconds.clone(),
        );
        r.register(
            "messages",
            "Messages on the board (this server's applied state)",
            inner.messages.clone(),
        );
        r.register("clients", "Clients known", inner.clients.clone());
        r.register(
            "logged_in_clients",
            "Clients logged in",
            inner.logged_in.clone(),
        );
        r.register(
            "store_bytes",
            "Size of the store file",
            inner.store_bytes.clone(),
        );
        r.register(
            "log_bytes",
            "Bytes of records in the log file",
            inner.log_bytes.clone(),
        );
        Metrics(Arc::new(Inner { registry, ..inner }))
    }

    /// This server starts an election.
    pub fn election(&self, cause: &ElectionCause) {
        self.0
            .elections
            .get_or_create(&CauseLabel {
                cause: cause.name(),
            })
            .inc();
    }

    /// The primary this server knows changed: elected here for `cause`, or elsewhere.
    pub fn leader_changed(&self, cause: Option<&ElectionCause>) {
        let cause = cause.map_or("other_server", ElectionCause::name);
        self.0
            .leader_changes
            .get_or_create(&CauseLabel { cause })
            .inc();
    }

    pub fn round_trip(&self, took: Duration) {
        self.0.replication_round_trip.observe(took.as_secs_f64());
    }

    /// One log sync that made `entries` entries durable.
    pub fn log_sync(&self, took: Duration, entries: usize) {
        self.0.fsync.observe(took.as_secs_f64());
        self.0.log_batch.observe(entries as f64);
    }

    pub fn request(&self, endpoint: &'static str, status: u16) {
        self.0
            .requests
            .get_or_create(&RequestLabels { endpoint, status })
            .inc();
    }

    /// A request or connection refused by an abuse limit: `login`, `init` (client/init and
    /// client/register per source address), `connections`, `header_timeout` (no complete
    /// request head in time, idle keep-alive connections included), `body_timeout`.
    pub fn limited(&self, limit: &'static str) {
        self.0.limited.get_or_create(&LimitLabel { limit }).inc();
    }

    /// A client that never logged in was forgotten.
    pub fn client_expired(&self) {
        self.0.clients_expired.inc();
    }

    /// A login attempt's result: "ok", "failed" or "locked_out".
    pub fn login(&self, result: &'static str) {
        self.0.logins.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn notification(&self, delivered: bool) {
        let result = if delivered { "ok" } else { "failed" };
        self.0
            .notifications
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// A whole store `direction` ("sent" or "received") of `bytes`, in `took` (sent only).
    pub fn state_transfer(&self, direction: &'static str, bytes: u64, took: Option<Duration>) {
        let label = DirectionLabel { direction };
        self.0.transfers.get_or_create(&label).inc();
        self.0.transfer_bytes.get_or_create(&label).inc_by(bytes);
        if let Some(took) = took {
            self.0.transfer_seconds.observe(took.as_secs_f64());
        }
    }

    /// The text of `GET /metrics`, with the positions of `snapshot`.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let m = &self.0;
        m.role.clear();
        if let Some(role) = snapshot.role {
            m.role
                .get_or_create(&RoleLabel {
                    role: role.as_str(),
                })
                .set(1);
        }
        m.term.set(gauge(snapshot.term));
        m.commit_index.set(gauge(snapshot.commit_index));
        m.applied_index.set(gauge(snapshot.applied_index));
        m.last_index.set(gauge(snapshot.last_index));
        m.hears_primary.set(i64::from(snapshot.hears_primary));
        // Peers come and go with the configuration and the role: only the current ones.
        m.peer_match.clear();
        m.peer_lag_entries.clear();
        m.peer_lag_seconds.clear();
        m.peer_heard_seconds.clear();
        for peer in &snapshot.peers {
            let label = PeerLabel {
                peer: peer.id.clone(),
            };
            if let Some(matched) = peer.matched {
                m.peer_match.get_or_create(&label).set(gauge(matched));
                m.peer_lag_entries
                    .get_or_create(&label)
                    .set(gauge(snapshot.last_index.saturating_sub(matched)));
                let lag = peer.lag.unwrap_or_default();
                m.peer_lag_seconds
                    .get_or_create(&label)
                    .set(lag.as_secs_f64());
            }
            if let Some(heard) = peer.heard_ago {
                m.peer_heard_seconds
                    .get_or_create(&label)
                    .set(heard.as_secs_f64());
            }
        }
        m.messages.set(gauge(snapshot.messages));
        m.clients.set(gauge(snapshot.clients));
        m.logged_in.set(gauge(snapshot.logged_in));
        m.store_bytes.set(gauge(snapshot.store_bytes));
        m.log_bytes.set(gauge(snapshot.log_bytes));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &m.registry);
        text
    }
}

fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
