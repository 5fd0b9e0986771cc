//! SQLite's side of a test's isolation: the test savepoint, and the hooks that keep what a test
//! started on a connection from committing (or running on) once the test has ended.

use std::sync::{Arc, Mutex};

use sqlx::sqlite::SqliteConnection;
use sqlx::{Executor, Row};
use testdb::{Attribution, Fence, Rewind};

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

/// How many virtual-machine instructions SQLite runs between two looks at a test's fence: a
/// statement of a test that ended stops within microseconds, and the look costs nothing
/// measurable.
const FENCE_CHECK_OPS: i32 = 1_000;

/// The fence of the test running on a connection that testdb keeps for its tests; its progress
/// handler interrupts whatever runs there once that fence is closed.
#[derive(Debug, Default)]
pub struct Slot(Mutex<Option<Arc<Fence>>>);

impl Slot {
    fn open(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .is_none_or(|fence| !fence.is_closed())
    }

    pub(crate) fn set(&self, fence: Option<Arc<Fence>>) {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = fence;
    }
}

pub(crate) async fn watch(conn: &mut SqliteConnection) -> sqlx::Result<Arc<Slot>> {
    let slot = Arc::new(Slot::default());
    let watched = slot.clone();
    conn.lock_handle()
        .await?
        .set_progress_handler(FENCE_CHECK_OPS, move || watched.open());
    Ok(slot)
}

/// A connection the pool hands out joins its tests' fences: once one of them is closed, its
/// commits turn into rollbacks and its statements are interrupted.
pub(crate) async fn join(
    conn: &mut SqliteConnection,
    attribution: &Attribution,
) -> sqlx::Result<bool> {
    let mut handle = conn.lock_handle().await?;
    if attribution.is_empty() {
        handle.remove_commit_hook();
        handle.remove_progress_handler();
        return Ok(true);
    }
    let fences = attribution.fences().to_vec();
    let open = move || fences.iter().all(|fence| !fence.is_closed());
    handle.set_commit_hook(open.clone());
    handle.set_progress_handler(FENCE_CHECK_OPS, open);
    Ok(true)
}

/// Waits until the worker is done with the statement a closed fence interrupted, then takes the
/// fence off the connection.
pub(crate) async fn settle(
    conn: &mut SqliteConnection,
    slot: Option<&Arc<Slot>>,
) -> sqlx::Result<()> {
    let mut handle = conn.lock_handle().await?;
    match slot {
        Some(slot) => slot.set(None),
        None => {
            handle.remove_commit_hook();
            handle.remove_progress_handler();
        }
    }
    Ok(())
}
