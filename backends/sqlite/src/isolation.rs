//! The per-test savepoint: SQLite's side of savepoint isolation.

use sqlx::sqlite::SqliteConnection;
use sqlx::{Executor, Row};
use testdb::Rewind;

pub(crate) async fn checkpoint(conn: &mut SqliteConnection) -> sqlx::Result<Result<bool, String>> {
    conn.execute("SAVEPOINT testdb_test").await?;
    if let Some(violation) = foreign_key_violation(conn).await? {
        return Ok(Err(violation));
    }
    // Checking costs a scan of every table with foreign keys: do it after each test only where
    // the schema or the connection defers foreign keys (immediate ones fail at the statement).
    let deferred: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' \
         AND upper(sql) LIKE '%DEFERRABLE INITIALLY DEFERRED%') \
         OR (SELECT defer_foreign_keys FROM pragma_defer_foreign_keys)",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(Ok(deferred))
}

pub(crate) async fn rewind(conn: &mut SqliteConnection, check: bool) -> sqlx::Result<Rewind> {
    let violation = if check {
        foreign_key_violation(conn).await?
    } else {
        None
    };
    match conn.execute("ROLLBACK TO SAVEPOINT testdb_test").await {
        Ok(_) => Ok(violation.map_or(Rewind::Clean, Rewind::Violated)),
        Err(err) if is_escape(&err) => Ok(Rewind::Escaped(err.to_string())),
        Err(err) => Err(err),
    }
}

/// The first row that breaks a foreign key, as a commit would report it.
async fn foreign_key_violation(conn: &mut SqliteConnection) -> sqlx::Result<Option<String>> {
    let rows = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(&mut *conn)
        .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let table: String = first.try_get(0)?;
    let rowid: Option<i64> = first.try_get(1)?;
    let parent: String = first.try_get(2)?;
    let row = rowid.map_or_else(|| "a row".to_string(), |id| format!("row {id}"));
    let more = match rows.len() {
        1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    };
    Ok(Some(format!(
        "FOREIGN KEY constraint failed: {row} of table \"{table}\" references a missing row of \
         \"{parent}\"{more}"
    )))
}

/// The savepoint is gone: the suite transaction was committed or rolled back.
fn is_escape(err: &sqlx::Error) -> bool {
    err.as_database_error().is_some_and(|db| {
        let message = db.message();
        message.contains("no such savepoint") || message.contains("no transaction is active")
    })
}
