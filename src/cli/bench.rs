//! `understudy bench`: measurements on a local cluster of real server processes.
//!
//! - `failover`: a client keeps writing while the primary is killed with SIGKILL, round after
//!   round; prints, per round, the time from the kill to the new primary's election, to the
//!   client's notification, and to the first acknowledged write, then min/median/max.
//! - `throughput`: concurrent clients write as fast as they can for a while; prints ops/s
//!   and latency percentiles.
//! - `soak`: closed-loop writers for minutes; per window ops/s, p50/p99, elections, failures,
//!   board size, the primary's RSS and disk bytes per message; last window vs window 2.
//! - `catch-up`: preload the board, then start an empty server that joins under load; times
//!   until it is a member and caught up, and the writers' ops/s before and during.
//!
//! Every loop is bounded in count and in time; all traffic stays on loopback. This file holds
//! what the benchmarks share (cluster flags, starting a cluster, logging clients in); each
//! benchmark is in its own `bench_*` file.

use std::time::Duration;

use anyhow::{Result, bail};

use super::bench_catch_up::{self, CatchUpArgs};
use super::bench_failover::{self, FailoverArgs};
use super::bench_notify::{self, NotifyArgs};
use super::bench_rolling::{self, RollingArgs};
use super::bench_soak::{self, SoakArgs};
use super::bench_steady::{self, SteadyArgs};
use super::bench_throughput::{self, ThroughputArgs};
use super::local_cluster::{LocalCluster, hex_token};
use understudy::api::StatusResponse;
use understudy::client::{Client, ClientOptions};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    kind: BenchKind,
}

#[derive(clap::Subcommand, Debug)]
enum BenchKind {
    /// Kill the primary repeatedly under a writing client; time the failovers.
    Failover(FailoverArgs),
    /// Concurrent clients writing; ops/s and latency.
    Throughput(ThroughputArgs),
    /// Closed-loop writers for a long while; per-window ops/s, latency, memory and disk.
    Soak(SoakArgs),
    /// Preload the board, then time an empty server joining and catching up under load.
    CatchUp(CatchUpArgs),
    /// Restart every server in turn with SIGTERM under a writing client; the write gaps.
    RollingRestart(RollingArgs),
    /// Load, backup restarts and cut connections: the primary must stay primary.
    Steady(SteadyArgs),
    /// Many registered listeners, a kill of the primary: how fast all are told.
    Notify(NotifyArgs),
}

/// Cluster shape and timing, shared by the benchmarks.
#[derive(clap::Args, Debug, Clone)]
pub(super) struct ClusterArgs {
    /// How many servers the benchmark's own cluster has (elsewhere `--servers` lists
    /// addresses; here it is a count, so it has its own name).
    #[arg(long, alias = "size", default_value_t = 3)]
    pub nodes: usize,
    /// The servers' --heartbeat-ms (their default if not given).
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// The servers' --election-timeout-ms (their default if not given).
    #[arg(long)]
    pub election_timeout_ms: Option<u64>,
    /// Run the servers with `--fsync never` (to measure what fsync costs).
    #[arg(long)]
    pub no_fsync: bool,
    /// Keep the servers' logs in this directory (the cluster's own is removed at the end).
    #[arg(long)]
    pub logs: Option<std::path::PathBuf>,
    /// The servers' --worker-threads (their default, one per core, if not given).
    #[arg(long)]
    pub worker_threads: Option<usize>,
    /// The servers' --compact-every (their default if not given).
    #[arg(long)]
    pub compact_every: Option<u64>,
    /// Run the cluster with TLS (mutual TLS between the servers, throw-away certificates);
    /// the clients speak HTTPS.
    #[arg(long)]
    pub tls: bool,
    /// The servers' --inits-per-minute. Default 0 (no limit): a benchmark registers all its
    /// clients from one address.
    #[arg(long, default_value_t = 0)]
    pub inits_per_minute: u32,
}

impl ClusterArgs {
    fn server_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(ms) = self.heartbeat_ms {
            args.extend(["--heartbeat-ms".to_string(), ms.to_string()]);
        }
        if let Some(ms) = self.election_timeout_ms {
            args.extend(["--election-timeout-ms".to_string(), ms.to_string()]);
        }
        if self.no_fsync {
            args.extend(["--fsync".to_string(), "never".to_string()]);
        }
        if let Some(threads) = self.worker_threads {
            args.extend(["--worker-threads".to_string(), threads.to_string()]);
        }
        if let Some(entries) = self.compact_every {
            args.extend(["--compact-every".to_string(), entries.to_string()]);
        }
        args.extend([
            "--inits-per-minute".to_string(),
            self.inits_per_minute.to_string(),
        ]);
        args
    }

    /// "on" or "off", for the headline of a benchmark.
    pub fn fsync(&self) -> &'static str {
        if self.no_fsync { "off" } else { "on" }
    }
}

/// The bound on every wait for the cluster.
pub(super) const WAIT_LIMIT: Duration = Duration::from_secs(30);

pub async fn run(args: BenchArgs) -> Result<()> {
    match args.kind {
        BenchKind::Failover(args) => bench_failover::run(args).await,
        BenchKind::Throughput(args) => bench_throughput::run(args).await,
        BenchKind::Soak(args) => bench_soak::run(args).await,
        BenchKind::CatchUp(args) => bench_catch_up::run(args).await,
        BenchKind::RollingRestart(args) => bench_rolling::run(args).await,
        BenchKind::Steady(args) => bench_steady::run(args).await,
        BenchKind::Notify(args) => bench_notify::run(args).await,
    }
}

/// A started cluster in its own temporary directory.
pub(super) async fn start_cluster(args: &ClusterArgs) -> Result<(tempfile::TempDir, LocalCluster)> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let dir = tempfile::Builder::new()
        .prefix("understudy-bench-")
        .tempdir()?;
    let mut cluster = LocalCluster::new(dir.path(), args.nodes, args.server_args(), None)?;
    if args.tls {
        cluster.enable_tls()?;
    }
    cluster.start_all(WAIT_LIMIT).await?;
    Ok((dir, cluster))
}

/// A client registered and logged in as a fresh user.
pub(super) async fn logged_in_client(cluster: &LocalCluster, user: &str) -> Result<Client> {
    let options = ClientOptions {
        listen: "127.0.0.1:0".parse()?,
        retry_for: Duration::from_secs(30),
        tls: cluster.client_tls(),
        ..ClientOptions::default()
    };
    let client = Client::connect(cluster.addrs(), options).await?;
    let password = format!("pw-{}", hex_token());
    client.register(user, &password).await?;
    client.login(user, &password).await?;
    Ok(client)
}

/// `count` clients, `user0` to `user{count-1}`, logged in one after another (each login
/// costs the primary a password hash; doing them at once would only queue them there).
pub(super) async fn logged_in_clients(cluster: &LocalCluster, count: usize) -> Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(count);
    for i in 0..count {
        clients.push(logged_in_client(cluster, &format!("user{i}")).await?);
    }
    Ok(clients)
}

/// The highest term any running server reports. Every election raises the term, so the
/// growth of this number counts elections (including ones nobody won).
pub(super) async fn max_term(cluster: &LocalCluster) -> u64 {
    cluster
        .statuses()
        .await
        .iter()
        .map(|s| s.term)
        .max()
        .unwrap_or(0)
}

/// The primary with the highest term among `statuses` (a deposed one may not know yet).
pub(super) fn primary_of(statuses: &[StatusResponse]) -> Option<&StatusResponse> {
    statuses
        .iter()
        .filter(|s| s.role == "primary")
        .max_by_key(|s| s.term)
}

/// A duration in milliseconds, for printing.
pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Milliseconds with two decimals, or `-` when there is no figure.
pub(super) fn millis(d: Option<Duration>) -> String {
    d.map_or("-".to_string(), |d| format!("{:.2}", ms(d)))
}

/// Waits until every running server answers, none is joining, exactly one is primary, and
/// each has applied to within `slack` entries of the highest commit index.
pub(super) async fn caught_up(cluster: &LocalCluster, slack: u64) -> Result<()> {
    cluster
        .wait_for("a caught-up cluster", WAIT_LIMIT, |s| {
            let commit = s.iter().map(|s| s.commit_index).max().unwrap_or(0);
            s.iter()
                .all(|s| s.applied_index + slack >= commit && s.role != "joining")
                && s.iter().filter(|s| s.role == "primary").count() == 1
        })
        .await?;
    Ok(())
}

/// Waits for `count` more acknowledged writes from a writer that reports each one.
pub(super) async fn wait_acks<T>(
    acks: &mut tokio::sync::mpsc::UnboundedReceiver<T>,
    count: usize,
) -> Result<()> {
    for _ in 0..count {
        tokio::time::timeout(WAIT_LIMIT, acks.recv())
            .await
            .map_err(|_| anyhow::anyhow!("writes are not being acknowledged"))?
            .ok_or_else(|| anyhow::anyhow!("the writer stopped"))?;
    }
    Ok(())
}
