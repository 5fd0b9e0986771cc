//! MySQL's SQL: backticks, literals that mean the same under every `sql_mode`, and rows of
//! defaults written `() VALUES ()`.

use testdb::backend::Dialect;

use crate::MySql;

impl Dialect for MySql {
    fn quote_identifier(name: &str) -> String {
        ident(name)
    }

    fn quote_literal(text: &str) -> String {
        literal(text)
    }

    fn insert_defaults(table: &str) -> String {
        format!("INSERT INTO {} () VALUES ()", ident(table))
    }
}

/// `name` as a quoted identifier: `` `name` ``, with embedded backticks doubled.
pub(crate) fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `text` as a string literal that reads the same whether or not `NO_BACKSLASH_ESCAPES` is set:
/// quoted, with quotes doubled, unless it holds a backslash (which the two modes read
/// differently), then as hexadecimal bytes read as UTF-8.
pub(crate) fn literal(text: &str) -> String {
    if text.contains('\\') {
        let hex: String = text.bytes().map(|byte| format!("{byte:02X}")).collect();
        return format!("CONVERT(X'{hex}' USING utf8mb4)");
    }
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::{ident, literal};

    #[test]
    fn quotes_identifiers_and_literals() {
        assert_eq!(ident("a`b"), "`a``b`");
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal("a\\b"), "CONVERT(X'615C62' USING utf8mb4)");
    }
}
