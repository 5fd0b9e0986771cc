/// `name` as a quoted SQL identifier: `"name"`, with embedded quotes doubled. The same in SQLite
/// and PostgreSQL, and what testdb uses for every identifier it writes into a statement.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
