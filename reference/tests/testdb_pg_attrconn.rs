//! The reference suite with `#[testdb_postgres::test]`, each test taking `&mut PgConnection`: a savepoint in
//! one suite transaction, on the template the migrations and the SQL fixture were set up into.

use sqlx::PgConnection;

macro_rules! one_test {
    ($name:ident) => {
        #[testdb_postgres::test(
            migrations = "./migrations",
            fixtures(path = "../generated", scripts("reference"))
        )]
        async fn $name(conn: &mut PgConnection) -> sqlx::Result<()> {
            reference::pg_test(conn).await
        }
    };
}

reference::hundred!(one_test);
