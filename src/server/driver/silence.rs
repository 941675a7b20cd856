//! The primary's word on backups that stop answering and come back: one line when a backup
//! has not been heard from for an election timeout, and one when it answers again, with how
//! long it was silent. Checked every tick from the node's own record of when each backup
//! last answered, so it costs nothing on the write path.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::ticks;
use crate::replication::{Node, NodeId};
use crate::server::millis;

#[derive(Default)]
pub struct Silence {
    /// Backups said to be silent, with when they were last heard from.
    silent: BTreeMap<NodeId, Instant>,
}

impl Silence {
    /// Compares what `node` last heard from each backup with what was said before.
    pub fn watch(&mut self, node: &Node, tick: Duration, now: Instant) {
        if !node.is_primary() {
            self.silent.clear();
            return;
        }
        let limit = u64::from(node.options().election_ticks);
        let peers = node.peers();
        self.silent
            .retain(|id, _| peers.iter().any(|peer| peer.id == *id));
        for peer in peers {
            let Some(ago) = peer.heard_ticks_ago else {
                continue;
            };
            match self.silent.get(&peer.id) {
                None if ago >= limit => {
                    let silent_ms = millis(ticks(tick, ago));
                    warn!(
                        peer = %peer.id,
                        silent_ms,
                        "backup {} stopped answering: last heard {silent_ms} ms ago",
                        peer.id
                    );
                    self.silent
                        .insert(peer.id, now.checked_sub(ticks(tick, ago)).unwrap_or(now));
                }
                Some(since) if ago < limit => {
                    let silent_ms = millis(now.saturating_duration_since(*since));
                    info!(
                        peer = %peer.id,
                        silent_ms,
                        "backup {} answers again after {silent_ms} ms",
                        peer.id
                    );
                    self.silent.remove(&peer.id);
                }
                _ => {}
            }
        }
    }
}
