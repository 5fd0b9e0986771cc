//! What an isolation asks of the engine at a test's boundaries.

use std::future::Future;

use super::{Driver, Rewind};
use crate::Isolation;

/// A test's boundaries: the savepoint every test starts from, and putting the session back after
/// it (savepoint and transaction isolation; committed isolation's session reset).
pub trait IsolationHooks: Driver {
    /// What a test's session is put back to after each test, read from a connection once the
    /// baseline is in place (inside the suite transaction of a savepoint suite, on a copy of the
    /// template otherwise): the sequences' values, the connection's settings.
    type Baseline: Send + Sync + 'static;

    /// Reads the [`Baseline`](IsolationHooks::Baseline) from `conn`, for tests isolated by
    /// `isolation`; fails if the database cannot isolate them so (MySQL's tables without
    /// transactions, under an isolation that rolls tests back).
    fn baseline(
        conn: &mut Self::Connection,
        isolation: Isolation,
    ) -> impl Future<Output = sqlx::Result<Self::Baseline>> + Send;

    /// The statements that begin a test's transaction in transaction isolation and establish the
    /// test savepoint [`TEST_SAVEPOINT`](super::TEST_SAVEPOINT) in it, in one round trip, on a
    /// session read into `baseline`.
    fn begin_test(baseline: &Self::Baseline) -> String {
        let _ = baseline;
        format!("BEGIN; SAVEPOINT {}", super::TEST_SAVEPOINT)
    }

    /// On a connection inside the suite transaction, once the suite's setup is done: checks the
    /// setup's deferred constraints as a commit would, and establishes the test savepoint
    /// [`TEST_SAVEPOINT`](super::TEST_SAVEPOINT) that every test will be rolled back to. Returns
    /// the setup's violation, if any.
    fn checkpoint(
        conn: &mut Self::Connection,
    ) -> impl Future<Output = sqlx::Result<std::result::Result<(), String>>> + Send;

    /// Ends a test: unless the test left its transaction aborted, checks deferred constraints (if
    /// `check`), then rolls back to [`TEST_SAVEPOINT`](super::TEST_SAVEPOINT), keeping it for the
    /// next test, and puts the session back as `baseline` has it (settings, locks, prepared
    /// statements; sequences too if `sequences`), in as few round trips as it can.
    fn rewind(
        conn: &mut Self::Connection,
        check: bool,
        baseline: &Self::Baseline,
        sequences: bool,
    ) -> impl Future<Output = sqlx::Result<Rewind>> + Send;

    /// Puts a session that is in no transaction back as `baseline` has it, but for its
    /// sequences: settings, role, locks, prepared statements, temporary tables (committed
    /// isolation, before each restore).
    fn reset_session(
        conn: &mut Self::Connection,
        baseline: &Self::Baseline,
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
}
