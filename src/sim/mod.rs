//! A deterministic simulation of a whole cluster, driving the real replication core.
//!
//! The simulation runs N servers, each a real [`Node`](crate::replication::Node) with the
//! real application [`State`](crate::app::State), inside one thread with one simulated
//! clock and one random generator seeded from a single `u64`. Nothing here reads the wall
//! clock, spawns a thread or iterates a `HashMap`, so a seed replays the same run, event for
//! event. The servers run the real replica (`src/replica/`), the same code the tokio driver
//! runs; the simulation plays the driver's part around it (sockets, disk, clock):
//!
//! | part | model | file |
//! |---|---|---|
//! | clock | one queue of timed events; each server ticks at its own slightly skewed rate | `clock.rs` |
//! | replica | the real `Replica` of the server: checks and proposals, gating, applying, flushes to the store and compaction (intervals drawn per run), state transfer, restore | `src/replica/` |
//! | disk | per server a durable log (hard state, compacted base, entries), a store (tables at a position) and a received store, and the replica's jobs not yet synced; a sync carries them out in order and reports what is done; a crash keeps the durable part and a random prefix of the rest | `storage.rs` |
//! | driver | the replica's outputs carried out as the tokio driver does; packets that arrive together handled in one round before the outputs are drained | `server.rs`, `runner.rs` |
//! | network | seeded delays, drops, duplicates (hence reordering), partitions that heal; stores travel whole, a little slower | `network.rs` |
//! | nemesis | crashes and restarts, pauses (a frozen process), partitions, removal of a member (which joins again), per-run hostility | `faults.rs`, `nemesis.rs` |
//! | clients | log in, then post numbered messages through whoever is primary, retrying the same `(client, seq, text)` after a timeout or a refusal | `clients.rs` |
//! | loop | the event queue, the servers' reactions, the healing phase and the end | `runner.rs` |
//! | checks | safety after every step, every store state against a replay of the committed entries; the client history at the end | `invariants.rs`, `history.rs` |
//! | scenarios | hand-driven reproductions of what the sweeps found | `scenarios.rs` |
//!
//! A run has two phases. For `steps` events every fault is allowed. Then the network heals,
//! crashed servers restart, paused ones resume, and the run continues until it is quiet:
//! one primary, every server a member with the same log, everything committed and applied,
//! no client waiting. The client history is checked on the final boards.
//!
//! Two rules for sending are simulated, one per run: the server driver's (appends leave at
//! once, every other message waits for the writes queued before it), and the stricter one
//! of the core's documentation (every message waits). Both must be safe.
//!
//! The module is compiled for tests only (`#[cfg(test)] mod sim;` in `lib.rs`): the planted
//! bugs of the core, which the tests use to show the checks have teeth, exist only there.
//!
//! A failing run prints a one-line command that replays it with a trace of every event:
//!
//! ```text
//! UNDERSTUDY_SIM_SEED=1234 UNDERSTUDY_SIM_NODES=5 cargo test --lib sim::tests::replay -- --nocapture
//! ```

mod client;
mod clients;
mod clock;
mod faults;
mod history;
mod invariants;
mod nemesis;
mod network;
mod reads;
mod runner;
mod scenarios;
mod server;
mod storage;
mod store_model;
mod tests;

use std::cell::RefCell;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use crate::replication::PlantedBug;

pub use clock::Time;

/// What one run simulates; everything else is drawn from `seed`.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed of every random choice of the run.
    pub seed: u64,
    /// The number of servers.
    pub nodes: usize,
    /// Events simulated with faults on, before the healing phase.
    pub steps: u64,
    /// Print every event as it happens.
    pub verbose: bool,
    /// Check the vote messages themselves (one grant per server and term). Off, only the
    /// outcome-level checks remain, which shows that they catch a double vote on their own.
    pub check_votes: bool,
    /// A deliberately wrong rule switched on in the core.
    pub planted_bug: Option<PlantedBug>,
}

impl SimConfig {
    /// A run of `seed` on `nodes` servers with the default length and every check on.
    pub fn new(seed: u64, nodes: usize) -> SimConfig {
        SimConfig {
            seed,
            nodes,
            steps: DEFAULT_STEPS,
            verbose: false,
            check_votes: true,
            planted_bug: None,
        }
    }

    /// The command that replays this run with a full trace.
    pub fn replay_command(&self) -> String {
        let mut vars = format!(
            "UNDERSTUDY_SIM_SEED={} UNDERSTUDY_SIM_NODES={}",
            self.seed, self.nodes
        );
        if self.steps != DEFAULT_STEPS {
            vars.push_str(&format!(" UNDERSTUDY_SIM_STEPS={}", self.steps));
        }
        if !self.check_votes {
            vars.push_str(" UNDERSTUDY_SIM_CHECK_VOTES=0");
        }
        if let Some(bug) = self.planted_bug {
            vars.push_str(&format!(" UNDERSTUDY_SIM_BUG={bug:?}"));
        }
        format!("{vars} cargo test --lib sim::tests::replay -- --nocapture")
    }
}

/// Events per run before healing, unless a test asks for another length.
pub const DEFAULT_STEPS: u64 = 5_000;

/// The property a failed run broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invariant {
    /// Raft §5.2 election safety: at most one primary per term (a server re-elected in the
    /// same term after a restart counts as a second one).
    OnePrimaryPerTerm,
    /// A server grants at most one vote per term, across restarts.
    OneVotePerTerm,
    /// State machine safety: an index, once committed (applied anywhere), always holds the
    /// same entry, on every server, in every later incarnation.
    CommittedNeverChanges,
    /// Leader completeness (Raft §5.4): a new primary's log holds every committed entry.
    PrimaryHasAllCommitted,
    /// A server's term never decreases, in memory nor on disk across restarts.
    TermsNeverDecrease,
    /// Applying the same entry gives the same outcome on every server.
    DeterministicApply,
    /// The core asked for a write that would leave a gap in the log.
    ContiguousWrites,
    /// A store (after a flush, after a swap, or read back at a restart) holds the application
    /// state of exactly the committed entries up to its position, with that index's term and
    /// the configuration in force there; a disk never holds a log compacted beyond its store.
    StoreConsistent,
    /// The clients' view: acknowledged messages on every board once, at their index, in
    /// real-time order; nothing invented; the expected outcome for each request.
    ClientHistory,
    /// With the network healed and every server up, the cluster settles.
    Convergence,
    /// The core or the replica panicked (their own assertions, e.g. "two primaries in term
    /// 7", or an entry applied out of order).
    NodePanic,
    /// A consistent read was served from a state older than a write acknowledged before
    /// the read began (see `reads.rs`).
    StaleRead,
    /// In a calm run, a settled primary was deposed by something other than a hand-over
    /// (see `reads.rs`).
    StickyPrimary,
}

/// A broken invariant, with what the checker saw.
#[derive(Clone, Debug)]
pub struct Violation {
    pub invariant: Invariant,
    pub message: String,
}

impl Violation {
    pub fn new(invariant: Invariant, message: impl Into<String>) -> Violation {
        Violation {
            invariant,
            message: message.into(),
        }
    }
}

/// A failed run: what broke, when, and how to replay it.
#[derive(Clone, Debug)]
pub struct Failure {
    pub config: SimConfig,
    pub violation: Violation,
    /// The number of events simulated when it broke.
    pub step: u64,
    pub time: Time,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} ({} servers): {:?} violated at step {} (t={}): {}\n  replay: {}",
            self.config.seed,
            self.config.nodes,
            self.violation.invariant,
            self.step,
            self.time,
            self.violation.message,
            self.config.replay_command()
        )
    }
}

/// What a run that passed did, for the tests to check the simulation is not idle.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Events simulated, healing phase included.
    pub steps: u64,
    /// Events the healing phase took to settle.
    pub healing_steps: u64,
    pub time: Time,
    /// The highest committed index.
    pub committed: u64,
    /// Messages acknowledged to clients.
    pub acknowledged: u64,
    /// Times a server became primary.
    pub elections: u64,
    pub crashes: u64,
    pub pauses: u64,
    pub partitions: u64,
    /// Members removed (each asks to join again later).
    pub removals: u64,
    /// Messages the network dropped (drops, partitions, dead or paused receivers).
    pub dropped: u64,
    /// Client requests that timed out.
    pub timeouts: u64,
    /// Connections cut by the nemesis.
    pub cut_connections: u64,
    /// Hand-overs the nemesis asked a primary for.
    pub hand_overs: u64,
    /// Elections started because the connection from the primary closed.
    pub elections_on_lost_connection: u64,
    /// Elections started because the primary handed over.
    pub elections_on_hand_over: u64,
    /// Consistent reads served (each checked).
    pub consistent_reads: u64,
    /// Whether this was a calm run (see `faults.rs`).
    pub calm: bool,
    /// Whether the cluster started from one server that the others joined.
    pub joined: bool,
    /// Whether appends also waited for the writes before them.
    pub strict_gating: bool,
    /// Flushes of applied changes that reached a store (each checked against the replay).
    pub flushes: u64,
    /// Log compactions that reached the disk.
    pub compactions: u64,
    /// Stores a primary sent to a backup behind its compacted log.
    pub stores_sent: u64,
    /// Received stores that the replica took (swapped in once its disk got to them).
    pub stores_installed: u64,
    /// Received stores that the replica did not take (stale, or covered already).
    pub stores_refused: u64,
    /// Restarts that resumed from a store holding something.
    pub restored_from_stores: u64,
    /// Rounds in which a server's driver handled more than one packet before draining.
    pub batched_rounds: u64,
}

/// Runs one simulation. A panic of the core is caught and reported as [`Invariant::NodePanic`]
/// with its message and location.
pub fn run(config: &SimConfig) -> Result<Report, Failure> {
    install_panic_hook();
    let mut sim = runner::Sim::new(config.clone());
    QUIET_PANICS.with(|q| *q.borrow_mut() = Some(None));
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| sim.run()));
    let location = QUIET_PANICS.with(|q| q.borrow_mut().take().flatten());
    match outcome {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(violation)) => Err(sim.failure(violation)),
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic without a message".to_string());
            let at = location.unwrap_or_default();
            Err(sim.failure(Violation::new(
                Invariant::NodePanic,
                format!("{message} (at {at})"),
            )))
        }
    }
}

thread_local! {
    /// While a run is going on this thread: `Some`, holding the location of the last panic.
    /// A panic then is a finding, reported through the run's result instead of on stderr.
    static QUIET_PANICS: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

/// Wraps the panic hook once: panics on a thread that is running a simulation only record
/// their location; every other panic goes to the previous hook as before.
fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let captured = QUIET_PANICS.with(|q| {
                let mut q = q.borrow_mut();
                match q.as_mut() {
                    Some(slot) => {
                        *slot = info.location().map(|l| l.to_string());
                        true
                    }
                    None => false,
                }
            });
            if !captured {
                previous(info);
            }
        }));
    });
}
