//! Scenario tests of the replica on its own: one server, a store in memory, its outputs
//! carried out by hand.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;

use super::*;
use crate::app::{
    ClientRecord, Command, Counters, MemTables, MessageRecord, Outcome, Tables, detached,
};
use crate::replication::{HardState, Options, SnapshotMeta};

/// A store in memory, shared with the test so that it can play the storage side.
#[derive(Clone, Default)]
struct MemStore(Rc<RefCell<(StoreMeta, MemTables)>>);

impl Tables for MemStore {
    fn client(&self, id: &str) -> Result<Option<Cow<'_, ClientRecord>>> {
        Ok(detached(self.0.borrow().1.client(id)?))
    }
    fn user(&self, name: &str) -> Result<Option<String>> {
        self.0.borrow().1.user(name)
    }
    fn message(&self, index: u64) -> Result<Option<Cow<'_, MessageRecord>>> {
        Ok(detached(self.0.borrow().1.message(index)?))
    }
    fn messages(&self, from: u64, limit: u64) -> Result<Vec<(u64, MessageRecord)>> {
        self.0.borrow().1.messages(from, limit)
    }
    fn clients(&self) -> Result<Vec<(String, ClientRecord)>> {
        self.0.borrow().1.clients()
    }
    fn users(&self) -> Result<Vec<(String, String)>> {
        self.0.borrow().1.users()
    }
    fn counters(&self) -> Result<Counters> {
        Ok(self.0.borrow().0.counters)
    }
}

impl Store for MemStore {
    fn meta(&self) -> Result<StoreMeta> {
        Ok(self.0.borrow().0.clone())
    }
}

impl StoreWrite for MemStore {
    fn write(&self, meta: &StoreMeta, changes: &MemTables) -> Result<()> {
        let mut inner = self.0.borrow_mut();
        inner.1.overwrite_with(changes);
        inner.0 = meta.clone();
        Ok(())
    }
}

/// A cluster of one that has bootstrapped, elected itself and applied its no-op.
struct One {
    replica: Replica<MemStore, u32>,
    store: MemStore,
    jobs_done: u64,
    replies: Vec<(u32, Answer)>,
    flushed: Vec<Index>,
}

impl One {
    fn start(settings: Settings) -> One {
        let store = MemStore::default();
        let mut replica = Replica::restore(
            "n1".to_string(),
            store.clone(),
            HardState::default(),
            SnapshotMeta::default(),
            Vec::new(),
            Options::default(),
            settings,
            1,
        )
        .unwrap();
        replica.bootstrap();
        let mut one = One {
            replica,
            store,
            jobs_done: 0,
            replies: Vec::new(),
            flushed: Vec::new(),
        };
        one.settle();
        assert!(
            one.replica.primary_ready(),
            "the lone server is a ready primary"
        );
        one
    }

    /// Carries out outputs, doing every job at once, until nothing is left to do.
    fn settle(&mut self) {
        loop {
            let outputs = self.replica.ready().unwrap();
            if outputs.is_empty() {
                return;
            }
            let mut report = Persisted::default();
            for output in outputs {
                match output {
                    Output::Persist(Job::Log(writes)) => {
                        for write in writes {
                            if let Write::Entries(entries) = write {
                                let last = entries.last().unwrap();
                                report.log = Some((last.index, last.term));
                            }
                        }
                    }
                    Output::Persist(Job::Flush { meta, changes }) => {
                        self.store.write(&meta, &changes).unwrap();
                        report.flushed = Some(meta.position.index);
                        self.flushed.push(meta.position.index);
                    }
                    Output::Persist(Job::Install { .. }) => report.installed += 1,
                    Output::Reply(waiter, answer) => self.replies.push((waiter, answer)),
                    _ => continue,
                }
                self.jobs_done += 1;
            }
            report.jobs = self.jobs_done;
            self.replica.persisted(report).unwrap();
        }
    }

    fn submit(&mut self, command: Command, waiter: u32) -> Option<Result<Outcome>> {
        let request = Request {
            origin: "127.0.0.1:1".to_string(),
            command,
        };
        match self.replica.submit(request, waiter) {
            Submitted::Pending(_) | Submitted::Confirming => None,
            Submitted::Done(_, result) => Some(result),
        }
    }

    fn logged_in(settings: Settings) -> One {
        let mut one = One::start(settings);
        one.submit(
            Command::InitClient {
                client_id: "c1".into(),
                address: "127.0.0.1:9".into(),
            },
            1,
        );
        one.submit(
            Command::Register {
                username: "alice".into(),
                password_hash: "$argon2id$x".into(),
            },
            2,
        );
        one.settle();
        one.submit(
            Command::Login {
                client_id: "c1".into(),
                username: "alice".into(),
                token_hash: "t".into(),
            },
            3,
        );
        one.settle();
        one
    }
}

fn message(seq: u64, text: &str) -> Command {
    Command::Message {
        client_id: "c1".into(),
        token_hash: "t".into(),
        seq,
        text: text.into(),
    }
}

/// Rule (one turn per write): a demo message is checked and proposed in one call; its retry
/// is answered from the applied state with the original index, proposing nothing; a refused
/// one never reaches the log.
#[test]
fn a_message_is_checked_and_proposed_in_one_call() {
    let mut one = One::logged_in(Settings::default());
    assert!(one.submit(message(1, "hello"), 10).is_none(), "proposed");
    one.settle();
    let index = match one.replies.last() {
        Some((10, Answer::Outcome(Ok(Outcome::Posted { index })))) => *index,
        other => panic!("{other:?}"),
    };
    let last = one.replica.node().status().last_index;
    assert_eq!(
        one.submit(message(1, "hello"), 11).map(|r| r.ok()),
        Some(Some(Outcome::Posted { index })),
        "the retry is answered at once"
    );
    // A refusal from the state waits for a confirmation round (ReadIndex); a cluster of
    // one confirms it in its next turn.
    assert!(one.submit(message(1, "other text"), 12).is_none());
    one.settle();
    assert!(matches!(
        one.replies.last(),
        Some((12, Answer::Outcome(Err(crate::Error::Conflict(_)))))
    ));
    assert_eq!(
        one.replica.node().status().last_index,
        last,
        "nothing proposed"
    );
}

/// Rule (flush and compaction): applied changes reach the store every
/// `flush_every_entries`, with the applied index; memory keeps only what is not flushed;
/// the log is compacted up to what the store holds, never beyond.
#[test]
fn applied_changes_are_flushed_in_batches_and_the_log_compacted_behind_them() {
    let settings = Settings {
        flush_every_entries: 10,
        flush_every_ticks: u32::MAX,
        compact_every: 20,
        ..Settings::default()
    };
    let mut one = One::logged_in(settings);
    for seq in 1..=45 {
        one.submit(message(seq, &format!("m{seq}")), 100 + seq as u32);
        one.settle();
    }
    let store = one.store.meta().unwrap();
    assert!(
        store.position.index >= 40,
        "flushed up to {}",
        store.position.index
    );
    assert_eq!(store.position.index, *one.flushed.last().unwrap());
    assert!(
        one.flushed.windows(2).all(|w| w[1] - w[0] >= 10),
        "{:?}",
        one.flushed
    );
    let base = one.replica.node().snapshot_base().index;
    assert!(
        base > 0 && base <= store.position.index,
        "compacted to {base}"
    );
    assert!(
        one.replica.tables().layered_records() < 30,
        "memory holds only what is not flushed: {} records",
        one.replica.tables().layered_records()
    );
    // Reads see everything: the store plus what is not flushed yet.
    let board = crate::app::board(one.replica.tables(), 1, 100).unwrap();
    assert_eq!(board.len(), 45);
    assert_eq!(board[44].text, "m45");
}

/// Rule (expiry through the layers): a client that never logged in, once flushed to the
/// store, is gone from every read as soon as its expiry is applied (the removal in memory
/// hides the store's record), and from the store itself after the next flush; a client that
/// logged in is refused expiry before anything is proposed.
#[test]
fn an_expired_client_is_gone_from_reads_at_once_and_from_the_store_after_a_flush() {
    let settings = Settings {
        flush_every_entries: 3,
        flush_every_ticks: u32::MAX,
        ..Settings::default()
    };
    let mut one = One::logged_in(settings);
    one.submit(
        Command::InitClient {
            client_id: "idle".into(),
            address: "127.0.0.1:10".into(),
        },
        20,
    );
    one.settle();
    for seq in 1..=3 {
        one.submit(message(seq, "flush me"), 20 + seq as u32);
        one.settle();
    }
    assert!(
        one.store.client("idle").unwrap().is_some(),
        "flushed to the store"
    );
    let clients_before = one.replica.tables().counters().unwrap().clients;

    one.submit(
        Command::ExpireClient {
            client_id: "idle".into(),
        },
        30,
    );
    one.settle();
    assert!(matches!(
        one.replies.last(),
        Some((30, Answer::Outcome(Ok(Outcome::ClientExpired { .. }))))
    ));
    let tables = one.replica.tables();
    assert_eq!(tables.client("idle").unwrap(), None);
    assert!(tables.clients().unwrap().iter().all(|(id, _)| id != "idle"));
    assert_eq!(tables.counters().unwrap().clients, clients_before - 1);

    for seq in 4..=6 {
        one.submit(message(seq, "flush again"), 30 + seq as u32);
        one.settle();
    }
    assert_eq!(
        one.store.client("idle").unwrap(),
        None,
        "removed from the store"
    );
    assert!(one.store.client("c1").unwrap().is_some());

    let last = one.replica.node().status().last_index;
    assert!(matches!(
        one.submit(
            Command::ExpireClient {
                client_id: "c1".into()
            },
            40
        ),
        None | Some(Err(crate::Error::Conflict(_)))
    ));
    one.settle();
    assert!(one.replica.tables().client("c1").unwrap().is_some());
    assert_eq!(
        one.replica.node().status().last_index,
        last,
        "nothing proposed"
    );
}
