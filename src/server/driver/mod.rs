//! The driver: one task that owns the replication node and the application state.
//!
//! Everything that touches the node goes through this task: HTTP handlers send it a
//! [`Command`] and await the answer on a oneshot, the ticker ticks it, the storage worker
//! reports what is durable. After each event it drains the node's outputs: writes go to the
//! storage worker (with the messages that must wait for them), appends go straight to the
//! peers, committed entries are applied here, and the answers go back to waiting handlers.
//! Nobody locks the node, and nothing here waits on disk or on the network.

mod snapshot;

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::notify::Notifier;
use super::peers::Peers;
use super::persist::{Batch, Job, Persisted};
use crate::api::{InitBackupResponse, SetBackupsRequest};
use crate::app::{Outcome, Request, State};
use crate::error::{Error, Result};
use crate::replication::{
    Entry, Envelope, Index, Message, Node, NodeId, Output, Payload, RoleKind, Term,
};
use crate::storage::Snapshot;
pub use snapshot::SnapshotSettings;

/// Requests to the driver.
pub enum Command {
    /// Replicate a change; answered with its outcome once committed and applied.
    Propose {
        request: Request,
        reply: oneshot::Sender<Result<Outcome>>,
    },
    /// Run a read against the current node and state.
    Query(Box<dyn FnOnce(&View<'_>) + Send>),
    /// Protocol messages from peers.
    Deliver(Vec<Envelope>),
    /// A server asks to join; answered once a configuration holding it is applied.
    Join {
        id: NodeId,
        reply: oneshot::Sender<Result<InitBackupResponse>>,
    },
    /// The primary told us the list of backups.
    SetBackups(SetBackupsRequest),
    /// A whole, checked snapshot from the primary.
    InstallSnapshot {
        from: NodeId,
        term: Term,
        bytes: Vec<u8>,
        snapshot: Snapshot,
    },
    /// An operator removes a server; answered once the new configuration is applied.
    Remove {
        id: NodeId,
        reply: oneshot::Sender<Result<Vec<NodeId>>>,
    },
}

/// What a query sees.
pub struct View<'a> {
    pub node: &'a Node,
    pub state: &'a State,
    pub applied: Index,
    /// This node is the primary and has applied everything committed before its term.
    pub primary_ready: bool,
}

impl View<'_> {
    /// Succeeds on a primary whose state is complete: a new primary first applies its own
    /// term's no-op, and with it every earlier entry, so that its checks (does the client
    /// exist, is the name taken, what is the password hash) never miss a committed change.
    pub fn ensure_primary(&self) -> Result<()> {
        if !self.node.is_primary() {
            return Err(self.node.not_primary());
        }
        if !self.primary_ready {
            return Err(Error::NoPrimary);
        }
        Ok(())
    }

    /// `refusal` if this primary may trust its state to refuse (it heard from a majority
    /// within half an election timeout), else "no primary, retry": a primary deposed without
    /// knowing it must not turn a client away on the strength of a state that moved on.
    pub fn refuse(&self, refusal: Error) -> Error {
        if self.node.has_fresh_quorum() {
            refusal
        } else {
            Error::NoPrimary
        }
    }
}

/// The handlers' side of the driver. Cheap to clone.
#[derive(Clone)]
pub struct DriverHandle {
    tx: mpsc::Sender<Command>,
}

impl DriverHandle {
    async fn send(&self, command: Command) -> Result<()> {
        self.tx
            .send(command)
            .await
            .map_err(|_| Error::Unavailable("the server is shutting down".to_string()))
    }

    /// Proposes a change and waits for its outcome.
    pub async fn propose(&self, request: Request) -> Result<Outcome> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Propose { request, reply }).await?;
        answer.await.map_err(|_| shutting_down())?
    }

    /// Runs `read` against the node and the applied state.
    pub async fn query<T, F>(&self, read: F) -> Result<T>
    where
        F: FnOnce(&View<'_>) -> T + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let query = move |view: &View<'_>| {
            let _ = reply.send(read(view));
        };
        self.send(Command::Query(Box::new(query))).await?;
        answer.await.map_err(|_| shutting_down())
    }

    /// Hands protocol messages to the node (does not wait for them to be processed).
    pub async fn deliver(&self, envelopes: Vec<Envelope>) -> Result<()> {
        self.send(Command::Deliver(envelopes)).await
    }

    /// Asks the node (which must be the primary) to add a server, and waits until it is a
    /// member.
    pub async fn join(&self, id: NodeId) -> Result<InitBackupResponse> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Join { id, reply }).await?;
        answer.await.map_err(|_| shutting_down())?
    }

    /// Removes a server from the configuration (primary only) and waits until the new
    /// configuration is applied; returns the remaining members.
    pub async fn remove(&self, id: NodeId) -> Result<Vec<NodeId>> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Remove { id, reply }).await?;
        answer.await.map_err(|_| shutting_down())?
    }

    /// Hands a received snapshot to the node (does not wait for it to be installed).
    pub async fn install_snapshot(
        &self,
        from: NodeId,
        term: Term,
        bytes: Vec<u8>,
        snapshot: Snapshot,
    ) -> Result<()> {
        self.send(Command::InstallSnapshot {
            from,
            term,
            bytes,
            snapshot,
        })
        .await
    }

    /// Records the primary's list of backups.
    pub async fn set_backups(&self, request: SetBackupsRequest) -> Result<()> {
        self.send(Command::SetBackups(request)).await
    }
}

fn shutting_down() -> Error {
    Error::Unavailable("the server is shutting down".to_string())
}

/// Most commands handled before the node's outputs are drained: proposals that arrive
/// together travel to the backups and to disk together.
const MAX_COMMANDS_PER_ROUND: usize = 1024;
/// Most ticks given at once after a stall: enough to expire every timeout.
const MAX_CATCH_UP_TICKS: u128 = 1000;
/// Capacity of the command queue; a full queue makes handlers wait (backpressure).
pub const COMMAND_QUEUE: usize = 8192;

/// A removal waiting for its configuration entry: (index, term proposed in, reply).
type PendingRemoval = (Index, Term, oneshot::Sender<Result<Vec<NodeId>>>);

/// The driver's state.
pub struct Driver {
    node: Node,
    state: State,
    applied: Index,
    /// The members of the latest applied configuration.
    applied_members: Vec<NodeId>,
    /// See [`View::primary_ready`].
    primary_ready: bool,
    /// The latest term (and vote) known to be on disk.
    durable_term: Term,
    /// Proposals waiting for their entry to be applied: index → (term proposed in, reply).
    pending: BTreeMap<Index, (Term, oneshot::Sender<Result<Outcome>>)>,
    joins: Vec<(NodeId, oneshot::Sender<Result<InitBackupResponse>>)>,
    /// Removals waiting for their configuration entry.
    removals: Vec<PendingRemoval>,
    /// The index of the latest snapshot saved or installed.
    snapshot_index: Index,
    /// A configuration without this server was applied: the driver stops.
    removed: bool,
    storage: mpsc::UnboundedSender<Job>,
    io: DriverIo,
}

/// The driver's ways out: to peers, to clients and backups, to stdout, and for snapshots.
pub struct DriverIo {
    pub peers: Peers,
    pub notifier: Notifier,
    pub printer: mpsc::UnboundedSender<String>,
    pub snapshots: SnapshotSettings,
}

impl Driver {
    /// `node` must have been restored from durable state (its term is on disk), and `state`
    /// is the application state at the node's snapshot (empty without one).
    pub fn new(
        node: Node,
        state: State,
        storage: mpsc::UnboundedSender<Job>,
        io: DriverIo,
    ) -> Driver {
        let durable_term = node.term();
        let snapshot = node.snapshot_base();
        Driver {
            node,
            state,
            applied: snapshot.index,
            applied_members: snapshot.members,
            primary_ready: false,
            durable_term,
            pending: BTreeMap::new(),
            joins: Vec::new(),
            removals: Vec::new(),
            snapshot_index: snapshot.index,
            removed: false,
            storage,
            io,
        }
    }

    /// A handle and the queue it feeds.
    pub fn channel() -> (DriverHandle, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        (DriverHandle { tx }, rx)
    }

    /// Runs until `shutdown` is cancelled, or storage fails.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut persisted: mpsc::UnboundedReceiver<Persisted>,
        mut removed: mpsc::UnboundedReceiver<String>,
        tick: Duration,
        shutdown: CancellationToken,
    ) -> Result<()> {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The node's clock follows real time: after a stall (a paused process, an overloaded
        // machine) the ticks it missed are given at once, so its timeouts and the freshness
        // of what it heard are measured in real time, not in ticks that happened to run.
        let mut clock = tokio::time::Instant::now();
        // Outputs from startup (e.g. a bootstrap's first configuration and election).
        self.process_outputs()?;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                now = ticker.tick() => {
                    let due = (now.saturating_duration_since(clock).as_micros()
                        / tick.as_micros().max(1))
                    .clamp(1, MAX_CATCH_UP_TICKS);
                    for _ in 0..due {
                        self.node.tick();
                    }
                    clock = now;
                }
                Some(command) = commands.recv() => {
                    self.handle(command);
                    for _ in 1..MAX_COMMANDS_PER_ROUND {
                        match commands.try_recv() {
                            Ok(command) => self.handle(command),
                            Err(_) => break,
                        }
                    }
                }
                Some(why) = removed.recv() => {
                    // The primary says we are no longer a member: stop, rather than campaign
                    // forever or come back unnoticed.
                    error!("{why}");
                    self.fail_pending(|| Error::Unavailable("this server was removed".to_string()));
                    return Err(Error::Forbidden(why));
                }
                Some(event) = persisted.recv() => match event {
                    Persisted::Durable { log, term } => {
                        if let Some((index, term)) = log {
                            self.node.persisted(index, term);
                        }
                        if let Some(term) = term {
                            self.durable_term = self.durable_term.max(term);
                        }
                    }
                    Persisted::Snapshot(meta) => self.node.compact(meta.index),
                    Persisted::Failed(err) => {
                        self.fail_pending(|| Error::Unavailable("storage failed".to_string()));
                        return Err(err);
                    }
                },
            }
            if let Err(err) = self.process_outputs() {
                self.fail_pending(|| Error::Unavailable("storage failed".to_string()));
                return Err(err);
            }
            if self.removed {
                self.fail_pending(|| Error::Unavailable("this server was removed".to_string()));
                return Err(Error::Forbidden(
                    "this server was removed from the cluster; start it with an empty data dir and --join to add it again"
                        .to_string(),
                ));
            }
        }
        self.fail_pending(shutting_down);
        Ok(())
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Propose { request, reply } => match self.node.propose(request.encode()) {
                Ok(index) => {
                    self.pending.insert(index, (self.node.term(), reply));
                }
                Err(err) => {
                    let _ = reply.send(Err(err));
                }
            },
            Command::Query(read) => read(&View {
                node: &self.node,
                state: &self.state,
                applied: self.applied,
                primary_ready: self.primary_ready,
            }),
            Command::Deliver(envelopes) => {
                for envelope in envelopes {
                    self.node.step(envelope);
                }
            }
            Command::Join { id, reply } => {
                if let Err(err) = self.node.add_learner(id.clone()) {
                    let _ = reply.send(Err(err));
                } else if self.applied_members.contains(&id) {
                    let _ = reply.send(Ok(self.join_answer()));
                } else {
                    info!(server = %id, "server asks to join; bringing it up to date");
                    self.joins.push((id, reply));
                }
            }
            Command::Remove { id, reply } => match self.node.remove_member(&id) {
                Ok(index) => self.removals.push((index, self.node.term(), reply)),
                Err(err) => {
                    let _ = reply.send(Err(err));
                }
            },
            Command::InstallSnapshot {
                from,
                term,
                bytes,
                snapshot,
            } => self.install_snapshot(from, term, bytes, snapshot),
            Command::SetBackups(request) => {
                info!(primary = %request.primary, term = request.term, backups = ?request.backups, "primary announced the backups");
            }
        }
    }

    /// Carries out the node's outputs in order. Fails only if the storage worker is gone.
    fn process_outputs(&mut self) -> Result<()> {
        let mut batch = Batch::default();
        for output in self.node.ready() {
            match output {
                Output::Write(write) => batch.writes.push(write),
                // Appends carry entries, not promises about our disk: they need not wait for
                // our fsync (the primary counts its own copy only once it is durable). Their
                // term must be on disk, though: a primary elected by its own vote alone
                // (a cluster of one) that crashed before its term was durable could be
                // elected again in that term with another log.
                Output::Send(envelope)
                    if matches!(envelope.message, Message::Append { .. })
                        && envelope.term <= self.durable_term =>
                {
                    self.io.peers.send(envelope)
                }
                Output::Send(envelope) => batch.sends.push(envelope),
                Output::Apply(entries) => self.apply(entries),
                Output::SendSnapshot { to } => self.send_snapshot(to),
                Output::RoleChanged {
                    role,
                    term,
                    primary,
                } => self.role_changed(role, term, primary),
            }
        }
        if !batch.is_empty() {
            self.store(Job::Batch(batch))?;
        }
        self.maybe_snapshot()
    }

    /// Hands a job to the storage worker.
    fn store(&self, job: Job) -> Result<()> {
        self.storage
            .send(job)
            .map_err(|_| Error::Internal("the storage worker stopped".to_string()))
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            assert_eq!(
                entry.index,
                self.applied + 1,
                "entries are applied in order, once"
            );
            self.applied = entry.index;
            let result = match entry.payload {
                Payload::Noop => {
                    // A new primary's no-op is applied: everything before it is too, so the
                    // client list is complete. Now tell everyone who the primary is.
                    if self.node.is_primary() && entry.term == self.node.term() {
                        self.primary_ready = true;
                        self.announce();
                    }
                    continue;
                }
                Payload::Config(members) => {
                    self.config_applied(entry.index, entry.term, members);
                    continue;
                }
                Payload::Command(bytes) => Request::decode(&bytes).map(|request| {
                    let applied = self.state.apply(&request);
                    if let Some(message) = applied.posted {
                        let line = format!(
                            "[{}] {}: {}",
                            self.node.id(),
                            message.username,
                            message.message
                        );
                        let _ = self.io.printer.send(line);
                    }
                    applied.outcome
                }),
            };
            if let Err(err) = &result {
                error!(index = entry.index, %err, "skipping an undecodable command");
            }
            if let Some((term, reply)) = self.pending.remove(&entry.index) {
                // Another primary's entry took our index: ours was never committed.
                let answer = if term == entry.term {
                    result
                } else {
                    Err(self.node.not_primary())
                };
                let _ = reply.send(answer);
            }
        }
    }

    fn config_applied(&mut self, index: Index, term: Term, members: Vec<NodeId>) {
        info!(?members, "configuration applied");
        let me = self.node.id();
        if self.applied_members.contains(me) && !members.contains(me) {
            error!("this server was removed from the cluster; it no longer takes part");
            self.removed = true;
        }
        self.applied_members = members;
        for (waited, proposed_in, reply) in std::mem::take(&mut self.removals) {
            if waited == index {
                let _ = reply.send(if proposed_in == term {
                    Ok(self.applied_members.clone())
                } else {
                    Err(self.node.not_primary())
                });
            } else {
                self.removals.push((waited, proposed_in, reply));
            }
        }
        let (joined, waiting) = std::mem::take(&mut self.joins)
            .into_iter()
            .partition(|(id, _)| self.applied_members.contains(id));
        self.joins = waiting;
        let joined: Vec<_> = joined;
        for (id, reply) in joined {
            info!(server = %id, "server joined as a backup");
            let _ = reply.send(Ok(self.join_answer()));
        }
        if self.node.is_primary() {
            self.io
                .notifier
                .set_backups(self.node.term(), &self.applied_members);
        }
    }

    fn join_answer(&self) -> InitBackupResponse {
        InitBackupResponse {
            primary: self.node.id().clone(),
            term: self.node.term(),
            members: self.applied_members.clone(),
        }
    }

    /// Tells every backup the list of backups and every known client the new primary.
    fn announce(&self) {
        let term = self.node.term();
        let clients = self.state.client_addresses();
        info!(term, clients = clients.len(), "announcing the new primary");
        self.io.notifier.set_backups(term, &self.node.members());
        self.io.notifier.new_primary(term, clients);
    }

    fn role_changed(&mut self, role: RoleKind, term: Term, primary: Option<NodeId>) {
        info!(role = role.as_str(), term, primary = ?primary, "role changed");
        // A new primary is ready once its no-op is applied (see `apply`).
        self.primary_ready = false;
        if role != RoleKind::Primary {
            let not_primary = self.node.not_primary();
            self.fail_pending(|| not_primary.clone());
        }
    }

    fn fail_pending(&mut self, error: impl Fn() -> Error) {
        if !self.pending.is_empty() {
            debug!(count = self.pending.len(), "failing pending proposals");
        }
        for (_, (_, reply)) in std::mem::take(&mut self.pending) {
            let _ = reply.send(Err(error()));
        }
        for (id, reply) in std::mem::take(&mut self.joins) {
            warn!(server = %id, "join not completed");
            let _ = reply.send(Err(error()));
        }
        for (_, _, reply) in std::mem::take(&mut self.removals) {
            let _ = reply.send(Err(error()));
        }
    }
}

/// Starts the thread that prints applied messages on stdout, so that a slow reader of our
/// stdout can never stall the driver.
pub fn spawn_printer() -> std::io::Result<mpsc::UnboundedSender<String>> {
    use std::io::Write as _;
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    std::thread::Builder::new()
        .name("understudy-stdout".to_string())
        .spawn(move || {
            let stdout = std::io::stdout();
            while let Some(line) = rx.blocking_recv() {
                let mut out = stdout.lock();
                let _ = writeln!(out, "{line}");
                while let Ok(line) = rx.try_recv() {
                    let _ = writeln!(out, "{line}");
                }
                let _ = out.flush();
            }
        })?;
    Ok(tx)
}
