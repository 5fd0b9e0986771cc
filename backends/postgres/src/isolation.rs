//! PostgreSQL's side of a test's isolation: the test savepoint, and the server processes of the
//! connections a test uses, ended or cancelled when it ends.

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgDatabaseError};
use testdb::{Attribution, Fence, Rewind};

/// `SAVEPOINT`, deferred-constraint check and rollback in one round trip; the rollback restores
/// the constraints' deferral mode along with everything else.
const CHECKPOINT: &str = "SAVEPOINT testdb_test; SET CONSTRAINTS ALL IMMEDIATE; \
                          ROLLBACK TO SAVEPOINT testdb_test";
const CHECK_AND_REWIND: &str = "SET CONSTRAINTS ALL IMMEDIATE; ROLLBACK TO SAVEPOINT testdb_test";
const REWIND: &str = "ROLLBACK TO SAVEPOINT testdb_test";

pub(crate) async fn checkpoint(conn: &mut PgConnection) -> sqlx::Result<Result<bool, String>> {
    match sqlx::raw_sql(CHECKPOINT).execute(&mut *conn).await {
        Ok(_) => Ok(Ok(true)),
        Err(err) if is_constraint_violation(&err) => Ok(Err(describe(&err))),
        Err(err) => Err(err),
    }
}

pub(crate) async fn rewind(conn: &mut PgConnection, check: bool) -> sqlx::Result<Rewind> {
    let sql = if check { CHECK_AND_REWIND } else { REWIND };
    let err = match sqlx::raw_sql(sql).execute(&mut *conn).await {
        Ok(_) => return Ok(Rewind::Clean),
        Err(err) => err,
    };
    if is_constraint_violation(&err) {
        // The check failed, so the rollback in the same query did not run.
        return Ok(match rewind_only(conn).await? {
            Rewind::Clean => Rewind::Violated(describe(&err)),
            other => other,
        });
    }
    match code(&err).as_deref() {
        // The test left its transaction aborted: no check (the test saw its own error), just
        // the rollback, which recovers from that.
        Some("25P02") => rewind_only(conn).await,
        Some(_) if is_escape(&err) => Ok(Rewind::Escaped(describe(&err))),
        _ => Err(err),
    }
}

async fn rewind_only(conn: &mut PgConnection) -> sqlx::Result<Rewind> {
    match sqlx::raw_sql(REWIND).execute(&mut *conn).await {
        Ok(_) => Ok(Rewind::Clean),
        Err(err) if is_escape(&err) => Ok(Rewind::Escaped(describe(&err))),
        Err(err) => Err(err),
    }
}

fn code(err: &sqlx::Error) -> Option<String> {
    err.as_database_error()
        .and_then(|db| db.code().map(|code| code.into_owned()))
}

/// Class 23: integrity constraint violation.
fn is_constraint_violation(err: &sqlx::Error) -> bool {
    code(err).is_some_and(|code| code.starts_with("23"))
}

/// No transaction (25P01), or no such savepoint (3B001): the suite transaction was ended.
fn is_escape(err: &sqlx::Error) -> bool {
    matches!(code(err).as_deref(), Some("25P01" | "3B001"))
}

/// The server's message, its detail, and the constraint's name.
fn describe(err: &sqlx::Error) -> String {
    let Some(db) = err.as_database_error() else {
        return err.to_string();
    };
    let mut text = db.message().to_string();
    if let Some(pg) = db.try_downcast_ref::<PgDatabaseError>()
        && let Some(detail) = pg.detail()
    {
        text.push_str(": ");
        text.push_str(detail);
    }
    text
}

/// The server process of a connection: what ends or cancels it from elsewhere.
pub(crate) async fn backend_pid(conn: &mut PgConnection) -> sqlx::Result<i32> {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *conn)
        .await
}

/// A connection the pool hands out joins its tests' fences: its server process is recorded, and
/// ended with them.
pub(crate) async fn join(conn: &mut PgConnection, attribution: &Attribution) -> sqlx::Result<bool> {
    if attribution.is_empty() {
        return Ok(false);
    }
    attribution.record(i64::from(backend_pid(conn).await?));
    Ok(true)
}

/// Ends the sessions `pids` of this database that are running a statement or inside a
/// transaction (`all`: every one of them), other than the caller's; waits for them to be gone
/// where the server can (PostgreSQL 14 and later), so that none of them commits after this.
fn end_sessions(conn: &PgConnection, all: bool) -> &'static str {
    match (conn.server_version_num().unwrap_or(0) >= 140_000, all) {
        (true, true) => {
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity \
             WHERE pid = ANY ($1) AND pid <> pg_backend_pid() AND datname = current_database()"
        }
        (true, false) => {
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity \
             WHERE pid = ANY ($1) AND pid <> pg_backend_pid() AND datname = current_database() \
               AND state IS DISTINCT FROM 'idle'"
        }
        (false, true) => {
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE pid = ANY ($1) AND pid <> pg_backend_pid() AND datname = current_database()"
        }
        (false, false) => {
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE pid = ANY ($1) AND pid <> pg_backend_pid() AND datname = current_database() \
               AND state IS DISTINCT FROM 'idle'"
        }
    }
}

fn pids(sessions: Vec<i64>) -> Vec<i32> {
    sessions
        .into_iter()
        .filter_map(|pid| i32::try_from(pid).ok())
        .collect()
}

/// After a test that returned: the connections it took that still run something are ended, from
/// its own connection, or from a new one if the test left its transaction aborted.
pub(crate) async fn end_taken(
    conn: &mut PgConnection,
    options: &PgConnectOptions,
    fence: &Fence,
) -> Result<(), testdb::Error> {
    let taken = pids(fence.taken());
    match sqlx::query(end_sessions(conn, false))
        .bind(&taken)
        .execute(&mut *conn)
        .await
    {
        Ok(_) => Ok(()),
        Err(err) if code(&err).as_deref() == Some("25P02") => {
            let mut other = connect(options).await?;
            let ended = sqlx::query(end_sessions(&other, false))
                .bind(&taken)
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
/// rollback that follows ends its transaction).
pub(crate) async fn interrupt(
    options: &PgConnectOptions,
    fence: &Fence,
) -> Result<(), testdb::Error> {
    let mut other = connect(options).await?;
    let taken = pids(fence.taken());
    let own = fence.own().and_then(|pid| i32::try_from(pid).ok());
    let ended = async {
        if !taken.is_empty() {
            sqlx::query(end_sessions(&other, true))
                .bind(&taken)
                .execute(&mut other)
                .await?;
        }
        if let Some(own) = own {
            sqlx::query(
                "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
                 WHERE pid = $1 AND datname = current_database() AND state = 'active'",
            )
            .bind(own)
            .execute(&mut other)
            .await?;
        }
        Ok::<_, sqlx::Error>(())
    }
    .await;
    let _ = other.close().await;
    ended.map_err(|source| failed(options, source))
}

/// After `interrupt`, on the test's own connection: reads what the server said to the statement
/// the test left behind (its error, once cancelled), so that testdb's next statement gets its own
/// answer.
pub(crate) async fn settle(conn: &mut PgConnection) -> sqlx::Result<()> {
    match conn.ping().await {
        Ok(()) => Ok(()),
        // That statement's error: the next round trip is ours.
        Err(sqlx::Error::Database(_)) => conn.ping().await,
        Err(err) => Err(err),
    }
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
