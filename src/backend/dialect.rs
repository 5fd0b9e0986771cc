//! How a backend's SQL is written: every statement the core sends goes through its dialect, so a
//! new engine changes the words, not the core.

/// The SQL the core needs, as an engine writes it. The defaults are standard SQL, as SQLite and
/// PostgreSQL write it; an engine overrides what it writes otherwise (MySQL's backticks, say).
pub trait Dialect {
    /// `name` as a quoted identifier: `"name"`, with embedded quotes doubled.
    fn quote_identifier(name: &str) -> String {
        crate::quote::quote_identifier(name)
    }

    /// `text` as a quoted string literal: `'text'`, with embedded quotes doubled.
    fn quote_literal(text: &str) -> String {
        crate::quote::quote_literal(text)
    }

    /// Ends the open transaction, whatever the driver believes is open.
    fn rollback() -> &'static str {
        "ROLLBACK"
    }

    /// A statement that inserts one row of `table`'s defaults (a fixture row that names no
    /// column).
    fn insert_defaults(table: &str) -> String {
        format!(
            "INSERT INTO {} DEFAULT VALUES",
            Self::quote_identifier(table)
        )
    }

    /// A statement that reads no row of `table` but fails as reading it would (no such table, no
    /// permission), for the database to say what is wrong with the name.
    fn probe_table(table: &str) -> String {
        format!("SELECT * FROM {} LIMIT 0", Self::quote_identifier(table))
    }
}
