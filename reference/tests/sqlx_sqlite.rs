//! The reference suite with `#[sqlx::test]` on SQLite: 100 tests, each on a new database
//! with the migrations and the SQL fixture (written by build.rs), each inserting two rows and
//! updating one.

use sqlx::SqlitePool;

macro_rules! one_test {
    ($name:ident) => {
        #[sqlx::test(
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
