//! The README's first example at scale: many `#[tokio::test]`s, each on a runtime of its own that
//! ends with it, share a `static` test database's pool. Each runs a transaction (rolled back) and a
//! query. None may fail because a connection the pool handed it was opened on, or returned through,
//! another test's runtime that has since ended. Run under `cargo test` (threads of one process) and
//! `cargo nextest run` (a process each).

// Tests, examples and benches may panic and print; the library may not (see Cargo.toml).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

#[macro_use]
mod common;

use std::sync::atomic::{AtomicU32, Ordering};

use common::Shared;
use testdb_mysql::MySql;
use testdb_postgres::Postgres;
use testdb_sqlite::Sqlite;

/// One test: a transaction that writes and is rolled back, then a read, each on a connection
/// the pool hands out and takes back, the last as the test's runtime ends.
async fn one<H: Shared>() {
    let Some(db) = H::shared() else { return };
    // A key of its own, in this process and among the others of a nextest run: InnoDB answers
    // inserts of one key from many transactions with deadlocks.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let id = 10_000 + (std::process::id() % 100_000) * 1_000 + NEXT.fetch_add(1, Ordering::Relaxed);
    let mut tx = db.pool().begin().await.expect("begin");
    let insert = format!("INSERT INTO users (id, name) VALUES ({id}, 'tx {id}')");
    H::try_exec_on(&mut tx, insert.leak())
        .await
        .expect("insert");
    tx.rollback().await.expect("rollback");
    let found = H::scalar(db.pool(), "SELECT count(*) FROM users WHERE id >= 10000").await;
    assert_eq!(found, 0, "rolled back");
}

macro_rules! many {
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[tokio::test]
            async fn postgres() {
                super::one::<super::Postgres>().await;
            }

            #[tokio::test]
            async fn sqlite() {
                super::one::<super::Sqlite>().await;
            }

            #[tokio::test]
            async fn mysql() {
                super::one::<super::MySql>().await;
            }
        }
    )* };
}

many!(
    t01, t02, t03, t04, t05, t06, t07, t08, t09, t10, t11, t12, t13, t14, t15, t16, t17, t18, t19,
    t20, t21, t22, t23, t24, t25, t26, t27, t28, t29, t30, t31, t32, t33, t34, t35, t36, t37, t38,
    t39, t40,
);

/// The same, many at once whatever libtest's thread count: 16 threads at a time, each a runtime
/// of its own that ends with its test, 160 tests in all.
fn at_once<H: Shared>() {
    if H::shared().is_none() {
        return;
    }
    for _ in 0..10 {
        let tests: Vec<_> = (0..16)
            .map(|_| {
                std::thread::spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap()
                        .block_on(one::<H>());
                })
            })
            .collect();
        for test in tests {
            test.join().expect("a test failed");
        }
    }
}

on_every_engine_sync!(at_once);
