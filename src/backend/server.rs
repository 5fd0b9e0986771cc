//! Where a backend keeps test databases: creating them, and sweeping what dead processes left.

use std::future::Future;

use super::{Driver, OwnedDatabase};
use crate::Result;

/// Creating the databases testdb owns, and sweeping those whose process died.
pub trait Server: Driver {
    /// A database this backend created and owns.
    type Owned: OwnedDatabase<Database = Self::Database>;

    /// Creates a new, empty database that testdb owns.
    fn create(&self) -> impl Future<Output = Result<Self::Owned>> + Send;

    /// Names the place that [`sweep`](Server::sweep) covers (a server, a directory), so that
    /// testdb sweeps each place once per process.
    fn sweep_scope(&self) -> String;

    /// Removes the databases that testdb created in processes that have since died, and nothing
    /// else; returns how many it removed.
    fn sweep(&self) -> impl Future<Output = Result<usize>> + Send;

    /// Whether removing a database takes long enough (a server's `DROP DATABASE` forces a
    /// checkpoint) that a process should not wait for it at exit. What a removal cut short
    /// leaves is removed by the next lease of its template, or by a sweep.
    const SLOW_REMOVAL: bool = false;
}
