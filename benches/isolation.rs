//! The per-test cost of isolation, on both backends.
//!
//! - `per-test/<engine>`: a test that inserts one row, run through a savepoint `Suite`, side by
//!   side with the raw cycle `SAVEPOINT; INSERT; ROLLBACK TO SAVEPOINT` on a bare sqlx connection
//!   inside a transaction.
//! - `reference/<engine>`: the reference suite (10 tables, 10,000 fixture rows; each test inserts
//!   two rows and updates one) in each isolation, side by side with what each one replaces: a new
//!   database with migrations and fixtures per test (the `sqlx::test` way), `TRUNCATE` and a reload
//!   of every table (Django's `TransactionTestCase`), and one `CREATE DATABASE … TEMPLATE` (a file
//!   copy on SQLite) and a connection.
//!
//! - `deferred/<engine>`: a savepoint test on 15,600 rows in 11 tables whose foreign keys are all
//!   deferred, side by side with the same test on the same schema holding 77 rows: the deferred-key
//!   check at the end of each test should cost what the test wrote, not what the database holds.
//!
//! PostgreSQL runs when `TESTDB_POSTGRES_URL` (or `DATABASE_URL`) is set, MySQL when
//! `TESTDB_MYSQL_URL` is.

// Tests, examples and benches may panic and print; the library may not (see Cargo.toml).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

mod reference;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sqlx::{AssertSqlSafe, Connection, Database, Executor};
use testdb::{Backend, Fixtures, Isolation, Setup, Suite, TestDatabase, load_fixtures};
use testdb_mysql::MySql;
use testdb_postgres::Postgres;
use testdb_sqlite::Sqlite;

const MIGRATIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/migrations");
const MYSQL_MIGRATIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/mysql_migrations");
const INSERT: &str = "INSERT INTO users (id, name) VALUES (1000, 'bench')";

static SQLITE: Suite<Sqlite> = Suite::new("bench-sqlite", || {
    Ok(Setup::new(
        TestDatabase::builder(Sqlite::new()).migrations(MIGRATIONS),
    ))
});

static POSTGRES: Suite<Postgres> = Suite::new("bench-postgres", || {
    Ok(Setup::new(
        TestDatabase::builder(Postgres::from_env()?).migrations(MIGRATIONS),
    ))
});

static MYSQL: Suite<MySql> = Suite::new("bench-mysql", || {
    Ok(Setup::new(
        TestDatabase::builder(MySql::from_env()?).migrations(MYSQL_MIGRATIONS),
    ))
});

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The raw cycle on `conn`, already inside a transaction, `iters` times.
async fn raw_cycles<C>(conn: &mut C, iters: u64) -> Duration
where
    for<'c> &'c mut C: Executor<'c>,
{
    let started = Instant::now();
    for _ in 0..iters {
        (&mut *conn)
            .execute("SAVEPOINT raw")
            .await
            .expect("savepoint");
        (&mut *conn).execute(INSERT).await.expect("insert");
        (&mut *conn)
            .execute("ROLLBACK TO SAVEPOINT raw")
            .await
            .expect("rollback");
    }
    started.elapsed()
}

/// The raw cycle and a suite test, side by side, on `backend`.
fn compare<B>(c: &mut Criterion, backend: B, migrations: &str, suite: &'static Suite<B>)
where
    B: Backend,
    for<'c> &'c mut <B::Database as Database>::Connection: Executor<'c, Database = B::Database>,
{
    let rt = runtime();
    let db = rt
        .block_on(
            TestDatabase::builder(backend)
                .migrations(migrations)
                .create(),
        )
        .expect("raw database");
    let mut group = c.benchmark_group(format!("per-test/{}", B::NAME));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("raw cycle", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                // A bare connection, opened on this runtime as a hand-written test would.
                let mut conn = <<B::Database as Database>::Connection as Connection>::connect_with(
                    db.connect_options(),
                )
                .await
                .unwrap();
                conn.execute("BEGIN").await.unwrap();
                let took = raw_cycles(&mut conn, iters).await;
                conn.execute("ROLLBACK").await.unwrap();
                took
            })
        });
    });
    group.bench_function("savepoint suite", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    suite
                        .run(
                            async |conn: &mut <B::Database as Database>::Connection, ()| {
                                conn.execute(INSERT).await.map(drop)
                            },
                        )
                        .await
                        .expect("test");
                }
                started.elapsed()
            })
        });
    });
    group.finish();
}

fn sqlite(c: &mut Criterion) {
    compare(c, Sqlite::new(), MIGRATIONS, &SQLITE);
}

fn postgres(c: &mut Criterion) {
    match Postgres::from_env() {
        Ok(backend) => compare(c, backend, MIGRATIONS, &POSTGRES),
        Err(_) => eprintln!("per-test/PostgreSQL skipped: set TESTDB_POSTGRES_URL to measure it"),
    }
}

fn mysql(c: &mut Criterion) {
    match MySql::from_env() {
        Ok(backend) => compare(c, backend, MYSQL_MIGRATIONS, &MYSQL),
        Err(_) => eprintln!("per-test/MySQL skipped: set TESTDB_MYSQL_URL to measure it"),
    }
}

// The reference suite.

/// The reference schema and fixture file, written once per process.
fn reference_files() -> &'static (PathBuf, String) {
    static FILES: OnceLock<(PathBuf, String)> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("testdb-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        reference::schema(&dir);
        let file = reference::fixture_file(&dir);
        (dir, file)
    })
}

fn reference_builder<B: Backend>(backend: B) -> testdb::Builder<B> {
    let (dir, file) = reference_files();
    TestDatabase::builder(backend)
        .migrations(dir.as_path())
        .fixtures(Fixtures::files([file.clone()]))
}

/// A test of the reference suite: a few rows written.
const WRITES: [&str; 2] = [
    "INSERT INTO t9 (id, name, amount, created, flag, parent_id) \
     VALUES (5001, 'new', 1.5, '2024-01-01', true, 1), (5002, 'new', 2.5, '2024-01-02', false, 2)",
    "UPDATE t9 SET name = 'changed' WHERE id = 7",
];

async fn reference_test<C>(conn: &mut C) -> Result<(), sqlx::Error>
where
    for<'c> &'c mut C: Executor<'c>,
{
    for statement in WRITES {
        (&mut *conn).execute(statement).await?;
    }
    Ok(())
}

macro_rules! reference_suites {
    ($backend:ty, $make:expr) => {{
        fn setup(isolation: Isolation) -> testdb::Result<Setup<$backend>> {
            Ok(Setup::new(reference_builder($make?))
                .isolation(isolation)
                .version("bench"))
        }
        static SUITES: [Suite<$backend>; 4] = [
            Suite::new("reference", || setup(Isolation::Savepoint)),
            Suite::new("reference", || setup(Isolation::Transaction)),
            Suite::new("reference", || setup(Isolation::Committed)),
            Suite::new("reference", || setup(Isolation::FreshDatabase)),
        ];
        &SUITES
    }};
}

/// What each backend's baselines need done by hand.
trait Baselines: Backend {
    /// Empties every reference table, as `TRUNCATE` would.
    const EMPTY_ALL: &'static str;
    /// A new database copied from the (idle) database `source`, connected; and how to remove it.
    fn copy(
        &self,
        source: &TestDatabase<Self>,
        index: usize,
    ) -> impl Future<Output = (Conn<Self>, String)>;
    fn remove_copy(&self, name: String) -> impl Future<Output = ()>;
}

type Conn<B> = <<B as testdb::backend::Driver>::Database as Database>::Connection;

impl Baselines for Sqlite {
    const EMPTY_ALL: &'static str = "DELETE FROM t9; DELETE FROM t8; DELETE FROM t7; \
        DELETE FROM t6; DELETE FROM t5; DELETE FROM t4; DELETE FROM t3; DELETE FROM t2; \
        DELETE FROM t1; DELETE FROM t0";

    async fn copy(&self, source: &TestDatabase<Self>, index: usize) -> (Conn<Self>, String) {
        let target = std::env::temp_dir().join(format!(
            "testdb-bench-copy-{}-{index}.sqlite3",
            std::process::id()
        ));
        std::fs::copy(source.name(), &target).unwrap();
        let options = source.connect_options().clone().filename(&target);
        let conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        (conn, target.display().to_string())
    }

    async fn remove_copy(&self, name: String) {
        let _ = std::fs::remove_file(&name);
        let _ = std::fs::remove_file(format!("{name}-wal"));
        let _ = std::fs::remove_file(format!("{name}-shm"));
    }
}

impl Baselines for Postgres {
    const EMPTY_ALL: &'static str = "TRUNCATE t0, t1, t2, t3, t4, t5, t6, t7, t8, t9";

    async fn copy(&self, source: &TestDatabase<Self>, index: usize) -> (Conn<Self>, String) {
        let name = format!("testdb_bench_copy_{}_{index}", std::process::id());
        let mut admin = admin().await;
        admin
            .execute(AssertSqlSafe(format!(
                "CREATE DATABASE \"{name}\" TEMPLATE \"{}\"",
                source.name()
            )))
            .await
            .unwrap();
        let options = source.connect_options().clone().database(&name);
        let conn = sqlx::PgConnection::connect_with(&options).await.unwrap();
        (conn, name)
    }

    async fn remove_copy(&self, name: String) {
        let mut admin = admin().await;
        admin
            .execute(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .await
            .unwrap();
    }
}

impl Baselines for MySql {
    const EMPTY_ALL: &'static str = "SET FOREIGN_KEY_CHECKS = 0; TRUNCATE t9; TRUNCATE t8; \
        TRUNCATE t7; TRUNCATE t6; TRUNCATE t5; TRUNCATE t4; TRUNCATE t3; TRUNCATE t2; \
        TRUNCATE t1; TRUNCATE t0; SET FOREIGN_KEY_CHECKS = 1";

    /// As by hand: `CREATE TABLE … LIKE` and `INSERT … SELECT` per table (which keeps neither
    /// the foreign keys nor the `AUTO_INCREMENT` counters: faster than testdb's exact copy).
    async fn copy(&self, source: &TestDatabase<Self>, index: usize) -> (Conn<Self>, String) {
        let name = format!("testdb_bench_copy_{}_{index}", std::process::id());
        let from = source.name();
        let mut script = format!("CREATE DATABASE `{name}`;");
        for t in 0..10 {
            script.push_str(&format!(
                "CREATE TABLE `{name}`.t{t} LIKE `{from}`.t{t}; \
                 INSERT INTO `{name}`.t{t} SELECT * FROM `{from}`.t{t};"
            ));
        }
        let mut admin = mysql_admin().await;
        sqlx::raw_sql(AssertSqlSafe(script))
            .execute(&mut admin)
            .await
            .unwrap();
        let options = source.connect_options().clone().database(&name);
        let conn = sqlx::MySqlConnection::connect_with(&options).await.unwrap();
        (conn, name)
    }

    async fn remove_copy(&self, name: String) {
        let mut admin = mysql_admin().await;
        admin
            .execute(AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{name}`")))
            .await
            .unwrap();
    }
}

async fn mysql_admin() -> sqlx::MySqlConnection {
    sqlx::MySqlConnection::connect(&std::env::var("TESTDB_MYSQL_URL").unwrap())
        .await
        .unwrap()
}

async fn admin() -> sqlx::PgConnection {
    let url = std::env::var("TESTDB_POSTGRES_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap();
    sqlx::PgConnection::connect(&url).await.unwrap()
}

/// Every isolation of the reference suite, and what each replaces, side by side.
fn reference<B: Baselines>(c: &mut Criterion, backend: B, suites: &'static [Suite<B>; 4])
where
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Database>,
{
    let rt = runtime();
    let mut group = c.benchmark_group(format!("reference/{}", B::NAME));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    let names = ["savepoint", "transaction", "committed", "fresh database"];
    for (suite, name) in suites.iter().zip(names) {
        // The first test builds the template (or the suite transaction): not a per-test cost.
        rt.block_on(suite.run(async |conn: &mut Conn<B>, ()| reference_test(conn).await))
            .unwrap();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        suite
                            .run(async |conn: &mut Conn<B>, ()| reference_test(conn).await)
                            .await
                            .unwrap();
                    }
                    started.elapsed()
                })
            });
        });
    }

    // The sqlx::test way: a new database, migrations and fixtures for every test.
    group.bench_function("new database + migrations + fixtures", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let db = reference_builder(backend.clone()).create().await.unwrap();
                    let mut conn = db.acquire().await.unwrap();
                    reference_test(&mut *conn).await.unwrap();
                    drop(conn);
                    db.remove().await.unwrap();
                }
                started.elapsed()
            })
        });
    });

    // Django's TransactionTestCase: the test commits, then every table is emptied and reloaded.
    let loaded = rt
        .block_on(reference_builder(backend.clone()).create())
        .unwrap();
    let fixtures = Fixtures::files([reference_files().1.clone()]);
    group.bench_function("truncate + reload every table", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut conn = loaded.acquire().await.unwrap();
                let started = Instant::now();
                for _ in 0..iters {
                    reference_test(&mut *conn).await.unwrap();
                    (&mut *conn).execute(B::EMPTY_ALL).await.unwrap();
                    load_fixtures::<B>(&mut conn, &fixtures).await.unwrap();
                }
                started.elapsed()
            })
        });
    });

    // One copy of the baseline by hand, connected; its removal untimed, then timed too.
    let source = rt
        .block_on(reference_builder(backend.clone()).create())
        .unwrap();
    rt.block_on(source.pool().close());
    let mut copies = 0;
    for (name, time_removal) in [
        ("copy the template + connect", false),
        ("copy the template + connect + remove the copy", true),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut took = Duration::ZERO;
                    for _ in 0..iters {
                        copies += 1;
                        let started = Instant::now();
                        let (mut conn, name) = backend.copy(&source, copies).await;
                        reference_test(&mut conn).await.unwrap();
                        if !time_removal {
                            took += started.elapsed();
                        }
                        let _ = conn.close().await;
                        backend.remove_copy(name).await;
                        if time_removal {
                            took += started.elapsed();
                        }
                    }
                    took
                })
            });
        });
    }
    group.finish();
    drop(loaded);
    drop(source);
}

fn reference_sqlite(c: &mut Criterion) {
    reference(
        c,
        Sqlite::new(),
        reference_suites!(Sqlite, Ok::<_, testdb::Error>(Sqlite::new())),
    );
}

fn reference_postgres(c: &mut Criterion) {
    match Postgres::from_env() {
        Ok(backend) => reference(
            c,
            backend,
            reference_suites!(Postgres, Postgres::from_env()),
        ),
        Err(_) => eprintln!("reference/PostgreSQL skipped: set TESTDB_POSTGRES_URL to measure it"),
    }
}

fn reference_mysql(c: &mut Criterion) {
    match MySql::from_env() {
        Ok(backend) => reference(c, backend, reference_suites!(MySql, MySql::from_env())),
        Err(_) => eprintln!("reference/MySQL skipped: set TESTDB_MYSQL_URL to measure it"),
    }
}

/// How committed isolation empties a table it restores, on PostgreSQL: `DELETE` or `TRUNCATE`
/// (then the baseline rows go back in the same transaction).
fn delete_or_truncate(c: &mut Criterion) {
    let Ok(backend) = Postgres::from_env() else {
        return;
    };
    let rt = runtime();
    let db = rt.block_on(reference_builder(backend).create()).unwrap();
    let mut group = c.benchmark_group("restore/PostgreSQL");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    for (name, empty) in [("DELETE", "DELETE FROM t9"), ("TRUNCATE", "TRUNCATE t9")] {
        group.bench_function(format!("test + {name} t9 + reinsert its 1,000 rows"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut conn = db.acquire().await.unwrap();
                    (&mut *conn)
                        .execute("CREATE TABLE IF NOT EXISTS t9_copy AS TABLE t9")
                        .await
                        .unwrap();
                    let started = Instant::now();
                    for _ in 0..iters {
                        reference_test(&mut *conn).await.unwrap();
                        let mut tx = conn.begin().await.unwrap();
                        (&mut *tx).execute(empty).await.unwrap();
                        (&mut *tx)
                            .execute("INSERT INTO t9 SELECT * FROM t9_copy")
                            .await
                            .unwrap();
                        tx.commit().await.unwrap();
                    }
                    started.elapsed()
                })
            });
        });
    }
    group.finish();
}

// A savepoint suite whose foreign keys are all deferred: the check at the end of each test.

/// Rows of the small deferred database: 7 a table, enough for the test's writes.
const FEW_DEFERRED_ROWS: usize = 7 * reference::DEFERRED_TABLES;

/// The deferred schema and its fixture files (all the rows, a few), written once per process.
fn deferred_files() -> &'static (PathBuf, [String; 2]) {
    static FILES: OnceLock<(PathBuf, [String; 2])> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("testdb-bench-deferred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        reference::deferred_schema(&dir);
        let files = [
            reference::deferred_fixture_file(&dir, reference::DEFERRED_ROWS),
            reference::deferred_fixture_file(&dir, FEW_DEFERRED_ROWS),
        ];
        (dir, files)
    })
}

/// A test of the deferred suites: two rows inserted into the last table, one updated.
const DEFERRED_WRITES: [&str; 2] = [
    "INSERT INTO d10 (id, name, parent_id) VALUES (90001, 'new', 1), (90002, 'new', 2)",
    "UPDATE d10 SET name = 'changed' WHERE id = 7",
];

macro_rules! deferred_suites {
    ($backend:ty, $make:expr) => {{
        fn setup(file: usize) -> testdb::Result<Setup<$backend>> {
            let (dir, files) = deferred_files();
            Ok(Setup::new(
                TestDatabase::builder($make?)
                    .migrations(dir.as_path())
                    .fixtures(Fixtures::files([files[file].clone()])),
            ))
        }
        static SUITES: [Suite<$backend>; 2] = [
            Suite::new("deferred-all", || setup(0)),
            Suite::new("deferred-few", || setup(1)),
        ];
        &SUITES
    }};
}

/// A savepoint test on a database of 15,600 rows whose keys are all deferred, and on the same
/// schema with a few rows: checking deferred keys after each test should cost what the test wrote.
fn deferred<B: Backend>(c: &mut Criterion, suites: &'static [Suite<B>; 2])
where
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Database>,
{
    let rt = runtime();
    let mut group = c.benchmark_group(format!("deferred/{}", B::NAME));
    group.measurement_time(Duration::from_secs(5));
    let names = [
        format!(
            "savepoint, {} rows, deferred keys",
            reference::DEFERRED_ROWS
        ),
        format!("savepoint, {FEW_DEFERRED_ROWS} rows, deferred keys"),
    ];
    for (suite, name) in suites.iter().zip(names) {
        let test = async |conn: &mut Conn<B>, ()| {
            for statement in DEFERRED_WRITES {
                (&mut *conn).execute(statement).await?;
            }
            Ok::<_, sqlx::Error>(())
        };
        rt.block_on(suite.run(test)).unwrap();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        suite.run(test).await.unwrap();
                    }
                    started.elapsed()
                })
            });
        });
    }
    group.finish();
}

fn deferred_sqlite(c: &mut Criterion) {
    deferred(
        c,
        deferred_suites!(Sqlite, Ok::<_, testdb::Error>(Sqlite::new())),
    );
}

fn deferred_postgres(c: &mut Criterion) {
    match Postgres::from_env() {
        Ok(_) => deferred(c, deferred_suites!(Postgres, Postgres::from_env())),
        Err(_) => eprintln!("deferred/PostgreSQL skipped: set TESTDB_POSTGRES_URL to measure it"),
    }
}

criterion_group!(
    benches,
    sqlite,
    postgres,
    mysql,
    reference_sqlite,
    reference_postgres,
    reference_mysql,
    delete_or_truncate,
    deferred_sqlite,
    deferred_postgres
);
criterion_main!(benches);
