//! The HTTP contract (CONTRACT.md, "Server HTTP endpoints", "Security") checked against a
//! real server in this process, over real HTTP: the answers of every endpoint, at-most-once,
//! tokens, and the cluster secret in front of the peer endpoints. The error answers are in
//! `http_errors.rs`.

mod support;

use serde_json::json;
use understudy::client::http::Method;

use support::inproc::{
    CLIENT_PORT, PASSWORD, SECRET, Server, assert_error, error_mismatch, json_headers, keys,
    server_with_alice,
};

/// Contract, client endpoints: init 200 `{client_id, primary}`, register 201 `{username}`,
/// auth 200 `{token}`, demo-message 200 `{index}` numbered 1, 2, 3 with no gaps, logout 200
/// `{}`; "After logout the client stays listed with `logged_in: false`"; bounds are
/// inclusive (a 64-character username, an 8-byte password, a 4096-byte message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_endpoints_answer_with_the_contract_shapes() {
    let server = Server::start().await;

    let init = server
        .post("/client/init", &json!({ "port": CLIENT_PORT }))
        .await;
    assert_eq!(init.status, 200, "{:?}", init.json);
    assert_eq!(keys(&init.json), ["client_id", "primary"]);
    assert_eq!(init.field("primary"), server.addr.as_str());
    let client_id = init.field("client_id").as_str().unwrap().to_string();
    assert!(!client_id.is_empty());

    let username = "A_z0.-".to_string() + &"u".repeat(58);
    assert_eq!(username.len(), 64);
    let password = "pässwö"; // 8 bytes of UTF-8
    assert_eq!(password.len(), 8);
    let register = server
        .post(
            "/client/register",
            &json!({ "username": username, "password": password }),
        )
        .await;
    assert_eq!(register.status, 201, "{:?}", register.json);
    assert_eq!(register.json, json!({ "username": username }));

    let auth = server.auth(&client_id, &username, password).await;
    assert_eq!(auth.status, 200, "{:?}", auth.json);
    assert_eq!(keys(&auth.json), ["token"]);
    let token = auth.field("token").as_str().unwrap().to_string();
    assert!(
        token.len() >= 32 && token.chars().all(|c| c.is_ascii_hexdigit()),
        "a token of at least 128 bits in hex: {token:?}"
    );

    let longest = "ü".repeat(2048);
    assert_eq!(longest.len(), 4096);
    let texts = ["hello", "world", longest.as_str()];
    for (seq, text) in (1..).zip(texts) {
        let reply = server.demo_message(&client_id, &token, seq, text).await;
        assert_eq!(reply.status, 200, "seq {seq}: {:?}", reply.json);
        assert_eq!(reply.json, json!({ "index": seq }), "gapless indexes");
    }
    let status = server.status().await;
    assert_eq!(status["messages"], 3);
    assert_eq!(status["logged_in"], 1);

    let listed = server.get("/clients").await;
    assert_eq!(listed.status, 200);
    assert_eq!(
        listed.json,
        json!({ "clients": [{
            "client_id": client_id,
            "address": format!("127.0.0.1:{CLIENT_PORT}"),
            "username": username,
            "logged_in": true,
        }]})
    );

    let logout = server
        .post_with_token("/client/logout", &token, &json!({ "client_id": client_id }))
        .await;
    assert_eq!(logout.status, 200, "{:?}", logout.json);
    assert_eq!(logout.json, json!({}));

    let listed = server.get("/clients").await;
    assert_eq!(
        listed.json["clients"][0],
        json!({
            "client_id": client_id,
            "address": format!("127.0.0.1:{CLIENT_PORT}"),
            "username": username,
            "logged_in": false,
        }),
        "a logged-out client stays listed, username kept"
    );
    assert_eq!(server.status().await["logged_in"], 0);

    let reply = server.demo_message(&client_id, &token, 4, "after").await;
    assert_error(&reply, 401, "unauthorized", "the token after logout");
    let reply = server
        .post_with_token("/client/logout", &token, &json!({ "client_id": client_id }))
        .await;
    assert_error(
        &reply,
        401,
        "unauthorized",
        "a second logout with the old token",
    );
    assert_eq!(server.status().await["messages"], 3);
    server.stop().await;
}

/// Contract, Read endpoints: `GET /status` has every field with its type; on a cluster of
/// one the server is the primary and the only member, applies what it commits, and its log
/// ends at or after its commit index (`last_index`, added for operators and the partition
/// test), and it has no peers to report on (`peers`, added for operators); as the primary
/// it says since when (`primary_since_ms`, added for operators and `bench notify`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_every_field() {
    let (server, _client_id, _token) = server_with_alice().await;
    let reply = server.get("/status").await;
    assert_eq!(reply.status, 200);
    let status = &reply.json;
    assert_eq!(
        keys(status),
        [
            "applied_index",
            "clients",
            "commit_index",
            "id",
            "last_index",
            "logged_in",
            "members",
            "messages",
            "peers",
            "primary",
            "primary_since_ms",
            "role",
            "term"
        ]
    );
    assert_eq!(status["id"], server.addr.as_str());
    // A cluster of one: nobody else to report on.
    assert_eq!(status["peers"], json!([]));
    assert_eq!(status["role"], "primary");
    assert_eq!(status["primary"], server.addr.as_str());
    assert_eq!(status["members"], json!([server.addr]));
    assert!(
        status["primary_since_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{status}"
    );
    for field in ["term", "commit_index", "applied_index", "last_index"] {
        assert!(
            status[field].as_u64().is_some_and(|n| n >= 1),
            "{field}: {status}"
        );
    }
    assert_eq!(status["applied_index"], status["commit_index"]);
    assert!(status["last_index"].as_u64() >= status["commit_index"].as_u64());
    assert_eq!(status["clients"], 1);
    assert_eq!(status["logged_in"], 1);
    assert_eq!(status["messages"], 0);
    server.stop().await;
}

/// Contract, Read endpoints: `GET /messages?from=N&limit=M` gives the messages with
/// `index >= N` (default 1) in index order, at most M (default 100, at most 1000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_paged_by_from_and_limit() {
    let (server, client_id, token) = server_with_alice().await;
    for seq in 1..=5 {
        server
            .send(&client_id, &token, seq, &format!("message {seq}"))
            .await;
    }
    let page = |query: &'static str| {
        let server = &server;
        async move {
            let reply = server.get(&format!("/messages{query}")).await;
            assert_eq!(reply.status, 200, "{query}: {:?}", reply.json);
            assert_eq!(keys(&reply.json), ["messages"]);
            reply.json["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["index"].as_u64().unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page("").await, [1, 2, 3, 4, 5]);
    assert_eq!(page("?from=2&limit=2").await, [2, 3]);
    assert_eq!(page("?limit=2&from=4").await, [4, 5]);
    assert_eq!(page("?from=5").await, [5]);
    assert_eq!(page("?from=6").await, Vec::<u64>::new());
    assert_eq!(page("?from=18446744073709551615").await, Vec::<u64>::new());
    assert_eq!(page("?limit=1").await, [1]);
    assert_eq!(page("?limit=1000").await, [1, 2, 3, 4, 5]);

    let reply = server.get("/messages?from=3&limit=1").await;
    assert_eq!(
        reply.json,
        json!({ "messages": [{
            "index": 3,
            "client_id": client_id,
            "username": "alice",
            "seq": 3,
            "message": "message 3",
        }]})
    );
    server.stop().await;
}

/// Contract, client endpoints: "A retry of the client's last `(client_id, seq)` returns the
/// same `index` and never stores the message twice"; the retry is answered from the applied
/// state, so not even the commit index moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_of_the_last_seq_returns_the_same_index_and_stores_nothing() {
    let (server, client_id, token) = server_with_alice().await;
    assert_eq!(server.send(&client_id, &token, 1, "one").await, 1);
    assert_eq!(server.send(&client_id, &token, 2, "two").await, 2);
    let before = server.snapshot().await;

    for _ in 0..3 {
        assert_eq!(server.send(&client_id, &token, 2, "two").await, 2);
    }
    let after = server.snapshot().await;
    assert_eq!(after, before, "a retry stores nothing and commits nothing");
    assert_eq!(after.status["messages"], 2);
    assert_eq!(after.messages["messages"].as_array().unwrap().len(), 2);

    // The next seq is a new message again.
    assert_eq!(server.send(&client_id, &token, 3, "two").await, 3);
    server.stop().await;
}

/// Contract, Peer endpoints and Security: "Any request to a `/replication/...` path without
/// valid cluster credentials gets 401, whether or not the path exists", "and change[s]
/// nothing"; "A client cannot join, vote, append, or set the backup list." A correctly
/// signed request for the same body is accepted, so the 401s come from the credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_endpoints_refuse_requests_without_valid_cluster_credentials() {
    let (server, _client_id, _token) = server_with_alice().await;
    let before = server.snapshot().await;
    let term = before.status["term"].as_u64().unwrap();
    let stranger = understudy::server::ClusterSecret::new("a different secret, long enough")
        .expect("a valid secret");

    let init_backup = json!({ "id": "127.0.0.1:1" }).to_string().into_bytes();
    let set_backups = json!({ "primary": "127.0.0.1:1", "term": term + 1, "backups": [] })
        .to_string()
        .into_bytes();
    let requests: [(Method, &str, Vec<u8>); 10] = [
        (Method::POST, "/replication/init-backup", init_backup),
        (
            Method::POST,
            "/replication/set-backups",
            set_backups.clone(),
        ),
        (Method::POST, "/replication/messages", vec![0, 1, 2, 3]),
        (Method::POST, "/replication/whatever", b"{}".to_vec()),
        (Method::POST, "/replication", b"{}".to_vec()),
        (Method::GET, "/replication/messages", Vec::new()),
        (Method::GET, "/replication/stream", Vec::new()),
        (Method::POST, "/replication/hand-over", b"{}".to_vec()),
        (Method::GET, "/replication/init-backup", Vec::new()),
        (Method::PUT, "/replication/set-backups", set_backups.clone()),
    ];
    // Every refusal is collected first, so that one failure shows all of them.
    let mut mismatches = Vec::new();
    for (method, path, body) in &requests {
        let mut other_body = body.clone();
        other_body.extend_from_slice(b" ");
        let credentials = [
            ("no header", None),
            ("a garbage header", Some("garbage".to_string())),
            ("the secret in clear", Some(SECRET.to_string())),
            (
                "a malformed signature",
                Some("t=1,sig=zz-not-hex".to_string()),
            ),
            (
                "a signature by another secret",
                Some(stranger.sign(method.as_str(), path, body)),
            ),
            (
                "a valid signature of another body",
                Some(server.secret.sign(method.as_str(), path, &other_body)),
            ),
            (
                "a valid signature of another path",
                Some(server.secret.sign(method.as_str(), "/status", body)),
            ),
            (
                "a valid signature of another method",
                Some(server.secret.sign(
                    if *method == Method::PUT {
                        "DELETE"
                    } else {
                        "PUT"
                    },
                    path,
                    body,
                )),
            ),
        ];
        for (case, header) in credentials {
            let mut headers = json_headers();
            if let Some(value) = header {
                headers.push((understudy::server::AUTH_HEADER, value));
            }
            let body = (*method != Method::GET).then_some(body.as_slice());
            let reply = server.request(method.clone(), path, &headers, body).await;
            if let Some(mismatch) = error_mismatch(&reply, 401, "unauthorized") {
                mismatches.push(format!("{method} {path} with {case}: {mismatch}"));
            }
        }
    }
    let after = server.snapshot().await;
    assert_eq!(after, before, "refused peer requests change nothing");
    assert_eq!(
        after.status["members"],
        json!([server.addr]),
        "nobody joined"
    );

    // Positive control: the same set-backups body, signed with the cluster secret.
    let mut headers = json_headers();
    headers.push((
        understudy::server::AUTH_HEADER,
        server
            .secret
            .sign("POST", "/replication/set-backups", &set_backups),
    ));
    let reply = server
        .request(
            Method::POST,
            "/replication/set-backups",
            &headers,
            Some(&set_backups),
        )
        .await;
    assert_eq!(
        reply.status,
        200,
        "a signed set-backups: {}",
        String::from_utf8_lossy(&reply.body)
    );

    // The verdict on the refusals comes last, so that a failure also shows the rest held.
    assert!(
        mismatches.is_empty(),
        "peer requests without valid credentials must get 401:\n{}",
        mismatches.join("\n")
    );
    server.stop().await;
}

/// Contract, client endpoints and Security: a token belongs to one login. A second login of
/// the same client gets a fresh token, and the first one stops working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_login_replaces_the_token() {
    let (server, client_id, first) = server_with_alice().await;
    assert_eq!(
        server.send(&client_id, &first, 1, "with the first").await,
        1
    );

    let second = server.login(&client_id, "alice", PASSWORD).await;
    assert_ne!(second, first, "every login gets a fresh token");
    let reply = server.demo_message(&client_id, &first, 2, "stale").await;
    assert_error(
        &reply,
        401,
        "unauthorized",
        "the first token after a second login",
    );
    assert_eq!(
        server.send(&client_id, &second, 2, "with the second").await,
        2
    );
    let status = server.status().await;
    assert_eq!(status["logged_in"], 1, "one session per client");
    assert_eq!(status["messages"], 2);
    server.stop().await;
}
