//! The clients' history and its check against the final message boards.
//!
//! What a client may rely on (CONTRACT.md, and the module doc of `replication`):
//!
//! - an acknowledged message is on every server's board exactly once, at the index it was
//!   acknowledged with;
//! - nothing is on a board that no client sent, and no `(client, seq)` is there twice;
//! - real-time order: if A was acknowledged before B was first sent, A's index is below B's
//!   (commit order respects the order clients observed);
//! - every server ends with the same board.
//!
//! Messages that were sent but never acknowledged may or may not be on the boards.

use std::collections::BTreeMap;

use super::clock::Time;
use crate::api::MessageInfo;
use crate::replication::NodeId;

/// An acknowledged message.
#[derive(Clone, Debug)]
struct Ack {
    client: String,
    seq: u64,
    index: u64,
    at: Time,
}

/// Everything clients sent and were told.
#[derive(Default)]
pub struct History {
    /// (client, seq) → (text, when it was first sent).
    sent: BTreeMap<(String, u64), (String, Time)>,
    /// (client, seq) → its acknowledgement (the first; later ones must agree).
    acks: BTreeMap<(String, u64), Ack>,
    /// The highest index acknowledged so far.
    highest: u64,
}

impl History {
    /// A client sends message `seq` (the first attempt counts; retries send the same).
    pub fn sent(&mut self, client: &str, seq: u64, text: &str, now: Time) {
        self.sent
            .entry((client.to_string(), seq))
            .or_insert_with(|| (text.to_string(), now));
    }

    pub fn acknowledged_count(&self) -> u64 {
        self.acks.len() as u64
    }

    /// The highest index of a message acknowledged so far: a consistent read that begins
    /// now must see at least this much.
    pub fn highest_acknowledged(&self) -> u64 {
        self.highest
    }

    /// A client was told its message `seq` is at `index`. Two answers for the same message
    /// must agree.
    pub fn acknowledged(
        &mut self,
        client: &str,
        seq: u64,
        index: u64,
        now: Time,
    ) -> Result<(), String> {
        let key = (client.to_string(), seq);
        if let Some(ack) = self.acks.get(&key) {
            if ack.index != index {
                return Err(format!(
                    "{client} seq {seq} was acknowledged at index {} and again at {index}",
                    ack.index
                ));
            }
            return Ok(());
        }
        self.highest = self.highest.max(index);
        self.acks.insert(
            key,
            Ack {
                client: client.to_string(),
                seq,
                index,
                at: now,
            },
        );
        Ok(())
    }

    /// Checks the history against every server's final board.
    pub fn check(&self, boards: &[(NodeId, Vec<MessageInfo>)]) -> Result<(), String> {
        let Some((first_id, first)) = boards.first() else {
            return Ok(());
        };
        for (id, board) in boards {
            if board != first {
                return Err(format!(
                    "{id} ends with {} messages, {first_id} with {}; or their contents differ",
                    board.len(),
                    first.len()
                ));
            }
        }
        self.check_board(first)
    }

    fn check_board(&self, board: &[MessageInfo]) -> Result<(), String> {
        // Nothing invented, nothing twice.
        let mut position: BTreeMap<(String, u64), u64> = BTreeMap::new();
        for message in board {
            let key = (message.client_id.clone(), message.seq);
            match self.sent.get(&key) {
                Some((text, _)) if text == &message.message => {}
                _ => {
                    return Err(format!(
                        "index {} holds {:?} seq {} {:?}, which no client sent",
                        message.index, message.client_id, message.seq, message.message
                    ));
                }
            }
            if let Some(earlier) = position.insert(key, message.index) {
                return Err(format!(
                    "{} seq {} is on the board twice: at {earlier} and {}",
                    message.client_id, message.seq, message.index
                ));
            }
        }
        // Every acknowledged message is there, where it was said to be.
        for ack in self.acks.values() {
            match position.get(&(ack.client.clone(), ack.seq)) {
                Some(&index) if index == ack.index => {}
                Some(&index) => {
                    return Err(format!(
                        "{} seq {} was acknowledged at index {} but is at {index}",
                        ack.client, ack.seq, ack.index
                    ));
                }
                None => {
                    return Err(format!(
                        "{} seq {} was acknowledged at index {} but is on no board",
                        ack.client, ack.seq, ack.index
                    ));
                }
            }
        }
        // Real-time order. With acknowledgements sorted by time, `top[i]` is the one with
        // the highest index among the first i + 1; the last one before a message was first
        // sent must be below that message.
        let mut acks: Vec<&Ack> = self.acks.values().collect();
        acks.sort_by_key(|a| (a.at, a.index));
        let mut top: Vec<&Ack> = Vec::with_capacity(acks.len());
        for &ack in &acks {
            match top.last() {
                Some(&best) if best.index >= ack.index => top.push(best),
                _ => top.push(ack),
            }
        }
        for message in board {
            let (_, sent_at) = &self.sent[&(message.client_id.clone(), message.seq)];
            let before = acks.partition_point(|a| a.at < *sent_at);
            if before == 0 {
                continue;
            }
            let ack = top[before - 1];
            if ack.index >= message.index {
                return Err(format!(
                    "{} seq {} was acknowledged at index {} (t={}) before {} seq {} was \
                     first sent (t={sent_at}), yet that one is at index {}",
                    ack.client,
                    ack.seq,
                    ack.index,
                    ack.at,
                    message.client_id,
                    message.seq,
                    message.index
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(index: u64, client: &str, seq: u64) -> MessageInfo {
        MessageInfo {
            index,
            client_id: client.to_string(),
            username: format!("user-{client}"),
            seq,
            message: format!("{client} says {seq}"),
        }
    }

    fn history() -> History {
        let mut h = History::default();
        h.sent("c1", 1, "c1 says 1", 10);
        h.sent("c2", 1, "c2 says 1", 20);
        h
    }

    /// The checker accepts a history that keeps every promise.
    #[test]
    fn a_correct_history_passes() {
        let mut h = history();
        h.acknowledged("c1", 1, 1, 15).unwrap();
        let board = vec![info(1, "c1", 1), info(2, "c2", 1)];
        h.check(&[("n1".into(), board.clone()), ("n2".into(), board)])
            .unwrap();
    }

    /// Real-time order: c1's message was acknowledged before c2's was sent, so it must come
    /// first on the board.
    #[test]
    fn real_time_order_is_enforced() {
        let mut h = history();
        h.acknowledged("c1", 1, 2, 15).unwrap();
        let board = vec![info(1, "c2", 1), info(2, "c1", 1)];
        let err = h.check(&[("n1".into(), board)]).unwrap_err();
        assert!(err.contains("before c2 seq 1 was first sent"), "{err}");
    }

    /// A lost acknowledged message, an invented one, and differing boards are all caught.
    #[test]
    fn lost_invented_and_diverging_boards_are_caught() {
        let mut h = history();
        h.acknowledged("c2", 1, 1, 25).unwrap();
        let err = h.check(&[("n1".into(), vec![])]).unwrap_err();
        assert!(err.contains("on no board"), "{err}");

        let err = h
            .check(&[("n1".into(), vec![info(1, "c2", 1), info(2, "c3", 1)])])
            .unwrap_err();
        assert!(err.contains("no client sent"), "{err}");

        let err = h
            .check(&[
                ("n1".into(), vec![info(1, "c2", 1)]),
                ("n2".into(), vec![info(1, "c2", 1), info(2, "c1", 1)]),
            ])
            .unwrap_err();
        assert!(err.contains("n2 ends with 2 messages"), "{err}");
    }
}
