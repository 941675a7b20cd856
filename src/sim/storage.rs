//! The disk of one simulated server: what is durable, what is only written, and the
//! messages that wait for a sync.
//!
//! The model follows the storage worker (`src/server/persist.rs`): writes are appended in the
//! core's order; a sync makes every write so far durable at once (group commit), reports how
//! far the log is durable, and only then lets the waiting messages leave. A crash keeps the
//! durable state plus a prefix of the unsynced writes (the tail of a log file that the OS
//! happened to flush), and loses every waiting message.

use crate::replication::{Entry, Envelope, HardState, Index, Term, Write};

/// One server's disk.
pub struct Storage {
    /// Durable: survives a crash.
    hard_state: HardState,
    log: Vec<Entry>,
    /// Written in this order since the last sync, not yet durable.
    unsynced: Vec<Write>,
    /// Messages that may leave only once `unsynced` is durable.
    waiting: Vec<Envelope>,
    /// The log as written (durable plus unsynced): the same as the node's own log, which is
    /// what the checks inspect when the node becomes primary.
    written: Vec<Entry>,
}

/// What a sync did.
pub struct Synced {
    /// The last entry now durable, if entries were written: for `Node::persisted`.
    pub persisted: Option<(Index, Term)>,
    /// The messages released by the sync, in the order the core produced them.
    pub released: Vec<Envelope>,
}

impl Storage {
    /// A disk holding `hard_state` and `log`, all durable.
    pub fn new(hard_state: HardState, log: Vec<Entry>) -> Storage {
        Storage {
            hard_state,
            written: log.clone(),
            log,
            unsynced: Vec::new(),
            waiting: Vec::new(),
        }
    }

    /// The durable state, as a restarted server reads it back.
    pub fn durable(&self) -> (HardState, Vec<Entry>) {
        (self.hard_state.clone(), self.log.clone())
    }

    pub fn durable_term(&self) -> Term {
        self.hard_state.term
    }

    /// The log as written so far, durable or not.
    pub fn written(&self) -> &[Entry] {
        &self.written
    }

    pub fn has_unsynced(&self) -> bool {
        !self.unsynced.is_empty()
    }

    /// Appends a write. Fails if it would leave a gap in the log, which no correct core asks
    /// for (and the real log store would refuse).
    pub fn write(&mut self, write: Write) -> Result<(), String> {
        let mut hard_state = HardState::default();
        apply(&mut hard_state, &mut self.written, &write)?;
        self.unsynced.push(write);
        Ok(())
    }

    /// Holds a message until the writes before it are durable. With nothing unsynced it
    /// may leave at once, which is returned.
    pub fn send_after_writes(&mut self, envelope: Envelope) -> Option<Envelope> {
        if self.unsynced.is_empty() {
            return Some(envelope);
        }
        self.waiting.push(envelope);
        None
    }

    /// Makes every write durable and releases the messages that waited for them.
    pub fn sync(&mut self) -> Synced {
        let mut persisted = None;
        for write in std::mem::take(&mut self.unsynced) {
            if let Write::Entries(entries) = &write {
                let last = entries.last().expect("the core never writes no entries");
                persisted = Some((last.index, last.term));
            }
            apply(&mut self.hard_state, &mut self.log, &write)
                .expect("a write accepted once applies to the durable log as well");
        }
        Synced {
            persisted,
            released: std::mem::take(&mut self.waiting),
        }
    }

    /// A crash: the first `keep` unsynced writes reach the disk after all, the rest and every
    /// waiting message are lost. Returns how many unsynced writes there were.
    pub fn crash(&mut self, keep: impl FnOnce(usize) -> usize) -> usize {
        let unsynced = std::mem::take(&mut self.unsynced);
        let total = unsynced.len();
        for write in unsynced.into_iter().take(keep(total)) {
            apply(&mut self.hard_state, &mut self.log, &write)
                .expect("a write accepted once applies to the durable log as well");
        }
        self.waiting.clear();
        self.written = self.log.clone();
        total
    }
}

/// Carries out one write on a hard state and a log, as the log store does: entries replace
/// everything from their first index on.
fn apply(hard_state: &mut HardState, log: &mut Vec<Entry>, write: &Write) -> Result<(), String> {
    match write {
        Write::Compact(_) => return Err("the model takes no snapshots".to_string()),
        Write::HardState(state) => *hard_state = state.clone(),
        Write::Entries(entries) => {
            let Some(first) = entries.first() else {
                return Err("a write of no entries".to_string());
            };
            let contiguous = entries
                .iter()
                .enumerate()
                .all(|(i, e)| e.index == first.index + i as Index);
            if first.index == 0 || first.index > log.len() as Index + 1 || !contiguous {
                return Err(format!(
                    "write of entries {}..={} onto a log ending at {}",
                    first.index,
                    entries.last().map_or(0, |e| e.index),
                    log.len()
                ));
            }
            log.truncate(first.index as usize - 1);
            log.extend(entries.iter().cloned());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::{Message, Payload};

    fn entry(index: Index, term: Term) -> Entry {
        Entry {
            term,
            index,
            payload: Payload::Noop,
        }
    }

    fn envelope() -> Envelope {
        Envelope {
            from: "n1".to_string(),
            to: "n2".to_string(),
            term: 1,
            message: Message::AppendAccepted { match_index: 2 },
        }
    }

    /// Contract of the driver: a message that follows a write leaves only once the write is
    /// durable; a crash before the sync loses both the unsynced tail and the message.
    #[test]
    fn gated_message_leaves_after_the_sync_and_dies_in_a_crash() {
        let mut disk = Storage::new(HardState::default(), vec![entry(1, 0)]);
        assert!(
            disk.send_after_writes(envelope()).is_some(),
            "nothing to wait for"
        );
        disk.write(Write::Entries(vec![entry(2, 1)])).unwrap();
        assert!(disk.send_after_writes(envelope()).is_none());
        let synced = disk.sync();
        assert_eq!(synced.persisted, Some((2, 1)));
        assert_eq!(synced.released, vec![envelope()]);

        disk.write(Write::Entries(vec![entry(2, 2), entry(3, 2)]))
            .unwrap();
        disk.send_after_writes(envelope());
        assert_eq!(disk.written().len(), 3);
        disk.crash(|_| 0);
        assert_eq!(disk.durable().1, vec![entry(1, 0), entry(2, 1)]);
        assert_eq!(disk.written(), &[entry(1, 0), entry(2, 1)]);
        assert!(
            disk.sync().released.is_empty(),
            "the waiting message was lost"
        );
    }

    /// A write past the end of the log is refused rather than stored with a gap.
    #[test]
    fn write_with_a_gap_is_refused() {
        let mut disk = Storage::new(HardState::default(), vec![entry(1, 0)]);
        assert!(disk.write(Write::Entries(vec![entry(3, 1)])).is_err());
    }
}
