//! PostgreSQL databases for [testdb](https://docs.rs/testdb).
//!
//! Each test database is a new database, named `testdb_…`, on the server given by
//! `TESTDB_POSTGRES_URL` (else `DATABASE_URL`, else a URL you pass), created by a role with
//! `CREATEDB`; with no URL at all, on a server of testdb's own, started from the machine's
//! PostgreSQL binaries and shared by every process (see [`Postgres::from_env`]). A comment on the database records which process owns it, and that process holds a
//! session advisory lock for as long as it lives; a later run drops the databases whose owner's lock
//! is free, and nothing else.
//!
//! ```no_run
//! use testdb_postgres::{Postgres, TestDatabase};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let db = TestDatabase::builder(Postgres::from_env()?)
//!     .migrations("migrations")
//!     .create()
//!     .await?;
//! sqlx::query("INSERT INTO users (name) VALUES ('ada')")
//!     .execute(db.pool())
//!     .await?;
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
mod budget;
mod committed;
mod copies;
mod database;
mod databases;
mod dialect;
mod fencing;
mod fixtures;
mod isolation;
mod maintenance;
mod nodelay;
#[cfg(unix)]
mod own_server;
mod owner;
mod server;
mod sql;
mod template;

pub use database::PostgresDatabase;
pub use server::Postgres;
pub use template::TemplateLock;
// What a test author writes, so that a test crate needs this crate (and sqlx) only.
pub use testdb::{
    Caller, Calls, Error, Fixtures, Handle, Isolation, Loaded, Migrations, Outcome, Outcomes,
    Result, Setup, Suite, block_on, current, dump_fixtures, load_fixtures, remove_templates,
    spawn_concurrent, sweep,
};

/// `#[testdb::test]`, for Postgres: a test on a database testdb sets up, a drop-in for
/// `#[sqlx::test]`.
pub use testdb_macros::postgres_test as test;

// The expansion of `test` names testdb through this crate.
#[doc(hidden)]
pub use testdb as __testdb;

/// A test database on PostgreSQL.
pub type TestDatabase = testdb::TestDatabase<Postgres>;
