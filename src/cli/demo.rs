//! `understudy demo`: a local cluster of three servers and a client, showing replication
//! and a failover from start to end, then cleaning up after itself.
//!
//! The servers are real processes (this same binary, `server` subcommand) on free loopback
//! ports in a temporary directory; their stdout, where each prints the messages it applies,
//! is shown as it arrives, prefixed with `|`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use tokio::sync::mpsc;

use super::local_cluster::{LocalCluster, hex_token};
use understudy::client::{Client, ClientOptions};

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Messages to send before and after the failover.
    #[arg(long, default_value_t = 5)]
    messages: usize,
    /// Skip the failover part.
    #[arg(long)]
    no_failover: bool,
    /// Keep the cluster running after the script, until Ctrl-C, so you can watch the
    /// dashboard and kill servers yourself; the temporary directory (data dirs and server
    /// logs) is kept too.
    #[arg(long)]
    keep: bool,
    /// Run everything over TLS: a throw-away CA and certificates are made for the demo,
    /// the servers use mutual TLS between them and the client speaks HTTPS.
    #[arg(long)]
    tls: bool,
}

const SERVERS: usize = 3;
/// Every wait of the demo gives up after this long.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

pub async fn run(args: DemoArgs) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("understudy-demo-")
        .tempdir()?;
    println!("understudy demo: {SERVERS} servers on loopback, one client, a failover");
    println!("  (data and server logs in {})", dir.path().display());
    let (lines_tx, lines) = mpsc::unbounded_channel();
    let mut cluster = LocalCluster::new(dir.path(), SERVERS, Vec::new(), Some(lines_tx))?;
    if args.tls {
        let ca = cluster.enable_tls()?;
        println!(
            "  TLS on: a throw-away CA ({}) signed one certificate for 127.0.0.1;",
            ca.display()
        );
        println!("  the servers require it of each other (mutual TLS), the client trusts the CA");
    }
    let mut demo = Demo {
        cluster,
        lines,
        printed: BTreeMap::new(),
    };
    let result = demo.script(&args).await;
    if args.keep && result.is_ok() {
        println!(
            "\n== the cluster stays up: watch it at {}://{}/ (every server has the dashboard);\n   kill servers and see the failover there; Ctrl-C to stop",
            demo.cluster.scheme(),
            demo.cluster.addrs()[0]
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    demo.cluster.stop_all().await;
    match &result {
        Ok(()) => println!("\n== done: all servers stopped"),
        Err(err) => println!("\n== demo failed: {err:#}"),
    }
    if args.keep {
        println!("kept {}", dir.keep().display());
    }
    result
}

struct Demo {
    cluster: LocalCluster,
    /// Lines the servers print on stdout, as (server number, line).
    lines: mpsc::UnboundedReceiver<(usize, String)>,
    /// How many message lines each server has printed in its current process.
    printed: BTreeMap<usize, usize>,
}

impl Demo {
    async fn script(&mut self, args: &DemoArgs) -> Result<()> {
        println!("\n== starting the servers");
        let addrs = self.cluster.addrs();
        println!("  server 1  {}  starts a new cluster", addrs[0]);
        for (i, addr) in addrs.iter().enumerate().skip(1) {
            println!("  server {}  {addr}  joins through {}", i + 1, addrs[0]);
        }
        self.cluster.start_all(WAIT_LIMIT).await?;
        let primary = self.cluster.primary().await?;
        println!("  cluster ready: primary {primary}, members {addrs:?}");
        println!(
            "  live dashboard: {}://{}/ (on every server; --keep leaves the cluster up to watch it)",
            self.cluster.scheme(),
            addrs[0]
        );

        println!("\n== a client introduces itself, registers and logs in");
        let options = ClientOptions {
            listen: "127.0.0.1:0".parse()?,
            tls: self.cluster.client_tls(),
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

        let n = args.messages;
        println!("\n== alice sends {n} messages; every server prints each one");
        self.send_batch(&client, n, "before").await?;
        self.wait_printed(n, &[0, 1, 2]).await?;
        println!("  every server printed all {n} messages");

        if args.no_failover {
            return self.show_status().await;
        }

        let old = self
            .cluster
            .position(&primary)
            .ok_or_else(|| anyhow!("primary {primary} is not one of ours"))?;
        println!("\n== failover: killing the primary {primary} (SIGKILL)");
        let killed_at = Instant::now();
        self.cluster.kill(old).await?;
        let statuses = self
            .cluster
            .wait_for("a new primary", WAIT_LIMIT, |s| {
                s.iter().any(|s| s.role == "primary" && s.id != primary)
            })
            .await?;
        let new = statuses
            .iter()
            .find(|s| s.role == "primary")
            .ok_or_else(|| anyhow!("no primary"))?;
        println!(
            "  the backups stopped hearing heartbeats and elected {} in term {} ({} ms after the kill)",
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
        self.send_batch(&client, n, "after").await?;
        self.wait_printed(2 * n, &survivors).await?;
        println!("  both remaining servers printed all {} messages", 2 * n);

        println!(
            "\n== restarting {primary} on its data dir: it resumes from its store and catches up"
        );
        self.printed.insert(old, 0);
        self.cluster.spawn(old, None)?;
        self.cluster
            .wait_for("the old primary to catch up", WAIT_LIMIT, |s| {
                let commit = s.iter().map(|s| s.commit_index).max().unwrap_or(0);
                s.iter()
                    .all(|s| s.applied_index == commit && s.messages as usize == 2 * n)
            })
            .await?;
        // Its store held what it had flushed before the kill; it applies (and prints) the
        // rest again from the log and from the primary.
        self.wait_printed(n, &[old]).await?;
        let printed = self.printed.get(&old).copied().unwrap_or(0);
        println!(
            "  {primary} is a backup again with all {} messages (it applied and printed the \
             {printed} its store did not hold yet)",
            2 * n
        );
        self.show_status().await
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

    fn record(&mut self, i: usize, line: String) {
        *self.printed.entry(i).or_default() += 1;
        println!("      | server {}: {line}", i + 1);
    }

    /// Prints the server lines received so far.
    fn show_lines(&mut self) {
        while let Ok((i, line)) = self.lines.try_recv() {
            self.record(i, line);
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
            if let Ok(Some((i, line))) = tokio::time::timeout(left, self.lines.recv()).await {
                self.record(i, line);
            }
        }
    }

    async fn show_status(&mut self) -> Result<()> {
        self.show_lines();
        println!("\n== the cluster now (GET /status on each server)");
        println!(
            "  {:<22} {:<8} {:>4} {:>7} {:>8} {:>8}",
            "server", "role", "term", "commit", "clients", "messages"
        );
        for status in self.cluster.statuses().await {
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
