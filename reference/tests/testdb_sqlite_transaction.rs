//! The reference suite with testdb on SQLite, `Isolation::Transaction`: one `static` suite, 100
//! tests that each insert two rows and update one.

use sqlx::SqliteConnection;
use testdb::{Isolation, Suite};
use testdb_sqlite::Sqlite;

static SUITE: Suite<Sqlite> = Suite::new("reference", || {
    Ok(reference::setup(Sqlite::new(), Isolation::Transaction))
});

macro_rules! one_test {
    ($name:ident) => {
        #[tokio::test]
        async fn $name() -> testdb::Result<()> {
            SUITE
                .run(async |conn: &mut SqliteConnection, ()| reference::sqlite_test(conn).await)
                .await
        }
    };
}

reference::hundred!(one_test);
