//! SQLite's side of a test's boundaries: the test savepoint, and the session put back after each
//! test.

use std::ffi::{CStr, CString, c_char, c_int, c_void};

use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, Executor, Row};
use testdb::Isolation;
use testdb::backend::{IsolationHooks, Rewind, TEST_SAVEPOINT, quote_identifier as ident};

use crate::Sqlite;

/// The connection-level settings a test may change that no rollback undoes, put back after each
/// test: those testdb never sets as SQLite has them by default, the others as the connection had
/// them ([`Baseline`]).
const SETTINGS: &str = "PRAGMA defer_foreign_keys = OFF; PRAGMA query_only = OFF; \
                        PRAGMA recursive_triggers = OFF; PRAGMA ignore_check_constraints = OFF; \
                        PRAGMA reverse_unordered_selects = OFF; PRAGMA case_sensitive_like = OFF; \
                        PRAGMA locking_mode = NORMAL; ";

/// A test's session as testdb opened it.
#[derive(Debug)]
pub struct Baseline {
    /// Puts the connection-level settings back ([`SETTINGS`], and the connection's own
    /// `foreign_keys`, `busy_timeout`, `cache_size` and `temp_store`; `foreign_keys` is a no-op
    /// inside a transaction, where a test cannot change it either).
    settings: String,
}

/// Runs `sql` (several statements) on `db` with `sqlite3_exec`; returns the first column of the
/// first row any of them returned, or SQLite's message.
fn exec(db: *mut libsqlite3_sys::sqlite3, sql: &str) -> Result<Option<String>, String> {
    /// Keeps the first column of the first row.
    #[allow(unsafe_code)]
    unsafe extern "C" fn first_value(
        first: *mut c_void,
        columns: c_int,
        values: *mut *mut c_char,
        _names: *mut *mut c_char,
    ) -> c_int {
        // SAFETY: `first` is the `Option<String>` that `exec` passed, alive for the call;
        // `values` holds `columns` pointers, each null or a NUL-terminated string.
        unsafe {
            let first = &mut *first.cast::<Option<String>>();
            if first.is_none() && columns > 0 && !(*values).is_null() {
                *first = Some(CStr::from_ptr(*values).to_string_lossy().into_owned());
            }
        }
        0
    }
    let Ok(sql) = CString::new(sql) else {
        return Err("the statements contain a NUL byte".into());
    };
    let mut first: Option<String> = None;
    let mut message: *mut c_char = std::ptr::null_mut();
    // SAFETY: `db` is an open handle that the caller has locked from the driver's worker; `sql`
    // and `first` outlive the call; SQLite allocates `message`, freed below.
    #[allow(unsafe_code)]
    let status = unsafe {
        libsqlite3_sys::sqlite3_exec(
            db,
            sql.as_ptr(),
            Some(first_value),
            (&raw mut first).cast(),
            &mut message,
        )
    };
    if status == libsqlite3_sys::SQLITE_OK {
        return Ok(first);
    }
    let text = if message.is_null() {
        format!("SQLite error code {status}")
    } else {
        // SAFETY: a NUL-terminated string SQLite allocated for us, freed once copied.
        #[allow(unsafe_code)]
        unsafe {
            let text = CStr::from_ptr(message).to_string_lossy().into_owned();
            libsqlite3_sys::sqlite3_free(message.cast());
            text
        }
    };
    Err(text)
}

/// The first row that breaks a foreign key, as a commit would report it: a scan of every table
/// with foreign keys, run only once SQLite's count says there is one.
async fn describe_violation(conn: &mut SqliteConnection) -> sqlx::Result<String> {
    let rows = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(&mut *conn)
        .await?;
    let Some(first) = rows.first() else {
        return Ok("FOREIGN KEY constraint failed: a row references a missing row".into());
    };
    let table: String = first.try_get(0)?;
    let rowid: Option<i64> = first.try_get(1)?;
    let parent: String = first.try_get(2)?;
    let row = rowid.map_or_else(|| "a row".to_string(), |id| format!("row {id}"));
    let more = match rows.len() {
        1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    };
    Ok(format!(
        "FOREIGN KEY constraint failed: {row} of table \"{table}\" references a missing row of \
         \"{parent}\"{more}"
    ))
}

/// What SQLite itself knows of a connection, read in one go from its handle.
struct Inspected {
    /// How many foreign-key violations its transaction has not resolved (what a commit would
    /// fail on, whatever deferred them: the schema, or `PRAGMA defer_foreign_keys`); 0 unless
    /// asked for.
    unresolved: i32,
    /// The databases attached besides `main` and `temp`.
    attached: Vec<String>,
}

/// How many foreign-key violations the connection's transaction has not resolved.
pub(crate) async fn unresolved_keys(conn: &mut SqliteConnection) -> sqlx::Result<i32> {
    Ok(inspect(conn, true).await?.unresolved)
}

async fn inspect(conn: &mut SqliteConnection, unresolved: bool) -> sqlx::Result<Inspected> {
    let mut handle = conn.lock_handle().await?;
    inspect_on(handle.as_raw_handle().as_ptr(), unresolved)
}

/// [`inspect`], on a handle the caller has locked.
fn inspect_on(db: *mut libsqlite3_sys::sqlite3, unresolved: bool) -> sqlx::Result<Inspected> {
    let mut inspected = Inspected {
        unresolved: 0,
        attached: Vec::new(),
    };
    // SAFETY (all blocks): `db` is the connection's open handle, which the caller's locked handle
    // keeps from the worker thread (and from closing) while it lives; the out-pointers are valid
    // locals, and a name SQLite returns stays valid until the schema changes, which nothing
    // does while the handle is locked.
    if unresolved {
        let (mut current, mut highest) = (0, 0);
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
        inspected.unresolved = current;
    }
    // Schema 0 is `main`, 1 is `temp`; from 2 on, attached ones.
    for index in 2.. {
        #[allow(unsafe_code)]
        let name = unsafe { libsqlite3_sys::sqlite3_db_name(db, index) };
        if name.is_null() {
            break;
        }
        #[allow(unsafe_code)]
        let name = unsafe { std::ffi::CStr::from_ptr(name) };
        inspected.attached.push(name.to_string_lossy().into_owned());
    }
    Ok(inspected)
}

/// The savepoint is gone: the suite transaction was committed or rolled back.
fn is_escape_message(message: &str) -> bool {
    message.contains("no such savepoint") || message.contains("no transaction is active")
}

impl IsolationHooks for Sqlite {
    type Baseline = Baseline;

    /// `BEGIN IMMEDIATE` takes the write lock at once, so that concurrent tests wait for each
    /// other instead of deadlocking when both upgrade a read lock.
    fn begin_test(_: &Baseline) -> String {
        format!("BEGIN IMMEDIATE; SAVEPOINT {TEST_SAVEPOINT}")
    }

    async fn baseline(conn: &mut SqliteConnection, _: Isolation) -> sqlx::Result<Baseline> {
        let (foreign_keys, busy_timeout, cache_size, temp_store): (bool, i64, i64, i64) =
            sqlx::query_as(
                "SELECT (SELECT foreign_keys FROM pragma_foreign_keys), \
                        (SELECT timeout FROM pragma_busy_timeout), \
                        (SELECT cache_size FROM pragma_cache_size), \
                        (SELECT temp_store FROM pragma_temp_store)",
            )
            .fetch_one(&mut *conn)
            .await?;
        Ok(Baseline {
            settings: format!(
                "{SETTINGS}PRAGMA foreign_keys = {}; PRAGMA busy_timeout = {busy_timeout}; \
                 PRAGMA cache_size = {cache_size}; PRAGMA temp_store = {temp_store};",
                if foreign_keys { "ON" } else { "OFF" }
            ),
        })
    }

    async fn checkpoint(conn: &mut SqliteConnection) -> sqlx::Result<Result<(), String>> {
        conn.execute(AssertSqlSafe(format!("SAVEPOINT {TEST_SAVEPOINT}")))
            .await?;
        let inspected = inspect(conn, true).await?;
        if inspected.unresolved == 0 {
            return Ok(Ok(()));
        }
        Ok(Err(describe_violation(conn).await?))
    }

    async fn rewind(
        conn: &mut SqliteConnection,
        check: bool,
        baseline: &Baseline,
        // SQLite's AUTOINCREMENT counters are rows of a table: rolled back with the test.
        _sequences: bool,
    ) -> sqlx::Result<Rewind> {
        // One visit to the connection's handle in the common case: SQLite's own count of unresolved
        // violations and the attached databases are read, and the statements below run, by SQLite
        // itself, without a trip through the driver's worker for each.
        let mut handle = conn.lock_handle().await?;
        let inspected = inspect_on(handle.as_raw_handle().as_ptr(), check)?;
        let mut violation = None;
        if inspected.unresolved > 0 {
            drop(handle);
            violation = Some(describe_violation(conn).await?);
            handle = conn.lock_handle().await?;
        }
        // The mode a test left is read before it is set back: an exclusive lock is held until the
        // transaction ends.
        let mut sql = format!(
            "ROLLBACK TO SAVEPOINT {TEST_SAVEPOINT}; PRAGMA locking_mode; {}",
            baseline.settings
        );
        for schema in &inspected.attached {
            sql.push_str(&format!(" DETACH DATABASE {};", ident(schema)));
        }
        let mode = match exec(handle.as_raw_handle().as_ptr(), &sql) {
            Ok(mode) => mode,
            Err(message) if is_escape_message(&message) => return Ok(Rewind::Escaped(message)),
            Err(message) => return Err(sqlx::Error::Protocol(message)),
        };
        if mode.is_some_and(|mode| mode.eq_ignore_ascii_case("exclusive")) {
            return Ok(Rewind::Escaped(
                "the test set PRAGMA locking_mode = EXCLUSIVE, which keeps every other connection \
                 out until the transaction it ran in ends"
                    .into(),
            ));
        }
        Ok(violation.map_or(Rewind::Clean, Rewind::Violated))
    }

    /// Committed isolation's session, out of any transaction: the settings, no databases attached,
    /// and no temporary tables, views or triggers.
    async fn reset_session(conn: &mut SqliteConnection, baseline: &Baseline) -> sqlx::Result<()> {
        let temporary: Vec<(String, String)> = sqlx::query_as(
            "SELECT type, name FROM temp.sqlite_master WHERE type IN ('table', 'view', 'trigger') \
             UNION ALL SELECT 'database', name FROM pragma_database_list \
             WHERE name NOT IN ('main', 'temp')",
        )
        .fetch_all(&mut *conn)
        .await?;
        let mut script = baseline.settings.clone();
        for (kind, name) in &temporary {
            let statement = match kind.as_str() {
                "database" => format!(" DETACH DATABASE {};", ident(name)),
                "view" => format!(" DROP VIEW IF EXISTS temp.{};", ident(name)),
                "trigger" => format!(" DROP TRIGGER IF EXISTS temp.{};", ident(name)),
                _ => format!(" DROP TABLE IF EXISTS temp.{};", ident(name)),
            };
            script.push_str(&statement);
        }
        conn.execute(AssertSqlSafe(script)).await.map(drop)
    }
}
