//! One simulated server: the real [`Replica`] (node, application state, checks, gating,
//! flushing, compaction, state transfer, restore), with simulated disk, network and clock
//! around it. What is here is what the tokio driver (`src/server/driver/`) does with the
//! replica's outputs, and nothing of the replica's own rules:
//!
//! - `Persist` jobs go to the simulated disk (`storage.rs`), which carries them out at the
//!   next sync and reports what is done, as the storage worker does;
//! - `Send` goes to the network; `SendState` sends a copy of the store as it is on disk;
//! - `Reply` goes to the waiting client;
//! - a store received whole is handed to the replica and, if taken, kept until the replica's
//!   `Install` job asks for it, as the driver keeps the file's path.

use std::collections::VecDeque;

use super::clock::Time;
use super::network::SnapshotTransfer;
use super::storage::{SimStore, Storage, StoreFile};
use crate::app::{MemTables, Outcome, Request};
use crate::error::{Error, Result};
use crate::replica::{Answer, Job, Output, Replica, Settings, Submitted as Replied};
use crate::replication::{
    ElectionCause, Entry, Envelope, Index, Node, NodeId, Options, RoleKind, SnapshotMeta, Term,
    Write,
};

/// Who waits for a proposal: a client and its attempt number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiter {
    pub client: usize,
    pub attempt: u64,
}

/// Who waits for the replica: a client's proposal, or a consistent read (by its number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    Client(Waiter),
    Read(u64),
}

/// The replica as the simulation runs it. Membership changes (joins, removals) and
/// hand-overs have no waiter: the nemesis asks again until they are done.
pub type SimReplica = Replica<SimStore, Option<Caller>>;

/// What one round of carrying out outputs produced, for the network, the checks and the
/// clients.
#[derive(Default)]
pub struct Effects {
    /// Messages that leave now.
    pub sends: Vec<Envelope>,
    /// Whether a job was queued on the disk (a sync must follow).
    pub wrote: bool,
    /// Applied entries, with the application's outcome for commands.
    pub applied: Vec<(Entry, Option<Outcome>)>,
    /// Role changes, in order.
    pub roles: Vec<(RoleKind, Term)>,
    /// Answers to waiting proposals.
    pub replies: Vec<(Waiter, Result<Outcome>)>,
    /// Consistent reads served, with the applied index of the state they were served from.
    pub reads: Vec<(u64, Index)>,
    /// Elections started, with their causes.
    pub elections: Vec<ElectionCause>,
    /// Stores that leave now.
    pub transfers: Vec<SnapshotTransfer>,
    /// Trace lines (only when tracing).
    pub trace: Vec<String>,
    /// What a correct replica never asks for (a log write with a gap), or a store failure.
    pub broken: Option<(super::Invariant, String)>,
}

/// The answer of a server to a client request.
pub enum Submitted {
    /// Proposed at this index; the answer comes when it is applied.
    Pending(Index),
    /// The state refuses it; the refusal comes after a confirmation round.
    Confirming,
    /// Answered at once (a retry of a message already on the board).
    Answered(Outcome),
    /// Refused (not the primary, or the check said no).
    Refused(Error),
}

/// What a start found on the disk.
pub struct Started {
    /// The term the node resumed in (before any bootstrap election).
    pub term: Term,
    /// The store it resumed from, if it held anything.
    pub store: Option<StoreFile>,
}

/// A server and what its driver keeps around its replica.
pub struct Server {
    pub id: NodeId,
    /// `None` while crashed.
    pub replica: Option<SimReplica>,
    pub storage: Storage,
    settings: Settings,
    /// The received stores the replica took, in the order of its `Install` jobs.
    incoming: VecDeque<StoreFile>,
    /// A paused server is frozen: no ticks, no syncs, no messages.
    pub paused: bool,
    /// While paused: keep arriving messages for later (else they are lost).
    pub hold_messages: bool,
    pub held: Vec<super::network::Packet>,
    /// Changes on every crash, restart, pause and resume; timers of an older epoch are void.
    pub epoch: u64,
    /// Counts restarts: a server re-elected in the same term by a new incarnation is caught.
    pub incarnation: u64,
    pub sync_scheduled: bool,
    /// This server's clock: simulated time between its ticks.
    pub tick_every: Time,
    /// Joining mode: the server that starts the cluster (it bootstraps on an empty disk).
    pub bootstraps: bool,
}

impl Server {
    pub fn new(
        id: NodeId,
        storage: Storage,
        tick_every: Time,
        bootstraps: bool,
        settings: Settings,
    ) -> Server {
        Server {
            id,
            replica: None,
            storage,
            settings: Settings {
                observe: true,
                ..settings
            },
            incoming: VecDeque::new(),
            paused: false,
            hold_messages: false,
            held: Vec::new(),
            epoch: 0,
            incarnation: 0,
            sync_scheduled: false,
            tick_every,
            bootstraps,
        }
    }

    /// Starts (or restarts) the server from its disk, as `server::serve` does: the replica
    /// restores from the store and the log; an empty disk on the bootstrapping server starts
    /// a new cluster. Fails on a disk that the replica refuses.
    pub fn start(&mut self, opts: &Options, seed: u64) -> std::result::Result<Started, String> {
        let log = self.storage.durable_log().clone();
        let store = self.storage.store();
        let contents = store.contents();
        let mut replica = Replica::restore(
            self.id.clone(),
            store,
            log.hard_state,
            log.base,
            log.entries,
            opts.clone(),
            self.settings.clone(),
            seed,
        )
        .map_err(|err| format!("{} cannot restart: {err}", self.id))?;
        let term = replica.node().term();
        if replica.is_fresh() && self.bootstraps {
            replica.bootstrap();
        }
        self.replica = Some(replica);
        self.incoming.clear();
        self.paused = false;
        self.held.clear();
        self.epoch += 1;
        self.incarnation += 1;
        self.sync_scheduled = false;
        Ok(Started {
            term,
            store: (contents.meta.position.index > 0).then_some(contents),
        })
    }

    /// A crash: the process and every unsynced job beyond `keep` of them are gone.
    pub fn crash(&mut self, keep: impl FnOnce(usize) -> usize) {
        self.replica = None;
        self.storage.crash(keep);
        self.incoming.clear();
        self.paused = false;
        self.held.clear();
        self.epoch += 1;
        self.sync_scheduled = false;
    }

    pub fn node(&self) -> Option<&Node> {
        self.replica.as_ref().map(Replica::node)
    }

    pub fn is_up(&self) -> bool {
        self.replica.is_some()
    }

    /// Up and not paused: it can act.
    pub fn is_running(&self) -> bool {
        self.replica.is_some() && !self.paused
    }

    /// A client request, as the HTTP handlers hand it to the driver: the replica checks and
    /// proposes it. Only for a running server.
    pub fn submit(&mut self, request: Request, waiter: Waiter) -> Submitted {
        let replica = self.replica.as_mut().expect("submit to a running server");
        match replica.submit(request, Some(Caller::Client(waiter))) {
            Replied::Pending(index) => Submitted::Pending(index),
            Replied::Confirming => Submitted::Confirming,
            Replied::Done(_, Ok(outcome)) => Submitted::Answered(outcome),
            Replied::Done(_, Err(err)) => Submitted::Refused(err),
        }
    }

    /// A consistent read, numbered `id` (answered in `Effects::reads` once served).
    pub fn read(&mut self, id: u64) {
        if let Some(replica) = self.replica.as_mut() {
            replica.read(Some(Caller::Read(id)));
        }
    }

    /// The connection from `peer` closed.
    pub fn connection_lost(&mut self, peer: &NodeId) {
        if let Some(replica) = self.replica.as_mut() {
            replica.connection_lost(peer);
        }
    }

    /// An operator (or a SIGTERM) asks this server, if primary, to hand over.
    pub fn hand_over(&mut self) {
        if let Some(replica) = self.replica.as_mut() {
            replica.hand_over(None, None);
        }
    }

    /// A server asks this one (the primary) to join.
    pub fn join(&mut self, id: NodeId) {
        if let Some(replica) = self.replica.as_mut() {
            replica.join(id, None);
        }
    }

    /// An operator removes `id` through this server (the primary).
    pub fn remove(&mut self, id: &NodeId) {
        if let Some(replica) = self.replica.as_mut() {
            replica.remove(id, None);
        }
    }

    /// Protocol messages from a peer.
    pub fn step(&mut self, envelope: Envelope) {
        if let Some(replica) = self.replica.as_mut() {
            replica.step(envelope);
        }
    }

    pub fn tick(&mut self) {
        if let Some(replica) = self.replica.as_mut() {
            replica.tick();
        }
    }

    /// The disk synced: tell the replica what is done.
    pub fn persisted(
        &mut self,
        report: crate::replica::Persisted,
    ) -> std::result::Result<(), String> {
        match self.replica.as_mut() {
            Some(replica) => replica
                .persisted(report)
                .map_err(|err| format!("{}: {err}", self.id)),
            None => Ok(()),
        }
    }

    /// Carries out the replica's outputs in order.
    pub fn process(&mut self, trace: bool, effects: &mut Effects) {
        let Some(replica) = self.replica.as_mut() else {
            return;
        };
        let outputs = match replica.ready() {
            Ok(outputs) => outputs,
            Err(err) => {
                effects.broken = Some((
                    super::Invariant::StoreConsistent,
                    format!("{}: {err}", self.id),
                ));
                return;
            }
        };
        for output in outputs {
            match output {
                Output::Persist(job) => {
                    if trace {
                        effects.trace.push(describe_job(&self.id, &job));
                    }
                    let received = match job {
                        Job::Install { .. } => self.incoming.pop_front(),
                        _ => None,
                    };
                    if let Err(err) = self.storage.submit(job, received) {
                        effects.broken = Some((
                            super::Invariant::ContiguousWrites,
                            format!("{}: {err}", self.id),
                        ));
                        return;
                    }
                    effects.wrote = true;
                }
                Output::Send(envelope) => effects.sends.push(envelope),
                // The driver streams the store on disk, whatever it holds by then.
                Output::SendState { to, term } => effects.transfers.push(SnapshotTransfer {
                    from: self.id.clone(),
                    to,
                    term,
                    store: Box::new(self.storage.store().contents()),
                }),
                Output::Reply(Some(Caller::Client(waiter)), Answer::Outcome(result)) => {
                    effects.replies.push((waiter, result));
                }
                Output::Reply(Some(Caller::Read(id)), Answer::Read(Ok(()))) => {
                    effects.reads.push((id, replica.applied()));
                }
                Output::Reply(..) => {}
                Output::Election { cause, .. } => effects.elections.push(cause),
                Output::RoleChanged {
                    role,
                    term,
                    primary,
                } => {
                    if trace {
                        effects.trace.push(format!(
                            "{} is now {} in term {term} (primary {primary:?})",
                            self.id,
                            role.as_str()
                        ));
                    }
                    effects.roles.push((role, term));
                }
                Output::Applied { entry, outcome } => effects.applied.push((entry, outcome)),
                Output::Posted { .. }
                | Output::Announce { .. }
                | Output::SetBackups { .. }
                | Output::Removed => {}
            }
        }
    }

    /// A whole store arrived from `transfer.from`, the primary of `transfer.term`. Returns
    /// what is being installed, or `None` if the replica did not take it.
    pub fn install(&mut self, transfer: &SnapshotTransfer) -> Option<SnapshotMeta> {
        let replica = self.replica.as_mut()?;
        let meta = transfer.store.meta.clone();
        if !replica.install(transfer.from.clone(), transfer.term, meta.clone()) {
            return None;
        }
        self.incoming.push_back((*transfer.store).clone());
        Some(meta.position)
    }

    /// What the application state is now (store and unflushed layers), read whole.
    pub fn contents(&self) -> Option<MemTables> {
        let replica = self.replica.as_ref()?;
        Some(MemTables::copy_of(replica.tables()).expect("the simulated store never fails"))
    }
}

fn describe_job(id: &NodeId, job: &Job) -> String {
    match job {
        Job::Log(writes) => {
            let list: Vec<String> = writes.iter().map(describe_write).collect();
            format!("{id} writes {}", list.join(", "))
        }
        Job::Flush { meta, changes } => format!(
            "{id} flushes {} records up to {}@{}",
            changes.clients.len() + changes.users.len() + changes.messages.len(),
            meta.position.index,
            meta.position.term
        ),
        Job::Install { meta } => format!(
            "{id} swaps in the received store at {}@{}",
            meta.position.index, meta.position.term
        ),
    }
}

fn describe_write(write: &Write) -> String {
    match write {
        Write::HardState(state) => format!("term={} vote={:?}", state.term, state.vote),
        Write::Entries(entries) => {
            let list: Vec<String> = entries
                .iter()
                .map(|e| format!("{}@{}", e.index, e.term))
                .collect();
            format!("[{}]", list.join(" "))
        }
        Write::Compact(meta) => format!("compact up to {}@{}", meta.index, meta.term),
    }
}
