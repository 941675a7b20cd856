//! `understudy bench soak`: closed-loop writers for minutes, cut into windows, to show whether
//! the cluster slows down, grows in memory or writes more per message as the board grows.
//!
//! One row per window: ops/s, p50/p99 of the writes acknowledged in it, elections (term
//! increases seen in `/status`), failed writes, board size, the primary's RSS, and the bytes
//! the primary wrote to disk (`/proc/<pid>/io`) and added to its data dir, per acknowledged
//! message. The summary compares the last window with window 2 (window 1 includes the
//! start-up of the writers, so it is no baseline).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::bench::{
    ClusterArgs, WAIT_LIMIT, logged_in_clients, max_term, millis, primary_of, start_cluster,
};
use super::bench_proc::{ServerSample, sample};
use super::bench_writers::{MAX_WRITES_PER_CLIENT, Plan, Writers, check_message_bytes};
use super::local_cluster::LocalCluster;

#[derive(clap::Args, Debug)]
pub(super) struct SoakArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Concurrent closed-loop writers, each logged in as its own user.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// How long to write, in seconds.
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// The length of one window (one row of the table), in seconds.
    #[arg(long, default_value_t = 10)]
    window_seconds: u64,
    /// The size of every message, in bytes (32 to 4096).
    #[arg(long, default_value_t = 128)]
    message_bytes: usize,
}

/// One window's figures. The primary's are `None` when no primary answered `/status`.
struct Row {
    ops_per_sec: f64,
    p99: Option<Duration>,
    acked: u64,
    errors: u64,
    /// The primary at the end of the window (index in the cluster) and its board size.
    primary: Option<usize>,
    board: Option<u64>,
    rss_bytes: Option<u64>,
    /// Bytes the primary wrote to disk during the window (`/proc/<pid>/io` delta).
    written: Option<u64>,
}

pub(super) async fn run(args: SoakArgs) -> Result<()> {
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    if args.window_seconds == 0 || args.seconds < args.window_seconds {
        bail!("--window-seconds must be at least 1 and at most --seconds");
    }
    check_message_bytes(args.message_bytes)?;
    let (_dir, mut cluster) = start_cluster(&args.cluster).await?;
    let result = soak(&args, &cluster).await;
    cluster.stop_all().await;
    result
}

async fn soak(args: &SoakArgs, cluster: &LocalCluster) -> Result<()> {
    let clients = logged_in_clients(cluster, args.clients).await?;
    let windows = args.seconds.div_ceil(args.window_seconds);
    println!(
        "bench soak: {} servers (fsync {}), {} clients, {}-byte messages, {} s in {windows} windows of {} s",
        cluster.servers.len(),
        args.cluster.fsync(),
        args.clients,
        args.message_bytes,
        args.seconds,
        args.window_seconds,
    );
    let mut samples = sample_all(cluster);
    let mut term = max_term(cluster).await;
    let first_term = term;
    let start = Instant::now();
    let total = Duration::from_secs(args.seconds);
    let writers = Writers::start(
        clients,
        Plan {
            message_bytes: args.message_bytes,
            // A bound in case the loop below fails; normally the writers are stopped.
            until: start + total + WAIT_LIMIT,
            writes_per_client: MAX_WRITES_PER_CLIENT,
        },
    );
    println!(
        "{:>6} {:>8} {:>8} {:>8} {:>6} {:>6} {:>9} {:>8} {:>10} {:>10}",
        "window",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "elect",
        "failed",
        "board",
        "rss MiB",
        "disk B/msg",
        "dir B/msg"
    );
    let mut rows: Vec<Row> = Vec::new();
    let mut first_error = None;
    for w in 1..=windows {
        let end = start + (Duration::from_secs(w * args.window_seconds)).min(total);
        tokio::time::sleep_until(end.into()).await;
        let window = writers.take();
        // Read the processes at once, so that their figures match the window just cut.
        let now = sample_all(cluster);
        let statuses = cluster.statuses().await;
        let new_term = statuses.iter().map(|s| s.term).max().unwrap_or(term);
        let primary_status = primary_of(&statuses);
        let primary = primary_status.and_then(|s| cluster.position(&s.id));
        let (before, after) = match primary {
            Some(p) => (samples[p], now[p]),
            None => (ServerSample::default(), ServerSample::default()),
        };
        let acked = window.acked();
        let written = after
            .write_bytes
            .zip(before.write_bytes)
            .map(|(a, b)| a.saturating_sub(b));
        let dir_growth = primary.map(|_| after.dir_bytes as f64 - before.dir_bytes as f64);
        let per_msg = |bytes: f64| {
            if acked > 0 {
                format!("{:.0}", bytes / acked as f64)
            } else {
                "-".to_string()
            }
        };
        let row = Row {
            ops_per_sec: window.ops_per_sec(),
            p99: window.percentile(0.99),
            acked,
            errors: window.errors,
            primary,
            board: primary_status.map(|s| s.messages),
            rss_bytes: primary.and(after.rss_bytes),
            written,
        };
        println!(
            "{w:>6} {:>8.0} {:>8} {:>8} {:>6} {:>6} {:>9} {:>8} {:>10} {:>10}",
            row.ops_per_sec,
            millis(window.percentile(0.50)),
            millis(row.p99),
            new_term.saturating_sub(term),
            row.errors,
            row.board.map_or("-".to_string(), |b| b.to_string()),
            row.rss_bytes
                .map_or("-".to_string(), |b| format!("{:.1}", mib(b))),
            row.written.map_or("-".to_string(), |b| per_msg(b as f64)),
            dir_growth.map_or("-".to_string(), per_msg),
        );
        if let (Some(last), Some(p)) = (rows.last().and_then(|r| r.primary), primary)
            && last != p
        {
            println!(
                "       (the primary changed: {} -> {})",
                cluster.servers[last].addr, cluster.servers[p].addr
            );
        }
        if first_error.is_none() {
            first_error = window.first_error;
        }
        rows.push(row);
        samples = now;
        term = new_term;
    }
    writers.stop();
    let final_dir = rows
        .last()
        .and_then(|r| r.primary)
        .map(|p| (samples[p].dir_bytes, &cluster.servers[p].addr));
    summary(&rows, term.saturating_sub(first_term), final_dir);
    if let Some(err) = first_error {
        println!("first failure: {err}");
    }
    Ok(())
}

/// A reading of every server, by index (the default for one not running).
fn sample_all(cluster: &LocalCluster) -> Vec<ServerSample> {
    cluster
        .servers
        .iter()
        .map(|s| sample(s.pid(), &s.data_dir))
        .collect()
}

fn summary(rows: &[Row], elections: u64, final_dir: Option<(u64, &String)>) {
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return;
    };
    // Window 2 is the baseline; with a single window there is only window 1 to compare with.
    let (base_n, base) = rows.get(1).map_or((1, first), |r| (2, r));
    let n = rows.len();
    println!();
    println!(
        "last window ({n}) vs window {base_n}: {:.0} ops/s = {:.1} % of {:.0}; p99 {} ms / {} ms = {}",
        last.ops_per_sec,
        100.0 * last.ops_per_sec / base.ops_per_sec.max(f64::MIN_POSITIVE),
        base.ops_per_sec,
        millis(last.p99),
        millis(base.p99),
        match (last.p99, base.p99) {
            (Some(l), Some(b)) if !b.is_zero() =>
                format!("{:.2}", l.as_secs_f64() / b.as_secs_f64()),
            _ => "-".to_string(),
        }
    );
    println!(
        "elections: {elections}; failed writes: {}",
        rows.iter().map(|r| r.errors).sum::<u64>()
    );
    // Memory is compared on one process only; a change of primary makes it meaningless.
    match (first.rss_bytes, last.rss_bytes, first.board, last.board) {
        _ if n < 2 => println!("RSS growth: needs two windows"),
        _ if first.primary != last.primary => {
            println!("RSS growth: not comparable (the primary changed)")
        }
        (Some(r1), Some(rn), Some(b1), Some(bn)) if bn > b1 => {
            let growth = rn as f64 - r1 as f64;
            println!(
                "RSS growth from the end of window 1 to the end of window {n}: {:+.1} MiB over {} more messages = {:+.0} B per stored message",
                growth / (1024.0 * 1024.0),
                bn - b1,
                growth / (bn - b1) as f64
            );
        }
        _ => println!("RSS growth: no data"),
    }
    let measured: Vec<&Row> = rows.iter().filter(|r| r.written.is_some()).collect();
    let bytes: u64 = measured.iter().filter_map(|r| r.written).sum();
    let acked: u64 = measured.iter().map(|r| r.acked).sum();
    if acked > 0 {
        println!(
            "disk: the primary wrote {:.1} MiB for {acked} messages = {:.0} B per message (mean)",
            mib(bytes),
            bytes as f64 / acked as f64
        );
    }
    if let (Some((dir, addr)), Some(board)) = (final_dir, last.board)
        && board > 0
    {
        println!(
            "data dir of {addr} at the end: {:.1} MiB for {board} messages = {:.0} B per stored message",
            mib(dir),
            dir as f64 / board as f64
        );
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
