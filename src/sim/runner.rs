//! The event loop of one run: pops the next event, lets the servers, the network, the
//! nemesis and the clients react, and checks safety after every step.
//!
//! Every random choice comes from one generator seeded with the run's seed, in an order
//! fixed by the event queue, so a seed always replays the same run.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::clients::{Client, Step};
use super::clock::{EventQueue, Time};
use super::faults::{Fault, Plan, TICK};
use super::history::History;
use super::invariants::Invariants;
use super::network::{Network, describe};
use super::server::{Effects, Server, Submitted, Waiter};
use super::storage::Storage;
use super::{Failure, Invariant, Report, SimConfig, Violation};
use crate::app::{Outcome, Rejection};
use crate::error::Error;
use crate::replication::{Entry, Envelope, HardState, NodeId, Payload};

/// Most events the healing phase may take to settle before the run counts as stuck.
const HEALING_STEPS: u64 = 40_000;

/// Something due to happen.
enum Event {
    /// A server's clock ticks (void if the server crashed or paused since).
    Tick { server: usize, epoch: u64 },
    Deliver(Envelope),
    /// A server's disk syncs what was written.
    Sync { server: usize, epoch: u64 },
    /// A client wakes up: to send, or to give up waiting.
    Client(usize),
    Nemesis,
    Restart { server: usize, epoch: u64 },
    Resume { server: usize, epoch: u64 },
    /// Ends partition number `.0`, unless a newer one replaced it.
    Heal(u64),
    /// Joining mode: servers not yet members ask the primary to take them in.
    Join,
}

/// One run in progress.
pub struct Sim {
    config: SimConfig,
    plan: Plan,
    rng: ChaCha8Rng,
    now: Time,
    step: u64,
    queue: EventQueue<Event>,
    servers: Vec<Server>,
    ids: BTreeMap<NodeId, usize>,
    network: Network,
    clients: Vec<Client>,
    invariants: Invariants,
    history: History,
    healing: bool,
    partitions: u64,
    report: Report,
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
                Server::new(id.clone(), storage, tick_every, plan.join && i == 0)
            })
            .collect();
        let clients = (0..plan.clients)
            .map(|c| Client::new(c + 1, rng.random_range(0..config.nodes)))
            .collect();
        let mut report = Report {
            joined: plan.join,
            strict_gating: plan.strict_gating,
            ..Report::default()
        };
        report.steps = 0;
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
        if self.plan.join {
            self.queue.schedule(3 * TICK, Event::Join);
        }

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
        self.report.steps = self.step;
        self.report.time = self.now;
        self.report.committed = self.invariants.commit_index();
        self.report.acknowledged = self.history.acknowledged_count();
        Ok(self.report.clone())
    }

    /// One step: the next event and its consequences, then the per-step checks.
    fn next(&mut self) -> Result<(), Violation> {
        let Some((at, event)) = self.queue.pop() else {
            return Err(Violation::new(Invariant::Convergence, "nothing left to happen"));
        };
        self.now = at;
        self.step += 1;
        match event {
            Event::Tick { server, epoch } => self.tick(server, epoch)?,
            Event::Deliver(envelope) => self.deliver(envelope)?,
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
        }
        for (i, server) in self.servers.iter().enumerate() {
            if let Some(node) = &server.node {
                self.invariants.term_now(i, &server.id, node.term())?;
            }
        }
        Ok(())
    }

    // ---- Servers -------------------------------------------------------------------------

    /// Starts a server from its disk (first start or restart).
    fn start(&mut self, server: usize) -> Result<(), Violation> {
        let seed = self.rng.random::<u64>();
        let s = &mut self.servers[server];
        s.start(&self.plan.opts, seed);
        let term = s.node.as_ref().map_or(0, |n| n.term());
        let (id, epoch, tick_every) = (s.id.clone(), s.epoch, s.tick_every);
        self.invariants.restarted(server, &id, term)?;
        self.trace(|| format!("{id} starts in term {term}"));
        let at = self.now + self.rng.random_range(1..=tick_every);
        self.queue.schedule(at, Event::Tick { server, epoch });
        self.drain(server)
    }

    fn tick(&mut self, server: usize, epoch: u64) -> Result<(), Violation> {
        let s = &mut self.servers[server];
        if s.epoch != epoch || !s.is_running() {
            return Ok(());
        }
        if let Some(node) = s.node.as_mut() {
            node.tick();
        }
        let at = self.now + s.tick_every;
        self.queue.schedule(at, Event::Tick { server, epoch });
        self.drain(server)
    }

    fn deliver(&mut self, envelope: Envelope) -> Result<(), Violation> {
        let (Some(&from), Some(&to)) = (self.ids.get(&envelope.from), self.ids.get(&envelope.to))
        else {
            panic!("a message between unknown servers: {envelope:?}");
        };
        let s = &mut self.servers[to];
        let lost = if !self.network.connected(from, to) {
            Some("partitioned")
        } else if !s.is_up() {
            Some("receiver down")
        } else if s.paused && s.hold_messages {
            s.held.push(envelope);
            return Ok(());
        } else if s.paused {
            Some("receiver paused")
        } else {
            None
        };
        if let Some(reason) = lost {
            self.report.dropped += 1;
            self.trace(|| format!("lost ({reason}): {}", describe(&envelope)));
            return Ok(());
        }
        self.trace(|| format!("deliver {}", describe(&envelope)));
        if let Some(node) = self.servers[to].node.as_mut() {
            node.step(envelope);
        }
        self.drain(to)
    }

    fn sync(&mut self, server: usize, epoch: u64) -> Result<(), Violation> {
        let s = &mut self.servers[server];
        if s.epoch != epoch || !s.is_running() {
            return Ok(());
        }
        s.sync_scheduled = false;
        let synced = s.storage.sync();
        let (id, term) = (s.id.clone(), s.storage.durable_term());
        if let (Some((index, entry_term)), Some(node)) = (synced.persisted, s.node.as_mut()) {
            node.persisted(index, entry_term);
        }
        self.invariants.durable_term(server, &id, term)?;
        self.trace(|| format!("{id} syncs: durable to {:?}", synced.persisted));
        for envelope in synced.released {
            self.send(envelope)?;
        }
        self.drain(server)
    }

    /// Carries out a server's outputs and routes their effects.
    fn drain(&mut self, server: usize) -> Result<(), Violation> {
        let mut effects = Effects::default();
        let verbose = self.config.verbose;
        self.servers[server].process(self.plan.strict_gating, verbose, &mut effects);
        for line in std::mem::take(&mut effects.trace) {
            self.trace(|| line);
        }
        if let Some((invariant, message)) = effects.broken {
            return Err(Violation::new(invariant, message));
        }
        let s = &self.servers[server];
        for (role, term) in &effects.roles {
            if *role == crate::replication::RoleKind::Primary {
                self.report.elections += 1;
                self.invariants
                    .became_primary(&s.id, s.incarnation, *term, s.storage.written())?;
            }
        }
        for (entry, outcome) in &effects.applied {
            self.invariants.applied(&s.id, entry, outcome)?;
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
        let s = &mut self.servers[server];
        if effects.wrote && !s.sync_scheduled {
            s.sync_scheduled = true;
            let at = self.now + self.rng.random_range(0..=self.plan.max_sync_delay);
            let epoch = s.epoch;
            self.queue.schedule(at, Event::Sync { server, epoch });
        }
        for (waiter, reply) in effects.replies {
            self.client_reply(waiter, reply)?;
        }
        Ok(())
    }

    /// Puts a message on the network.
    fn send(&mut self, envelope: Envelope) -> Result<(), Violation> {
        self.invariants.sent(&envelope)?;
        let delays = self.network.delays(&mut self.rng);
        if delays.is_empty() {
            self.report.dropped += 1;
        }
        self.trace(|| format!("send {} (delays {delays:?})", describe(&envelope)));
        for delay in delays {
            self.queue
                .schedule(self.now + delay, Event::Deliver(envelope.clone()));
        }
        Ok(())
    }

    // ---- Faults --------------------------------------------------------------------------

    fn nemesis(&mut self) -> Result<(), Violation> {
        if self.healing {
            return Ok(());
        }
        let servers = self.servers.len();
        match self.plan.next_fault(&mut self.rng, servers) {
            Fault::Crash(server) if self.servers[server].is_up() => self.crash(server)?,
            Fault::Pause(server) if self.servers[server].is_running() => self.pause(server),
            Fault::Partition if !self.network.is_partitioned() => {
                let groups = self.network.partition(servers, &mut self.rng);
                self.partitions += 1;
                self.report.partitions += 1;
                self.trace(|| format!("partition {groups:?}"));
                let at = self.now + self.rng.random_range(2 * TICK..=2 * self.plan.max_outage);
                self.queue.schedule(at, Event::Heal(self.partitions));
            }
            _ => {}
        }
        let every = self.plan.nemesis_every;
        let at = self.now + self.rng.random_range(every / 2..=every * 3 / 2);
        self.queue.schedule(at, Event::Nemesis);
        Ok(())
    }

    /// Kills a server: its process, its waiting messages and a random tail of its unsynced
    /// writes are gone.
    fn crash(&mut self, server: usize) -> Result<(), Violation> {
        self.report.crashes += 1;
        let rng = &mut self.rng;
        let s = &mut self.servers[server];
        let mut kept = (0, 0);
        s.crash(|total| {
            kept = (rng.random_range(0..=total), total);
            kept.0
        });
        let (id, term, epoch) = (s.id.clone(), s.storage.durable_term(), s.epoch);
        self.invariants.durable_term(server, &id, term)?;
        self.trace(|| {
            format!(
                "{id} crashes; {} of {} unsynced writes survive",
                kept.0, kept.1
            )
        });
        let at = self.now + self.rng.random_range(TICK..=self.plan.max_outage);
        self.queue.schedule(at, Event::Restart { server, epoch });
        Ok(())
    }

    /// Freezes a server: no ticks, no syncs; messages to it wait or are lost.
    fn pause(&mut self, server: usize) {
        self.report.pauses += 1;
        let hold = self.rng.random_bool(0.5);
        let s = &mut self.servers[server];
        s.paused = true;
        s.hold_messages = hold;
        s.epoch += 1;
        s.sync_scheduled = false;
        let (id, epoch) = (s.id.clone(), s.epoch);
        self.trace(|| format!("{id} pauses (messages {})", if hold { "wait" } else { "lost" }));
        let at = self.now + self.rng.random_range(TICK..=self.plan.max_outage);
        self.queue.schedule(at, Event::Resume { server, epoch });
    }

    /// Thaws a paused server where it stopped: its timers run again, its disk syncs what was
    /// written, and the messages that waited arrive.
    fn resume(&mut self, server: usize) {
        let s = &mut self.servers[server];
        s.paused = false;
        s.epoch += 1;
        let (id, epoch, tick_every) = (s.id.clone(), s.epoch, s.tick_every);
        let held = std::mem::take(&mut s.held);
        let unsynced = s.storage.has_unsynced();
        if unsynced {
            s.sync_scheduled = true;
        }
        self.trace(|| format!("{id} resumes; {} messages waited", held.len()));
        self.queue
            .schedule(self.now + self.rng.random_range(1..=tick_every), Event::Tick {
                server,
                epoch,
            });
        if unsynced {
            let at = self.now + self.rng.random_range(0..=self.plan.max_sync_delay);
            self.queue.schedule(at, Event::Sync { server, epoch });
        }
        for envelope in held {
            let at = self.now + self.rng.random_range(1..=TICK);
            self.queue.schedule(at, Event::Deliver(envelope));
        }
    }

    /// Joining mode: every running server that is not a member asks the primary (the one of
    /// the highest term, as redirects would find it) to take it in.
    fn join(&mut self) -> Result<(), Violation> {
        let primary = (0..self.servers.len())
            .filter(|&p| self.servers[p].is_running())
            .filter_map(|p| {
                let node = self.servers[p].node.as_ref()?;
                node.is_primary().then(|| (node.term(), p))
            })
            .max()
            .map(|(_, p)| p);
        if let Some(p) = primary {
            let members = self.servers[p].node.as_ref().map(|n| n.members());
            let members = members.unwrap_or_default();
            for j in 0..self.servers.len() {
                let id = self.servers[j].id.clone();
                if j == p
                    || !self.servers[j].is_running()
                    || members.contains(&id)
                    || !self.network.connected(j, p)
                {
                    continue;
                }
                if let Some(node) = self.servers[p].node.as_mut() {
                    let _ = node.add_learner(id.clone());
                }
                let primary_id = self.servers[p].id.clone();
                self.trace(|| format!("{id} asks {primary_id} to join"));
            }
            self.drain(p)?;
        }
        let at = self.now + self.rng.random_range(3 * TICK..=8 * TICK);
        self.queue.schedule(at, Event::Join);
        Ok(())
    }

    /// Ends the faulty phase: the network heals and calms down, every server runs again.
    fn heal_all(&mut self) -> Result<(), Violation> {
        self.trace(|| "healing: no more faults".to_string());
        self.healing = true;
        self.network.calm();
        for server in 0..self.servers.len() {
            if !self.servers[server].is_up() {
                self.start(server)?;
            } else if self.servers[server].paused {
                self.resume(server);
            }
        }
        Ok(())
    }

    // ---- Clients -------------------------------------------------------------------------

    fn client_wake(&mut self, c: usize) -> Result<(), Violation> {
        let servers = self.servers.len();
        let client = &mut self.clients[c];
        if let Some(attempt) = client.attempt {
            if self.now < attempt.deadline {
                return Ok(());
            }
            self.report.timeouts += 1;
            client.attempt = None;
            client.another_server(servers, &mut self.rng);
        }
        if client.step == Step::Done {
            return Ok(());
        }
        if self.healing && !client.started {
            client.step = Step::Done;
            return Ok(());
        }
        let Some(request) = client.request() else {
            return Ok(());
        };
        if let Step::Message(seq) = client.step {
            self.history
                .sent(&client.id, seq, &client.text(seq), self.now);
        }
        let server = client.target;
        let attempt = client.begin(server, self.now);
        let client_id = client.id.clone();
        let waiter = Waiter {
            client: c,
            attempt: attempt.id,
        };
        let s = &mut self.servers[server];
        if !s.is_up() {
            // Connection refused: try another server soon.
            client.attempt = None;
            client.another_server(servers, &mut self.rng);
            let at = self.now + self.rng.random_range(1..=TICK);
            self.queue.schedule(at, Event::Client(c));
            return Ok(());
        }
        if s.paused {
            // No answer: the client waits until its timeout.
            self.queue.schedule(attempt.deadline, Event::Client(c));
            return Ok(());
        }
        let step = client.step;
        let submitted = s.submit(request, waiter);
        let id = s.id.clone();
        match submitted {
            Submitted::Pending(index) => {
                self.trace(|| format!("{client_id} {step:?} proposed on {id} at {index}"));
                self.queue.schedule(attempt.deadline, Event::Client(c));
                self.drain(server)
            }
            Submitted::Answered(outcome) => {
                self.trace(|| format!("{client_id} {step:?} answered by {id}: {outcome:?}"));
                self.client_done(c, outcome)
            }
            Submitted::Refused(err) => {
                self.trace(|| format!("{client_id} {step:?} refused by {id}: {err}"));
                self.client_refused(c, err)
            }
        }
    }

    /// An answer to a proposal; only the client's current attempt counts.
    fn client_reply(
        &mut self,
        waiter: Waiter,
        reply: crate::Result<Outcome>,
    ) -> Result<(), Violation> {
        let client = &self.clients[waiter.client];
        if client.attempt.is_none_or(|a| a.id != waiter.attempt) {
            return Ok(());
        }
        let client_id = client.id.clone();
        self.trace(|| format!("{client_id} attempt {} answered: {reply:?}", waiter.attempt));
        match reply {
            Ok(outcome) => self.client_done(waiter.client, outcome),
            Err(err) => self.client_refused(waiter.client, err),
        }
    }

    /// The current step got its outcome: check it, record an acknowledged message, move on.
    fn client_done(&mut self, c: usize, outcome: Outcome) -> Result<(), Violation> {
        let client = &mut self.clients[c];
        let posted = client
            .judge(&outcome)
            .map_err(|m| Violation::new(Invariant::ClientHistory, m))?;
        if let (Some(index), Step::Message(seq)) = (posted, client.step) {
            self.history
                .acknowledged(&client.id, seq, index, self.now)
                .map_err(|m| Violation::new(Invariant::ClientHistory, m))?;
        }
        client.advance();
        let at = self.now + self.rng.random_range(0..=4 * TICK);
        self.queue.schedule(at, Event::Client(c));
        Ok(())
    }

    /// A refusal: go where the server points, or wait and try again.
    fn client_refused(&mut self, c: usize, err: Error) -> Result<(), Violation> {
        let servers = self.servers.len();
        let client = &mut self.clients[c];
        client.attempt = None;
        let delay = match err {
            Error::NotPrimary { primary } => {
                client.target = self.ids[&primary];
                self.rng.random_range(1..=TICK)
            }
            Error::NoPrimary => {
                client.another_server(servers, &mut self.rng);
                self.rng.random_range(2 * TICK..=6 * TICK)
            }
            // A retried registration finds the user registered by an earlier attempt.
            Error::Conflict(m) if client.step == Step::Register => {
                return self.client_done(c, Outcome::Rejected(Rejection::Conflict(m)));
            }
            // The pre-check ran against an applied state that lags (see `clients.rs`).
            Error::NotFound(_) | Error::Unauthorized(_)
                if matches!(client.step, Step::Login | Step::Message(_)) =>
            {
                self.report.stale_prechecks += 1;
                self.rng.random_range(TICK..=5 * TICK)
            }
            other => {
                return Err(Violation::new(
                    Invariant::ClientHistory,
                    format!("client {} refused at {:?}: {other}", client.id, client.step),
                ));
            }
        };
        self.queue.schedule(self.now + delay, Event::Client(c));
        Ok(())
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
            .filter(|s| s.node.as_ref().is_some_and(|n| n.is_primary()))
            .collect();
        let [primary] = primaries.as_slice() else {
            return false;
        };
        let Some(lead) = primary.node.as_ref().map(|n| n.status()) else {
            return false;
        };
        self.servers.iter().all(|s| {
            s.node.as_ref().is_some_and(|n| {
                let status = n.status();
                status.term == lead.term
                    && status.last_index == lead.last_index
                    && status.commit_index == lead.last_index
                    && s.applied == lead.last_index
                    && status.members.len() == self.servers.len()
            })
        })
    }

    /// The client history against the final boards, and equal application states.
    fn final_check(&self) -> Result<(), Violation> {
        let boards: Vec<_> = self
            .servers
            .iter()
            .map(|s| (s.id.clone(), s.state.messages(0, u64::MAX)))
            .collect();
        self.history
            .check(&boards)
            .map_err(|m| Violation::new(Invariant::ClientHistory, m))?;
        if let Some(other) = self.servers.iter().find(|s| s.state != self.servers[0].state) {
            return Err(Violation::new(
                Invariant::ClientHistory,
                format!(
                    "{} and {} end with different application states",
                    self.servers[0].id, other.id
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
            .map(|s| match &s.node {
                None => format!("{} down", s.id),
                Some(n) => {
                    let st = n.status();
                    format!(
                        "{} {}@{} last={} commit={} applied={} members={}{}",
                        s.id,
                        st.role.as_str(),
                        st.term,
                        st.last_index,
                        st.commit_index,
                        s.applied,
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
    fn trace(&self, line: impl FnOnce() -> String) {
        if self.config.verbose {
            println!("[t={:>6} #{:>6}] {}", self.now, self.step, line());
        }
    }
}
