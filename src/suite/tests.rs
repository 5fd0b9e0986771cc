//! The suite's own logic on fake databases, in the manner of bb8's fake managers: building once
//! per template key, the template protocol between processes, a failed setup, a suite left
//! unusable, and how a test's end is reported. Engines' behaviour is tested on real engines
//! (`tests/`); nothing here stands in for one.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::RwLock;

use super::live::{Ending, Stopper};
use super::template::TemplateKey;
use super::{Databases, Setup, Suite};
use crate::{Error, Isolation, Result, Rewind};

/// A fake server, shared by the suites (the "processes") of one test: its templates, their
/// locks, what the next test's end finds, and a log of what the suites asked of it.
#[derive(Clone, Default)]
struct Server(Arc<State>);

#[derive(Default)]
struct State {
    /// Template name → the setup value stored with it.
    templates: Mutex<HashMap<String, String>>,
    locks: Mutex<HashMap<String, Arc<RwLock<()>>>>,
    /// What the next ends of tests find (clean once this runs out).
    rewinds: Mutex<VecDeque<Rewind>>,
    /// How many templates, once built, vanish before they are found (another process removed
    /// them).
    lose: AtomicUsize,
    log: Mutex<Vec<String>>,
}

impl Server {
    fn log(&self, event: impl Into<String>) {
        lock(&self.0.log).push(event.into());
    }

    fn events(&self) -> Vec<String> {
        lock(&self.0.log).clone()
    }

    fn count(&self, event: &str) -> usize {
        self.events().iter().filter(|e| *e == event).count()
    }

    fn next_rewinds(&self, rewinds: impl IntoIterator<Item = Rewind>) {
        lock(&self.0.rewinds).extend(rewinds);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The fake databases of a suite: one, on a [`Server`].
struct Fake;

/// A fake database's connection: the rows a test wrote.
struct Conn {
    server: Server,
    rows: Vec<i64>,
    finished: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if !self.finished {
            self.server.log("dropped unfinished");
        }
    }
}

/// A suite's fake database, open for tests until one leaves it unusable.
struct Live {
    server: Server,
    usable: Mutex<bool>,
}

impl Databases for Fake {
    type Builders = Server;
    type Connections<'c> = &'c mut Conn;
    type Targets = Server;
    type Building = Conn;
    type Live = Arc<Live>;
    type Session = (Arc<Live>, Conn);

    fn targets(_: &'static str, server: &Server) -> Server {
        server.clone()
    }

    async fn fingerprint(_: &Server, hasher: &mut DefaultHasher) -> Result<()> {
        "fake".hash(hasher);
        Ok(())
    }

    async fn begin(_: &'static str, server: Server) -> Result<Conn> {
        server.log("begin");
        Ok(Conn {
            server,
            rows: Vec::new(),
            finished: true,
        })
    }

    fn building_connections(building: &mut Conn) -> &mut Conn {
        building
    }

    async fn lock(server: &Server, key: &TemplateKey, shared: bool) -> Result<Box<dyn Any + Send>> {
        server.log(if shared { "lock shared" } else { "lock" });
        let name = key.name(0);
        let lock = lock(&server.0.locks).entry(name).or_default().clone();
        Ok(if shared {
            Box::new(lock.read_owned().await)
        } else {
            Box::new(lock.write_owned().await)
        })
    }

    async fn find(server: &Server, key: &TemplateKey) -> Result<Option<String>> {
        server.log("find");
        Ok(lock(&server.0.templates).get(&key.name(0)).cloned())
    }

    async fn into_templates(
        building: Conn,
        server: &Server,
        key: &TemplateKey,
        data: &str,
        _: bool,
    ) -> Result<()> {
        // Long enough for the other suites of a test to be waiting for the lock.
        tokio::time::sleep(Duration::from_millis(20)).await;
        server.log("into_templates");
        let lost = server
            .0
            .lose
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if !lost {
            lock(&server.0.templates).insert(key.name(0), data.to_owned());
        }
        drop(building);
        Ok(())
    }

    async fn remove_superseded(server: &Server, _: &TemplateKey) {
        server.log("remove_superseded");
    }

    async fn open(server: &Server, _: &TemplateKey, _: Isolation, _: bool) -> Result<Arc<Live>> {
        server.log("open");
        Ok(Arc::new(Live {
            server: server.clone(),
            usable: Mutex::new(true),
        }))
    }

    async fn session(live: &Arc<Live>) -> Result<Option<(Arc<Live>, Conn)>> {
        if !*lock(&live.usable) {
            return Ok(None);
        }
        Ok(Some((
            live.clone(),
            Conn {
                server: live.server.clone(),
                rows: Vec::new(),
                finished: false,
            },
        )))
    }

    fn connections(session: &mut (Arc<Live>, Conn)) -> &mut Conn {
        &mut session.1
    }

    fn handles(_: &(Arc<Live>, Conn)) -> Vec<Arc<dyn Any + Send + Sync>> {
        Vec::new()
    }

    fn stoppers(_: &(Arc<Live>, Conn)) -> Vec<Stopper> {
        Vec::new()
    }

    async fn finish(session: (Arc<Live>, Conn), ending: Ending) -> Result<(Rewind, String)> {
        let (live, mut conn) = session;
        conn.finished = true;
        let server = &live.server;
        server.log(match ending {
            Ending::Returned { failed: false } => "finish",
            Ending::Returned { failed: true } => "finish failed",
            Ending::Abandoned => "finish abandoned",
        });
        let rewind = lock(&server.0.rewinds).pop_front().unwrap_or(Rewind::Clean);
        if matches!(rewind, Rewind::Escaped(_)) {
            *lock(&live.usable) = false;
        }
        Ok((rewind, "fake".into()))
    }
}

/// A suite on `server` whose setup counts its runs in `runs` and returns 42.
fn suite(name: &'static str, server: &Server, runs: &Arc<AtomicUsize>) -> Suite<Fake, i64> {
    let (server, runs) = (server.clone(), runs.clone());
    Suite::with_setup(
        name,
        Box::new(move || {
            let runs = runs.clone();
            Ok(Setup::<Fake>::new(server.clone())
                .version("1")
                .time_limit(Duration::from_millis(200))
                .data(async move |conn: &mut Conn| {
                    runs.fetch_add(1, Ordering::SeqCst);
                    conn.rows.push(1);
                    Ok::<_, Error>(42)
                }))
        }),
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|err| unreachable!("a runtime: {err}"))
}

async fn passing(suite: &Suite<Fake, i64>) -> Result<i64> {
    suite
        .run(async |conn: &mut Conn, data: i64| {
            conn.rows.push(data);
            Ok::<_, Error>(data)
        })
        .await
}

#[test]
fn the_first_suite_builds_the_template_and_the_next_finds_it() {
    let server = Server::default();
    let runs = Arc::new(AtomicUsize::new(0));
    runtime().block_on(async {
        let first = suite("users", &server, &runs);
        assert_eq!(passing(&first).await.ok(), Some(42));
        assert_eq!(passing(&first).await.ok(), Some(42));
        let built = server.events();
        assert_eq!(
            built,
            [
                "lock shared",
                "find",
                "lock",
                "find",
                "begin",
                "into_templates",
                "remove_superseded",
                "lock shared",
                "find",
                "open",
                "finish",
                "finish",
            ]
        );
        // Another process's suite of the same name: the template is found, the setup not run.
        let second = suite("users", &server, &runs);
        assert_eq!(passing(&second).await.ok(), Some(42));
        assert_eq!(
            server.events()[built.len()..],
            ["lock shared", "find", "open", "finish"]
        );
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn suites_that_start_together_wait_for_one_build() {
    let server = Server::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (server, runs) = (server.clone(), runs.clone());
            std::thread::spawn(move || {
                let suite = suite("orders", &server, &runs);
                runtime().block_on(passing(&suite)).ok()
            })
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().ok().flatten(), Some(42));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(server.count("into_templates"), 1);
    assert_eq!(server.count("open"), 4);
}

#[test]
fn a_failed_setup_fails_every_test_with_its_error_and_runs_once() {
    let server = Server::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let failing: Suite<Fake, i64> = Suite::with_setup(
        "failing",
        Box::new(move || {
            let runs = counted.clone();
            Ok(Setup::<Fake>::new(server.clone())
                .version("1")
                .data(async move |_: &mut Conn| {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Err::<i64, _>("no such table: users")
                }))
        }),
    );
    runtime().block_on(async {
        for _ in 0..2 {
            let err = passing(&failing).await.err();
            let Some(Error::Setup {
                suite: "failing",
                source: Some(source),
                ..
            }) = &err
            else {
                unreachable!("a setup error, not {err:?}");
            };
            assert!(
                matches!(**source, Error::SetupFunction { .. }),
                "{source:?}"
            );
            let cause = std::error::Error::source(&**source).map(ToString::to_string);
            assert_eq!(cause.as_deref(), Some("no such table: users"));
        }
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn a_test_that_escapes_fails_and_the_next_test_gets_the_suite_built_again() {
    let server = Server::default();
    let runs = Arc::new(AtomicUsize::new(0));
    server.next_rewinds([Rewind::Escaped("COMMIT".into())]);
    runtime().block_on(async {
        let suite = suite("escapes", &server, &runs);
        let err = passing(&suite).await.err();
        assert!(
            matches!(&err, Some(Error::Escaped { suite: "escapes", message, .. }) if message == "COMMIT"),
            "{err:?}"
        );
        assert_eq!(passing(&suite).await.ok(), Some(42));
    });
    // Opened again from the template, which is not built again.
    assert_eq!(server.count("open"), 2);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn the_tests_own_error_comes_before_what_its_end_found() {
    let server = Server::default();
    let runs = Arc::new(AtomicUsize::new(0));
    server.next_rewinds([
        Rewind::Violated("orders_user_fk".into()),
        Rewind::Violated("orders_user_fk".into()),
    ]);
    runtime().block_on(async {
        let suite = suite("violations", &server, &runs);
        let failed = suite
            .run(async |_: &mut Conn, _: i64| Err::<(), _>("the test's own"))
            .await
            .err();
        assert!(
            matches!(&failed, Some(Error::Test { source, .. }) if source.to_string() == "the test's own"),
            "{failed:?}"
        );
        let err = passing(&suite).await.err();
        assert!(
            matches!(&err, Some(Error::DeferredConstraint { message, .. }) if message == "orders_user_fk"),
            "{err:?}"
        );
        assert_eq!(passing(&suite).await.ok(), Some(42));
    });
    assert!(server.events().ends_with(&[
        "finish failed".to_owned(),
        "finish".to_owned(),
        "finish".to_owned()
    ]));
}

#[test]
fn a_test_past_its_time_limit_is_abandoned_and_the_next_runs() {
    let server = Server::default();
    let runs = Arc::new(AtomicUsize::new(0));
    runtime().block_on(async {
        let suite = suite("slow", &server, &runs);
        let err = suite
            .run(async |_: &mut Conn, _: i64| {
                std::future::pending::<()>().await;
                Ok::<_, Error>(())
            })
            .await
            .err();
        assert!(
            matches!(&err, Some(Error::TimeLimit { suite: "slow", .. })),
            "{err:?}"
        );
        assert_eq!(server.count("finish abandoned"), 1);
        assert_eq!(passing(&suite).await.ok(), Some(42));
    });
}

#[test]
fn a_cancelled_test_gives_its_session_up_before_the_next_begins() {
    let server = Server::default();
    let runs = Arc::new(AtomicUsize::new(0));
    runtime().block_on(async {
        let suite = suite("cancelled", &server, &runs);
        // Cancelled once the test body runs, however long the setup took.
        let started = Arc::new(tokio::sync::Notify::new());
        let body_started = started.clone();
        let run = suite.run(async move |_: &mut Conn, _: i64| {
            body_started.notify_one();
            std::future::pending::<()>().await;
            Ok::<_, Error>(())
        });
        tokio::select! {
            ended = run => unreachable!("a pending test ended: {:?}", ended.err()),
            () = started.notified() => {}
        }
        assert_eq!(server.count("dropped unfinished"), 1);
        assert_eq!(passing(&suite).await.ok(), Some(42));
    });
}

#[test]
fn a_template_removed_as_soon_as_this_suite_built_it_is_an_error_that_says_so() {
    let server = Server::default();
    let runs = Arc::new(AtomicUsize::new(0));
    server.0.lose.store(1, Ordering::SeqCst);
    runtime().block_on(async {
        let suite = suite("removed", &server, &runs);
        let err = passing(&suite).await.err();
        let Some(Error::Setup {
            source: Some(source),
            ..
        }) = &err
        else {
            unreachable!("a setup error, not {err:?}");
        };
        assert!(
            matches!(&**source, Error::Template { message, .. } if message.contains("removed each time it was built")),
            "{source:?}"
        );
    });
    assert_eq!(server.count("open"), 0);
}
