#[testdb_sqlite::test(migrations = false)]
async fn takes_a_string(name: String) {
    let _ = name;
}

fn main() {}
