//! Simulated time and the queue of everything that is due to happen.
//!
//! Time is a plain counter (a server ticks about every 10 units). Events due at the same
//! time run in the order they were scheduled, so a run depends on nothing but its seed.

use std::collections::BTreeMap;

/// A point in simulated time.
pub type Time = u64;

/// Events ordered by due time, then by the order they were scheduled.
pub struct EventQueue<E> {
    events: BTreeMap<(Time, u64), E>,
    scheduled: u64,
}

impl<E> EventQueue<E> {
    pub fn new() -> EventQueue<E> {
        EventQueue {
            events: BTreeMap::new(),
            scheduled: 0,
        }
    }

    /// Queues `event` to happen at `at`.
    pub fn schedule(&mut self, at: Time, event: E) {
        self.scheduled += 1;
        self.events.insert((at, self.scheduled), event);
    }

    /// Takes the next event due, with its time.
    pub fn pop(&mut self) -> Option<(Time, E)> {
        self.events.pop_first().map(|((at, _), event)| (at, event))
    }

    /// Takes every event due by `until` that `wanted` picks, in queue order.
    pub fn take_due(&mut self, until: Time, mut wanted: impl FnMut(&E) -> bool) -> Vec<E> {
        let keys: Vec<(Time, u64)> = self
            .events
            .range(..=(until, u64::MAX))
            .filter(|(_, event)| wanted(event))
            .map(|(&key, _)| key)
            .collect();
        keys.into_iter()
            .filter_map(|key| self.events.remove(&key))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Determinism: events at the same time come out in the order they went in.
    #[test]
    fn same_time_events_keep_their_order() {
        let mut queue = EventQueue::new();
        queue.schedule(5, "b");
        queue.schedule(3, "a");
        queue.schedule(5, "c");
        let order: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(order, vec![(3, "a"), (5, "b"), (5, "c")]);
    }

    /// Events taken early come out in queue order, and only those due by the limit.
    #[test]
    fn take_due_keeps_the_order_and_the_limit() {
        let mut queue = EventQueue::new();
        for (at, event) in [(4, "x1"), (2, "y"), (4, "x2"), (3, "x0"), (9, "x3")] {
            queue.schedule(at, event);
        }
        assert_eq!(
            queue.take_due(5, |e| e.starts_with('x')),
            vec!["x0", "x1", "x2"]
        );
        let rest: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(rest, vec![(2, "y"), (9, "x3")]);
    }
}
