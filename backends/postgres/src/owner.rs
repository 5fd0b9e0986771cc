//! Proof of ownership, and the sweep of databases whose owner died.
//!
//! Every database testdb creates is named `testdb_…` and carries a comment (stored in the shared
//! catalog, so no database is written to) naming its owner: a random key on which the owning
//! process holds a session advisory lock, on a connection it keeps open for its whole life. The
//! server releases the lock when that session ends, however the process died. A sweep drops a
//! database only if its name has the prefix, its comment is testdb's, and its owner's lock is free.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::Row;
use sqlx::postgres::PgConnection;
use testdb::{Error, Result};

use crate::Postgres;
use crate::server::{self, NAME};
use crate::sql;

/// The prefix of every database testdb creates.
pub(crate) const PREFIX: &str = "testdb_";
/// The prefix of templates (shared across processes and runs, never swept by owner).
pub(crate) const TEMPLATE_PREFIX: &str = "testdb_tpl_";
/// The first half of testdb's advisory-lock keys (the two-`int4` key space, apart from the
/// single-`bigint` one applications commonly use).
const LOCK_CLASS: i32 = 0x7465_7374; // "test"
const MARKER: &str = "testdb v1";

/// This process's claim on a server: the key it locks, on the connection that holds the lock.
pub(crate) struct Owner {
    pub(crate) key: i32,
    // Never used after locking; kept open so the lock lasts as long as the process.
    _session: tokio::sync::Mutex<PgConnection>,
}

static OWNERS: Mutex<Option<HashMap<String, Arc<Owner>>>> = Mutex::new(None);

/// This process's owner on `server`, created (and its lock taken) on first use.
pub(crate) async fn owner(server: &Postgres) -> Result<Arc<Owner>> {
    let scope = server.redacted_url().to_string();
    if let Some(owner) = owners().as_ref().and_then(|map| map.get(&scope).cloned()) {
        return Ok(owner);
    }
    let mut session = server.connect_maintenance().await?;
    let key = loop {
        let key = random_u64() as i32;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(LOCK_CLASS)
            .bind(key)
            .fetch_one(&mut session)
            .await
            .map_err(|source| server.connect_error(source))?;
        if locked {
            break key;
        }
    };
    let owner = Arc::new(Owner {
        key,
        _session: tokio::sync::Mutex::new(session),
    });
    // Two tasks may race to create an owner: keep the first, drop the other (and its lock).
    let mut owners = owners();
    let kept = owners
        .get_or_insert_with(HashMap::new)
        .entry(scope)
        .or_insert(owner);
    Ok(kept.clone())
}

fn owners() -> std::sync::MutexGuard<'static, Option<HashMap<String, Arc<Owner>>>> {
    OWNERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The comment that marks a database as testdb's, owned by `key`.
pub(crate) fn marker(key: i32, maintenance: &str) -> String {
    format!(
        "{MARKER}; owner={key}; pid={}; created={}; maintenance={maintenance}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs()),
    )
}

/// A new database's name: `testdb_<maintenance database's hash>_<owner key>_<random>`, all hex.
pub(crate) fn database_name(key: i32, maintenance: &str) -> String {
    format!(
        "{PREFIX}{:08x}_{:08x}_{:08x}",
        fnv(maintenance),
        key as u32,
        random_u64() as u32
    )
}

/// The owner key in a database's name, if the name is testdb's and its owner's lock lives in
/// `maintenance`.
fn owner_in_name(name: &str, maintenance: &str) -> Option<i32> {
    let mut parts = name.strip_prefix(PREFIX)?.split('_');
    let (hash, key, random) = (parts.next()?, parts.next()?, parts.next()?);
    let parsed = |part: &str| (part.len() == 8).then(|| u32::from_str_radix(part, 16).ok())?;
    parsed(random)?;
    if parts.next().is_some() || parsed(hash)? != fnv(maintenance) {
        return None;
    }
    Some(parsed(key)? as i32)
}

/// 32-bit FNV-1a: a hash that is the same in every process and every build.
fn fnv(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

/// The owner key and maintenance database in a marker, if it is testdb's.
fn parse_marker(comment: &str) -> Option<(i32, &str)> {
    let rest = comment.strip_prefix(MARKER)?.strip_prefix("; owner=")?;
    let (key, rest) = rest.split_once(';')?;
    let (_, maintenance) = rest.split_once("; maintenance=")?;
    Some((key.parse().ok()?, maintenance))
}

/// Drops the databases whose owner is gone; returns how many.
pub(crate) async fn sweep(server: &Postgres) -> Result<usize> {
    let mut conn = server.connect_maintenance().await?;
    let result = sweep_on(server, &mut conn).await;
    server::close(conn).await;
    result
}

async fn sweep_on(server: &Postgres, conn: &mut PgConnection) -> Result<usize> {
    let failed = |step: &str, source| Error::Database {
        backend: NAME,
        database: server.redacted_url().to_string(),
        step: step.into(),
        source,
    };
    let rows = sqlx::query(
        "SELECT d.datname, shobj_description(d.oid, 'pg_database') AS marker, current_database() \
         FROM pg_database d WHERE starts_with(d.datname, $1) AND NOT starts_with(d.datname, $2)",
    )
    .bind(PREFIX)
    .bind(TEMPLATE_PREFIX)
    .fetch_all(&mut *conn)
    .await
    .map_err(|source| failed("list test databases", source))?;

    // Owner key → its databases. Only markers written from this maintenance database count: the
    // owner's lock lives there (advisory locks are per database).
    let mut by_owner: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    for row in &rows {
        let name: String = row.get(0);
        let comment: Option<String> = row.get(1);
        let current: String = row.get(2);
        let owner = match comment.as_deref().and_then(parse_marker) {
            Some((key, maintenance)) => (maintenance == current).then_some(key),
            // No marker: its creator died before writing it; the name says who that was.
            None => owner_in_name(&name, &current),
        };
        if let Some(key) = owner {
            by_owner.entry(key).or_default().push(name);
        }
    }

    let mut dropped = 0;
    for (key, names) in by_owner {
        let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(LOCK_CLASS)
            .bind(key)
            .fetch_one(&mut *conn)
            .await
            .map_err(|source| failed("check a test database's owner", source))?;
        if !free {
            continue; // Its owner is alive (possibly this process).
        }
        for name in names {
            // A failure here (e.g. a concurrent sweeper got there first) is left to a later sweep.
            if drop_database(conn, &name).await.is_ok() {
                dropped += 1;
            }
        }
        let _ = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
            .bind(LOCK_CLASS)
            .bind(key)
            .execute(&mut *conn)
            .await;
    }
    Ok(dropped)
}

/// Drops `name`, disconnecting anyone still connected to it.
pub(crate) async fn drop_database(conn: &mut PgConnection, name: &str) -> sqlx::Result<()> {
    let version: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
        .fetch_one(&mut *conn)
        .await?;
    if version >= 130_000 {
        sqlx::query(sql::drop_database(name, true))
            .execute(&mut *conn)
            .await?;
    } else {
        // Before 13 there is no FORCE: disallow new connections, end the current ones, drop.
        let _ = sqlx::query(sql::disallow_connections(name))
            .execute(&mut *conn)
            .await;
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(name)
        .execute(&mut *conn)
        .await?;
        sqlx::query(sql::drop_database(name, false))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// A fresh random number (no dependency needed: std's hasher keys are random per process).
pub(crate) fn random_u64() -> u64 {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    RandomState::new().hash_one((count, nanos, std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::{database_name, marker, owner_in_name, parse_marker};

    #[test]
    fn names_carry_their_owner() {
        let name = database_name(-42, "postgres");
        assert!(name.len() <= 63);
        assert_eq!(owner_in_name(&name, "postgres"), Some(-42));
        // Its owner's lock lives in another maintenance database: not ours to judge.
        assert_eq!(owner_in_name(&name, "template1"), None);
        assert_eq!(owner_in_name("testdb_0123456789abcdef", "postgres"), None);
        assert_eq!(owner_in_name("testdb_tpl_1_2_3", "postgres"), None);
    }

    #[test]
    fn markers_round_trip() {
        let text = marker(-42, "my; db");
        assert_eq!(parse_marker(&text), Some((-42, "my; db")));
        assert_eq!(parse_marker("some other comment"), None);
        assert_eq!(
            parse_marker("testdb v1; owner=x; maintenance=postgres"),
            None
        );
    }
}
