//! One simulated server: the real node and application state, wrapped in a model of the
//! server driver (`src/server/driver.rs`) and its storage worker.
//!
//! The driver's contract, as the simulation carries it out after every call into the node:
//! outputs in order; a `Write` goes to the disk; a message waits for the writes queued before
//! it (appends excepted under the driver's rule); `Apply` entries are applied to the
//! application in order, each once, and answer the proposal waiting at that index if it was
//! made in the same term; a role change away from primary fails every waiting proposal.
//! The client handlers' pre-checks (`src/server/client_api.rs`) are mirrored in [`Server::submit`].

use std::collections::BTreeMap;

use super::clock::Time;
use super::storage::Storage;
use crate::app::{Command, Outcome, Request, State};
use crate::error::{Error, Result};
use crate::replication::{
    Entry, Envelope, HardState, Index, Message, Node, NodeId, Options, Output, Payload, RoleKind,
    Term, Write,
};

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

/// A server and everything the driver keeps around its node.
pub struct Server {
    pub id: NodeId,
    /// `None` while crashed.
    pub node: Option<Node>,
    pub storage: Storage,
    pub state: State,
    pub applied: Index,
    /// The driver's `primary_ready`: primary, and its own term's no-op applied (with it every
    /// earlier entry), so its pre-checks see every committed change.
    primary_ready: bool,
    /// Proposals waiting to be applied: index → (term proposed in, who waits).
    pending: BTreeMap<Index, (Term, Waiter)>,
    /// A paused server is frozen: no ticks, no syncs, no messages.
    pub paused: bool,
    /// While paused: keep arriving messages for later (else they are lost).
    pub hold_messages: bool,
    pub held: Vec<Envelope>,
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
    pub fn new(id: NodeId, storage: Storage, tick_every: Time, bootstraps: bool) -> Server {
        Server {
            id,
            node: None,
            storage,
            state: State::new(),
            applied: 0,
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

    /// Starts (or restarts) the server from its durable state, with a fresh application state
    /// that is rebuilt as entries are committed again. An empty disk on the bootstrapping
    /// server starts a new cluster, as `server::serve` does. Returns the term the node
    /// resumed in (before any bootstrap election).
    pub fn start(&mut self, opts: &Options, seed: u64) -> Term {
        let (hard_state, log): (HardState, Vec<Entry>) = self.storage.durable();
        let fresh = log.is_empty();
        let mut node = Node::new(self.id.clone(), hard_state, log, opts.clone(), seed);
        let term = node.term();
        if fresh && self.bootstraps {
            node.bootstrap();
        }
        self.node = Some(node);
        self.state = State::new();
        self.applied = 0;
        self.primary_ready = false;
        self.pending.clear();
        self.paused = false;
        self.held.clear();
        self.epoch += 1;
        self.incarnation += 1;
        self.sync_scheduled = false;
        term
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
        match &request.command {
            Command::Register { username, .. } if self.state.username_taken(username) => {
                return Submitted::Refused(Error::Conflict(format!(
                    "username {username} is taken"
                )));
            }
            Command::Login { client_id, .. } if !self.state.client_exists(client_id) => {
                return Submitted::Refused(Error::NotFound(format!("no client {client_id}")));
            }
            // `auth` verifies the password against the stored hash; no hash, no login.
            Command::Login { username, .. } if self.state.password_hash(username).is_none() => {
                return Submitted::Refused(Error::Unauthorized(
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
                Err(rejection) => return Submitted::Refused(rejection.into_error()),
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
        for output in node.ready() {
            match output {
                // The model never compacts, so no backup falls behind the log's start.
                Output::SendSnapshot { to } => {
                    unreachable!(
                        "{} asked to send a snapshot to {to} without compacting",
                        self.id
                    )
                }
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
