//! One simulated server: the real node and application state, wrapped in a model of the
//! server driver (`src/server/driver/`) and its storage worker.
//!
//! The driver's contract, as the simulation carries it out after every call into the node:
//! outputs in order; a `Write` goes to the disk; a message waits for the writes queued before
//! it (appends excepted under the driver's rule); `Apply` entries are applied to the
//! application in order, each once, and answer the proposal waiting at that index if it was
//! made in the same term; a role change away from primary fails every waiting proposal.
//! The client handlers' pre-checks (`src/server/client_api.rs`) are mirrored in [`Server::submit`].
//!
//! Snapshots, as `src/server/driver/snapshot.rs` takes, sends and installs them:
//!
//! - after every round of outputs, once `snapshot_every` entries were applied since the last
//!   snapshot, the applied state is encoded and queued on the disk: saved, then the log
//!   compacted, then reported, and only then does the node drop the entries;
//! - `SendSnapshot` sends the snapshot file on disk at that moment, if there is one;
//! - a received snapshot goes to the node first; if it takes it, the saving is queued before
//!   the node's outputs (its `Compact` and its acknowledgement), and the application state is
//!   replaced without applying anything: the messages in it were applied elsewhere;
//! - a restart reads the snapshot file and the log as `server::restore` does.

use std::collections::BTreeMap;

use super::clock::Time;
use super::network::{Packet, SnapshotTransfer};
use super::storage::{Durable, SnapshotFile, Storage};
use crate::app::{Command, Outcome, Request, State};
use crate::error::{Error, Result};
use crate::replication::{
    Entry, Envelope, Index, Message, Node, NodeId, Options, Output, Payload, RoleKind,
    SnapshotMeta, Term, Write,
};
use crate::storage::Snapshot;

/// Who waits for a proposal: a client and its attempt number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiter {
    pub client: usize,
    pub attempt: u64,
}

/// What one round of carrying out outputs produced, for the network, the checks and the
/// clients.
#[derive(Default)]
pub struct Effects {
    /// Messages that leave now.
    pub sends: Vec<Envelope>,
    /// Whether anything was written (a sync must follow).
    pub wrote: bool,
    /// Applied entries, with the application's outcome for commands.
    pub applied: Vec<(Entry, Option<Outcome>)>,
    /// Role changes, in order.
    pub roles: Vec<(RoleKind, Term)>,
    /// Answers to waiting proposals.
    pub replies: Vec<(Waiter, Result<Outcome>)>,
    /// Snapshots that leave now.
    pub snapshots: Vec<SnapshotTransfer>,
    /// Times the node asked for a snapshot to be sent while none was saved.
    pub no_snapshot_to_send: u64,
    /// The snapshot of our own state queued in this round, if one was.
    pub snapshot_taken: Option<SnapshotMeta>,
    /// Trace lines (only when tracing).
    pub trace: Vec<String>,
    /// What a correct core never asks for (a write with a gap, an apply out of order).
    pub broken: Option<(super::Invariant, String)>,
}

/// The answer of a server to a client request.
pub enum Submitted {
    /// Proposed at this index; the answer comes when it is applied.
    Pending(Index),
    /// Answered at once (a retry of a message already on the board).
    Answered(Outcome),
    /// Refused (not the primary, or the pre-check said no).
    Refused(Error),
}

/// What a start found on the disk.
pub struct Started {
    /// The term the node resumed in (before any bootstrap election).
    pub term: Term,
    /// The snapshot it resumed from, if there was one.
    pub snapshot: Option<SnapshotMeta>,
}

/// A server and everything the driver keeps around its node.
pub struct Server {
    pub id: NodeId,
    /// `None` while crashed.
    pub node: Option<Node>,
    pub storage: Storage,
    pub state: State,
    pub applied: Index,
    /// The index of the latest snapshot taken, installed or restored (the driver's).
    snapshot_index: Index,
    /// Take a snapshot every this many applied entries (never if `None`).
    snapshot_every: Option<u64>,
    /// The driver's `primary_ready`: primary, and its own term's no-op applied (with it every
    /// earlier entry), so its pre-checks see every committed change.
    primary_ready: bool,
    /// Proposals waiting to be applied: index → (term proposed in, who waits).
    pending: BTreeMap<Index, (Term, Waiter)>,
    /// A paused server is frozen: no ticks, no syncs, no messages.
    pub paused: bool,
    /// While paused: keep arriving messages for later (else they are lost).
    pub hold_messages: bool,
    pub held: Vec<Packet>,
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
        snapshot_every: Option<u64>,
    ) -> Server {
        Server {
            id,
            node: None,
            storage,
            state: State::new(),
            applied: 0,
            snapshot_index: 0,
            snapshot_every,
            primary_ready: false,
            pending: BTreeMap::new(),
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

    /// Starts (or restarts) the server from its durable state: the application state of its
    /// snapshot (empty without one), rebuilt further as entries are committed again. An empty
    /// disk on the bootstrapping server starts a new cluster, as `server::serve` does. Fails
    /// on a disk that `server::restore` would refuse.
    pub fn start(&mut self, opts: &Options, seed: u64) -> std::result::Result<Started, String> {
        let durable = self.storage.durable();
        let hard_state = durable.log.hard_state.clone();
        let (snapshot, state, entries) =
            restore(durable).map_err(|why| format!("{} cannot restart: {why}", self.id))?;
        if snapshot.index > durable.log.base.index {
            // As `server::serve` does: compact a log that a saved snapshot got ahead of.
            self.storage
                .write(Write::Compact(snapshot.clone()))
                .expect("a saved snapshot is ahead of the log's base");
            self.storage.sync();
        }
        let fresh = entries.is_empty() && snapshot.index == 0;
        let restored = (snapshot.index > 0).then(|| snapshot.clone());
        let mut node = Node::restore(
            self.id.clone(),
            hard_state,
            snapshot.clone(),
            entries,
            opts.clone(),
            seed,
        );
        let term = node.term();
        if fresh && self.bootstraps {
            node.bootstrap();
        }
        self.node = Some(node);
        self.state = state;
        self.applied = snapshot.index;
        self.snapshot_index = snapshot.index;
        self.primary_ready = false;
        self.pending.clear();
        self.paused = false;
        self.held.clear();
        self.epoch += 1;
        self.incarnation += 1;
        self.sync_scheduled = false;
        Ok(Started {
            term,
            snapshot: restored,
        })
    }

    /// A crash: the process and every unsynced write beyond `keep` of them are gone.
    pub fn crash(&mut self, keep: impl FnOnce(usize) -> usize) {
        self.node = None;
        self.storage.crash(keep);
        self.pending.clear();
        self.paused = false;
        self.held.clear();
        self.epoch += 1;
        self.sync_scheduled = false;
    }

    pub fn is_up(&self) -> bool {
        self.node.is_some()
    }

    /// Up and not paused: it can act.
    pub fn is_running(&self) -> bool {
        self.node.is_some() && !self.paused
    }

    /// The request handlers of `client_api.rs`: a primary that is ready checks what it can
    /// against its applied state, then proposes (`client/init` proposes at once). Only for a
    /// running server.
    pub fn submit(&mut self, request: Request, waiter: Waiter) -> Submitted {
        let node = self.node.as_mut().expect("submit to a running server");
        if !node.is_primary() {
            return Submitted::Refused(node.not_primary());
        }
        let init = matches!(request.command, Command::InitClient { .. });
        if !init && !self.primary_ready {
            return Submitted::Refused(Error::NoPrimary);
        }
        // As `View::refuse`: the state may refuse only while a majority was heard recently.
        let fresh = node.has_fresh_quorum();
        let refuse =
            |refusal: Error| Submitted::Refused(if fresh { refusal } else { Error::NoPrimary });
        match &request.command {
            Command::Register { username, .. } if self.state.username_taken(username) => {
                return refuse(Error::Conflict(format!("username {username} is taken")));
            }
            Command::Login { client_id, .. } if !self.state.client_exists(client_id) => {
                return refuse(Error::NotFound(format!("no client {client_id}")));
            }
            // `auth` verifies the password against the stored hash; no hash, no login.
            Command::Login { username, .. } if self.state.password_hash(username).is_none() => {
                return refuse(Error::Unauthorized(
                    "wrong username or password".to_string(),
                ));
            }
            Command::Message {
                client_id,
                token_hash,
                seq,
                text,
            } => match self.state.check_message(client_id, token_hash, *seq, text) {
                Ok(Some(index)) => return Submitted::Answered(Outcome::Posted { index }),
                Ok(None) => {}
                Err(rejection) => return refuse(rejection.into_error()),
            },
            _ => {}
        }
        match node.propose(request.encode()) {
            Ok(index) => {
                self.pending.insert(index, (node.term(), waiter));
                Submitted::Pending(index)
            }
            Err(err) => Submitted::Refused(err),
        }
    }

    /// Drains the node's outputs and carries them out in order.
    pub fn process(&mut self, strict_gating: bool, trace: bool, effects: &mut Effects) {
        let Some(node) = self.node.as_mut() else {
            return;
        };
        let term = node.term();
        for output in node.ready() {
            match output {
                // The driver streams the file on disk, whatever it holds by then.
                Output::SendSnapshot { to } => match self.storage.saved_snapshot() {
                    Some(saved) => effects.snapshots.push(SnapshotTransfer {
                        from: self.id.clone(),
                        to,
                        term,
                        bytes: saved.bytes.clone(),
                    }),
                    None => effects.no_snapshot_to_send += 1,
                },
                Output::Write(write) => {
                    if trace {
                        effects.trace.push(describe_write(&self.id, &write));
                    }
                    if let Err(err) = self.storage.write(write) {
                        effects.broken = Some((
                            super::Invariant::ContiguousWrites,
                            format!("{}: {err}", self.id),
                        ));
                        return;
                    }
                    effects.wrote = true;
                }
                Output::Send(envelope) => {
                    // The driver's rule: appends carry entries, not promises about our disk,
                    // but their term must be durable already.
                    let bypass = !strict_gating
                        && matches!(envelope.message, Message::Append { .. })
                        && envelope.term <= self.storage.durable_term();
                    if bypass {
                        effects.sends.push(envelope);
                    } else if let Some(envelope) = self.storage.send_after_writes(envelope) {
                        effects.sends.push(envelope);
                    }
                }
                Output::Apply(entries) => {
                    for entry in entries {
                        if entry.index != self.applied + 1 {
                            effects.broken = Some((
                                super::Invariant::AppliedInOrder,
                                format!(
                                    "{} applied index {} after {}",
                                    self.id, entry.index, self.applied
                                ),
                            ));
                            return;
                        }
                        self.applied = entry.index;
                        let outcome = self.apply(&entry, effects);
                        effects.applied.push((entry, outcome));
                    }
                }
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
                    self.primary_ready = false;
                    if role != RoleKind::Primary {
                        let error = self.node.as_ref().map(Node::not_primary);
                        for (_, (_, waiter)) in std::mem::take(&mut self.pending) {
                            let error = error.clone().unwrap_or(Error::NoPrimary);
                            effects.replies.push((waiter, Err(error)));
                        }
                    }
                }
            }
        }
        self.maybe_snapshot(trace, effects);
    }

    /// The driver's `maybe_snapshot`: once enough entries were applied since the last
    /// snapshot, the applied state is encoded and queued on the disk, to be saved before the
    /// log is compacted.
    fn maybe_snapshot(&mut self, trace: bool, effects: &mut Effects) {
        let Some(every) = self.snapshot_every else {
            return;
        };
        if self.applied < self.snapshot_index + every.max(1) {
            return;
        }
        let Some(meta) = self
            .node
            .as_ref()
            .and_then(|n| n.snapshot_meta(self.applied))
        else {
            return;
        };
        let state = postcard::to_stdvec(&self.state).expect("the state encodes");
        self.snapshot_index = meta.index;
        let bytes = Snapshot {
            meta: meta.clone(),
            state,
        }
        .encode();
        if trace {
            effects.trace.push(format!(
                "{} takes a snapshot at {}@{} ({} bytes)",
                self.id,
                meta.index,
                meta.term,
                bytes.len()
            ));
        }
        self.storage.save_own_snapshot(SnapshotFile {
            meta: meta.clone(),
            bytes,
        });
        effects.wrote = true;
        effects.snapshot_taken = Some(meta);
    }

    /// The driver's `install_snapshot`: a whole snapshot arrived from `from`, the primary of
    /// `term`. Returns what was installed, or `None` if the node did not take it; fails on
    /// a snapshot that does not decode (the simulated network never damages one).
    pub fn install_snapshot(
        &mut self,
        transfer: &SnapshotTransfer,
    ) -> std::result::Result<Option<SnapshotMeta>, String> {
        let what = format!("the snapshot from {}", transfer.from);
        let snapshot = Snapshot::decode(&transfer.bytes, &what).map_err(|e| e.to_string())?;
        let state: State = postcard::from_bytes(&snapshot.state)
            .map_err(|err| format!("{what} holds an undecodable state: {err}"))?;
        let meta = snapshot.meta;
        let Some(node) = self.node.as_mut() else {
            return Ok(None);
        };
        if !node.install_snapshot(transfer.from.clone(), transfer.term, meta.clone()) {
            return Ok(None);
        }
        // Queued before the node's outputs (the log compaction and the acknowledgement).
        self.storage.save_snapshot(SnapshotFile {
            meta: meta.clone(),
            bytes: transfer.bytes.clone(),
        });
        self.state = state;
        self.applied = meta.index;
        self.snapshot_index = meta.index;
        Ok(Some(meta))
    }

    /// Applies one committed entry and answers the proposal waiting for it.
    fn apply(&mut self, entry: &Entry, effects: &mut Effects) -> Option<Outcome> {
        let outcome = match &entry.payload {
            Payload::Noop => {
                // A new primary's own no-op: everything before it is applied too.
                if let Some(node) = &self.node
                    && node.is_primary()
                    && entry.term == node.term()
                {
                    self.primary_ready = true;
                }
                None
            }
            Payload::Config(_) => None,
            Payload::Command(bytes) => {
                let request =
                    Request::decode(bytes).expect("the simulation proposes valid requests");
                Some(self.state.apply(&request).outcome)
            }
        };
        if let Some((term, waiter)) = self.pending.remove(&entry.index) {
            // Another primary's entry took our index: ours was never committed.
            let answer = match (&outcome, term == entry.term) {
                (Some(outcome), true) => Ok(outcome.clone()),
                _ => Err(self
                    .node
                    .as_ref()
                    .map_or(Error::NoPrimary, Node::not_primary)),
            };
            effects.replies.push((waiter, answer));
        }
        outcome
    }
}

/// `server::restore`: the snapshot file (if any) with the application state it holds, and
/// the log entries after it. The log's entries are kept only if the log agrees with the
/// snapshot at its index; a log compacted beyond the snapshot, or without one, is refused.
fn restore(durable: &Durable) -> std::result::Result<(SnapshotMeta, State, Vec<Entry>), String> {
    let log = &durable.log;
    let Some(saved) = &durable.snapshot else {
        if log.base.index > 0 {
            return Err(format!(
                "the log is compacted up to {} but there is no snapshot",
                log.base.index
            ));
        }
        return Ok((log.base.clone(), State::new(), log.entries.clone()));
    };
    let snapshot =
        Snapshot::decode(&saved.bytes, "the snapshot file").map_err(|e| e.to_string())?;
    let meta = snapshot.meta;
    if meta != saved.meta {
        return Err(format!(
            "the snapshot file holds {meta:?}, but {:?} was saved",
            saved.meta
        ));
    }
    if meta.index < log.base.index {
        return Err(format!(
            "the snapshot (up to {}) is older than the log's start ({})",
            meta.index, log.base.index
        ));
    }
    let state: State = postcard::from_bytes(&snapshot.state)
        .map_err(|err| format!("the snapshot's state does not decode: {err}"))?;
    let agrees = meta.index == log.base.index
        || log
            .entries
            .iter()
            .any(|e| e.index == meta.index && e.term == meta.term);
    let entries = if agrees {
        log.entries
            .iter()
            .filter(|e| e.index > meta.index)
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    Ok((meta, state, entries))
}

fn describe_write(id: &NodeId, write: &Write) -> String {
    match write {
        Write::HardState(state) => {
            format!("{id} writes term={} vote={:?}", state.term, state.vote)
        }
        Write::Entries(entries) => {
            let list: Vec<String> = entries
                .iter()
                .map(|e| format!("{}@{}", e.index, e.term))
                .collect();
            format!("{id} writes [{}]", list.join(" "))
        }
        Write::Compact(meta) => format!("{id} compacts up to {}@{}", meta.index, meta.term),
    }
}
