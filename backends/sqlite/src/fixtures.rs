//! SQLite's side of fixture loading: the catalog, multi-row prepared `INSERT`s, deferred foreign
//! keys, and AUTOINCREMENT counters.

use std::collections::BTreeMap;
use std::sync::Arc;

use sqlx::Arguments as _;
use sqlx::sqlite::{SqliteArguments, SqliteConnection};
use sqlx::{AssertSqlSafe, Executor, Row};
use testdb::backend::{
    Catalog, ErrorSite, FixtureLoading, ForeignKey, TableInfo, Value, hex_bytes, hex_text,
    quote_identifier as ident,
};

use crate::{Sqlite, committed};

/// SQLite allows 32,766 bound values per statement; 500 rows a statement is past the point where
/// larger statements stop paying.
const MAX_ROWS: usize = 500;
const MAX_VALUES: usize = 32_766;

/// What a column's declared type makes of fixture text that SQLite itself would store as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Affinity {
    /// SQLite stores `true` in a BOOLEAN column as the text 'true', which reads back as false:
    /// boolean columns get the 1 and 0 that SQLite means by true and false.
    Boolean,
    /// Text columns keep text as it is.
    Text,
    /// A column declared `BLOB`: `\x` and hex digits (how a dump writes a BLOB) are the bytes they
    /// spell.
    Blob,
    /// Numeric, real, integer or undeclared: `Infinity` and `-Infinity` (how a dump writes them;
    /// JSON has no such number) are floats.
    Number,
}

impl Affinity {
    /// By SQLite's rules for a declared type's affinity (`INT` wins over `CHAR`, which wins over
    /// `BLOB`), with BOOLEAN singled out; only a declared `BLOB` reads hex as bytes, so that text
    /// in a column of no type stays text.
    fn of(declared: &str) -> Affinity {
        let declared = declared.to_ascii_uppercase();
        if declared.contains("BOOL") {
            Affinity::Boolean
        } else if declared.contains("INT") {
            Affinity::Number
        } else if ["CHAR", "CLOB", "TEXT"]
            .iter()
            .any(|t| declared.contains(t))
        {
            Affinity::Text
        } else if declared.contains("BLOB") {
            Affinity::Blob
        } else {
            Affinity::Number
        }
    }
}

/// The float of `Infinity` or `-Infinity`.
fn infinity(text: &str) -> Option<f64> {
    match text {
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// The integer SQLite means by a boolean's text, if it is one.
fn boolean_text(text: &str) -> Option<i64> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "on" | "1" => Some(1),
        "false" | "f" | "no" | "n" | "off" | "0" => Some(0),
        _ => None,
    }
}

impl FixtureLoading for Sqlite {
    // One multi-row statement's worth, inserted while the rest of the file is read.
    const LOAD_WHILE_READING: bool = true;
    const STORES_AS_GIVEN: bool = true;
    const DEFERS_EVERY_KEY: bool = true;
    const BULK_ROWS: usize = 500;

    async fn catalog(conn: &mut SqliteConnection) -> sqlx::Result<Catalog> {
        let mut tables: BTreeMap<String, TableInfo> = BTreeMap::new();
        // testdb's own tables (committed isolation's) are known by their definition, not their
        // name: a user's table may be called anything.
        let columns = sqlx::query(AssertSqlSafe(format!(
            "SELECT m.name, p.name, p.pk, p.type FROM sqlite_master m \
             JOIN pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite!_%' ESCAPE '!' AND NOT {} \
             ORDER BY m.name, p.cid",
            committed::marked(committed::MARK)
        )))
        .fetch_all(&mut *conn)
        .await?;
        let mut keys: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
        for row in columns {
            let (table, column, pk, kind): (String, String, i64, String) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            if pk > 0 {
                keys.entry(table.clone())
                    .or_default()
                    .push((pk, column.clone()));
            }
            let info = tables.entry(table).or_default();
            info.columns.push(column);
            info.column_types.push(kind);
        }
        for (table, mut columns) in keys {
            columns.sort();
            if let Some(info) = tables.get_mut(&table) {
                info.primary_key = columns.into_iter().map(|(_, column)| column).collect();
            }
        }
        let foreign = sqlx::query(
            "SELECT m.name, f.id, f.\"table\", f.\"from\", f.\"to\" \
             FROM sqlite_master m JOIN pragma_foreign_key_list(m.name) f \
             WHERE m.type = 'table' ORDER BY m.name, f.id, f.seq",
        )
        .fetch_all(&mut *conn)
        .await?;
        for row in foreign {
            let (table, id, parent, from, to): (String, i64, String, String, Option<String>) =
                (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
            let Some(info) = tables.get_mut(&table) else {
                continue;
            };
            let name = format!("{table}_fk{id}");
            match info.foreign_keys.iter_mut().find(|fk| fk.name == name) {
                Some(fk) => {
                    fk.columns.push(from);
                    fk.parent_columns.extend(to);
                }
                None => info.foreign_keys.push(ForeignKey {
                    name,
                    columns: vec![from],
                    parent,
                    parent_columns: to.into_iter().collect(),
                    deferrable: false,
                }),
            }
        }
        Ok(Catalog { tables })
    }

    async fn execute_script(conn: &mut SqliteConnection, sql: &str) -> sqlx::Result<()> {
        sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
            .execute(conn)
            .await
            .map(drop)
    }

    async fn insert_rows(
        conn: &mut SqliteConnection,
        table: &str,
        info: &TableInfo,
        columns: &[String],
        rows: &[Vec<Value>],
    ) -> sqlx::Result<()> {
        let kinds: Vec<Affinity> = columns
            .iter()
            .map(|column| {
                info.columns
                    .iter()
                    .zip(&info.column_types)
                    .find(|(name, _)| *name == column)
                    .map_or(Affinity::Text, |(_, kind)| Affinity::of(kind))
            })
            .collect();
        let per_statement = MAX_ROWS.min(MAX_VALUES / columns.len()).max(1);
        let head = format!(
            "INSERT INTO {} ({}) VALUES ",
            ident(table),
            columns
                .iter()
                .map(|c| ident(c))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let tuple = format!("({})", vec!["?"; columns.len()].join(", "));
        // Full chunks share one prepared statement; the last may be shorter.
        let mut statements: BTreeMap<usize, String> = BTreeMap::new();
        for chunk in rows.chunks(per_statement) {
            let sql = statements
                .entry(chunk.len())
                .or_insert_with(|| {
                    format!("{head}{}", vec![tuple.as_str(); chunk.len()].join(", "))
                })
                .clone();
            // Arguments added in place: `Query::bind` moves the whole query for every value.
            let mut args = SqliteArguments::default();
            for row in chunk {
                for (value, kind) in row.iter().zip(&kinds) {
                    let added = match (value, kind) {
                        (Value::Text(text), Affinity::Boolean) => match boolean_text(text) {
                            Some(flag) => args.add(flag),
                            None => args.add(Arc::clone(text)),
                        },
                        (Value::Text(text), Affinity::Number) => match infinity(text) {
                            Some(float) => args.add(float),
                            None => args.add(Arc::clone(text)),
                        },
                        (Value::Text(text), Affinity::Blob) => match hex_bytes(text) {
                            Some(bytes) => args.add(bytes),
                            None => args.add(Arc::clone(text)),
                        },
                        (Value::Null, _) => args.add(None::<String>),
                        (Value::Bool(value), _) => args.add(*value),
                        (Value::Int(value), _) => args.add(*value),
                        (Value::Float(value), _) => args.add(*value),
                        (Value::Text(text) | Value::Json(text), _) => args.add(Arc::clone(text)),
                        _ => args.add(None::<String>),
                    };
                    added.map_err(sqlx::Error::Encode)?;
                }
            }
            sqlx::query_with(AssertSqlSafe(sql), args)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    async fn defer_foreign_keys(
        conn: &mut SqliteConnection,
        keys: &[(String, ForeignKey)],
    ) -> sqlx::Result<String> {
        if keys.is_empty() {
            return Ok(String::new());
        }
        // Already on (the caller's): left on. Turning it off would also forget the violations the
        // caller's transaction has pending (SQLite zeroes their count), and its commit would pass.
        let on: i64 = sqlx::query_scalar("PRAGMA defer_foreign_keys")
            .fetch_one(&mut *conn)
            .await?;
        if on != 0 {
            return Ok(String::new());
        }
        // Until the end of the transaction (the load's, or the one it is a savepoint of), or the
        // statement returned.
        conn.execute("PRAGMA defer_foreign_keys = ON").await?;
        Ok("PRAGMA defer_foreign_keys = OFF".into())
    }

    async fn check_foreign_keys(
        conn: &mut SqliteConnection,
        keys: &[(String, ForeignKey)],
    ) -> sqlx::Result<Option<ErrorSite>> {
        if keys.is_empty() {
            return Ok(None);
        }
        let mut violation = None;
        // SQLite counts what its transaction leaves unresolved: the tables are searched only when
        // something is.
        if crate::isolation::unresolved_keys(conn).await? > 0 {
            let mut checked = std::collections::BTreeSet::new();
            for (table, _) in keys {
                if !checked.insert(table) {
                    continue;
                }
                let check = format!("PRAGMA foreign_key_check({})", ident(table));
                if let Some(row) = sqlx::query(AssertSqlSafe(check))
                    .fetch_optional(&mut *conn)
                    .await?
                {
                    let rowid: Option<i64> = row.get(1);
                    let parent: String = row.get(2);
                    let key: i64 = row.get(3);
                    let mut site = ErrorSite::new(format!(
                        "FOREIGN KEY constraint failed: rowid {} references a missing row of {parent}",
                        rowid.map_or_else(|| "?".to_string(), |id| id.to_string())
                    ));
                    site.table = Some(table.clone());
                    // Which of the table's keys, by the name the catalog gives it.
                    site.constraint = Some(format!("{table}_fk{key}"));
                    violation = Some(site);
                    break;
                }
            }
        }
        Ok(violation)
    }

    async fn reset_sequences(conn: &mut SqliteConnection, tables: &[String]) -> sqlx::Result<()> {
        let has_sequences: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence')",
        )
        .fetch_one(&mut *conn)
        .await?;
        if !has_sequences {
            return Ok(());
        }
        for table in tables {
            // SQLite moves the counter for explicit ids too; this only makes sure.
            let statement = format!(
                "UPDATE sqlite_sequence SET seq = max(seq, (SELECT coalesce(max(rowid), 0) FROM {})) \
                 WHERE name = ?",
                ident(table)
            );
            sqlx::query(AssertSqlSafe(statement))
                .bind(table)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    /// Every row of `table`, each value as the storage class SQLite holds it in.
    async fn dump_rows(
        conn: &mut SqliteConnection,
        table: &str,
    ) -> sqlx::Result<(Vec<String>, Vec<Vec<Value>>)> {
        let columns: Vec<(String, i64)> =
            sqlx::query_as("SELECT name, pk FROM pragma_table_info(?) ORDER BY cid")
                .bind(table)
                .fetch_all(&mut *conn)
                .await?;
        if columns.is_empty() {
            // No such table: the caller asks SQLite what is wrong.
            return Ok((Vec::new(), Vec::new()));
        }
        let mut key: Vec<(i64, String)> = columns
            .iter()
            .filter(|(_, pk)| *pk > 0)
            .map(|(name, pk)| (*pk, ident(name)))
            .collect();
        key.sort();
        let order = if key.is_empty() {
            "rowid".to_string()
        } else {
            key.into_iter()
                .map(|(_, name)| name)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let select: Vec<String> = columns.iter().map(|(name, _)| ident(name)).collect();
        let statement = format!(
            "SELECT {} FROM {} ORDER BY {order}",
            select.join(", "),
            ident(table)
        );
        let rows = sqlx::query(AssertSqlSafe(statement))
            .fetch_all(&mut *conn)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut values = Vec::with_capacity(columns.len());
            for index in 0..columns.len() {
                let raw = row.try_get_raw(index)?;
                let class = if sqlx::ValueRef::is_null(&raw) {
                    "NULL".to_string()
                } else {
                    sqlx::TypeInfo::name(&*sqlx::ValueRef::type_info(&raw)).to_string()
                };
                values.push(match class.as_str() {
                    "NULL" => Value::Null,
                    "INTEGER" => Value::Int(row.try_get_unchecked(index)?),
                    "REAL" => Value::Float(row.try_get_unchecked(index)?),
                    "TEXT" => Value::Text(row.try_get_unchecked::<String, _>(index)?.into()),
                    // As `\x` and hex digits, which a BLOB column reads back as these bytes.
                    _ => {
                        let bytes: Vec<u8> = row.try_get_unchecked(index)?;
                        Value::Text(hex_text(&bytes).into())
                    }
                });
            }
            out.push(values);
        }
        Ok((columns.into_iter().map(|(name, _)| name).collect(), out))
    }

    fn error_site(err: &sqlx::Error) -> ErrorSite {
        let Some(db) = err.as_database_error() else {
            return ErrorSite::new(err.to_string());
        };
        let message = db.message().to_string();
        let mut site = ErrorSite::new(message.clone());
        // "UNIQUE constraint failed: users.name", "cannot store TEXT value in INTEGER column t.c".
        let named = message
            .rsplit_once(": ")
            .map(|(_, rest)| rest)
            .or_else(|| message.rsplit_once(" column ").map(|(_, rest)| rest));
        if let Some((table, column)) = named.and_then(|name| name.split_once('.')) {
            let column = column.split([',', ' ']).next().unwrap_or(column);
            site.table = Some(table.to_string());
            site.column = Some(column.to_string());
        }
        site
    }
}
