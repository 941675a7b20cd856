//! `understudy bench throughput`: concurrent clients write as fast as they can for a while;
//! prints ops/s, latency percentiles and the elections seen meanwhile. The writers stop by
//! themselves, at `--seconds` or at `--max-ops` writes in all.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::bench::{ClusterArgs, logged_in_clients, max_term, ms, start_cluster};
use super::bench_writers::{Plan, Writers};

#[derive(clap::Args, Debug)]
pub(super) struct ThroughputArgs {
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

pub(super) async fn run(args: ThroughputArgs) -> Result<()> {
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let (_dir, mut cluster) = start_cluster(&args.cluster).await?;
    let clients = logged_in_clients(&cluster, args.clients).await?;
    println!(
        "bench throughput: {} servers (fsync {}, {}), {} clients, {} s (at most {} writes)",
        cluster.servers.len(),
        args.cluster.fsync(),
        if args.cluster.tls {
            "TLS"
        } else {
            "plain HTTP"
        },
        args.clients,
        args.seconds,
        args.max_ops
    );
    let term_before = max_term(&cluster).await;
    let writers = Writers::start(
        clients,
        Plan {
            // The bare "client i write n" text, as this benchmark has always sent.
            message_bytes: 0,
            until: Instant::now() + Duration::from_secs(args.seconds),
            writes_per_client: args.max_ops.div_ceil(args.clients as u64),
        },
    );
    let window = writers.finish().await;
    let term_after = max_term(&cluster).await;
    cluster.stop_all().await;

    let count = window.acked();
    let (Some(p50), Some(p99), Some(max)) = (
        window.percentile(0.50),
        window.percentile(0.99),
        window.latencies.last(),
    ) else {
        bail!("no write was acknowledged");
    };
    println!(
        "{count} writes in {:.2} s: {:.0} ops/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {errors} errors",
        window.elapsed.as_secs_f64(),
        window.ops_per_sec(),
        ms(p50),
        ms(p99),
        ms(*max),
        errors = window.errors,
    );
    // Every election raises the term; a healthy cluster under load holds none.
    println!(
        "elections during the run: {} (term {term_before} before, {term_after} after)",
        term_after.saturating_sub(term_before)
    );
    Ok(())
}
