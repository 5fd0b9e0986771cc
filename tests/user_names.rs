//! A user's tables may have any name, those of testdb's own bookkeeping included (`testdb_audit`,
//! `TestDB_Mixed`, and on SQLite and MySQL the usual names of committed isolation's registry,
//! copies and triggers, and on MySQL of a template's setup table; on PostgreSQL those of its
//! tables in schema `testdb_baseline`): they are restored, loaded into and dumped like any other,
//! and testdb's bookkeeping stays out of the catalog.

// Tests, examples and benches may panic and print; the library may not (see Cargo.toml).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Harness;
use serde_json::Value as Json;
use sqlx::Database;
use testdb::{Error, Fixtures, Isolation, Setup, Suite, TestDatabase};
use testdb_mysql::MySql;
use testdb_postgres::Postgres;
use testdb_sqlite::Sqlite;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Conn<H> = <<H as testdb::backend::Driver>::Database as Database>::Connection;

trait Names: Harness {
    /// The user's tables, as the catalog must list them (`_sqlx_migrations` aside).
    const TABLES: &'static [&'static str];
    /// Writes to the user's table named like testdb's record of written tables.
    const WRITE_LOG: &'static str;
    /// Counts of testdb_audit, TestDB_Mixed and the log, and a digest of their rows.
    const STATE: &'static str;
    /// Inserts into TestDB_Mixed twice under a conflict clause of the user's own.
    const WRITE_WITH_CONFLICT_CLAUSE: [&'static str; 2];
    /// Creates a table defined as testdb's registry, where testdb tells its tables apart by
    /// their definition (not on PostgreSQL, where they have a schema of their own).
    const OWN_REGISTRY: Option<&'static str>;
    fn schema() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/user_names_schema")
            .join(Self::KEY)
    }
    fn suite() -> &'static Suite<Self>;
    /// Runs a query that returns one text (or NULL) on a connection.
    fn text_on(conn: &mut Conn<Self>, sql: &'static str) -> impl Future<Output = Option<String>>;
}

fn rows() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/user_names_schema/rows.json")
        .display()
        .to_string()
}

impl Names for Sqlite {
    const TABLES: &'static [&'static str] = &[
        "TestDB_Mixed",
        "testdb_audit",
        "testdb_baseline_testdb_audit",
        "testdb_registry",
        "testdb_written",
    ];
    const WRITE_LOG: &'static str = "INSERT INTO testdb_written (name) VALUES ('x')";
    const STATE: &'static str = "SELECT (SELECT count(*) FROM testdb_audit) || ' ' \
         || (SELECT count(*) FROM \"TestDB_Mixed\") || ' ' \
         || (SELECT count(*) FROM testdb_written) || ' ' \
         || (SELECT group_concat(id || '=' || event, ',') FROM \
             (SELECT * FROM testdb_audit ORDER BY id)) || ' ' \
         || (SELECT group_concat(id || '=' || coalesce(note, '-'), ',') FROM \
             (SELECT * FROM \"TestDB_Mixed\" ORDER BY id))";
    const WRITE_WITH_CONFLICT_CLAUSE: [&'static str; 2] = [
        "INSERT OR ABORT INTO \"TestDB_Mixed\" (id, note) VALUES (7, 'seven')",
        "INSERT OR ABORT INTO \"TestDB_Mixed\" (id, note) VALUES (8, 'eight')",
    ];
    const OWN_REGISTRY: Option<&'static str> = Some(
        "CREATE TABLE \"testdb_registry_2\" (/* testdb bookkeeping: registry */ \
         kind TEXT NOT NULL, name TEXT NOT NULL, statement TEXT, PRIMARY KEY (kind, name)) \
         WITHOUT ROWID",
    );
    fn suite() -> &'static Suite<Self> {
        static SUITE: Suite<Sqlite> = Suite::new("user-names", committed::<Sqlite>);
        &SUITE
    }
    async fn text_on(conn: &mut Conn<Self>, sql: &'static str) -> Option<String> {
        sqlx::query_scalar(sql).fetch_one(conn).await.expect(sql)
    }
}

impl Names for Postgres {
    const TABLES: &'static [&'static str] = &[
        "TestDB_Mixed",
        "sequences",
        "tables",
        "testdb_audit",
        "written",
    ];
    const WRITE_LOG: &'static str = "INSERT INTO written (name) VALUES ('x')";
    const STATE: &'static str = "SELECT (SELECT count(*) FROM testdb_audit) || ' ' \
         || (SELECT count(*) FROM \"TestDB_Mixed\") || ' ' \
         || (SELECT count(*) FROM written) || ' ' \
         || (SELECT string_agg(id || '=' || event, ',' ORDER BY id) FROM testdb_audit) || ' ' \
         || (SELECT string_agg(id || '=' || coalesce(note, '-'), ',' ORDER BY id) \
             FROM \"TestDB_Mixed\")";
    const WRITE_WITH_CONFLICT_CLAUSE: [&'static str; 2] = [
        "INSERT INTO \"TestDB_Mixed\" (id, note) VALUES (7, 'seven') ON CONFLICT DO NOTHING",
        "INSERT INTO \"TestDB_Mixed\" (id, note) VALUES (8, 'eight') ON CONFLICT DO NOTHING",
    ];
    const OWN_REGISTRY: Option<&'static str> = None;
    fn suite() -> &'static Suite<Self> {
        static SUITE: Suite<Postgres> = Suite::new("user-names", committed::<Postgres>);
        &SUITE
    }
    async fn text_on(conn: &mut Conn<Self>, sql: &'static str) -> Option<String> {
        sqlx::query_scalar(sql).fetch_one(conn).await.expect(sql)
    }
}

impl Names for MySql {
    const TABLES: &'static [&'static str] = &[
        "TestDB_Mixed",
        "testdb_audit",
        "testdb_baseline_0",
        "testdb_registry",
        "testdb_setup",
        "testdb_tables",
        "testdb_written",
    ];
    const WRITE_LOG: &'static str = "INSERT INTO testdb_registry (name) VALUES ('x')";
    const STATE: &'static str = "SELECT CONCAT_WS(' ', (SELECT count(*) FROM testdb_audit), \
         (SELECT count(*) FROM `TestDB_Mixed`), (SELECT count(*) FROM testdb_registry), \
         (SELECT group_concat(id, '=', event ORDER BY id SEPARATOR ',') FROM testdb_audit), \
         (SELECT group_concat(id, '=', coalesce(note, '-') ORDER BY id SEPARATOR ',') \
          FROM `TestDB_Mixed`))";
    const WRITE_WITH_CONFLICT_CLAUSE: [&'static str; 2] = [
        "INSERT IGNORE INTO `TestDB_Mixed` (id, note) VALUES (7, 'seven')",
        "INSERT IGNORE INTO `TestDB_Mixed` (id, note) VALUES (8, 'eight')",
    ];
    const OWN_REGISTRY: Option<&'static str> = Some(
        "CREATE TABLE testdb_registry_2 (kind VARCHAR(16) NOT NULL, name VARCHAR(64) NOT NULL, \
         refill LONGTEXT, counter BIGINT UNSIGNED, PRIMARY KEY (kind, name)) \
         COMMENT = 'testdb bookkeeping: registry'",
    );
    fn suite() -> &'static Suite<Self> {
        static SUITE: Suite<MySql> = Suite::new("user-names", committed::<MySql>);
        &SUITE
    }
    async fn text_on(conn: &mut Conn<Self>, sql: &'static str) -> Option<String> {
        sqlx::query_scalar(sql).fetch_one(conn).await.expect(sql)
    }
}

/// The user's schema and rows, in committed isolation.
fn committed<H: Names>() -> testdb::Result<Setup<H>> {
    let backend = H::backend().ok_or_else(|| Error::NotConfigured {
        backend: H::NAME,
        hint: "no server".into(),
    })?;
    Ok(Setup::new(
        TestDatabase::builder(backend)
            .migrations(H::schema())
            .fixtures(Fixtures::files([rows()])),
    )
    .isolation(Isolation::Committed)
    .time_limit(Duration::from_secs(20)))
}

/// The tables of the catalog on `conn`, but sqlx's.
async fn catalog<H: Names>(conn: &mut Conn<H>) -> Vec<String> {
    let catalog = H::catalog(conn).await.unwrap();
    catalog
        .tables
        .into_keys()
        .filter(|table| table != "_sqlx_migrations")
        .collect()
}

/// The tables, and rows per table, of a JSON fixture document.
fn tables_in(file: &Path) -> Vec<(String, usize)> {
    let document: Json = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    let mut tables: Vec<(String, usize)> = document
        .as_object()
        .unwrap()
        .iter()
        .map(|(table, rows)| (table.clone(), rows.as_array().unwrap().len()))
        .collect();
    tables.sort();
    tables
}

const BASELINE: &str = "2 1 0 1=created,2=renamed 1=first";

// Committed isolation: what a test writes to the user's `testdb_…` tables is gone for the next.

on_every_engine!(a_users_testdb_tables_are_restored);

async fn a_users_testdb_tables_are_restored<H: Names>(_: H) {
    let mut databases = Vec::new();
    for round in 0..3 {
        let (database, next_id) = H::suite()
            .run(async |conn: &mut Conn<H>, ()| {
                let state = H::text_on(conn, H::STATE).await;
                assert_eq!(
                    state.as_deref(),
                    Some(BASELINE),
                    "round {round} starts clean"
                );
                H::try_exec_on(conn, "INSERT INTO testdb_audit (event) VALUES ('deleted')").await?;
                let next_id = H::scalar_on(conn, "SELECT max(id) FROM testdb_audit").await;
                H::try_exec_on(conn, "DELETE FROM testdb_audit WHERE id = 2").await?;
                H::try_exec_on(conn, H::WRITE_LOG).await?;
                // The user's trigger with testdb's usual name is the user's still.
                let refused = H::try_exec_on(
                    conn,
                    "INSERT INTO testdb_audit (event) VALUES ('forbidden')",
                )
                .await
                .unwrap_err();
                assert!(refused.to_string().contains("forbidden event"), "{refused}");
                for statement in H::WRITE_WITH_CONFLICT_CLAUSE {
                    H::try_exec_on(conn, statement).await?;
                }
                // Another connection's write is caught too.
                let handle = testdb::current::<H>()?;
                H::exec(
                    handle.pool(),
                    "UPDATE \"TestDB_Mixed\" SET note = 'changed' WHERE id = 1",
                )
                .await;
                let state = H::text_on(conn, H::STATE).await;
                assert_eq!(
                    state.as_deref(),
                    Some("2 3 1 1=created,3=deleted 1=changed,7=seven,8=eight"),
                    "the test's writes"
                );
                Ok::<_, BoxError>((H::name_on(conn).await, next_id))
            })
            .await
            .unwrap_or_else(|err| panic!("round {round}: {err:?}"));
        assert_eq!(next_id, 3, "round {round}: the sequence is restored too");
        databases.push(database);
    }
    // Restored in place: a failed restore would have replaced the database with a new copy.
    assert_eq!(databases[0], databases[1]);
    assert_eq!(databases[1], databases[2]);
}

// Fixtures load into the user's `testdb_…` tables, and dumps include them; not testdb's own.

on_every_engine!(a_users_testdb_tables_are_loaded_and_dumped);

async fn a_users_testdb_tables_are_loaded_and_dumped<H: Names>(backend: H) {
    let expected: Vec<String> = H::TABLES.iter().map(|t| t.to_string()).collect();
    let dir = tempfile::tempdir().unwrap();

    // A plain database, loaded at creation.
    let db = TestDatabase::builder(backend)
        .migrations(H::schema())
        .fixtures(Fixtures::files([rows()]))
        .create()
        .await
        .unwrap();
    assert_eq!(
        H::text(db.pool(), H::STATE).await.as_deref(),
        Some(BASELINE)
    );
    let file = dir.path().join("plain.json");
    db.dump(&[], &file).await.unwrap();
    let mut dumped = tables_in(&file);
    assert_eq!(
        dumped.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>(),
        expected
    );
    dumped.retain(|(_, rows)| *rows > 0);
    assert_eq!(
        dumped,
        [
            ("TestDB_Mixed".to_string(), 1),
            ("testdb_audit".to_string(), 2),
        ],
        "every row of the user's tables"
    );
    db.remove().await.unwrap();

    // A committed suite's database, which holds testdb's bookkeeping beside the user's tables.
    let file = dir.path().join("committed.json");
    let (tables, loaded) = H::suite()
        .run(async |conn: &mut Conn<H>, ()| {
            let tables = catalog::<H>(conn).await;
            testdb::dump_fixtures::<H>(conn, &[], &file).await?;
            let more = dir.path().join("more.json");
            std::fs::write(
                &more,
                r#"{"testdb_audit": [{"id": 10, "event": "loaded"}],
                    "TestDB_Mixed": [{"id": 10, "audit_id": 10, "note": "loaded"}]}"#,
            )?;
            testdb::load_fixtures::<H>(conn, &Fixtures::files([more.display().to_string()]))
                .await?;
            let loaded =
                H::scalar_on(conn, "SELECT count(*) FROM \"TestDB_Mixed\" WHERE id = 10").await;
            Ok::<_, BoxError>((tables, loaded))
        })
        .await
        .unwrap();
    assert_eq!(
        tables, expected,
        "the catalog is the user's tables, no more, no less"
    );
    assert_eq!(
        tables_in(&file)
            .into_iter()
            .map(|(t, _)| t)
            .collect::<Vec<_>>(),
        expected
    );
    assert_eq!(loaded, 1);
    let after = H::suite()
        .run(async |conn: &mut Conn<H>, ()| Ok::<_, BoxError>(H::text_on(conn, H::STATE).await))
        .await
        .unwrap();
    assert_eq!(after.as_deref(), Some(BASELINE), "the loaded rows are gone");
}

// A database whose bookkeeping testdb cannot find (built by an older testdb, or not for committed
// isolation) is refused, never taken for one where nothing was written.

on_every_engine!(bookkeeping_that_is_not_testdbs_is_refused);

async fn bookkeeping_that_is_not_testdbs_is_refused<H: Names>(backend: H) {
    let db = TestDatabase::builder(backend)
        .migrations(H::schema())
        .create()
        .await
        .unwrap();
    let mut conn = db.connect().await.unwrap();
    let err = H::written_tables(&mut conn).await.unwrap_err();
    if let Some(own_registry) = H::OWN_REGISTRY {
        // The user's schema has a `testdb_registry` and a `testdb_written`: neither is testdb's.
        assert!(err.to_string().contains("no testdb registry"), "{err}");
        H::try_exec_on(&mut conn, own_registry).await.unwrap();
        assert_eq!(
            H::written_tables(&mut conn).await.unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            catalog::<H>(&mut conn).await,
            H::TABLES.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
            "a table defined as testdb's is left out of the catalog"
        );
    }
    drop(conn);
    db.remove().await.unwrap();
}
