//! A test file written for `#[sqlx::test]`, with `sqlx::test` replaced by `testdb::test` and
//! nothing else changed. Each test that takes a pool gets a database of its own, a copy of one
//! template migrated and filled once per run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Sqlite, SqlitePool};

#[testdb::test(migrations = "tests/drop_in_sqlite/migrations", fixtures("users"))]
async fn the_fixture_is_loaded(pool: SqlitePool) -> sqlx::Result<()> {
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM users ORDER BY id")
        .fetch_all(&pool)
        .await?;
    assert_eq!(names, ["ada", "grace"]);
    Ok(())
}

#[testdb::test(migrations = "tests/drop_in_sqlite/migrations", fixtures("users"))]
async fn what_a_test_commits_every_connection_sees(pool: SqlitePool) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO users (name) VALUES ('linus')")
        .execute(&pool)
        .await?;
    let mut other = pool.acquire().await?;
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&mut *other)
        .await?;
    assert_eq!(users, 3);
    Ok(())
}

#[testdb::test(migrations = "tests/drop_in_sqlite/migrations", fixtures("users"))]
async fn each_test_starts_from_the_fixtures(pool: SqlitePool) -> sqlx::Result<()> {
    // Whichever test ran before, its writes are not here.
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&pool)
        .await?;
    assert_eq!(users, 2);
    sqlx::query("DELETE FROM users").execute(&pool).await?;
    Ok(())
}

#[testdb::test(
    migrations = "tests/drop_in_sqlite/migrations",
    fixtures(path = "fixtures", scripts("users", "posts"))
)]
async fn scripts_from_a_path(mut conn: PoolConnection<Sqlite>) -> sqlx::Result<()> {
    let author: String =
        sqlx::query_scalar("SELECT users.name FROM posts JOIN users ON users.id = posts.user_id")
            .fetch_one(&mut *conn)
            .await?;
    assert_eq!(author, "ada");
    // The fixtures gave explicit ids; the next row still gets a free one.
    sqlx::query("INSERT INTO users (name) VALUES ('linus')")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[testdb::test(
    migrations = "tests/drop_in_sqlite/migrations",
    fixtures("fixtures/users.sql", "fixtures/posts.sql")
)]
async fn fixtures_by_path(pool: SqlitePool) -> sqlx::Result<()> {
    let posts: i64 = sqlx::query_scalar("SELECT count(*) FROM posts")
        .fetch_one(&pool)
        .await?;
    assert_eq!(posts, 1);
    Ok(())
}

#[testdb::test(migrations = "tests/drop_in_sqlite/migrations")]
async fn options_for_a_pool_of_ones_own(
    pool_options: SqlitePoolOptions,
    connect_options: SqliteConnectOptions,
) -> sqlx::Result<()> {
    let pool = pool_options.connect_with(connect_options).await?;
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&pool)
        .await?;
    assert_eq!(users, 0, "migrated, no fixtures");
    Ok(())
}

#[testdb::test(migrations = false)]
async fn without_migrations(pool: SqlitePool) -> sqlx::Result<()> {
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table'")
        .fetch_one(&pool)
        .await?;
    assert_eq!(tables, 0);
    Ok(())
}

#[testdb::test(migrations = "tests/drop_in_sqlite/migrations")]
async fn returning_nothing(pool: SqlitePool) {
    sqlx::query("INSERT INTO users (name) VALUES ('ada')")
        .execute(&pool)
        .await
        .unwrap();
}

#[testdb::test(migrations = "tests/drop_in_sqlite/migrations", fixtures("users"))]
#[should_panic(expected = "UNIQUE constraint failed")]
async fn a_panicking_test_fails(pool: SqlitePool) {
    sqlx::query("INSERT INTO users (name) VALUES ('ada')")
        .execute(&pool)
        .await
        .unwrap();
}

#[testdb::test(migrations = "tests/drop_in_sqlite/migrations")]
#[ignore = "ignored tests stay ignored"]
async fn an_ignored_test(_pool: SqlitePool) {
    panic!("an ignored test does not run");
}

#[testdb::test]
async fn a_test_without_arguments() {
    tokio::task::yield_now().await;
}
