//! Servers as real processes: a cluster of `understudy server` children on loopback ports,
//! each with its own data dir and its stdout and stderr captured in files, all under one
//! temporary directory that lives as long as the [`Cluster`].
//!
//! Output goes to files rather than pipes so that a server can never stall on a full pipe
//! nobody reads. Every child is killed when the cluster is dropped, so a failing test leaves
//! no processes behind.

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use tempfile::TempDir;
use understudy::api::{ClientInfo, ClientsResponse, MessageInfo, MessagesResponse, StatusResponse};
use understudy::client::http::{HttpClient, HttpResponse};
use understudy::client::{Client, ClientOptions};
use understudy::tls::dev::Authority;
use understudy::tls::{TlsClientConfig, TlsFiles};

/// How long a cluster may take to start, or a server to join, restart or stop.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How often conditions are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// How often a condition that holds only for a moment is polled.
const CLOSE_POLL_INTERVAL: Duration = Duration::from_millis(1);
/// How often a server is started again on a new port when its port was taken meanwhile.
const START_ATTEMPTS: usize = 5;

/// A deadline `timeout` from now.
pub fn deadline(timeout: Duration) -> Instant {
    Instant::now() + timeout
}

/// Polls `check` until it returns `Ok`, and returns that value. `Err` carries what was seen
/// last, for the panic message when `deadline` passes first.
pub async fn wait_for<T>(
    deadline: Instant,
    what: &str,
    check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    poll(deadline, POLL_INTERVAL, what, check).await
}

async fn poll<T>(
    deadline: Instant,
    interval: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            panic!("timed out waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(interval).await;
    }
}

/// Like [`wait_until`], but polls every millisecond: for a state that lasts only a moment
/// (a state transfer of a few thousand messages takes some tens of milliseconds).
pub async fn wait_until_closely(
    deadline: Instant,
    what: &str,
    condition: impl AsyncFnMut() -> bool,
) {
    poll_condition(deadline, CLOSE_POLL_INTERVAL, what, condition).await
}

/// Polls `condition` until it holds; panics naming `what` if `deadline` passes first.
pub async fn wait_until(deadline: Instant, what: &str, condition: impl AsyncFnMut() -> bool) {
    poll_condition(deadline, POLL_INTERVAL, what, condition).await
}

async fn poll_condition(
    deadline: Instant,
    interval: Duration,
    what: &str,
    mut condition: impl AsyncFnMut() -> bool,
) {
    poll(deadline, interval, what, async || {
        if condition().await {
            Ok(())
        } else {
            Err("the condition does not hold".to_string())
        }
    })
    .await
}

/// A free loopback port: bind port 0, read it, let it go. Another process may take it
/// before the server binds it; [`Cluster`] then starts the server again on another port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("cannot bind a loopback port")
        .port()
}

/// One server: its address, data dir, and the process currently running it, if any.
pub struct Server {
    /// The listening and advertised address, `127.0.0.1:PORT`: the server's id.
    pub addr: String,
    data_dir: PathBuf,
    child: Option<Child>,
    /// The stdout and stderr files of the latest process (each start gets new files).
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    starts: usize,
}

/// Set (to anything but `0`) to run every process-cluster test over TLS with mutual TLS
/// between peers: `UNDERSTUDY_TEST_TLS=1 cargo test --test cluster`.
pub const TLS_ENV: &str = "UNDERSTUDY_TEST_TLS";

/// Whether this run's clusters speak TLS.
pub fn tls_mode() -> bool {
    std::env::var(TLS_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The certificates of a TLS cluster: one CA, and one certificate for 127.0.0.1 that every
/// server uses (they all live on that address).
pub struct ClusterTls {
    pub authority: Authority,
    pub files: TlsFiles,
    pub client: Arc<TlsClientConfig>,
}

impl ClusterTls {
    fn new(dir: &Path) -> ClusterTls {
        let authority = Authority::new("understudy test CA").expect("a CA");
        let files = authority
            .write_server_files(&dir.join("tls"), "server", &["127.0.0.1", "localhost"])
            .expect("server certificates");
        let client = understudy::tls::client_config(&files.client_ca).expect("a client config");
        ClusterTls {
            authority,
            files,
            client,
        }
    }
}

/// A cluster of server processes under one temporary directory.
pub struct Cluster {
    dir: TempDir,
    secret_file: PathBuf,
    tls: Option<ClusterTls>,
    servers: Vec<Server>,
    http: HttpClient,
    /// Extra flags for every server.
    server_args: Vec<String>,
}

impl Cluster {
    /// Starts `n` servers: the first bootstraps a new cluster and becomes its primary, each
    /// other one joins through the first. Returns once every server reports the same
    /// members (all `n`), the same primary, and has applied everything it knows committed.
    pub async fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[]).await
    }

    /// [`start`](Self::start) with extra flags for every server (e.g. timings).
    pub async fn start_with(n: usize, server_args: &[&str]) -> Cluster {
        Cluster::start_in_mode(n, server_args, tls_mode()).await
    }

    /// [`start`](Self::start) over TLS, whatever the run's mode.
    pub async fn start_tls(n: usize) -> Cluster {
        Cluster::start_in_mode(n, &[], true).await
    }

    async fn start_in_mode(n: usize, server_args: &[&str], tls: bool) -> Cluster {
        assert!(n >= 1, "a cluster has at least one server");
        let dir = tempfile::Builder::new()
            .prefix("understudy-cluster-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let secret_file = dir.path().join("secret");
        let secret = format!("{:032x}\n", rand::random::<u128>());
        fs::write(&secret_file, secret).expect("cannot write the cluster secret");
        let tls = tls.then(|| ClusterTls::new(dir.path()));
        let mut cluster = Cluster {
            http: HttpClient::with_tls(
                Duration::from_secs(5),
                tls.as_ref().map(|tls| tls.client.clone()),
            ),
            dir,
            secret_file,
            tls,
            servers: Vec::new(),
            server_args: server_args.iter().map(|a| a.to_string()).collect(),
        };
        cluster.spawn_new(None).await;
        for _ in 1..n {
            let first = cluster.servers[0].addr.clone();
            cluster.spawn_new(Some(&first)).await;
        }
        cluster.wait_ready(deadline(READY_TIMEOUT)).await;
        cluster
    }

    /// Starts one more server that joins through `join` (any member). Returns its index
    /// once it answers `/status`; it may still be joining.
    pub async fn add_server(&mut self, join: &str) -> usize {
        self.spawn_new(Some(join)).await
    }

    /// Waits until every running server reports the same primary and the same members (all
    /// servers of this cluster), and has applied all it knows committed.
    pub async fn wait_ready(&self, deadline: Instant) {
        let mut expected: Vec<String> = self.servers.iter().map(|s| s.addr.clone()).collect();
        expected.sort();
        wait_for(
            deadline,
            "the cluster to agree on its members and primary",
            async || {
                let mut primary = None;
                for i in self.running() {
                    let status = self
                        .try_status(i)
                        .await
                        .map_err(|e| format!("server {i}: {e}"))?;
                    let mut members = status.members.clone();
                    members.sort();
                    let agreed = members == expected
                        && status.primary.is_some()
                        && matches!(status.role.as_str(), "primary" | "backup")
                        && status.commit_index == status.applied_index
                        && primary.get_or_insert(status.primary.clone()) == &status.primary;
                    if !agreed {
                        return Err(format!("server {i}: {status:?}"));
                    }
                }
                Ok(())
            },
        )
        .await
    }

    /// The number of servers (running or not).
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// The address (and id) of server `i`.
    pub fn addr(&self, i: usize) -> &str {
        &self.servers[i].addr
    }

    /// The data dir of server `i`.
    pub fn data_dir(&self, i: usize) -> &Path {
        &self.servers[i].data_dir
    }

    /// The temporary directory holding every data dir, output file and the secret.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A client for raw HTTP calls (over TLS in TLS mode).
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// The cluster's certificates, in TLS mode.
    pub fn tls(&self) -> Option<&ClusterTls> {
        self.tls.as_ref()
    }

    /// Options for a client library of this cluster: listening on loopback, retrying for up
    /// to 30 s, over TLS in TLS mode.
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            listen: "127.0.0.1:0".parse().expect("an address"),
            retry_for: Duration::from_secs(30),
            tls: self.tls.as_ref().map(|tls| tls.client.clone()),
            ..ClientOptions::default()
        }
    }

    /// The indexes of the servers whose process is running.
    pub fn running(&self) -> Vec<usize> {
        (0..self.servers.len())
            .filter(|&i| self.servers[i].child.is_some())
            .collect()
    }

    /// What the latest process of server `i` printed on stdout so far.
    pub fn stdout(&self, i: usize) -> String {
        fs::read_to_string(&self.servers[i].stdout_path).unwrap_or_default()
    }

    /// What the latest process of server `i` printed on stderr so far.
    pub fn stderr(&self, i: usize) -> String {
        fs::read_to_string(&self.servers[i].stderr_path).unwrap_or_default()
    }

    /// `GET path` on server `i`, decoded from a 200 answer.
    pub async fn get_json<T: DeserializeOwned>(&self, i: usize, path: &str) -> Result<T, String> {
        let answer = self
            .http
            .get(&self.servers[i].addr, path, &[])
            .await
            .map_err(|err| err.to_string())?;
        if answer.status != 200 {
            return Err(format!(
                "GET {path}: HTTP {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ));
        }
        answer.json().map_err(|err| err.to_string())
    }

    /// `GET /status` of server `i`, or why there is none.
    pub async fn try_status(&self, i: usize) -> Result<StatusResponse, String> {
        self.get_json(i, "/status").await
    }

    /// `GET /status` of server `i`.
    pub async fn status(&self, i: usize) -> StatusResponse {
        self.try_status(i)
            .await
            .unwrap_or_else(|err| panic!("status of server {i}: {err}"))
    }

    /// Every message on server `i`'s board (`GET /messages`, a thousand at a time).
    pub async fn messages(&self, i: usize) -> Vec<MessageInfo> {
        let mut board: Vec<MessageInfo> = Vec::new();
        loop {
            let from = board.last().map_or(1, |m| m.index + 1);
            let page = self
                .get_json::<MessagesResponse>(i, &format!("/messages?from={from}&limit=1000"))
                .await
                .unwrap_or_else(|err| panic!("messages of server {i}: {err}"))
                .messages;
            let full = page.len() == 1000;
            board.extend(page);
            if !full {
                return board;
            }
        }
    }

    /// Every client server `i` knows (`GET /clients`).
    pub async fn clients(&self, i: usize) -> Vec<ClientInfo> {
        self.get_json::<ClientsResponse>(i, "/clients")
            .await
            .unwrap_or_else(|err| panic!("clients of server {i}: {err}"))
            .clients
    }

    /// The index of the server that calls itself primary, once every running server names
    /// the same one.
    pub async fn primary_index(&self) -> usize {
        wait_for(deadline(READY_TIMEOUT), "one agreed primary", async || {
            let mut named = None;
            for i in self.running() {
                let status = self.try_status(i).await?;
                let Some(primary) = status.primary else {
                    return Err(format!("server {i} knows no primary"));
                };
                if named.get_or_insert(primary.clone()) != &primary {
                    return Err(format!("servers name {named:?} and {primary}"));
                }
            }
            let primary = named.ok_or("no server is running")?;
            let i = self
                .servers
                .iter()
                .position(|s| s.addr == primary)
                .ok_or(format!("the primary {primary} is not one of ours"))?;
            match self.try_status(i).await?.role.as_str() {
                "primary" => Ok(i),
                role => Err(format!("{primary} is named primary but is {role}")),
            }
        })
        .await
    }

    /// The indexes of the running servers other than the primary.
    pub async fn backup_indexes(&self) -> Vec<usize> {
        let primary = self.primary_index().await;
        self.running()
            .into_iter()
            .filter(|&i| i != primary)
            .collect()
    }

    /// Waits until every running server has applied at least the primary's commit index as
    /// it is now, and returns that index.
    pub async fn wait_replicated(&self) -> u64 {
        let primary = self.primary_index().await;
        let commit = self.status(primary).await.commit_index;
        wait_for(
            deadline(READY_TIMEOUT),
            "every server to apply the commits",
            async || {
                for i in self.running() {
                    let status = self.try_status(i).await?;
                    if status.applied_index < commit {
                        return Err(format!(
                            "server {i} applied {} of {commit}",
                            status.applied_index
                        ));
                    }
                }
                Ok(())
            },
        )
        .await;
        commit
    }

    /// Sends SIGTERM to server `i` and waits for its process to exit.
    pub async fn terminate(&mut self, i: usize) -> ExitStatus {
        let pid = self
            .pid(i)
            .unwrap_or_else(|| panic!("server {i} is not running"));
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("cannot run kill");
        assert!(sent.success(), "kill -TERM failed for server {i}");
        self.wait_exit(i).await
    }

    /// The file holding the cluster secret.
    pub fn secret_file(&self) -> &Path {
        &self.secret_file
    }

    /// The process id of server `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.servers[i].child.as_ref().map(Child::id)
    }

    /// The addresses of all servers, running or not.
    pub fn addrs(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.addr.clone()).collect()
    }

    /// Waits for server `i` to exit by itself; returns its exit status.
    pub async fn wait_exit(&mut self, i: usize) -> ExitStatus {
        let child = self.servers[i]
            .child
            .as_mut()
            .unwrap_or_else(|| panic!("server {i} is not running"));
        let status = wait_for(
            deadline(READY_TIMEOUT),
            "the server to exit",
            async || match child.try_wait().map_err(|err| err.to_string())? {
                Some(status) => Ok(status),
                None => Err("still running".to_string()),
            },
        )
        .await;
        self.servers[i].child = None;
        status
    }

    /// Kills server `i` at once (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `i` again on its address and data dir, without `--join`. Returns once
    /// it answers `/status`.
    pub async fn restart(&mut self, i: usize) {
        self.relaunch(i, None).await;
    }

    /// Starts server `i` again on its address and data dir with `--join` (as its operator
    /// would, with the command line it was first started with). Returns once it answers.
    pub async fn restart_joining(&mut self, i: usize, join: &str) {
        self.relaunch(i, Some(join)).await;
    }

    async fn relaunch(&mut self, i: usize, join: Option<&str>) {
        assert!(
            self.servers[i].child.is_none(),
            "server {i} is still running"
        );
        // The port was ours until the process exited; retry briefly in case the socket is
        // not free again yet.
        for attempt in 1..=START_ATTEMPTS {
            self.launch(i, join);
            if self.wait_answering(i).await {
                return;
            }
            assert!(
                attempt < START_ATTEMPTS,
                "server {i} did not restart on {}; stderr:\n{}",
                self.servers[i].addr,
                self.stderr(i)
            );
        }
    }

    /// Adds a server on a fresh port and data dir, started with `--join` if given. Picks
    /// another port if the chosen one was taken before the server could bind it.
    async fn spawn_new(&mut self, join: Option<&str>) -> usize {
        let i = self.servers.len();
        let data_dir = self.dir.path().join(format!("s{i}"));
        self.servers.push(Server {
            addr: String::new(),
            data_dir: data_dir.clone(),
            child: None,
            stdout_path: PathBuf::new(),
            stderr_path: PathBuf::new(),
            starts: 0,
        });
        for attempt in 1..=START_ATTEMPTS {
            // A server that failed to bind never touched its data dir; start clean anyway.
            let _ = fs::remove_dir_all(&data_dir);
            self.servers[i].addr = format!("127.0.0.1:{}", free_port());
            self.launch(i, join);
            if self.wait_answering(i).await {
                return i;
            }
            assert!(
                attempt < START_ATTEMPTS,
                "server {i} did not start; stderr:\n{}",
                self.stderr(i)
            );
        }
        unreachable!()
    }

    /// Spawns a process for server `i` with output going to new files.
    fn launch(&mut self, i: usize, join: Option<&str>) {
        let root = self.dir.path().to_path_buf();
        let server = &mut self.servers[i];
        server.starts += 1;
        server.stdout_path = root.join(format!("s{i}.{}.stdout", server.starts));
        server.stderr_path = root.join(format!("s{i}.{}.stderr", server.starts));
        let stdout = File::create(&server.stdout_path).expect("cannot create the stdout file");
        let stderr = File::create(&server.stderr_path).expect("cannot create the stderr file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_understudy"));
        command
            .arg("server")
            .args(["--listen", &server.addr])
            .arg("--data-dir")
            .arg(&server.data_dir)
            .arg("--cluster-secret-file")
            .arg(&self.secret_file);
        if let Some(join) = join {
            command.args(["--join", join]);
        }
        if let Some(tls) = &self.tls {
            command
                .arg("--tls-cert")
                .arg(&tls.files.cert)
                .arg("--tls-key")
                .arg(&tls.files.key)
                .arg("--tls-client-ca")
                .arg(&tls.files.client_ca);
        }
        command.args(&self.server_args);
        let child = command
            .env("RUST_LOG", "debug")
            // Plain logs, readable in a post-mortem and searchable as text.
            .env("NO_COLOR", "1")
            .env_remove("UNDERSTUDY_CLUSTER_SECRET")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("cannot start the understudy binary");
        server.child = Some(child);
    }

    /// Waits until server `i` answers `/status`: true once it does, false if its process
    /// exited first (for example because its port was taken).
    async fn wait_answering(&mut self, i: usize) -> bool {
        let deadline = deadline(READY_TIMEOUT);
        loop {
            let exited = !matches!(
                self.servers[i].child.as_mut().map(Child::try_wait),
                Some(Ok(None))
            );
            if exited {
                self.servers[i].child = None;
                return false;
            }
            if self.try_status(i).await.is_ok() {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "server {i} does not answer /status; stderr:\n{}",
                self.stderr(i)
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// POSTs `body` as JSON to server `i`, with an optional bearer token.
    pub async fn post(
        &self,
        i: usize,
        path: &str,
        token: Option<&str>,
        body: &serde_json::Value,
    ) -> HttpResponse {
        let headers: Vec<(&str, String)> = token
            .map(|token| vec![("authorization", format!("Bearer {token}"))])
            .unwrap_or_default();
        self.http
            .post_json(&self.servers[i].addr, path, &headers, body)
            .await
            .unwrap_or_else(|err| panic!("POST {path} to server {i}: {err}"))
    }
}

impl Drop for Cluster {
    /// Kills every server. A failing test keeps the directory, logs and data dirs included,
    /// for a post-mortem, and names it on stderr.
    fn drop(&mut self) {
        for server in &mut self.servers {
            if let Some(mut child) = server.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "the cluster's data dirs and server output are kept in {}",
                self.dir.path().display()
            );
        }
    }
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).expect("cannot list a directory") {
            let path = entry.expect("cannot read a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.is_file() {
                files.push(path);
            }
        }
    }
    files
}

/// Whether `needle` occurs in `haystack`.
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

/// A client of `cluster` (listening on loopback, retrying for up to 30 s), registered and
/// logged in as `user` with the password `<user>-password`.
pub async fn logged_in_client(cluster: &Cluster, user: &str) -> Client {
    let client = Client::connect(cluster.addrs(), cluster.client_options())
        .await
        .expect("client/init");
    let password = format!("{user}-password");
    client.register(user, &password).await.expect("register");
    client.login(user, &password).await.expect("login");
    client
}
