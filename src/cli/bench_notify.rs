//! `understudy bench notify`: how fast a new primary tells many clients. Registers
//! `--clients` notification listeners (`client/init`, each with its own port), kills the
//! primary with SIGKILL, and reports when 50 %, 99 % and 100 % of the listeners had received
//! the new primary's `POST /new-primary`, counted from the kill and from the election.
//!
//! The listeners are minimal (one task each, a bare HTTP/1.1 answer) rather than whole
//! `Client`s, so that ten thousand of them fit in one process's file descriptors: what is
//! measured is the primary's side, which is the same whoever listens.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};

use super::bench::{ClusterArgs, WAIT_LIMIT, ms, start_cluster};
use understudy::api::{InitRequest, InitResponse, NewPrimary};
use understudy::client::HttpClient;

#[derive(clap::Args, Debug)]
pub(super) struct NotifyArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Registered clients, each with a listener.
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
}

/// Registrations in flight at once.
const PARALLEL_INITS: usize = 64;

pub(super) async fn run(args: NotifyArgs) -> Result<()> {
    let (_dir, mut cluster) = start_cluster(&args.cluster).await?;
    if cluster.servers.len() < 3 {
        bail!("a failover needs at least 3 servers");
    }
    let (heard_tx, mut heard) = mpsc::unbounded_channel::<(Instant, String)>();
    let mut ports = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        ports.push(listener.local_addr()?.port());
        tokio::spawn(listen(listener, heard_tx.clone()));
    }
    drop(heard_tx);

    let primary = cluster.primary().await?;
    let http = HttpClient::with_tls(Duration::from_secs(10), cluster.client_tls());
    let slots = Arc::new(Semaphore::new(PARALLEL_INITS));
    let started = Instant::now();
    let inits = ports.iter().map(|&port| {
        let (http, slots, primary) = (http.clone(), slots.clone(), primary.clone());
        async move {
            let _slot = slots.acquire_owned().await?;
            let body = serde_json::to_vec(&InitRequest { port: port.into() })?;
            let response = http
                .request(
                    hyper::Method::POST,
                    &primary,
                    "/client/init",
                    &[("content-type", "application/json".to_string())],
                    Some(body.into()),
                )
                .await?;
            response.into_result::<InitResponse>()?;
            anyhow::Ok(())
        }
    });
    for result in join_all(inits).await {
        result.context("client/init")?;
    }
    println!(
        "bench notify: {} servers, {} registered listeners (registered in {:.1} s)",
        cluster.servers.len(),
        args.clients,
        started.elapsed().as_secs_f64()
    );

    let old = cluster
        .position(&primary)
        .ok_or_else(|| anyhow!("unknown primary"))?;
    let killed = Instant::now();
    cluster.kill(old).await?;
    cluster
        .wait_for("a new primary", WAIT_LIMIT, |s| {
            s.iter().any(|s| s.role == "primary" && s.id != primary)
        })
        .await?;
    let elected = killed.elapsed();

    let mut times = Vec::with_capacity(args.clients);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while times.len() < args.clients {
        match tokio::time::timeout_at(deadline, heard.recv()).await {
            Ok(Some((at, new))) if new != primary => times.push(at - killed),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    times.sort();
    cluster.stop_all().await;
    if let Some(dir) = &args.cluster.logs {
        cluster.save_logs(dir)?;
    }
    println!(
        "kill to election (seen by polling /status): {:.1} ms",
        ms(elected)
    );
    println!(
        "{} of {} listeners told within 30 s",
        times.len(),
        args.clients
    );
    for (label, share) in [("50 %", 0.50), ("99 %", 0.99), ("100 %", 1.0)] {
        let needed = ((args.clients as f64) * share).ceil() as usize;
        match times.get(needed.saturating_sub(1)) {
            Some(at) => println!(
                "{label:>6} told: {:>8.1} ms after the kill, {:>8.1} ms after the election",
                ms(*at),
                ms(at.saturating_sub(elected))
            ),
            None => println!("{label:>6} told: not reached"),
        }
    }
    Ok(())
}

/// One client's notification listener: answers every `POST /new-primary` with 200 and
/// reports the primary it names.
async fn listen(listener: TcpListener, heard: mpsc::UnboundedSender<(Instant, String)>) {
    // Bounded: a listener takes at most a few notifications in a run.
    for _ in 0..64 {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let mut buffer = Vec::with_capacity(512);
        let mut chunk = [0u8; 512];
        let body = loop {
            let Ok(n) = stream.read(&mut chunk).await else {
                break None;
            };
            if n == 0 {
                break None;
            }
            buffer.extend_from_slice(&chunk[..n]);
            if let Some(end) = find(&buffer, b"\r\n\r\n") {
                let length = content_length(&buffer[..end]).unwrap_or(0);
                if buffer.len() >= end + 4 + length {
                    break Some(buffer[end + 4..end + 4 + length].to_vec());
                }
            }
        };
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
        if let Some(notice) = body.and_then(|b| serde_json::from_slice::<NewPrimary>(&b).ok())
            && heard.send((Instant::now(), notice.primary)).is_err()
        {
            return;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn content_length(head: &[u8]) -> Option<usize> {
    let head = std::str::from_utf8(head).ok()?;
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}
