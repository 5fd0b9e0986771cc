//! `#[testdb::test]` beyond `#[sqlx::test]`: a connection in a savepoint, an isolation chosen,
//! a declared suite, a migrator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::LazyLock;

use sqlx::migrate::Migrator;
use sqlx::{SqliteConnection, SqlitePool};
use testdb::{Isolation, Setup, Suite};
use testdb_sqlite::{Sqlite, TestDatabase};

const MIGRATIONS: &str = "tests/drop_in_sqlite/migrations";

/// A test that takes a connection runs in a savepoint of its suite's transaction: what it writes
/// no other test sees, and it sees the fixtures.
#[testdb::test(
    migrations = "tests/drop_in_sqlite/migrations",
    fixtures("drop_in_sqlite/fixtures/users.sql")
)]
async fn a_connection_runs_in_a_savepoint(conn: &mut SqliteConnection) -> sqlx::Result<()> {
    let handle = testdb::current::<Sqlite>().unwrap();
    assert_eq!(handle.isolation(), Isolation::Savepoint);
    sqlx::query("DELETE FROM users").execute(&mut *conn).await?;
    Ok(())
}

#[testdb::test(
    migrations = "tests/drop_in_sqlite/migrations",
    fixtures("drop_in_sqlite/fixtures/users.sql")
)]
async fn another_savepoint_test_sees_the_fixtures(conn: &mut SqliteConnection) -> sqlx::Result<()> {
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&mut *conn)
        .await?;
    assert_eq!(users, 2, "the other test's delete was rolled back");
    Ok(())
}

#[testdb::test(
    migrations = "tests/drop_in_sqlite/migrations",
    isolation = "committed"
)]
async fn an_isolation_can_be_chosen(pool: SqlitePool) -> sqlx::Result<()> {
    assert_eq!(
        testdb::current::<Sqlite>().unwrap().isolation(),
        Isolation::Committed
    );
    sqlx::query("INSERT INTO users (name) VALUES ('ada')")
        .execute(&pool)
        .await?;
    Ok(())
}

#[testdb::test(migrations = "tests/drop_in_sqlite/migrations")]
async fn a_pool_test_gets_a_database_of_its_own(pool: SqlitePool) -> sqlx::Result<()> {
    assert_eq!(
        testdb::current::<Sqlite>().unwrap().isolation(),
        Isolation::FreshDatabase
    );
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&pool)
        .await?;
    assert_eq!(users, 0);
    Ok(())
}

static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    testdb::block_on(Migrator::new(std::path::Path::new(MIGRATIONS)))
        .unwrap()
        .unwrap()
});

#[testdb::test(migrator = "MIGRATOR")]
async fn a_migrator_can_be_named(pool: SqlitePool) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO users (name) VALUES ('ada')")
        .execute(&pool)
        .await?;
    Ok(())
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Seed {
    ada: i64,
}

static USERS: Suite<Sqlite, Seed> = Suite::new("users", || {
    Ok(
        Setup::new(TestDatabase::builder(Sqlite::new()).migrations(MIGRATIONS)).data(
            async |conn: &mut SqliteConnection| {
                sqlx::query("INSERT INTO users (id, name) VALUES (7, 'ada')")
                    .execute(conn)
                    .await?;
                Ok::<_, sqlx::Error>(Seed { ada: 7 })
            },
        ),
    )
});

#[testdb::test(suite = USERS)]
async fn a_declared_suite_gives_its_setup_value(
    conn: &mut SqliteConnection,
    seed: Seed,
) -> sqlx::Result<()> {
    let name: String = sqlx::query_scalar("SELECT name FROM users WHERE id = ?")
        .bind(seed.ada)
        .fetch_one(&mut *conn)
        .await?;
    assert_eq!(name, "ada");
    Ok(())
}

#[testdb::test(suite = USERS)]
async fn a_declared_suite_without_its_value(conn: &mut SqliteConnection) {
    sqlx::query("DELETE FROM users")
        .execute(&mut *conn)
        .await
        .unwrap();
}

/// A test that panics fails (here, as it should), and its writes go with it.
#[testdb::test(migrations = "tests/drop_in_sqlite/migrations")]
#[should_panic(expected = "boom")]
async fn a_panic_fails_the_test(conn: &mut SqliteConnection) {
    sqlx::query("INSERT INTO users (name) VALUES ('ada')")
        .execute(&mut *conn)
        .await
        .unwrap();
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(users, 0, "boom");
}

/// A test may be named as the expansion's own bindings would be.
#[testdb::test(migrations = "tests/drop_in_sqlite/migrations")]
async fn connection(conn: &mut SqliteConnection) -> sqlx::Result<()> {
    sqlx::query("SELECT 1").execute(&mut *conn).await.map(drop)
}

/// Types written through `macro_rules!` (`$t:ty`) are read as written.
macro_rules! a_test_of {
    ($name:ident, $connection:ty) => {
        #[testdb::test(
            migrations = "tests/drop_in_sqlite/migrations",
            isolation = "savepoint"
        )]
        async fn $name(conn: $connection) -> sqlx::Result<()> {
            sqlx::query("SELECT 1").execute(&mut *conn).await.map(drop)
        }
    };
}

a_test_of!(a_connection_type_from_a_macro, &mut SqliteConnection);

static PEOPLE: Suite<testdb_postgres::Postgres> = Suite::new("people", || {
    Ok(Setup::new(testdb_postgres::TestDatabase::builder(
        testdb_postgres::Postgres::from_env()?,
    )))
});

/// A declared PostgreSQL suite: run on the server, or (see below) skipped without one.
#[testdb::test(suite = PEOPLE)]
async fn a_declared_postgres_suite(conn: &mut sqlx::PgConnection) -> sqlx::Result<()> {
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut *conn).await?;
    assert_eq!(one, 1);
    Ok(())
}

/// Without a server (and outside CI), a declared suite's test says it was skipped, and why: the
/// setup's own error, kept whole.
#[test]
fn a_declared_suite_without_a_server_is_skipped_and_says_why() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_declared_postgres_suite", "--test-threads=1"])
        .env_remove("TESTDB_POSTGRES_URL")
        .env_remove("DATABASE_URL")
        .env_remove("CI")
        .env("TESTDB_POSTGRES", "off")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("SKIPPED: suite people not set up: PostgreSQL is not configured"),
        "{stderr}"
    );
    assert!(stderr.contains("TESTDB_POSTGRES=off"), "says why: {stderr}");
}
