//! Templates: databases marked `IS_TEMPLATE`, named `testdb_tpl_…`, that test databases are
//! cloned from with `CREATE DATABASE … TEMPLATE`.
//!
//! A template's comment marks it complete and carries the suite's setup value. Builders and
//! removers hold a session advisory lock on the template's name, so that processes that need the
//! same template build it once; users hold it shared. The locks are held on the session of the
//! process's owner keeper, so that they cost no connection. Nobody ever connects to a template: a
//! session on it would make every copy fail.
//!
//! Beside each template lives its pool of copies (`copies.rs`), named after it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::Row;
use sqlx::postgres::PgConnection;
use testdb::backend::{OwnedDatabase, Templates};
use testdb::{Error, Result};

use crate::Postgres;
use crate::copies;
use crate::database::PostgresDatabase;
use crate::maintenance;
use crate::owner::{self, TEMPLATE_PREFIX};
use crate::server::{self, NAME};
use crate::sql::{self, ident};

/// The first half of template-lock keys (the second is the name's hash).
pub(crate) const LOCK_CLASS: i32 = 0x7470_6c74; // "tplt"
const MARKER: &str = "testdb template v1; data=";

/// The lock on a template's name, held for this process on its owner keeper's session; released
/// when dropped, or when the process dies.
#[derive(Debug)]
pub struct TemplateLock {
    _held: owner::KeeperLock,
}

async fn lock(server: &Postgres, name: &str, shared: bool) -> Result<TemplateLock> {
    let keeper = owner::owner(server).await?;
    let held = keeper
        .lock(owner::Named {
            class: LOCK_CLASS,
            name: name.to_owned(),
            shared,
        })
        .await?;
    Ok(TemplateLock { _held: held })
}

/// The template's setup value if it is complete; its last use is stamped if the stamp is older
/// than [`STAMP_EVERY`].
async fn find_on(conn: &mut PgConnection, name: &str) -> sqlx::Result<Option<String>> {
    let found: Option<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT shobj_description(d.oid, 'pg_database'), \
         (SELECT split_part(c, '=', 2) FROM unnest(s.setconfig) c WHERE starts_with(c, $2)) \
         FROM pg_database d LEFT JOIN pg_db_role_setting s \
         ON s.setdatabase = d.oid AND s.setrole = 0 \
         WHERE d.datname = $1 AND d.datistemplate",
    )
    .bind(name)
    .bind(format!("{USED}="))
    .fetch_optional(&mut *conn)
    .await?;
    let Some((comment, used)) = found else {
        return Ok(None);
    };
    let data = comment.and_then(|comment| comment.strip_prefix(MARKER).map(str::to_owned));
    let stale = used
        .and_then(|used| used.parse::<u64>().ok())
        .is_none_or(|used| now().saturating_sub(used) >= STAMP_EVERY.as_secs());
    if data.is_some() && stale {
        // Found for use: a sweep keeps it while it is used. Best effort.
        let _ = stamp(conn, name).await;
    }
    Ok(data)
}

/// How stale a template's last-use stamp may get before a use writes it again: a write to the
/// shared catalog per process would cost every nextest process a commit, and expiry counts in
/// days.
const STAMP_EVERY: Duration = Duration::from_secs(3600);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// The setting that records when a template was last used (seconds since the epoch): stored in
/// the shared catalog (`ALTER DATABASE … SET`), so that nobody connects to the template to write
/// it.
const USED: &str = "testdb.used";

async fn stamp(conn: &mut PgConnection, name: &str) -> sqlx::Result<()> {
    let now = now();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {} SET {USED} TO {}",
        ident(name),
        sql::literal(&now.to_string())
    )))
    .execute(conn)
    .await
    .map(drop)
}

async fn promote_on(
    conn: &mut PgConnection,
    built: &str,
    name: &str,
    data: &str,
) -> sqlx::Result<()> {
    // An incomplete template of that name (its builder died between these steps) goes first.
    drop_template(conn, name).await?;
    // Renamed first: from here on the sweep of dead owners' databases passes it by. The sessions
    // of the pool that built it may take a moment to end on the server after it closed them.
    let rename = format!("ALTER DATABASE {} RENAME TO {}", ident(built), ident(name));
    let mut attempts = 0;
    loop {
        match sqlx::query(sqlx::AssertSqlSafe(rename.clone()))
            .execute(&mut *conn)
            .await
        {
            Ok(_) => break,
            Err(err) if is_in_use(&err) && attempts < 100 => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(err) => return Err(err),
        }
    }
    for statement in [
        format!(
            "COMMENT ON DATABASE {} IS {}",
            ident(name),
            sql::literal(&format!("{MARKER}{data}"))
        ),
        format!("ALTER DATABASE {} IS_TEMPLATE true", ident(name)),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut *conn)
            .await?;
    }
    stamp(conn, name).await
}

async fn remove_on(conn: &mut PgConnection, prefix: &str, keep: &str) -> sqlx::Result<usize> {
    if !prefix.starts_with(TEMPLATE_PREFIX) {
        return Ok(0);
    }
    let names: Vec<String> = sqlx::query(
        "SELECT datname::text FROM pg_database WHERE starts_with(datname, $1) AND datname <> $2",
    )
    .bind(prefix)
    .bind(keep)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|row| row.get(0))
    .collect();
    let mut removed = 0;
    let kept_copies = format!("{keep}_");
    for name in names {
        if name.starts_with(&kept_copies) {
            continue; // The kept template's own copies.
        }
        if copies::template_of(&name).is_some() {
            if copies::remove_unleased(conn, &name).await.unwrap_or(false) {
                removed += 1;
            }
            continue;
        }
        let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
            .bind(LOCK_CLASS)
            .bind(&name)
            .fetch_one(&mut *conn)
            .await?;
        if !free {
            continue; // Being built or removed by another process.
        }
        if drop_template(conn, &name).await.is_ok() {
            removed += 1;
        }
        sqlx::query("SELECT pg_advisory_unlock($1, hashtext($2))")
            .bind(LOCK_CLASS)
            .bind(&name)
            .execute(&mut *conn)
            .await?;
    }
    Ok(removed)
}

async fn remove_unused_on(
    conn: &mut PgConnection,
    unused_for: Duration,
    keep_at_most: usize,
) -> sqlx::Result<usize> {
    // Every `testdb_tpl_` database with its last use (none for one made before uses were
    // recorded), the most recently used first.
    let rows = sqlx::query(
        "SELECT d.datname::text, (SELECT split_part(c, '=', 2) FROM unnest(s.setconfig) c          WHERE starts_with(c, $2))          FROM pg_database d LEFT JOIN pg_db_role_setting s          ON s.setdatabase = d.oid AND s.setrole = 0          WHERE starts_with(d.datname, $1)",
    )
    .bind(TEMPLATE_PREFIX)
    .bind(format!("{USED}="))
    .fetch_all(&mut *conn)
    .await?;
    let now = now();
    let mut templates = Vec::new();
    let mut copies_of = std::collections::HashMap::<String, Vec<String>>::new();
    for row in &rows {
        let name: String = row.try_get(0)?;
        let used: Option<String> = row.try_get(1)?;
        match copies::template_of(&name) {
            Some((template, _)) => copies_of.entry(template.to_owned()).or_default().push(name),
            None => templates.push((name, used.and_then(|used| used.parse::<u64>().ok()))),
        }
    }
    templates.sort_by_key(|template| std::cmp::Reverse(template.1));
    let mut removed = 0;
    for (rank, (name, used)) in templates.iter().enumerate() {
        let idle = used.map(|used| Duration::from_secs(now.saturating_sub(used)));
        let expired = idle.is_none_or(|idle| idle >= unused_for) || rank >= keep_at_most;
        if !expired {
            copies_of.remove(name);
            continue;
        }
        let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
            .bind(LOCK_CLASS)
            .bind(name)
            .fetch_one(&mut *conn)
            .await?;
        if !free {
            copies_of.remove(name); // In use, being built or removed.
            continue;
        }
        if drop_template(conn, name).await.is_ok() {
            removed += 1;
        }
        sqlx::query("SELECT pg_advisory_unlock($1, hashtext($2))")
            .bind(LOCK_CLASS)
            .bind(name)
            .execute(&mut *conn)
            .await?;
    }
    // The copies of the templates just removed, and of templates removed before.
    for name in copies_of.into_values().flatten() {
        if copies::remove_unleased(conn, &name).await.unwrap_or(false) {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Drops template `name` if it exists (a template must be unmarked before it can be dropped).
async fn drop_template(conn: &mut PgConnection, name: &str) -> sqlx::Result<()> {
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    if exists.is_none() {
        return Ok(());
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {} IS_TEMPLATE false",
        ident(name)
    )))
    .execute(&mut *conn)
    .await?;
    owner::drop_database(conn, name).await
}

/// "database is being accessed by other users".
fn is_in_use(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code == "55006")
}

fn failed(name: &str, step: &str, source: sqlx::Error) -> Error {
    Error::Database {
        backend: NAME,
        database: name.to_owned(),
        step: step.into(),
        source,
    }
}

impl Templates for Postgres {
    type TemplateLock = TemplateLock;

    async fn lock_template(&self, name: &str) -> Result<TemplateLock> {
        lock(self, name, false).await
    }

    async fn share_template(&self, name: &str) -> Result<TemplateLock> {
        lock(self, name, true).await
    }

    async fn find_template(&self, name: &str) -> Result<Option<String>> {
        let name = name.to_owned();
        maintenance::run(self, move |conn| {
            Box::pin(async move {
                find_on(conn, &name)
                    .await
                    .map_err(|source| failed(&name, "look the template up", source))
            })
        })
        .await
    }

    async fn promote(&self, database: PostgresDatabase, name: &str, data: &str) -> Result<()> {
        let mut conn = self.connect_maintenance().await?;
        let result = promote_on(&mut conn, database.name(), name, data).await;
        if result.is_err() {
            let _ = owner::drop_database(&mut conn, database.name()).await;
        }
        server::close(conn).await;
        // Renamed, so no longer the owned database's name: nothing left for it to remove.
        drop(database);
        result.map_err(|source| failed(name, "make the template", source))
    }

    async fn clone_template(&self, name: &str) -> Result<PostgresDatabase> {
        self.create_database(Some(name)).await
    }

    async fn remove_templates(&self, prefix: &str, keep: &str) -> Result<usize> {
        let mut conn = self.connect_maintenance().await?;
        let result = remove_on(&mut conn, prefix, keep).await;
        server::close(conn).await;
        result.map_err(|source| failed(prefix, "remove old templates", source))
    }

    async fn remove_unused_templates(
        &self,
        unused_for: Duration,
        keep_at_most: usize,
    ) -> Result<usize> {
        let url = self.redacted_url().to_owned();
        maintenance::run(self, move |conn| {
            Box::pin(async move {
                remove_unused_on(conn, unused_for, keep_at_most)
                    .await
                    .map_err(|source| failed(&url, "remove unused templates", source))
            })
        })
        .await
    }

    async fn lease_copy(&self, name: &str) -> Result<PostgresDatabase> {
        let (copy, lease) = copies::lease(self, name).await?;
        Ok(PostgresDatabase {
            url: self.url_of(&copy),
            options: self.options_of(&copy),
            server: self.clone(),
            name: copy,
            lease: Some(lease),
        })
    }

    async fn keep_spare(&self, name: &str, spare: usize) -> Result<()> {
        copies::keep_spare(self, name, spare).await
    }
}
