//! A TestDatabase in a `static`, shared by plain `#[test]` and `#[tokio::test]` functions, keeps
//! working after the runtime of the test that first used it is gone. Under `cargo test` these run
//! as threads of one process; under `cargo nextest run`, each in a process of its own.

// Tests, examples and benches may panic and print; the library may not (see Cargo.toml).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

#[macro_use]
mod common;

use common::Shared;

on_every_engine!(tokio_test_first, tokio_test_second);
on_every_engine_sync!(plain_test, survives_the_runtime_that_first_used_it);

/// Each test writes its own row to the shared database and reads it back.
async fn write_and_read<H: Shared>(id: i64) {
    let Some(db) = H::shared() else { return };
    match id {
        1 => {
            H::exec(
                db.pool(),
                "INSERT INTO users (id, name) VALUES (1, 'first')",
            )
            .await
        }
        2 => {
            H::exec(
                db.pool(),
                "INSERT INTO users (id, name) VALUES (2, 'second')",
            )
            .await
        }
        _ => {
            H::exec(
                db.pool(),
                "INSERT INTO users (id, name) VALUES (3, 'plain')",
            )
            .await
        }
    }
    let found = match id {
        1 => H::scalar(db.pool(), "SELECT count(*) FROM users WHERE id = 1").await,
        2 => H::scalar(db.pool(), "SELECT count(*) FROM users WHERE id = 2").await,
        _ => H::scalar(db.pool(), "SELECT count(*) FROM users WHERE id = 3").await,
    };
    assert_eq!(found, 1);
}

async fn tokio_test_first<H: Shared>(_: H) {
    write_and_read::<H>(1).await;
}

async fn tokio_test_second<H: Shared>(_: H) {
    write_and_read::<H>(2).await;
}

fn plain_test<H: Shared>() {
    // No runtime here: the body runs on testdb's.
    testdb::block_on(write_and_read::<H>(3)).expect("testdb runtime");
}

fn survives_the_runtime_that_first_used_it<H: Shared>() {
    let Some(db) = H::shared() else { return };
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (mut own, mut pooled) = first.block_on(async {
        H::exec(
            db.pool(),
            "INSERT INTO users (id, name) VALUES (4, 'before')",
        )
        .await;
        let own = db.connect().await.expect("connect");
        let pooled = db.acquire().await.expect("acquire");
        (own, pooled)
    });
    drop(first);

    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    second.block_on(async {
        let sql = "SELECT count(*) FROM users WHERE id = 4";
        assert_eq!(
            H::scalar_on(&mut own, sql).await,
            1,
            "connect() outlives its runtime"
        );
        assert_eq!(
            H::scalar_on(&mut pooled, sql).await,
            1,
            "acquire() outlives its runtime"
        );
        drop(pooled);
        assert_eq!(
            H::scalar(db.pool(), sql).await,
            1,
            "the pool outlives its runtime"
        );
    });
}
