//! A client session that outlives the process: what `understudy client login` writes and
//! `understudy client send` reads, so that consecutive commands act as one client.
//!
//! The file holds a bearer token, so it is written owner-only (0600, in a 0700 directory)
//! and atomically (`crate::atomic_file`): a crash mid-write leaves the old session, never
//! half a token.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic_file;
use crate::error::{Error, Result};

/// Everything needed to continue as the same client without a new `client/init`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSession {
    /// The servers the client knows (configured and learned).
    pub servers: Vec<String>,
    /// The id from `client/init`; `None` for a client that never called it.
    #[serde(default)]
    pub client_id: Option<String>,
    /// The bearer token from `client/auth`, while logged in.
    #[serde(default)]
    pub token: Option<String>,
    /// Who is logged in.
    #[serde(default)]
    pub username: Option<String>,
    /// The `seq` of the next new demo message (seqs start at 1).
    #[serde(default = "first_seq")]
    pub next_seq: u64,
    /// The primary last seen.
    #[serde(default)]
    pub primary: Option<String>,
    /// The port given to `client/init`: servers notify this port, so a resumed client
    /// listens on it again if it can.
    #[serde(default)]
    pub listener_port: Option<u16>,
    /// A message whose outcome is unknown (the client gave up waiting). Sending the same
    /// text again reuses its `seq`, so it is stored at most once.
    #[serde(default)]
    pub pending: Option<PendingMessage>,
}

/// A demo message sent without a definite answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingMessage {
    pub seq: u64,
    pub message: String,
}

fn first_seq() -> u64 {
    1
}

/// `$HOME/.understudy/client.json`, if `HOME` is set.
pub fn default_path() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(|home| PathBuf::from(home).join(".understudy").join("client.json"))
}

impl SavedSession {
    /// Reads a session file; `Ok(None)` if there is none.
    pub fn load(path: &Path) -> Result<Option<SavedSession>> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(Error::Io(format!("cannot read {}: {err}", path.display()))),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|err| {
            Error::Corrupt(format!("{} is not a session file: {err}", path.display()))
        })
    }

    /// Writes the session atomically, readable by its owner only.
    pub fn save(&self, path: &Path) -> Result<()> {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        create_private_dir(dir).map_err(|err| {
            Error::Io(format!(
                "cannot create the directory of {}: {err}",
                path.display()
            ))
        })?;
        let mut json = serde_json::to_vec_pretty(self)
            .map_err(|err| Error::Internal(format!("cannot encode the session: {err}")))?;
        json.push(b'\n');
        atomic_file::replace(path, &json)
    }

    /// Deletes a session file; no file is fine.
    pub fn remove(path: &Path) -> Result<()> {
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(Error::Io(format!(
                "cannot remove {}: {err}",
                path.display()
            ))),
        }
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> SavedSession {
        SavedSession {
            servers: vec!["127.0.0.1:7001".into(), "127.0.0.1:7002".into()],
            client_id: Some("c-1".into()),
            token: Some("secret-token".into()),
            username: Some("alice".into()),
            next_seq: 13,
            primary: Some("127.0.0.1:7002".into()),
            listener_port: Some(40123),
            pending: Some(PendingMessage {
                seq: 12,
                message: "hello".into(),
            }),
        }
    }

    /// A saved session reads back equal, and the file is private to its owner.
    #[test]
    fn state_file_round_trips_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("client.json");
        assert_eq!(SavedSession::load(&path).unwrap(), None);
        session().save(&path).unwrap();
        assert_eq!(SavedSession::load(&path).unwrap(), Some(session()));

        // Overwriting replaces the whole file.
        let mut next = session();
        next.next_seq = 14;
        next.pending = None;
        next.save(&path).unwrap();
        assert_eq!(SavedSession::load(&path).unwrap(), Some(next));

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let dir_mode = std::fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(dir_mode & 0o077, 0);
        }

        SavedSession::remove(&path).unwrap();
        SavedSession::remove(&path).unwrap();
        assert_eq!(SavedSession::load(&path).unwrap(), None);
    }

    /// Fields added later default sensibly, so an older file still loads.
    #[test]
    fn a_minimal_file_loads_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.json");
        std::fs::write(&path, r#"{"servers":["a:1"],"client_id":"c"}"#).unwrap();
        let loaded = SavedSession::load(&path).unwrap().unwrap();
        assert_eq!(loaded.next_seq, 1);
        assert_eq!(loaded.token, None);
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(SavedSession::load(&path), Err(Error::Corrupt(_))));
    }
}
