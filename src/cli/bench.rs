//! `understudy bench`: measurements on a local cluster of real server processes.
//!
//! - `failover`: a client keeps writing while the primary is killed with SIGKILL, round after
//!   round; prints, per round, the time from the kill to the new primary's election, to the
//!   client's notification, and to the first acknowledged write, then min/median/max.
//! - `throughput`: concurrent clients write as fast as they can for a while; prints ops/s
//!   and latency percentiles.
//!
//! Every loop is bounded in count and in time; all traffic stays on loopback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use tokio::sync::mpsc;

use super::local_cluster::{LocalCluster, hex_token};
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
}

/// Cluster shape and timing, shared by the benchmarks.
#[derive(clap::Args, Debug, Clone)]
struct ClusterArgs {
    /// Servers in the cluster.
    #[arg(long, default_value_t = 3)]
    servers: usize,
    /// The servers' --heartbeat-ms (their default if not given).
    #[arg(long)]
    heartbeat_ms: Option<u64>,
    /// The servers' --election-timeout-ms (their default if not given).
    #[arg(long)]
    election_timeout_ms: Option<u64>,
    /// Run the servers with `--fsync never` (to measure what fsync costs).
    #[arg(long)]
    no_fsync: bool,
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
        args
    }
}

#[derive(clap::Args, Debug)]
struct FailoverArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Kills of the primary.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

#[derive(clap::Args, Debug)]
struct ThroughputArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Concurrent clients, each logged in as its own user.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// How long to write, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Stop after this many writes in all, even if time is left.
    #[arg(long, default_value_t = 1_000_000)]
    max_ops: u64,
}

/// The bound on every wait for the cluster.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

pub async fn run(args: BenchArgs) -> Result<()> {
    match args.kind {
        BenchKind::Failover(args) => failover(args).await,
        BenchKind::Throughput(args) => throughput(args).await,
    }
}

/// A started cluster in its own temporary directory.
async fn start_cluster(args: &ClusterArgs) -> Result<(tempfile::TempDir, LocalCluster)> {
    if args.servers == 0 {
        bail!("--servers must be at least 1");
    }
    let dir = tempfile::Builder::new()
        .prefix("understudy-bench-")
        .tempdir()?;
    let mut cluster = LocalCluster::new(dir.path(), args.servers, args.server_args(), None)?;
    cluster.start_all(WAIT_LIMIT).await?;
    Ok((dir, cluster))
}

/// A client registered and logged in as a fresh user.
async fn logged_in_client(servers: Vec<String>, user: &str) -> Result<Client> {
    let options = ClientOptions {
        listen: "127.0.0.1:0".parse()?,
        retry_for: Duration::from_secs(30),
        ..ClientOptions::default()
    };
    let client = Client::connect(servers, options).await?;
    let password = format!("pw-{}", hex_token());
    client.register(user, &password).await?;
    client.login(user, &password).await?;
    Ok(client)
}

// ---- failover -------------------------------------------------------------------------

/// One round's measurements, from the kill.
struct Round {
    old: String,
    new: String,
    elected: Duration,
    notified: Option<Duration>,
    first_write: Duration,
}

async fn failover(args: FailoverArgs) -> Result<()> {
    let (_dir, mut cluster) = start_cluster(&args.cluster).await?;
    if cluster.servers.len() < 3 {
        bail!("a failover needs at least 3 servers");
    }
    let client = Arc::new(logged_in_client(cluster.addrs(), "writer").await?);

    // The writer: acknowledged writes with their time, until the bench ends (bounded).
    // Each acknowledged write with its time and the primary that acknowledged it.
    let (acks_tx, mut acks) = mpsc::unbounded_channel::<(Instant, Option<String>)>();
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            for n in 0..10_000_000u64 {
                match client.send(&format!("write {n}")).await {
                    Ok(_) => {
                        if acks_tx.send((Instant::now(), client.primary())).is_err() {
                            return;
                        }
                    }
                    Err(err) => eprintln!("write failed: {err}"),
                }
            }
        })
    };
    // Notifications with their time.
    let (notes_tx, mut notes) = mpsc::unbounded_channel::<(Instant, String, u64)>();
    if let Some(mut rx) = client.notifications() {
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let notice = rx.borrow_and_update().clone();
                if let Some(n) = notice
                    && notes_tx.send((Instant::now(), n.primary, n.term)).is_err()
                {
                    return;
                }
            }
        });
    }

    println!(
        "bench failover: {} servers, {} rounds, heartbeat {} ms, election timeout {} ms",
        cluster.servers.len(),
        args.rounds,
        args.cluster
            .heartbeat_ms
            .map_or("default".to_string(), |v| v.to_string()),
        args.cluster
            .election_timeout_ms
            .map_or("default".to_string(), |v| v.to_string()),
    );
    println!(
        "{:>5}  {:<16} {:<16} {:>10} {:>10} {:>12}",
        "round", "killed", "new primary", "elected", "notified", "first write"
    );
    let mut rounds = Vec::new();
    for round in 1..=args.rounds {
        // Steady state first: every server up and caught up, and writes flowing.
        cluster
            .wait_for("a caught-up cluster", WAIT_LIMIT, |s| {
                let commit = s.iter().map(|s| s.commit_index).max().unwrap_or(0);
                s.iter()
                    .all(|s| s.applied_index == commit && s.role != "joining")
                    && s.iter().filter(|s| s.role == "primary").count() == 1
            })
            .await?;
        wait_acks(&mut acks, 20).await?;
        while notes.try_recv().is_ok() {}

        let old = cluster.primary().await?;
        let old_index = cluster
            .position(&old)
            .ok_or_else(|| anyhow!("unknown primary"))?;
        let killed = Instant::now();
        cluster.kill(old_index).await?;

        let statuses = cluster
            .wait_for("a new primary", WAIT_LIMIT, |s| {
                s.iter().any(|s| s.role == "primary" && s.id != old)
            })
            .await?;
        let elected = killed.elapsed();
        let new = statuses
            .iter()
            .find(|s| s.role == "primary")
            .map(|s| s.id.clone())
            .unwrap_or_default();
        let first_write = loop {
            let (at, by) = tokio::time::timeout(WAIT_LIMIT, acks.recv())
                .await
                .map_err(|_| anyhow!("no write acknowledged after the kill"))?
                .ok_or_else(|| anyhow!("the writer stopped"))?;
            // A write the old primary acknowledged just before the kill does not count.
            if at > killed && by.as_deref() != Some(old.as_str()) {
                break at - killed;
            }
        };
        let mut notified = None;
        let deadline = Instant::now() + Duration::from_secs(2);
        while notified.is_none() && Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_millis(100), notes.recv()).await {
                Ok(Some((at, primary, _))) if primary != old && at > killed => {
                    notified = Some(at - killed);
                }
                Ok(None) => break,
                _ => {}
            }
        }
        println!(
            "{round:>5}  {old:<16} {new:<16} {:>8} ms {:>10} {:>9} ms",
            elected.as_millis(),
            notified.map_or("-".to_string(), |d| format!("{} ms", d.as_millis())),
            first_write.as_millis()
        );
        rounds.push(Round {
            old,
            new,
            elected,
            notified,
            first_write,
        });
        // The old primary comes back on its data dir, as a backup.
        cluster.spawn(old_index, None)?;
    }
    writer.abort();
    cluster.stop_all().await;

    println!();
    summary("elected", rounds.iter().map(|r| r.elected).collect());
    summary(
        "notified",
        rounds.iter().filter_map(|r| r.notified).collect(),
    );
    summary(
        "first write",
        rounds.iter().map(|r| r.first_write).collect(),
    );
    let changed = rounds.iter().filter(|r| r.old != r.new).count();
    println!("primary changed in {changed} of {} rounds", rounds.len());
    Ok(())
}

/// Waits for `count` more acknowledged writes.
async fn wait_acks(
    acks: &mut mpsc::UnboundedReceiver<(Instant, Option<String>)>,
    count: usize,
) -> Result<()> {
    for _ in 0..count {
        tokio::time::timeout(WAIT_LIMIT, acks.recv())
            .await
            .map_err(|_| anyhow!("writes are not being acknowledged"))?
            .ok_or_else(|| anyhow!("the writer stopped"))?;
    }
    Ok(())
}

fn summary(what: &str, mut values: Vec<Duration>) {
    if values.is_empty() {
        println!("{what:>12}: no data");
        return;
    }
    values.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{what:>12}: min {:>7.1} ms   median {:>7.1} ms   max {:>7.1} ms   ({} rounds)",
        ms(values[0]),
        ms(values[values.len() / 2]),
        ms(values[values.len() - 1]),
        values.len()
    );
}

// ---- throughput -----------------------------------------------------------------------

async fn throughput(args: ThroughputArgs) -> Result<()> {
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let (_dir, mut cluster) = start_cluster(&args.cluster).await?;
    let mut clients = Vec::new();
    for i in 0..args.clients {
        clients.push(logged_in_client(cluster.addrs(), &format!("user{i}")).await?);
    }
    println!(
        "bench throughput: {} servers (fsync {}), {} clients, {} s (at most {} writes)",
        cluster.servers.len(),
        if args.cluster.no_fsync { "off" } else { "on" },
        args.clients,
        args.seconds,
        args.max_ops
    );
    let term_before = max_term(&cluster).await;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.seconds);
    let per_client = args.max_ops.div_ceil(args.clients as u64);
    let mut tasks = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            for n in 0..per_client {
                if Instant::now() >= deadline {
                    break;
                }
                let sent = Instant::now();
                match client.send(&format!("client {i} write {n}")).await {
                    Ok(_) => latencies.push(sent.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed();
    let term_after = max_term(&cluster).await;
    cluster.stop_all().await;

    latencies.sort();
    let count = latencies.len();
    if count == 0 {
        bail!("no write was acknowledged");
    }
    let pct = |p: f64| latencies[((count as f64 * p) as usize).min(count - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{count} writes in {:.2} s: {:.0} ops/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {errors} errors",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64(),
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(latencies[count - 1]),
    );
    // Every election raises the term; a healthy cluster under load holds none.
    println!(
        "elections during the run: {} (term {term_before} before, {term_after} after)",
        term_after.saturating_sub(term_before)
    );
    Ok(())
}

/// The highest term any running server reports.
async fn max_term(cluster: &LocalCluster) -> u64 {
    cluster
        .statuses()
        .await
        .iter()
        .map(|s| s.term)
        .max()
        .unwrap_or(0)
}
