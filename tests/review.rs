//! Adversarial review of the fixture loader and dumps: each test is a promise of the README, or
//! data that must not change on the way in or out. Failing ones are marked `#[ignore = "finding N"]`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

#[macro_use]
mod common;

use std::path::{Path, PathBuf};

use sqlx::{AssertSqlSafe, Connection, Row};
use testdb::{Error, Fixtures, TestDatabase};
use testdb_postgres::Postgres;
use testdb_sqlite::Sqlite;

// ---------------------------------------------------------------------------------------------
// Helpers

async fn pg() -> Option<TestDatabase<Postgres>> {
    let backend = common::postgres()?;
    Some(TestDatabase::create(backend).await.expect("create"))
}

async fn lite() -> TestDatabase<Sqlite> {
    TestDatabase::create(Sqlite::new()).await.expect("create")
}

async fn pg_run(db: &TestDatabase<Postgres>, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
        .execute(db.pool())
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"));
}

async fn lite_run(db: &TestDatabase<Sqlite>, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
        .execute(db.pool())
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"));
}

async fn pg_text(db: &TestDatabase<Postgres>, sql: &str) -> Option<String> {
    sqlx::query_scalar(AssertSqlSafe(sql.to_string()))
        .fetch_one(db.pool())
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
}

async fn lite_text(db: &TestDatabase<Sqlite>, sql: &str) -> Option<String> {
    sqlx::query_scalar(AssertSqlSafe(sql.to_string()))
        .fetch_one(db.pool())
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
}

async fn pg_count(db: &TestDatabase<Postgres>, sql: &str) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(sql.to_string()))
        .fetch_one(db.pool())
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
}

/// Writes `text` to `name` in `dir`, returning its path.
fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Every foreign key of the database's user tables, with its definition, sorted.
async fn pg_constraints(db: &TestDatabase<Postgres>) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "SELECT c.conrelid::regclass::text, c.conname::text, pg_get_constraintdef(c.oid) \
         FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace \
         WHERE c.contype = 'f' AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1, 2",
    )
    .fetch_all(db.pool())
    .await
    .unwrap()
}

/// The parts of a fixture error.
fn parts(err: &Error) -> (Option<String>, Option<String>, Option<String>, String) {
    match err {
        Error::Fixture {
            table,
            row,
            column,
            message,
            ..
        } => (table.clone(), row.clone(), column.clone(), message.clone()),
        other => panic!("not a fixture error: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL: foreign keys lifted for a load

/// PG_FK_SCHEMA without its `INITIALLY DEFERRED` key (see finding 7).
const PG_FK_SCHEMA_PLAIN: &str = "
    CREATE SCHEMA other;
    CREATE TABLE other.owners (id INTEGER PRIMARY KEY);
    CREATE TABLE people (
        id INTEGER PRIMARY KEY,
        boss_id INTEGER REFERENCES people (id) ON DELETE SET NULL,
        owner_id INTEGER REFERENCES other.owners (id) ON DELETE CASCADE ON UPDATE RESTRICT
    );
";

const PG_FK_SCHEMA: &str = "
    CREATE SCHEMA other;
    CREATE TABLE other.owners (id INTEGER PRIMARY KEY);
    CREATE TABLE parents (a INTEGER, b INTEGER, PRIMARY KEY (a, b));
    CREATE TABLE people (
        id INTEGER PRIMARY KEY,
        boss_id INTEGER REFERENCES people (id) ON DELETE SET NULL,
        owner_id INTEGER REFERENCES other.owners (id) ON DELETE CASCADE ON UPDATE RESTRICT,
        pa INTEGER, pb INTEGER,
        CONSTRAINT people_parent FOREIGN KEY (pa, pb) REFERENCES parents (a, b)
            MATCH FULL DEFERRABLE INITIALLY DEFERRED
    );
    CREATE TABLE typed (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
";

#[tokio::test]
async fn pg_lifted_keys_come_back_identical_after_success() {
    let Some(db) = pg().await else { return };
    pg_run(&db, PG_FK_SCHEMA).await;
    let before = pg_constraints(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let fixture = file(
        dir.path(),
        "people.json",
        r#"{"people": [{"id": 2, "boss_id": 1, "owner_id": 7, "pa": 1, "pb": 2},
                       {"id": 1, "boss_id": null, "owner_id": 7, "pa": null, "pb": null}],
            "other.owners": [{"id": 7}],
            "parents": [{"a": 1, "b": 2}]}"#,
    );
    let loaded = db.load(&Fixtures::files([&fixture])).await.unwrap();
    assert_eq!(loaded.rows, 4);
    assert_eq!(pg_constraints(&db).await, before);
    // And they hold.
    let orphan = sqlx::query("INSERT INTO people (id, owner_id) VALUES (9, 999)")
        .execute(db.pool())
        .await;
    assert!(orphan.is_err());
}

#[tokio::test]
async fn pg_failed_fk_load_names_the_row_and_keeps_the_constraints() {
    let Some(db) = pg().await else { return };
    pg_run(&db, PG_FK_SCHEMA).await;
    let before = pg_constraints(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let fixture = file(
        dir.path(),
        "people.json",
        r#"{"other.owners": [{"id": 7}],
            "people": [{"id": 1, "owner_id": 7}, {"id": 2, "owner_id": 8}]}"#,
    );
    let err = db.load(&Fixtures::files([&fixture])).await.unwrap_err();
    let (table, row, column, message) = parts(&err);
    assert_eq!(table.as_deref(), Some("people"), "{err}");
    assert_eq!(row.as_deref(), Some("row 1"), "{err}");
    assert_eq!(column.as_deref(), Some("owner_id"), "{err}");
    assert!(message.contains('8'), "{err}");
    assert_eq!(pg_constraints(&db).await, before);
    assert_eq!(pg_count(&db, "SELECT count(*) FROM people").await, 0);
    assert_eq!(pg_count(&db, "SELECT count(*) FROM other.owners").await, 0);
}

#[tokio::test]
async fn pg_failed_load_on_a_later_type_error_keeps_the_constraints() {
    let Some(db) = pg().await else { return };
    pg_run(&db, PG_FK_SCHEMA).await;
    let before = pg_constraints(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let fixture = file(
        dir.path(),
        "mixed.json",
        r#"{"other.owners": [{"id": 7}],
            "people": [{"id": 1, "owner_id": 7}],
            "typed": [{"id": 1, "n": 1}, {"id": 2, "n": "two"}]}"#,
    );
    let err = db.load(&Fixtures::files([&fixture])).await.unwrap_err();
    let (table, row, column, _) = parts(&err);
    assert_eq!(
        (table.as_deref(), row.as_deref(), column.as_deref()),
        (Some("typed"), Some("row 1"), Some("n")),
        "{err}"
    );
    assert_eq!(pg_constraints(&db).await, before);
    assert_eq!(pg_count(&db, "SELECT count(*) FROM people").await, 0);
    // A second, good load goes through on the same database.
    let good = file(
        dir.path(),
        "good.json",
        r#"{"other.owners": [{"id": 7}], "people": [{"id": 1, "owner_id": 7}]}"#,
    );
    db.load(&Fixtures::files([&good])).await.unwrap();
    assert_eq!(pg_constraints(&db).await, before);
}

/// A parent row that was there before the load: the error must still name the row that breaks
/// the key, and its value, not a row whose parent merely was not in this load.
#[tokio::test]
async fn pg_fk_error_names_the_breaking_row_when_parents_preexist() {
    let Some(db) = pg().await else { return };
    pg_run(&db, PG_FK_SCHEMA).await;
    pg_run(&db, "INSERT INTO other.owners VALUES (7)").await;
    let dir = tempfile::tempdir().unwrap();
    let fixture = file(
        dir.path(),
        "people.json",
        r#"{"people": [{"id": 1, "owner_id": 7}, {"id": 2, "owner_id": 8}]}"#,
    );
    let err = db.load(&Fixtures::files([&fixture])).await.unwrap_err();
    let (_, row, _, message) = parts(&err);
    // Rows count from 0: the second row is "row 1".
    assert_eq!(row.as_deref(), Some("row 1"), "{err}");
    assert!(!message.contains("id = 7)"), "{err}");
}

/// The same on SQLite, whose row-by-row replay finds the row.
#[tokio::test]
async fn sqlite_fk_error_names_the_breaking_row_when_parents_preexist() {
    let db = lite().await;
    lite_run(
        &db,
        "CREATE TABLE owners (id INTEGER PRIMARY KEY);
         CREATE TABLE people (id INTEGER PRIMARY KEY, owner_id INTEGER REFERENCES owners (id));
         INSERT INTO owners VALUES (7);",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let fixture = file(
        dir.path(),
        "people.json",
        r#"{"people": [{"id": 1, "owner_id": 7}, {"id": 2, "owner_id": 8}]}"#,
    );
    let err = db.load(&Fixtures::files([&fixture])).await.unwrap_err();
    let (_, row, _, message) = parts(&err);
    assert_eq!(row.as_deref(), Some("row 1"), "{err}");
    assert!(message.contains('8'), "{err}");
}

/// A key added `NOT VALID` still checks every new row (PostgreSQL's per-row trigger): lifting it
/// and adding it back `NOT VALID` skips the check for the rows the load put in.
#[tokio::test]
async fn pg_not_valid_foreign_key_still_rejects_loaded_orphans() {
    let Some(db) = pg().await else { return };
    pg_run(
        &db,
        "CREATE TABLE owners (id INTEGER PRIMARY KEY);
         CREATE TABLE pets (id INTEGER PRIMARY KEY, owner_id INTEGER);
         INSERT INTO pets VALUES (100, 12345); -- a legacy orphan: why the key is NOT VALID
         ALTER TABLE pets ADD CONSTRAINT pets_owner FOREIGN KEY (owner_id)
             REFERENCES owners (id) NOT VALID;",
    )
    .await;
    // Without testdb: PostgreSQL refuses the orphan.
    let direct = sqlx::query("INSERT INTO pets VALUES (1, 999)")
        .execute(db.pool())
        .await;
    assert!(direct.is_err(), "a NOT VALID key checks new rows");
    let dir = tempfile::tempdir().unwrap();
    let fixture = file(
        dir.path(),
        "pets.json",
        r#"{"pets": [{"id": 1, "owner_id": 999}]}"#,
    );
    let loaded = db.load(&Fixtures::files([&fixture])).await;
    let orphans = pg_count(
        &db,
        "SELECT count(*) FROM pets p WHERE NOT EXISTS \
         (SELECT 1 FROM owners o WHERE o.id = p.owner_id) AND p.id <> 100",
    )
    .await;
    assert!(
        loaded.is_err() && orphans == 0,
        "the load put in {orphans} row(s) breaking pets_owner: {loaded:?}"
    );
}

/// Inside a caller's transaction, nothing is lifted: a broken key fails, the caller's
/// transaction and the constraints survive.
#[tokio::test]
async fn pg_load_inside_a_transaction_checks_per_row() {
    let Some(db) = pg().await else { return };
    pg_run(&db, PG_FK_SCHEMA_PLAIN).await;
    let before = pg_constraints(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let bad = file(
        dir.path(),
        "bad.json",
        r#"{"other.owners": [{"id": 7}], "people": [{"id": 1, "owner_id": 8}]}"#,
    );
    let good = file(
        dir.path(),
        "good.json",
        r#"{"other.owners": [{"id": 7}], "people": [{"id": 1, "owner_id": 7}]}"#,
    );
    let mut conn = db.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let err = testdb::load_fixtures::<Postgres>(&mut tx, &Fixtures::files([&bad]))
        .await
        .unwrap_err();
    let (table, _, column, _) = parts(&err);
    assert_eq!(table.as_deref(), Some("people"), "{err}");
    assert_eq!(column.as_deref(), Some("owner_id"), "{err}");
    testdb::load_fixtures::<Postgres>(&mut tx, &Fixtures::files([&good]))
        .await
        .unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM people")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, 1);
    tx.rollback().await.unwrap();
    drop(conn);
    assert_eq!(pg_constraints(&db).await, before);
    assert_eq!(pg_count(&db, "SELECT count(*) FROM people").await, 0);
}

/// Inside a caller's transaction, a table that references itself (its key deferred for the load)
/// and also has an `INITIALLY DEFERRED` key: one good load.
#[tokio::test]
#[ignore = "finding 7"]
async fn pg_good_load_inside_a_transaction_with_an_initially_deferred_key() {
    let Some(db) = pg().await else { return };
    pg_run(&db, PG_FK_SCHEMA).await;
    let dir = tempfile::tempdir().unwrap();
    let good = file(
        dir.path(),
        "good.json",
        r#"{"people": [{"id": 1, "boss_id": null}, {"id": 2, "boss_id": 1}]}"#,
    );
    let mut conn = db.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let loaded = testdb::load_fixtures::<Postgres>(&mut tx, &Fixtures::files([&good])).await;
    assert!(loaded.is_ok(), "{loaded:?}");
    tx.rollback().await.unwrap();
}

/// The same with the deferred key's column not even in the fixture (a savepoint suite's setup
/// loads inside a transaction like this).
#[tokio::test]
#[ignore = "finding 7"]
async fn pg_self_reference_beside_an_untouched_initially_deferred_key_in_a_transaction() {
    let Some(db) = pg().await else { return };
    pg_run(
        &db,
        "CREATE TABLE a (id INTEGER PRIMARY KEY);
         CREATE TABLE b (id INTEGER PRIMARY KEY, a_id INTEGER REFERENCES a (id)
                         DEFERRABLE INITIALLY DEFERRED,
                         parent_id INTEGER REFERENCES b (id));",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let good = file(
        dir.path(),
        "b.json",
        r#"{"b": [{"id": 2, "parent_id": 1}, {"id": 1}]}"#,
    );
    let mut conn = db.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let loaded = testdb::load_fixtures::<Postgres>(&mut tx, &Fixtures::files([&good])).await;
    assert!(loaded.is_ok(), "{loaded:?}");
    tx.rollback().await.unwrap();
}

/// A self-reference alone inside a transaction loads (the deferral is what finding 7 breaks).
#[tokio::test]
async fn pg_self_reference_alone_in_a_transaction() {
    let Some(db) = pg().await else { return };
    pg_run(&db, PG_FK_SCHEMA_PLAIN).await;
    let before = pg_constraints(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let good = file(
        dir.path(),
        "good.json",
        r#"{"people": [{"id": 2, "boss_id": 1}, {"id": 1, "boss_id": null}]}"#,
    );
    let mut conn = db.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    testdb::load_fixtures::<Postgres>(&mut tx, &Fixtures::files([&good]))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    drop(conn);
    assert_eq!(pg_constraints(&db).await, before);
}

/// A connection outside a transaction, through `load_fixtures` (lifting): a failure leaves the
/// connection usable and the constraints whole.
#[tokio::test]
async fn pg_load_fixtures_on_a_bare_connection() {
    let Some(db) = pg().await else { return };
    pg_run(&db, PG_FK_SCHEMA).await;
    let before = pg_constraints(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let bad = file(
        dir.path(),
        "bad.json",
        r#"{"people": [{"id": 1, "boss_id": 5}]}"#,
    );
    let mut conn = db.acquire().await.unwrap();
    let err = testdb::load_fixtures::<Postgres>(&mut conn, &Fixtures::files([&bad]))
        .await
        .unwrap_err();
    let (table, row, column, message) = parts(&err);
    assert_eq!(
        (table.as_deref(), row.as_deref(), column.as_deref()),
        (Some("people"), Some("row 0"), Some("boss_id")),
        "{err}"
    );
    assert!(message.contains('5'), "{err}");
    assert!(!conn.is_in_transaction());
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM people")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(n, 0);
    drop(conn);
    assert_eq!(pg_constraints(&db).await, before);
}

/// A table owned by a role the connecting user is not a member of keeps its per-row checks; the
/// load still works and still refuses a broken key. Run as a non-superuser.
#[tokio::test]
async fn pg_table_of_another_owner_loads_with_per_row_checks() {
    let Some(admin_backend) = common::postgres() else {
        return;
    };
    drop(admin_backend);
    let mut admin = common::admin().await;
    for statement in [
        "DO $$ BEGIN CREATE ROLE testdb_review_user LOGIN CREATEDB; \
         EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        "DO $$ BEGIN CREATE ROLE testdb_review_other NOLOGIN; \
         EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    ] {
        sqlx::raw_sql(AssertSqlSafe(statement.to_string()))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    let url = common::server_url();
    let mut as_user = url::Url::parse(&url).unwrap();
    as_user.set_username("testdb_review_user").unwrap();
    let backend = Postgres::from_url(as_user.as_str()).unwrap();
    let db = TestDatabase::create(backend).await.unwrap();
    pg_run(
        &db,
        "CREATE TABLE owners (id INTEGER PRIMARY KEY);
         CREATE TABLE pets (id INTEGER PRIMARY KEY, owner_id INTEGER REFERENCES owners (id));
         CREATE TABLE toys (id INTEGER PRIMARY KEY, pet_id INTEGER REFERENCES pets (id));",
    )
    .await;
    // As the superuser, on the test database: pets now belongs to another role.
    let mut admin_url = url::Url::parse(&url).unwrap();
    admin_url.set_path(db.name());
    let mut on_db = sqlx::PgConnection::connect(admin_url.as_str())
        .await
        .unwrap();
    sqlx::raw_sql(
        "ALTER TABLE pets OWNER TO testdb_review_other; \
         GRANT ALL ON pets TO testdb_review_user",
    )
    .execute(&mut on_db)
    .await
    .unwrap();
    let before = pg_constraints(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let good = file(
        dir.path(),
        "good.json",
        r#"{"toys": [{"id": 1, "pet_id": 1}], "pets": [{"id": 1, "owner_id": 1}],
            "owners": [{"id": 1}]}"#,
    );
    db.load(&Fixtures::files([&good])).await.unwrap();
    assert_eq!(pg_count(&db, "SELECT count(*) FROM toys").await, 1);
    let bad = file(
        dir.path(),
        "bad.json",
        r#"{"pets": [{"id": 2, "owner_id": 1}, {"id": 3, "owner_id": 50}]}"#,
    );
    let err = db.load(&Fixtures::files([&bad])).await.unwrap_err();
    let (table, row, column, _) = parts(&err);
    assert_eq!(
        (table.as_deref(), row.as_deref(), column.as_deref()),
        (Some("pets"), Some("row 1"), Some("owner_id")),
        "{err}"
    );
    assert_eq!(pg_constraints(&db).await, before);
    on_db.close().await.unwrap();
    db.remove().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL: values

#[tokio::test]
async fn pg_numbers_are_exact_through_load_and_dump() {
    let Some(db) = pg().await else { return };
    pg_run(
        &db,
        "CREATE TABLE n (id INTEGER PRIMARY KEY, exact NUMERIC, f FLOAT8, big INT8, doc JSONB,
                         plain JSON, words TEXT[], nums NUMERIC[]);",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let fixture = file(
        dir.path(),
        "n.json",
        r#"{"n": [
            {"id": 1, "exact": 123456789012345678901234567890.123456789, "f": 0.30000000000000004,
             "big": 9223372036854775807, "doc": {"a": [1.10, 1e400, 12345678901234567890123]},
             "plain": {"z": 1, "a":   2.50, "z": 3}, "words": ["a,b", "NULL", "q\"uote", null],
             "nums": [1.50, 99999999999999999999.99]},
            {"id": 2, "exact": 1e-400, "f": 5e-324, "big": -9223372036854775808,
             "doc": [], "plain": [], "words": [], "nums": []},
            {"id": 3, "exact": "NaN", "f": "-Infinity", "big": null, "doc": {}, "plain": {},
             "words": ["\\", "back\\slash", " sp "], "nums": [[1, 2], [3, 4]]}
        ]}"#,
    );
    db.load(&Fixtures::files([&fixture])).await.unwrap();
    assert_eq!(
        pg_text(&db, "SELECT exact::text FROM n WHERE id = 1")
            .await
            .as_deref(),
        Some("123456789012345678901234567890.123456789")
    );
    assert_eq!(
        pg_text(&db, "SELECT doc::text FROM n WHERE id = 1")
            .await
            .as_deref(),
        pg_text(
            &db,
            r#"SELECT '{"a": [1.10, 1e400, 12345678901234567890123]}'::jsonb::text"#
        )
        .await
        .as_deref()
    );
    assert_eq!(
        pg_text(&db, "SELECT plain::text FROM n WHERE id = 1")
            .await
            .as_deref(),
        Some(r#"{"z": 1, "a":   2.50, "z": 3}"#)
    );
    assert_eq!(
        pg_text(&db, "SELECT words::text FROM n WHERE id = 1")
            .await
            .as_deref(),
        Some(r#"{"a,b","NULL","q\"uote",NULL}"#)
    );
    assert_eq!(
        pg_text(&db, "SELECT exact::text FROM n WHERE id = 2")
            .await
            .as_deref(),
        Some(format!("0.{}1", "0".repeat(399)).as_str())
    );
    // Dump, load into a copy, dump again: the same text.
    let first = dir.path().join("first.json");
    db.dump(&["n"], &first).await.unwrap();
    let copy = pg().await.unwrap();
    pg_run(
        &copy,
        "CREATE TABLE n (id INTEGER PRIMARY KEY, exact NUMERIC, f FLOAT8, big INT8, doc JSONB,
                         plain JSON, words TEXT[], nums NUMERIC[]);",
    )
    .await;
    copy.load(&Fixtures::files([&first])).await.unwrap();
    let second = dir.path().join("second.json");
    copy.dump(&["n"], &second).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&first).unwrap(),
        std::fs::read_to_string(&second).unwrap()
    );
    let all = "SELECT string_agg(n::text, ' | ' ORDER BY id) FROM n";
    assert_eq!(pg_text(&db, all).await, pg_text(&copy, all).await);
}

/// A JSON number into `numeric` keeps every digit: trailing zeros are digits `numeric` keeps.
#[tokio::test]
async fn pg_numeric_keeps_the_scale_written() {
    let Some(db) = pg().await else { return };
    pg_run(
        &db,
        "CREATE TABLE prices (id INTEGER PRIMARY KEY, amount NUMERIC, f FLOAT8);",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let fixture = file(
        dir.path(),
        "prices.json",
        r#"{"prices": [{"id": 1, "amount": 2.50, "f": -0}, {"id": 2, "amount": 100.000}]}"#,
    );
    db.load(&Fixtures::files([&fixture])).await.unwrap();
    let mut failures = Vec::new();
    for (sql, expected) in [
        ("SELECT amount::text FROM prices WHERE id = 1", "2.50"),
        ("SELECT amount::text FROM prices WHERE id = 2", "100.000"),
        ("SELECT f::text FROM prices WHERE id = 1", "-0"),
    ] {
        let got = pg_text(&db, sql).await;
        if got.as_deref() != Some(expected) {
            failures.push(format!("{sql}: {got:?}, expected {expected}"));
        }
    }
    // What PostgreSQL itself does with the same literals.
    assert_eq!(
        pg_text(&db, "SELECT 2.50::numeric::text").await.as_deref(),
        Some("2.50")
    );
    assert!(failures.is_empty(), "{failures:#?}");
}

/// JSON `true` into text, json and jsonb columns: what PostgreSQL makes of a boolean (`'true'`,
/// and JSON true).
#[tokio::test]
async fn pg_json_booleans_into_text_and_jsonb() {
    let Some(db) = pg().await else { return };
    pg_run(
        &db,
        "CREATE TABLE b (id INTEGER PRIMARY KEY, t TEXT, j JSONB);",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let text = file(dir.path(), "t.json", r#"{"b": [{"id": 1, "t": true}]}"#);
    db.load(&Fixtures::files([&text])).await.unwrap();
    let stored = pg_text(&db, "SELECT t FROM b WHERE id = 1").await;
    let jsonb = file(dir.path(), "j.json", r#"{"b": [{"id": 2, "j": true}]}"#);
    let loaded = db.load(&Fixtures::files([&jsonb])).await;
    assert!(
        stored.as_deref() == Some("true") && loaded.is_ok(),
        "text column got {stored:?} (PostgreSQL's true::text is 'true'); jsonb load: {loaded:?}"
    );
}

/// Rows naming no column, for a table of another schema.
#[tokio::test]
#[ignore = "finding 6"]
async fn pg_rows_without_columns_into_another_schema() {
    let Some(db) = pg().await else { return };
    pg_run(
        &db,
        "CREATE SCHEMA other; CREATE TABLE other.counters (id SERIAL PRIMARY KEY, n INT DEFAULT 5);",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let fixture = file(dir.path(), "c.json", r#"{"other.counters": [{}, {}]}"#);
    let loaded = db.load(&Fixtures::files([&fixture])).await;
    assert!(loaded.is_ok(), "{loaded:?}");
    assert_eq!(
        pg_count(&db, "SELECT count(*) FROM other.counters").await,
        2
    );
}

/// Tables whose names hold dots and quotes, in the current schema and another.
#[tokio::test]
async fn pg_odd_table_names_dump_and_load() {
    let Some(db) = pg().await else { return };
    let schema = r#"
        CREATE SCHEMA "o""s";
        CREATE TABLE "a.b" (id INTEGER PRIMARY KEY, v TEXT);
        CREATE TABLE "q""t" (id INTEGER PRIMARY KEY, v TEXT);
        CREATE TABLE "o""s"."x" (id INTEGER PRIMARY KEY, v TEXT);
    "#;
    pg_run(&db, schema).await;
    pg_run(
        &db,
        r#"INSERT INTO "a.b" VALUES (1, 'ab'); INSERT INTO "q""t" VALUES (2, 'qt');
           INSERT INTO "o""s"."x" VALUES (3, 'x');"#,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("all.json");
    let written = db.dump(&[], &dump).await;
    let copy = pg().await.unwrap();
    pg_run(&copy, schema).await;
    let outcome = match written {
        Ok(_) => copy.load(&Fixtures::files([&dump])).await.map(drop),
        Err(err) => Err(err),
    };
    let text = std::fs::read_to_string(&dump).unwrap_or_default();
    assert!(outcome.is_ok(), "{outcome:?}\n{text}");
    let all = r#"SELECT (SELECT string_agg(v, ',') FROM "a.b") || (SELECT string_agg(v, ',') FROM "q""t") || (SELECT string_agg(v, ',') FROM "o""s"."x")"#;
    assert_eq!(
        pg_text(&copy, all).await.as_deref(),
        Some("abqtx"),
        "{text}"
    );
}

/// A schema whose name holds a dot: `schema.table` cannot say where the schema ends, and a dump
/// of every table fails.
#[tokio::test]
async fn pg_dump_of_every_table_with_a_dotted_schema() {
    let Some(db) = pg().await else { return };
    pg_run(
        &db,
        r#"CREATE SCHEMA "we.ird"; CREATE TABLE "we.ird".x (id INTEGER PRIMARY KEY);
           INSERT INTO "we.ird".x VALUES (1);"#,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let written = db.dump(&[], dir.path().join("all.json")).await;
    assert!(written.is_ok(), "{written:?}");
}

// ---------------------------------------------------------------------------------------------
// SQLite: affinities

/// Text that starts with `\x` into a column with no declared type: SQLite stores a string there.
#[tokio::test]
async fn sqlite_backslash_x_text_into_an_untyped_column_stays_text() {
    let db = lite().await;
    lite_run(
        &db,
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body, raw BLOB);",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let fixture = file(
        dir.path(),
        "notes.json",
        r#"{"notes": [{"id": 1, "body": "\\x41", "raw": "\\x41"}]}"#,
    );
    db.load(&Fixtures::files([&fixture])).await.unwrap();
    let body = lite_text(&db, "SELECT typeof(body) || ':' || quote(body) FROM notes").await;
    assert_eq!(body.as_deref(), Some(r"text:'\x41'"));
}

/// A TEXT value that happens to read `\x…` in a BLOB column, dumped and loaded back, is still
/// that text (dumps load back to the same rows).
#[tokio::test]
#[ignore = "known limit (README): a SQLite column holding text and BLOBs (or text reading \
            Infinity where floats go) does not round-trip, as JSON has no type for bytes"]
async fn sqlite_dump_round_trip_keeps_storage_classes() {
    let db = lite().await;
    let schema = "CREATE TABLE mixed (id INTEGER PRIMARY KEY, b BLOB, u, num NUMERIC, r REAL);";
    lite_run(&db, schema).await;
    lite_run(
        &db,
        r"INSERT INTO mixed VALUES (1, '\x41', '\xff', 9e999, 9e999);
          INSERT INTO mixed VALUES (2, X'41', 'Infinity', -9e999, 'inf');
          INSERT INTO mixed VALUES (3, 'plain', X'00', 1.5, 2);",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("mixed.json");
    db.dump(&["mixed"], &dump).await.unwrap();
    let copy = lite().await;
    lite_run(&copy, schema).await;
    copy.load(&Fixtures::files([&dump])).await.unwrap();
    let all = "SELECT group_concat(typeof(b) || ':' || quote(b) || ' ' || typeof(u) || ':' || \
               quote(u) || ' ' || typeof(num) || ':' || quote(num) || ' ' || typeof(r) || ':' || \
               quote(r), ' | ') FROM (SELECT * FROM mixed ORDER BY id)";
    assert_eq!(
        lite_text(&copy, all).await,
        lite_text(&db, all).await,
        "{}",
        std::fs::read_to_string(&dump).unwrap()
    );
}

#[tokio::test]
async fn sqlite_blobs_and_infinities_load_as_documented() {
    let db = lite().await;
    lite_run(
        &db,
        "CREATE TABLE k (id INTEGER PRIMARY KEY, data BLOB, f REAL, t TEXT, n INTEGER);",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let fixture = file(
        dir.path(),
        "k.json",
        r#"{"k": [{"id": 1, "data": "\\x00ff41", "f": "Infinity", "t": "\\x41", "n": 9223372036854775807},
                  {"id": 2, "data": "\\xZZ", "f": "-Infinity", "t": "Infinity", "n": -9223372036854775808},
                  {"id": 3, "data": "", "f": 0.1, "t": 0.30000000000000004, "n": 1}]}"#,
    );
    db.load(&Fixtures::files([&fixture])).await.unwrap();
    let all = "SELECT group_concat(typeof(data) || ':' || quote(data) || ' ' || typeof(f) || ':' \
               || quote(f) || ' ' || typeof(t) || ':' || quote(t) || ' ' || quote(n), ' | ') \
               FROM (SELECT * FROM k ORDER BY id)";
    let got = lite_text(&db, all).await.unwrap();
    println!("{got}");
    assert!(
        got.starts_with("blob:X'00FF41' real:9.0e+999 text:'\\x41' 9223372036854775807 | "),
        "{got}"
    );
    assert!(
        got.contains("text:'\\xZZ' real:-9.0e+999 text:'Infinity'"),
        "{got}"
    );
}

// ---------------------------------------------------------------------------------------------
// Django's format

async fn django_schema_pg(db: &TestDatabase<Postgres>) {
    pg_run(
        db,
        "CREATE TABLE shop_tag (id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT 'untitled');
         CREATE TABLE shop_item (id SERIAL PRIMARY KEY, name TEXT, price NUMERIC,
                                 \"Ref\" TEXT, \"REF\" TEXT, tag_id INTEGER REFERENCES shop_tag (id));
         CREATE TABLE shop_item_tags (id SERIAL PRIMARY KEY,
                                      item_id INTEGER NOT NULL REFERENCES shop_item (id),
                                      tag_id INTEGER NOT NULL REFERENCES shop_tag (id));",
    )
    .await;
}

async fn django_schema_lite(db: &TestDatabase<Sqlite>) {
    lite_run(
        db,
        "CREATE TABLE shop_tag (id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT 'untitled');
         CREATE TABLE shop_item (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, price decimal,
                                 \"Ref\" TEXT, \"REF2\" TEXT, tag_id INTEGER REFERENCES shop_tag (id));
         CREATE TABLE shop_item_tags (id INTEGER PRIMARY KEY AUTOINCREMENT,
                                      item_id INTEGER NOT NULL REFERENCES shop_item (id),
                                      tag_id INTEGER NOT NULL REFERENCES shop_tag (id));",
    )
    .await;
}

const DJANGO_SHAPES: &str = r#"[
  {"fields": {"name": "red"}, "model": "shop.tag", "pk": 1},
  {"model": "shop.tag", "pk": 2, "fields": {}},
  {"model": "shop.item", "pk": 10, "fields": {"name": "a", "price": "1.50", "tag": 1, "tags": [1, 2]}},
  {"model": "shop.item", "pk": 11, "fields": {"price": "2.00", "name": "b", "tags": []}},
  {"model": "shop.item", "pk": 12, "extra": {"ignored": [1]}, "fields": {"name": "c", "tag": 2, "tags": [2]}},
  {"model": "shop.tag", "pk": 3, "fields": {"name": "blue"}},
  {"model": "shop.item", "fields": {"name": "no pk", "tag": null}}
]"#;

#[tokio::test]
async fn django_mixed_shapes_pg() {
    let Some(db) = pg().await else { return };
    django_schema_pg(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let fixture = file(dir.path(), "shop.json", DJANGO_SHAPES);
    let loaded = db.load(&Fixtures::files([&fixture])).await.unwrap();
    assert_eq!(loaded.rows, 10, "3 tags, 4 items, 3 links");
    let items = pg_text(
        &db,
        "SELECT string_agg(coalesce(name, '-') || ':' || coalesce(price::text, '-') || ':' || \
         coalesce(tag_id::text, '-'), ',' ORDER BY id) FROM shop_item",
    )
    .await;
    // On PostgreSQL the object without pk takes the serial's next value, 1 (sequences move at
    // the end of the load, as after Django's loaddata).
    assert_eq!(items.as_deref(), Some("no pk:-:-,a:1.50:1,b:2.00:-,c:-:2"));
    assert_eq!(
        pg_text(&db, "SELECT name FROM shop_tag WHERE id = 2")
            .await
            .as_deref(),
        Some("untitled")
    );
    assert_eq!(
        pg_text(
            &db,
            "SELECT string_agg(item_id || '-' || tag_id, ',' ORDER BY item_id, tag_id) FROM shop_item_tags"
        )
        .await
        .as_deref(),
        Some("10-1,10-2,12-2")
    );
}

#[tokio::test]
async fn django_mixed_shapes_sqlite() {
    let db = lite().await;
    django_schema_lite(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let fixture = file(dir.path(), "shop.json", DJANGO_SHAPES);
    let loaded = db.load(&Fixtures::files([&fixture])).await.unwrap();
    assert_eq!(loaded.rows, 10);
    let items = lite_text(
        &db,
        "SELECT group_concat(coalesce(name, '-') || ':' || coalesce(price, '-') || ':' || \
         coalesce(tag_id, '-'), ',') FROM (SELECT * FROM shop_item ORDER BY id)",
    )
    .await;
    assert_eq!(items.as_deref(), Some("a:1.5:1,b:2:-,c:-:2,no pk:-:-"));
}

#[tokio::test]
async fn django_errors_name_the_object() {
    let Some(db) = pg().await else { return };
    django_schema_pg(&db).await;
    let dir = tempfile::tempdir().unwrap();
    for (name, text, says) in [
        (
            "natural.json",
            r#"[{"model": "shop.item", "pk": 1, "fields": {"tag": ["red"]}}]"#,
            "natural keys",
        ),
        (
            "unknown.json",
            r#"[{"model": "shop.nothing", "pk": 1, "fields": {}}]"#,
            "no table",
        ),
        (
            "ambiguous.json",
            r#"[{"model": "shop.item", "pk": 1, "fields": {"ref": "x"}}]"#,
            "ref",
        ),
        (
            "m2m_without_pk.json",
            r#"[{"model": "shop.item", "fields": {"tags": [1]}}]"#,
            "needs the object's",
        ),
        (
            "m2m_natural.json",
            r#"[{"model": "shop.tag", "pk": 1, "fields": {}},
                {"model": "shop.item", "pk": 1, "fields": {"tags": [["red"]]}}]"#,
            "",
        ),
    ] {
        let path = file(dir.path(), name, text);
        let err = db.load(&Fixtures::files([&path])).await.expect_err(name);
        let message = err.to_string();
        assert!(message.contains(says), "{name}: {message}");
        assert_eq!(pg_count(&db, "SELECT count(*) FROM shop_item").await, 0);
        println!("{name}: {message}");
    }
}

// ---------------------------------------------------------------------------------------------
// The JSON reader against serde_json

/// Values that must read as serde_json reads them, each in a row's `v`.
const VALUES: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "1E5",
    "1e+5",
    "1e-5",
    "0.1e1",
    "1.5E+300",
    "-1.5e-300",
    "1e308",
    "1.7976931348623157e308",
    "2.2250738585072014e-308",
    "4.9e-324",
    "123456789012345678",
    "1234567890123456789",
    "-9223372036854775808",
    "18446744073709551615",
    "3.141592653589793",
    "0.30000000000000004",
    "100",
    "1.0",
    "true",
    "false",
    "null",
    r#""""#,
    r#""plain""#,
    r#""\u0041\u00e9\u4e2d\ud83d\ude00""#,
    r#""\"\\\/\b\f\n\r\t""#,
    r#""\uD834\uDD1E""#,
    r#""\uffff\ufffe""#,
    "\"\u{7f}\u{80}\u{10ffff}\"",
    r#""ab\u0000cd""#,
    "[]",
    "{}",
    "[[]]",
    "[{}]",
    r#"{"":""}"#,
    r#"[1,2 ,3 ]"#,
    "[\n\t1\r\n]",
    r#"{"a" : {"b" : [true, false, null]}}"#,
    r#"{"a": 1, "a": 2}"#,
];

/// Documents that serde_json refuses: testdb must refuse them too.
const INVALID: &[&str] = &[
    "01",
    "1.",
    ".5",
    "+1",
    "1e",
    "1e+",
    "-",
    "--1",
    "0x10",
    "Infinity",
    "NaN",
    "'a'",
    "\"a\tb\"",
    "\"a\nb\"",
    r#""\a""#,
    r#""\u12""#,
    r#""\u12G4""#,
    r#""\ud800""#,
    r#""\udc00""#,
    r#""\ud800\u0041""#,
    "[1,]",
    "[,1]",
    "{\"a\":1,}",
    "{a:1}",
    "[1 2]",
    "tru",
    "nul",
    "True",
    "[1]]",
    "\u{a0}1",
    "\u{c}1",
];

#[tokio::test]
async fn json_reader_reads_what_serde_json_reads() {
    let db = lite().await;
    lite_run(&db, "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);").await;
    let dir = tempfile::tempdir().unwrap();
    let mut disagreements = Vec::new();
    for (index, value) in VALUES.iter().enumerate() {
        let text = format!("{{\"t\": [{{\"id\": 1, \"v\": {value}}}]}}");
        let serde = serde_json::from_str::<serde_json::Value>(&text);
        let path = file(dir.path(), &format!("v{index}.json"), &text);
        lite_run(&db, "DELETE FROM t").await;
        let loaded = db.load(&Fixtures::files([&path])).await;
        match (&serde, &loaded) {
            (Ok(parsed), Ok(_)) => {
                let expected = &parsed["t"][0]["v"];
                let row = sqlx::query("SELECT typeof(v), v FROM t")
                    .fetch_one(db.pool())
                    .await
                    .unwrap();
                let kind: String = row.get(0);
                let stored: Option<String> = match kind.as_str() {
                    "integer" => Some(row.get::<i64, _>(1).to_string()),
                    "real" => Some(format!("{:?}", row.get::<f64, _>(1))),
                    "text" => Some(row.get::<String, _>(1)),
                    _ => None,
                };
                let same = match expected {
                    serde_json::Value::Null => kind == "null",
                    serde_json::Value::Bool(b) => {
                        stored.as_deref() == Some(if *b { "1" } else { "0" })
                    }
                    serde_json::Value::Number(_) => {
                        // serde_json's own f64 is not correctly rounded (no float_roundtrip):
                        // compare with the literal's correctly rounded value, or its digits.
                        let stored = stored.clone().unwrap_or_default();
                        let exact: f64 = value.parse().unwrap();
                        match stored.parse::<f64>() {
                            Ok(b) if kind == "real" || kind == "integer" => {
                                exact == b && exact.is_sign_negative() == b.is_sign_negative()
                            }
                            _ => kind == "text" && stored == *value,
                        }
                    }
                    serde_json::Value::String(s) => {
                        kind == "text" && stored.as_deref() == Some(s.as_str())
                    }
                    other => {
                        stored
                            .as_deref()
                            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                            .as_ref()
                            == Some(other)
                    }
                };
                if !same {
                    disagreements.push(format!(
                        "{value}: serde_json {expected}, stored {kind} {stored:?}"
                    ));
                }
            }
            (Ok(_), Err(err)) => disagreements.push(format!("{value}: testdb refuses: {err}")),
            (Err(err), Ok(_)) => {
                disagreements.push(format!("{value}: testdb accepts, serde_json: {err}"))
            }
            (Err(_), Err(_)) => {}
        }
    }
    for (index, value) in INVALID.iter().enumerate() {
        let text = format!("{{\"t\": [{{\"id\": 1, \"v\": {value}}}]}}");
        assert!(
            serde_json::from_str::<serde_json::Value>(&text).is_err(),
            "serde_json accepts {value}"
        );
        let path = file(dir.path(), &format!("i{index}.json"), &text);
        lite_run(&db, "DELETE FROM t").await;
        if db.load(&Fixtures::files([&path])).await.is_ok() {
            disagreements.push(format!("{value:?}: testdb accepts what serde_json refuses"));
        }
    }
    println!("{disagreements:#?}");
    // `-0` is the one known disagreement (finding 4): serde_json reads a float -0.0, testdb the
    // integer 0.
    disagreements.retain(|line| !line.starts_with("-0:"));
    assert!(disagreements.is_empty(), "{disagreements:#?}");
}

/// Whole documents: whitespace, a BOM, a table twice.
#[tokio::test]
async fn json_documents_at_their_edges() {
    let db = lite().await;
    lite_run(&db, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);").await;
    let dir = tempfile::tempdir().unwrap();
    let mut report = Vec::new();
    for (name, text) in [
        ("bom", "\u{feff}{\"t\": [{\"id\": 1}]}"),
        ("spaces", " \t\r\n{ \"t\" : [ { \"id\" : 1 } ] } \n\t "),
        ("empty_object", "{}"),
        ("empty_list", "[]"),
        ("empty_rows", "{\"t\": []}"),
        ("twice", "{\"t\": [{\"id\": 1}], \"t\": [{\"id\": 2}]}"),
        ("empty_file", ""),
        (
            "nul_in_string",
            "{\"t\": [{\"id\": 1, \"v\": \"a\\u0000b\"}]}",
        ),
    ] {
        let path = file(dir.path(), &format!("{name}.json"), text);
        lite_run(&db, "DELETE FROM t").await;
        let serde = serde_json::from_str::<serde_json::Value>(text).map(drop);
        let loaded = db.load(&Fixtures::files([&path])).await;
        let rows = lite_text(&db, "SELECT CAST(count(*) AS TEXT) FROM t").await;
        report.push(format!(
            "{name}: serde_json {}, testdb {} ({rows:?} rows)",
            serde
                .as_ref()
                .map_or_else(|e| format!("refuses ({e})"), |_| "accepts".into()),
            loaded
                .as_ref()
                .map_or_else(|e| format!("refuses ({e})"), |_| "accepts".into())
        ));
        if name == "twice" {
            assert!(
                loaded.is_err(),
                "a table twice is refused, not merged nor dropped"
            );
        }
        if name == "nul_in_string" {
            assert_eq!(
                lite_text(&db, "SELECT hex(v) FROM t").await.as_deref(),
                Some("610062"),
                "SQLite keeps the NUL"
            );
        }
    }
    println!("{report:#?}");
}
