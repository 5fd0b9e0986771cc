//! Proof of ownership, and the sweep of databases whose owner died.
//!
//! Every database testdb creates is named `testdb_…` and carries a comment (stored in the shared
//! catalog, so no database is written to) naming its owner: a random key on which the owning
//! process holds a session advisory lock, on a session that a keeper thread keeps for the
//! process's whole life. The server releases the lock when that session ends, however the process
//! died; when the session is lost while the process lives (a server restart, `pg_terminate_backend`,
//! a proxy's idle timeout), the keeper notices and takes the same key again.
//!
//! A sweep drops a database only if its name has the prefix, its comment is testdb's, its owner's
//! lock is free, and no session is connected to it: a live owner whose session was lost for a
//! moment keeps every database it is using.
//!
//! A database without the marker is never dropped, whatever its name: the name proves nothing. So
//! a process killed between `CREATE DATABASE` and `COMMENT ON DATABASE` leaves a database behind
//! for good. The server cannot run the two as one: `CREATE DATABASE` refuses to run in a
//! multi-statement query (its implicit transaction) or in a function, and of two queries sent
//! together the server runs the second only if the client's socket closed cleanly. The window is
//! one round trip, only a kill reaches it (a normal exit waits for databases being created), and
//! what it leaves is an empty database or a copy of a template.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::Connection;
use sqlx::Row;
use sqlx::postgres::PgConnection;
use testdb::{Error, Result};
use tokio::sync::{OnceCell, mpsc, oneshot};

use crate::Postgres;
use crate::maintenance;
use crate::server::{self, NAME};
use crate::sql;

pub(crate) use testdb::backend::{DATABASE_PREFIX as PREFIX, TEMPLATE_PREFIX};
/// The first half of testdb's advisory-lock keys (the two-`int4` key space, apart from the
/// single-`bigint` one applications commonly use).
const LOCK_CLASS: i32 = 0x7465_7374; // "test"
const MARKER: &str = "testdb v1";

/// How often the keeper checks its session while it holds the lock (this also keeps a proxy from
/// closing it as idle).
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// How often the keeper tries again while it cannot take the lock (e.g. the server is down).
const RETRY_EVERY: Duration = Duration::from_millis(100);
/// A check that takes longer than this means the session is gone (a silently dropped socket).
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a re-take of the lock may take: connecting, then waiting for another process's
/// sweep that holds the key for a moment.
const RELOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// A request to the keeper.
enum Request {
    /// Make sure the owner's lock is held, and say so.
    Check(oneshot::Sender<Result<()>>),
    /// Try to take a session advisory lock for the process (without waiting); say whether it was
    /// taken.
    Lock {
        lock: Named,
        reply: oneshot::Sender<Result<bool>>,
    },
    /// Release one hold of a lock taken by [`Request::Lock`]; say when it is released, if asked.
    Unlock(Named, Option<oneshot::Sender<()>>),
}

/// A session advisory lock the keeper holds for the process: `(class, hashtext(name))`, shared or
/// exclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Named {
    pub(crate) class: i32,
    pub(crate) name: String,
    pub(crate) shared: bool,
}

/// This process's claim on a server: the key it locks, held by a keeper thread, whose session also
/// holds the process's other session locks (templates in use, leased copies), so that they cost
/// no connection of their own.
pub(crate) struct Owner {
    pub(crate) key: i32,
    checks: mpsc::UnboundedSender<Request>,
}

/// A lock the keeper holds for the process, released when dropped (and by the server when the
/// process dies).
pub(crate) struct KeeperLock {
    owner: Arc<Owner>,
    lock: Named,
    /// Released already (by [`KeeperLock::release`]).
    released: bool,
}

impl std::fmt::Debug for KeeperLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeeperLock")
            .field("name", &self.lock.name)
            .field("shared", &self.lock.shared)
            .finish()
    }
}

impl Drop for KeeperLock {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let _ = self
            .owner
            .checks
            .send(Request::Unlock(self.lock.clone(), None));
    }
}

impl KeeperLock {
    /// Releases the lock and waits until the server has: for a lease given back at exit, which
    /// the next process should find free, not still held by a session that is ending.
    pub(crate) async fn release(mut self) {
        let (reply, released) = oneshot::channel();
        // Released here, not again when dropped.
        self.released = true;
        let _ = self
            .owner
            .checks
            .send(Request::Unlock(self.lock.clone(), Some(reply)));
        let _ = released.await;
    }
}

impl Owner {
    /// Takes `lock` on the keeper's session if it is free; `None` if another session holds it.
    pub(crate) async fn try_lock(self: &Arc<Self>, lock: Named) -> Result<Option<KeeperLock>> {
        let (reply, answer) = oneshot::channel();
        self.checks
            .send(Request::Lock {
                lock: lock.clone(),
                reply,
            })
            .map_err(|_| stopped())?;
        let taken = answer.await.map_err(|_| stopped())??;
        Ok(taken.then(|| KeeperLock {
            owner: self.clone(),
            lock,
            released: false,
        }))
    }

    /// Takes `lock`, waiting (polling, so that the keeper serves others meanwhile) while another
    /// session holds it.
    pub(crate) async fn lock(self: &Arc<Self>, lock: Named) -> Result<KeeperLock> {
        loop {
            if let Some(held) = self.try_lock(lock.clone()).await? {
                return Ok(held);
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
    }
}

/// How often a process waiting for a lock another process holds tries again.
const LOCK_POLL: Duration = Duration::from_millis(20);

fn stopped() -> Error {
    Error::Runtime {
        reason: "testdb's owner thread stopped".into(),
    }
}

impl Owner {
    /// Waits until the keeper holds the lock, taken again first if its session was lost: a
    /// database marked with this key is then protected from the moment it is marked.
    async fn held(&self) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.checks
            .send(Request::Check(reply))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

type Owners = HashMap<String, Arc<OnceCell<Arc<Owner>>>>;
static OWNERS: Mutex<Option<Owners>> = Mutex::new(None);

/// This process's owner on `server`, created (and its lock taken) on first use, its lock checked
/// (and taken again if it was lost) on every use.
pub(crate) async fn owner(server: &Postgres) -> Result<Arc<Owner>> {
    let scope = server.redacted_url().to_string();
    let cell = owners()
        .get_or_insert_with(HashMap::new)
        .entry(scope)
        .or_default()
        .clone();
    // One keeper per server, even when tasks race to create the first database.
    let owner = cell.get_or_try_init(|| start(server)).await?.clone();
    owner.held().await?;
    Ok(owner)
}

fn owners() -> std::sync::MutexGuard<'static, Option<Owners>> {
    OWNERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The keys this process's owners lock: never this process's own sweep's to judge, even while a
/// keeper is taking its lock again.
fn own_keys() -> Vec<i32> {
    owners()
        .as_ref()
        .map(|map| {
            map.values()
                .filter_map(|cell| cell.get().map(|owner| owner.key))
                .collect()
        })
        .unwrap_or_default()
}

/// Starts the keeper, on a thread and runtime of its own so that its session depends on no
/// caller's runtime, and waits for its first lock.
async fn start(server: &Postgres) -> Result<Arc<Owner>> {
    let (ready, first) = oneshot::channel();
    let (checks, requests) = mpsc::unbounded_channel();
    let keeper = server.clone();
    std::thread::Builder::new()
        .name("testdb-owner".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(keep(keeper, ready, requests)),
                Err(err) => {
                    let _ = ready.send(Err(Error::Runtime {
                        reason: format!("cannot start a runtime for the owner's session: {err}"),
                    }));
                }
            }
        })
        .map_err(|err| Error::Runtime {
            reason: format!("cannot start the owner thread: {err}"),
        })?;
    let key = first.await.map_err(|_| Error::Runtime {
        reason: "testdb's owner thread stopped".into(),
    })??;
    Ok(Arc::new(Owner { key, checks }))
}

/// The keeper: takes a new key's lock, then keeps it for as long as the process lives, checking
/// its session every [`CHECK_EVERY`] and whenever asked, and taking the same key again on a new
/// session whenever the old one is lost.
async fn keep(
    server: Postgres,
    ready: oneshot::Sender<Result<i32>>,
    mut requests: mpsc::UnboundedReceiver<Request>,
) {
    let (key, session) = match first_lock(&server).await {
        Ok(locked) => locked,
        Err(err) => {
            let _ = ready.send(Err(err));
            return;
        }
    };
    if ready.send(Ok(key)).is_err() {
        // Nobody waits for this owner (its creation was cancelled): let the lock go.
        server::close(session.conn).await;
        return;
    }
    let mut session = Some(session);
    let mut held: Vec<Named> = Vec::new();
    loop {
        let wait = if session.is_some() {
            CHECK_EVERY
        } else {
            RETRY_EVERY
        };
        let request = match tokio::time::timeout(wait, requests.recv()).await {
            Ok(Some(request)) => Some(request),
            // The owner is gone: nothing is marked with this key any more.
            Ok(None) => break,
            Err(_elapsed) => None,
        };
        match request {
            None => {
                let _ = hold(&server, key, &mut session, &mut held).await;
            }
            Some(Request::Check(reply)) => {
                let _ = reply.send(hold(&server, key, &mut session, &mut held).await);
            }
            Some(Request::Lock { lock, reply }) => {
                // An exclusive lock is the process's once, not once per taker (the server's are
                // reentrant): a copy this process leases is not leased to it again.
                if !lock.shared && held.contains(&lock) {
                    let _ = reply.send(Ok(false));
                    continue;
                }
                let taken = take(&server, key, &mut session, &mut held, &lock).await;
                if let Ok(true) = taken {
                    held.push(lock);
                }
                let _ = reply.send(taken);
            }
            Some(Request::Unlock(lock, reply)) => {
                if let Some(at) = held.iter().position(|hold| *hold == lock) {
                    held.swap_remove(at);
                    if let Some(session) = session.as_mut() {
                        // A lost session released it already.
                        let _ = unlock_on(&mut session.conn, &lock).await;
                    }
                }
                if let Some(reply) = reply {
                    let _ = reply.send(());
                }
            }
        }
    }
    if let Some(session) = session {
        server::close(session.conn).await;
    }
}

/// Tries `lock` on the keeper's session, taking the owner's lock again first if the session was
/// lost.
async fn take(
    server: &Postgres,
    key: i32,
    session: &mut Option<Session>,
    held: &mut Vec<Named>,
    lock: &Named,
) -> Result<bool> {
    if let Some(open) = session.as_mut()
        && let Ok(taken) = try_lock_on(&mut open.conn, lock).await
    {
        return Ok(taken);
    }
    // The session failed: check it (taking everything again on a new one if it is lost), retry.
    hold(server, key, session, held).await?;
    match session.as_mut() {
        Some(open) => try_lock_on(&mut open.conn, lock)
            .await
            .map_err(|source| lock_error(server, source)),
        None => Err(stopped()),
    }
}

async fn try_lock_on(conn: &mut PgConnection, lock: &Named) -> sqlx::Result<bool> {
    let statement = if lock.shared {
        "SELECT pg_try_advisory_lock_shared($1, hashtext($2))"
    } else {
        "SELECT pg_try_advisory_lock($1, hashtext($2))"
    };
    sqlx::query_scalar(statement)
        .bind(lock.class)
        .bind(&lock.name)
        .fetch_one(conn)
        .await
}

async fn unlock_on(conn: &mut PgConnection, lock: &Named) -> sqlx::Result<()> {
    let statement = if lock.shared {
        "SELECT pg_advisory_unlock_shared($1, hashtext($2))"
    } else {
        "SELECT pg_advisory_unlock($1, hashtext($2))"
    };
    sqlx::query(statement)
        .bind(lock.class)
        .bind(&lock.name)
        .execute(conn)
        .await
        .map(drop)
}

/// The session that holds the lock, and what names it apart from any later session.
struct Session {
    conn: PgConnection,
    pid: i32,
    /// When the server started it (microseconds since the epoch): with `pid`, names this session
    /// even after its pid is reused.
    started: i64,
}

/// Names the session (first, so that whoever finds the lock held finds the name too), then takes
/// `key`'s lock on it, waiting for it if `wait`, else trying once; `None` if another session holds
/// the lock.
async fn lock(mut conn: PgConnection, key: i32, wait: bool) -> sqlx::Result<Option<Session>> {
    let row = sqlx::query(
        "SELECT pg_backend_pid(), (SELECT (extract(epoch FROM backend_start) * 1e6)::int8 \
         FROM pg_stat_activity WHERE pid = pg_backend_pid()) \
         FROM set_config('application_name', $1, false)",
    )
    .bind(application_name())
    .fetch_one(&mut conn)
    .await?;
    let pid: i32 = row.try_get(0)?;
    let started: Option<i64> = row.try_get(1)?;
    let locked = if wait {
        sqlx::query("SELECT pg_advisory_lock($1, $2)")
            .bind(LOCK_CLASS)
            .bind(key)
            .execute(&mut conn)
            .await
            .map(|_| true)?
    } else {
        sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(LOCK_CLASS)
            .bind(key)
            .fetch_one(&mut conn)
            .await?
    };
    Ok(locked.then_some(Session {
        conn,
        pid,
        started: started.unwrap_or_default(),
    }))
}

/// The owner's session's name in `pg_stat_activity`.
fn application_name() -> String {
    format!("testdb owner {}", std::process::id())
}

/// A new session holding the lock of a new random key.
async fn first_lock(server: &Postgres) -> Result<(i32, Session)> {
    loop {
        let conn = server.connect_maintenance().await?;
        let key = random_u64() as i32;
        match lock(conn, key, false).await {
            Ok(Some(session)) => return Ok((key, session)),
            // Another process's key (the session closes as it is dropped): draw again.
            Ok(None) => continue,
            Err(source) => return Err(lock_error(server, source)),
        }
    }
}

/// Makes sure the lock is held: checks the session, or takes the lock again on a new one, and
/// with it every lock the keeper holds for the process (those another process took meanwhile are
/// lost: a template it then removes, a copy it then leases, was no longer this process's).
async fn hold(
    server: &Postgres,
    key: i32,
    session: &mut Option<Session>,
    held: &mut Vec<Named>,
) -> Result<()> {
    let mut lost = None;
    if let Some(held) = session.as_mut() {
        if let Ok(Ok(())) = tokio::time::timeout(PING_TIMEOUT, held.conn.ping()).await {
            return Ok(());
        }
        // Dropped, which closes the socket if it was still open.
        lost = session.take().map(|lost| (lost.pid, lost.started));
    }
    let relocked = tokio::time::timeout(RELOCK_TIMEOUT, relock(server, key, lost))
        .await
        .unwrap_or_else(|_| {
            Err(lock_error(
                server,
                sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the owner's lock could not be taken again in time",
                )),
            ))
        })?;
    let mut relocked = relocked;
    let mut kept = Vec::with_capacity(held.len());
    for lock in held.drain(..) {
        if let Ok(true) = try_lock_on(&mut relocked.conn, &lock).await {
            kept.push(lock);
        }
    }
    *held = kept;
    *session = Some(relocked);
    Ok(())
}

/// Takes `key`'s lock again on a new session, after the one that held it (`lost`) was lost.
async fn relock(server: &Postgres, key: i32, lost: Option<(i32, i64)>) -> Result<Session> {
    let mut conn = server.connect_maintenance().await?;
    if let Some((pid, started)) = lost {
        // Lost to us but perhaps not yet to the server (a silently dropped socket): end it, or it
        // keeps the lock from its successor until the server notices. Best effort: if it cannot
        // be ended, the lock below waits for it instead.
        let _ = sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE pid = $1 AND (extract(epoch FROM backend_start) * 1e6)::int8 = $2",
        )
        .bind(pid)
        .bind(started)
        .execute(&mut conn)
        .await;
    }
    // Waits while another process's sweep holds the key: it holds it only while it drops this
    // process's databases that nobody is connected to.
    match lock(conn, key, true).await {
        Ok(Some(session)) => Ok(session),
        Ok(None) => Err(lock_error(server, sqlx::Error::RowNotFound)),
        Err(source) => Err(lock_error(server, source)),
    }
}

fn lock_error(server: &Postgres, source: sqlx::Error) -> Error {
    Error::Database {
        backend: NAME,
        database: server.redacted_url().to_string(),
        step: "take testdb's owner lock".into(),
        source,
    }
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
///
/// The name tells a reader whose it is; it proves nothing (anyone may name a database so): only
/// the marker does.
pub(crate) fn database_name(key: i32, maintenance: &str) -> String {
    format!(
        "{PREFIX}{:08x}_{:08x}_{:08x}",
        fnv(maintenance),
        key as u32,
        random_u64() as u32
    )
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
    // A suite's next step needs the keeper: its session opens meanwhile. Not waited for: if this
    // task is cut short, the next use starts the keeper again.
    let early = server.clone();
    tokio::spawn(async move { owner(&early).await.map(drop) });
    let on = server.clone();
    maintenance::run(server, move |conn| {
        Box::pin(async move { sweep_on(&on, conn).await })
    })
    .await
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
        // No marker, no proof that testdb made it: never ours to drop, whatever its name.
        let owner = comment.as_deref().and_then(parse_marker);
        if let Some((key, maintenance)) = owner
            && maintenance == current
        {
            by_owner.entry(key).or_default().push(name);
        }
    }

    let mut dropped = 0;
    let own = own_keys();
    for (key, names) in by_owner {
        if own.contains(&key) {
            continue; // This process's: alive, even while its keeper takes its lock again.
        }
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
            if drop_unused(conn, &name).await.unwrap_or(false) {
                dropped += 1;
            }
        }
        let _ = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
            .bind(LOCK_CLASS)
            .bind(key)
            .execute(&mut *conn)
            .await;
    }
    // Copies of templates that a dead process left leased (or a test left dirty).
    dropped += crate::copies::sweep(conn)
        .await
        .map_err(|source| failed("sweep the templates' copies", source))?;
    Ok(dropped)
}

/// Drops `name` unless a session is connected to it; returns whether it dropped it.
///
/// A sweep's drop: a free owner's lock may only mean that a live owner lost its session for a
/// moment, so a database in use is never taken from under anyone. Without `FORCE`, `DROP
/// DATABASE` itself refuses while anyone is connected, but only after waiting 5 s for them to
/// leave: look first.
pub(crate) async fn drop_unused(conn: &mut PgConnection, name: &str) -> sqlx::Result<bool> {
    let in_use: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut *conn)
            .await?;
    if in_use {
        return Ok(false);
    }
    match sqlx::query(sql::drop_database(name, false))
        .execute(&mut *conn)
        .await
    {
        Ok(_) => Ok(true),
        // Someone connected since we looked: in use after all.
        Err(err) if is_in_use(&err) => Ok(false),
        Err(err) => Err(err),
    }
}

/// "database is being accessed by other users".
fn is_in_use(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code == "55006")
}

/// Drops `name`, disconnecting anyone still connected to it: for testdb's removal of a database
/// of its own process, which it knows it is done with.
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
    use super::{database_name, marker, parse_marker};

    #[test]
    fn names_fit_and_differ() {
        let name = database_name(-42, "postgres");
        assert!(name.len() <= 63);
        assert!(name.starts_with("testdb_") && !name.starts_with("testdb_tpl_"));
        assert_ne!(name, database_name(-42, "postgres"));
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
