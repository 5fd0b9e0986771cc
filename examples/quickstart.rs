//! testdb's main job on SQLite, with nothing to set up: create a test database, migrate it, write,
//! read, and remove it, timing each step.
//!
//! Run it with `cargo run --example quickstart`.

// Tests, examples and benches may panic and print; the library may not (see Cargo.toml).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::path::Path;
use std::time::Instant;

use testdb_sqlite::{Sqlite, TestDatabase};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let migrations = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/migrations");

    let started = Instant::now();
    let db = TestDatabase::builder(Sqlite::new())
        .migrations(&*migrations)
        .create()
        .await?;
    step(started, &format!("created and migrated {}", db.name()));

    let started = Instant::now();
    let mut tx = db.pool().begin().await?;
    for (id, owner, balance) in [(1, "ada", 10_000), (2, "grace", 2_500)] {
        sqlx::query("INSERT INTO accounts (id, owner, balance_cents) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(owner)
            .bind(balance)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "INSERT INTO transfers (from_account, to_account, amount_cents) VALUES (1, 2, 500)",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE accounts SET balance_cents = balance_cents - 500 WHERE id = 1")
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE accounts SET balance_cents = balance_cents + 500 WHERE id = 2")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    step(
        started,
        "wrote 2 accounts and a transfer of 5.00 in one transaction",
    );

    let started = Instant::now();
    let balances: Vec<(String, i64)> =
        sqlx::query_as("SELECT owner, balance_cents FROM accounts ORDER BY id")
            .fetch_all(db.pool())
            .await?;
    let summary: Vec<String> = balances
        .iter()
        .map(|(owner, cents)| format!("{owner} {}.{:02}", cents / 100, cents % 100))
        .collect();
    step(
        started,
        &format!("read the balances back: {}", summary.join(", ")),
    );

    let started = Instant::now();
    let file = db.name().to_owned();
    db.remove().await?;
    let gone = !Path::new(&file).exists();
    step(
        started,
        &format!("removed the database (file gone: {gone})"),
    );
    Ok(())
}

fn step(started: Instant, what: &str) {
    println!(
        "{:>9.2} ms  {what}",
        started.elapsed().as_secs_f64() * 1000.0
    );
}
