//! `understudy bench rolling-restart`: a client keeps writing while every server is
//! restarted in turn with SIGTERM, the primary first. A primary that gets SIGTERM hands its
//! office over before it stops, so the writes should pause for milliseconds, not an election
//! timeout. Prints, per restart, the longest gap between two acknowledged writes around it,
//! and the requests that failed at the client library (none should).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use tokio::sync::mpsc;

use super::bench::{ClusterArgs, caught_up, logged_in_client, ms, start_cluster, wait_acks};

#[derive(clap::Args, Debug)]
pub(super) struct RollingArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Times every server is restarted.
    #[arg(long, default_value_t = 1)]
    passes: usize,
}

pub(super) async fn run(args: RollingArgs) -> Result<()> {
    let (_dir, mut cluster) = start_cluster(&args.cluster).await?;
    if cluster.servers.len() < 3 {
        bail!("a rolling restart needs at least 3 servers");
    }
    let client = Arc::new(logged_in_client(&cluster, "writer").await?);
    let failed = Arc::new(AtomicU64::new(0));
    let (acks_tx, mut acks) = mpsc::unbounded_channel::<Instant>();
    let writer = {
        let (client, failed) = (client.clone(), failed.clone());
        tokio::spawn(async move {
            for n in 0..10_000_000u64 {
                match client.send(&format!("write {n}")).await {
                    Ok(_) => {
                        if acks_tx.send(Instant::now()).is_err() {
                            return;
                        }
                    }
                    Err(err) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        eprintln!("write failed: {err}");
                    }
                }
            }
        })
    };
    println!(
        "bench rolling-restart: {} servers, SIGTERM to each in turn (the primary first), {} pass(es)",
        cluster.servers.len(),
        args.passes
    );
    println!(
        "{:>7}  {:<16} {:<8} {:>12} {:>8}",
        "restart", "server", "role", "longest gap", "failed"
    );
    let mut gaps = Vec::new();
    let mut restart = 0;
    for _ in 0..args.passes {
        // The primary first, then the others.
        let mut order: Vec<usize> = (0..cluster.servers.len()).collect();
        let primary = cluster.primary().await?;
        let first = cluster
            .position(&primary)
            .ok_or_else(|| anyhow!("unknown primary"))?;
        order.retain(|&i| i != first);
        order.insert(0, first);
        for i in order {
            restart += 1;
            caught_up(&cluster, 64).await?;
            wait_acks(&mut acks, 20).await?;
            let role = if cluster.primary().await? == cluster.servers[i].addr {
                "primary"
            } else {
                "backup"
            };
            let failed_before = failed.load(Ordering::Relaxed);
            let mut last = Instant::now();
            let started = last;
            cluster.terminate(i).await;
            cluster.spawn(i, None)?;
            caught_up(&cluster, 64).await?;
            // The longest pause in the acknowledgements from the SIGTERM to here.
            let mut longest = Duration::ZERO;
            while let Ok(at) = acks.try_recv() {
                if at >= started {
                    longest = longest.max(at - last);
                    last = at;
                }
            }
            wait_acks(&mut acks, 20).await?;
            let failed_now = failed.load(Ordering::Relaxed) - failed_before;
            println!(
                "{restart:>7}  {:<16} {role:<8} {:>9.1} ms {failed_now:>8}",
                cluster.servers[i].addr,
                ms(longest)
            );
            gaps.push(longest);
        }
    }
    writer.abort();
    cluster.stop_all().await;
    gaps.sort();
    println!();
    println!(
        "longest gap per restart: min {:.1} ms   median {:.1} ms   max {:.1} ms ({} restarts); failed requests: {}",
        ms(gaps[0]),
        ms(gaps[gaps.len() / 2]),
        ms(gaps[gaps.len() - 1]),
        gaps.len(),
        failed.load(Ordering::Relaxed)
    );
    Ok(())
}
