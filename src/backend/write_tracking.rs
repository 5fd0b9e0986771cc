//! Committed isolation: knowing which tables a test wrote, and putting them back.

use std::future::Future;

use super::Driver;

/// Tracking the tables that committed tests write, and restoring them to the baseline.
pub trait WriteTracking: Driver {
    /// Prepares a database for committed isolation, inside the transaction that builds it: keeps
    /// a copy of `tables` and of their sequences as they are now (the baseline), and records from
    /// now on which tables each statement writes.
    fn track_writes(
        conn: &mut Self::Connection,
        tables: &[String],
    ) -> impl Future<Output = sqlx::Result<()>> + Send;

    /// The tables written since the last [`restore`](WriteTracking::restore).
    fn written_tables(
        conn: &mut Self::Connection,
    ) -> impl Future<Output = sqlx::Result<Vec<String>>> + Send;

    /// Puts `tables` (possibly none) back as they were in the baseline: deletes their rows in
    /// this order (children first), inserts the baseline rows in the reverse order, restores the
    /// sequences that moved if asked, and forgets that they were written.
    fn restore(
        conn: &mut Self::Connection,
        tables: &[String],
        sequences: bool,
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
}
