//! However a test ends — by its time limit, cancelled, panicking, or after ending its own
//! transaction — nothing it started outlives it, and the next test of the suite starts at once on
//! the baseline; on SQLite, PostgreSQL and MySQL, in every isolation where it applies.

// Tests, examples and benches may panic and print; the library may not (see Cargo.toml).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Harness;
use sqlx::{Connection, Database, Pool};
use testdb::{Error, Isolation, Setup, Suite, TestDatabase};
use testdb_postgres::Postgres;
use testdb_sqlite::Sqlite;

type Conn<H> = <<H as testdb::backend::Driver>::Database as Database>::Connection;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long each test of these suites may run.
const TIME_LIMIT: Duration = Duration::from_millis(600);
/// How long a SQLite connection waits for another's write lock: longer than the time limit, so
/// that a statement waiting on the test's lock is still waiting when the test is given up.
const BUSY_TIMEOUT: Duration = Duration::from_millis(1200);
/// How soon the next test must start after a test that did not return.
const PROMPTLY: Duration = Duration::from_secs(1);

const ISOLATIONS: [Isolation; 4] = [
    Isolation::Savepoint,
    Isolation::Transaction,
    Isolation::Committed,
    Isolation::FreshDatabase,
];

trait Endings: Harness {
    /// A query that runs for many seconds unless stopped.
    const LONG_QUERY: &'static str;
    fn backend_for_suites() -> Option<Self>;
    /// A connection of its own to `url`, inside a transaction that holds the write lock on row
    /// 1000 (SQLite: on the database).
    fn lock_row(url: &str) -> impl Future<Output = Conn<Self>> + Send;
    /// Runs a statement through a pool, returning its error.
    fn try_exec(
        pool: &Pool<Self::Database>,
        sql: &'static str,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}

/// The suite in `isolation` (scenarios share them, one at a time).
fn suite<H: Endings>(isolation: Isolation) -> &'static Suite<H> {
    let setup: fn() -> testdb::Result<Setup<H>> = match isolation {
        Isolation::Savepoint => items::<H, 0>,
        Isolation::Transaction => items::<H, 1>,
        Isolation::Committed => items::<H, 2>,
        _ => items::<H, 3>,
    };
    common::suite_for(isolation.to_string(), "endings", setup)
}

impl Endings for Sqlite {
    const LONG_QUERY: &'static str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 \
                                      FROM c WHERE x < 4000000000) SELECT count(*) FROM c";
    fn backend_for_suites() -> Option<Self> {
        Some(Sqlite::new().busy_timeout(BUSY_TIMEOUT))
    }
    async fn lock_row(url: &str) -> sqlx::SqliteConnection {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::raw_sql("BEGIN IMMEDIATE; UPDATE items SET note = 'locker' WHERE id = 1000")
            .execute(&mut conn)
            .await
            .unwrap();
        conn
    }
    async fn try_exec(pool: &Pool<sqlx::Sqlite>, sql: &'static str) -> Result<(), sqlx::Error> {
        sqlx::query(sql).execute(pool).await.map(drop)
    }
}

impl Endings for Postgres {
    const LONG_QUERY: &'static str = "SELECT pg_sleep(6)";
    fn backend_for_suites() -> Option<Self> {
        common::postgres()
    }
    async fn lock_row(url: &str) -> sqlx::PgConnection {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::raw_sql("BEGIN; UPDATE items SET note = 'locker' WHERE id = 1000")
            .execute(&mut conn)
            .await
            .unwrap();
        conn
    }
    async fn try_exec(pool: &Pool<sqlx::Postgres>, sql: &'static str) -> Result<(), sqlx::Error> {
        sqlx::query(sql).execute(pool).await.map(drop)
    }
}

impl Endings for testdb_mysql::MySql {
    const LONG_QUERY: &'static str = "SELECT SLEEP(6)";
    fn backend_for_suites() -> Option<Self> {
        common::mysql()
    }
    async fn lock_row(url: &str) -> sqlx::MySqlConnection {
        let mut conn = sqlx::MySqlConnection::connect(url).await.unwrap();
        sqlx::raw_sql("BEGIN; UPDATE items SET note = 'locker' WHERE id = 1000")
            .execute(&mut conn)
            .await
            .unwrap();
        conn
    }
    async fn try_exec(pool: &Pool<sqlx::MySql>, sql: &'static str) -> Result<(), sqlx::Error> {
        sqlx::raw_sql(sql).execute(pool).await.map(drop)
    }
}

fn schema() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/endings_schema")
}

/// One row, committed by a migration: `items` 1000, noted `baseline`; isolated by the `I`th of
/// [`ISOLATIONS`].
fn items<H: Endings, const I: usize>() -> testdb::Result<Setup<H>> {
    let isolation = ISOLATIONS[I];
    let backend = H::backend_for_suites().ok_or_else(|| Error::NotConfigured {
        backend: H::NAME,
        hint: "no server".into(),
    })?;
    Ok(
        Setup::new(TestDatabase::builder(backend).migrations(schema()))
            .isolation(isolation)
            .time_limit(TIME_LIMIT),
    )
}

/// The next test of `suite`: starts within [`PROMPTLY`] of `ended`, and sees row 1000 as the
/// baseline has it, from its own connection and from the pool.
async fn next_test_sees_the_baseline<H: Endings>(suite: &Suite<H>, ended: Instant, what: &str) {
    let (waited, own, pooled) = suite
        .run(async |conn: &mut Conn<H>, ()| {
            let waited = ended.elapsed();
            let own =
                H::scalar_on(conn, "SELECT count(*) FROM items WHERE note = 'baseline'").await;
            let db = testdb::current::<H>()?;
            let pooled = H::scalar(
                db.pool(),
                "SELECT count(*) FROM items WHERE note <> 'baseline'",
            )
            .await;
            Ok::<_, BoxError>((waited, own, pooled))
        })
        .await
        .unwrap_or_else(|err| panic!("{what}: the next test failed: {err:?}"));
    assert!(waited < PROMPTLY, "{what}: the next test waited {waited:?}");
    assert_eq!(own, 1, "{what}: the next test sees the baseline row");
    // The row is committed by a migration: every isolation's pool sees it as it is.
    assert_eq!(pooled, 0, "{what}: nothing else was committed");
}

// However a test is made to end without returning.

/// How a test is made to end without returning.
#[derive(Debug, Clone, Copy)]
enum Unfinished {
    TimeLimit,
    Cancelled,
    Panicked,
}

/// Runs a test of `suite` whose `body` waits on a statement (`waiting`) and ends it `how`.
async fn end_unfinished<H, F>(suite: &'static Suite<H>, how: Unfinished, body: F)
where
    H: Endings,
    F: AsyncFnOnce(&mut Conn<H>, ()) -> Result<(), BoxError> + Send + 'static,
{
    match how {
        Unfinished::TimeLimit => {
            let result = suite.run(body).await;
            assert!(matches!(result, Err(Error::TimeLimit { .. })), "{result:?}");
        }
        Unfinished::Cancelled => {
            let cancelled = tokio::time::timeout(Duration::from_millis(300), suite.run(body)).await;
            assert!(cancelled.is_err(), "the test did not wait");
        }
        Unfinished::Panicked => {
            // On a runtime of its own, as a plain test would run it.
            let joined = tokio::task::spawn_blocking(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(suite.run(body))
            })
            .await;
            assert!(
                joined.is_err_and(|err| err.is_panic()),
                "the test did not panic"
            );
        }
    }
}

/// Waits for `statement`; if `how` is a panic, panics while it still waits.
async fn wait_for(
    statement: impl Future<Output = Result<(), sqlx::Error>>,
    how: Unfinished,
) -> Result<(), BoxError> {
    if let Unfinished::Panicked = how {
        tokio::select! {
            _ = statement => {}
            () = tokio::time::sleep(Duration::from_millis(300)) => panic!("the test fails"),
        }
        return Ok(());
    }
    statement.await?;
    Ok(())
}

// 1. A statement blocked by the test's own lock, through the pool, never commits after the test.

on_every_engine!(a_statement_blocked_by_the_test_never_commits_after_it);

async fn a_statement_blocked_by_the_test_never_commits_after_it<H: Endings>(_: H) {
    let _turn = common::one_at_a_time().await;
    for isolation in [
        Isolation::Savepoint,
        Isolation::Transaction,
        Isolation::Committed,
    ] {
        for how in [
            Unfinished::TimeLimit,
            Unfinished::Cancelled,
            Unfinished::Panicked,
        ] {
            let suite = suite::<H>(isolation);
            end_unfinished(suite, how, async move |conn: &mut Conn<H>, ()| {
                // Committed: a transaction of the test's own (elsewhere already in one).
                H::try_exec_on(conn, "BEGIN").await.ok();
                H::try_exec_on(conn, "UPDATE items SET note = 'own' WHERE id = 1000").await?;
                let db = testdb::current::<H>()?;
                // Waits for the test's own lock.
                let leak = H::try_exec(
                    db.pool(),
                    "UPDATE items SET note = 'leaked' WHERE id = 1000",
                );
                wait_for(leak, how).await
            })
            .await;
            let what = format!("{isolation}, blocked pool statement, {how:?}");
            next_test_sees_the_baseline(suite, Instant::now(), &what).await;
            // Long enough for a statement still waiting on the lock to have given up, or committed.
            tokio::time::sleep(BUSY_TIMEOUT + Duration::from_millis(300)).await;
            next_test_sees_the_baseline(suite, Instant::now(), &what).await;
        }
    }
}

// 1b. The same statement, from a task the test spawned, which outlives the test's future: it is
// the test's all the same (the only test running), and never commits after it.

on_every_engine!(a_spawned_task_s_blocked_statement_never_commits_after_its_test);

async fn a_spawned_task_s_blocked_statement_never_commits_after_its_test<H: Endings>(_: H) {
    let _turn = common::one_at_a_time().await;
    for isolation in [
        Isolation::Savepoint,
        Isolation::Transaction,
        Isolation::Committed,
    ] {
        // Not panicking: the runtime a panicking test ran on ends its tasks with it.
        for how in [Unfinished::TimeLimit, Unfinished::Cancelled] {
            let suite = suite::<H>(isolation);
            end_unfinished(suite, how, async move |conn: &mut Conn<H>, ()| {
                H::try_exec_on(conn, "BEGIN").await.ok();
                H::try_exec_on(conn, "UPDATE items SET note = 'own' WHERE id = 1000").await?;
                let pool = testdb::current::<H>()?.pool().clone();
                let spawned = tokio::spawn(async move {
                    H::try_exec(&pool, "UPDATE items SET note = 'leaked' WHERE id = 1000").await
                });
                spawned.await??;
                Ok(())
            })
            .await;
            let what = format!("{isolation}, a spawned task's blocked statement, {how:?}");
            next_test_sees_the_baseline(suite, Instant::now(), &what).await;
            tokio::time::sleep(BUSY_TIMEOUT + Duration::from_millis(300)).await;
            next_test_sees_the_baseline(suite, Instant::now(), &what).await;
        }
    }
}

// 2. A long query on the test's own connection is stopped: the next test starts at once.

on_every_engine!(a_long_query_ends_with_its_test);

async fn a_long_query_ends_with_its_test<H: Endings>(_: H) {
    let _turn = common::one_at_a_time().await;
    for isolation in ISOLATIONS {
        let suite = suite::<H>(isolation);
        // By the time limit.
        let result = suite
            .run(async |conn: &mut Conn<H>, ()| {
                H::try_exec_on(conn, H::LONG_QUERY).await?;
                Ok::<_, BoxError>(())
            })
            .await;
        assert!(
            matches!(result, Err(Error::TimeLimit { .. })),
            "{isolation}: {result:?}"
        );
        next_test_sees_the_baseline(suite, Instant::now(), &format!("{isolation}, time limit"))
            .await;
        // Cancelled: its future dropped.
        let cancelled = tokio::time::timeout(
            Duration::from_millis(300),
            suite.run(async |conn: &mut Conn<H>, ()| {
                H::try_exec_on(conn, H::LONG_QUERY).await?;
                Ok::<_, BoxError>(())
            }),
        )
        .await;
        assert!(cancelled.is_err(), "{isolation}: the query was not long");
        next_test_sees_the_baseline(suite, Instant::now(), &format!("{isolation}, cancelled"))
            .await;
    }
}

// 3. A write that a connection the test took still waits on when the test ends never commits,
// when the lock it waits for is held by a connection the test opened itself (which goes with the
// test's future). Not on SQLite in transaction isolation, where the test's own transaction holds
// the one write lock.

on_every_engine!(a_waiting_write_on_a_taken_connection_never_commits_after_its_test);

async fn a_waiting_write_on_a_taken_connection_never_commits_after_its_test<H: Endings>(_: H) {
    let _turn = common::one_at_a_time().await;
    for isolation in ISOLATIONS {
        if H::KEY == "sqlite" && isolation == Isolation::Transaction {
            continue;
        }
        // Not panicking: a panic unwinds the test's own future, and the connection it opened
        // with it, before testdb can stop anything.
        for how in [Unfinished::TimeLimit, Unfinished::Cancelled] {
            let suite = suite::<H>(isolation);
            end_unfinished(suite, how, async move |_: &mut Conn<H>, ()| {
                let db = testdb::current::<H>()?;
                let _locker = H::lock_row(db.url()).await;
                let late = H::try_exec(db.pool(), "UPDATE items SET note = 'late' WHERE id = 1000");
                wait_for(late, how).await
            })
            .await;
            let what = format!("{isolation}, waiting pool write, {how:?}");
            next_test_sees_the_baseline(suite, Instant::now(), &what).await;
            // Long enough for the write to have given up, or committed.
            tokio::time::sleep(BUSY_TIMEOUT + Duration::from_millis(300)).await;
            next_test_sees_the_baseline(suite, Instant::now(), &what).await;
        }
    }
}

// 4. A test that ends its transaction (`COMMIT`) is caught however it ends: the suite's database
// is replaced before the next test starts, and no later test gets a connection in a state testdb
// cannot vouch for.

on_every_engine!(a_commit_is_caught_however_the_test_ends);

async fn a_commit_is_caught_however_the_test_ends<H: Endings>(_: H) {
    let _turn = common::one_at_a_time().await;
    for isolation in [Isolation::Savepoint, Isolation::Transaction] {
        let suite = suite::<H>(isolation);
        // Returning: the escape is the test's error.
        let returned = suite
            .run(async |conn: &mut Conn<H>, ()| {
                H::try_exec_on(
                    conn,
                    "INSERT INTO items (id, note) VALUES (2000, 'escaped')",
                )
                .await?;
                H::try_exec_on(conn, "COMMIT").await?;
                Ok::<_, BoxError>(())
            })
            .await;
        assert!(
            matches!(returned, Err(Error::Escaped { .. })),
            "{isolation}: {returned:?}"
        );
        after_an_escape(suite, &format!("{isolation}, returned")).await;
        for how in [
            Unfinished::TimeLimit,
            Unfinished::Cancelled,
            Unfinished::Panicked,
        ] {
            end_unfinished(suite, how, async move |conn: &mut Conn<H>, ()| {
                H::try_exec_on(
                    conn,
                    "INSERT INTO items (id, note) VALUES (2000, 'escaped')",
                )
                .await?;
                H::try_exec_on(conn, "COMMIT").await?;
                wait_for(
                    async {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        Ok(())
                    },
                    how,
                )
                .await
            })
            .await;
            after_an_escape(suite, &format!("{isolation}, {how:?}")).await;
        }
    }
}

/// Several tests after an escape: each starts on the baseline, with nothing of the escaped commit,
/// and ends cleanly.
async fn after_an_escape<H: Endings>(suite: &Suite<H>, what: &str) {
    for _ in 0..3 {
        let escaped = suite
            .run(async |conn: &mut Conn<H>, ()| {
                let escaped =
                    H::scalar_on(conn, "SELECT count(*) FROM items WHERE id = 2000").await;
                H::try_exec_on(conn, "INSERT INTO items (id, note) VALUES (3000, 'mine')").await?;
                Ok::<_, BoxError>(escaped)
            })
            .await
            .unwrap_or_else(|err| panic!("{what}: a later test failed: {err:?}"));
        assert_eq!(escaped, 0, "{what}: a later test sees the escaped commit");
    }
}

// 5. Tests of a transaction suite running at once each keep their connections, however they use
// the pool (also from tasks they spawn), and never wait for each other's pool connections for
// good.

/// A transaction suite with the default time limit and busy timeout (SQLite's writers take
/// turns).
fn parallel<H: Endings>() -> testdb::Result<Setup<H>> {
    let backend = H::backend().ok_or_else(|| Error::NotConfigured {
        backend: H::NAME,
        hint: "no server".into(),
    })?;
    Ok(
        Setup::new(TestDatabase::builder(backend).migrations(schema()))
            .isolation(Isolation::Transaction),
    )
}

fn parallel_suite<H: Endings>() -> &'static Suite<H> {
    common::suite_for("parallel".into(), "endings-parallel", parallel::<H>)
}

/// One test: writes on its own connection, reads the baseline through the pool (and from a task
/// it spawns), takes its time, and finds its own write still there.
async fn a_parallel_test<H: Endings>(id: i64, pause: Duration) -> Result<(), BoxError> {
    parallel_suite::<H>()
        .run(async |conn: &mut Conn<H>, ()| {
            // A key of its own: InnoDB answers inserts of one key from many transactions with
            // deadlocks, and a deadlock rolls back MySQL's whole transaction.
            let insert = format!("INSERT INTO items (id, note) VALUES ({}, 'mine')", id + 1);
            H::try_exec_on(conn, insert.leak()).await?;
            let db = testdb::current::<H>()?;
            assert_eq!(H::scalar(db.pool(), "SELECT count(*) FROM items").await, 1);
            let pool = db.pool().clone();
            let spawned =
                tokio::spawn(async move { H::scalar(&pool, "SELECT count(*) FROM items").await });
            tokio::time::sleep(pause).await;
            assert_eq!(spawned.await?, 1, "a spawned read of test {id}");
            assert_eq!(H::scalar_on(conn, "SELECT count(*) FROM items").await, 2);
            Ok::<_, BoxError>(())
        })
        .await
        .map_err(Into::into)
}

fn transaction_tests_at_once_keep_their_connections<H: Endings>() {
    if H::backend().is_none() {
        return;
    }
    for round in 0..3_i64 {
        let tests: Vec<_> = (0..12_i64)
            .map(|i| {
                std::thread::spawn(move || {
                    let pause = Duration::from_millis(20 + u64::try_from(i % 5).unwrap() * 15);
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap()
                        .block_on(a_parallel_test::<H>(round * 100 + i, pause))
                        .map_err(|err| format!("{err:?}"))
                })
            })
            .collect();
        for test in tests {
            let result = test.join().expect("a test panicked");
            assert!(result.is_ok(), "{result:?}");
        }
    }
}

on_every_engine_sync!(transaction_tests_at_once_keep_their_connections);

// 6. A test that forgets a transaction of its own inside testdb's (a leaked `begin()` guard)
// still passes, and later tests get clean connections.

on_every_engine!(a_forgotten_transaction_guard_is_harmless);

async fn a_forgotten_transaction_guard_is_harmless<H: Endings>(_: H) {
    let _turn = common::one_at_a_time().await;
    for isolation in [Isolation::Savepoint, Isolation::Transaction] {
        let suite = suite::<H>(isolation);
        for _ in 0..3 {
            suite
                .run(async |conn: &mut Conn<H>, ()| {
                    let mut nested = sqlx::Connection::begin(&mut *conn).await?;
                    H::try_exec_on(&mut nested, "INSERT INTO items (id, note) VALUES (5, 'x')")
                        .await?;
                    std::mem::forget(nested);
                    Ok::<_, BoxError>(())
                })
                .await
                .unwrap_or_else(|err| panic!("{isolation}: {err:?}"));
            next_test_sees_the_baseline(suite, Instant::now(), &format!("{isolation}, forgotten"))
                .await;
        }
    }
}

// 7. A statement that will not be cancelled (it catches the cancel) is ended with its connection:
// the next test starts within seconds, on the baseline. PostgreSQL only: SQLite's interrupts
// cannot be caught.

const STUBBORN: &str = "DO $$ BEGIN LOOP BEGIN PERFORM pg_sleep(0.2); \
                        EXCEPTION WHEN query_canceled THEN NULL; END; END LOOP; END $$";

#[tokio::test]
async fn a_statement_that_ignores_its_cancel_is_ended() {
    if common::postgres().is_none() {
        return;
    }
    let _turn = common::one_at_a_time().await;
    for isolation in [
        Isolation::Savepoint,
        Isolation::Transaction,
        Isolation::Committed,
    ] {
        let suite = suite::<Postgres>(isolation);
        let result = suite
            .run(async |conn: &mut sqlx::PgConnection, ()| {
                Postgres::try_exec_on(conn, STUBBORN).await?;
                Ok::<_, BoxError>(())
            })
            .await;
        assert!(
            matches!(result, Err(Error::TimeLimit { .. })),
            "{isolation}: {result:?}"
        );
        let ended = Instant::now();
        let own = suite
            .run(async |conn: &mut sqlx::PgConnection, ()| {
                Ok::<_, BoxError>(
                    Postgres::scalar_on(conn, "SELECT count(*) FROM items WHERE note = 'baseline'")
                        .await,
                )
            })
            .await
            .unwrap_or_else(|err| panic!("{isolation}: the next test failed: {err:?}"));
        assert_eq!(own, 1, "{isolation}");
        assert!(
            ended.elapsed() < Duration::from_secs(10),
            "{isolation}: the next test took {:?}",
            ended.elapsed()
        );
    }
}

// 8. A test whose connection the server drops (here `pg_terminate_backend`, as a restart or a
// proxy would) fails, and the next test starts on the baseline. PostgreSQL only: SQLite has no
// server to drop it.

#[tokio::test]
async fn a_test_whose_connection_is_dropped_fails_and_the_next_one_passes() {
    if common::postgres().is_none() {
        return;
    }
    let _turn = common::one_at_a_time().await;
    for isolation in [
        Isolation::Savepoint,
        Isolation::Transaction,
        Isolation::Committed,
    ] {
        let suite = suite::<Postgres>(isolation);
        let result = suite
            .run(async |conn: &mut sqlx::PgConnection, ()| {
                Postgres::try_exec_on(conn, "UPDATE items SET note = 'own' WHERE id = 1000")
                    .await?;
                let pid = Postgres::scalar_on(conn, "SELECT pg_backend_pid()::bigint").await;
                let mut admin = common::admin().await;
                sqlx::query("SELECT pg_terminate_backend($1::int, 5000)")
                    .bind(pid)
                    .execute(&mut admin)
                    .await?;
                Postgres::try_exec_on(conn, "SELECT 1").await?;
                Ok::<_, BoxError>(())
            })
            .await;
        assert!(
            result.is_err(),
            "{isolation}: the test went on without its connection"
        );
        let what = format!("{isolation}, connection dropped");
        next_test_sees_the_baseline(suite, Instant::now(), &what).await;
        next_test_sees_the_baseline(suite, Instant::now(), &what).await;
    }
}
