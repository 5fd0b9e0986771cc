//! testdb's own tables and triggers inside a database it copies or restores: a template's setup
//! value, committed isolation's registry and copies, and the triggers that record writes.
//!
//! A user's schema may use any name, `testdb_…` ones included, so names prove nothing: each of
//! testdb's objects takes its usual name only if no object has it, and testdb's tables are told
//! apart by their comment, `testdb bookkeeping: <role>` (a user's table would have to be
//! commented so on purpose).

use std::collections::HashSet;

use sqlx::mysql::MySqlConnection;

use crate::dialect::literal;

/// What the comment of every table of testdb's own starts with.
const MARK: &str = "testdb bookkeeping: ";
/// The comment of a template's table of its setup value.
pub(crate) const SETUP: &str = "testdb bookkeeping: setup";
/// The comment of committed isolation's registry.
pub(crate) const REGISTRY: &str = "testdb bookkeeping: registry";
/// The comment of committed isolation's copy of a table as the setup left it.
pub(crate) const BASELINE: &str = "testdb bookkeeping: baseline";

/// SQL true for the `information_schema.TABLES` row `alias` if it is one of testdb's tables.
pub(crate) fn is_marked(alias: &str) -> String {
    format!(
        "LEFT({alias}.TABLE_COMMENT, {}) = {}",
        MARK.chars().count(),
        literal(MARK)
    )
}

/// The names in use in a schema, compared case-blind (as a server with
/// `lower_case_table_names` does): tables and views share one namespace, triggers have their
/// own.
pub(crate) struct Names {
    tables: HashSet<String>,
    triggers: HashSet<String>,
}

impl Names {
    /// The names in use in `schema`, or in the connection's database if `None`.
    pub(crate) async fn read(
        conn: &mut MySqlConnection,
        schema: Option<&str>,
    ) -> sqlx::Result<Self> {
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = COALESCE(?, DATABASE())",
        )
        .bind(schema)
        .fetch_all(&mut *conn)
        .await?;
        // Filtered on EVENT_OBJECT_SCHEMA, which the server looks up directly (see the copy).
        let triggers: Vec<String> = sqlx::query_scalar(
            "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS \
             WHERE EVENT_OBJECT_SCHEMA = COALESCE(?, DATABASE())",
        )
        .bind(schema)
        .fetch_all(&mut *conn)
        .await?;
        let folded = |names: Vec<String>| names.iter().map(|name| name.to_lowercase()).collect();
        Ok(Names {
            tables: folded(tables),
            triggers: folded(triggers),
        })
    }

    /// `usual`, or `usual_2`, `usual_3`… if an object (a user's, or testdb's already) has it.
    fn claim(taken: &mut HashSet<String>, usual: &str) -> String {
        let mut name = usual.to_owned();
        let mut n = 1;
        while !taken.insert(name.to_lowercase()) {
            n += 1;
            name = format!("{usual}_{n}");
        }
        name
    }

    /// A table's name, unquoted.
    pub(crate) fn table(&mut self, usual: &str) -> String {
        Self::claim(&mut self.tables, usual)
    }

    /// A trigger's name, unquoted.
    pub(crate) fn trigger(&mut self, usual: &str) -> String {
        Self::claim(&mut self.triggers, usual)
    }
}

/// The table of `schema` (the connection's database if `None`) commented `mark`: first at its
/// `usual` name, which the server looks up without opening the others, then among all.
pub(crate) async fn find(
    conn: &mut MySqlConnection,
    schema: Option<&str>,
    usual: &str,
    mark: &str,
) -> sqlx::Result<Option<String>> {
    let at_usual: Option<String> = sqlx::query_scalar(
        "SELECT TABLE_NAME FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? AND TABLE_COMMENT = ?",
    )
    .bind(schema)
    .bind(usual)
    .bind(mark)
    .fetch_optional(&mut *conn)
    .await?;
    if at_usual.is_some() {
        return Ok(at_usual);
    }
    let found: Vec<String> = sqlx::query_scalar(
        "SELECT TABLE_NAME FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_COMMENT = ?",
    )
    .bind(schema)
    .bind(mark)
    .fetch_all(&mut *conn)
    .await?;
    match found.as_slice() {
        [] => Ok(None),
        [name] => Ok(Some(name.clone())),
        _ => Err(sqlx::Error::InvalidArgument(format!(
            "the database has {} tables commented as testdb's ({mark}): {}",
            found.len(),
            found.join(", ")
        ))),
    }
}
