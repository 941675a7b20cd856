//! Closed-loop writers for the benchmarks: each client sends its next message as soon as its
//! last one is answered, and every answer lands in one shared tally that the benchmark cuts
//! into windows ([`Writers::take`]) whenever it wants a figure.
//!
//! Closed loop means the offered load adapts to the cluster: a slower cluster gets fewer
//! writes, so ops/s and latency measure the cluster rather than a queue in front of it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use tokio::task::JoinHandle;

use understudy::api::MAX_MESSAGE_BYTES;
use understudy::client::Client;

/// A bound on each writer's count, far beyond what any time bound lets it reach (at 1 ms a
/// write, 10,000,000 writes take close to three hours); time is what ends a benchmark.
pub(super) const MAX_WRITES_PER_CLIENT: u64 = 10_000_000;

/// The least `--message-bytes`: room for the writer and sequence number that keep every
/// message distinct.
pub(super) const MIN_MESSAGE_BYTES: usize = 32;

/// After an error the client library gave back, a writer waits this long before its next
/// write, so an error that comes back at once cannot turn the loop into a spin.
const PAUSE_AFTER_ERROR: Duration = Duration::from_millis(10);

/// What the writers do and when they stop by themselves.
#[derive(Clone, Copy, Debug)]
pub(super) struct Plan {
    /// Messages are padded to at least this many bytes (0: no padding).
    pub message_bytes: usize,
    /// No writer starts a write after this.
    pub until: Instant,
    /// No writer sends more than this.
    pub writes_per_client: u64,
}

/// The writes answered since the last [`Writers::take`].
pub(super) struct Window {
    pub elapsed: Duration,
    /// Latencies of the writes acknowledged in the window, sorted.
    pub latencies: Vec<Duration>,
    /// Writes that came back with an error (after the client library's own retries).
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Window {
    pub fn acked(&self) -> u64 {
        self.latencies.len() as u64
    }

    pub fn ops_per_sec(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.acked() as f64 / seconds
        } else {
            0.0
        }
    }

    /// The `p` quantile (0.0 to 1.0) of the latencies; `None` if nothing was acknowledged.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let count = self.latencies.len();
        let rank = ((count as f64 * p) as usize).min(count.checked_sub(1)?);
        Some(self.latencies[rank])
    }
}

/// The tally the writers share; locked only to push one result or to swap it out.
struct Tally {
    since: Instant,
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            since: Instant::now(),
            latencies: Vec::new(),
            errors: 0,
            first_error: None,
        }
    }
}

/// Running writers, one task per client.
pub(super) struct Writers {
    tally: Arc<Mutex<Tally>>,
    acked: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

impl Writers {
    /// Starts one writer per client; the tally's first window starts now.
    pub fn start(clients: Vec<Client>, plan: Plan) -> Writers {
        let tally = Arc::new(Mutex::new(Tally::new()));
        let acked = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let tasks = clients
            .into_iter()
            .enumerate()
            .map(|(i, client)| {
                let (tally, acked, errors) = (tally.clone(), acked.clone(), errors.clone());
                let Plan {
                    message_bytes,
                    until,
                    writes_per_client,
                } = plan;
                tokio::spawn(async move {
                    for n in 0..writes_per_client {
                        if Instant::now() >= until {
                            break;
                        }
                        let sent = Instant::now();
                        let result = client.send(&message(i, n, message_bytes)).await;
                        let latency = sent.elapsed();
                        match result {
                            Ok(_) => {
                                lock(&tally).latencies.push(latency);
                                acked.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(err) => {
                                {
                                    let mut tally = lock(&tally);
                                    tally.errors += 1;
                                    tally.first_error.get_or_insert_with(|| err.to_string());
                                }
                                errors.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(PAUSE_AFTER_ERROR).await;
                            }
                        }
                    }
                })
            })
            .collect();
        Writers {
            tally,
            acked,
            errors,
            tasks,
        }
    }

    /// The window since the last take (or the start), and a new window from now.
    pub fn take(&self) -> Window {
        let tally = std::mem::replace(&mut *lock(&self.tally), Tally::new());
        let mut latencies = tally.latencies;
        latencies.sort_unstable();
        Window {
            elapsed: tally.since.elapsed(),
            latencies,
            errors: tally.errors,
            first_error: tally.first_error,
        }
    }

    /// Writes acknowledged since the start.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Writes that failed since the start.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Waits for every writer to stop by itself (at the plan's time or count), then takes
    /// the last window.
    pub async fn finish(mut self) -> Window {
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        self.take()
    }

    /// Stops every writer now; a write in flight is abandoned (it falls after the last
    /// window, so it counts nowhere).
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A poisoned lock only means a writer panicked mid-push; its tally is still usable.
fn lock(tally: &Mutex<Tally>) -> MutexGuard<'_, Tally> {
    tally.lock().unwrap_or_else(|e| e.into_inner())
}

/// Checks a benchmark's `--message-bytes` against the server's bound and our own.
pub(super) fn check_message_bytes(bytes: usize) -> Result<()> {
    if !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&bytes) {
        bail!("--message-bytes must be {MIN_MESSAGE_BYTES} to {MAX_MESSAGE_BYTES}");
    }
    Ok(())
}

/// Writer `client`'s message number `n`, padded with dots to at least `bytes` bytes. Every
/// text differs, so the client library never mistakes a new message for a retry of one it
/// gave up on (it recognises a retry by equal text).
fn message(client: usize, n: u64, bytes: usize) -> String {
    let mut text = format!("client {client} write {n}");
    let pad = bytes.saturating_sub(text.len());
    text.extend(std::iter::repeat_n('.', pad));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A benchmark's `--message-bytes` is the size of every message it sends, however far
    /// the writer numbers go; without padding the text is the bare name.
    #[test]
    fn messages_are_padded_to_the_asked_size_and_distinct() {
        assert_eq!(message(3, 7, 0), "client 3 write 7");
        assert_eq!(message(3, 7, 20), "client 3 write 7....");
        assert_eq!(message(9999, 9_999_999_999_999, 32).len(), 32);
        assert_eq!(message(0, 0, 128).len(), 128);
        assert_ne!(message(1, 23, 128), message(12, 3, 128));
    }

    /// Percentiles pick a rank among the sorted latencies; an empty window has none.
    #[test]
    fn percentiles_of_a_window() {
        let window = |ms: &[u64]| Window {
            elapsed: Duration::from_secs(2),
            latencies: ms.iter().map(|&m| Duration::from_millis(m)).collect(),
            errors: 0,
            first_error: None,
        };
        let w = window(&(1..=100).collect::<Vec<_>>());
        assert_eq!(w.percentile(0.50), Some(Duration::from_millis(51)));
        assert_eq!(w.percentile(0.99), Some(Duration::from_millis(100)));
        assert_eq!(w.percentile(1.0), Some(Duration::from_millis(100)));
        assert_eq!(w.ops_per_sec(), 50.0);
        assert_eq!(window(&[]).percentile(0.5), None);
    }
}
