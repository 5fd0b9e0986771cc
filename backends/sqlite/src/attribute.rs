//! How `#[testdb_sqlite::test]` finds SQLite: from a `SqlitePool`, `SqliteConnection`, …
//! argument.

use testdb::Result;

use crate::Sqlite;

impl testdb::backend::Engine<Sqlite> for sqlx::Sqlite {
    fn backend() -> Result<Sqlite> {
        Ok(Sqlite::new())
    }
}
