//! The driver: one task that owns the [`Replica`] and carries out what it asks.
//!
//! Everything that touches the replica goes through this task: HTTP handlers send it a
//! [`Call`] and await the answer on a oneshot, the ticker ticks it, the storage worker
//! reports what is done. After each event it drains the replica's outputs: jobs go to the
//! storage worker, messages to the peers, state transfers to a task of their own, answers to
//! waiting handlers, posted messages to the stdout printer. The rules (checks, gating,
//! applying, flushing, compaction) live in the replica, which the simulation runs too; here
//! are only tasks, channels and sockets. Nobody locks the replica, and nothing here waits on
//! disk or on the network.

mod round_trips;
mod silence;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::metrics::{Metrics, PeerSnapshot, Snapshot};
use super::millis;
use super::notify::Notifier;
use super::peers::Peers;
use super::persist::{WorkItem, WorkerEvent};
use super::printer::Printer;
use super::state_transfer;
use crate::api::{InitBackupResponse, SetBackupsRequest};
use crate::app::Tables;
use crate::app::{Outcome, Request};
use crate::client::http::HttpClient;
use crate::error::{Error, Result};
use crate::replica::{Answer, Job, Output, Replica, StoreMeta, Submitted, View};
use crate::replication::{ElectionCause, Envelope, Message, NodeId, Term};
use crate::server::auth::ClusterSecret;
use crate::storage::RedbStore;
use round_trips::RoundTrips;
use silence::Silence;

/// The replica as the server runs it.
pub type ServerReplica = Replica<RedbStore, Waiter>;
/// What a query sees.
pub type ServerView<'a> = View<'a, RedbStore>;

/// Calls into the driver.
pub enum Call {
    /// Check and replicate a client's change; answered with its outcome once applied (or at
    /// once if refused).
    Submit {
        request: Request,
        reply: oneshot::Sender<Result<Outcome>>,
    },
    /// Run a read against the replica.
    Query(Box<dyn FnOnce(&ServerView<'_>) + Send>),
    /// Run a read once a confirmation round shows this server is the primary (ReadIndex).
    ConsistentQuery(ReadWaiter),
    /// The connection from a peer closed.
    ConnectionLost(NodeId),
    /// Hand the primary's office to `to` (or the most up-to-date backup); answered with
    /// the new primary once this server follows it.
    HandOver {
        to: Option<NodeId>,
        reply: oneshot::Sender<Result<NodeId>>,
    },
    /// Protocol messages from peers.
    Deliver(Vec<Envelope>),
    /// A server asks to join; answered once a configuration holding it is applied.
    Join {
        id: NodeId,
        reply: oneshot::Sender<Result<InitBackupResponse>>,
    },
    /// The primary told us the list of backups.
    SetBackups(SetBackupsRequest),
    /// A whole, checked store from the primary, waiting at `path`.
    Install {
        from: NodeId,
        term: Term,
        meta: StoreMeta,
        path: PathBuf,
    },
    /// A piece of our store reached `to` (a state transfer is moving).
    TransferMoving { to: NodeId },
    /// What the metrics and health endpoints show.
    Snapshot(oneshot::Sender<Result<Snapshot>>),
    /// The primary took this server in, as a member from this configuration index on.
    Joined(crate::replication::Index),
    /// An operator removes a server; answered once the new configuration is applied.
    Remove {
        id: NodeId,
        reply: oneshot::Sender<Result<Vec<NodeId>>>,
    },
}

/// A read waiting for its confirmation round: run on the state once confirmed, or given
/// the reason it cannot be.
pub type ReadWaiter = Box<dyn FnOnce(Result<&ServerView<'_>>) + Send>;

/// Who waits for the replica.
pub enum Waiter {
    Submit(oneshot::Sender<Result<Outcome>>),
    Join(oneshot::Sender<Result<InitBackupResponse>>),
    Remove(oneshot::Sender<Result<Vec<NodeId>>>),
    Read(ReadWaiter),
    HandOver(oneshot::Sender<Result<NodeId>>),
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Waiter::Submit(_) => "Submit",
            Waiter::Join(_) => "Join",
            Waiter::Remove(_) => "Remove",
            Waiter::Read(_) => "Read",
            Waiter::HandOver(_) => "HandOver",
        })
    }
}

impl Waiter {
    /// Answers the waiter; a confirmed read runs against `view`.
    fn answer_with(self, answer: Answer, view: &ServerView<'_>) {
        match (self, answer) {
            (Waiter::Read(read), Answer::Read(Ok(()))) => read(Ok(view)),
            (waiter, answer) => waiter.answer(answer),
        }
    }

    fn answer(self, answer: Answer) {
        match (self, answer) {
            (Waiter::Read(read), Answer::Read(result)) => {
                // Without a view a confirmed read cannot run; that is `answer_with`'s case.
                read(result.and(Err(Error::Internal("a read without a view".to_string()))))
            }
            (Waiter::HandOver(reply), Answer::HandedOver(result)) => {
                let _ = reply.send(result);
            }
            (Waiter::Submit(reply), Answer::Outcome(result)) => {
                let _ = reply.send(result);
            }
            (Waiter::Join(reply), Answer::Joined(result)) => {
                let _ = reply.send(result.map(|m| InitBackupResponse {
                    primary: m.primary,
                    term: m.term,
                    members: m.members,
                    since: m.since,
                }));
            }
            (Waiter::Remove(reply), Answer::Removed(result)) => {
                let _ = reply.send(result);
            }
            (waiter, answer) => {
                error!(?waiter, ?answer, "an answer of the wrong kind");
            }
        }
    }
}

/// The handlers' side of the driver. Cheap to clone.
#[derive(Clone)]
pub struct DriverHandle {
    tx: mpsc::Sender<Call>,
}

impl DriverHandle {
    async fn send(&self, call: Call) -> Result<()> {
        self.tx.send(call).await.map_err(|_| shutting_down())
    }

    /// Checks and proposes a client's change, and waits for its outcome.
    pub async fn submit(&self, request: Request) -> Result<Outcome> {
        let (reply, answer) = oneshot::channel();
        self.send(Call::Submit { request, reply }).await?;
        answer.await.map_err(|_| shutting_down())?
    }

    /// Runs `read` against the replica.
    pub async fn query<T, F>(&self, read: F) -> Result<T>
    where
        F: FnOnce(&ServerView<'_>) -> T + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let query = move |view: &ServerView<'_>| {
            let _ = reply.send(read(view));
        };
        self.send(Call::Query(Box::new(query))).await?;
        answer.await.map_err(|_| shutting_down())
    }

    /// Runs `read` against the replica once a confirmation round shows this server is the
    /// primary and its state holds every write acknowledged before the call: a
    /// linearizable read (primary only).
    pub async fn query_consistent<T, F>(&self, read: F) -> Result<T>
    where
        F: FnOnce(&ServerView<'_>) -> T + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let waiter: ReadWaiter = Box::new(move |view: Result<&ServerView<'_>>| {
            let _ = reply.send(view.map(read));
        });
        self.send(Call::ConsistentQuery(waiter)).await?;
        answer.await.map_err(|_| shutting_down())?
    }

    /// Tells the replica the connection from `peer` closed (waits for room in the queue:
    /// under load it may be full, and this news must not be dropped).
    pub async fn connection_lost(&self, peer: NodeId) {
        let _ = self.send(Call::ConnectionLost(peer)).await;
    }

    /// Hands the primary's office over and waits until this server follows the new primary.
    pub async fn hand_over(&self, to: Option<NodeId>) -> Result<NodeId> {
        let (reply, answer) = oneshot::channel();
        self.send(Call::HandOver { to, reply }).await?;
        answer.await.map_err(|_| shutting_down())?
    }

    /// Hands protocol messages to the replica (does not wait for them to be processed).
    pub async fn deliver(&self, envelopes: Vec<Envelope>) -> Result<()> {
        self.send(Call::Deliver(envelopes)).await
    }

    /// Asks the replica (which must be the primary) to add a server, and waits until it is a
    /// member.
    pub async fn join(&self, id: NodeId) -> Result<InitBackupResponse> {
        let (reply, answer) = oneshot::channel();
        self.send(Call::Join { id, reply }).await?;
        answer.await.map_err(|_| shutting_down())?
    }

    /// Removes a server from the configuration (primary only) and waits until the new
    /// configuration is applied; returns the remaining members.
    pub async fn remove(&self, id: NodeId) -> Result<Vec<NodeId>> {
        let (reply, answer) = oneshot::channel();
        self.send(Call::Remove { id, reply }).await?;
        answer.await.map_err(|_| shutting_down())?
    }

    /// Hands a received store to the replica (does not wait for it to be swapped in).
    pub async fn install(
        &self,
        from: NodeId,
        term: Term,
        meta: StoreMeta,
        path: PathBuf,
    ) -> Result<()> {
        self.send(Call::Install {
            from,
            term,
            meta,
            path,
        })
        .await
    }

    /// Tells the replica the primary took this server in, from configuration `since` on.
    pub async fn joined(&self, since: crate::replication::Index) {
        let _ = self.send(Call::Joined(since)).await;
    }

    /// This server's positions, peers and counters, for metrics and health checks.
    pub async fn snapshot(&self) -> Result<Snapshot> {
        let (reply, answer) = oneshot::channel();
        self.send(Call::Snapshot(reply)).await?;
        answer.await.map_err(|_| shutting_down())?
    }

    /// Tells the replica a state transfer to `to` is moving (does not wait).
    pub fn transfer_moving(&self, to: NodeId) {
        let _ = self.tx.try_send(Call::TransferMoving { to });
    }

    /// Records the primary's list of backups.
    pub async fn set_backups(&self, request: SetBackupsRequest) -> Result<()> {
        self.send(Call::SetBackups(request)).await
    }
}

fn shutting_down() -> Error {
    Error::Unavailable("the server is shutting down".to_string())
}

/// Most calls handled before the replica's outputs are drained: proposals that arrive
/// together travel to the backups and to disk together.
const MAX_CALLS_PER_ROUND: usize = 1024;
/// Most ticks given at once after a stall: enough to expire every timeout.
const MAX_CATCH_UP_TICKS: u128 = 1000;
/// Capacity of the call queue; a full queue makes handlers wait (backpressure).
pub const CALL_QUEUE: usize = 8192;

/// The driver's ways out: to peers, to clients and backups, to stdout, and for transfers.
pub struct DriverIo {
    pub peers: Peers,
    pub notifier: Notifier,
    pub printer: Printer,
    pub http: HttpClient,
    pub secret: ClusterSecret,
    /// Our own handle, for the transfer tasks to report progress.
    pub handle: DriverHandle,
    pub metrics: Metrics,
    /// Elections and changes of primary, for the dashboard.
    pub events: super::events::Events,
}

/// The driver's state.
pub struct Driver {
    replica: ServerReplica,
    store: RedbStore,
    storage: mpsc::UnboundedSender<WorkItem>,
    /// The received stores the replica took, in the order of its `Install` jobs.
    incoming: VecDeque<PathBuf>,
    removed: bool,
    io: DriverIo,
    /// The length of one tick of the replica's clock.
    tick: Duration,
    /// Entries sent to each backup and not acknowledged yet (primary only).
    round_trips: RoundTrips,
    /// The cause of the last election this server started.
    last_election: Option<ElectionCause>,
    /// The primary this server last knew of.
    known_primary: Option<NodeId>,
    /// When this server became the primary, while it is one (milliseconds since the Unix
    /// epoch): `/status` shows it, and `bench notify` counts from it.
    primary_since_ms: Option<u64>,
    /// Which backups the primary has said stopped answering.
    silence: Silence,
}

impl Driver {
    pub fn new(
        replica: ServerReplica,
        store: RedbStore,
        storage: mpsc::UnboundedSender<WorkItem>,
        io: DriverIo,
    ) -> Driver {
        Driver {
            replica,
            store,
            storage,
            incoming: VecDeque::new(),
            removed: false,
            io,
            tick: Duration::from_millis(10),
            round_trips: RoundTrips::default(),
            last_election: None,
            known_primary: None,
            primary_since_ms: None,
            silence: Silence::default(),
        }
    }

    /// A handle and the queue it feeds.
    pub fn channel() -> (DriverHandle, mpsc::Receiver<Call>) {
        let (tx, rx) = mpsc::channel(CALL_QUEUE);
        (DriverHandle { tx }, rx)
    }

    /// Runs until `shutdown` is cancelled, or storage fails.
    pub async fn run(
        mut self,
        mut calls: mpsc::Receiver<Call>,
        mut worker: mpsc::UnboundedReceiver<WorkerEvent>,
        mut removed: mpsc::UnboundedReceiver<String>,
        tick: Duration,
        shutdown: CancellationToken,
    ) -> Result<()> {
        self.tick = tick;
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The replica's clock follows real time: after a stall (a paused process, an
        // overloaded machine) the ticks it missed are given at once, so its timeouts and the
        // freshness of what it heard are measured in real time, not in ticks that ran.
        let mut clock = tokio::time::Instant::now();
        // Outputs from startup (a compaction to the store's position, a bootstrap's election).
        let result = loop {
            if let Err(err) = self.process_outputs() {
                break Err(err);
            }
            if self.removed {
                break Err(Error::Forbidden(
                    "this server was removed from the cluster; start it with an empty data dir and --join to add it again"
                        .to_string(),
                ));
            }
            tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                now = ticker.tick() => {
                    let due = (now.saturating_duration_since(clock).as_micros()
                        / tick.as_micros().max(1))
                    .clamp(1, MAX_CATCH_UP_TICKS);
                    for _ in 0..due {
                        self.replica.tick();
                    }
                    clock = now;
                    self.silence.watch(self.replica.node(), self.tick, now.into_std());
                }
                Some(call) = calls.recv() => {
                    self.handle(call);
                    for _ in 1..MAX_CALLS_PER_ROUND {
                        match calls.try_recv() {
                            Ok(call) => self.handle(call),
                            Err(_) => break,
                        }
                    }
                }
                Some(why) = removed.recv() => {
                    // The primary says we are no longer a member: stop, rather than campaign
                    // forever or come back unnoticed (the error is the process's last word).
                    break Err(Error::Forbidden(why));
                }
                Some(event) = worker.recv() => match event {
                    WorkerEvent::Done(report) => {
                        if let Err(err) = self.replica.persisted(report) {
                            break Err(err);
                        }
                    }
                    WorkerEvent::Failed(err) => break Err(err),
                },
            }
        };
        let why = match &result {
            Ok(()) => shutting_down(),
            Err(Error::Forbidden(_)) => Error::Unavailable("this server was removed".to_string()),
            Err(_) => Error::Unavailable("storage failed".to_string()),
        };
        for (waiter, answer) in self.replica.fail_all(|| why.clone()) {
            waiter.answer(answer);
        }
        result
    }

    fn handle(&mut self, call: Call) {
        match call {
            Call::Submit { request, reply } => {
                if let Submitted::Done(Waiter::Submit(reply), result) =
                    self.replica.submit(request, Waiter::Submit(reply))
                {
                    let _ = reply.send(result);
                }
            }
            Call::Query(read) => read(&self.replica.view()),
            Call::ConsistentQuery(read) => self.replica.read(Waiter::Read(read)),
            Call::ConnectionLost(peer) => {
                info!(%peer, "the last connection with {peer} closed");
                self.replica.connection_lost(&peer)
            }
            Call::HandOver { to, reply } => self.replica.hand_over(to, Waiter::HandOver(reply)),
            Call::Deliver(envelopes) => {
                for envelope in envelopes {
                    self.replica.step(envelope);
                }
            }
            Call::Join { id, reply } => self.replica.join(id, Waiter::Join(reply)),
            Call::Remove { id, reply } => self.replica.remove(&id, Waiter::Remove(reply)),
            Call::Install {
                from,
                term,
                meta,
                path,
            } => {
                if self.replica.install(from, term, meta) {
                    info!("installing the store received from the primary");
                    self.incoming.push_back(path);
                } else if let Err(err) = std::fs::remove_file(&path) {
                    warn!(path = %path.display(), %err, "cannot remove a received store not needed");
                }
            }
            Call::TransferMoving { to } => self.replica.transfer_moving(&to),
            Call::Joined(since) => self.replica.joined(since),
            Call::Snapshot(reply) => {
                let _ = reply.send(self.snapshot());
            }
            Call::SetBackups(request) => {
                info!(primary = %request.primary, term = request.term, backups = ?request.backups, "primary announced the backups");
            }
        }
    }

    /// Carries out the replica's outputs in order. Fails if storage is gone or the store
    /// cannot be read.
    fn process_outputs(&mut self) -> Result<()> {
        for output in self.replica.ready()? {
            match output {
                Output::Persist(job) => {
                    let incoming = match job {
                        Job::Install { .. } => self.incoming.pop_front(),
                        _ => None,
                    };
                    self.storage
                        .send(WorkItem { job, incoming })
                        .map_err(|_| Error::Internal("the storage worker stopped".to_string()))?;
                }
                Output::Send(envelope) => {
                    if let Message::Append { entries, .. } = &envelope.message
                        && let Some(last) = entries.last()
                    {
                        self.round_trips
                            .sent(&envelope.to, last.index, Instant::now());
                    }
                    self.io.peers.send(envelope)
                }
                Output::SendState { to, term } => {
                    let sending = state_transfer::Sending {
                        http: self.io.http.clone(),
                        secret: self.io.secret.clone(),
                        driver: self.io.handle.clone(),
                        metrics: self.io.metrics.clone(),
                    };
                    tokio::spawn(state_transfer::send(
                        sending,
                        self.store.clone(),
                        self.replica.node().id().clone(),
                        to,
                        term,
                    ));
                }
                Output::Reply(waiter, answer) => waiter.answer_with(answer, &self.replica.view()),
                Output::Posted { index } => match self.replica.tables().message(index) {
                    Ok(Some(posted)) => self.io.printer.line(
                        self.replica.node().id(),
                        &posted.username,
                        &posted.text,
                    ),
                    Ok(None) => warn!(index, "an applied message is not in the tables"),
                    Err(err) => warn!(index, %err, "cannot read an applied message to print it"),
                },
                Output::Announce {
                    term,
                    members,
                    clients,
                } => {
                    info!(term, clients = clients.len(), "announcing the new primary");
                    self.io.notifier.set_backups(term, &members);
                    self.io.notifier.new_primary(term, clients);
                }
                Output::SetBackups { term, members } => {
                    self.io.notifier.set_backups(term, &members);
                }
                Output::Election { term, cause } => {
                    log_election(term, &cause, self.tick);
                    self.io.events.push(format!(
                        "{} starts an election for term {term}: {}",
                        self.replica.node().id(),
                        describe(&cause, self.tick)
                    ));
                    self.io.metrics.election(&cause);
                    self.last_election = Some(cause);
                }
                Output::RoleChanged { primary, .. } => {
                    let here = primary.as_ref() == Some(self.replica.node().id());
                    if !here {
                        self.primary_since_ms = None;
                    } else if self.primary_since_ms.is_none() {
                        self.primary_since_ms = Some(crate::server::unix_millis());
                    }
                    if primary.is_some() && primary != self.known_primary {
                        let cause = self.last_election.as_ref().filter(|_| here);
                        self.io.metrics.leader_changed(cause);
                        if let Some(primary) = &primary {
                            self.io.events.push(format!(
                                "{} follows {primary} as the primary of term {}",
                                self.replica.node().id(),
                                self.replica.node().term()
                            ));
                        }
                    }
                    self.known_primary = primary;
                }
                Output::Applied { .. } => {}
                Output::Removed => self.removed = true,
            }
        }
        self.io.printer.end_round();
        if self.round_trips.waiting() {
            let node = self.replica.node();
            let metrics = &self.io.metrics;
            self.round_trips.acknowledged(
                |id| node.match_index(id),
                Instant::now(),
                |took| metrics.round_trip(took),
            );
        }
        Ok(())
    }

    /// What the metrics and health endpoints show of this server now.
    fn snapshot(&self) -> Result<Snapshot> {
        let node = self.replica.node();
        let status = node.status();
        let counters = self.replica.tables().counters()?;
        let now = Instant::now();
        Ok(Snapshot {
            role: Some(status.role),
            term: status.term,
            commit_index: status.commit_index,
            applied_index: self.replica.applied(),
            last_index: status.last_index,
            hears_primary: node.hears_primary(),
            peers: node
                .peers()
                .into_iter()
                .map(|peer| PeerSnapshot {
                    lag: peer.matched.map(|_| self.round_trips.lag(&peer.id, now)),
                    heard_ago: peer.heard_ticks_ago.map(|n| ticks(self.tick, n)),
                    matched: peer.matched,
                    id: peer.id,
                })
                .collect(),
            messages: counters.messages,
            clients: counters.clients,
            logged_in: counters.logged_in,
            primary_since_ms: self.primary_since_ms,
            ..Snapshot::default()
        })
    }
}

/// `n` ticks of length `tick`.
fn ticks(tick: Duration, n: u64) -> Duration {
    tick.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX))
}

/// An election's cause in words, for the log and the dashboard.
fn describe(cause: &ElectionCause, tick: Duration) -> String {
    let ms = |n: &u32| millis(ticks(tick, u64::from(*n)));
    match cause {
        ElectionCause::ConnectionLost { primary, ticks } => format!(
            "the connection from the primary {primary} was lost (last heard {} ms before)",
            ms(ticks)
        ),
        ElectionCause::Silent { ticks, primary } => format!(
            "no primary heard from for {} ms (the last known was {})",
            ms(ticks),
            primary.as_deref().unwrap_or("none known")
        ),
        ElectionCause::HandOver { from } => format!("the primary {from} handed its office over"),
        ElectionCause::Bootstrap => "a new cluster starts".to_string(),
    }
}

/// Every election is logged with its cause, the primary it replaces and how long that
/// primary was silent: in the words of [`describe`], and as fields.
fn log_election(term: Term, cause: &ElectionCause, tick: Duration) {
    let ms = |n: &u32| millis(ticks(tick, u64::from(*n)));
    let (old_primary, silent_ms) = match cause {
        ElectionCause::ConnectionLost { primary, ticks } => {
            (Some(primary.as_str()), Some(ms(ticks)))
        }
        ElectionCause::Silent { ticks, primary } => (primary.as_deref(), Some(ms(ticks))),
        ElectionCause::HandOver { from } => (Some(from.as_str()), None),
        ElectionCause::Bootstrap => return,
    };
    let text = describe(cause, tick);
    let name = cause.name();
    if matches!(cause, ElectionCause::HandOver { .. }) {
        info!(
            term,
            cause = name,
            old_primary,
            "starting an election: {text}"
        );
    } else {
        warn!(
            term,
            cause = name,
            old_primary,
            silent_ms,
            "starting an election: {text}"
        );
    }
}
