//! Each test starts on a clean session, in every isolation: what one test leaves in its session
//! — locks, prepared statements, settings, temporary tables, moved sequences — the next never
//! sees. And deferred foreign keys are checked at the end of each test however they were deferred.

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

use common::Harness;
use sqlx::Database;
use testdb::{Error, Isolation, Setup, Suite, TestDatabase};
use testdb_mysql::MySql;
use testdb_postgres::Postgres;
use testdb_sqlite::Sqlite;

type Conn<H> = <<H as testdb::backend::Driver>::Database as Database>::Connection;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

const ISOLATIONS: [Isolation; 4] = [
    Isolation::Savepoint,
    Isolation::Transaction,
    Isolation::Committed,
    Isolation::FreshDatabase,
];

trait Sessions: Harness {
    /// What a test leaves in its session, statement by statement.
    const LEAVE: &'static [&'static str];
    /// One number per leftover, each 1 if the session is clean.
    const CLEAN: &'static str;
}

/// The suite in `isolation`, restoring sequences or not (scenarios share them, one at a time).
fn suite<H: Sessions>(isolation: Isolation, sequences: bool) -> &'static Suite<H> {
    let setup: fn() -> testdb::Result<Setup<H>> = match (isolation, sequences) {
        (Isolation::Savepoint, true) => counters::<H, 0, true>,
        (Isolation::Transaction, true) => counters::<H, 1, true>,
        (Isolation::Committed, true) => counters::<H, 2, true>,
        (_, true) => counters::<H, 3, true>,
        (Isolation::Savepoint, false) => counters::<H, 0, false>,
        (Isolation::Transaction, false) => counters::<H, 1, false>,
        (Isolation::Committed, false) => counters::<H, 2, false>,
        (_, false) => counters::<H, 3, false>,
    };
    common::suite_for(format!("{isolation} {sequences}"), "sessions", setup)
}

impl Sessions for Sqlite {
    const LEAVE: &'static [&'static str] = &[
        "PRAGMA defer_foreign_keys = ON",
        "PRAGMA foreign_keys = OFF",
        "PRAGMA recursive_triggers = ON",
        "PRAGMA busy_timeout = 1",
        "PRAGMA cache_size = 7",
        "ATTACH DATABASE ':memory:' AS scratch_db",
        "CREATE TEMP TABLE scratch (x INTEGER)",
        // Last: no more writes after it.
        "PRAGMA query_only = ON",
    ];
    const CLEAN: &'static str = "SELECT (SELECT defer_foreign_keys = 0 FROM pragma_defer_foreign_keys) \
        + (SELECT foreign_keys = 1 FROM pragma_foreign_keys) \
        + (SELECT recursive_triggers = 0 FROM pragma_recursive_triggers) \
        + (SELECT query_only = 0 FROM pragma_query_only) \
        + (SELECT timeout > 1 FROM pragma_busy_timeout) \
        + (SELECT cache_size <> 7 FROM pragma_cache_size) \
        + (SELECT count(*) = 2 FROM pragma_database_list) \
        + (SELECT count(*) = 0 FROM temp.sqlite_master)";
}

impl Sessions for Postgres {
    const LEAVE: &'static [&'static str] = &[
        "SELECT pg_advisory_lock(4242)",
        "PREPARE testdb_leftover AS SELECT 1",
        "SET TIME ZONE 'Pacific/Chatham'",
        "CREATE TEMP TABLE scratch (x INTEGER)",
    ];
    // Advisory locks of the test's own: the connection's slot in testdb's connection budget
    // (class "budg") is testdb's.
    const CLEAN: &'static str = "SELECT ((SELECT count(*) = 0 FROM pg_locks \
            WHERE locktype = 'advisory' AND pid = pg_backend_pid() \
            AND NOT (classid = 1651860583::oid AND objsubid = 2))::int \
        + (SELECT count(*) = 0 FROM pg_prepared_statements WHERE from_sql)::int \
        + (current_setting('TimeZone') <> 'Pacific/Chatham')::int \
        + (SELECT count(*) = 0 FROM pg_class WHERE relname = 'scratch' AND relpersistence = 't')::int)::bigint";
}

impl Sessions for MySql {
    // Temporary tables and user variables are not reset on MySQL (the README says so).
    const LEAVE: &'static [&'static str] = &[
        "DO GET_LOCK('testdb_test_leftover', 0)",
        "SET time_zone = '+09:30'",
        "SET SESSION foreign_key_checks = 0",
        "SET SESSION sql_mode = 'ANSI_QUOTES'",
    ];
    const CLEAN: &'static str = "SELECT CAST((IS_USED_LOCK('testdb_test_leftover') IS NULL) \
        + (@@time_zone <> '+09:30') + (@@foreign_key_checks = 1) \
        + (@@sql_mode <> 'ANSI_QUOTES') AS SIGNED)";
}

fn schema<H: Harness>() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sessions_schema")
        .join(H::KEY)
}

/// Two counters, and a parent row, set up; isolated by the `I`th of [`ISOLATIONS`].
fn counters<H: Sessions, const I: usize, const SEQUENCES: bool>() -> testdb::Result<Setup<H>> {
    let (isolation, sequences) = (ISOLATIONS[I], SEQUENCES);
    let backend = H::backend().ok_or_else(|| Error::NotConfigured {
        backend: H::NAME,
        hint: "no server".into(),
    })?;
    Ok(
        Setup::new(TestDatabase::builder(backend).migrations(schema::<H>()))
            .isolation(isolation)
            .restore_sequences(sequences)
            .data(async |conn: &mut Conn<H>| {
                for statement in [
                    "INSERT INTO counters (note) VALUES ('setup'), ('setup')",
                    "INSERT INTO parents (id) VALUES (1)",
                ] {
                    H::try_exec_on(conn, statement).await?;
                }
                Ok::<_, sqlx::Error>(())
            }),
    )
}

/// The id the next counter gets, in a test that inserts one.
async fn next_id<H: Sessions>(suite: &Suite<H>) -> i64 {
    suite
        .run(async |conn: &mut Conn<H>, ()| {
            H::try_exec_on(conn, "INSERT INTO counters (note) VALUES ('test')").await?;
            Ok::<_, BoxError>(
                H::scalar_on(conn, "SELECT CAST(max(id) AS BIGINT) FROM counters").await,
            )
        })
        .await
        .unwrap()
}

on_every_engine!(each_test_starts_on_a_clean_session);

async fn each_test_starts_on_a_clean_session<H: Sessions>(_: H) {
    let _turn = common::one_at_a_time().await;
    let clean = i64::try_from(H::LEAVE.len()).unwrap();
    for isolation in ISOLATIONS {
        let suite = suite::<H>(isolation, true);
        for _ in 0..2 {
            let before = suite
                .run(async |conn: &mut Conn<H>, ()| {
                    let before = H::scalar_on(conn, H::CLEAN).await;
                    for statement in H::LEAVE {
                        H::try_exec_on(conn, statement).await?;
                    }
                    assert!(H::scalar_on(conn, H::CLEAN).await < clean, "left something");
                    Ok::<_, BoxError>(before)
                })
                .await
                .unwrap_or_else(|err| panic!("{isolation}: {err:?}"));
            assert_eq!(
                before, clean,
                "{isolation}: the test started on a used session"
            );
        }
    }
}

on_every_engine!(ids_are_the_same_in_every_test);

async fn ids_are_the_same_in_every_test<H: Sessions>(_: H) {
    let _turn = common::one_at_a_time().await;
    for isolation in ISOLATIONS {
        let suite = suite::<H>(isolation, true);
        let ids = [
            next_id(suite).await,
            next_id(suite).await,
            next_id(suite).await,
        ];
        if H::KEY == "mysql" && matches!(isolation, Isolation::Savepoint | Isolation::Transaction) {
            // InnoDB's counters do not roll back, and setting one would commit (the README
            // says so): the ids grow.
            assert!(ids[0] < ids[1] && ids[1] < ids[2], "{isolation}: {ids:?}");
            continue;
        }
        assert_eq!(
            ids,
            [3, 3, 3],
            "{isolation}: sequences are back after each test"
        );
    }
}

on_every_engine!(ids_keep_growing_when_sequences_are_left_alone);

async fn ids_keep_growing_when_sequences_are_left_alone<H: Sessions>(_: H) {
    let _turn = common::one_at_a_time().await;
    // SQLite's AUTOINCREMENT counter is a row: rolled back with the test in savepoint and
    // transaction isolation, and taken from the copy in fresh-database isolation, whatever the
    // setting; only committed isolation can leave it growing.
    for isolation in [
        Isolation::Savepoint,
        Isolation::Transaction,
        Isolation::Committed,
    ] {
        if H::KEY == "sqlite" && isolation != Isolation::Committed {
            continue;
        }
        let suite = suite::<H>(isolation, false);
        let first = next_id(suite).await;
        let second = next_id(suite).await;
        assert!(second > first, "{isolation}: {first} then {second}");
    }
}

// Deferred foreign keys: declared deferred in any layout or case, or deferred by the test
// (SQLite's `PRAGMA defer_foreign_keys`), a violation fails the test, and nothing of it leaks.

on_both!(deferred_foreign_keys_are_checked_however_they_are_deferred);

async fn deferred_foreign_keys_are_checked_however_they_are_deferred<H: Sessions>(_: H) {
    let _turn = common::one_at_a_time().await;
    for isolation in [Isolation::Savepoint, Isolation::Transaction] {
        let suite = suite::<H>(isolation, true);
        let mut cases = vec![vec![
            "INSERT INTO late_children (id, parent_id) VALUES (1, 99)",
        ]];
        if H::KEY == "sqlite" {
            cases.push(vec![
                "PRAGMA defer_foreign_keys = ON",
                "INSERT INTO children (id, parent_id) VALUES (1, 99)",
            ]);
        }
        for statements in cases {
            let result = suite
                .run(async |conn: &mut Conn<H>, ()| {
                    for statement in &statements {
                        H::try_exec_on(conn, statement).await?;
                    }
                    Ok::<_, BoxError>(())
                })
                .await;
            assert!(
                matches!(result, Err(Error::DeferredConstraint { .. })),
                "{isolation}, {statements:?}: {result:?}"
            );
            // The next test: immediate keys are immediate again, and the orphan is gone.
            let immediate = suite
                .run(async |conn: &mut Conn<H>, ()| {
                    let orphans = H::scalar_on(conn, "SELECT count(*) FROM late_children").await;
                    let refused =
                        H::try_exec_on(conn, "INSERT INTO children (id, parent_id) VALUES (2, 99)")
                            .await
                            .is_err();
                    Ok::<_, BoxError>((orphans, refused))
                })
                .await
                .unwrap_or_else(|err| panic!("{isolation}: {err:?}"));
            assert_eq!(immediate, (0, true), "{isolation}, after {statements:?}");
        }
        // A test that resolves what it deferred passes.
        suite
            .run(async |conn: &mut Conn<H>, ()| {
                H::try_exec_on(
                    conn,
                    "INSERT INTO late_children (id, parent_id) VALUES (3, 98)",
                )
                .await?;
                H::try_exec_on(conn, "INSERT INTO parents (id) VALUES (98)").await?;
                Ok::<_, BoxError>(())
            })
            .await
            .unwrap_or_else(|err| panic!("{isolation}: a resolved violation failed: {err:?}"));
    }
}

// SQLite's `PRAGMA locking_mode = EXCLUSIVE` holds the database against every other connection
// until the transaction it ran in ends: a savepoint suite's never does, so the test fails and the
// suite is built again; elsewhere the mode is put back. Either way the next test can read through
// the pool.

#[test]
fn an_exclusive_lock_does_not_outlive_its_test() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let _turn = common::one_at_a_time().await;
        for isolation in [Isolation::Savepoint, Isolation::Committed] {
            let suite = suite::<Sqlite>(isolation, true);
            // The test's own writes may fail (other connections have the file open); it fails
            // either way in a savepoint suite, where the lock would outlive it.
            let result = suite
                .run(async |conn: &mut sqlx::SqliteConnection, ()| {
                    Sqlite::try_exec_on(conn, "PRAGMA locking_mode = EXCLUSIVE").await?;
                    let _ = Sqlite::try_exec_on(conn, "INSERT INTO parents (id) VALUES (50)").await;
                    Ok::<_, BoxError>(())
                })
                .await;
            if isolation == Isolation::Savepoint {
                assert!(
                    matches!(&result, Err(Error::Escaped { message, .. }) if message.contains("EXCLUSIVE")),
                    "{result:?}"
                );
            }
            let parents = suite
                .run(async |_: &mut sqlx::SqliteConnection, ()| {
                    let db = testdb::current::<Sqlite>()?;
                    Ok::<_, BoxError>(Sqlite::scalar(db.pool(), "SELECT count(*) FROM parents").await)
                })
                .await
                .unwrap_or_else(|err| panic!("{isolation}: {err:?}"));
            // The setup's parent, committed in the template; not the test's.
            assert_eq!(parents, 1, "{isolation}");
        }
    });
}
