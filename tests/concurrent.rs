//! `spawn_concurrent` and its in-process twin `run_concurrent`, on every engine: outcomes,
//! limits, the start barrier, refusals, and a real race.

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
use sqlx::Database;
use testdb::{
    Calls, Error, Handle, Isolation, Outcome, Outcomes, Setup, Suite, TestDatabase, run_concurrent,
    spawn_concurrent,
};
use testdb_mysql::MySql;
use testdb_postgres::Postgres;
use testdb_sqlite::Sqlite;

type Conn<H> = <<H as testdb::backend::Driver>::Database as Database>::Connection;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The callers, written once for each backend's connection type.
macro_rules! callers_on {
    // `$increment` adds one to the gauge and returns it, or (where UPDATE cannot return rows)
    // adds one, and `$read` returns it.
    ($module:ident, $conn:ty, $increment:expr, $read:expr) => {
        mod $module {
            use std::time::Duration;

            type BoxError = Box<dyn std::error::Error + Send + Sync>;

            /// Returns its argument, after printing what looks like a result to standard output.
            pub(crate) async fn echo(_: &mut $conn, n: i64) -> Result<i64, BoxError> {
                println!("{{\"value\": 999}}");
                Ok(n)
            }

            pub(crate) async fn fails(_: &mut $conn, (): ()) -> Result<i64, BoxError> {
                Err("no such seat".into())
            }

            pub(crate) async fn panics(_: &mut $conn, (): ()) -> Result<i64, BoxError> {
                panic!("boom {}", 42)
            }

            pub(crate) async fn crashes(_: &mut $conn, (): ()) -> Result<i64, BoxError> {
                eprintln!("about to crash");
                std::process::abort()
            }

            pub(crate) async fn sleeps(_: &mut $conn, millis: u64) -> Result<i64, BoxError> {
                tokio::time::sleep(Duration::from_millis(millis)).await;
                Ok(0)
            }

            /// How many callers run at once, as this one sees it.
            pub(crate) async fn gauge(conn: &mut $conn, (): ()) -> Result<i64, sqlx::Error> {
                let read: Option<&'static str> = $read;
                let running: i64 = match read {
                    None => sqlx::query_scalar($increment).fetch_one(&mut *conn).await?,
                    Some(read) => {
                        sqlx::query($increment).execute(&mut *conn).await?;
                        sqlx::query_scalar(read).fetch_one(&mut *conn).await?
                    }
                };
                tokio::time::sleep(Duration::from_millis(200)).await;
                sqlx::query("UPDATE gauge SET running = running - 1")
                    .execute(&mut *conn)
                    .await?;
                Ok(running)
            }

            /// Books seat 1 if nobody has: check, think, write — the race.
            pub(crate) async fn book_naive(
                conn: &mut $conn,
                who: i64,
            ) -> Result<bool, sqlx::Error> {
                let booked: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM bookings WHERE seat = 1")
                        .fetch_one(&mut *conn)
                        .await?;
                if booked > 0 {
                    return Ok(false);
                }
                // The application's work between reading and writing.
                tokio::time::sleep(Duration::from_millis(50)).await;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO bookings (seat, who) VALUES (1, {who})"
                )))
                .execute(&mut *conn)
                .await?;
                Ok(true)
            }

            /// The naive booking inside a transaction.
            pub(crate) async fn book_in_transaction(
                conn: &mut $conn,
                who: i64,
            ) -> Result<bool, sqlx::Error> {
                use sqlx::Connection;
                let mut tx = conn.begin().await?;
                let booked = book_naive(&mut tx, who).await?;
                tx.commit().await?;
                Ok(booked)
            }

            /// Books seat 1 by taking it in one statement: the row's lock decides.
            pub(crate) async fn book_fixed(
                conn: &mut $conn,
                who: i64,
            ) -> Result<bool, sqlx::Error> {
                let taken = sqlx::query("UPDATE seats SET taken = 1 WHERE id = 1 AND taken = 0")
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                if taken == 1 {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "INSERT INTO bookings (seat, who) VALUES (1, {who})"
                    )))
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(taken == 1)
            }

            /// Says it runs (a file named after its process in `dir`), waits `millis`, then
            /// writes a booking into the database at `witness`.
            pub(crate) async fn write_later(
                _: &mut $conn,
                (dir, witness, millis): (String, String, u64),
            ) -> Result<i64, BoxError> {
                use sqlx::Connection;
                let running =
                    std::path::Path::new(&dir).join(format!("running-{}", std::process::id()));
                std::fs::write(running, "")?;
                tokio::time::sleep(Duration::from_millis(millis)).await;
                let mut witness = <$conn>::connect(&witness).await?;
                sqlx::query("INSERT INTO bookings (seat, who) VALUES (1, 1)")
                    .execute(&mut witness)
                    .await?;
                Ok(1)
            }

            /// Not listed in `callers!`.
            pub(crate) async fn unregistered(_: &mut $conn, (): ()) -> Result<i64, BoxError> {
                Ok(1)
            }
        }
    };
}

const INCREMENT: &str = "UPDATE gauge SET running = running + 1 RETURNING CAST(running AS BIGINT)";
callers_on!(pg, sqlx::PgConnection, crate::INCREMENT, None);
callers_on!(lite, sqlx::SqliteConnection, crate::INCREMENT, None);
callers_on!(
    my,
    sqlx::MySqlConnection,
    "UPDATE gauge SET running = LAST_INSERT_ID(running + 1)",
    Some("SELECT CAST(LAST_INSERT_ID() AS SIGNED)")
);

testdb::callers!(
    pg::echo,
    pg::fails,
    pg::panics,
    pg::crashes,
    pg::sleeps,
    pg::gauge,
    pg::book_naive,
    pg::book_in_transaction,
    pg::book_fixed,
    pg::write_later,
    lite::echo,
    lite::fails,
    lite::panics,
    lite::crashes,
    lite::sleeps,
    lite::gauge,
    lite::book_naive,
    lite::book_in_transaction,
    lite::book_fixed,
    lite::write_later,
    my::echo,
    my::fails,
    my::panics,
    my::crashes,
    my::sleeps,
    my::gauge,
    my::book_naive,
    my::book_in_transaction,
    my::book_fixed,
    my::write_later,
);

/// Batches of calls, made of the backend's callers.
trait Scenarios: Harness {
    fn echo(values: &[i64]) -> Calls<Conn<Self>, i64>;
    fn failures() -> Calls<Conn<Self>, i64>;
    fn crash() -> Calls<Conn<Self>, i64>;
    fn sleepers(count: usize, millis: u64) -> Calls<Conn<Self>, i64>;
    fn gauges(count: usize) -> Calls<Conn<Self>, i64>;
    fn unregistered() -> Calls<Conn<Self>, i64>;
    fn bookings(kind: Booking, count: i64) -> Calls<Conn<Self>, bool>;
    fn late_writers(count: usize, dir: &Path, witness: &str, millis: u64)
    -> Calls<Conn<Self>, i64>;
    /// The name a child finds `write_later` by.
    fn late_writer() -> &'static str;
    fn suite(isolation: Isolation) -> &'static Suite<Self>;
}

#[derive(Clone, Copy, Debug)]
enum Booking {
    Naive,
    InTransaction,
    Fixed,
}

macro_rules! scenarios {
    ($backend:ty, $module:ident) => {
        impl Scenarios for $backend {
            fn echo(values: &[i64]) -> Calls<Conn<Self>, i64> {
                values.iter().fold(Calls::new(), |calls, value| {
                    calls.call($module::echo, *value)
                })
            }
            fn failures() -> Calls<Conn<Self>, i64> {
                Calls::new()
                    .call($module::echo, 7)
                    .call($module::fails, ())
                    .call($module::panics, ())
                    .call($module::sleeps, 30_000)
                    .timeout(Duration::from_secs(2))
            }
            fn crash() -> Calls<Conn<Self>, i64> {
                Calls::new()
                    .call($module::crashes, ())
                    .call($module::echo, 1)
            }
            fn sleepers(count: usize, millis: u64) -> Calls<Conn<Self>, i64> {
                Calls::repeat(count, $module::sleeps, millis)
            }
            fn gauges(count: usize) -> Calls<Conn<Self>, i64> {
                Calls::repeat(count, $module::gauge, ())
            }
            fn unregistered() -> Calls<Conn<Self>, i64> {
                Calls::repeat(1, $module::unregistered, ())
            }
            fn bookings(kind: Booking, count: i64) -> Calls<Conn<Self>, bool> {
                (1..=count).fold(Calls::new(), |calls, who| match kind {
                    Booking::Naive => calls.call($module::book_naive, who),
                    Booking::InTransaction => calls.call($module::book_in_transaction, who),
                    Booking::Fixed => calls.call($module::book_fixed, who),
                })
            }
            fn late_writers(
                count: usize,
                dir: &Path,
                witness: &str,
                millis: u64,
            ) -> Calls<Conn<Self>, i64> {
                let dir = dir.to_string_lossy().into_owned();
                Calls::repeat(
                    count,
                    $module::write_later,
                    (dir, witness.to_owned(), millis),
                )
            }
            fn late_writer() -> &'static str {
                std::any::type_name_of_val(&$module::write_later)
            }
            fn suite(isolation: Isolation) -> &'static Suite<Self> {
                static SUITES: [Suite<$backend>; 3] = [
                    Suite::new("seats", || seats::<$backend>(Isolation::Committed)),
                    Suite::new("seats", || seats::<$backend>(Isolation::Savepoint)),
                    Suite::new("seats", || seats::<$backend>(Isolation::Transaction)),
                ];
                match isolation {
                    Isolation::Savepoint => &SUITES[1],
                    Isolation::Transaction => &SUITES[2],
                    _ => &SUITES[0],
                }
            }
        }
    };
}

scenarios!(Postgres, pg);
scenarios!(Sqlite, lite);
scenarios!(MySql, my);

fn migrations() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/concurrent_migrations")
}

/// One free seat, and a gauge at zero.
fn seats<H: Scenarios>(isolation: Isolation) -> testdb::Result<Setup<H>> {
    let backend = H::backend().ok_or_else(|| Error::NotConfigured {
        backend: H::NAME,
        hint: "no server".into(),
    })?;
    Ok(
        Setup::new(TestDatabase::builder(backend).migrations(migrations()))
            .isolation(isolation)
            .time_limit(Duration::from_secs(120))
            .data(async |conn: &mut Conn<H>| {
                H::try_exec_on(conn, "INSERT INTO seats (id) VALUES (1)").await?;
                H::try_exec_on(conn, "INSERT INTO gauge (running) VALUES (0)").await
            }),
    )
}

/// Which of the twins runs a batch.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Subprocesses,
    InProcess,
}

const MODES: [Mode; 2] = [Mode::Subprocesses, Mode::InProcess];

async fn go<H: Scenarios, R: serde::de::DeserializeOwned>(
    mode: Mode,
    database: &Handle<H>,
    calls: Calls<Conn<H>, R>,
) -> testdb::Result<Outcomes<R>> {
    match mode {
        Mode::Subprocesses => spawn_concurrent(database, calls).await,
        Mode::InProcess => run_concurrent(database, calls).await,
    }
}

/// Runs `scenario` in a test of the committed suite, with the test's database.
async fn in_committed_test<H: Scenarios, T>(scenario: impl AsyncFnOnce(Handle<H>) -> T) -> T {
    H::suite(Isolation::Committed)
        .run(async |_: &mut Conn<H>, ()| {
            let handle = testdb::current::<H>()?;
            Ok::<_, BoxError>(scenario(handle).await)
        })
        .await
        .unwrap()
}

on_every_engine!(values_come_back_in_order_whatever_the_callers_print);

async fn values_come_back_in_order_whatever_the_callers_print<H: Scenarios>(_: H) {
    for mode in MODES {
        let outcomes =
            in_committed_test::<H, _>(async |db| go(mode, &db, H::echo(&[3, 1, 2])).await.unwrap())
                .await;
        assert!(outcomes.release_skew.is_some(), "{mode:?}");
        assert_eq!(outcomes.values().unwrap(), [3, 1, 2], "{mode:?}");
    }
}

on_every_engine!(errors_panics_and_timeouts_are_outcomes);

async fn errors_panics_and_timeouts_are_outcomes<H: Scenarios>(_: H) {
    for mode in MODES {
        let outcomes =
            in_committed_test::<H, _>(async |db| go(mode, &db, H::failures()).await.unwrap()).await;
        let outcomes = outcomes.outcomes;
        assert_eq!(outcomes[0], Outcome::Value(7), "{mode:?}");
        assert!(
            matches!(&outcomes[1], Outcome::Error(message) if message.contains("no such seat")),
            "{mode:?}: {:?}",
            outcomes[1]
        );
        assert!(
            matches!(&outcomes[2], Outcome::Panic(message) if message == "boom 42"),
            "{mode:?}: {:?}",
            outcomes[2]
        );
        assert_eq!(outcomes[3], Outcome::Timeout, "{mode:?}");
    }
}

on_every_engine!(a_crash_is_reported_with_its_status_and_stderr);

async fn a_crash_is_reported_with_its_status_and_stderr<H: Scenarios>(_: H) {
    let outcomes =
        in_committed_test::<H, _>(async |db| spawn_concurrent(&db, H::crash()).await.unwrap())
            .await
            .outcomes;
    match &outcomes[0] {
        Outcome::Crash { status, stderr } => {
            assert!(status.contains("signal"), "{status}");
            assert!(stderr.contains("about to crash"), "{stderr}");
        }
        other => panic!("expected a crash, got {other:?}"),
    }
    assert_eq!(outcomes[1], Outcome::Value(1), "the others are unaffected");
}

on_every_engine!(an_unregistered_caller_crashes_and_says_why);

async fn an_unregistered_caller_crashes_and_says_why<H: Scenarios>(_: H) {
    let outcomes = in_committed_test::<H, _>(async |db| {
        spawn_concurrent(&db, H::unregistered()).await.unwrap()
    })
    .await;
    match &outcomes[0] {
        Outcome::Crash { stderr, .. } => {
            assert!(stderr.contains("not registered"), "{stderr}");
            assert!(stderr.contains("unregistered"), "{stderr}");
        }
        other => panic!("expected a crash, got {other:?}"),
    }
}

on_every_engine!(the_batch_has_a_time_limit);

async fn the_batch_has_a_time_limit<H: Scenarios>(_: H) {
    for mode in MODES {
        let outcomes = in_committed_test::<H, _>(async |db| {
            let calls = H::sleepers(2, 30_000).batch_timeout(Duration::from_secs(2));
            go(mode, &db, calls).await.unwrap()
        })
        .await;
        assert_eq!(
            outcomes.outcomes,
            [Outcome::Timeout, Outcome::Timeout],
            "{mode:?}"
        );
    }
}

on_every_engine!(a_cap_limits_how_many_run_at_once);

async fn a_cap_limits_how_many_run_at_once<H: Scenarios>(_: H) {
    for mode in MODES {
        let seen = in_committed_test::<H, _>(async |db| {
            go(mode, &db, H::gauges(4).max_running(2))
                .await
                .unwrap()
                .values()
                .unwrap()
        })
        .await;
        assert_eq!(seen.len(), 4);
        assert!(
            seen.iter().all(|running| *running <= 2),
            "{mode:?}: {seen:?}"
        );
    }
}

on_every_engine!(data_other_connections_cannot_see_is_refused);

async fn data_other_connections_cannot_see_is_refused<H: Scenarios>(_: H) {
    for isolation in [Isolation::Savepoint, Isolation::Transaction] {
        for mode in MODES {
            let err = H::suite(isolation)
                .run(async |_: &mut Conn<H>, ()| {
                    let handle = testdb::current::<H>()?;
                    Ok::<_, BoxError>(go(mode, &handle, H::echo(&[1])).await)
                })
                .await
                .unwrap()
                .unwrap_err();
            assert!(matches!(err, Error::NotVisible { .. }), "{err:?}");
            let message = err.to_string();
            assert!(message.contains(&isolation.to_string()), "{message}");
            assert!(message.contains("Isolation::Committed"), "{message}");
        }
    }
}

on_every_engine!(the_naive_booking_oversells_and_the_fixed_one_never_does);

async fn the_naive_booking_oversells_and_the_fixed_one_never_does<H: Scenarios>(_: H) {
    for mode in MODES {
        let (naive, booked) = in_committed_test::<H, _>(async |db| {
            let outcomes = go(mode, &db, H::bookings(Booking::Naive, 8)).await.unwrap();
            let booked = H::scalar(db.pool(), "SELECT count(*) FROM bookings").await;
            (outcomes.values().unwrap(), booked)
        })
        .await;
        let winners = naive.iter().filter(|won| **won).count();
        assert!(winners > 1, "{mode:?}: the race was not caught: {naive:?}");
        assert_eq!(booked, winners as i64, "{mode:?}: oversold");

        let (fixed, booked) = in_committed_test::<H, _>(async |db| {
            let outcomes = go(mode, &db, H::bookings(Booking::Fixed, 8)).await.unwrap();
            let booked = H::scalar(db.pool(), "SELECT count(*) FROM bookings").await;
            (outcomes.values().unwrap(), booked)
        })
        .await;
        assert_eq!(fixed.iter().filter(|won| **won).count(), 1, "{mode:?}");
        assert_eq!(booked, 1, "{mode:?}");
    }
}

on_both!(a_transaction_alone_fixes_nothing_on_postgres_and_fails_callers_on_sqlite);

async fn a_transaction_alone_fixes_nothing_on_postgres_and_fails_callers_on_sqlite<H: Scenarios>(
    _: H,
) {
    for mode in MODES {
        let (outcomes, booked) = in_committed_test::<H, _>(async |db| {
            let outcomes = go(mode, &db, H::bookings(Booking::InTransaction, 8))
                .await
                .unwrap();
            let booked = H::scalar(db.pool(), "SELECT count(*) FROM bookings").await;
            (outcomes.outcomes, booked)
        })
        .await;
        let errors: Vec<&String> = outcomes
            .iter()
            .filter_map(|outcome| match outcome {
                Outcome::Error(message) => Some(message),
                _ => None,
            })
            .collect();
        if H::KEY == "sqlite" {
            // SQLite lets one writer in; the others' snapshots are stale by the time they write,
            // and they fail rather than wait.
            assert_eq!(booked, 1, "{mode:?}: {outcomes:?}");
            assert!(!errors.is_empty(), "{mode:?}: {outcomes:?}");
            assert!(
                errors
                    .iter()
                    .all(|message| message.contains("database is locked")),
                "{mode:?}: {errors:?}"
            );
        } else {
            // READ COMMITTED: every transaction saw no booking, and every one wrote one.
            assert!(booked > 1, "{mode:?}: {outcomes:?}");
            assert!(errors.is_empty(), "{mode:?}: {errors:?}");
        }
    }
}

/// `examples/race.rs`, built by `cargo test` alongside the tests, run as a user would: its
/// children are runs of a binary whose `main` is `#[tokio::main]`.
#[test]
fn the_race_example_catches_the_race() {
    let example = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples/race");
    if !example.exists() {
        // nextest builds no examples; `cargo test` (CI) does.
        common::say(&format!(
            "SKIPPED: {} is not built (run `cargo test`, which builds examples)",
            example.display()
        ));
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must build and run the example"
        );
        return;
    }
    let output = std::process::Command::new(&example).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let sold = |label: &str| -> usize {
        let line = stdout
            .lines()
            .find(|line| {
                line.strip_prefix(label)
                    .is_some_and(|rest| rest.trim_start().starts_with("seat sold"))
            })
            .unwrap_or_else(|| panic!("no line for {label} in:\n{stdout}"));
        line.split_once("seat sold ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|count| count.parse().ok())
            .unwrap()
    };
    assert!(sold("SQLite, naive") > 1, "{stdout}");
    assert_eq!(sold("SQLite, naive in a transaction"), 1, "{stdout}");
    assert_eq!(sold("SQLite, fixed"), 1, "{stdout}");
    if common::postgres().is_some() {
        assert!(sold("PostgreSQL, naive") > 1, "{stdout}");
        assert!(sold("PostgreSQL, naive in a transaction") > 1, "{stdout}");
        assert_eq!(sold("PostgreSQL, fixed"), 1, "{stdout}");
    }
}

// A test process killed in the middle of a batch: its children must die with it, before they
// write anything. The test process is a child of the test (`child_runs_a_batch_until_killed`); it
// and its batch's children report through files in a directory named by `KILL_DIR`.

/// The directory through which a killed batch's processes report, in their environment.
const KILL_DIR: &str = "TESTDB_TEST_KILL_DIR";
/// The URL of the database the killed batch's callers would write into, in their environment:
/// the test's, not the killed process's, which any sweep may drop once its owner is dead.
const WITNESS: &str = "TESTDB_TEST_WITNESS";
/// How many children the doomed batch has.
const DOOMED: usize = 4;
/// How long its callers wait before they write, once running: past `DEATH_LIMIT`, so that a
/// child that would write is still alive when it is looked for.
const WRITE_DELAY: Duration = Duration::from_millis(2500);
/// How soon after the kill every child must be gone.
const DEATH_LIMIT: Duration = Duration::from_secs(2);

on_every_engine!(
    children_die_with_a_parent_killed_before_the_release,
    children_die_with_a_parent_killed_while_callers_run
);

async fn children_die_with_a_parent_killed_before_the_release<H: Scenarios>(backend: H) {
    killed_mid_batch(backend, true).await;
}

async fn children_die_with_a_parent_killed_while_callers_run<H: Scenarios>(backend: H) {
    killed_mid_batch(backend, false).await;
}

/// Kills a test process in the middle of a batch of `DOOMED` callers that each write a row: while
/// the first child is held back before it connects, so that the others wait for a release that
/// never comes (`before_release`), or while every caller waits to write. Then no child may be alive
/// 2 s later, and no row may be written.
async fn killed_mid_batch<H: Scenarios>(backend: H, before_release: bool) {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let hold = dir.join("hold");
    if before_release {
        std::fs::write(&hold, "").unwrap();
    }
    let witness = TestDatabase::builder(backend.clone())
        .migrations(migrations())
        .create()
        .await
        .unwrap();
    let (parent, name) = spawn_doomed_parent::<H>(dir, witness.url());
    let mut parent = KillOnDrop(parent);
    let parent = &mut parent.0;

    // Wait until the batch is where the kill should find it.
    let placed = Instant::now();
    loop {
        let started = reports(dir, "child-").len();
        let placed_yet = if before_release {
            started == DOOMED && dir.join("held").exists()
        } else {
            reports(dir, "running-").len() == DOOMED
        };
        if placed_yet {
            break;
        }
        if let Some(status) = parent.try_wait().unwrap() {
            panic!("the test process ended before the kill: {status}");
        }
        assert!(
            placed.elapsed() < Duration::from_secs(30),
            "the batch never got going: {started} children started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if before_release {
        // Long enough for the children not held back to connect and wait for the release (it
        // takes them milliseconds); the held one keeps the batch from being released meanwhile.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            reports(dir, "running-").is_empty(),
            "no caller runs before the release"
        );
    }
    let children = children_of(dir, parent.id());
    assert_eq!(children.len(), DOOMED, "{children:?}");

    parent.kill().unwrap();
    parent.wait().unwrap();
    let killed = Instant::now();
    let _ = std::fs::remove_file(&hold);

    let mut alive: Vec<u32> = children.clone();
    while !alive.is_empty() && killed.elapsed() < DEATH_LIMIT {
        tokio::time::sleep(Duration::from_millis(20)).await;
        alive.retain(|pid| is_alive(*pid));
    }
    // Whatever the assertion says, nothing may stay behind to write into later tests' data.
    for pid in &alive {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    assert!(
        alive.is_empty(),
        "children still alive {DEATH_LIMIT:?} after their parent was killed: {alive:?} of \
         {children:?}"
    );

    // Past the time the callers would have written (counted from before the kill).
    tokio::time::sleep_until((killed + WRITE_DELAY + Duration::from_millis(500)).into()).await;
    let written = H::scalar(witness.pool(), "SELECT count(*) FROM bookings").await;
    assert_eq!(written, 0, "no caller wrote after its parent was killed");
    if !before_release {
        assert_eq!(
            reports(dir, "running-").len(),
            DOOMED,
            "every caller was running when its parent was killed"
        );
    }

    // The killed process's database is left for a sweep, as after any kill.
    for _ in 0..40 {
        testdb::sweep(&backend).await.unwrap();
        if !H::exists(&name).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

on_every_engine!(a_child_tells_a_dead_parent_from_a_release);

/// How the test, playing a child's parent, leaves it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Leaving {
    /// Closes the release pipe without releasing, the socket still open.
    PipeClosedBeforeRelease,
    /// Releases, then closes the socket while the caller waits to write.
    SocketClosedWhileRunning,
    /// Names a process that is not the child's parent as its parent.
    NotItsParent,
}

/// testdb's exit code for a child whose parent is gone.
const PARENT_GONE: i32 = 4;

/// On Linux the kernel kills a child with its parent, which hides what the child does by itself
/// (all it has elsewhere, and a guard against the kernel's signal coming late). Here the test plays
/// the parent's part — socket, call, release pipe — and leaves as a dying parent would, without
/// dying: the child must end by itself, at once, without running its caller's statement.
async fn a_child_tells_a_dead_parent_from_a_release<H: Scenarios>(backend: H) {
    let witness = TestDatabase::builder(backend)
        .migrations(migrations())
        .create()
        .await
        .unwrap();
    for leaving in [
        Leaving::PipeClosedBeforeRelease,
        Leaving::SocketClosedWhileRunning,
        Leaving::NotItsParent,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (status, ran) = leave_a_child::<H>(dir.path(), witness.url(), leaving);
        assert_eq!(
            status.and_then(|status| status.code()),
            Some(PARENT_GONE),
            "{leaving:?}: the child ends by itself within {DEATH_LIMIT:?}, saying its parent is gone"
        );
        assert_eq!(
            ran,
            leaving == Leaving::SocketClosedWhileRunning,
            "{leaving:?}: whether the caller ran"
        );
        let written = H::scalar(witness.pool(), "SELECT count(*) FROM bookings").await;
        assert_eq!(written, 0, "{leaving:?}: the caller never wrote");
    }
}

/// Starts a child as `spawn_concurrent` does, for `write_later`, and leaves it as `leaving` says;
/// returns how it ended (none if it still ran `DEATH_LIMIT` later), and whether its caller ran.
fn leave_a_child<H: Scenarios>(
    dir: &Path,
    witness: &str,
    leaving: Leaving,
) -> (Option<std::process::ExitStatus>, bool) {
    use std::io::{BufRead, Write};
    let socket = dir.join("parent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    listener.set_nonblocking(true).unwrap();
    let (release, mut releaser) = std::io::pipe().unwrap();
    let parent = match leaving {
        Leaving::NotItsParent => 1,
        _ => std::process::id(),
    };
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "testdb_spawn_concurrent_entry",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TESTDB_CONCURRENT_SOCKET", &socket)
        .env("TESTDB_CONCURRENT_CALLER", H::late_writer())
        .env("TESTDB_CONCURRENT_INDEX", "0")
        .env("TESTDB_CONCURRENT_PARENT", parent.to_string())
        .stdin(release)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let running = || reports(dir, "running-").len() == 1;
    let mut channel = None;
    if leaving != Leaving::NotItsParent {
        let started = Instant::now();
        let stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    let status = child.0.try_wait().unwrap();
                    assert!(status.is_none(), "the child ended early: {status:?}");
                    assert!(
                        started.elapsed() < Duration::from_secs(30),
                        "it never called"
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(err) => panic!("{err}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        let mut lines = std::io::BufReader::new(stream.try_clone().unwrap()).lines();
        let hello = lines.next().unwrap().unwrap();
        assert!(hello.contains("hello"), "{hello}");
        let dir = dir.to_string_lossy().into_owned();
        let millis = WRITE_DELAY.as_millis() as u64;
        let call = serde_json::json!({ "url": witness, "args": [dir, witness, millis] });
        writeln!(&stream, "{call}").unwrap();
        let ready = lines.next().unwrap().unwrap();
        assert!(ready.contains("ready"), "{ready}");
        if leaving == Leaving::SocketClosedWhileRunning {
            releaser.write_all(b"!").unwrap();
            let released = Instant::now();
            while !running() {
                assert!(released.elapsed() < Duration::from_secs(10), "it never ran");
                std::thread::sleep(Duration::from_millis(5));
            }
            drop(lines);
            drop(stream);
        } else {
            channel = Some((lines, stream));
        }
    }
    drop(releaser);
    let left = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break Some(status);
        }
        if left.elapsed() > DEATH_LIMIT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    drop(channel);
    (status, running())
}

/// A process killed if the test fails before it kills it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `child_runs_a_batch_until_killed` in a child process reporting into `dir`; returns it
/// and the name of its database once it has one.
fn spawn_doomed_parent<H: Harness>(dir: &Path, witness: &str) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_runs_a_batch_until_killed",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(common::CHILD_BACKEND, H::KEY)
        .env(KILL_DIR, dir)
        .env(WITNESS, witness)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    while let Some(line) = lines.next() {
        if let Some((_, name)) = line.unwrap().split_once("READY ") {
            let name = name.trim().to_owned();
            std::thread::spawn(move || lines.for_each(drop));
            return (child, name);
        }
    }
    panic!("the test process ended early: {:?}", child.wait());
}

/// Helper, run as a child by `killed_mid_batch`: runs a batch of writers until it is killed.
#[tokio::test]
#[ignore = "run by other tests in a child process"]
async fn child_runs_a_batch_until_killed() {
    async fn run<H: Scenarios>() {
        let Some(backend) = H::backend() else { return };
        let dir = PathBuf::from(std::env::var_os(KILL_DIR).unwrap());
        let witness = std::env::var(WITNESS).unwrap();
        let db = TestDatabase::builder(backend)
            .migrations(migrations())
            .create()
            .await
            .unwrap();
        println!("READY {}", db.name());
        // Before the release the callers would write at once; while they run, after a delay.
        let delay = if dir.join("hold").exists() {
            0
        } else {
            WRITE_DELAY.as_millis() as u64
        };
        let outcomes =
            spawn_concurrent(&db.handle(), H::late_writers(DOOMED, &dir, &witness, delay)).await;
        panic!("the batch ended before it was killed: {outcomes:?}");
    }
    match common::child_backend().as_str() {
        "sqlite" => run::<Sqlite>().await,
        "postgres" => run::<Postgres>().await,
        "mysql" => run::<MySql>().await,
        other => panic!("unknown backend {other:?}"),
    }
}

/// Runs first in every `spawn_concurrent` child of this binary: libtest runs the tests its filter
/// selects in order of name, and this name contains the entry point's. In a killed batch's
/// children (`KILL_DIR` set) it takes the next slot and reports the child's process id; the first
/// child waits while the test holds it back, before it ever reaches the entry point. Anywhere else
/// it does nothing.
#[test]
#[ignore = "runs in spawn_concurrent's child processes, before their entry point"]
fn a_hold_before_testdb_spawn_concurrent_entry() {
    let Some(dir) = std::env::var_os(KILL_DIR).map(PathBuf::from) else {
        return;
    };
    let slot = (0..)
        .find(|slot| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(dir.join(format!("slot-{slot}")))
                .is_ok()
        })
        .unwrap();
    // Written whole, then renamed: the test never reads half a report.
    let report = dir.join(format!("report-{slot}"));
    std::fs::write(&report, std::process::id().to_string()).unwrap();
    std::fs::rename(&report, dir.join(format!("child-{slot}"))).unwrap();
    if slot == 0 && dir.join("hold").exists() {
        std::fs::write(dir.join("held"), "").unwrap();
        while dir.join("hold").exists() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The contents of the files in `dir` whose names start with `prefix`.
fn reports(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(prefix))
        .map(|entry| std::fs::read_to_string(entry.path()).unwrap_or_default())
        .collect()
}

/// The batch's children, as they reported themselves (and, on Linux, as the kernel lists the
/// parent's children: the two must agree).
fn children_of(dir: &Path, parent: u32) -> Vec<u32> {
    let mut reported: Vec<u32> = reports(dir, "child-")
        .iter()
        .map(|report| report.parse().unwrap())
        .collect();
    reported.sort_unstable();
    #[cfg(target_os = "linux")]
    {
        let mut listed: Vec<u32> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| proc_stat(*pid).is_some_and(|(_, ppid)| ppid == parent))
            .collect();
        listed.sort_unstable();
        assert_eq!(listed, reported, "the children the kernel lists");
    }
    reported
}

/// A process's state and parent, from `/proc/<pid>/stat`.
#[cfg(target_os = "linux")]
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command's name, in parentheses, may hold spaces: the fields that matter follow it.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether a process runs (a zombie is dead: whoever adopted it may be slow to reap it).
fn is_alive(pid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        proc_stat(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X'))
    }
    #[cfg(not(target_os = "linux"))]
    {
        std::process::Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }
}
