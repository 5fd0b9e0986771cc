//! The per-test cost of savepoint isolation: a test that inserts one row, run through a `Suite`,
//! side by side with the raw cycle `SAVEPOINT; INSERT; ROLLBACK TO SAVEPOINT` on a bare sqlx
//! connection inside a transaction, on both backends.
//!
//! PostgreSQL runs when `TESTDB_POSTGRES_URL` (or `DATABASE_URL`) is set.

// Tests, examples and benches may panic and print; the library may not (see Cargo.toml).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sqlx::{Connection, Database, Executor};
use testdb::{Backend, Setup, Suite, TestDatabase};
use testdb_postgres::Postgres;
use testdb_sqlite::Sqlite;

const MIGRATIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/migrations");
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
fn compare<B>(c: &mut Criterion, backend: B, suite: &'static Suite<B>)
where
    B: Backend,
    for<'c> &'c mut <B::Database as Database>::Connection: Executor<'c, Database = B::Database>,
{
    let rt = runtime();
    let db = rt
        .block_on(
            TestDatabase::builder(backend)
                .migrations(MIGRATIONS)
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
    compare(c, Sqlite::new(), &SQLITE);
}

fn postgres(c: &mut Criterion) {
    match Postgres::from_env() {
        Ok(backend) => compare(c, backend, &POSTGRES),
        Err(_) => eprintln!("per-test/PostgreSQL skipped: set TESTDB_POSTGRES_URL to measure it"),
    }
}

criterion_group!(benches, sqlite, postgres);
criterion_main!(benches);
