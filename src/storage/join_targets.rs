//! The members a data dir was made to join, kept in the data dir (`join`, one address a
//! line). A server started with `--join` on an empty data dir writes it before it asks to
//! join; a start without `--join` on a data dir that has it goes on joining them instead of
//! starting a cluster of its own. So a server whose join never succeeded cannot, restarted
//! without `--join`, quietly become the primary of a second cluster under the same secret.

use std::fs;
use std::io;
use std::path::Path;

use super::{create_dir_durable, io_error};
use crate::atomic_file;
use crate::{Error, Result};

/// The file holding the addresses.
const JOIN_FILE: &str = "join";

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
}
