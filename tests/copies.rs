//! Copies of templates across processes: a savepoint suite's process leases a copy and gives it
//! back clean; one killed with a commit in it leaves nothing for the next; processes at once lease
//! copies of their own; templates unused too long, and on request every template, are removed.
//!
//! The children are this test binary, re-run with a filter on an ignored test.

// Tests, examples and benches may panic and print; the library may not (see Cargo.toml).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use sqlx::Row;
use testdb::{Isolation, Setup, Suite};
use testdb_postgres::{Postgres, TestDatabase};
use testdb_sqlite::Sqlite;

/// Runs of the setup function in this process.
static SETUPS: AtomicUsize = AtomicUsize::new(0);

fn schema() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/endings_schema")
}

fn leased_suite() -> testdb::Result<Setup<Postgres>> {
    let backend = Postgres::from_env()?;
    Ok(
        Setup::new(TestDatabase::builder(backend).migrations(schema())).data(
            async |conn: &mut sqlx::PgConnection| {
                SETUPS.fetch_add(1, Ordering::SeqCst);
                sqlx::query("INSERT INTO items (id, note) VALUES (1, 'setup')")
                    .execute(conn)
                    .await
                    .map(drop)
            },
        ),
    )
}

/// The suite every child runs; its template is built by the first child to need it.
static LEASED: Suite<Postgres> = Suite::new("copies_leased", leased_suite);

/// The same suite in the other isolations, for counting connections.
static IN_TRANSACTIONS: Suite<Postgres> = Suite::new("copies_transaction", || {
    Ok(leased_suite()?.isolation(Isolation::Transaction))
});
static COMMITTED: Suite<Postgres> = Suite::new("copies_committed", || {
    Ok(leased_suite()?.isolation(Isolation::Committed))
});
static FRESH: Suite<Postgres> = Suite::new("copies_fresh", || {
    Ok(leased_suite()?.isolation(Isolation::FreshDatabase))
});

/// A child process and the lines it prints.
struct Spawned {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

/// Spawns the child test `test` with `mode` in its environment.
fn child(test: &str, mode: &str) -> Spawned {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", test, "--ignored", "--nocapture"])
        .env("TESTDB_COPIES_MODE", mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("child stdout");
    let (sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    Spawned { child, lines }
}

/// The value after `word ` in the child's output, once it says it.
fn said(child: &mut Spawned, word: &str) -> String {
    let tag = format!("{word} ");
    while let Ok(line) = child.lines.recv_timeout(Duration::from_secs(60)) {
        if let Some((_, value)) = line.split_once(&tag) {
            return value.trim().to_owned();
        }
    }
    let _ = child.child.kill();
    panic!("the child did not say {word}");
}

fn finished(mut child: Spawned) {
    let status = child.child.wait().expect("wait for the child");
    assert!(status.success(), "the child failed: {status}");
}

/// The child: runs one test of [`LEASED`] as its mode says, and prints what it saw.
#[tokio::test]
#[ignore = "run by the tests of this file"]
async fn child_runs_a_leased_test() {
    let mode = std::env::var("TESTDB_COPIES_MODE").unwrap_or_default();
    let suite = match mode.as_str() {
        "Transaction" => &IN_TRANSACTIONS,
        "Committed" => &COMMITTED,
        "FreshDatabase" => &FRESH,
        _ => &LEASED,
    };
    let (name, items) = suite
        .run(async |conn: &mut sqlx::PgConnection, ()| {
            let name: String = sqlx::query_scalar("SELECT current_database()::text")
                .fetch_one(&mut *conn)
                .await?;
            let items: i64 = sqlx::query_scalar("SELECT count(*) FROM items")
                .fetch_one(&mut *conn)
                .await?;
            println!("COPY {name}");
            println!("ITEMS {items}");
            println!("SETUPS {}", SETUPS.load(Ordering::SeqCst));
            match mode.as_str() {
                // Commits for good, then waits to be killed.
                "commit" => {
                    sqlx::query("INSERT INTO items (id, note) VALUES (2, 'committed')")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("COMMIT").execute(&mut *conn).await?;
                    sqlx::query("INSERT INTO items (id, note) VALUES (3, 'after')")
                        .execute(&mut *conn)
                        .await?;
                    println!("COMMITTED yes");
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                // Commits a row through the suite's pool: not undone by the rollback.
                "pool" => {
                    let db = testdb::current::<Postgres>().map_err(sqlx::Error::config)?;
                    sqlx::query("INSERT INTO items (id, note) VALUES (4, 'pool')")
                        .execute(db.pool())
                        .await?;
                }
                // Holds its copy for a moment, so that others run at the same time (or its
                // connections can be counted).
                "hold" | "Savepoint" | "Transaction" | "Committed" | "FreshDatabase" => {
                    println!("HOLDING {}", std::process::id());
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                _ => {}
            }
            Ok::<_, sqlx::Error>((name, items))
        })
        .await
        .expect("the leased test");
    println!("DONE {name} {items}");
}

/// The comment on database `name` (its state, for a copy).
async fn state_of(admin: &mut sqlx::PgConnection, name: &str) -> Option<String> {
    sqlx::query_scalar(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
    )
    .bind(name)
    .fetch_optional(admin)
    .await
    .expect("read the state")
    .flatten()
}

/// The server's sessions but this one, by process id.
async fn sessions(admin: &mut sqlx::PgConnection) -> Vec<i32> {
    sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()")
        .fetch_all(admin)
        .await
        .expect("list sessions")
}

/// The copies of the template `copy` is a copy of.
async fn copies_beside(admin: &mut sqlx::PgConnection, copy: &str) -> Vec<String> {
    let template = copy.rsplit_once('_').map(|(template, _)| template).unwrap();
    sqlx::query_scalar(
        "SELECT datname::text FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1",
    )
    .bind(format!("{template}_"))
    .fetch_all(admin)
    .await
    .expect("list copies")
}

async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

#[tokio::test]
async fn a_savepoint_process_leases_a_copy_and_gives_it_back_clean() {
    if common::postgres().is_none() {
        return;
    }
    let _turn = one_at_a_time().await;
    let mut admin = common::admin().await;
    let mut first = child("child_runs_a_leased_test", "plain");
    let copy = said(&mut first, "COPY");
    assert_eq!(
        said(&mut first, "ITEMS"),
        "2",
        "the migration's row and the setup's"
    );
    assert_eq!(
        state_of(&mut admin, &copy).await.as_deref(),
        Some("testdb copy v1; leased"),
        "{copy} is marked leased while in use"
    );
    finished(first);
    assert_eq!(
        state_of(&mut admin, &copy).await.as_deref(),
        Some("testdb copy v1; clean"),
        "{copy} is given back clean at exit"
    );

    let mut second = child("child_runs_a_leased_test", "plain");
    assert_eq!(
        said(&mut second, "COPY"),
        copy,
        "the next process leases it"
    );
    assert_eq!(said(&mut second, "ITEMS"), "2");
    assert_eq!(
        said(&mut second, "SETUPS"),
        "0",
        "the next process neither sets up nor copies"
    );
    finished(second);
}

#[tokio::test]
async fn a_copy_committed_to_by_a_killed_process_is_never_leased_again() {
    if common::postgres().is_none() {
        return;
    }
    let _turn = one_at_a_time().await;
    let mut admin = common::admin().await;
    let before = sessions(&mut admin).await;
    let mut killed = child("child_runs_a_leased_test", "commit");
    said(&mut killed, "COPY");
    said(&mut killed, "COMMITTED");
    let mut its: Vec<i32> = sessions(&mut admin).await;
    its.retain(|pid| !before.contains(pid));
    killed.child.kill().expect("kill the child");
    let _ = killed.child.wait();
    // The server ends a killed client's sessions a moment later, under load more than one: until
    // then its lease is still held, and the next process rightly leaves the copy alone.
    for _ in 0..100 {
        let left = sessions(&mut admin).await;
        if !its.iter().any(|pid| left.contains(pid)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The next process never leases it: it sees only the baseline's rows, in a copy of its own
    // (which may reuse the dropped copy's name). What becomes of the name after that is up to the
    // processes running beside this test, which share the template.
    let mut next = child("child_runs_a_leased_test", "plain");
    said(&mut next, "COPY");
    assert_eq!(said(&mut next, "ITEMS"), "2", "only the baseline's rows");
    finished(next);
}

#[tokio::test]
async fn processes_at_once_lease_copies_of_their_own() {
    if common::postgres().is_none() {
        return;
    }
    let _turn = one_at_a_time().await;
    let mut admin = common::admin().await;
    // The template exists, and so do the copies earlier tests gave back.
    let mut warm = child("child_runs_a_leased_test", "plain");
    let some_copy = said(&mut warm, "COPY");
    finished(warm);
    let before = copies_beside(&mut admin, &some_copy).await;
    let mut clean_before = 0;
    for copy in &before {
        if state_of(&mut admin, copy).await.as_deref() == Some("testdb copy v1; clean") {
            clean_before += 1;
        }
    }

    let mut children: Vec<Spawned> = (0..3)
        .map(|_| child("child_runs_a_leased_test", "hold"))
        .collect();
    let mut names: Vec<String> = children
        .iter_mut()
        .map(|child| said(child, "COPY"))
        .collect();
    for child in children {
        finished(child);
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 3, "three processes, three copies: {names:?}");
    let after = copies_beside(&mut admin, &some_copy).await;
    assert!(
        after.len() <= before.len() + 3_usize.saturating_sub(clean_before),
        "no more copies made than were missing: {before:?} ({clean_before} clean), then {after:?}"
    );
    for copy in &names {
        assert_eq!(
            state_of(&mut admin, copy).await.as_deref(),
            Some("testdb copy v1; clean"),
            "{copy} given back clean"
        );
    }
}

/// A SQLite suite of its own directory, so that its templates are the test's alone.
fn sqlite_in(dir: &Path) -> Sqlite {
    Sqlite::new().directory(dir)
}

fn sqlite_templates(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("templates"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| {
                    entry
                        .file_name()
                        .to_str()
                        .and_then(|name| name.strip_suffix(".sqlite3"))
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

static SQLITE_DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();

fn sqlite_dir() -> &'static Path {
    SQLITE_DIR
        .get_or_init(|| tempfile::tempdir().expect("a directory"))
        .path()
}

static SQLITE_SUITE: Suite<Sqlite> = Suite::new("copies_sqlite", || {
    Ok(Setup::new(
        testdb_sqlite::TestDatabase::builder(sqlite_in(sqlite_dir())).migrations(schema()),
    )
    .isolation(Isolation::Transaction))
});

#[tokio::test]
async fn templates_unused_too_long_are_swept_and_all_can_be_removed() {
    let _turn = one_at_a_time().await;
    let dir = sqlite_dir();
    SQLITE_SUITE
        .run(async |_: &mut sqlx::SqliteConnection, ()| Ok::<_, sqlx::Error>(()))
        .await
        .expect("a test");
    let templates = sqlite_templates(dir);
    assert_eq!(templates.len(), 1, "{templates:?}");
    let backend = sqlite_in(dir);

    // Used just now: a sweep keeps it.
    testdb::sweep(&backend).await.expect("sweep");
    assert_eq!(sqlite_templates(dir), templates);
    // In use by this process: kept even on request.
    testdb::remove_templates(&backend).await.expect("remove");
    assert_eq!(sqlite_templates(dir), templates, "a template in use stays");

    // Another one, last used ten days ago and in use by nobody: swept.
    let old = "testdb_tpl_00000000_0_000000000000000000000000";
    let templates_dir = dir.join("templates");
    for extension in ["sqlite3", "json", "lock"] {
        std::fs::write(templates_dir.join(format!("{old}.{extension}")), b"").unwrap();
    }
    let lock = std::fs::File::options()
        .write(true)
        .open(templates_dir.join(format!("{old}.lock")))
        .unwrap();
    lock.set_modified(SystemTime::now() - Duration::from_secs(10 * 86_400))
        .unwrap();
    drop(lock);
    testdb::sweep(&backend).await.expect("sweep");
    assert_eq!(sqlite_templates(dir), templates, "the unused one was swept");
}

#[tokio::test]
async fn a_postgres_template_unused_too_long_is_swept_with_its_copies() {
    let Some(backend) = common::postgres() else {
        return;
    };
    let _turn = one_at_a_time().await;
    // A template and copy of our own making, as testdb names them, last used ten days ago.
    let mut admin = common::admin().await;
    let template = "testdb_tpl_00000001_0_000000000000000000000001";
    let copy = format!("{template}_0");
    // Held while they are made: another test binary's sweep would remove them half made (an
    // unstamped template counts as expired, an unmarked copy as dirty).
    let (template_class, lease_class) = (0x7470_6c74_i32, 0x636f_7079_i32);
    for (class, name) in [(template_class, template), (lease_class, copy.as_str())] {
        sqlx::query("SELECT pg_advisory_lock($1, hashtext($2))")
            .bind(class)
            .bind(name)
            .execute(&mut admin)
            .await
            .expect("lock");
    }
    for name in [template, copy.as_str()] {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\""
        )))
        .execute(&mut admin)
        .await;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .expect("create");
    }
    let long_ago = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 10 * 86_400;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{template}\" SET testdb.used TO '{long_ago}'"
    )))
    .execute(&mut admin)
    .await
    .expect("stamp");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "COMMENT ON DATABASE \"{copy}\" IS 'testdb copy v1; clean'"
    )))
    .execute(&mut admin)
    .await
    .expect("mark");
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut admin)
        .await
        .expect("unlock");

    // Another test binary's sweep may hold them for a moment (a sweep skips what it cannot
    // lock at once): a later sweep removes them.
    let mut left = Vec::new();
    for _ in 0..10 {
        testdb::sweep(&backend).await.expect("sweep");
        left = sqlx::query(
            "SELECT datname::text FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1",
        )
        .bind(template)
        .fetch_all(&mut admin)
        .await
        .expect("list")
        .iter()
        .map(|row| row.get::<String, _>(0))
        .collect();
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(left.is_empty(), "swept with its copy: {left:?}");
}

/// What a process running one test holds on the server, per isolation: the connections to its
/// database, its owner keeper's session (which also holds its template and copy locks) and at most
/// one maintenance session (closed when idle).
#[tokio::test]
async fn a_process_holds_the_connections_it_uses() {
    if common::postgres().is_none() {
        return;
    }
    let _turn = one_at_a_time().await;
    let mut admin = common::admin().await;
    // Own database connections, at most: the test's own connection; in `Committed`, the pool's
    // first connection beside the dedicated one the tests run on.
    for (isolation, most) in [
        ("Savepoint", 1),
        ("Transaction", 1),
        ("Committed", 2),
        ("FreshDatabase", 1),
    ] {
        let mut process = child("child_runs_a_leased_test", isolation);
        let copy = said(&mut process, "COPY");
        let pid = said(&mut process, "HOLDING");
        let on_copy: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
                .bind(&copy)
                .fetch_one(&mut admin)
                .await
                .unwrap();
        let keepers: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
                .bind(format!("testdb owner {pid}"))
                .fetch_one(&mut admin)
                .await
                .unwrap();
        let maintenance: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
                .bind(format!("testdb maintenance {pid}"))
                .fetch_one(&mut admin)
                .await
                .unwrap();
        eprintln!(
            "{isolation}: {on_copy} connection(s) to its database, {keepers} keeper, \
             {maintenance} maintenance"
        );
        assert!(
            maintenance <= 1,
            "{isolation}: {maintenance} maintenance sessions"
        );
        assert!(
            (1..=most).contains(&on_copy),
            "{isolation}: {on_copy} connections to {copy}"
        );
        assert_eq!(keepers, 1, "{isolation}: one owner keeper session");
        finished(process);
    }
}

#[tokio::test]
async fn a_copy_written_by_other_connections_is_not_given_back() {
    if common::postgres().is_none() {
        return;
    }
    let _turn = one_at_a_time().await;
    let mut admin = common::admin().await;
    let mut writer = child("child_runs_a_leased_test", "pool");
    let copy = said(&mut writer, "COPY");
    finished(writer);
    // Its pool's commit is in the copy: not clean, so not given back (removed at exit).
    let state = state_of(&mut admin, &copy).await;
    assert_ne!(state.as_deref(), Some("testdb copy v1; clean"), "{copy}");
    let mut next = child("child_runs_a_leased_test", "plain");
    said(&mut next, "COPY");
    assert_eq!(
        said(&mut next, "ITEMS"),
        "2",
        "the next process sees only the baseline"
    );
    finished(next);
}
