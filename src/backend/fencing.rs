//! Stopping what a test left running, so that nothing it started commits after it ended.

use std::future::Future;
use std::sync::Arc;

use super::{Attribution, ConnectOptions, Driver, Fence};
use crate::Result;

/// Keeping what a test started inside its fence: the connections it used, the sessions it took,
/// the statements it left running.
pub trait Fencing: Driver {
    /// What testdb keeps of a connection it holds for a suite's tests (a savepoint suite's, a
    /// committed suite's), to stop from another connection or thread what a test left running on
    /// it.
    type Watch: Send + Sync + 'static;

    /// Prepares a connection testdb holds for a suite's tests, once.
    fn watch(conn: &mut Self::Connection)
    -> impl Future<Output = sqlx::Result<Self::Watch>> + Send;

    /// Puts a watched connection inside the fence of the test that is starting on it.
    fn enter(watch: &Self::Watch, fence: &Arc<Fence>) {
        let _ = (watch, fence);
    }

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

    /// After [`interrupt`](Fencing::interrupt), on the test's own connection: waits until the
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
}
