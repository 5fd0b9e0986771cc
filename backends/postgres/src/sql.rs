//! The statements that cannot take parameters (`CREATE DATABASE`, `COMMENT ON`, …), with every
//! identifier and literal quoted.

use sqlx::AssertSqlSafe;
pub(crate) use testdb::backend::{quote_identifier as ident, quote_literal as literal};

pub(crate) fn create_database(name: &str, template: Option<&str>) -> AssertSqlSafe<String> {
    match template {
        Some(template) => AssertSqlSafe(format!(
            "CREATE DATABASE {} TEMPLATE {}",
            ident(name),
            ident(template)
        )),
        None => AssertSqlSafe(format!("CREATE DATABASE {}", ident(name))),
    }
}

pub(crate) fn drop_database(name: &str, force: bool) -> AssertSqlSafe<String> {
    let force = if force { " WITH (FORCE)" } else { "" };
    AssertSqlSafe(format!("DROP DATABASE IF EXISTS {}{force}", ident(name)))
}

pub(crate) fn disallow_connections(name: &str) -> AssertSqlSafe<String> {
    AssertSqlSafe(format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS false",
        ident(name)
    ))
}

pub(crate) fn comment_on_database(name: &str, comment: &str) -> AssertSqlSafe<String> {
    AssertSqlSafe(format!(
        "COMMENT ON DATABASE {} IS {}",
        ident(name),
        literal(comment)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_everything() {
        assert_eq!(ident(r#"a"b"#), r#""a""b""#);
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(
            comment_on_database("x\"y", "o'k").0,
            r#"COMMENT ON DATABASE "x""y" IS 'o''k'"#
        );
    }
}
