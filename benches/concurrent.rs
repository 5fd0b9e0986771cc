//! What `spawn_concurrent` costs: 8 callers that each connect and run one query, in child
//! processes released together, side by side with the same done by hand: spawning this binary 8
//! times with `std::process::Command`, each child connecting and querying, the parent waiting for
//! all. The in-process twin `run_concurrent` runs alongside for reference, and the release skew
//! (first to last child released) is printed.
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

use std::process::{Command, Stdio};
use std::time::Duration;

use criterion::{Criterion, criterion_group};
use sqlx::{Connection, Database};
use testdb::{
    Backend, Caller, Calls, TestDatabase, run_concurrent, serve_callers, spawn_concurrent,
};
use testdb_mysql::MySql;
use testdb_postgres::Postgres;
use testdb_sqlite::Sqlite;

const CALLERS: usize = 8;
/// Tells a child started by hand where to connect.
const HAND_URL: &str = "TESTDB_BENCH_CHILD_URL";
const HAND_BACKEND: &str = "TESTDB_BENCH_CHILD_BACKEND";

type Conn<B> = <<B as testdb::backend::Driver>::Database as Database>::Connection;

async fn ping_sqlite(conn: &mut sqlx::SqliteConnection, (): ()) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT 1").fetch_one(conn).await
}

async fn ping_postgres(conn: &mut sqlx::PgConnection, (): ()) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT 1::int8").fetch_one(conn).await
}

async fn ping_mysql(conn: &mut sqlx::MySqlConnection, (): ()) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT CAST(1 AS SIGNED)")
        .fetch_one(conn)
        .await
}

trait Pinged: Backend {
    const KEY: &'static str;
    fn calls() -> Calls<Conn<Self>, i64>;
}

impl Pinged for Sqlite {
    const KEY: &'static str = "sqlite";
    fn calls() -> Calls<Conn<Self>, i64> {
        Calls::repeat(CALLERS, ping_sqlite, ())
    }
}

impl Pinged for Postgres {
    const KEY: &'static str = "postgres";
    fn calls() -> Calls<Conn<Self>, i64> {
        Calls::repeat(CALLERS, ping_postgres, ())
    }
}

impl Pinged for MySql {
    const KEY: &'static str = "mysql";
    fn calls() -> Calls<Conn<Self>, i64> {
        Calls::repeat(CALLERS, ping_mysql, ())
    }
}

/// A child started by hand: connect, query, exit.
fn hand_child(url: &str, backend: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        if backend == "sqlite" {
            let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
            ping_sqlite(&mut conn, ()).await.unwrap();
        } else if backend == "mysql" {
            let mut conn = sqlx::MySqlConnection::connect(url).await.unwrap();
            ping_mysql(&mut conn, ()).await.unwrap();
        } else {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            ping_postgres(&mut conn, ()).await.unwrap();
        }
    });
    std::process::exit(0);
}

fn compare<B: Pinged>(c: &mut Criterion, backend: B) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = runtime.block_on(TestDatabase::create(backend)).unwrap();
    let handle = db.handle();
    let exe = std::env::current_exe().unwrap();
    let mut group = c.benchmark_group(format!("concurrent/{}", B::NAME));
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("8 children by hand (Command, connect, query)", |b| {
        b.iter(|| {
            let children: Vec<_> = (0..CALLERS)
                .map(|_| {
                    Command::new(&exe)
                        .env(HAND_URL, db.url())
                        .env(HAND_BACKEND, B::KEY)
                        .stdout(Stdio::null())
                        .spawn()
                        .unwrap()
                })
                .collect();
            for mut child in children {
                assert!(child.wait().unwrap().success());
            }
        });
    });
    let mut skews = Vec::new();
    group.bench_function("spawn_concurrent, 8 callers", |b| {
        b.iter(|| {
            let outcomes = runtime
                .block_on(spawn_concurrent(&handle, B::calls()))
                .unwrap();
            skews.extend(outcomes.release_skew);
            assert_eq!(outcomes.values().unwrap(), [1; CALLERS]);
        });
    });
    group.bench_function("run_concurrent (in-process), 8 callers", |b| {
        b.iter(|| {
            let outcomes = runtime
                .block_on(run_concurrent(&handle, B::calls()))
                .unwrap();
            assert_eq!(outcomes.values().unwrap(), [1; CALLERS]);
        });
    });
    group.finish();
    skews.sort();
    if !skews.is_empty() {
        let at = |fraction: f64| skews[((skews.len() - 1) as f64 * fraction) as usize];
        println!(
            "concurrent/{}: release skew of 8 children over {} batches: median {:?}, 90th \
             percentile {:?}, max {:?}",
            B::NAME,
            skews.len(),
            at(0.5),
            at(0.9),
            at(1.0)
        );
    }
    drop(db);
}

fn sqlite(c: &mut Criterion) {
    compare(c, Sqlite::new());
}

fn postgres(c: &mut Criterion) {
    match Postgres::from_env() {
        Ok(backend) => compare(c, backend),
        Err(_) => eprintln!("concurrent/PostgreSQL skipped: set TESTDB_POSTGRES_URL to measure it"),
    }
}

fn mysql(c: &mut Criterion) {
    match MySql::from_env() {
        Ok(backend) => compare(c, backend),
        Err(_) => eprintln!("concurrent/MySQL skipped: set TESTDB_MYSQL_URL to measure it"),
    }
}

criterion_group!(benches, sqlite, postgres, mysql);

fn main() {
    // The children of spawn_concurrent, and those started by hand, are runs of this binary.
    serve_callers(&[
        Caller::of(ping_sqlite),
        Caller::of(ping_postgres),
        Caller::of(ping_mysql),
    ]);
    if let (Ok(url), Ok(backend)) = (std::env::var(HAND_URL), std::env::var(HAND_BACKEND)) {
        hand_child(&url, &backend);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
