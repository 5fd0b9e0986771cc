//! MySQL (MariaDB here) as users meet it: databases of testdb's own, migrations and fixtures, the
//! four isolations, and what MySQL cannot do (DDL in a transaction, tables without transactions)
//! reported rather than hidden. The server is `TESTDB_MYSQL_URL`'s; without it every test says
//! that it was skipped, and under CI fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

mod common;

use std::path::PathBuf;

use sqlx::{Connection, MySqlConnection};
use testdb::{Error, Fixtures, Isolation, Setup, Suite, TestDatabase};
use testdb_mysql::MySql;

fn mysql() -> Option<MySql> {
    match MySql::from_env() {
        Ok(backend) => Some(backend),
        Err(err @ Error::NotConfigured { .. }) => {
            if std::env::var_os("CI").is_some() {
                panic!("CI must run the MySQL tests: {err}");
            }
            common::say(&format!("SKIPPED: MySQL test not run: {err}"));
            None
        }
        Err(err) => panic!("{err:?}"),
    }
}

fn schema() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mysql_schema")
}

fn fixtures(name: &str) -> Fixtures {
    Fixtures::new()
        .directories([PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mysql_fixtures")])
        .file(name)
}

/// A connection to the server itself, for looking at what testdb did.
async fn admin() -> MySqlConnection {
    let url = std::env::var("TESTDB_MYSQL_URL").unwrap();
    MySqlConnection::connect(&url).await.unwrap()
}

async fn exists(name: &str) -> bool {
    let found: Option<String> = sqlx::query_scalar(
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
    )
    .bind(name)
    .fetch_optional(&mut admin().await)
    .await
    .unwrap();
    found.is_some()
}

#[tokio::test]
async fn a_test_database_is_migrated_loaded_and_removed() {
    let Some(backend) = mysql() else { return };
    let db = TestDatabase::builder(backend)
        .migrations(schema())
        .fixtures(fixtures("shop"))
        .create()
        .await
        .unwrap();
    let name = db.name().to_owned();
    assert!(name.starts_with("testdb_"), "{name}");
    assert!(exists(&name).await);
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(users, 2);
    // Django's `Z` datetime is stored as UTC, and the order went in after its user.
    let joined: String = sqlx::query_scalar("SELECT CAST(joined AS CHAR) FROM users WHERE id = 1")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(joined, "2024-01-02 03:04:05");
    let big: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM big_orders")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(big, 1);
    db.remove().await.unwrap();
    assert!(!exists(&name).await);
}

#[tokio::test]
async fn a_dump_loads_back_to_the_same_rows() {
    let Some(backend) = mysql() else { return };
    let db = TestDatabase::builder(backend.clone())
        .migrations(schema())
        .fixtures(fixtures("shop"))
        .create()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dump.json");
    // `orders` has a generated column: left out of the dump, computed again on load.
    assert_eq!(db.dump(&[], &file).await.unwrap(), 3);
    let copy = TestDatabase::builder(backend)
        .migrations(schema())
        .fixtures(Fixtures::files([file]))
        .create()
        .await
        .unwrap();
    let rows = "SELECT CONCAT_WS('|', u.id, u.name, COALESCE(CAST(u.joined AS CHAR), '-'), \
                COALESCE(o.label, '-'), COALESCE(o.total, '-')) \
                FROM users u LEFT JOIN orders o ON o.user_id = u.id ORDER BY u.id";
    let original: Vec<String> = sqlx::query_scalar(rows).fetch_all(db.pool()).await.unwrap();
    let loaded: Vec<String> = sqlx::query_scalar(rows)
        .fetch_all(copy.pool())
        .await
        .unwrap();
    assert_eq!(original.len(), 2);
    assert_eq!(loaded, original);
}

#[tokio::test]
async fn binary_columns_are_dumped_as_hex_and_load_back_as_the_same_bytes() {
    let Some(backend) = mysql() else { return };
    let dir = tempfile::tempdir().unwrap();
    let migrations = dir.path().join("migrations");
    std::fs::create_dir(&migrations).unwrap();
    std::fs::write(
        migrations.join("0001_files.sql"),
        "CREATE TABLE files (id INT PRIMARY KEY, digest BINARY(4) NULL, name VARBINARY(10) NULL, \
         body BLOB NULL) ENGINE = InnoDB",
    )
    .unwrap();
    let db = TestDatabase::builder(backend.clone())
        .migrations(migrations.as_path())
        .create()
        .await
        .unwrap();
    // Bytes that are no UTF-8, a NUL, a backslash; and NULLs.
    sqlx::query(
        "INSERT INTO files VALUES (1, X'00FF5C80', X'C328', X'0001FEFF'), (2, NULL, NULL, NULL)",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let file = dir.path().join("dump.json");
    assert_eq!(db.dump(&[], &file).await.unwrap(), 2);
    let dumped: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        dumped["files"][0],
        serde_json::json!({"id": "1", "digest": "\\x00ff5c80", "name": "\\xc328", "body": "\\x0001feff"}),
        "{dumped}"
    );
    let copy = TestDatabase::builder(backend)
        .migrations(migrations.as_path())
        .fixtures(Fixtures::files([file]))
        .create()
        .await
        .unwrap();
    let rows = "SELECT CONCAT_WS('|', id, COALESCE(HEX(digest), '-'), COALESCE(HEX(name), '-'), \
                COALESCE(HEX(body), '-')) FROM files ORDER BY id";
    let loaded: Vec<String> = sqlx::query_scalar(rows)
        .fetch_all(copy.pool())
        .await
        .unwrap();
    assert_eq!(loaded, ["1|00FF5C80|C328|0001FEFF", "2|-|-|-"]);
}

#[tokio::test]
async fn a_bad_fixture_row_is_located_and_loads_nothing() {
    let Some(backend) = mysql() else { return };
    let db = TestDatabase::builder(backend)
        .migrations(schema())
        .create()
        .await
        .unwrap();
    let mut conn = db.pool().acquire().await.unwrap();
    let err = testdb::load_fixtures::<MySql>(&mut conn, &fixtures("broken"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Fixture { .. }), "{err:?}");
    assert!(
        text.contains("broken.json") && text.contains("users"),
        "{text}"
    );
    assert!(text.contains("name"), "names the column: {text}");
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(users, 0, "a failed load loads nothing");
}

type Conn = MySqlConnection;

fn shop(isolation: Isolation) -> testdb::Result<Setup<MySql, i64>> {
    let backend = MySql::from_env()?;
    Ok(Setup::new(
        TestDatabase::builder(backend)
            .migrations(schema())
            .fixtures(fixtures("shop")),
    )
    .isolation(isolation)
    .data(async |conn: &mut Conn| {
        sqlx::query("INSERT INTO users (name) VALUES ('margaret')")
            .execute(&mut *conn)
            .await?;
        let id: i64 = sqlx::query_scalar("SELECT id FROM users WHERE name = 'margaret'")
            .fetch_one(&mut *conn)
            .await?;
        Ok::<_, sqlx::Error>(id)
    }))
}

static SAVEPOINT: Suite<MySql, i64> = Suite::new("mysql_savepoint", || shop(Isolation::Savepoint));
static TRANSACTION: Suite<MySql, i64> =
    Suite::new("mysql_transaction", || shop(Isolation::Transaction));
static COMMITTED: Suite<MySql, i64> = Suite::new("mysql_committed", || shop(Isolation::Committed));
static FRESH: Suite<MySql, i64> = Suite::new("mysql_fresh", || shop(Isolation::FreshDatabase));

/// A test that writes, then checks that it sees the baseline (three users) first.
async fn writes(suite: &Suite<MySql, i64>) {
    suite
        .run(async |conn: &mut Conn, margaret: i64| {
            let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
                .fetch_one(&mut *conn)
                .await?;
            assert_eq!(users, 3, "every test starts from the setup");
            assert_eq!(margaret, 3);
            sqlx::query("INSERT INTO users (name) VALUES ('barbara')")
                .execute(&mut *conn)
                .await?;
            sqlx::query("DELETE FROM orders")
                .execute(&mut *conn)
                .await?;
            sqlx::query("UPDATE users SET name = 'ADA' WHERE id = 1")
                .execute(&mut *conn)
                .await?;
            Ok::<_, sqlx::Error>(())
        })
        .await
        .unwrap();
}

async fn sees_the_setup(suite: &Suite<MySql, i64>) {
    suite
        .run(async |conn: &mut Conn, _: i64| {
            let (users, orders): (i64, i64) = sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM users), (SELECT COUNT(*) FROM orders)",
            )
            .fetch_one(&mut *conn)
            .await?;
            assert_eq!((users, orders), (3, 1));
            let ada: String = sqlx::query_scalar("SELECT name FROM users WHERE id = 1")
                .fetch_one(&mut *conn)
                .await?;
            assert_eq!(ada, "ada");
            Ok::<_, sqlx::Error>(())
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn every_isolation_undoes_what_a_test_wrote() {
    if mysql().is_none() {
        return;
    }
    for suite in [&SAVEPOINT, &TRANSACTION, &COMMITTED, &FRESH] {
        writes(suite).await;
        sees_the_setup(suite).await;
        writes(suite).await;
        sees_the_setup(suite).await;
    }
}

#[tokio::test]
async fn committed_isolation_puts_auto_increment_back() {
    if mysql().is_none() {
        return;
    }
    let next = async || {
        COMMITTED
            .run(async |conn: &mut Conn, _: i64| {
                sqlx::query("INSERT INTO users (name) VALUES ('next')")
                    .execute(&mut *conn)
                    .await?;
                let id: i64 = sqlx::query_scalar("SELECT id FROM users WHERE name = 'next'")
                    .fetch_one(&mut *conn)
                    .await?;
                Ok::<_, sqlx::Error>(id)
            })
            .await
            .unwrap()
    };
    let first = next().await;
    assert_eq!(next().await, first, "the same id, as on a fresh database");
}

/// Items whose deletion a user's trigger logs in another table.
static LOGGED: Suite<MySql> =
    Suite::new("mysql_logged", || {
        let backend = MySql::from_env()?;
        Ok(Setup::new(TestDatabase::builder(backend).migrations(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mysql_trigger_schema"),
        ))
        .isolation(Isolation::Committed))
    });

#[tokio::test]
async fn what_a_users_trigger_writes_during_a_restore_is_restored_too() {
    if mysql().is_none() {
        return;
    }
    let mut databases = Vec::new();
    for round in 0..3 {
        let database = LOGGED
            .run(async |conn: &mut Conn, ()| {
                let state: String = sqlx::query_scalar(
                    "SELECT CONCAT_WS(' ', (SELECT group_concat(name ORDER BY id) FROM items), \
                     (SELECT COUNT(*) FROM item_log))",
                )
                .fetch_one(&mut *conn)
                .await?;
                assert_eq!(state, "one,two 0", "round {round} starts from the setup");
                // Only `items` is written; emptying it to restore it fires the user's trigger.
                sqlx::query("UPDATE items SET name = 'uno' WHERE id = 1")
                    .execute(&mut *conn)
                    .await?;
                let database: String = sqlx::query_scalar("SELECT DATABASE()")
                    .fetch_one(&mut *conn)
                    .await?;
                Ok::<_, sqlx::Error>(database)
            })
            .await
            .unwrap_or_else(|err| panic!("round {round}: {err:?}"));
        databases.push(database);
    }
    // Restored in place: a failed restore would have replaced the database with a new copy.
    assert_eq!(databases[0], databases[1]);
    assert_eq!(databases[1], databases[2]);
}

// Transaction isolation tells a deadlock's victim, whose transaction InnoDB rolled back, from a
// test that committed: only the latter is an escape.

static DEADLOCKS: Suite<MySql, i64> =
    Suite::new("mysql_deadlocks", || shop(Isolation::Transaction));

/// Renames `first`, then, once the other test has renamed the other user, `second`.
async fn rename_both(
    barrier: &tokio::sync::Barrier,
    first: i64,
    second: i64,
) -> Result<String, sqlx::Error> {
    DEADLOCKS
        .run(async |conn: &mut Conn, _: i64| {
            sqlx::query("UPDATE users SET name = CONCAT(name, '!') WHERE id = ?")
                .bind(first)
                .execute(&mut *conn)
                .await?;
            barrier.wait().await;
            sqlx::query("UPDATE users SET name = CONCAT(name, '?') WHERE id = ?")
                .bind(second)
                .execute(&mut *conn)
                .await?;
            sqlx::query_scalar::<_, String>("SELECT DATABASE()")
                .fetch_one(&mut *conn)
                .await
        })
        .await
        .map_err(|err| match err {
            Error::Test { source, .. } => *source.downcast::<sqlx::Error>().unwrap(),
            other => panic!("not the test's own error: {other:?}"),
        })
}

#[tokio::test]
async fn a_deadlock_fails_its_victim_and_nothing_else() {
    if mysql().is_none() {
        return;
    }
    let names = async || {
        DEADLOCKS
            .run(async |conn: &mut Conn, _: i64| {
                let names: String = sqlx::query_scalar(
                    "SELECT group_concat(name ORDER BY id) FROM users WHERE id IN (1, 2)",
                )
                .fetch_one(&mut *conn)
                .await?;
                let database: String = sqlx::query_scalar("SELECT DATABASE()")
                    .fetch_one(&mut *conn)
                    .await?;
                Ok::<_, sqlx::Error>((names, database))
            })
            .await
            .unwrap()
    };
    let (before, database) = names().await;
    let barrier = tokio::sync::Barrier::new(2);
    let (a, b) = tokio::join!(rename_both(&barrier, 1, 2), rename_both(&barrier, 2, 1));
    let (won, lost) = match (a, b) {
        (Ok(won), Err(lost)) | (Err(lost), Ok(won)) => (won, lost),
        other => panic!("one test must be the deadlock's victim: {other:?}"),
    };
    assert_eq!(won, database, "the winner ran in the suite's database");
    assert_eq!(
        lost.as_database_error()
            .and_then(|err| err.code())
            .as_deref(),
        Some("40001"),
        "the victim fails with the deadlock: {lost}"
    );
    assert_eq!(
        names().await,
        (before, database),
        "both are rolled back, and the database is the same: no escape was seen"
    );
}

static ROLLED_BACK: Suite<MySql, i64> =
    Suite::new("mysql_rolled_back", || shop(Isolation::Transaction));

#[tokio::test]
async fn what_a_test_commits_after_a_rollback_is_an_escape_and_what_it_writes_is_undone() {
    if mysql().is_none() {
        return;
    }
    let users = async || {
        ROLLED_BACK
            .run(async |conn: &mut Conn, _: i64| {
                sqlx::query_scalar::<_, String>(
                    "SELECT CONCAT(COUNT(*), ' ', DATABASE()) FROM users",
                )
                .fetch_one(&mut *conn)
                .await
            })
            .await
            .unwrap()
    };
    let before = users().await;
    // Rolled back, then written: the write is in a transaction testdb rolls back.
    ROLLED_BACK
        .run(async |conn: &mut Conn, _: i64| {
            sqlx::raw_sql("ROLLBACK; INSERT INTO users (name) VALUES ('late')")
                .execute(&mut *conn)
                .await
        })
        .await
        .unwrap();
    assert_eq!(users().await, before, "undone, in the same database");
    // Rolled back, then committed, explicitly or by DDL: escapes, and the suite is built again.
    for commit in [
        "ROLLBACK; BEGIN; INSERT INTO users (name) VALUES ('sneaky'); COMMIT",
        "ROLLBACK; INSERT INTO users (name) VALUES ('sneaky'); CREATE TABLE sneaky (id INT)",
        // Committed, and the test savepoint made again, as if nothing happened.
        "ROLLBACK; INSERT INTO users (name) VALUES ('sneaky'); COMMIT; SAVEPOINT testdb_test",
        "INSERT INTO users (name) VALUES ('sneaky'); COMMIT; SAVEPOINT testdb_test",
        "INSERT INTO users (name) VALUES ('sneaky'); CREATE TABLE sneakier (id INT); \
         SAVEPOINT testdb_test",
        "SET autocommit = 1; INSERT INTO users (name) VALUES ('sneaky'); SET autocommit = 0; \
         SAVEPOINT testdb_test",
    ] {
        let err = ROLLED_BACK
            .run(async |conn: &mut Conn, _: i64| sqlx::raw_sql(commit).execute(&mut *conn).await)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Escaped { .. }), "{commit}: {err:?}");
        let after = users().await;
        assert!(
            after.starts_with("3 "),
            "{commit}: nothing committed is seen: {after}"
        );
        assert_ne!(after, before, "{commit}: a new copy");
    }
}

static SABOTAGED: Suite<MySql, i64> =
    Suite::new("mysql_sabotaged", || shop(Isolation::Transaction));

#[tokio::test]
async fn a_session_that_cannot_begin_a_test_is_closed_and_not_handed_out_again() {
    if mysql().is_none() {
        return;
    }
    // The test replaces the session's marker table (`testdb_open`, where no table of the
    // database has that name) with one that refuses the row each test's transaction writes, in a
    // way that rolls back cleanly (a marker row there, then gone: the rewind cannot tell it from
    // testdb's own): the next test on this session cannot begin.
    SABOTAGED
        .run(async |conn: &mut Conn, _: i64| {
            sqlx::raw_sql(
                "DROP TEMPORARY TABLE testdb_open; \
                 CREATE TEMPORARY TABLE testdb_open (open INT NOT NULL CHECK (open <> 1)) \
                 ENGINE = InnoDB; \
                 INSERT INTO testdb_open VALUES (2); SAVEPOINT testdb_test",
            )
            .execute(&mut *conn)
            .await
        })
        .await
        .unwrap();
    // Turns through every connection of the pool, twice: the sabotaged session fails one test's
    // beginning and goes; left in the pool, it would fail each test it was handed to.
    let mut failures = Vec::new();
    for _ in 0..12 {
        let run = SABOTAGED
            .run(async |conn: &mut Conn, _: i64| {
                sqlx::query_scalar::<_, i64>("SELECT @@autocommit")
                    .fetch_one(&mut *conn)
                    .await
            })
            .await;
        match run {
            Ok(autocommit) => assert_eq!(autocommit, 0, "the test runs in testdb's transaction"),
            Err(err) => failures.push(err),
        }
    }
    assert_eq!(
        failures.len(),
        1,
        "exactly the test handed the sabotaged session: {failures:#?}"
    );
    for err in &failures {
        assert!(
            format!("{err}").contains("begin the test's transaction"),
            "{err:?}"
        );
    }
    // Connections of the pool taken outside any test are as the pool expects, too.
    let pool = SABOTAGED
        .run(async |_: &mut Conn, _: i64| {
            Ok::<_, Error>(testdb::current::<MySql>()?.pool().clone())
        })
        .await
        .unwrap();
    for _ in 0..4 {
        let autocommit: i64 = sqlx::query_scalar("SELECT @@autocommit")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(autocommit, 1);
    }
}

/// A setup with a user whose id is 0, which MySQL stores only under `NO_AUTO_VALUE_ON_ZERO`.
fn with_user_zero(isolation: Isolation) -> testdb::Result<Setup<MySql, i64>> {
    Ok(shop(isolation)?
        .version("user zero")
        .data(async |conn: &mut Conn| {
            sqlx::raw_sql(
                "SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_AUTO_VALUE_ON_ZERO'); \
             INSERT INTO users (id, name) VALUES (0, 'zero')",
            )
            .execute(&mut *conn)
            .await?;
            Ok::<_, sqlx::Error>(0)
        }))
}

static ZERO_COMMITTED: Suite<MySql, i64> = Suite::new("mysql_zero_committed", || {
    with_user_zero(Isolation::Committed)
});
static ZERO_FRESH: Suite<MySql, i64> = Suite::new("mysql_zero_fresh", || {
    with_user_zero(Isolation::FreshDatabase)
});

#[tokio::test]
async fn a_row_whose_auto_increment_id_is_0_is_copied_and_restored_as_0() {
    if mysql().is_none() {
        return;
    }
    for (suite, isolation) in [(&ZERO_COMMITTED, "committed"), (&ZERO_FRESH, "fresh")] {
        for _ in 0..2 {
            suite
                .run(async |conn: &mut Conn, _: i64| {
                    let zero: Option<String> =
                        sqlx::query_scalar("SELECT name FROM users WHERE id = 0")
                            .fetch_optional(&mut *conn)
                            .await?;
                    assert_eq!(zero.as_deref(), Some("zero"), "{isolation}");
                    sqlx::query("UPDATE users SET name = 'changed' WHERE id = 0")
                        .execute(&mut *conn)
                        .await?;
                    Ok::<_, sqlx::Error>(())
                })
                .await
                .unwrap();
        }
    }
}

static DDL: Suite<MySql, i64> = Suite::new("mysql_ddl", || shop(Isolation::Savepoint));

#[tokio::test]
async fn ddl_in_a_savepoint_suite_is_an_escape_that_says_what_to_do() {
    if mysql().is_none() {
        return;
    }
    let err = DDL
        .run(async |conn: &mut Conn, _: i64| {
            sqlx::query("INSERT INTO users (name) VALUES ('leaked')")
                .execute(&mut *conn)
                .await?;
            sqlx::query("CREATE TABLE notes (id INTEGER PRIMARY KEY)")
                .execute(&mut *conn)
                .await?;
            Ok::<_, sqlx::Error>(())
        })
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Escaped { .. }), "{err:?}");
    assert!(text.contains("FreshDatabase"), "{text}");
    // The suite is built again: the next test sees neither the row nor the table.
    DDL.run(async |conn: &mut Conn, _: i64| {
        let leaked: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE name = 'leaked'")
            .fetch_one(&mut *conn)
            .await?;
        assert_eq!(leaked, 0);
        let notes: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'notes'",
        )
        .fetch_one(&mut *conn)
        .await?;
        assert_eq!(notes, 0);
        Ok::<_, sqlx::Error>(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn ddl_is_fine_in_a_fresh_database() {
    if mysql().is_none() {
        return;
    }
    for _ in 0..2 {
        FRESH
            .run(async |conn: &mut Conn, _: i64| {
                sqlx::query("CREATE TABLE notes (id INTEGER PRIMARY KEY)")
                    .execute(&mut *conn)
                    .await?;
                Ok::<_, sqlx::Error>(())
            })
            .await
            .unwrap();
    }
}

fn myisam(isolation: Isolation) -> testdb::Result<Setup<MySql, ()>> {
    let backend = MySql::from_env()?;
    Ok(Setup::new(TestDatabase::builder(backend))
        .isolation(isolation)
        .data(async |conn: &mut Conn| {
            sqlx::query("CREATE TABLE counters (id INTEGER PRIMARY KEY) ENGINE = MyISAM")
                .execute(&mut *conn)
                .await?;
            Ok::<_, sqlx::Error>(())
        }))
}

static MYISAM_SAVEPOINT: Suite<MySql, ()> =
    Suite::new("mysql_myisam_savepoint", || myisam(Isolation::Savepoint));
static MYISAM_FRESH: Suite<MySql, ()> =
    Suite::new("mysql_myisam_fresh", || myisam(Isolation::FreshDatabase));

#[tokio::test]
async fn tables_without_transactions_are_refused_where_tests_roll_back() {
    if mysql().is_none() {
        return;
    }
    let err = MYISAM_SAVEPOINT
        .run(async |_: &mut Conn, ()| Ok::<_, sqlx::Error>(()))
        .await
        .unwrap_err();
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        chain.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    assert!(
        chain.contains("counters (MyISAM)") && chain.contains("FreshDatabase"),
        "{chain}"
    );
    MYISAM_FRESH
        .run(async |conn: &mut Conn, ()| {
            sqlx::query("INSERT INTO counters VALUES (1)")
                .execute(&mut *conn)
                .await?;
            Ok::<_, sqlx::Error>(())
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_sweep_removes_what_a_dead_process_left_and_nothing_else() {
    let Some(backend) = mysql() else { return };
    let mut admin = admin().await;
    let dead = format!("testdb_{:016x}_0", std::process::id() as u64 * 7919);
    let foreign = format!("testdb_not_ours_{}", std::process::id());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE `{dead}` COMMENT 'testdb v1 owner={:016x}'; CREATE DATABASE `{foreign}`",
        std::process::id() as u64 * 7919
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let live = TestDatabase::create(backend.clone()).await.unwrap();
    testdb::sweep(&backend).await.unwrap();
    assert!(!exists(&dead).await, "the dead process's database is gone");
    assert!(
        exists(&foreign).await,
        "a database without testdb's mark stays"
    );
    assert!(exists(live.name()).await, "a live process's database stays");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE `{foreign}`")))
        .execute(&mut admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_owner_whose_sessions_are_killed_takes_its_lock_again_and_keeps_its_databases() {
    let Some(backend) = mysql() else { return };
    let db = TestDatabase::builder(backend.clone())
        .migrations(schema())
        .create()
        .await
        .unwrap();
    let mut admin = admin().await;
    let comment: String = sqlx::query_scalar(
        "SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
    )
    .bind(db.name())
    .fetch_one(&mut admin)
    .await
    .unwrap();
    let lock = format!(
        "testdb_owner_{}",
        comment.strip_prefix("testdb v1 owner=").unwrap()
    );
    let holder = async |admin: &mut MySqlConnection| -> Option<i64> {
        sqlx::query_scalar("SELECT IS_USED_LOCK(?)")
            .bind(&lock)
            .fetch_one(admin)
            .await
            .unwrap()
    };
    let first = holder(&mut admin).await.expect("the owner holds its lock");
    // As a server that drops connections would: the lock's session, and every session on the
    // database.
    let mut victims: Vec<i64> = sqlx::query_scalar(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()",
    )
    .bind(db.name())
    .fetch_all(&mut admin)
    .await
    .unwrap();
    victims.push(first);
    for id in victims {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("KILL CONNECTION {id}")))
            .execute(&mut admin)
            .await;
    }
    let mut again = None;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        again = holder(&mut admin).await;
        if again.is_some() {
            break;
        }
    }
    let again = again.expect("the lock is taken again within 10 s");
    assert_ne!(again, first, "on a new session");
    testdb::sweep(&backend).await.unwrap();
    assert!(exists(db.name()).await, "another sweep leaves the database");
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(users, 0, "and it is still usable");
    db.remove().await.unwrap();
}

#[test]
fn a_password_in_the_url_is_never_shown() {
    let backend = MySql::from_url("mysql://root:hunter2@127.0.0.1:3306/app").unwrap();
    let shown = format!("{backend:?} {}", backend.redacted_url());
    assert!(!shown.contains("hunter2"), "{shown}");
    let err = MySql::from_url("mysql://root:hunter2@127.0.0.1:notaport").unwrap_err();
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
}

// `#[testdb::test]` on MySQL: as `#[sqlx::test]` takes a `MySqlPool`, and a connection in a
// savepoint. Without TESTDB_MYSQL_URL both say that they were skipped.

#[testdb::test(
    migrations = "tests/mysql_schema",
    fixtures("mysql_fixtures/shop.json")
)]
async fn the_attribute_gives_a_pool_its_own_database(pool: sqlx::MySqlPool) -> sqlx::Result<()> {
    let handle = testdb::current::<MySql>().unwrap();
    assert_eq!(handle.isolation(), Isolation::FreshDatabase);
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&pool)
        .await?;
    assert_eq!(users, 2, "the fixture's users");
    Ok(())
}

/// Run by two tests: each finds the order that the other deleted.
async fn deletes_the_order(conn: &mut MySqlConnection) -> sqlx::Result<()> {
    assert_eq!(
        testdb::current::<MySql>().unwrap().isolation(),
        Isolation::Savepoint
    );
    let orders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
        .fetch_one(&mut *conn)
        .await?;
    assert_eq!(
        orders, 1,
        "every test sees the fixture, whatever the last one deleted"
    );
    sqlx::query("DELETE FROM orders")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[testdb::test(
    migrations = "tests/mysql_schema",
    fixtures("mysql_fixtures/shop.json")
)]
async fn the_attribute_runs_a_connection_in_a_savepoint(
    conn: &mut MySqlConnection,
) -> sqlx::Result<()> {
    deletes_the_order(conn).await
}

#[testdb::test(
    migrations = "tests/mysql_schema",
    fixtures("mysql_fixtures/shop.json")
)]
async fn another_attribute_test_in_the_same_savepoint_suite(
    conn: &mut MySqlConnection,
) -> sqlx::Result<()> {
    deletes_the_order(conn).await
}

// Named locks belong to sessions: one lost while its process lives (a server restart, `KILL`) is
// taken again on a new session, but another process may have held it in between.

/// `name`'s template lock, as the backend names it, and the session holding it.
async fn template_lock_holder(admin: &mut MySqlConnection, name: &str) -> Option<i64> {
    sqlx::query_scalar("SELECT CAST(IS_USED_LOCK(CONCAT('testdb_lock_', MD5(?))) AS SIGNED)")
        .bind(name)
        .fetch_one(admin)
        .await
        .unwrap()
}

/// The sessions using template `name`.
async fn template_users(admin: &mut MySqlConnection, name: &str) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT CAST(ID AS SIGNED) FROM information_schema.PROCESSLIST \
         WHERE IS_USED_LOCK(CONCAT('testdb_use_', MD5(?), '_', ID)) IS NOT NULL",
    )
    .bind(name)
    .fetch_all(admin)
    .await
    .unwrap()
}

/// Waits until the sessions that held template `name`'s lock or its uses have let them go (a
/// dropped lock's session is closed in the background).
async fn released(admin: &mut MySqlConnection, name: &str) {
    for _ in 0..500 {
        if template_lock_holder(admin, name).await.is_none()
            && template_users(admin, name).await.is_empty()
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("template {name}'s locks were not released");
}

async fn kill(admin: &mut MySqlConnection, id: i64) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("KILL CONNECTION {id}")))
        .execute(admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_build_whose_template_lock_was_lost_meanwhile_is_not_used() {
    use testdb::backend::{OwnedDatabase, Server, Templates};
    let Some(backend) = mysql() else { return };
    let name = format!("testdb_tpl_lost_lock_{}_x", std::process::id());
    let mut admin = admin().await;
    let lock = backend.lock_template(&name).await.unwrap();
    let first = template_lock_holder(&mut admin, &name)
        .await
        .expect("the builder holds the lock");
    kill(&mut admin, first).await;
    let mut again = None;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        again = template_lock_holder(&mut admin, &name).await;
        if again.is_some() {
            break;
        }
    }
    assert!(
        again.is_some_and(|again| again != first),
        "taken again on a new session: {again:?}"
    );
    let built = backend.create().await.unwrap();
    let built_name = built.name().to_owned();
    let err = backend.promote(built, &name, "1").await.unwrap_err();
    assert!(
        format!("{err}: {:?}", std::error::Error::source(&err)).contains("lost its lock"),
        "{err:?}"
    );
    assert_eq!(backend.find_template(&name).await.unwrap(), None);
    assert!(
        !exists(&name).await,
        "nothing of the build became a template"
    );
    assert!(!exists(&built_name).await, "the build is removed");
    drop(lock);

    // Under a lock that held, the same build is promoted.
    let lock = backend.lock_template(&name).await.unwrap();
    let built = backend.create().await.unwrap();
    backend.promote(built, &name, "2").await.unwrap();
    assert_eq!(
        backend.find_template(&name).await.unwrap().as_deref(),
        Some("2")
    );
    drop(lock);
    released(&mut admin, &name).await;
    assert_eq!(backend.remove_templates(&name, "").await.unwrap(), 1);
}

#[tokio::test]
async fn a_template_whose_user_just_lost_its_session_is_not_removed() {
    use testdb::backend::{Server, Templates};
    let Some(backend) = mysql() else { return };
    let name = format!("testdb_tpl_lost_use_{}_x", std::process::id());
    let lock = backend.lock_template(&name).await.unwrap();
    let built = backend.create().await.unwrap();
    backend.promote(built, &name, "1").await.unwrap();
    drop(lock);
    let mut admin = admin().await;
    released(&mut admin, &name).await;
    let in_use = backend.share_template(&name).await.unwrap();
    let users = template_users(&mut admin, &name).await;
    assert_eq!(users.len(), 1, "the user's session holds its use");
    kill(&mut admin, users[0]).await;
    // Removed at the moment the use is gone, before the user takes it again.
    let mut gone = false;
    for _ in 0..1000 {
        if template_users(&mut admin, &name).await.is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(gone, "the killed session's use ended");
    assert_eq!(
        backend.remove_templates(&name, "").await.unwrap(),
        0,
        "the user took its use again before the remover believed it gone"
    );
    assert_eq!(
        backend.find_template(&name).await.unwrap().as_deref(),
        Some("1")
    );
    assert_eq!(template_users(&mut admin, &name).await.len(), 1);
    drop(in_use);
    released(&mut admin, &name).await;
    assert_eq!(backend.remove_templates(&name, "").await.unwrap(), 1);
    assert!(!exists(&name).await);
}
