//! `understudy bench steady`: a healthy primary must stay primary. Under closed-loop
//! writers, three phases: a long stretch of load; a backup killed and restarted again and
//! again; peer connections cut with `ss -K` (the kernel's socket destroy, which resets the
//! connection: the side whose socket is destroyed gets an error, the other a reset). After
//! each, the term must be the one the run started with (no election, not even a lost one)
//! and no write may have failed at the client library.
//!
//! A backup whose stream from the primary breaks starts a pre-vote at once, but the other
//! backup, still hearing the primary, refuses it, and the primary's reconnect ends it.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::bench::{
    ClusterArgs, WAIT_LIMIT, caught_up, logged_in_clients, max_term, start_cluster,
};
use super::bench_writers::{MAX_WRITES_PER_CLIENT, Plan, Writers};
use super::local_cluster::LocalCluster;

#[derive(clap::Args, Debug)]
pub(super) struct SteadyArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Concurrent writing clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds of plain load in the first phase.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Backup restarts (SIGKILL, then start on its data dir) in the second phase.
    #[arg(long, default_value_t = 20)]
    restarts: usize,
    /// Peer connections cut in the third phase.
    #[arg(long, default_value_t = 20)]
    cuts: usize,
}

pub(super) async fn run(args: SteadyArgs) -> Result<()> {
    if Command::new("ss").arg("-V").output().is_err() {
        bail!("`ss` (iproute2) is needed to cut connections");
    }
    let (_dir, mut cluster) = start_cluster(&args.cluster).await?;
    if cluster.servers.len() < 3 {
        bail!("needs at least 3 servers");
    }
    let clients = logged_in_clients(&cluster, args.clients).await?;
    let term = max_term(&cluster).await;
    let primary = cluster.primary().await?;
    // Bounded: the phases take minutes at most; this is a backstop.
    let plan = Plan {
        message_bytes: 0,
        until: Instant::now() + Duration::from_secs(args.seconds + 600),
        writes_per_client: MAX_WRITES_PER_CLIENT,
    };
    let writers = Writers::start(clients, plan);
    println!(
        "bench steady: {} servers, {} clients; term {term}, primary {primary}",
        cluster.servers.len(),
        args.clients
    );
    println!(
        "{:<28} {:>10} {:>8} {:>6} {:>8}",
        "phase", "writes", "ops/s", "term", "failed"
    );

    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    report(
        &cluster,
        &writers,
        &format!("{} s of load", args.seconds),
        term,
    )
    .await;

    let backups: Vec<usize> = (0..cluster.servers.len())
        .filter(|&i| cluster.servers[i].addr != primary)
        .collect();
    for n in 0..args.restarts {
        let b = backups[n % backups.len()];
        cluster.kill(b).await?;
        cluster.spawn(b, None)?;
        caught_up(&cluster, 2_000).await?;
        // Back as a backup of the same primary, then a little load before the next.
        cluster
            .wait_for("the backup to follow the primary", WAIT_LIMIT, |s| {
                s.iter()
                    .all(|s| s.primary.as_deref() == Some(primary.as_str()))
            })
            .await?;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    report(
        &cluster,
        &writers,
        &format!("{} backup restarts", args.restarts),
        term,
    )
    .await;

    for n in 0..args.cuts {
        // Both ends by turns: the primary's socket of its stream to a backup, and the
        // backup's socket of the same stream.
        let b = backups[(n / 2) % backups.len()];
        let port = port_of(&cluster.servers[b].addr)?;
        let filter = if n % 2 == 0 { "dport" } else { "sport" };
        let cut = Command::new("ss")
            .args([
                "-K",
                "src",
                "127.0.0.1",
                "dst",
                "127.0.0.1",
                filter,
                "=",
                &port,
            ])
            .output()
            .context("cannot run ss")?;
        if !cut.status.success() {
            bail!("ss -K failed: {}", String::from_utf8_lossy(&cut.stderr));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        caught_up(&cluster, 2_000).await?;
    }
    report(
        &cluster,
        &writers,
        &format!("{} connection cuts", args.cuts),
        term,
    )
    .await;
    writers.stop();
    cluster.stop_all().await;
    if let Some(dir) = &args.cluster.logs {
        cluster.save_logs(dir)?;
    }
    Ok(())
}

/// Prints the phase's line: writes and rate since the last, the term now, failures so far.
async fn report(cluster: &LocalCluster, writers: &Writers, phase: &str, term: u64) {
    let window = writers.take();
    let now = max_term(cluster).await;
    println!(
        "{phase:<28} {:>10} {:>8.0} {:>6} {:>8}{}",
        window.acked(),
        window.ops_per_sec(),
        now,
        writers.errors(),
        if now == term {
            ""
        } else {
            "   <- the term changed"
        }
    );
}

fn port_of(addr: &str) -> Result<String> {
    addr.rsplit_once(':')
        .map(|(_, port)| port.to_string())
        .context("an address without a port")
}
