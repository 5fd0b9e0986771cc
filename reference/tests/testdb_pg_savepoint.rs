//! The reference suite with testdb on PostgreSQL, `Isolation::Savepoint`: one `static` suite, 100
//! tests that each insert two rows and update one.

use sqlx::PgConnection;
use testdb::{Isolation, Suite};
use testdb_postgres::Postgres;

static SUITE: Suite<Postgres> = Suite::new("reference", || {
    Ok(reference::setup(
        Postgres::from_env()?,
        Isolation::Savepoint,
    ))
});

macro_rules! one_test {
    ($name:ident) => {
        #[tokio::test]
        async fn $name() -> testdb::Result<()> {
            SUITE
                .run(async |conn: &mut PgConnection, ()| reference::pg_test(conn).await)
                .await
        }
    };
}

reference::hundred!(one_test);
