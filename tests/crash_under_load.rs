//! Crashes with real processes while clients keep writing: kill -9 of every server at once,
//! and kill -9 of either side of a state transfer. Nothing acknowledged is lost.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::procs::{
    Cluster, READY_TIMEOUT, deadline, logged_in_client, wait_until, wait_until_closely,
};
use tokio::sync::watch;

/// Writers that keep sending until told to stop, each message acknowledged recorded with its
/// index. Every loop is bounded: at most `per_writer` messages each.
struct Load {
    acked: Arc<Mutex<Vec<(u64, String)>>>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    async fn start(cluster: &Cluster, writers: usize, per_writer: usize) -> Load {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        for w in 0..writers {
            let client = logged_in_client(cluster, &format!("writer{w}")).await;
            let (acked, stopped) = (acked.clone(), stopped.clone());
            tasks.push(tokio::spawn(async move {
                for n in 0..per_writer {
                    if *stopped.borrow() {
                        return;
                    }
                    let text = format!("w{w}-{n:06} {}", "x".repeat(100));
                    // An error is a request not acknowledged (its server died): it may or
                    // may not be on the board; only acknowledged ones are promised.
                    if let Ok(index) = client.send(&text).await {
                        acked.lock().unwrap().push((index, text));
                    }
                }
            }));
        }
        Load { acked, stop, tasks }
    }

    fn acknowledged(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until `count` messages are acknowledged (for at most two minutes: the
    /// machine may be slow, and other tests run beside this one).
    async fn until_acknowledged(&self, count: usize) {
        wait_until(
            deadline(Duration::from_secs(120)),
            "acknowledged messages",
            async || self.acknowledged() >= count,
        )
        .await;
    }

    async fn stop(self) -> Vec<(u64, String)> {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(60), task).await;
        }
        let mut acked = self.acked.lock().unwrap().clone();
        acked.sort();
        acked
    }
}

/// Every acknowledged message is on server `i`'s board at its index, with its text.
async fn assert_board_holds(cluster: &Cluster, i: usize, acked: &[(u64, String)]) {
    let last = acked.last().map_or(0, |(index, _)| *index);
    wait_until(
        deadline(READY_TIMEOUT),
        "the board to hold every acknowledged message",
        async || {
            cluster
                .try_status(i)
                .await
                .is_ok_and(|s| s.messages >= last)
        },
    )
    .await;
    let mut board = std::collections::BTreeMap::new();
    let mut from = 1;
    while from <= last {
        let page: Vec<_> = cluster
            .get_json::<understudy::api::MessagesResponse>(
                i,
                &format!("/messages?from={from}&limit=1000"),
            )
            .await
            .expect("messages")
            .messages;
        let Some(end) = page.last().map(|m| m.index) else {
            break;
        };
        for m in page {
            board.insert(m.index, m.message);
        }
        from = end + 1;
    }
    for (index, text) in acked {
        assert_eq!(
            board.get(index),
            Some(text),
            "server {i} lost or changed acknowledged message {index}"
        );
    }
}

/// Contract: an acknowledged change survives the crash of every server at once. Here the
/// crash comes while 8 writers are sending: kill -9 of all three servers mid-stream, restart
/// on the same data dirs; every message acknowledged before the kill is on every board, at
/// its index (whatever each server's store and log held when it died).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_kill_under_load_loses_nothing_acknowledged() {
    let mut cluster = Cluster::start(3).await;
    let load = Load::start(&cluster, 8, 5_000).await;
    load.until_acknowledged(2_000).await;
    for i in 0..3 {
        cluster.kill(i);
    }
    let acked = load.stop().await;
    for i in 0..3 {
        cluster.restart(i).await;
    }
    cluster.wait_ready(deadline(READY_TIMEOUT)).await;
    eprintln!("{} messages acknowledged before the kill", acked.len());
    for i in 0..3 {
        assert_board_holds(&cluster, i, &acked).await;
    }
}

/// Which side of a state transfer is killed.
#[derive(Clone, Copy, Debug)]
enum Side {
    Sender,
    Receiver,
}

/// A server joins a cluster whose log was compacted (so it must receive the primary's
/// store) while writers keep writing; as soon as the store starts arriving, one side of the
/// transfer is killed with SIGKILL. The cluster goes on, the transfer is made again (by the
/// new primary, or to the restarted joiner), the joiner becomes a member, and every board
/// holds every acknowledged message.
async fn kill_during_state_transfer(side: Side) {
    let mut cluster = Cluster::start_with(3, &["--compact-every", "500"]).await;
    let load = Load::start(&cluster, 8, 10_000).await;
    load.until_acknowledged(8_000).await;
    let primary = cluster.primary_index().await;
    let primary_addr = cluster.addr(primary).to_string();
    let joiner = cluster.add_server(&primary_addr).await;
    let incoming = |cluster: &Cluster| {
        std::fs::read_dir(cluster.data_dir(joiner))
            .map(|d| {
                d.flatten().any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("store.incoming.")
                })
            })
            .unwrap_or(false)
    };
    // The transfer takes some tens of milliseconds: the joiner's incoming file is looked
    // for every millisecond.
    wait_until_closely(
        deadline(READY_TIMEOUT),
        "the store to start arriving",
        async || incoming(&cluster),
    )
    .await;
    let victim = match side {
        Side::Sender => primary,
        Side::Receiver => joiner,
    };
    cluster.kill(victim);
    let cut_short = !cluster.stderr(joiner).contains("received store swapped in");
    eprintln!("{side:?} killed; transfer cut short: {cut_short}");
    // The cluster goes on writing meanwhile.
    let before = load.acknowledged();
    load.until_acknowledged(before + 500).await;
    match side {
        Side::Sender => cluster.restart(victim).await,
        Side::Receiver => {
            let members: Vec<usize> = (0..3).collect();
            let primary = cluster.primary_index().await;
            assert!(members.contains(&primary));
            let primary_addr = cluster.addr(primary).to_string();
            cluster.restart_joining(victim, &primary_addr).await;
        }
    }
    let acked = load.stop().await;
    cluster.wait_ready(deadline(READY_TIMEOUT)).await;
    assert!(
        cluster.stderr(joiner).contains("received store swapped in"),
        "the joiner caught up without the store:\n{}",
        cluster.stderr(joiner)
    );
    eprintln!("{} messages acknowledged", acked.len());
    for i in 0..cluster.len() {
        assert_board_holds(&cluster, i, &acked).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_sender_of_a_state_transfer_loses_nothing() {
    kill_during_state_transfer(Side::Sender).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_receiver_of_a_state_transfer_loses_nothing() {
    kill_during_state_transfer(Side::Receiver).await;
}
