//! What a backend crate implements, and the types it works with: the contract between the core
//! and each engine. Writing tests needs none of it.

use std::fmt;
use std::future::Future;

use sqlx::{Connection, Database};

use crate::Result;

mod dialect;
mod driver;
mod fencing;
mod fixture_loading;
mod isolation_hooks;
mod server;
mod templates;
mod write_tracking;

pub use crate::attribute::Engine;
pub use crate::fence::{Attribution, Fence, Fences};
pub use crate::fixtures::{
    Catalog, ErrorSite, ForeignKey, LiftedKeys, TableInfo, Value, hex_bytes, hex_text,
};
pub use crate::quote::{quote_identifier, quote_literal};
pub use dialect::Dialect;
pub use driver::Driver;
pub use fencing::Fencing;
pub use fixture_loading::FixtureLoading;
pub use isolation_hooks::IsolationHooks;
pub use server::Server;
pub use templates::Templates;
pub use write_tracking::WriteTracking;

/// The connect options of a backend's sqlx driver.
pub type ConnectOptions<DB> = <<DB as Database>::Connection as Connection>::Options;

/// Everything a backend crate implements: one engine, in the roles the core asks of it. Each role
/// is a trait of its own, implemented in a file of its own in the backend; `Backend` adds
/// nothing, and holds for every type that plays every role.
///
/// Implemented by the backend crates (`testdb-sqlite`, `testdb-postgres`); everything that is the
/// same for every engine (pools, migrations, runtimes, clean-up at exit) lives in the core.
pub trait Backend:
    Driver + Server + Templates + Fencing + IsolationHooks + WriteTracking + FixtureLoading + Dialect
{
}

impl<B> Backend for B where
    B: Driver
        + Server
        + Templates
        + Fencing
        + IsolationHooks
        + WriteTracking
        + FixtureLoading
        + Dialect
{
}

/// The savepoint every test of a suite starts from and is rolled back to.
pub const TEST_SAVEPOINT: &str = "testdb_test";

/// The prefix of the name of every database (or database directory) testdb creates; a backend
/// drops or sweeps nothing else.
pub const DATABASE_PREFIX: &str = "testdb_";

/// The prefix of every template's name: templates are databases too, kept across processes and
/// runs, and never swept by owner.
pub const TEMPLATE_PREFIX: &str = "testdb_tpl_";

/// A database created by a [`Server`], owned by testdb until [`destroy`](OwnedDatabase::destroy).
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

/// What [`IsolationHooks::rewind`] found when it ended a test.
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
