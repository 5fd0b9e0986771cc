//! Committed isolation: which tables a test wrote, and putting them back.
//!
//! Built into the template, in its main schema (the one file that is copied, and the only schema
//! a trigger that catches every connection's writes can write to): a registry, a copy of each
//! table as the setup left it, a copy of `sqlite_sequence` (AUTOINCREMENT counters), and triggers
//! that record in the registry each table a statement writes. The registry also holds the
//! statement that refills each table from its copy.
//!
//! A user's schema may use any name, `testdb_…` ones included, so names prove nothing: each of
//! testdb's objects takes its usual name only if no user object has it, and testdb's tables are
//! told apart by their definition, which begins `CREATE TABLE "<name>" (/* testdb bookkeeping: `
//! (SQLite keeps a `CREATE` statement's text as written; a user's table would have to be declared
//! so on purpose).

use std::collections::HashSet;

use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, Executor};

use testdb::backend::{WriteTracking, quote_identifier as ident, quote_literal as literal};

use crate::Sqlite;

/// What every definition of testdb's own tables starts with, after the name.
pub(crate) const MARK: &str = "/* testdb bookkeeping";
const REGISTRY_MARK: &str = "/* testdb bookkeeping: registry */";
const COPY_MARK: &str = "/* testdb bookkeeping: baseline */";
/// The registry's name unless a user's object has it.
const REGISTRY: &str = "testdb_registry";

/// In the registry: a table written since the last restore (recorded by the triggers).
const WRITTEN: &str = "'written'";
/// In the registry: a table's refill statement.
const REFILL: &str = "'refill'";
/// In the registry: the copy of `sqlite_sequence`, by its quoted name.
const SEQUENCES: &str = "'sequences'";

/// SQL true for the `sqlite_master` row `m` if it is one of testdb's tables whose definition
/// starts with `mark`.
pub(crate) fn marked(mark: &str) -> String {
    format!(
        "(coalesce(instr(m.sql, 'CREATE TABLE \"' || replace(m.name, '\"', '\"\"') || '\" (' || {}), 0) = 1)",
        literal(mark)
    )
}

/// The names in use in the main schema, as SQLite compares them (ASCII case folded): tables,
/// indexes and views share one namespace, triggers have their own.
struct Names {
    relations: HashSet<String>,
    triggers: HashSet<String>,
}

impl Names {
    async fn read(conn: &mut SqliteConnection) -> sqlx::Result<Self> {
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT type, name FROM sqlite_master")
            .fetch_all(&mut *conn)
            .await?;
        let mut names = Names {
            relations: HashSet::new(),
            triggers: HashSet::new(),
        };
        for (kind, name) in rows {
            let set = if kind == "trigger" {
                &mut names.triggers
            } else {
                &mut names.relations
            };
            set.insert(name.to_ascii_lowercase());
        }
        Ok(names)
    }

    /// `usual`, or `usual_2`, `usual_3`… if a user's object (or testdb's, already) has it.
    fn claim(taken: &mut HashSet<String>, usual: &str) -> String {
        let mut name = usual.to_string();
        let mut n = 1;
        while !taken.insert(name.to_ascii_lowercase()) {
            n += 1;
            name = format!("{usual}_{n}");
        }
        name
    }

    fn relation(&mut self, usual: &str) -> String {
        ident(&Self::claim(&mut self.relations, usual))
    }

    fn trigger(&mut self, usual: &str) -> String {
        ident(&Self::claim(&mut self.triggers, usual))
    }
}

/// Runs `query`, built for a registry (its quoted name, and its name as a literal), returning at
/// least one row if that table is testdb's registry and none otherwise: first at the registry's
/// usual name, which saves looking it up, then, if it is not there, at the one it was given.
async fn from_registry<T>(
    conn: &mut SqliteConnection,
    query: impl Fn(&str, &str) -> String,
) -> sqlx::Result<(String, Vec<T>)>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
{
    let run = async |conn: &mut SqliteConnection, name: &str| {
        let registry = ident(name);
        let rows = sqlx::query_as(AssertSqlSafe(query(&registry, &literal(name))))
            .fetch_all(&mut *conn)
            .await;
        rows.map(|rows| (registry, rows))
    };
    // A user's table of that name, without the registry's columns, fails to prepare.
    if let Ok(found) = run(conn, REGISTRY).await
        && !found.1.is_empty()
    {
        return Ok(found);
    }
    let found: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT name FROM sqlite_master m WHERE type = 'table' AND {}",
        marked(REGISTRY_MARK)
    )))
    .fetch_all(&mut *conn)
    .await?;
    match found.as_slice() {
        [name] => run(conn, name).await,
        [] => Err(sqlx::Error::InvalidArgument(
            "the database has no testdb registry of written tables: it was not built for \
             committed isolation, or by an older testdb (remove its template)"
                .into(),
        )),
        _ => Err(sqlx::Error::InvalidArgument(format!(
            "the database has {} tables defined as testdb's registry of written tables: {}",
            found.len(),
            found.join(", ")
        ))),
    }
}

/// A row of the registry: kind, name, statement (all NULL where none matched).
type RegistryRow = (Option<String>, Option<String>, Option<String>);

/// SQL that joins `sqlite_master` row `m` of `registry` (a literal), if it is testdb's registry,
/// to the registry's rows (`alias`) that match `on`.
fn registry_rows(registry: &str, quoted: &str, alias: &str, on: &str) -> String {
    format!(
        "FROM sqlite_master m LEFT JOIN {quoted} {alias} ON {on} \
         WHERE m.type = 'table' AND m.name = {registry} AND {}",
        marked(REGISTRY_MARK)
    )
}

impl WriteTracking for Sqlite {
    async fn track_writes(conn: &mut SqliteConnection, tables: &[String]) -> sqlx::Result<()> {
        let mut names = Names::read(conn).await?;
        let registry = names.relation(REGISTRY);
        let mut script = format!(
            "CREATE TABLE {registry} ({REGISTRY_MARK} kind TEXT NOT NULL, name TEXT NOT NULL, \
             statement TEXT, PRIMARY KEY (kind, name)) WITHOUT ROWID;\n"
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
            let t = ident(table);
            let name = literal(table);
            let copy = names.relation(&format!("testdb_baseline_{table}"));
            // Columns without a type: the copy keeps every value exactly as the table holds it.
            script.push_str(&format!(
                "CREATE TABLE {copy} ({COPY_MARK} {columns});\n\
                 INSERT INTO {copy} SELECT {columns} FROM {t};\n"
            ));
            let refill = format!("INSERT INTO {t} ({columns}) SELECT {columns} FROM {copy}");
            script.push_str(&format!(
                "INSERT INTO {registry} VALUES ({REFILL}, {name}, {});\n",
                literal(&refill)
            ));
            for event in ["INSERT", "UPDATE", "DELETE"] {
                // Not `INSERT OR IGNORE`: a user's `INSERT OR ABORT` would impose its conflict
                // clause on the trigger's statement, and fail at the second write. As fast, in a
                // `WHEN`.
                script.push_str(&format!(
                    "CREATE TRIGGER {trigger} AFTER {event} ON {t} \
                     WHEN NOT EXISTS (SELECT 1 FROM {registry} WHERE kind = {WRITTEN} AND name = {name}) \
                     BEGIN {MARK} */ INSERT INTO {registry} (kind, name) VALUES ({WRITTEN}, {name}); END;\n",
                    trigger = names.trigger(&format!("testdb_written_{event}_{table}")),
                ));
            }
        }
        let has_sequences: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence')",
        )
        .fetch_one(&mut *conn)
        .await?;
        if has_sequences {
            let copy = names.relation("testdb_baseline_sqlite_sequence");
            script.push_str(&format!(
                "CREATE TABLE {copy} ({COPY_MARK} name, seq);\n\
                 INSERT INTO {copy} SELECT name, seq FROM sqlite_sequence;\n\
                 INSERT INTO {registry} VALUES ({SEQUENCES}, '', {});\n",
                literal(&copy)
            ));
        }
        conn.execute(AssertSqlSafe(script)).await.map(drop)
    }

    async fn written_tables(conn: &mut SqliteConnection) -> sqlx::Result<Vec<String>> {
        // One row per written table, or one NULL.
        let (_, rows): (_, Vec<(Option<String>,)>) = from_registry(conn, |quoted, registry| {
            format!(
                "SELECT w.name {} ORDER BY w.name",
                registry_rows(registry, quoted, "w", &format!("w.kind = {WRITTEN}"))
            )
        })
        .await?;
        Ok(rows.into_iter().filter_map(|(name,)| name).collect())
    }

    async fn restore(
        conn: &mut SqliteConnection,
        tables: &[String],
        sequences: bool,
    ) -> sqlx::Result<()> {
        if tables.is_empty() {
            // Nothing written; and SQLite's counters only move with committed inserts.
            return Ok(());
        }
        let names: Vec<String> = tables.iter().map(|table| literal(table)).collect();
        let names = names.join(", ");
        let (registry, rows): (_, Vec<RegistryRow>) = from_registry(conn, |quoted, registry| {
            let on = format!("(r.kind = {REFILL} AND r.name IN ({names})) OR r.kind = {SEQUENCES}");
            format!(
                "SELECT r.kind, r.name, r.statement {}",
                registry_rows(registry, quoted, "r", &on)
            )
        })
        .await?;
        let statement = |wanted: &str, table: Option<&str>| {
            rows.iter().find_map(|(kind, name, statement)| {
                let matches = kind.as_deref() == Some(wanted)
                    && table.is_none_or(|table| name.as_deref() == Some(table));
                matches.then_some(statement.as_deref()).flatten()
            })
        };
        // Checked at commit, once every table is back (tables that reference each other).
        let mut script = String::from("PRAGMA defer_foreign_keys = ON;\n");
        for table in tables {
            script.push_str(&format!("DELETE FROM {};\n", ident(table)));
        }
        for table in tables.iter().rev() {
            if let Some(refill) = statement("refill", Some(table)) {
                script.push_str(refill);
                script.push_str(";\n");
            }
        }
        if sequences && let Some(copy) = statement("sequences", None) {
            script.push_str(&format!(
                "DELETE FROM sqlite_sequence WHERE name IN ({names});\n\
                 INSERT INTO sqlite_sequence (name, seq) \
                 SELECT name, seq FROM {copy} WHERE name IN ({names});\n"
            ));
        }
        script.push_str(&format!(
            "DELETE FROM {registry} WHERE kind = {WRITTEN} AND name IN ({names});\n"
        ));
        conn.execute(AssertSqlSafe(script)).await.map(drop)
    }
}
