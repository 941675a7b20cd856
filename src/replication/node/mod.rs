//! The replication state machine of one server: a sans-IO node.
//!
//! The driver feeds it messages ([`Node::step`]), clock ticks ([`Node::tick`]) and client
//! proposals ([`Node::propose`]), reports what storage made durable ([`Node::persisted`]),
//! and drains [`Output`]s with [`Node::ready`]. The node never touches a socket, a clock, a
//! file or the OS's randomness, so the simulation can drive it exactly as the server does.
//!
//! Outputs must be carried out in order: a message that follows a `Write` may leave only once
//! that write is durable (a vote or an acknowledgement promises what is on disk).

mod backup;
mod election;
mod hand_over;
mod observe;
mod primary;
mod reads;

pub use observe::PeerView;

use std::collections::{BTreeMap, BTreeSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tracing::{debug, info, warn};

use super::log::Log;
use super::message::{Entry, Envelope, Index, Message, NodeId, Payload, Term};
use super::persist::{HardState, SnapshotMeta, Write};
use super::progress::Progress;
use crate::error::{Error, Result};

/// Timing and batching of the protocol, in ticks and counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The primary sends a heartbeat to every backup this often.
    pub heartbeat_ticks: u32,
    /// A backup that hears nothing from a primary for a random time in
    /// `[election_ticks, 2 * election_ticks)` starts an election. A primary that has not heard
    /// from a majority within `election_ticks` steps down (check-quorum).
    pub election_ticks: u32,
    /// Most entries in one append.
    pub max_append_entries: usize,
    /// Most appends in flight to one backup.
    pub max_inflight: usize,
    /// A deliberately wrong rule, so tests can show the simulation catches it.
    #[cfg(test)]
    pub planted_bug: Option<PlantedBug>,
}

/// Known-wrong rules that tests switch on to prove the checkers find them.
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// Commit on the primary's own durable copy, without waiting for a majority.
    CommitWithoutQuorum,
    /// Grant a vote to every up-to-date candidate, even after voting in the term.
    VoteTwicePerTerm,
    /// After a restart, replay the log from its base although the store already holds
    /// entries after it: those are applied a second time (the replica's bug, not the node's).
    ReapplyAfterRecovery,
    /// Grant a pre-vote while still hearing from a live primary (as if every backup had lost
    /// its connection): a backup whose one connection broke deposes a healthy primary.
    PreVoteWhileHearingPrimary,
    /// Serve a read marked consistent at once, without the confirmation round: a deposed
    /// primary that does not know it yet answers from a state that moved on.
    ReadWithoutConfirmation,
}

/// Why a server starts an election; every election logs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ElectionCause {
    /// The connection from the primary closed (its process is gone, or the link broke); it
    /// was last heard from this many ticks before.
    ConnectionLost { primary: NodeId, ticks: u32 },
    /// Nothing was heard from a primary (the one named, if any was known) for this many
    /// ticks.
    Silent { ticks: u32, primary: Option<NodeId> },
    /// The primary handed its office over to this server (`TimeoutNow`).
    HandOver { from: NodeId },
    /// A new cluster of one starts.
    Bootstrap,
}

impl ElectionCause {
    /// A short name of the cause, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            ElectionCause::ConnectionLost { .. } => "connection_lost",
            ElectionCause::Silent { .. } => "silent",
            ElectionCause::HandOver { .. } => "hand_over",
            ElectionCause::Bootstrap => "bootstrap",
        }
    }
}

/// Names a read waiting for its confirmation round (ReadIndex).
pub type ReadId = u64;

impl Default for Options {
    fn default() -> Self {
        Options {
            heartbeat_ticks: 5,
            election_ticks: 30,
            max_append_entries: 512,
            max_inflight: 8,
            #[cfg(test)]
            planted_bug: None,
        }
    }
}

/// The role of a server, as reported to the outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleKind {
    Primary,
    Backup,
    Candidate,
    /// A backup that is not (yet) a member of the configuration.
    Joining,
}

impl RoleKind {
    /// The name used in `GET /status`.
    pub fn as_str(self) -> &'static str {
        match self {
            RoleKind::Primary => "primary",
            RoleKind::Backup => "backup",
            RoleKind::Candidate => "candidate",
            RoleKind::Joining => "joining",
        }
    }
}

/// A node's view of itself and the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: RoleKind,
    pub term: Term,
    pub primary: Option<NodeId>,
    pub members: Vec<NodeId>,
    pub commit_index: Index,
    pub last_index: Index,
}

/// What the node asks of its driver, in the order it must happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Make this durable before sending any message that follows it.
    Write(Write),
    /// Send this message (best effort: the protocol copes with loss).
    Send(Envelope),
    /// These entries are committed: apply them, in order. Each entry is handed out once.
    Apply(Vec<Entry>),
    /// Send our latest snapshot to a backup whose next entry is no longer in the log (it
    /// was compacted). The backup's driver installs it and its node acknowledges.
    SendSnapshot { to: NodeId },
    /// The role, term or known primary changed.
    RoleChanged {
        role: RoleKind,
        term: Term,
        primary: Option<NodeId>,
    },
    /// This server starts an election (a pre-vote for `term`, or at once a vote on a
    /// hand-over), for this reason.
    Election { term: Term, cause: ElectionCause },
    /// A read asked for with [`Node::read_index`] is confirmed: this server was the primary
    /// when it was asked. It may be answered from a state that has applied `index`.
    ReadReady { id: ReadId, index: Index },
}

/// A backup follows the primary it last heard from in its term.
#[derive(Debug, Default)]
struct Backup {
    primary: Option<NodeId>,
    /// Ticks since the primary was last heard from (or a vote was granted).
    idle_ticks: u32,
    /// The connection from the primary closed, and nothing was heard from it since.
    lost: bool,
    /// Ticks until this backup, having lost the primary, starts a pre-vote.
    campaign_in: Option<u32>,
}

/// A candidate collects votes; with `pre` set it only asks whether it could win.
#[derive(Debug)]
struct Candidate {
    pre: bool,
    votes: BTreeSet<NodeId>,
    elapsed: u32,
}

/// The primary replicates its log to every backup and joining server.
#[derive(Debug)]
struct Primary {
    progress: BTreeMap<NodeId, Progress>,
    /// Servers being brought up to date before they become members.
    learners: BTreeSet<NodeId>,
    heartbeat_elapsed: u32,
    /// Ticks since the last check-quorum, or since taking office.
    quorum_elapsed: u32,
    /// The tick of the last check-quorum; `None` until the first, which passes whatever was
    /// heard: the backups have not had a whole window to answer in yet.
    last_quorum_check: Option<u64>,
    /// The index of this term's first entry (its no-op); once committed, every earlier entry is.
    term_start: Index,
    /// The latest confirmation round, carried by every append (ReadIndex).
    round: u64,
    /// A read is waiting for a round that has not been sent yet.
    round_due: bool,
    /// Reads waiting for a majority to echo their round, oldest first.
    reads: std::collections::VecDeque<PendingRead>,
    /// Handing office over to a backup: no new proposals meanwhile.
    hand_over: Option<HandOver>,
}

/// A read waiting for its confirmation round.
#[derive(Debug)]
struct PendingRead {
    id: ReadId,
    /// The commit index when it was asked: the state it is answered from must include it.
    index: Index,
    round: u64,
}

/// A hand-over in progress (Raft thesis 3.10).
#[derive(Debug)]
struct HandOver {
    to: NodeId,
    /// Ticks since it began; it is given up after two election timeouts without the
    /// backup catching up, or one after telling it to campaign.
    elapsed: u32,
    /// When `TimeoutNow` was last sent (resent every heartbeat, in case it was lost).
    told_at: Option<u64>,
}

#[derive(Debug)]
enum Role {
    Backup(Backup),
    Candidate(Candidate),
    Primary(Primary),
}

/// One server's replication state machine.
pub struct Node {
    id: NodeId,
    term: Term,
    vote: Option<NodeId>,
    log: Log,
    commit: Index,
    /// Entries up to here have been handed out in `Output::Apply`.
    applied: Index,
    /// Our own log is durable up to here (reported by the driver).
    persisted: Index,
    role: Role,
    opts: Options,
    rng: ChaCha8Rng,
    /// The current randomized election timeout, in ticks.
    election_timeout: u32,
    outputs: Vec<Output>,
    /// Ticks since the node started: its logical clock.
    ticks: u64,
    reported: (RoleKind, Term, Option<NodeId>),
    /// The id of the next read (unique across terms).
    next_read: ReadId,
    /// The term this node started (or restarted) in.
    started_in: Term,
}

impl Node {
    /// A node resuming from its durable state (or starting empty), as a backup that knows no
    /// primary. `seed` drives the randomized election timeouts.
    pub fn new(
        id: NodeId,
        hard_state: HardState,
        entries: Vec<Entry>,
        opts: Options,
        seed: u64,
    ) -> Node {
        Node::restore(id, hard_state, SnapshotMeta::default(), entries, opts, seed)
    }

    /// A node resuming from a snapshot (covering the log up to `snapshot.index`, which is
    /// therefore committed and applied) and the entries after it.
    pub fn restore(
        id: NodeId,
        hard_state: HardState,
        snapshot: SnapshotMeta,
        entries: Vec<Entry>,
        opts: Options,
        seed: u64,
    ) -> Node {
        let base = snapshot.index;
        let log = Log::with_base(snapshot, entries);
        let mut node = Node {
            id,
            term: hard_state.term,
            vote: hard_state.vote,
            persisted: log.last_index(),
            log,
            commit: base,
            applied: base,
            role: Role::Backup(Backup::default()),
            opts,
            rng: ChaCha8Rng::seed_from_u64(seed),
            election_timeout: 0,
            outputs: Vec::new(),
            ticks: 0,
            reported: (RoleKind::Backup, 0, None),
            next_read: 1,
            started_in: hard_state.term,
        };
        node.reset_election_timeout();
        node.reported = node.role_report();
        node
    }

    /// Starts a new cluster of one: writes the first configuration (this server alone) and
    /// campaigns at once, which a single voter wins. Only on an empty log.
    pub fn bootstrap(&mut self) {
        assert_eq!(self.log.last_index(), 0, "bootstrap needs an empty log");
        let entry = self.log.append(0, Payload::Config(vec![self.id.clone()]));
        self.outputs
            .push(Output::Write(Write::Entries(vec![entry])));
        self.pre_campaign(ElectionCause::Bootstrap);
    }

    pub fn id(&self) -> &NodeId {
        &self.id
    }

    pub fn term(&self) -> Term {
        self.term
    }

    pub fn is_primary(&self) -> bool {
        matches!(self.role, Role::Primary(_))
    }

    /// The primary this node knows of in its term (itself if it is the primary).
    pub fn primary(&self) -> Option<NodeId> {
        match &self.role {
            Role::Primary(_) => Some(self.id.clone()),
            Role::Backup(b) => b.primary.clone(),
            Role::Candidate(_) => None,
        }
    }

    /// The latest configuration's members.
    pub fn members(&self) -> Vec<NodeId> {
        self.log.config().1
    }

    /// Whether `id` campaigning to us means it was removed: we are the primary, and it is
    /// neither a member of our configuration nor a server we are bringing up to date. (Only
    /// the primary can tell: a backup may just not have heard of a newer configuration.)
    pub fn is_removed(&self, id: &NodeId) -> bool {
        match &self.role {
            Role::Primary(primary) => {
                !self.log.members().contains(id) && !primary.learners.contains(id)
            }
            _ => false,
        }
    }

    pub fn status(&self) -> Status {
        let (role, term, primary) = self.role_report();
        Status {
            id: self.id.clone(),
            role,
            term,
            primary,
            members: self.members(),
            commit_index: self.commit,
            last_index: self.log.last_index(),
        }
    }

    /// The error for a request that only the primary can serve.
    pub fn not_primary(&self) -> Error {
        match self.primary() {
            Some(primary) if primary != self.id => Error::NotPrimary { primary },
            _ => Error::NoPrimary,
        }
    }

    /// Appends an application command to the log (primary only) and returns its index. The
    /// command is committed once a majority has it durably; it comes back in `Output::Apply`.
    pub fn propose(&mut self, command: Vec<u8>) -> Result<Index> {
        if !self.is_primary() {
            return Err(self.not_primary());
        }
        if let Some(to) = self.handing_over() {
            return Err(Error::Unavailable(format!(
                "the primary is handing over to {to}; try again"
            )));
        }
        let entry = self.log.append(self.term, Payload::Command(command));
        let index = entry.index;
        self.outputs
            .push(Output::Write(Write::Entries(vec![entry])));
        Ok(index)
    }

    /// Starts bringing a new server up to date (primary only). Once it has caught up with
    /// the commit index, the primary proposes a configuration that adds it as a member.
    pub fn add_learner(&mut self, id: NodeId) -> Result<()> {
        let last = self.log.last_index();
        let members = self.members();
        let Role::Primary(primary) = &mut self.role else {
            return Err(self.not_primary());
        };
        if id == self.id || members.contains(&id) {
            return Ok(());
        }
        primary
            .progress
            .entry(id.clone())
            .or_insert_with(|| Progress::new(last));
        primary.learners.insert(id);
        Ok(())
    }

    /// Proposes a configuration without `id` (primary only), one server at a time: refused
    /// while another change is in flight or before this term's first entry is committed
    /// (single-server changes keep majorities overlapping only one at a time). The primary
    /// cannot remove itself: stop it, let another be elected, and remove it from there.
    /// Returns the index of the configuration entry.
    pub fn remove_member(&mut self, id: &NodeId) -> Result<Index> {
        let (config_index, members) = self.log.config();
        let not_primary = self.not_primary();
        let Role::Primary(primary) = &mut self.role else {
            return Err(not_primary);
        };
        if id == &self.id {
            return Err(Error::Conflict(
                "the primary cannot remove itself; stop it so another is elected, then remove it"
                    .to_string(),
            ));
        }
        if !members.contains(id) {
            return Err(Error::NotFound(format!("{id} is not a member")));
        }
        if config_index > self.commit || primary.term_start > self.commit {
            return Err(Error::Unavailable(
                "another configuration change is in flight; try again".to_string(),
            ));
        }
        primary.progress.remove(id);
        primary.learners.remove(id);
        let remaining: Vec<NodeId> = members.into_iter().filter(|m| m != id).collect();
        info!(server = %id, "removing a server from the configuration");
        let entry = self.log.append(self.term, Payload::Config(remaining));
        let index = entry.index;
        self.outputs
            .push(Output::Write(Write::Entries(vec![entry])));
        // Fewer members may already make a majority for what is pending.
        self.maybe_commit();
        Ok(index)
    }

    /// What the log's compacted prefix ended with (index 0 if nothing was compacted).
    pub fn snapshot_base(&self) -> SnapshotMeta {
        self.log.meta_at(self.log.base_index()).unwrap_or_default()
    }

    /// What a snapshot of the applied state at `index` would cover (its term and
    /// configuration); `None` if the log no longer holds `index` or has not applied it.
    pub fn snapshot_meta(&self, index: Index) -> Option<SnapshotMeta> {
        if index > self.applied {
            return None;
        }
        self.log.meta_at(index)
    }

    /// The driver saved a snapshot of the applied state at `index`: the log up to there is no
    /// longer needed. A backup that needs those entries later gets the snapshot instead.
    pub fn compact(&mut self, index: Index) {
        assert!(index <= self.applied, "only applied entries are compacted");
        self.log.compact(index);
    }

    /// The driver made our own log durable up to `index`, whose entry has `term`. A report
    /// about entries that have since been replaced is ignored.
    pub fn persisted(&mut self, index: Index, term: Term) {
        if index > self.persisted && self.log.term_at(index) == Some(term) {
            self.persisted = index;
            self.maybe_commit();
        }
    }

    /// Drains everything the driver must do, in order. The primary sends its pending appends
    /// here, so that proposals made since the last call travel in one batch.
    pub fn ready(&mut self) -> Vec<Output> {
        // Whatever moved since the last call (an acknowledgement, our own fsync, a join
        // request) may have made a learner ready to become a member.
        self.maybe_promote_learner();
        self.start_round();
        self.send_appends();
        self.maybe_hand_over();
        self.confirm_reads();
        let mut outputs: Vec<Output> = Vec::with_capacity(self.outputs.len());
        for output in std::mem::take(&mut self.outputs) {
            // Coalesce appends to the log so one write (and one checksum) covers a batch.
            if let (Some(Output::Write(Write::Entries(last))), Output::Write(Write::Entries(next))) =
                (outputs.last_mut(), &output)
                && last.last().map(|e| e.index + 1) == next.first().map(|e| e.index)
            {
                last.extend(next.iter().cloned());
                continue;
            }
            outputs.push(output);
        }
        outputs
    }

    /// One tick of the logical clock.
    pub fn tick(&mut self) {
        self.ticks += 1;
        match &mut self.role {
            Role::Backup(backup) => {
                backup.idle_ticks += 1;
                if let Some(wait) = &mut backup.campaign_in {
                    *wait = wait.saturating_sub(1);
                }
                let cause = match (&backup.campaign_in, &backup.primary) {
                    (Some(0), Some(primary)) => Some(ElectionCause::ConnectionLost {
                        primary: primary.clone(),
                        ticks: backup.idle_ticks,
                    }),
                    _ if backup.idle_ticks >= self.election_timeout => {
                        Some(ElectionCause::Silent {
                            ticks: backup.idle_ticks,
                            primary: backup.primary.clone(),
                        })
                    }
                    _ => None,
                };
                if let Some(cause) = cause
                    && self.is_voter()
                {
                    self.pre_campaign(cause);
                }
            }
            Role::Candidate(candidate) => {
                candidate.elapsed += 1;
                if candidate.elapsed >= self.election_timeout {
                    // An election that led nowhere: no primary is known to name.
                    let ticks = candidate.elapsed;
                    self.pre_campaign(ElectionCause::Silent {
                        ticks,
                        primary: None,
                    });
                }
            }
            Role::Primary(primary) => {
                for progress in primary.progress.values_mut() {
                    progress.tick(self.opts.election_ticks);
                }
                if let Some(hand_over) = &mut primary.hand_over {
                    hand_over.elapsed += 1;
                    // The backup gets two election timeouts to catch up, and once told to
                    // campaign, a whole one to win: taking writes again while its vote
                    // requests are on their way would leave it behind and cost an election.
                    let limit = u64::from(self.opts.election_ticks);
                    let given_up = match hand_over.told_at {
                        None => u64::from(hand_over.elapsed) >= 2 * limit,
                        Some(at) => self.ticks >= at + limit,
                    };
                    if given_up {
                        warn!(to = %hand_over.to, "the hand-over did not complete; taking writes again");
                        primary.hand_over = None;
                    }
                }
                primary.heartbeat_elapsed += 1;
                if primary.heartbeat_elapsed >= self.opts.heartbeat_ticks {
                    primary.heartbeat_elapsed = 0;
                    self.heartbeat();
                }
                if let Role::Primary(primary) = &mut self.role {
                    primary.quorum_elapsed += 1;
                    if primary.quorum_elapsed >= self.opts.election_ticks {
                        primary.quorum_elapsed = 0;
                        // This check closes the window the previous one opened.
                        let window_start = primary.last_quorum_check.replace(self.ticks);
                        let heard =
                            window_start.is_none_or(|since| self.heard_from_majority_since(since));
                        if !heard {
                            warn!(
                                term = self.term,
                                "lost contact with a majority; stepping down"
                            );
                            self.become_backup(self.term, None);
                        }
                    }
                }
            }
        }
    }

    /// Handles a message from another server.
    pub fn step(&mut self, env: Envelope) {
        if env.to != self.id || env.from == self.id {
            debug!(from = %env.from, to = %env.to, "dropping misrouted message");
            return;
        }
        if let Err(reason) = validate(&env) {
            warn!(from = %env.from, reason, "dropping malformed message");
            return;
        }

        // Term check first (Raft §5.1): a newer term makes us a backup of that term, an older
        // one marks the sender as stale.
        if env.term > self.term {
            match &env.message {
                // A server that hears from a live primary ignores elections: a server cut off
                // and back cannot disrupt a healthy cluster (Raft §9.6, leader stickiness).
                // A hand-over's vote is the exception: the primary itself asked for it.
                Message::Vote { transfer, pre, .. } if !transfer && self.in_lease(*pre) => {
                    debug!(from = %env.from, term = env.term, "ignoring vote request: primary is alive");
                    return;
                }
                // Pre-votes and their grants carry a proposed term, not a real one.
                Message::Vote { pre: true, .. }
                | Message::VoteResponse {
                    pre: true,
                    granted: true,
                } => {}
                Message::Append { .. } => self.become_backup(env.term, Some(env.from.clone())),
                _ => self.become_backup(env.term, None),
            }
        } else if env.term < self.term {
            match env.message {
                // Tell a stale primary or candidate about the newer term.
                Message::Append { .. } => self.send(
                    env.from,
                    Message::AppendRejected {
                        prev_index: 0,
                        hint: 0,
                        last_index: self.log.last_index(),
                        round: 0,
                    },
                ),
                Message::Vote { pre, .. } => self.send(
                    env.from,
                    Message::VoteResponse {
                        granted: false,
                        pre,
                    },
                ),
                _ => debug!(from = %env.from, term = env.term, "dropping message from an old term"),
            }
            return;
        }

        match env.message {
            Message::Append {
                prev_index,
                prev_term,
                entries,
                commit,
                round,
            } => self.on_append(env.from, prev_index, prev_term, entries, commit, round),
            Message::AppendAccepted { match_index, round } => {
                self.on_append_accepted(env.from, match_index, round)
            }
            Message::AppendRejected {
                prev_index,
                hint,
                last_index,
                round,
            } => self.on_append_rejected(env.from, prev_index, hint.min(last_index), round),
            Message::Vote {
                last_index,
                last_term,
                pre,
                ..
            } => self.on_vote(env.from, env.term, last_index, last_term, pre),
            Message::VoteResponse { granted, pre } => {
                self.on_vote_response(env.from, env.term, granted, pre)
            }
            Message::TimeoutNow => self.on_timeout_now(env.from),
        }
    }

    // ---- Transitions ---------------------------------------------------------------------

    fn become_backup(&mut self, term: Term, primary: Option<NodeId>) {
        assert!(term >= self.term, "terms never decrease");
        if term > self.term {
            self.term = term;
            self.vote = None;
            self.persist_hard_state();
        }
        self.role = Role::Backup(Backup {
            primary,
            ..Backup::default()
        });
        self.reset_election_timeout();
        self.report_role();
    }

    fn become_primary(&mut self) {
        assert!(
            matches!(self.role, Role::Candidate(Candidate { pre: false, .. })),
            "only a candidate becomes primary"
        );
        let last_index = self.log.last_index();
        let progress = self
            .members()
            .into_iter()
            .filter(|m| m != &self.id)
            .map(|m| (m, Progress::new(last_index)))
            .collect();
        let noop = self.log.append(self.term, Payload::Noop);
        self.role = Role::Primary(Primary {
            progress,
            learners: BTreeSet::new(),
            heartbeat_elapsed: 0,
            quorum_elapsed: 0,
            last_quorum_check: None,
            term_start: noop.index,
            round: 0,
            round_due: false,
            reads: Default::default(),
            hand_over: None,
        });
        self.outputs.push(Output::Write(Write::Entries(vec![noop])));
        info!(term = self.term, "elected primary");
        self.report_role();
    }

    // ---- Helpers -------------------------------------------------------------------------

    fn is_voter(&self) -> bool {
        self.log.members().contains(&self.id)
    }

    /// Whether this server still hears from a live primary, and so refuses to help elect
    /// another (Raft §9.6, leader stickiness): it is the primary, or it follows one whose
    /// connection has not closed and which it heard from within two heartbeats. Two
    /// heartbeats, not an election timeout, so that a backup that lost its connection to a
    /// dead primary finds the others ready to vote at once; a healthy primary is heard
    /// every heartbeat, so one broken connection or a restarted backup cannot depose it.
    fn in_lease(&self, pre: bool) -> bool {
        #[cfg(test)]
        if pre && self.opts.planted_bug == Some(PlantedBug::PreVoteWhileHearingPrimary) {
            return false;
        }
        let _ = pre;
        let lease = self.lease_ticks();
        match &self.role {
            Role::Primary(_) => true,
            // Just started: a primary may well be there, not heard from yet (a restarted
            // backup must not help depose it in its first moments).
            Role::Backup(backup) if backup.primary.is_none() => {
                self.ticks < u64::from(lease) && self.term == self.started_in
            }
            Role::Backup(backup) => !backup.lost && backup.idle_ticks < lease,
            Role::Candidate(_) => false,
        }
    }

    /// How long after hearing from a primary a backup refuses votes: two heartbeats and a
    /// tick (never more than the election timeout).
    fn lease_ticks(&self) -> u32 {
        (2 * self.opts.heartbeat_ticks + 1).min(self.opts.election_ticks)
    }

    fn reset_election_timeout(&mut self) {
        let min = self.opts.election_ticks.max(1);
        self.election_timeout = self.rng.random_range(min..2 * min);
    }

    fn emit_apply(&mut self) {
        if self.commit > self.applied {
            let entries = self.log.range(self.applied + 1, self.commit);
            self.applied = self.commit;
            self.outputs.push(Output::Apply(entries));
        }
    }

    fn persist_hard_state(&mut self) {
        self.outputs.push(Output::Write(Write::HardState(HardState {
            term: self.term,
            vote: self.vote.clone(),
        })));
    }

    fn send(&mut self, to: NodeId, message: Message) {
        self.send_with_term(to, self.term, message);
    }

    fn send_with_term(&mut self, to: NodeId, term: Term, message: Message) {
        self.outputs.push(Output::Send(Envelope {
            from: self.id.clone(),
            to,
            term,
            message,
        }));
    }

    fn role_report(&self) -> (RoleKind, Term, Option<NodeId>) {
        let kind = match &self.role {
            Role::Primary(_) => RoleKind::Primary,
            Role::Candidate(_) => RoleKind::Candidate,
            Role::Backup(_) if !self.is_voter() => RoleKind::Joining,
            Role::Backup(_) => RoleKind::Backup,
        };
        (kind, self.term, self.primary())
    }

    fn report_role(&mut self) {
        let report = self.role_report();
        if report != self.reported {
            self.reported = report.clone();
            let (role, term, primary) = report;
            self.outputs.push(Output::RoleChanged {
                role,
                term,
                primary,
            });
        }
    }
}

/// The size of a majority of `members` servers.
fn quorum(members: usize) -> usize {
    members / 2 + 1
}

/// Rejects messages no correct peer sends, so that a bad peer cannot trip an assertion.
fn validate(env: &Envelope) -> std::result::Result<(), &'static str> {
    if let Message::Append {
        prev_index,
        entries,
        ..
    } = &env.message
    {
        let contiguous = entries
            .iter()
            .enumerate()
            .all(|(i, e)| e.index == prev_index + 1 + i as Index);
        if !contiguous {
            return Err("append entries are not contiguous after prev_index");
        }
        if entries.iter().any(|e| e.term > env.term) {
            return Err("append carries entries from a future term");
        }
    }
    Ok(())
}
