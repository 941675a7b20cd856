//! Failover with real processes: a primary killed with SIGKILL, a primary paused with
//! SIGSTOP past the election timeout, and every server restarted with SIGTERM in turn,
//! while a client keeps writing.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use understudy::client::Client;

use support::procs::{Cluster, READY_TIMEOUT, deadline, logged_in_client, wait_until};

/// A client that writes `write-N` messages until stopped, recording what was acknowledged.
struct Writer {
    client: Arc<Client>,
    acked: Arc<Mutex<Vec<(String, u64)>>>,
    /// Sends that failed at the client library (after all its retries).
    failed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Writer {
    async fn start(cluster: &Cluster) -> Writer {
        let client = logged_in_client(cluster, "writer").await;
        let client = Arc::new(client);
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
            let failed = failed.clone();
            async move {
                // Bounded: at most 5,000 writes, and the test stops it long before.
                for n in 0..5_000 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let text = format!("write-{n:05}");
                    match client.send(&text).await {
                        Ok(index) => acked.lock().await.push((text, index)),
                        // Not acknowledged; the client retries the same seq on the next send.
                        Err(err) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            eprintln!("{text} not acknowledged: {err}");
                        }
                    }
                }
            }
        });
        Writer {
            client,
            acked,
            failed,
            stop,
            task,
        }
    }

    async fn acked_count(&self) -> usize {
        self.acked.lock().await.len()
    }

    /// Waits until `more` writes beyond the current count are acknowledged.
    async fn wait_more(&self, more: usize, what: &str) {
        let target = self.acked_count().await + more;
        wait_until(deadline(READY_TIMEOUT), what, async || {
            self.acked_count().await >= target
        })
        .await;
    }

    async fn finish(self) -> Vec<(String, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the writer does not panic");
        self.acked.lock().await.clone()
    }
}

/// Contract: nothing acknowledged is ever lost. Every acknowledged message is on the board
/// of each given server exactly once, at the index it was acknowledged with.
async fn assert_all_present_once(cluster: &Cluster, servers: &[usize], acked: &[(String, u64)]) {
    cluster.wait_replicated().await;
    for &i in servers {
        let board = cluster.messages(i).await;
        let mut seen: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for m in &board {
            seen.entry(m.message.as_str()).or_default().push(m.index);
        }
        for (text, index) in acked {
            assert_eq!(
                seen.get(text.as_str()),
                Some(&vec![*index]),
                "server {i}: {text} acknowledged as #{index}"
            );
        }
        let indexes: Vec<u64> = board.iter().map(|m| m.index).collect();
        let gapless: Vec<u64> = (1..=board.len() as u64).collect();
        assert_eq!(
            indexes, gapless,
            "server {i}: indexes 1, 2, 3, ... without gaps"
        );
    }
}

fn signal(cluster: &Cluster, i: usize, signal: Signal) {
    let pid = cluster.pid(i).expect("the server runs");
    kill(Pid::from_raw(pid as i32), signal).expect("the signal is delivered");
}

/// Issue "Failover", must show 3: kill -9 of the primary under a writing client; a new
/// primary is elected, the client is told through `/new-primary`, writes continue with the
/// same token, every acknowledged message is on every live server exactly once; the old
/// primary restarted on its data dir comes back as a backup and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_primary_is_replaced_and_the_client_follows() {
    let mut cluster = Cluster::start(3).await;
    let writer = Writer::start(&cluster).await;
    let mut notifications = writer.client.notifications().expect("a listener");
    writer.wait_more(20, "writes before the kill").await;

    let old = cluster.primary_index().await;
    let old_addr = cluster.addr(old).to_string();
    let old_term = cluster.status(old).await.term;
    let killed_ms = understudy::server::unix_millis();
    cluster.kill(old);

    let notice = tokio::time::timeout(
        READY_TIMEOUT,
        notifications.wait_for(|n| n.as_ref().is_some_and(|n| n.primary != old_addr)),
    )
    .await
    .expect("the client is notified in time")
    .expect("the listener runs")
    .clone()
    .expect("a notification");
    assert!(notice.term > old_term, "the new primary's term is newer");
    let new = cluster.primary_index().await;
    assert_eq!(
        cluster.addr(new),
        notice.primary,
        "the client was told the real primary"
    );
    let since = cluster.status(new).await.primary_since_ms;
    assert!(
        since.is_some_and(|ms| ms >= killed_ms),
        "the new primary says it became one after the kill: {since:?}"
    );

    // The same client, with the same token: no new login.
    writer.wait_more(20, "writes after the kill").await;
    assert!(writer.client.is_logged_in());
    let acked = writer.finish().await;
    let live: Vec<usize> = cluster.running();
    assert_all_present_once(&cluster, &live, &acked).await;

    cluster.restart(old).await;
    wait_until(
        deadline(READY_TIMEOUT),
        "the old primary to catch up",
        async || {
            let status = cluster.try_status(old).await;
            let primary = cluster.status(new).await;
            status.is_ok_and(|s| {
                s.role == "backup"
                    && s.term >= notice.term
                    && s.applied_index >= primary.commit_index
            })
        },
    )
    .await;
    assert_all_present_once(&cluster, &[0, 1, 2], &acked).await;
    assert_eq!(
        cluster.status(old).await.primary_since_ms,
        None,
        "a backup does not say it is the primary"
    );
}

/// Issue "Failover", must show 4: SIGSTOP of the primary for longer than the election
/// timeout, then SIGCONT. The old primary steps down, nothing acknowledged is lost, and no
/// two servers ever report `role: primary` with the same term (Raft §5.2: one primary per
/// term), watched by polling every server throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_primary_steps_down_without_two_primaries_in_a_term() {
    let cluster = Cluster::start(3).await;
    let writer = Writer::start(&cluster).await;
    writer.wait_more(20, "writes before the pause").await;

    // Watch every server's role and term until told to stop.
    let watching = Arc::new(AtomicBool::new(true));
    let primaries: Arc<Mutex<BTreeMap<u64, String>>> = Arc::default();
    let addrs = cluster.addrs();
    let watcher = tokio::spawn({
        let (watching, primaries) = (watching.clone(), primaries.clone());
        let http = cluster
            .http()
            .with_request_timeout(Duration::from_millis(200));
        async move {
            while watching.load(Ordering::Relaxed) {
                for addr in &addrs {
                    let Ok(response) = http.get(addr, "/status", &[]).await else {
                        continue; // a paused server does not answer
                    };
                    let Ok(status) = response.json::<understudy::api::StatusResponse>() else {
                        continue;
                    };
                    if status.role == "primary" {
                        let mut primaries = primaries.lock().await;
                        let first = primaries.entry(status.term).or_insert(status.id.clone());
                        assert_eq!(
                            *first, status.id,
                            "two primaries in term {}: {} and {}",
                            status.term, first, status.id
                        );
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });

    let old = cluster.primary_index().await;
    let old_addr = cluster.addr(old).to_string();
    let old_term = cluster.status(old).await.term;
    signal(&cluster, old, Signal::SIGSTOP);

    // Paused past the election timeout: the others elect a new primary and go on.
    let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    wait_until(deadline(READY_TIMEOUT), "a new primary", async || {
        for &i in &others {
            if let Ok(s) = cluster.try_status(i).await
                && s.role == "primary"
                && s.term > old_term
            {
                return true;
            }
        }
        false
    })
    .await;
    writer
        .wait_more(10, "writes while the old primary is paused")
        .await;

    signal(&cluster, old, Signal::SIGCONT);
    wait_until(
        deadline(READY_TIMEOUT),
        "the old primary to step down",
        async || {
            cluster.try_status(old).await.is_ok_and(|s| {
                s.role == "backup" && s.term > old_term && s.primary != Some(old_addr.clone())
            })
        },
    )
    .await;
    writer
        .wait_more(10, "writes after the old primary returned")
        .await;
    let acked = writer.finish().await;

    watching.store(false, Ordering::Relaxed);
    watcher.await.expect("no term had two primaries");
    assert!(
        primaries.lock().await.len() >= 2,
        "the watcher saw the old and the new primary"
    );
    assert_all_present_once(&cluster, &[0, 1, 2], &acked).await;
}

/// Issue "A crash is noticed in one round trip", must show 3: every server restarted with
/// SIGTERM in turn, the primary first, under a writing client. A primary that gets SIGTERM
/// hands its office to a backup before it stops (the new primary's term is the next one,
/// with no election timeout in between), so no request fails at the client library, and
/// nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_with_sigterm_fails_no_request() {
    let mut cluster = Cluster::start(3).await;
    let writer = Writer::start(&cluster).await;
    writer.wait_more(20, "writes before the restarts").await;

    let first = cluster.primary_index().await;
    let order: Vec<usize> = std::iter::once(first)
        .chain((0..3).filter(|&i| i != first))
        .collect();
    for i in order {
        let was_primary = cluster.primary_index().await == i;
        let term = cluster.status(i).await.term;
        let exit = cluster.terminate(i).await;
        assert!(
            exit.success(),
            "server {i} stops cleanly on SIGTERM: {exit:?}"
        );
        if was_primary {
            let others: Vec<usize> = (0..3).filter(|&j| j != i).collect();
            wait_until(
                deadline(READY_TIMEOUT),
                "the hand-over's primary",
                async || {
                    for &j in &others {
                        if let Ok(s) = cluster.try_status(j).await
                            && s.role == "primary"
                        {
                            assert_eq!(s.term, term + 1, "handed over in the next term");
                            return true;
                        }
                    }
                    false
                },
            )
            .await;
        }
        writer.wait_more(10, "writes while a server is down").await;
        cluster.restart(i).await;
        cluster.wait_replicated().await;
        writer.wait_more(10, "writes after the restart").await;
    }
    let failed = writer.failed.load(Ordering::Relaxed);
    let acked = writer.finish().await;
    assert_eq!(failed, 0, "no request failed at the client library");
    assert_all_present_once(&cluster, &[0, 1, 2], &acked).await;
}

/// Expiry across a failover: a client admitted by a primary that then dies, and that never
/// logs in, is expired by the next primary (which notes such clients when it takes office),
/// and every server forgets it; a logged-in client stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_admitted_by_a_dead_primary_still_expires() {
    let mut cluster = Cluster::start_with(3, &["--client-ttl-secs", "1"]).await;
    let _alice = logged_in_client(&cluster, "alice").await;
    let primary = cluster.primary_index().await;
    let admitted = cluster
        .post(
            primary,
            "/client/init",
            None,
            &serde_json::json!({ "port": 40_200 }),
        )
        .await;
    assert_eq!(admitted.status, 200);
    let idle: serde_json::Value = serde_json::from_slice(&admitted.body).expect("JSON");
    let idle = idle["client_id"].as_str().expect("a client id").to_string();
    cluster.wait_replicated().await;
    cluster.kill(primary);

    wait_until(
        deadline(READY_TIMEOUT),
        "every remaining server to forget the idle client",
        async || {
            for i in cluster.running() {
                let Ok(clients) = cluster
                    .get_json::<understudy::api::ClientsResponse>(i, "/clients")
                    .await
                else {
                    return false;
                };
                if clients.clients.iter().any(|c| c.client_id == idle) {
                    return false;
                }
            }
            true
        },
    )
    .await;
    for i in cluster.running() {
        let clients = cluster.clients(i).await;
        assert!(
            clients
                .iter()
                .any(|c| c.username.as_deref() == Some("alice")),
            "server {i} lost alice's client"
        );
    }
}
