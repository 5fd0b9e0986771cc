//! A savepoint suite (Django's `TestCase`, for sqlx): the accounts are set up once, and every test
//! runs inside a savepoint that is rolled back, so each test starts from exactly the setup data.
//!
//! `cargo test --example suite` runs its tests; `cargo run --example suite` runs 1,000 of them
//! and prints what a test costs.

// Tests, examples and benches may panic and print; the library may not (see Cargo.toml).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::time::Instant;

use sqlx::{Connection, SqliteConnection};
use testdb::{Setup, Suite};
use testdb_sqlite::{Sqlite, TestDatabase};

/// What the setup hands every test (each gets its own clone).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Bank {
    ada: i64,
    grace: i64,
}

/// Declared once; the first test to run builds it.
static BANK: Suite<Sqlite, Bank> = Suite::new("bank", || {
    let migrations = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/migrations");
    Ok(
        Setup::new(TestDatabase::builder(Sqlite::new()).migrations(migrations)).data(
            async |conn: &mut SqliteConnection| {
                let open =
                    "INSERT INTO accounts (owner, balance_cents) VALUES ($1, $2) RETURNING id";
                let ada = sqlx::query_scalar(open)
                    .bind("ada")
                    .bind(10_000)
                    .fetch_one(&mut *conn)
                    .await?;
                let grace = sqlx::query_scalar(open)
                    .bind("grace")
                    .bind(2_500)
                    .fetch_one(&mut *conn)
                    .await?;
                Ok::<_, sqlx::Error>(Bank { ada, grace })
            },
        ),
    )
});

/// The code under test: moves money in a transaction of its own. Inside a suite, its `begin()`
/// is a savepoint, and its commit releases it; the suite transaction is never committed.
async fn transfer(conn: &mut SqliteConnection, from: i64, to: i64, cents: i64) -> sqlx::Result<()> {
    let mut tx = conn.begin().await?;
    sqlx::query("UPDATE accounts SET balance_cents = balance_cents - $1 WHERE id = $2")
        .bind(cents)
        .bind(from)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE accounts SET balance_cents = balance_cents + $1 WHERE id = $2")
        .bind(cents)
        .bind(to)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO transfers (from_account, to_account, amount_cents) VALUES ($1, $2, $3)",
    )
    .bind(from)
    .bind(to)
    .bind(cents)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

async fn balance(conn: &mut SqliteConnection, account: i64) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT balance_cents FROM accounts WHERE id = $1")
        .bind(account)
        .fetch_one(conn)
        .await
}

fn main() -> testdb::Result<()> {
    let started = Instant::now();
    BANK.run_blocking(async |_: &mut SqliteConnection, _| Ok::<_, sqlx::Error>(()))?;
    println!(
        "set up once: {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tests = 1_000;
    let started = Instant::now();
    runtime.block_on(async {
        for _ in 0..tests {
            BANK.run(async |conn: &mut SqliteConnection, bank: Bank| {
                transfer(conn, bank.ada, bank.grace, 500).await?;
                assert_eq!(balance(conn, bank.grace).await?, 3_000);
                Ok::<_, sqlx::Error>(())
            })
            .await?;
        }
        testdb::Result::Ok(())
    })?;
    let per_test = started.elapsed().as_secs_f64() * 1e3 / f64::from(tests);
    println!("{tests} tests, each a transfer rolled back afterwards: {per_test:.3} ms a test");
    println!("run them as tests: cargo test --example suite");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_transfer_moves_money() -> testdb::Result<()> {
        BANK.run(async |conn: &mut SqliteConnection, bank: Bank| {
            transfer(conn, bank.ada, bank.grace, 500).await?;
            assert_eq!(balance(conn, bank.ada).await?, 9_500);
            assert_eq!(balance(conn, bank.grace).await?, 3_000);
            Ok::<_, sqlx::Error>(())
        })
        .await
    }

    #[tokio::test]
    async fn an_overdraft_is_refused_and_leaves_nothing() -> testdb::Result<()> {
        BANK.run(async |conn: &mut SqliteConnection, bank: Bank| {
            let refused = transfer(conn, bank.grace, bank.ada, 1_000_000).await;
            assert!(
                refused.is_err(),
                "the CHECK constraint refuses a negative balance"
            );
            assert_eq!(balance(conn, bank.grace).await?, 2_500);
            Ok::<_, sqlx::Error>(())
        })
        .await
    }

    #[test]
    fn every_test_starts_from_the_setup() -> testdb::Result<()> {
        BANK.run_blocking(async |conn: &mut SqliteConnection, bank: Bank| {
            assert_eq!(balance(conn, bank.ada).await?, 10_000);
            let transfers: i64 = sqlx::query_scalar("SELECT count(*) FROM transfers")
                .fetch_one(&mut *conn)
                .await?;
            assert_eq!(transfers, 0, "no other test's transfer is visible");
            Ok::<_, sqlx::Error>(())
        })
    }
}
