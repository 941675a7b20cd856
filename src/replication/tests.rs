//! Scenario tests of the replication core: a few nodes wired by a hand-driven network in
//! which the test decides which message arrives, when, and how often.

use std::collections::{BTreeMap, VecDeque};

use super::*;

/// A hand-driven cluster: messages wait in `queue` until the test delivers them; writes are
/// durable at once; applied entries are recorded per node.
struct Cluster {
    nodes: BTreeMap<NodeId, Node>,
    queue: VecDeque<Envelope>,
    applied: BTreeMap<NodeId, Vec<Entry>>,
    writes: BTreeMap<NodeId, usize>,
    /// Confirmed reads per node: (id, index).
    reads: BTreeMap<NodeId, Vec<(ReadId, Index)>>,
}

fn id(n: usize) -> NodeId {
    format!("n{n}")
}

/// The test cluster's largest append.
const MAX_APPEND_ENTRIES: usize = 64;

impl Cluster {
    /// `size` nodes that share a first configuration holding all of them.
    fn new(size: usize) -> Cluster {
        let members: Vec<NodeId> = (1..=size).map(id).collect();
        let config = Entry {
            term: 0,
            index: 1,
            payload: Payload::Config(members.clone()),
        };
        let opts = Options {
            heartbeat_ticks: 1,
            election_ticks: 10,
            max_append_entries: MAX_APPEND_ENTRIES,
            max_inflight: 4,
            ..Options::default()
        };
        let nodes = members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let node = Node::new(
                    m.clone(),
                    HardState::default(),
                    vec![config.clone()],
                    opts.clone(),
                    i as u64,
                );
                (m.clone(), node)
            })
            .collect();
        let mut cluster = Cluster {
            nodes,
            queue: VecDeque::new(),
            applied: BTreeMap::new(),
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
        };
        // Past the first moments after a start, in which a server refuses votes (a primary
        // may be there, not heard from yet); well short of any election timeout.
        for _ in 0..3 {
            for node in cluster.nodes.values_mut() {
                node.tick();
            }
        }
        cluster
    }

    fn node(&mut self, n: usize) -> &mut Node {
        self.nodes.get_mut(&id(n)).expect("node exists")
    }

    /// Carries out a node's outputs: writes are durable at once, messages are queued.
    fn drain(&mut self, who: &NodeId) {
        let node = self.nodes.get_mut(who).expect("node exists");
        let mut durable = None;
        for output in node.ready() {
            match output {
                Output::Write(Write::Entries(entries)) => {
                    *self.writes.entry(who.clone()).or_default() += 1;
                    let last = entries.last().expect("writes are never empty");
                    durable = Some((last.index, last.term));
                }
                Output::Write(Write::HardState(_))
                | Output::RoleChanged { .. }
                | Output::Election { .. } => {}
                Output::ReadReady { id, index } => {
                    self.reads.entry(who.clone()).or_default().push((id, index))
                }
                Output::Write(Write::Compact(_)) | Output::SendSnapshot { .. } => {
                    panic!("these scenarios never compact the log")
                }
                Output::Send(env) => self.queue.push_back(env),
                Output::Apply(entries) => {
                    let applied = self.applied.entry(who.clone()).or_default();
                    for entry in entries {
                        if let Some(last) = applied.last() {
                            assert_eq!(entry.index, last.index + 1, "applied out of order");
                        }
                        applied.push(entry);
                    }
                }
            }
        }
        if let Some((index, term)) = durable {
            node.persisted(index, term);
            // Committing may have produced more outputs.
            self.drain(who);
        }
    }

    /// Delivers one queued message.
    fn deliver(&mut self, env: Envelope) {
        let to = env.to.clone();
        self.nodes.get_mut(&to).expect("node exists").step(env);
        self.drain(&to);
    }

    /// Delivers every queued message, and the answers they cause, until the network is quiet.
    fn deliver_all(&mut self) {
        while let Some(env) = self.queue.pop_front() {
            self.deliver(env);
        }
    }

    /// Takes the queued messages to `n` out of the network.
    fn take_to(&mut self, n: usize) -> Vec<Envelope> {
        let queue = std::mem::take(&mut self.queue);
        let (to_n, rest): (Vec<_>, Vec<_>) = queue.into_iter().partition(|e| e.to == id(n));
        self.queue = rest.into();
        to_n
    }

    /// Ticks node `n` once and delivers what follows, losing every message to or from a
    /// server other than `n` and those in `reachable`.
    fn tick_reaching(&mut self, n: usize, reachable: &[usize]) {
        self.node(n).tick();
        self.drain(&id(n));
        let alive: Vec<usize> = std::iter::once(n)
            .chain(reachable.iter().copied())
            .collect();
        self.deliver_among(&alive);
    }

    /// Ticks node `n` until it is primary, delivering everything on the way.
    fn elect(&mut self, n: usize) {
        for _ in 0..100 {
            if self.node(n).is_primary() {
                self.deliver_all();
                return;
            }
            self.node(n).tick();
            self.drain(&id(n));
            self.deliver_all();
        }
        panic!("n{n} was not elected");
    }

    fn propose(&mut self, n: usize, command: &[u8]) -> Index {
        let index = self
            .node(n)
            .propose(command.to_vec())
            .expect("n is primary");
        self.drain(&id(n));
        index
    }

    fn commit_index(&mut self, n: usize) -> Index {
        self.node(n).status().commit_index
    }

    fn applied_commands(&self, n: usize) -> Vec<Vec<u8>> {
        self.applied
            .get(&id(n))
            .into_iter()
            .flatten()
            .filter_map(|e| match &e.payload {
                Payload::Command(c) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Raft §5.3/§5.4: an entry is committed only once a majority of the members hold it
/// durably; the primary's own copy counts as one.
#[test]
fn entry_commits_only_after_a_majority_has_it() {
    for (size, needed_backups) in [(3, 1), (5, 2)] {
        let mut c = Cluster::new(size);
        c.elect(1);
        let index = c.propose(1, b"hello");
        assert!(
            c.commit_index(1) < index,
            "committed on the primary's copy alone"
        );

        let mut acks = Vec::new();
        for backup in 2..=size {
            for env in c.take_to(backup) {
                c.deliver(env);
            }
        }
        // Every backup now holds the entry; hand the primary their acknowledgements one by one.
        acks.extend(c.queue.drain(..));
        for (received, ack) in acks.into_iter().enumerate() {
            assert!(
                c.commit_index(1) < index,
                "{size} servers: committed after {received} acknowledgements"
            );
            c.deliver(ack);
            if received + 1 == needed_backups {
                assert_eq!(c.commit_index(1), index, "{size} servers: majority reached");
                break;
            }
        }
        assert_eq!(c.applied_commands(1), vec![b"hello".to_vec()]);
    }
}

/// A backup that misses an append does not apply the next one out of order: it rejects it,
/// and the primary sends the missing entries. (Only a full append follows one in flight, so
/// the next is made full.)
#[test]
fn backup_with_a_gap_asks_for_the_missing_entries() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, b"one");
    let lost = c.take_to(2);
    assert_eq!(lost.len(), 1, "one append to n2 in flight");
    c.deliver_all(); // n3 acknowledges; "one" commits
    let later: Vec<Vec<u8>> = (0..MAX_APPEND_ENTRIES)
        .map(|i| format!("two {i}").into_bytes())
        .collect();
    for command in &later {
        c.propose(1, command);
    }
    let last_before = c.node(2).status().last_index;

    // n2 receives the full append without "one": it must refuse, not apply or store it.
    let gap = c.take_to(2);
    assert_eq!(gap.len(), 1, "the full append follows the one in flight");
    for env in gap {
        c.deliver(env);
    }
    assert_eq!(
        c.node(2).status().last_index,
        last_before,
        "stored past a gap"
    );
    let rejection = c
        .queue
        .iter()
        .find(|e| e.from == id(2))
        .expect("n2 answers");
    assert!(
        matches!(rejection.message, Message::AppendRejected { .. }),
        "n2 rejects the append after the gap: {rejection:?}"
    );

    // The primary probes back and n2 ends up with all of them, in order.
    for _ in 0..4 {
        c.deliver_all();
        c.node(1).tick();
        c.drain(&id(1));
    }
    c.deliver_all();
    let mut expected = vec![b"one".to_vec()];
    expected.extend(later);
    assert_eq!(c.applied_commands(2), expected);
    assert_eq!(c.node(2).status().last_index, c.node(1).status().last_index);
}

/// The same append delivered twice changes nothing the second time: no write, no second
/// application, and the same acknowledgement.
#[test]
fn duplicate_append_is_harmless() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, b"once");
    let appends = c.take_to(2);
    assert_eq!(appends.len(), 1);
    c.deliver(appends[0].clone());
    let writes = c.writes[&id(2)];
    let first_answer = c.queue.pop_back().expect("n2 answers");
    c.deliver(appends[0].clone());
    let second_answer = c.queue.pop_back().expect("n2 answers again");
    assert_eq!(first_answer, second_answer);
    c.queue.push_back(first_answer);
    assert_eq!(c.writes[&id(2)], writes, "the duplicate was written again");

    c.deliver_all();
    c.node(1).tick();
    c.drain(&id(1));
    c.deliver_all();
    c.deliver(appends[0].clone()); // and once more, after it was applied
    c.deliver_all();
    assert_eq!(c.applied_commands(2), vec![b"once".to_vec()]);
}

/// Raft §5.2: one primary per term; the others follow it and learn who it is.
#[test]
fn election_makes_one_primary_that_every_backup_knows() {
    let mut c = Cluster::new(3);
    c.elect(2);
    let term = c.node(2).term();
    for n in [1, 3] {
        let status = c.node(n).status();
        assert_eq!(status.role, RoleKind::Backup);
        assert_eq!(status.term, term);
        assert_eq!(status.primary, Some(id(2)));
    }
}

/// A proposal to a backup is refused with the primary's name, so the caller can redirect.
#[test]
fn backup_refuses_proposals_and_names_the_primary() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let err = c.node(2).propose(b"x".to_vec()).unwrap_err();
    assert_eq!(err, crate::Error::NotPrimary { primary: id(1) });
}

/// Membership: a joining server catches up as a learner, then a configuration entry makes it
/// a member on every server.
#[test]
fn learner_becomes_a_member_once_caught_up() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, b"before the join");
    c.deliver_all();
    let joiner = id(4);
    let empty = Node::new(
        joiner.clone(),
        HardState::default(),
        Vec::new(),
        Options::default(),
        9,
    );
    c.nodes.insert(joiner.clone(), empty);
    assert_eq!(c.node(4).status().role, RoleKind::Joining);

    c.node(1)
        .add_learner(joiner.clone())
        .expect("n1 is primary");
    c.drain(&id(1));
    for _ in 0..5 {
        c.deliver_all();
        c.node(1).tick();
        c.drain(&id(1));
    }
    c.deliver_all();
    for n in 1..=4 {
        assert_eq!(
            c.node(n).members(),
            vec![id(1), id(2), id(3), id(4)],
            "on n{n}"
        );
    }
    assert_eq!(c.node(4).status().role, RoleKind::Backup);
    assert_eq!(c.applied_commands(4), vec![b"before the join".to_vec()]);
}

/// Membership: removing a member takes effect with its configuration entry; the remaining
/// two of three commit on their own (a majority of two is both).
#[test]
fn removed_member_no_longer_counts_for_the_majority() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, b"before");
    c.deliver_all();
    c.node(1).tick();
    c.drain(&id(1));
    c.deliver_all();

    c.node(1).remove_member(&id(3)).expect("n1 is primary");
    c.drain(&id(1));
    c.deliver_all();
    assert_eq!(c.node(1).members(), vec![id(1), id(2)]);
    assert_eq!(c.node(2).members(), vec![id(1), id(2)]);

    // n3 is gone for good: nothing reaches it, and n1 + n2 still commit.
    let index = c.propose(1, b"after");
    let _ = c.take_to(3);
    c.deliver_all();
    assert_eq!(c.commit_index(1), index);
    assert!(
        c.queue.iter().all(|e| e.to != id(3)),
        "n3 gets no more appends"
    );
}

/// Check-quorum (module docs, Roles and terms): a primary that one backup of two still
/// answers keeps office, the two being a majority of three. Cut off from both, it steps down
/// at the second check after the cut: the first still counts the answers from before the
/// cut, the second finds a whole window of silence.
#[test]
fn a_primary_steps_down_after_a_whole_window_without_a_majority() {
    // The `election_ticks` of `Cluster::new`: one check every window.
    const WINDOW: usize = 10;
    let mut c = Cluster::new(3);
    c.elect(1);
    for _ in 0..3 * WINDOW {
        c.tick_reaching(1, &[2]);
    }
    assert!(c.node(1).is_primary(), "n1 and n2 are a majority");

    for _ in 0..WINDOW {
        c.tick_reaching(1, &[]);
    }
    assert!(
        c.node(1).is_primary(),
        "answers from before the cut count once"
    );
    for _ in 0..WINDOW {
        c.tick_reaching(1, &[]);
    }
    assert!(!c.node(1).is_primary(), "a whole window without a majority");
}

/// The primary cannot remove itself, nor a server that is not a member.
#[test]
fn remove_refuses_the_primary_and_strangers() {
    let mut c = Cluster::new(3);
    c.elect(1);
    assert!(matches!(
        c.node(1).remove_member(&id(1)),
        Err(crate::Error::Conflict(_))
    ));
    assert!(matches!(
        c.node(1).remove_member(&"n9".to_string()),
        Err(crate::Error::NotFound(_))
    ));
    assert!(matches!(
        c.node(2).remove_member(&id(3)),
        Err(crate::Error::NotPrimary { .. })
    ));
}

/// Rule (how far the log may be compacted): the primary holds its log back for a backup it
/// heard from recently that is catching up, not beyond the entry after what it matched; a
/// backup too far behind (beyond the slack) holds nothing back, it will get a snapshot; nor
/// does one that fell silent for an election timeout.
#[test]
fn log_is_held_for_a_backup_catching_up_but_not_for_a_distant_or_silent_one() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let matched = c.commit_index(1);
    // n3 misses five entries (every append to it is lost); n2 takes them.
    for n in 0..5u8 {
        c.propose(1, &[n]);
        c.take_to(3);
        c.deliver_all();
    }
    let upto = c.commit_index(1);
    assert_eq!(upto, matched + 5);
    assert_eq!(
        c.node(1).compaction_floor(upto, 100),
        Some(matched),
        "held for n3, which answered recently and is 5 behind"
    );
    assert_eq!(
        c.node(1).compaction_floor(upto, 4),
        Some(upto),
        "n3 is beyond the slack: only n2, which has everything, counts"
    );
    // n3 falls silent for an election timeout (n2 still answers).
    for _ in 0..11 {
        c.tick_reaching(1, &[2]);
    }
    assert_eq!(
        c.node(1).compaction_floor(upto, 100),
        Some(upto),
        "a silent backup holds nothing back"
    );
    assert_eq!(
        c.node(2).compaction_floor(upto, 100),
        None,
        "only a primary holds"
    );
}

impl Cluster {
    /// Delivers every queued message between servers in `alive`; the rest is lost.
    fn deliver_among(&mut self, alive: &[usize]) {
        let in_reach = |server: &NodeId| alive.iter().any(|&a| *server == id(a));
        while let Some(env) = self.queue.pop_front() {
            if in_reach(&env.from) && in_reach(&env.to) {
                self.deliver(env);
            }
        }
    }

    /// One tick of every server in `alive`, then what follows among them.
    fn tick_among(&mut self, alive: &[usize]) {
        for &n in alive {
            self.node(n).tick();
            self.drain(&id(n));
        }
        self.deliver_among(alive);
    }

    fn reads(&self, n: usize) -> Vec<(ReadId, Index)> {
        self.reads.get(&id(n)).cloned().unwrap_or_default()
    }
}

/// Crash detection on connection loss: when the primary's process dies, the backups see
/// its streams close and elect a new primary within a few ticks, long before any election
/// timeout (10 ticks here) would have run out.
#[test]
fn backups_that_lose_a_dead_primary_elect_another_within_ticks() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let term = c.node(1).term();
    for n in [2, 3] {
        c.node(n).connection_lost(&id(1));
        c.drain(&id(n));
    }
    c.deliver_among(&[2, 3]);
    for _ in 0..3 {
        if c.node(2).is_primary() || c.node(3).is_primary() {
            break;
        }
        c.tick_among(&[2, 3]);
    }
    let new = if c.node(2).is_primary() { 2 } else { 3 };
    assert!(c.node(new).is_primary(), "a new primary within 3 ticks");
    assert_eq!(c.node(new).term(), term + 1, "one election, no split vote");
}

/// Leader stickiness with connection loss: one backup losing its stream from a healthy
/// primary starts a pre-vote, but the other backup still hears the primary and refuses it,
/// so the term never moves; the next heartbeat brings the backup back.
#[test]
fn one_lost_connection_does_not_depose_a_healthy_primary() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let term = c.node(1).term();
    c.node(2).connection_lost(&id(1));
    c.drain(&id(2));
    c.deliver_all();
    for _ in 0..5 {
        c.tick_among(&[1, 2, 3]);
    }
    assert!(c.node(1).is_primary());
    for n in 1..=3 {
        assert_eq!(c.node(n).term(), term, "n{n} kept the term");
    }
    assert_eq!(
        c.node(2).primary(),
        Some(id(1)),
        "n2 follows the primary again"
    );
}

/// ReadIndex: a read is confirmed only once a majority has answered a round that began
/// after it was asked, and carries the commit index of that moment.
#[test]
fn a_read_is_confirmed_by_a_majority_round() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, b"x");
    c.deliver_all();
    let commit = c.commit_index(1);
    let read = c.node(1).read_index().expect("a primary takes reads");
    c.drain(&id(1));
    assert!(
        c.reads(1).is_empty(),
        "not confirmed before anyone answered"
    );
    c.deliver_all();
    assert_eq!(c.reads(1), vec![(read, commit)]);
}

/// ReadIndex: a primary cut off from the others never confirms a read, however long it
/// waits; the others elect a new primary meanwhile.
#[test]
fn a_cut_off_primary_never_confirms_a_read() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.node(1).read_index().expect("a primary takes reads");
    c.drain(&id(1));
    c.queue.clear();
    for _ in 0..40 {
        c.tick_among(&[1]);
        c.tick_among(&[2, 3]);
    }
    assert!(c.reads(1).is_empty(), "no confirmation without a majority");
    assert!(c.node(2).is_primary() || c.node(3).is_primary());
}

/// Hand-over (Raft thesis 3.10): the primary stops taking proposals, brings the chosen
/// backup up to date and tells it to campaign; it wins the next term at once, with every
/// entry the old primary had, although every voter heard the old primary a moment ago.
#[test]
fn hand_over_makes_the_backup_primary_in_the_next_term_with_the_whole_log() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let term = c.node(1).term();
    c.propose(1, b"a");
    c.propose(1, b"b");
    assert_eq!(c.node(1).hand_over(Some(id(2))).unwrap(), id(2));
    assert!(
        matches!(
            c.node(1).propose(b"c".to_vec()),
            Err(crate::Error::Unavailable(_))
        ),
        "no new proposals during a hand-over"
    );
    c.drain(&id(1));
    c.deliver_all();
    assert!(c.node(2).is_primary(), "the named backup took over");
    assert_eq!(c.node(2).term(), term + 1);
    assert!(!c.node(1).is_primary());
    c.deliver_all();
    assert_eq!(c.applied_commands(2), vec![b"a".to_vec(), b"b".to_vec()]);
}
