//! Errors say what to do, name where, and never show a password.

// Tests, examples and benches may panic and print; the library may not (see Cargo.toml).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

#[macro_use]
mod common;

use testdb::{Error, TestDatabase};
use testdb_postgres::Postgres;
use testdb_sqlite::Sqlite;

const PASSWORD: &str = "s3cret-Pa55";

fn assert_no_password(text: &str) {
    assert!(!text.contains(PASSWORD), "a password leaked into: {text}");
}

#[tokio::test]
async fn unreachable_server_says_what_to_do() {
    // Port 1 on loopback: nothing listens there.
    let backend = Postgres::from_url(&format!(
        "postgres://postgres:{PASSWORD}@127.0.0.1:1/postgres"
    ))
    .expect("a well-formed URL");
    assert_no_password(&format!("{backend:?}"));
    let err = TestDatabase::create(backend)
        .await
        .expect_err("nothing listens on port 1");
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("127.0.0.1:1"),
        "names the server: {message}"
    );
    assert!(
        message.contains("TESTDB_POSTGRES_URL"),
        "says what to set: {message}"
    );
    assert!(
        message.contains("postgres:***@"),
        "shows the redacted URL: {message}"
    );
    assert_no_password(&message);
    assert_no_password(&format!("{err:?}"));
}

#[test]
fn malformed_urls_are_named_without_their_password() {
    for url in [
        format!("postgres://postgres:{PASSWORD}@127.0.0.1:notaport/postgres"),
        format!("postgres://postgres:{PASSWORD}@127.0.0.1/postgres?sslmode=sometimes"),
        format!("mysql://root:{PASSWORD}@127.0.0.1/db"),
        "not a url at all".to_string(),
    ] {
        let err = Postgres::from_url(&url).expect_err(&url);
        assert!(matches!(err, Error::InvalidUrl { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.starts_with("invalid PostgreSQL URL"), "{message}");
        assert_no_password(&message);
        assert_no_password(&format!("{err:?}"));
    }
}

#[tokio::test]
async fn passwords_never_show_in_debug_or_errors_of_a_live_database() {
    let Some(_) = common::postgres() else { return };
    // The local server trusts every connection, so any password works and none may leak.
    let admin_url = common::server_url();
    let mut url = url::Url::parse(&admin_url).expect("url");
    url.set_password(Some(PASSWORD)).expect("set password");
    let backend = Postgres::from_url(url.as_str()).expect("url");
    let db = TestDatabase::create(backend.clone()).await.expect("create");
    assert_no_password(&format!("{backend:?} {db:?}"));
    let err = sqlx::query("SELECT * FROM no_such_table")
        .execute(db.pool())
        .await
        .expect_err("no such table");
    assert_no_password(&format!("{err:?}"));
    // The URL for other processes does carry it: that is what it is for.
    assert!(db.url().contains(PASSWORD));
}

#[tokio::test]
async fn a_role_without_createdb_is_told_how_to_fix_it() {
    let Some(_) = common::postgres() else { return };
    let mut admin = common::admin().await;
    let role = format!("testdb_nocreatedb_{}", std::process::id());
    let create_role = format!("CREATE ROLE \"{role}\" LOGIN NOCREATEDB");
    sqlx::query(sqlx::AssertSqlSafe(create_role))
        .execute(&mut admin)
        .await
        .expect("create role");

    let admin_url = common::server_url();
    let mut url = url::Url::parse(&admin_url).expect("url");
    url.set_username(&role).expect("set user");
    let result = TestDatabase::create(Postgres::from_url(url.as_str()).expect("url")).await;

    sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE \"{role}\"")))
        .execute(&mut admin)
        .await
        .expect("drop role");
    let err = result.expect_err("a role without CREATEDB cannot create databases");
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&role), "names the role: {message}");
    assert!(
        message.contains("CREATEDB"),
        "says what to grant: {message}"
    );
}

#[tokio::test]
async fn an_unusable_sqlite_directory_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").expect("write");
    let root = file.join("testdb");
    let err = TestDatabase::create(Sqlite::new().directory(&root))
        .await
        .expect_err("a directory under a file cannot exist");
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&root.display().to_string()),
        "{err}"
    );
}

#[test]
fn postgres_tests_say_when_they_are_skipped() {
    // Run one PostgreSQL test in a child with no server configured and outside CI: it must say it
    // was skipped, and why, where the user sees it.
    let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "a_role_without_createdb_is_told_how_to_fix_it",
            "--test-threads=1",
        ])
        .env_remove("TESTDB_POSTGRES_URL")
        .env_remove("DATABASE_URL")
        .env_remove("CI")
        // Else testdb starts a server of its own.
        .env("TESTDB_POSTGRES", "off")
        .output()
        .expect("run the child");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("SKIPPED"), "says it skipped: {stderr}");
    assert!(stderr.contains("TESTDB_POSTGRES_URL"), "says why: {stderr}");
}
