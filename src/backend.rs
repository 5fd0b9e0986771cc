//! What a backend crate implements, and the types it works with: the contract between the core
//! and each engine. Writing tests needs none of it.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use sqlx::migrate::Migrate;
use sqlx::{Connection, Database};

use crate::Result;

pub use crate::attribute::Engine;
pub use crate::dialect::Dialect;
pub use crate::fence::{Attribution, Fence, Fences};
pub use crate::fixtures::{Catalog, ErrorSite, ForeignKey, LiftedKeys, TableInfo, Value};
pub use crate::quote::{quote_identifier, quote_literal};

/// The connect options of a backend's sqlx driver.
pub type ConnectOptions<DB> = <<DB as Database>::Connection as Connection>::Options;

/// What differs between database engines: creating, dropping and sweeping test databases.
///
/// Implemented by the backend crates (`testdb-sqlite`, `testdb-postgres`); everything that is the
/// same for every engine (pools, migrations, runtimes, clean-up at exit) lives in the core.
pub trait Backend: Dialect + Clone + fmt::Debug + Send + Sync + 'static {
    /// The sqlx driver.
    type Database: Database<Connection = Self::Connection>;
    /// The driver's connection (stated separately so that its bounds hold for every backend).
    type Connection: Connection<Database = Self::Database> + Migrate;
    /// A database this backend created and owns.
    type Owned: OwnedDatabase<Database = Self::Database>;

    /// The engine's name in messages, e.g. `PostgreSQL`.
    const NAME: &'static str;

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

    /// How many rows a fixture load hands [`insert_rows`](Backend::insert_rows) at a time, at
    /// least, while the rest of a table is still being read: small where statements are cheap
    /// (SQLite), a whole table where each bulk statement costs.
    const BULK_ROWS: usize = usize::MAX;

    /// Whether a connection dies with the runtime that opened it (true for socket-based drivers;
    /// SQLite's run on threads of their own). testdb then opens the whole pool up front, on its
    /// own runtime.
    const CONNECTIONS_NEED_A_RUNTIME: bool = true;

    /// What testdb keeps of a connection it holds for a suite's tests (a savepoint suite's, a
    /// committed suite's), to stop from another connection or thread what a test left running on
    /// it.
    type Watch: Send + Sync + 'static;

    /// Puts a connection the pool is handing out (or has just opened) inside the fences of the
    /// tests it belongs to, so that once they end nothing started on it commits: on a server, by
    /// recording its session ([`Attribution::record`]) to end with them; in process, by hooks
    /// that consult the fences. With no fences, takes off any it was in. Returns whether it
    /// reached the connection (proving it alive, so that no ping is needed). The default does
    /// nothing.
    fn join(
        conn: &mut Self::Connection,
        attribution: &Attribution,
    ) -> impl Future<Output = sqlx::Result<bool>> + Send {
        let _ = (conn, attribution);
        async { Ok(false) }
    }

    /// Prepares a connection testdb holds for a suite's tests, once.
    fn watch(conn: &mut Self::Connection)
    -> impl Future<Output = sqlx::Result<Self::Watch>> + Send;

    /// Puts a watched connection inside the fence of the test that is starting on it.
    fn enter(watch: &Self::Watch, fence: &Arc<Fence>) {
        let _ = (watch, fence);
    }

    /// After a test that returned, before its transaction is undone: ends the sessions it took
    /// ([`Fence::taken`]) that are still running a statement or inside a transaction, from its
    /// own connection (or, if that cannot, one of its own to the test's database, `options`).
    /// The default does nothing (where a closed fence stops them by itself).
    fn end_taken(
        conn: &mut Self::Connection,
        options: &ConnectOptions<Self::Database>,
        fence: &Fence,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (conn, options, fence);
        async { Ok(()) }
    }

    /// After a test that did not return (its fence closed), before its transaction is undone:
    /// stops, from a connection of its own to the test's database (`options`), what still runs
    /// on the test's own connection and on every session it took, so that none of it commits.
    /// The default does nothing (where a closed fence stops them by itself).
    ///
    /// With `end_own`, the test's own connection is ended too (its statement would not stop):
    /// testdb then gives the connection up.
    fn interrupt(
        options: &ConnectOptions<Self::Database>,
        fence: &Fence,
        end_own: bool,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (options, fence, end_own);
        async { Ok(()) }
    }

    /// After [`interrupt`](Backend::interrupt), on the test's own connection: waits until the
    /// statement it stopped has ended, and takes the test's fence off the connection, so that
    /// testdb's own statements run there again. `watch` is the connection's, if testdb watches
    /// it (else it came from the pool for this test).
    fn settle(
        conn: &mut Self::Connection,
        watch: Option<&Self::Watch>,
    ) -> impl Future<Output = sqlx::Result<()>> + Send {
        let _ = (conn, watch);
        async { Ok(()) }
    }

    /// Creates a new, empty database that testdb owns.
    fn create(&self) -> impl Future<Output = Result<Self::Owned>> + Send;

    /// Names the place that [`sweep`](Backend::sweep) covers (a server, a directory), so that
    /// testdb sweeps each place once per process.
    fn sweep_scope(&self) -> String;

    /// Removes the databases that testdb created in processes that have since died, and nothing
    /// else; returns how many it removed.
    fn sweep(&self) -> impl Future<Output = Result<usize>> + Send;

    /// What a test's session is put back to after each test, read from a connection once the
    /// baseline is in place (inside the suite transaction of a savepoint suite, on a copy of the
    /// template otherwise): the sequences' values, the connection's settings.
    type Baseline: Send + Sync + 'static;

    /// Reads the [`Baseline`](Backend::Baseline) from `conn`.
    fn baseline(
        conn: &mut Self::Connection,
    ) -> impl Future<Output = sqlx::Result<Self::Baseline>> + Send;

    /// On a connection inside the suite transaction, once the suite's setup is done: checks the
    /// setup's deferred constraints as a commit would, and establishes the test savepoint
    /// [`TEST_SAVEPOINT`] that every test will be rolled back to. Returns the setup's violation,
    /// if any.
    fn checkpoint(
        conn: &mut Self::Connection,
    ) -> impl Future<Output = sqlx::Result<std::result::Result<(), String>>> + Send;

    /// Ends a test: unless the test left its transaction aborted, checks deferred constraints (if
    /// `check`), then rolls back to [`TEST_SAVEPOINT`], keeping it for the next test, and puts
    /// the session back as `baseline` has it (settings, locks, prepared statements; sequences
    /// too if `sequences`), in as few round trips as it can.
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
    /// `info`, from [`catalog`](Backend::catalog)) by the engine's fastest path, letting the
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
    /// deferral back as it was, to run after [`check_foreign_keys`](Backend::check_foreign_keys)
    /// or after a load that failed inside the caller's transaction; empty if nothing needs it.
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
    /// checked one at a time; [`restore_foreign_keys`](Backend::restore_foreign_keys) puts them
    /// back at the end, checking every row at once. Tables whose keys cannot be lifted (by
    /// default, all) are left out of the result and keep their checks.
    fn lift_foreign_keys(
        _conn: &mut Self::Connection,
        _tables: &[String],
    ) -> impl Future<Output = sqlx::Result<LiftedKeys>> + Send {
        async { Ok(LiftedKeys::default()) }
    }

    /// Runs `restore` (from [`lift_foreign_keys`](Backend::lift_foreign_keys)); returns the first
    /// row that violates a key put back, if any.
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

    /// A lock on a template's name, shared by every process on the machine (or server); released
    /// when dropped.
    type TemplateLock: Send + 'static;

    /// Waits for, then takes, the lock on template `name`: held while it is built or removed.
    fn lock_template(&self, name: &str) -> impl Future<Output = Result<Self::TemplateLock>> + Send;

    /// Waits for, then takes, a shared lock on template `name`: held while it is in use, so that
    /// no process removes it meanwhile (removal takes the lock exclusively, or gives up).
    fn share_template(&self, name: &str)
    -> impl Future<Output = Result<Self::TemplateLock>> + Send;

    /// The setup value stored with template `name`, if that template exists and is complete.
    fn find_template(&self, name: &str) -> impl Future<Output = Result<Option<String>>> + Send;

    /// Turns `database` (built by testdb, every connection to it closed) into template `name`,
    /// storing `data` with it; replaces any incomplete template of that name.
    fn promote(
        &self,
        database: Self::Owned,
        name: &str,
        data: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Creates a new database that testdb owns, as a copy of template `name`.
    fn clone_template(&self, name: &str) -> impl Future<Output = Result<Self::Owned>> + Send;

    /// A database as template `name` has it, for this process to use until it gives it back
    /// ([`OwnedDatabase::release`], when it is as clean as it came) or removes it
    /// ([`OwnedDatabase::destroy`]). A server keeps a pool of such copies beside each template,
    /// each leased by one process at a time, so that a process neither copies nor drops one.
    /// The default makes a new copy ([`clone_template`](Backend::clone_template)).
    fn lease_copy(&self, name: &str) -> impl Future<Output = Result<Self::Owned>> + Send {
        self.clone_template(name)
    }

    /// Makes sure that `spare` free copies of template `name` are ready for the next lease (this
    /// process's or another's). Run in the background after a lease that uses its copy up (one
    /// per test); the process waits for it at exit, since a copy whose making an exit cuts short
    /// is of no use to anyone. The default keeps none.
    fn keep_spare(&self, name: &str, spare: usize) -> impl Future<Output = Result<()>> + Send {
        let _ = (name, spare);
        async { Ok(()) }
    }

    /// Whether removing a database takes long enough (a server's `DROP DATABASE` forces a
    /// checkpoint) that a process should not wait for it at exit. What a removal cut short
    /// leaves is removed by the next lease of its template, or by a sweep.
    const SLOW_REMOVAL: bool = false;

    /// Removes the templates whose names start with `prefix`, except `keep` and any being built
    /// or removed right now; returns how many it removed.
    fn remove_templates(
        &self,
        prefix: &str,
        keep: &str,
    ) -> impl Future<Output = Result<usize>> + Send;

    /// Removes the templates (with their copies) that no process is using and that none has used
    /// for `unused_for`, then, of those left, the least recently used beyond `keep_at_most`;
    /// returns how many databases it removed. Copies left behind by a template removed earlier go
    /// too, unless leased.
    fn remove_unused_templates(
        &self,
        unused_for: std::time::Duration,
        keep_at_most: usize,
    ) -> impl Future<Output = Result<usize>> + Send;

    /// Prepares a database for committed isolation, inside the transaction that builds it: keeps
    /// a copy of `tables` and of their sequences as they are now (the baseline), and records from
    /// now on which tables each statement writes.
    fn track_writes(
        conn: &mut Self::Connection,
        tables: &[String],
    ) -> impl Future<Output = sqlx::Result<()>> + Send;

    /// The tables written since the last [`restore`](Backend::restore).
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

    /// Takes this connection's place in the server's connection budget (shared by every testdb
    /// process on the server), waiting for one: called once for every connection testdb opens to
    /// a test database (`options`), before it is used. The default does nothing.
    fn admit(
        conn: &mut Self::Connection,
        options: &ConnectOptions<Self::Database>,
    ) -> impl Future<Output = sqlx::Result<()>> + Send {
        let _ = (conn, options);
        async { Ok(()) }
    }

    /// What to change when the server would not give testdb a connection (`options`) in time:
    /// too many clients, or the connection budget used up. `err` is the error opening or
    /// acquiring one (a pool only says that it timed out). `None` when the backend knows no
    /// more than `err` says, as the default does.
    fn refused(options: &ConnectOptions<Self::Database>, err: &sqlx::Error) -> Option<String> {
        let _ = (options, err);
        None
    }
}

/// The savepoint every test of a suite starts from and is rolled back to.
pub const TEST_SAVEPOINT: &str = "testdb_test";

/// The prefix of the name of every database (or database directory) testdb creates; a backend
/// drops or sweeps nothing else.
pub const DATABASE_PREFIX: &str = "testdb_";

/// The prefix of every template's name: templates are databases too, kept across processes and
/// runs, and never swept by owner.
pub const TEMPLATE_PREFIX: &str = "testdb_tpl_";

/// A database created by a [`Backend`], owned by testdb until [`destroy`](OwnedDatabase::destroy).
pub trait OwnedDatabase: fmt::Debug + Send + Sync + 'static {
    /// The sqlx driver.
    type Database: Database;

    /// How messages name the database: its name, or its file.
    fn name(&self) -> &str;

    /// A connection string another process can use.
    fn url(&self) -> &str;

    /// [`url`](OwnedDatabase::url) with any password replaced by `***`, fit to print. The URL
    /// itself unless the backend's URLs can hold one.
    fn redacted_url(&self) -> String {
        self.url().to_owned()
    }

    /// Options to connect to the database.
    fn connect_options(&self) -> ConnectOptions<Self::Database>;

    /// Removes the database, even while other connections to it are open.
    fn destroy(self) -> impl Future<Output = Result<()>> + Send;

    /// Gives back a database that is as its template has it (a leased copy whose tests were all
    /// undone), for another lease; ends any connection still open to it first. Removes it
    /// unless it is a leased copy (the default).
    fn release(self) -> impl Future<Output = Result<()>> + Send
    where
        Self: Sized,
    {
        self.destroy()
    }
}

/// What [`Backend::rewind`] found when it ended a test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewind {
    /// The test's changes were rolled back; the baseline is intact.
    Clean,
    /// The test's changes were rolled back, but they broke a deferred constraint (named in the
    /// message) that a commit would have rejected.
    Violated(String),
    /// The test ended the suite transaction (a `COMMIT`, a `ROLLBACK`, or a statement that commits
    /// implicitly); the baseline can no longer be trusted. The message says what was found.
    Escaped(String),
}
