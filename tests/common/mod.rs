//! The one helper every integration test uses to run the same scenario on both backends.
//!
//! A scenario is an `async fn(H)` generic over [`Harness`]; `on_both!` turns it into one test per
//! backend. PostgreSQL tests find their server in `TESTDB_POSTGRES_URL` (else `DATABASE_URL`,
//! else testdb's own); without one they report that they were skipped and why, except under CI,
//! where they fail.
#![allow(dead_code, unreachable_pub, unused_macros)]

use std::any::{Any, TypeId};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use sqlx::{Connection, Pool};
use testdb::{Backend, TestDatabase};
use testdb_mysql::MySql;
use testdb_postgres::Postgres;
use testdb_sqlite::Sqlite;

/// What a scenario needs to know about a backend beyond testdb's API.
pub trait Harness: Backend + Sized {
    /// The backend's name in test arguments and environment variables.
    const KEY: &'static str;
    /// The backend to test, or `None` (after saying so) when it is not configured here.
    fn backend() -> Option<Self>;
    /// Whether the database that testdb calls `name` still exists.
    fn exists(name: &str) -> impl Future<Output = bool> + Send;
    /// Runs a statement.
    fn exec(pool: &Pool<Self::Database>, sql: &'static str) -> impl Future<Output = ()> + Send;
    /// Runs a query that returns one integer.
    fn scalar(pool: &Pool<Self::Database>, sql: &'static str) -> impl Future<Output = i64> + Send;
    /// Runs a query that returns one text (or NULL).
    fn text(
        pool: &Pool<Self::Database>,
        sql: &'static str,
    ) -> impl Future<Output = Option<String>> + Send;
    /// Runs a query that returns one integer, on a new connection opened from a URL.
    fn scalar_at(url: &str, sql: &'static str) -> impl Future<Output = i64> + Send;
    /// Runs a statement on a connection, returning its error.
    fn try_exec_on(
        conn: &mut <Self::Database as sqlx::Database>::Connection,
        sql: &'static str,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
    /// The name testdb gives the database this connection is connected to.
    fn name_on(
        conn: &mut <Self::Database as sqlx::Database>::Connection,
    ) -> impl Future<Output = String> + Send;
    /// Runs a query that returns one integer on a connection.
    fn scalar_on(
        conn: &mut <Self::Database as sqlx::Database>::Connection,
        sql: &'static str,
    ) -> impl Future<Output = i64> + Send;
    /// The templates whose stored setup value contains `text`.
    fn templates(text: &str) -> impl Future<Output = Vec<String>> + Send;
}

/// One test of `scenario` on `backend`, named `engine`; skipped (saying so) where the backend is
/// not configured.
macro_rules! engine_test {
    ($scenario:ident, $engine:ident, $backend:ty) => {
        #[tokio::test]
        async fn $engine() {
            if let Some(backend) = <$backend as $crate::common::Harness>::backend() {
                super::$scenario(backend).await;
            }
        }
    };
}

/// Generates the tests `<scenario>::sqlite` and `<scenario>::postgres` from each generic
/// `async fn <scenario><H: Harness>(backend: H)`: the scenarios that rely on SQL or behaviour only
/// SQLite and PostgreSQL share.
macro_rules! on_both {
    ($($scenario:ident),* $(,)?) => { $(
        mod $scenario {
            engine_test!($scenario, sqlite, testdb_sqlite::Sqlite);
            engine_test!($scenario, postgres, testdb_postgres::Postgres);
        }
    )* };
}

/// Like `on_both!`, on every engine: `<scenario>::mysql` besides.
macro_rules! on_every_engine {
    ($($scenario:ident),* $(,)?) => { $(
        mod $scenario {
            engine_test!($scenario, sqlite, testdb_sqlite::Sqlite);
            engine_test!($scenario, postgres, testdb_postgres::Postgres);
            engine_test!($scenario, mysql, testdb_mysql::MySql);
        }
    )* };
}

/// Like `on_both!`, but as plain `#[test]` functions that take no runtime of their own: each
/// scenario is a generic `fn <scenario><H: Shared>()`.
macro_rules! on_both_sync {
    ($($scenario:ident),* $(,)?) => { $(
        mod $scenario {
            #[test]
            fn sqlite() {
                super::$scenario::<testdb_sqlite::Sqlite>();
            }

            #[test]
            fn postgres() {
                super::$scenario::<testdb_postgres::Postgres>();
            }
        }
    )* };
}

/// Like `on_both_sync!`, on every engine.
macro_rules! on_every_engine_sync {
    ($($scenario:ident),* $(,)?) => { $(
        mod $scenario {
            #[test]
            fn sqlite() {
                super::$scenario::<testdb_sqlite::Sqlite>();
            }

            #[test]
            fn postgres() {
                super::$scenario::<testdb_postgres::Postgres>();
            }

            #[test]
            fn mysql() {
                super::$scenario::<testdb_mysql::MySql>();
            }
        }
    )* };
}

pub fn migrations() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/migrations")
}

pub fn bad_migrations() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/migrations_bad")
}

/// Writes straight to the process's stderr, past libtest's capture, so a skip is never silent.
pub fn say(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{message}");
}

pub fn postgres() -> Option<Postgres> {
    match Postgres::from_env() {
        Ok(backend) => Some(backend),
        Err(err @ testdb::Error::NotConfigured { .. }) => {
            if std::env::var_os("CI").is_some() {
                panic!("CI must run the PostgreSQL tests: {err}");
            }
            say(&format!("SKIPPED: PostgreSQL test not run: {err}"));
            None
        }
        Err(err) => panic!("{err:?}"),
    }
}

/// The URL of the server the tests use: the configured one, else testdb's own (whose URL holds no
/// password, so its redacted URL is the URL).
pub fn server_url() -> String {
    std::env::var("TESTDB_POSTGRES_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| {
            postgres()
                .expect("a PostgreSQL server")
                .redacted_url()
                .to_string()
        })
}

/// A connection to the server's maintenance database, for looking at what testdb did.
pub async fn admin() -> sqlx::PgConnection {
    let url = server_url();
    sqlx::PgConnection::connect(&url)
        .await
        .expect("connect to the server")
}

impl Harness for Sqlite {
    const KEY: &'static str = "sqlite";

    fn backend() -> Option<Self> {
        Some(Sqlite::new())
    }

    async fn exists(name: &str) -> bool {
        Path::new(name).exists()
    }

    async fn exec(pool: &Pool<sqlx::Sqlite>, sql: &'static str) {
        sqlx::query(sql).execute(pool).await.expect(sql);
    }

    async fn scalar(pool: &Pool<sqlx::Sqlite>, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
    }

    async fn text(pool: &Pool<sqlx::Sqlite>, sql: &'static str) -> Option<String> {
        sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
    }

    async fn scalar_at(url: &str, sql: &'static str) -> i64 {
        let mut conn = sqlx::SqliteConnection::connect(url).await.expect(url);
        sqlx::query_scalar(sql)
            .fetch_one(&mut conn)
            .await
            .expect(sql)
    }

    async fn try_exec_on(conn: &mut sqlx::SqliteConnection, sql: &'static str) -> sqlx::Result<()> {
        sqlx::query(sql).execute(conn).await.map(drop)
    }

    async fn name_on(conn: &mut sqlx::SqliteConnection) -> String {
        sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_one(conn)
            .await
            .expect("database file")
    }

    async fn scalar_on(conn: &mut sqlx::SqliteConnection, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(conn).await.expect(sql)
    }

    async fn templates(text: &str) -> Vec<String> {
        let dir = Sqlite::new().root().join("templates");
        let mut found: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|entry| {
                        let name = entry.file_name().to_string_lossy().into_owned();
                        let stem = name.strip_suffix(".json")?.to_owned();
                        let data = std::fs::read_to_string(entry.path()).ok()?;
                        data.contains(text).then_some(stem)
                    })
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    }
}

impl Harness for Postgres {
    const KEY: &'static str = "postgres";

    fn backend() -> Option<Self> {
        postgres()
    }

    async fn exists(name: &str) -> bool {
        let mut admin = admin().await;
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut admin)
            .await
            .expect("query pg_database")
    }

    async fn exec(pool: &Pool<sqlx::Postgres>, sql: &'static str) {
        sqlx::query(sql).execute(pool).await.expect(sql);
    }

    async fn scalar(pool: &Pool<sqlx::Postgres>, sql: &'static str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(pool)
            .await
            .expect(sql)
    }

    async fn text(pool: &Pool<sqlx::Postgres>, sql: &'static str) -> Option<String> {
        sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
    }

    async fn scalar_at(url: &str, sql: &'static str) -> i64 {
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .expect("connect by url");
        sqlx::query_scalar(sql)
            .fetch_one(&mut conn)
            .await
            .expect(sql)
    }

    async fn try_exec_on(conn: &mut sqlx::PgConnection, sql: &'static str) -> sqlx::Result<()> {
        sqlx::query(sql).execute(conn).await.map(drop)
    }

    async fn name_on(conn: &mut sqlx::PgConnection) -> String {
        sqlx::query_scalar("SELECT current_database()")
            .fetch_one(conn)
            .await
            .expect("current database")
    }

    async fn scalar_on(conn: &mut sqlx::PgConnection, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(conn).await.expect(sql)
    }

    async fn templates(text: &str) -> Vec<String> {
        let mut admin = admin().await;
        sqlx::query_scalar(
            "SELECT datname::text FROM pg_database WHERE datistemplate \
             AND starts_with(datname, 'testdb_tpl_') \
             AND strpos(shobj_description(oid, 'pg_database'), $1) > 0 ORDER BY 1",
        )
        .bind(text)
        .fetch_all(&mut admin)
        .await
        .expect("list templates")
    }
}

pub fn mysql() -> Option<MySql> {
    match MySql::from_env() {
        Ok(backend) => Some(backend),
        Err(err @ testdb::Error::NotConfigured { .. }) => {
            if std::env::var_os("CI").is_some() {
                panic!("CI must run the MySQL tests: {err}");
            }
            say(&format!("SKIPPED: MySQL test not run: {err}"));
            None
        }
        Err(err) => panic!("{err:?}"),
    }
}

/// A connection to the MySQL server itself, for looking at what testdb did.
pub async fn mysql_admin() -> sqlx::MySqlConnection {
    let url = std::env::var("TESTDB_MYSQL_URL").expect("TESTDB_MYSQL_URL");
    sqlx::MySqlConnection::connect(&url)
        .await
        .expect("connect to the MySQL server")
}

/// The tests' SQL, written for PostgreSQL and SQLite, in MySQL's spelling of the two things they
/// write differently: `"identifiers"` (backticks), and `CAST(… AS BIGINT)` and `AS TEXT`
/// (`AS SIGNED`, `AS CHAR`).
fn my(sql: &str) -> sqlx::AssertSqlSafe<String> {
    let mut out = String::with_capacity(sql.len());
    let mut in_string = false;
    for c in sql.chars() {
        match c {
            '\'' => {
                in_string = !in_string;
                out.push(c);
            }
            '"' if !in_string => out.push('`'),
            _ => out.push(c),
        }
    }
    sqlx::AssertSqlSafe(
        out.replace(" AS BIGINT)", " AS SIGNED)")
            .replace(" AS TEXT)", " AS CHAR)"),
    )
}

impl Harness for MySql {
    const KEY: &'static str = "mysql";

    fn backend() -> Option<Self> {
        mysql()
    }

    async fn exists(name: &str) -> bool {
        let found: Option<String> = sqlx::query_scalar(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
        )
        .bind(name)
        .fetch_optional(&mut mysql_admin().await)
        .await
        .expect("query SCHEMATA");
        found.is_some()
    }

    async fn exec(pool: &Pool<sqlx::MySql>, sql: &'static str) {
        sqlx::raw_sql(my(sql)).execute(pool).await.expect(sql);
    }

    async fn scalar(pool: &Pool<sqlx::MySql>, sql: &'static str) -> i64 {
        sqlx::query_scalar::<_, i64>(my(sql))
            .fetch_one(pool)
            .await
            .expect(sql)
    }

    async fn text(pool: &Pool<sqlx::MySql>, sql: &'static str) -> Option<String> {
        sqlx::query_scalar(my(sql))
            .fetch_one(pool)
            .await
            .expect(sql)
    }

    async fn scalar_at(url: &str, sql: &'static str) -> i64 {
        let mut conn = sqlx::MySqlConnection::connect(url)
            .await
            .expect("connect by url");
        sqlx::query_scalar(my(sql))
            .fetch_one(&mut conn)
            .await
            .expect(sql)
    }

    async fn try_exec_on(conn: &mut sqlx::MySqlConnection, sql: &'static str) -> sqlx::Result<()> {
        sqlx::raw_sql(my(sql)).execute(conn).await.map(drop)
    }

    async fn name_on(conn: &mut sqlx::MySqlConnection) -> String {
        sqlx::query_scalar("SELECT DATABASE()")
            .fetch_one(conn)
            .await
            .expect("current database")
    }

    async fn scalar_on(conn: &mut sqlx::MySqlConnection, sql: &'static str) -> i64 {
        sqlx::query_scalar(my(sql))
            .fetch_one(conn)
            .await
            .expect(sql)
    }

    async fn templates(text: &str) -> Vec<String> {
        let mut admin = mysql_admin().await;
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA \
             WHERE SCHEMA_NAME LIKE 'testdb\\_tpl\\_%' AND SCHEMA_COMMENT = 'testdb template v2' \
             ORDER BY 1",
        )
        .fetch_all(&mut admin)
        .await
        .expect("list templates");
        let mut found = Vec::new();
        for name in names {
            // The setup table is told apart by its comment (a user's table may be named alike).
            let setup: Option<String> = sqlx::query_scalar(
                "SELECT TABLE_NAME FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = ? AND TABLE_COMMENT = 'testdb bookkeeping: setup'",
            )
            .bind(&name)
            .fetch_optional(&mut admin)
            .await
            .expect("find the setup table");
            let Some(setup) = setup else { continue };
            let value: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT value FROM `{name}`.`{setup}`"
            )))
            .fetch_optional(&mut admin)
            .await
            .ok()
            .flatten();
            if value.is_some_and(|value| value.contains(text)) {
                found.push(name);
            }
        }
        found
    }
}

/// A database per backend shared by every test of a binary, as a `static` would be.
pub trait Shared: Harness {
    fn shared() -> Option<&'static TestDatabase<Self>>;
}

macro_rules! shared {
    ($backend:ty) => {
        shared!($backend, migrations());
    };
    ($backend:ty, $migrations:expr) => {
        impl Shared for $backend {
            fn shared() -> Option<&'static TestDatabase<Self>> {
                static DB: OnceLock<Option<TestDatabase<$backend>>> = OnceLock::new();
                DB.get_or_init(|| {
                    let backend = <$backend as Harness>::backend()?;
                    Some(
                        TestDatabase::builder(backend)
                            .migrations($migrations)
                            .create_blocking()
                            .expect("create the shared database"),
                    )
                })
                .as_ref()
            }
        }
    };
}
shared!(Sqlite);
shared!(Postgres);
// MariaDB checks a UNIQUE on TEXT through a hash that concurrent inserts deadlock on: the
// same tables with a VARCHAR name.
shared!(
    MySql,
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/migrations_suite_mysql")
);

/// The variable that tells a child test process which backend to use.
pub const CHILD_BACKEND: &str = "TESTDB_TEST_CHILD_BACKEND";

/// Starts this test binary again, running only the `#[ignore]`d helper test `test`, for backend
/// `H`, and waits for it to print `READY <database name>`.
pub fn spawn_child<H: Harness>(test: &str) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            test,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_BACKEND, H::KEY)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the child test");
    let stdout = child.stdout.take().expect("child stdout");
    let mut lines = std::io::BufReader::new(stdout).lines();
    while let Some(line) = lines.next() {
        let line = line.expect("read the child's output");
        // libtest prints the test's name on the same line, before it.
        if let Some((_, name)) = line.split_once("READY ") {
            // Keep reading, so the child never writes into a closed pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return (child, name.trim().to_string());
        }
    }
    let status = child.wait();
    panic!("the child test {test} ended without creating a database: {status:?}");
}

/// In a child process: the backend its parent asked for.
pub fn child_backend() -> String {
    std::env::var(CHILD_BACKEND).unwrap_or_default()
}

/// A suite of backend `H` for `key` (e.g. an isolation), made by `setup` the first time and kept
/// for the process. Scenarios that share such suites take turns with [`one_at_a_time`].
pub fn suite_for<H: Backend>(
    key: String,
    name: &'static str,
    setup: fn() -> testdb::Result<testdb::Setup<H>>,
) -> &'static testdb::Suite<H> {
    type Entry = (TypeId, String, &'static (dyn Any + Send + Sync));
    static SUITES: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
    let mut suites = SUITES.lock().unwrap();
    if let Some(found) = suites
        .iter()
        .find(|entry| entry.0 == TypeId::of::<H>() && entry.1 == key)
    {
        return found.2.downcast_ref().unwrap();
    }
    let suite: &'static testdb::Suite<H> = Box::leak(Box::new(testdb::Suite::new(name, setup)));
    suites.push((TypeId::of::<H>(), key, suite));
    suite
}

/// A turn of the process's own: scenarios that share suites, and assert how soon one test follows
/// another, run one at a time under `cargo test` (whose threads would interleave them). Sharing
/// keeps the process's connections to the server few: a suite's database and its pool live as
/// long as the process.
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}
