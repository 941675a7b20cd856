//! `understudy bench catch-up`: how long an empty server takes to join a cluster with a
//! large board, and what that costs the writers meanwhile.
//!
//! The phases, with the closed-loop writers running throughout:
//! 1. preload: write `--preload` messages as fast as the cluster takes them;
//! 2. before: the writers' ops/s over 10 s;
//! 3. catch-up: one more server starts on an empty data dir with `--join <primary>`; its
//!    `/status` is polled until it is a member (no longer `joining`) and its applied index
//!    has reached the primary's commit index as it was when it started, and until it is
//!    within 1,000 entries of the primary's commit index as it is then;
//! 4. after: the writers' ops/s over 10 s with the new server in the cluster.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::bench::{
    ClusterArgs, WAIT_LIMIT, logged_in_clients, max_term, millis, primary_of, start_cluster,
};
use super::bench_writers::{MAX_WRITES_PER_CLIENT, Plan, Window, Writers, check_message_bytes};
use super::local_cluster::LocalCluster;

#[derive(clap::Args, Debug)]
pub(super) struct CatchUpArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Messages to store before the new server starts.
    #[arg(long, default_value_t = 1_000_000)]
    preload: u64,
    /// Concurrent closed-loop writers, each logged in as its own user.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// The size of every message, in bytes (32 to 4096).
    #[arg(long, default_value_t = 128)]
    message_bytes: usize,
    /// Give up if the preload is not done after this many seconds.
    #[arg(long, default_value_t = 3600)]
    preload_limit_seconds: u64,
    /// Give up if the new server has not caught up after this many seconds.
    #[arg(long, default_value_t = 600)]
    catch_up_limit_seconds: u64,
}

/// The length of the "before" and "after" measurements.
const MEASURE: Duration = Duration::from_secs(10);
/// Progress lines during the preload and the catch-up come this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// How often the new server's and the primary's `/status` are read during the catch-up:
/// the resolution of the times measured.
const POLL_EVERY: Duration = Duration::from_millis(50);
/// "Caught up" in the second sense: this close to the primary's current commit index.
const NEAR_ENTRIES: u64 = 1000;

pub(super) async fn run(args: CatchUpArgs) -> Result<()> {
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    check_message_bytes(args.message_bytes)?;
    let (_dir, mut cluster) = start_cluster(&args.cluster).await?;
    let result = catch_up(&args, &mut cluster).await;
    cluster.stop_all().await;
    result
}

async fn catch_up(args: &CatchUpArgs, cluster: &mut LocalCluster) -> Result<()> {
    let clients = logged_in_clients(cluster, args.clients).await?;
    println!(
        "bench catch-up: {} servers (fsync {}), {} clients, {}-byte messages, preload {} messages",
        cluster.servers.len(),
        args.cluster.fsync(),
        args.clients,
        args.message_bytes,
        args.preload
    );
    let first_term = max_term(cluster).await;
    let preload_limit = Duration::from_secs(args.preload_limit_seconds);
    let catch_up_limit = Duration::from_secs(args.catch_up_limit_seconds);
    let start = Instant::now();
    let writers = Writers::start(
        clients,
        Plan {
            message_bytes: args.message_bytes,
            // Every phase is bounded on its own; this bounds the writers if one is not.
            until: start + preload_limit + catch_up_limit + 2 * MEASURE + WAIT_LIMIT,
            writes_per_client: MAX_WRITES_PER_CLIENT,
        },
    );

    preload(args, cluster, &writers, preload_limit).await?;
    writers.take();
    tokio::time::sleep(MEASURE).await;
    let before = writers.take();
    println!("before:  {}", describe(&before));

    let (times, during) = join_new_server(cluster, &writers, catch_up_limit).await?;
    println!("catch-up of {} (its applied index):", times.addr);
    let line = |what: &str, at: Option<Duration>| {
        println!(
            "  {what:<62} {}",
            at.map_or("-".to_string(), |d| format!("{:.2} s", d.as_secs_f64()))
        );
    };
    line(
        &format!(
            "applied index reached {} (as a learner or member)",
            times.start_commit
        ),
        times.applied,
    );
    line("member of the configuration", times.member);
    line(
        &format!("member and applied index reached {}", times.start_commit),
        times.reached,
    );
    line(
        &format!("member and within {NEAR_ENTRIES} entries of the primary's commit index"),
        times.near,
    );
    println!(
        "during:  {}  = {:.1} % of before",
        describe(&during),
        100.0 * during.ops_per_sec() / before.ops_per_sec().max(f64::MIN_POSITIVE)
    );

    tokio::time::sleep(MEASURE).await;
    let after = writers.take();
    println!("after:   {}", describe(&after));
    let errors = writers.errors();
    writers.stop();
    let statuses = cluster.statuses().await;
    let last_term = statuses.iter().map(|s| s.term).max().unwrap_or(first_term);
    let board = statuses
        .iter()
        .find(|s| s.role == "primary")
        .map_or("-".to_string(), |s| s.messages.to_string());
    println!(
        "elections: {} (during the catch-up: {}); failed writes: {errors}; board: {board} messages",
        last_term.saturating_sub(first_term),
        last_term.saturating_sub(times.start_term),
    );
    Ok(())
}

/// Writes until `--preload` messages are acknowledged, printing progress.
async fn preload(
    args: &CatchUpArgs,
    cluster: &LocalCluster,
    writers: &Writers,
    limit: Duration,
) -> Result<()> {
    let start = Instant::now();
    let mut next_progress = start + PROGRESS_EVERY;
    while writers.acked() < args.preload {
        if start.elapsed() > limit {
            bail!(
                "the preload did not finish within {} s ({} of {} messages stored)",
                limit.as_secs(),
                writers.acked(),
                args.preload
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if Instant::now() >= next_progress {
            next_progress += PROGRESS_EVERY;
            let window = writers.take();
            let board = primary_of(&cluster.statuses().await)
                .map_or("-".to_string(), |s| s.messages.to_string());
            println!(
                "preload: {:>5.0} s  {:>9} acknowledged  board {board:>9}  {}",
                start.elapsed().as_secs_f64(),
                writers.acked(),
                describe(&window)
            );
        }
    }
    println!(
        "preload: {} messages in {:.1} s ({:.0} ops/s); {} failed writes",
        writers.acked(),
        start.elapsed().as_secs_f64(),
        writers.acked() as f64 / start.elapsed().as_secs_f64(),
        writers.errors()
    );
    Ok(())
}

/// When the new server reached each mark, from its start.
struct Times {
    addr: String,
    /// The primary's commit index and the highest term when the new server started.
    start_commit: u64,
    start_term: u64,
    applied: Option<Duration>,
    member: Option<Duration>,
    reached: Option<Duration>,
    near: Option<Duration>,
}

/// Starts an empty server joining the primary and polls until it has caught up both ways;
/// returns the times and the writers' window over the catch-up.
async fn join_new_server(
    cluster: &mut LocalCluster,
    writers: &Writers,
    limit: Duration,
) -> Result<(Times, Window)> {
    let statuses = cluster.statuses().await;
    let Some(primary) = primary_of(&statuses) else {
        bail!("no primary to join");
    };
    let new = cluster.add_server()?;
    let mut times = Times {
        addr: cluster.servers[new].addr.clone(),
        start_commit: primary.commit_index,
        start_term: statuses.iter().map(|s| s.term).max().unwrap_or(0),
        applied: None,
        member: None,
        reached: None,
        near: None,
    };
    println!(
        "joining: {} starts on an empty data dir, --join {}; the primary's commit index is {}",
        times.addr, primary.id, times.start_commit
    );
    let join = primary.id.clone();
    writers.take();
    let started = Instant::now();
    cluster.spawn(new, Some(&join))?;
    let mut next_progress = started + PROGRESS_EVERY;
    let mut progress = (Instant::now(), writers.acked());
    loop {
        let statuses = cluster.statuses().await;
        let at = started.elapsed();
        let mine = statuses.iter().find(|s| s.id == times.addr);
        let commit = primary_of(&statuses).map(|s| s.commit_index);
        if let Some(s) = mine {
            let member = s.role != "joining" && s.members.contains(&s.id);
            let reached = s.applied_index >= times.start_commit;
            mark(&mut times.applied, reached, at);
            mark(&mut times.member, member, at);
            mark(&mut times.reached, member && reached, at);
            let near = commit.is_some_and(|c| s.applied_index + NEAR_ENTRIES >= c);
            mark(&mut times.near, member && near, at);
        }
        if times.reached.is_some() && times.near.is_some() {
            break;
        }
        if at > limit {
            bail!(
                "{} did not catch up within {} s (--catch-up-limit-seconds): {}; the primary's commit index {}",
                times.addr,
                limit.as_secs(),
                mine.map_or("no answer to /status".to_string(), |s| format!(
                    "role {}, applied index {}",
                    s.role, s.applied_index
                )),
                commit.map_or("unknown".to_string(), |c| c.to_string()),
            );
        }
        if Instant::now() >= next_progress {
            next_progress += PROGRESS_EVERY;
            // The writers' rate from their running count, so the catch-up window stays whole.
            let acked = writers.acked();
            println!(
                "  {:>5.0} s  {:<8} applied {:>9}  primary commit {:>9}  {:>6.0} ops/s",
                at.as_secs_f64(),
                mine.map_or("-", |s| s.role.as_str()),
                mine.map_or("-".to_string(), |s| s.applied_index.to_string()),
                commit.map_or("-".to_string(), |c| c.to_string()),
                (acked - progress.1) as f64 / progress.0.elapsed().as_secs_f64()
            );
            progress = (Instant::now(), acked);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    Ok((times, writers.take()))
}

/// Records the first time `now` holds.
fn mark(at: &mut Option<Duration>, now: bool, elapsed: Duration) {
    if now && at.is_none() {
        *at = Some(elapsed);
    }
}

/// "1234 ops/s over 10.0 s, p50 .. ms, p99 .. ms".
fn describe(window: &Window) -> String {
    format!(
        "{:>6.0} ops/s over {:>5.2} s, p50 {} ms, p99 {} ms, {} failed",
        window.ops_per_sec(),
        window.elapsed.as_secs_f64(),
        millis(window.percentile(0.50)),
        millis(window.percentile(0.99)),
        window.errors
    )
}
