//! The primary's view of how long backups take: for each backup, the entries sent to it and
//! not acknowledged yet, with when they left. An acknowledgement that covers a send gives a
//! replication round trip; the oldest send still waiting is how far behind, in time, the
//! backup is.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::replication::{Index, NodeId};

/// Sends remembered per backup at most: a backup that stops answering stops getting
/// entries once the window is full, so this bound is only a guard.
const MAX_PENDING: usize = 1024;

#[derive(Default)]
pub struct RoundTrips {
    /// Per backup: (last index of a send, when it left), oldest first.
    pending: BTreeMap<NodeId, VecDeque<(Index, Instant)>>,
}

impl RoundTrips {
    /// Entries up to `last` left for `to` at `at`.
    pub fn sent(&mut self, to: &NodeId, last: Index, at: Instant) {
        // No copy of the name per send: only a backup's first send inserts it.
        match self.pending.get_mut(to) {
            Some(sends) if sends.len() >= MAX_PENDING => {}
            Some(sends) => sends.push_back((last, at)),
            None => {
                self.pending
                    .insert(to.clone(), VecDeque::from([(last, at)]));
            }
        }
    }

    /// Whether any send waits for an acknowledgement.
    pub fn waiting(&self) -> bool {
        self.pending.values().any(|sends| !sends.is_empty())
    }

    /// Takes the sends that the backups' match indexes (`matched`) now cover, calling
    /// `done` with each round trip; forgets backups whose progress is unknown (no longer
    /// members, or this server is no longer the primary).
    pub fn acknowledged(
        &mut self,
        matched: impl Fn(&NodeId) -> Option<Index>,
        now: Instant,
        mut done: impl FnMut(Duration),
    ) {
        self.pending.retain(|id, sends| {
            let Some(matched) = matched(id) else {
                return false;
            };
            while let Some(&(last, at)) = sends.front() {
                if last > matched {
                    break;
                }
                done(now.saturating_duration_since(at));
                sends.pop_front();
            }
            true
        });
    }

    /// How long the oldest unacknowledged send to `peer` has waited (zero if none).
    pub fn lag(&self, peer: &NodeId, now: Instant) -> Duration {
        self.pending
            .get(peer)
            .and_then(|sends| sends.front())
            .map_or(Duration::ZERO, |&(_, at)| now.saturating_duration_since(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The match indexes of the backups in `known`, as the node would give them.
    fn matched(known: &[(&str, Index)]) -> impl Fn(&NodeId) -> Option<Index> {
        let known: Vec<(String, Index)> =
            known.iter().map(|(id, m)| (id.to_string(), *m)).collect();
        move |id| known.iter().find(|(k, _)| k == id).map(|(_, m)| *m)
    }

    /// An acknowledgement covering a send ends its round trip; the oldest send still
    /// waiting is the backup's lag; a backup that left the configuration is forgotten.
    #[test]
    fn acknowledgements_end_round_trips_and_the_oldest_waiting_send_is_the_lag() {
        let start = Instant::now();
        let ms = |n| start + Duration::from_millis(n);
        let mut trips = RoundTrips::default();
        trips.sent(&"b".to_string(), 5, ms(0));
        trips.sent(&"b".to_string(), 9, ms(2));
        trips.sent(&"c".to_string(), 5, ms(1));
        let mut seen = Vec::new();
        trips.acknowledged(matched(&[("b", 7), ("c", 4)]), ms(3), |d| seen.push(d));
        assert_eq!(seen, vec![Duration::from_millis(3)]);
        assert_eq!(
            trips.lag(&"b".to_string(), ms(10)),
            Duration::from_millis(8)
        );
        assert_eq!(
            trips.lag(&"c".to_string(), ms(10)),
            Duration::from_millis(9)
        );
        trips.acknowledged(matched(&[("b", 9)]), ms(4), |d| seen.push(d));
        assert_eq!(seen.len(), 2);
        assert!(
            !trips.waiting(),
            "c left the configuration and is forgotten"
        );
        assert_eq!(trips.lag(&"b".to_string(), ms(10)), Duration::ZERO);
    }
}
