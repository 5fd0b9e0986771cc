#[testdb_sqlite::test(migrations = false, isolation = "savepoint")]
async fn a_pool_in_a_savepoint(pool: sqlx::SqlitePool) {
    let _ = pool;
}

fn main() {}
