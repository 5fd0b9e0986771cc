//! MySQL's side of fixture loading: the catalog, multi-row inserts, foreign-key checks switched
//! off for cycles (and checked by query at the end), and dumps.

use std::collections::BTreeMap;

use sqlx::mysql::{MySqlArguments, MySqlConnection, MySqlDatabaseError};
use sqlx::{Arguments as _, AssertSqlSafe, Row};
use testdb::backend::{
    Catalog, ErrorSite, FixtureLoading, ForeignKey, TableInfo, Value, hex_bytes, hex_text,
};

use crate::MySql;
use crate::bookkeeping::is_marked;
use crate::dialect::ident;

/// The most placeholders one statement may hold.
const MAX_PARAMETERS: usize = 65_535;

/// `text`, as MySQL reads a `DATETIME`/`TIMESTAMP`: `T` as a space, and a `Z` (UTC) dropped.
fn datetime_text(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let iso = bytes.len() >= 19 && bytes[10] == b'T' && bytes[4] == b'-';
    if !iso && !text.ends_with('Z') {
        return None;
    }
    let mut out = text.replacen('T', " ", 1);
    if out.ends_with('Z') {
        out.pop();
    }
    Some(out)
}

/// A boolean written as text (`true`, `False`), as MySQL's `BOOL` (`TINYINT(1)`) takes it.
fn boolean_text(text: &str) -> Option<i64> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "t" => Some(1),
        "false" | "f" => Some(0),
        _ => None,
    }
}

fn add(
    args: &mut MySqlArguments,
    value: &Value,
    column_type: &str,
) -> Result<(), sqlx::error::BoxDynError> {
    let kind = column_type.to_ascii_lowercase();
    match value {
        Value::Null => args.add(None::<String>),
        Value::Bool(flag) => args.add(*flag),
        Value::Int(number) => args.add(*number),
        Value::Float(number) => args.add(*number),
        Value::Text(text) | Value::Json(text) => {
            if kind.starts_with("datetime") || kind.starts_with("timestamp") {
                if let Some(converted) = datetime_text(text) {
                    return args.add(converted);
                }
            } else if (kind == "tinyint(1)" || kind == "bit(1)")
                && let Some(flag) = boolean_text(text)
            {
                return args.add(flag);
            } else if is_binary(&kind)
                && let Some(bytes) = hex_bytes(text)
            {
                return args.add(bytes);
            }
            args.add(text.to_string())
        }
        other => Err(format!("a value testdb cannot bind: {other:?}").into()),
    }
}

/// Whether a column of type `kind` (lowercase) holds bytes, which fixtures spell `\x` and hex
/// digits.
fn is_binary(kind: &str) -> bool {
    kind.starts_with("binary") || kind.starts_with("varbinary") || kind.ends_with("blob")
}

/// `err` of the statement whose first row is row `offset` + 1 of the batch, with the row MySQL
/// names counted from the batch's start.
fn shifted(err: sqlx::Error, offset: usize) -> sqlx::Error {
    if offset == 0 {
        return err;
    }
    let site = MySql::error_site(&err);
    match site.line {
        Some(line) => {
            let message = site.message.replace(
                &format!("at row {line}"),
                &format!("at row {}", line + offset as u64),
            );
            sqlx::Error::Protocol(message)
        }
        None => err,
    }
}

impl FixtureLoading for MySql {
    // Each statement parses every row: a few hundred at a time, while the rest is read.
    const BULK_ROWS: usize = 1_000;

    async fn catalog(conn: &mut MySqlConnection) -> sqlx::Result<Catalog> {
        let mut tables: BTreeMap<String, TableInfo> = BTreeMap::new();
        // testdb's own tables are not the user's.
        let columns = sqlx::query(AssertSqlSafe(format!(
            "SELECT c.TABLE_NAME, c.COLUMN_NAME, c.COLUMN_TYPE FROM information_schema.COLUMNS c \
             JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = DATABASE() \
               AND t.TABLE_NAME = c.TABLE_NAME AND t.TABLE_TYPE = 'BASE TABLE' AND NOT {} \
             WHERE c.TABLE_SCHEMA = DATABASE() AND c.IS_GENERATED = 'NEVER' \
             ORDER BY c.TABLE_NAME, c.ORDINAL_POSITION",
            is_marked("t")
        )))
        .fetch_all(&mut *conn)
        .await?;
        for row in columns {
            let (table, column, kind): (String, String, String) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            let info = tables.entry(table).or_default();
            info.columns.push(column);
            info.column_types.push(kind);
        }
        let keys = sqlx::query(
            "SELECT k.TABLE_NAME, k.CONSTRAINT_NAME, k.COLUMN_NAME, k.REFERENCED_TABLE_NAME, \
                    k.REFERENCED_COLUMN_NAME \
             FROM information_schema.KEY_COLUMN_USAGE k \
             WHERE k.TABLE_SCHEMA = DATABASE() AND (k.CONSTRAINT_NAME = 'PRIMARY' \
               OR (k.REFERENCED_TABLE_NAME IS NOT NULL AND k.REFERENCED_TABLE_SCHEMA = DATABASE())) \
             ORDER BY k.TABLE_NAME, k.CONSTRAINT_NAME, k.ORDINAL_POSITION",
        )
        .fetch_all(&mut *conn)
        .await?;
        for row in keys {
            let table: String = row.try_get(0)?;
            let constraint: String = row.try_get(1)?;
            let column: String = row.try_get(2)?;
            let parent: Option<String> = row.try_get(3)?;
            let parent_column: Option<String> = row.try_get(4)?;
            let Some(info) = tables.get_mut(&table) else {
                continue;
            };
            match (parent, parent_column) {
                (Some(parent), Some(parent_column)) => match info.foreign_keys.last_mut() {
                    Some(key) if key.name == constraint => {
                        key.columns.push(column);
                        key.parent_columns.push(parent_column);
                    }
                    _ => info.foreign_keys.push(ForeignKey {
                        name: constraint,
                        columns: vec![column],
                        parent,
                        parent_columns: vec![parent_column],
                        deferrable: false,
                    }),
                },
                _ => info.primary_key.push(column),
            }
        }
        Ok(Catalog { tables })
    }

    async fn execute_script(conn: &mut MySqlConnection, sql: &str) -> sqlx::Result<()> {
        sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(&mut *conn)
            .await
            .map(drop)
    }

    async fn insert_rows(
        conn: &mut MySqlConnection,
        table: &str,
        info: &TableInfo,
        columns: &[String],
        rows: &[Vec<Value>],
    ) -> sqlx::Result<()> {
        let types: Vec<&str> = columns
            .iter()
            .map(|column| {
                info.columns
                    .iter()
                    .position(|c| c == column)
                    .and_then(|at| info.column_types.get(at))
                    .map_or("", String::as_str)
            })
            .collect();
        let names = columns
            .iter()
            .map(|column| ident(column))
            .collect::<Vec<_>>()
            .join(", ");
        let tuple = format!("({})", vec!["?"; columns.len()].join(", "));
        let per_statement = (MAX_PARAMETERS / columns.len().max(1)).max(1);
        for (chunk_index, chunk) in rows.chunks(per_statement).enumerate() {
            let mut sql = format!("INSERT INTO {} ({names}) VALUES ", ident(table));
            let mut args = MySqlArguments::default();
            for (n, row) in chunk.iter().enumerate() {
                if n > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&tuple);
                for (value, kind) in row.iter().zip(&types) {
                    add(&mut args, value, kind).map_err(sqlx::Error::Encode)?;
                }
            }
            sqlx::query_with(AssertSqlSafe(sql), args)
                .execute(&mut *conn)
                .await
                .map_err(|err| shifted(err, chunk_index * per_statement))?;
        }
        Ok(())
    }

    async fn defer_foreign_keys(
        conn: &mut MySqlConnection,
        keys: &[(String, ForeignKey)],
    ) -> sqlx::Result<String> {
        if keys.is_empty() {
            return Ok(String::new());
        }
        // MySQL defers nothing: the session stops checking keys, and the load's end checks the
        // cycle's keys by query.
        Self::execute_script(
            conn,
            // Saved once: deferring again (a failed load is located by loading again) must not
            // save the 0 it set itself.
            "SET @testdb_checks = COALESCE(@testdb_checks, @@foreign_key_checks), \
             foreign_key_checks = 0",
        )
        .await?;
        Ok("SET foreign_key_checks = COALESCE(@testdb_checks, 1), @testdb_checks = NULL".into())
    }

    async fn check_foreign_keys(
        conn: &mut MySqlConnection,
        keys: &[(String, ForeignKey)],
    ) -> sqlx::Result<Option<ErrorSite>> {
        for (table, key) in keys {
            let matches = key
                .columns
                .iter()
                .zip(&key.parent_columns)
                .map(|(column, parent)| format!("p.{} = c.{}", ident(parent), ident(column)))
                .collect::<Vec<_>>()
                .join(" AND ");
            let present = key
                .columns
                .iter()
                .map(|column| format!("c.{} IS NOT NULL", ident(column)))
                .collect::<Vec<_>>()
                .join(" AND ");
            let shown = key
                .columns
                .iter()
                .map(|column| format!("CAST(c.{} AS CHAR)", ident(column)))
                .collect::<Vec<_>>()
                .join(", ");
            let found: Option<String> = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT CONCAT_WS(', ', {shown}) FROM {} c WHERE {present} AND NOT EXISTS \
                 (SELECT 1 FROM {} p WHERE {matches}) LIMIT 1",
                ident(table),
                ident(&key.parent)
            )))
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(values) = found {
                let mut site = ErrorSite::new(format!(
                    "foreign key {} fails: ({}) = ({values}) references a missing row of {}",
                    key.name,
                    key.columns.join(", "),
                    key.parent
                ));
                site.table = Some(table.clone());
                site.column = key.columns.first().cloned();
                site.constraint = Some(key.name.clone());
                return Ok(Some(site));
            }
        }
        Ok(None)
    }

    // InnoDB moves a table's AUTO_INCREMENT past every id inserted, given or not: nothing to do
    // (and setting it would be DDL, which commits).
    async fn reset_sequences(_: &mut MySqlConnection, _: &[String]) -> sqlx::Result<()> {
        Ok(())
    }

    async fn dump_rows(
        conn: &mut MySqlConnection,
        table: &str,
    ) -> sqlx::Result<(Vec<String>, Vec<Vec<Value>>)> {
        let catalog = Self::catalog(conn).await?;
        let Some(info) = catalog.tables.get(table) else {
            return Ok((Vec::new(), Vec::new()));
        };
        // Bytes as they are; every other value as the server writes it as text.
        let binary: Vec<bool> = (0..info.columns.len())
            .map(|at| {
                info.column_types
                    .get(at)
                    .is_some_and(|kind| is_binary(&kind.to_ascii_lowercase()))
            })
            .collect();
        let selected = info
            .columns
            .iter()
            .zip(&binary)
            .map(|(column, binary)| {
                if *binary {
                    ident(column)
                } else {
                    format!("CAST({} AS CHAR)", ident(column))
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let order = if info.primary_key.is_empty() {
            String::new()
        } else {
            format!(
                " ORDER BY {}",
                info.primary_key
                    .iter()
                    .map(|column| ident(column))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {selected} FROM {}{order}",
            ident(table)
        )))
        .fetch_all(&mut *conn)
        .await?;
        let mut values = Vec::with_capacity(rows.len());
        for row in rows {
            let mut out = Vec::with_capacity(info.columns.len());
            for (index, binary) in binary.iter().enumerate() {
                let value = if *binary {
                    let bytes: Option<Vec<u8>> = row.try_get(index)?;
                    bytes.map(|bytes| hex_text(&bytes))
                } else {
                    row.try_get(index)?
                };
                out.push(value.map_or(Value::Null, |text| Value::Text(text.into())));
            }
            values.push(out);
        }
        Ok((info.columns.clone(), values))
    }

    fn error_site(err: &sqlx::Error) -> ErrorSite {
        let message = match err {
            sqlx::Error::Database(db) => db
                .try_downcast_ref::<MySqlDatabaseError>()
                .map_or_else(|| db.message().to_owned(), |my| my.message().to_owned()),
            other => other.to_string(),
        };
        let mut site = ErrorSite::new(message.clone());
        // "… for column 'name' at row 3", "Column 'name' cannot be null".
        if let Some(rest) = message.split(" at row ").nth(1) {
            site.line = rest
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok());
        }
        if let Some(column) =
            quoted_after(&message, "column '").or_else(|| quoted_after(&message, "Column '"))
        {
            site.column = Some(column);
        }
        // MariaDB's "Incorrect decimal value: 'x' for column `db`.`table`.`column` at row 1".
        if let Some(rest) = message.split("for column `").nth(1) {
            let path = rest.split(" at row").next().unwrap_or(rest);
            let names: Vec<&str> = path
                .split('`')
                .filter(|name| !name.is_empty() && *name != ".")
                .collect();
            if let [.., table, column] = names.as_slice() {
                site.table = Some((*table).to_owned());
                site.column = Some((*column).to_owned());
            } else if let [column] = names.as_slice() {
                site.column = Some((*column).to_owned());
            }
        }
        // "… a foreign key constraint fails (`db`.`table`, CONSTRAINT `name` …".
        if let Some(rest) = message.split("constraint fails (").nth(1) {
            let names: Vec<&str> = rest.split('`').collect();
            // `db`.`table`, CONSTRAINT `name`: names[1] = db, names[3] = table, names[5] = name.
            site.table = names.get(3).map(|s| (*s).to_owned());
            site.constraint = names.get(5).map(|s| (*s).to_owned());
        }
        site
    }
}

/// The text between `start` and the next `'` in `message`.
fn quoted_after(message: &str, start: &str) -> Option<String> {
    let rest = message.split(start).nth(1)?;
    Some(rest.split('\'').next()?.to_owned())
}
