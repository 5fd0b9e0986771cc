//! What `#[testdb::test]` expands to calls (as `testdb::__private`): one suite per distinct setup
//! (engine, migrations, fixtures, isolation), shared by every test of the binary that names the
//! same, and the adapters from a test's argument and return type to [`Suite::run`].

use std::any::{Any, TypeId};
use std::fmt;
use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;

use sqlx::migrate::Migrator;
use sqlx::pool::{PoolConnection, PoolOptions};
use sqlx::{Database, Pool};

use crate::backend::ConnectOptions;
use crate::suite::Databases;
use crate::{Backend, Error, Fixtures, Handle, Isolation, Result, Setup, Suite, TestDatabase};

/// Connections a test's pool may open, as `#[sqlx::test]` allows on PostgreSQL.
const POOL: u32 = 5;

/// The sqlx database that a backend serves: how `#[testdb::test]` finds the backend from a test's
/// argument (`PgPool` → PostgreSQL), and makes one for tests.
#[diagnostic::on_unimplemented(
    message = "no testdb backend serves `{Self}`",
    note = "add the backend crate (`testdb-postgres`, `testdb-sqlite`) to the dev-dependencies"
)]
pub trait Engine<B: Backend<Database = Self>>: Database {
    /// The backend tests use, configured from the environment; [`Error::NotConfigured`] when it
    /// is not (the test then says it was skipped, or fails under CI).
    fn backend() -> Result<B>;
}

/// What a test's database is built from, as the attribute names it.
#[derive(Debug)]
pub struct Spec {
    /// The test's path, for messages.
    pub test: &'static str,
    /// Its migrations.
    pub schema: Schema,
    /// Its fixture files, absolute.
    pub fixtures: &'static [&'static str],
    /// The isolation asked for, if any.
    pub isolation: Option<Isolation>,
}

/// Migrations, as the attribute names them.
#[derive(Debug, Clone, Copy)]
pub enum Schema {
    /// None.
    None,
    /// A directory of migration files.
    Directory(&'static str),
    /// A migrator, and its path as written.
    Migrator(&'static Migrator, &'static str),
}

/// A value a test can take, made from its database.
#[diagnostic::on_unimplemented(
    message = "`#[testdb::test]` cannot give a test a `{Self}`",
    label = "not an argument testdb gives",
    note = "a test takes a pool (`PgPool`, `SqlitePool`), a `PoolConnection<DB>`, a connection \
            (`&mut PgConnection`), or `(PoolOptions<DB>, ConnectOptions)`"
)]
pub trait Argument<B: Backend>: Sized {
    /// The fastest isolation that keeps the test's meaning: what it commits, every connection
    /// sees, as under `#[sqlx::test]`.
    const ISOLATION: Isolation;
    /// The argument, for the test's database.
    fn take(handle: Handle<B>) -> impl Future<Output = Result<Self>>;
}

impl<DB: Engine<B>, B: Backend<Database = DB>> Argument<B> for Pool<DB> {
    const ISOLATION: Isolation = Isolation::FreshDatabase;
    async fn take(handle: Handle<B>) -> Result<Self> {
        Ok(handle.pool().clone())
    }
}

impl<DB: Engine<B>, B: Backend<Database = DB>> Argument<B> for PoolConnection<DB> {
    const ISOLATION: Isolation = Isolation::FreshDatabase;
    async fn take(handle: Handle<B>) -> Result<Self> {
        handle
            .pool()
            .acquire()
            .await
            .map_err(|source| Error::Database {
                backend: B::NAME,
                database: handle.name().to_owned(),
                step: "acquire a connection for the test".into(),
                source,
            })
    }
}

impl<DB: Engine<B>, B: Backend<Database = DB>> Argument<B>
    for (PoolOptions<DB>, ConnectOptions<DB>)
{
    const ISOLATION: Isolation = Isolation::FreshDatabase;
    async fn take(handle: Handle<B>) -> Result<Self> {
        Ok((PoolOptions::new(), handle.connect_options().clone()))
    }
}

/// What a test returns: `()` or `Result<(), E>`, as libtest reports them.
#[diagnostic::on_unimplemented(
    message = "`#[testdb::test]` cannot report a test that returns `{Self}`",
    label = "return `()` or `Result<(), E>`",
    note = "a test returns `()` or `Result<(), E>` where `E: Debug`, as under `#[test]`"
)]
pub trait TestReturn: Sized {
    /// A test that did not run (it was skipped) passes.
    fn passed() -> Self;
    /// Whether the test failed by returning an error.
    fn failed(&self) -> bool;
}

impl TestReturn for () {
    fn passed() -> Self {}
    fn failed(&self) -> bool {
        false
    }
}

impl<E: fmt::Debug> TestReturn for std::result::Result<(), E> {
    fn passed() -> Self {
        Ok(())
    }
    fn failed(&self) -> bool {
        self.is_err()
    }
}

/// How a test went: what it returned (for libtest to report), or that it was skipped (no server
/// configured), or a failure of testdb's (set-up, a broken deferred key, an escape, the time
/// limit).
pub enum Ran<R> {
    /// What the test returned.
    Returned(R),
    /// Why it did not run.
    Skipped(String),
    /// Why it failed, though it may not have.
    Failed(Error),
}

impl<R> fmt::Debug for Ran<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ran::Returned(_) => f.write_str("Returned"),
            Ran::Skipped(reason) => f.debug_tuple("Skipped").field(reason).finish(),
            Ran::Failed(error) => f.debug_tuple("Failed").field(error).finish(),
        }
    }
}

impl<R> From<Result<R>> for Ran<R> {
    fn from(result: Result<R>) -> Self {
        match result {
            Ok(returned) => Ran::Returned(returned),
            Err(error) => Ran::Failed(error),
        }
    }
}

/// Fails a `#[should_panic]` test for testdb's own failure (its set-up, a broken deferred key, an
/// escape, the time limit) without panicking, which would pass it: says why, and ends the test
/// process, so that the run fails.
pub fn exit_failed(error: &Error) -> ! {
    let _ = writeln!(
        std::io::stderr().lock(),
        "error: testdb failed a #[should_panic] test, which a panic would have passed: {}",
        Report(error)
    );
    std::process::exit(101)
}

/// Checks, where the attribute's expansion calls it, that a test's return type can be reported.
pub fn returns<R: TestReturn>() {}

/// Checks, where the attribute's expansion calls it, that testdb can give a test an `A`.
pub fn argument<A: Argument<B>, B: Backend>() {}

/// Checks, where the attribute's expansion calls it, that testdb can give a test a `&mut C`.
pub fn connection<C, B>()
where
    C: sqlx::Connection,
    C::Database: Engine<B> + Database<Connection = C>,
    B: Backend<Database = C::Database>,
{
}

/// A test's error, as its message: the error, then each cause.
#[derive(Debug)]
pub struct Report<'a>(pub &'a Error);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = std::error::Error::source(self.0);
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// Runs a test without arguments on a runtime of its own, as `#[sqlx::test]` does.
pub fn block_on_test<F: Future>(test: F) -> Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Error::Runtime {
            reason: format!("cannot start a runtime for the test: {err}"),
        })?;
    Ok(runtime.block_on(test))
}

/// Runs a test in a declared suite: its connections, and its setup value.
pub fn in_suite<D, T, F, R>(suite: &Suite<D, T>, test: F) -> Ran<R>
where
    D: Databases,
    T: Clone + Send + serde::Serialize + serde::de::DeserializeOwned + 'static,
    F: for<'c> AsyncFnOnce(D::Connections<'c>, T) -> R,
    R: TestReturn,
{
    let ran = run_in(suite, async |connections: D::Connections<'_>, data: T| {
        Ok(test(connections, data).await)
    });
    match ran {
        // A suite whose setup found no server configured: skipped, as the attribute's own suites
        // are, unless under CI.
        Err(Error::Setup {
            suite,
            source: Some(cause),
            ..
        }) if matches!(*cause, Error::NotConfigured { .. }) && std::env::var_os("CI").is_none() => {
            let reason = format!("SKIPPED: suite {suite} not set up: {cause}");
            let _ = writeln!(std::io::stderr().lock(), "{reason}");
            Ran::Skipped(reason)
        }
        ran => ran.into(),
    }
}

/// Runs a test that takes a connection: in a savepoint of its suite's transaction unless the
/// attribute asks for another isolation.
pub fn with_connection<C, B, F, R>(spec: Spec, test: F) -> Ran<R>
where
    C: sqlx::Connection,
    C::Database: Engine<B> + Database<Connection = C>,
    B: Backend<Database = C::Database>,
    F: for<'c> AsyncFnOnce(&'c mut C) -> R,
    R: TestReturn,
{
    let suite = match suite_for::<B>(&spec, Isolation::Savepoint) {
        Ok(Found::Suite(suite)) => suite,
        Ok(Found::Skipped(reason)) => return Ran::Skipped(reason),
        Err(error) => return Ran::Failed(error),
    };
    run_in(suite, async |connection: &mut C, ()| {
        Ok(test(connection).await)
    })
    .into()
}

/// Runs a test that takes a value made from its database (a pool, a pooled connection, options):
/// on a fresh copy of the template unless the attribute asks for another isolation.
pub fn with_argument<A, B, F, Fut>(spec: Spec, test: F) -> Ran<Fut::Output>
where
    A: Argument<B>,
    B: Backend,
    B::Database: Engine<B>,
    F: FnOnce(A) -> Fut,
    Fut: Future,
    Fut::Output: TestReturn,
{
    let suite = match suite_for::<B>(&spec, A::ISOLATION) {
        Ok(Found::Suite(suite)) => suite,
        Ok(Found::Skipped(reason)) => return Ran::Skipped(reason),
        Err(error) => return Ran::Failed(error),
    };
    type Conn<B> = <<B as crate::backend::Driver>::Database as Database>::Connection;
    run_in(suite, async |_: &mut Conn<B>, ()| {
        let argument = A::take(crate::current::<B>()?).await?;
        Ok(test(argument).await)
    })
    .into()
}

/// Runs `test` in `suite`, on a runtime of its own; its return value goes back to libtest as it
/// is, a testdb failure (set-up, a broken deferred key, an escape, the time limit) as an error.
fn run_in<D, T, F, R>(suite: &Suite<D, T>, test: F) -> Result<R>
where
    D: Databases,
    T: Clone + Send + serde::Serialize + serde::de::DeserializeOwned + 'static,
    F: for<'c> AsyncFnOnce(D::Connections<'c>, T) -> Result<R>,
    R: TestReturn,
{
    let mut returned = None;
    let outcome = suite.run_blocking(async |connections: D::Connections<'_>, data: T| {
        let value = test(connections, data).await?;
        let failed = value.failed();
        returned = Some(value);
        if failed {
            // Not a `From` impl: one more would break users' `?` inference.
            Err(Error::Test {
                suite: "#[testdb::test]",
                source: Box::new(Failed),
            })
        } else {
            Ok(())
        }
    });
    match outcome {
        Ok(()) => {}
        // The test's own error, which libtest reports from the value it returned.
        Err(Error::Test { source, .. }) if source.is::<Failed>() => {}
        Err(err) => return Err(err),
    }
    returned.ok_or_else(|| Error::Runtime {
        reason: "the test ended without returning".into(),
    })
}

/// Which suite: its backend, and its setup and isolation in words.
type SuiteKey = (TypeId, String);
/// A `&'static Suite<B>` of any backend.
type AnySuite = &'static (dyn Any + Send + Sync);

/// Marks a test that returned its own error.
#[derive(Debug)]
struct Failed;

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the test returned an error")
    }
}

impl std::error::Error for Failed {}

/// A test's suite, or why the test is skipped.
enum Found<B: Backend> {
    Suite(&'static Suite<B>),
    Skipped(String),
}

/// The suite of every test of the binary with `spec`'s setup on backend `B`, in `isolation`
/// unless `spec` names one; skipped when `B` is not configured here (the test says so).
fn suite_for<B>(spec: &Spec, isolation: Isolation) -> Result<Found<B>>
where
    B: Backend,
    B::Database: Engine<B>,
{
    match <B::Database as Engine<B>>::backend() {
        Ok(_) => {}
        Err(err @ Error::NotConfigured { .. }) => {
            if std::env::var_os("CI").is_some() {
                return Err(err);
            }
            let reason = format!("SKIPPED: {} test not run: {err} ({})", B::NAME, spec.test);
            // Past libtest's capture: a skipped test is never silent.
            let _ = writeln!(std::io::stderr().lock(), "{reason}");
            return Ok(Found::Skipped(reason));
        }
        Err(err) => return Err(err),
    }
    let isolation = spec.isolation.unwrap_or(isolation);
    let schema = match spec.schema {
        Schema::None => "no migrations".to_string(),
        Schema::Directory(dir) => format!("migrations {dir}"),
        Schema::Migrator(_, path) => format!("migrator {path}"),
    };
    // Two migrators of one name (in two modules) are two setups.
    let migrator = match spec.schema {
        Schema::Migrator(migrator, _) => std::ptr::from_ref(migrator) as usize,
        _ => 0,
    };
    // One name (so one template) for every isolation of the same setup.
    let name = format!("#[testdb::test] {schema}, fixtures {:?}", spec.fixtures);
    let key = (
        TypeId::of::<B>(),
        format!("{name} {isolation:?} {migrator:x}"),
    );
    static SUITES: Mutex<Vec<(SuiteKey, AnySuite)>> = Mutex::new(Vec::new());
    let mut suites = SUITES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(suite) = suites
        .iter()
        .find(|(known, _)| *known == key)
        .and_then(|(_, suite)| suite.downcast_ref::<Suite<B>>())
    {
        return Ok(Found::Suite(suite));
    }
    let schema = spec.schema;
    let fixtures: Vec<PathBuf> = spec.fixtures.iter().map(PathBuf::from).collect();
    let setup = move || -> Result<Setup<B>> {
        let mut builder = TestDatabase::builder(<B::Database as Engine<B>>::backend()?);
        match schema {
            Schema::None => {}
            Schema::Directory(dir) => builder = builder.migrations(PathBuf::from(dir)),
            Schema::Migrator(migrator, _) => builder = builder.migrations(migrator),
        }
        if !fixtures.is_empty() {
            builder = builder.fixtures(Fixtures::files(&fixtures));
        }
        // The test's pool keeps as many connections for it as under `#[sqlx::test]`, beside the
        // one testdb's session holds.
        let builder = builder.pool_options(
            PoolOptions::new()
                .max_connections(POOL + 1)
                .idle_timeout(None)
                .max_lifetime(None)
                .test_before_acquire(true)
                .acquire_timeout(std::time::Duration::from_secs(30)),
        );
        // No setup function: the template holds for every build of the test binary while the
        // migrations, fixtures and testdb's version do.
        Ok(Setup::new(builder)
            .isolation(isolation)
            .version(concat!("#[testdb::test] ", env!("CARGO_PKG_VERSION"))))
    };
    // One per distinct setup in a process: leaked, as a `static` suite would be.
    let name: &'static str = Box::leak(name.into_boxed_str());
    let suite: &'static Suite<B> = Box::leak(Box::new(Suite::with_setup(name, Box::new(setup))));
    suites.push((key, suite));
    Ok(Found::Suite(suite))
}
