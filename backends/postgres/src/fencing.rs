//! PostgreSQL's fences: the server processes of the connections a test uses, ended or cancelled
//! when it ends, so that nothing it started commits afterwards.

use std::sync::Arc;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use testdb::backend::{Attribution, Fence, Fencing};

use crate::Postgres;
use crate::isolation::code;

/// Ends the sessions `$1` of this database that still carry the test's tag `$2` and are running a
/// statement or inside a transaction (`all`: every one of them), other than the caller's; waits
/// for them to be gone where the server can (PostgreSQL 14 and later), so that none of them
/// commits after this.
fn end_sessions(conn: &PgConnection, all: bool) -> &'static str {
    match (conn.server_version_num().unwrap_or(0) >= 140_000, all) {
        (true, true) => {
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity \
             WHERE pid = ANY ($1) AND application_name = $2 AND pid <> pg_backend_pid() \
               AND datname = current_database()"
        }
        (true, false) => {
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity \
             WHERE pid = ANY ($1) AND application_name = $2 AND pid <> pg_backend_pid() \
               AND datname = current_database() AND state IS DISTINCT FROM 'idle'"
        }
        (false, true) => {
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE pid = ANY ($1) AND application_name = $2 AND pid <> pg_backend_pid() \
               AND datname = current_database()"
        }
        (false, false) => {
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE pid = ANY ($1) AND application_name = $2 AND pid <> pg_backend_pid() \
               AND datname = current_database() AND state IS DISTINCT FROM 'idle'"
        }
    }
}

fn pids(sessions: Vec<i64>) -> Vec<i32> {
    sessions
        .into_iter()
        .filter_map(|pid| i32::try_from(pid).ok())
        .collect()
}

async fn connect(options: &PgConnectOptions) -> Result<PgConnection, testdb::Error> {
    PgConnection::connect_with(options)
        .await
        .map_err(|source| failed(options, source))
}

fn failed(options: &PgConnectOptions, source: sqlx::Error) -> testdb::Error {
    testdb::Error::Database {
        backend: crate::server::NAME,
        database: options.get_database().unwrap_or_default().to_owned(),
        step: "stop what the test left running".into(),
        source,
    }
}

impl Fencing for Postgres {
    /// The connection's server process.
    type Watch = i32;

    fn enter(pid: &i32, fence: &Arc<Fence>) {
        fence.set_own(i64::from(*pid));
    }

    /// The server process of a connection: what ends or cancels it from elsewhere.
    async fn watch(conn: &mut PgConnection) -> sqlx::Result<i32> {
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *conn)
            .await
    }

    /// A connection the pool hands out joins its test's fence: its server process is recorded, and
    /// marked with the fence's tag (`application_name`), which ends it with the test while it is
    /// still the test's. A connection that belongs to no test loses any tag it had. One round trip,
    /// which also proves the connection alive.
    async fn join(conn: &mut PgConnection, attribution: &Attribution) -> sqlx::Result<bool> {
        let tag = attribution.fence().map_or("", |fence| fence.tag());
        let pid: i32 = sqlx::query_scalar(
            "SELECT pg_backend_pid() FROM set_config('application_name', $1, false)",
        )
        .bind(tag)
        .fetch_one(&mut *conn)
        .await?;
        attribution.record(i64::from(pid));
        Ok(true)
    }

    /// After a test that returned: the connections it took that still run something are ended, from
    /// its own connection, or from a new one if the test left its transaction aborted.
    async fn end_taken(
        conn: &mut PgConnection,
        options: &PgConnectOptions,
        fence: &Fence,
    ) -> Result<(), testdb::Error> {
        let taken = pids(fence.taken());
        match sqlx::query(end_sessions(conn, false))
            .bind(&taken)
            .bind(fence.tag())
            .execute(&mut *conn)
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if code(&err).as_deref() == Some("25P02") => {
                let mut other = connect(options).await?;
                let ended = sqlx::query(end_sessions(&other, false))
                    .bind(&taken)
                    .bind(fence.tag())
                    .execute(&mut other)
                    .await;
                let _ = other.close().await;
                ended.map(drop).map_err(|source| failed(options, source))
            }
            Err(source) => Err(failed(options, source)),
        }
    }

    /// After a test that did not return, from a new connection: every session it took is ended, and
    /// the statement its own connection still runs is cancelled (the connection itself is kept: the
    /// rollback that follows ends its transaction), or, with `end_own`, that connection ended too.
    async fn interrupt(
        options: &PgConnectOptions,
        fence: &Fence,
        end_own: bool,
    ) -> Result<(), testdb::Error> {
        let mut other = connect(options).await?;
        let taken = pids(fence.taken());
        let own = fence.own().and_then(|pid| i32::try_from(pid).ok());
        let ended = async {
            if !taken.is_empty() {
                sqlx::query(end_sessions(&other, true))
                    .bind(&taken)
                    .bind(fence.tag())
                    .execute(&mut other)
                    .await?;
            }
            if let Some(own) = own {
                // An idle session ignores a cancel: only a statement running, or about to, gets it.
                let stop = if end_own {
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE pid = $1 AND datname = current_database()"
                } else {
                    "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
                     WHERE pid = $1 AND datname = current_database()"
                };
                sqlx::query(stop).bind(own).execute(&mut other).await?;
            }
            Ok::<_, sqlx::Error>(())
        }
        .await;
        let _ = other.close().await;
        ended.map_err(|source| failed(options, source))
    }

    /// After `interrupt`, on the test's own connection: reads what the server said to the statement
    /// the test left behind (its error, once cancelled), so that testdb's next statement gets its
    /// own answer.
    async fn settle(conn: &mut PgConnection, _: Option<&i32>) -> sqlx::Result<()> {
        match conn.ping().await {
            Ok(()) => Ok(()),
            // That statement's error: the next round trip is ours.
            Err(sqlx::Error::Database(_)) => conn.ping().await,
            Err(err) => Err(err),
        }
    }
}
