//! The connection budget across processes: this binary runs itself as child processes with
//! `TESTDB_MAX_CONNECTIONS=3`. The parent holds no slot (its own connections are plain sqlx), so
//! that the children's three are theirs alone; no other test in this binary takes one.

// Tests, examples and benches may panic and print; the library may not (see Cargo.toml).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

#[macro_use]
mod common;

use std::process::Command;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use testdb::TestDatabase;
use testdb_postgres::Postgres;

/// The slots' lock class ("budg").
const CLASS: i64 = 0x6275_6467;
/// Set in a child: which part it plays.
const ROLE: &str = "TESTDB_BUDGET_CHILD";
/// Set in a child: the database its connections go to.
const DATABASE: &str = "TESTDB_BUDGET_DATABASE";
/// How long a child holds its two connections.
const HOLD: Duration = Duration::from_millis(300);

fn url() -> String {
    common::server_url()
}

fn micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

/// This binary, running only test `name` as `role`, with a budget of 3.
fn child(name: &str, role: &str, database: &str) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(DATABASE, database)
        .env("TESTDB_MAX_CONNECTIONS", "3")
        .output()
        .unwrap()
}

/// The parents take turns: their children share the one budget of 3.
static TURNS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// A child: two connections to its database, each admitted to the budget, held together for
/// [`HOLD`]. Prints when each was admitted, when they were let go, and how long it waited.
#[tokio::test]
async fn child_two_connections() {
    if role().as_deref() != Some("two") {
        return;
    }
    let options = PgConnectOptions::from_str(&url())
        .unwrap()
        .database(&std::env::var(DATABASE).unwrap());
    let mut held = Vec::new();
    let mut admitted = Vec::new();
    let mut waited = Duration::ZERO;
    for _ in 0..2 {
        let mut conn = PgConnection::connect_with(&options).await.unwrap();
        let asked = Instant::now();
        <Postgres as testdb::backend::Driver>::admit(&mut conn, &options)
            .await
            .unwrap();
        waited += asked.elapsed();
        admitted.push(micros());
        held.push(conn);
    }
    tokio::time::sleep(HOLD).await;
    let released = micros();
    for conn in held {
        conn.close().await.unwrap();
    }
    println!(
        "HELD {} {} {released} {}",
        admitted[0],
        admitted[1],
        waited.as_micros()
    );
}

/// A child that wants more connections at once than the budget has: the one over it fails, with
/// the budget's error.
#[tokio::test]
async fn child_more_than_the_budget() {
    if role().as_deref() != Some("more") {
        return;
    }
    let db = TestDatabase::builder(Postgres::from_env().unwrap())
        .pool_options(
            PgPoolOptions::new()
                .max_connections(3)
                .acquire_timeout(Duration::from_secs(2)),
        )
        .create()
        .await
        .expect("one pooled connection and the owner's fit in 3");
    // Pools open connections when asked: hold three at once.
    let mut held = Vec::new();
    let mut failed = None;
    for _ in 0..3 {
        match db.acquire().await {
            Ok(connection) => held.push(connection),
            Err(err) => {
                failed = Some(err);
                break;
            }
        }
    }
    let err = failed.expect("three pooled connections and the owner's do not fit in 3");
    drop(held);
    println!("ERROR {err}");
    println!("DEBUG {err:?}");
}

async fn admin() -> PgConnection {
    PgConnection::connect(&url()).await.unwrap()
}

/// Slots held, counted on the server.
async fn held_slots(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1::int8::oid \
         AND objsubid = 2 AND granted AND objid < 3",
    )
    .bind(CLASS)
    .fetch_one(conn)
    .await
    .unwrap()
}

// Multi-threaded: the monitor runs while this thread waits for the children.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_share_the_budget() {
    if role().is_some() || common::postgres().is_none() {
        return;
    }
    let _turn = TURNS.lock().await;
    // Two databases: a slot is a lock in the connection's own database, and the budget must
    // hold across them.
    let names: Vec<String> = (0..2)
        .map(|i| format!("budget_test_{}_{i}", std::process::id()))
        .collect();
    let mut server = admin().await;
    for name in &names {
        for statement in [
            format!("DROP DATABASE IF EXISTS {name}"),
            format!("CREATE DATABASE {name}"),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut server)
                .await
                .unwrap();
        }
    }

    // Counts the slots every few milliseconds; a count over 3 that lasts past one sample is a
    // breach (two sessions that lock one slot at once hold it together until one of them looks).
    let stop = Arc::new(AtomicBool::new(false));
    let breaches = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let monitor = {
        let (stop, breaches, most) = (stop.clone(), breaches.clone(), most.clone());
        tokio::spawn(async move {
            let mut conn = admin().await;
            let mut over = false;
            while !stop.load(Ordering::SeqCst) {
                let count = held_slots(&mut conn).await;
                most.fetch_max(usize::try_from(count).unwrap(), Ordering::SeqCst);
                if count > 3 && over {
                    breaches.fetch_add(1, Ordering::SeqCst);
                }
                over = count > 3;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    // Six children, two at a time: together they want four connections, one more than the
    // budget, so one waits. (Three at a time could each hold one and wait for a second forever.)
    let workers: Vec<_> = (0..2)
        .map(|worker| {
            let names = names.clone();
            std::thread::spawn(move || {
                (0..3)
                    .map(|run| child("child_two_connections", "two", &names[(worker + run) % 2]))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut intervals = Vec::new();
    let mut waited = Duration::ZERO;
    for worker in workers {
        for output in worker.join().unwrap() {
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "a child failed: {stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let line = stdout
                .lines()
                .find_map(|line| line.split_once("HELD ").map(|(_, rest)| rest))
                .unwrap_or_else(|| panic!("the child ran nothing: {stdout}"));
            let times: Vec<u128> = line.split(' ').map(|t| t.parse().unwrap()).collect();
            intervals.push((times[0], times[2]));
            intervals.push((times[1], times[2]));
            waited += Duration::from_micros(u64::try_from(times[3]).unwrap());
        }
    }
    stop.store(true, Ordering::SeqCst);
    monitor.await.unwrap();
    for name in &names {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut server)
        .await
        .unwrap();
    }

    // From the children's own clocks: never more than 3 connections admitted at once.
    let mut overlap = 0;
    for (start, _) in &intervals {
        let at_once = intervals
            .iter()
            .filter(|(from, to)| from <= start && start < to)
            .count();
        overlap = overlap.max(at_once);
    }
    println!(
        "children: at most {overlap} connections admitted at once, {} slots seen held, {waited:?} \
         waited in all",
        most.load(Ordering::SeqCst)
    );
    assert_eq!(intervals.len(), 12);
    assert!(overlap <= 3, "{overlap} connections held slots at once");
    assert_eq!(breaches.load(Ordering::SeqCst), 0, "more than 3 slots held");
    assert!(most.load(Ordering::SeqCst) >= 1, "the monitor saw no slot");
    assert!(
        waited >= Duration::from_millis(20),
        "no child waited for a slot ({waited:?}): the test proved nothing"
    );
}

#[tokio::test]
async fn a_process_that_cannot_get_a_slot_in_time_fails_with_the_budget_error() {
    if role().is_some() || common::postgres().is_none() {
        return;
    }
    let _turn = TURNS.lock().await;
    let started = Instant::now();
    let output = child("child_more_than_the_budget", "more", "");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let message = stdout
        .lines()
        .find_map(|line| line.split_once("ERROR ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("the child ran nothing: {stdout}"));
    assert!(message.contains("TESTDB_MAX_CONNECTIONS"), "{message}");
    assert!(message.contains("budget"), "{message}");
    assert!(message.contains("3 connections"), "{message}");
    assert!(!message.contains("is the server running"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the pool's 2 s timeout was not the one that counted: {:?}",
        started.elapsed()
    );
}
