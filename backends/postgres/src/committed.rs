//! Committed isolation: which tables a test wrote, and putting them back.
//!
//! Schema `testdb_baseline` (built into the template) holds a copy of every table as the setup
//! left it, the values of their sequences, and the names of the tables written since the last
//! restore, which a statement trigger on each table records (statement triggers cost one insert
//! per statement, whatever the rows). Restoring is one call of `testdb_baseline.restore`.

use sqlx::Row;
use sqlx::postgres::PgConnection;

use crate::sql::{ident, literal};

const SETUP: &str = r#"
CREATE SCHEMA testdb_baseline;
CREATE TABLE testdb_baseline.written (name text PRIMARY KEY);
CREATE TABLE testdb_baseline.tables (name text PRIMARY KEY, insert text NOT NULL);
CREATE TABLE testdb_baseline.sequences (
    name text NOT NULL, sequence text NOT NULL, last_value bigint NOT NULL, is_called boolean NOT NULL
);
CREATE FUNCTION testdb_baseline.written() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO testdb_baseline.written VALUES (TG_ARGV[0]) ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE FUNCTION testdb_baseline.restore(tables text[], sequences boolean)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    i int;
    statement text;
BEGIN
    FOR i IN 1 .. coalesce(array_length(tables, 1), 0) LOOP
        EXECUTE format('DELETE FROM %I', tables[i]);
    END LOOP;
    FOR i IN REVERSE coalesce(array_length(tables, 1), 0) .. 1 LOOP
        SELECT t.insert INTO statement FROM testdb_baseline.tables t WHERE t.name = tables[i];
        IF statement IS NOT NULL THEN
            EXECUTE statement;
        END IF;
    END LOOP;
    IF sequences THEN
        PERFORM setval(s.sequence::regclass, s.last_value, s.is_called)
        FROM testdb_baseline.sequences s WHERE s.name = ANY (tables);
    END IF;
    -- Only the restored tables: what a user's trigger wrote elsewhere meanwhile stays recorded.
    DELETE FROM testdb_baseline.written WHERE name = ANY (tables);
END $$;
"#;

pub(crate) async fn track_writes(conn: &mut PgConnection, tables: &[String]) -> sqlx::Result<()> {
    sqlx::raw_sql(SETUP).execute(&mut *conn).await?;
    // Generated columns cannot be inserted into; identity columns need OVERRIDING SYSTEM VALUE.
    let columns = sqlx::query(
        "SELECT c.relname::text, \
                string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) \
         FROM pg_class c \
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
         WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = ANY ($1) \
           AND a.attgenerated = '' \
         GROUP BY c.relname",
    )
    .bind(tables)
    .fetch_all(&mut *conn)
    .await?;
    let mut script = String::new();
    for row in &columns {
        let (table, columns): (String, String) = (row.get(0), row.get(1));
        let insert = format!(
            "INSERT INTO {t} ({columns}) OVERRIDING SYSTEM VALUE \
             SELECT {columns} FROM testdb_baseline.{t}",
            t = ident(&table)
        );
        script.push_str(&format!(
            "CREATE TABLE testdb_baseline.{t} AS TABLE {t};\n\
             INSERT INTO testdb_baseline.tables VALUES ({name}, {insert});\n\
             CREATE TRIGGER testdb_written AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {t} \
             FOR EACH STATEMENT EXECUTE FUNCTION testdb_baseline.written({name});\n",
            t = ident(&table),
            name = literal(&table),
            insert = literal(&insert),
        ));
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(script))
        .execute(&mut *conn)
        .await?;
    // Each owned sequence (serial, identity), with its value now.
    let sequences = sqlx::query(
        "SELECT c.relname::text, s.oid::regclass::text FROM pg_class s \
         JOIN pg_depend d ON d.objid = s.oid AND d.classid = 'pg_class'::regclass \
              AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') \
         JOIN pg_class c ON c.oid = d.refobjid \
         WHERE s.relkind = 'S' AND c.relname = ANY ($1) \
           AND c.relnamespace = current_schema()::regnamespace",
    )
    .bind(tables)
    .fetch_all(&mut *conn)
    .await?;
    for row in &sequences {
        let (table, sequence): (String, String) = (row.get(0), row.get(1));
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO testdb_baseline.sequences \
             SELECT {}, {}, last_value, is_called FROM {sequence}",
            literal(&table),
            literal(&sequence),
        )))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub(crate) async fn written_tables(conn: &mut PgConnection) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT name FROM testdb_baseline.written ORDER BY name")
        .fetch_all(&mut *conn)
        .await
}

pub(crate) async fn restore(
    conn: &mut PgConnection,
    tables: &[String],
    sequences: bool,
) -> sqlx::Result<()> {
    sqlx::query("SELECT testdb_baseline.restore($1, $2)")
        .bind(tables)
        .bind(sequences)
        .execute(&mut *conn)
        .await
        .map(drop)
}
