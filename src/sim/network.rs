//! The simulated network between servers: delays, drops, duplicates and partitions.
//!
//! Every message gets its own random delay, so messages overtake each other (reordering for
//! free). A few are delayed far beyond an election timeout, so that messages from old terms
//! arrive when nobody expects them. A partition splits the servers into groups; it is
//! checked when a message arrives, so what was in flight when the split happened is lost
//! too, as with a cut cable.
//!
//! Stores travel on the same network: the real sender streams a read view of its store in
//! checked chunks (`src/server/state_transfer.rs`) and the receiver hands it to its driver
//! only once it is whole and checks out, so the model delivers it whole or not at all, a
//! little later than a message for its size.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::clock::Time;
use crate::replication::{Envelope, Message, NodeId, Term};

/// A primary's store on its way to a backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotTransfer {
    pub from: NodeId,
    pub to: NodeId,
    /// The sender's term when it started sending.
    pub term: Term,
    /// The store as it was on the sender's disk when it started sending (boxed: events
    /// carry packets by value, and most are small messages).
    pub store: Box<super::storage::StoreFile>,
}

impl SnapshotTransfer {
    /// The extra time a transfer of this size takes over a message.
    pub fn transfer_time(&self) -> Time {
        let records = self.store.tables.messages.len() + self.store.tables.clients.len();
        records as Time / 16
    }
}

/// What travels between servers.
#[derive(Clone, Debug)]
pub enum Packet {
    Message(Envelope),
    Snapshot(SnapshotTransfer),
}

impl Packet {
    pub fn from(&self) -> &NodeId {
        match self {
            Packet::Message(envelope) => &envelope.from,
            Packet::Snapshot(transfer) => &transfer.from,
        }
    }

    pub fn to(&self) -> &NodeId {
        match self {
            Packet::Message(envelope) => &envelope.to,
            Packet::Snapshot(transfer) => &transfer.to,
        }
    }
}

/// How hostile the network is in one run.
#[derive(Clone, Debug)]
pub struct NetworkPlan {
    /// Chance that a message is lost.
    pub drop: f64,
    /// Chance that a message is delivered twice.
    pub duplicate: f64,
    /// The usual delay is drawn from `1..=max_delay`.
    pub max_delay: Time,
    /// Chance of a delay of up to `long_delay` instead.
    pub long: f64,
    pub long_delay: Time,
}

/// The network: its plan and the current partition.
pub struct Network {
    plan: NetworkPlan,
    /// The group of each server while partitioned; servers talk only within a group.
    groups: Option<Vec<u8>>,
}

impl Network {
    pub fn new(plan: NetworkPlan) -> Network {
        Network { plan, groups: None }
    }

    /// When a message sent now arrives: none if it is lost, two times if duplicated.
    pub fn delays(&self, rng: &mut ChaCha8Rng) -> Vec<Time> {
        let mut delays = Vec::new();
        if rng.random_bool(self.plan.drop) {
            return delays;
        }
        delays.push(self.delay(rng));
        if rng.random_bool(self.plan.duplicate) {
            delays.push(self.delay(rng));
        }
        delays
    }

    fn delay(&self, rng: &mut ChaCha8Rng) -> Time {
        if rng.random_bool(self.plan.long) {
            rng.random_range(1..=self.plan.long_delay)
        } else {
            rng.random_range(1..=self.plan.max_delay)
        }
    }

    /// Whether servers `a` and `b` can talk right now.
    pub fn connected(&self, a: usize, b: usize) -> bool {
        self.groups
            .as_ref()
            .is_none_or(|groups| groups[a] == groups[b])
    }

    pub fn is_partitioned(&self) -> bool {
        self.groups.is_some()
    }

    /// Splits `servers` servers into two or three random groups, each non-empty. Returns the
    /// groups for the trace.
    pub fn partition(&mut self, servers: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
        let count = if servers >= 5 && rng.random_bool(0.3) {
            3
        } else {
            2
        };
        loop {
            let groups: Vec<u8> = (0..servers)
                .map(|_| rng.random_range(0..count) as u8)
                .collect();
            let members: Vec<Vec<usize>> = (0..count as u8)
                .map(|g| (0..servers).filter(|&s| groups[s] == g).collect())
                .collect();
            if members.iter().all(|m| !m.is_empty()) {
                self.groups = Some(groups);
                return members;
            }
        }
    }

    pub fn heal(&mut self) {
        self.groups = None;
    }

    /// The healing phase: no more losses, partitions or very long delays; ordinary delays
    /// and duplicates stay.
    pub fn calm(&mut self) {
        self.heal();
        self.plan.drop = 0.0;
        self.plan.long = 0.0;
    }
}

/// A packet as one trace line.
pub fn describe_packet(packet: &Packet) -> String {
    match packet {
        Packet::Message(envelope) => describe(envelope),
        Packet::Snapshot(transfer) => {
            let position = &transfer.store.meta.position;
            format!(
                "{}@{} -> {} Store at {}@{} ({} messages)",
                transfer.from,
                transfer.term,
                transfer.to,
                position.index,
                position.term,
                transfer.store.tables.messages.len()
            )
        }
    }
}

/// A message as one trace line, e.g. `n1@3 -> n2 Append prev=5@2 [6@3 7@3] commit=5`.
pub fn describe(env: &Envelope) -> String {
    let head = format!(
        "{}@{} -> {} {}",
        env.from,
        env.term,
        env.to,
        env.message.kind()
    );
    match &env.message {
        Message::Append {
            prev_index,
            prev_term,
            entries,
            commit,
            round,
        } => {
            let entries: Vec<String> = entries
                .iter()
                .map(|e| format!("{}@{}", e.index, e.term))
                .collect();
            format!(
                "{head} prev={prev_index}@{prev_term} [{}] commit={commit} round={round}",
                entries.join(" ")
            )
        }
        Message::AppendAccepted { match_index, round } => {
            format!("{head} match={match_index} round={round}")
        }
        Message::AppendRejected {
            prev_index,
            hint,
            last_index,
            round,
        } => format!("{head} prev={prev_index} hint={hint} last={last_index} round={round}"),
        Message::Vote {
            last_index,
            last_term,
            ..
        } => format!("{head} last={last_index}@{last_term}"),
        Message::VoteResponse { granted, .. } => format!("{head} granted={granted}"),
        Message::TimeoutNow => head,
    }
}
