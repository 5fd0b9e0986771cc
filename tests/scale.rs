//! Forty tests, each with a `static` suite of its own (ten per isolation), on one PostgreSQL
//! server: under `cargo nextest run -j 16` (a process per test), under `--test-threads=16`, and in
//! four shards at once (`.ci/scale` runs all three). Each suite's setup appends its name to the
//! file in `TESTDB_SCALE_LOG`, if set, so that the script can check that every template was built
//! once; `TESTDB_SCALE_RUN` names the templates' version (a new one per run of the script).

// Tests, examples and benches may panic and print; the library may not (see Cargo.toml).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

mod common;

use std::io::Write;

use testdb::{Isolation, Setup, Suite};
use testdb_postgres::{Postgres, TestDatabase};

fn setup(suite: &'static str, isolation: Isolation) -> testdb::Result<Setup<Postgres>> {
    let backend = Postgres::from_env()?;
    let schema = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/endings_schema");
    let version = std::env::var("TESTDB_SCALE_RUN").unwrap_or_else(|_| "scale".into());
    Ok(
        Setup::new(TestDatabase::builder(backend).migrations(schema))
            .isolation(isolation)
            .version(version)
            .data(async move |conn: &mut sqlx::PgConnection| {
                if let Ok(log) = std::env::var("TESTDB_SCALE_LOG") {
                    let mut file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(log)?;
                    writeln!(file, "{suite}")?;
                }
                sqlx::query("INSERT INTO items (id, note) VALUES (1, 'setup')")
                    .execute(conn)
                    .await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            }),
    )
}

/// The test of every suite: writes, reads its write and the setup's row, and commits nothing
/// that the next test sees.
async fn a_test(suite: &'static Suite<Postgres>) {
    if common::postgres().is_none() {
        return;
    }
    let items = suite
        .run(async |conn: &mut sqlx::PgConnection, ()| {
            sqlx::query("INSERT INTO items (id, note) VALUES (2, 'test')")
                .execute(&mut *conn)
                .await?;
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM items")
                .fetch_one(&mut *conn)
                .await
        })
        .await
        .expect("the test");
    // The migration's row, the setup's and the test's.
    assert_eq!(items, 3);
}

macro_rules! suites {
    ($($name:ident: $isolation:ident),* $(,)?) => { $(
        #[tokio::test]
        async fn $name() {
            static SUITE: Suite<Postgres> =
                Suite::new(stringify!($name), || setup(stringify!($name), Isolation::$isolation));
            a_test(&SUITE).await;
        }
    )* };
}

suites!(
    scale_00: Savepoint, scale_01: Transaction, scale_02: Committed, scale_03: FreshDatabase,
    scale_04: Savepoint, scale_05: Transaction, scale_06: Committed, scale_07: FreshDatabase,
    scale_08: Savepoint, scale_09: Transaction, scale_10: Committed, scale_11: FreshDatabase,
    scale_12: Savepoint, scale_13: Transaction, scale_14: Committed, scale_15: FreshDatabase,
    scale_16: Savepoint, scale_17: Transaction, scale_18: Committed, scale_19: FreshDatabase,
    scale_20: Savepoint, scale_21: Transaction, scale_22: Committed, scale_23: FreshDatabase,
    scale_24: Savepoint, scale_25: Transaction, scale_26: Committed, scale_27: FreshDatabase,
    scale_28: Savepoint, scale_29: Transaction, scale_30: Committed, scale_31: FreshDatabase,
    scale_32: Savepoint, scale_33: Transaction, scale_34: Committed, scale_35: FreshDatabase,
    scale_36: Savepoint, scale_37: Transaction, scale_38: Committed, scale_39: FreshDatabase,
);
