//! Committed isolation: which tables a test wrote, and putting them back.
//!
//! Built into the template: a copy of each table as the setup left it (`testdb_baseline_<table>`),
//! the statement that refills each table from its copy (`testdb_baseline_refill`), a copy of
//! `sqlite_sequence` (AUTOINCREMENT counters), and triggers that record in `testdb_written` each
//! table a statement writes.

use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, Executor};

use testdb::{quote_identifier as ident, quote_literal as literal};

const WRITTEN: &str = "testdb_written";
const SEQUENCES: &str = "testdb_baseline_sqlite_sequence";
const REFILLS: &str = "testdb_baseline_refill";

fn baseline(table: &str) -> String {
    ident(&format!("testdb_baseline_{table}"))
}

pub(crate) async fn track_writes(
    conn: &mut SqliteConnection,
    tables: &[String],
) -> sqlx::Result<()> {
    let mut script = format!(
        "CREATE TABLE {WRITTEN} (name TEXT PRIMARY KEY) WITHOUT ROWID;\n\
         CREATE TABLE {REFILLS} (name TEXT PRIMARY KEY, statement TEXT NOT NULL) WITHOUT ROWID;\n"
    );
    for table in tables {
        // Generated columns cannot be inserted into: name the others.
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_xinfo(?) WHERE hidden = 0")
                .bind(table)
                .fetch_all(&mut *conn)
                .await?;
        let columns: Vec<String> = columns.iter().map(|column| ident(column)).collect();
        let columns = columns.join(", ");
        let refill = format!(
            "INSERT INTO {t} ({columns}) SELECT {columns} FROM {copy}",
            t = ident(table),
            copy = baseline(table)
        );
        script.push_str(&format!(
            "INSERT INTO {REFILLS} VALUES ({}, {});\n",
            literal(table),
            literal(&refill)
        ));
        script.push_str(&format!(
            "CREATE TABLE {copy} AS SELECT * FROM {t};\n",
            copy = baseline(table),
            t = ident(table)
        ));
        for event in ["INSERT", "UPDATE", "DELETE"] {
            script.push_str(&format!(
                "CREATE TRIGGER {trigger} AFTER {event} ON {t} \
                 BEGIN INSERT OR IGNORE INTO {WRITTEN} VALUES ({name}); END;\n",
                trigger = ident(&format!("testdb_written_{event}_{table}")),
                t = ident(table),
                name = literal(table),
            ));
        }
    }
    let has_sequences: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence')",
    )
    .fetch_one(&mut *conn)
    .await?;
    if has_sequences {
        script.push_str(&format!(
            "CREATE TABLE {SEQUENCES} AS SELECT * FROM sqlite_sequence;\n"
        ));
    }
    conn.execute(AssertSqlSafe(script)).await.map(drop)
}

pub(crate) async fn written_tables(conn: &mut SqliteConnection) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT name FROM testdb_written ORDER BY name")
        .fetch_all(&mut *conn)
        .await
}

pub(crate) async fn restore(
    conn: &mut SqliteConnection,
    tables: &[String],
    sequences: bool,
) -> sqlx::Result<()> {
    if tables.is_empty() {
        // Nothing written; and SQLite's counters only move with committed inserts.
        return Ok(());
    }
    // Checked at commit, once every table is back (tables that reference each other).
    let mut script = String::from("PRAGMA defer_foreign_keys = ON;\n");
    for table in tables {
        script.push_str(&format!("DELETE FROM {};\n", ident(table)));
    }
    let names: Vec<String> = tables.iter().map(|table| literal(table)).collect();
    let names = names.join(", ");
    let refills: Vec<(String, String)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT name, statement FROM {REFILLS} WHERE name IN ({names})"
    )))
    .fetch_all(&mut *conn)
    .await?;
    for table in tables.iter().rev() {
        if let Some((_, refill)) = refills.iter().find(|(name, _)| name == table) {
            script.push_str(refill);
            script.push_str(";\n");
        }
    }
    if sequences {
        let has_copy: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'testdb_baseline_sqlite_sequence')",
        )
        .fetch_one(&mut *conn)
        .await?;
        if has_copy {
            script.push_str(&format!(
                "DELETE FROM sqlite_sequence WHERE name IN ({names});\n\
                 INSERT INTO sqlite_sequence SELECT * FROM {SEQUENCES} WHERE name IN ({names});\n"
            ));
        }
    }
    script.push_str(&format!("DELETE FROM {WRITTEN} WHERE name IN ({names});\n"));
    conn.execute(AssertSqlSafe(script)).await.map(drop)
}
