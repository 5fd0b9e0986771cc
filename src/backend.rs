use std::fmt;
use std::future::Future;

use sqlx::migrate::Migrate;
use sqlx::{Connection, Database};

use crate::Result;

/// The connect options of a backend's sqlx driver.
pub type ConnectOptions<DB> = <<DB as Database>::Connection as Connection>::Options;

/// What differs between database engines: creating, dropping and sweeping test databases.
///
/// Implemented by the backend crates (`testdb-sqlite`, `testdb-postgres`); everything that is the
/// same for every engine (pools, migrations, runtimes, clean-up at exit) lives in the core.
pub trait Backend: Clone + fmt::Debug + Send + Sync + 'static {
    /// The sqlx driver.
    type Database: Database<Connection = Self::Connection>;
    /// The driver's connection (stated separately so that its bounds hold for every backend).
    type Connection: Connection<Database = Self::Database> + Migrate;
    /// A database this backend created and owns.
    type Owned: OwnedDatabase<Database = Self::Database>;

    /// The engine's name in messages, e.g. `PostgreSQL`.
    const NAME: &'static str;

    /// Creates a new, empty database that testdb owns.
    fn create(&self) -> impl Future<Output = Result<Self::Owned>> + Send;

    /// Names the place that [`sweep`](Backend::sweep) covers (a server, a directory), so that
    /// testdb sweeps each place once per process.
    fn sweep_scope(&self) -> String;

    /// Removes the databases that testdb created in processes that have since died, and nothing
    /// else; returns how many it removed.
    fn sweep(&self) -> impl Future<Output = Result<usize>> + Send;
}

/// A database created by a [`Backend`], owned by testdb until [`destroy`](OwnedDatabase::destroy).
pub trait OwnedDatabase: fmt::Debug + Send + Sync + 'static {
    /// The sqlx driver.
    type Database: Database;

    /// How messages name the database: its name, or its file.
    fn name(&self) -> &str;

    /// A connection string another process can use.
    fn url(&self) -> &str;

    /// Options to connect to the database.
    fn connect_options(&self) -> ConnectOptions<Self::Database>;

    /// Removes the database, even while other connections to it are open.
    fn destroy(self) -> impl Future<Output = Result<()>> + Send;
}
