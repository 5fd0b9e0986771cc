//! The reference suite on PostgreSQL as the `#[sqlx::test]` file (`sqlx_pg.rs`) with only the
//! attribute's path changed to `testdb_postgres::test`: 100 tests, each on its own copy of one template
//! of the migrations and the SQL fixture.

use sqlx::PgPool;

macro_rules! one_test {
    ($name:ident) => {
        #[testdb_postgres::test(
            migrations = "./migrations",
            fixtures(path = "../generated", scripts("reference"))
        )]
        async fn $name(pool: PgPool) -> sqlx::Result<()> {
            let mut conn = pool.acquire().await?;
            reference::pg_test(&mut conn).await
        }
    };
}

reference::hundred!(one_test);
