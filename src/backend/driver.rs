//! The driver a backend speaks through, and how testdb gets connections from its server.

use std::fmt;
use std::future::Future;

use sqlx::migrate::Migrate;
use sqlx::{Connection, Database};

use super::ConnectOptions;

/// The sqlx driver of an engine, and the connections testdb opens with it: the role every other
/// role of a backend builds on.
pub trait Driver: Clone + fmt::Debug + Send + Sync + 'static {
    /// The sqlx driver.
    type Database: Database<Connection = Self::Connection>;

    /// The driver's connection (stated separately so that its bounds hold for every backend).
    type Connection: Connection<Database = Self::Database> + Migrate;

    /// The engine's name in messages, e.g. `PostgreSQL`.
    const NAME: &'static str;

    /// Whether a connection dies with the runtime that opened it (true for socket-based drivers;
    /// SQLite's run on threads of their own). testdb then opens the whole pool up front, on its
    /// own runtime.
    const CONNECTIONS_NEED_A_RUNTIME: bool = true;

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
