use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};
use testdb::backend::OwnedDatabase;
use testdb::{Backend, Error, Result};

use crate::database::{SqliteDatabase, url_of};
use crate::{committed, fixtures, owner, template};

const DATABASE_FILE: &str = "db.sqlite3";

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

    fn options(&self, file: &Path) -> SqliteConnectOptions {
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

impl Backend for Sqlite {
    type Database = sqlx::Sqlite;
    type Connection = sqlx::SqliteConnection;
    type Owned = SqliteDatabase;

    const NAME: &'static str = "SQLite";
    // sqlx runs each SQLite connection on a thread of its own.
    const CONNECTIONS_NEED_A_RUNTIME: bool = false;
    // One multi-row statement's worth, inserted while the rest of the file is read.
    const LOAD_WHILE_READING: bool = true;
    const STORES_AS_GIVEN: bool = true;
    const DEFERS_EVERY_KEY: bool = true;
    const BULK_ROWS: usize = 500;

    async fn create(&self) -> Result<SqliteDatabase> {
        self.create_database(None).await
    }

    type Watch = std::sync::Arc<crate::isolation::Slot>;

    async fn watch(
        conn: &mut sqlx::SqliteConnection,
    ) -> sqlx::Result<std::sync::Arc<crate::isolation::Slot>> {
        crate::isolation::watch(conn).await
    }

    fn enter(
        slot: &std::sync::Arc<crate::isolation::Slot>,
        fence: &std::sync::Arc<testdb::backend::Fence>,
    ) {
        slot.set(Some(fence.clone()));
    }

    async fn join(
        conn: &mut sqlx::SqliteConnection,
        attribution: &testdb::backend::Attribution,
    ) -> sqlx::Result<bool> {
        crate::isolation::join(conn, attribution).await
    }

    async fn settle(
        conn: &mut sqlx::SqliteConnection,
        slot: Option<&std::sync::Arc<crate::isolation::Slot>>,
    ) -> sqlx::Result<()> {
        crate::isolation::settle(conn, slot).await
    }

    type Baseline = crate::isolation::Baseline;

    async fn baseline(
        conn: &mut sqlx::SqliteConnection,
    ) -> sqlx::Result<crate::isolation::Baseline> {
        crate::isolation::baseline(conn).await
    }

    async fn checkpoint(
        conn: &mut sqlx::SqliteConnection,
    ) -> sqlx::Result<std::result::Result<(), String>> {
        crate::isolation::checkpoint(conn).await
    }

    // SQLite's AUTOINCREMENT counters are rows of a table: rolled back with the test.
    async fn rewind(
        conn: &mut sqlx::SqliteConnection,
        check: bool,
        baseline: &crate::isolation::Baseline,
        _sequences: bool,
    ) -> sqlx::Result<testdb::backend::Rewind> {
        crate::isolation::rewind(conn, check, baseline).await
    }

    async fn reset_session(
        conn: &mut sqlx::SqliteConnection,
        baseline: &crate::isolation::Baseline,
    ) -> sqlx::Result<()> {
        crate::isolation::reset_session(conn, baseline).await
    }

    async fn catalog(conn: &mut sqlx::SqliteConnection) -> sqlx::Result<testdb::backend::Catalog> {
        fixtures::catalog(conn).await
    }

    async fn execute_script(conn: &mut sqlx::SqliteConnection, sql: &str) -> sqlx::Result<()> {
        fixtures::execute_script(conn, sql).await
    }

    async fn insert_rows(
        conn: &mut sqlx::SqliteConnection,
        table: &str,
        info: &testdb::backend::TableInfo,
        columns: &[String],
        rows: &[Vec<testdb::backend::Value>],
    ) -> sqlx::Result<()> {
        fixtures::insert_rows(conn, table, info, columns, rows).await
    }

    async fn defer_foreign_keys(
        conn: &mut sqlx::SqliteConnection,
        keys: &[(String, testdb::backend::ForeignKey)],
    ) -> sqlx::Result<String> {
        fixtures::defer_foreign_keys(conn, keys).await
    }

    async fn check_foreign_keys(
        conn: &mut sqlx::SqliteConnection,
        keys: &[(String, testdb::backend::ForeignKey)],
    ) -> sqlx::Result<Option<testdb::backend::ErrorSite>> {
        fixtures::check_foreign_keys(conn, keys).await
    }

    async fn reset_sequences(
        conn: &mut sqlx::SqliteConnection,
        tables: &[String],
    ) -> sqlx::Result<()> {
        fixtures::reset_sequences(conn, tables).await
    }

    async fn dump_rows(
        conn: &mut sqlx::SqliteConnection,
        table: &str,
    ) -> sqlx::Result<(Vec<String>, Vec<Vec<testdb::backend::Value>>)> {
        fixtures::dump_rows(conn, table).await
    }

    fn error_site(err: &sqlx::Error) -> testdb::backend::ErrorSite {
        fixtures::error_site(err)
    }

    type TemplateLock = template::TemplateLock;

    async fn lock_template(&self, name: &str) -> Result<template::TemplateLock> {
        template::lock(self, name, false).await
    }

    async fn share_template(&self, name: &str) -> Result<template::TemplateLock> {
        template::lock(self, name, true).await
    }

    async fn find_template(&self, name: &str) -> Result<Option<String>> {
        template::find(self, name).await
    }

    async fn promote(&self, database: SqliteDatabase, name: &str, data: &str) -> Result<()> {
        template::promote(self, database, name, data).await
    }

    async fn clone_template(&self, name: &str) -> Result<SqliteDatabase> {
        template::clone(self, name).await
    }

    async fn remove_templates(&self, prefix: &str, keep: &str) -> Result<usize> {
        template::remove(self, prefix, keep).await
    }

    async fn remove_unused_templates(
        &self,
        unused_for: std::time::Duration,
        keep_at_most: usize,
    ) -> Result<usize> {
        template::remove_unused(self, unused_for, keep_at_most).await
    }

    async fn track_writes(
        conn: &mut sqlx::SqliteConnection,
        tables: &[String],
    ) -> sqlx::Result<()> {
        committed::track_writes(conn, tables).await
    }

    async fn written_tables(conn: &mut sqlx::SqliteConnection) -> sqlx::Result<Vec<String>> {
        committed::written_tables(conn).await
    }

    async fn restore(
        conn: &mut sqlx::SqliteConnection,
        tables: &[String],
        sequences: bool,
    ) -> sqlx::Result<()> {
        committed::restore(conn, tables, sequences).await
    }

    fn sweep_scope(&self) -> String {
        self.root.display().to_string()
    }

    async fn sweep(&self) -> Result<usize> {
        owner::sweep(&self.root)
    }
}

impl Sqlite {
    /// Creates a database that testdb owns: empty, or a copy of the file `template`.
    pub(crate) async fn create_database(&self, template: Option<&Path>) -> Result<SqliteDatabase> {
        std::fs::create_dir_all(&self.root)
            .map_err(|source| owner::io("create directory", &self.root, source))?;
        let (dir, lock) = owner::create_claimed(&self.root)?;
        let file = dir.join(DATABASE_FILE);
        let database = SqliteDatabase {
            name: file.display().to_string(),
            url: url_of(&file),
            options: self.options(&file),
            file,
            dir,
            _lock: lock,
        };
        if let Some(template) = template {
            // A template is complete in its one file (checkpointed, already in WAL mode).
            if let Err(source) = std::fs::copy(template, &database.file) {
                let err = owner::io("copy", template, source);
                let _ = database.destroy().await;
                return Err(err);
            }
            return Ok(database);
        }
        // Create the file and switch it to WAL, which is persistent: every later connection, in
        // any process, opens it in WAL mode.
        let created = database
            .options
            .clone()
            .create_if_missing(true)
            .connect()
            .await;
        match created {
            Ok(connection) => {
                let _ = connection.close().await;
                Ok(database)
            }
            Err(source) => {
                let err = Error::Database {
                    backend: Self::NAME,
                    database: database.name.clone(),
                    step: "create".into(),
                    source,
                };
                let _ = database.destroy().await;
                Err(err)
            }
        }
    }
}
