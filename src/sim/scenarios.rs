//! Hand-driven scenarios for the bugs the seed sweeps found, so that each stays reproducible
//! whatever later changes to the simulation do to the seeds.
//!
//! A scenario drives the simulation's own [`Server`]s (the real node and application behind
//! the model of the driver and its disk) one message and one sync at a time. Each test
//! failed before its fix and now guards against the bug's return.

use std::collections::{BTreeSet, VecDeque};

use super::server::{Effects, Server};
use super::storage::Storage;
use crate::app::{Command, Request};
use crate::replication::{Entry, Envelope, HardState, Options, Payload};

/// A few servers, a wire that delivers in order, and disks that sync when told to (or at
/// once for the servers in `auto_sync`).
struct Bench {
    servers: Vec<Server>,
    wire: VecDeque<Envelope>,
    /// Every entry each server applied, in order, across restarts.
    applied: Vec<Vec<Entry>>,
    auto_sync: BTreeSet<usize>,
    opts: Options,
}

impl Bench {
    /// `count` servers with empty disks; the first one starts a cluster, the others join.
    fn joining(count: usize) -> Bench {
        let servers = (1..=count)
            .map(|n| {
                let storage = Storage::new(HardState::default(), Vec::new());
                Server::new(format!("n{n}"), storage, 10, n == 1)
            })
            .collect();
        let mut bench = Bench {
            servers,
            wire: VecDeque::new(),
            applied: vec![Vec::new(); count],
            auto_sync: BTreeSet::new(),
            opts: Options {
                heartbeat_ticks: 1,
                election_ticks: 10,
                ..Options::default()
            },
        };
        for s in 0..count {
            bench.start(s);
        }
        bench
    }

    fn index(&self, id: &str) -> usize {
        self.servers
            .iter()
            .position(|s| s.id == id)
            .expect("a known server")
    }

    fn start(&mut self, s: usize) {
        self.servers[s].start(&self.opts, s as u64);
        self.drain(s);
    }

    /// Carries out a server's outputs under the server driver's rule (appends leave at once).
    fn drain(&mut self, s: usize) {
        let mut effects = Effects::default();
        self.servers[s].process(false, false, &mut effects);
        assert!(effects.broken.is_none(), "{:?}", effects.broken);
        self.applied[s].extend(effects.applied.into_iter().map(|(e, _)| e));
        self.wire.extend(effects.sends);
        if effects.wrote && self.auto_sync.contains(&s) {
            self.sync(s);
        }
    }

    fn sync(&mut self, s: usize) {
        let synced = self.servers[s].storage.sync();
        if let (Some((index, term)), Some(node)) = (synced.persisted, &mut self.servers[s].node) {
            node.persisted(index, term);
        }
        self.wire.extend(synced.released);
        self.drain(s);
    }

    /// Delivers everything on the wire, and what it causes, in order.
    fn deliver_all(&mut self) {
        while let Some(envelope) = self.wire.pop_front() {
            let to = self.index(&envelope.to);
            if let Some(node) = &mut self.servers[to].node {
                node.step(envelope);
                self.drain(to);
            }
        }
    }

    /// Ticks every server `rounds` times, delivering everything after each round.
    fn run(&mut self, rounds: usize) {
        for _ in 0..rounds {
            for s in 0..self.servers.len() {
                if let Some(node) = &mut self.servers[s].node {
                    node.tick();
                    self.drain(s);
                }
            }
            self.deliver_all();
        }
    }

    fn node(&mut self, s: usize) -> &mut crate::replication::Node {
        self.servers[s].node.as_mut().expect("the server is up")
    }

    /// Proposes a command on a primary, as the driver does.
    fn propose(&mut self, s: usize, client_id: &str) {
        let request = Request {
            origin: "client".to_string(),
            command: Command::InitClient {
                client_id: client_id.to_string(),
                address: "10.0.0.1:9000".to_string(),
            },
        };
        self.node(s)
            .propose(request.encode())
            .expect("proposed on the primary");
        self.drain(s);
    }

    /// Asserts that every index applied by two servers holds the same entry.
    fn assert_applied_agree(&self) {
        for a in 0..self.applied.len() {
            for b in a + 1..self.applied.len() {
                for (x, y) in self.applied[a].iter().zip(&self.applied[b]) {
                    if x.index == y.index {
                        assert_eq!(
                            x, y,
                            "{} and {} applied different entries at index {}",
                            self.servers[a].id, self.servers[b].id, x.index
                        );
                    }
                }
            }
        }
    }
}

/// Liveness of joining (seen on sweep seeds 1017492 and 1070270 of an earlier version of the
/// simulation): a learner that acknowledged the pending configuration change before the
/// primary's own sync committed it is never promoted. `maybe_promote_learner` runs only
/// when a backup's match index advances (`on_append_accepted`), not when `persisted`
/// advances the commit index nor when the learner asks again (`add_learner`); in an idle
/// cluster nothing else happens, and `join` waits forever.
#[test]
fn learner_is_promoted_when_the_primary_sync_commits_the_previous_change() {
    let mut bench = Bench::joining(3);
    bench.sync(0); // n1's first configuration and no-op are durable: committed.
    bench.auto_sync = BTreeSet::from([1, 2]); // learners sync at once; n1 only when told
    bench.node(0).add_learner("n2".to_string()).unwrap();
    bench.node(0).add_learner("n3".to_string()).unwrap();
    bench.run(3);
    // n2 caught up first and its configuration is written on n1, not yet synced; both
    // learners hold and acknowledged it already.
    assert_eq!(bench.node(0).members(), vec!["n1", "n2"]);
    assert!(bench.node(0).status().commit_index < bench.node(0).status().last_index);
    bench.sync(0); // commits n2's configuration
    bench.auto_sync = BTreeSet::from([0, 1, 2]);
    for _ in 0..20 {
        bench.node(0).add_learner("n3".to_string()).unwrap(); // n3 keeps asking
        bench.drain(0);
        bench.run(5);
    }
    assert_eq!(
        bench.node(0).members(),
        vec!["n1", "n2", "n3"],
        "n3 caught up long ago but was never taken in"
    );
}

/// Election safety across restarts (seen on sweep seed 1058858 of an earlier version): a
/// primary elected by its own vote alone sends appends under the driver's rule before its
/// term and vote are durable. After a crash that loses them it is elected again in the same
/// term with another log, and a learner that kept the first incarnation's entries (same
/// index, same term) applies a different command than the primary.
#[test]
fn lone_primary_reelected_in_the_same_term_does_not_fork_the_log() {
    let mut bench = Bench::joining(2);
    bench.auto_sync = BTreeSet::from([1]);
    // n1 bootstrapped and is primary of term 1; nothing of it is durable yet.
    assert!(bench.node(0).is_primary());
    bench.propose(0, "x");
    bench.node(0).add_learner("n2".to_string()).unwrap();
    bench.drain(0);
    // Under the driver's rule n2 now holds n1's entries of term 1, "x" at index 3
    // included, although none of them (nor n1's term) is durable on n1.
    bench.run(3);

    // The power fails on n1 before its disk synced anything; it starts a cluster again.
    bench.servers[0].crash(|_| 0);
    bench.start(0);
    assert!(bench.node(0).is_primary(), "elected again, in term 1 again");
    bench.propose(0, "y");
    bench.auto_sync = BTreeSet::from([0, 1]);
    bench.sync(0);
    bench.node(0).add_learner("n2".to_string()).unwrap();
    bench.drain(0);
    bench.run(10);
    let commands = |entries: &[Entry]| -> Vec<String> {
        entries
            .iter()
            .filter_map(|e| match &e.payload {
                Payload::Command(bytes) => match Request::decode(bytes).ok()?.command {
                    Command::InitClient { client_id, .. } => Some(client_id),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    };
    println!(
        "n1 applied {:?}, n2 applied {:?}",
        commands(&bench.applied[0]),
        commands(&bench.applied[1])
    );
    bench.assert_applied_agree();
}
