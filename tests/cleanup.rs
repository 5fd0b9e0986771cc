//! What is left behind is removed: by drop, at process exit (for `static`s), and by a later run's
//! sweep after a process was killed. Never anything a live process uses or testdb did not create.

// Tests, examples and benches may panic and print; the library may not (see Cargo.toml).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

#[macro_use]
mod common;

use std::time::Duration;

use common::{Harness, Shared};
use testdb::TestDatabase;
use testdb_postgres::Postgres;
use testdb_sqlite::Sqlite;

on_both!(
    a_killed_owners_database_is_swept,
    a_static_is_removed_at_exit
);

async fn a_killed_owners_database_is_swept<H: Harness>(backend: H) {
    let (mut child, name) = common::spawn_child::<H>("child_holds_a_database");
    assert!(H::exists(&name).await, "the child created {name}");

    testdb::sweep(&backend).await.expect("sweep");
    assert!(
        H::exists(&name).await,
        "a live process's database is never swept"
    );

    child.kill().expect("kill the child");
    child.wait().expect("reap the child");
    assert!(
        H::exists(&name).await,
        "a killed process removes nothing by itself"
    );

    // The server ends a dead client's session (and frees its lock) a moment after the kill.
    let mut gone = false;
    for _ in 0..100 {
        testdb::sweep(&backend).await.expect("sweep");
        if !H::exists(&name).await {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        gone,
        "the next sweep removes {name}, left by a killed process"
    );
}

async fn a_static_is_removed_at_exit<H: Harness>(_: H) {
    let (mut child, name) = common::spawn_child::<H>("child_exits_with_a_static_database");
    let status = child.wait().expect("wait for the child");
    assert!(status.success(), "the child test passed: {status}");
    assert!(
        !H::exists(&name).await,
        "{name} was removed when its process exited"
    );
}

/// Helper, run as a child by `a_killed_owners_database_is_swept`: holds a database until killed.
#[tokio::test]
#[ignore = "run by other tests in a child process"]
async fn child_holds_a_database() {
    async fn hold<H: Harness>() {
        let Some(backend) = H::backend() else { return };
        let db = TestDatabase::create(backend).await.expect("create");
        println!("READY {}", db.name());
        tokio::time::sleep(Duration::from_secs(120)).await;
        drop(db);
    }
    match common::child_backend().as_str() {
        "sqlite" => hold::<Sqlite>().await,
        "postgres" => hold::<Postgres>().await,
        other => panic!("unknown backend {other:?}"),
    }
}

/// Helper, run as a child by `a_static_is_removed_at_exit`: uses a `static` database and returns.
#[test]
#[ignore = "run by other tests in a child process"]
fn child_exits_with_a_static_database() {
    fn touch<H: Shared>() {
        let Some(db) = H::shared() else { return };
        println!("READY {}", db.name());
    }
    match common::child_backend().as_str() {
        "sqlite" => touch::<Sqlite>(),
        "postgres" => touch::<Postgres>(),
        other => panic!("unknown backend {other:?}"),
    }
}

#[tokio::test]
async fn sqlite_sweep_spares_what_is_not_a_dead_owners() {
    let root = tempfile::tempdir().expect("temp dir");
    let backend = Sqlite::new().directory(root.path());
    let live = TestDatabase::create(backend.clone()).await.expect("create");

    let dead = root.path().join("testdb_dead");
    std::fs::create_dir(&dead).expect("mkdir");
    std::fs::write(dead.join("owner.lock"), "").expect("lock file");
    let unclaimed = root.path().join("testdb_being_created");
    std::fs::create_dir(&unclaimed).expect("mkdir");
    let foreign_dir = root.path().join("other");
    std::fs::create_dir(&foreign_dir).expect("mkdir");
    let foreign_file = root.path().join("testdb_notes.txt");
    std::fs::write(&foreign_file, "keep me").expect("write");

    let removed = testdb::sweep(&backend).await.expect("sweep");

    assert_eq!(removed, 1);
    assert!(
        !dead.exists(),
        "a directory whose owner's lock is free is removed"
    );
    assert!(
        std::path::Path::new(live.name()).exists(),
        "a live database stays"
    );
    assert!(unclaimed.exists(), "a directory still being created stays");
    assert!(
        foreign_dir.exists() && foreign_file.exists(),
        "what testdb did not create stays"
    );
}

#[tokio::test]
async fn postgres_sweep_spares_what_is_not_a_dead_owners() {
    let Some(backend) = common::postgres() else {
        return;
    };
    let mut admin = common::admin().await;
    let suffix = format!("{}_{}", std::process::id(), rand_suffix());
    let lock_class = 0x7465_7374_i32;
    let (live_key, dead_key) = (rand_suffix() as i32, rand_suffix() as i32);

    // Made here by hand: a prefixed database with no marker, one whose marker names another
    // maintenance database, one whose owner (this test's session) is alive, and a dead one's.
    let unmarked = format!("testdb_unmarked_{suffix}");
    let elsewhere = format!("testdb_elsewhere_{suffix}");
    let live = format!("testdb_live_{suffix}");
    let dead = format!("testdb_dead_{suffix}");
    // Unmarked, as if their creators died between CREATE and COMMENT: the name names the owner.
    let named = |key: i32| {
        format!(
            "testdb_{:08x}_{:08x}_{:08x}",
            fnv("postgres"),
            key as u32,
            rand_suffix()
        )
    };
    let (named_live, named_dead) = (named(live_key), named(dead_key));
    let marker = |key: i32, maintenance: &str| {
        format!("testdb v1; owner={key}; pid=1; created=0; maintenance={maintenance}")
    };
    let setup = [
        (unmarked.clone(), None),
        (elsewhere.clone(), Some(marker(dead_key, "some_other_db"))),
        (live.clone(), Some(marker(live_key, "postgres"))),
        (dead.clone(), Some(marker(dead_key, "postgres"))),
        (named_live.clone(), None),
        (named_dead.clone(), None),
    ];
    for (name, comment) in &setup {
        exec(&mut admin, format!("CREATE DATABASE \"{name}\"")).await;
        if let Some(comment) = comment {
            exec(
                &mut admin,
                format!("COMMENT ON DATABASE \"{name}\" IS '{comment}'"),
            )
            .await;
        }
    }
    sqlx::query("SELECT pg_advisory_lock($1, $2)")
        .bind(lock_class)
        .bind(live_key)
        .execute(&mut admin)
        .await
        .expect("hold the live owner's lock");

    testdb::sweep(&backend).await.expect("sweep");

    let exists = |name: String| async move { <Postgres as Harness>::exists(&name).await };
    let kept = (
        exists(unmarked.clone()).await,
        exists(elsewhere.clone()).await,
        exists(live.clone()).await,
        exists(dead.clone()).await,
        exists(named_live.clone()).await,
        exists(named_dead.clone()).await,
    );
    for (name, _) in &setup {
        exec(&mut admin, format!("DROP DATABASE IF EXISTS \"{name}\"")).await;
    }
    assert_eq!(
        kept,
        (true, true, true, false, true, false),
        "only the dead owner's databases are dropped \
         (unmarked, elsewhere, live, dead, named live, named dead)"
    );
}

async fn exec(conn: &mut sqlx::PgConnection, sql: String) {
    sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
        .execute(conn)
        .await
        .expect(&sql);
}

fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now()) as u32
}

/// testdb's name hash (32-bit FNV-1a).
fn fnv(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}
