//! Abuse limits against a real server on loopback: inits per source address, slow senders,
//! and the cap on open connections. Each refusal is a 429 with `Retry-After` (or, for a
//! sender too slow to finish its request, a closed connection or a 408) and is counted in
//! `/metrics`.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use understudy::server::Limits;

use support::inproc::{Server, assert_error};

/// The value of `understudy_limited_total{limit="<limit>"}` in `/metrics`.
async fn limited(server: &Server, limit: &str) -> u64 {
    let metrics = server.get("/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    let series = format!("understudy_limited_total{{limit=\"{limit}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

/// Reads until the server closes the connection (or `bound` passes); returns what arrived
/// and whether the server closed it.
async fn read_until_closed(stream: &mut TcpStream, bound: Duration) -> (Vec<u8>, bool) {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(bound, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (answer, closed)
}

/// Limits (client/init per source address): 10,000 inits from one address get the burst
/// and then 429 with Retry-After; what is stored stays within the limit's bound, and each
/// refusal is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_inits_from_one_source_are_limited_and_storage_stays_bounded() {
    let per_minute = 600;
    let server = Server::start_with_limits(Limits {
        inits_per_minute: per_minute,
        ..Limits::default()
    })
    .await;
    let clients_before = server.status().await["clients"].as_u64().unwrap_or(0);
    let started = Instant::now();
    let (mut accepted, mut refused) = (0u64, 0u64);
    for i in 0..10_000u32 {
        let reply = server
            .post("/client/init", &json!({ "port": 1024 + (i % 60_000) }))
            .await;
        match reply.status {
            200 => accepted += 1,
            429 => {
                refused += 1;
                if refused == 1 {
                    assert_error(&reply, 429, "too_many_requests", "an init over the limit");
                    let retry_after: u64 = reply
                        .header("retry-after")
                        .and_then(|v| v.parse().ok())
                        .expect("a Retry-After header");
                    assert!(retry_after >= 1);
                }
            }
            other => panic!("init {i}: HTTP {other}: {:?}", reply.json),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The burst, plus what the bucket refilled meanwhile.
    let bound = u64::from(per_minute) + (elapsed * f64::from(per_minute) / 60.0).ceil() as u64;
    assert!(
        accepted <= bound,
        "{accepted} inits stored in {elapsed:.1} s; the limit allows {bound}"
    );
    assert!(
        accepted >= u64::from(per_minute),
        "the burst was not granted"
    );
    assert_eq!(accepted + refused, 10_000);
    let stored = server.status().await["clients"].as_u64().unwrap_or(0) - clients_before;
    assert_eq!(stored, accepted, "only accepted inits are stored");
    assert_eq!(limited(&server, "init").await, refused);

    // Another source address is not affected.
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind("127.0.0.5:0".parse().expect("an address"))
        .expect("bind 127.0.0.5");
    let mut stream = socket
        .connect(server.addr.parse().expect("an address"))
        .await
        .expect("connect");
    let body = r#"{"port":7000}"#;
    let request = format!(
        "POST /client/init HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    server.stop().await;
}

/// Limits (header read timeout): a sender that never finishes its headers is cut off, and
/// the cut is counted (with idle keep-alive connections, which the same timeout closes).
#[tokio::test]
async fn a_slow_sender_of_headers_is_cut_off() {
    let server = Server::start_with_limits(Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let mut stream = TcpStream::connect(&server.addr).await.expect("connect");
    stream
        .write_all(b"POST /client/init HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("send");
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(30)).await;
    assert!(closed, "the connection was still open");
    assert!(limited(&server, "header_timeout").await >= 1);
    server.stop().await;
}

/// Limits (body read timeout): a sender whose body stops short is answered 408 and the
/// state is unchanged.
#[tokio::test]
async fn a_slow_sender_of_a_body_gets_408() {
    let server = Server::start_with_limits(Limits {
        body_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let before = server.snapshot().await;
    let mut stream = TcpStream::connect(&server.addr).await.expect("connect");
    stream
        .write_all(
            b"POST /client/init HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"port\":",
        )
        .await
        .expect("send");
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(30)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    server
        .assert_unchanged(&before, "a body that never arrived")
        .await;
    assert_eq!(limited(&server, "body_timeout").await, 1);
    server.stop().await;
}

/// Limits (open connections): past the cap a connection is answered 429 with Retry-After
/// and closed; once one closes, a new one is served again.
#[tokio::test]
async fn connections_over_the_cap_are_refused_with_429() {
    let cap = 4;
    let server = Server::start_with_limits(Limits {
        max_connections: cap,
        ..Limits::default()
    })
    .await;
    // The test's own client may hold pooled connections; fill every slot that is left.
    let mut held = Vec::new();
    let refused = loop {
        let mut stream = TcpStream::connect(&server.addr).await.expect("connect");
        stream
            .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("send");
        let mut buf = [0u8; 1024];
        let n = stream.read(&mut buf).await.expect("an answer");
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        if head.starts_with("HTTP/1.1 429") {
            break head;
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        held.push(stream);
        assert!(held.len() <= cap, "more than {cap} connections were served");
    };
    assert!(
        refused.to_ascii_lowercase().contains("retry-after: 1"),
        "{refused}"
    );
    drop(held);
    // The slots free up as the server sees the connections close.
    support::procs::wait_until(
        support::procs::deadline(Duration::from_secs(10)),
        "a connection to be served again",
        async || {
            let Ok(mut stream) = TcpStream::connect(&server.addr).await else {
                return false;
            };
            if stream
                .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await
                .is_err()
            {
                return false;
            }
            let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
            answer.starts_with(b"HTTP/1.1 200")
        },
    )
    .await;
    assert!(limited(&server, "connections").await >= 1);
    server.stop().await;
}

/// Limits (expiry, a replicated command decided on the primary): a client that never logs
/// in is forgotten after the configured time, everywhere the state is read; one that logged
/// in (and out again) stays. The expiry is counted.
#[tokio::test]
async fn a_client_that_never_logs_in_expires_and_one_that_did_stays() {
    let server = Server::start_with_limits(Limits {
        client_ttl: Some(Duration::from_millis(500)),
        ..Limits::default()
    })
    .await;
    let idle = server.init_client().await;
    let active = server.init_client().await;
    server.register("alice", "alice's password").await;
    let token = server.login(&active, "alice", "alice's password").await;
    server.send(&active, &token, 1, "still here").await;
    let logout = server
        .post_with_token("/client/logout", &token, &json!({ "client_id": active }))
        .await;
    assert_eq!(logout.status, 200, "{:?}", logout.json);

    let listed = async || -> Vec<String> {
        let clients = server.get("/clients").await;
        clients.json["clients"]
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|c| c["client_id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    support::procs::wait_until(
        support::procs::deadline(Duration::from_secs(20)),
        "the idle client to expire",
        async || !listed().await.contains(&idle),
    )
    .await;
    assert!(
        listed().await.contains(&active),
        "a client that logged in stays"
    );
    let messages = server.get("/messages").await;
    assert_eq!(messages.json["messages"][0]["message"], "still here");
    assert_eq!(server.status().await["clients"], 1);
    let metrics = String::from_utf8_lossy(&server.get("/metrics").await.body).to_string();
    assert!(
        metrics.contains("understudy_clients_expired_total 1"),
        "{metrics}"
    );
    server.stop().await;
}
