//! The nemesis at work: crashes, pauses, partitions, removals, cut connections and
//! hand-overs carried out on the running cluster (what to do and how often is drawn in
//! `faults.rs`), joins of servers that are not members, and the end of all faults before
//! the healing phase.
//!
//! Connections are modelled only by their closing, which is what a server can observe: a
//! crashed server's kernel closes its connections at once, so every peer sees them close a
//! moment later; a cut connection is seen closing by both ends. A paused server's
//! connections stay open, and a partition closes nothing (the servers find out by their
//! timeouts).

use rand::Rng;

use super::Violation;
use super::faults::{Fault, TICK};
use super::runner::{Event, Sim};
use crate::replication::NodeId;

impl Sim {
    /// One move of the nemesis (none once healing), and the next one scheduled.
    pub(super) fn nemesis(&mut self) -> Result<(), Violation> {
        if self.healing {
            return Ok(());
        }
        let servers = self.servers.len();
        match self.plan.next_fault(&mut self.rng, servers) {
            // A calm run restarts only a backup, and only while every other server is up.
            Fault::Crash(server) if self.plan.calm && !self.settled_backup(server) => {}
            Fault::Crash(server) if self.servers[server].is_up() => self.crash(server)?,
            Fault::CutConnection(a, b) if a != b => {
                self.report.cut_connections += 1;
                self.trace(|| format!("the connection between n{} and n{} breaks", a + 1, b + 1));
                self.connection_closes(a, b);
                self.connection_closes(b, a);
            }
            Fault::HandOver => {
                if let Some(p) = self.primary() {
                    self.report.hand_overs += 1;
                    let id = self.servers[p].id.clone();
                    self.trace(|| format!("{id} is asked to hand over"));
                    self.servers[p].hand_over();
                    self.drain(p)?;
                }
            }
            Fault::Pause(server) if self.servers[server].is_running() => self.pause(server),
            Fault::Partition if !self.network.is_partitioned() => {
                let groups = self.network.partition(servers, &mut self.rng);
                self.partitions += 1;
                self.report.partitions += 1;
                self.trace(|| format!("partition {groups:?}"));
                let at = self.now + self.rng.random_range(2 * TICK..=2 * self.plan.max_outage);
                self.queue.schedule(at, Event::Heal(self.partitions));
            }
            Fault::Remove => self.remove()?,
            _ => {}
        }
        let every = self.plan.nemesis_every;
        let at = self.now + self.rng.random_range(every / 2..=every * 3 / 2);
        self.queue.schedule(at, Event::Nemesis);
        Ok(())
    }

    /// Kills a server: its process, its waiting messages and a random tail of its unsynced
    /// writes are gone.
    fn crash(&mut self, server: usize) -> Result<(), Violation> {
        self.report.crashes += 1;
        let rng = &mut self.rng;
        let s = &mut self.servers[server];
        let mut kept = (0, 0);
        s.crash(|total| {
            kept = (rng.random_range(0..=total), total);
            kept.0
        });
        let (id, term, epoch) = (s.id.clone(), s.storage.durable_term(), s.epoch);
        self.invariants.durable_term(server, &id, term)?;
        self.invariants.crashed(&id, s.incarnation, term);
        self.trace(|| {
            format!(
                "{id} crashes; {} of {} unsynced writes survive",
                kept.0, kept.1
            )
        });
        let at = self.now + self.rng.random_range(TICK..=self.plan.max_outage);
        self.queue.schedule(at, Event::Restart { server, epoch });
        // Its kernel closes its connections: every peer sees them close.
        for peer in 0..self.servers.len() {
            if peer != server {
                self.connection_closes(peer, server);
            }
        }
        Ok(())
    }

    /// `server` will see its connection from `peer` close, a moment from now.
    fn connection_closes(&mut self, server: usize, peer: usize) {
        let epoch = self.servers[server].epoch;
        let at = self.now + self.rng.random_range(1..=TICK / 2);
        self.queue.schedule(
            at,
            Event::ConnectionClosed {
                server,
                peer,
                epoch,
            },
        );
    }

    /// Freezes a server: no ticks, no syncs; messages to it wait or are lost.
    fn pause(&mut self, server: usize) {
        self.report.pauses += 1;
        let hold = self.rng.random_bool(0.5);
        let s = &mut self.servers[server];
        s.paused = true;
        s.hold_messages = hold;
        s.epoch += 1;
        s.sync_scheduled = false;
        let (id, epoch) = (s.id.clone(), s.epoch);
        self.trace(|| {
            format!(
                "{id} pauses (messages {})",
                if hold { "wait" } else { "lost" }
            )
        });
        let at = self.now + self.rng.random_range(TICK..=self.plan.max_outage);
        self.queue.schedule(at, Event::Resume { server, epoch });
    }

    /// Thaws a paused server where it stopped: its timers run again, its disk syncs what was
    /// written, and the messages that waited arrive.
    pub(super) fn resume(&mut self, server: usize) {
        let s = &mut self.servers[server];
        s.paused = false;
        s.epoch += 1;
        let (id, epoch, tick_every) = (s.id.clone(), s.epoch, s.tick_every);
        let held = std::mem::take(&mut s.held);
        let unsynced = s.storage.has_unsynced();
        if unsynced {
            s.sync_scheduled = true;
        }
        self.trace(|| format!("{id} resumes; {} messages waited", held.len()));
        self.queue.schedule(
            self.now + self.rng.random_range(1..=tick_every),
            Event::Tick { server, epoch },
        );
        if unsynced {
            let at = self.now + self.rng.random_range(0..=self.plan.max_sync_delay);
            self.queue.schedule(at, Event::Sync { server, epoch });
        }
        for packet in held {
            let at = self.now + self.rng.random_range(1..=TICK);
            self.queue.schedule(at, Event::Deliver(packet));
        }
    }

    /// Whether `server` is a backup of a settled cluster: every server up and following
    /// the same primary (not in the middle of a hand-over or an election), which is not
    /// `server`. A calm run restarts only such a backup.
    fn settled_backup(&self, server: usize) -> bool {
        let Some(p) = self.primary() else {
            return false;
        };
        let primary = self.servers[p].id.clone();
        p != server
            && self.servers[p]
                .node()
                .is_some_and(|n| n.handing_over().is_none())
            && self.servers.iter().all(|s| {
                s.node()
                    .is_some_and(|n| n.primary().as_ref() == Some(&primary))
            })
    }

    /// The running primary of the highest term, as redirects would find it.
    fn primary(&self) -> Option<usize> {
        (0..self.servers.len())
            .filter(|&p| self.servers[p].is_running())
            .filter_map(|p| {
                let node = self.servers[p].node()?;
                node.is_primary().then(|| (node.term(), p))
            })
            .max()
            .map(|(_, p)| p)
    }

    /// An operator removes a random member through the primary (`admin remove`).
    fn remove(&mut self) -> Result<(), Violation> {
        let Some(p) = self.primary() else {
            return Ok(());
        };
        let members = self.servers[p].node().map(|n| n.members());
        let others: Vec<NodeId> = members
            .unwrap_or_default()
            .into_iter()
            .filter(|m| *m != self.servers[p].id)
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        let id = others[self.rng.random_range(0..others.len())].clone();
        self.servers[p].remove(&id);
        self.report.removals += 1;
        let primary_id = self.servers[p].id.clone();
        self.trace(|| format!("{primary_id} removes {id}"));
        self.drain(p)
    }

    /// Every running server that is not a member (a new one, or one removed) asks the
    /// primary to take it in.
    pub(super) fn join(&mut self) -> Result<(), Violation> {
        if let Some(p) = self.primary() {
            let members = self.servers[p].node().map(|n| n.members());
            let members = members.unwrap_or_default();
            for j in 0..self.servers.len() {
                let id = self.servers[j].id.clone();
                if j == p
                    || !self.servers[j].is_running()
                    || members.contains(&id)
                    || !self.network.connected(j, p)
                {
                    continue;
                }
                self.servers[p].join(id.clone());
                let primary_id = self.servers[p].id.clone();
                self.trace(|| format!("{id} asks {primary_id} to join"));
            }
            self.drain(p)?;
        }
        let at = self.now + self.rng.random_range(3 * TICK..=8 * TICK);
        self.queue.schedule(at, Event::Join);
        Ok(())
    }

    /// Ends the faulty phase: the network heals and calms down, every server runs again.
    pub(super) fn heal_all(&mut self) -> Result<(), Violation> {
        self.trace(|| "healing: no more faults".to_string());
        self.healing = true;
        self.network.calm();
        for server in 0..self.servers.len() {
            if !self.servers[server].is_up() {
                self.start(server)?;
            } else if self.servers[server].paused {
                self.resume(server);
            }
        }
        Ok(())
    }
}
