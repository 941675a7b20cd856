//! `understudy demo` runs to completion: three servers, a client, a failover, a rejoin.

use std::process::Command;

/// README: `understudy demo` starts a local cluster, shows replication and a failover, and
/// cleans up after itself (exit code 0, no server left running).
#[test]
fn demo_runs_to_completion_and_shows_replication_and_failover() {
    let output = Command::new(env!("CARGO_BIN_EXE_understudy"))
        .arg("demo")
        .output()
        .expect("the demo starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "every server printed all 5 messages",
        "elected",
        "the new primary told the client",
        "both remaining servers printed all 10 messages",
        "is a backup again with all 10 messages",
        "== done: all servers stopped",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    // Every message line names the server that printed it; each of the 3 servers printed
    // "hello 1 (before the failover)" once, and the restarted one again only if its store
    // did not hold it yet when it was killed (it resumes from the store, not from the start
    // of the log).
    let printed = stdout
        .lines()
        .filter(|l| l.contains("alice: hello 1 (before the failover)"))
        .count();
    assert!(
        (3..=4).contains(&printed),
        "printed {printed} times:\n{stdout}"
    );
}
