//! Replication across real server processes on loopback ports: the happy path, redirects,
//! secrecy of passwords, joining and restarting. Each test starts its own cluster.

mod support;

use std::collections::BTreeSet;
use std::fs;

use serde_json::{Value, json};
use understudy::api::{AuthResponse, DemoMessageResponse, InitResponse, MessageInfo};
use understudy::client::http::HttpResponse;

use support::procs::{
    Cluster, READY_TIMEOUT, contains_bytes, deadline, files_under, wait_for, wait_until,
};

/// A random suffix that makes texts and passwords of one test run unique.
fn random_hex() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A client talking raw HTTP to the primary: initialised, registered and logged in.
struct Session {
    client_id: String,
    username: String,
    token: String,
    /// Every answer body received, for searching.
    bodies: Vec<Vec<u8>>,
}

impl Session {
    /// `client/init` with `port`, `client/register`, `client/auth`, all on server `primary`.
    async fn open(
        cluster: &Cluster,
        primary: usize,
        port: u16,
        username: &str,
        password: &str,
    ) -> Session {
        let mut bodies = Vec::new();
        let init = cluster
            .post(primary, "/client/init", None, &json!({ "port": port }))
            .await;
        bodies.push(init.body.to_vec());
        assert_eq!(init.status, 200, "init: {}", text(&init));
        let init: InitResponse = init.json().unwrap();
        assert_eq!(init.primary, cluster.addr(primary));

        let register = cluster
            .post(
                primary,
                "/client/register",
                None,
                &json!({ "username": username, "password": password }),
            )
            .await;
        bodies.push(register.body.to_vec());
        assert_eq!(register.status, 201, "register: {}", text(&register));

        let auth = cluster
            .post(
                primary,
                "/client/auth",
                None,
                &json!({ "client_id": init.client_id, "username": username, "password": password }),
            )
            .await;
        bodies.push(auth.body.to_vec());
        assert_eq!(auth.status, 200, "auth: {}", text(&auth));
        let auth: AuthResponse = auth.json().unwrap();
        Session {
            client_id: init.client_id,
            username: username.to_string(),
            token: auth.token,
            bodies,
        }
    }

    /// Sends demo message `seq` to server `to` and returns the answer.
    async fn send(
        &mut self,
        cluster: &Cluster,
        to: usize,
        seq: u64,
        message: &str,
    ) -> HttpResponse {
        let answer = cluster
            .post(
                to,
                "/client/demo-message",
                Some(&self.token),
                &json!({ "client_id": self.client_id, "seq": seq, "message": message }),
            )
            .await;
        self.bodies.push(answer.body.to_vec());
        answer
    }

    /// Sends demo message `seq` to the primary and checks it is stored as `index`.
    async fn send_ok(
        &mut self,
        cluster: &Cluster,
        primary: usize,
        seq: u64,
        message: &str,
        index: u64,
    ) {
        let answer = self.send(cluster, primary, seq, message).await;
        assert_eq!(answer.status, 200, "message {seq}: {}", text(&answer));
        let stored: DemoMessageResponse = answer.json().unwrap();
        assert_eq!(stored.index, index, "message {seq} got the wrong index");
    }

    /// What the board should show for `texts` sent as seq 1, 2, ... from index `first`.
    fn expected(&self, first_index: u64, first_seq: u64, texts: &[String]) -> Vec<MessageInfo> {
        texts
            .iter()
            .enumerate()
            .map(|(k, message)| MessageInfo {
                index: first_index + k as u64,
                client_id: self.client_id.clone(),
                username: self.username.clone(),
                seq: first_seq + k as u64,
                message: message.clone(),
            })
            .collect()
    }
}

/// An answer's body as text, for assertion messages.
fn text(answer: &HttpResponse) -> String {
    String::from_utf8_lossy(&answer.body).into_owned()
}

/// Distinct message texts `<prefix>-NN-<random>`.
fn texts(prefix: &str, count: usize) -> Vec<String> {
    let run = random_hex();
    (1..=count)
        .map(|k| format!("{prefix}-{k:02}-{run}"))
        .collect()
}

/// Waits until every running server's board is exactly `expected`.
async fn wait_boards_equal(cluster: &Cluster, expected: &[MessageInfo]) {
    wait_for(
        deadline(READY_TIMEOUT),
        "every board to match",
        async || {
            for i in cluster.running() {
                let board = cluster.messages(i).await;
                if board != expected {
                    return Err(format!(
                        "server {i} has {} messages, expected {}",
                        board.len(),
                        expected.len()
                    ));
                }
            }
            Ok(())
        },
    )
    .await
}

/// CONTRACT "Client endpoints": a 2xx answer means committed; `index` is 1, 2, 3, ... in
/// commit order, the same on every server; "Read endpoints": every server answers
/// `/messages` from its own applied state; "The binary": each server prints one stdout line
/// per applied demo message, exactly once per message per process, and nothing else on
/// stdout; and the seed's requirement that the primary tells every backup each client's IP
/// and login status (`/clients` on a backup).
#[tokio::test]
async fn three_real_servers_replicate_the_happy_path() {
    let cluster = Cluster::start(3).await;
    let primary = cluster.primary_index().await;
    let notify_port = 40_123;
    let mut session = Session::open(
        &cluster,
        primary,
        notify_port,
        "alice",
        "correct horse battery",
    )
    .await;

    let texts = texts("msg", 30);
    for (k, message) in texts.iter().enumerate() {
        let n = k as u64 + 1;
        session.send_ok(&cluster, primary, n, message, n).await;
    }

    let commit = cluster.status(primary).await.commit_index;
    wait_until(
        deadline(READY_TIMEOUT),
        "every server to apply the commits",
        async || {
            for i in cluster.running() {
                match cluster.try_status(i).await {
                    Ok(status) if status.applied_index == commit => {}
                    _ => return false,
                }
            }
            true
        },
    )
    .await;
    let expected = session.expected(1, 1, &texts);
    for i in cluster.running() {
        assert_eq!(cluster.messages(i).await, expected, "board of server {i}");
        assert_eq!(
            cluster.status(i).await.messages,
            30,
            "message count of server {i}"
        );
    }

    // The printer runs beside the driver: wait for the lines, then count them.
    for i in cluster.running() {
        wait_until(
            deadline(READY_TIMEOUT),
            "every message on stdout",
            async || {
                let out = cluster.stdout(i);
                texts.iter().all(|t| out.contains(t.as_str()))
            },
        )
        .await;
        let out = cluster.stdout(i);
        for message in &texts {
            let lines = out
                .lines()
                .filter(|line| line.contains(message.as_str()))
                .count();
            assert_eq!(
                lines, 1,
                "server {i} printed {message:?} {lines} times:\n{out}"
            );
        }
        for line in out.lines() {
            let carried = texts.iter().filter(|t| line.contains(t.as_str())).count();
            assert_eq!(
                carried, 1,
                "server {i} printed a line that is not one message: {line:?}"
            );
        }
    }

    for i in cluster.backup_indexes().await {
        let clients = cluster.clients(i).await;
        let client = clients
            .iter()
            .find(|c| c.client_id == session.client_id)
            .unwrap_or_else(|| panic!("backup {i} does not know the client: {clients:?}"));
        assert_eq!(
            client.address,
            format!("127.0.0.1:{notify_port}"),
            "backup {i}"
        );
        assert_eq!(client.username.as_deref(), Some("alice"), "backup {i}");
        assert!(
            client.logged_in,
            "backup {i} does not know the client is logged in"
        );
    }
}

/// CONTRACT "Where requests go": a backup that receives a client request answers 307 with
/// `Location: http(s)://HOST:PORT/<same path>` of the primary and body
/// `{"error": "not_primary", "message": "...", "primary": "HOST:PORT"}`; and it stores
/// nothing.
#[tokio::test]
async fn a_request_to_a_backup_is_redirected() {
    let cluster = Cluster::start(3).await;
    let primary = cluster.primary_index().await;
    let primary_addr = cluster.addr(primary).to_string();
    let mut session = Session::open(&cluster, primary, 40_124, "bob", "bob's password").await;
    let scheme = if cluster.tls().is_some() {
        "https"
    } else {
        "http"
    };

    for backup in cluster.backup_indexes().await {
        let answer = session
            .send(&cluster, backup, 1, "to the wrong server")
            .await;
        assert_eq!(answer.status, 307, "backup {backup}: {}", text(&answer));
        let location = answer
            .headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("backup {backup} sent no Location"));
        assert_eq!(
            location,
            format!("{scheme}://{primary_addr}/client/demo-message")
        );
        let body: Value = serde_json::from_slice(&answer.body).expect("a JSON body");
        assert_eq!(body["error"], "not_primary", "{body}");
        assert_eq!(body["primary"], primary_addr.as_str(), "{body}");
        assert!(body["message"].is_string(), "{body}");
    }

    // The other client endpoints are redirected the same way.
    let requests = [
        ("/client/init", json!({ "port": 40_125 })),
        (
            "/client/register",
            json!({ "username": "carol", "password": "carol's password" }),
        ),
        (
            "/client/auth",
            json!({ "client_id": session.client_id, "username": "bob", "password": "bob's password" }),
        ),
        ("/client/logout", json!({ "client_id": session.client_id })),
    ];
    let backup = cluster.backup_indexes().await[0];
    for (path, body) in &requests {
        let answer = cluster.post(backup, path, Some(&session.token), body).await;
        assert_eq!(answer.status, 307, "{path} on a backup: {}", text(&answer));
        let location = answer.headers.get("location").and_then(|v| v.to_str().ok());
        assert_eq!(
            location,
            Some(format!("{scheme}://{primary_addr}{path}").as_str())
        );
    }

    // Nothing reached the board, and the client is still logged in.
    cluster.wait_replicated().await;
    for i in cluster.running() {
        assert!(
            cluster.messages(i).await.is_empty(),
            "server {i} stored a message"
        );
        let status = cluster.status(i).await;
        assert_eq!(
            (status.clients, status.logged_in),
            (1, 1),
            "server {i}: {status:?}"
        );
    }
}

/// CONTRACT "Security": passwords are stored only as salted, slow hashes; they never appear
/// in logs, in replicated entries, or in any answer. Searched: every file of every data dir,
/// every server's stdout and stderr at debug level, every answer body. The message text,
/// sent the same way, is found in every server's stdout, so the search can find things.
#[tokio::test]
async fn no_plaintext_password_anywhere() {
    let mut cluster = Cluster::start(3).await;
    let primary = cluster.primary_index().await;
    let password = format!("Pw-{}-zz", random_hex());
    let message = format!("control-{}", random_hex());
    let mut session = Session::open(&cluster, primary, 40_126, "dave", &password).await;
    session.send_ok(&cluster, primary, 1, &message, 1).await;

    // Passwords sent to a backup (redirected) must not leak there either.
    let backup = cluster.backup_indexes().await[0];
    for (path, body) in [
        (
            "/client/register",
            json!({ "username": "erin", "password": password }),
        ),
        (
            "/client/auth",
            json!({ "client_id": session.client_id, "username": "dave", "password": password }),
        ),
    ] {
        let answer = cluster.post(backup, path, None, &body).await;
        assert_eq!(answer.status, 307, "{path} on a backup: {}", text(&answer));
        session.bodies.push(answer.body.to_vec());
    }
    // A failed login logs the attempt; its password must not show either.
    let wrong = format!("{password}-wrong");
    let answer = cluster
        .post(
            primary,
            "/client/auth",
            None,
            &json!({ "client_id": session.client_id, "username": "dave", "password": wrong }),
        )
        .await;
    assert_eq!(answer.status, 401, "{}", text(&answer));
    session.bodies.push(answer.body.to_vec());

    cluster.wait_replicated().await;
    wait_boards_equal(
        &cluster,
        &session.expected(1, 1, std::slice::from_ref(&message)),
    )
    .await;
    for i in cluster.running() {
        wait_until(
            deadline(READY_TIMEOUT),
            "the message on stdout",
            async || cluster.stdout(i).contains(&message),
        )
        .await;
    }
    // Stop the servers cleanly so that whatever they write on the way out is searched too.
    for i in cluster.running() {
        let exit = cluster.terminate(i).await;
        assert!(exit.success(), "server {i} exited with {exit}");
    }

    let files = files_under(cluster.root());
    let data_files: Vec<_> = files
        .iter()
        .filter(|f| (0..cluster.len()).any(|i| f.starts_with(cluster.data_dir(i))))
        .collect();
    assert!(!data_files.is_empty(), "the data dirs are empty");
    for file in &files {
        let bytes = fs::read(file).unwrap();
        for secret in [&password, &wrong] {
            assert!(
                !contains_bytes(&bytes, secret.as_bytes()),
                "{} contains the password",
                file.display()
            );
        }
    }
    for (k, body) in session.bodies.iter().enumerate() {
        assert!(
            !contains_bytes(body, password.as_bytes()),
            "answer {k} contains the password"
        );
    }
    // Control: the same search finds the message in every server's stdout and log.
    for i in 0..cluster.len() {
        assert!(
            cluster.stdout(i).contains(&message),
            "server {i} stdout lacks the message"
        );
        assert!(!cluster.stderr(i).is_empty(), "server {i} logged nothing");
    }
    let log_files = files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "stdout"));
    assert_eq!(
        log_files
            .filter(|f| contains_bytes(&fs::read(f).unwrap(), message.as_bytes()))
            .count(),
        cluster.len(),
        "the file search does not find the message in every stdout file"
    );
}

/// CONTRACT "The binary": a server started with `--join` contacts one of the given servers
/// (following a redirect to the primary if needed), receives the full replicated state and
/// becomes a backup; `members` is the whole configuration, on every server. Messages sent
/// after the join reach it too, printed once.
#[tokio::test]
async fn a_joined_server_receives_the_full_state() {
    let mut cluster = Cluster::start(3).await;
    let primary = cluster.primary_index().await;
    let mut session = Session::open(&cluster, primary, 40_127, "frank", "frank's password").await;
    let before = texts("before", 5);
    for (k, message) in before.iter().enumerate() {
        session
            .send_ok(&cluster, primary, k as u64 + 1, message, k as u64 + 1)
            .await;
    }

    // Join through a backup: it redirects the newcomer to the primary.
    let backup = cluster.backup_indexes().await[0];
    let through = cluster.addr(backup).to_string();
    let newcomer = cluster.add_server(&through).await;
    let primary_board = cluster.messages(primary).await;
    assert_eq!(primary_board, session.expected(1, 1, &before));
    wait_for(
        deadline(READY_TIMEOUT),
        "the newcomer to hold the board",
        async || {
            let board = cluster.messages(newcomer).await;
            if board == primary_board {
                Ok(())
            } else {
                Err(format!("{} messages", board.len()))
            }
        },
    )
    .await;
    cluster.wait_ready(deadline(READY_TIMEOUT)).await;
    let mut all: Vec<String> = (0..4).map(|i| cluster.addr(i).to_string()).collect();
    all.sort();
    for i in 0..4 {
        let status = cluster.status(i).await;
        let members: BTreeSet<_> = status.members.iter().cloned().collect();
        assert_eq!(
            members.into_iter().collect::<Vec<_>>(),
            all,
            "members on server {i}"
        );
    }
    assert_eq!(cluster.status(newcomer).await.role, "backup");

    let after = texts("after", 3);
    for (k, message) in after.iter().enumerate() {
        let n = before.len() as u64 + k as u64 + 1;
        session.send_ok(&cluster, primary, n, message, n).await;
    }
    let mut expected = session.expected(1, 1, &before);
    expected.extend(session.expected(6, 6, &after));
    wait_boards_equal(&cluster, &expected).await;
    wait_until(
        deadline(READY_TIMEOUT),
        "the newcomer to print",
        async || {
            let out = cluster.stdout(newcomer);
            after.iter().all(|t| out.contains(t.as_str()))
        },
    )
    .await;
    let out = cluster.stdout(newcomer);
    for message in &after {
        assert_eq!(
            out.matches(message.as_str()).count(),
            1,
            "{message:?} in:\n{out}"
        );
    }
}

/// CONTRACT "The binary": SIGTERM is a clean shutdown with exit code 0; a server restarted
/// on the same `--data-dir` resumes its identity, term and state, and (as a backup) catches
/// up on what was committed while it was down.
#[tokio::test]
async fn restart_resumes_identity_and_state() {
    let mut cluster = Cluster::start(3).await;
    let primary = cluster.primary_index().await;
    let mut session = Session::open(&cluster, primary, 40_128, "grace", "grace's password").await;
    let before = texts("before", 5);
    for (k, message) in before.iter().enumerate() {
        session
            .send_ok(&cluster, primary, k as u64 + 1, message, k as u64 + 1)
            .await;
    }
    cluster.wait_replicated().await;

    let backup = cluster.backup_indexes().await[0];
    let old = cluster.status(backup).await;
    let exit = cluster.terminate(backup).await;
    assert_eq!(exit.code(), Some(0), "server {backup} exited with {exit}");

    // Two of three servers still commit.
    let during = texts("during", 5);
    for (k, message) in during.iter().enumerate() {
        let n = before.len() as u64 + k as u64 + 1;
        session.send_ok(&cluster, primary, n, message, n).await;
    }

    cluster.restart(backup).await;
    let mut expected = session.expected(1, 1, &before);
    expected.extend(session.expected(6, 6, &during));
    wait_boards_equal(&cluster, &expected).await;
    cluster.wait_ready(deadline(READY_TIMEOUT)).await;
    let new = cluster.status(backup).await;
    assert_eq!(new.id, old.id, "the restarted server changed its id");
    assert_eq!(new.role, "backup");
    assert_eq!(new.primary.as_deref(), Some(cluster.addr(primary)));
    assert!(
        new.term >= old.term,
        "term went back from {} to {}",
        old.term,
        new.term
    );
    let sorted = |members: &[String]| members.iter().cloned().collect::<BTreeSet<_>>();
    assert_eq!(
        sorted(&new.members),
        sorted(&old.members),
        "the restarted server forgot the members"
    );
    let clients = cluster.clients(backup).await;
    assert!(
        clients
            .iter()
            .any(|c| c.client_id == session.client_id && c.logged_in),
        "the restarted server forgot the client: {clients:?}"
    );
    // It can still take part: a message sent now reaches it.
    let last = format!("after-{}", random_hex());
    session.send_ok(&cluster, primary, 11, &last, 11).await;
    expected.extend(session.expected(11, 11, std::slice::from_ref(&last)));
    wait_boards_equal(&cluster, &expected).await;
}
