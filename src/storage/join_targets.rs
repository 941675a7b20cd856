//! What a data dir remembers of joining a cluster.
//!
//! `join`: the members it was made to join, one address a line. A server started with
//! `--join` on an empty data dir writes it before it asks to join; a start without `--join`
//! on a data dir that has it goes on joining them instead of starting a cluster of its own.
//! So a server whose join never succeeded cannot, restarted without `--join`, quietly become
//! the primary of a second cluster under the same secret.
//!
//! `member-since`: the configuration index from which the primary took this server in. The
//! log it received may hold the removal of an earlier server under the same address; a
//! removal before this index was not of this one.

use std::fs;
use std::io;
use std::path::Path;

use super::{create_dir_durable, io_error};
use crate::atomic_file;
use crate::{Error, Result};

/// The file holding the addresses.
const JOIN_FILE: &str = "join";
/// The file holding the index this server is a member from.
const MEMBER_SINCE_FILE: &str = "member-since";

/// The index this server is a member from, if the primary told it (`None` for a server
/// that started the cluster, or has not been taken in yet).
pub fn load_member_since(dir: &Path) -> Result<Option<u64>> {
    let path = dir.join(MEMBER_SINCE_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(io_error("reading", &path)(err)),
    };
    text.trim()
        .parse()
        .map(Some)
        .map_err(|_| Error::Corrupt(format!("{}: expected an index", path.display())))
}

/// Saves the index this server is a member from, atomically and durably.
pub fn save_member_since(dir: &Path, index: u64) -> Result<()> {
    create_dir_durable(dir)?;
    atomic_file::replace(
        &dir.join(MEMBER_SINCE_FILE),
        format!("{index}\n").as_bytes(),
    )
}

/// The addresses saved in `dir`, or none if the data dir was not made to join.
pub fn load_join_targets(dir: &Path) -> Result<Vec<String>> {
    let path = dir.join(JOIN_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(io_error("reading", &path)(err)),
    };
    let targets: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect();
    if targets.is_empty() {
        return Err(Error::Corrupt(format!(
            "{}: expected at least one address",
            path.display()
        )));
    }
    Ok(targets)
}

/// Saves `targets` in `dir`, atomically and durably.
pub fn save_join_targets(dir: &Path, targets: &[String]) -> Result<()> {
    if targets.is_empty()
        || targets
            .iter()
            .any(|t| t.is_empty() || t.contains(['\n', '\r']))
    {
        return Err(Error::BadRequest(format!(
            "join addresses must be non-empty single lines, got {targets:?}"
        )));
    }
    create_dir_durable(dir)?;
    let mut text = targets.join("\n");
    text.push('\n');
    atomic_file::replace(&dir.join(JOIN_FILE), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data dir made to join remembers whom; one that was not remembers nothing.
    #[test]
    fn join_targets_round_trip_and_default_to_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_join_targets(dir.path()).unwrap().is_empty());
        let targets = vec!["127.0.0.1:7001".to_string(), "127.0.0.1:7002".to_string()];
        save_join_targets(dir.path(), &targets).unwrap();
        assert_eq!(load_join_targets(dir.path()).unwrap(), targets);
        assert!(save_join_targets(dir.path(), &[]).is_err());
    }

    /// The index a server is a member from survives a restart.
    #[test]
    fn member_since_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_member_since(dir.path()).unwrap(), None);
        save_member_since(dir.path(), 42).unwrap();
        assert_eq!(load_member_since(dir.path()).unwrap(), Some(42));
    }
}
