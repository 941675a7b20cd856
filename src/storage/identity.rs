//! The server's identity (its advertised `HOST:PORT`), kept in the data directory.
//!
//! Votes and cluster configurations name servers by this identity, so a server that restarts
//! must come back as the same member: the log it replays holds votes it cast and entries it
//! acknowledged under that name. The file is replaced atomically (`crate::atomic_file`), so
//! a crash leaves either the old identity or the new one, never a half-written one.

use std::fs;
use std::io;
use std::path::Path;

use super::{create_dir_durable, io_error};
use crate::atomic_file;
use crate::{Error, Result};

/// The file holding the identity, one line.
const IDENTITY_FILE: &str = "identity";

/// Reads the identity saved in `dir`, or `None` if none was ever saved (a fresh data
/// directory, or one that does not exist yet).
pub fn load_identity(dir: &Path) -> Result<Option<String>> {
    let path = dir.join(IDENTITY_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(io_error("reading", &path)(err)),
    };
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::Corrupt(format!("{}: not valid UTF-8", path.display())))?;
    // The file ends in a newline so that it reads well with `cat`; an editor may have added
    // one more, which is not part of the name either.
    let id = text.trim_end_matches(['\n', '\r']);
    if id.is_empty() || id.contains(['\n', '\r']) {
        return Err(Error::Corrupt(format!(
            "{}: expected one non-empty line",
            path.display()
        )));
    }
    Ok(Some(id.to_string()))
}

/// Saves `id` as the identity in `dir` (creating the directory if missing), replacing any
/// earlier one atomically and durably.
pub fn save_identity(dir: &Path, id: &str) -> Result<()> {
    // Refused here rather than discovered at the next start, when `load_identity` could not
    // read it back.
    if id.is_empty() || id.contains(['\n', '\r']) {
        return Err(Error::BadRequest(format!(
            "identity must be one non-empty line, got {id:?}"
        )));
    }
    create_dir_durable(dir)?;
    atomic_file::replace(&dir.join(IDENTITY_FILE), format!("{id}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A saved identity is what the next start loads (the restart resumes the same member).
    #[test]
    fn saved_identity_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        save_identity(dir.path(), "10.0.0.1:7000").unwrap();
        assert_eq!(
            load_identity(dir.path()).unwrap().as_deref(),
            Some("10.0.0.1:7000")
        );
        // Saving again replaces the old identity and leaves no temporary file behind.
        save_identity(dir.path(), "10.0.0.2:7000").unwrap();
        assert_eq!(
            load_identity(dir.path()).unwrap().as_deref(),
            Some("10.0.0.2:7000")
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// A fresh data directory, existing or not yet created, has no identity.
    #[test]
    fn empty_dir_has_no_identity() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_identity(dir.path()).unwrap(), None);
        assert_eq!(load_identity(&dir.path().join("missing")).unwrap(), None);
    }

    /// `save_identity` creates a missing data directory, parents included.
    #[test]
    fn save_creates_missing_dir() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a").join("b");
        save_identity(&nested, "node:1").unwrap();
        assert_eq!(load_identity(&nested).unwrap().as_deref(), Some("node:1"));
    }

    /// An identity that could not be loaded back is refused when saved, and a damaged
    /// identity file is reported as corrupt rather than read as some other name.
    #[test]
    fn unusable_identities_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            save_identity(dir.path(), ""),
            Err(Error::BadRequest(_))
        ));
        assert!(matches!(
            save_identity(dir.path(), "a\nb"),
            Err(Error::BadRequest(_))
        ));
        fs::write(dir.path().join(IDENTITY_FILE), b"\n").unwrap();
        assert!(matches!(load_identity(dir.path()), Err(Error::Corrupt(_))));
        fs::write(dir.path().join(IDENTITY_FILE), [0xff, 0xfe]).unwrap();
        assert!(matches!(load_identity(dir.path()), Err(Error::Corrupt(_))));
    }
}
