#[testdb_sqlite::test(migration = "migrations")]
async fn a_typo(pool: sqlx::SqlitePool) {
    let _ = pool;
}

fn main() {}
