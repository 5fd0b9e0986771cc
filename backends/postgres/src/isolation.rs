//! PostgreSQL's side of a test's boundaries: the test savepoint, and the session put back after
//! each test.

use sqlx::Row;
use sqlx::postgres::{PgConnection, PgDatabaseError, PgRow};
use testdb::Isolation;
use testdb::backend::{IsolationHooks, Rewind, TEST_SAVEPOINT};

use crate::Postgres;

use crate::budget;
use crate::sql::{ident, literal};

const CHECK: &str = "SET CONSTRAINTS ALL IMMEDIATE; ";

/// Back to the test savepoint, keeping it.
fn rewind_sql() -> String {
    format!("ROLLBACK TO SAVEPOINT {TEST_SAVEPOINT}; ")
}
/// What a test may leave in its session that no rollback undoes: session advisory locks
/// (released, but for the connection's slot in the budget, taken back in the same statement);
/// and prepared statements of its own (`PREPARE`), counted here and deallocated in a second round
/// trip only if there are any (sqlx's own, prepared by the protocol, stay). One statement, with
/// the sequences' reset as another column where there is one.
const PREPARED: &str = ", (SELECT count(*) FROM pg_prepared_statements WHERE from_sql) \
                        AS testdb_prepared";
/// Committed isolation's session, out of any transaction: also settings, role, temporary
/// tables, cursors, listeners and cached sequence values.
const COMMITTED_SESSION: &str = "RESET ALL; RESET ROLE; DISCARD TEMP; DISCARD SEQUENCES; \
                                 CLOSE ALL; UNLISTEN *; ";

/// A test's session as the setup left it: the sequences' values.
#[derive(Debug)]
pub struct Baseline {
    /// A column that sets back every sequence that moved; none if there are no sequences.
    sequences: Option<String>,
}

fn session_reset(baseline: &Baseline, sequences: bool) -> String {
    let sequences = baseline
        .sequences
        .as_deref()
        .filter(|_| sequences)
        .unwrap_or("");
    budget::rewind_statement(&format!("{PREPARED}{sequences}"))
}

async fn rewind_only(conn: &mut PgConnection, reset: &str) -> sqlx::Result<Rewind> {
    let sql = format!("{}{reset}", rewind_sql());
    match sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .fetch_all(&mut *conn)
        .await
    {
        Ok(rows) => {
            restore_session(conn, &rows).await?;
            Ok(Rewind::Clean)
        }
        Err(err) if is_escape(&err) => Ok(Rewind::Escaped(describe(&err))),
        Err(err) => Err(err),
    }
}

/// After a session reset (`rows`): takes the connection's slot in the budget again if the reset
/// could not take it back (waiting for one), and deallocates the test's prepared statements.
async fn restore_session(conn: &mut PgConnection, rows: &[PgRow]) -> sqlx::Result<()> {
    if let Err(previous) = budget::rewound(rows) {
        budget::retake(conn, previous).await?;
    }
    deallocate_prepared(conn, rows).await
}

/// Deallocates the test's own prepared statements, if `rows` (the session reset's) counted any.
async fn deallocate_prepared(conn: &mut PgConnection, rows: &[PgRow]) -> sqlx::Result<()> {
    let prepared = rows
        .iter()
        .find_map(|row| row.try_get::<i64, _>("testdb_prepared").ok())
        .unwrap_or(0);
    if prepared == 0 {
        return Ok(());
    }
    let names: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pg_prepared_statements WHERE from_sql")
            .fetch_all(&mut *conn)
            .await?;
    let script: String = names
        .iter()
        .map(|name| format!("DEALLOCATE {}; ", ident(name)))
        .collect();
    sqlx::raw_sql(sqlx::AssertSqlSafe(script))
        .execute(&mut *conn)
        .await
        .map(drop)
}

pub(crate) fn code(err: &sqlx::Error) -> Option<String> {
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

impl IsolationHooks for Postgres {
    type Baseline = Baseline;

    async fn baseline(conn: &mut PgConnection, _: Isolation) -> sqlx::Result<Baseline> {
        let sequences: Vec<(String, i64, bool)> = sqlx::query_as(
            "SELECT format('%I.%I', schemaname, sequencename), \
                    coalesce(last_value, start_value), last_value IS NOT NULL \
             FROM pg_sequences \
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'testdb_baseline') \
             ORDER BY 1",
        )
        .fetch_all(&mut *conn)
        .await?;
        if sequences.is_empty() {
            return Ok(Baseline { sequences: None });
        }
        let values: Vec<String> = sequences
            .iter()
            .map(|(name, value, called)| {
                format!("({}::regclass, {value}::bigint, {called})", literal(name))
            })
            .collect();
        // Only those that moved: `setval` writes, and most tests move none.
        Ok(Baseline {
            sequences: Some(format!(
                ", (SELECT count(setval(s.seq, s.value, s.called)) \
                    FROM (VALUES {}) AS s (seq, value, called) \
                    WHERE pg_sequence_last_value(s.seq) \
                          IS DISTINCT FROM CASE WHEN s.called THEN s.value END)",
                values.join(", ")
            )),
        })
    }

    async fn checkpoint(conn: &mut PgConnection) -> sqlx::Result<Result<(), String>> {
        // `SAVEPOINT`, deferred-constraint check and rollback in one round trip; the rollback
        // restores the constraints' deferral mode along with everything else.
        let sql = format!("SAVEPOINT {TEST_SAVEPOINT}; {CHECK}{}", rewind_sql());
        match sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
        {
            Ok(_) => Ok(Ok(())),
            Err(err) if is_constraint_violation(&err) => Ok(Err(describe(&err))),
            Err(err) => Err(err),
        }
    }

    async fn rewind(
        conn: &mut PgConnection,
        check: bool,
        baseline: &Baseline,
        sequences: bool,
    ) -> sqlx::Result<Rewind> {
        let reset = session_reset(baseline, sequences);
        let sql = format!("{}{}{reset}", if check { CHECK } else { "" }, rewind_sql());
        let err = match sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut *conn)
            .await
        {
            Ok(rows) => {
                restore_session(conn, &rows).await?;
                return Ok(Rewind::Clean);
            }
            Err(err) => err,
        };
        if is_constraint_violation(&err) {
            // The check failed, so the rollback in the same query did not run.
            return Ok(match rewind_only(conn, &reset).await? {
                Rewind::Clean => Rewind::Violated(describe(&err)),
                other => other,
            });
        }
        match code(&err).as_deref() {
            // The test left its transaction aborted: no check (the test saw its own error), just
            // the rollback, which recovers from that.
            Some("25P02") => rewind_only(conn, &reset).await,
            Some(_) if is_escape(&err) => Ok(Rewind::Escaped(describe(&err))),
            _ => Err(err),
        }
    }

    async fn reset_session(conn: &mut PgConnection, _: &Baseline) -> sqlx::Result<()> {
        // The slot first, while the session's note of it is there: `RESET ALL` clears the note,
        // written again after it.
        let sql = format!(
            "{}; {COMMITTED_SESSION}{}",
            budget::rewind_statement(PREPARED),
            budget::renote()
        );
        let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut *conn)
            .await?;
        restore_session(conn, &rows).await
    }
}
