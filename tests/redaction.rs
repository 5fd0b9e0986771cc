//! No password in any message: every public type that holds a PostgreSQL URL, formatted with
//! `Debug` (plain and pretty) and, for errors, `Display` with every cause, never shows it.
//! (SQLite URLs hold no password.)

// Tests, examples and benches may panic and print; the library may not (see Cargo.toml).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

#[macro_use]
mod common;

use std::fmt::Debug;

use sqlx::PgConnection;
use testdb::backend::{Server, Templates};
use testdb::{Isolation, Setup, Suite, TestDatabase};
use testdb_postgres::Postgres;

const PASSWORD: &str = "hunter2-Secret-pw";

/// The configured server's URL, with a password (the local server trusts its clients, so any
/// password is accepted).
fn url_with_password() -> Option<String> {
    common::postgres()?;
    let url = common::server_url();
    let mut url = url::Url::parse(&url).unwrap();
    url.set_password(Some(PASSWORD)).unwrap();
    Some(url.into())
}

fn assert_hidden(what: &str, value: &impl Debug) {
    for text in [format!("{value:?}"), format!("{value:#?}")] {
        assert!(
            !text.contains(PASSWORD) && !text.contains("Secret"),
            "{what} shows the password: {text}"
        );
    }
}

fn assert_error_hidden(what: &str, err: &testdb::Error) {
    assert_hidden(what, err);
    let mut cause: Option<&dyn std::error::Error> = Some(err);
    while let Some(current) = cause {
        assert!(
            !current.to_string().contains(PASSWORD),
            "{what}: a cause shows the password: {current}"
        );
        cause = current.source();
    }
}

static SUITE: Suite<Postgres> =
    Suite::new("redaction", || {
        let url = url_with_password().ok_or_else(|| testdb::Error::NotConfigured {
            backend: "PostgreSQL",
            hint: "no server".into(),
        })?;
        Ok(Setup::new(TestDatabase::builder(Postgres::from_url(&url)?))
            .isolation(Isolation::Committed))
    });

#[tokio::test]
async fn no_debug_shows_a_password() {
    let Some(url) = url_with_password() else {
        return;
    };
    let server = Postgres::from_url(&url).unwrap();
    assert_hidden("Postgres", &server);

    let builder = TestDatabase::builder(server.clone());
    assert_hidden("Builder", &builder);
    let db = builder.create().await.unwrap();
    assert!(
        db.url().contains(PASSWORD),
        "the URL itself keeps it, for connecting"
    );
    assert_hidden("TestDatabase", &db);
    assert_hidden("redacted_url", &db.redacted_url());
    assert_hidden("Handle", &db.handle());

    let owned = server.create().await.unwrap();
    assert_hidden("PostgresDatabase", &owned);
    testdb::backend::OwnedDatabase::destroy(owned)
        .await
        .unwrap();

    let lock = server
        .share_template("testdb_tpl_redaction_test")
        .await
        .unwrap();
    assert_hidden("TemplateLock", &lock);
    drop(lock);

    assert_hidden("Suite", &SUITE);
    SUITE
        .run(async |_: &mut PgConnection, ()| {
            let handle = testdb::current::<Postgres>()?;
            assert_hidden("Handle of a suite's test", &handle);
            Ok::<_, testdb::Error>(())
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn no_error_shows_a_password() {
    let Some(url) = url_with_password() else {
        return;
    };
    // A URL that cannot be parsed, and one that names no server.
    let bad = format!("postgres://user:{PASSWORD}@host:notaport/db");
    assert_error_hidden("invalid URL", &Postgres::from_url(&bad).unwrap_err());
    let mut unreachable = url::Url::parse(&url).unwrap();
    unreachable.set_port(Some(1)).unwrap();
    let server = Postgres::from_url(unreachable.as_str()).unwrap();
    let err = TestDatabase::builder(server).create().await.unwrap_err();
    assert_error_hidden("unreachable server", &err);
    // A server that refuses: a database the URL names does not exist.
    let mut missing = url::Url::parse(&url).unwrap();
    missing.set_path("/no_such_database_for_testdb");
    let server = Postgres::from_url(missing.as_str()).unwrap();
    let err = TestDatabase::builder(server).create().await.unwrap_err();
    assert_error_hidden("missing maintenance database", &err);
}
