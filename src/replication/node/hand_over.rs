//! Leadership hand-over (Raft thesis 3.10): a primary that is about to stop, or is told to,
//! stops taking proposals, brings a backup fully up to date, and tells it to campaign at
//! once (`TimeoutNow`). The backup's vote request is marked as a hand-over, so voters
//! answer it although they heard from the primary a moment ago; the old primary steps down
//! on the new term. Nothing acknowledged can be lost: the backup holds every entry the old
//! primary has, and the vote rules are unchanged. A hand-over is given up, and the primary
//! takes proposals again, if the backup has not caught up within two election timeouts, or
//! has not won within one after being told to campaign.

use tracing::info;

use super::*;

impl Node {
    /// Starts handing office over to `to`, or to the most up-to-date voting backup.
    /// Returns the backup chosen.
    pub fn hand_over(&mut self, to: Option<NodeId>) -> Result<NodeId> {
        let members = self.log.members();
        let not_primary = self.not_primary();
        let Role::Primary(primary) = &mut self.role else {
            return Err(not_primary);
        };
        let target = match to {
            Some(to) if to == self.id => {
                return Err(Error::BadRequest(format!("{to} is the primary already")));
            }
            Some(to) if !members.contains(&to) => {
                return Err(Error::NotFound(format!("{to} is not a member")));
            }
            Some(to) => to,
            None => members
                .iter()
                .filter(|m| **m != self.id)
                .max_by_key(|m| {
                    let matched = primary.progress.get(*m).map_or(0, |p| p.matched);
                    // Most up to date first; among equals, the first by name.
                    (matched, std::cmp::Reverse((*m).clone()))
                })
                .cloned()
                .ok_or_else(|| Error::Conflict("there is no backup to hand over to".into()))?,
        };
        info!(to = %target, "handing over: no new writes until the backup is up to date");
        primary.hand_over = Some(HandOver {
            to: target.clone(),
            elapsed: 0,
            told_at: None,
        });
        Ok(target)
    }

    /// The backup a hand-over is in progress to, if one is.
    pub fn handing_over(&self) -> Option<&NodeId> {
        match &self.role {
            Role::Primary(primary) => primary.hand_over.as_ref().map(|h| &h.to),
            _ => None,
        }
    }

    /// Tells the hand-over's backup to campaign once it holds our whole log durably (and
    /// again with every heartbeat until it does, in case the message was lost).
    pub(super) fn maybe_hand_over(&mut self) {
        let last_index = self.log.last_index();
        let Role::Primary(primary) = &self.role else {
            return;
        };
        let Some(hand_over) = &primary.hand_over else {
            return;
        };
        let caught_up = primary
            .progress
            .get(&hand_over.to)
            .is_some_and(|p| p.matched == last_index);
        let due = hand_over
            .told_at
            .is_none_or(|at| self.ticks >= at + u64::from(self.opts.heartbeat_ticks));
        if !(caught_up && due) {
            return;
        }
        let ticks = self.ticks;
        let Role::Primary(primary) = &mut self.role else {
            return;
        };
        if let Some(hand_over) = &mut primary.hand_over {
            hand_over.told_at = Some(ticks);
            let to = hand_over.to.clone();
            self.send(to, Message::TimeoutNow);
        }
    }
}
