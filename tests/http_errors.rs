//! The error answers of the HTTP contract (CONTRACT.md, "Errors", "Bounds", "Security")
//! checked against a real server in this process, over real HTTP.
//!
//! Every error case checks the status, the `error` code and a `message` for a person, and
//! then that nothing observable changed: not the clients, users, sessions or messages, and
//! not the commit index either (a refused request costs no log entry). Cases that need
//! several servers (307 `not_primary`, 503 `no_primary`) live with the multi-process tests.

mod support;

use serde_json::json;
use understudy::client::http::Method;
use understudy::server::AUTH_HEADER;

use support::inproc::{PASSWORD, Server, assert_error, json_headers, server_with_alice};

/// Contract, Errors: 400 `bad_request` for malformed JSON and for a missing or wrong-typed
/// field, on every client endpoint; "a bad request changes no state".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_missing_and_wrong_typed_bodies_are_bad_requests() {
    let (server, client_id, token) = server_with_alice().await;
    let before = server.snapshot().await;

    let malformed: [&[u8]; 6] = [b"", b"{", b"not json", b"[]", b"null", b"\xff\xfe{}"];
    for path in [
        "/client/init",
        "/client/register",
        "/client/auth",
        "/client/demo-message",
        "/client/logout",
    ] {
        for body in malformed {
            let mut headers = json_headers();
            headers.push(("authorization", format!("Bearer {token}")));
            let reply = server
                .request(Method::POST, path, &headers, Some(body))
                .await;
            let case = format!("{path} with body {:?}", String::from_utf8_lossy(body));
            assert_error(&reply, 400, "bad_request", &case);
        }
    }

    let cases = [
        ("/client/init", json!({})),
        ("/client/init", json!({ "port": "7000" })),
        ("/client/init", json!({ "port": 7000.5 })),
        ("/client/init", json!({ "port": null })),
        ("/client/register", json!({ "username": "bob" })),
        ("/client/register", json!({ "password": PASSWORD })),
        (
            "/client/register",
            json!({ "username": 7, "password": PASSWORD }),
        ),
        (
            "/client/register",
            json!({ "username": "bob", "password": ["x"] }),
        ),
        (
            "/client/auth",
            json!({ "username": "alice", "password": PASSWORD }),
        ),
        (
            "/client/auth",
            json!({ "client_id": 1, "username": "alice", "password": PASSWORD }),
        ),
        ("/client/demo-message", json!({ "client_id": client_id })),
        (
            "/client/demo-message",
            json!({ "client_id": client_id, "seq": 1 }),
        ),
        (
            "/client/demo-message",
            json!({ "client_id": client_id, "seq": "1", "message": "hi" }),
        ),
        (
            "/client/demo-message",
            json!({ "client_id": client_id, "seq": -1, "message": "hi" }),
        ),
        (
            "/client/demo-message",
            json!({ "client_id": client_id, "seq": 1, "message": 5 }),
        ),
        ("/client/logout", json!({})),
        ("/client/logout", json!({ "client_id": false })),
        // Other shapes than an object of exactly the documented fields.
        ("/client/init", json!([7000])),
        ("/client/register", json!(["bob", PASSWORD])),
        ("/client/logout", json!([client_id])),
        ("/client/init", json!("port 7000")),
        ("/client/init", json!(7000)),
        ("/client/init", json!({ "port": 7000, "extra": 1 })),
        ("/client/init", json!({ "port": 70000 })),
    ];
    for (path, body) in cases {
        let reply = server.post_with_token(path, &token, &body).await;
        assert_error(&reply, 400, "bad_request", &format!("{path} with {body}"));
    }
    // A field given twice (which `json!` cannot write).
    let twice: &[u8] = br#"{"port": 7000, "port": 7001}"#;
    let reply = server
        .request(Method::POST, "/client/init", &json_headers(), Some(twice))
        .await;
    assert_error(&reply, 400, "bad_request", "a duplicated field");

    server
        .assert_unchanged(&before, "a bad request changes no state")
        .await;
    server.stop().await;
}

/// Contract, Errors, Bounds: a field out of bounds is 400 `bad_request` (username 1 to 64
/// characters of `A-Z a-z 0-9 _ . -`, password 8 to 1024 bytes, message 1 to 4096 bytes,
/// `port` 1 to 65535, `seq` from 1, `limit` at most 1000, numeric `from`), and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_out_of_bounds_are_bad_requests() {
    let (server, client_id, token) = server_with_alice().await;
    let before = server.snapshot().await;

    let bad_usernames = [
        String::new(),
        "a".repeat(65),
        "al ice".to_string(),
        "älice".to_string(),
        "al/ice".to_string(),
        "alice!".to_string(),
    ];
    for username in &bad_usernames {
        let reply = server
            .post(
                "/client/register",
                &json!({ "username": username, "password": PASSWORD }),
            )
            .await;
        assert_error(
            &reply,
            400,
            "bad_request",
            &format!("register {username:?}"),
        );
        let reply = server.auth(&client_id, username, PASSWORD).await;
        assert_error(&reply, 400, "bad_request", &format!("auth {username:?}"));
    }

    // 7 bytes, 1025 bytes, and four characters that make only 7 bytes of UTF-8.
    let bad_passwords = ["1234567".to_string(), "p".repeat(1025), "ééé1".to_string()];
    for password in &bad_passwords {
        let case = format!("password of {} bytes", password.len());
        let reply = server
            .post(
                "/client/register",
                &json!({ "username": "bob", "password": password }),
            )
            .await;
        assert_error(&reply, 400, "bad_request", &format!("register, {case}"));
        let reply = server.auth(&client_id, "alice", password).await;
        assert_error(&reply, 400, "bad_request", &format!("auth, {case}"));
    }

    // 4097 bytes, once in ASCII and once with two-byte characters.
    let bad_messages = [String::new(), "m".repeat(4097), "é".repeat(2048) + "m"];
    for message in &bad_messages {
        let reply = server.demo_message(&client_id, &token, 1, message).await;
        let case = format!("message of {} bytes", message.len());
        assert_error(&reply, 400, "bad_request", &case);
    }

    let reply = server.demo_message(&client_id, &token, 0, "seq zero").await;
    assert_error(&reply, 400, "bad_request", "seq 0");

    for port in [json!(0), json!(65536), json!(-1), json!(i64::MAX)] {
        let reply = server.post("/client/init", &json!({ "port": port })).await;
        assert_error(&reply, 400, "bad_request", &format!("port {port}"));
    }

    for query in [
        "limit=0",
        "limit=1001",
        "from=abc",
        "from=-1",
        "from=1.5",
        "limit=abc",
        "from=",
    ] {
        let reply = server.get(&format!("/messages?{query}")).await;
        assert_error(&reply, 400, "bad_request", &format!("/messages?{query}"));
    }

    server
        .assert_unchanged(&before, "a bad request changes no state")
        .await;
    server.stop().await;
}

/// Contract, Errors: 401 `unauthorized` for a demo message or logout without a token or
/// with a wrong one, and for a login with a wrong password or an unknown user ("401 on bad
/// credentials"); none of them changes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_credentials_are_unauthorized() {
    let (server, client_id, token) = server_with_alice().await;
    server.send(&client_id, &token, 1, "first").await;
    let before = server.snapshot().await;

    let message = json!({ "client_id": client_id, "seq": 2, "message": "hi" });
    let logout = json!({ "client_id": client_id });
    let wrong_token = "0".repeat(token.len());
    let schemes = [
        ("no Authorization header", None),
        ("a wrong token", Some(format!("Bearer {wrong_token}"))),
        ("an empty bearer token", Some("Bearer ".to_string())),
        ("another scheme", Some(format!("Basic {token}"))),
        ("the token without a scheme", Some(token.clone())),
    ];
    for (path, body) in [
        ("/client/demo-message", &message),
        ("/client/logout", &logout),
    ] {
        for (case, authorization) in &schemes {
            let mut headers = json_headers();
            if let Some(value) = authorization {
                headers.push(("authorization", value.clone()));
            }
            let reply = server
                .request(
                    Method::POST,
                    path,
                    &headers,
                    Some(body.to_string().as_bytes()),
                )
                .await;
            assert_error(&reply, 401, "unauthorized", &format!("{path} with {case}"));
        }
    }

    let reply = server
        .auth(&client_id, "alice", "wrong password here")
        .await;
    assert_error(&reply, 401, "unauthorized", "auth with a wrong password");
    let reply = server.auth(&client_id, "nobody", PASSWORD).await;
    assert_error(&reply, 401, "unauthorized", "auth as an unknown user");

    server
        .assert_unchanged(&before, "refused credentials change nothing")
        .await;
    // The session survived all of it.
    assert_eq!(server.send(&client_id, &token, 2, "second").await, 2);
    server.stop().await;
}

/// Contract, Errors: 404 `not_found` for an unknown path or an unknown client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_clients_are_not_found() {
    let (server, _client_id, token) = server_with_alice().await;
    let before = server.snapshot().await;

    for (method, path) in [
        (Method::GET, "/nope"),
        // (`GET /` is the dashboard.)
        (Method::POST, "/nope/"),
        (Method::POST, "/client/nope"),
        (Method::POST, "/client"),
        (Method::GET, "/status/extra"),
    ] {
        let reply = server
            .request(method.clone(), path, &json_headers(), Some(b"{}"))
            .await;
        assert_error(&reply, 404, "not_found", &format!("{method} {path}"));
    }

    let unknown = "ffffffffffffffff";
    let reply = server.auth(unknown, "alice", PASSWORD).await;
    assert_error(&reply, 404, "not_found", "auth with an unknown client_id");
    let reply = server
        .post_with_token("/client/logout", &token, &json!({ "client_id": unknown }))
        .await;
    assert_error(&reply, 404, "not_found", "logout with an unknown client_id");
    let reply = server.demo_message(unknown, &token, 1, "hello").await;
    assert_error(
        &reply,
        404,
        "not_found",
        "demo-message with an unknown client_id",
    );

    assert_eq!(server.snapshot().await, before, "nothing changed");
    server.stop().await;
}

/// Contract, Errors: 405 `method_not_allowed` for a method a path does not serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_are_not_allowed() {
    let server = Server::start().await;
    let before = server.snapshot().await;

    for (method, path) in [
        (Method::GET, "/client/init"),
        (Method::GET, "/client/register"),
        (Method::GET, "/client/auth"),
        (Method::GET, "/client/demo-message"),
        (Method::PUT, "/client/logout"),
        (Method::POST, "/status"),
        (Method::DELETE, "/clients"),
        (Method::POST, "/messages"),
    ] {
        let body = (method != Method::GET).then_some(&b"{\"port\": 7000}"[..]);
        let reply = server
            .request(method.clone(), path, &json_headers(), body)
            .await;
        assert_error(
            &reply,
            405,
            "method_not_allowed",
            &format!("{method} {path}"),
        );
    }

    assert_eq!(server.snapshot().await, before, "nothing changed");
    server.stop().await;
}

/// Contract, Errors and client endpoints: 409 `conflict` for a taken username, for a `seq`
/// below the last, and for the last `seq` with a different text; none stores anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_are_refused_and_change_nothing() {
    let (server, client_id, token) = server_with_alice().await;
    assert_eq!(server.send(&client_id, &token, 1, "one").await, 1);
    assert_eq!(server.send(&client_id, &token, 5, "five").await, 2);
    let before = server.snapshot().await;

    let reply = server
        .post(
            "/client/register",
            &json!({ "username": "alice", "password": "another password" }),
        )
        .await;
    assert_error(&reply, 409, "conflict", "register a taken username");

    let reply = server.demo_message(&client_id, &token, 4, "four").await;
    assert_error(&reply, 409, "conflict", "a seq below the last");
    let reply = server.demo_message(&client_id, &token, 1, "one").await;
    assert_error(
        &reply,
        409,
        "conflict",
        "an older seq, even with its own text",
    );
    let reply = server.demo_message(&client_id, &token, 5, "FIVE").await;
    assert_error(
        &reply,
        409,
        "conflict",
        "the last seq with a different text",
    );

    server
        .assert_unchanged(&before, "a conflict changes nothing")
        .await;
    // The original password still works: the second registration did not overwrite it.
    server.login(&client_id, "alice", PASSWORD).await;
    server.stop().await;
}

/// Contract, Errors and Bounds: a body of at most 64 KiB is read; one byte more is 413
/// `payload_too_large`, with or without a Content-Length; nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_64_kib_are_payload_too_large() {
    let (server, _client_id, token) = server_with_alice().await;
    let before = server.snapshot().await;
    const LIMIT: usize = 64 * 1024;

    // Valid JSON of exactly `len` bytes, with a port out of bounds so that an accepted body
    // is refused for its content (400) and changes nothing.
    let padded = |len: usize| {
        let mut body = b"{\"port\": 0".to_vec();
        body.resize(len - 1, b' ');
        body.push(b'}');
        body
    };
    let reply = server.post_bytes("/client/init", &padded(LIMIT)).await;
    assert_error(
        &reply,
        400,
        "bad_request",
        "a body of exactly 64 KiB is read",
    );

    for path in [
        "/client/init",
        "/client/register",
        "/client/auth",
        "/client/demo-message",
        "/client/logout",
    ] {
        let mut headers = json_headers();
        headers.push(("authorization", format!("Bearer {token}")));
        let reply = server
            .request_alone(Method::POST, path, &headers, Some(&padded(LIMIT + 1)))
            .await;
        assert_error(
            &reply,
            413,
            "payload_too_large",
            &format!("{path}, 64 KiB + 1"),
        );
    }

    // The same without a Content-Length: a chunked body that grows past the bound.
    let chunk = vec![b' '; 32 * 1024];
    let mut request = format!(
        "POST /client/init HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        server.addr
    )
    .into_bytes();
    request.extend_from_slice(b"1\r\n{\r\n");
    for _ in 0..3 {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(&chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"1\r\n}\r\n0\r\n\r\n");
    let answer = String::from_utf8_lossy(&server.raw_exchange(&request).await).into_owned();
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "a chunked body over 64 KiB: {answer:?}"
    );
    assert!(answer.contains("\"payload_too_large\""), "{answer:?}");

    server
        .assert_unchanged(&before, "an oversized body changes nothing")
        .await;
    server.stop().await;
}

/// Contract, Security: "after at most 10 failures in a minute, further attempts get 429 with
/// `Retry-After`", even with the right password; other usernames are not slowed down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_logins_are_slowed_down() {
    let (server, client_id, _token) = server_with_alice().await;
    server.register("bob", PASSWORD).await;
    let before = server.snapshot().await;

    let mut refused_at = None;
    for attempt in 1..=11 {
        let reply = server
            .auth(&client_id, "alice", &format!("guess number {attempt}"))
            .await;
        if reply.status == 429 {
            refused_at = Some(attempt);
            break;
        }
        assert_error(
            &reply,
            401,
            "unauthorized",
            &format!("failed login {attempt}"),
        );
    }
    let refused_at = refused_at.expect("the 11th attempt at the latest gets 429");
    assert!(
        refused_at <= 11,
        "refused after {} failures",
        refused_at - 1
    );

    let reply = server.auth(&client_id, "alice", PASSWORD).await;
    assert_error(
        &reply,
        429,
        "too_many_requests",
        "the right password, too soon",
    );
    let retry_after: u64 = reply
        .header("retry-after")
        .expect("a Retry-After header")
        .parse()
        .expect("Retry-After in seconds");
    assert!(
        (1..=60).contains(&retry_after),
        "Retry-After {retry_after} s"
    );

    server
        .assert_unchanged(&before, "refused logins change nothing")
        .await;
    // Another username is not affected.
    server.login(&client_id, "bob", PASSWORD).await;
    server.stop().await;
}

/// Contract, Security: the brake on failed logins holds for attempts made at the same time
/// too: of many concurrent wrong passwords for one username, at most 10 are checked (401)
/// and the rest get 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_failed_logins_are_slowed_down_too() {
    const ATTEMPTS: usize = 20;
    let (server, client_id, _token) = server_with_alice().await;
    let before = server.snapshot().await;

    let mut attempts = tokio::task::JoinSet::new();
    for attempt in 0..ATTEMPTS {
        let (server, client_id) = (server.handle(), client_id.clone());
        attempts.spawn(async move {
            let body = json!({
                "client_id": client_id,
                "username": "alice",
                "password": format!("parallel guess {attempt}"),
            });
            server.post("/client/auth", &body).await
        });
    }
    let replies = attempts.join_all().await;
    let failed = replies.iter().filter(|r| r.status == 401).count();
    let refused = replies.iter().filter(|r| r.status == 429).count();
    assert_eq!(
        failed + refused,
        ATTEMPTS,
        "every attempt is a 401 or a 429: {:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(
        failed <= 10,
        "{failed} of {ATTEMPTS} concurrent wrong passwords were checked; at most 10 may be"
    );

    server
        .assert_unchanged(&before, "refused logins change nothing")
        .await;
    server.stop().await;
}

/// Contract, Errors: "A bad request changes no state and never takes a server down; neither
/// do garbage bytes or idle connections."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_and_idle_connections_leave_the_server_serving() {
    let (server, client_id, token) = server_with_alice().await;
    let before = server.snapshot().await;

    // Connections that say nothing, or stop half-way, stay open throughout.
    let idle = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    let mut half = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut half, b"POST /client/init HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();

    let long_header = format!("GET /status HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(1 << 20));
    let garbage: Vec<Vec<u8>> = vec![
        (0..=255u8).cycle().take(10_000).collect(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
        b"HELLO\r\n\r\n".to_vec(),
        b"GET /status HTTP/9.9\r\n\r\n".to_vec(),
        b"POST /client/init HTTP/1.1\r\nContent-Length: -5\r\n\r\n{}".to_vec(),
        b"POST /client/init HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n".to_vec(),
        b"POST /client/init HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        b"\r\n\r\n\r\n\0\0\0\0".to_vec(),
        long_header.into_bytes(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0garbage".to_vec(),
    ];
    for bytes in &garbage {
        server.raw_exchange(bytes).await;
        let status = server.status().await;
        assert_eq!(status["role"], "primary", "still serving after garbage");
    }

    assert_eq!(server.snapshot().await, before, "garbage changes nothing");
    assert_eq!(server.send(&client_id, &token, 1, "still here").await, 1);
    drop(idle);
    drop(half);
    server.stop().await;
}

/// POSTs `body` as JSON to `path` on `addr` over a connection from the loopback address
/// `source`, and returns the answer's status.
async fn post_from(source: [u8; 4], addr: &str, path: &str, body: &serde_json::Value) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind((std::net::Ipv4Addr::from(source), 0).into())
        .expect("a loopback source address");
    let mut stream = socket
        .connect(addr.parse().expect("an address"))
        .await
        .expect("the server answers");
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("sent");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("an answer");
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

/// Security: nobody can lock a user out. A thousand wrong passwords for alice from one
/// address are refused there after ten (429), and alice still logs in from another address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_wrong_logins_from_one_address_do_not_lock_alice_out() {
    let (server, client_id, _token) = server_with_alice().await;
    let guess = |n: usize| json!({ "client_id": client_id, "username": "alice", "password": format!("wrong guess number {n}") });
    let mut statuses = std::collections::BTreeMap::new();
    for n in 0..1000 {
        let status = post_from([127, 0, 0, 3], &server.addr, "/client/auth", &guess(n)).await;
        *statuses.entry(status).or_insert(0) += 1;
    }
    assert_eq!(statuses.get(&401), Some(&10), "{statuses:?}");
    assert_eq!(statuses.get(&429), Some(&990), "{statuses:?}");
    let right = json!({ "client_id": client_id, "username": "alice", "password": PASSWORD });
    assert_eq!(
        post_from([127, 0, 0, 3], &server.addr, "/client/auth", &right).await,
        429,
        "the guessing address stays slowed down"
    );
    assert_eq!(
        post_from([127, 0, 0, 4], &server.addr, "/client/auth", &right).await,
        200,
        "alice logs in from elsewhere"
    );
    server.stop().await;
}

/// The headers of a peer's JSON `POST path` with `body`, signed under the server's secret.
fn signed_json_headers(server: &Server, path: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        (AUTH_HEADER, server.secret.sign("POST", path, body)),
        ("content-type", "application/json".to_string()),
    ]
}

/// Strict input from peers too: a signed peer request whose JSON body has an extra field,
/// a missing one or another shape is answered 400, like a client's.
#[tokio::test]
async fn a_signed_peer_body_of_the_wrong_shape_is_a_bad_request() {
    let server = Server::start().await;
    let path = "/replication/set-backups";
    let cases: [(&str, &[u8]); 4] = [
        (
            "an extra field",
            br#"{"primary":"127.0.0.1:1","term":1,"backups":[],"extra":1}"#,
        ),
        (
            "a missing field",
            br#"{"primary":"127.0.0.1:1","backups":[]}"#,
        ),
        ("an array", br#"["127.0.0.1:1",1,[]]"#),
        (
            "a wrong type",
            br#"{"primary":"127.0.0.1:1","term":"one","backups":[]}"#,
        ),
    ];
    for (case, body) in cases {
        let headers = signed_json_headers(&server, path, body);
        let reply = server
            .request(Method::POST, path, &headers, Some(body))
            .await;
        assert_error(&reply, 400, "bad_request", case);
    }
    server.stop().await;
}

/// Security (replays): a signed peer request is accepted once; the same bytes sent again
/// are refused with 401 before any handler sees them.
#[tokio::test]
async fn a_replayed_peer_request_is_refused() {
    let server = Server::start().await;
    let path = "/replication/set-backups";
    // Authentication passes, then the handler refuses the empty body: 400 shows it got in.
    let body: &[u8] = b"{}";
    let headers = signed_json_headers(&server, path, body);
    let first = server
        .request(Method::POST, path, &headers, Some(body))
        .await;
    assert_error(&first, 400, "bad_request", "the first use");
    let replay = server
        .request(Method::POST, path, &headers, Some(body))
        .await;
    assert_error(&replay, 401, "unauthorized", "the replay");
    server.stop().await;
}
