//! The replica: everything a server does around its replication [`Node`] that is not a
//! socket, a disk, a clock or a task. The tokio driver (`server::driver`) and the
//! simulation (`sim`) both run this same code; each only carries out its [`Output`]s and
//! feeds it inputs.
//!
//! ```text
//!   inputs                                   Replica                      outputs
//!   submit(request, waiter) ──▶ checks + propose       ┌──▶ Persist(Log | Flush | Install)
//!   step(envelope), tick()  ──▶ Node ──ready()──▶ apply │──▶ Send (released once durable)
//!   persisted(report)       ──▶ release, flush, compact ├──▶ Reply(waiter, answer), Posted
//!   install(from, term, meta) ─▶ swap the store         └──▶ SendState, Announce, SetBackups
//! ```
//!
//! It owns:
//! - the node, the application state ([`Machine`]: the store plus unflushed layers) and the
//!   proposals, joins and removals waiting for their entries;
//! - the gating of messages: a message that promises what is on disk (an acknowledgement, a
//!   vote) waits until the storage side reports every job queued before it done. Appends
//!   carry entries, not promises, and leave at once once their term is durable;
//! - the primary's readiness: it serves client requests only once its own no-op is applied,
//!   and with it every earlier entry;
//! - flushing: every `flush_every_entries` applied entries or `flush_every_ticks` ticks the
//!   unflushed changes go to the store in one durable transaction; once the store holds an
//!   index, the log up to there is compacted (every `compact_every` entries);
//! - state transfer: a backup behind the compacted log is sent the primary's store; a store
//!   received whole is swapped in, and entries committed meanwhile are applied after it;
//! - restore: the store's position plus the log after it.

mod machine;
mod output;
mod reads;
mod restore;
mod store;
mod submit;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};

use tracing::{debug, error, info};

use crate::app::{Request, apply, client_addresses};
use crate::error::{Error, Result};
use crate::replication::{
    Entry, Envelope, Index, Message, Node, NodeId, Output as NodeOutput, Payload, ReadId, RoleKind,
    Term, Write,
};

pub use machine::Machine;
pub use output::{Answer, Job, Membership, Output, Persisted, Submitted};
pub use store::{Store, StoreMeta, StoreWrite};

/// How a replica flushes and compacts, and which rules of its driver it follows.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Flush the applied changes to the store after this many entries (or `compact_every`,
    /// if that is fewer)...
    pub flush_every_entries: u64,
    /// ...or after this many ticks with unflushed changes, whichever comes first.
    pub flush_every_ticks: u32,
    /// Compact the log once the store holds this many entries beyond the last compaction.
    pub compact_every: u64,
    /// Every message waits for the jobs before it, appends too (the core's documented rule;
    /// the server lets appends go early, and the simulation checks both).
    pub strict_gating: bool,
    /// Report every applied entry as [`Output::Applied`] (for the simulation's checks).
    pub observe: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            flush_every_entries: 5_000,
            flush_every_ticks: 20,
            compact_every: 10_000,
            strict_gating: false,
            observe: false,
        }
    }
}

/// What a read sees.
pub struct View<'a, S> {
    pub node: &'a Node,
    pub tables: &'a Machine<S>,
    pub applied: Index,
    /// See [`Replica::primary_ready`].
    pub primary_ready: bool,
}

impl<S> View<'_, S> {
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
}

/// A removal waiting for its configuration entry: (index, term proposed in, waiter).
type PendingRemoval<W> = (Index, Term, W);

/// One server's replica. `S` is its store, `W` whatever identifies a waiting caller.
pub struct Replica<S, W> {
    node: Node,
    machine: Machine<S>,
    settings: Settings,
    applied: Index,
    /// The members of the latest applied configuration.
    applied_members: Vec<NodeId>,
    /// This server is primary and has applied its own term's no-op.
    noop_applied: bool,
    /// Received stores being swapped in (a second can be taken while the first is on its
    /// way): applying waits until none is.
    installing: u32,
    /// Entries committed while a received store was being swapped in.
    deferred: Vec<Entry>,
    /// The latest term (and vote) known to be durable.
    durable_term: Term,
    /// Proposals waiting for their entry to be applied: index → (term proposed in, waiter).
    pending: BTreeMap<Index, (Term, W)>,
    joins: Vec<(NodeId, W)>,
    removals: Vec<PendingRemoval<W>>,
    /// Reads waiting for their confirmation round, and confirmed ones waiting for the
    /// state to apply their index.
    reads: BTreeMap<ReadId, reads::ReadWait<W>>,
    confirmed: Vec<(Index, reads::ReadWait<W>)>,
    /// Callers waiting for a hand-over to complete.
    hand_overs: Vec<W>,
    removed: bool,
    /// Asked to join and not yet told by the primary since when it is a member: no
    /// removal of this address in the log can be of this server yet.
    joining: bool,
    /// The configuration index from which this server is a member (0: from the start).
    member_since: Index,
    /// Jobs handed to the storage side, and how many it reported done.
    jobs_issued: u64,
    jobs_done: u64,
    /// Messages waiting for a job: (the number of jobs that must be done, message).
    gated: VecDeque<(u64, Envelope)>,
    /// The applied index the last freeze ended at, and ticks since.
    frozen_upto: Index,
    ticks_since_flush: u32,
    /// Flushes on their way, oldest first.
    flushing: VecDeque<StoreMeta>,
    /// The store holds every entry up to here; and the log was compacted up to here.
    store_durable: Index,
    compacted: Index,
    outputs: Vec<Output<W>>,
}

impl<S: Store, W> Replica<S, W> {
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The node itself, for scenario tests that drive the protocol by hand.
    #[cfg(test)]
    pub fn node_mut(&mut self) -> &mut Node {
        &mut self.node
    }

    pub fn tables(&self) -> &Machine<S> {
        &self.machine
    }

    pub fn applied(&self) -> Index {
        self.applied
    }

    /// Primary, its own no-op applied, and no store being swapped in.
    pub fn primary_ready(&self) -> bool {
        self.noop_applied && self.installing == 0 && self.node.is_primary()
    }

    /// A received store is waiting to be swapped in (reads still see the old one).
    pub fn is_installing(&self) -> bool {
        self.installing > 0
    }

    pub fn view(&self) -> View<'_, S> {
        View {
            node: &self.node,
            tables: &self.machine,
            applied: self.applied,
            primary_ready: self.primary_ready(),
        }
    }

    /// Starts a new cluster of one (only on an empty log and store).
    pub fn bootstrap(&mut self) {
        self.node.bootstrap();
    }

    /// Protocol messages from a peer.
    pub fn step(&mut self, envelope: Envelope) {
        self.node.step(envelope);
    }

    /// The connection from `peer` closed (see `Node::connection_lost`).
    pub fn connection_lost(&mut self, peer: &NodeId) {
        self.node.connection_lost(peer);
    }

    /// One unit of logical time.
    pub fn tick(&mut self) {
        self.node.tick();
        self.ticks_since_flush = self.ticks_since_flush.saturating_add(1);
    }

    /// This server has asked to join a cluster (its data dir was made to join) and does not
    /// know yet since when it is a member.
    pub fn start_joining(&mut self) {
        self.joining = true;
    }

    /// The primary took this server in: it is a member from configuration `since` on.
    pub fn joined(&mut self, since: Index) {
        self.joining = false;
        self.member_since = self.member_since.max(since);
    }

    /// A server asks to join (primary only); answered once a configuration holding it is
    /// applied.
    pub fn join(&mut self, id: NodeId, waiter: W) {
        if let Err(err) = self.node.add_learner(id.clone()) {
            self.reply(waiter, Answer::Joined(Err(err)));
        } else if self.applied_members.contains(&id) {
            // Already a member (a retried request): at the latest from what is applied.
            let membership = self.membership(self.applied);
            self.reply(waiter, Answer::Joined(Ok(membership)));
        } else {
            info!(server = %id, "server asks to join; bringing it up to date");
            self.joins.push((id, waiter));
        }
    }

    /// A piece of our store reached `to`: the transfer is moving, not stalled.
    pub fn transfer_moving(&mut self, to: &NodeId) {
        self.node.snapshot_moving(to);
    }

    /// An operator removes a server (primary only); answered once applied.
    pub fn remove(&mut self, id: &NodeId, waiter: W) {
        match self.node.remove_member(id) {
            Ok(index) => self.removals.push((index, self.node.term(), waiter)),
            Err(err) => self.reply(waiter, Answer::Removed(Err(err))),
        }
    }

    /// The storage side finished jobs.
    pub fn persisted(&mut self, report: Persisted) -> Result<()> {
        self.jobs_done = self.jobs_done.max(report.jobs);
        while let Some((job, _)) = self.gated.front()
            && *job <= self.jobs_done
        {
            if let Some((_, envelope)) = self.gated.pop_front() {
                self.outputs.push(Output::Send(envelope));
            }
        }
        if let Some(term) = report.term {
            self.durable_term = self.durable_term.max(term);
        }
        if let Some((index, term)) = report.log {
            self.node.persisted(index, term);
        }
        if let Some(index) = report.flushed {
            self.flushed(index);
        }
        if report.installed > 0 {
            self.installing = self.installing.saturating_sub(report.installed);
            if self.installing == 0 {
                info!(index = self.applied, "the received store is in place");
                let deferred = std::mem::take(&mut self.deferred);
                self.apply_entries(deferred)?;
            }
        }
        Ok(())
    }

    /// A whole store arrived from `from`, the primary of `term`, and is kept beside ours.
    /// Returns whether it is to be swapped in: not if it is stale or covers only what this
    /// node has committed already.
    pub fn install(&mut self, from: NodeId, term: Term, meta: StoreMeta) -> bool {
        if !self
            .node
            .install_snapshot(from, term, meta.position.clone())
        {
            return false;
        }
        let index = meta.position.index;
        self.machine.reset(meta.counters);
        self.applied = index;
        self.applied_members = meta.position.members.clone();
        self.frozen_upto = index;
        self.store_durable = index;
        self.compacted = index;
        self.flushing.clear();
        self.deferred.clear();
        self.installing += 1;
        // Before the node's outputs (its compaction and its acknowledgement), which promise
        // the new store.
        self.persist(Job::Install { meta });
        true
    }

    /// Drains what the driver must do, in order.
    pub fn ready(&mut self) -> Result<Vec<Output<W>>> {
        let mut log: Vec<Write> = Vec::new();
        for output in self.node.ready() {
            match output {
                NodeOutput::Write(write) => log.push(write),
                NodeOutput::Send(envelope) => {
                    let early = !self.settings.strict_gating
                        && matches!(envelope.message, Message::Append { .. })
                        && envelope.term <= self.durable_term;
                    if !early && !log.is_empty() {
                        self.persist(Job::Log(std::mem::take(&mut log)));
                    }
                    if early || self.jobs_done >= self.jobs_issued {
                        self.outputs.push(Output::Send(envelope));
                    } else {
                        self.gated.push_back((self.jobs_issued, envelope));
                    }
                }
                NodeOutput::Apply(entries) => {
                    if self.installing > 0 {
                        self.deferred.extend(entries);
                    } else {
                        self.apply_entries(entries)?;
                    }
                }
                NodeOutput::SendSnapshot { to } => {
                    let term = self.node.term();
                    self.outputs.push(Output::SendState { to, term });
                }
                NodeOutput::RoleChanged {
                    role,
                    term,
                    primary,
                } => self.role_changed(role, term, primary),
                NodeOutput::Election { term, cause } => {
                    self.outputs.push(Output::Election { term, cause })
                }
                NodeOutput::ReadReady { id, index } => self.read_confirmed(id, index),
            }
        }
        if !log.is_empty() {
            self.persist(Job::Log(log));
        }
        self.serve_reads();
        self.check_hand_overs();
        self.maybe_flush();
        let outputs = std::mem::take(&mut self.outputs);
        // The next round is likely about as large (a reply per committed request): room
        // for it at once, rather than growing the vector by doubling as it fills.
        self.outputs.reserve(outputs.len());
        Ok(outputs)
    }

    /// Fails every request that waits for this server to be the primary.
    fn fail_requests(&mut self, error: impl Fn() -> Error) -> Vec<(W, Answer)> {
        let mut failed = Vec::new();
        for (_, (_, waiter)) in std::mem::take(&mut self.pending) {
            failed.push((waiter, Answer::Outcome(Err(error()))));
        }
        for (_, waiter) in std::mem::take(&mut self.joins) {
            failed.push((waiter, Answer::Joined(Err(error()))));
        }
        for (_, _, waiter) in std::mem::take(&mut self.removals) {
            failed.push((waiter, Answer::Removed(Err(error()))));
        }
        failed.extend(self.fail_reads(&error));
        failed
    }

    /// Fails every waiter, a hand-over's too (at shutdown, or when the server stops).
    pub fn fail_all(&mut self, error: impl Fn() -> Error) -> Vec<(W, Answer)> {
        let mut failed = self.fail_requests(&error);
        for waiter in std::mem::take(&mut self.hand_overs) {
            failed.push((waiter, Answer::HandedOver(Err(error()))));
        }
        failed
    }

    fn persist(&mut self, job: Job) {
        self.jobs_issued += 1;
        self.outputs.push(Output::Persist(job));
    }

    fn reply(&mut self, waiter: W, answer: Answer) {
        self.outputs.push(Output::Reply(waiter, answer));
    }

    fn membership(&self, since: Index) -> Membership {
        Membership {
            primary: self.node.id().clone(),
            term: self.node.term(),
            members: self.applied_members.clone(),
            since,
        }
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<()> {
        for entry in entries {
            assert_eq!(
                entry.index,
                self.applied + 1,
                "entries are applied in order, once"
            );
            self.applied = entry.index;
            let outcome = match &entry.payload {
                Payload::Noop => {
                    // A new primary's no-op is applied: everything before it is too, so the
                    // client list is complete. Now tell everyone who the primary is.
                    if self.node.is_primary() && entry.term == self.node.term() {
                        self.noop_applied = true;
                        self.outputs.push(Output::Announce {
                            term: self.node.term(),
                            members: self.node.members(),
                            clients: client_addresses(&self.machine)?,
                        });
                    }
                    None
                }
                Payload::Config(members) => {
                    self.config_applied(entry.index, entry.term, members.clone());
                    None
                }
                Payload::Command(bytes) => match Request::view(bytes) {
                    Ok(request) => {
                        let applied = apply(&mut self.machine, &request)?;
                        if let Some(index) = applied.posted {
                            self.outputs.push(Output::Posted { index });
                        }
                        Some(applied.outcome)
                    }
                    Err(err) => {
                        error!(index = entry.index, %err, "skipping an undecodable command");
                        None
                    }
                },
            };
            if let Some((term, waiter)) = self.pending.remove(&entry.index) {
                // Another primary's entry took our index: ours was never committed.
                let answer = match (&outcome, term == entry.term) {
                    (Some(outcome), true) => Ok(outcome.clone()),
                    (None, true) => Err(Error::Internal(format!(
                        "entry {} holds no command",
                        entry.index
                    ))),
                    (_, false) => Err(self.node.not_primary()),
                };
                self.reply(waiter, Answer::Outcome(answer));
            }
            if self.settings.observe {
                self.outputs.push(Output::Applied { entry, outcome });
            }
        }
        Ok(())
    }

    fn config_applied(&mut self, index: Index, term: Term, members: Vec<NodeId>) {
        info!(?members, "configuration applied");
        let me = self.node.id().clone();
        // A removal of this address stops this server only if it came after this server
        // became a member: a server that joined under a removed address replays the
        // removal of the earlier one from the log, and must not take it for its own.
        let removes_me = self.applied_members.contains(&me) && !members.contains(&me);
        if removes_me && (self.joining || index <= self.member_since) {
            info!(
                index,
                "a removal of this address from before this server joined; not ours"
            );
        } else if removes_me {
            error!("this server was removed from the cluster; it no longer takes part");
            self.removed = true;
            self.outputs.push(Output::Removed);
        }
        self.applied_members = members;
        for (waited, proposed_in, waiter) in std::mem::take(&mut self.removals) {
            if waited == index {
                let answer = if proposed_in == term {
                    Ok(self.applied_members.clone())
                } else {
                    Err(self.node.not_primary())
                };
                self.reply(waiter, Answer::Removed(answer));
            } else {
                self.removals.push((waited, proposed_in, waiter));
            }
        }
        let (joined, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.joins)
            .into_iter()
            .partition(|(id, _)| self.applied_members.contains(id));
        self.joins = waiting;
        for (id, waiter) in joined {
            info!(server = %id, "server joined as a backup");
            let membership = self.membership(index);
            self.reply(waiter, Answer::Joined(Ok(membership)));
        }
        if self.node.is_primary() {
            self.outputs.push(Output::SetBackups {
                term: self.node.term(),
                members: self.applied_members.clone(),
            });
        }
    }

    fn role_changed(&mut self, role: RoleKind, term: Term, primary: Option<NodeId>) {
        // Said as what this server now is: the term or the known primary may be what moved.
        let named = primary.as_deref().unwrap_or("none known");
        info!(
            role = role.as_str(),
            term,
            primary = named,
            "{} in term {term}; primary: {named}",
            role.as_str()
        );
        // A new primary is ready once its no-op is applied (see `apply_entries`).
        self.noop_applied = false;
        if role != RoleKind::Primary {
            let not_primary = self.node.not_primary();
            if !self.pending.is_empty() {
                debug!(count = self.pending.len(), "failing pending proposals");
            }
            for (waiter, answer) in self.fail_requests(|| not_primary.clone()) {
                self.reply(waiter, answer);
            }
        }
        self.outputs.push(Output::RoleChanged {
            role,
            term,
            primary,
        });
    }

    /// Freezes the unflushed changes and sends them to the store, when due.
    fn maybe_flush(&mut self) {
        if self.installing > 0 || self.applied <= self.frozen_upto {
            return;
        }
        // At least as often as the log is to be compacted: it can be compacted only up to
        // what the store holds.
        let every = self
            .settings
            .flush_every_entries
            .min(self.settings.compact_every)
            .max(1);
        let due = self.applied - self.frozen_upto >= every
            || self.ticks_since_flush >= self.settings.flush_every_ticks;
        if !due {
            return;
        }
        let Some(position) = self.node.snapshot_meta(self.applied) else {
            return;
        };
        let meta = StoreMeta {
            position,
            counters: self.machine.current_counters(),
        };
        let changes = self.machine.freeze(self.applied);
        self.frozen_upto = self.applied;
        self.ticks_since_flush = 0;
        self.flushing.push_back(meta.clone());
        self.persist(Job::Flush { meta, changes });
    }

    /// The store is durable up to `index`: drop what it covers from memory, and compact the
    /// log once enough is covered.
    fn flushed(&mut self, index: Index) {
        if index <= self.store_durable {
            // A flush of the store that a received one replaced.
            return;
        }
        self.machine.flushed(index);
        self.store_durable = index;
        let mut covered = None;
        while self
            .flushing
            .front()
            .is_some_and(|m| m.position.index <= index)
        {
            covered = self.flushing.pop_front();
        }
        let Some(meta) = covered else {
            return;
        };
        let every = self.settings.compact_every.max(1);
        // Not beyond what a backup catching up still needs from the log (see
        // `Node::compaction_floor`); a backup far behind gets the store instead.
        let upto = match self.node.compaction_floor(index, 4 * every) {
            Some(floor) => index.min(floor),
            None => index,
        };
        if upto < self.compacted + every || upto <= self.node.snapshot_base().index {
            return;
        }
        let position = if upto == index {
            Some(meta.position)
        } else {
            self.node.snapshot_meta(upto)
        };
        if let Some(position) = position {
            self.node.compact(upto);
            self.compacted = upto;
            self.persist(Job::Log(vec![Write::Compact(position)]));
        }
    }
}
