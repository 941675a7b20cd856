//! `understudy bench throughput`: concurrent clients write as fast as they can for a while;
//! prints ops/s, latency percentiles and the elections seen meanwhile.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::bench::{ClusterArgs, logged_in_clients, max_term, ms, start_cluster};

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
        "bench throughput: {} servers (fsync {}), {} clients, {} s (at most {} writes)",
        cluster.servers.len(),
        args.cluster.fsync(),
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
