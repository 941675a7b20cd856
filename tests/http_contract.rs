//! The HTTP contract (CONTRACT.md, "Server HTTP endpoints", "Errors", "Security") checked
//! against a real server in this process, over real HTTP.
//!
//! Every error case checks the status, the `error` code and a `message` for a person, and
//! then that nothing observable changed: not the clients, users, sessions or messages, and
//! not the commit index either (a refused request costs no log entry). Cases that need
//! several servers (307 `not_primary`, 503 `no_primary`) live with the multi-process tests.

mod support;

use serde_json::{Value, json};
use understudy::client::http::Method;

use support::inproc::{CLIENT_PORT, Reply, SECRET, Server, json_headers};

const PASSWORD: &str = "correct horse battery";

/// A server with one client logged in as `alice`: (server, client_id, token).
async fn server_with_alice() -> (Server, String, String) {
    let server = Server::start().await;
    let client_id = server.init_client().await;
    server.register("alice", PASSWORD).await;
    let token = server.login(&client_id, "alice", PASSWORD).await;
    (server, client_id, token)
}

/// Contract, Errors: `{"error": "<code>", "message": "<for a person>"}` with a fitting
/// status, as JSON.
#[track_caller]
fn assert_error(reply: &Reply, status: u16, code: &str, case: &str) {
    if let Some(mismatch) = error_mismatch(reply, status, code) {
        panic!("{case}: {mismatch}");
    }
}

/// What is wrong with an error answer, if anything (see [`assert_error`]).
fn error_mismatch(reply: &Reply, status: u16, code: &str) -> Option<String> {
    let message = reply.field("message").as_str().unwrap_or_default();
    let content_type = reply.header("content-type").unwrap_or_default();
    let fits = reply.status == status
        && reply.field("error") == code
        && !message.is_empty()
        && content_type.starts_with("application/json");
    (!fits).then(|| {
        format!(
            "expected {status} {code:?} with a message, as JSON; got {} ({content_type:?}) {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        )
    })
}

/// The exact set of keys of a JSON object.
fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

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
    ];
    for (path, body) in cases {
        let reply = server.post_with_token(path, &token, &body).await;
        assert_error(&reply, 400, "bad_request", &format!("{path} with {body}"));
    }

    assert_eq!(
        server.snapshot().await,
        before,
        "a bad request changes no state"
    );
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

    assert_eq!(
        server.snapshot().await,
        before,
        "a bad request changes no state"
    );
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

    assert_eq!(
        server.snapshot().await,
        before,
        "refused credentials change nothing"
    );
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
        (Method::GET, "/"),
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

    assert_eq!(
        server.snapshot().await,
        before,
        "a conflict changes nothing"
    );
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

    assert_eq!(
        server.snapshot().await,
        before,
        "an oversized body changes nothing"
    );
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

    assert_eq!(
        server.snapshot().await,
        before,
        "refused logins change nothing"
    );
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

    assert_eq!(
        server.snapshot().await,
        before,
        "refused logins change nothing"
    );
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
/// one the server is the primary and the only member, and applies what it commits.
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
            "logged_in",
            "members",
            "messages",
            "primary",
            "role",
            "term"
        ]
    );
    assert_eq!(status["id"], server.addr.as_str());
    assert_eq!(status["role"], "primary");
    assert_eq!(status["primary"], server.addr.as_str());
    assert_eq!(status["members"], json!([server.addr]));
    for field in ["term", "commit_index", "applied_index"] {
        assert!(
            status[field].as_u64().is_some_and(|n| n >= 1),
            "{field}: {status}"
        );
    }
    assert_eq!(status["applied_index"], status["commit_index"]);
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
    let requests: [(Method, &str, Vec<u8>); 8] = [
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
