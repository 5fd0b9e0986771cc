//! How `#[testdb_postgres::test]` finds PostgreSQL: from a `PgPool`, `PgConnection`, … argument.

use testdb::Result;

use crate::Postgres;

impl testdb::backend::Engine<Postgres> for sqlx::Postgres {
    fn backend() -> Result<Postgres> {
        Postgres::from_env()
    }
}
