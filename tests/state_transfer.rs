//! Log compaction and state transfer with real processes: the log stays bounded however many
//! messages pass (the board lives in the store), and a server that joins late catches up
//! from the primary's store.

mod support;

use std::path::Path;
use std::sync::Arc;

use understudy::storage::LOG_ZEROS_AHEAD;

use support::procs::{Cluster, READY_TIMEOUT, deadline, files_under, logged_in_client, wait_until};

/// Entries between log compactions in these tests (`--compact-every`).
const COMPACT_EVERY: u64 = 500;
/// A generous bound on one log entry on disk (a demo message entry with its record header is
/// about 250 bytes).
const MAX_ENTRY_BYTES: u64 = 512;

/// Bytes of every file under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    files_under(dir)
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

/// The board's messages are kept by design (they are the application's state, in the store),
/// so the data dir is bounded by the store plus the log since the last compaction: the log is
/// compacted every `COMPACT_EVERY` entries the store holds durably, and the store is flushed
/// at least that often, so the log stays under `3 * COMPACT_EVERY * MAX_ENTRY_BYTES` (plus
/// the zeros it keeps ahead of its records) whatever the number of messages; without compaction it would hold every entry ever
/// written. A server that joins afterwards receives the primary's store, not the log.
///
/// `UNDERSTUDY_TEST_MESSAGES` sets the number of messages (default 3,000; the issue's
/// measurement uses 100,000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_stays_bounded_and_a_late_joiner_gets_the_store() {
    let messages: u64 = std::env::var("UNDERSTUDY_TEST_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    let every = COMPACT_EVERY.to_string();
    let mut cluster = Cluster::start_with(3, &["--compact-every", &every]).await;

    // Several clients at once, so that many messages pass quickly.
    const WRITERS: u64 = 8;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let client = logged_in_client(&cluster, &format!("writer{w}")).await;
        let client = Arc::new(client);
        writers.push(tokio::spawn(async move {
            for n in 0..messages / WRITERS {
                client
                    .send(&format!("w{w} message {n}"))
                    .await
                    .expect("acknowledged");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("the writer finishes");
    }
    let sent = messages / WRITERS * WRITERS;
    cluster.wait_replicated().await;

    for i in 0..3 {
        let dir = cluster.data_dir(i);
        let store = std::fs::metadata(dir.join("store")).expect("a store").len();
        let log = std::fs::metadata(dir.join("log")).expect("a log").len();
        let total = bytes_under(dir);
        // The records, and the zeros the log keeps ahead of them.
        let log_bound = 3 * COMPACT_EVERY * MAX_ENTRY_BYTES + LOG_ZEROS_AHEAD;
        let bound = store + log_bound + 64 * 1024;
        eprintln!(
            "server {i}: {sent} messages; data dir {total} bytes (store {store}, log {log}); bound {bound}"
        );
        assert!(
            log <= log_bound,
            "server {i}: the log ({log} bytes) was not compacted"
        );
        assert!(total <= bound, "server {i}: data dir {total} > {bound}");
    }

    // A late joiner cannot get the early entries from the log any more: it gets the store.
    let primary = cluster.primary_index().await;
    let primary_addr = cluster.addr(primary).to_string();
    let new = cluster.add_server(&primary_addr).await;
    wait_until(
        deadline(READY_TIMEOUT),
        "the new server to be a member",
        async || {
            cluster
                .try_status(new)
                .await
                .is_ok_and(|s| s.role == "backup" && s.members.len() == 4)
        },
    )
    .await;
    cluster.wait_replicated().await;
    assert_eq!(cluster.status(new).await.messages, sent);
    assert_eq!(
        cluster.messages(new).await,
        cluster.messages(primary).await,
        "the first page of the board is the same"
    );
    assert!(
        cluster.stderr(new).contains("received store swapped in"),
        "the new server caught up without the primary's store:\n{}",
        cluster.stderr(new)
    );
    // It prints only what it applied from the log after the store, not the messages the
    // store brought (they were applied elsewhere).
    let printed = cluster.stdout(new).lines().count() as u64;
    assert!(printed <= 2 * COMPACT_EVERY, "printed {printed} of {sent}");
}
