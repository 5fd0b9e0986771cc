//! A SQLite test database: what the core owns until it destroys it.

use std::fs::File;
use std::path::{Path, PathBuf};

use sqlx::sqlite::SqliteConnectOptions;
use testdb::Result;
use testdb::backend::OwnedDatabase;

use crate::owner;

/// A SQLite test database: its directory, file and lock.
#[derive(Debug)]
pub struct SqliteDatabase {
    pub(crate) dir: PathBuf,
    pub(crate) file: PathBuf,
    pub(crate) name: String,
    pub(crate) url: String,
    pub(crate) options: SqliteConnectOptions,
    // Held for the database's life: proves to sweepers that its owner is alive.
    pub(crate) _lock: File,
}

impl SqliteDatabase {
    /// The database file.
    pub fn file(&self) -> &Path {
        &self.file
    }
}

impl OwnedDatabase for SqliteDatabase {
    type Database = sqlx::Sqlite;

    fn name(&self) -> &str {
        &self.name
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn connect_options(&self) -> SqliteConnectOptions {
        self.options.clone()
    }

    async fn destroy(self) -> Result<()> {
        // Open connections keep their file handles; on Unix the files go away all the same.
        std::fs::remove_dir_all(&self.dir)
            .map_err(|source| owner::io("remove directory", &self.dir, source))
    }
}

/// `sqlite://` URL of a file, percent-encoding what sqlx's parser would misread.
pub(crate) fn url_of(file: &Path) -> String {
    let mut url = String::from("sqlite://");
    for byte in file.display().to_string().bytes() {
        match byte {
            b'%' | b'?' | b'#' | b' ' | b'"' | b'<' | b'>' | b'`' | b'{' | b'}' => {
                url.push_str(&format!("%{byte:02X}"));
            }
            0..=0x1f | 0x7f..=0xff => url.push_str(&format!("%{byte:02X}")),
            _ => url.push(char::from(byte)),
        }
    }
    url
}
