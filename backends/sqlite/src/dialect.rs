//! SQLite's SQL, where it is not the standard's the core writes by default.

use testdb::backend::Dialect;

use crate::Sqlite;

impl Dialect for Sqlite {}
