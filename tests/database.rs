//! TestDatabase on both backends: create, migrate, use, remove.

// Tests, examples and benches may panic and print; the library may not (see Cargo.toml).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

#[macro_use]
mod common;

use common::Harness;
use sqlx::migrate::Migrator;
use testdb::{Error, TestDatabase};

on_every_engine!(
    creates_migrates_and_removes,
    applies_a_migrator,
    failed_migration_leaves_nothing,
    missing_migrations_directory_is_named,
    drops_while_connections_are_open,
    remove_reports_success,
    databases_are_distinct,
);

async fn creates_migrates_and_removes<H: Harness>(backend: H) {
    let db = TestDatabase::builder(backend)
        .migrations(common::migrations())
        .create()
        .await
        .expect("create");
    let name = db.name().to_owned();
    assert!(H::exists(&name).await, "{name} should exist while in use");

    H::exec(db.pool(), "INSERT INTO users (id, name) VALUES (1, 'ada')").await;
    H::exec(
        db.pool(),
        "INSERT INTO posts (id, author_id, title) VALUES (1, 1, 'notes')",
    )
    .await;
    assert_eq!(H::scalar(db.pool(), "SELECT count(*) FROM posts").await, 1);

    // The same rows through every way in: a pooled connection, a new one, and the URL.
    let mut pooled = db.acquire().await.expect("acquire");
    assert_eq!(
        H::scalar_on(&mut pooled, "SELECT count(*) FROM users").await,
        1
    );
    let mut own = db.connect().await.expect("connect");
    assert_eq!(
        H::scalar_on(&mut own, "SELECT count(*) FROM users").await,
        1
    );
    assert_eq!(
        H::scalar_at(db.url(), "SELECT count(*) FROM users").await,
        1
    );
    drop((pooled, own));

    drop(db);
    assert!(!H::exists(&name).await, "{name} should be gone after drop");
}

async fn applies_a_migrator<H: Harness>(backend: H) {
    let migrator = Migrator::new(common::migrations())
        .await
        .expect("read migrations");
    let db = TestDatabase::builder(backend)
        .migrations(migrator)
        .create()
        .await
        .expect("create");
    let applied = H::scalar(
        db.pool(),
        "SELECT count(*) FROM _sqlx_migrations WHERE success",
    )
    .await;
    assert_eq!(applied, 2);
}

async fn failed_migration_leaves_nothing<H: Harness>(backend: H) {
    let err = TestDatabase::builder(backend)
        .migrations(common::bad_migrations())
        .create()
        .await
        .expect_err("the second migration must fail");
    let Error::Migrate { database, .. } = &err else {
        panic!("expected a migration error, got {err:?}");
    };
    let message = format!("{err:?}");
    assert!(message.contains(database.as_str()), "{message}");
    assert!(
        message.contains("no_such_table"),
        "the cause is kept: {message}"
    );
    assert!(
        !H::exists(database).await,
        "{database} must be removed after a failed migration"
    );
}

async fn missing_migrations_directory_is_named<H: Harness>(backend: H) {
    let err = TestDatabase::builder(backend)
        .migrations("tests/no/such/dir")
        .create()
        .await
        .expect_err("a missing directory is an error");
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("tests/no/such/dir"), "{err}");
}

async fn drops_while_connections_are_open<H: Harness>(backend: H) {
    let db = TestDatabase::builder(backend)
        .migrations(common::migrations())
        .create()
        .await
        .expect("create");
    let name = db.name().to_owned();
    let _pooled = db.acquire().await.expect("acquire");
    let _own = db.connect().await.expect("connect");
    let pool = db.pool().clone();
    drop(db);
    assert!(
        !H::exists(&name).await,
        "{name} should be gone despite open connections"
    );
    drop(pool);
}

async fn remove_reports_success<H: Harness>(backend: H) {
    let db = TestDatabase::create(backend).await.expect("create");
    let name = db.name().to_owned();
    db.remove().await.expect("remove");
    assert!(!H::exists(&name).await);
}

async fn databases_are_distinct<H: Harness>(backend: H) {
    let first = TestDatabase::builder(backend.clone())
        .migrations(common::migrations())
        .create()
        .await
        .expect("create");
    let second = TestDatabase::builder(backend)
        .migrations(common::migrations())
        .create()
        .await
        .expect("create");
    assert_ne!(first.name(), second.name());
    H::exec(
        first.pool(),
        "INSERT INTO users (id, name) VALUES (1, 'ada')",
    )
    .await;
    assert_eq!(
        H::scalar(second.pool(), "SELECT count(*) FROM users").await,
        0
    );
}

on_every_engine!(another_process_uses_the_url);

async fn another_process_uses_the_url<H: Harness>(backend: H) {
    let db = TestDatabase::builder(backend)
        .migrations(common::migrations())
        .create()
        .await
        .expect("create");
    H::exec(
        db.pool(),
        "INSERT INTO users (id, name) VALUES (1, 'ada'), (2, 'grace')",
    )
    .await;
    let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "child_counts_users_at_url",
            "--ignored",
            "--nocapture",
        ])
        .env(common::CHILD_BACKEND, H::KEY)
        .env("TESTDB_TEST_URL", db.url())
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("USERS 2"),
        "the child saw both rows: {stdout}"
    );
}

/// Helper, run as a child by `another_process_uses_the_url`.
#[tokio::test]
#[ignore = "run by other tests in a child process"]
async fn child_counts_users_at_url() {
    let url = std::env::var("TESTDB_TEST_URL").expect("TESTDB_TEST_URL");
    let sql = "SELECT count(*) FROM users";
    let users = match common::child_backend().as_str() {
        "sqlite" => <testdb_sqlite::Sqlite as Harness>::scalar_at(&url, sql).await,
        "postgres" => <testdb_postgres::Postgres as Harness>::scalar_at(&url, sql).await,
        "mysql" => <testdb_mysql::MySql as Harness>::scalar_at(&url, sql).await,
        other => panic!("unknown backend {other:?}"),
    };
    println!("USERS {users}");
}
