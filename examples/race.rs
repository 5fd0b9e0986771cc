//! A race caught on every run: eight customers book the last seat at the same instant, each in a
//! process of its own.
//!
//! The naive booking checks, thinks, then writes: several customers see the seat free, and it is
//! sold several times. The fixed booking takes the seat in one `UPDATE … WHERE taken = 0`: the row
//! decides, and exactly one customer gets it. On SQLite, the naive booking inside a transaction
//! sells the seat once, because SQLite lets one writer in and fails the others with "database is
//! locked"; on PostgreSQL the same transaction still oversells.
//!
//! ```text
//! cargo run --example race                 # SQLite
//! TESTDB_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres cargo run --example race
//! ```

// Tests, examples and benches may panic and print; the library may not (see Cargo.toml).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::time::Duration;

use sqlx::{Connection, Executor, SqliteConnection};
use testdb::{Caller, Calls, Outcome, serve_callers, spawn_concurrent};
use testdb_postgres::Postgres;
use testdb_sqlite::Sqlite;

const SCHEMA: &str = "CREATE TABLE seats (id INTEGER PRIMARY KEY, taken INTEGER NOT NULL); \
                      CREATE TABLE bookings (seat INTEGER NOT NULL, who INTEGER NOT NULL); \
                      INSERT INTO seats VALUES (1, 0)";

macro_rules! bookings {
    ($module:ident, $conn:ty) => {
        mod $module {
            use super::*;

            /// Check, think, write.
            pub(crate) async fn naive(conn: &mut $conn, who: i64) -> Result<bool, sqlx::Error> {
                let booked: i64 = sqlx::query_scalar("SELECT count(*) FROM bookings")
                    .fetch_one(&mut *conn)
                    .await?;
                if booked > 0 {
                    return Ok(false);
                }
                // The application's work between reading and writing.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let insert = format!("INSERT INTO bookings VALUES (1, {who})");
                conn.execute(sqlx::AssertSqlSafe(insert)).await?;
                Ok(true)
            }

            /// The same, in a transaction.
            pub(crate) async fn in_transaction(
                conn: &mut $conn,
                who: i64,
            ) -> Result<bool, sqlx::Error> {
                let mut tx = conn.begin().await?;
                let booked = naive(&mut tx, who).await?;
                tx.commit().await?;
                Ok(booked)
            }

            /// Take the seat in one statement; book only if this statement took it.
            pub(crate) async fn fixed(conn: &mut $conn, who: i64) -> Result<bool, sqlx::Error> {
                let taken = conn
                    .execute("UPDATE seats SET taken = 1 WHERE id = 1 AND taken = 0")
                    .await?
                    .rows_affected();
                if taken == 1 {
                    let insert = format!("INSERT INTO bookings VALUES (1, {who})");
                    conn.execute(sqlx::AssertSqlSafe(insert)).await?;
                }
                Ok(taken == 1)
            }
        }
    };
}

bookings!(lite, SqliteConnection);
bookings!(pg, sqlx::PgConnection);

/// Eight callers of `caller` on a new database; prints what they got.
macro_rules! race {
    ($backend:expr, $label:expr, $caller:expr) => {{
        let db = testdb::TestDatabase::create($backend).await?;
        sqlx::raw_sql(SCHEMA).execute(db.pool()).await?;
        let calls = (1..=8).fold(Calls::new(), |calls, who| calls.call($caller, who));
        let outcomes = spawn_concurrent(&db.handle(), calls).await?;
        let sold: i64 = sqlx::query_scalar("SELECT count(*) FROM bookings")
            .fetch_one(db.pool())
            .await?;
        let errors = outcomes
            .iter()
            .filter(|outcome| matches!(outcome, Outcome::Error(_)))
            .count();
        let others = outcomes.len() - errors - outcomes.iter().filter(|o| o.is_value()).count();
        println!(
            "{:<34} seat sold {sold} time(s); {errors} caller(s) got an error; release skew {:?}",
            $label, outcomes.release_skew
        );
        if others > 0 {
            println!(
                "{:<34} {others} caller(s) crashed or timed out: {outcomes:?}",
                ""
            );
        }
        if let Some(Outcome::Error(message)) = outcomes
            .iter()
            .find(|outcome| matches!(outcome, Outcome::Error(_)))
        {
            println!("{:<34} e.g. {message}", "");
        }
    }};
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The children of spawn_concurrent are runs of this same binary: they stop here.
    serve_callers(&[
        Caller::of(lite::naive),
        Caller::of(lite::in_transaction),
        Caller::of(lite::fixed),
        Caller::of(pg::naive),
        Caller::of(pg::in_transaction),
        Caller::of(pg::fixed),
    ]);

    race!(Sqlite::new(), "SQLite, naive", lite::naive);
    race!(
        Sqlite::new(),
        "SQLite, naive in a transaction",
        lite::in_transaction
    );
    race!(Sqlite::new(), "SQLite, fixed", lite::fixed);
    match Postgres::from_env() {
        Ok(postgres) => {
            race!(postgres.clone(), "PostgreSQL, naive", pg::naive);
            race!(
                postgres.clone(),
                "PostgreSQL, naive in a transaction",
                pg::in_transaction
            );
            race!(postgres, "PostgreSQL, fixed", pg::fixed);
        }
        Err(err) => println!("PostgreSQL skipped: {err}"),
    }
    Ok(())
}
