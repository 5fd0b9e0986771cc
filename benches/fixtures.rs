//! Fixture loading: a reference set of 10,000 rows in 10 tables linked by foreign keys, loaded
//! by testdb from a JSON fixture file, side by side with the fastest path written by hand on a
//! bare connection, from rows already in memory (PostgreSQL: `COPY … FROM STDIN`; SQLite:
//! 500-row prepared `INSERT`s in one transaction). Every load commits its own transaction; the
//! tables are emptied between loads, untimed.
//!
//! PostgreSQL runs when `TESTDB_POSTGRES_URL` (or `DATABASE_URL`) is set.

// Tests, examples and benches may panic and print; the library may not (see Cargo.toml).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sqlx::{AssertSqlSafe, Connection, Database};
use testdb::{Backend, Fixtures, TestDatabase, load_fixtures};
use testdb_postgres::Postgres;
use testdb_sqlite::Sqlite;

mod reference;

use reference::{ROWS, Reference, TABLES, fixture_file, rows, schema};

/// What a hand-written loader does first: read the JSON file into rows.
fn parse_by_hand(file: &str) -> Vec<Reference> {
    let bytes = std::fs::read(file).unwrap();
    let document: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).unwrap();
    let mut rows = Vec::with_capacity(ROWS);
    for (table, list) in document {
        let t: usize = table[1..].parse().unwrap();
        for row in list.as_array().unwrap() {
            rows.push((
                t,
                row["id"].as_i64().unwrap(),
                row.get("parent_id").and_then(serde_json::Value::as_i64),
                row["name"].as_str().unwrap().to_string(),
                row["amount"].as_f64().unwrap(),
                row["created"].as_str().unwrap().to_string(),
                row["flag"].as_bool().unwrap(),
            ));
        }
    }
    rows
}

/// Empties the reference tables between loads, untimed: children first.
async fn empty<C>(conn: &mut C)
where
    for<'c> &'c mut C: sqlx::Executor<'c>,
{
    for t in (0..TABLES).rev() {
        sqlx::Executor::execute(&mut *conn, AssertSqlSafe(format!("DELETE FROM t{t}")))
            .await
            .unwrap();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn raw_copy(conn: &mut sqlx::PgConnection, rows: &[Reference]) {
    for t in 0..TABLES {
        let columns = if t == 0 {
            "id, name, amount, created, flag"
        } else {
            "id, name, amount, created, flag, parent_id"
        };
        let mut copy = conn
            .copy_in_raw(&format!("COPY t{t} ({columns}) FROM STDIN"))
            .await
            .unwrap();
        let mut buffer = String::new();
        for (_, id, parent, name, amount, created, flag) in rows.iter().filter(|row| row.0 == t) {
            let flag = if *flag { 't' } else { 'f' };
            let _ = write!(buffer, "{id}\t{name}\t{amount}\t{created}\t{flag}");
            if let Some(parent) = parent {
                let _ = write!(buffer, "\t{parent}");
            }
            buffer.push('\n');
        }
        copy.send(buffer.as_bytes()).await.unwrap();
        copy.finish().await.unwrap();
    }
}

async fn raw_inserts(conn: &mut sqlx::SqliteConnection, rows: &[Reference]) {
    for t in 0..TABLES {
        let table: Vec<_> = rows.iter().filter(|row| row.0 == t).collect();
        let width = if t == 0 { 5 } else { 6 };
        let columns = ["id", "name", "amount", "created", "flag", "parent_id"][..width].join(", ");
        let tuple = format!("({})", vec!["?"; width].join(", "));
        for chunk in table.chunks(500) {
            let tuples = vec![tuple.as_str(); chunk.len()].join(", ");
            let sql = format!("INSERT INTO t{t} ({columns}) VALUES {tuples}");
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for (_, id, parent, name, amount, created, flag) in chunk {
                query = query
                    .bind(*id)
                    .bind(name.as_str())
                    .bind(*amount)
                    .bind(created.as_str())
                    .bind(*flag);
                if let Some(parent) = parent {
                    query = query.bind(*parent);
                }
            }
            query.execute(&mut *conn).await.unwrap();
        }
    }
}

/// A backend's hand-written load, and how long to measure it.
trait HandWritten: Backend {
    /// What the hand-written path is, for the report.
    const RAW: &'static str;
    /// Criterion samples: PostgreSQL loads take half a second each.
    const SAMPLES: usize;
    fn raw(conn: &mut Conn<Self>, rows: &[Reference]) -> impl Future<Output = ()>;
}

type Conn<B> = <<B as Backend>::Database as Database>::Connection;

impl HandWritten for Sqlite {
    const RAW: &'static str = "raw multi-row INSERT";
    const SAMPLES: usize = 20;
    async fn raw(conn: &mut sqlx::SqliteConnection, rows: &[Reference]) {
        raw_inserts(conn, rows).await;
    }
}

impl HandWritten for Postgres {
    const RAW: &'static str = "raw COPY FROM STDIN";
    const SAMPLES: usize = 10;
    async fn raw(conn: &mut sqlx::PgConnection, rows: &[Reference]) {
        raw_copy(conn, rows).await;
    }
}

/// The hand-written load from memory, the same from the file, and testdb's, side by side.
fn compare<B: HandWritten>(c: &mut Criterion, backend: B)
where
    for<'c> &'c mut Conn<B>: sqlx::Executor<'c>,
{
    let dir = tempfile::tempdir().unwrap();
    schema(dir.path());
    let file = fixture_file(dir.path());
    let rows = rows();
    let rt = runtime();
    // A database for each contender: emptied tables leave dead rows behind, which would slow
    // whichever ran later on a shared one.
    let dbs: Vec<_> = (0..3)
        .map(|_| {
            let builder = TestDatabase::builder(backend.clone()).migrations(dir.path());
            rt.block_on(builder.create()).unwrap()
        })
        .collect();
    let fixtures = Fixtures::files([file.clone()]);
    let mut group = c.benchmark_group(format!("fixtures/{}", B::NAME));
    group.throughput(Throughput::Elements(ROWS as u64));
    group
        .sample_size(B::SAMPLES)
        .measurement_time(Duration::from_secs(15));
    // Each contender commits its own transaction; the tables are emptied after, untimed.
    let measure = |db: &TestDatabase<B>, iters: u64, parse: bool, testdb: bool| {
        rt.block_on(async {
            let mut conn = <Conn<B> as Connection>::connect_with(db.connect_options())
                .await
                .unwrap();
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                if testdb {
                    let loaded = load_fixtures::<B>(&mut conn, &fixtures).await.unwrap();
                    assert_eq!(loaded.rows, ROWS);
                } else {
                    let parsed;
                    let rows = if parse {
                        parsed = parse_by_hand(&file);
                        &parsed
                    } else {
                        &rows
                    };
                    let mut tx = conn.begin().await.unwrap();
                    B::raw(&mut tx, rows).await;
                    tx.commit().await.unwrap();
                }
                took += started.elapsed();
                empty(&mut conn).await;
            }
            took
        })
    };
    group.bench_function(B::RAW, |b| {
        b.iter_custom(|iters| measure(&dbs[0], iters, false, false));
    });
    group.bench_function(format!("{}, JSON file parsed by hand", B::RAW), |b| {
        b.iter_custom(|iters| measure(&dbs[1], iters, true, false));
    });
    group.bench_function("testdb load (JSON file)", |b| {
        b.iter_custom(|iters| measure(&dbs[2], iters, true, true));
    });
    group.finish();
}

fn sqlite(c: &mut Criterion) {
    compare(c, Sqlite::new());
}

fn postgres(c: &mut Criterion) {
    match Postgres::from_env() {
        Ok(backend) => compare(c, backend),
        Err(_) => eprintln!("fixtures/PostgreSQL skipped: set TESTDB_POSTGRES_URL to measure it"),
    }
}

criterion_group!(benches, sqlite, postgres);
criterion_main!(benches);
