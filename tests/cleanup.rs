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

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, SystemTime};

use common::{Harness, Shared};
use testdb::backend::{Server, Templates};
use testdb::{Isolation, Setup, Suite, TestDatabase};
use testdb_postgres::Postgres;
use testdb_sqlite::Sqlite;

on_every_engine!(
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
        "mysql" => hold::<testdb_mysql::MySql>().await,
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
        "mysql" => touch::<testdb_mysql::MySql>(),
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
    // Old, without a lock file: testdb's name, but not testdb's mark.
    let unmarked = root.path().join("testdb_unmarked");
    std::fs::create_dir(&unmarked).expect("mkdir");
    std::fs::write(unmarked.join("data.sqlite3"), "keep me").expect("write");
    // Old staging directories whose creator died before making the lock file: an empty one goes
    // (nothing is lost), one with anything in it stays.
    let staged_empty = root.path().join(".testdb_new_empty");
    std::fs::create_dir(&staged_empty).expect("mkdir");
    let staged_full = root.path().join(".testdb_new_full");
    std::fs::create_dir(&staged_full).expect("mkdir");
    std::fs::write(staged_full.join("data.sqlite3"), "keep me").expect("write");
    for dir in [&unmarked, &staged_empty, &staged_full] {
        age(dir);
    }

    let removed = testdb::sweep(&backend).await.expect("sweep");

    assert_eq!(removed, 2);
    assert!(
        !dead.exists(),
        "a directory whose owner's lock is free is removed"
    );
    assert!(
        unmarked.join("data.sqlite3").exists(),
        "an old directory without a lock file stays, whatever its name"
    );
    assert!(
        !staged_empty.exists(),
        "an abandoned empty staging directory is removed"
    );
    assert!(
        staged_full.join("data.sqlite3").exists(),
        "an abandoned staging directory with no lock file keeps what is in it"
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
    // Unmarked, as if their creators died between CREATE and COMMENT: the name names an owner,
    // but a name proves nothing.
    let named = |key: i32| {
        format!(
            "testdb_{:08x}_{:08x}_{:08x}",
            fnv("postgres"),
            key as u32,
            rand_suffix()
        )
    };
    let (named_live, named_dead) = (named(live_key), named(dead_key));
    // A dead owner's, but someone is connected to it.
    let in_use = format!("testdb_in_use_{suffix}");
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
        (in_use.clone(), Some(marker(dead_key, "postgres"))),
    ];
    // Locked and connected to before they are marked: other tests of this binary sweep too.
    sqlx::query("SELECT pg_advisory_lock($1, $2)")
        .bind(lock_class)
        .bind(live_key)
        .execute(&mut admin)
        .await
        .expect("hold the live owner's lock");
    let mut user = None;
    for (name, comment) in &setup {
        exec(&mut admin, format!("CREATE DATABASE \"{name}\"")).await;
        if *name == in_use {
            user = Some(connect_to(name).await);
        }
        if let Some(comment) = comment {
            exec(
                &mut admin,
                format!("COMMENT ON DATABASE \"{name}\" IS '{comment}'"),
            )
            .await;
        }
    }

    let exists = |name: String| async move { <Postgres as Harness>::exists(&name).await };
    // A concurrent sweep may hold the dead owner's key for a moment: sweep until it is gone.
    for _ in 0..100 {
        testdb::sweep(&backend).await.expect("sweep");
        if !exists(dead.clone()).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kept = (
        exists(unmarked.clone()).await,
        exists(elsewhere.clone()).await,
        exists(live.clone()).await,
        exists(dead.clone()).await,
        exists(named_live.clone()).await,
        exists(named_dead.clone()).await,
        exists(in_use.clone()).await,
    );
    // Once nobody uses it, it goes.
    if let Some(user) = user {
        let _ = sqlx::Connection::close(user).await;
    }
    let mut in_use_gone = false;
    for _ in 0..100 {
        testdb::sweep(&backend).await.expect("sweep");
        if !exists(in_use.clone()).await {
            in_use_gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (name, _) in &setup {
        exec(
            &mut admin,
            format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        )
        .await;
    }
    assert_eq!(
        kept,
        (true, true, true, false, true, true, true),
        "only the dead owner's unused marked database is dropped \
         (unmarked, elsewhere, live, dead, named live, named dead, in use)"
    );
    assert!(
        in_use_gone,
        "a dead owner's database is dropped once nobody is connected to it"
    );
}

/// A connection to database `name` on the test server.
async fn connect_to(name: &str) -> sqlx::PgConnection {
    use sqlx::ConnectOptions;
    let url = common::server_url();
    let options: sqlx::postgres::PgConnectOptions = url.parse().expect("a PostgreSQL URL");
    options.database(name).connect().await.expect("connect")
}

/// Sets a directory's modification time an hour back: abandoned, as far as a sweep can tell.
fn age(dir: &std::path::Path) {
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::open(dir)
        .and_then(|file| file.set_modified(hour_ago))
        .expect("age a directory");
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

// Ownership survives a lost session: the owner takes its lock again, and a sweep never drops a
// database someone is connected to.

/// The Transaction suite of the child of `postgres_ownership_survives_a_lost_session`.
static LOST_OWNER_SUITE: Suite<Postgres> = Suite::new("cleanup-lost-owner", || {
    Ok(Setup::new(TestDatabase::builder(Postgres::from_env()?)).isolation(Isolation::Transaction))
});

#[tokio::test]
async fn postgres_ownership_survives_a_lost_session() {
    let Some(backend) = common::postgres() else {
        return;
    };
    let mut admin = common::admin().await;
    let mut child = Driven::spawn("child_outlives_its_owner_session", Postgres::KEY);
    let first = child.expect("READY");
    let copy = child.expect("SUITE");
    let owner_name = format!("testdb owner {}", child.child.id());

    let key = marked_owner(&mut admin, &first).await;
    // The suite's database is a copy of its template, leased on the owner's session.
    let state: Option<String> = sqlx::query_scalar(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
    )
    .bind(&copy)
    .fetch_one(&mut admin)
    .await
    .expect("read the copy's state");
    assert_eq!(state.as_deref(), Some("testdb copy v1; leased"), "{copy}");
    let session = owner_session(&mut admin, key, &owner_name)
        .await
        .expect("the child's owner session, named, holds its lock");

    // Lost; another process's sweep at once, while the lock may well be free.
    terminate(&mut admin, session).await;
    testdb::sweep(&backend).await.expect("sweep");
    for name in [&first, &copy] {
        assert!(
            <Postgres as Harness>::exists(name).await,
            "{name}, in use, survives a sweep while its owner's session is lost"
        );
    }

    // The owner notices by itself, and takes the same key again on a new session.
    let session = owner_session(&mut admin, key, &owner_name)
        .await
        .expect("the owner takes its lock again within 5 s");

    // Lost again, and the key taken by another session (as a sweep takes it) before the owner
    // takes it back: a database the child creates meanwhile waits, to be marked only once the
    // owner holds its lock again.
    terminate(&mut admin, session).await;
    let mut taken = try_lock(&mut admin, key).await;
    for _ in 0..20 {
        if taken {
            break;
        }
        let session = owner_session(&mut admin, key, &owner_name)
            .await
            .expect("held again");
        terminate(&mut admin, session).await;
        taken = try_lock(&mut admin, key).await;
    }
    assert!(
        taken,
        "the key's lock is free for a moment after its session ends"
    );
    child.send("create");
    assert!(
        child.silent_for(Duration::from_secs(1)),
        "no database is marked with a key whose lock the owner does not hold"
    );
    sqlx::query("SELECT pg_advisory_unlock($1, $2)")
        .bind(0x7465_7374_i32)
        .bind(key)
        .execute(&mut admin)
        .await
        .expect("unlock");
    let second = child.expect("CREATED");
    assert_eq!(marked_owner(&mut admin, &second).await, key);
    owner_session(&mut admin, key, &owner_name)
        .await
        .expect("the lock is held again");

    testdb::sweep(&backend).await.expect("sweep");
    for name in [&first, &copy, &second] {
        assert!(
            <Postgres as Harness>::exists(name).await,
            "{name} of a live owner survives a sweep"
        );
    }
    child.send("use");
    child.expect("WORKED");

    // Once the child is gone, so is all of it.
    drop(child);
    let mut left = vec![first, copy, second];
    for _ in 0..200 {
        testdb::sweep(&backend).await.expect("sweep");
        let mut still = Vec::new();
        for name in left {
            if <Postgres as Harness>::exists(&name).await {
                still.push(name);
            }
        }
        left = still;
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        left.is_empty(),
        "a dead owner's databases are swept: {left:?}"
    );
}

/// Helper, run as a child by `postgres_ownership_survives_a_lost_session`: uses its databases
/// while its parent takes its owner's session away.
#[tokio::test]
#[ignore = "run by other tests in a child process"]
async fn child_outlives_its_owner_session() {
    let Some(backend) = common::postgres() else {
        return;
    };
    let first = TestDatabase::create(backend.clone()).await.expect("create");
    let copy = current_copy().await;
    println!("READY {}", first.name());
    println!("SUITE {copy}");

    wait_for("create").await;
    let second = TestDatabase::create(backend).await.expect("create again");
    println!("CREATED {}", second.name());

    wait_for("use").await;
    for db in [&first, &second] {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_class")
            .fetch_one(db.pool())
            .await
            .expect("the database works");
        assert!(count > 0);
    }
    assert_eq!(current_copy().await, copy, "the suite keeps its copy");
    println!("WORKED");
    tokio::time::sleep(Duration::from_secs(120)).await;
}

/// Runs a test of the child's Transaction suite; returns the name of the database it ran on.
async fn current_copy() -> String {
    LOST_OWNER_SUITE
        .run(async |conn: &mut sqlx::PgConnection, ()| {
            sqlx::query_scalar::<_, String>("SELECT current_database()::text")
                .fetch_one(conn)
                .await
        })
        .await
        .expect("a Transaction test")
}

/// In a child: waits for the parent's `command` on stdin.
async fn wait_for(command: &'static str) {
    let line = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await
    .expect("read stdin")
    .expect("read stdin");
    assert_eq!(line.trim(), command);
}

/// A child test process that reports on stdout (`WORD value` lines) and takes commands on stdin.
struct Driven {
    child: Child,
    stdin: ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Driven {
    fn spawn(test: &str, backend: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                test,
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(common::CHILD_BACKEND, backend)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the child test");
        let stdin = child.stdin.take().expect("child stdin");
        let stdout: ChildStdout = child.stdout.take().expect("child stdout");
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Driven {
            child,
            stdin,
            lines,
        }
    }

    /// The value of the child's next `word` line.
    fn expect(&mut self, word: &str) -> String {
        let tag = format!("{word} ");
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(60)) {
            // libtest may print the test's name on the same line, before it.
            if let Some((_, value)) = line.split_once(&tag) {
                return value.trim().to_string();
            }
            if line.trim_end().ends_with(word) {
                return String::new();
            }
        }
        let _ = self.child.kill();
        let status = self.child.wait();
        panic!("the child did not say {word}: {status:?}");
    }

    /// Whether the child says nothing for `time`.
    fn silent_for(&mut self, time: Duration) -> bool {
        self.lines.recv_timeout(time).is_err()
    }

    fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").expect("write to the child");
        self.stdin.flush().expect("write to the child");
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        // The parent failed, or is done: the child goes too.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Takes owner key `key`'s lock if it is free, as a sweep does.
async fn try_lock(admin: &mut sqlx::PgConnection, key: i32) -> bool {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(0x7465_7374_i32)
        .bind(key)
        .fetch_one(admin)
        .await
        .expect("try the lock")
}

/// The owner key in the marker of database `name`.
async fn marked_owner(admin: &mut sqlx::PgConnection, name: &str) -> i32 {
    let comment: Option<String> = sqlx::query_scalar(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
    )
    .bind(name)
    .fetch_one(admin)
    .await
    .expect("read the marker");
    let comment = comment.unwrap_or_else(|| panic!("{name} is marked"));
    comment
        .split("; ")
        .find_map(|part| part.strip_prefix("owner="))
        .and_then(|key| key.parse().ok())
        .unwrap_or_else(|| panic!("{name}'s marker names its owner: {comment}"))
}

/// The session named `name` that holds owner key `key`'s lock, waiting up to 5 s for it (other
/// processes' sweeps may hold the key for a moment).
async fn owner_session(admin: &mut sqlx::PgConnection, key: i32, name: &str) -> Option<i32> {
    for _ in 0..100 {
        let holder: Option<i32> = sqlx::query_scalar(
            "SELECT a.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 \
             AND l.classid = ($1::int4)::oid AND l.objid = ($2::int4)::oid \
             AND a.application_name = $3",
        )
        .bind(0x7465_7374_i32)
        .bind(key)
        .bind(name)
        .fetch_optional(&mut *admin)
        .await
        .expect("look at pg_locks");
        if holder.is_some() {
            return holder;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Ends session `pid` on the server, and waits until it is gone.
async fn terminate(admin: &mut sqlx::PgConnection, pid: i32) {
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&mut *admin)
        .await
        .expect("terminate the session");
    for _ in 0..100 {
        let alive: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
                .bind(pid)
                .fetch_one(&mut *admin)
                .await
                .expect("look at pg_stat_activity");
        if !alive {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("session {pid} did not end");
}

// SQLite template lock files go with their templates.

#[tokio::test]
async fn sqlite_template_lock_files_go_with_their_templates() {
    let root = tempfile::tempdir().expect("temp dir");
    let backend = Sqlite::new().directory(root.path());
    let prefix = "testdb_tpl_lockfiles_";
    // Run after run, each builds its template and removes the one before.
    for run in 0..4 {
        build_template(&backend, &format!("{prefix}{run}")).await;
        backend
            .remove_templates(prefix, &format!("{prefix}{run}"))
            .await
            .expect("remove superseded templates");
    }
    assert_eq!(
        template_files(root.path()),
        [
            format!("{prefix}3.json"),
            format!("{prefix}3.lock"),
            format!("{prefix}3.sqlite3"),
        ],
        "only the current template's files are left, lock file included"
    );

    // A superseded template in use (its lock held) stays, lock file and all.
    let held = backend
        .share_template(&format!("{prefix}3"))
        .await
        .expect("share");
    build_template(&backend, &format!("{prefix}4")).await;
    let keep = format!("{prefix}4");
    backend
        .remove_templates(prefix, &keep)
        .await
        .expect("remove");
    assert_eq!(template_files(root.path()).len(), 6, "the one in use stays");
    drop(held);
    backend
        .remove_templates(prefix, &keep)
        .await
        .expect("remove");
    assert_eq!(template_files(root.path()).len(), 3, "and goes once free");
}

/// A locker that opened a lock file just before a remover unlinked it locks the new one.
#[cfg(unix)]
#[tokio::test]
async fn sqlite_template_lock_follows_a_removed_lock_file() {
    use std::os::unix::fs::MetadataExt;
    let root = tempfile::tempdir().expect("temp dir");
    let backend = Sqlite::new().directory(root.path());
    let name = "testdb_tpl_lockfiles_race";
    std::fs::create_dir_all(root.path().join("templates")).expect("mkdir");
    let path = root.path().join("templates").join(format!("{name}.lock"));

    // Play a remover: hold the lock while a locker waits for it, unlink it, let go.
    let remover = std::fs::File::create(&path).expect("lock file");
    remover.lock().expect("lock");
    let unlinked = std::fs::metadata(&path).expect("stat").ino();
    let waiting = tokio::spawn({
        let backend = backend.clone();
        async move { backend.lock_template(name).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the locker waits for the lock");
    std::fs::remove_file(&path).expect("unlink");
    // Kept open, so that its inode number cannot be reused by the new lock file.
    remover.unlock().expect("unlock");
    let lock = waiting.await.expect("join").expect("lock");

    let now = std::fs::metadata(&path).expect("a lock file at the path again");
    assert_ne!(now.ino(), unlinked, "a new lock file");
    let probe = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    assert!(
        probe.try_lock().is_err(),
        "the locker holds the lock file that is at the path"
    );
    drop(lock);
    assert!(probe.try_lock().is_ok());
    drop(remover);
}

async fn build_template(backend: &Sqlite, name: &str) {
    let lock = backend.lock_template(name).await.expect("lock");
    let built = backend.create().await.expect("create");
    backend.promote(built, name, "{}").await.expect("promote");
    drop(lock);
}

fn template_files(root: &std::path::Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(root.join("templates"))
        .expect("templates directory")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    files
}
