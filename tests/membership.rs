//! Membership operations with real processes: an operator removes a dead server, and a new
//! server joins in its place.

mod support;

use std::process::Command;

use understudy::client::Client;

use support::procs::{Cluster, READY_TIMEOUT, deadline, logged_in_client, wait_until};

/// Runs `understudy admin` with the given arguments; returns (success, stdout + stderr).
fn admin(cluster: &Cluster, servers: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(["admin", "--servers", servers, "--cluster-secret-file"])
        .arg(cluster.secret_file())
        .args(args)
        .env_remove("UNDERSTUDY_CLUSTER_SECRET")
        .output()
        .expect("admin runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// A cluster of three with one message on the board from a logged-in client, and one
/// backup killed: (cluster, client, primary, the killed backup).
async fn three_with_a_killed_backup() -> (Cluster, Client, usize, usize) {
    let mut cluster = Cluster::start(3).await;
    let client = logged_in_client(&cluster, "ops").await;
    client
        .send("before the removal")
        .await
        .expect("acknowledged");
    let primary = cluster.primary_index().await;
    let dead = cluster.backup_indexes().await[0];
    cluster.kill(dead);
    (cluster, client, primary, dead)
}

/// Issue "Durability", must show 6: `admin remove` takes a dead server out of the
/// configuration through the primary; the remaining two keep committing as a cluster of
/// two; a new server joins in its place and receives everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_server_is_removed_and_replaced() {
    let (mut cluster, client, primary, dead) = three_with_a_killed_backup().await;
    let live = 3 - primary - dead;
    let dead_addr = cluster.addr(dead).to_string();

    // Through a backup: the command follows the redirect to the primary.
    let (ok, out) = admin(
        &cluster,
        cluster.addr(live),
        &["remove", "--server", &dead_addr],
    );
    assert!(ok, "admin remove failed: {out}");
    assert!(out.contains("removed"), "{out}");
    for i in [primary, live] {
        wait_until(
            deadline(READY_TIMEOUT),
            "the removal to be applied",
            async || cluster.status(i).await.members.len() == 2,
        )
        .await;
        assert!(!cluster.status(i).await.members.contains(&dead_addr));
    }
    for n in 0..10 {
        client
            .send(&format!("as a cluster of two {n}"))
            .await
            .expect("two servers still commit");
    }

    // Removing the primary itself, or without the secret, is refused.
    let (ok, out) = admin(
        &cluster,
        cluster.addr(primary),
        &["remove", "--server", cluster.addr(primary)],
    );
    assert!(!ok && out.contains("primary cannot remove itself"), "{out}");
    let refused = Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args([
            "admin",
            "--servers",
            cluster.addr(primary),
            "remove",
            "--server",
        ])
        .arg(cluster.addr(live))
        .env("UNDERSTUDY_CLUSTER_SECRET", "not-the-cluster-secret")
        .output()
        .expect("admin runs");
    assert!(
        !refused.status.success(),
        "a wrong secret must not remove anyone"
    );
    assert_eq!(cluster.status(primary).await.members.len(), 2);

    // The removed server comes back on its old data dir: it is refused and told so, and
    // stops, rather than being re-added or campaigning forever.
    cluster.restart(dead).await;
    let exit = cluster.wait_exit(dead).await;
    assert!(!exit.success(), "a removed server must not keep running");
    assert!(
        cluster
            .stderr(dead)
            .contains("was removed from the cluster"),
        "{}",
        cluster.stderr(dead)
    );
    assert_eq!(
        cluster.status(primary).await.members.len(),
        2,
        "not re-added"
    );

    // A new server joins in the dead one's place and gets every message.
    let primary_addr = cluster.addr(primary).to_string();
    let new = cluster.add_server(&primary_addr).await;
    wait_until(
        deadline(READY_TIMEOUT),
        "the new server to be a member",
        async || {
            let status = cluster.status(new).await;
            status.role == "backup" && status.members.len() == 3
        },
    )
    .await;
    cluster.wait_replicated().await;
    assert_eq!(cluster.messages(new).await, cluster.messages(primary).await);
    assert_eq!(cluster.messages(new).await.len(), 11);

    let (ok, out) = admin(&cluster, cluster.addr(primary), &["status"]);
    assert!(ok, "{out}");
    // One row per member, found from the one server named: the dead one is gone.
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert!(
        rows.iter()
            .any(|r| r.starts_with(&primary_addr) && r.contains("primary")),
        "{out}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with(cluster.addr(new)) && r.contains("backup")),
        "{out}"
    );
    assert!(!out.contains(&dead_addr), "{out}");
}

/// Membership works both ways: a removed server's address joins again with an empty data
/// dir and `--join`, as the error message says. Its log from the primary holds its old
/// removal; that removal was of the earlier server under the same address, so the new one
/// keeps running, becomes a member and receives everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_address_joins_again_with_an_empty_data_dir() {
    let (mut cluster, client, primary, gone) = three_with_a_killed_backup().await;
    let gone_addr = cluster.addr(gone).to_string();
    let (ok, out) = admin(
        &cluster,
        cluster.addr(primary),
        &["remove", "--server", &gone_addr, "--json"],
    );
    assert!(ok, "admin remove failed: {out}");
    let answer: serde_json::Value = serde_json::from_str(&out).expect("JSON from --json");
    assert_eq!(
        answer["members"].as_array().map(Vec::len),
        Some(2),
        "{answer}"
    );
    client
        .send("after the removal")
        .await
        .expect("acknowledged");

    std::fs::remove_dir_all(cluster.data_dir(gone)).expect("the old data dir is removed");
    let through = cluster.addr(primary).to_string();
    cluster.restart_joining(gone, &through).await;
    wait_until(
        deadline(READY_TIMEOUT),
        "the address to be a member again",
        async || {
            cluster
                .try_status(primary)
                .await
                .is_ok_and(|s| s.members.contains(&gone_addr))
                && cluster
                    .try_status(gone)
                    .await
                    .is_ok_and(|s| s.role == "backup" && s.messages == 2)
        },
    )
    .await;
    client.send("after the return").await.expect("acknowledged");
    wait_until(
        deadline(READY_TIMEOUT),
        "the returned server to follow",
        async || {
            cluster
                .try_status(gone)
                .await
                .is_ok_and(|s| s.messages == 3)
        },
    )
    .await;
    assert!(
        !cluster.stderr(gone).contains("removed from the cluster"),
        "the returned server took the old removal for its own:\n{}",
        cluster.stderr(gone)
    );
}
