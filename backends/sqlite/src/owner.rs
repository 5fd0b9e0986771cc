//! Who owns a database directory.
//!
//! Each database directory holds a lock file on which its creating process keeps an exclusive
//! lock for as long as the database lives. The kernel releases the lock when the process dies,
//! however it dies, so a directory whose lock can be taken belongs to nobody alive.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use testdb::{Error, Result};

/// The lock file inside each database directory.
pub(crate) const LOCK_FILE: &str = "owner.lock";
pub(crate) use testdb::backend::DATABASE_PREFIX as PREFIX;
/// A directory still being created that is older than this was abandoned by its creator.
const CREATION_GRACE: Duration = Duration::from_secs(600);

/// The prefix of a directory being created, before its lock is held; sweeps pass it by until it
/// is old enough to have been abandoned.
const STAGING_PREFIX: &str = ".testdb_new_";

/// Creates a database directory under `root` with its lock already held.
///
/// The directory is made and locked under a staging name, then renamed: a sweeper never sees a
/// `testdb_` directory whose lock file exists but is not yet locked (it would take the lock and
/// remove the directory under its creator).
pub(crate) fn create_claimed(root: &Path) -> Result<(PathBuf, File)> {
    let staging = tempfile::Builder::new()
        .prefix(STAGING_PREFIX)
        .tempdir_in(root)
        .map_err(|source| io("create a directory in", root, source))?
        .keep();
    let result = claim(&staging).and_then(|lock| {
        let suffix = staging
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_prefix(STAGING_PREFIX))
            .unwrap_or_default();
        let dir = root.join(format!("{PREFIX}{suffix}"));
        std::fs::rename(&staging, &dir).map_err(|source| io("rename", &staging, source))?;
        Ok((dir, lock))
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// Takes the lock of a directory that was just created.
fn claim(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
        .map_err(|source| io("create lock file", &path, source))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(io(
            "lock",
            &path,
            std::io::Error::other("already locked by another process"),
        )),
        Err(TryLockError::Error(source)) => Err(io("lock", &path, source)),
    }
}

/// Removes the database directories under `root` whose owners are gone; returns how many.
pub(crate) fn sweep(root: &Path) -> Result<usize> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(io("read directory", root, source)),
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_str().unwrap_or_default();
        let is_dir = entry.file_type().is_ok_and(|kind| kind.is_dir());
        let swept = if !is_dir {
            false
        } else if name.starts_with(PREFIX) {
            sweep_one(&entry.path(), false)
        } else if name.starts_with(STAGING_PREFIX) {
            // Being created right now, unless it is old: then its creator died mid-way.
            is_abandoned(&entry.path()) && sweep_one(&entry.path(), true)
        } else {
            false
        };
        if swept {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes one directory if its owner is gone. Errors mean "not now": a later sweep tries again.
///
/// The lock file is testdb's mark: a directory without one is never removed with its contents,
/// whatever its name. Only an abandoned staging directory that is still empty goes (its creator
/// died before making the lock file): removing it loses nothing.
fn sweep_one(dir: &Path, staging: bool) -> bool {
    let lock = dir.join(LOCK_FILE);
    match OpenOptions::new().write(true).open(&lock) {
        Ok(file) => match file.try_lock() {
            // Held by a live process (possibly this one): not ours to remove.
            Err(_) => false,
            // Remove while holding the lock, so no other sweeper races us.
            Ok(()) => std::fs::remove_dir_all(dir).is_ok(),
        },
        // `remove_dir` fails unless the directory is empty.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            staging && std::fs::remove_dir(dir).is_ok()
        }
        Err(_) => false,
    }
}

fn is_abandoned(dir: &Path) -> bool {
    std::fs::metadata(dir)
        .and_then(|meta| meta.modified())
        .ok()
        .and_then(|modified| SystemTime::now().duration_since(modified).ok())
        .is_some_and(|age| age > CREATION_GRACE)
}

pub(crate) fn io(action: &str, path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        action: action.into(),
        path: PathBuf::from(path),
        source,
    }
}
