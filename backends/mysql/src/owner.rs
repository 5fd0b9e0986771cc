//! Proof of ownership, named locks, and the sweep of databases whose owner died.
//!
//! Every database testdb creates is named `testdb_…` and created with a comment naming its owner
//! (`CREATE DATABASE … COMMENT`, one statement: no database is ever left unmarked): a random key
//! whose named lock (`GET_LOCK`) the owning process holds for its whole life, on a session of
//! its own. The server releases the lock when that session ends, however the process died; when
//! the session is lost while the process lives (a server restart, `KILL`, a proxy's idle timeout),
//! the process notices within moments and takes the same lock again. A sweep drops a database
//! only if its name has the prefix, its comment is testdb's, its owner's lock is free, and no
//! session is connected to it, both still true [`GRACE`] later (longer than an owner takes to
//! take its lock again).
//!
//! Named locks belong to sessions, and a session dies with the runtime that opened it: every
//! session that holds one runs on this crate's own runtime, for as long as its holder lives.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{ConnectOptions, Connection, Row};
use testdb::{Error, Result};
use tokio::sync::oneshot;

use crate::MySql;
use crate::backend::{self, NAME};
use crate::dialect::ident;

pub(crate) use testdb::backend::{DATABASE_PREFIX as PREFIX, TEMPLATE_PREFIX};

/// The start of the comment of every database testdb owns; the owner's key follows.
const MARKER: &str = "testdb v1 owner=";
/// The start of the name of the lock an owner holds; its key follows.
const OWNER_LOCK: &str = "testdb_owner_";

/// The runtime the sessions that hold named locks run on.
fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> =
        OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("testdb-mysql-locks")
                .enable_all()
                .build()
                .map_err(|err| err.to_string())
        })
        .as_ref()
        .map_err(|reason| Error::Runtime {
            reason: format!("cannot start a runtime for MySQL's lock sessions: {reason}"),
        })
}

/// How often a held session is checked (which also keeps a proxy from closing it as idle).
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// How often the locks are tried again while they cannot be taken (e.g. the server is down).
const RETRY_EVERY: Duration = Duration::from_millis(100);
/// A check that takes longer than this means the session is gone (a silently dropped socket).
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest one try at taking the locks again may take.
const RELOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a sweep or a remover waits before it believes that a lock or session it saw free
/// is: longer than a live holder whose session was just lost takes to notice (a check), retry,
/// and connect again on a busy machine.
pub(crate) const GRACE: Duration = Duration::from_secs(3);

/// A session of its own holding named locks, until dropped.
#[derive(Debug)]
pub(crate) struct Held {
    /// The server's id of the session that took the locks first: while it holds them, nobody
    /// else can have held them since.
    pub(crate) first_session: i64,
    _release: oneshot::Sender<()>,
}

/// A new session on which `take` has taken its locks.
async fn lock_session(
    server: &MySql,
    options: &MySqlConnectOptions,
    take: &str,
    what: &str,
) -> Result<(MySqlConnection, i64)> {
    let mut conn = options
        .connect()
        .await
        .map_err(|source| server.connect_error(source))?;
    // The session sits idle while it holds its locks: the server's `wait_timeout` (8 hours by
    // default, often minutes in CI) would end it, and free them, under a live process.
    let locked = match sqlx::raw_sql("SET SESSION wait_timeout = 31536000")
        .execute(&mut conn)
        .await
    {
        Ok(_) => {
            sqlx::query_scalar::<_, Option<i64>>(sqlx::AssertSqlSafe(take.to_owned()))
                .fetch_all(&mut conn)
                .await
        }
        Err(err) => Err(err),
    };
    let refused = match locked {
        Ok(results) if results.iter().all(|r| *r == Some(1)) => {
            match sqlx::query_scalar::<_, i64>("SELECT CAST(CONNECTION_ID() AS SIGNED)")
                .fetch_one(&mut conn)
                .await
            {
                Ok(id) => return Ok((conn, id)),
                Err(source) => backend::failed(what, "take a lock", source),
            }
        }
        Ok(_) => Error::Runtime {
            reason: format!("MySQL refused the lock on {what}"),
        },
        Err(source) => backend::failed(what, "take a lock", source),
    };
    let _ = conn.close().await;
    Err(refused)
}

/// Opens a session on `server`'s runtime, runs `take` on it (which takes the locks, waiting as it
/// must, and fails if it cannot), and keeps the session until the result is dropped. The session
/// is checked every [`CHECK_EVERY`]; when it is lost while its holder lives (a server restart,
/// `KILL`, a proxy's idle timeout), `take` runs again on a new one, so that the locks are this
/// process's again within moments (a sweep of another process meanwhile still leaves every
/// database a session of this process is connected to).
pub(crate) async fn hold(server: &MySql, take: String, what: &str) -> Result<Held> {
    let (ready, taken) = oneshot::channel::<Result<i64>>();
    let (release, mut released) = oneshot::channel::<()>();
    let options = server.maintenance_options();
    let server = server.clone();
    let what = what.to_owned();
    runtime()?.spawn(async move {
        let first = lock_session(&server, &options, &take, &what).await;
        let (mut session, id) = match first {
            Ok((conn, id)) => (Some(conn), id),
            Err(err) => {
                let _ = ready.send(Err(err));
                return;
            }
        };
        if ready.send(Ok(id)).is_err() {
            // Nobody waits for these locks (the taker was cancelled): let them go.
            if let Some(conn) = session {
                let _ = conn.close().await;
            }
            return;
        }
        loop {
            let wait = if session.is_some() {
                CHECK_EVERY
            } else {
                RETRY_EVERY
            };
            // Released when the holder is dropped.
            if tokio::time::timeout(wait, &mut released).await.is_ok() {
                break;
            }
            match session.as_mut() {
                Some(conn) => {
                    let ping = sqlx::raw_sql("DO 1").execute(&mut *conn);
                    if !matches!(tokio::time::timeout(PING_TIMEOUT, ping).await, Ok(Ok(_))) {
                        session = None;
                    }
                }
                None => {
                    let again = lock_session(&server, &options, &take, &what);
                    if let Ok(Ok((conn, _))) = tokio::time::timeout(RELOCK_TIMEOUT, again).await {
                        session = Some(conn);
                    }
                }
            }
        }
        // Closing the session releases every lock it holds.
        if let Some(conn) = session {
            let _ = conn.close().await;
        }
    });
    match taken.await {
        Ok(result) => result.map(|first_session| Held {
            first_session,
            _release: release,
        }),
        Err(_) => Err(Error::Runtime {
            reason: "MySQL's lock session ended before it took its lock".into(),
        }),
    }
}

/// This process's ownership of the databases it creates on one server.
#[derive(Debug)]
pub(crate) struct Owner {
    pub(crate) key: String,
    _held: Held,
}

/// Where a server's owner is kept once taken.
type OwnerCell = tokio::sync::OnceCell<Arc<Owner>>;

/// The owner for `server`, taken the first time this process creates a database there.
pub(crate) async fn owner(server: &MySql) -> Result<Arc<Owner>> {
    static OWNERS: Mutex<Option<HashMap<String, Arc<OwnerCell>>>> = Mutex::new(None);
    let cell = OWNERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get_or_insert_with(HashMap::new)
        .entry(server.redacted_url().to_owned())
        .or_default()
        .clone();
    cell.get_or_try_init(|| async {
        let key = format!(
            "{:016x}",
            RandomState::new().hash_one((std::process::id(), std::time::SystemTime::now()))
        );
        let take = format!(
            "SELECT GET_LOCK({}, 0)",
            crate::dialect::literal(&format!("{OWNER_LOCK}{key}"))
        );
        let held = hold(server, take, "the owner's key").await?;
        Ok(Arc::new(Owner { key, _held: held }))
    })
    .await
    .cloned()
}

/// The comment that marks a database as owned by `key`.
pub(crate) fn marker(key: &str) -> String {
    format!("{MARKER}{key}")
}

/// A new database name for `owner`: unique on the server while the owner lives.
pub(crate) fn database_name(owner: &Owner) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{PREFIX}{}_{n}", owner.key)
}

/// Drops database `name`, which testdb created.
pub(crate) async fn drop_database(conn: &mut MySqlConnection, name: &str) -> sqlx::Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {}",
        ident(name)
    )))
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// Drops the databases testdb created whose owner is gone and that no session uses; returns how
/// many it dropped.
pub(crate) async fn sweep(server: &MySql) -> Result<usize> {
    let mut conn = server.connect_maintenance().await?;
    let result = sweep_on(&mut conn).await;
    backend::close(conn).await;
    result.map_err(|source| Error::Database {
        backend: NAME,
        database: server.redacted_url().to_owned(),
        step: "sweep databases left by dead processes".into(),
        source,
    })
}

async fn sweep_on(conn: &mut MySqlConnection) -> sqlx::Result<usize> {
    let first = orphans(conn).await?;
    if first.is_empty() {
        return Ok(0);
    }
    // A live owner whose session was just lost (a server restart, `KILL`, a dropped connection)
    // takes its lock again within a check: what is still an orphan after two checks is one.
    tokio::time::sleep(GRACE).await;
    let mut dropped = 0;
    for name in orphans(conn).await? {
        if first.contains(&name) && drop_database(conn, &name).await.is_ok() {
            dropped += 1;
        }
    }
    Ok(dropped)
}

/// The databases testdb created whose owner's lock is free and that no session uses.
async fn orphans(conn: &mut MySqlConnection) -> sqlx::Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT s.SCHEMA_NAME, s.SCHEMA_COMMENT FROM information_schema.SCHEMATA s \
         WHERE LEFT(s.SCHEMA_NAME, 7) = 'testdb_' AND s.SCHEMA_COMMENT LIKE 'testdb v1 owner=%' \
           AND IS_FREE_LOCK(CONCAT('testdb_owner_', SUBSTRING(s.SCHEMA_COMMENT, 17))) = 1 \
           AND NOT EXISTS (SELECT 1 FROM information_schema.PROCESSLIST p \
                           WHERE p.DB = s.SCHEMA_NAME)",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut names = Vec::new();
    for row in rows {
        let name: String = row.try_get(0)?;
        let comment: String = row.try_get(1)?;
        if name.starts_with(PREFIX)
            && !name.starts_with(TEMPLATE_PREFIX)
            && comment.starts_with(MARKER)
        {
            names.push(name);
        }
    }
    Ok(names)
}
