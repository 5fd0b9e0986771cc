//! The reference data set of the benches: 10 tables of 1,000 rows, each table referencing the one
//! before it.

#![allow(dead_code, unreachable_pub)]

use std::fmt::Write as _;
use std::path::Path;

pub const TABLES: usize = 10;
pub const ROWS_PER_TABLE: usize = 1_000;
pub const ROWS: usize = TABLES * ROWS_PER_TABLE;

/// Ten tables; each after the first references the one before it.
pub fn schema(dir: &Path) {
    let mut sql = String::new();
    for t in 0..TABLES {
        let parent = if t == 0 {
            String::new()
        } else {
            format!(", parent_id INTEGER NOT NULL REFERENCES t{} (id)", t - 1)
        };
        let _ = writeln!(
            sql,
            "CREATE TABLE t{t} (id INTEGER PRIMARY KEY, name TEXT NOT NULL, amount REAL, \
             created DATE, flag BOOLEAN NOT NULL{parent});"
        );
    }
    std::fs::write(dir.join("0001_reference.sql"), sql).unwrap();
}

/// A reference row: (table, id, parent, name, amount, created, flag).
pub type Reference = (usize, i64, Option<i64>, String, f64, String, bool);

/// The reference rows.
pub fn rows() -> Vec<Reference> {
    let mut rows = Vec::with_capacity(ROWS);
    for t in 0..TABLES {
        for i in 0..ROWS_PER_TABLE {
            let id = i64::try_from(i).unwrap() + 1;
            let parent = (t > 0).then_some(id);
            let name = format!("row {i} of table {t}, with some text");
            let created = format!("2024-{:02}-{:02}", i % 12 + 1, i % 28 + 1);
            rows.push((t, id, parent, name, id as f64 * 1.25, created, i % 2 == 0));
        }
    }
    rows
}

pub fn fixture_file(dir: &Path) -> String {
    let mut document = serde_json::Map::new();
    for t in 0..TABLES {
        document.insert(format!("t{t}"), serde_json::Value::Array(Vec::new()));
    }
    for (t, id, parent, name, amount, created, flag) in rows() {
        let mut row = serde_json::json!({
            "id": id, "name": name, "amount": amount, "created": created, "flag": flag
        });
        if let Some(parent) = parent {
            row["parent_id"] = parent.into();
        }
        if let Some(serde_json::Value::Array(list)) = document.get_mut(&format!("t{t}")) {
            list.push(row);
        }
    }
    let file = dir.join("reference.json");
    std::fs::write(&file, serde_json::to_vec(&document).unwrap()).unwrap();
    file.display().to_string()
}

/// The deferred data set: 11 tables, 15,600 rows, every foreign key `DEFERRABLE INITIALLY
/// DEFERRED` (the shape of a Django schema), each table after the first referencing the one before.
pub const DEFERRED_TABLES: usize = 11;
pub const DEFERRED_ROWS: usize = 15_600;

/// The deferred schema.
pub fn deferred_schema(dir: &Path) {
    let mut sql = String::new();
    for t in 0..DEFERRED_TABLES {
        let parent = if t == 0 {
            String::new()
        } else {
            format!(
                ",\n    parent_id INTEGER NOT NULL REFERENCES d{} (id)\n        DEFERRABLE INITIALLY DEFERRED",
                t - 1
            )
        };
        let _ = writeln!(
            sql,
            "CREATE TABLE d{t} (id INTEGER PRIMARY KEY, name TEXT NOT NULL{parent});"
        );
    }
    std::fs::write(dir.join("0001_deferred.sql"), sql).unwrap();
}

/// `rows` deferred rows as one fixture file, spread over the tables, every row after the first
/// table pointing at an existing parent.
pub fn deferred_fixture_file(dir: &Path, rows: usize) -> String {
    let per_table = rows / DEFERRED_TABLES;
    let mut document = serde_json::Map::new();
    for t in 0..DEFERRED_TABLES {
        let count = if t == DEFERRED_TABLES - 1 {
            rows - per_table * (DEFERRED_TABLES - 1)
        } else {
            per_table
        };
        let rows: Vec<serde_json::Value> = (1..=count)
            .map(|id| {
                let mut row = serde_json::json!({ "id": id, "name": format!("row {id} of d{t}") });
                if t > 0 {
                    row["parent_id"] = (id % per_table + 1).into();
                }
                row
            })
            .collect();
        document.insert(format!("d{t}"), serde_json::Value::Array(rows));
    }
    let file = dir.join(format!("deferred-{rows}.json"));
    std::fs::write(&file, serde_json::to_vec(&document).unwrap()).unwrap();
    file.display().to_string()
}
