//! What loading and dumping fixtures asks of the engine.

use std::future::Future;

use super::{Catalog, Driver, ErrorSite, ForeignKey, LiftedKeys, TableInfo, Value};

/// Reading the schema, inserting rows by the engine's fastest path, and deferring the foreign keys
/// that a load breaks on its way.
pub trait FixtureLoading: Driver {
    /// Whether a fixture load inserts rows while the rest of the files are still being read.
    /// Worth it where the driver does the work in the client (SQLite); where a server does it,
    /// reading alongside only takes CPU from the server on a small machine.
    const LOAD_WHILE_READING: bool = false;

    /// Whether the engine stores a value as it is given, converting nothing to its column's
    /// declared type (SQLite). Values of Django-format fixtures are then converted as Django's
    /// own backend for the engine would store them (a datetime as UTC text without `T`, …), so
    /// that the ORM's queries find them.
    const STORES_AS_GIVEN: bool = false;

    /// Whether a fixture load of Django's objects defers every foreign key to its end, so that
    /// they go in as they are read, in the file's order, as Django's `loaddata` puts them in
    /// (SQLite's `PRAGMA defer_foreign_keys`, which costs nothing until a key is broken).
    /// Otherwise tables go in foreign-key order, and only cycles are deferred.
    const DEFERS_EVERY_KEY: bool = false;

    /// How many rows a fixture load hands [`insert_rows`](FixtureLoading::insert_rows) at a time,
    /// at least, while the rest of a table is still being read: small where statements are cheap
    /// (SQLite), a whole table where each bulk statement costs.
    const BULK_ROWS: usize = usize::MAX;

    /// The tables of the connection's database (its current schema): columns, primary keys and
    /// foreign keys, as fixture loading needs them.
    fn catalog(conn: &mut Self::Connection) -> impl Future<Output = sqlx::Result<Catalog>> + Send;

    /// Executes a SQL script (several statements) as it is.
    fn execute_script(
        conn: &mut Self::Connection,
        sql: &str,
    ) -> impl Future<Output = sqlx::Result<()>> + Send;

    /// Inserts `rows` (each with a value for every one of `columns`, of which there is at least
    /// one) into `table` (described by
    /// `info`, from [`catalog`](FixtureLoading::catalog)) by the engine's fastest path, letting the
    /// database convert text to the columns' types.
    fn insert_rows(
        conn: &mut Self::Connection,
        table: &str,
        info: &TableInfo,
        columns: &[String],
        rows: &[Vec<Value>],
    ) -> impl Future<Output = sqlx::Result<()>> + Send;

    /// Makes these foreign keys (with their tables) checked at the end of the load rather than at
    /// each row: they form cycles among the tables being loaded. Returns what puts the session's
    /// deferral back as it was, to run after
    /// [`check_foreign_keys`](FixtureLoading::check_foreign_keys) or after a load that failed
    /// inside the caller's transaction; empty if nothing needs it.
    fn defer_foreign_keys(
        conn: &mut Self::Connection,
        keys: &[(String, ForeignKey)],
    ) -> impl Future<Output = sqlx::Result<String>> + Send;

    /// Checks the deferred foreign keys now, and restores them as they were; returns the first
    /// violation, if any.
    fn check_foreign_keys(
        conn: &mut Self::Connection,
        keys: &[(String, ForeignKey)],
    ) -> impl Future<Output = sqlx::Result<Option<ErrorSite>>> + Send;

    /// For a load in a transaction of its own (begun for it, committed at its end): lifts the
    /// foreign keys of `tables` before any of their rows are inserted, so that the rows are not
    /// checked one at a time; [`restore_foreign_keys`](FixtureLoading::restore_foreign_keys) puts
    /// them back at the end, checking every row at once. Tables whose keys cannot be lifted (by
    /// default, all) are left out of the result and keep their checks.
    fn lift_foreign_keys(
        _conn: &mut Self::Connection,
        _tables: &[String],
    ) -> impl Future<Output = sqlx::Result<LiftedKeys>> + Send {
        async { Ok(LiftedKeys::default()) }
    }

    /// Runs `restore` (from [`lift_foreign_keys`](FixtureLoading::lift_foreign_keys)); returns the
    /// first row that violates a key put back, if any.
    fn restore_foreign_keys(
        _conn: &mut Self::Connection,
        _restore: &str,
    ) -> impl Future<Output = sqlx::Result<Option<ErrorSite>>> + Send {
        async { Ok(None) }
    }

    /// Moves the sequences (identity, serial, AUTOINCREMENT) of `tables` past their largest
    /// value, so that the next insert without an id succeeds.
    fn reset_sequences(
        conn: &mut Self::Connection,
        tables: &[String],
    ) -> impl Future<Output = sqlx::Result<()>> + Send;

    /// Every row of `table`, ordered by its primary key, as values that load back exactly: the
    /// column names, then the rows. No columns means no such table.
    fn dump_rows(
        conn: &mut Self::Connection,
        table: &str,
    ) -> impl Future<Output = sqlx::Result<(Vec<String>, Vec<Vec<Value>>)>> + Send;

    /// What a database error says about where it happened.
    fn error_site(err: &sqlx::Error) -> ErrorSite;
}
