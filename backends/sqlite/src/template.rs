//! Templates: database files under `<root>/templates`, named `testdb_tpl_….sqlite3`, that test
//! databases are copied from.
//!
//! Each template has a lock file (`….lock`), locked while the template is built or removed, and a
//! data file (`….json`, the suite's setup value) written before the database file is renamed into
//! place: a template exists once its database file does.
//!
//! A removed template's lock file goes too, last, removed while locked; whoever locks a lock file
//! checks afterwards that it is still the file at that path, and starts again if not (it had
//! opened a file that a remover has since unlinked).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sqlx::{ConnectOptions, Connection};
use testdb::Result;
use testdb::backend::{OwnedDatabase, Templates};

use crate::Sqlite;
use crate::database::SqliteDatabase;
use crate::owner::io;

const DIRECTORY: &str = "templates";

/// The lock on a template's name: an exclusive lock on its lock file, released when dropped.
#[derive(Debug)]
pub struct TemplateLock {
    _file: File,
}

fn directory(server: &Sqlite) -> PathBuf {
    server.root().join(DIRECTORY)
}

fn path(server: &Sqlite, name: &str, extension: &str) -> PathBuf {
    directory(server).join(format!("{name}.{extension}"))
}

pub(crate) fn database_file(server: &Sqlite, name: &str) -> PathBuf {
    path(server, name, "sqlite3")
}

/// Opens (creating it if need be) and locks the lock file at `path`.
async fn lock_file(path: &Path, shared: bool) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| io("open lock file", path, source))?;
    // Waiting for another process's lock blocks: wait on a thread of its own.
    let locked = tokio::task::spawn_blocking(move || {
        let locked = if shared {
            file.lock_shared()
        } else {
            file.lock()
        };
        locked.map(|()| file)
    })
    .await;
    match locked {
        Ok(Ok(file)) => Ok(file),
        Ok(Err(source)) => Err(io("lock", path, source)),
        Err(_) => Err(io(
            "lock",
            path,
            std::io::Error::other("the waiting thread was cancelled"),
        )),
    }
}

/// Whether `file` is the file at `path` now, not one unlinked since it was opened.
#[cfg(unix)]
fn is_at(file: &File, path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let opened = file.metadata()?;
    match std::fs::metadata(path) {
        Ok(now) => Ok(now.dev() == opened.dev() && now.ino() == opened.ino()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err),
    }
}

/// Elsewhere lock files are never removed (see [`remove`]), so the file opened is the one there.
#[cfg(not(unix))]
fn is_at(_: &File, _: &Path) -> std::io::Result<bool> {
    Ok(true)
}

/// Records that template `name` was used now, as its lock file's modification time.
fn stamp(server: &Sqlite, name: &str) {
    if let Ok(file) = OpenOptions::new()
        .write(true)
        .open(path(server, name, "lock"))
    {
        let _ = file.set_modified(SystemTime::now());
    }
}

async fn promote_file(
    server: &Sqlite,
    database: &SqliteDatabase,
    name: &str,
    data: &str,
) -> Result<()> {
    // Everything into the database file itself, so that a copy of that one file is complete.
    let mut conn = database
        .connect_options()
        .connect()
        .await
        .map_err(|source| failed(database, "open", source))?;
    let checkpointed = sqlx::raw_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    checkpointed.map_err(|source| failed(database, "checkpoint", source))?;

    let target = database_file(server, name);
    let data_file = path(server, name, "json");
    let staged = path(server, name, "sqlite3.new");
    std::fs::remove_file(&target)
        .or_else(ignore_missing)
        .map_err(|source| io("remove", &target, source))?;
    std::fs::write(&data_file, data).map_err(|source| io("write", &data_file, source))?;
    std::fs::copy(database.file(), &staged).map_err(|source| io("copy to", &staged, source))?;
    std::fs::rename(&staged, &target).map_err(|source| io("rename", &staged, source))?;
    stamp(server, name);
    Ok(())
}

/// The templates in a listing of the templates' directory, with their last use.
fn templates(entries: std::fs::ReadDir) -> Vec<(String, Option<SystemTime>)> {
    entries
        .flatten()
        .filter_map(|entry| {
            let file_name = entry.file_name();
            let name = file_name.to_str()?.strip_suffix(".lock")?.to_owned();
            let used = entry.metadata().and_then(|meta| meta.modified()).ok();
            Some((name, used))
        })
        .collect()
}

/// Removes template `name` unless it is in use, being built or being removed; whether it did.
fn remove_one(server: &Sqlite, name: &str) -> bool {
    let lock_path = path(server, name, "lock");
    let Ok(lock) = OpenOptions::new().write(true).open(&lock_path) else {
        return false;
    };
    if lock.try_lock().is_err() {
        return false; // In use, or being built or removed by another process.
    }
    if !is_at(&lock, &lock_path).unwrap_or(false) {
        return false; // Removed by another process since we listed it (and perhaps made anew).
    }
    for extension in ["sqlite3", "json", "sqlite3.new"] {
        let _ = std::fs::remove_file(path(server, name, extension));
    }
    // Last, and while it is locked: whoever waits for it finds it gone once it has the lock,
    // and locks a new one. Where a file's identity cannot be checked, it stays.
    #[cfg(unix)]
    let _ = std::fs::remove_file(&lock_path);
    drop(lock);
    true
}

fn ignore_missing(err: std::io::Error) -> std::io::Result<()> {
    if err.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(err)
    }
}

fn failed(database: &SqliteDatabase, step: &str, source: sqlx::Error) -> testdb::Error {
    testdb::Error::Database {
        backend: "SQLite",
        database: database.name().to_owned(),
        step: step.into(),
        source,
    }
}

async fn lock(server: &Sqlite, name: &str, shared: bool) -> Result<TemplateLock> {
    let dir = directory(server);
    std::fs::create_dir_all(&dir).map_err(|source| io("create directory", &dir, source))?;
    let lock = path(server, name, "lock");
    loop {
        let file = lock_file(&lock, shared).await?;
        match is_at(&file, &lock) {
            Ok(true) => return Ok(TemplateLock { _file: file }),
            // Unlinked by a remover while we waited: a lock on nothing. Lock the one there now.
            Ok(false) => continue,
            Err(source) => return Err(io("look at", &lock, source)),
        }
    }
}

impl Templates for Sqlite {
    type TemplateLock = TemplateLock;

    async fn lock_template(&self, name: &str) -> Result<TemplateLock> {
        lock(self, name, false).await
    }

    async fn share_template(&self, name: &str) -> Result<TemplateLock> {
        lock(self, name, true).await
    }

    async fn find_template(&self, name: &str) -> Result<Option<String>> {
        if !database_file(self, name).exists() {
            return Ok(None);
        }
        let data = path(self, name, "json");
        match std::fs::read_to_string(&data) {
            Ok(text) => {
                // Found for use: a sweep keeps it while it is used. Best effort.
                stamp(self, name);
                Ok(Some(text))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(io("read", &data, source)),
        }
    }

    async fn promote(&self, database: SqliteDatabase, name: &str, data: &str) -> Result<()> {
        let result = promote_file(self, &database, name, data).await;
        let removed = database.destroy().await;
        result.and(removed)
    }

    async fn clone_template(&self, name: &str) -> Result<SqliteDatabase> {
        self.create_database(Some(&database_file(self, name))).await
    }

    async fn remove_templates(&self, prefix: &str, keep: &str) -> Result<usize> {
        let dir = directory(self);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(source) => return Err(io("read directory", &dir, source)),
        };
        let mut removed = 0;
        for (name, _) in templates(entries) {
            if name.starts_with(prefix) && name != keep && remove_one(self, &name) {
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn remove_unused_templates(
        &self,
        unused_for: Duration,
        keep_at_most: usize,
    ) -> Result<usize> {
        let dir = directory(self);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(source) => return Err(io("read directory", &dir, source)),
        };
        let mut templates = templates(entries);
        // The most recently used first.
        templates.sort_by_key(|template| std::cmp::Reverse(template.1));
        let now = SystemTime::now();
        let mut removed = 0;
        for (rank, (name, used)) in templates.iter().enumerate() {
            let idle = used.and_then(|used| now.duration_since(used).ok());
            let expired = idle.is_some_and(|idle| idle >= unused_for) || rank >= keep_at_most;
            if expired && remove_one(self, name) {
                removed += 1;
            }
        }
        Ok(removed)
    }
}
