//! How `#[testdb_mysql::test]` finds MySQL: from a `MySqlPool`, `MySqlConnection`, … argument.

use testdb::Result;

use crate::MySql;

impl testdb::backend::Engine<MySql> for sqlx::MySql {
    fn backend() -> Result<MySql> {
        MySql::from_env()
    }
}
