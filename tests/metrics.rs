//! What an operator sees, against real processes: `GET /metrics` read by a Prometheus text
//! parser carries every series the operator needs, and its values move as a failover
//! happens; `/health`, `/primary` and `/backup` tell a load balancer where to send what.

mod support;

use prometheus_parse::{Scrape, Value};
use understudy::client::Client;

use support::procs::{Cluster, READY_TIMEOUT, deadline, logged_in_client, wait_for};

/// Every series `/metrics` must carry on a primary with two backups (histograms by their
/// count; series with labels by any one of their samples).
const SERIES: &[&str] = &[
    "understudy_role",
    "understudy_term",
    "understudy_commit_index",
    "understudy_applied_index",
    "understudy_last_index",
    "understudy_hears_primary",
    "understudy_elections_total",
    "understudy_leader_changes_total",
    "understudy_peer_match_index",
    "understudy_peer_lag_entries",
    "understudy_peer_lag_seconds",
    "understudy_peer_last_heard_seconds",
    "understudy_replication_round_trip_seconds_count",
    "understudy_log_sync_seconds_count",
    "understudy_log_batch_entries_count",
    "understudy_http_requests_total",
    "understudy_logins_total",
    "understudy_new_primary_notifications_total",
    "understudy_state_transfer_seconds_count",
    "understudy_messages",
    "understudy_clients",
    "understudy_logged_in_clients",
    "understudy_store_bytes",
    "understudy_log_bytes",
];

async fn scrape(cluster: &Cluster, i: usize) -> Result<Scrape, String> {
    let answer = cluster
        .http()
        .get(cluster.addr(i), "/metrics", &[])
        .await
        .map_err(|err| err.to_string())?;
    if answer.status != 200 {
        return Err(format!("GET /metrics: HTTP {}", answer.status));
    }
    let text = String::from_utf8(answer.body.to_vec()).map_err(|err| err.to_string())?;
    Scrape::parse(text.lines().map(|line| Ok(line.to_string()))).map_err(|err| err.to_string())
}

/// The value of the sample of `metric` whose labels include `labels`.
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .find_map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
            _ => None,
        })
}

async fn status_code(cluster: &Cluster, i: usize, path: &str) -> u16 {
    cluster
        .http()
        .get(cluster.addr(i), path, &[])
        .await
        .map(|answer| answer.status)
        .unwrap_or(0)
}

async fn send(client: &Client, n: usize, tag: &str) {
    for k in 0..n {
        client
            .send(&format!("{tag} {k}"))
            .await
            .expect("acknowledged");
    }
}

/// Operations: the series are there and true on the primary; after a kill -9 the new
/// primary's term, leader changes (with the cause) and the dead server's lag move, the
/// health endpoints follow the roles, and the election's log line names its cause, the old
/// primary and how long it was silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_follow_a_failover() {
    let cluster = &mut Cluster::start_with(3, &["--log-format", "json"]).await;
    cluster.wait_ready(deadline(READY_TIMEOUT)).await;
    let client = logged_in_client(cluster, "watcher").await;
    assert!(
        client.login("watcher", "not the password").await.is_err(),
        "a wrong password is refused"
    );
    client
        .login("watcher", "watcher-password")
        .await
        .expect("login");
    send(&client, 20, "before").await;
    cluster.wait_replicated().await;

    let old = cluster.primary_index().await;
    let backups: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let before = scrape(cluster, old).await.expect("metrics of the primary");
    let missing: Vec<&str> = SERIES
        .iter()
        .filter(|name| !before.samples.iter().any(|s| s.metric == **name))
        .copied()
        .collect();
    // A first primary has told no client of a new primary yet: the one exception.
    assert_eq!(
        missing,
        vec!["understudy_new_primary_notifications_total"],
        "series missing from /metrics"
    );
    let term = value(&before, "understudy_term", &[]).expect("term");
    assert_eq!(
        value(&before, "understudy_role", &[("role", "primary")]),
        Some(1.0)
    );
    assert_eq!(value(&before, "understudy_messages", &[]), Some(20.0));
    let commit = value(&before, "understudy_commit_index", &[]).expect("commit index");
    for &b in &backups {
        let peer = cluster.addr(b);
        assert_eq!(
            value(&before, "understudy_peer_match_index", &[("peer", peer)]),
            Some(commit),
            "backup {peer} holds every committed entry"
        );
        assert_eq!(
            value(&before, "understudy_peer_lag_entries", &[("peer", peer)]),
            Some(0.0)
        );
    }
    assert_eq!(
        value(&before, "understudy_logins_total", &[("result", "ok")]),
        Some(2.0)
    );
    assert_eq!(
        value(&before, "understudy_logins_total", &[("result", "failed")]),
        Some(1.0)
    );
    let posted = [("endpoint", "/client/demo-message"), ("status", "200")];
    assert!(value(&before, "understudy_http_requests_total", &posted) >= Some(20.0));
    assert!(
        value(
            &before,
            "understudy_replication_round_trip_seconds_count",
            &[]
        ) > Some(0.0)
    );
    assert!(value(&before, "understudy_log_sync_seconds_count", &[]) > Some(0.0));
    assert_eq!(status_code(cluster, old, "/primary").await, 200);
    assert_eq!(status_code(cluster, old, "/health").await, 200);
    for &b in &backups {
        assert_eq!(status_code(cluster, b, "/backup").await, 200);
        assert_eq!(status_code(cluster, b, "/primary").await, 503);
        assert_eq!(status_code(cluster, b, "/health").await, 200);
    }

    // The primary dies; its kernel closes its connections, so the election's cause is the
    // lost connection.
    cluster.kill(old);
    let new = cluster.primary_index().await;
    assert_ne!(new, old);
    send(&client, 10, "after").await;
    let dead = cluster.addr(old).to_string();
    let after = wait_for(
        deadline(READY_TIMEOUT),
        "the new primary's metrics",
        async || {
            let after = scrape(cluster, new).await?;
            let lag = value(&after, "understudy_peer_lag_entries", &[("peer", &dead)]);
            let waited = value(&after, "understudy_peer_lag_seconds", &[("peer", &dead)]);
            if lag >= Some(10.0) && waited > Some(0.0) {
                Ok(after)
            } else {
                Err(format!(
                    "the dead server's lag: {lag:?} entries, {waited:?} s"
                ))
            }
        },
    )
    .await;
    assert!(
        value(&after, "understudy_term", &[]) > Some(term),
        "a new term"
    );
    assert_eq!(
        value(&after, "understudy_role", &[("role", "primary")]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &after,
            "understudy_leader_changes_total",
            &[("cause", "connection_lost")]
        ),
        Some(1.0),
        "the new primary counts its own election with its cause"
    );
    assert!(
        value(
            &after,
            "understudy_new_primary_notifications_total",
            &[("result", "ok")]
        ) >= Some(1.0),
        "the client was told of the new primary"
    );
    let survivor = backups.into_iter().find(|&b| b != new).expect("a backup");
    let survivor_addr = cluster.addr(survivor).to_string();
    assert_eq!(
        value(
            &after,
            "understudy_peer_lag_entries",
            &[("peer", &survivor_addr)]
        ),
        Some(0.0),
        "the live backup keeps up"
    );
    let on_survivor = scrape(cluster, survivor)
        .await
        .expect("metrics of the backup");
    assert!(
        value(
            &on_survivor,
            "understudy_leader_changes_total",
            &[("cause", "other_server")]
        ) >= Some(2.0),
        "a backup counts each primary it follows"
    );
    assert_eq!(status_code(cluster, new, "/primary").await, 200);
    assert_eq!(status_code(cluster, survivor, "/backup").await, 200);

    // The new primary's log says why it was elected, whom it replaced and how long that one
    // was silent, as one JSON object a line.
    let logs = cluster.stderr(new);
    let election = logs
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("a JSON log line"))
        .find(|line| line["cause"] == "connection_lost")
        .unwrap_or_else(|| panic!("no election in the new primary's log:\n{logs}"));
    assert_eq!(election["old_primary"], dead.as_str(), "{election}");
    assert!(election["silent_ms"].is_u64(), "{election}");
    assert_eq!(election["level"], "WARN", "{election}");
    assert_eq!(status_code(cluster, survivor, "/health").await, 200);
}
