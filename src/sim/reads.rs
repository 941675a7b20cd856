//! Two checks of the simulation, with what they need of the run:
//!
//! - **Consistent reads are never stale.** A reader asks a server that believes it is the
//!   primary (a deposed one that does not know it yet included) for a consistent read. The
//!   state it is served from must have applied at least the highest index acknowledged to
//!   any client before the read began (`Invariant::StaleRead`).
//! - **A healthy primary stays.** In a calm run (only backup restarts, cut connections and
//!   hand-overs), once the first primary has settled in, a server becomes primary only
//!   through a hand-over (`Invariant::StickyPrimary`): a broken connection or a restarted
//!   backup must not depose anyone.

use rand::Rng;

use super::faults::TICK;
use super::runner::{Event, Sim};
use super::{Invariant, Violation};
use crate::replication::{ElectionCause, Index, NodeId, Term};

impl Sim {
    /// A reader's turn: a consistent read from a server that believes it is the primary.
    pub(super) fn read(&mut self) -> Result<(), Violation> {
        let at = self.now + self.rng.random_range(1..=2 * TICK);
        self.queue.schedule(at, Event::Read);
        if self.healing {
            return Ok(());
        }
        let primaries: Vec<usize> = (0..self.servers.len())
            .filter(|&s| self.servers[s].is_running())
            .filter(|&s| self.servers[s].node().is_some_and(|n| n.is_primary()))
            .collect();
        if primaries.is_empty() {
            return Ok(());
        }
        let server = primaries[self.rng.random_range(0..primaries.len())];
        self.next_read += 1;
        let id = self.next_read;
        let floor = self.history.highest_acknowledged();
        self.reads_waiting.insert(id, floor);
        let name = self.servers[server].id.clone();
        self.trace(|| format!("read {id} on {name} (acknowledged up to {floor})"));
        self.servers[server].read(id);
        self.drain(server)
    }

    /// Read `id` was served by `server` from a state that applied up to `applied`.
    pub(super) fn read_served(
        &mut self,
        server: usize,
        id: u64,
        applied: Index,
    ) -> Result<(), Violation> {
        let Some(floor) = self.reads_waiting.remove(&id) else {
            return Ok(());
        };
        self.report.consistent_reads += 1;
        if applied < floor {
            let name = &self.servers[server].id;
            return Err(Violation::new(
                Invariant::StaleRead,
                format!(
                    "read {id} served by {name} from a state at {applied}, but index {floor} \
                     was acknowledged before the read began"
                ),
            ));
        }
        Ok(())
    }

    /// `id` became primary in `term` (its election's cause was noted as it started).
    pub(super) fn sticky_primary(&mut self, id: &NodeId, term: Term) -> Result<(), Violation> {
        let server = self.ids[id];
        if !self.plan.calm {
            return Ok(());
        }
        let Some(settled_at) = self.settled_at else {
            let settle = 3 * u64::from(self.plan.opts.election_ticks) * TICK;
            self.settled_at = Some(self.now + settle);
            return Ok(());
        };
        let handed_over = matches!(
            self.last_cause[server],
            Some(ElectionCause::HandOver { .. })
        );
        if self.now > settled_at && !handed_over {
            return Err(Violation::new(
                Invariant::StickyPrimary,
                format!(
                    "{id} became primary in term {term} of a calm run without a hand-over \
                     (its election: {:?})",
                    self.last_cause[server]
                ),
            ));
        }
        Ok(())
    }

    /// Remembers why each server last started an election.
    pub(super) fn note_elections(&mut self, server: usize, causes: &[ElectionCause]) {
        if let Some(cause) = causes.last() {
            self.last_cause[server] = Some(cause.clone());
        }
    }
}
