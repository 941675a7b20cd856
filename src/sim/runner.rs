//! The event loop of one run: pops the next event, lets the servers, the network, the
//! nemesis and the clients react, and checks safety after every step.
//!
//! Every random choice comes from one generator seeded with the run's seed, in an order
//! fixed by the event queue, so a seed always replays the same run.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::client::Client;
use super::clock::{EventQueue, Time};
use super::faults::{Plan, TICK};
use super::history::History;
use super::invariants::Invariants;
use super::network::{Network, Packet, SnapshotTransfer, describe_packet};
use super::server::{Effects, Server};
use super::storage::{Storage, StoreChange};
use super::{Failure, Invariant, Report, SimConfig, Violation};
use crate::replication::{ElectionCause, Entry, Envelope, HardState, NodeId, Payload};

/// Most events the healing phase may take to settle before the run counts as stuck.
const HEALING_STEPS: u64 = 400_000;

/// Something due to happen.
pub(super) enum Event {
    /// A server's clock ticks (void if the server crashed or paused since).
    Tick {
        server: usize,
        epoch: u64,
    },
    Deliver(Packet),
    /// A server's disk syncs what was written.
    Sync {
        server: usize,
        epoch: u64,
    },
    /// A client wakes up: to send, or to give up waiting.
    Client(usize),
    Nemesis,
    Restart {
        server: usize,
        epoch: u64,
    },
    Resume {
        server: usize,
        epoch: u64,
    },
    /// Ends partition number `.0`, unless a newer one replaced it.
    Heal(u64),
    /// Servers that are not members (joining, or removed) ask the primary to take them in.
    Join,
    /// `server` sees its connection from `peer` close (void if `server` crashed or paused
    /// since).
    ConnectionClosed {
        server: usize,
        peer: usize,
        epoch: u64,
    },
    /// A reader asks a server that believes it is the primary for a consistent read.
    Read,
}

/// One run in progress.
pub struct Sim {
    pub(super) config: SimConfig,
    pub(super) plan: Plan,
    pub(super) rng: ChaCha8Rng,
    pub(super) now: Time,
    pub(super) step: u64,
    pub(super) queue: EventQueue<Event>,
    pub(super) servers: Vec<Server>,
    /// Server index by name.
    pub(super) ids: BTreeMap<NodeId, usize>,
    pub(super) network: Network,
    pub(super) clients: Vec<Client>,
    pub(super) invariants: Invariants,
    pub(super) history: History,
    /// The healing phase: no new faults; clients finish what they started.
    pub(super) healing: bool,
    /// Partitions so far: a heal ends only the latest one.
    pub(super) partitions: u64,
    pub(super) report: Report,
    /// Consistent reads on their way: number → the highest index acknowledged before.
    pub(super) reads_waiting: BTreeMap<u64, u64>,
    pub(super) next_read: u64,
    /// Why each server last started an election.
    pub(super) last_cause: Vec<Option<ElectionCause>>,
    /// In a calm run: from when on the primary must stay.
    pub(super) settled_at: Option<Time>,
}

impl Sim {
    pub fn new(config: SimConfig) -> Sim {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let plan = Plan::draw(&mut rng, config.planted_bug);
        let ids: Vec<NodeId> = (1..=config.nodes).map(|n| format!("n{n}")).collect();
        // Either all servers share a first configuration (like a cluster set up by hand), or
        // only the first starts one and the others join it.
        let first_config = Entry {
            term: 0,
            index: 1,
            payload: Payload::Config(ids.clone()),
        };
        let servers = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let log = if plan.join {
                    Vec::new()
                } else {
                    vec![first_config.clone()]
                };
                let tick_every = rng.random_range(TICK - 1..=TICK + 1);
                let storage = Storage::new(HardState::default(), log);
                let bootstraps = plan.join && i == 0;
                Server::new(
                    id.clone(),
                    storage,
                    tick_every,
                    bootstraps,
                    plan.settings.clone(),
                )
            })
            .collect();
        // With two clients or more, the last never logs in and is expired: a deletion goes
        // through the same logs, flushes, crashes and state transfers as everything else.
        // (It replaces a working client rather than adding one: the load stays what the
        // plan says.)
        let clients = (0..plan.clients)
            .map(|c| {
                let target = rng.random_range(0..config.nodes);
                if plan.clients >= 2 && c == plan.clients - 1 {
                    Client::idle(c + 1, target)
                } else {
                    Client::new(c + 1, target)
                }
            })
            .collect();
        let report = Report {
            joined: plan.join,
            calm: plan.calm,
            strict_gating: plan.strict_gating,
            ..Report::default()
        };
        Sim {
            network: Network::new(plan.network.clone()),
            invariants: Invariants::new(config.nodes, config.check_votes),
            ids: ids.iter().cloned().zip(0..).collect(),
            config,
            plan,
            rng,
            now: 0,
            step: 0,
            queue: EventQueue::new(),
            servers,
            clients,
            history: History::default(),
            healing: false,
            partitions: 0,
            report,
            reads_waiting: BTreeMap::new(),
            next_read: 0,
            last_cause: vec![None; ids.len()],
            settled_at: None,
        }
    }

    /// The failure report for a violation found now.
    pub fn failure(&self, violation: Violation) -> Failure {
        Failure {
            config: self.config.clone(),
            violation,
            step: self.step,
            time: self.now,
        }
    }

    /// Runs the faulty phase, heals, waits for quiet, and checks the client history.
    pub fn run(&mut self) -> Result<Report, Violation> {
        self.trace(|| format!("plan: {:?}", self.plan));
        for server in 0..self.servers.len() {
            self.start(server)?;
        }
        for client in 0..self.clients.len() {
            let at = self.rng.random_range(0..=10 * TICK);
            self.queue.schedule(at, Event::Client(client));
        }
        self.queue.schedule(self.plan.nemesis_every, Event::Nemesis);
        self.queue.schedule(3 * TICK, Event::Join);
        self.queue.schedule(5 * TICK, Event::Read);

        while self.step < self.config.steps {
            self.next()?;
        }
        self.heal_all()?;
        let limit = self.step + HEALING_STEPS;
        while !self.quiet() {
            if self.step >= limit {
                return Err(Violation::new(
                    Invariant::Convergence,
                    format!(
                        "not settled {HEALING_STEPS} events after healing: {}",
                        self.summary()
                    ),
                ));
            }
            self.next()?;
        }
        self.final_check()?;
        self.report.healing_steps = self.step - self.config.steps;
        self.report.steps = self.step;
        self.report.time = self.now;
        self.report.committed = self.invariants.commit_index();
        self.report.acknowledged = self.history.acknowledged_count();
        Ok(self.report.clone())
    }

    /// One step: the next event and its consequences, then the per-step checks.
    fn next(&mut self) -> Result<(), Violation> {
        let Some((at, event)) = self.queue.pop() else {
            return Err(Violation::new(
                Invariant::Convergence,
                "nothing left to happen",
            ));
        };
        self.now = at;
        self.step += 1;
        match event {
            Event::Tick { server, epoch } => self.tick(server, epoch)?,
            Event::Deliver(packet) => self.deliver(packet)?,
            Event::Sync { server, epoch } => self.sync(server, epoch)?,
            Event::Client(client) => self.client_wake(client)?,
            Event::Nemesis => self.nemesis()?,
            Event::Restart { server, epoch } => {
                if self.servers[server].epoch == epoch && !self.servers[server].is_up() {
                    self.start(server)?;
                }
            }
            Event::Resume { server, epoch } => {
                if self.servers[server].epoch == epoch && self.servers[server].paused {
                    self.resume(server);
                }
            }
            Event::Heal(partition) => {
                if partition == self.partitions && self.network.is_partitioned() {
                    self.trace(|| "partition heals".to_string());
                    self.network.heal();
                }
            }
            Event::Join => self.join()?,
            Event::ConnectionClosed {
                server,
                peer,
                epoch,
            } => {
                let s = &mut self.servers[server];
                if s.epoch == epoch && s.is_running() {
                    let lost = self.servers[peer].id.clone();
                    self.servers[server].connection_lost(&lost);
                    self.drain(server)?;
                }
            }
            Event::Read => self.read()?,
        }
        for (i, server) in self.servers.iter().enumerate() {
            if let Some(node) = server.node() {
                self.invariants.term_now(i, &server.id, node.term())?;
            }
        }
        Ok(())
    }

    // ---- Servers -------------------------------------------------------------------------

    /// Starts a server from its disk (first start or restart).
    pub(super) fn start(&mut self, server: usize) -> Result<(), Violation> {
        let seed = self.rng.random::<u64>();
        let s = &mut self.servers[server];
        let started = s
            .start(&self.plan.opts, seed)
            .map_err(|why| Violation::new(Invariant::StoreConsistent, why))?;
        let (id, epoch, tick_every) = (s.id.clone(), s.epoch, s.tick_every);
        let term = started.term;
        self.invariants.restarted(server, &id, term)?;
        if let Some(store) = &started.store {
            self.report.restored_from_stores += 1;
            self.invariants
                .store(&id, "restored", &store.meta.position, &store.tables)?;
        }
        self.trace(|| match &started.store {
            Some(store) => format!(
                "{id} starts in term {term} from its store at {}@{}",
                store.meta.position.index, store.meta.position.term
            ),
            None => format!("{id} starts in term {term}"),
        });
        let at = self.now + self.rng.random_range(1..=tick_every);
        self.queue.schedule(at, Event::Tick { server, epoch });
        self.drain(server)
    }

    fn tick(&mut self, server: usize, epoch: u64) -> Result<(), Violation> {
        let s = &mut self.servers[server];
        if s.epoch != epoch || !s.is_running() {
            return Ok(());
        }
        s.tick();
        let at = self.now + s.tick_every;
        self.queue.schedule(at, Event::Tick { server, epoch });
        self.drain(server)
    }

    /// A packet arrives, with the others for the same server due within the plan's round
    /// window: the driver handles every command queued while it was busy (messages and
    /// snapshots alike) before it drains the node's outputs once.
    fn deliver(&mut self, packet: Packet) -> Result<(), Violation> {
        let Some(to) = self.arrive(&packet) else {
            return Ok(());
        };
        let id = self.servers[to].id.clone();
        let until = self.now + self.plan.round_window;
        let mut round = vec![packet];
        for event in self
            .queue
            .take_due(until, |e| matches!(e, Event::Deliver(p) if *p.to() == id))
        {
            if let Event::Deliver(packet) = event
                && self.arrive(&packet).is_some()
            {
                round.push(packet);
            }
        }
        if round.len() > 1 {
            self.report.batched_rounds += 1;
        }
        for packet in round {
            self.trace(|| format!("deliver {}", describe_packet(&packet)));
            match packet {
                Packet::Message(envelope) => self.servers[to].step(envelope),
                Packet::Snapshot(transfer) => self.install(to, &transfer)?,
            }
        }
        self.drain(to)
    }

    /// Whether a packet reaches its receiver now: the receiver's index if it is to be
    /// handled. Otherwise it is lost, or kept for a paused receiver that holds messages.
    fn arrive(&mut self, packet: &Packet) -> Option<usize> {
        let (Some(&from), Some(&to)) = (self.ids.get(packet.from()), self.ids.get(packet.to()))
        else {
            panic!("a message between unknown servers: {packet:?}");
        };
        let s = &mut self.servers[to];
        let lost = if !self.network.connected(from, to) {
            Some("partitioned")
        } else if !s.is_up() {
            Some("receiver down")
        } else if s.paused && s.hold_messages {
            s.held.push(packet.clone());
            return None;
        } else if s.paused {
            Some("receiver paused")
        } else {
            None
        };
        if let Some(reason) = lost {
            self.report.dropped += 1;
            self.trace(|| format!("lost ({reason}): {}", describe_packet(packet)));
            return None;
        }
        Some(to)
    }

    /// A whole store reached a running server: its driver hands it to the replica, which
    /// swaps it in once its disk has done the jobs before (the checks look at it then).
    fn install(&mut self, server: usize, transfer: &SnapshotTransfer) -> Result<(), Violation> {
        let s = &mut self.servers[server];
        let installed = s.install(transfer);
        let id = s.id.clone();
        let Some(meta) = installed else {
            self.report.stores_refused += 1;
            self.trace(|| format!("{id} does not take the store"));
            return Ok(());
        };
        self.report.stores_installed += 1;
        self.trace(|| format!("{id} takes the store at {}@{}", meta.index, meta.term));
        self.schedule_sync(server);
        Ok(())
    }

    fn sync(&mut self, server: usize, epoch: u64) -> Result<(), Violation> {
        let s = &mut self.servers[server];
        if s.epoch != epoch || !s.is_running() {
            return Ok(());
        }
        s.sync_scheduled = false;
        let synced = s.storage.sync();
        let (id, term) = (s.id.clone(), s.storage.durable_term());
        let report = synced.report.clone();
        self.report.compactions += synced.compactions;
        s.persisted(synced.report)
            .map_err(|why| Violation::new(Invariant::StoreConsistent, why))?;
        self.invariants.durable_term(server, &id, term)?;
        for (change, store) in &synced.stores {
            if *change == StoreChange::Flushed {
                self.report.flushes += 1;
            }
            if store.meta.position.index > 0 {
                self.invariants
                    .store(&id, change.as_str(), &store.meta.position, &store.tables)?;
            }
        }
        self.trace(|| format!("{id} syncs: {report:?}"));
        self.drain(server)
    }

    /// Carries out a server's outputs and routes their effects.
    pub(super) fn drain(&mut self, server: usize) -> Result<(), Violation> {
        let mut effects = Effects::default();
        let verbose = self.config.verbose;
        self.servers[server].process(verbose, &mut effects);
        for line in std::mem::take(&mut effects.trace) {
            self.trace(|| line);
        }
        if let Some((invariant, message)) = effects.broken {
            return Err(Violation::new(invariant, message));
        }
        self.note_elections(server, &effects.elections);
        for cause in &effects.elections {
            match cause {
                ElectionCause::ConnectionLost { .. } => {
                    self.report.elections_on_lost_connection += 1
                }
                ElectionCause::HandOver { .. } => self.report.elections_on_hand_over += 1,
                ElectionCause::Silent { .. } | ElectionCause::Bootstrap => {}
            }
        }
        for (role, term) in &effects.roles {
            if *role == crate::replication::RoleKind::Primary {
                self.report.elections += 1;
                let s = &self.servers[server];
                self.invariants
                    .became_primary(&s.id, s.incarnation, *term, s.storage.written())?;
                let id = s.id.clone();
                self.sticky_primary(&id, *term)?;
            }
        }
        for (read, applied) in std::mem::take(&mut effects.reads) {
            self.read_served(server, read, applied)?;
        }
        let s = &self.servers[server];
        let term = s.node().map_or(0, |n| n.term());
        for (entry, outcome) in &effects.applied {
            self.invariants.applied(&s.id, term, entry, outcome)?;
        }
        if verbose && !effects.applied.is_empty() {
            let id = s.id.clone();
            let list: Vec<String> = effects
                .applied
                .iter()
                .map(|(e, _)| format!("{}@{}", e.index, e.term))
                .collect();
            self.trace(|| format!("{id} applies [{}]", list.join(" ")));
        }
        for envelope in effects.sends {
            self.send(envelope)?;
        }
        for transfer in effects.transfers {
            self.send_snapshot(transfer);
        }
        if effects.wrote {
            self.schedule_sync(server);
        }
        for (waiter, reply) in effects.replies {
            self.client_reply(waiter, reply)?;
        }
        Ok(())
    }

    /// Makes the server's disk sync what was queued, soon, unless a sync is on its way.
    fn schedule_sync(&mut self, server: usize) {
        let s = &mut self.servers[server];
        if !s.sync_scheduled {
            s.sync_scheduled = true;
            let at = self.now + self.rng.random_range(0..=self.plan.max_sync_delay);
            let epoch = s.epoch;
            self.queue.schedule(at, Event::Sync { server, epoch });
        }
    }

    /// Puts a message on the network.
    pub(super) fn send(&mut self, envelope: Envelope) -> Result<(), Violation> {
        self.invariants.sent(&envelope)?;
        self.transmit(Packet::Message(envelope), 0);
        Ok(())
    }

    /// Puts a snapshot on the network.
    fn send_snapshot(&mut self, transfer: SnapshotTransfer) {
        self.report.stores_sent += 1;
        self.invariants.spoke(&transfer.from, transfer.term);
        let extra = transfer.transfer_time();
        self.transmit(Packet::Snapshot(transfer), extra);
    }

    /// Schedules the arrivals of a packet (none if lost, two if duplicated), `extra` later
    /// than the network's delays.
    fn transmit(&mut self, packet: Packet, extra: super::clock::Time) {
        let delays = self.network.delays(&mut self.rng);
        if delays.is_empty() {
            self.report.dropped += 1;
        }
        self.trace(|| format!("send {} (delays {delays:?})", describe_packet(&packet)));
        for delay in delays {
            self.queue
                .schedule(self.now + delay + extra, Event::Deliver(packet.clone()));
        }
    }

    // ---- The end -------------------------------------------------------------------------

    /// Settled: no client waiting; every server running with the primary's log, all of it
    /// committed and applied, and every server a member.
    fn quiet(&self) -> bool {
        if self.clients.iter().any(|c| c.started) {
            return false;
        }
        if !self.servers.iter().all(Server::is_running) {
            return false;
        }
        let primaries: Vec<&Server> = self
            .servers
            .iter()
            .filter(|s| s.node().is_some_and(|n| n.is_primary()))
            .collect();
        let [primary] = primaries.as_slice() else {
            return false;
        };
        let Some(lead) = primary.node().map(|n| n.status()) else {
            return false;
        };
        self.servers.iter().all(|s| {
            s.replica.as_ref().is_some_and(|r| {
                let status = r.node().status();
                status.term == lead.term
                    && status.last_index == lead.last_index
                    && status.commit_index == lead.last_index
                    && r.applied() == lead.last_index
                    && !r.is_installing()
                    && status.members.len() == self.servers.len()
            })
        })
    }

    /// The client history against the final boards, and equal application states.
    fn final_check(&self) -> Result<(), Violation> {
        let mut states = Vec::new();
        for s in &self.servers {
            let (Some(replica), Some(state)) = (&s.replica, s.contents()) else {
                return Err(Violation::new(
                    Invariant::Convergence,
                    format!("{} is down", s.id),
                ));
            };
            self.invariants
                .final_state(&s.id, replica.applied(), &state)?;
            states.push((s.id.clone(), state));
        }
        let boards: Vec<_> = states
            .iter()
            .map(|(id, state)| (id.clone(), board_of(state)))
            .collect();
        self.history
            .check(&boards)
            .map_err(|m| Violation::new(Invariant::ClientHistory, m))?;
        if let Some((other, _)) = states.iter().find(|(_, state)| *state != states[0].1) {
            return Err(Violation::new(
                Invariant::ClientHistory,
                format!(
                    "{} and {other} end with different application states",
                    states[0].0
                ),
            ));
        }
        Ok(())
    }

    /// One line on every server, for a stuck run.
    fn summary(&self) -> String {
        let servers: Vec<String> = self
            .servers
            .iter()
            .map(|s| match &s.replica {
                None => format!("{} down", s.id),
                Some(r) => {
                    let st = r.node().status();
                    format!(
                        "{} {}@{} last={} commit={} applied={} members={}{}",
                        s.id,
                        st.role.as_str(),
                        st.term,
                        st.last_index,
                        st.commit_index,
                        r.applied(),
                        st.members.len(),
                        if s.paused { " paused" } else { "" }
                    )
                }
            })
            .collect();
        let waiting: Vec<String> = self
            .clients
            .iter()
            .filter(|c| c.started)
            .map(|c| format!("{} {:?}", c.id, c.step))
            .collect();
        format!("{}; clients waiting: {waiting:?}", servers.join(", "))
    }

    /// Prints a trace line when the run is verbose; the line is only built then.
    pub(super) fn trace(&self, line: impl FnOnce() -> String) {
        if self.config.verbose {
            println!("[t={:>6} #{:>6}] {}", self.now, self.step, line());
        }
    }
}

/// A board as the clients read it.
fn board_of(state: &crate::app::MemTables) -> Vec<crate::api::MessageInfo> {
    crate::app::board(state, 1, u64::MAX)
        .expect("memory never fails")
        .into_iter()
        .map(|m| crate::api::MessageInfo {
            index: m.index,
            client_id: m.client_id,
            username: m.username,
            seq: m.seq,
            message: m.text,
        })
        .collect()
}
