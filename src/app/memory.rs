//! The application's tables in memory: ordered maps.
//!
//! Three uses: the changes a server applied since its last flush to the store (one such
//! layer per flush on its way), the simulation's model of the embedded store, and the
//! reference that tests and the simulation's checks replay committed entries into.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use super::records::{ClientRecord, Counters, LastMessage, MessageRecord};
use super::tables::{Tables, TablesMut, not_in_the_tables};
use crate::error::Result;

/// Tables as ordered maps. `BTreeMap` everywhere: iteration order is part of the answers.
#[derive(Clone, Debug, Default)]
pub struct MemTables {
    pub clients: BTreeMap<String, ClientRecord>,
    /// Clients removed here: as a layer of changes, these hide the records below it (a
    /// client id is never in both this and `clients`).
    pub removed_clients: BTreeSet<String>,
    pub users: BTreeMap<String, String>,
    pub messages: BTreeMap<u64, MessageRecord>,
    pub counters: Counters,
}

/// Equal when they hold the same state; which removals led there does not matter.
impl PartialEq for MemTables {
    fn eq(&self, other: &Self) -> bool {
        self.clients == other.clients
            && self.users == other.users
            && self.messages == other.messages
            && self.counters == other.counters
    }
}

impl Eq for MemTables {}

impl MemTables {
    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
            && self.removed_clients.is_empty()
            && self.users.is_empty()
            && self.messages.is_empty()
    }

    /// Writes every record and the counters of `newer` over these tables.
    pub fn overwrite_with(&mut self, newer: &MemTables) {
        for id in &newer.removed_clients {
            self.clients.remove(id);
        }
        for (id, record) in &newer.clients {
            self.clients.insert(id.clone(), record.clone());
        }
        for (name, hash) in &newer.users {
            self.users.insert(name.clone(), hash.clone());
        }
        for (index, record) in &newer.messages {
            self.messages.insert(*index, record.clone());
        }
        self.counters = newer.counters;
    }

    /// A copy of what any tables hold (for checks and tests; reads everything).
    pub fn copy_of(tables: &impl Tables) -> Result<MemTables> {
        Ok(MemTables {
            clients: tables.clients()?.into_iter().collect(),
            removed_clients: BTreeSet::new(),
            users: tables.users()?.into_iter().collect(),
            messages: tables.messages(1, u64::MAX)?.into_iter().collect(),
            counters: tables.counters()?,
        })
    }
}

impl Tables for MemTables {
    fn client(&self, client_id: &str) -> Result<Option<Cow<'_, ClientRecord>>> {
        Ok(self.clients.get(client_id).map(Cow::Borrowed))
    }

    fn user(&self, username: &str) -> Result<Option<String>> {
        Ok(self.users.get(username).cloned())
    }

    fn message(&self, index: u64) -> Result<Option<Cow<'_, MessageRecord>>> {
        Ok(self.messages.get(&index).map(Cow::Borrowed))
    }

    fn messages(&self, from: u64, limit: u64) -> Result<Vec<(u64, MessageRecord)>> {
        let take = usize::try_from(limit).unwrap_or(usize::MAX);
        Ok(self
            .messages
            .range(from.max(1)..)
            .take(take)
            .map(|(index, record)| (*index, record.clone()))
            .collect())
    }

    fn clients(&self) -> Result<Vec<(String, ClientRecord)>> {
        Ok(self
            .clients
            .iter()
            .map(|(id, record)| (id.clone(), record.clone()))
            .collect())
    }

    fn users(&self) -> Result<Vec<(String, String)>> {
        Ok(self
            .users
            .iter()
            .map(|(name, hash)| (name.clone(), hash.clone()))
            .collect())
    }

    fn counters(&self) -> Result<Counters> {
        Ok(self.counters)
    }
}

impl TablesMut for MemTables {
    fn put_client(&mut self, client_id: &str, record: ClientRecord) {
        self.removed_clients.remove(client_id);
        // In place when the client is here already: no new key.
        match self.clients.get_mut(client_id) {
            Some(kept) => *kept = record,
            None => {
                self.clients.insert(client_id.to_string(), record);
            }
        }
    }

    fn set_last_message(&mut self, client_id: &str, last: LastMessage) -> Result<()> {
        let client = self
            .clients
            .get_mut(client_id)
            .ok_or_else(|| not_in_the_tables(client_id))?;
        client.last = Some(last);
        Ok(())
    }

    fn remove_client(&mut self, client_id: &str) {
        self.clients.remove(client_id);
        self.removed_clients.insert(client_id.to_string());
    }

    fn put_user(&mut self, username: &str, password_hash: &str) {
        self.users
            .insert(username.to_string(), password_hash.to_string());
    }

    fn put_message(&mut self, index: u64, record: MessageRecord) {
        self.messages.insert(index, record);
    }

    fn set_counters(&mut self, counters: Counters) {
        self.counters = counters;
    }
}
