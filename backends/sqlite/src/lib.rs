//! SQLite file databases for [testdb](https://docs.rs/testdb).
//!
//! Each test database is a file, `db.sqlite3`, in a directory of its own under testdb's directory
//! (`$TMPDIR/testdb` by default), opened in WAL mode with a busy timeout so that other connections
//! and processes can share it. Never `:memory:`: other processes must be able to open it.
//!
//! ```
//! use testdb_sqlite::{Sqlite, TestDatabase};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let db = TestDatabase::builder(Sqlite::new()).create_blocking()?;
//! let pool = db.pool().clone();
//! let answer: i64 = testdb::block_on(async move {
//!     sqlx::query_scalar("SELECT 6 * 7").fetch_one(&pool).await
//! })??;
//! assert_eq!(answer, 42);
//! # Ok(()) }
//! ```
// Library code returns errors and never writes to stdout; tests and examples may do either.
#![cfg_attr(
    not(test),
    warn(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::print_stdout
    )
)]

mod attribute;
mod backend;
mod committed;
mod database;
mod databases;
mod dialect;
mod fencing;
mod fixtures;
mod isolation;
mod owner;
mod template;

pub use backend::Sqlite;
pub use database::SqliteDatabase;
pub use template::TemplateLock;
// What a test author writes, so that a test crate needs this crate (and sqlx) only.
pub use testdb::{
    Caller, Calls, Error, Fixtures, Handle, Isolation, Loaded, Migrations, Outcome, Outcomes,
    Result, Setup, Suite, block_on, current, dump_fixtures, load_fixtures, remove_templates,
    spawn_concurrent, sweep,
};

/// `#[testdb::test]`, for Sqlite: a test on a database testdb sets up, a drop-in for
/// `#[sqlx::test]`.
pub use testdb_macros::sqlite_test as test;

// The expansion of `test` names testdb through this crate.
#[doc(hidden)]
pub use testdb as __testdb;

/// A test database on SQLite.
pub type TestDatabase = testdb::TestDatabase<Sqlite>;
