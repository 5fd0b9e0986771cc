//! SQLite's side of a test's isolation: the test savepoint, and the hooks that keep what a test
//! started on a connection from committing (or running on) once the test has ended.

use std::sync::{Arc, Mutex};

use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, Executor, Row};
use testdb::{Attribution, Fence, Rewind, quote_identifier as ident};

/// The connection-level settings a test may change that no rollback undoes, put back after each
/// test as the connection had them (those testdb never sets are SQLite's defaults).
const SETTINGS: &str = "PRAGMA defer_foreign_keys = OFF; PRAGMA query_only = OFF; \
                        PRAGMA recursive_triggers = OFF; PRAGMA ignore_check_constraints = OFF; \
                        PRAGMA reverse_unordered_selects = OFF; ";

/// A test's session as testdb opened it.
#[derive(Debug)]
pub struct Baseline {
    /// Resets the connection-level settings; `PRAGMA foreign_keys` as it was (a no-op inside a
    /// transaction, where tests cannot change it either).
    settings: String,
}

pub(crate) async fn baseline(conn: &mut SqliteConnection) -> sqlx::Result<Baseline> {
    let foreign_keys: bool = sqlx::query_scalar("SELECT foreign_keys FROM pragma_foreign_keys")
        .fetch_one(&mut *conn)
        .await?;
    Ok(Baseline {
        settings: format!(
            "{SETTINGS}PRAGMA foreign_keys = {};",
            if foreign_keys { "ON" } else { "OFF" }
        ),
    })
}

pub(crate) async fn checkpoint(conn: &mut SqliteConnection) -> sqlx::Result<Result<(), String>> {
    conn.execute("SAVEPOINT testdb_test").await?;
    match foreign_key_violation(conn).await? {
        Some(violation) => Ok(Err(violation)),
        None => Ok(Ok(())),
    }
}

pub(crate) async fn rewind(
    conn: &mut SqliteConnection,
    check: bool,
    baseline: &Baseline,
) -> sqlx::Result<Rewind> {
    let violation = if check {
        foreign_key_violation(conn).await?
    } else {
        None
    };
    let sql = format!("ROLLBACK TO SAVEPOINT testdb_test; {}", baseline.settings);
    match conn.execute(AssertSqlSafe(sql)).await {
        Ok(_) => Ok(violation.map_or(Rewind::Clean, Rewind::Violated)),
        Err(err) if is_escape(&err) => Ok(Rewind::Escaped(err.to_string())),
        Err(err) => Err(err),
    }
}

/// Committed isolation's session, out of any transaction: the settings, and no temporary tables
/// or views.
pub(crate) async fn reset_session(
    conn: &mut SqliteConnection,
    baseline: &Baseline,
) -> sqlx::Result<()> {
    let temporary: Vec<(String, String)> =
        sqlx::query_as("SELECT type, name FROM temp.sqlite_master WHERE type IN ('table', 'view')")
            .fetch_all(&mut *conn)
            .await?;
    let mut script = baseline.settings.clone();
    for (kind, name) in &temporary {
        let kind = if kind == "view" { "VIEW" } else { "TABLE" };
        script.push_str(&format!(" DROP {kind} IF EXISTS temp.{};", ident(name)));
    }
    conn.execute(AssertSqlSafe(script)).await.map(drop)
}

/// The first row that breaks a foreign key, as a commit would report it. SQLite counts the
/// violations a transaction has not resolved (whatever deferred them: the schema, or `PRAGMA
/// defer_foreign_keys`); only when that count is not zero does it look for the row, which costs a
/// scan of every table with foreign keys.
async fn foreign_key_violation(conn: &mut SqliteConnection) -> sqlx::Result<Option<String>> {
    if unresolved_foreign_keys(conn).await? == 0 {
        return Ok(None);
    }
    let rows = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(&mut *conn)
        .await?;
    let Some(first) = rows.first() else {
        return Ok(Some(
            "FOREIGN KEY constraint failed: a row references a missing row".into(),
        ));
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

/// How many foreign-key violations the connection's transaction has not resolved: what a commit
/// would fail on.
async fn unresolved_foreign_keys(conn: &mut SqliteConnection) -> sqlx::Result<i32> {
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle().as_ptr();
    let (mut current, mut highest) = (0, 0);
    // SAFETY: `db` is the connection's open handle, which the locked handle keeps from the
    // worker thread (and from closing) while it lives; the out-pointers are valid locals.
    #[allow(unsafe_code)]
    let status = unsafe {
        libsqlite3_sys::sqlite3_db_status(
            db,
            libsqlite3_sys::SQLITE_DBSTATUS_DEFERRED_FKS,
            &mut current,
            &mut highest,
            0,
        )
    };
    if status != libsqlite3_sys::SQLITE_OK {
        return Err(sqlx::Error::Protocol(format!(
            "sqlite3_db_status failed with code {status}"
        )));
    }
    Ok(current)
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
