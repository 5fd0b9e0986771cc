//! Savepoint suites on every engine: set up once, a savepoint around every test.

// Tests, examples and benches may panic and print; the library may not (see Cargo.toml).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

#[macro_use]
mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::Harness;
use sqlx::Connection;
use testdb::{Error, Setup, Suite, TestDatabase};
use testdb_mysql::MySql;
use testdb_postgres::Postgres;
use testdb_sqlite::Sqlite;

type Conn<H> = <<H as testdb::backend::Driver>::Database as sqlx::Database>::Connection;

/// What the setup returns: every test gets its own clone.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Seed {
    ada: i64,
    names: Vec<String>,
}

const MAIN: usize = 0;
const OTHER: usize = 1;
const ESCAPES: usize = 2;
const SLOW: usize = 3;
const FAILING: usize = 4;

/// How many times each (backend, suite) ran its setup in this process.
static SETUPS: Mutex<Option<HashMap<(&'static str, usize), usize>>> = Mutex::new(None);
/// The database a failing setup ran on, to check it was removed.
static FAILED_ON: Mutex<Option<HashMap<&'static str, String>>> = Mutex::new(None);

fn setups<H: Harness>(suite: usize) -> usize {
    let map = SETUPS.lock().unwrap();
    map.as_ref()
        .and_then(|m| m.get(&(H::KEY, suite)).copied())
        .unwrap_or(0)
}

fn migrations<H: Harness>() -> PathBuf {
    let dir = if H::KEY == "mysql" {
        "tests/migrations_suite_mysql"
    } else {
        "tests/migrations_suite"
    };
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir)
}

fn builder<H: Harness>() -> testdb::Result<testdb::Builder<H>> {
    let backend = H::backend().ok_or_else(|| Error::NotConfigured {
        backend: H::NAME,
        hint: "set TESTDB_POSTGRES_URL".into(),
    })?;
    Ok(TestDatabase::builder(backend).migrations(migrations::<H>()))
}

/// The setup of every suite here: two users, counted.
fn seeded<H: Harness, const SUITE: usize>() -> testdb::Result<Setup<H, Seed>> {
    let setup = Setup::new(builder::<H>()?).data(async |conn: &mut Conn<H>| {
        *SETUPS
            .lock()
            .unwrap()
            .get_or_insert_with(HashMap::new)
            .entry((H::KEY, SUITE))
            .or_default() += 1;
        H::try_exec_on(
            conn,
            "INSERT INTO users (id, name) VALUES (1, 'ada'), (2, 'grace')",
        )
        .await?;
        if SUITE == FAILING {
            let name = H::name_on(conn).await;
            FAILED_ON
                .lock()
                .unwrap()
                .get_or_insert_with(HashMap::new)
                .insert(H::KEY, name);
            return Err::<Seed, _>(sqlx::Error::Protocol("the seed data is wrong".into()));
        }
        Ok(Seed {
            ada: 1,
            names: vec!["ada".into(), "grace".into()],
        })
    });
    Ok(if SUITE == SLOW {
        setup.time_limit(Duration::from_millis(300))
    } else {
        setup
    })
}

fn broken<H: Harness>() -> testdb::Result<Setup<H, Seed>> {
    let backend = H::backend().ok_or_else(|| Error::NotConfigured {
        backend: H::NAME,
        hint: "set TESTDB_POSTGRES_URL".into(),
    })?;
    Ok(
        Setup::new(TestDatabase::builder(backend).migrations(common::bad_migrations())).data(
            async |_: &mut Conn<H>| {
                Ok::<_, Error>(Seed {
                    ada: 0,
                    names: vec![],
                })
            },
        ),
    )
}

/// The suites of each backend, as `static`s.
trait Suites: Harness {
    fn suite(which: usize) -> &'static Suite<Self, Seed>;
    fn broken() -> &'static Suite<Self, Seed>;
    /// Set while a test of the main suite runs.
    fn busy() -> &'static AtomicBool;
}

macro_rules! suites {
    ($backend:ty) => {
        impl Suites for $backend {
            fn suite(which: usize) -> &'static Suite<Self, Seed> {
                static SUITES: [Suite<$backend, Seed>; 5] = [
                    Suite::new("main", seeded::<$backend, MAIN>),
                    Suite::new("other", seeded::<$backend, OTHER>),
                    Suite::new("escapes", seeded::<$backend, ESCAPES>),
                    Suite::new("slow", seeded::<$backend, SLOW>),
                    Suite::new("failing", seeded::<$backend, FAILING>),
                ];
                &SUITES[which]
            }

            fn broken() -> &'static Suite<Self, Seed> {
                static BROKEN: Suite<$backend, Seed> = Suite::new("broken", broken::<$backend>);
                &BROKEN
            }

            fn busy() -> &'static AtomicBool {
                static BUSY: AtomicBool = AtomicBool::new(false);
                &BUSY
            }
        }
    };
}
suites!(Sqlite);
suites!(Postgres);
suites!(MySql);

/// The body of every main-suite test: proves it runs alone on the suite's connection, sees
/// exactly the setup's rows, and writes one of its own.
async fn exclusive<H: Suites>(conn: &mut Conn<H>) {
    assert!(
        !H::busy().swap(true, Ordering::SeqCst),
        "another test of the suite is running at the same time"
    );
    assert_eq!(H::scalar_on(conn, "SELECT count(*) FROM users").await, 2);
    H::try_exec_on(conn, "INSERT INTO users (id, name) VALUES (100, 'mine')")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(H::scalar_on(conn, "SELECT count(*) FROM users").await, 3);
    H::busy().store(false, Ordering::SeqCst);
}

on_every_engine!(
    setup_runs_once_and_each_test_gets_its_own_clone,
    tests_of_one_suite_take_turns,
    different_suites_do_not_wait_for_each_other,
    nested_transactions_behave_as_in_production,
    a_test_that_ends_the_suite_transaction_fails_and_the_baseline_is_rebuilt,
    a_failed_statement_is_rolled_back_cleanly,
    a_dropped_test_leaves_no_trace,
    a_slow_test_fails_with_its_time_limit,
    a_failed_setup_fails_every_test_and_commits_nothing,
);
// MySQL defers no foreign key.
on_both!(deferred_constraints_are_checked_at_the_end_of_each_test);
on_every_engine_sync!(
    a_plain_test_uses_the_suite,
    a_panicking_test_leaves_no_trace
);

async fn setup_runs_once_and_each_test_gets_its_own_clone<H: Suites>(_: H) {
    let main = H::suite(MAIN);
    main.run(async |conn: &mut Conn<H>, mut seed: Seed| {
        exclusive::<H>(conn).await;
        seed.names.push("changed by one test".into());
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    let seed = main
        .run(async |conn: &mut Conn<H>, seed: Seed| {
            exclusive::<H>(conn).await;
            Ok::<_, Error>(seed)
        })
        .await
        .unwrap();
    assert_eq!(
        seed.names,
        ["ada", "grace"],
        "a test's changes to its clone stay its own"
    );
    assert_eq!(seed.ada, 1);
    // Built into a template once per run (or not at all, when an earlier run's is reused): the
    // setup runs at most once, whatever the number of tests.
    assert!(
        setups::<H>(MAIN) <= 1,
        "the setup ran at most once in this process"
    );
}

async fn tests_of_one_suite_take_turns<H: Suites>(_: H) {
    // Several tests at once on this runtime (libtest's threads do the same across tests).
    let main = H::suite(MAIN);
    let run = || {
        main.run(async |conn: &mut Conn<H>, _| {
            exclusive::<H>(conn).await;
            Ok::<_, Error>(())
        })
    };
    let (a, b, c) = tokio::join!(run(), run(), run());
    a.and(b).and(c).unwrap();
}

async fn different_suites_do_not_wait_for_each_other<H: Suites>(_: H) {
    // A test of one suite runs a test of another inside it: with one lock for all suites this
    // would never finish.
    let outer = H::suite(MAIN).run(async |conn: &mut Conn<H>, _| {
        exclusive::<H>(conn).await;
        H::suite(OTHER)
            .run(async |other: &mut Conn<H>, _| {
                assert_eq!(H::scalar_on(other, "SELECT count(*) FROM users").await, 2);
                Ok::<_, Error>(())
            })
            .await
    });
    tokio::time::timeout(Duration::from_secs(30), outer)
        .await
        .expect("suites are independent")
        .unwrap();
}

async fn nested_transactions_behave_as_in_production<H: Suites>(_: H) {
    H::suite(MAIN)
        .run(async |conn: &mut Conn<H>, _| {
            let count = "SELECT count(*) FROM users WHERE id >= 10";
            // Committed: visible for the rest of the test.
            let mut tx = conn.begin().await?;
            H::try_exec_on(&mut tx, "INSERT INTO users (id, name) VALUES (10, 'kept')").await?;
            tx.commit().await?;
            assert_eq!(H::scalar_on(conn, count).await, 1);
            // Rolled back, explicitly or by dropping the transaction: gone.
            let mut tx = conn.begin().await?;
            H::try_exec_on(
                &mut tx,
                "INSERT INTO users (id, name) VALUES (11, 'undone')",
            )
            .await?;
            tx.rollback().await?;
            {
                let mut tx = conn.begin().await?;
                H::try_exec_on(
                    &mut tx,
                    "INSERT INTO users (id, name) VALUES (12, 'dropped')",
                )
                .await?;
            }
            assert_eq!(H::scalar_on(conn, count).await, 1);
            // Two levels: the inner rollback undoes only the inner work.
            let mut outer = conn.begin().await?;
            H::try_exec_on(
                &mut outer,
                "INSERT INTO users (id, name) VALUES (13, 'outer')",
            )
            .await?;
            let mut inner = outer.begin().await?;
            H::try_exec_on(
                &mut inner,
                "INSERT INTO users (id, name) VALUES (14, 'inner')",
            )
            .await?;
            inner.rollback().await?;
            outer.commit().await?;
            assert_eq!(H::scalar_on(conn, count).await, 2);
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .await
        .unwrap();
    // None of it survives the test.
    H::suite(MAIN)
        .run(async |conn: &mut Conn<H>, _| {
            assert_eq!(H::scalar_on(conn, "SELECT count(*) FROM users").await, 2);
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
}

async fn deferred_constraints_are_checked_at_the_end_of_each_test<H: Suites>(_: H) {
    let main = H::suite(MAIN);
    let err = main
        .run(async |conn: &mut Conn<H>, _| {
            // Deferred: the statement succeeds; a commit would not.
            H::try_exec_on(
                conn,
                "INSERT INTO notes (id, user_id, body) VALUES (1, 999, 'x')",
            )
            .await
            .unwrap();
            Ok::<_, Error>(())
        })
        .await
        .expect_err("the test broke a deferred foreign key");
    let Error::DeferredConstraint { message, .. } = &err else {
        panic!("expected a deferred-constraint error, got {err:?}");
    };
    assert!(
        message.contains("notes"),
        "names the constraint or table: {message}"
    );

    // Fixed before the end: fine, as a commit would be.
    main.run(async |conn: &mut Conn<H>, _| {
        H::try_exec_on(
            conn,
            "INSERT INTO notes (id, user_id, body) VALUES (1, 999, 'x')",
        )
        .await?;
        H::try_exec_on(conn, "INSERT INTO users (id, name) VALUES (999, 'late')").await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    })
    .await
    .unwrap();

    main.run(async |conn: &mut Conn<H>, _| {
        assert_eq!(H::scalar_on(conn, "SELECT count(*) FROM notes").await, 0);
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

async fn a_test_that_ends_the_suite_transaction_fails_and_the_baseline_is_rebuilt<H: Suites>(_: H) {
    let suite = H::suite(ESCAPES);
    for statement in ["COMMIT", "ROLLBACK"] {
        let mut escaped_in = String::new();
        let err = suite
            .run(async |conn: &mut Conn<H>, _| {
                escaped_in = testdb::current::<H>()?.name().to_owned();
                H::try_exec_on(conn, "INSERT INTO users (id, name) VALUES (50, 'leak')").await?;
                H::try_exec_on(
                    conn,
                    if statement == "COMMIT" {
                        "COMMIT"
                    } else {
                        "ROLLBACK"
                    },
                )
                .await?;
                // Now outside any transaction: this would be committed for good.
                H::try_exec_on(
                    conn,
                    "INSERT INTO users (id, name) VALUES (51, 'leak again')",
                )
                .await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
            .await;
        let err = err.expect_err("ending the suite transaction fails the test");
        assert!(matches!(err, Error::Escaped { .. }), "{statement}: {err:?}");

        let next = suite
            .run(async |conn: &mut Conn<H>, _| {
                let users = H::scalar_on(conn, "SELECT count(*) FROM users").await;
                assert_eq!(users, 2, "after {statement}, exactly the setup data");
                Ok::<_, Error>(testdb::current::<H>()?.name().to_owned())
            })
            .await
            .unwrap();
        assert_ne!(
            next, escaped_in,
            "after {statement}, a new copy of the template"
        );
    }
    assert!(setups::<H>(ESCAPES) <= 1, "copied, not set up again");
}

async fn a_failed_statement_is_rolled_back_cleanly<H: Suites>(_: H) {
    let main = H::suite(MAIN);
    // The test ignores its failed statement (on PostgreSQL its transaction is now aborted).
    main.run(async |conn: &mut Conn<H>, _| {
        H::try_exec_on(conn, "INSERT INTO users (id, name) VALUES (100, 'first')").await?;
        let duplicate = H::try_exec_on(conn, "INSERT INTO users (id, name) VALUES (1, 'again')");
        assert!(duplicate.await.is_err());
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    })
    .await
    .unwrap();
    // The test returns its failed statement's error: that is what the test fails with.
    let err = main
        .run(async |conn: &mut Conn<H>, _| {
            H::try_exec_on(conn, "INSERT INTO no_such_table VALUES (1)").await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .await
        .expect_err("the statement failed");
    assert!(matches!(err, Error::Test { .. }), "{err:?}");
    assert!(format!("{err:?}").contains("no_such_table"), "{err:?}");
    main.run(async |conn: &mut Conn<H>, _| {
        exclusive::<H>(conn).await;
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

async fn a_dropped_test_leaves_no_trace<H: Suites>(_: H) {
    let main = H::suite(MAIN);
    // Built first, so that the timeout drops the test's body and not the suite's build (which a
    // busy machine can take longer than the timeout over; a dropped build is simply run again).
    main.run(async |_: &mut Conn<H>, _| Ok::<_, Error>(()))
        .await
        .unwrap();
    let abandoned = main.run(async |conn: &mut Conn<H>, _| {
        H::try_exec_on(
            conn,
            "INSERT INTO users (id, name) VALUES (100, 'abandoned')",
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(200), abandoned)
            .await
            .is_err()
    );
    main.run(async |conn: &mut Conn<H>, _| {
        exclusive::<H>(conn).await;
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

async fn a_slow_test_fails_with_its_time_limit<H: Suites>(_: H) {
    let slow = H::suite(SLOW);
    let err = slow
        .run(async |_: &mut Conn<H>, _| {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, Error>(())
        })
        .await
        .expect_err("over the time limit");
    assert!(matches!(err, Error::TimeLimit { .. }), "{err:?}");
    assert!(
        err.to_string().contains("second connection"),
        "names the likely cause: {err}"
    );
    slow.run(async |conn: &mut Conn<H>, _| {
        assert_eq!(H::scalar_on(conn, "SELECT count(*) FROM users").await, 2);
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

async fn a_failed_setup_fails_every_test_and_commits_nothing<H: Suites>(_: H) {
    for _ in 0..2 {
        let err = H::broken()
            .run(async |_: &mut Conn<H>, _| Ok::<_, Error>(()))
            .await
            .expect_err("the migrations fail");
        assert!(matches!(err, Error::Setup { .. }), "{err:?}");
        // The migrations' error is kept whole, as the source: every test reports it.
        let cause = std::error::Error::source(&err).expect("the cause");
        let cause = cause
            .downcast_ref::<std::sync::Arc<Error>>()
            .expect("testdb's own error");
        assert!(matches!(**cause, Error::Migrate { .. }), "{cause:?}");
        assert!(format!("{err:?}").contains("no_such_table"), "{err:?}");
    }
    for _ in 0..2 {
        let err = H::suite(FAILING)
            .run(async |_: &mut Conn<H>, _| Ok::<_, Error>(()))
            .await
            .expect_err("the setup function fails");
        assert!(
            format!("{err:?}").contains("the seed data is wrong"),
            "{err:?}"
        );
    }
    let name = FAILED_ON.lock().unwrap().as_ref().unwrap()[H::KEY].clone();
    assert!(
        !H::exists(&name).await,
        "the failed setup's database {name} is gone"
    );
}

fn a_plain_test_uses_the_suite<H: Suites>() {
    if H::backend().is_none() {
        return;
    }
    H::suite(MAIN)
        .run_blocking(async |conn: &mut Conn<H>, _| {
            exclusive::<H>(conn).await;
            Ok::<_, Error>(())
        })
        .unwrap();
}

fn a_panicking_test_leaves_no_trace<H: Suites>() {
    if H::backend().is_none() {
        return;
    }
    let main = H::suite(MAIN);
    let panicked = std::panic::catch_unwind(|| {
        main.run_blocking(async |conn: &mut Conn<H>, _| {
            H::try_exec_on(conn, "INSERT INTO users (id, name) VALUES (100, 'panics')")
                .await
                .unwrap();
            panic!("the test panics");
            #[allow(unreachable_code)]
            Ok::<_, Error>(())
        })
    });
    assert!(panicked.is_err());
    main.run_blocking(async |conn: &mut Conn<H>, _| {
        exclusive::<H>(conn).await;
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// A suite spanning a PostgreSQL and a SQLite database.
static BOTH: Suite<(Postgres, Sqlite)> = Suite::new("both", || {
    Ok(
        Setup::new((builder::<Postgres>()?, builder::<Sqlite>()?)).data(
            async |(pg, lite): (&mut sqlx::PgConnection, &mut sqlx::SqliteConnection)| {
                sqlx::query("INSERT INTO users (id, name) VALUES (1, 'ada')")
                    .execute(pg)
                    .await?;
                sqlx::query("INSERT INTO users (id, name) VALUES (1, 'ada')")
                    .execute(lite)
                    .await?;
                Ok::<_, sqlx::Error>(())
            },
        ),
    )
});

#[tokio::test]
async fn a_suite_spans_several_databases() {
    if common::postgres().is_none() {
        return;
    }
    for _ in 0..2 {
        BOTH.run(
            async |(pg, lite): (&mut sqlx::PgConnection, &mut sqlx::SqliteConnection), ()| {
                let count = "SELECT count(*) FROM users";
                assert_eq!(<Postgres as Harness>::scalar_on(pg, count).await, 1);
                assert_eq!(<Sqlite as Harness>::scalar_on(lite, count).await, 1);
                sqlx::query("INSERT INTO users (id, name) VALUES (2, 'x')")
                    .execute(&mut *pg)
                    .await?;
                sqlx::query("INSERT INTO users (id, name) VALUES (2, 'x')")
                    .execute(&mut *lite)
                    .await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            },
        )
        .await
        .unwrap();
    }
}
