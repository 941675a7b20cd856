//! Replacing a whole file so that a crash leaves the old contents or the new, never a mix:
//! the server's identity and its data dir's format, and the client's saved session.
//!
//! The steps, and why each is there:
//!
//! | step | why |
//! |---|---|
//! | write a temporary file in the same directory | a rename only replaces atomically within one file system |
//! | fsync it | else the rename could reach the disk before the data, leaving an empty or torn file |
//! | rename it over the target | atomic: readers see the old file or the new one |
//! | fsync the directory | the rename is only durable once the directory that records it is |
//!
//! The temporary file gets a fresh random name (so two processes saving at once cannot
//! rename each other's half-written file) and is readable by its owner only from the start
//! (some of these files hold tokens or password hashes). It is removed if a step fails; a
//! crash between its creation and the rename leaves it behind, named `.NAME.XXXXXX.tmp`,
//! and nothing ever reads it.
//!
//! This module sits at the crate root, below both the server's storage and the client
//! library, so that neither depends on the other for it.

use std::io::{self, Write as _};
use std::path::Path;

use crate::{Error, Result};

/// Replaces `path` with `contents`, atomically and durably. The directory must exist.
pub(crate) fn replace(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::BadRequest(format!("{} names no file", path.display())))?;
    let failed =
        |what: &str, err: io::Error| Error::Io(format!("cannot {what} {}: {err}", path.display()));
    // `tempfile` creates the file with mode 0600 on Unix.
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|err| failed("create a temporary file for", err))?;
    temp.write_all(contents)
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|err| failed("write", err))?;
    temp.persist(path)
        .map_err(|err| failed("rename into place", err.error))?;
    sync_dir(dir).map_err(|err| failed("sync the directory of", err))
}

/// Makes the directory entries in `dir` durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Elsewhere a directory cannot be opened as a file, and renames are durable by themselves.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A replacement leaves exactly the new contents under the name, and no temporary file.
    #[test]
    fn a_replaced_file_holds_the_new_contents_and_nothing_is_left_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity");
        replace(&path, b"first\n").unwrap();
        replace(&path, b"second\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second\n");
        assert_eq!(names_in(dir.path()), vec!["identity"]);
    }

    /// Files that may hold secrets are readable by their owner only, from the first byte.
    #[cfg(unix)]
    #[test]
    fn a_replaced_file_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.json");
        replace(&path, b"{}").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// A replacement that fails leaves what was there, and no temporary file.
    #[test]
    fn a_failed_replacement_leaves_what_was_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot");
        // A directory that is not empty cannot be renamed over.
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), b"old").unwrap();
        assert!(matches!(replace(&path, b"new"), Err(Error::Io(_))));
        assert_eq!(std::fs::read(path.join("inside")).unwrap(), b"old");
        assert_eq!(names_in(dir.path()), vec!["snapshot"]);
    }
}
