//! The per-test savepoint: PostgreSQL's side of savepoint isolation.

use sqlx::postgres::{PgConnection, PgDatabaseError};
use testdb::Rewind;

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
