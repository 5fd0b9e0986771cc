#![doc = include_str!("../README.md")]
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
pub mod backend;
mod cleanup;
mod concurrent;
mod database;
mod error;
mod fence;
mod fixtures;
mod handle;
mod isolation;
mod migrations;
mod quote;
mod runtime;
mod suite;

pub use backend::Backend;
pub(crate) use backend::{ConnectOptions, OwnedDatabase, Rewind};
pub use concurrent::{
    Caller, Calls, Outcome, Outcomes, run_concurrent, serve_callers, spawn_concurrent,
};
pub use database::{Builder, TestDatabase};
pub use error::{Error, Result};
pub use fixtures::{Fixtures, Loaded, dump_fixtures, load_fixtures};
pub use handle::{Handle, current};
pub use isolation::Isolation;
pub use migrations::Migrations;
pub use runtime::block_on;
pub use suite::{Databases, Setup, Suite};
/// `#[testdb::test]`: a test on a database testdb sets up, a drop-in for `#[sqlx::test]`.
pub use testdb_macros::test;

/// What `#[testdb::test]` expands to calls; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::attribute::{
        Argument, Ran, Report, Schema, Spec, TestReturn, argument, block_on_test, connection,
        exit_failed, in_suite, returns, with_argument, with_connection,
    };
}

/// Removes what testdb left on `backend`'s server or directory and no live process uses: the
/// databases of processes that have since died, and nothing else of theirs; copies of templates
/// that such a process left leased; and templates (with their copies) unused for longer than
/// `TESTDB_TEMPLATE_DAYS` (3 days by default), and the least recently used beyond
/// `TESTDB_MAX_TEMPLATES` (200). Returns how many databases it removed.
///
/// testdb does this by itself the first time a process creates a database on a server or in a
/// directory; call it to clean up without creating one (e.g. in a CI step).
pub async fn sweep<B: Backend>(backend: &B) -> Result<usize> {
    let backend = backend.clone();
    runtime::run(async move {
        let swept = backend.sweep().await?;
        let (unused_for, keep_at_most) = cleanup::template_policy()?;
        let templates = backend
            .remove_unused_templates(unused_for, keep_at_most)
            .await?;
        Ok(swept + templates)
    })
    .await?
}

/// Removes every template testdb made on `backend`'s server or in its directory, with their
/// copies, except those a live process is using right now; returns how many databases it removed.
/// The next suite to need one builds it again.
pub async fn remove_templates<B: Backend>(backend: &B) -> Result<usize> {
    let backend = backend.clone();
    runtime::run(async move {
        backend
            .remove_unused_templates(std::time::Duration::ZERO, 0)
            .await
    })
    .await?
}
