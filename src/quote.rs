/// `name` as a quoted SQL identifier: `"name"`, with embedded quotes doubled. The same in SQLite
/// and PostgreSQL, and what testdb uses for every identifier it writes into a statement.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as a quoted SQL string literal: `'text'`, with embedded quotes doubled. The same in
/// SQLite and PostgreSQL (with `standard_conforming_strings`, on since PostgreSQL 9.1), for the
/// statements that cannot take parameters.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
