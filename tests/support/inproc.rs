//! Servers inside the test process.
//!
//! [`Server::start`] runs a cluster of one on a loopback port: it binds the listener first
//! (so the port is known before the server runs), bootstraps from an empty data dir, and
//! returns once the server is primary and its first entries are committed and applied.
//! Every request goes over real HTTP, so what the tests see is what any client sees.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::HeaderMap;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use understudy::client::http::{HttpClient, Method};
use understudy::server::{self, ClusterSecret, Config, Limits};

/// The cluster secret of every test server.
pub const SECRET: &str = "test-cluster-secret-0123456789";
/// The notification port a test client announces. Nothing listens there; a single server
/// never wins a second election, so it never calls it.
pub const CLIENT_PORT: u16 = 9;
/// How long a server may take to become primary.
const READY_DEADLINE: Duration = Duration::from_secs(10);
/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(10);
/// How long a whole raw TCP exchange may take.
const RAW_DEADLINE: Duration = Duration::from_secs(5);

/// An answer of any status, with its body decoded as JSON where it is JSON.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    /// The decoded body, or `Value::Null` if the body is not JSON.
    pub json: Value,
    pub body: Bytes,
}

impl Reply {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A field of the JSON body (`Value::Null` if absent).
    pub fn field(&self, name: &str) -> &Value {
        &self.json[name]
    }
}

/// What a client can observe of the state: `/status`, `/clients` and every message. Two
/// snapshots are equal exactly when nothing observable changed in between, the commit index
/// included.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub status: Value,
    pub clients: Value,
    pub messages: Value,
}

/// A single-server cluster running on the test's runtime.
pub struct Server {
    /// `HOST:PORT`, the server's id.
    pub addr: String,
    /// The cluster secret the server trusts.
    pub secret: ClusterSecret,
    http: HttpClient,
    shutdown: CancellationToken,
    task: Option<JoinHandle<understudy::Result<()>>>,
    _data_dir: TempDir,
}

impl Server {
    /// Starts a new cluster of one and waits until it is primary with its bootstrap entries
    /// committed and applied.
    pub async fn start() -> Server {
        Server::start_with_limits(Limits::default()).await
    }

    /// [`start`](Self::start) with the given abuse limits.
    pub async fn start_with_limits(limits: Limits) -> Server {
        init_tracing();
        let data_dir = tempfile::tempdir().expect("temporary data dir");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address").to_string();
        let secret = ClusterSecret::new(SECRET).expect("a valid secret");
        let config = Config {
            listen: addr.clone(),
            advertise: None,
            data_dir: data_dir.path().to_path_buf(),
            secret: secret.clone(),
            join: Vec::new(),
            heartbeat: Duration::from_millis(50),
            election_timeout: Duration::from_millis(300),
            fsync: true,
            compact_every: 10_000,
            tls: None,
            limits,
            io_uring: true,
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server::serve(config, listener, shutdown.clone()));
        let server = Server {
            addr,
            secret,
            http: HttpClient::new(),
            shutdown,
            task: Some(task),
            _data_dir: data_dir,
        };
        server.wait_ready().await;
        server
    }

    /// Polls `/status` until the server is primary and has committed and applied its
    /// bootstrap entries.
    async fn wait_ready(&self) {
        let deadline = Instant::now() + READY_DEADLINE;
        let mut last = String::from("no answer yet");
        loop {
            if let Ok(response) = self.http.get(&self.addr, "/status", &[]).await
                && let Ok(status) = response.json::<Value>()
            {
                let commit = status["commit_index"].as_u64().unwrap_or(0);
                let applied = status["applied_index"].as_u64().unwrap_or(0);
                if status["role"] == "primary" && commit >= 2 && applied >= commit {
                    return;
                }
                last = status.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "server {} not ready within {READY_DEADLINE:?}; last status: {last}",
                self.addr
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Cancels the shutdown token and waits for the server to finish cleanly.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server stops within 10 s")
                .expect("server task does not panic");
            result.expect("server stops without error");
        }
    }

    // ---- raw requests ----

    /// Sends one request with exactly these headers and body bytes.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<&[u8]>,
    ) -> Reply {
        self.handle().request(method, path, headers, body).await
    }

    /// Like [`request`](Self::request), on a connection of its own (for answers after which
    /// the server may close the connection).
    pub async fn request_alone(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<&[u8]>,
    ) -> Reply {
        let handle = Handle {
            addr: self.addr.clone(),
            http: HttpClient::new(),
        };
        handle.request(method, path, headers, body).await
    }

    /// A cheap handle for requests from spawned tasks.
    pub fn handle(&self) -> Handle {
        Handle {
            addr: self.addr.clone(),
            http: self.http.clone(),
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, &[], None).await
    }

    /// `POST path` with raw body bytes declared as JSON.
    pub async fn post_bytes(&self, path: &str, body: &[u8]) -> Reply {
        self.request(Method::POST, path, &json_headers(), Some(body))
            .await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.post_bytes(path, body.to_string().as_bytes()).await
    }

    /// `POST path` with a JSON body and `Authorization: Bearer <token>`.
    pub async fn post_with_token(&self, path: &str, token: &str, body: &Value) -> Reply {
        let mut headers = json_headers();
        headers.push(("authorization", format!("Bearer {token}")));
        self.request(
            Method::POST,
            path,
            &headers,
            Some(body.to_string().as_bytes()),
        )
        .await
    }

    /// Opens a TCP connection, writes `bytes`, and reads whatever comes back until the
    /// server closes the connection or `RAW_DEADLINE` passes; then closes it.
    pub async fn raw_exchange(&self, bytes: &[u8]) -> Vec<u8> {
        let mut stream = TcpStream::connect(&self.addr).await.expect("connect");
        let mut answer = Vec::new();
        let exchange = async {
            // The server may close early on garbage; a failed write is an answer too.
            if stream.write_all(bytes).await.is_ok() {
                let _ = stream.flush().await;
            }
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                }
            }
        };
        let _ = tokio::time::timeout(RAW_DEADLINE, exchange).await;
        answer
    }

    // ---- client steps that must succeed ----

    /// `GET /status`, which must answer 200.
    pub async fn status(&self) -> Value {
        let reply = self.get("/status").await;
        assert_eq!(reply.status, 200, "GET /status: {:?}", reply.json);
        reply.json
    }

    /// `POST /client/init` with [`CLIENT_PORT`]; returns the client id.
    pub async fn init_client(&self) -> String {
        let reply = self
            .post("/client/init", &json!({ "port": CLIENT_PORT }))
            .await;
        assert_eq!(reply.status, 200, "client/init: {:?}", reply.json);
        reply
            .field("client_id")
            .as_str()
            .expect("client_id")
            .to_string()
    }

    /// `POST /client/register`, which must answer 201.
    pub async fn register(&self, username: &str, password: &str) {
        let reply = self
            .post(
                "/client/register",
                &json!({ "username": username, "password": password }),
            )
            .await;
        assert_eq!(reply.status, 201, "register {username}: {:?}", reply.json);
    }

    /// `POST /client/auth`, which must answer 200; returns the token.
    pub async fn login(&self, client_id: &str, username: &str, password: &str) -> String {
        let reply = self.auth(client_id, username, password).await;
        assert_eq!(reply.status, 200, "login {username}: {:?}", reply.json);
        reply.field("token").as_str().expect("token").to_string()
    }

    /// `POST /client/auth`, any answer.
    pub async fn auth(&self, client_id: &str, username: &str, password: &str) -> Reply {
        self.post(
            "/client/auth",
            &json!({ "client_id": client_id, "username": username, "password": password }),
        )
        .await
    }

    /// `POST /client/demo-message`, which must answer 200; returns the index.
    pub async fn send(&self, client_id: &str, token: &str, seq: u64, message: &str) -> u64 {
        let reply = self.demo_message(client_id, token, seq, message).await;
        assert_eq!(
            reply.status, 200,
            "demo-message seq {seq}: {:?}",
            reply.json
        );
        reply.field("index").as_u64().expect("index")
    }

    /// `POST /client/demo-message`, any answer.
    pub async fn demo_message(
        &self,
        client_id: &str,
        token: &str,
        seq: u64,
        message: &str,
    ) -> Reply {
        self.post_with_token(
            "/client/demo-message",
            token,
            &json!({ "client_id": client_id, "seq": seq, "message": message }),
        )
        .await
    }

    /// Everything observable: `/status`, `/clients`, `/messages?limit=1000`.
    /// Asserts that nothing observable changed since `before` (see [`snapshot`](Self::snapshot)).
    pub async fn assert_unchanged(&self, before: &Snapshot, why: &str) {
        assert_eq!(&self.snapshot().await, before, "{why}");
    }

    pub async fn snapshot(&self) -> Snapshot {
        let clients = self.get("/clients").await;
        assert_eq!(clients.status, 200, "GET /clients: {:?}", clients.json);
        let messages = self.get("/messages?limit=1000").await;
        assert_eq!(messages.status, 200, "GET /messages: {:?}", messages.json);
        Snapshot {
            status: self.status().await,
            clients: clients.json,
            messages: messages.json,
        }
    }
}

/// Sends requests to a server; cloneable, so that concurrent requests can run on tasks of
/// their own.
#[derive(Clone, Debug)]
pub struct Handle {
    pub addr: String,
    http: HttpClient,
}

impl Handle {
    /// Sends one request with exactly these headers and body bytes.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<&[u8]>,
    ) -> Reply {
        let what = format!("{method} {path}");
        let response = self
            .http
            .request(
                method,
                &self.addr,
                path,
                headers,
                body.map(Bytes::copy_from_slice),
            )
            .await
            .unwrap_or_else(|err| panic!("{what}: no answer: {err}"));
        Reply {
            status: response.status,
            json: serde_json::from_slice(&response.body).unwrap_or(Value::Null),
            headers: response.headers,
            body: response.body,
        }
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.request(
            Method::POST,
            path,
            &json_headers(),
            Some(body.to_string().as_bytes()),
        )
        .await
    }
}

impl Drop for Server {
    /// A test that panics still stops its server.
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// `Content-Type: application/json`.
pub fn json_headers() -> Vec<(&'static str, String)> {
    vec![("content-type", "application/json".to_string())]
}

/// Server logs on the test's output, filtered by `RUST_LOG` (silent by default).
fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

// ---- Shared by the HTTP tests ----------------------------------------------------------

pub const PASSWORD: &str = "correct horse battery";

/// A server with one client logged in as `alice`: (server, client_id, token).
pub async fn server_with_alice() -> (Server, String, String) {
    let server = Server::start().await;
    let client_id = server.init_client().await;
    server.register("alice", PASSWORD).await;
    let token = server.login(&client_id, "alice", PASSWORD).await;
    (server, client_id, token)
}

/// Contract, Errors: `{"error": "<code>", "message": "<for a person>"}` with a fitting
/// status, as JSON.
#[track_caller]
pub fn assert_error(reply: &Reply, status: u16, code: &str, case: &str) {
    if let Some(mismatch) = error_mismatch(reply, status, code) {
        panic!("{case}: {mismatch}");
    }
}

/// What is wrong with an error answer, if anything (see [`assert_error`]).
pub fn error_mismatch(reply: &Reply, status: u16, code: &str) -> Option<String> {
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
pub fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}
