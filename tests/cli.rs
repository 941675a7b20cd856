//! The command-line client against a real cluster, as an operator's script would use it:
//! `client status` asks every member and says with its exit code whether a primary is
//! reachable, `--json` covers answers and errors, options are accepted after the
//! subcommand, and a write without a quorum names the election rather than a dead socket.

mod support;

use std::path::Path;
use std::process::Output;

use support::procs::{Cluster, READY_TIMEOUT, deadline, wait_until};

/// Runs `understudy client ARGS` with its session in `state`.
async fn client(state: &Path, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_understudy"));
    command
        .arg("client")
        .arg("--state-file")
        .arg(state)
        .args(args)
        .env_remove("UNDERSTUDY_SERVERS")
        .stdin(std::process::Stdio::null());
    tokio::task::spawn_blocking(move || command.output().expect("the client runs"))
        .await
        .expect("the client's task")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Operations: given one server, `client status --json` lists every member and exits 0
/// while there is a primary; once a majority is gone it still lists what it reaches, exits
/// non-zero and says why in JSON; and a write then fails naming the lost election.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_exit_codes_json_and_the_no_primary_error() {
    let mut cluster = Cluster::start(3).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let state = dir.path().join("client.json");
    let all = cluster.addrs().join(",");

    // Options after the subcommand, as anywhere else.
    let status = client(&state, &["status", "--servers", cluster.addr(0), "--json"]).await;
    assert!(status.status.success(), "{}", text(&status.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    let rows = rows.as_array().expect("one row per server");
    assert_eq!(
        rows.len(),
        3,
        "every member, though one was given: {rows:?}"
    );
    assert_eq!(
        rows.iter()
            .filter(|row| row["status"]["role"] == "primary")
            .count(),
        1
    );

    // The text table: from the primary's view, each backup's lag and last contact.
    let table = client(&state, &["status", "--servers", cluster.addr(0)]).await;
    assert!(table.status.success(), "{}", text(&table.stderr));
    let table = text(&table.stdout);
    assert!(table.contains("last contact"), "{table}");
    assert_eq!(
        table.matches(" ms ago").count(),
        2,
        "both backups heard: {table}"
    );

    for command in ["register", "login"] {
        let out = client(
            &state,
            &[
                command,
                "ops",
                "--password",
                "ops-password",
                "--servers",
                &all,
            ],
        )
        .await;
        assert!(out.status.success(), "{command}: {}", text(&out.stderr));
    }

    // A majority gone: the survivor has no primary.
    cluster.kill(1);
    cluster.kill(2);
    wait_until(
        deadline(READY_TIMEOUT),
        "the survivor to lose its primary",
        async || {
            cluster
                .try_status(0)
                .await
                .is_ok_and(|status| status.primary.is_none())
        },
    )
    .await;

    let status = client(&state, &["status", "--json", "--timeout-ms", "500"]).await;
    assert!(!status.status.success(), "no primary is a failure");
    let out = text(&status.stdout);
    let mut documents = serde_json::Deserializer::from_str(&out).into_iter::<serde_json::Value>();
    let rows = documents.next().expect("the table").expect("JSON");
    let error = documents.next().expect("the error").expect("JSON");
    assert_eq!(rows.as_array().map(Vec::len), Some(3), "{rows}");
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.contains("no primary")),
        "{error}"
    );

    // The same view for the operator: the dead members with the reason, and a failure.
    let admin = std::process::Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(["admin", "status", "--servers", cluster.addr(0)])
        .env_remove("UNDERSTUDY_SERVERS")
        .output()
        .expect("admin runs");
    assert!(!admin.status.success(), "no primary is a failure");
    let table = text(&admin.stdout);
    assert_eq!(table.matches("unreachable").count(), 2, "{table}");

    let send = client(
        &state,
        &["send", "--retry-ms", "1500", "--timeout-ms", "500", "hello"],
    )
    .await;
    assert!(!send.status.success());
    let stderr = text(&send.stderr);
    assert!(
        stderr.contains("an election is running"),
        "the error names the election: {stderr}"
    );
    assert!(!stderr.contains("Connect"), "not a connect error: {stderr}");
}

/// A shell running beside the same user's one-shot commands.
struct Shell {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Shell {
    fn start(state: &Path) -> Shell {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_understudy"))
            .arg("client")
            .arg("--state-file")
            .arg(state)
            .arg("shell")
            .env_remove("UNDERSTUDY_SERVERS")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the shell starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
            child.stdout.take().expect("stdout"),
        ));
        Shell {
            child,
            stdin,
            stdout,
        }
    }

    /// Types `line` and returns the first answer line that starts with one of `answers`.
    async fn run(&mut self, line: &str, answers: &[&str]) -> String {
        use tokio::io::AsyncWriteExt;
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("the shell reads");
        let wait = async {
            while let Some(out) = self.stdout.next_line().await.expect("the shell's output") {
                if answers.iter().any(|a| out.starts_with(a)) {
                    return out;
                }
            }
            panic!("the shell ended without answering {line:?}");
        };
        tokio::time::timeout(READY_TIMEOUT, wait)
            .await
            .unwrap_or_else(|_| panic!("no answer to {line:?}"))
    }

    async fn quit(mut self) {
        use tokio::io::AsyncWriteExt;
        self.stdin
            .write_all(b"quit\n")
            .await
            .expect("the shell reads");
        let status = tokio::time::timeout(READY_TIMEOUT, self.child.wait())
            .await
            .expect("the shell quits")
            .expect("its status");
        assert!(status.success());
    }
}

/// The session file is shared, not owned: one-shot sends made while a shell is open do not
/// make the shell (or a later command) reuse a seq, the shell's exit never writes older
/// state over newer, and a logout made elsewhere is not undone by the shell writing its
/// ended login back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_and_one_shot_commands_share_the_session() {
    let cluster = Cluster::start(3).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let state = dir.path().join("client.json");
    let all = cluster.addrs().join(",");
    for command in [
        &[
            "register",
            "dana",
            "--password",
            "dana-password",
            "--servers",
            &all,
        ][..],
        &[
            "login",
            "dana",
            "--password",
            "dana-password",
            "--servers",
            &all,
        ][..],
    ] {
        let out = client(&state, command).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let sent = |out: &Output| {
        assert!(
            out.status.success(),
            "stdout: {} stderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        );
    };

    let mut shell = Shell::start(&state);
    let answer = shell.run("send shell-1", &["sent", "error"]).await;
    assert!(answer.starts_with("sent"), "{answer}");
    sent(&client(&state, &["send", "cli-2"]).await);
    let answer = shell.run("send shell-3", &["sent", "error"]).await;
    assert!(
        answer.starts_with("sent"),
        "the shell reused a seq: {answer}"
    );
    sent(&client(&state, &["send", "cli-4"]).await);
    shell.quit().await;
    sent(&client(&state, &["send", "cli-5"]).await);

    let texts: Vec<String> = cluster
        .messages(0)
        .await
        .into_iter()
        .filter(|m| m.username == "dana")
        .map(|m| m.message)
        .collect();
    assert_eq!(texts, ["shell-1", "cli-2", "shell-3", "cli-4", "cli-5"]);

    // Logged out from the command line while a shell is open: the shell's exit does not
    // bring the ended login back, and the next command says to log in.
    let mut shell = Shell::start(&state);
    let answer = shell.run("primary", &["127.0.0.1", "unknown"]).await;
    assert!(!answer.is_empty());
    let out = client(&state, &["logout"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    shell.quit().await;
    let out = client(&state, &["send", "after-logout"]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not logged in"),
        "{}",
        text(&out.stderr)
    );
}
