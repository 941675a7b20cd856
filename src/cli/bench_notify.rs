//! `understudy bench notify`: how fast a new primary tells many clients. Registers
//! `--clients` notification listeners (`client/init`, each with its own port), kills the
//! primary with SIGKILL, and reports when 1 %, 50 %, 99 % and 100 % of the listeners had
//! received the new primary's `POST /new-primary`, counted from the kill and from the
//! election. The election's moment is the new primary's own (`primary_since_ms` in its
//! `/status`, on the same clock), not when polling first saw it: a primary busy telling
//! thousands of clients answers a poll late.
//!
//! The listeners are minimal (one task each, a bare HTTP/1.1 answer) rather than whole
//! `Client`s, so that ten thousand of them fit in one process's file descriptors. They stand
//! in for clients on other machines, so they run on one thread of their own: on a small
//! machine they would otherwise take the servers' cores as well, and their runtime's
//! cross-thread wake-ups are not the primary's cost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::bench::{ClusterArgs, WAIT_LIMIT, millis, ms, start_cluster};
use super::bench_proc::{process_cpu, thread_cpu};
use understudy::api::{InitRequest, InitResponse, NewPrimary};
use understudy::client::HttpClient;
use understudy::server::unix_millis;

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
    let heard = Arc::new(Heard::new(args.clients));
    let listeners = Listeners::start(args.clients, heard.clone())?;
    let ports = listeners.ports.clone();

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
    heard.count_from_others_than(&primary);
    // The machine's speed at this work, now: its figures vary from day to day.
    let floor = bare_exchange_cpu(FLOOR_EXCHANGES)?;
    let cpu_before: Vec<Option<Duration>> = (0..cluster.servers.len())
        .map(|i| cluster.servers[i].pid().and_then(process_cpu))
        .collect();
    let listeners_before = listeners.cpu();
    let killed = Instant::now();
    let killed_unix_ms = unix_millis();
    cluster.kill(old).await?;
    let statuses = cluster
        .wait_for("a new primary", WAIT_LIMIT, |s| {
            s.iter().any(|s| s.role == "primary" && s.id != primary)
        })
        .await?;
    let seen = killed.elapsed();
    let new_primary = statuses
        .iter()
        .find(|s| s.role == "primary" && s.id != primary)
        .and_then(|s| cluster.position(&s.id))
        .ok_or_else(|| anyhow!("the new primary is not a member"))?;

    let _ = tokio::time::timeout(Duration::from_secs(30), heard.all.notified()).await;
    let listeners_cpu = used(listeners_before, listeners.cpu());
    let served = listeners.served;
    let primary_cpu = used(
        cpu_before[new_primary],
        cluster.servers[new_primary].pid().and_then(process_cpu),
    );
    let mut times: Vec<Duration> = heard.times().iter().map(|at| *at - killed).collect();
    times.sort();
    let since = cluster
        .status(new_primary)
        .await
        .and_then(|s| s.primary_since_ms)
        .ok_or_else(|| anyhow!("the new primary does not say since when it is one"))?;
    let elected = Duration::from_millis(since.saturating_sub(killed_unix_ms));
    listeners.stop();
    cluster.stop_all().await;
    if let Some(dir) = &args.cluster.logs {
        cluster.save_logs(dir)?;
    }
    println!(
        "kill to election: {:.0} ms (by the new primary's clock; polling /status saw it after {:.1} ms)",
        ms(elected),
        ms(seen)
    );
    println!(
        "{} of {} listeners told within 30 s",
        times.len(),
        args.clients
    );
    for (label, share) in [
        ("1 %", 0.01),
        ("50 %", 0.50),
        ("99 %", 0.99),
        ("100 %", 1.0),
    ] {
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
    println!(
        "CPU time from the kill until all were told: new primary {} ms, listeners {} ms (served through {})",
        millis(primary_cpu),
        millis(listeners_cpu),
        served
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "a bare loopback exchange costs {:.1} µs of CPU here now (both ends, {FLOOR_EXCHANGES} on one thread): {} of them take at least {:.0} ms on {cores} cores",
        floor.as_secs_f64() * 1e6,
        args.clients,
        ms(floor * args.clients as u32) / cores as f64
    );
    Ok(())
}

/// Exchanges timed for the machine's floor.
const FLOOR_EXCHANGES: u32 = 2_000;

/// The CPU time one bare exchange takes on this machine, both ends on one thread with
/// blocking sockets: connect, request, accept, read, answer, close, read the status line,
/// close. Nothing waits for readiness, so this is the kernel's TCP work alone, the floor
/// under what telling a client costs when the listener shares the machine.
fn bare_exchange_cpu(exchanges: u32) -> Result<Duration> {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    let listeners = (0..100)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    let addresses = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<std::io::Result<Vec<_>>>()?;
    let request = [b'x'; 200];
    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
    let mut buffer = [0u8; 512];
    let tid = nix::unistd::gettid().as_raw();
    let before = thread_cpu(tid).ok_or_else(|| anyhow!("no CPU time for this thread"))?;
    for i in 0..exchanges as usize {
        let which = i % listeners.len();
        let mut client = TcpStream::connect(addresses[which])?;
        client.write_all(&request)?;
        let (mut server, _) = listeners[which].accept()?;
        let _ = server.read(&mut buffer)?;
        server.write_all(answer)?;
        drop(server);
        client.read_exact(&mut buffer[..12])?;
    }
    let after = thread_cpu(tid).ok_or_else(|| anyhow!("no CPU time for this thread"))?;
    Ok(after.saturating_sub(before) / exchanges)
}

/// The listeners, on a thread of their own with a single-threaded runtime.
struct Listeners {
    ports: Vec<u16>,
    /// Their thread's id, to read its CPU time.
    tid: Option<i32>,
    /// How they are served: "io_uring" or "tokio".
    served: &'static str,
    stop: tokio::sync::oneshot::Sender<()>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Listeners {
    /// Binds `count` listeners on loopback and serves them until [`Listeners::stop`].
    fn start(count: usize, heard: Arc<Heard>) -> Result<Listeners> {
        let mut sockets = Vec::with_capacity(count);
        let mut ports = Vec::with_capacity(count);
        for _ in 0..count {
            let socket = std::net::TcpListener::bind("127.0.0.1:0")?;
            socket.set_nonblocking(true)?;
            ports.push(socket.local_addr()?.port());
            sockets.push(socket);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let thread_stopping = stopping.clone();
        let thread = std::thread::Builder::new()
            .name("listeners".to_string())
            .spawn(move || {
                let tid = nix::unistd::gettid().as_raw();
                // Through io_uring where the kernel offers it: the less the listeners cost
                // beyond the kernel's TCP work, the less they take from the servers.
                #[cfg(target_os = "linux")]
                if let Ok(ring) = super::bench_notify_ring::RingListeners::new(heard.clone()) {
                    let _ = started_tx.send((tid, "io_uring"));
                    if let Err(err) = ring.serve(sockets, &thread_stopping) {
                        eprintln!("bench notify: the listeners' ring failed: {err}");
                    }
                    return;
                }
                let _ = started_tx.send((tid, "tokio"));
                runtime.block_on(async move {
                    for socket in sockets {
                        match TcpListener::from_std(socket) {
                            Ok(listener) => drop(tokio::spawn(listen(listener, heard.clone()))),
                            Err(err) => eprintln!("bench notify: a listener failed: {err}"),
                        }
                    }
                    let _ = stopped.await;
                });
            })?;
        let (tid, served) = started_rx
            .recv()
            .map_or((None, "tokio"), |(tid, served)| (Some(tid), served));
        Ok(Listeners {
            ports,
            tid,
            served,
            stop,
            stopping,
            thread,
        })
    }

    /// The CPU time the listeners' thread has run so far.
    fn cpu(&self) -> Option<Duration> {
        self.tid.and_then(thread_cpu)
    }

    /// Stops every listener and waits for their thread.
    fn stop(self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// CPU time used between two readings.
fn used(before: Option<Duration>, after: Option<Duration>) -> Option<Duration> {
    Some(after?.saturating_sub(before?))
}

/// When the listeners heard of a new primary. Kept where they run and read once at the end,
/// so that a notification does not also wake the bench's own runtime.
pub(super) struct Heard {
    /// The primary whose notifications do not count (the one about to be killed).
    old: std::sync::OnceLock<String>,
    times: std::sync::Mutex<Vec<Instant>>,
    expected: usize,
    /// Woken once every listener heard of another primary.
    all: tokio::sync::Notify,
}

impl Heard {
    fn new(expected: usize) -> Heard {
        Heard {
            old: std::sync::OnceLock::new(),
            times: std::sync::Mutex::new(Vec::with_capacity(expected)),
            expected,
            all: tokio::sync::Notify::new(),
        }
    }

    /// From now on, notifications naming a primary other than `old` count.
    fn count_from_others_than(&self, old: &str) {
        let _ = self.old.set(old.to_string());
    }

    pub(super) fn record(&self, at: Instant, primary: &str) {
        if self.old.get().is_none_or(|old| old == primary) {
            return;
        }
        let mut times = self.times.lock().unwrap_or_else(|e| e.into_inner());
        times.push(at);
        if times.len() == self.expected {
            self.all.notify_one();
        }
    }

    fn times(&self) -> Vec<Instant> {
        self.times.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What a listener answers to every request.
pub(super) const ANSWER: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// One client's notification listener: answers every `POST /new-primary` with 200 and
/// records when it heard of which primary.
async fn listen(listener: TcpListener, heard: Arc<Heard>) {
    // Bounded: a listener takes at most a few notifications in a run.
    for _ in 0..64 {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let mut buffer = Vec::with_capacity(512);
        let mut chunk = [0u8; 512];
        let notice = loop {
            let Ok(n) = stream.read(&mut chunk).await else {
                break None;
            };
            if n == 0 {
                break None;
            }
            buffer.extend_from_slice(&chunk[..n]);
            if let Some(notice) = notice_in(&buffer) {
                break notice;
            }
        };
        let _ = stream.write_all(ANSWER).await;
        if let Some(notice) = notice {
            heard.record(Instant::now(), &notice.primary);
        }
    }
}

/// The notice in a request received so far: `None` while the request is incomplete, then
/// the notice, if its body is one.
pub(super) fn notice_in(request: &[u8]) -> Option<Option<NewPrimary>> {
    let end = find(request, b"\r\n\r\n")?;
    let length = content_length(&request[..end]).unwrap_or(0);
    let body = request.get(end + 4..end + 4 + length)?;
    Some(serde_json::from_slice(body).ok())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener answers only once the whole body is in, however the request arrives.
    #[test]
    fn a_notice_is_read_once_its_whole_body_is_in() {
        let request = b"POST /new-primary HTTP/1.1\r\nhost: x\r\ncontent-length: 37\r\n\r\n{\"primary\":\"127.0.0.1:7001\",\"term\":3}";
        for cut in [10, 60, request.len() - 1] {
            assert!(notice_in(&request[..cut]).is_none(), "cut at {cut}");
        }
        let notice = notice_in(request).expect("complete").expect("a notice");
        assert_eq!(notice.primary, "127.0.0.1:7001");
        assert_eq!(notice.term, 3);
        // Complete, but not a notice: answered all the same, and not counted.
        let other = b"POST /new-primary HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}";
        assert!(matches!(notice_in(other), Some(None)));
    }
}
