//! The connection budget within one process: every connection testdb opens holds a slot, a
//! test's rewind keeps it, and a server that refuses connections for too many clients is waited
//! for, then explained.

// Tests, examples and benches may panic and print; the library may not (see Cargo.toml).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

#[macro_use]
mod common;

use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use testdb::{Error, Isolation, Setup, Suite, TestDatabase};
use testdb_postgres::Postgres;

/// How many slots of the budget this session holds.
const SLOTS_HELD: &str = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
     AND classid = 1651860583 AND objsubid = 2 AND granted AND pid = pg_backend_pid()";
/// This session's other advisory locks.
const OTHER_LOCKS: &str = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
     AND pid = pg_backend_pid() AND NOT (classid = 1651860583 AND objsubid = 2)";

/// Whether this session holds one slot (none means it lost its slot; two, that an attempt
/// locked more than the one it keeps).
async fn holds_a_slot(conn: &mut PgConnection) -> bool {
    let held: i64 = sqlx::query_scalar(SLOTS_HELD)
        .fetch_one(conn)
        .await
        .unwrap();
    assert!(held <= 1, "{held} slots held by one session");
    held == 1
}

async fn other_locks(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar(OTHER_LOCKS)
        .fetch_one(conn)
        .await
        .unwrap()
}

fn url() -> String {
    common::server_url()
}

#[tokio::test]
async fn every_connection_testdb_opens_holds_a_slot() {
    let Some(postgres) = common::postgres() else {
        return;
    };
    let db = TestDatabase::create(postgres).await.unwrap();
    let mut pooled = Vec::new();
    for _ in 0..db.pool().options().get_max_connections() {
        let mut conn = db.acquire().await.unwrap();
        assert!(holds_a_slot(&mut conn).await, "a pooled connection");
        pooled.push(conn);
    }
    let mut own = db.connect().await.unwrap();
    assert!(holds_a_slot(&mut own).await, "a connection of its own");
    // Every one a slot of its own, in whichever database it is in.
    let shared: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT objid FROM pg_locks WHERE locktype = 'advisory' \
         AND classid = 1651860583 AND objsubid = 2 AND granted GROUP BY objid \
         HAVING count(*) > 1) AS s",
    )
    .fetch_one(&mut own)
    .await
    .unwrap();
    assert_eq!(shared, 0, "a slot held by two sessions");
    own.close().await.unwrap();
}

fn setup(isolation: Isolation) -> testdb::Result<Setup<Postgres>> {
    let postgres = Postgres::from_env()?;
    Ok(Setup::new(TestDatabase::builder(postgres)).isolation(isolation))
}

static SAVEPOINT: Suite<Postgres> = Suite::new("budget_savepoint", || setup(Isolation::Savepoint));
static COMMITTED: Suite<Postgres> = Suite::new("budget_committed", || setup(Isolation::Committed));

/// Tests that take advisory locks, and release every one of them (the slot too): after each, the
/// next test's connection holds its slot again, and none of the test's locks.
async fn rewinds_keep_the_slot(suite: &'static Suite<Postgres>) {
    suite
        .run(async |conn: &mut PgConnection, ()| {
            assert!(holds_a_slot(conn).await, "at the first test");
            sqlx::query("SELECT pg_advisory_lock(1)")
                .execute(&mut *conn)
                .await?;
            assert!(holds_a_slot(conn).await, "beside the test's lock");
            Ok::<_, sqlx::Error>(())
        })
        .await
        .unwrap();
    suite
        .run(async |conn: &mut PgConnection, ()| {
            assert!(holds_a_slot(conn).await, "after a test that took a lock");
            assert_eq!(other_locks(conn).await, 0, "the test's lock outlived it");
            sqlx::raw_sql("SELECT pg_advisory_lock(1); SELECT pg_advisory_unlock_all()")
                .execute(&mut *conn)
                .await?;
            assert!(
                !holds_a_slot(conn).await,
                "pg_advisory_unlock_all() lets the slot go"
            );
            Ok::<_, sqlx::Error>(())
        })
        .await
        .unwrap();
    for _ in 0..2 {
        suite
            .run(async |conn: &mut PgConnection, ()| {
                assert!(holds_a_slot(conn).await, "after a test that let it go");
                assert_eq!(other_locks(conn).await, 0);
                Ok::<_, sqlx::Error>(())
            })
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_savepoint_rewind_keeps_the_slot() {
    if common::postgres().is_none() {
        return;
    }
    rewinds_keep_the_slot(&SAVEPOINT).await;
}

#[tokio::test]
async fn a_committed_reset_keeps_the_slot() {
    if common::postgres().is_none() {
        return;
    }
    rewinds_keep_the_slot(&COMMITTED).await;
}

/// A throwaway database that takes `limit` connections, and a role that is subject to the limit
/// (superusers are not) and may create databases; both dropped when the test ends.
struct Limited {
    name: String,
}

impl Limited {
    async fn create(limit: u32) -> Limited {
        let name = format!("budget_limit_{}", std::process::id());
        let mut server = PgConnection::connect(&url()).await.unwrap();
        for statement in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("DROP ROLE IF EXISTS {name}"),
            format!("CREATE ROLE {name} LOGIN CREATEDB"),
            format!("CREATE DATABASE {name} CONNECTION LIMIT {limit}"),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut server)
                .await
                .unwrap();
        }
        Limited { name }
    }

    fn options(&self) -> PgConnectOptions {
        PgConnectOptions::from_str(&self.url()).unwrap()
    }

    fn url(&self) -> String {
        let mut url = url::Url::parse(&url()).unwrap();
        url.set_path(&format!("/{}", self.name));
        url.set_username(&self.name).unwrap();
        url.into()
    }

    async fn drop_it(self) {
        let mut server = PgConnection::connect(&url()).await.unwrap();
        for statement in [
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            format!("DROP ROLE IF EXISTS {}", self.name),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut server)
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn too_many_clients_is_waited_for_then_explained() {
    if common::postgres().is_none() {
        return;
    }
    let limited = Limited::create(3).await;
    let mut full = Vec::new();
    for _ in 0..3 {
        full.push(
            PgConnection::connect_with(&limited.options())
                .await
                .unwrap(),
        );
    }

    // The server's refusal: too many clients, never "is the server running?".
    let refused = PgConnection::connect_with(&limited.options())
        .await
        .expect_err("the database takes 3 connections");
    assert_eq!(
        refused
            .as_database_error()
            .and_then(|err| err.code())
            .as_deref(),
        Some("53300"),
        "{refused}"
    );
    let hint =
        <Postgres as testdb::backend::Driver>::refused(&limited.options(), &refused).unwrap();
    assert!(hint.contains("too many clients"), "{hint}");
    assert!(hint.contains("TESTDB_MAX_CONNECTIONS"), "{hint}");
    assert!(hint.contains("max_connections"), "{hint}");
    assert!(!hint.contains("is the server running"), "{hint}");
    let pool = sqlx::pool::PoolOptions::<sqlx::Postgres>::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy_with(limited.options());
    let timed_out = pool.acquire().await.expect_err("the database is full");
    assert!(
        matches!(timed_out, sqlx::Error::PoolTimedOut),
        "{timed_out}"
    );

    // testdb's own connections to the server wait for one to come free, instead of failing.
    let started = Instant::now();
    let freed = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for conn in full {
            conn.close().await.unwrap();
        }
    });
    let backend = Postgres::from_url(&limited.url()).unwrap();
    let db = TestDatabase::create(backend).await;
    freed.await.unwrap();
    let db = match db {
        Ok(db) => db,
        Err(err @ Error::Connect { .. }) => panic!("did not wait: {err:?}"),
        Err(err) => panic!("{err:?}"),
    };
    assert!(started.elapsed() >= Duration::from_millis(900));
    db.remove().await.unwrap();
    limited.drop_it().await;
}
