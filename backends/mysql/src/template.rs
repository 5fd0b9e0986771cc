//! Templates: databases named `testdb_tpl_…`, commented `testdb template v2` once complete, that
//! test databases are copied from table by table (MySQL has no `CREATE DATABASE … TEMPLATE`).
//!
//! A template keeps the suite's setup value, and when it was last used, in a table of its own
//! (`testdb_setup` unless a user's table has that name; see `bookkeeping`), which copies leave
//! out. Builders and removers hold a named lock on the
//! template's name; a process using a template holds, besides, a lock named after the template
//! and its own session, taken while it holds the template's lock for a moment: a remover, holding
//! the template's lock, sees every such session in the process list, and leaves the template.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::Row;
use sqlx::mysql::MySqlConnection;
use testdb::backend::{OwnedDatabase, Templates};
use testdb::{Error, Result};

use crate::MySql;
use crate::backend::{self, NAME};
use crate::bookkeeping::{self, Names, SETUP};
use crate::database::MySqlDatabase;
use crate::dialect::{ident, literal};
use crate::owner::{self, Held, TEMPLATE_PREFIX};

/// The comment of a complete template (v1 named its bookkeeping by fixed names).
const COMPLETE: &str = "testdb template v2";
/// The comment of a template being built (or whose build was cut short).
const BUILDING: &str = "testdb template v2; building";
/// The name of the table that holds a template's setup value, unless a user's table has it.
const SETUP_TABLE: &str = "testdb_setup";
/// How long a lock waits, in seconds: for ever, as far as a test run goes (MariaDB takes no
/// negative timeout).
const WAIT: u32 = 31_536_000;
/// How stale a template's last use may get before a use records it again.
const STAMP_EVERY: Duration = Duration::from_secs(3600);

/// A lock on a template's name, held for this process on a session of its own; released when
/// dropped, or when the process dies.
#[derive(Debug)]
pub struct TemplateLock {
    /// The template, if the lock is held to build or remove it.
    exclusive: Option<String>,
    _held: Held,
}

impl Drop for TemplateLock {
    fn drop(&mut self) {
        let Some(name) = self.exclusive.take() else {
            return;
        };
        let mut building = building();
        if let Some(entry) = building.get_mut(&name) {
            entry.holders = entry.holders.saturating_sub(1);
            if entry.holders == 0 {
                building.remove(&name);
            }
        }
    }
}

/// This process's exclusive locks on a template: how many are held (more than one only once the
/// first was lost), and the session that took them, if only one.
struct Building {
    holders: usize,
    session: Option<i64>,
}

/// The templates whose lock this process holds to build them, with the session that took each
/// lock. A lock whose session is lost is taken again on a new one, but another process may have
/// held it in between: a build checks, before its template replaces anything, that the session
/// which took its lock still holds it.
fn building() -> std::sync::MutexGuard<'static, BTreeMap<String, Building>> {
    static BUILDING: Mutex<BTreeMap<String, Building>> = Mutex::new(BTreeMap::new());
    BUILDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The named lock of template `name`, as SQL (names are at most 64 characters: hashed).
fn lock_name(name: &str) -> String {
    format!("CONCAT('testdb_lock_', MD5({}))", literal(name))
}

/// The named lock of a session using template `name`, as SQL.
fn use_name(name: &str, session: &str) -> String {
    format!(
        "CONCAT('testdb_use_', MD5({}), '_', {session})",
        literal(name)
    )
}

async fn lock(server: &MySql, name: &str, shared: bool) -> Result<TemplateLock> {
    let lock = lock_name(name);
    let take = if shared {
        // The template's lock for a moment (waiting for a builder or remover), and the session's
        // own use of it for as long as it is held.
        format!(
            "SELECT GET_LOCK({lock}, {WAIT}) UNION ALL SELECT GET_LOCK({}, 0) \
             UNION ALL SELECT RELEASE_LOCK({lock})",
            use_name(name, "CONNECTION_ID()")
        )
    } else {
        format!("SELECT GET_LOCK({lock}, {WAIT})")
    };
    let held = owner::hold(server, take, name).await?;
    let exclusive = (!shared).then(|| name.to_owned());
    if let Some(name) = &exclusive {
        let mut building = building();
        let entry = building.entry(name.clone()).or_insert(Building {
            holders: 0,
            session: Some(held.first_session),
        });
        entry.holders += 1;
        if entry.holders > 1 {
            // Two holders at once: the lock of the first was lost. Which of them is asking
            // cannot be told, so neither build is used.
            entry.session = None;
        }
    }
    Ok(TemplateLock {
        exclusive,
        _held: held,
    })
}

/// Fails unless template `name`'s lock, if this process took it to build the template, is still
/// held by the session that took it.
async fn still_locked(conn: &mut MySqlConnection, name: &str) -> sqlx::Result<()> {
    let Some(entry) = building().get(name).map(|entry| entry.session) else {
        return Ok(());
    };
    let holder: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT CAST(IS_USED_LOCK({}) AS SIGNED)",
        lock_name(name)
    )))
    .fetch_one(&mut *conn)
    .await?;
    if holder.is_some() && holder == entry {
        return Ok(());
    }
    Err(sqlx::Error::Protocol(format!(
        "this process lost its lock on template {name} while it built it (the server restarted, \
         or ended the lock's session): another process may have built or removed the template \
         since, so this build is not used; run the tests again"
    )))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

async fn find_on(conn: &mut MySqlConnection, name: &str) -> sqlx::Result<Option<String>> {
    let comment: Option<String> = sqlx::query_scalar(
        "SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    if comment.as_deref() != Some(COMPLETE) {
        return Ok(None);
    }
    let Some(setup) = bookkeeping::find(conn, Some(name), SETUP_TABLE, SETUP).await? else {
        return Ok(None);
    };
    let table = format!("{}.{}", ident(name), ident(&setup));
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT value, used FROM {table}"
    )))
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let (value, used): (String, u64) = (row.try_get(0)?, row.try_get(1)?);
    if now().saturating_sub(used) >= STAMP_EVERY.as_secs() {
        sqlx::query(sqlx::AssertSqlSafe(format!("UPDATE {table} SET used = ?")))
            .bind(now())
            .execute(&mut *conn)
            .await?;
    }
    Ok(Some(value))
}

/// Before rows are copied: a 0 in an `AUTO_INCREMENT` column is stored as 0, as it was, not
/// replaced by the next value (which MySQL does unless `NO_AUTO_VALUE_ON_ZERO` is set).
pub(crate) const KEEP_ZEROS: &str = "SET @testdb_sql_mode = @@SESSION.sql_mode, \
     SESSION sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), 'NO_AUTO_VALUE_ON_ZERO');";

/// After rows are copied: the session's own `sql_mode` again.
pub(crate) const END_KEEP_ZEROS: &str =
    "SET SESSION sql_mode = @testdb_sql_mode, @testdb_sql_mode = NULL;";

/// Copies every table of `from` (but testdb's setup table) into the empty database `to`, with its
/// rows, then its views and triggers, in as few round trips as it can: the tables' definitions
/// and the rows of those that hold any go as one script, foreign keys unchecked.
pub(crate) async fn copy(conn: &mut MySqlConnection, from: &str, to: &str) -> sqlx::Result<()> {
    let objects = sqlx::query(
        "SELECT TABLE_NAME, TABLE_TYPE, TABLE_COMMENT = ? FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME",
    )
    .bind(SETUP)
    .bind(from)
    .fetch_all(&mut *conn)
    .await?;
    let mut tables = Vec::new();
    let mut views = Vec::new();
    for row in objects {
        let (name, kind, setup): (String, String, i64) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        if setup == 1 {
            continue;
        }
        if kind == "VIEW" {
            views.push(name);
        } else {
            tables.push(name);
        }
    }
    let (src, dst) = (ident(from), ident(to));
    let mut script = format!("SET FOREIGN_KEY_CHECKS = 0; {KEEP_ZEROS} USE {dst};");
    for table in &tables {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SHOW CREATE TABLE {src}.{}",
            ident(table)
        )))
        .fetch_one(&mut *conn)
        .await?;
        let create: String = row.try_get(1)?;
        script.push_str(&create);
        script.push(';');
    }
    if !tables.is_empty() {
        // Which tables hold rows, exactly and in one query (the catalog's counts are estimates).
        let probe = tables
            .iter()
            .map(|table| {
                format!(
                    "SELECT {} FROM DUAL WHERE EXISTS (SELECT 1 FROM {src}.{})",
                    literal(table),
                    ident(table)
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let filled: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(probe))
            .fetch_all(&mut *conn)
            .await?;
        for table in &filled {
            let columns = stored_columns(conn, from, table).await?;
            script.push_str(&format!(
                "INSERT INTO {dst}.{t} ({columns}) SELECT {columns} FROM {src}.{t};",
                t = ident(table)
            ));
        }
    }
    script.push_str("SET FOREIGN_KEY_CHECKS = 1;");
    script.push_str(END_KEEP_ZEROS);
    sqlx::raw_sql(sqlx::AssertSqlSafe(script))
        .execute(&mut *conn)
        .await?;
    copy_views(conn, from, to, &views).await?;
    copy_triggers(conn, from, to).await
}

/// The columns of `table` that hold what is stored (not generated ones), quoted, in order.
pub(crate) async fn stored_columns(
    conn: &mut MySqlConnection,
    schema: &str,
    table: &str,
) -> sqlx::Result<String> {
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND IS_GENERATED = 'NEVER' \
         ORDER BY ORDINAL_POSITION",
    )
    .bind(schema)
    .bind(table)
    .fetch_all(&mut *conn)
    .await?;
    Ok(columns
        .iter()
        .map(|column| ident(column))
        .collect::<Vec<_>>()
        .join(", "))
}

/// Views name their tables with the database's name: re-created with the copy's. A view on a
/// view waits for it, so views are created until none is left, or none can be.
async fn copy_views(
    conn: &mut MySqlConnection,
    from: &str,
    to: &str,
    views: &[String],
) -> sqlx::Result<()> {
    let mut pending = Vec::new();
    for view in views {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SHOW CREATE VIEW {}.{}",
            ident(from),
            ident(view)
        )))
        .fetch_one(&mut *conn)
        .await?;
        let create: String = row.try_get(1)?;
        pending.push(create.replace(&format!("{}.", ident(from)), &format!("{}.", ident(to))));
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("USE {}", ident(to))))
        .execute(&mut *conn)
        .await?;
    while !pending.is_empty() {
        let tried = pending.len();
        let mut failed = Vec::new();
        let mut last_error = None;
        for create in pending.drain(..) {
            if let Err(err) = sqlx::raw_sql(sqlx::AssertSqlSafe(create.clone()))
                .execute(&mut *conn)
                .await
            {
                failed.push(create);
                last_error = Some(err);
            }
        }
        if let Some(err) = last_error
            && failed.len() == tried
        {
            return Err(err);
        }
        pending = failed;
    }
    Ok(())
}

/// Triggers, created once the rows are in (they would fire on the copy's own inserts).
async fn copy_triggers(conn: &mut MySqlConnection, from: &str, to: &str) -> sqlx::Result<()> {
    let triggers: Vec<String> = sqlx::query_scalar(
        // Filtered on EVENT_OBJECT_SCHEMA, which the server looks up directly: a filter on
        // TRIGGER_SCHEMA opens every database's tables, and waits on their metadata locks.
        "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = ? \
         ORDER BY EVENT_OBJECT_TABLE, ACTION_ORDER",
    )
    .bind(from)
    .fetch_all(&mut *conn)
    .await?;
    if triggers.is_empty() {
        return Ok(());
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("USE {}", ident(to))))
        .execute(&mut *conn)
        .await?;
    for trigger in triggers {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SHOW CREATE TRIGGER {}.{}",
            ident(from),
            ident(&trigger)
        )))
        .fetch_one(&mut *conn)
        .await?;
        let create: String = row.try_get(2)?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(create))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// How many sessions use template `name` (each holds a lock named after it and itself).
async fn users(conn: &mut MySqlConnection, name: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
         WHERE IS_USED_LOCK({}) IS NOT NULL",
        use_name(name, "ID")
    )))
    .fetch_one(&mut *conn)
    .await
}

/// Removes those of templates `found` (each with the state it was listed in) that nobody builds,
/// removes or uses, and that are still as listed; returns how many. Each is found unused twice,
/// under its lock, [`owner::GRACE`] apart: a process whose session was just lost (a server
/// restart, `KILL`) takes its use again meanwhile (which needs the lock for a moment, so it is not
/// held in between), and one rebuilt or used meanwhile is no longer as listed.
async fn remove_unused_of(
    conn: &mut MySqlConnection,
    found: Vec<(String, State)>,
) -> sqlx::Result<usize> {
    let mut unused = Vec::new();
    for (name, listed) in found {
        if unused_as_listed(conn, &name, &listed, false).await? {
            unused.push((name, listed));
        }
    }
    if unused.is_empty() {
        return Ok(0);
    }
    tokio::time::sleep(owner::GRACE).await;
    let mut removed = 0;
    for (name, listed) in unused {
        if unused_as_listed(conn, &name, &listed, true).await? {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Whether template `name` is free to take, unused, and in the state it was listed in, looked at
/// under its lock; dropped then if `drop`.
async fn unused_as_listed(
    conn: &mut MySqlConnection,
    name: &str,
    listed: &State,
    drop: bool,
) -> sqlx::Result<bool> {
    if !try_lock(conn, name).await? {
        return Ok(false);
    }
    let looked = async {
        if users(conn, name).await? != 0 || state(conn, name).await?.as_ref() != Some(listed) {
            return Ok(false);
        }
        if drop {
            owner::drop_database(conn, name).await?;
        }
        Ok(true)
    }
    .await;
    unlock(conn, name).await?;
    looked
}

/// Tries to take template `name`'s lock without waiting; whether it did.
async fn try_lock(conn: &mut MySqlConnection, name: &str) -> sqlx::Result<bool> {
    let taken: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT GET_LOCK({}, 0)",
        lock_name(name)
    )))
    .fetch_one(&mut *conn)
    .await?;
    Ok(taken == Some(1))
}

async fn unlock(conn: &mut MySqlConnection, name: &str) -> sqlx::Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT RELEASE_LOCK({})",
        lock_name(name)
    )))
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// What a removal decides on: a template's comment, and its last use (none while incomplete, or
/// when a complete template lacks its setup table: broken, and as good as unused).
#[derive(Debug, PartialEq)]
struct State {
    comment: String,
    used: Option<u64>,
}

/// Template `name`'s state; none once it is gone (another remover dropped it meanwhile). Any
/// other error reading it is no evidence that it is unused, and stops the removal.
async fn state(conn: &mut MySqlConnection, name: &str) -> sqlx::Result<Option<State>> {
    let comment: Option<String> = sqlx::query_scalar(
        "SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(comment) = comment else {
        return Ok(None);
    };
    if comment != COMPLETE {
        return Ok(Some(State {
            comment,
            used: None,
        }));
    }
    let used = async {
        let Some(setup) = bookkeeping::find(conn, Some(name), SETUP_TABLE, SETUP).await? else {
            return Ok(None);
        };
        sqlx::query_scalar::<_, u64>(sqlx::AssertSqlSafe(format!(
            "SELECT used FROM {}.{}",
            ident(name),
            ident(&setup)
        )))
        .fetch_optional(&mut *conn)
        .await
    }
    .await;
    match used {
        Ok(used) => Ok(Some(State { comment, used })),
        // Unknown database, unknown table: dropped while it was read.
        Err(err) if matches!(backend::error_number(&err), Some(1049 | 1146)) => Ok(None),
        Err(err) => Err(err),
    }
}

/// The templates on the server, with their state, the most recently used first.
async fn templates(conn: &mut MySqlConnection) -> sqlx::Result<Vec<(String, State)>> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA \
         WHERE LEFT(SCHEMA_NAME, 11) = 'testdb_tpl_'",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut found = Vec::new();
    for name in names {
        if !name.starts_with(TEMPLATE_PREFIX) {
            continue;
        }
        if let Some(state) = state(conn, &name).await? {
            found.push((name, state));
        }
    }
    found.sort_by_key(|(_, state)| std::cmp::Reverse(state.used));
    Ok(found)
}

fn failed(name: &str, step: &str, source: sqlx::Error) -> Error {
    Error::Database {
        backend: NAME,
        database: name.to_owned(),
        step: step.to_owned(),
        source,
    }
}

impl Templates for MySql {
    type TemplateLock = TemplateLock;

    // 2: templates marked by their bookkeeping tables' comments, with the names they claim.
    const FORMAT: u32 = 2;

    async fn lock_template(&self, name: &str) -> Result<TemplateLock> {
        lock(self, name, false).await
    }

    async fn share_template(&self, name: &str) -> Result<TemplateLock> {
        lock(self, name, true).await
    }

    async fn find_template(&self, name: &str) -> Result<Option<String>> {
        let mut conn = self.connect_maintenance().await?;
        let found = find_on(&mut conn, name).await;
        backend::close(conn).await;
        found.map_err(|source| failed(name, "look the template up", source))
    }

    async fn promote(&self, database: MySqlDatabase, name: &str, data: &str) -> Result<()> {
        let mut conn = self.connect_maintenance().await?;
        let promoted = async {
            still_locked(&mut conn, name).await?;
            owner::drop_database(&mut conn, name).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE DATABASE {} COMMENT {}",
                ident(name),
                literal(BUILDING)
            )))
            .execute(&mut conn)
            .await?;
            copy(&mut conn, database.name(), name).await?;
            let setup = Names::read(&mut conn, Some(name)).await?.table(SETUP_TABLE);
            still_locked(&mut conn, name).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "CREATE TABLE {t} (value LONGTEXT NOT NULL, used BIGINT UNSIGNED NOT NULL) \
                 COMMENT = {}; INSERT INTO {t} VALUES ({}, {}); ALTER DATABASE {} COMMENT {}",
                literal(SETUP),
                literal(data),
                now(),
                ident(name),
                literal(COMPLETE),
                t = format!("{}.{}", ident(name), ident(&setup)),
            )))
            .execute(&mut conn)
            .await
            .map(drop)
        }
        .await;
        backend::close(conn).await;
        let removed = database.destroy().await;
        promoted.map_err(|source| failed(name, "turn the database into a template", source))?;
        removed
    }

    async fn clone_template(&self, name: &str) -> Result<MySqlDatabase> {
        let database = self.create_database().await?;
        let mut conn = self.connect_maintenance().await?;
        let copied = copy(&mut conn, name, database.name()).await;
        backend::close(conn).await;
        if let Err(source) = copied {
            let _ = database.destroy().await;
            return Err(failed(name, "copy the template", source));
        }
        Ok(database)
    }

    async fn remove_templates(&self, prefix: &str, keep: &str) -> Result<usize> {
        if !prefix.starts_with(TEMPLATE_PREFIX) {
            return Ok(0);
        }
        let mut conn = self.connect_maintenance().await?;
        let removed = async {
            let old = templates(&mut conn)
                .await?
                .into_iter()
                .filter(|(name, _)| name.starts_with(prefix) && name != keep)
                .collect();
            remove_unused_of(&mut conn, old).await
        }
        .await;
        backend::close(conn).await;
        removed.map_err(|source| failed(prefix, "remove old templates", source))
    }

    async fn remove_unused_templates(
        &self,
        unused_for: Duration,
        keep_at_most: usize,
    ) -> Result<usize> {
        let mut conn = self.connect_maintenance().await?;
        let removed = async {
            let now = now();
            let expired = templates(&mut conn)
                .await?
                .into_iter()
                .enumerate()
                .filter(|(rank, (_, state))| {
                    let idle = state
                        .used
                        .map(|used| Duration::from_secs(now.saturating_sub(used)));
                    idle.is_none_or(|idle| idle >= unused_for) || *rank >= keep_at_most
                })
                .map(|(_, found)| found)
                .collect();
            remove_unused_of(&mut conn, expired).await
        }
        .await;
        backend::close(conn).await;
        removed.map_err(|source| failed(self.redacted_url(), "remove unused templates", source))
    }
}
