//! How long a test process waits for its PostgreSQL server when none is configured: the time
//! `Postgres::from_env()` takes (finding, starting or joining testdb's own server), then a first
//! connection's first query.
//!
//! Run it with `cargo run --example own_server` (with `TESTDB_POSTGRES_URL` and `DATABASE_URL`
//! unset, or it times the configured server, whose URL must then hold no password); `benches/own_server/run` runs it on a cold machine,
//! a warm one and a running server, and reports the medians.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::time::Instant;

use testdb_postgres::Postgres;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let server = Postgres::from_env()?;
    let ready = started.elapsed();
    let url = server.redacted_url().to_string();
    let first_query = testdb::block_on(async move {
        let started = Instant::now();
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await?;
        sqlx::query("SELECT 1").execute(&mut conn).await?;
        Ok::<_, sqlx::Error>(started.elapsed())
    })??;
    // One line a script can read: milliseconds to a server, then to a first query's answer.
    println!(
        "{:.3} {:.3}",
        ready.as_secs_f64() * 1e3,
        first_query.as_secs_f64() * 1e3
    );
    Ok(())
}
