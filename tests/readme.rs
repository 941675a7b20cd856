//! The README's curl walk-through, as a newcomer would paste it: the block after the
//! `walkthrough` marker runs in bash against a fresh cluster of three, without an error,
//! and does what its comments say. Needs bash, curl and sed.

mod support;

use support::procs::Cluster;

/// The shell block that follows the walk-through's marker in the README.
fn walkthrough() -> String {
    let readme = include_str!("../README.md");
    let marker = readme
        .find("<!-- walkthrough")
        .expect("the README marks its walk-through");
    let after = &readme[marker..];
    let start = after
        .find("```sh\n")
        .expect("a shell block after the marker")
        + "```sh\n".len();
    let end = after[start..].find("```").expect("the block ends") + start;
    after[start..end].to_string()
}

/// Documentation: the walk-through runs as written (its fixed ports mapped to the test
/// cluster's) and its steps succeed: a client id and a token come back, the message is
/// stored as #1 and read back, a backup redirects, and the logout is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_runs_as_pasted() {
    let cluster = Cluster::start(3).await;
    let mut script = walkthrough();
    for (i, port) in ["7001", "7002", "7003"].iter().enumerate() {
        let addr = cluster.addr(i);
        script = script
            .replace(&format!("localhost:{port}"), addr)
            .replace(&format!("127.0.0.1:{port}"), addr);
    }
    let primary = cluster.primary_index().await;
    assert_eq!(primary, 0, "the walk-through writes to the first server");

    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("bash runs")
    })
    .await
    .expect("the script's task");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.is_empty(),
        "the walk-through printed errors:\n{stderr}"
    );
    assert!(
        !stdout.contains("\"error\""),
        "an answer was an error:\n{stdout}"
    );
    assert!(stdout.contains(r#"{"username":"carol"}"#), "{stdout}");
    assert!(stdout.contains(r#"{"index":1}"#), "{stdout}");
    assert!(stdout.contains(r#""message":"hello""#), "{stdout}");
    assert!(stdout.contains("307 Temporary Redirect"), "{stdout}");
    let client = stdout
        .lines()
        .find_map(|line| line.strip_prefix("client "))
        .expect("the client id is printed");
    assert_eq!(client.len(), 16, "a client id, not an error body: {client}");
    let clients = cluster.clients(0).await;
    assert!(
        clients.iter().any(|c| c.client_id == client
            && c.username.as_deref() == Some("carol")
            && !c.logged_in),
        "the client logged in as carol and out again: {clients:?}"
    );
}
