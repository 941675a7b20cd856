//! `understudy demo`: a local cluster of three servers and a client, showing replication
//! and a failover from start to end, then cleaning up after itself.
//!
//! The servers are real processes (this same binary, `server` subcommand) on free loopback
//! ports in a temporary directory; their stdout, where each prints the messages it applies,
//! is shown as it arrives, prefixed with `|`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use understudy::api::StatusResponse;
use understudy::client::{Client, ClientOptions, HttpClient};

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Messages to send before and after the failover.
    #[arg(long, default_value_t = 5)]
    messages: usize,
    /// Skip the failover part.
    #[arg(long)]
    no_failover: bool,
    /// Keep the temporary directory (data dirs and server logs) instead of removing it.
    #[arg(long)]
    keep: bool,
}

const SERVERS: usize = 3;
/// Every wait of the demo gives up after this long.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// One server process and what it printed.
struct Server {
    addr: String,
    data_dir: PathBuf,
    child: Option<Child>,
}

pub async fn run(args: DemoArgs) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("understudy-demo-")
        .tempdir()?;
    println!("understudy demo: {SERVERS} servers on loopback, one client, a failover");
    println!("  (data and server logs in {})", dir.path().display());
    let result = Demo::new(dir.path()).await?.run(&args).await;
    if args.keep {
        let kept = dir.keep();
        println!("kept {}", kept.display());
    }
    result
}

struct Demo {
    dir: PathBuf,
    secret: PathBuf,
    exe: PathBuf,
    servers: Vec<Server>,
    http: HttpClient,
    /// Lines the servers print on stdout, as (server number, line).
    lines_tx: mpsc::UnboundedSender<(usize, String)>,
    lines_rx: mpsc::UnboundedReceiver<(usize, String)>,
    /// How many message lines each server has printed.
    printed: BTreeMap<usize, usize>,
}

impl Demo {
    async fn new(dir: &Path) -> Result<Demo> {
        let secret = dir.join("cluster-secret");
        std::fs::write(&secret, format!("demo-{}\n", hex_token()))?;
        let ports = free_ports(SERVERS)?;
        let servers = ports
            .iter()
            .enumerate()
            .map(|(i, port)| Server {
                addr: format!("127.0.0.1:{port}"),
                data_dir: dir.join(format!("server{}", i + 1)),
                child: None,
            })
            .collect();
        let (lines_tx, lines_rx) = mpsc::unbounded_channel();
        Ok(Demo {
            dir: dir.to_path_buf(),
            secret,
            exe: std::env::current_exe().context("cannot find this binary")?,
            servers,
            http: HttpClient::with_timeout(Duration::from_secs(1)),
            lines_tx,
            lines_rx,
            printed: BTreeMap::new(),
        })
    }

    async fn run(mut self, args: &DemoArgs) -> Result<()> {
        let result = self.script(args).await;
        for server in &mut self.servers {
            if let Some(child) = server.child.as_mut() {
                terminate(child).await;
            }
        }
        match &result {
            Ok(()) => println!("\n== done: all servers stopped"),
            Err(err) => println!("\n== demo failed: {err:#}"),
        }
        result
    }

    async fn script(&mut self, args: &DemoArgs) -> Result<()> {
        println!("\n== starting the servers");
        let first = self.servers[0].addr.clone();
        self.spawn(0, None)?;
        println!("  server 1  {first}  starts a new cluster");
        self.wait_for("server 1 to become primary", |s| {
            s.first().is_some_and(|s| s.role == "primary")
        })
        .await?;
        for i in 1..SERVERS {
            self.spawn(i, Some(&first))?;
            println!(
                "  server {}  {}  joins through {first}",
                i + 1,
                self.servers[i].addr
            );
        }
        let statuses = self
            .wait_for("all servers to be members", |s| {
                s.iter()
                    .all(|s| s.members.len() == SERVERS && s.role != "joining")
            })
            .await?;
        let primary = statuses
            .iter()
            .find(|s| s.role == "primary")
            .map(|s| s.id.clone())
            .ok_or_else(|| anyhow!("no primary"))?;
        println!(
            "  cluster ready: primary {primary}, members {:?}",
            statuses[0].members
        );

        println!("\n== a client introduces itself, registers and logs in");
        let addrs: Vec<String> = self.servers.iter().map(|s| s.addr.clone()).collect();
        let options = ClientOptions {
            listen: "127.0.0.1:0".parse()?,
            ..ClientOptions::default()
        };
        let client = Client::connect(addrs.clone(), options).await?;
        let notifications = client.notifications();
        println!(
            "  client {} listens for /new-primary on port {}",
            client.client_id().unwrap_or("?"),
            client.listener().map_or(0, |l| l.port())
        );
        let password = format!("pw-{}", hex_token());
        client.register("alice", &password).await?;
        client.login("alice", &password).await?;
        println!("  registered and logged in as alice (the password is hashed on the primary)");

        println!(
            "\n== alice sends {} messages; every server prints each one",
            args.messages
        );
        self.send_batch(&client, args.messages, "before").await?;
        self.wait_printed(args.messages, &[0, 1, 2]).await?;
        println!("  every server printed all {} messages", args.messages);

        if args.no_failover {
            return self.show_status().await;
        }

        let old = self
            .servers
            .iter()
            .position(|s| s.addr == primary)
            .ok_or_else(|| anyhow!("primary {primary} is not one of ours"))?;
        println!("\n== failover: killing the primary {primary} (SIGKILL)");
        let killed_at = Instant::now();
        if let Some(child) = self.servers[old].child.as_mut() {
            child.kill().await?;
        }
        self.servers[old].child = None;
        let statuses = self
            .wait_for("a new primary", |s| {
                s.iter().any(|s| s.role == "primary" && s.id != primary)
            })
            .await?;
        let new = statuses
            .iter()
            .find(|s| s.role == "primary")
            .ok_or_else(|| anyhow!("no primary"))?;
        println!(
            "  backups stopped hearing heartbeats and elected {} in term {} ({} ms after the kill)",
            new.id,
            new.term,
            killed_at.elapsed().as_millis()
        );
        if let Some(mut rx) = notifications {
            let told = tokio::time::timeout(
                WAIT_LIMIT,
                rx.wait_for(|n| n.as_ref().is_some_and(|n| n.primary != primary)),
            )
            .await;
            match told {
                Ok(Ok(notice)) => {
                    if let Some(notice) = notice.as_ref() {
                        println!(
                            "  the new primary told the client: POST /new-primary {{primary: {}, term: {}}}",
                            notice.primary, notice.term
                        );
                    }
                }
                _ => println!("  the client was not notified; it finds the primary by redirects"),
            }
        }

        println!("\n== alice keeps sending, still logged in, now to the new primary");
        let survivors: Vec<usize> = (0..SERVERS).filter(|&i| i != old).collect();
        self.send_batch(&client, args.messages, "after").await?;
        self.wait_printed(2 * args.messages, &survivors).await?;
        println!(
            "  both remaining servers printed all {} messages",
            2 * args.messages
        );

        println!(
            "\n== restarting {primary} on its data dir: it rejoins as a backup and catches up"
        );
        self.printed.insert(old, 0);
        self.spawn(old, None)?;
        self.wait_for("the old primary to catch up", |s| {
            let commit = s.iter().map(|s| s.commit_index).max().unwrap_or(0);
            s.iter()
                .all(|s| s.applied_index == commit && s.messages as usize == 2 * args.messages)
        })
        .await?;
        self.wait_printed(2 * args.messages, &[old]).await?;
        println!(
            "  {primary} is a backup again with all {} messages",
            2 * args.messages
        );
        self.show_status().await
    }

    /// Starts server `i` (joining `join`, if given) and forwards its stdout lines.
    fn spawn(&mut self, i: usize, join: Option<&str>) -> Result<()> {
        let server = &mut self.servers[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("server{}.log", i + 1)))?;
        let mut command = Command::new(&self.exe);
        command
            .arg("server")
            .args(["--listen", &server.addr])
            .arg("--data-dir")
            .arg(&server.data_dir)
            .arg("--cluster-secret-file")
            .arg(&self.secret)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        if let Some(join) = join {
            command.args(["--join", join]);
        }
        let mut child = command.spawn().context("cannot start a server")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let lines = self.lines_tx.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if lines.send((i, line)).is_err() {
                    break;
                }
            }
        });
        server.child = Some(child);
        Ok(())
    }

    async fn send_batch(&mut self, client: &Client, count: usize, phase: &str) -> Result<()> {
        for n in 1..=count {
            let text = format!("hello {n} ({phase} the failover)");
            let index = client.send(&text).await?;
            println!(
                "  alice sent #{index}: {text:?}   (primary {})",
                client.primary().unwrap_or_default()
            );
            self.show_lines();
        }
        Ok(())
    }

    /// Prints the server lines received so far.
    fn show_lines(&mut self) {
        while let Ok((i, line)) = self.lines_rx.try_recv() {
            *self.printed.entry(i).or_default() += 1;
            println!("      | server {}: {line}", i + 1);
        }
    }

    /// Waits until each of `servers` printed `count` message lines in its current process.
    async fn wait_printed(&mut self, count: usize, servers: &[usize]) -> Result<()> {
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            self.show_lines();
            if servers
                .iter()
                .all(|i| self.printed.get(i).copied().unwrap_or(0) >= count)
            {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("servers did not print all {count} messages in time");
            }
            if let Ok(Some((i, line))) = tokio::time::timeout(left, self.lines_rx.recv()).await {
                *self.printed.entry(i).or_default() += 1;
                println!("      | server {}: {line}", i + 1);
            }
        }
    }

    /// Polls the running servers' `/status` until `done` holds for them.
    async fn wait_for(
        &mut self,
        what: &str,
        done: impl Fn(&[StatusResponse]) -> bool,
    ) -> Result<Vec<StatusResponse>> {
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            self.show_lines();
            let statuses = self.statuses().await;
            if statuses.len() == self.running() && done(&statuses) {
                return Ok(statuses);
            }
            if Instant::now() >= deadline {
                bail!("timed out waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn running(&self) -> usize {
        self.servers.iter().filter(|s| s.child.is_some()).count()
    }

    /// The `/status` of every running server that answers.
    async fn statuses(&self) -> Vec<StatusResponse> {
        let mut statuses = Vec::new();
        for server in self.servers.iter().filter(|s| s.child.is_some()) {
            if let Ok(response) = self.http.get(&server.addr, "/status", &[]).await
                && let Ok(status) = response.json::<StatusResponse>()
            {
                statuses.push(status);
            }
        }
        statuses
    }

    async fn show_status(&mut self) -> Result<()> {
        println!("\n== the cluster now (GET /status on each server)");
        println!(
            "  {:<22} {:<8} {:>4} {:>7} {:>8} {:>8}",
            "server", "role", "term", "commit", "clients", "messages"
        );
        for status in self.statuses().await {
            println!(
                "  {:<22} {:<8} {:>4} {:>7} {:>8} {:>8}",
                status.id,
                status.role,
                status.term,
                status.commit_index,
                status.clients,
                status.messages
            );
        }
        Ok(())
    }
}

/// Stops a server with SIGTERM (a clean shutdown), or kills it if it does not exit.
async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
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

fn hex_token() -> String {
    let bytes: [u8; 8] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
