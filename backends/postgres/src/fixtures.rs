//! PostgreSQL's side of fixture loading: the catalog, `COPY … FROM STDIN`, deferring foreign keys
//! in cycles, and resetting sequences.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::value::RawValue;
use sqlx::postgres::{PgConnection, PgDatabaseError};
use sqlx::{AssertSqlSafe, Executor, Row};
use testdb::backend::{
    Catalog, ErrorSite, FixtureLoading, ForeignKey, LiftedKeys, TableInfo, Value,
};

use crate::Postgres;

use crate::nodelay;
use crate::sql::{ident, literal};

/// A table's name in fixtures: its own in the current schema, `schema.table` in another (and when
/// the name has a dot of its own, so that the first dot always ends the schema).
macro_rules! table_name {
    ($class:literal, $namespace:literal) => {
        concat!(
            "CASE WHEN ",
            $namespace,
            ".nspname = current_schema() AND strpos(",
            $class,
            ".relname, '.') = 0 THEN ",
            $class,
            ".relname::text ELSE ",
            $namespace,
            ".nspname || '.' || ",
            $class,
            ".relname END"
        )
    };
}

/// The schemas whose tables fixtures can fill: every one but the system's.
/// Not testdb's own (`testdb_baseline`, `committed.rs`), whose tables are no user's. A schema
/// whose name holds a dot is left out too: `schema.table` could not name its tables.
const USER_SCHEMAS: &str = "n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' \
                            AND n.nspname <> 'testdb_baseline' AND strpos(n.nspname, '.') = 0";

/// `table` (a fixture's name for it) quoted: `"schema"."table"` when it names its schema.
pub(crate) fn table_ident(table: &str) -> String {
    match table.split_once('.') {
        Some((schema, name)) => format!("{}.{}", ident(schema), ident(name)),
        None => ident(table),
    }
}

/// Up to this many bytes are sent per `CopyData` round.
const CHUNK: usize = 1 << 16;

/// A value in `COPY`'s text format: `\N` for NULL, backslash escapes for the rest.
fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("\\N"),
        // As words: `boolean`, text and `json` columns all read them as JSON's booleans.
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Int(int) => {
            let _ = write!(out, "{int}");
        }
        Value::Float(float) => {
            let _ = write!(out, "{float:?}");
        }
        Value::Text(text) | Value::Json(text) => {
            for ch in text.chars() {
                match ch {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    _ => out.push(ch),
                }
            }
        }
        _ => out.push_str("\\N"),
    }
}

/// A JSON array as PostgreSQL's array literal: `[1, [2, null], "a\"b"]` → `{1,{2,NULL},"a\"b"}`.
/// Numbers and booleans keep their text; strings and objects (for `jsonb[]`) are quoted.
fn array_literal(json: &str) -> Result<String, serde_json::Error> {
    let items: Vec<&RawValue> = serde_json::from_str(json)?;
    let mut out = String::from("{");
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        let text = item.get();
        match text.as_bytes().first() {
            Some(b'[') => out.push_str(&array_literal(text)?),
            Some(b'n') => out.push_str("NULL"),
            Some(b'"') => quoted(&mut out, &serde_json::from_str::<String>(text)?),
            Some(b'{') => quoted(&mut out, text),
            _ => out.push_str(text),
        }
    }
    out.push('}');
    Ok(out)
}

/// An array element in double quotes, its quotes and backslashes escaped.
fn quoted(out: &mut String, text: &str) {
    out.push('"');
    for ch in text.chars() {
        if ch == '"' || ch == '\\' {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('"');
}

/// `ALTER TABLE … ALTER CONSTRAINT … <mode>;` for each key declared not deferrable.
fn alter_deferrable(keys: &[(String, ForeignKey)], mode: &str) -> String {
    let mut script = String::new();
    for (table, fk) in keys.iter().filter(|(_, fk)| !fk.deferrable) {
        let _ = writeln!(
            script,
            "ALTER TABLE {} ALTER CONSTRAINT {} {mode};",
            table_ident(table),
            ident(&fk.name)
        );
    }
    script
}

fn is_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code.starts_with("23"))
}

fn names(keys: &[(String, ForeignKey)]) -> String {
    keys.iter()
        .map(|(_, fk)| ident(&fk.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A column's text as the JSON type that loads back to it exactly.
fn typed(kind: &str, text: String) -> Value {
    match kind {
        "int2" | "int4" | "int8" => text.parse().map_or(Value::Text(text.into()), Value::Int),
        // A boolean cast to text reads `true` or `false`.
        "bool" => Value::Bool(text == "true" || text == "t"),
        "json" | "jsonb" => Value::Json(text.into()),
        "float4" | "float8" => match text.parse::<f64>() {
            Ok(float) if float.is_finite() => Value::Float(float),
            _ => Value::Text(text.into()),
        },
        _ => Value::Text(text.into()),
    }
}

impl FixtureLoading for Postgres {
    async fn catalog(conn: &mut PgConnection) -> sqlx::Result<Catalog> {
        // Read before every load: the connection's COPYs are about to go out.
        nodelay::set(conn).await?;
        let mut tables: BTreeMap<String, TableInfo> = BTreeMap::new();
        let columns = sqlx::query(AssertSqlSafe(format!(
            "SELECT {}, a.attname::text, format_type(a.atttypid, a.atttypmod), \
               (SELECT {} FROM pg_inherits h JOIN pg_class p ON p.oid = h.inhparent \
                  JOIN pg_namespace pn ON pn.oid = p.relnamespace \
                WHERE h.inhrelid = c.oid AND c.relispartition) \
             FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             WHERE {USER_SCHEMAS} AND c.relkind IN ('r', 'p') \
             ORDER BY 1, a.attnum",
            table_name!("c", "n"),
            table_name!("p", "pn"),
        )))
        .fetch_all(&mut *conn)
        .await?;
        for row in columns {
            let table = tables.entry(row.get(0)).or_default();
            table.columns.push(row.get(1));
            table.column_types.push(row.get(2));
            table.partition_of = row.get(3);
        }
        let keys = sqlx::query(AssertSqlSafe(format!(
            "SELECT {}, a.attname::text FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY (i.indkey) \
             WHERE i.indisprimary AND {USER_SCHEMAS} \
             ORDER BY 1, array_position(i.indkey::int2[], a.attnum)",
            table_name!("c", "n"),
        )))
        .fetch_all(&mut *conn)
        .await?;
        for row in keys {
            if let Some(table) = tables.get_mut(&row.get::<String, _>(0)) {
                table.primary_key.push(row.get(1));
            }
        }
        let foreign = sqlx::query(AssertSqlSafe(format!(
            "SELECT con.conname::text, {}, {}, con.condeferrable, \
               ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(num, ord) \
                     JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num \
                     ORDER BY k.ord), \
               ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(num, ord) \
                     JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num \
                     ORDER BY k.ord) \
             FROM pg_constraint con \
             JOIN pg_class c ON c.oid = con.conrelid \
             JOIN pg_class p ON p.oid = con.confrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_namespace pn ON pn.oid = p.relnamespace \
             WHERE con.contype = 'f' AND {USER_SCHEMAS} \
             ORDER BY 2, con.conname",
            table_name!("c", "n"),
            table_name!("p", "pn"),
        )))
        .fetch_all(&mut *conn)
        .await?;
        for row in foreign {
            if let Some(table) = tables.get_mut(&row.get::<String, _>(1)) {
                table.foreign_keys.push(ForeignKey {
                    name: row.get(0),
                    parent: row.get(2),
                    deferrable: row.get(3),
                    columns: row.get(4),
                    parent_columns: row.get(5),
                });
            }
        }
        Ok(Catalog { tables })
    }

    async fn execute_script(conn: &mut PgConnection, sql: &str) -> sqlx::Result<()> {
        sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
            .execute(conn)
            .await
            .map(drop)
    }

    async fn insert_rows(
        conn: &mut PgConnection,
        table: &str,
        info: &TableInfo,
        columns: &[String],
        rows: &[Vec<Value>],
    ) -> sqlx::Result<()> {
        // A JSON array into an array column is written as PostgreSQL's array literal.
        let arrays: Vec<bool> = columns
            .iter()
            .map(|column| {
                info.columns
                    .iter()
                    .position(|known| known == column)
                    .and_then(|at| info.column_types.get(at))
                    .is_some_and(|kind| kind.ends_with("[]"))
            })
            .collect();
        let columns: Vec<String> = columns.iter().map(|column| ident(column)).collect();
        let statement = format!(
            "COPY {} ({}) FROM STDIN",
            table_ident(table),
            columns.join(", ")
        );
        let mut copy = conn.copy_in_raw(&statement).await?;
        let mut buffer = String::with_capacity(CHUNK + 1024);
        for row in rows {
            for (index, value) in row.iter().enumerate() {
                if index > 0 {
                    buffer.push('\t');
                }
                match value {
                    Value::Json(json)
                        if arrays.get(index) == Some(&true) && json.starts_with('[') =>
                    {
                        let literal = array_literal(json).map_err(|err| {
                            sqlx::Error::Protocol(format!(
                                "column {}: a JSON array for an array column: {err}",
                                columns.get(index).map_or("?", String::as_str)
                            ))
                        })?;
                        write_value(&mut buffer, &Value::Text(literal.into()));
                    }
                    _ => write_value(&mut buffer, value),
                }
            }
            buffer.push('\n');
            if buffer.len() >= CHUNK {
                if let Err(err) = copy.send(buffer.as_bytes()).await {
                    let _ = copy.abort("testdb: sending fixture rows failed").await;
                    return Err(err);
                }
                buffer.clear();
            }
        }
        if !buffer.is_empty()
            && let Err(err) = copy.send(buffer.as_bytes()).await
        {
            let _ = copy.abort("testdb: sending fixture rows failed").await;
            return Err(err);
        }
        copy.finish().await.map(drop)
    }

    async fn defer_foreign_keys(
        conn: &mut PgConnection,
        keys: &[(String, ForeignKey)],
    ) -> sqlx::Result<String> {
        if keys.is_empty() {
            return Ok(String::new());
        }
        // Transactional, like the load: undone with it on failure, reverted by the check.
        let mut script = alter_deferrable(keys, "DEFERRABLE");
        let _ = writeln!(script, "SET CONSTRAINTS {} DEFERRED;", names(keys));
        conn.execute(AssertSqlSafe(script)).await?;
        Ok(String::new())
    }

    async fn check_foreign_keys(
        conn: &mut PgConnection,
        keys: &[(String, ForeignKey)],
    ) -> sqlx::Result<Option<ErrorSite>> {
        if keys.is_empty() {
            return Ok(None);
        }
        let check = format!("SET CONSTRAINTS {} IMMEDIATE", names(keys));
        match conn.execute(AssertSqlSafe(check)).await {
            Ok(_) => {}
            Err(err) if is_violation(&err) => return Ok(Some(Self::error_site(&err))),
            Err(err) => return Err(err),
        }
        let restore = alter_deferrable(keys, "NOT DEFERRABLE");
        if !restore.is_empty() {
            conn.execute(AssertSqlSafe(restore)).await?;
        }
        Ok(None)
    }

    /// Drops the foreign keys of `tables` (those the session's user owns; not partitions, whose
    /// keys are their parent's; not a table with a key `NOT VALID`, which added back would check no
    /// rows), for [`restore_foreign_keys`](Self::restore_foreign_keys) to add back. PostgreSQL
    /// checks a key per row through a trigger (a query and a row lock on the parent each); added
    /// back, it checks all rows in one query. The drop locks the tables and their parents until the
    /// load commits, which is why the core lifts keys only in a load that is its own transaction.
    async fn lift_foreign_keys(
        conn: &mut PgConnection,
        tables: &[String],
    ) -> sqlx::Result<LiftedKeys> {
        let keys: Vec<(String, String, String)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {}, con.conname::text, pg_get_constraintdef(con.oid) \
             FROM pg_constraint con \
             JOIN pg_class c ON c.oid = con.conrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE con.contype = 'f' AND con.conparentid = 0 AND NOT c.relispartition \
               AND pg_has_role(c.relowner, 'USAGE') AND {USER_SCHEMAS} AND {} = ANY ($1) \
               AND NOT EXISTS (SELECT 1 FROM pg_trigger t \
                               WHERE t.tgrelid = c.oid AND NOT t.tgisinternal AND t.tgdeferrable) \
               AND NOT EXISTS (SELECT 1 FROM pg_constraint v \
                               WHERE v.conrelid = c.oid AND v.contype = 'f' AND NOT v.convalidated) \
             ORDER BY 1, 2",
            table_name!("c", "n"),
            table_name!("c", "n"),
        )))
        .bind(tables)
        .fetch_all(&mut *conn)
        .await?;
        if keys.is_empty() {
            return Ok(LiftedKeys::default());
        }
        let mut lifted: Vec<String> = Vec::new();
        let (mut drop, mut restore) = (String::new(), String::new());
        for (table, name, definition) in &keys {
            if lifted.last() != Some(table) {
                lifted.push(table.clone());
            }
            let _ = writeln!(
                drop,
                "ALTER TABLE {} DROP CONSTRAINT {};",
                table_ident(table),
                ident(name)
            );
            let _ = writeln!(
                restore,
                "ALTER TABLE {} ADD CONSTRAINT {} {definition};",
                table_ident(table),
                ident(name)
            );
        }
        conn.execute(AssertSqlSafe(drop)).await?;
        Ok(LiftedKeys::new(lifted, restore))
    }

    /// Adds back the keys [`lift_foreign_keys`](Self::lift_foreign_keys) dropped, each checked
    /// against every row at once; the first violation.
    async fn restore_foreign_keys(
        conn: &mut PgConnection,
        restore: &str,
    ) -> sqlx::Result<Option<ErrorSite>> {
        match conn.execute(AssertSqlSafe(restore.to_string())).await {
            Ok(_) => Ok(None),
            Err(err) if is_violation(&err) => Ok(Some(Self::error_site(&err))),
            Err(err) => Err(err),
        }
    }

    async fn reset_sequences(conn: &mut PgConnection, tables: &[String]) -> sqlx::Result<()> {
        if tables.is_empty() {
            return Ok(());
        }
        let owned = sqlx::query(AssertSqlSafe(format!(
            "SELECT {name}, a.attname::text, \
               pg_get_serial_sequence(quote_ident(n.nspname) || '.' || quote_ident(c.relname), \
                                      a.attname)::text \
             FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             WHERE {USER_SCHEMAS} AND {name} = ANY ($1) \
               AND pg_get_serial_sequence(quote_ident(n.nspname) || '.' || quote_ident(c.relname), \
                                          a.attname) IS NOT NULL",
            name = table_name!("c", "n"),
        )))
        .bind(tables)
        .fetch_all(&mut *conn)
        .await?;
        if owned.is_empty() {
            return Ok(());
        }
        // One round trip for all: each sequence to the column's maximum (or back to its start when
        // the table is empty).
        let resets: Vec<String> = owned
            .iter()
            .map(|row| {
                let (table, column, sequence): (String, String, String) =
                    (row.get(0), row.get(1), row.get(2));
                format!(
                    "(SELECT setval({seq}::regclass, COALESCE(m, 1), m IS NOT NULL) \
                     FROM (SELECT max({col})::bigint AS m FROM {tab}) AS top)",
                    seq = literal(&sequence),
                    col = ident(&column),
                    tab = table_ident(&table),
                )
            })
            .collect();
        let statement = format!("SELECT {}", resets.join(", "));
        conn.execute(AssertSqlSafe(statement)).await.map(drop)
    }

    /// Every row of `table`, read as text (exact for every type) and turned back into numbers,
    /// booleans and JSON where the column's type says so.
    async fn dump_rows(
        conn: &mut PgConnection,
        table: &str,
    ) -> sqlx::Result<(Vec<String>, Vec<Vec<Value>>)> {
        let columns: Vec<(String, String, bool)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT a.attname::text, t.typname::text, c.relkind = 'p' FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_type t ON t.oid = a.atttypid \
             WHERE {USER_SCHEMAS} AND {} = $1 \
               AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
             ORDER BY a.attnum",
            table_name!("c", "n"),
        )))
        .bind(table)
        .fetch_all(&mut *conn)
        .await?;
        // Generated columns are left out: a load could not write them, and recomputes them.
        if columns.is_empty() {
            // No such table (or none with columns): the caller asks the server what is wrong.
            return Ok((Vec::new(), Vec::new()));
        }
        let key: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT a.attname::text FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY (i.indkey) \
             WHERE i.indisprimary AND {USER_SCHEMAS} AND {} = $1 \
             ORDER BY array_position(i.indkey::int2[], a.attnum)",
            table_name!("c", "n"),
        )))
        .bind(table)
        .fetch_all(&mut *conn)
        .await?;
        let select: Vec<String> = columns
            .iter()
            .map(|(name, _, _)| format!("{}::text", ident(name)))
            .collect();
        // A table's own rows, not those of the tables that inherit from it (dumped as theirs); a
        // partitioned table has none of its own, only its partitions' (which a dump of every table
        // leaves out).
        let only = if columns.iter().any(|(_, _, partitioned)| *partitioned) {
            ""
        } else {
            "ONLY "
        };
        let order = if key.is_empty() {
            (1..=columns.len())
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
        } else {
            key.iter().map(|column| ident(column)).collect()
        };
        let statement = format!(
            "SELECT {} FROM {only}{} ORDER BY {}",
            select.join(", "),
            table_ident(table),
            order.join(", ")
        );
        let rows = sqlx::query(AssertSqlSafe(statement))
            .fetch_all(&mut *conn)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut values = Vec::with_capacity(columns.len());
            for (index, (_, kind, _)) in columns.iter().enumerate() {
                let text: Option<String> = row.try_get(index)?;
                values.push(match text {
                    None => Value::Null,
                    Some(text) => typed(kind, text),
                });
            }
            out.push(values);
        }
        Ok((columns.into_iter().map(|(name, _, _)| name).collect(), out))
    }

    fn error_site(err: &sqlx::Error) -> ErrorSite {
        let Some(db) = err.as_database_error() else {
            return ErrorSite::new(err.to_string());
        };
        let Some(pg) = db.try_downcast_ref::<PgDatabaseError>() else {
            return ErrorSite::new(db.message());
        };
        let mut site = ErrorSite::new(match pg.detail() {
            Some(detail) => format!("{} ({detail})", pg.message()),
            None => pg.message().to_string(),
        });
        // COPY's context: "COPY users, line 3, column email: \"…\"".
        if let Some(context) = pg.r#where() {
            site.line = context
                .split(", line ")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|digits| digits.parse().ok());
            site.column = context
                .split(", column ")
                .nth(1)
                .and_then(|rest| rest.split(':').next())
                .map(str::to_string);
        }
        site.table = pg.table().map(str::to_string);
        site.column = site.column.or_else(|| pg.column().map(str::to_string));
        site.constraint = pg.constraint().map(str::to_string);
        site
    }
}
