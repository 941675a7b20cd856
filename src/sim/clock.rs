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
}
