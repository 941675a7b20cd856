//! The embedded store held against the simulation's model of it: the same flushes give the
//! same answers, and a copy of the store's file taken at any moment while flushes are being
//! written (what a crash leaves on disk) opens at a flush boundary and holds exactly the
//! flushes up to it.
//!
//! The simulation's checks rest on its model of the store (`storage.rs`: a flush is whole or
//! absent, reads see the last one); these tests are what ties that model to `RedbStore`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::storage::SimStore;
use crate::app::{Command, MemTables, Request, Tables, TablesMut, apply};
use crate::replica::{Store, StoreMeta, StoreWrite};
use crate::replication::SnapshotMeta;
use crate::storage::RedbStore;

/// Tables that record every write, so a flush carries exactly what changed.
#[derive(Default)]
struct Recording {
    all: MemTables,
    changes: MemTables,
}

impl Tables for Recording {
    fn client(
        &self,
        id: &str,
    ) -> crate::Result<Option<std::borrow::Cow<'_, crate::app::ClientRecord>>> {
        self.all.client(id)
    }
    fn user(&self, name: &str) -> crate::Result<Option<String>> {
        self.all.user(name)
    }
    fn message(
        &self,
        index: u64,
    ) -> crate::Result<Option<std::borrow::Cow<'_, crate::app::MessageRecord>>> {
        self.all.message(index)
    }
    fn messages(
        &self,
        from: u64,
        limit: u64,
    ) -> crate::Result<Vec<(u64, crate::app::MessageRecord)>> {
        self.all.messages(from, limit)
    }
    fn clients(&self) -> crate::Result<Vec<(String, crate::app::ClientRecord)>> {
        self.all.clients()
    }
    fn users(&self) -> crate::Result<Vec<(String, String)>> {
        self.all.users()
    }
    fn counters(&self) -> crate::Result<crate::app::Counters> {
        Ok(self.all.counters)
    }
}

impl TablesMut for Recording {
    fn put_client(&mut self, id: &str, record: crate::app::ClientRecord) {
        self.all.put_client(id, record.clone());
        self.changes.put_client(id, record);
    }
    fn remove_client(&mut self, id: &str) {
        self.all.remove_client(id);
        self.changes.remove_client(id);
    }
    fn put_user(&mut self, name: &str, hash: &str) {
        self.all.put_user(name, hash);
        self.changes.put_user(name, hash);
    }
    fn put_message(&mut self, index: u64, record: crate::app::MessageRecord) {
        self.all.put_message(index, record.clone());
        self.changes.put_message(index, record);
    }
    fn set_counters(&mut self, counters: crate::app::Counters) {
        self.all.set_counters(counters);
        self.changes.set_counters(counters);
    }
}

/// A random request over a few clients and users: most are messages; some expire clients.
fn random_request(rng: &mut ChaCha8Rng, seq: &mut u64) -> Request {
    let client = format!("c{}", rng.random_range(0..6));
    let user = format!("u{}", rng.random_range(0..4));
    let command = match rng.random_range(0..11) {
        0 => Command::InitClient {
            client_id: client,
            address: format!("127.0.0.1:{}", rng.random_range(9000..9100)),
        },
        1 => Command::Register {
            username: user.clone(),
            password_hash: format!("$argon2id$hash-{user}"),
        },
        2 => Command::Login {
            client_id: client.clone(),
            username: user,
            token_hash: format!("token-{client}"),
        },
        3 => Command::Logout {
            token_hash: format!("token-{client}"),
            client_id: client,
        },
        4 => Command::ExpireClient { client_id: client },
        _ => {
            *seq += 1;
            Command::Message {
                token_hash: format!("token-{client}"),
                client_id: client,
                seq: *seq,
                text: "x".repeat(rng.random_range(1..200)),
            }
        }
    };
    Request {
        origin: "127.0.0.1:1".to_string(),
        command,
    }
}

/// `count` flushes of random requests, each with the meta it ends at, and the whole state
/// after each (index k: after k flushes).
fn flushes(seed: u64, count: usize) -> (Vec<(StoreMeta, MemTables)>, Vec<MemTables>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut tables = Recording::default();
    let (mut seq, mut index) = (0, 0);
    let mut out = Vec::new();
    let mut states = vec![MemTables::default()];
    for _ in 0..count {
        for _ in 0..rng.random_range(1..40) {
            index += 1;
            apply(&mut tables, &random_request(&mut rng, &mut seq)).expect("memory");
        }
        let meta = StoreMeta {
            position: SnapshotMeta {
                index,
                term: 1 + index / 50,
                members: vec!["n1".to_string()],
            },
            counters: tables.all.counters,
        };
        let mut changes = std::mem::take(&mut tables.changes);
        changes.counters = tables.all.counters;
        out.push((meta, changes));
        states.push(tables.all.clone());
    }
    (out, states)
}

/// Asks both stores the same questions and compares the answers.
fn same_answers(real: &RedbStore, model: &SimStore, rng: &mut ChaCha8Rng) {
    assert_eq!(real.meta().unwrap(), model.meta().unwrap());
    assert_eq!(real.counters().unwrap(), model.counters().unwrap());
    for _ in 0..20 {
        let client = format!("c{}", rng.random_range(0..8));
        assert_eq!(
            real.client(&client).unwrap(),
            model.client(&client).unwrap()
        );
        let user = format!("u{}", rng.random_range(0..6));
        assert_eq!(real.user(&user).unwrap(), model.user(&user).unwrap());
        let index = rng.random_range(0..model.counters().unwrap().messages + 3);
        assert_eq!(real.message(index).unwrap(), model.message(index).unwrap());
        let (from, limit) = (rng.random_range(0..index + 2), rng.random_range(1..30));
        assert_eq!(
            real.messages(from, limit).unwrap(),
            model.messages(from, limit).unwrap()
        );
    }
    assert_eq!(real.clients().unwrap(), model.clients().unwrap());
    assert_eq!(real.users().unwrap(), model.users().unwrap());
}

/// The same flushes give the same answers from the real store and from the model, after
/// every flush and after a reopen.
#[test]
fn the_real_store_answers_as_the_model_does() {
    for seed in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let real = RedbStore::open(dir.path()).unwrap();
        let model = SimStore::default();
        let mut rng = ChaCha8Rng::seed_from_u64(seed + 100);
        same_answers(&real, &model, &mut rng);
        let (flushes, _) = flushes(seed, 40);
        for (meta, changes) in &flushes {
            real.write(meta, changes).unwrap();
            model.write(meta, changes).unwrap();
            same_answers(&real, &model, &mut rng);
        }
        drop(real);
        let reopened = RedbStore::open(dir.path()).unwrap();
        same_answers(&reopened, &model, &mut rng);
    }
}

/// What a stop leaves: copies of the store's file taken while a writer runs, each between
/// two of its flushes, open at a flush boundary k and hold exactly the state after the
/// first k flushes, with nothing of a later one. (A copy must not overlap a flush: a file
/// copied while several transactions commit can mix their pages in a way no crash can,
/// since a crash keeps the order the syncs give; torn writes of the log are tested at every
/// byte offset in `storage::wal`.)
#[test]
fn a_store_copied_between_flushes_opens_at_a_whole_prefix_of_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let real = RedbStore::open(dir.path()).unwrap();
    let (flushes, states) = flushes(7, 300);
    // Copy points spread over the whole run. The writer stops at each (after that many
    // flushes) until its copy is taken, so every copy falls between two flushes while the
    // writer runs, whatever the scheduler does.
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let mut targets: Vec<usize> = (0..40)
        .map(|n| (n * flushes.len() / 40 + rng.random_range(0..3)).max(1))
        .collect();
    targets.dedup();
    let (at_tx, at) = std::sync::mpsc::channel::<usize>();
    let (copied, copied_rx) = std::sync::mpsc::channel::<()>();
    let writer = {
        let (real, flushes, targets) = (real.clone(), flushes.clone(), targets.clone());
        std::thread::spawn(move || {
            for (i, (meta, changes)) in flushes.iter().enumerate() {
                real.write(meta, changes).unwrap();
                if targets.contains(&(i + 1)) {
                    at_tx.send(i + 1).unwrap();
                    copied_rx.recv().unwrap();
                }
            }
        })
    };
    let mut copies = Vec::new();
    for _ in &targets {
        at.recv().expect("the writer stops at every copy point");
        let copy = tempfile::tempdir().unwrap();
        std::fs::copy(dir.path().join("store"), copy.path().join("store")).unwrap();
        copies.push(copy);
        copied.send(()).unwrap();
    }
    writer.join().unwrap();
    let mut boundaries = Vec::new();
    for copy in &copies {
        let store = RedbStore::open(copy.path()).expect("a crashed store opens");
        let meta = store.meta().unwrap();
        let k = flushes
            .iter()
            .position(|(m, _)| *m == meta)
            .map_or(0, |p| p + 1);
        assert!(
            k > 0 || meta == StoreMeta::default(),
            "opened at {meta:?}, which is no flush's"
        );
        assert_eq!(
            MemTables::copy_of(&store).unwrap(),
            states[k],
            "the store at flush {k} holds another state than the first {k} flushes give"
        );
        boundaries.push(k);
    }
    println!("{} crash copies at flushes {boundaries:?}", copies.len());
    assert!(
        boundaries.iter().any(|&k| k > 0) && boundaries.windows(2).any(|w| w[0] != w[1]),
        "the copies fell on several flush boundaries: {boundaries:?}"
    );
}
