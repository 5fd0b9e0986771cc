//! MySQL and MariaDB databases for [testdb](https://docs.rs/testdb).
//!
//! Each test database is a database of its own on the server in `TESTDB_MYSQL_URL`, named
//! `testdb_…` and marked as testdb's in its comment (MariaDB 10.5 and later); the process that
//! created it holds a named lock (`GET_LOCK`) for as long as it lives, and a sweep removes the
//! databases whose process is gone.
//!
//! What differs from the other engines, because MySQL does it differently:
//!
//! - DDL (`CREATE`, `ALTER`, `DROP`, `TRUNCATE`, …) commits at once, ending the transaction a
//!   test runs in: under [`Isolation::Savepoint`] and [`Isolation::Transaction`] such a test fails
//!   with [`Error::Escaped`] and the suite is built again; run DDL in tests under
//!   [`Isolation::FreshDatabase`] (or [`Isolation::Committed`]).
//! - `AUTO_INCREMENT` counters do not roll back (InnoDB), and setting one back is DDL: under the
//!   isolations that roll back, ids keep growing across tests.
//! - Tables without transactions (MyISAM, Aria, MEMORY, …) are refused by the isolations that roll
//!   tests back.
//! - There is no `CREATE DATABASE … TEMPLATE`: a suite's database is copied from its template
//!   table by table (each table's `SHOW CREATE TABLE`, then its rows, if it has any).
//!
//! ```no_run
//! use testdb_mysql::{MySql, TestDatabase};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let db = TestDatabase::builder(MySql::from_env()?).create_blocking()?;
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
mod bookkeeping;
mod committed;
mod database;
mod databases;
mod dialect;
mod fencing;
mod fixtures;
mod isolation;
mod owner;
mod template;

pub use backend::MySql;
pub use database::MySqlDatabase;
pub use template::TemplateLock;
// What a test author writes, so that a test crate needs this crate (and sqlx) only.
pub use testdb::{
    Caller, Calls, Error, Fixtures, Handle, Isolation, Loaded, Migrations, Outcome, Outcomes,
    Result, Setup, Suite, block_on, current, dump_fixtures, load_fixtures, remove_templates,
    spawn_concurrent, sweep,
};

/// `#[testdb::test]`, for MySQL: a test on a database testdb sets up, a drop-in for
/// `#[sqlx::test]`.
pub use testdb_macros::mysql_test as test;

// The expansion of `test` names testdb through this crate.
#[doc(hidden)]
pub use testdb as __testdb;

/// A test database on MySQL or MariaDB.
pub type TestDatabase = testdb::TestDatabase<MySql>;
