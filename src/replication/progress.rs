//! What the primary knows about one backup's log, and how many appends it may have in flight
//! to it. Full appends are pipelined: the primary sends the next batch without waiting for
//! the answer to the last, up to a window, so a backup that is far behind catches up at the
//! network's pace. A partial append (fewer entries than an append may hold) goes only when
//! nothing is in flight: in steady state the proposals made during one round trip travel as
//! one batch, which the backup makes durable with one fsync and answers with one
//! acknowledgement (the rule of Nagle's algorithm, with the backup's answer as the clock).
//! A rejection or a long silence drops back to probing one append at a time from the last
//! index known to match.

use std::collections::VecDeque;

use super::message::Index;

/// Replication progress of one backup (or joining server).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The next index to send.
    pub next: Index,
    /// The highest index known to match the primary's log and be durable on the backup.
    pub matched: Index,
    /// The last index of each append in flight, oldest first.
    inflight: VecDeque<Index>,
    /// Probing: one append at a time until the first acceptance shows where the logs match.
    probing: bool,
    /// Ticks since the backup last answered while appends were in flight.
    stalled_ticks: u32,
    /// A snapshot up to this index is on its way; no appends until the backup answers.
    snapshot: Option<Index>,
    /// The primary's tick at which the backup last answered, 0 before its first answer. The
    /// one record of "answered recently": check-quorum asks whether it falls after the last
    /// check.
    last_heard: u64,
    /// The highest confirmation round the backup echoed (ReadIndex).
    pub round: u64,
}

impl Progress {
    /// Progress of a backup whose log is unknown: start probing right after our last entry.
    pub fn new(last_index: Index) -> Progress {
        Progress {
            next: last_index + 1,
            matched: 0,
            inflight: VecDeque::new(),
            probing: true,
            stalled_ticks: 0,
            snapshot: None,
            last_heard: 0,
            round: 0,
        }
    }

    /// The backup answered an append of confirmation round `round`.
    pub fn echoed(&mut self, round: u64) {
        self.round = self.round.max(round);
    }

    /// The backup answered (accepted or rejected) at the primary's tick `now`.
    pub fn heard(&mut self, now: u64) {
        self.last_heard = now;
    }

    /// The primary's tick at which the backup last answered (0 if it never did).
    pub fn last_heard(&self) -> u64 {
        self.last_heard
    }

    /// The backup needs the snapshot at `index`: returns whether to send it now (not if one
    /// is already on its way).
    pub fn start_snapshot(&mut self, index: Index) -> bool {
        if self.snapshot.is_some() {
            return false;
        }
        self.snapshot = Some(index);
        self.inflight.clear();
        self.stalled_ticks = 0;
        true
    }

    /// The index of the snapshot on its way, if one is.
    pub fn snapshot_index(&self) -> Option<Index> {
        self.snapshot
    }

    /// The snapshot on its way is still moving (a piece of it arrived): it is not stalled.
    /// A large one takes longer than any fixed timeout, and resending it from the start
    /// would never let it finish.
    pub fn snapshot_moving(&mut self) {
        if self.snapshot.is_some() {
            self.stalled_ticks = 0;
        }
    }

    /// Whether another append may be sent now: a full one (`full`) within the window, a
    /// partial one only when nothing is in flight.
    pub fn can_send(&self, max_inflight: usize, full: bool) -> bool {
        let window = if self.probing || !full {
            1
        } else {
            max_inflight
        };
        self.inflight.len() < window
    }

    /// Where a heartbeat should claim the logs match. With nothing in flight it is the
    /// point just before `next`, so a heartbeat doubles as a probe (a backup that lacks it
    /// rejects and says where it stands). With appends in flight it is the last known match,
    /// which the backup surely holds, so the heartbeat does not look like a gap.
    pub fn heartbeat_index(&self) -> Index {
        if self.inflight.is_empty() {
            self.next - 1
        } else {
            self.matched
        }
    }

    /// Records an append ending at `last` as sent.
    pub fn sent(&mut self, last: Index) {
        self.inflight.push_back(last);
        self.next = last + 1;
    }

    /// The backup accepted everything up to `index`. Returns whether `matched` advanced.
    pub fn accepted(&mut self, index: Index) -> bool {
        if self.snapshot.is_some_and(|snapshot| index >= snapshot) {
            self.snapshot = None;
        }
        self.probing = false;
        let in_flight = self.inflight.len();
        while self.inflight.front().is_some_and(|&last| last <= index) {
            self.inflight.pop_front();
        }
        // Only an acknowledged append shows the window is moving. Heartbeats are accepted
        // too, and must not hide appends that were lost on the way (a backup that was down).
        if self.inflight.len() < in_flight || index > self.matched {
            self.stalled_ticks = 0;
        }
        self.next = self.next.max(index + 1);
        if index > self.matched {
            self.matched = index;
            return true;
        }
        false
    }

    /// The backup rejected an append at `prev_index`; resume probing after `hint`.
    /// A stale rejection (of something already known to match) is ignored.
    pub fn rejected(&mut self, prev_index: Index, hint: Index) {
        // While a snapshot is on its way the backup rejects every heartbeat (it lacks what
        // they refer to); those rejections must not keep a lost snapshot from being resent.
        if self.snapshot.is_some() {
            return;
        }
        self.stalled_ticks = 0;
        if prev_index < self.matched {
            return;
        }
        self.probing = true;
        self.inflight.clear();
        self.next = hint.max(self.matched) + 1;
    }

    /// One clock tick. After `limit` ticks of silence with appends in flight they are taken
    /// as lost and probing starts again from the last match.
    pub fn tick(&mut self, limit: u32) {
        if self.snapshot.is_some() {
            // A snapshot takes longer than an append; give it ten times as long.
            self.stalled_ticks += 1;
            if self.stalled_ticks >= limit.saturating_mul(10) {
                self.snapshot = None;
                self.stalled_ticks = 0;
            }
            return;
        }
        if self.inflight.is_empty() {
            return;
        }
        self.stalled_ticks += 1;
        if self.stalled_ticks >= limit {
            self.inflight.clear();
            self.probing = true;
            self.next = self.matched + 1;
            self.stalled_ticks = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pipelining: after the first acceptance several appends may be in flight; acceptances
    /// free the window in order.
    #[test]
    fn window_opens_after_the_first_acceptance() {
        let mut p = Progress::new(0);
        assert!(p.can_send(4, true));
        p.sent(5);
        assert!(!p.can_send(4, true), "probing sends one append at a time");
        p.accepted(5);
        for last in [10, 15, 20, 25] {
            assert!(p.can_send(4, true));
            p.sent(last);
        }
        assert!(!p.can_send(4, true));
        p.accepted(15);
        assert_eq!(p.matched, 15);
        assert!(p.can_send(4, true));
        assert_eq!(p.next, 26);
    }

    /// Nagle's rule: a partial append waits until nothing is in flight, so proposals made
    /// meanwhile gather into one batch; full appends (catching up) still pipeline.
    #[test]
    fn partial_appends_wait_for_the_one_in_flight() {
        let mut p = Progress::new(0);
        p.sent(1);
        p.accepted(1);
        assert!(
            p.can_send(4, false),
            "nothing in flight: a partial append goes"
        );
        p.sent(2);
        assert!(!p.can_send(4, false), "a partial append is in flight");
        assert!(p.can_send(4, true), "a full append may still follow it");
        p.sent(514);
        p.accepted(2);
        assert!(!p.can_send(4, false), "the full append is still in flight");
        p.accepted(514);
        assert!(p.can_send(4, false));
    }

    /// A rejection drops the window and restarts from the hint, never below the match.
    #[test]
    fn rejection_restarts_probing_from_the_hint() {
        let mut p = Progress::new(10);
        p.accepted(3);
        p.sent(8);
        p.rejected(8, 5);
        assert_eq!(p.next, 6);
        assert!(
            p.can_send(4, true) && {
                p.sent(7);
                !p.can_send(4, true)
            }
        );
        p.rejected(2, 0); // stale: index 2 is known to match
        assert_eq!(p.next, 8);
    }

    /// Lost appends are found even while the backup keeps accepting heartbeats: a backup
    /// that was down while appends to it were dropped catches up without new traffic.
    #[test]
    fn heartbeats_do_not_hide_lost_appends() {
        let mut p = Progress::new(0);
        p.accepted(4);
        p.sent(9);
        for _ in 0..6 {
            for _ in 0..5 {
                p.tick(30);
            }
            p.accepted(4); // a heartbeat at the last match
        }
        assert_eq!(p.next, 5, "probing again from the last match");
        assert!(p.can_send(4, true));
    }

    /// Lost appends do not stall a backup forever.
    #[test]
    fn silence_with_appends_in_flight_restarts_from_the_match() {
        let mut p = Progress::new(0);
        p.accepted(4);
        p.sent(9);
        for _ in 0..3 {
            p.tick(3);
        }
        assert_eq!(p.next, 5);
        assert!(p.can_send(4, true));
    }
}
