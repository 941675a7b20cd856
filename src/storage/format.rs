//! The version of the data dir's format, in a file of its own (`format`).
//!
//! A server refuses a data dir written in another format with a message that says so,
//! rather than misreading it: format 1 kept the whole application state in a `snapshot`
//! file; format 2 keeps it in the embedded store (`store`).

use std::path::Path;

use super::{create_dir_durable, io_error};
use crate::error::{Error, Result};

/// The format this build reads and writes.
pub const FORMAT: u32 = 2;
const FORMAT_FILE: &str = "format";
const PREFIX: &str = "understudy data dir format ";

/// Checks the format of `dir`, and marks a new (empty) data dir with ours.
pub fn check_format(dir: &Path) -> Result<()> {
    create_dir_durable(dir)?;
    let path = dir.join(FORMAT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let version = text
                .trim()
                .strip_prefix(PREFIX)
                .and_then(|v| v.parse::<u32>().ok());
            match version {
                Some(FORMAT) => Ok(()),
                Some(other) => Err(refusal(dir, &format!("format {other}"))),
                None => Err(refusal(dir, "an unknown format")),
            }
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            // The files of a data dir from before formats were marked.
            let used = ["log", "snapshot"].iter().any(|f| dir.join(f).exists());
            if used {
                // Written by a build from before formats were marked: format 1.
                return Err(refusal(dir, "format 1"));
            }
            crate::atomic_file::replace(&path, format!("{PREFIX}{FORMAT}\n").as_bytes())
        }
        Err(err) => Err(io_error("reading", &path)(err)),
    }
}

fn refusal(dir: &Path, found: &str) -> Error {
    Error::Corrupt(format!(
        "{}: the data dir is in {found}, but this server reads format {FORMAT}; \
         start it on an empty data dir with --join to receive the state from the cluster",
        dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new data dir is marked, and marked again it is still accepted.
    #[test]
    fn a_new_data_dir_gets_the_current_format() {
        let dir = tempfile::tempdir().unwrap();
        check_format(dir.path()).unwrap();
        check_format(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join("format")).unwrap();
        assert_eq!(text.trim(), format!("{PREFIX}{FORMAT}"));
    }

    /// A data dir of the old layout (a log without a format file), or of another format, is
    /// refused with a message naming the formats, and left as it was.
    #[test]
    fn another_format_is_refused_not_misread() {
        let old = tempfile::tempdir().unwrap();
        std::fs::write(old.path().join("log"), b"old log").unwrap();
        let err = check_format(old.path()).unwrap_err().to_string();
        assert!(
            err.contains("format 1") && err.contains("format 2"),
            "{err}"
        );
        assert!(!old.path().join("format").exists());

        let newer = tempfile::tempdir().unwrap();
        std::fs::write(newer.path().join("format"), format!("{PREFIX}3\n")).unwrap();
        let err = check_format(newer.path()).unwrap_err().to_string();
        assert!(err.contains("format 3"), "{err}");
    }
}
