#[testdb_sqlite::test(migrations = false, isolation = "serializable")]
async fn an_unknown_isolation(conn: &mut sqlx::SqliteConnection) {
    let _ = conn;
}

fn main() {}
