//! A process's maintenance session (PostgreSQL) comes back when the server ends it; a Committed
//! copy that a connection outside the suite wrote to is not given back; a fixture changed in
//! place gets a new template (its remembered digest is not reused).
//!
//! The children are this test binary, re-run with a filter on an ignored test.
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
use std::time::{Duration, Instant};

use sqlx::Connection;
use testdb::{Fixtures, Isolation, Setup, Suite};
use testdb_postgres::{Postgres, TestDatabase};

const MODE: &str = "REVIEW_SESSION_MODE";

fn schema() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/endings_schema")
}

fn suite_setup(isolation: Isolation) -> testdb::Result<Setup<Postgres>> {
    let backend = Postgres::from_env()?;
    Ok(
        Setup::new(TestDatabase::builder(backend).migrations(schema()))
            .data(async |conn: &mut sqlx::PgConnection| {
                sqlx::query("INSERT INTO items (id, note) VALUES (1, 'setup')")
                    .execute(conn)
                    .await
                    .map(drop)
            })
            .isolation(isolation),
    )
}

static COMMITTED: Suite<Postgres> = Suite::new("review_session_committed", || {
    suite_setup(Isolation::Committed)
});

/// A child process and the lines it prints.
struct Spawned {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

fn child_with(test: &str, mode: &str, env: &[(&str, &str)]) -> Spawned {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args(["--exact", test, "--ignored", "--nocapture"])
        .env(MODE, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("spawn the child");
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

fn said(child: &mut Spawned, word: &str) -> String {
    let tag = format!("{word} ");
    while let Ok(line) = child.lines.recv_timeout(Duration::from_secs(90)) {
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

fn url() -> String {
    common::server_url()
}

fn url_of(database: &str) -> String {
    let mut url = url::Url::parse(&url()).unwrap();
    url.set_path(&format!("/{database}"));
    url.to_string()
}

async fn database_exists(admin: &mut sqlx::PgConnection, name: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(admin)
        .await
        .unwrap()
}

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

async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

// ---------------------------------------------------------------------------------------------
// The children.

/// A committed test whose own connection (opened from `Handle::url`, as an app under test would)
/// commits a row after the test ended; the process waits for that commit, then exits normally.
#[tokio::test]
#[ignore = "run by the tests of this file"]
async fn child_committed_stray_writer() {
    let (sender, receiver) = std::sync::mpsc::channel::<()>();
    let name = COMMITTED
        .run(async |conn: &mut sqlx::PgConnection, ()| {
            let name: String = sqlx::query_scalar("SELECT current_database()::text")
                .fetch_one(&mut *conn)
                .await?;
            let url = testdb::current::<Postgres>()
                .map_err(sqlx::Error::config)?
                .url()
                .to_owned();
            // A background worker the test forgot to stop.
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let mut stray = sqlx::PgConnection::connect(&url).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    sqlx::query("INSERT INTO items (id, note) VALUES (77, 'stray')")
                        .execute(&mut stray)
                        .await
                        .unwrap();
                    sender.send(()).unwrap();
                    // Still connected (idle) when the process exits.
                    tokio::time::sleep(Duration::from_secs(60)).await;
                });
            });
            Ok::<_, sqlx::Error>(name)
        })
        .await
        .expect("the committed test");
    receiver
        .recv_timeout(Duration::from_secs(20))
        .expect("the stray commit");
    println!("COPY {name}");
}

static SQLITE_FIXTURE: Suite<testdb_sqlite::Sqlite> = Suite::new("review_session_fixture", || {
    let fixture = std::env::var("REVIEW_FIXTURE").unwrap();
    let dir = PathBuf::from(std::env::var("REVIEW_DIR").unwrap());
    Ok(Setup::new(
        testdb_sqlite::TestDatabase::builder(testdb_sqlite::Sqlite::new().directory(dir))
            .migrations(schema())
            .fixtures(Fixtures::files([fixture])),
    ))
});

/// A SQLite suite whose fixture file comes from `REVIEW_FIXTURE`, in directory `REVIEW_DIR`;
/// it starts once file `REVIEW_GO` exists.
#[tokio::test]
#[ignore = "run by the tests of this file"]
async fn child_sqlite_fixture() {
    let fixture = std::env::var("REVIEW_FIXTURE").unwrap();
    let dir = PathBuf::from(std::env::var("REVIEW_DIR").unwrap());
    if let Ok(go) = std::env::var("REVIEW_GO") {
        println!("WAITING {}", std::process::id());
        let deadline = Instant::now() + Duration::from_secs(30);
        while !Path::new(&go).exists() {
            assert!(Instant::now() < deadline, "never told to go");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = (fixture, dir);
    SQLITE_FIXTURE
        .run(async |_: &mut sqlx::SqliteConnection, ()| Ok::<_, sqlx::Error>(()))
        .await
        .expect("the suite with a fixture");
    println!("DONE yes");
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// The maintenance session is found again after the server ended it between two jobs, and after
/// a job that failed because it was ended mid-way: never stuck on a dead session.
#[tokio::test]
async fn the_maintenance_session_comes_back_after_the_server_ends_it() {
    let Some(backend) = common::postgres() else {
        return;
    };
    let mut admin = common::admin().await;
    let name = format!("testdb maintenance {}", std::process::id());
    testdb::sweep(&backend).await.expect("first sweep");
    let sessions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert_eq!(sessions, 1, "one maintenance session, named");
    for round in 0..3 {
        let ended: i64 = sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity \
             WHERE application_name = $1",
        )
        .bind(&name)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert_eq!(ended, 1, "round {round}");
        testdb::sweep(&backend)
            .await
            .unwrap_or_else(|err| panic!("sweep after the session was ended ({round}): {err:?}"));
    }
    // Closed once idle.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let sessions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert_eq!(sessions, 0, "closed after 2 s idle");
}

/// A committed suite's copy is given back as clean at exit although a connection the test opened
/// from `Handle::url` committed a row after the test's restore: the next process to lease that
/// copy sees the row. (`release` marks it clean after signalling the sessions, without looking at
/// `testdb_baseline.written`, which records exactly that write.)
#[tokio::test]
async fn a_committed_copy_written_after_its_last_restore_is_not_given_back_clean() {
    if common::postgres().is_none() {
        return;
    }
    let _turn = one_at_a_time().await;
    let mut admin = common::admin().await;
    let mut writer = child_with("child_committed_stray_writer", "stray", &[]);
    let copy = said(&mut writer, "COPY");
    finished(writer);
    let state = state_of(&mut admin, &copy).await;
    if !database_exists(&mut admin, &copy).await {
        return; // Removed at exit, not given back.
    }
    let mut on_copy = sqlx::PgConnection::connect(&url_of(&copy))
        .await
        .expect("connect to the copy");
    let strays: i64 = sqlx::query_scalar("SELECT count(*) FROM items WHERE id = 77")
        .fetch_one(&mut on_copy)
        .await
        .unwrap();
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM testdb_baseline.written")
        .fetch_one(&mut on_copy)
        .await
        .unwrap();
    let _ = on_copy.close().await;
    println!("{copy}: {state:?}, stray rows {strays}, tables written since restore {written}");
    if strays > 0 {
        // Not left for the next run (or anyone) to lease.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{copy}\" WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await
        .expect("drop the dirty copy");
    }
    assert!(
        !(state.as_deref() == Some("testdb copy v1; clean") && strays > 0),
        "{copy} is marked clean but holds the stray row (testdb_baseline.written has {written})"
    );
}

/// A private fixture file (mode 0600 in a 0700 directory), and a scratch `TMPDIR`.
struct FixtureCase {
    _root: tempfile::TempDir,
    fixture: PathBuf,
    tmp: PathBuf,
    sqlite: PathBuf,
}

fn fixture_case() -> FixtureCase {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let private = root.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let fixture = private.join("items.json");
    std::fs::write(
        &fixture,
        br#"{"items": [{"id": 5, "note": "secret-token-5c1f"}]}"#,
    )
    .unwrap();
    std::fs::set_permissions(&fixture, std::fs::Permissions::from_mode(0o600)).unwrap();
    let tmp = root.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let sqlite = root.path().join("sqlite");
    std::fs::create_dir(&sqlite).unwrap();
    FixtureCase {
        _root: root,
        fixture,
        tmp,
        sqlite,
    }
}

/// A file whose bytes change gets a new digest even when the memo says otherwise for the old
/// bytes; the memo follows the newest bytes (the template key follows the file).
#[test]
fn a_changed_fixture_gets_a_new_template() {
    let case = fixture_case();
    let templates = |dir: &Path| -> Vec<String> {
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
    };
    let run = || {
        let spawned = child_with(
            "child_sqlite_fixture",
            "digest",
            &[
                ("TMPDIR", case.tmp.to_str().unwrap()),
                ("REVIEW_FIXTURE", case.fixture.to_str().unwrap()),
                ("REVIEW_DIR", case.sqlite.to_str().unwrap()),
            ],
        );
        finished(spawned);
    };
    run();
    let first = templates(&case.sqlite);
    run();
    assert_eq!(templates(&case.sqlite), first, "same bytes, same template");
    // Same length, one byte changed.
    std::fs::write(
        &case.fixture,
        br#"{"items": [{"id": 6, "note": "secret-token-5c1f"}]}"#,
    )
    .unwrap();
    run();
    let second = templates(&case.sqlite);
    assert_ne!(second, first, "a changed byte, a new template");
}
