#[testdb_sqlite::test(migrations = false)]
async fn returns_a_number(pool: sqlx::SqlitePool) -> i32 {
    let _ = pool;
    1
}

fn main() {}
