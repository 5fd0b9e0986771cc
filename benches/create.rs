//! What a test database costs: testdb's create + drop, side by side with the same work done by
//! hand on a bare sqlx connection (SQLite: new file, WAL, connect, delete; PostgreSQL:
//! `CREATE DATABASE`, connect, `DROP DATABASE`).
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
use sqlx::{ConnectOptions, Connection};
use testdb_postgres::Postgres;
use testdb_sqlite::{Sqlite, TestDatabase};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn sqlite(c: &mut Criterion) {
    let mut group = c.benchmark_group("create/sqlite");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("testdb", |b| {
        b.iter(|| {
            drop(
                TestDatabase::builder(Sqlite::new())
                    .create_blocking()
                    .expect("create"),
            )
        });
    });
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut n = 0;
    group.bench_function("raw", |b| {
        b.iter(|| {
            n += 1;
            let file = dir.path().join(format!("raw{n}.sqlite3"));
            rt.block_on(async {
                let conn = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(&file)
                    .create_if_missing(true)
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .connect()
                    .await
                    .expect("connect");
                conn.close().await.expect("close");
            });
            std::fs::remove_file(&file).expect("remove");
            let _ = std::fs::remove_file(file.with_extension("sqlite3-wal"));
            let _ = std::fs::remove_file(file.with_extension("sqlite3-shm"));
        });
    });
    group.finish();
}

fn postgres(c: &mut Criterion) {
    let Ok(backend) = Postgres::from_env() else {
        eprintln!("create/postgres skipped: set TESTDB_POSTGRES_URL to measure PostgreSQL");
        return;
    };
    let url = std::env::var("TESTDB_POSTGRES_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .expect("url");
    let mut group = c.benchmark_group("create/postgres");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("testdb", |b| {
        b.iter(|| {
            drop(
                testdb::TestDatabase::builder(backend.clone())
                    .create_blocking()
                    .expect("create"),
            )
        });
    });
    let rt = runtime();
    let mut n = 0;
    group.bench_function("raw", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&url).await.expect("connect");
                let started = Instant::now();
                for _ in 0..iters {
                    n += 1;
                    let name = format!("bench_raw_{}_{n}", std::process::id());
                    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                        .execute(&mut admin)
                        .await
                        .expect("create");
                    let options: sqlx::postgres::PgConnectOptions = url.parse().expect("url");
                    let conn = options.database(&name).connect().await.expect("connect");
                    conn.close().await.expect("close");
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE \"{name}\" WITH (FORCE)"
                    )))
                    .execute(&mut admin)
                    .await
                    .expect("drop");
                }
                started.elapsed()
            })
        });
    });
    group.finish();
}

criterion_group!(benches, sqlite, postgres);
criterion_main!(benches);
