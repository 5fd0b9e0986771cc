//! SQLite's SQL, where it is not the standard's the core writes by default.

use testdb::backend::{Dialect, TEST_SAVEPOINT};

use crate::Sqlite;

impl Dialect for Sqlite {
    /// `BEGIN IMMEDIATE` takes the write lock at once, so that concurrent tests wait for each
    /// other instead of deadlocking when both upgrade a read lock.
    fn begin_test() -> String {
        format!("BEGIN IMMEDIATE; SAVEPOINT {TEST_SAVEPOINT}")
    }
}
