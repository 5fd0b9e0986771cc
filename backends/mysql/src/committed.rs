//! Committed isolation: which tables a test wrote, and putting them back.
//!
//! The template holds, beside each of the user's tables, a copy of its rows as the setup left them
//! (`testdb_copy_<n>`, named by testdb, never like a user's table), its `AUTO_INCREMENT` counter
//! then (`testdb_tables`), and the names of the tables written since the last restore
//! (`testdb_written`), which row triggers on each table record (MySQL has no statement
//! triggers). A restore empties each written table and refills it from its copy, with the
//! triggers told to keep still (`@testdb_restoring`), then sets back the counters that moved:
//! last, since `ALTER TABLE` commits.

use sqlx::mysql::MySqlConnection;
use sqlx::{AssertSqlSafe, Row};
use testdb::backend::WriteTracking;

use crate::MySql;
use crate::dialect::{ident, literal};
use crate::template::{END_KEEP_ZEROS, KEEP_ZEROS, stored_columns};

/// The table of the tracked tables: name, copy, counter.
pub(crate) const TABLES: &str = "testdb_tables";
/// The table of the tables written since the last restore.
pub(crate) const WRITTEN: &str = "testdb_written";
/// What every copy's name starts with.
pub(crate) const COPY_PREFIX: &str = "testdb_copy_";

/// Whether `table` is one of testdb's own, in a database of committed isolation's.
pub(crate) fn is_bookkeeping(table: &str) -> bool {
    table == TABLES
        || table == WRITTEN
        || table == crate::template::SETUP_TABLE
        || table
            .strip_prefix(COPY_PREFIX)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

async fn run(conn: &mut MySqlConnection, script: String) -> sqlx::Result<()> {
    sqlx::raw_sql(AssertSqlSafe(script))
        .execute(&mut *conn)
        .await
        .map(drop)
}

/// The tracked tables: (name, copy, counter).
async fn tracked(conn: &mut MySqlConnection) -> sqlx::Result<Vec<(String, String, Option<u64>)>> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT name, copy, counter FROM {}",
        ident(TABLES)
    )))
    .fetch_all(&mut *conn)
    .await
}

impl WriteTracking for MySql {
    async fn track_writes(conn: &mut MySqlConnection, tables: &[String]) -> sqlx::Result<()> {
        let mut script = format!(
            "{KEEP_ZEROS} CREATE TABLE {written} (name VARCHAR(64) NOT NULL PRIMARY KEY) ENGINE = InnoDB; \
             CREATE TABLE {tables} (name VARCHAR(64) NOT NULL PRIMARY KEY, copy VARCHAR(64) NOT \
             NULL, counter BIGINT UNSIGNED NULL) ENGINE = InnoDB;",
            written = ident(WRITTEN),
            tables = ident(TABLES),
        );
        let database: String = sqlx::query_scalar("SELECT DATABASE()")
            .fetch_one(&mut *conn)
            .await?;
        for (n, table) in tables.iter().enumerate() {
            let copy = format!("{COPY_PREFIX}{n}");
            let columns = stored_columns(conn, &database, table).await?;
            let counter: Option<u64> = sqlx::query_scalar(
                "SELECT AUTO_INCREMENT FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
            )
            .bind(table)
            .fetch_optional(&mut *conn)
            .await?
            .flatten();
            let (t, c) = (ident(table), ident(&copy));
            script.push_str(&format!(
                "CREATE TABLE {c} LIKE {t}; INSERT INTO {c} ({columns}) SELECT {columns} FROM {t}; \
                 INSERT INTO {} VALUES ({}, {}, {});",
                ident(TABLES),
                literal(table),
                literal(&copy),
                counter.map_or("NULL".to_owned(), |counter| counter.to_string()),
            ));
            for (event, short) in [("INSERT", "i"), ("UPDATE", "u"), ("DELETE", "d")] {
                script.push_str(&format!(
                    "CREATE TRIGGER {} AFTER {event} ON {t} FOR EACH ROW \
                     IF @testdb_restoring IS NULL THEN \
                     INSERT IGNORE INTO {} VALUES ({}); END IF;",
                    ident(&format!("testdb_written_{n}_{short}")),
                    ident(WRITTEN),
                    literal(table),
                ));
            }
        }
        script.push_str(END_KEEP_ZEROS);
        run(conn, script).await
    }

    async fn written_tables(conn: &mut MySqlConnection) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT name FROM {} ORDER BY name",
            ident(WRITTEN)
        )))
        .fetch_all(&mut *conn)
        .await
    }

    async fn restore(
        conn: &mut MySqlConnection,
        tables: &[String],
        sequences: bool,
    ) -> sqlx::Result<()> {
        let tracked = tracked(conn).await?;
        let copy_of = |table: &str| {
            tracked
                .iter()
                .find(|(name, _, _)| name == table)
                .map(|(_, copy, _)| copy.clone())
        };
        let database: String = sqlx::query_scalar("SELECT DATABASE()")
            .fetch_one(&mut *conn)
            .await?;
        let mut script = format!(
            "SET @testdb_restoring = 1, @testdb_restore_checks = @@foreign_key_checks, \
             foreign_key_checks = 0; {KEEP_ZEROS}"
        );
        // A table without a copy (one the test created) is not testdb's to empty.
        for table in tables.iter().filter(|table| copy_of(table).is_some()) {
            script.push_str(&format!("DELETE FROM {};", ident(table)));
        }
        for table in tables.iter().rev() {
            let Some(copy) = copy_of(table) else { continue };
            let columns = stored_columns(conn, &database, table).await?;
            script.push_str(&format!(
                "INSERT INTO {} ({columns}) SELECT {columns} FROM {};",
                ident(table),
                ident(&copy)
            ));
        }
        script.push_str(&format!(
            "DELETE FROM {}; SET @testdb_restoring = NULL, foreign_key_checks = @testdb_restore_checks; \
             {END_KEEP_ZEROS}",
            ident(WRITTEN)
        ));
        run(conn, script).await?;
        if sequences {
            // Counters move without a write (a failed insert): every tracked table's is looked at.
            let moved = sqlx::query(AssertSqlSafe(format!(
                "SELECT s.name, s.counter FROM {} s JOIN information_schema.TABLES t \
                 ON t.TABLE_SCHEMA = DATABASE() AND t.TABLE_NAME = s.name \
                 WHERE s.counter IS NOT NULL AND t.AUTO_INCREMENT <> s.counter",
                ident(TABLES)
            )))
            .fetch_all(&mut *conn)
            .await?;
            if moved.is_empty() {
                return Ok(());
            }
            // Waits at most 30 s for a session the fence missed (the default is a year).
            let mut alter =
                "SET @testdb_lock_wait = @@lock_wait_timeout, SESSION lock_wait_timeout = 30;"
                    .to_owned();
            for row in moved {
                let (name, counter): (String, u64) = (row.try_get(0)?, row.try_get(1)?);
                alter.push_str(&format!(
                    "ALTER TABLE {} AUTO_INCREMENT = {counter};",
                    ident(&name)
                ));
            }
            alter.push_str("SET SESSION lock_wait_timeout = @testdb_lock_wait;");
            run(conn, alter).await?;
        }
        Ok(())
    }
}
