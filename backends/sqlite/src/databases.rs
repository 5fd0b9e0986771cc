//! Where SQLite test databases go: a directory each under testdb's, claimed by its process, and
//! swept once that process is gone.

use std::path::Path;

use sqlx::{ConnectOptions, Connection};
use testdb::backend::{Driver, OwnedDatabase, Server};
use testdb::{Error, Result};

use crate::Sqlite;
use crate::database::{SqliteDatabase, url_of};
use crate::owner;

const DATABASE_FILE: &str = "db.sqlite3";

impl Server for Sqlite {
    type Owned = SqliteDatabase;

    async fn create(&self) -> Result<SqliteDatabase> {
        self.create_database(None).await
    }

    fn sweep_scope(&self) -> String {
        self.root().display().to_string()
    }

    async fn sweep(&self) -> Result<usize> {
        owner::sweep(self.root())
    }
}

impl Sqlite {
    /// Creates a database that testdb owns: empty, or a copy of the file `template`.
    pub(crate) async fn create_database(&self, template: Option<&Path>) -> Result<SqliteDatabase> {
        std::fs::create_dir_all(self.root())
            .map_err(|source| owner::io("create directory", self.root(), source))?;
        let (dir, lock) = owner::create_claimed(self.root())?;
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
