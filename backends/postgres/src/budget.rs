//! The connection budget: how many connections testdb's processes hold on one server at once,
//! together.
//!
//! Each connection testdb opens takes a slot: a session advisory lock `(CLASS, i)` for some `i` in
//! `0..slots`, held by the connection's own session, so that the server frees the slot when the
//! session ends, however its process died. A connection that finds no slot free waits for one.
//!
//! Advisory locks belong to a database: the same key locked in two databases is two locks, and
//! each test database is a database of its own. So a slot is only exclusive server-wide by a
//! check: after locking `i`, a session looks in `pg_locks` (which shows every database's locks)
//! for another session holding `i`, and if it finds one, lets `i` go and tries again. Of two
//! sessions that lock `i` at once, each locks before it looks, so the one that looks last sees the
//! other: at most one keeps it (both may let it go, and try again elsewhere).

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use sqlx::{AssertSqlSafe, Row};
use testdb::backend::Driver;

use crate::Postgres;
use crate::server::NAME;

/// The first half of the slots' advisory-lock keys, apart from testdb's other locks (the owner's
/// "test", the templates' "tplt").
pub(crate) const CLASS: i32 = 0x6275_6467; // "budg"
/// The variable that sets the budget's size.
pub(crate) const VARIABLE: &str = "TESTDB_MAX_CONNECTIONS";
/// How long a connection waits for a slot (and `connect_maintenance` for the server to take a
/// connection) before testdb gives up: the pool's default acquire timeout.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(30);
/// The custom setting where a session notes its slot, so that a rewind can take it back without
/// searching `pg_locks` (which costs as much as the rest of the rewind).
const NOTE: &str = "testdb.budget_slot";
/// How long trouble (a wait for a slot, a server that refused a connection) is remembered, to
/// explain a pool's timeout that followed it.
const REMEMBERED: Duration = Duration::from_secs(10);

/// A server's connection limits, and the budget testdb keeps within them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// The server's `max_connections`.
    pub(crate) max_connections: u32,
    /// Connections only superusers (or `pg_use_reserved_connections`) may use.
    pub(crate) reserved: u32,
    /// The budget: how many connections testdb's processes may hold at once.
    pub(crate) slots: u32,
    /// Whether [`VARIABLE`] set `slots`.
    pub(crate) configured: bool,
}

impl Limits {
    /// The budget on a server with these settings: `max_connections` less the reserved connections
    /// and a margin of 10% of `max_connections`, at least 5 (room for other clients, for the
    /// short-lived connections testdb opens to stop a test, which take no slot, and for connections
    /// waiting for a slot, which are open meanwhile); at least one. [`VARIABLE`] overrides it.
    pub(crate) fn new(max_connections: u32, reserved: u32, configured: Option<u32>) -> Limits {
        let margin = max_connections.div_ceil(10).max(5);
        let computed = max_connections
            .saturating_sub(reserved)
            .saturating_sub(margin)
            .max(1);
        Limits {
            max_connections,
            reserved,
            slots: configured.unwrap_or(computed),
            configured: configured.is_some(),
        }
    }

    /// What sets the budget, for messages.
    fn origin(&self) -> String {
        if self.configured {
            format!("set by {VARIABLE}")
        } else {
            format!(
                "the server's max_connections ({}) less {} reserved and a margin; {VARIABLE} \
                 overrides it",
                self.max_connections, self.reserved
            )
        }
    }
}

/// A value of [`VARIABLE`] that is not a positive integer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadVariable {
    value: String,
}

impl fmt::Display for BadVariable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{VARIABLE} is {:?}, not a positive integer: set it to the number of connections \
             testdb's processes may hold on the server at once, or unset it to take the server's \
             max_connections less a margin",
            self.value
        )
    }
}

impl std::error::Error for BadVariable {}

/// The budget [`VARIABLE`] sets, if it is set.
pub(crate) fn configured() -> Result<Option<u32>, BadVariable> {
    let Ok(value) = std::env::var(VARIABLE) else {
        return Ok(None);
    };
    if value.trim().is_empty() {
        return Ok(None);
    }
    match value.trim().parse::<u32>() {
        Ok(slots) if slots > 0 => Ok(Some(slots)),
        _ => Err(BadVariable { value }),
    }
}

/// Each server's limits, read once per process, by [`server_key`].
static LIMITS: Mutex<Option<HashMap<String, Limits>>> = Mutex::new(None);

/// Names a server (never with a password): its socket, or host and port.
pub(crate) fn server_key(options: &PgConnectOptions) -> String {
    match options.get_socket() {
        Some(socket) => format!("{}:{}", socket.display(), options.get_port()),
        None => format!("{}:{}", options.get_host(), options.get_port()),
    }
}

/// The limits of `key`'s server, if this process has read them.
pub(crate) fn known(key: &str) -> Option<Limits> {
    LIMITS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .as_ref()
        .and_then(|map| map.get(key).copied())
}

/// The limits of `key`'s server, read on `conn` the first time.
async fn limits(conn: &mut PgConnection, key: &str) -> sqlx::Result<Limits> {
    if let Some(limits) = known(key) {
        return Ok(limits);
    }
    let limits = read_limits(conn).await?;
    LIMITS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(key.to_owned(), limits);
    Ok(limits)
}

/// The limits of `conn`'s server, read now.
async fn read_limits(conn: &mut PgConnection) -> sqlx::Result<Limits> {
    let configured = configured().map_err(|bad| sqlx::Error::Configuration(Box::new(bad)))?;
    // `reserved_connections` exists from PostgreSQL 16 on.
    let (max_connections, superuser, reserved): (i32, i32, i32) = sqlx::query_as(
        "SELECT current_setting('max_connections')::int4, \
                current_setting('superuser_reserved_connections')::int4, \
                coalesce(current_setting('reserved_connections', true), '0')::int4",
    )
    .fetch_one(&mut *conn)
    .await?;
    let count = |value: i32| u32::try_from(value).unwrap_or(0);
    Ok(Limits::new(
        count(max_connections),
        count(superuser) + count(reserved),
        configured,
    ))
}

/// Takes a slot for a maintenance connection if one is free, without waiting: such a connection
/// may be what frees the others (removing a database whose pool is still open), or be held for
/// the process's life (the owner's session, a template's lock), so waiting for a slot there could
/// wait for the process itself. Without a free slot, it goes ahead uncounted, within the margin.
pub(crate) async fn admit_if_free(
    conn: &mut PgConnection,
    options: &PgConnectOptions,
) -> sqlx::Result<bool> {
    let key = server_key(options);
    let limits = limits(conn, &key).await?;
    take(conn, &key, limits, None, None).await
}

/// Takes a slot for `conn` again after a rewind found it gone (the test released its advisory
/// locks itself, or its session's note of the slot), trying `previous` first.
pub(crate) async fn retake(conn: &mut PgConnection, previous: Option<u32>) -> sqlx::Result<()> {
    let limits = read_limits(conn).await?;
    let started = Instant::now();
    if take(conn, "", limits, previous, Some(started + TIMEOUT)).await? {
        Ok(())
    } else {
        Err(exhausted(limits, started.elapsed()))
    }
}

/// What one attempt found.
enum Attempt {
    /// The session holds this slot.
    Kept,
    /// A free slot was taken by another session meanwhile: try again at once.
    Raced,
    /// No slot was free.
    Full,
}

/// Takes a slot, trying `first` first; while none is free, waits until `deadline` (without one,
/// gives up at once). Whether the session holds one.
async fn take(
    conn: &mut PgConnection,
    key: &str,
    limits: Limits,
    first: Option<u32>,
    deadline: Option<Instant>,
) -> sqlx::Result<bool> {
    let mut first = first.filter(|slot| *slot < limits.slots);
    let mut races = 0;
    loop {
        let offset = first.take().unwrap_or_else(|| random(limits.slots));
        let rows = sqlx::raw_sql(AssertSqlSafe(attempt(limits.slots, offset)))
            .fetch_all(&mut *conn)
            .await?;
        let pause = match outcome(&rows) {
            Attempt::Kept => return Ok(true),
            // Two sessions that saw each other both let go: apart, they do not meet again.
            Attempt::Raced => {
                races += 1;
                if deadline.is_none() && races > 3 {
                    return Ok(false);
                }
                Duration::from_millis(random(5).into())
            }
            Attempt::Full => {
                note_trouble(key, Trouble::Budget(limits));
                if deadline.is_none() {
                    return Ok(false);
                }
                Duration::from_millis(25 + u64::from(random(25)))
            }
        };
        if let Some(deadline) = deadline
            && Instant::now() + pause >= deadline
        {
            note_trouble(key, Trouble::Budget(limits));
            return Ok(false);
        }
        tokio::time::sleep(pause).await;
    }
}

/// One attempt, in one round trip: takes the first slot that no session holds, in order from
/// `offset` (so that processes spread over the slots), unless this session holds one; then checks
/// that no other session, in any database, holds the slot this session holds, and lets it go if
/// one does. Only a `LIMIT` over a scan in order (no sort) stops at the first slot it locks; the
/// check is a statement of its own, so that it reads `pg_locks` after the lock was taken.
fn attempt(slots: u32, offset: u32) -> String {
    let budget =
        format!("locktype = 'advisory' AND classid = {CLASS} AND objsubid = 2 AND granted");
    format!(
        "SELECT pg_try_advisory_lock({CLASS}, c.slot) AS testdb_try \
         FROM (SELECT (g + {offset}) % {slots} AS slot FROM generate_series(0, {slots} - 1) AS g) \
              AS c \
         WHERE c.slot::int8 NOT IN (SELECT objid::int8 FROM pg_locks WHERE {budget}) \
           AND NOT EXISTS (SELECT FROM pg_locks WHERE {budget} AND pid = pg_backend_pid()) \
         LIMIT 1; \
         SELECT m.objid::int4 AS testdb_slot, \
                CASE WHEN EXISTS (SELECT FROM pg_locks \
                                  WHERE {budget} AND objid = m.objid AND pid <> m.pid) \
                     THEN NOT pg_advisory_unlock({CLASS}, m.objid::int4) \
                     ELSE set_config('{NOTE}', m.objid::text, false) IS NOT NULL END \
                AS testdb_kept \
         FROM pg_locks AS m WHERE {budget} AND pid = pg_backend_pid()"
    )
}

fn outcome(rows: &[PgRow]) -> Attempt {
    let kept = rows
        .iter()
        .any(|row| row.try_get::<bool, _>("testdb_kept").unwrap_or(false));
    let tried = rows
        .iter()
        .any(|row| row.try_get::<bool, _>("testdb_try").is_ok());
    match (kept, tried) {
        (true, _) => Attempt::Kept,
        (false, true) => Attempt::Raced,
        (false, false) => Attempt::Full,
    }
}

/// A rewind's session statement, in place of `pg_advisory_unlock_all()` alone: lets every
/// advisory lock go, then takes the session's slot back at once, without reading `pg_locks`
/// (which would cost as much as the rest of the rewind). Each subquery's row is made before the
/// next one's: the session's note of its slot; whether it still holds the slot (unlocked, which
/// is true only if it was held); every other advisory lock let go; the slot locked again.
/// `testdb_budget` is true when the slot is held again; otherwise [`retake`] is needed, trying
/// `testdb_budget_slot` first. `columns` are the rewind's own.
///
/// Between the unlock and the lock again, another process may take the slot: if it also finishes
/// its check in those microseconds, both hold the slot until one of their sessions ends (a
/// connection over the budget, which the margin absorbs).
pub(crate) fn rewind_statement(columns: &str) -> String {
    format!(
        "SELECT CASE WHEN u.held THEN pg_try_advisory_lock({CLASS}, u.slot) END AS testdb_budget, \
                u.slot AS testdb_budget_slot{columns} \
         FROM (SELECT h.held, h.slot, pg_advisory_unlock_all() \
               FROM (SELECT n.slot, pg_advisory_unlock({CLASS}, n.slot) AS held \
                     FROM (SELECT nullif(current_setting('{NOTE}', true), '')::int4 AS slot \
                           OFFSET 0) AS n \
                     OFFSET 0) AS h \
               OFFSET 0) AS u"
    )
}

/// After a committed reset, which resets every setting: the session's note of its slot, written
/// again.
pub(crate) fn renote() -> String {
    format!(
        "SELECT set_config('{NOTE}', \
                (SELECT min(objid)::text FROM pg_locks \
                 WHERE locktype = 'advisory' AND classid = {CLASS} AND objsubid = 2 AND granted \
                   AND pid = pg_backend_pid()), false) AS testdb_noted"
    )
}

/// Whether a rewind's rows (from [`rewind_statement`]) say the session holds its slot again;
/// else the slot to try first.
pub(crate) fn rewound(rows: &[PgRow]) -> Result<(), Option<u32>> {
    let Some(row) = rows
        .iter()
        .find(|row| row.try_get::<Option<bool>, _>("testdb_budget").is_ok())
    else {
        return Err(None);
    };
    match row.try_get::<Option<bool>, _>("testdb_budget") {
        Ok(Some(true)) => Ok(()),
        _ => Err(row
            .try_get::<Option<i32>, _>("testdb_budget_slot")
            .ok()
            .flatten()
            .and_then(|slot| u32::try_from(slot).ok())),
    }
}

/// A pseudo-random number below `bound` (0 if `bound` is 0).
pub(crate) fn random(bound: u32) -> u32 {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if bound == 0 {
        return 0;
    }
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    let hash = RandomState::new().hash_one((count, nanos, std::process::id()));
    u32::try_from(hash % u64::from(bound)).unwrap_or(0)
}

/// Why a connection could not be had, lately.
#[derive(Debug, Clone, Copy)]
enum Trouble {
    /// Every slot of the budget was held.
    Budget(Limits),
    /// The server refused a connection: too many clients.
    Full,
}

static TROUBLE: Mutex<Option<HashMap<String, (Instant, Trouble)>>> = Mutex::new(None);

fn note_trouble(key: &str, trouble: Trouble) {
    TROUBLE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(key.to_owned(), (Instant::now(), trouble));
}

/// Notes that the server `options` names refused a connection for too many clients.
pub(crate) fn note_full(options: &PgConnectOptions) {
    note_trouble(&server_key(options), Trouble::Full);
}

fn recent_trouble(key: &str) -> Option<Trouble> {
    TROUBLE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .as_ref()
        .and_then(|map| map.get(key).copied())
        .filter(|(at, _)| at.elapsed() < REMEMBERED)
        .map(|(_, trouble)| trouble)
}

/// Whether `err` is the server refusing a connection for too many clients (SQLSTATE 53300: its
/// `max_connections`, or a role's or database's `CONNECTION LIMIT`).
pub(crate) fn is_too_many(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code == "53300")
}

/// What to change when every slot stayed held.
fn budget_hint(limits: Limits, waited: Option<Duration>) -> String {
    let waited = waited.map_or_else(String::new, |waited| {
        format!(" for {:.1} s", waited.as_secs_f64())
    });
    format!(
        "testdb's connection budget on this server is {slots} connection{s} ({origin}), shared by \
         every testdb process, and all {slots} stayed in use{waited}. Run fewer test threads or \
         processes at once (e.g. --test-threads, nextest's -j), give pools fewer connections, \
         raise the server's max_connections, or set {VARIABLE} (a process that needs more \
         connections at once than the budget waits for itself)",
        slots = limits.slots,
        s = if limits.slots == 1 { "" } else { "s" },
        origin = limits.origin(),
    )
}

/// What to change when the server refused a connection for too many clients.
pub(crate) fn full_hint(key: &str) -> String {
    let budget = match known(key) {
        Some(limits) => format!(
            "its max_connections is {}; testdb's own budget is {} ({})",
            limits.max_connections,
            limits.slots,
            limits.origin()
        ),
        None => format!("testdb's own budget is max_connections less a margin, or {VARIABLE}"),
    };
    format!(
        "the server refused a connection: too many clients ({budget}). Other clients, or a \
         CONNECTION LIMIT on the role or database, use the rest. Close other clients, run fewer \
         test processes at once, raise max_connections, or lower {VARIABLE} so that testdb \
         leaves room for them"
    )
}

/// The error of a connection that waited [`TIMEOUT`] for a slot in vain.
fn exhausted(limits: Limits, waited: Duration) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        Exhausted {
            hint: budget_hint(limits, Some(waited)),
        },
    ))
}

/// Every slot stayed held while a connection waited for one.
#[derive(Debug)]
struct Exhausted {
    hint: String,
}

impl fmt::Display for Exhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no slot of testdb's connection budget came free: {}",
            self.hint
        )
    }
}

impl std::error::Error for Exhausted {}

fn find_exhausted(err: &sqlx::Error) -> Option<&Exhausted> {
    let sqlx::Error::Io(io) = err else {
        return None;
    };
    io.get_ref()?.downcast_ref::<Exhausted>()
}

impl Driver for Postgres {
    type Database = sqlx::Postgres;
    type Connection = PgConnection;

    const NAME: &'static str = NAME;

    /// Takes a slot for `conn` (connected to the server `options` names), waiting for one up to
    /// `TIMEOUT` (30 s). A session that holds one already keeps it.
    async fn admit(conn: &mut PgConnection, options: &PgConnectOptions) -> sqlx::Result<()> {
        let key = server_key(options);
        let limits = limits(conn, &key).await?;
        let started = Instant::now();
        if take(conn, &key, limits, None, Some(started + TIMEOUT)).await? {
            Ok(())
        } else {
            Err(exhausted(limits, started.elapsed()))
        }
    }

    /// The hint for `err`, an error opening or acquiring a connection to the server `options`
    /// names: too many clients, the budget exhausted (a pool that timed out while one of this
    /// process's connections waited for a slot), or a server that refused connections lately;
    /// `None` for anything else.
    fn refused(options: &PgConnectOptions, err: &sqlx::Error) -> Option<String> {
        let key = server_key(options);
        if is_too_many(err) {
            return Some(full_hint(&key));
        }
        if let Some(exhausted) = find_exhausted(err) {
            return Some(exhausted.hint.clone());
        }
        if matches!(err, sqlx::Error::PoolTimedOut) {
            return match recent_trouble(&key)? {
                Trouble::Budget(limits) => Some(budget_hint(limits, None)),
                Trouble::Full => Some(full_hint(&key)),
            };
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_leaves_a_margin() {
        // PostgreSQL's defaults: 100, 3 reserved.
        assert_eq!(Limits::new(100, 3, None).slots, 87);
        assert_eq!(Limits::new(20, 3, None).slots, 12);
        assert_eq!(Limits::new(5, 3, None).slots, 1);
        assert_eq!(Limits::new(1000, 3, None).slots, 897);
        let set = Limits::new(100, 3, Some(3));
        assert_eq!(set.slots, 3);
        assert!(set.configured);
    }

    #[test]
    fn a_bad_variable_names_itself_and_its_value() {
        let message = BadVariable {
            value: "lots".into(),
        }
        .to_string();
        assert!(message.contains(VARIABLE), "{message}");
        assert!(message.contains("\"lots\""), "{message}");
    }

    #[test]
    fn hints_name_the_variable() {
        let limits = Limits::new(100, 3, None);
        let hint = budget_hint(limits, Some(Duration::from_secs(30)));
        assert!(hint.contains("87 connections"), "{hint}");
        assert!(hint.contains(VARIABLE), "{hint}");
        assert!(hint.contains("max_connections"), "{hint}");
        assert!(full_hint("nowhere:1").contains("too many clients"));
        assert!(!full_hint("nowhere:1").contains("running"));
    }
}
