//! Network partitions against the real binary (issue "A crash is noticed in one round
//! trip", must show 8): three servers, each in a network namespace of its own, the clients
//! in another, joined by a bridge in a switch namespace (`support/netns.rs`); cuts are
//! blackhole routes. Under two writing clients:
//!
//! - the primary isolated both ways;
//! - a one-way cut from the primary to a backup, and one from a backup to the primary;
//! - a bridge: two servers cut apart, the third sees both;
//! - random flapping for 60 s (`UNDERSTUDY_FLAP_SECONDS` to change; the cuts follow
//!   `UNDERSTUDY_FLAP_SEED`, printed, though timing makes no two runs alike).
//!
//! After all of it: every acknowledged write is on every board exactly once at its index,
//! nothing is on a board twice, no term ever had two primaries (a watcher polls every
//! server's `/status` every 10 ms), and a server cut off from the others committed nothing
//! beyond what its log held when it was cut off, so it acknowledged nothing new (the clients
//! still reach it). Needs root and iproute2 (CI has both).

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use understudy::api::{MessagesResponse, StatusResponse};
use understudy::client::http::HttpClient;
use understudy::client::{Client, ClientOptions};

use support::netns::Net;

const SERVERS: usize = 3;
const PORT: u16 = 7000;
const WAIT: Duration = Duration::from_secs(30);

/// One acknowledged write: its text and index.
#[derive(Clone, Debug)]
struct Ack {
    text: String,
    index: u64,
}

/// The servers, as processes inside their namespaces, killed when dropped.
struct Servers {
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn addr(i: usize) -> String {
    format!("{}:{PORT}", Net::server_addr(i))
}

fn start_servers(net: &Net) -> Servers {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let secret = dir.path().join("secret");
    fs::write(&secret, format!("{:032x}", rand::random::<u128>())).expect("the secret");
    let children = (0..SERVERS)
        .map(|i| {
            let log = fs::File::create(dir.path().join(format!("s{i}.log"))).expect("a log");
            let mut command = Command::new("ip");
            command
                .args(["netns", "exec", &net.server_ns(i)])
                .arg(env!("CARGO_BIN_EXE_understudy"))
                .args(["server", "--listen", &addr(i)])
                .arg("--data-dir")
                .arg(dir.path().join(format!("s{i}")))
                .arg("--cluster-secret-file")
                .arg(&secret)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            if i > 0 {
                command.args(["--join", &addr(0)]);
            }
            command.spawn().expect("a server starts")
        })
        .collect();
    Servers {
        children,
        _dir: dir,
    }
}

async fn status(http: &HttpClient, i: usize) -> Option<StatusResponse> {
    let response = http.get(&addr(i), "/status", &[]).await.ok()?;
    response.json::<StatusResponse>().ok()
}

async fn wait_until<F: AsyncFnMut() -> bool>(what: &str, mut done: F) {
    let deadline = Instant::now() + WAIT;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The server all others follow, once every server agrees on one.
async fn settled_primary(http: &HttpClient) -> usize {
    let mut found = 0;
    wait_until("one primary that every server follows", async || {
        let mut statuses = Vec::new();
        for i in 0..SERVERS {
            match status(http, i).await {
                Some(s) => statuses.push(s),
                None => return false,
            }
        }
        let Some(primary) = statuses[0].primary.clone() else {
            return false;
        };
        let agree = statuses
            .iter()
            .all(|s| s.primary.as_deref() == Some(primary.as_str()) && s.members.len() == SERVERS);
        found = (0..SERVERS).find(|&i| addr(i) == primary).unwrap_or(0);
        agree
    })
    .await;
    found
}

/// Server `i`'s `/status`, once it answers (the clients' side reaches it even when it is
/// cut off from the other servers).
async fn status_now(http: &HttpClient, i: usize) -> StatusResponse {
    let mut answer = None;
    wait_until("the server to answer", async || {
        answer = status(http, i).await;
        answer.is_some()
    })
    .await;
    answer.expect("answered")
}

/// A primary other than `old`, in a term above `term`.
async fn new_primary(http: &HttpClient, old: usize, term: u64) -> usize {
    let mut found = 0;
    wait_until("a new primary", async || {
        for i in (0..SERVERS).filter(|&i| i != old) {
            if let Some(s) = status(http, i).await
                && s.role == "primary"
                && s.term > term
            {
                found = i;
                return true;
            }
        }
        false
    })
    .await;
    found
}

/// Waits for `more` further acknowledgements.
async fn more_acks(acks: &Mutex<Vec<Ack>>, more: usize) {
    let target = acks.lock().unwrap().len() + more;
    wait_until("writes to be acknowledged", async || {
        acks.lock().unwrap().len() >= target
    })
    .await;
}

async fn run() {
    let mut net = Net::new(SERVERS);
    net.enter_client_ns();
    let _servers = start_servers(&net);
    let http = HttpClient::with_timeout(Duration::from_millis(500));
    wait_until("every server to answer", async || {
        for i in 0..SERVERS {
            if status(&http, i).await.is_none() {
                return false;
            }
        }
        true
    })
    .await;
    settled_primary(&http).await;

    // The watcher: one primary per term, polled every 10 ms throughout.
    let watching = Arc::new(AtomicBool::new(true));
    let primaries: Arc<Mutex<BTreeMap<u64, String>>> = Arc::default();
    let watcher = tokio::spawn({
        let (watching, primaries) = (watching.clone(), primaries.clone());
        let http = HttpClient::with_timeout(Duration::from_millis(200));
        async move {
            while watching.load(Ordering::Relaxed) {
                for i in 0..SERVERS {
                    if let Some(s) = status(&http, i).await
                        && s.role == "primary"
                    {
                        let mut primaries = primaries.lock().unwrap();
                        let first = primaries.entry(s.term).or_insert(s.id.clone());
                        assert_eq!(*first, s.id, "two primaries in term {}", s.term);
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });

    // Two writers, recording every acknowledgement with the server that gave it.
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..2 {
        let options = ClientOptions {
            listen: format!("{}:0", Net::client_addr())
                .parse()
                .expect("an address"),
            retry_for: Duration::from_secs(60),
            ..ClientOptions::default()
        };
        let client = Client::connect((0..SERVERS).map(addr).collect(), options)
            .await
            .expect("client/init");
        let password = format!("writer{w}-password");
        client
            .register(&format!("writer{w}"), &password)
            .await
            .expect("register");
        client
            .login(&format!("writer{w}"), &password)
            .await
            .expect("login");
        let (acks, stop) = (acks.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            // Bounded: the test stops it long before.
            for n in 0..1_000_000 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let text = format!("w{w}-{n}");
                if let Ok(index) = client.send(&text).await {
                    acks.lock().unwrap().push(Ack { text, index });
                }
            }
        }));
    }
    more_acks(&acks, 20).await;
    // Every isolation: (server, its last log index just after the cut, its commit index
    // just before the heal). Nothing proposed after the cut can commit while it is cut off,
    // so the second must not exceed the first: an isolated server acknowledges nothing new.
    let mut isolations: Vec<(usize, u64, u64)> = Vec::new();

    // The primary isolated both ways: the others elect a new one; it acknowledges nothing.
    let p = settled_primary(&http).await;
    let term = status(&http, p).await.map_or(0, |s| s.term);
    net.isolate(p);
    let last = status_now(&http, p).await.last_index;
    new_primary(&http, p, term).await;
    more_acks(&acks, 30).await;
    isolations.push((p, last, status_now(&http, p).await.commit_index));
    net.heal();
    settled_primary(&http).await;

    // One-way cuts: primary to backup, then backup to primary.
    let p = settled_primary(&http).await;
    let b = (p + 1) % SERVERS;
    net.cut(p, b);
    more_acks(&acks, 30).await;
    // The cut in force past an election timeout and more, with the writes going on.
    tokio::time::sleep(Duration::from_millis(800)).await;
    more_acks(&acks, 10).await;
    net.heal();
    let p = settled_primary(&http).await;
    let b = (p + 1) % SERVERS;
    net.cut(b, p);
    more_acks(&acks, 30).await;
    // The cut in force past an election timeout and more, with the writes going on.
    tokio::time::sleep(Duration::from_millis(800)).await;
    more_acks(&acks, 10).await;
    net.heal();

    // A bridge: the primary and one backup cut apart, the third server sees both.
    let p = settled_primary(&http).await;
    net.split(p, (p + 1) % SERVERS);
    more_acks(&acks, 30).await;
    // The cut in force past an election timeout and more, with the writes going on.
    tokio::time::sleep(Duration::from_millis(800)).await;
    more_acks(&acks, 10).await;
    net.heal();
    settled_primary(&http).await;

    // Random flapping.
    let seconds: u64 = std::env::var("UNDERSTUDY_FLAP_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let until = Instant::now() + Duration::from_secs(seconds);
    let seed: u64 = std::env::var("UNDERSTUDY_FLAP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("flapping for {seconds} s with UNDERSTUDY_FLAP_SEED={seed}");
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
    let mut isolated: Option<(usize, u64)> = None;
    while Instant::now() < until {
        if let Some((i, last)) = isolated.take() {
            isolations.push((i, last, status_now(&http, i).await.commit_index));
        }
        net.heal();
        match rng.random_range(0..4) {
            0 => {}
            1 => {
                let i = rng.random_range(0..SERVERS);
                net.isolate(i);
                isolated = Some((i, status_now(&http, i).await.last_index));
            }
            _ => {
                for _ in 0..rng.random_range(1..=3) {
                    let from = rng.random_range(0..SERVERS);
                    let to = (from + rng.random_range(1..SERVERS)) % SERVERS;
                    net.cut(from, to);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..2_000))).await;
    }
    if let Some((i, last)) = isolated.take() {
        isolations.push((i, last, status_now(&http, i).await.commit_index));
    }
    net.heal();
    settled_primary(&http).await;
    more_acks(&acks, 20).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("a writer does not panic");
    }
    watching.store(false, Ordering::Relaxed);
    watcher.await.expect("no term had two primaries");

    let acks = acks.lock().unwrap().clone();
    // A server cut off from the others committed (so acknowledged) nothing proposed after
    // the cut.
    for (i, last, commit) in &isolations {
        assert!(
            commit <= last,
            "{} committed up to {commit} while isolated, but its log ended at {last} when it was cut off",
            addr(*i)
        );
    }
    assert!(!isolations.is_empty());
    // Every board holds every acknowledged write exactly once at its index, nothing twice.
    wait_until("every server to apply the same", async || {
        let mut applied = Vec::new();
        for i in 0..SERVERS {
            match status(&http, i).await {
                Some(s) => applied.push((s.applied_index, s.commit_index)),
                None => return false,
            }
        }
        applied.windows(2).all(|w| w[0].0 == w[1].0)
    })
    .await;
    for i in 0..SERVERS {
        let mut board = Vec::new();
        loop {
            let from = board
                .last()
                .map_or(1, |m: &understudy::api::MessageInfo| m.index + 1);
            let page = http
                .get(&addr(i), &format!("/messages?from={from}&limit=1000"), &[])
                .await
                .expect("the board")
                .json::<MessagesResponse>()
                .expect("a board")
                .messages;
            let full = page.len() == 1000;
            board.extend(page);
            if !full {
                break;
            }
        }
        let mut seen: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for m in &board {
            seen.entry(m.message.as_str()).or_default().push(m.index);
        }
        assert!(
            seen.values().all(|at| at.len() == 1),
            "server {i}: a message is on the board twice"
        );
        for ack in &acks {
            assert_eq!(
                seen.get(ack.text.as_str()),
                Some(&vec![ack.index]),
                "server {i}: {} acknowledged at {}",
                ack.text,
                ack.index
            );
        }
    }
    assert!(
        primaries.lock().unwrap().len() >= 2,
        "the partitions changed the primary at least once"
    );
}

#[test]
fn partitions_lose_nothing_acknowledged_and_never_make_two_primaries() {
    // Its own thread, so that entering the clients' namespace moves nothing else.
    std::thread::spawn(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(run());
    })
    .join()
    .expect("the partition scenarios pass");
}
