//! `understudy bench failover`: a client keeps writing while the primary is killed with
//! SIGKILL (or, with `--pause`, frozen with SIGSTOP), round after round; prints, per round,
//! the time from the kill to the new primary's election, to the client's notification, and
//! to the first acknowledged write, then min/median/max.
//!
//! A killed primary's kernel closes its connections, so the backups notice at once; a
//! frozen one's stay open, so they notice only by the missing heartbeats (an election
//! timeout).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use tokio::sync::mpsc;

use super::bench::{
    ClusterArgs, WAIT_LIMIT, caught_up, logged_in_client, ms, start_cluster, wait_acks,
};

#[derive(clap::Args, Debug)]
pub(super) struct FailoverArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Kills of the primary.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Freeze the primary with SIGSTOP instead of killing it (thawed after the round).
    #[arg(long)]
    pause: bool,
}

/// One round's measurements, from the kill.
struct Round {
    old: String,
    new: String,
    elected: Duration,
    notified: Option<Duration>,
    first_write: Duration,
}

pub(super) async fn run(args: FailoverArgs) -> Result<()> {
    let (_dir, mut cluster) = start_cluster(&args.cluster).await?;
    if cluster.servers.len() < 3 {
        bail!("a failover needs at least 3 servers");
    }
    let client = Arc::new(logged_in_client(&cluster, "writer").await?);

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
        "bench failover ({}): {} servers, {} rounds, heartbeat {} ms, election timeout {} ms",
        if args.pause { "SIGSTOP" } else { "SIGKILL" },
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
        caught_up(&cluster, 0).await?;
        wait_acks(&mut acks, 20).await?;
        while notes.try_recv().is_ok() {}

        let old = cluster.primary().await?;
        let old_index = cluster
            .position(&old)
            .ok_or_else(|| anyhow!("unknown primary"))?;
        let killed = Instant::now();
        if args.pause {
            cluster.pause(old_index)?;
        } else {
            cluster.kill(old_index).await?;
        }

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
        // The old primary comes back (on its data dir), as a backup.
        if args.pause {
            cluster.resume(old_index)?;
        } else {
            cluster.spawn(old_index, None)?;
        }
    }
    writer.abort();
    cluster.stop_all().await;
    if let Some(dir) = &args.cluster.logs {
        cluster.save_logs(dir)?;
    }

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

fn summary(what: &str, mut values: Vec<Duration>) {
    if values.is_empty() {
        println!("{what:>12}: no data");
        return;
    }
    values.sort();
    println!(
        "{what:>12}: min {:>7.1} ms   median {:>7.1} ms   max {:>7.1} ms   ({} rounds)",
        ms(values[0]),
        ms(values[values.len() / 2]),
        ms(values[values.len() - 1]),
        values.len()
    );
}
