//! A healthy primary stays primary (issue "A crash is noticed in one round trip", must show
//! 2, in small): under writing clients, a backup killed and restarted again and again, and
//! peer connections cut with `ss -K` (the kernel destroys one end's socket; the other end
//! gets a reset). A backup whose stream from the primary breaks starts a pre-vote at once;
//! the other backup still hears the primary and refuses it, so the term never moves and no
//! write fails. (`bench steady` runs the full-size version.)

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use support::procs::{Cluster, READY_TIMEOUT, deadline, logged_in_client, wait_until};

/// The highest term any server reports.
async fn term(cluster: &Cluster) -> u64 {
    let mut term = 0;
    for i in cluster.running() {
        if let Ok(status) = cluster.try_status(i).await {
            term = term.max(status.term);
        }
    }
    term
}

/// Waits until every server follows `primary` again.
async fn all_follow(cluster: &Cluster, primary: &str) {
    wait_until(
        deadline(READY_TIMEOUT),
        "every server to follow the primary",
        async || {
            for i in 0..cluster.len() {
                match cluster.try_status(i).await {
                    Ok(s) if s.primary.as_deref() == Some(primary) => {}
                    _ => return false,
                }
            }
            true
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_backups_and_cut_connections_do_not_depose_a_healthy_primary() {
    let mut cluster = Cluster::start(3).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (acked, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut writers = Vec::new();
    for w in 0..4 {
        let client = logged_in_client(&cluster, &format!("writer{w}")).await;
        let (stop, acked, failed) = (stop.clone(), acked.clone(), failed.clone());
        writers.push(tokio::spawn(async move {
            // Bounded: the test stops it long before.
            for n in 0..200_000 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                match client.send(&format!("w{w}-{n}")).await {
                    Ok(_) => acked.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let start_term = term(&cluster).await;
    let primary = cluster.addr(cluster.primary_index().await).to_string();
    let backups = cluster.backup_indexes().await;

    for n in 0..5 {
        let b = backups[n % backups.len()];
        cluster.kill(b);
        cluster.restart(b).await;
        all_follow(&cluster, &primary).await;
    }
    for n in 0..6 {
        let port = cluster
            .addr(backups[(n / 2) % backups.len()])
            .rsplit(':')
            .next()
            .map(str::to_string);
        let port = port.expect("an address with a port");
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
            .expect("`ss` (iproute2) is installed");
        assert!(
            cut.status.success(),
            "ss -K: {}",
            String::from_utf8_lossy(&cut.stderr)
        );
        let before = acked.load(Ordering::Relaxed);
        wait_until(
            deadline(READY_TIMEOUT),
            "writes to go on after the cut",
            async || acked.load(Ordering::Relaxed) >= before + 50,
        )
        .await;
        all_follow(&cluster, &primary).await;
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("a writer does not panic");
    }
    assert_eq!(
        term(&cluster).await,
        start_term,
        "no election, not even a lost one"
    );
    assert_eq!(cluster.addr(cluster.primary_index().await), primary);
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no write failed");
    assert!(acked.load(Ordering::Relaxed) > 0);
}
