//! A cluster of real server processes on loopback, for `demo` and `bench`: this same binary
//! run as `server` on free ports, with data dirs and logs in one directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use understudy::api::StatusResponse;
use understudy::client::HttpClient;
use understudy::tls::dev::Authority;
use understudy::tls::{self, TlsClientConfig};

/// One server of the cluster.
pub struct LocalServer {
    pub addr: String,
    pub data_dir: PathBuf,
    child: Option<Child>,
    /// Frozen with SIGSTOP: running, but not answering.
    paused: bool,
}

impl LocalServer {
    /// Server number `i` (from 0) on `port`, with its data dir in `dir`; not started.
    fn new(dir: &Path, i: usize, port: u16) -> LocalServer {
        LocalServer {
            addr: format!("127.0.0.1:{port}"),
            data_dir: dir.join(format!("server{}", i + 1)),
            child: None,
            paused: false,
        }
    }

    /// Started, not exited, and not frozen.
    pub fn is_running(&self) -> bool {
        self.child.is_some() && !self.paused
    }

    /// The process id while running, for reading the process's figures from `/proc`.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }
}

pub struct LocalCluster {
    dir: PathBuf,
    secret: PathBuf,
    exe: PathBuf,
    pub servers: Vec<LocalServer>,
    /// Extra flags for every server (timings).
    server_args: Vec<String>,
    http: HttpClient,
    /// Under TLS: what clients of this cluster trust.
    client_tls: Option<Arc<TlsClientConfig>>,
    /// Where the servers' stdout lines go, as (server number, line); `None` discards them.
    lines: Option<mpsc::UnboundedSender<(usize, String)>>,
}

impl LocalCluster {
    /// `size` servers (not started) with data in `dir`.
    pub fn new(
        dir: &Path,
        size: usize,
        server_args: Vec<String>,
        lines: Option<mpsc::UnboundedSender<(usize, String)>>,
    ) -> Result<LocalCluster> {
        let secret = dir.join("cluster-secret");
        std::fs::write(&secret, format!("local-{}\n", hex_token()))?;
        let servers = free_ports(size)?
            .into_iter()
            .enumerate()
            .map(|(i, port)| LocalServer::new(dir, i, port))
            .collect();
        Ok(LocalCluster {
            dir: dir.to_path_buf(),
            secret,
            exe: std::env::current_exe().context("cannot find this binary")?,
            servers,
            server_args,
            http: HttpClient::with_timeout(Duration::from_secs(1)),
            client_tls: None,
            lines,
        })
    }

    /// Makes the servers speak TLS, with mutual TLS between them: a throw-away CA and one
    /// certificate for 127.0.0.1 that every server uses, written to `tls/` in the cluster's
    /// directory. Call before starting any server.
    pub fn enable_tls(&mut self) -> Result<PathBuf> {
        let authority = Authority::new("understudy local CA")?;
        let files = authority.write_server_files(
            &self.dir.join("tls"),
            "server",
            &["127.0.0.1", "localhost"],
        )?;
        for (flag, path) in [
            ("--tls-cert", &files.cert),
            ("--tls-key", &files.key),
            ("--tls-client-ca", &files.client_ca),
        ] {
            self.server_args.push(flag.to_string());
            self.server_args.push(path.display().to_string());
        }
        let client = tls::client_config(&files.client_ca)?;
        self.http = HttpClient::with_tls(Duration::from_secs(1), Some(client.clone()));
        self.client_tls = Some(client);
        Ok(files.client_ca)
    }

    /// What a client of this cluster needs for TLS (none for plain HTTP).
    pub fn client_tls(&self) -> Option<Arc<TlsClientConfig>> {
        self.client_tls.clone()
    }

    /// `https` or `http`, for addresses shown to people.
    pub fn scheme(&self) -> &'static str {
        if self.client_tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    pub fn addrs(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.addr.clone()).collect()
    }

    /// Makes room for one more server (not started; `spawn` it with a `join`), and returns
    /// its index. Its data dir is new, so it starts empty.
    pub fn add_server(&mut self) -> Result<usize> {
        let port = free_ports(1)?[0];
        let i = self.servers.len();
        self.servers.push(LocalServer::new(&self.dir, i, port));
        Ok(i)
    }

    /// Starts server 0 as a new cluster, then the others joining it; returns when every
    /// server is a member.
    pub async fn start_all(&mut self, limit: Duration) -> Result<()> {
        self.spawn(0, None)?;
        self.wait_for("the first server to become primary", limit, |s| {
            s.first().is_some_and(|s| s.role == "primary")
        })
        .await?;
        let first = self.servers[0].addr.clone();
        for i in 1..self.servers.len() {
            self.spawn(i, Some(&first))?;
        }
        let size = self.servers.len();
        self.wait_for("every server to be a member", limit, |s| {
            s.iter()
                .all(|s| s.members.len() == size && s.role != "joining")
        })
        .await?;
        Ok(())
    }

    /// Starts server `i` (joining `join`, if given; a restart on its data dir needs none).
    pub fn spawn(&mut self, i: usize, join: Option<&str>) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("server{}.log", i + 1)))?;
        let server = &mut self.servers[i];
        let mut command = Command::new(&self.exe);
        command
            .arg("server")
            .args(["--listen", &server.addr])
            .arg("--data-dir")
            .arg(&server.data_dir)
            .arg("--cluster-secret-file")
            .arg(&self.secret)
            .args(&self.server_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        command.stdout(if self.lines.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        if let Some(join) = join {
            command.args(["--join", join]);
        }
        let mut child = command.spawn().context("cannot start a server")?;
        if let (Some(lines), Some(stdout)) = (self.lines.clone(), child.stdout.take()) {
            tokio::spawn(async move {
                let mut reader = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    if lines.send((i, line)).is_err() {
                        break;
                    }
                }
            });
        }
        server.child = Some(child);
        Ok(())
    }

    /// Kills server `i` with SIGKILL, like a crash.
    pub async fn kill(&mut self, i: usize) -> Result<()> {
        if let Some(mut child) = self.servers[i].child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Stops server `i` with SIGTERM (a primary hands over first) and waits for it to exit.
    pub async fn terminate(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].child.take() {
            terminate(&mut child).await;
        }
    }

    /// Freezes server `i` with SIGSTOP, like a process that stalls.
    pub fn pause(&mut self, i: usize) -> Result<()> {
        self.signal(i, nix::sys::signal::Signal::SIGSTOP)?;
        self.servers[i].paused = true;
        Ok(())
    }

    /// Thaws server `i` with SIGCONT.
    pub fn resume(&mut self, i: usize) -> Result<()> {
        self.signal(i, nix::sys::signal::Signal::SIGCONT)?;
        self.servers[i].paused = false;
        Ok(())
    }

    /// Copies every server's log into `dir`.
    pub fn save_logs(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        for i in 0..self.servers.len() {
            let name = format!("server{}.log", i + 1);
            std::fs::copy(self.dir.join(&name), dir.join(&name))?;
        }
        Ok(())
    }

    fn signal(&self, i: usize, signal: nix::sys::signal::Signal) -> Result<()> {
        let pid = self.servers[i]
            .pid()
            .and_then(|pid| i32::try_from(pid).ok())
            .ok_or_else(|| anyhow!("server {} is not running", i + 1))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)?;
        Ok(())
    }

    /// Stops every server with SIGTERM (a clean shutdown), killing any that hang.
    pub async fn stop_all(&mut self) {
        for server in &mut self.servers {
            if let Some(mut child) = server.child.take() {
                terminate(&mut child).await;
            }
        }
    }

    /// The index of the server with this address.
    pub fn position(&self, addr: &str) -> Option<usize> {
        self.servers.iter().position(|s| s.addr == addr)
    }

    /// The `/status` of every running server that answers.
    pub async fn statuses(&self) -> Vec<StatusResponse> {
        let mut statuses = Vec::new();
        for i in (0..self.servers.len()).filter(|&i| self.servers[i].is_running()) {
            if let Some(status) = self.status(i).await {
                statuses.push(status);
            }
        }
        statuses
    }

    /// The `/status` of server `i`, if it answers.
    pub async fn status(&self, i: usize) -> Option<StatusResponse> {
        let response = self
            .http
            .get(&self.servers[i].addr, "/status", &[])
            .await
            .ok()?;
        response.json::<StatusResponse>().ok()
    }

    /// Polls `/status` of the running servers until all answer and `done` holds.
    pub async fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&[StatusResponse]) -> bool,
    ) -> Result<Vec<StatusResponse>> {
        let deadline = Instant::now() + limit;
        loop {
            let statuses = self.statuses().await;
            let running = self.servers.iter().filter(|s| s.is_running()).count();
            if statuses.len() == running && done(&statuses) {
                return Ok(statuses);
            }
            if Instant::now() >= deadline {
                bail!("timed out waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The current primary among the running servers, if exactly one claims the highest term.
    pub async fn primary(&self) -> Result<String> {
        let statuses = self.statuses().await;
        statuses
            .iter()
            .filter(|s| s.role == "primary")
            .max_by_key(|s| s.term)
            .map(|s| s.id.clone())
            .ok_or_else(|| anyhow!("no primary"))
    }
}

/// Stops a server with SIGTERM, or kills it if it does not exit within 5 s.
async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}

/// `count` distinct free loopback ports (held together while chosen, so they differ).
fn free_ports(count: usize) -> Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// 64 random bits, hex.
pub fn hex_token() -> String {
    let bytes: [u8; 8] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
