//! The reference suite with `#[testdb_sqlite::test]`, each test taking `&mut SqliteConnection`: a savepoint in
//! one suite transaction, on the template the migrations and the SQL fixture were set up into.

use sqlx::SqliteConnection;

macro_rules! one_test {
    ($name:ident) => {
        #[testdb_sqlite::test(
            migrations = "./migrations",
            fixtures(path = "../generated", scripts("reference"))
        )]
        async fn $name(conn: &mut SqliteConnection) -> sqlx::Result<()> {
            reference::sqlite_test(conn).await
        }
    };
}

reference::hundred!(one_test);
