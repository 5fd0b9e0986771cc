use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use testdb::backend::Driver;

/// The SQLite backend: where test databases go and how they are opened.
#[derive(Debug, Clone)]
pub struct Sqlite {
    root: PathBuf,
    busy_timeout: Duration,
    foreign_keys: bool,
}

impl Sqlite {
    /// Test databases in `$TMPDIR/testdb`, with foreign keys enforced and a 5 s busy timeout.
    pub fn new() -> Self {
        Sqlite {
            root: std::env::temp_dir().join("testdb"),
            busy_timeout: Duration::from_secs(5),
            foreign_keys: true,
        }
    }

    /// Puts test databases under `root` instead (created if missing).
    pub fn directory(mut self, root: impl Into<PathBuf>) -> Self {
        self.root = root.into();
        self
    }

    /// How long a connection waits for another's write lock before failing with "database is
    /// locked".
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Whether connections enforce foreign keys (`PRAGMA foreign_keys`); on by default.
    pub fn foreign_keys(mut self, on: bool) -> Self {
        self.foreign_keys = on;
        self
    }

    /// The directory test databases go in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn options(&self, file: &Path) -> SqliteConnectOptions {
        SqliteConnectOptions::new()
            .filename(file)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(self.busy_timeout)
            .foreign_keys(self.foreign_keys)
    }
}

impl Default for Sqlite {
    fn default() -> Self {
        Sqlite::new()
    }
}

impl Driver for Sqlite {
    type Database = sqlx::Sqlite;
    type Connection = sqlx::SqliteConnection;

    const NAME: &'static str = "SQLite";
    // sqlx runs each SQLite connection on a thread of its own.
    const CONNECTIONS_NEED_A_RUNTIME: bool = false;
}
