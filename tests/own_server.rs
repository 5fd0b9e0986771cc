//! testdb's own PostgreSQL server, used when no URL is configured: each test gives its child
//! processes (this binary, running the ignored test `child`) a server directory of its own, with
//! the configured server hidden, so that it can start, share, kill and idle-stop that server
//! without touching the one other tests use.

// Tests, examples and benches may panic and print; the library may not (see Cargo.toml).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use testdb_postgres::{Postgres, TestDatabase};

/// Set in a child: how long it holds its place (ms) after its query.
const HOLD: &str = "TESTDB_OWN_SERVER_HOLD_MS";
/// Set in a child: it runs.
const CHILD: &str = "TESTDB_OWN_SERVER_CHILD";

/// Whether PostgreSQL's binaries are here; if not, says the test was skipped (CI has them).
fn binaries_here() -> bool {
    let found = [
        "/usr/lib/postgresql",
        "/usr/local/pgsql",
        "/opt/homebrew/opt",
    ]
    .iter()
    .any(|dir| Path::new(dir).exists())
        || std::env::var_os("TESTDB_PG_BIN").is_some();
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("CI must run the own-server tests: no PostgreSQL binaries found");
        }
        common::say("SKIPPED: own-server test not run: no PostgreSQL binaries found");
    }
    found
}

/// A new server directory for one test, short enough for a socket path.
fn new_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tdbos-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// This binary as a child that calls `Postgres::from_env()` with the server directory `dir`,
/// creates a test database, queries it and prints what it found.
fn child_of(dir: &Path, extra: &[(&str, &str)]) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_remove("TESTDB_POSTGRES_URL")
        .env_remove("DATABASE_URL")
        .env(CHILD, "1")
        .env("TESTDB_PG_DIR", dir)
        .env("TESTDB_PG_IDLE", "10m");
    for (key, value) in extra {
        command.env(key, value);
    }
    command
}

/// What a child printed: `key=value` lines.
fn said(output: &Output, key: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let prefix = format!("{key}=");
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(&prefix).map(str::to_string))
        .unwrap_or_else(|| {
            panic!(
                "the child did not say {key}: status {:?}\nstdout: {stdout}\nstderr: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "child failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn server_pid(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("data/postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .parse()
        .ok()
}

fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            rest.trim_start().chars().next()
        })
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// Stops the test's server, and removes its directory.
fn clean_up(dir: &Path) {
    if let Some(pid) = server_pid(dir) {
        let _ = Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while running(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The child: run by the tests below, never on its own.
#[test]
#[ignore = "a child process of the tests in this file"]
fn child() {
    assert!(
        std::env::var_os(CHILD).is_some(),
        "run by this file's tests"
    );
    let backend = Postgres::from_env().expect("testdb's own server");
    // libtest has written "test child ... " without a newline.
    println!("\nurl={}", backend.redacted_url());
    testdb::block_on(async move {
        let db = TestDatabase::builder(backend).create().await.unwrap();
        let row: (String, String, String, String, String, i32) = sqlx::query_as(
            "SELECT pg_postmaster_start_time()::text, current_setting('fsync'), \
             current_setting('synchronous_commit'), current_setting('full_page_writes'), \
             current_setting('listen_addresses'), pg_backend_pid()",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        println!("started={}", row.0);
        println!("settings={} {} {} [{}]", row.1, row.2, row.3, row.4);
        let hold: u64 = std::env::var(HOLD).map_or(0, |ms| ms.parse().unwrap());
        tokio::time::sleep(Duration::from_millis(hold)).await;
        db.remove().await.unwrap();
    })
    .unwrap();
}

#[test]
fn one_server_starts_for_processes_starting_together_and_later_ones_reuse_it() {
    if !binaries_here() {
        return;
    }
    let dir = new_dir("share");
    let children: Vec<_> = (0..4)
        .map(|_| {
            child_of(&dir, &[])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|child| child.wait_with_output().unwrap())
        .collect();
    for output in &outputs {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let started: Vec<String> = outputs.iter().map(|out| said(out, "started")).collect();
    assert!(
        started.iter().all(|at| *at == started[0]),
        "one server for all: {started:?}"
    );
    let url = said(&outputs[0], "url");
    assert!(url.contains("host="), "a Unix socket: {url}");
    assert_eq!(said(&outputs[0], "settings"), "off off off []");
    assert!(
        dir.join("run/.s.PGSQL.5432").exists(),
        "its socket in its directory"
    );
    assert!(
        dir.join("data/PG_VERSION").exists(),
        "its data in its directory"
    );
    let pid = server_pid(&dir).unwrap();

    // A later process, of a later run: the same server.
    let later = run(&mut child_of(&dir, &[]));
    assert_eq!(said(&later, "started"), started[0]);
    assert_eq!(server_pid(&dir), Some(pid));
    clean_up(&dir);
}

#[test]
fn a_killed_server_and_its_stale_files_are_recovered_by_the_next_process() {
    if !binaries_here() {
        return;
    }
    let dir = new_dir("kill");
    let first = run(&mut child_of(&dir, &[]));
    let pid = server_pid(&dir).unwrap();
    assert!(
        Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while running(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // What it left: its postmaster.pid, its socket and socket lock file.
    assert!(dir.join("data/postmaster.pid").exists());
    assert!(dir.join("run/.s.PGSQL.5432").exists());

    let second = run(&mut child_of(&dir, &[]));
    assert_ne!(said(&second, "started"), said(&first, "started"));
    let new_pid = server_pid(&dir).unwrap();
    assert_ne!(new_pid, pid);

    // A data directory it cannot start from (its control file lost): made new.
    let _ = Command::new("kill")
        .args(["-KILL", &new_pid.to_string()])
        .status();
    while running(new_pid) {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::remove_file(dir.join("data/global/pg_control")).unwrap();
    let third = run(&mut child_of(&dir, &[]));
    assert_ne!(said(&third, "started"), said(&second, "started"));
    assert!(dir.join("data/global/pg_control").exists());
    clean_up(&dir);
}

#[test]
fn the_server_stops_after_its_idle_period_but_not_while_a_process_uses_it() {
    if !binaries_here() {
        return;
    }
    let dir = new_dir("idle");
    // The first child holds its place for 6 s, against an idle period of 2 s.
    let mut holder = child_of(&dir, &[("TESTDB_PG_IDLE", "2s"), (HOLD, "6000")])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let pid = loop {
        if let Some(pid) = server_pid(&dir) {
            break pid;
        }
        assert!(Instant::now() < deadline, "the server never started");
        std::thread::sleep(Duration::from_millis(10));
    };
    std::thread::sleep(Duration::from_secs(4));
    assert!(running(pid), "stopped while a process held its place");
    assert!(holder.wait().unwrap().success());

    let deadline = Instant::now() + Duration::from_secs(60);
    while running(pid) {
        assert!(
            Instant::now() < deadline,
            "the server did not stop after its idle period"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !dir.join("data/postmaster.pid").exists(),
        "stopped cleanly, not killed"
    );
    // And the next process starts it again.
    let again = run(&mut child_of(&dir, &[]));
    assert!(!said(&again, "started").is_empty());
    clean_up(&dir);
}

#[test]
fn a_configured_url_is_always_used_and_nothing_of_the_own_server_is_touched() {
    let Some(configured) = common::postgres() else {
        return;
    };
    let Ok(url) = std::env::var("TESTDB_POSTGRES_URL").or_else(|_| std::env::var("DATABASE_URL"))
    else {
        common::say("SKIPPED: no server URL is configured, so there is none to prefer");
        return;
    };
    let dir = new_dir("configured");
    let output = run(child_of(&dir, &[]).env("TESTDB_POSTGRES_URL", &url));
    assert_eq!(said(&output, "url"), configured.redacted_url());
    assert!(!dir.exists(), "the own server's directory was made");
}

#[test]
fn turned_off_or_without_binaries_postgres_tests_say_why_they_skip() {
    let off = Command::new(std::env::current_exe().unwrap())
        .args(["child", "--exact", "--ignored", "--nocapture"])
        .env_remove("TESTDB_POSTGRES_URL")
        .env_remove("DATABASE_URL")
        .env(CHILD, "1")
        .env("TESTDB_POSTGRES", "off")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&off.stderr);
    assert!(!off.status.success());
    assert!(
        stderr.contains("PostgreSQL is not configured") && stderr.contains("TESTDB_POSTGRES=off"),
        "{stderr}"
    );

    let dir = new_dir("nobin");
    let empty = std::env::temp_dir().join(format!("tdbos-{}-empty", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let wrong = child_of(&dir, &[("TESTDB_PG_BIN", empty.to_str().unwrap())])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success());
    assert!(
        stderr.contains("TESTDB_PG_BIN") && stderr.contains(empty.to_str().unwrap()),
        "names the variable and the directory: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&empty);
    let _ = std::fs::remove_dir_all(&dir);

    // A relative directory would be another in each crate's tests.
    let relative = child_of(Path::new("target/pg"), &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&relative.stderr);
    assert!(!relative.status.success());
    assert!(
        stderr.contains("TESTDB_PG_DIR") && stderr.contains("an absolute path"),
        "{stderr}"
    );
    assert!(!Path::new("target/pg").exists());
}

#[test]
fn the_server_runs_as_a_user_postgres_accepts_and_in_its_directory_only() {
    if !binaries_here() {
        return;
    }
    let dir = new_dir("user");
    let output = run(&mut child_of(&dir, &[]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(dir.join("data")).unwrap().uid();
    let me = std::fs::metadata("/proc/self").unwrap().uid();
    if me == 0 {
        assert_ne!(owner, 0, "PostgreSQL cannot run as root");
        assert!(
            stderr.contains("since PostgreSQL refuses to run as root"),
            "says which user: {stderr}"
        );
    } else {
        assert_eq!(owner, me);
    }
    let mode = std::fs::metadata(&dir).unwrap().mode();
    assert_eq!(mode & 0o022, 0, "only its user may write in its directory");
    for inner in ["data", "run"] {
        let meta = std::fs::symlink_metadata(dir.join(inner)).unwrap();
        assert_eq!(
            meta.mode() & 0o077,
            0,
            "only the server's user may enter {inner}"
        );
        assert_eq!(meta.uid(), owner, "{inner} is the server's user's");
    }
    // Another major version's data directory is replaced.
    let pid = server_pid(&dir).unwrap();
    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
    while running(pid) {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::write(dir.join("data/PG_VERSION"), "9\n").unwrap();
    let replaced = run(&mut child_of(&dir, &[]));
    assert_ne!(said(&replaced, "started"), said(&output, "started"));
    assert_ne!(
        std::fs::read_to_string(dir.join("data/PG_VERSION")).unwrap(),
        "9\n"
    );
    clean_up(&dir);
}

/// The server's pid once it has started in `dir`.
fn wait_for_server(dir: &Path) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(pid) = server_pid(dir)
            && running(pid)
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "the server never started");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn processes_that_come_and_go_between_the_watchers_looks_keep_the_server_up() {
    if !binaries_here() {
        return;
    }
    let dir = new_dir("busy");
    // An idle period of 3 s, looked at every second; a short process every half second for 7 s,
    // each gone long before the next look.
    let idle = [("TESTDB_PG_IDLE", "3s")];
    run(&mut child_of(&dir, &idle));
    let pid = wait_for_server(&dir);
    let until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < until {
        run(&mut child_of(&dir, &idle));
        assert_eq!(server_pid(&dir), Some(pid), "stopped while in use");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(running(pid), "stopped while in use");
    // And once they stop coming, it stops.
    let deadline = Instant::now() + Duration::from_secs(30);
    while running(pid) {
        assert!(Instant::now() < deadline, "it did not stop once idle");
        std::thread::sleep(Duration::from_millis(50));
    }
    clean_up(&dir);
}

#[test]
fn a_directory_that_is_not_testdbs_is_never_taken_over_nor_its_server_used() {
    if !binaries_here() {
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // A directory of the user's, with something in it.
    let dir = new_dir("theirs");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/important.txt"), "keep me").unwrap();
    let before = std::fs::metadata(&dir).unwrap();
    let refused = child_of(&dir, &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("not testdb's") && stderr.contains(dir.to_str().unwrap()),
        "says whose directory it is: {stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("data/important.txt")).unwrap(),
        "keep me"
    );
    let after = std::fs::metadata(&dir).unwrap();
    assert_eq!((after.uid(), after.mode()), (before.uid(), before.mode()));
    let _ = std::fs::remove_dir_all(&dir);

    // A server whose directory others may write to is not trusted, even while it answers.
    let dir = new_dir("opened");
    run(&mut child_of(&dir, &[]));
    let pid = wait_for_server(&dir);
    let mode = std::fs::metadata(&dir).unwrap().mode();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let refused = child_of(&dir, &[]).output().unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
    assert!(
        !refused.status.success(),
        "used a server in a directory anyone may write to"
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no one else may write"));
    assert!(running(pid));
    clean_up(&dir);
}

#[test]
fn the_server_takes_nothing_of_the_process_that_starts_it() {
    if !binaries_here() {
        return;
    }
    let dir = new_dir("env");
    let marker = dir.with_extension("fd");
    // A descriptor the starting process inherited and did not mark close-on-exec, and a
    // PGPORT that would move the server's socket.
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(r#"exec "$0" child --exact --ignored --nocapture 7>"$1""#)
        .arg(std::env::current_exe().unwrap())
        .arg(&marker)
        .env_remove("TESTDB_POSTGRES_URL")
        .env_remove("DATABASE_URL")
        .env(CHILD, "1")
        .env("TESTDB_PG_DIR", &dir)
        .env("PGPORT", "5433")
        .env("TESTDB_SECRET_OF_THE_CALLER", "s3cret")
        .status()
        .unwrap();
    assert!(status.success());
    let pid = wait_for_server(&dir);
    let held: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .collect();
    assert!(
        !held.contains(&marker),
        "the server holds the starter's descriptor: {held:?}"
    );
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        !String::from_utf8_lossy(&environ).contains("s3cret"),
        "the server has the starter's environment"
    );
    // A later process with PGPORT set still finds it.
    run(child_of(&dir, &[]).env("PGPORT", "5433"));
    let _ = std::fs::remove_file(&marker);
    clean_up(&dir);
}

#[test]
fn a_server_of_other_binaries_is_not_replaced_while_others_use_it() {
    if !binaries_here() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let Some(real) = std::env::var_os("TESTDB_PG_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                .ok()?
                .flatten()
                .map(|entry| entry.path().join("bin"))
                .collect();
            dirs.sort();
            dirs.pop()
        })
    else {
        common::say("SKIPPED: no binaries directory to wrap");
        return;
    };
    // The same programs, saying they are of a major version after the server's.
    let fake = new_dir("fakebin");
    std::fs::create_dir_all(&fake).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    for program in ["postgres", "initdb", "psql"] {
        let path = fake.join(program);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\n[ \"$1\" = -V ] && {{ echo 'postgres (PostgreSQL) 99.1'; exit 0; }}\n\
                 exec {}/{program} \"$@\"\n",
                real.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let dir = new_dir("upgrade");
    let mut holder = child_of(&dir, &[(HOLD, "4000")]).spawn().unwrap();
    let pid = wait_for_server(&dir);
    // The holder has its place once its database exists.
    std::thread::sleep(Duration::from_millis(1500));
    let cache = fake.join("cache");
    let refused = child_of(
        &dir,
        &[
            ("TESTDB_PG_BIN", fake.to_str().unwrap()),
            // Its binaries' memo stays out of the user's cache.
            ("XDG_CACHE_HOME", cache.to_str().unwrap()),
        ],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("other processes use it") && stderr.contains("99.1"),
        "{stderr}"
    );
    assert_eq!(server_pid(&dir), Some(pid));
    assert!(
        holder.wait().unwrap().success(),
        "the holder lost its server"
    );
    clean_up(&dir);
    let _ = std::fs::remove_dir_all(&fake);
}
