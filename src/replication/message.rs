//! The vocabulary of the replication protocol: log entries and the messages servers send
//! each other. The HTTP transport carries these as they are (see `server::peers`); the
//! paths `/replication/...` are only envelopes for them.

use serde::{Deserialize, Serialize};

/// A server's name: its advertised `HOST:PORT`.
pub type NodeId = String;
/// An election term. Terms only grow; at most one primary is elected per term.
pub type Term = u64;
/// A position in the replicated log, starting at 1. Index 0 is "before the first entry".
pub type Index = u64;

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The term of the primary that appended the entry.
    pub term: Term,
    /// The entry's position in the log.
    pub index: Index,
    /// What the entry does.
    pub payload: Payload,
}

/// What a log entry does once committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// Appended by a new primary at the start of its term: committing it commits every entry
    /// before it (entries of older terms are never committed by counting replicas; Raft §5.4.2).
    Noop,
    /// The voting members of the cluster from this entry on (whether committed or not, as in
    /// Raft's single-server membership changes).
    Config(Vec<NodeId>),
    /// An application command, opaque to the replication layer. Encoded as one run of
    /// bytes rather than a sequence of numbers: the same bytes in postcard, but copied at
    /// once instead of element by element (that was 4 % of the servers' CPU under load).
    Command(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// A message with its routing and term, as it travels between servers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// The sender's current term, or for a pre-vote the term the sender would campaign in.
    pub term: Term,
    /// The message itself.
    pub message: Message,
}

/// The messages of the protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Primary to backup: append `entries` after the entry at `prev_index` with `prev_term`.
    /// With no entries this is a heartbeat. `commit` is the primary's commit index. `round`
    /// is the primary's latest confirmation round (ReadIndex): the answer echoes it, and a
    /// majority echoing a round proves the primary was still the primary when it began.
    Append {
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
        round: u64,
    },
    /// Backup to primary: the backup's log matches the primary's up to `match_index`, and
    /// everything up to there is durable on the backup. `round` echoes the append's.
    AppendAccepted { match_index: Index, round: u64 },
    /// Backup to primary: the entry at `prev_index` did not match. `hint` is an index at or
    /// below which the primary should try next; `last_index` is the backup's last entry.
    /// `round` echoes the append's: a rejection in the same term still confirms the primary.
    AppendRejected {
        prev_index: Index,
        hint: Index,
        last_index: Index,
        round: u64,
    },
    /// Candidate to everyone: vote for me. With `pre` set this is a pre-vote: nobody changes
    /// term or records a vote, it only asks "would you vote for me?". With `transfer` set the
    /// primary handed its office over to the candidate (`TimeoutNow`): voters answer even
    /// though they heard from that primary a moment ago.
    Vote {
        last_index: Index,
        last_term: Term,
        pre: bool,
        transfer: bool,
    },
    /// Primary to the backup it hands over to, once the backup holds the whole log: campaign
    /// now, without a pre-vote (Raft thesis 3.10).
    TimeoutNow,
    /// The answer to a `Vote`.
    VoteResponse { granted: bool, pre: bool },
}

impl Message {
    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Append { entries, .. } if entries.is_empty() => "Heartbeat",
            Message::Append { .. } => "Append",
            Message::AppendAccepted { .. } => "AppendAccepted",
            Message::AppendRejected { .. } => "AppendRejected",
            Message::Vote { pre: true, .. } => "PreVote",
            Message::Vote { .. } => "Vote",
            Message::VoteResponse { pre: true, .. } => "PreVoteResponse",
            Message::VoteResponse { .. } => "VoteResponse",
            Message::TimeoutNow => "TimeoutNow",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The payload as it was encoded before it was marked as bytes: a sequence of `u8`.
    #[derive(Serialize)]
    enum PayloadAsSequence {
        #[allow(dead_code)]
        Noop,
        #[allow(dead_code)]
        Config(Vec<NodeId>),
        Command(Vec<u8>),
    }

    /// Logs and streams written before the payload was encoded as one run of bytes must
    /// still read: postcard writes a byte string and a sequence of bytes alike.
    #[test]
    fn a_command_is_encoded_as_it_was_as_a_sequence_of_bytes() {
        let command: Vec<u8> = (0..=255).chain(0..40).collect();
        let as_bytes = postcard::to_stdvec(&Payload::Command(command.clone())).unwrap();
        let as_sequence = postcard::to_stdvec(&PayloadAsSequence::Command(command)).unwrap();
        assert_eq!(as_bytes, as_sequence);
        let read: Payload = postcard::from_bytes(&as_sequence).unwrap();
        assert!(matches!(read, Payload::Command(bytes) if bytes.len() == 296));
    }
}
