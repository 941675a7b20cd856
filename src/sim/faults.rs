//! The plan of one run, drawn from its seed: the protocol's timing, how hostile the network,
//! the disks and the nemesis are, and how the cluster starts.
//!
//! Drawing the knobs per seed, rather than fixing them, lets a thousand seeds cover calm runs
//! and storms, fast disks and slow ones, one append per message and large batches, without a
//! hand-written matrix; a failing seed replays with the same plan.

use rand::Rng;

use crate::replica::Settings;
use rand_chacha::ChaCha8Rng;

use super::clock::Time;
use super::network::NetworkPlan;
use crate::replication::{Options, PlantedBug};

/// Simulated time between two ticks of a server (each server's clock runs a little fast or
/// slow around it).
pub const TICK: Time = 10;

/// Everything drawn for one run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The core's timing and batching.
    pub opts: Options,
    /// Start with one bootstrapped server that the others join, instead of all servers
    /// sharing a first configuration.
    pub join: bool,
    /// Appends wait for the writes before them too (the core's documented rule), instead of
    /// leaving at once as the server driver lets them.
    pub strict_gating: bool,
    pub network: NetworkPlan,
    /// A sync happens within `0..=max_sync_delay` of the first unsynced write.
    pub max_sync_delay: Time,
    /// The nemesis strikes about this often.
    pub nemesis_every: Time,
    /// Relative weights of crash, pause, partition, removing a member, doing nothing,
    /// cutting a connection between two servers, and the primary handing over.
    pub weights: [u32; 7],
    /// A calm run: no crash but of a backup, no pause, partition, removal, drop or long
    /// delay; only backup restarts, cut connections and hand-overs. After the first primary
    /// has settled in, nothing may depose it but a hand-over (`Invariant::StickyPrimary`).
    pub calm: bool,
    /// A crashed server restarts, a paused one resumes, a partition heals within this.
    pub max_outage: Time,
    pub clients: usize,
    /// How each replica flushes to its store and compacts its log (and whether appends wait
    /// for the writes before them, `strict_gating`, copied here).
    pub settings: Settings,
    /// A server's driver takes the packets that arrive within this long of one another in
    /// one round, draining the node's outputs only after all of them (the commands queued
    /// while it was busy, `MAX_COMMANDS_PER_ROUND` in `src/server/driver/mod.rs`).
    pub round_window: Time,
}

/// One action of the nemesis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Crash(usize),
    Pause(usize),
    Partition,
    /// The primary removes a member (which later asks to join again).
    Remove,
    Nothing,
    /// The connection between two servers breaks (both see it close); messages still flow
    /// on the next one.
    CutConnection(usize, usize),
    /// The primary hands its office over (a SIGTERM, or `admin transfer`).
    HandOver,
}

impl Plan {
    pub fn draw(rng: &mut ChaCha8Rng, bug: Option<PlantedBug>) -> Plan {
        let heartbeat_ticks = rng.random_range(1..=3);
        let election_ticks = rng.random_range(3 * heartbeat_ticks + 2..=15);
        let opts = Options {
            heartbeat_ticks,
            election_ticks,
            max_append_entries: pick(rng, &[1, 3, 16, 64]),
            max_inflight: pick(rng, &[1, 2, 4, 8]),
            planted_bug: bug,
        };
        let network = NetworkPlan {
            drop: pick(rng, &[0.0, 0.01, 0.05, 0.15]),
            duplicate: pick(rng, &[0.0, 0.01, 0.05]),
            max_delay: pick(rng, &[2, 8, 20, 50]),
            long: pick(rng, &[0.0, 0.005, 0.02]),
            long_delay: pick(rng, &[100, 400]),
        };
        let mut plan = Plan {
            opts,
            join: rng.random_bool(0.3),
            strict_gating: rng.random_bool(0.5),
            network,
            max_sync_delay: pick(rng, &[0, 2, 10, 40]),
            nemesis_every: pick(rng, &[60, 150, 400]),
            weights: [
                pick(rng, &[1, 3]),
                pick(rng, &[0, 1, 2]),
                pick(rng, &[1, 3]),
                pick(rng, &[0, 1]),
                pick(rng, &[0, 2]),
                0,
                0,
            ],
            calm: false,
            max_outage: pick(rng, &[100, 300, 800]),
            clients: rng.random_range(1..=4),
            settings: Settings::default(),
            round_window: pick(rng, &[0, 2, 10]),
        };
        plan.settings = Settings {
            flush_every_entries: pick(rng, &[2, 5, 10, 30]),
            flush_every_ticks: pick(rng, &[3, 10, 40]),
            compact_every: pick(rng, &[5, 10, 20, 50]),
            strict_gating: plan.strict_gating,
            observe: true,
        };
        // Drawn last, so that the plans above stay what they were for every seed.
        plan.weights[5] = pick(rng, &[0, 1, 2]);
        plan.weights[6] = pick(rng, &[0, 0, 1]);
        if bug == Some(PlantedBug::PreVoteWhileHearingPrimary) || rng.random_bool(0.15) {
            plan.calm();
        }
        plan
    }

    /// Turns this plan into a calm one (see `calm`).
    fn calm(&mut self) {
        self.calm = true;
        self.join = false;
        self.weights = [2, 0, 0, 0, 1, 3, 1];
        self.network.drop = 0.0;
        self.network.long = 0.0;
        self.network.max_delay = self.network.max_delay.min(8);
        self.max_sync_delay = self.max_sync_delay.min(10);
    }

    /// The nemesis' next move on a cluster of `servers`.
    pub fn next_fault(&self, rng: &mut ChaCha8Rng, servers: usize) -> Fault {
        let total: u32 = self.weights.iter().sum();
        let mut roll = rng.random_range(0..total.max(1));
        let server = rng.random_range(0..servers);
        for (kind, weight) in self.weights.iter().enumerate() {
            if roll < *weight {
                return match kind {
                    0 => Fault::Crash(server),
                    1 => Fault::Pause(server),
                    2 => Fault::Partition,
                    3 => Fault::Remove,
                    5 => Fault::CutConnection(server, rng.random_range(0..servers)),
                    6 => Fault::HandOver,
                    _ => Fault::Nothing,
                };
            }
            roll -= weight;
        }
        Fault::Nothing
    }
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, choices: &[T]) -> T {
    choices[rng.random_range(0..choices.len())]
}
