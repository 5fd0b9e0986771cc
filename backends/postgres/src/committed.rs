//! Committed isolation: which tables a test wrote, and putting them back.
//!
//! Schema `testdb_baseline` (built into the template) holds a copy of every table as the setup
//! left it, the values of their sequences, and the names of the tables written since the last
//! restore, which a statement trigger on each table records (statement triggers cost one insert
//! per statement, whatever the rows). Restoring is one call of `testdb_baseline.restore`.
//!
//! A user's table may have any name, so the copies are named by testdb (`copy_1`, `copy_2`, …;
//! `testdb_baseline.tables` says whose is whose), never like the user's tables, and cannot collide
//! with the schema's own tables (`written`, `tables`, `sequences`); the recording trigger on a
//! table takes another name than `testdb_written` if a user's trigger there has it. The catalog
//! reads only the user's schema: nothing in `testdb_baseline` is taken for a user's table, and no
//! user's table, whatever its name, is taken for testdb's.
//!
//! A restore touches only the rows that differ from the baseline, by primary key: missing rows
//! inserted (parents first), changed rows updated, extra rows deleted (children first). Emptying
//! and refilling whole tables leaves every row dead: `DELETE` then grows slower with each test
//! until a vacuum (120 ms for a 1,000-row table after a few hundred tests, against 9 ms for
//! `TRUNCATE` and about 2 ms row by row). Where that fails (no primary key, a unique value
//! moved between rows, …), the tables are truncated together and refilled.

use sqlx::Row;
use sqlx::postgres::PgConnection;

use testdb::backend::WriteTracking;

use crate::Postgres;
use crate::sql::{ident, literal};

const SETUP: &str = r#"
CREATE SCHEMA testdb_baseline;
-- No unique index: concurrent writers of one table must not wait for each other here.
CREATE TABLE testdb_baseline.written (name text NOT NULL);
CREATE TABLE testdb_baseline.tables (
    name text PRIMARY KEY, copy text NOT NULL, refill text NOT NULL, missing text, changed text,
    extra text
);
CREATE TABLE testdb_baseline.sequences (
    name text NOT NULL, sequence text NOT NULL, last_value bigint NOT NULL, is_called boolean NOT NULL
);
-- As its owner: a test that switches to a role without rights here still writes.
CREATE FUNCTION testdb_baseline.written() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO testdb_baseline.written
    SELECT TG_ARGV[0]
    WHERE NOT EXISTS (SELECT 1 FROM testdb_baseline.written w WHERE w.name = TG_ARGV[0]);
    RETURN NULL;
END $$;
CREATE FUNCTION testdb_baseline.restore(tables text[], sequences boolean)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    n int := coalesce(array_length(tables, 1), 0);
    i int;
    s testdb_baseline.tables;
BEGIN
    -- Tables come children first.
    BEGIN
        IF EXISTS (SELECT 1 FROM testdb_baseline.tables t
                   WHERE t.name = ANY (tables) AND t.missing IS NULL) THEN
            RAISE EXCEPTION 'a table without a primary key';
        END IF;
        FOR i IN REVERSE n .. 1 LOOP
            SELECT * INTO s FROM testdb_baseline.tables t WHERE t.name = tables[i];
            EXECUTE s.missing;
        END LOOP;
        FOR i IN REVERSE n .. 1 LOOP
            SELECT * INTO s FROM testdb_baseline.tables t WHERE t.name = tables[i];
            IF s.changed IS NOT NULL THEN
                EXECUTE s.changed;
            END IF;
        END LOOP;
        FOR i IN 1 .. n LOOP
            SELECT * INTO s FROM testdb_baseline.tables t WHERE t.name = tables[i];
            EXECUTE s.extra;
        END LOOP;
    EXCEPTION WHEN others THEN
        -- Whole tables instead (this block's changes are already undone).
        EXECUTE 'TRUNCATE ' || (SELECT string_agg(format('%I', x), ', ') FROM unnest(tables) x);
        FOR i IN REVERSE n .. 1 LOOP
            SELECT * INTO s FROM testdb_baseline.tables t WHERE t.name = tables[i];
            EXECUTE s.refill;
        END LOOP;
    END;
    -- Every sequence that moved, written table or not: a failed or rolled-back insert moves
    -- its sequence without leaving a trace in `written`.
    IF sequences THEN
        PERFORM setval(q.sequence::regclass, q.last_value, q.is_called)
        FROM testdb_baseline.sequences q
        WHERE pg_sequence_last_value(q.sequence::regclass)
              IS DISTINCT FROM CASE WHEN q.is_called THEN q.last_value END;
    END IF;
    -- Only the restored tables: what a user's trigger wrote elsewhere meanwhile stays recorded.
    DELETE FROM testdb_baseline.written WHERE name = ANY (tables);
END $$;
"#;

/// The statements that put one table back.
struct Statements {
    /// Every baseline row, into the emptied table.
    refill: String,
    /// The baseline rows the table lacks (by primary key; none without one).
    missing: Option<String>,
    /// The rows whose other columns differ from the baseline's, set back.
    changed: Option<String>,
    /// The rows the baseline lacks, deleted.
    extra: Option<String>,
}

impl Statements {
    /// For `table`, whose baseline is in `copy` (qualified and quoted).
    fn new(table: &str, copy: &str, columns: &[String], key: &[String]) -> Self {
        let t = ident(table);
        let list = |prefix: &str, names: &[String]| {
            names
                .iter()
                .map(|name| format!("{prefix}{}", ident(name)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let all = list("", columns);
        let refill =
            format!("INSERT INTO {t} ({all}) OVERRIDING SYSTEM VALUE SELECT {all} FROM {copy}");
        if key.is_empty() {
            return Statements {
                refill,
                missing: None,
                changed: None,
                extra: None,
            };
        }
        let same_key = |left: &str, right: &str| {
            key.iter()
                .map(|column| format!("{left}.{c} = {right}.{c}", c = ident(column)))
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        let missing = format!(
            "INSERT INTO {t} ({all}) OVERRIDING SYSTEM VALUE SELECT {b_all} \
             FROM {copy} AS b \
             WHERE NOT EXISTS (SELECT 1 FROM {t} AS x WHERE {join})",
            b_all = list("b.", columns),
            join = same_key("x", "b"),
        );
        let others: Vec<String> = columns
            .iter()
            .filter(|column| !key.contains(column))
            .cloned()
            .collect();
        // Compared as text: every type has a text form, not every type has equality.
        let changed = (!others.is_empty()).then(|| {
            format!(
                "UPDATE {t} AS x SET ({set}) = ROW({values}) FROM {copy} AS b \
                 WHERE {join} AND ROW({x_others})::text IS DISTINCT FROM ROW({values})::text",
                set = list("", &others),
                values = list("b.", &others),
                x_others = list("x.", &others),
                join = same_key("x", "b"),
            )
        });
        let extra = format!(
            "DELETE FROM {t} AS x \
             WHERE NOT EXISTS (SELECT 1 FROM {copy} AS b WHERE {join})",
            join = same_key("b", "x"),
        );
        Statements {
            refill,
            missing: Some(missing),
            changed,
            extra: Some(extra),
        }
    }
}

impl WriteTracking for Postgres {
    async fn track_writes(conn: &mut PgConnection, tables: &[String]) -> sqlx::Result<()> {
        sqlx::raw_sql(SETUP).execute(&mut *conn).await?;
        // Generated columns cannot be inserted into; identity columns need OVERRIDING SYSTEM VALUE.
        let columns = sqlx::query(
            "SELECT c.relname::text, \
                    array_agg(a.attname::text ORDER BY a.attnum), \
                    array_agg(a.attname::text ORDER BY a.attnum) FILTER (WHERE EXISTS ( \
                        SELECT 1 FROM pg_index i \
                        WHERE i.indrelid = c.oid AND i.indisprimary AND a.attnum = ANY (i.indkey))) \
             FROM pg_class c \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = ANY ($1) \
               AND a.attgenerated = '' \
             GROUP BY c.relname",
        )
        .bind(tables)
        .fetch_all(&mut *conn)
        .await?;
        // The triggers the user's tables already have: the recording trigger takes another name
        // than a user's.
        let triggers: Vec<(String, Vec<String>)> = sqlx::query_as(
            "SELECT c.relname::text, array_agg(t.tgname::text) FROM pg_trigger t \
             JOIN pg_class c ON c.oid = t.tgrelid \
             WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = ANY ($1) \
             GROUP BY c.relname",
        )
        .bind(tables)
        .fetch_all(&mut *conn)
        .await?;
        let mut script = String::new();
        for (index, row) in columns.iter().enumerate() {
            let (table, columns, key): (String, Vec<String>, Option<Vec<String>>) =
                (row.get(0), row.get(1), row.get(2));
            let copy = format!("copy_{}", index + 1);
            let statements = Statements::new(
                &table,
                &format!("testdb_baseline.{}", ident(&copy)),
                &columns,
                key.as_deref().unwrap_or_default(),
            );
            let taken = triggers
                .iter()
                .find(|(name, _)| *name == table)
                .map_or(&[][..], |(_, names)| names.as_slice());
            let mut trigger = "testdb_written".to_string();
            let mut n = 1;
            while taken.contains(&trigger) {
                n += 1;
                trigger = format!("testdb_written_{n}");
            }
            let optional =
                |statement: Option<String>| statement.map_or("NULL".into(), |s| literal(&s));
            script.push_str(&format!(
                "CREATE TABLE testdb_baseline.{c} AS TABLE {t};\n\
                 INSERT INTO testdb_baseline.tables VALUES ({name}, {copy}, {refill}, {missing}, \
                 {changed}, {extra});\n\
                 CREATE TRIGGER {trigger} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {t} \
                 FOR EACH STATEMENT EXECUTE FUNCTION testdb_baseline.written({name});\n",
                c = ident(&copy),
                t = ident(&table),
                name = literal(&table),
                copy = literal(&copy),
                trigger = ident(&trigger),
                refill = literal(&statements.refill),
                missing = optional(statements.missing),
                changed = optional(statements.changed),
                extra = optional(statements.extra),
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

    async fn written_tables(conn: &mut PgConnection) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar("SELECT DISTINCT name FROM testdb_baseline.written ORDER BY name")
            .fetch_all(&mut *conn)
            .await
    }

    async fn restore(
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
}
