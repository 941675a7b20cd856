//! The recent events a person watching the dashboard wants to see: elections with their
//! cause, and each change of primary, newest last. A short ring in memory, shared by the
//! driver (which records) and the dashboard (which shows).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Events kept.
const KEPT: usize = 50;

/// One event: when (milliseconds since the Unix epoch) and what.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub at_ms: u64,
    pub text: String,
}

/// The recent events. Cheap to clone.
#[derive(Clone, Default)]
pub struct Events(Arc<Mutex<VecDeque<Event>>>);

impl Events {
    pub fn push(&self, text: String) {
        let at_ms = super::unix_millis();
        let mut events = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() == KEPT {
            events.pop_front();
        }
        events.push_back(Event { at_ms, text });
    }

    pub fn recent(&self) -> Vec<Event> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}
