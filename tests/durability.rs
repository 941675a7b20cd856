//! Durability with real processes: what was acknowledged survives the crash of every server
//! at once.

mod support;

use support::procs::{Cluster, READY_TIMEOUT, deadline, logged_in_client, wait_until};

/// Contract: "A 2xx answer to a change means it is committed: it is on a majority of
/// servers, on disk, and survives every failover and the crash of any number of servers, all
/// of them at once included." Issue "Durability", must show 1: 3 servers, 200 acknowledged
/// messages, kill -9 of all three at once, restart on the same data dirs: all 200 present on
/// every server, the client's token still valid, its next message accepted with the next seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_crash_loses_nothing_acknowledged() {
    let mut cluster = Cluster::start(3).await;
    let client = logged_in_client(&cluster, "durable").await;
    let mut acked = Vec::new();
    for n in 1..=200u64 {
        let text = format!("durable-{n:03}");
        let index = client.send(&text).await.expect("acknowledged");
        acked.push((index, text));
    }

    // Every server at once, with no chance to flush anything.
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.restart(i).await;
    }
    cluster.wait_ready(deadline(READY_TIMEOUT)).await;

    for i in 0..3 {
        wait_until(
            deadline(READY_TIMEOUT),
            "the board to be restored",
            async || cluster.status(i).await.messages >= 200,
        )
        .await;
        let board: Vec<(u64, String)> = cluster
            .messages(i)
            .await
            .into_iter()
            .map(|m| (m.index, m.message))
            .collect();
        assert_eq!(
            board, acked,
            "server {i} lost or changed acknowledged messages"
        );
    }

    // Same client, same token, next seq: accepted as message 201.
    let index = client
        .send("after the crash")
        .await
        .expect("the token still works");
    assert_eq!(index, 201);
    let clients = cluster.clients(0).await;
    let me = clients
        .iter()
        .find(|c| Some(c.client_id.as_str()) == client.client_id())
        .expect("the client is still known");
    assert!(me.logged_in, "the login survived the crash");
}
