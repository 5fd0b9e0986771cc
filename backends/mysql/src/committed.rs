//! Committed isolation: which tables a test wrote, and putting them back.
//!
//! The template holds, beside each of the user's tables, a copy of its rows as the setup left them,
//! and a registry: for each table, the statement that refills it from its copy and its
//! `AUTO_INCREMENT` counter then, and the names of the tables written since the last restore,
//! which row triggers on each table record (MySQL has no statement triggers). A restore empties
//! each written table and refills it from its copy, with that table's trigger told to keep still
//! (`@testdb_restoring`; a user's trigger that writes another table is recorded, and that table
//! restored in the next round), then sets back the counters that moved: last, since `ALTER TABLE`
//! commits. Every name here is the usual one unless a user's object has it (see `bookkeeping`).

use sqlx::mysql::{MySqlConnection, MySqlRow};
use sqlx::{AssertSqlSafe, Row};
use testdb::backend::WriteTracking;

use crate::MySql;
use crate::bookkeeping::{self, BASELINE, Names, REGISTRY};
use crate::dialect::{ident, literal};
use crate::template::{END_KEEP_ZEROS, KEEP_ZEROS, stored_columns};

/// The registry's name unless a user's object has it.
const USUAL_REGISTRY: &str = "testdb_registry";
/// In the registry: a table testdb keeps a copy of.
const TABLE: &str = "'table'";
/// In the registry: a table written since the last restore (recorded by the triggers).
const WRITTEN: &str = "'written'";

async fn run(conn: &mut MySqlConnection, script: String) -> sqlx::Result<()> {
    sqlx::raw_sql(AssertSqlSafe(script))
        .execute(&mut *conn)
        .await
        .map(drop)
}

/// Runs `query`, built for a registry (its quoted name, and a condition on the
/// `information_schema.TABLES` row `m` that holds only for that registry), which returns at least
/// one row if that table is testdb's registry: first at the registry's usual name, which saves
/// looking it up, then, if it is not there, at the one it was given. Returns the registry's
/// quoted name, and the rows.
async fn from_registry(
    conn: &mut MySqlConnection,
    query: impl Fn(&str, &str) -> String,
) -> sqlx::Result<(String, Vec<MySqlRow>)> {
    let run = async |conn: &mut MySqlConnection, name: &str| {
        let registry = ident(name);
        let is_registry = format!(
            "m.TABLE_SCHEMA = DATABASE() AND m.TABLE_NAME = {} AND m.TABLE_COMMENT = {}",
            literal(name),
            literal(REGISTRY)
        );
        let rows = sqlx::query(AssertSqlSafe(query(&registry, &is_registry)))
            .fetch_all(&mut *conn)
            .await;
        rows.map(|rows| (registry, rows))
    };
    // A user's table of that name, without the registry's columns, fails to prepare.
    if let Ok(found) = run(conn, USUAL_REGISTRY).await
        && !found.1.is_empty()
    {
        return Ok(found);
    }
    match bookkeeping::find(conn, None, USUAL_REGISTRY, REGISTRY).await? {
        Some(name) => run(conn, &name).await,
        None => Err(sqlx::Error::InvalidArgument(
            "the database has no testdb registry of written tables: it was not built for \
             committed isolation, or by an older testdb (remove its template)"
                .into(),
        )),
    }
}

impl WriteTracking for MySql {
    async fn track_writes(conn: &mut MySqlConnection, tables: &[String]) -> sqlx::Result<()> {
        let mut names = Names::read(conn, None).await?;
        let registry = ident(&names.table(USUAL_REGISTRY));
        // Names compared as the server compares tables' (byte for byte, on Linux).
        let mut script = format!(
            "{KEEP_ZEROS} CREATE TABLE {registry} (kind VARCHAR(16) NOT NULL, \
             name VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, \
             refill LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL, counter BIGINT UNSIGNED NULL, PRIMARY KEY (kind, name)) \
             ENGINE = InnoDB COMMENT = {};",
            literal(REGISTRY)
        );
        let database: String = sqlx::query_scalar("SELECT DATABASE()")
            .fetch_one(&mut *conn)
            .await?;
        for (n, table) in tables.iter().enumerate() {
            let copy = ident(&names.table(&format!("testdb_baseline_{n}")));
            let columns = stored_columns(conn, &database, table).await?;
            let counter: Option<u64> = sqlx::query_scalar(
                "SELECT AUTO_INCREMENT FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
            )
            .bind(table)
            .fetch_optional(&mut *conn)
            .await?
            .flatten();
            let (t, name) = (ident(table), literal(table));
            let refill = format!("INSERT INTO {t} ({columns}) SELECT {columns} FROM {copy}");
            script.push_str(&format!(
                "CREATE TABLE {copy} LIKE {t}; ALTER TABLE {copy} COMMENT = {}; \
                 INSERT INTO {copy} ({columns}) SELECT {columns} FROM {t}; \
                 INSERT INTO {registry} VALUES ({TABLE}, {name}, {}, {});",
                literal(BASELINE),
                literal(&refill),
                counter.map_or("NULL".to_owned(), |counter| counter.to_string()),
            ));
            for (event, short) in [("INSERT", "i"), ("UPDATE", "u"), ("DELETE", "d")] {
                script.push_str(&format!(
                    "CREATE TRIGGER {} AFTER {event} ON {t} FOR EACH ROW \
                     IF NOT (BINARY @testdb_restoring <=> BINARY {name}) THEN \
                     INSERT IGNORE INTO {registry} (kind, name) VALUES ({WRITTEN}, {name}); \
                     END IF;",
                    ident(&names.trigger(&format!("testdb_written_{n}_{short}"))),
                ));
            }
        }
        script.push_str(END_KEEP_ZEROS);
        run(conn, script).await
    }

    async fn written_tables(conn: &mut MySqlConnection) -> sqlx::Result<Vec<String>> {
        // One row per written table, or one NULL.
        let (_, rows) = from_registry(conn, |registry, is_registry| {
            format!(
                "SELECT r.name FROM information_schema.TABLES m LEFT JOIN {registry} r \
                 ON r.kind = {WRITTEN} WHERE {is_registry} ORDER BY r.name"
            )
        })
        .await?;
        let mut written = Vec::new();
        for row in rows {
            if let Some(name) = row.try_get::<Option<String>, _>(0)? {
                written.push(name);
            }
        }
        Ok(written)
    }

    async fn restore(
        conn: &mut MySqlConnection,
        tables: &[String],
        sequences: bool,
    ) -> sqlx::Result<()> {
        // One row per tracked table: name, refill statement, counter.
        let (registry, rows) = from_registry(conn, |registry, is_registry| {
            format!(
                "SELECT r.name, r.refill, r.counter FROM information_schema.TABLES m \
                 LEFT JOIN {registry} r ON r.kind = {TABLE} WHERE {is_registry}"
            )
        })
        .await?;
        let mut tracked = Vec::new();
        for row in rows {
            let name: Option<String> = row.try_get(0)?;
            let refill: Option<String> = row.try_get(1)?;
            let counter: Option<u64> = row.try_get(2)?;
            if let (Some(name), Some(refill)) = (name, refill) {
                tracked.push((name, refill, counter));
            }
        }
        let refill_of = |table: &str| {
            tracked
                .iter()
                .find(|(name, _, _)| name == table)
                .map(|(_, refill, _)| refill.as_str())
        };
        // What a user's trigger writes while a table is restored is recorded from here on.
        let mut script = format!(
            "SET @testdb_restore_checks = @@foreign_key_checks, foreign_key_checks = 0; \
             {KEEP_ZEROS} DELETE FROM {registry} WHERE kind = {WRITTEN};"
        );
        // A table without a copy (one the test created) is not testdb's to empty.
        for table in tables.iter().filter(|table| refill_of(table).is_some()) {
            script.push_str(&format!(
                "SET @testdb_restoring = {}; DELETE FROM {};",
                literal(table),
                ident(table)
            ));
        }
        for table in tables.iter().rev() {
            let Some(refill) = refill_of(table) else {
                continue;
            };
            script.push_str(&format!(
                "SET @testdb_restoring = {}; {refill};",
                literal(table)
            ));
        }
        script.push_str(&format!(
            "SET @testdb_restoring = NULL, foreign_key_checks = @testdb_restore_checks; \
             {END_KEEP_ZEROS}"
        ));
        run(conn, script).await?;
        if sequences {
            // Counters move without a write (a failed insert): every tracked table's is looked at.
            let counters: Vec<(String, u64)> = sqlx::query_as(
                "SELECT TABLE_NAME, AUTO_INCREMENT FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = DATABASE() AND AUTO_INCREMENT IS NOT NULL",
            )
            .fetch_all(&mut *conn)
            .await?;
            let moved: Vec<(&str, u64)> = tracked
                .iter()
                .filter_map(|(name, _, counter)| {
                    let baseline = (*counter)?;
                    let now = counters.iter().find(|(table, _)| table == name)?.1;
                    (now != baseline).then_some((name.as_str(), baseline))
                })
                .collect();
            if moved.is_empty() {
                return Ok(());
            }
            // Waits at most 30 s for a session the fence missed (the default is a year).
            let mut alter =
                "SET @testdb_lock_wait = @@lock_wait_timeout, SESSION lock_wait_timeout = 30;"
                    .to_owned();
            for (name, counter) in moved {
                alter.push_str(&format!(
                    "ALTER TABLE {} AUTO_INCREMENT = {counter};",
                    ident(name)
                ));
            }
            alter.push_str("SET SESSION lock_wait_timeout = @testdb_lock_wait;");
            run(conn, alter).await?;
        }
        Ok(())
    }
}
