//! Suites: a setup run once, and tests isolated from each other by one of four
//! [`Isolation`]s.

mod building;
mod committed;
mod databases;
mod fresh;
mod live;
mod restore;
mod savepoint;
mod target;
mod template;
#[cfg(test)]
mod tests;
mod transaction;

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

pub use databases::Databases;
pub(crate) use live::Ending;
pub(crate) use template::TemplateKey;

use crate::{Error, Isolation, Result, Rewind, handle};
use template::Inputs;

type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;
// Takes the databases being built rather than their connections: a lifetime that appears only in
// a projection cannot be bound by `for<'c>`.
type DataFn<D, T> = Box<
    dyn for<'c> FnOnce(
        &'c mut <D as Databases>::Building,
    ) -> LocalFuture<'c, std::result::Result<T, BoxError>>,
>;

/// How long a test may run before it fails, unless [`Setup::time_limit`] says otherwise.
const DEFAULT_TIME_LIMIT: Duration = Duration::from_secs(60);

/// A group of tests that share one setup, run once per process, and see it through savepoints:
/// Django's `TestCase`.
///
/// Declare it once as a `static`; every test calls [`run`](Suite::run) (or
/// [`run_blocking`](Suite::run_blocking) from a plain `#[test]`). The suite's databases are
/// migrated and set up once per run, into templates shared by every process; the first test of a
/// process leases a copy of each, opens a transaction on it (the suite transaction, never
/// committed) and establishes a savepoint. Each test then gets the suite's connections, inside
/// that savepoint, and its own clone of the setup's value; when it ends, however it ends,
/// everything it did is rolled back to the savepoint.
///
/// Tests of one suite take turns on its connections (libtest's parallel threads wait for each
/// other, they do not interleave); different suites run in parallel.
pub struct Suite<D: Databases, T = ()> {
    name: &'static str,
    setup: MakeSetup<D, T>,
    state: Mutex<Phase<D, T>>,
}

/// The function that describes a suite: a plain one (a `static` suite's), or a closure (the
/// suites `#[testdb::test]` makes).
enum MakeSetup<D: Databases, T> {
    Plain(fn() -> Result<Setup<D, T>>),
    Closure(Box<dyn Fn() -> Result<Setup<D, T>> + Send + Sync>),
}

/// What a suite is made of: its databases, how to fill them, its isolation, and its tests' time
/// limit. Returned by the function given to [`Suite::new`].
pub struct Setup<D: Databases, T = ()> {
    databases: D::Builders,
    data: DataFn<D, T>,
    time_limit: Duration,
    isolation: Isolation,
    version: Option<String>,
    restore_sequences: bool,
}

enum Phase<D: Databases, T> {
    Empty,
    Failed(Arc<Error>),
    Ready(Arc<Ready<D, T>>),
}

struct Ready<D: Databases, T> {
    live: D::Live,
    data: std::sync::Mutex<T>,
    time_limit: Duration,
    // Held while the suite copies its templates (and dropped after `live`); in a mutex only to
    // be `Sync`.
    _templates: std::sync::Mutex<TemplatesInUse>,
}

/// Shared locks on a suite's templates.
type TemplatesInUse = Box<dyn Any + Send>;

impl<D: Databases, T: Clone + Send + Serialize + DeserializeOwned + 'static> Suite<D, T> {
    /// A suite named `name` (for messages and template names) whose databases and setup `setup`
    /// describes.
    pub const fn new(name: &'static str, setup: fn() -> Result<Setup<D, T>>) -> Self {
        Suite {
            name,
            setup: MakeSetup::Plain(setup),
            state: Mutex::const_new(Phase::Empty),
        }
    }

    /// [`new`](Suite::new), with a closure for the setup.
    pub(crate) fn with_setup(
        name: &'static str,
        setup: Box<dyn Fn() -> Result<Setup<D, T>> + Send + Sync>,
    ) -> Self {
        Suite {
            name,
            setup: MakeSetup::Closure(setup),
            state: Mutex::const_new(Phase::Empty),
        }
    }

    /// Runs one test: `body` gets the suite's connection(s), isolated as the suite's
    /// [`Isolation`] says, and a clone of the setup's value. Afterwards, whatever the test did
    /// is undone: rolled back (checking deferred constraints first, as a commit would), restored,
    /// or dropped with the test's own database. Inside `body`, [`current`](crate::current) gives
    /// the test's database for other connections and processes.
    ///
    /// The body may fail with any error (`sqlx::Error`, `Box<dyn Error>`, …): the test then fails
    /// with [`Error::Test`], whose source is that error. Otherwise it fails with
    /// [`Error::Setup`] if the setup failed, with [`Error::DeferredConstraint`] if
    /// the test broke a deferred constraint, with [`Error::Escaped`] if it ended the transaction
    /// testdb wrapped it in (the suite then rebuilds its databases for the next test), and with
    /// [`Error::TimeLimit`] if it ran too long.
    pub async fn run<R, E, F>(&self, body: F) -> Result<R>
    where
        F: for<'c> AsyncFnOnce(D::Connections<'c>, T) -> std::result::Result<R, E>,
        E: Into<BoxError>,
    {
        let (ready, mut session) = self.session().await?;
        let time_limit = ready.time_limit;
        let data = ready
            .data
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let stoppers = D::stoppers(&session);
        let current = handle::Current {
            handles: D::handles(&session),
            fences: stoppers
                .iter()
                .map(|stopper| stopper.fence().clone())
                .collect(),
        };
        let connections = D::connections(&mut session);
        let mut test = Box::pin(handle::scope(current, body(connections, data)));
        // Declared after the test, so dropped before it: a test dropped unfinished (cancelled, or
        // panicking) has what it runs stopped before anything it holds goes. Then `session`, when
        // dropped, ends the test on testdb's runtime, before the next test may begin.
        let stopping = StopOnDrop(stoppers);
        let finished = tokio::select! {
            result = &mut test => Some(result),
            () = tokio::time::sleep(time_limit) => None,
        };
        let Some(result) = finished else {
            // Whatever the test left running is stopped, then what it holds is dropped, then it is
            // rolled back: all before the next test begins.
            stopping.stop().await;
            drop(test);
            let _ = D::finish(session, Ending::Abandoned).await;
            return Err(Error::TimeLimit {
                suite: self.name,
                limit: time_limit,
            });
        };
        drop(test);
        stopping.disarm();
        let ending = Ending::Returned {
            failed: result.is_err(),
        };
        let failure = match D::finish(session, ending).await {
            Ok((Rewind::Clean, _)) => None,
            Ok((Rewind::Violated(message), database)) => Some(Error::DeferredConstraint {
                suite: self.name,
                database,
                message,
            }),
            Ok((Rewind::Escaped(message), database)) => Some(Error::Escaped {
                suite: self.name,
                database,
                message,
            }),
            Err(err) => Some(err),
        };
        match (result, failure) {
            // The test's own error comes first: it is why the test failed.
            (Err(err), _) => Err(self.test_error(err.into())),
            (Ok(_), Some(failure)) => Err(failure),
            (Ok(value), None) => Ok(value),
        }
    }

    /// [`run`](Suite::run) for a plain `#[test]`: runs the test on a runtime of its own.
    ///
    /// Must not be called from async code (use `run` there).
    pub fn run_blocking<R, E, F>(&self, body: F) -> Result<R>
    where
        F: for<'c> AsyncFnOnce(D::Connections<'c>, T) -> std::result::Result<R, E>,
        E: Into<BoxError>,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| Error::Runtime {
                reason: format!("cannot start a runtime for the test: {err}"),
            })?;
        runtime.block_on(self.run(body))
    }

    /// The test's own error, as [`Error::Test`]; a testdb error (from a nested suite, say)
    /// passes through as it is.
    fn test_error(&self, err: BoxError) -> Error {
        match err.downcast::<Error>() {
            Ok(err) => *err,
            Err(source) => Error::Test {
                suite: self.name,
                source,
            },
        }
    }

    /// The suite, and a session on its databases for one test: building the suite first if
    /// needed, and again if a test left it unusable.
    async fn session(&self) -> Result<(Arc<Ready<D, T>>, D::Session)> {
        let ready = self.ready().await?;
        if let Some(session) = D::session(&ready.live).await? {
            return Ok((ready, session));
        }
        self.invalidate(&ready).await;
        let ready = self.ready().await?;
        match D::session(&ready.live).await? {
            Some(session) => Ok((ready, session)),
            None => Err(Error::Setup {
                suite: self.name,
                message: "the suite was built again, and is already unusable".into(),
                source: None,
            }),
        }
    }

    /// The suite, set up, building it first if needed.
    async fn ready(&self) -> Result<Arc<Ready<D, T>>> {
        let mut phase = self.state.lock().await;
        if let Phase::Empty = *phase {
            *phase = match self.build().await {
                Ok(ready) => Phase::Ready(Arc::new(ready)),
                Err(err) => Phase::Failed(Arc::new(err)),
            };
        }
        match &*phase {
            Phase::Ready(ready) => Ok(ready.clone()),
            Phase::Failed(err) => Err(Error::Setup {
                suite: self.name,
                message: "building it failed".into(),
                source: Some(err.clone()),
            }),
            Phase::Empty => Err(Error::Setup {
                suite: self.name,
                message: "the suite was not built".into(),
                source: None,
            }),
        }
    }

    /// Forgets `ready`, if it is still the suite's: the next test builds the suite again (tests
    /// still running on it finish there).
    async fn invalidate(&self, ready: &Arc<Ready<D, T>>) {
        let mut phase = self.state.lock().await;
        if let Phase::Ready(current) = &*phase
            && Arc::ptr_eq(current, ready)
        {
            *phase = Phase::Empty;
        }
    }

    async fn build(&self) -> Result<Ready<D, T>> {
        let setup = match &self.setup {
            MakeSetup::Plain(setup) => setup()?,
            MakeSetup::Closure(setup) => setup()?,
        };
        let time_limit = setup.time_limit;
        let (live, data, templates) = self.copy_template(setup).await?;
        Ok(Ready {
            live,
            data: std::sync::Mutex::new(data),
            time_limit,
            _templates: std::sync::Mutex::new(templates),
        })
    }

    /// The suite's databases as copies of its template, built first if no process has built it
    /// (or if what built it has changed).
    async fn copy_template(&self, setup: Setup<D, T>) -> Result<(D::Live, T, TemplatesInUse)> {
        let isolation = setup.isolation;
        let targets = D::targets(self.name, &setup.databases);
        let committed = isolation == Isolation::Committed;
        let inputs = Inputs {
            suite: self.name,
            version: setup.version.as_deref(),
            committed,
            data_type: std::any::type_name::<T>(),
        };
        let builders = &setup.databases;
        let key = TemplateKey::new(inputs, async |hasher| {
            D::fingerprint(builders, hasher).await
        })
        .await?;
        let template_error = |message: String| Error::Template {
            suite: self.name,
            template: key.name(0),
            message,
        };
        let restore_sequences = setup.restore_sequences;
        // What builds the template, used at most once.
        let mut build = Some((setup.databases, setup.data));
        // A shared lock while the template is in use: nobody removes it meanwhile. Found only
        // once that lock is held (a template removed between its build and our lock is built
        // again).
        let mut attempts = 0;
        let (in_use, data) = loop {
            let in_use = D::lock(&targets, &key, true).await?;
            if let Some(data) = D::find(&targets, &key).await? {
                break (in_use, data);
            }
            drop(in_use);
            attempts += 1;
            if attempts > 3 || (build.is_none() && attempts > 1) {
                return Err(template_error(
                    "the template was removed each time it was built".into(),
                ));
            }
            // Processes that need the same template wait here while one of them builds it.
            let building_lock = D::lock(&targets, &key, false).await?;
            let mut built = false;
            if D::find(&targets, &key).await?.is_none()
                && let Some((databases, data)) = build.take()
            {
                let mut building = D::begin(self.name, databases).await?;
                let value = data(&mut building)
                    .await
                    .map_err(|source| Error::SetupFunction {
                        suite: self.name,
                        source,
                    })?;
                let data = serde_json::to_string(&value).map_err(|err| {
                    template_error(format!("cannot store the setup value: {err}"))
                })?;
                D::into_templates(building, &targets, &key, &data, committed).await?;
                built = true;
            }
            drop(building_lock);
            // Once the lock is free: processes waiting for the new template need not wait for
            // the removal of the old ones too.
            if built {
                D::remove_superseded(&targets, &key).await;
            }
        };
        let value = serde_json::from_str(&data)
            .map_err(|err| template_error(format!("cannot read the setup value: {err}")))?;
        let live = D::open(&targets, &key, isolation, restore_sequences).await?;
        Ok((live, value, in_use))
    }
}

/// Stops a test dropped unfinished; see [`Suite::run`].
struct StopOnDrop(Vec<live::Stopper>);

impl StopOnDrop {
    async fn stop(self) {
        for stopper in &self.0 {
            stopper.stop().await;
        }
        self.disarm();
    }

    fn disarm(mut self) {
        self.0.clear();
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        for stopper in &self.0 {
            stopper.stop_blocking();
        }
    }
}

impl<D: Databases> Setup<D, ()> {
    /// A setup on these databases: one [`Builder`](crate::Builder), or a tuple of them for a
    /// suite that spans several databases. Their migrations run before the setup function.
    pub fn new(databases: D::Builders) -> Self {
        Setup {
            databases,
            data: Box::new(|_| Box::pin(async { Ok(()) })),
            time_limit: DEFAULT_TIME_LIMIT,
            isolation: Isolation::Savepoint,
            version: None,
            restore_sequences: true,
        }
    }
}

impl<D: Databases, T> Setup<D, T> {
    /// The setup function: runs once, inside a transaction, with the suite's connection(s), and
    /// returns the value every test gets a clone of (ids, names, …).
    ///
    /// That transaction is committed into the suite's template, with the value (which is why it
    /// must be serde: processes that reuse the template read it back instead of running the
    /// function), once per run; every isolation then works on copies of the template.
    pub fn data<U, E, F>(self, setup: F) -> Setup<D, U>
    where
        F: for<'c> AsyncFnOnce(D::Connections<'c>) -> std::result::Result<U, E> + 'static,
        E: Into<BoxError>,
    {
        Setup {
            databases: self.databases,
            data: Box::new(move |building| {
                Box::pin(async move {
                    setup(D::building_connections(building))
                        .await
                        .map_err(Into::into)
                })
            }),
            time_limit: self.time_limit,
            isolation: self.isolation,
            version: self.version,
            restore_sequences: self.restore_sequences,
        }
    }

    /// How long each test may run (60 s by default). A test that opens a second connection and
    /// touches a row the suite transaction holds would otherwise wait forever.
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = limit;
        self
    }

    /// How tests are isolated from each other: [`Isolation::Savepoint`] unless this says
    /// otherwise. Tests need no change when it does.
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self
    }

    /// Names the setup's version, for the template key: a template is then reused while the
    /// migrations, fixtures and this version are unchanged, even across rebuilds of the test
    /// binary. Without it the binary's identity stands in for the setup function (which cannot be
    /// hashed), so each rebuild builds a new template. Change it whenever the setup function
    /// changes.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Whether the sequences a test moved are put back where the setup left them (on by default),
    /// so that each test gets the same ids, as it would on a fresh database. In transaction
    /// isolation the last test to end while no other runs puts them back. Off, PostgreSQL
    /// sequences (and, in committed isolation, SQLite AUTOINCREMENT counters, which roll back with
    /// a test's transaction elsewhere) keep growing across tests, which catches tests that assume
    /// particular ids (a SQLite table without AUTOINCREMENT takes the largest id + 1 either way).
    pub fn restore_sequences(mut self, restore: bool) -> Self {
        self.restore_sequences = restore;
        self
    }
}

impl<D: Databases, T> std::fmt::Debug for Suite<D, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Suite")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<D: Databases, T> std::fmt::Debug for Setup<D, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup")
            .field("time_limit", &self.time_limit)
            .field("isolation", &self.isolation)
            .finish_non_exhaustive()
    }
}

// A test that panics is ended (stopped, rolled back) before the next test may begin, or leaves its
// database marked to be given up: no state is ever observed half-updated across a panic.
impl<D: Databases, T> std::panic::RefUnwindSafe for Suite<D, T> {}
impl<D: Databases, T> std::panic::UnwindSafe for Suite<D, T> {}
