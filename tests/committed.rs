//! The isolations that commit their baseline — transaction, committed, fresh database — and the
//! template they share, on every engine (the scenarios that need what MySQL lacks — deferred keys,
//! a row's identity — on SQLite and PostgreSQL).

// Tests, examples and benches may panic and print; the library may not (see Cargo.toml).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

#[macro_use]
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use common::{Harness, child_backend};
use serde::{Deserialize, Serialize};
use sqlx::Database;
use testdb::{Error, Fixtures, Isolation, Setup, Suite, TestDatabase};
use testdb_mysql::MySql;
use testdb_postgres::Postgres;
use testdb_sqlite::Sqlite;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Conn<H> = <<H as testdb::backend::Driver>::Database as Database>::Connection;

/// What the setup hands every test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Shop {
    ada: i64,
    orders: i64,
    token: String,
}

/// A token unique to this run of this process: names templates no earlier run built. Only for
/// suites used by one test: processes of one run share templates only if their keys agree.
fn token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("{}-{nanos}", std::process::id())
    })
}

trait Shops: Harness {
    /// Seeds two notes (SQLite: at rowids 10 and 20, which a rewrite would not keep).
    const NOTES: &'static str;
    /// Something that changes when the rows of `notes` are rewritten.
    const NOTES_IDENTITY: &'static str;
    fn schema() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/committed_schema")
            .join(Self::KEY)
    }
    fn suite(which: Which) -> &'static Suite<Self, Shop>;
}

impl Shops for Sqlite {
    const NOTES: &'static str =
        "INSERT INTO notes (rowid, id, body) VALUES (10, 1, 'first'), (20, 2, 'second')";
    const NOTES_IDENTITY: &'static str = "SELECT group_concat(rowid, ',') FROM notes";
    fn suite(which: Which) -> &'static Suite<Self, Shop> {
        suites!(Sqlite, which)
    }
}

impl Shops for MySql {
    const NOTES: &'static str = "INSERT INTO notes (id, body) VALUES (1, 'first'), (2, 'second')";
    // InnoDB shows no row version: the scenario that compares it runs on the other engines.
    const NOTES_IDENTITY: &'static str = "SELECT GROUP_CONCAT(id ORDER BY id) FROM notes";
    fn suite(which: Which) -> &'static Suite<Self, Shop> {
        suites!(MySql, which)
    }
}

impl Shops for Postgres {
    const NOTES: &'static str = "INSERT INTO notes (id, body) VALUES (1, 'first'), (2, 'second')";
    const NOTES_IDENTITY: &'static str =
        "SELECT string_agg(xmin::text, ',' ORDER BY id) FROM notes";
    fn suite(which: Which) -> &'static Suite<Self, Shop> {
        suites!(Postgres, which)
    }
}

#[derive(Clone, Copy)]
enum Which {
    Savepoint,
    Transaction,
    Committed,
    FreshDatabase,
    CommittedKeepingSequences,
    FromEnvironment,
}

const ALL: [(Which, Isolation); 4] = [
    (Which::Savepoint, Isolation::Savepoint),
    (Which::Transaction, Isolation::Transaction),
    (Which::Committed, Isolation::Committed),
    (Which::FreshDatabase, Isolation::FreshDatabase),
];

macro_rules! suites {
    ($backend:ty, $which:expr) => {{
        static SAVEPOINT: Suite<$backend, Shop> =
            Suite::new("shop", || shop::<$backend>(Isolation::Savepoint));
        static TRANSACTION: Suite<$backend, Shop> =
            Suite::new("shop", || shop::<$backend>(Isolation::Transaction));
        static COMMITTED: Suite<$backend, Shop> =
            Suite::new("shop", || shop::<$backend>(Isolation::Committed));
        static FRESH: Suite<$backend, Shop> =
            Suite::new("shop", || shop::<$backend>(Isolation::FreshDatabase));
        static KEEPING: Suite<$backend, Shop> = Suite::new("shop-keeping-sequences", || {
            Ok(shop::<$backend>(Isolation::Committed)?.restore_sequences(false))
        });
        static FROM_ENVIRONMENT: Suite<$backend, Shop> =
            Suite::new("shop-from-environment", from_environment::<$backend>);
        match $which {
            Which::Savepoint => &SAVEPOINT,
            Which::Transaction => &TRANSACTION,
            Which::Committed => &COMMITTED,
            Which::FreshDatabase => &FRESH,
            Which::CommittedKeepingSequences => &KEEPING,
            Which::FromEnvironment => &FROM_ENVIRONMENT,
        }
    }};
}
use suites;

/// The one setup every isolation shares: two customers, three orders, two notes.
fn shop<H: Shops>(isolation: Isolation) -> testdb::Result<Setup<H, Shop>> {
    let backend = H::backend().ok_or_else(|| Error::NotConfigured {
        backend: H::NAME,
        hint: "no server".into(),
    })?;
    Ok(
        Setup::new(TestDatabase::builder(backend).migrations(H::schema()))
            .isolation(isolation)
            .time_limit(Duration::from_secs(20))
            .data(async |conn: &mut Conn<H>| {
                for statement in [
                    "INSERT INTO customers (name) VALUES ('ada'), ('bob')",
                    "INSERT INTO orders (customer_id, item) \
                     VALUES (1, 'apple'), (1, 'pear'), (2, 'fig')",
                    H::NOTES,
                ] {
                    H::try_exec_on(conn, statement).await?;
                }
                Ok::<_, sqlx::Error>(Shop {
                    ada: 1,
                    orders: H::scalar_on(conn, "SELECT count(*) FROM orders").await,
                    token: token().to_owned(),
                })
            }),
    )
}

/// One test of `suite` that reads one number.
async fn scalar_in<H: Shops>(suite: &Suite<H, Shop>, sql: &'static str) -> testdb::Result<i64> {
    suite
        .run(async |conn: &mut Conn<H>, _| Ok::<_, BoxError>(H::scalar_on(conn, sql).await))
        .await
}

// Every isolation, one test body: the writes are seen by the test and gone for the next.

on_every_engine!(one_declaration_serves_every_isolation);

async fn one_declaration_serves_every_isolation<H: Shops>(_: H) {
    for (which, isolation) in ALL {
        for _ in 0..2 {
            let seen = H::suite(which)
                .run(async |conn: &mut Conn<H>, shop: Shop| {
                    assert_eq!(shop.orders, 3);
                    let before = H::scalar_on(conn, "SELECT count(*) FROM orders").await;
                    H::try_exec_on(
                        conn,
                        "INSERT INTO orders (customer_id, item) VALUES (2, 'kiwi')",
                    )
                    .await?;
                    let after = H::scalar_on(conn, "SELECT count(*) FROM orders").await;
                    Ok::<_, sqlx::Error>((before, after))
                })
                .await
                .unwrap_or_else(|err| panic!("{isolation}: {err:?}"));
            assert_eq!(seen, (3, 4), "{isolation}");
        }
    }
}

// Who sees what: other connections see committed data only where the isolation commits.

on_every_engine!(other_connections_see_what_the_isolation_promises);

async fn other_connections_see_what_the_isolation_promises<H: Shops>(_: H) {
    for (which, isolation) in ALL {
        let (in_test, other) = H::suite(which)
            .run(async |conn: &mut Conn<H>, _| {
                H::try_exec_on(
                    conn,
                    "INSERT INTO orders (customer_id, item) VALUES (2, 'kiwi')",
                )
                .await?;
                let in_test = H::scalar_on(conn, "SELECT count(*) FROM orders").await;
                let handle = testdb::current::<H>()?;
                assert_eq!(handle.isolation(), isolation);
                let other = H::scalar(handle.pool(), "SELECT count(*) FROM orders").await;
                Ok::<_, BoxError>((in_test, other))
            })
            .await
            .unwrap_or_else(|err| panic!("{isolation}: {err:?}"));
        assert_eq!(in_test, 4, "{isolation}");
        let expected = match isolation {
            // The committed baseline (the setup, committed in the template), not the test's own
            // row.
            Isolation::Savepoint | Isolation::Transaction => 3,
            _ => 4,
        };
        assert_eq!(other, expected, "{isolation}");
    }
}

on_every_engine!(subprocesses_see_committed_data);

async fn subprocesses_see_committed_data<H: Shops>(_: H) {
    for which in [Which::Committed, Which::FreshDatabase] {
        let counted = H::suite(which)
            .run(async |conn: &mut Conn<H>, _| {
                H::try_exec_on(
                    conn,
                    "INSERT INTO orders (customer_id, item) VALUES (2, 'kiwi')",
                )
                .await?;
                let url = testdb::current::<H>()?.url().to_owned();
                let output = tokio::task::spawn_blocking(move || {
                    std::process::Command::new(std::env::current_exe().unwrap())
                        .args(["--exact", "child_counts_orders", "--ignored", "--nocapture"])
                        .env(common::CHILD_BACKEND, H::KEY)
                        .env("TESTDB_TEST_URL", url)
                        .output()
                        .unwrap()
                })
                .await
                .unwrap();
                let stdout = String::from_utf8_lossy(&output.stdout);
                let count = stdout
                    .split_once("ORDERS ")
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    .and_then(|count| count.parse::<i64>().ok());
                Ok::<_, BoxError>(count)
            })
            .await
            .unwrap();
        assert_eq!(counted, Some(4));
    }
}

/// Child of `subprocesses_see_committed_data`: counts the orders at `TESTDB_TEST_URL`.
#[tokio::test]
#[ignore = "run by subprocesses_see_committed_data"]
async fn child_counts_orders() {
    let url = std::env::var("TESTDB_TEST_URL").unwrap();
    let count = match child_backend().as_str() {
        "sqlite" => Sqlite::scalar_at(&url, "SELECT count(*) FROM orders").await,
        "mysql" => MySql::scalar_at(&url, "SELECT count(*) FROM orders").await,
        _ => Postgres::scalar_at(&url, "SELECT count(*) FROM orders").await,
    };
    println!("ORDERS {count}");
}

// Committed isolation: only what a test wrote is restored, sequences included.

on_both!(committed_restores_only_the_tables_a_test_wrote);

async fn committed_restores_only_the_tables_a_test_wrote<H: Shops>(_: H) {
    let suite = H::suite(Which::Committed);
    let identity = async || {
        suite
            .run(async |_: &mut Conn<H>, _| {
                let handle = testdb::current::<H>()?;
                Ok::<_, BoxError>(H::text(handle.pool(), H::NOTES_IDENTITY).await)
            })
            .await
            .unwrap()
    };
    let before = identity().await;
    suite
        .run(async |conn: &mut Conn<H>, _| {
            H::try_exec_on(conn, "UPDATE orders SET item = 'plum' WHERE id = 1").await
        })
        .await
        .unwrap();
    assert_eq!(
        identity().await,
        before,
        "notes were not written: left alone"
    );

    suite
        .run(async |conn: &mut Conn<H>, _| {
            H::try_exec_on(conn, "DELETE FROM notes WHERE id = 1").await
        })
        .await
        .unwrap();
    let restored = scalar_in(suite, "SELECT count(*) FROM notes WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(restored, 1, "a table the test wrote is restored");
}

on_every_engine!(committed_restores_tables_with_generated_columns_in_place);

async fn committed_restores_tables_with_generated_columns_in_place<H: Shops>(_: H) {
    let suite = H::suite(Which::Committed);
    let (before, total) = suite
        .run(async |conn: &mut Conn<H>, _| {
            H::try_exec_on(conn, "INSERT INTO totals (id, qty, price) VALUES (1, 2, 3)").await?;
            Ok::<_, BoxError>((
                H::name_on(conn).await,
                H::scalar_on(conn, "SELECT count(*) FROM totals WHERE total = 6").await,
            ))
        })
        .await
        .unwrap();
    let (after, rows) = suite
        .run(async |conn: &mut Conn<H>, _| {
            Ok::<_, BoxError>((
                H::name_on(conn).await,
                H::scalar_on(conn, "SELECT count(*) FROM totals").await,
            ))
        })
        .await
        .unwrap();
    assert_eq!(total, 1, "the generated total is 6");
    assert_eq!(rows, 0);
    // Restored where it is: a failed restore would have replaced the database.
    assert_eq!(before, after);
}

on_every_engine!(committed_restores_a_parent_with_its_children);

async fn committed_restores_a_parent_with_its_children<H: Shops>(_: H) {
    let suite = H::suite(Which::Committed);
    suite
        .run(async |conn: &mut Conn<H>, shop: Shop| {
            // Cascades to ada's orders, a table this statement never names.
            let _ = shop.ada;
            H::try_exec_on(conn, "DELETE FROM customers WHERE name = 'ada'").await?;
            assert_eq!(H::scalar_on(conn, "SELECT count(*) FROM orders").await, 1);
            Ok::<_, sqlx::Error>(())
        })
        .await
        .unwrap();
    let counts = suite
        .run(async |conn: &mut Conn<H>, _| {
            Ok::<_, BoxError>((
                H::scalar_on(conn, "SELECT count(*) FROM customers").await,
                H::scalar_on(conn, "SELECT count(*) FROM orders").await,
            ))
        })
        .await
        .unwrap();
    assert_eq!(counts, (2, 3));
}

on_every_engine!(committed_restores_sequences_unless_told_not_to);

async fn committed_restores_sequences_unless_told_not_to<H: Shops>(_: H) {
    let next_id = async |which| {
        H::suite(which)
            .run(async |conn: &mut Conn<H>, _| {
                H::try_exec_on(conn, "INSERT INTO customers (name) VALUES ('cy')").await?;
                Ok::<_, BoxError>(
                    H::scalar_on(conn, "SELECT id FROM customers WHERE name = 'cy'").await,
                )
            })
            .await
            .unwrap()
    };
    assert_eq!(next_id(Which::Committed).await, 3);
    assert_eq!(next_id(Which::Committed).await, 3, "sequences restored");
    // A failed insert moves a PostgreSQL sequence without writing anything.
    H::suite(Which::Committed)
        .run(async |conn: &mut Conn<H>, _| {
            let duplicate = H::try_exec_on(conn, "INSERT INTO customers (name) VALUES ('ada')");
            assert!(duplicate.await.is_err());
            Ok::<_, BoxError>(())
        })
        .await
        .unwrap();
    assert_eq!(
        next_id(Which::Committed).await,
        3,
        "sequences moved without a write are restored too"
    );
    let first = next_id(Which::CommittedKeepingSequences).await;
    let second = next_id(Which::CommittedKeepingSequences).await;
    assert_eq!(second, first + 1, "sequences left to grow");
}

on_every_engine!(committed_tests_do_not_inherit_session_settings);

async fn committed_tests_do_not_inherit_session_settings<H: Shops>(_: H) {
    // SQLite has no session settings to leak (PRAGMAs aside); MySQL's temporary tables are not
    // reset (the README says so), its settings are.
    let (leave, leaked): (&[&'static str], &'static str) = match H::KEY {
        "postgres" => (
            &[
                "SET TIME ZONE 'Asia/Tokyo'",
                "CREATE TEMPORARY TABLE scratch (id int)",
            ],
            "SELECT (current_setting('TimeZone') = 'Asia/Tokyo')::int::int8 \
             + (to_regclass('pg_temp.scratch') IS NOT NULL)::int::int8",
        ),
        "mysql" => (
            &[
                "SET time_zone = '+09:00'",
                "SET SESSION sql_mode = 'ANSI_QUOTES'",
            ],
            "SELECT CAST((@@time_zone = '+09:00') + (@@sql_mode = 'ANSI_QUOTES') AS SIGNED)",
        ),
        _ => return,
    };
    let suite = H::suite(Which::Committed);
    suite
        .run(async |conn: &mut Conn<H>, _| {
            for statement in leave {
                H::try_exec_on(conn, statement).await?;
            }
            Ok::<_, sqlx::Error>(())
        })
        .await
        .unwrap();
    let leaked = suite
        .run(async |conn: &mut Conn<H>, _| Ok::<_, BoxError>(H::scalar_on(conn, leaked).await))
        .await
        .unwrap();
    assert_eq!(leaked, 0, "what the test set was left behind");
}

// Failure modes: whatever ends a test, the next one starts from the baseline.

on_every_engine_sync!(a_panicking_test_leaves_nothing_behind);

fn a_panicking_test_leaves_nothing_behind<H: Shops>() {
    if H::backend().is_none() {
        return;
    }
    for (which, isolation) in ALL {
        let panicked = std::panic::catch_unwind(|| {
            H::suite(which).run_blocking(async |conn: &mut Conn<H>, _| {
                H::try_exec_on(
                    conn,
                    "INSERT INTO orders (customer_id, item) VALUES (2, 'x')",
                )
                .await
                .unwrap();
                // A transaction left open, too.
                let _ = H::try_exec_on(conn, "BEGIN").await;
                let _ = H::try_exec_on(conn, "DELETE FROM notes").await;
                panic!("the test panics");
                #[allow(unreachable_code)]
                Ok::<_, BoxError>(())
            })
        });
        assert!(panicked.is_err(), "{isolation}");
        let counts = H::suite(which)
            .run_blocking(async |conn: &mut Conn<H>, _| {
                Ok::<_, BoxError>((
                    H::scalar_on(conn, "SELECT count(*) FROM orders").await,
                    H::scalar_on(conn, "SELECT count(*) FROM notes").await,
                ))
            })
            .unwrap_or_else(|err| panic!("{isolation}: {err:?}"));
        assert_eq!(counts, (3, 2), "{isolation}");
    }
}

on_every_engine!(a_cancelled_test_leaves_nothing_behind);

async fn a_cancelled_test_leaves_nothing_behind<H: Shops>(_: H) {
    for (which, isolation) in ALL {
        let abandoned = H::suite(which).run(async |conn: &mut Conn<H>, _| {
            H::try_exec_on(
                conn,
                "INSERT INTO orders (customer_id, item) VALUES (2, 'x')",
            )
            .await?;
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, sqlx::Error>(())
        });
        assert!(
            tokio::time::timeout(Duration::from_millis(500), abandoned)
                .await
                .is_err()
        );
        let orders = scalar_in(H::suite(which), "SELECT count(*) FROM orders")
            .await
            .unwrap_or_else(|err| panic!("{isolation}: {err:?}"));
        assert_eq!(orders, 3, "{isolation}");
    }
}

// Transaction isolation: parallel tests, escapes, deferred constraints.

on_every_engine!(transaction_tests_run_side_by_side);

async fn transaction_tests_run_side_by_side<H: Shops>(_: H) {
    let suite = H::suite(Which::Transaction);
    let inside = tokio::sync::Barrier::new(2);
    let test = async |item: &'static str| {
        suite
            .run(async |conn: &mut Conn<H>, _| {
                if H::KEY != "sqlite" {
                    // Both tests are inside their transactions at once, or neither gets past.
                    inside.wait().await;
                }
                H::try_exec_on(conn, item).await?;
                Ok::<_, BoxError>(H::scalar_on(conn, "SELECT count(*) FROM orders").await)
            })
            .await
    };
    // On SQLite the second test's transaction waits for the first's write lock, then runs.
    let (first, second) = tokio::join!(
        test("INSERT INTO orders (customer_id, item) VALUES (1, 'one')"),
        test("INSERT INTO orders (customer_id, item) VALUES (2, 'two')"),
    );
    assert_eq!((first.unwrap(), second.unwrap()), (4, 4));
}

on_every_engine!(a_commit_in_transaction_isolation_is_reported_and_undone);

async fn a_commit_in_transaction_isolation_is_reported_and_undone<H: Shops>(_: H) {
    let suite = H::suite(Which::Transaction);
    let err = suite
        .run(async |conn: &mut Conn<H>, _| {
            H::try_exec_on(
                conn,
                "INSERT INTO orders (customer_id, item) VALUES (2, 'x')",
            )
            .await?;
            H::try_exec_on(conn, "COMMIT").await
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Escaped { .. }), "{err:?}");
    let orders = scalar_in(suite, "SELECT count(*) FROM orders")
        .await
        .unwrap();
    assert_eq!(orders, 3, "the suite was rebuilt from its template");
}

on_both!(deferred_constraints_are_checked_in_transaction_isolation);

async fn deferred_constraints_are_checked_in_transaction_isolation<H: Shops>(_: H) {
    let err = H::suite(Which::Transaction)
        .run(async |conn: &mut Conn<H>, _| {
            H::try_exec_on(conn, "INSERT INTO tickets (id, order_id) VALUES (1, 999)").await
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DeferredConstraint { .. }), "{err:?}");
}

// Fresh databases: one per test, dropped after it, kept on request when it fails.

on_every_engine!(each_fresh_test_gets_its_own_database_dropped_after);

async fn each_fresh_test_gets_its_own_database_dropped_after<H: Shops>(_: H) {
    let suite = H::suite(Which::FreshDatabase);
    let mut names = Vec::new();
    for _ in 0..2 {
        let name = suite
            .run(async |conn: &mut Conn<H>, _| {
                H::try_exec_on(conn, "DELETE FROM notes").await?;
                Ok::<_, BoxError>(H::name_on(conn).await)
            })
            .await
            .unwrap();
        names.push(name);
    }
    assert_ne!(names[0], names[1]);
    for name in &names {
        // Removed in the background: give it a moment.
        let mut gone = false;
        for _ in 0..100 {
            if !H::exists(name).await {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(gone, "{name} was not removed");
    }
}

on_every_engine_sync!(a_failed_fresh_database_is_kept_with_testdb_keep);

fn a_failed_fresh_database_is_kept_with_testdb_keep<H: Shops>() {
    let Some(backend) = H::backend() else {
        return;
    };
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_fails_in_a_fresh_database",
            "--ignored",
            "--nocapture",
        ])
        .env(common::CHILD_BACKEND, H::KEY)
        .env("TESTDB_KEEP", "1")
        .output()
        .unwrap();
    assert!(!output.status.success(), "the child's test fails");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find(|line| line.contains("(TESTDB_KEEP=1)"))
        .unwrap_or_else(|| panic!("no line about the kept database in:\n{stderr}"));
    let name = line
        .split_once(" database ")
        .and_then(|(_, rest)| rest.split_once(" of a failed test"))
        .map(|(name, _)| name.to_owned())
        .unwrap();
    testdb::block_on(async move {
        assert!(H::exists(&name).await, "{name} was kept");
        // Its owner is gone: the next sweep removes it (once the server has ended the sessions
        // of the process, which it notices a moment after the process ends).
        let mut swept = false;
        for _ in 0..50 {
            testdb::sweep(&backend).await.unwrap();
            if !H::exists(&name).await {
                swept = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(swept, "{name} was swept");
    })
    .unwrap();
}

/// Child of `a_failed_fresh_database_is_kept_with_testdb_keep`: a test that fails.
#[test]
#[ignore = "run by a_failed_fresh_database_is_kept_with_testdb_keep"]
fn child_fails_in_a_fresh_database() {
    fn fail<H: Shops>() {
        H::suite(Which::FreshDatabase)
            .run_blocking(async |conn: &mut Conn<H>, _| {
                H::try_exec_on(conn, "DELETE FROM orders").await?;
                Err::<(), BoxError>("the test fails".into())
            })
            .unwrap();
    }
    match child_backend().as_str() {
        "sqlite" => fail::<Sqlite>(),
        "mysql" => fail::<MySql>(),
        _ => fail::<Postgres>(),
    }
}

// Templates: built once per key, by one process, reused, replaced when what built them changes.

on_every_engine_sync!(several_processes_build_one_template);

fn several_processes_build_one_template<H: Shops>() {
    if H::backend().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("builds.log");
    let version = format!("{}-processes-{}", token(), H::KEY);
    let children: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "child_uses_the_template",
                    "--ignored",
                    "--nocapture",
                ])
                .env(common::CHILD_BACKEND, H::KEY)
                .env("TESTDB_TEST_VERSION", &version)
                .env("TESTDB_TEST_LOG", &log)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "a child failed");
    }
    let builds = std::fs::read_to_string(&log).unwrap();
    assert_eq!(builds.lines().count(), 1, "built once:\n{builds}");
}

/// The suite of `child_uses_the_template`: its version and build log come from its parent.
fn from_environment<H: Shops>() -> testdb::Result<Setup<H, Shop>> {
    let backend = H::backend().ok_or_else(|| Error::NotConfigured {
        backend: H::NAME,
        hint: "no server".into(),
    })?;
    let version = std::env::var("TESTDB_TEST_VERSION").unwrap_or_default();
    Ok(
        Setup::new(TestDatabase::builder(backend).migrations(H::schema()))
            .isolation(Isolation::FreshDatabase)
            .version(version)
            .data(async |conn: &mut Conn<H>| {
                if let Ok(log) = std::env::var("TESTDB_TEST_LOG") {
                    let mut file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(log)
                        .unwrap();
                    writeln!(file, "built by {}", std::process::id()).unwrap();
                }
                H::try_exec_on(conn, "INSERT INTO customers (name) VALUES ('ada')").await?;
                Ok::<_, sqlx::Error>(Shop {
                    ada: 1,
                    orders: 0,
                    token: token().to_owned(),
                })
            }),
    )
}

/// Child of `several_processes_build_one_template`: runs a test of a template suite.
#[test]
#[ignore = "run by several_processes_build_one_template"]
fn child_uses_the_template() {
    fn run<H: Shops>() {
        let customers = H::suite(Which::FromEnvironment)
            .run_blocking(async |conn: &mut Conn<H>, _| {
                Ok::<_, BoxError>(H::scalar_on(conn, "SELECT count(*) FROM customers").await)
            })
            .unwrap();
        assert_eq!(customers, 1);
    }
    match child_backend().as_str() {
        "sqlite" => run::<Sqlite>(),
        "mysql" => run::<MySql>(),
        _ => run::<Postgres>(),
    }
}

on_both_sync!(templates_follow_their_fixtures);

/// The `fixtures` suite of `child_runs_the_fixtures_suite`: its fixture directory, version and
/// build log come from its parent.
fn from_fixtures<H: Shops>() -> testdb::Result<Setup<H, Shop>> {
    let backend = H::backend().ok_or_else(|| Error::NotConfigured {
        backend: H::NAME,
        hint: "no server".into(),
    })?;
    let dir = PathBuf::from(std::env::var("TESTDB_TEST_FIXTURES").unwrap_or_default());
    let fixtures = Fixtures::files([dir.join("notes.json").display().to_string()]);
    let version = std::env::var("TESTDB_TEST_VERSION").unwrap_or_default();
    Ok(Setup::new(
        TestDatabase::builder(backend)
            .migrations(H::schema())
            .fixtures(fixtures),
    )
    .isolation(Isolation::Committed)
    .version(version.clone())
    .data(async move |_: &mut Conn<H>| {
        log_build();
        Ok::<_, sqlx::Error>(Shop {
            ada: 1,
            orders: 0,
            token: format!("fixtures-{version}"),
        })
    }))
}

/// Notes that a template was built, in the parent's log.
fn log_build() {
    if let Ok(log) = std::env::var("TESTDB_TEST_LOG") {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        writeln!(file, "built by {}", std::process::id()).unwrap();
    }
}

/// Child of `templates_follow_their_fixtures`: one test of the `fixtures` suite, as one run of
/// a test binary would; prints how many notes it saw.
#[test]
#[ignore = "run by templates_follow_their_fixtures"]
fn child_runs_the_fixtures_suite() {
    fn run<H: Shops>() {
        static SQLITE: Suite<Sqlite, Shop> = Suite::new("fixtures", from_fixtures::<Sqlite>);
        static POSTGRES: Suite<Postgres, Shop> = Suite::new("fixtures", from_fixtures::<Postgres>);
        let notes = if H::KEY == "sqlite" {
            SQLITE.run_blocking(async |conn: &mut sqlx::SqliteConnection, _| {
                Ok::<_, BoxError>(Sqlite::scalar_on(conn, "SELECT count(*) FROM notes").await)
            })
        } else {
            POSTGRES.run_blocking(async |conn: &mut sqlx::PgConnection, _| {
                Ok::<_, BoxError>(Postgres::scalar_on(conn, "SELECT count(*) FROM notes").await)
            })
        };
        println!("NOTES {}", notes.unwrap());
    }
    match child_backend().as_str() {
        "sqlite" => run::<Sqlite>(),
        _ => run::<Postgres>(),
    }
}

fn templates_follow_their_fixtures<H: Shops>() {
    if H::backend().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("builds.log");
    let version = format!("{}-fixtures-{}", token(), H::KEY);
    // One run of the suite, in a process of its own: the notes it saw.
    let run = || -> i64 {
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_runs_the_fixtures_suite",
                "--ignored",
                "--nocapture",
            ])
            .env(common::CHILD_BACKEND, H::KEY)
            .env("TESTDB_TEST_FIXTURES", dir.path())
            .env("TESTDB_TEST_VERSION", &version)
            .env("TESTDB_TEST_LOG", &log)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "the child failed: {output:?}");
        stdout
            .split_once("NOTES ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|count| count.parse().ok())
            .unwrap()
    };
    let builds = || {
        std::fs::read_to_string(&log)
            .map(|text| text.lines().count())
            .unwrap_or(0)
    };
    let templates = || {
        let text = format!("fixtures-{version}");
        testdb::block_on(async move { H::templates(&text).await }).unwrap()
    };
    let file = dir.path().join("notes.json");

    std::fs::write(&file, r#"{"notes": [{"id": 1, "body": "one"}]}"#).unwrap();
    assert_eq!(run(), 1);
    assert_eq!(builds(), 1, "built");
    let first = templates();
    assert_eq!(first.len(), 1, "{first:?}");

    assert_eq!(run(), 1);
    assert_eq!(builds(), 1, "reused by the next run while its key holds");

    std::fs::write(
        &file,
        r#"{"notes": [{"id": 1, "body": "one"}, {"id": 2, "body": "two"}]}"#,
    )
    .unwrap();
    assert_eq!(run(), 2, "a stale template is never used");
    assert_eq!(builds(), 2, "rebuilt");
    let second = templates();
    assert_eq!(
        second.len(),
        1,
        "the superseded template was removed: {second:?}"
    );
    assert_ne!(first, second);
}
