//! The application state a replica applies to: the store, with the changes not yet flushed
//! to it layered on top.
//!
//! `apply` writes into the newest layer (memory only, so applying never waits on disk).
//! Every so often the replica freezes that layer and hands it to the storage side, which
//! writes it to the store in one durable transaction; once that is reported, the layer is
//! dropped and reads find the same records in the store. Reads look from the newest layer
//! down to the store. A layer adds or replaces records, and removes clients (an expired
//! client that never logged in): a record found in a newer layer is the current one, and a
//! removal in a newer layer hides the record below it. Memory is bounded by what is
//! applied between two flushes, not by the size of the board.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use super::store::Store;
use crate::app::{
    ClientRecord, Counters, LastMessage, MemTables, MessageRecord, Tables, TablesMut,
};
use crate::error::Result;
use crate::replication::Index;

pub struct Machine<S> {
    store: S,
    /// Changes applied since the last freeze.
    active: MemTables,
    /// Frozen layers on their way to the store, oldest first, each with the applied index it
    /// ends at.
    frozen: VecDeque<(Index, Arc<MemTables>)>,
    counters: Counters,
}

impl<S: Store> Machine<S> {
    /// The store's state, with `counters` as the store holds them.
    pub fn new(store: S, counters: Counters) -> Machine<S> {
        Machine {
            store,
            active: MemTables::default(),
            frozen: VecDeque::new(),
            counters,
        }
    }

    /// Freezes the changes applied so far (ending at applied index `upto`) for a flush.
    pub fn freeze(&mut self, upto: Index) -> Arc<MemTables> {
        let mut layer = std::mem::take(&mut self.active);
        layer.counters = self.counters;
        let layer = Arc::new(layer);
        self.frozen.push_back((upto, layer.clone()));
        layer
    }

    /// The store holds everything up to `upto`: the layers it covers are dropped.
    pub fn flushed(&mut self, upto: Index) {
        while self.frozen.front().is_some_and(|(end, _)| *end <= upto) {
            self.frozen.pop_front();
        }
    }

    /// The store was replaced by one received whole (its counters given): every layer
    /// belonged to the state it replaced.
    pub fn reset(&mut self, counters: Counters) {
        self.active = MemTables::default();
        self.frozen.clear();
        self.counters = counters;
    }

    /// The counters as applied so far (held in memory: reading them cannot fail).
    pub fn current_counters(&self) -> Counters {
        self.counters
    }

    /// Records held in memory, for the bound the tests check.
    pub fn layered_records(&self) -> usize {
        let size = |t: &MemTables| {
            t.clients.len() + t.removed_clients.len() + t.users.len() + t.messages.len()
        };
        size(&self.active) + self.frozen.iter().map(|(_, t)| size(t)).sum::<usize>()
    }

    /// The layers, newest first.
    fn layers(&self) -> impl Iterator<Item = &MemTables> {
        std::iter::once(&self.active).chain(self.frozen.iter().rev().map(|(_, t)| t.as_ref()))
    }

    fn merged<K: Ord + Clone, V: Clone>(
        &self,
        base: Vec<(K, V)>,
        table: impl Fn(&MemTables) -> &BTreeMap<K, V>,
    ) -> Vec<(K, V)> {
        let mut all: BTreeMap<K, V> = base.into_iter().collect();
        // Oldest first, so that newer records win.
        for (_, layer) in &self.frozen {
            for (k, v) in table(layer) {
                all.insert(k.clone(), v.clone());
            }
        }
        for (k, v) in table(&self.active) {
            all.insert(k.clone(), v.clone());
        }
        all.into_iter().collect()
    }
}

impl<S: Store> Tables for Machine<S> {
    fn client(&self, client_id: &str) -> Result<Option<Cow<'_, ClientRecord>>> {
        for layer in self.layers() {
            if let Some(record) = layer.clients.get(client_id) {
                return Ok(Some(Cow::Borrowed(record)));
            }
            if layer.removed_clients.contains(client_id) {
                return Ok(None);
            }
        }
        self.store.client(client_id)
    }

    fn user(&self, username: &str) -> Result<Option<String>> {
        for layer in self.layers() {
            if let Some(hash) = layer.users.get(username) {
                return Ok(Some(hash.clone()));
            }
        }
        self.store.user(username)
    }

    fn message(&self, index: u64) -> Result<Option<Cow<'_, MessageRecord>>> {
        for layer in self.layers() {
            if let Some(record) = layer.messages.get(&index) {
                return Ok(Some(Cow::Borrowed(record)));
            }
        }
        self.store.message(index)
    }

    fn messages(&self, from: u64, limit: u64) -> Result<Vec<(u64, MessageRecord)>> {
        // The store holds a gapless prefix of the board; the layers hold what follows it.
        let mut found = self.store.messages(from.max(1), limit)?;
        let mut next = found.last().map_or(from.max(1), |(index, _)| index + 1);
        while (found.len() as u64) < limit && next <= self.counters.messages {
            let Some(record) = self
                .layers()
                .find_map(|layer| layer.messages.get(&next).cloned())
            else {
                break;
            };
            found.push((next, record));
            next += 1;
        }
        Ok(found)
    }

    fn clients(&self) -> Result<Vec<(String, ClientRecord)>> {
        let mut all: BTreeMap<String, ClientRecord> = self.store.clients()?.into_iter().collect();
        // Oldest first; within a layer removals and records never name the same client.
        let oldest_first = self
            .frozen
            .iter()
            .map(|(_, t)| t.as_ref())
            .chain(std::iter::once(&self.active));
        for layer in oldest_first {
            for id in &layer.removed_clients {
                all.remove(id);
            }
            for (id, record) in &layer.clients {
                all.insert(id.clone(), record.clone());
            }
        }
        Ok(all.into_iter().collect())
    }

    fn users(&self) -> Result<Vec<(String, String)>> {
        Ok(self.merged(self.store.users()?, |t| &t.users))
    }

    fn counters(&self) -> Result<Counters> {
        Ok(self.counters)
    }
}

impl<S: Store> TablesMut for Machine<S> {
    fn put_client(&mut self, client_id: &str, record: ClientRecord) {
        self.active.put_client(client_id, record);
    }

    fn set_last_message(&mut self, client_id: &str, last: LastMessage) -> Result<()> {
        if !self.active.clients.contains_key(client_id)
            && let Some(client) = self.client(client_id)?.map(Cow::into_owned)
        {
            // In an older layer or the store: the newest layer gets a copy to change.
            self.active.put_client(client_id, client);
        }
        self.active.set_last_message(client_id, last)
    }

    fn remove_client(&mut self, client_id: &str) {
        self.active.remove_client(client_id);
    }

    fn put_user(&mut self, username: &str, password_hash: &str) {
        self.active.put_user(username, password_hash);
    }

    fn put_message(&mut self, index: u64, record: MessageRecord) {
        self.active.put_message(index, record);
    }

    fn set_counters(&mut self, counters: Counters) {
        self.counters = counters;
        self.active.set_counters(counters);
    }
}
