//! `spawn_concurrent` and its in-process twin `run_concurrent`, on SQLite and PostgreSQL: outcomes,
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
use std::time::Duration;

use common::Harness;
use sqlx::Database;
use testdb::{
    Calls, Error, Handle, Isolation, Outcome, Outcomes, Setup, Suite, TestDatabase, run_concurrent,
    spawn_concurrent,
};
use testdb_postgres::Postgres;
use testdb_sqlite::Sqlite;

type Conn<H> = <<H as testdb::Backend>::Database as Database>::Connection;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The callers, written once for each backend's connection type.
macro_rules! callers_on {
    ($module:ident, $conn:ty) => {
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
                let running: i64 = sqlx::query_scalar(
                    "UPDATE gauge SET running = running + 1 RETURNING CAST(running AS BIGINT)",
                )
                .fetch_one(&mut *conn)
                .await?;
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

            /// Not listed in `callers!`.
            pub(crate) async fn unregistered(_: &mut $conn, (): ()) -> Result<i64, BoxError> {
                Ok(1)
            }
        }
    };
}

callers_on!(pg, sqlx::PgConnection);
callers_on!(lite, sqlx::SqliteConnection);

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
    lite::echo,
    lite::fails,
    lite::panics,
    lite::crashes,
    lite::sleeps,
    lite::gauge,
    lite::book_naive,
    lite::book_in_transaction,
    lite::book_fixed,
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

on_both!(values_come_back_in_order_whatever_the_callers_print);

async fn values_come_back_in_order_whatever_the_callers_print<H: Scenarios>(_: H) {
    for mode in MODES {
        let outcomes =
            in_committed_test::<H, _>(async |db| go(mode, &db, H::echo(&[3, 1, 2])).await.unwrap())
                .await;
        assert!(outcomes.release_skew.is_some(), "{mode:?}");
        assert_eq!(outcomes.values().unwrap(), [3, 1, 2], "{mode:?}");
    }
}

on_both!(errors_panics_and_timeouts_are_outcomes);

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

on_both!(a_crash_is_reported_with_its_status_and_stderr);

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

on_both!(an_unregistered_caller_crashes_and_says_why);

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

on_both!(the_batch_has_a_time_limit);

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

on_both!(a_cap_limits_how_many_run_at_once);

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

on_both!(data_other_connections_cannot_see_is_refused);

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

on_both!(the_naive_booking_oversells_and_the_fixed_one_never_does);

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
