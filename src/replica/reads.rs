//! Reads that must not be stale (ReadIndex, see `replication::node::reads`): the linearizable
//! reads a client asks for (`?consistent=true`) and the re-check of a refusal. Each waits
//! for its confirmation round, then for the state to have applied the commit index the
//! round noted (and for no received store to be on its way in), and is then served.

use crate::app::Request;
use crate::error::Error;
use crate::replication::{Index, NodeId, ReadId};

use super::{Answer, Replica, Store, Submitted};

/// Who waits for a confirmed read.
pub(super) enum ReadWait<W> {
    /// A read: answered with `Answer::Read(Ok(()))`, the driver then reads the state.
    Read(W),
    /// A request the state refused: checked again, and the refusal given if it stands.
    Recheck(Request, W),
}

impl<S: Store, W> Replica<S, W> {
    /// A read that must reflect every write acknowledged before it was asked (primary
    /// only): `waiter` is answered with `Answer::Read(Ok(()))` once the state may be read.
    pub fn read(&mut self, waiter: W) {
        if let Err(err) = self.view().ensure_primary() {
            self.reply(waiter, Answer::Read(Err(err)));
            return;
        }
        match self.node.read_index() {
            Ok(id) => {
                self.reads.insert(id, ReadWait::Read(waiter));
            }
            Err(err) => self.reply(waiter, Answer::Read(Err(err))),
        }
    }

    /// The read `id` is confirmed at `index`: serve it once the state has applied `index`.
    pub(super) fn read_confirmed(&mut self, id: ReadId, index: Index) {
        if let Some(wait) = self.reads.remove(&id) {
            self.confirmed.push((index, wait));
            self.serve_reads();
        }
    }

    /// Serves the confirmed reads the applied state has caught up with.
    pub(super) fn serve_reads(&mut self) {
        if self.installing > 0 || self.confirmed.is_empty() {
            return;
        }
        let applied = self.applied;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.confirmed)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.confirmed = waiting;
        for (_, wait) in ready {
            match wait {
                ReadWait::Read(waiter) => self.reply(waiter, Answer::Read(Ok(()))),
                ReadWait::Recheck(request, waiter) => {
                    if let Submitted::Done(waiter, result) =
                        self.submit_checked(request, waiter, true)
                    {
                        self.reply(waiter, Answer::Outcome(result));
                    }
                }
            }
        }
    }

    /// Fails every read still waiting (this server is no longer the primary).
    pub(super) fn fail_reads(&mut self, error: impl Fn() -> Error) -> Vec<(W, Answer)> {
        let waits = std::mem::take(&mut self.reads).into_values().chain(
            std::mem::take(&mut self.confirmed)
                .into_iter()
                .map(|(_, w)| w),
        );
        waits
            .map(|wait| match wait {
                ReadWait::Read(waiter) => (waiter, Answer::Read(Err(error()))),
                ReadWait::Recheck(_, waiter) => (waiter, Answer::Outcome(Err(error()))),
            })
            .collect()
    }

    /// Hands office over to `to` (or the most up-to-date backup); `waiter` is answered with
    /// the new primary once this server follows it, or with an error if it cannot be done.
    pub fn hand_over(&mut self, to: Option<NodeId>, waiter: W) {
        match self.node.hand_over(to) {
            Ok(_) => self.hand_overs.push(waiter),
            Err(err) => self.reply(waiter, Answer::HandedOver(Err(err))),
        }
    }

    /// Answers the hand-overs that are over: done once another primary is known, given up
    /// if this server is still the primary but no longer handing over.
    pub(super) fn check_hand_overs(&mut self) {
        if self.hand_overs.is_empty() {
            return;
        }
        let result = match self.node.primary() {
            Some(primary) if &primary != self.node.id() => Ok(primary),
            Some(_) if self.node.handing_over().is_none() => Err(Error::Unavailable(
                "the hand-over did not complete in time".to_string(),
            )),
            _ => return,
        };
        for waiter in std::mem::take(&mut self.hand_overs) {
            self.reply(waiter, Answer::HandedOver(result.clone()));
        }
    }
}
