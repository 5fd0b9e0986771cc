//! Fixture loading: a reference set of 10,000 rows in 10 tables linked by foreign keys, loaded
//! by testdb from a JSON fixture file, side by side with the fastest path written by hand on a
//! bare connection, from rows already in memory (PostgreSQL: `COPY … FROM STDIN`; SQLite:
//! 500-row prepared `INSERT`s in one transaction). Every load commits its own transaction; the
//! tables are emptied between loads, untimed.
//!
//! `fixtures-django/<engine>`: testdb's load of a Django dumpdata fixture shaped like Chinook
//! (15,607 objects in 11 models, `benches/django`) into the app's `sqlmigrate` schema, which
//! `benches/django/run` sets beside Django's own `loaddata` of the same file. With
//! `TESTDB_DJANGO_FIXTURE=<file>` the binary only writes that fixture and exits; with
//! `TESTDB_DJANGO_SNAPSHOT=<dir>` the group also leaves what one load stored there, for comparing
//! with what `loaddata` stores.
//!
//! PostgreSQL runs when `TESTDB_POSTGRES_URL` (or `DATABASE_URL`) is set, MySQL (whose hand-written
//! path is SQLite's, 500-row `INSERT`s) when `TESTDB_MYSQL_URL` is.

// Tests, examples and benches may panic and print; the library may not (see Cargo.toml).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group};
use sqlx::{AssertSqlSafe, Connection, Database};
use testdb::{Backend, Fixtures, TestDatabase, load_fixtures};
use testdb_mysql::MySql;
use testdb_postgres::Postgres;
use testdb_sqlite::Sqlite;

mod django;
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

/// 500-row prepared `INSERT`s, table by table, on the connection type given.
macro_rules! raw_inserts {
    ($name:ident, $conn:ty) => {
        async fn $name(conn: &mut $conn, rows: &[Reference]) {
            for t in 0..TABLES {
                let table: Vec<_> = rows.iter().filter(|row| row.0 == t).collect();
                let width = if t == 0 { 5 } else { 6 };
                let columns =
                    ["id", "name", "amount", "created", "flag", "parent_id"][..width].join(", ");
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
    };
}

raw_inserts!(raw_inserts, sqlx::SqliteConnection);
raw_inserts!(raw_inserts_mysql, sqlx::MySqlConnection);

/// A backend's hand-written load, and how long to measure it.
trait HandWritten: Backend {
    /// What the hand-written path is, for the report.
    const RAW: &'static str;
    /// Criterion samples: PostgreSQL loads take half a second each.
    const SAMPLES: usize;
    fn raw(conn: &mut Conn<Self>, rows: &[Reference]) -> impl Future<Output = ()>;
}

type Conn<B> = <<B as testdb::backend::Driver>::Database as Database>::Connection;

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

impl HandWritten for MySql {
    const RAW: &'static str = "raw multi-row INSERT";
    const SAMPLES: usize = 10;
    async fn raw(conn: &mut sqlx::MySqlConnection, rows: &[Reference]) {
        raw_inserts_mysql(conn, rows).await;
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

fn mysql(c: &mut Criterion) {
    match MySql::from_env() {
        Ok(backend) => compare(c, backend),
        Err(_) => eprintln!("fixtures/MySQL skipped: set TESTDB_MYSQL_URL to measure it"),
    }
}

/// What the Django group needs of each engine.
trait Chinook: Backend {
    /// Django's `sqlmigrate` output for the engine.
    const SCHEMA: &'static str;
    /// Empties every table of the app, untimed.
    fn empty(conn: &mut Conn<Self>) -> impl Future<Output = ()>;
    /// The rows of `table`.
    fn count(conn: &mut Conn<Self>, table: &str) -> impl Future<Output = usize>;
    /// Leaves what the database holds in `dir`, for `benches/django/run` to compare.
    fn snapshot(conn: &mut Conn<Self>, dir: &Path) -> impl Future<Output = ()>;
}

impl Chinook for Sqlite {
    const SCHEMA: &'static str = django::SCHEMA_SQLITE;
    async fn empty(conn: &mut sqlx::SqliteConnection) {
        // Children first: each statement checks its keys as it ends.
        for (model, _) in django::MODELS.iter().rev() {
            let sql = format!("DELETE FROM {}", django::table(model));
            sqlx::query(AssertSqlSafe(sql))
                .execute(&mut *conn)
                .await
                .unwrap();
        }
    }
    async fn count(conn: &mut sqlx::SqliteConnection, table: &str) -> usize {
        let sql = format!("SELECT count(*) FROM {table}");
        let count: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(conn)
            .await
            .unwrap();
        usize::try_from(count).unwrap()
    }
    async fn snapshot(conn: &mut sqlx::SqliteConnection, dir: &Path) {
        let file = dir.join("testdb.sqlite3");
        let _ = std::fs::remove_file(&file);
        let sql = format!(
            "VACUUM INTO '{}'",
            file.display().to_string().replace('\'', "''")
        );
        sqlx::query(AssertSqlSafe(sql)).execute(conn).await.unwrap();
    }
}

impl Chinook for Postgres {
    const SCHEMA: &'static str = django::SCHEMA_POSTGRES;
    async fn empty(conn: &mut sqlx::PgConnection) {
        // As Django's flush does: emptied tables leave no dead rows to slow the next load.
        let tables: Vec<String> = django::MODELS
            .iter()
            .map(|(model, _)| django::table(model))
            .collect();
        let sql = format!("TRUNCATE {}", tables.join(", "));
        sqlx::query(AssertSqlSafe(sql)).execute(conn).await.unwrap();
    }
    async fn count(conn: &mut sqlx::PgConnection, table: &str) -> usize {
        let sql = format!("SELECT count(*) FROM {table}");
        let count: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(conn)
            .await
            .unwrap();
        usize::try_from(count).unwrap()
    }
    /// Each table's rows as PostgreSQL writes them as text (`t::text`, in UTC), by id, and each
    /// sequence's next value: `testdb.postgres.txt`, in the form `benches/django/app/loadbench.py`
    /// writes Django's.
    async fn snapshot(conn: &mut sqlx::PgConnection, dir: &Path) {
        sqlx::query("SET TIME ZONE 'UTC'")
            .execute(&mut *conn)
            .await
            .unwrap();
        let mut tables: Vec<String> = django::MODELS
            .iter()
            .map(|(model, _)| django::table(model))
            .collect();
        tables.sort();
        let mut text = String::new();
        for table in &tables {
            let sql = format!("SELECT t::text FROM {table} t ORDER BY t.id");
            let rows: Vec<String> = sqlx::query_scalar(AssertSqlSafe(sql))
                .fetch_all(&mut *conn)
                .await
                .unwrap();
            let _ = writeln!(text, "# {table} {}", rows.len());
            for row in rows {
                let _ = writeln!(text, "{row}");
            }
        }
        text.push_str("# sequences\n");
        for table in &tables {
            let sql = format!("SELECT pg_get_serial_sequence('{table}', 'id')");
            let sequence: String = sqlx::query_scalar(AssertSqlSafe(sql))
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            let sql = format!(
                "SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM {sequence}"
            );
            let next: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            let _ = writeln!(text, "{table} {next}");
        }
        std::fs::write(dir.join("testdb.postgres.txt"), text).unwrap();
    }
}

impl Chinook for MySql {
    const SCHEMA: &'static str = django::SCHEMA_MYSQL;
    async fn empty(conn: &mut sqlx::MySqlConnection) {
        // As Django's flush does on MySQL.
        let mut sql = "SET FOREIGN_KEY_CHECKS = 0;".to_owned();
        for (model, _) in django::MODELS {
            let _ = write!(sql, "TRUNCATE {};", django::table(model));
        }
        sql.push_str("SET FOREIGN_KEY_CHECKS = 1;");
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(conn)
            .await
            .unwrap();
    }
    async fn count(conn: &mut sqlx::MySqlConnection, table: &str) -> usize {
        let sql = format!("SELECT count(*) FROM {table}");
        let count: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(conn)
            .await
            .unwrap();
        usize::try_from(count).unwrap()
    }
    /// Each table's rows, each value as `QUOTE()` writes it, by id, and each table's next
    /// `AUTO_INCREMENT`: `testdb.mysql.txt`, in the form `benches/django/app/loadbench.py`
    /// writes Django's.
    async fn snapshot(conn: &mut sqlx::MySqlConnection, dir: &Path) {
        let mut tables: Vec<String> = django::MODELS
            .iter()
            .map(|(model, _)| django::table(model))
            .collect();
        tables.sort();
        let mut text = String::new();
        for table in &tables {
            let columns: Vec<String> = sqlx::query_scalar(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            )
            .bind(table)
            .fetch_all(&mut *conn)
            .await
            .unwrap();
            let values: Vec<String> = columns.iter().map(|c| format!("QUOTE(`{c}`)")).collect();
            let sql = format!(
                "SELECT CONCAT_WS(',', {}) FROM {table} ORDER BY id",
                values.join(", ")
            );
            let rows: Vec<String> = sqlx::query_scalar(AssertSqlSafe(sql))
                .fetch_all(&mut *conn)
                .await
                .unwrap();
            let _ = writeln!(text, "# {table} {}", rows.len());
            for row in rows {
                let _ = writeln!(text, "{row}");
            }
        }
        text.push_str("# sequences\n");
        for table in &tables {
            let next: u64 = sqlx::query_scalar(
                "SELECT AUTO_INCREMENT FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
            )
            .bind(table)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
            let _ = writeln!(text, "{table} {next}");
        }
        std::fs::write(dir.join("testdb.mysql.txt"), text).unwrap();
    }
}

/// testdb's load of the Django fixture, committed, the tables emptied after each, untimed.
fn django_load<B: Chinook>(c: &mut Criterion, backend: B)
where
    for<'c> &'c mut Conn<B>: sqlx::Executor<'c>,
{
    let rt = runtime();
    let mut group = c.benchmark_group(format!("fixtures-django/{}", B::NAME));
    group
        .throughput(Throughput::Elements(django::OBJECTS as u64))
        // A debug build's load takes seconds: ten of them, each a sample.
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(15));
    // Set up only when the filter selects the group.
    let mut setup = None;
    group.bench_function("testdb load_fixtures", |b| {
        let (_dir, db, fixtures) = setup.get_or_insert_with(|| {
            let dir = tempfile::tempdir().unwrap();
            let migrations = dir.path().join("migrations");
            std::fs::create_dir(&migrations).unwrap();
            std::fs::write(migrations.join("0001_chinook.sql"), B::SCHEMA).unwrap();
            let file = dir.path().join("chinook.json");
            django::write_fixture(&file);
            let builder = TestDatabase::builder(backend.clone()).migrations(migrations.as_path());
            let db = rt.block_on(builder.create()).unwrap();
            let fixtures = django::fixtures(&file);
            // One load, checked: every object is a row of its model's table.
            rt.block_on(async {
                let mut conn = <Conn<B> as Connection>::connect_with(db.connect_options())
                    .await
                    .unwrap();
                let loaded = load_fixtures::<B>(&mut conn, &fixtures).await.unwrap();
                assert_eq!(loaded.rows, django::OBJECTS);
                for (model, objects) in django::MODELS {
                    let table = django::table(model);
                    assert_eq!(B::count(&mut conn, &table).await, objects, "{table}");
                }
                if let Some(dir) = std::env::var_os("TESTDB_DJANGO_SNAPSHOT") {
                    std::fs::create_dir_all(&dir).unwrap();
                    B::snapshot(&mut conn, Path::new(&dir)).await;
                }
                B::empty(&mut conn).await;
            });
            (dir, db, fixtures)
        });
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut conn = <Conn<B> as Connection>::connect_with(db.connect_options())
                    .await
                    .unwrap();
                let mut took = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let loaded = load_fixtures::<B>(&mut conn, fixtures).await.unwrap();
                    took += started.elapsed();
                    assert_eq!(loaded.rows, django::OBJECTS);
                    B::empty(&mut conn).await;
                }
                took
            })
        });
    });
    group.finish();
}

fn django_sqlite(c: &mut Criterion) {
    django_load(c, Sqlite::new());
}

fn django_postgres(c: &mut Criterion) {
    match Postgres::from_env() {
        Ok(backend) => django_load(c, backend),
        Err(_) => {
            eprintln!("fixtures-django/PostgreSQL skipped: set TESTDB_POSTGRES_URL to measure it");
        }
    }
}

fn django_mysql(c: &mut Criterion) {
    match MySql::from_env() {
        Ok(backend) => django_load(c, backend),
        Err(_) => eprintln!("fixtures-django/MySQL skipped: set TESTDB_MYSQL_URL to measure it"),
    }
}

criterion_group!(
    benches,
    sqlite,
    postgres,
    mysql,
    django_sqlite,
    django_postgres,
    django_mysql
);

fn main() {
    // For benches/django/run: the fixture Django's loaddata is timed on, and nothing else.
    if let Some(file) = std::env::var_os("TESTDB_DJANGO_FIXTURE") {
        django::write_fixture(Path::new(&file));
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
