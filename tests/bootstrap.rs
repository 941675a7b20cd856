//! Starting safely: a data dir made to join never starts a cluster of its own, and a server
//! is never named after an address nobody can reach.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::procs::{Cluster, READY_TIMEOUT, deadline, free_port, wait_until};

/// Safety: a server whose join never succeeded (nobody answered), restarted without
/// `--join`, goes on joining the members it was given instead of becoming the primary of a
/// second cluster under the same secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_join_restarted_without_join_does_not_bootstrap() {
    let mut cluster = Cluster::start(1).await;
    let nobody = format!("127.0.0.1:{}", free_port());
    let joiner = cluster.add_server(&nobody).await;
    let status = cluster.status(joiner).await;
    assert_ne!(status.role, "primary", "a joining server is no primary");

    cluster.kill(joiner);
    cluster.restart(joiner).await;
    let status = cluster.status(joiner).await;
    assert_ne!(
        status.role, "primary",
        "the restarted joiner started a cluster"
    );
    assert_eq!(status.term, 0, "the restarted joiner held an election");
    assert_eq!(status.primary, None);
    assert!(
        cluster.stderr(joiner).contains("made to join a cluster"),
        "the restart says what it does:\n{}",
        cluster.stderr(joiner)
    );
    // The first server's cluster is untouched: still one member, its own primary.
    let first = cluster.status(0).await;
    assert_eq!(first.role, "primary");
    assert_eq!(first.members, vec![cluster.addr(0).to_string()]);
}

/// Contract: `--listen 0.0.0.0:PORT` alone would name the server `0.0.0.0:PORT`, which no
/// peer can reach: refused with a message naming `--advertise`, and nothing is remembered
/// that would keep the next start from working. With `--advertise` it serves under that name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unspecified_listen_address_needs_advertise() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "a-cluster-secret-of-enough-length\n").expect("the secret");
    let data = dir.path().join("data");
    let port = free_port();
    let server = |extra: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_understudy"));
        command
            .arg("server")
            .args(["--listen", &format!("0.0.0.0:{port}")])
            .arg("--data-dir")
            .arg(&data)
            .arg("--cluster-secret-file")
            .arg(&secret)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    };

    let refused = server(&[]).spawn().expect("the server starts");
    let output = tokio::time::timeout(READY_TIMEOUT, refused.wait_with_output())
        .await
        .expect("a server named 0.0.0.0 stops by itself")
        .expect("its output");
    let (exit, stderr) = (output.status, String::from_utf8_lossy(&output.stderr));
    assert!(!exit.success(), "refused with a failure");
    assert!(
        stderr.contains("--advertise"),
        "the error says what to do: {stderr}"
    );

    let advertise = format!("127.0.0.1:{port}");
    let mut serving = server(&["--advertise", &advertise])
        .stderr(Stdio::null())
        .spawn()
        .expect("the server starts");
    let http = understudy::client::HttpClient::with_timeout(Duration::from_secs(2));
    let mut named = None;
    wait_until(
        deadline(READY_TIMEOUT),
        "the server answers",
        async || match http.get(&advertise, "/status", &[]).await {
            Ok(answer) if answer.status == 200 => {
                named = answer
                    .json::<understudy::api::StatusResponse>()
                    .ok()
                    .map(|s| s.id);
                true
            }
            _ => false,
        },
    )
    .await;
    let _ = serving.kill().await;
    assert_eq!(named, Some(advertise));
}
