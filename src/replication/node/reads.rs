//! ReadIndex (Raft thesis 6.4): answering from the primary's state without trusting a
//! clock. A read notes the commit index when it is asked, and is answered only once a
//! majority has echoed a confirmation round that began after it: that proves this server
//! was still the primary when the read was asked, so no other primary can have committed
//! anything newer. The state it is answered from must have applied the noted index.
//!
//! Rounds ride on the appends: every append carries the primary's latest round, and every
//! answer (acceptance or rejection, of the same term) echoes it. All reads asked in one
//! driver turn share one round, and a round needs no message of its own under load.

use tracing::debug;

use super::*;

impl Node {
    /// Asks for a read (primary only, once its term's first entry is committed): answered
    /// by `Output::ReadReady` with this id once confirmed. A primary that loses its office
    /// drops its reads; the driver fails whoever waits for them on the role change.
    pub fn read_index(&mut self) -> Result<ReadId> {
        let id = self.next_read;
        let commit = self.commit;
        let not_primary = self.not_primary();
        let Role::Primary(primary) = &mut self.role else {
            return Err(not_primary);
        };
        if primary.term_start > commit {
            // Its commit index may still lag the previous primary's.
            return Err(Error::NoPrimary);
        }
        self.next_read += 1;
        #[cfg(test)]
        if self.opts.planted_bug == Some(PlantedBug::ReadWithoutConfirmation) {
            self.outputs.push(Output::ReadReady { id, index: commit });
            return Ok(id);
        }
        primary.round_due = true;
        primary.reads.push_back(PendingRead {
            id,
            index: commit,
            round: primary.round + 1,
        });
        Ok(id)
    }

    /// Starts the round that reads asked since the last one wait for: a heartbeat carrying
    /// it (appends sent in the same turn carry it too).
    pub(super) fn start_round(&mut self) {
        let Role::Primary(primary) = &mut self.role else {
            return;
        };
        if !primary.round_due {
            return;
        }
        primary.round += 1;
        primary.round_due = false;
        debug!(round = primary.round, "confirmation round");
        self.heartbeat();
    }

    /// Answers every read whose round a majority (this primary included) has echoed.
    pub(super) fn confirm_reads(&mut self) {
        let Role::Primary(primary) = &self.role else {
            return;
        };
        let Some(oldest) = primary.reads.front() else {
            return;
        };
        let (oldest, own) = (oldest.round, primary.round);
        let confirmed = self.reached_by(quorum(self.log.members().len()), own, |p| p.round);
        if oldest > confirmed {
            return;
        }
        let Role::Primary(primary) = &mut self.role else {
            return;
        };
        let mut ready = Vec::new();
        while primary.reads.front().is_some_and(|r| r.round <= confirmed) {
            if let Some(read) = primary.reads.pop_front() {
                ready.push(Output::ReadReady {
                    id: read.id,
                    index: read.index,
                });
            }
        }
        self.outputs.extend(ready);
    }
}
