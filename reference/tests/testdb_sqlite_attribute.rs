//! The reference suite on SQLite as the `#[sqlx::test]` file (`sqlx_sqlite.rs`) with only the
//! attribute's path changed to `testdb_sqlite::test`: 100 tests, each on its own copy of one template
//! of the migrations and the SQL fixture.

use sqlx::SqlitePool;

macro_rules! one_test {
    ($name:ident) => {
        #[testdb_sqlite::test(
            migrations = "./migrations",
            fixtures(path = "../generated", scripts("reference"))
        )]
        async fn $name(pool: SqlitePool) -> sqlx::Result<()> {
            let mut conn = pool.acquire().await?;
            reference::sqlite_test(&mut conn).await
        }
    };
}

reference::hundred!(one_test);
