//! Savepoint suites: the setup runs once, inside a suite transaction that is never committed, and
//! every test runs inside a savepoint of it that is rolled back at the test's end.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use sqlx::{Database, Transaction};
use tokio::sync::Mutex;

use crate::{Backend, Builder, Error, Result, Rewind, TestDatabase};

type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;
// Takes the live databases rather than their connections: a lifetime that appears only in a
// projection cannot be bound by `for<'c>`.
type DataFn<D, T> = Box<
    dyn for<'c> FnOnce(
        &'c mut <D as Databases>::Live,
    ) -> LocalFuture<'c, std::result::Result<T, BoxError>>,
>;

/// How long a test may run before it fails, unless [`Setup::time_limit`] says otherwise.
const DEFAULT_TIME_LIMIT: Duration = Duration::from_secs(60);

/// A group of tests that share one setup, run once per process, and see it through savepoints:
/// Django's `TestCase`.
///
/// Declare it once as a `static`; every test calls [`run`](Suite::run) (or
/// [`run_blocking`](Suite::run_blocking) from a plain `#[test]`). The first test to run creates
/// the suite's databases, opens a transaction on each (the suite transaction, never committed),
/// runs the setup inside it, and establishes a savepoint. Each test then gets the suite's
/// connections, inside that savepoint, and its own clone of the setup's value; when it ends,
/// however it ends, everything it did is rolled back to the savepoint.
///
/// Tests of one suite take turns on its connections (libtest's parallel threads wait for each
/// other, they do not interleave); different suites run in parallel.
pub struct Suite<D: Databases, T = ()> {
    name: &'static str,
    setup: fn() -> Result<Setup<D, T>>,
    state: Mutex<Phase<D, T>>,
}

/// What a suite is made of: its databases, how to fill them, and its tests' time limit. Returned
/// by the function given to [`Suite::new`].
pub struct Setup<D: Databases, T = ()> {
    databases: D::Builders,
    data: DataFn<D, T>,
    time_limit: Duration,
}

enum Phase<D: Databases, T> {
    Empty,
    Failed(String),
    Ready(Ready<D, T>),
}

struct Ready<D: Databases, T> {
    live: D::Live,
    data: T,
    time_limit: Duration,
    // A test started and did not get to rewind (it panicked, or its future was dropped).
    dirty: bool,
}

impl<D: Databases, T: Clone + Send + 'static> Suite<D, T> {
    /// A suite named `name` (for messages) whose databases and setup `setup` describes.
    pub const fn new(name: &'static str, setup: fn() -> Result<Setup<D, T>>) -> Self {
        Suite {
            name,
            setup,
            state: Mutex::const_new(Phase::Empty),
        }
    }

    /// Runs one test: `body` gets the suite's connection(s), inside the test savepoint, and a
    /// clone of the setup's value. Afterwards deferred constraints are checked, as a commit would,
    /// and everything the test did is rolled back.
    ///
    /// The body may fail with any error (`sqlx::Error`, `Box<dyn Error>`, …): the test then fails
    /// with [`Error::Test`], whose source is that error. Otherwise it fails with
    /// [`Error::Setup`] if the setup failed, with [`Error::DeferredConstraint`] if
    /// the test broke a deferred constraint, with [`Error::Escaped`] if it ended the suite
    /// transaction (the suite then rebuilds its databases for the next test), and with
    /// [`Error::TimeLimit`] if it ran too long.
    pub async fn run<R, E, F>(&self, body: F) -> Result<R>
    where
        F: for<'c> AsyncFnOnce(D::Connections<'c>, T) -> std::result::Result<R, E>,
        E: Into<BoxError>,
    {
        let mut phase = self.state.lock().await;
        let ready = self.ready(&mut phase).await?;
        let time_limit = ready.time_limit;
        ready.dirty = true;
        let data = ready.data.clone();
        let connections = D::connections(&mut ready.live);
        let Ok(result) = tokio::time::timeout(time_limit, body(connections, data)).await else {
            // Still dirty: the next test rewinds first.
            return Err(Error::TimeLimit {
                suite: self.name,
                limit: time_limit,
            });
        };
        let rewound = D::rewind(&mut ready.live, true).await;
        ready.dirty = false;
        let failure = match rewound {
            Ok((Rewind::Clean, _)) => None,
            Ok((Rewind::Violated(message), database)) => Some(Error::DeferredConstraint {
                suite: self.name,
                database,
                message,
            }),
            Ok((Rewind::Escaped(message), database)) => {
                *phase = Phase::Empty;
                Some(Error::Escaped {
                    suite: self.name,
                    database,
                    message,
                })
            }
            Err(err) => {
                *phase = Phase::Empty;
                Some(err)
            }
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

    /// The suite, set up and at its baseline, building it first if needed.
    async fn ready<'p>(&self, phase: &'p mut Phase<D, T>) -> Result<&'p mut Ready<D, T>> {
        if let Phase::Ready(ready) = phase
            && ready.dirty
        {
            // The previous test never rewound: do it now, or start over.
            match D::rewind(&mut ready.live, false).await {
                Ok((Rewind::Clean | Rewind::Violated(_), _)) => ready.dirty = false,
                Ok((Rewind::Escaped(_), _)) | Err(_) => *phase = Phase::Empty,
            }
        }
        if let Phase::Empty = phase {
            *phase = match self.build().await {
                Ok(ready) => Phase::Ready(ready),
                Err(err) => Phase::Failed(format!("{err:?}")),
            };
        }
        match phase {
            Phase::Ready(ready) => Ok(ready),
            Phase::Failed(message) => Err(Error::Setup {
                suite: self.name,
                message: message.clone(),
            }),
            Phase::Empty => Err(Error::Setup {
                suite: self.name,
                message: "the suite was not built".into(),
            }),
        }
    }

    async fn build(&self) -> Result<Ready<D, T>> {
        let setup = (self.setup)()?;
        let mut live = D::open(setup.databases).await?;
        let data = (setup.data)(&mut live)
            .await
            .map_err(|source| Error::SetupFunction {
                suite: self.name,
                source,
            })?;
        D::checkpoint(&mut live).await?;
        Ok(Ready {
            live,
            data,
            time_limit: setup.time_limit,
            dirty: false,
        })
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
        }
    }
}

impl<D: Databases, T> Setup<D, T> {
    /// The setup function: runs once, inside the suite transaction, with the suite's
    /// connection(s), and returns the value every test gets a clone of (ids, handles, …).
    pub fn data<U, E, F>(self, setup: F) -> Setup<D, U>
    where
        F: for<'c> AsyncFnOnce(D::Connections<'c>) -> std::result::Result<U, E> + 'static,
        E: Into<BoxError>,
    {
        Setup {
            databases: self.databases,
            data: Box::new(move |live| {
                Box::pin(async move { setup(D::connections(live)).await.map_err(Into::into) })
            }),
            time_limit: self.time_limit,
        }
    }

    /// How long each test may run (60 s by default). A test that opens a second connection and
    /// touches a row the suite transaction holds would otherwise wait forever.
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = limit;
        self
    }
}

/// The databases of a [`Suite`]: one [`Backend`], or a pair of them.
pub trait Databases: Sized + Send + 'static {
    /// How they are created: a [`Builder`], or a tuple of them.
    type Builders;
    /// What a test gets: a connection, or a tuple of them.
    type Connections<'c>;
    #[doc(hidden)]
    type Live: Send;
    #[doc(hidden)]
    fn open(builders: Self::Builders) -> impl Future<Output = Result<Self::Live>>;
    #[doc(hidden)]
    fn connections(live: &mut Self::Live) -> Self::Connections<'_>;
    #[doc(hidden)]
    fn checkpoint(live: &mut Self::Live) -> impl Future<Output = Result<()>>;
    /// Rewinds every database, the last first; reports the first that was not clean.
    #[doc(hidden)]
    fn rewind(live: &mut Self::Live, check: bool)
    -> impl Future<Output = Result<(Rewind, String)>>;
}

/// One database of a suite, inside its suite transaction.
#[doc(hidden)]
pub struct Live<B: Backend> {
    // Declared first, so dropped (rolled back) before the database is removed.
    transaction: Transaction<'static, B::Database>,
    check_each_test: bool,
    database: TestDatabase<B>,
}

impl<B: Backend> Live<B> {
    async fn open(builder: Builder<B>) -> Result<Self> {
        let database = builder.create().await?;
        let transaction = database
            .pool()
            .begin()
            .await
            .map_err(|source| database.error("begin the suite transaction", source))?;
        Ok(Live {
            transaction,
            check_each_test: true,
            database,
        })
    }

    fn connection(&mut self) -> &mut <B::Database as Database>::Connection {
        &mut self.transaction
    }

    async fn checkpoint(&mut self) -> Result<()> {
        match B::checkpoint(&mut self.transaction).await {
            Ok(Ok(check_each_test)) => {
                self.check_each_test = check_each_test;
                Ok(())
            }
            Ok(Err(message)) => Err(Error::DeferredConstraint {
                suite: "setup",
                database: self.database.name().to_owned(),
                message,
            }),
            Err(source) => Err(self.database.error("establish the test savepoint", source)),
        }
    }

    async fn rewind(&mut self, check: bool) -> Result<(Rewind, String)> {
        let name = self.database.name().to_owned();
        match B::rewind(&mut self.transaction, check && self.check_each_test).await {
            Ok(rewind) => Ok((rewind, name)),
            Err(source) => Err(self.database.error("roll back the test", source)),
        }
    }
}

impl<B: Backend> Databases for B {
    type Builders = Builder<B>;
    type Connections<'c> = &'c mut <B::Database as Database>::Connection;
    type Live = Live<B>;

    async fn open(builders: Builder<B>) -> Result<Live<B>> {
        Live::open(builders).await
    }

    fn connections(live: &mut Live<B>) -> Self::Connections<'_> {
        live.connection()
    }

    async fn checkpoint(live: &mut Live<B>) -> Result<()> {
        live.checkpoint().await
    }

    async fn rewind(live: &mut Live<B>, check: bool) -> Result<(Rewind, String)> {
        live.rewind(check).await
    }
}

impl<B1: Backend, B2: Backend> Databases for (B1, B2) {
    type Builders = (Builder<B1>, Builder<B2>);
    type Connections<'c> = (
        &'c mut <B1::Database as Database>::Connection,
        &'c mut <B2::Database as Database>::Connection,
    );
    type Live = (Live<B1>, Live<B2>);

    async fn open((first, second): Self::Builders) -> Result<Self::Live> {
        let first = Live::open(first).await?;
        let second = Live::open(second).await?;
        Ok((first, second))
    }

    fn connections((first, second): &mut Self::Live) -> Self::Connections<'_> {
        (first.connection(), second.connection())
    }

    async fn checkpoint((first, second): &mut Self::Live) -> Result<()> {
        first.checkpoint().await?;
        second.checkpoint().await
    }

    async fn rewind((first, second): &mut Self::Live, check: bool) -> Result<(Rewind, String)> {
        // Every database is rewound, in reverse order, whatever the others report.
        let last = second.rewind(check).await;
        let earlier = first.rewind(check).await;
        worst([last, earlier])
    }
}

/// The first error, else the first rewind that was not clean, else clean.
fn worst<const N: usize>(results: [Result<(Rewind, String)>; N]) -> Result<(Rewind, String)> {
    let mut outcome = None;
    for result in results {
        match result {
            Err(err) => return Err(err),
            Ok((Rewind::Clean, _)) => {}
            Ok(found) => {
                outcome.get_or_insert(found);
            }
        }
    }
    Ok(outcome.unwrap_or((Rewind::Clean, String::new())))
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
            .finish_non_exhaustive()
    }
}

impl<B: Backend> std::fmt::Debug for Live<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

// A test that panics leaves the suite marked dirty, and the next test rewinds it first: no state is
// ever observed half-updated across a panic.
impl<D: Databases, T> std::panic::RefUnwindSafe for Suite<D, T> {}
impl<D: Databases, T> std::panic::UnwindSafe for Suite<D, T> {}
