//! One database of a suite, in each isolation: how it is built, shared by the suite's tests, and
//! handed to one test at a time (a [`Session`]) or to several at once.

use std::any::Any;
use std::sync::Arc;

use sqlx::pool::{PoolConnection, PoolOptions};
use sqlx::{Database, Transaction};
use tokio::sync::{Mutex, MutexGuard};

use crate::fixtures::Catalog;
use crate::handle::Handle;
use crate::suite::restore;
use crate::suite::template::TemplateKey;
use crate::{Backend, Builder, Error, Isolation, Result, Rewind, TestDatabase, runtime};

/// Where a database of a suite lives, and how its pools are opened: enough to clone it from a
/// template again.
pub struct Target<B: Backend> {
    suite: &'static str,
    backend: B,
    pool_options: Option<PoolOptions<B::Database>>,
}

impl<B: Backend> Target<B> {
    pub(crate) fn of(suite: &'static str, builder: &Builder<B>) -> Self {
        Target {
            suite,
            backend: builder.backend().clone(),
            pool_options: builder.configured_pool(),
        }
    }

    pub(crate) async fn lock(&self, name: &str, shared: bool) -> Result<B::TemplateLock> {
        crate::cleanup::sweep_once(&self.backend).await?;
        if shared {
            self.backend.share_template(name).await
        } else {
            self.backend.lock_template(name).await
        }
    }

    pub(crate) async fn find(&self, name: &str) -> Result<Option<String>> {
        self.backend.find_template(name).await
    }

    pub(crate) async fn remove_superseded(&self, prefix: &str, keep: &str) {
        // Best effort: a template left behind is removed by the next suite that replaces it.
        let _ = self.backend.remove_templates(prefix, keep).await;
    }

    /// A new database, owned by testdb, copied from `template`; its pool opened on testdb's
    /// runtime (all of it if `fill`).
    async fn clone_from(&self, template: &str, fill: bool) -> Result<TestDatabase<B>> {
        let backend = self.backend.clone();
        let pool_options = self.pool_options.clone();
        let template = template.to_owned();
        runtime::run(async move {
            crate::cleanup::sweep_once(&backend).await?;
            let owned = backend.clone_template(&template).await?;
            TestDatabase::from_owned(owned, pool_options, fill).await
        })
        .await?
    }
}

impl<B: Backend> Clone for Target<B> {
    fn clone(&self) -> Self {
        Target {
            suite: self.suite,
            backend: self.backend.clone(),
            pool_options: self.pool_options.clone(),
        }
    }
}

impl<B: Backend> std::fmt::Debug for Target<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// One database being built, inside the transaction that runs the setup function.
pub struct Building<B: Backend> {
    // Declared first, so dropped (rolled back) before the database is removed.
    transaction: Transaction<'static, B::Database>,
    database: TestDatabase<B>,
    suite: &'static str,
}

impl<B: Backend> Building<B> {
    pub(crate) async fn begin(suite: &'static str, builder: Builder<B>) -> Result<Self> {
        let database = builder.create().await?;
        let pool = database.pool().clone();
        let transaction = runtime::run(async move { pool.begin().await })
            .await?
            .map_err(|source| database.error("begin the setup transaction", source))?;
        Ok(Building {
            transaction,
            database,
            suite,
        })
    }

    pub(crate) fn connection(&mut self) -> &mut <B::Database as Database>::Connection {
        &mut self.transaction
    }

    /// Keeps the setup uncommitted, as the suite transaction of a savepoint suite.
    pub(crate) async fn into_savepoint(mut self) -> Result<Live<B>> {
        let check_each_test = match B::checkpoint(&mut self.transaction).await {
            Ok(Ok(check)) => check,
            Ok(Err(message)) => {
                return Err(Error::DeferredConstraint {
                    suite: self.suite,
                    database: self.database.name().to_owned(),
                    message,
                });
            }
            Err(source) => {
                return Err(self.database.error("establish the test savepoint", source));
            }
        };
        Ok(Live::Savepoint(Mutex::new(SavepointState {
            transaction: self.transaction,
            check_each_test,
            dirty: false,
            database: self.database,
            suite: self.suite,
        })))
    }

    /// Commits the setup (with what committed isolation needs to restore it, if `track`) and
    /// turns the database into template `name`.
    pub(crate) async fn into_template(
        mut self,
        target: &Target<B>,
        name: &str,
        data: &str,
        track: bool,
    ) -> Result<()> {
        if track {
            let catalog = B::catalog(&mut self.transaction)
                .await
                .map_err(|source| self.database.error("read the catalog", source))?;
            let tables = tracked_tables(&catalog);
            B::track_writes(&mut self.transaction, &tables)
                .await
                .map_err(|source| self.database.error("record the baseline", source))?;
        }
        let Building {
            transaction,
            database,
            suite,
        } = self;
        transaction
            .commit()
            .await
            .map_err(|source| database.error("commit the setup", source))?;
        let built = database.name().to_owned();
        let Some(owned) = database.into_owned().await else {
            return Err(Error::Setup {
                suite,
                message: format!("{built} was removed before it became a template"),
            });
        };
        target.backend.promote(owned, name, data).await
    }
}

/// The tables committed isolation restores: the user's, not sqlx's bookkeeping.
fn tracked_tables(catalog: &Catalog) -> Vec<String> {
    catalog
        .tables
        .keys()
        .filter(|table| table.as_str() != "_sqlx_migrations")
        .cloned()
        .collect()
}

/// One database of a suite, shared by its tests.
pub enum Live<B: Backend> {
    /// The suite transaction, used by one test at a time.
    Savepoint(Mutex<SavepointState<B>>),
    /// A committed copy of the baseline; each test opens a transaction of its own on it.
    Transaction(TestDatabase<B>, &'static str),
    /// A committed copy of the baseline, used by one test at a time and restored after each.
    Committed(Mutex<CommittedState<B>>),
    /// The template each test's own copy comes from, and the next copy, made ahead.
    FreshDatabase(FreshState<B>),
}

/// The suite transaction of a savepoint suite.
pub struct SavepointState<B: Backend> {
    transaction: Transaction<'static, B::Database>,
    check_each_test: bool,
    // A test started and did not get to rewind (it panicked, or its future was dropped).
    dirty: bool,
    database: TestDatabase<B>,
    suite: &'static str,
}

/// The database of a committed suite, and what restoring it needs.
pub struct CommittedState<B: Backend> {
    // Declared first, so closed before the database is removed.
    connection: <B::Database as Database>::Connection,
    database: TestDatabase<B>,
    catalog: Catalog,
    sequences: bool,
    dirty: bool,
    target: Target<B>,
    template: String,
}

/// The template of a fresh-database suite, and the next copy of it.
pub struct FreshState<B: Backend> {
    target: Target<B>,
    template: String,
    spare: std::sync::Mutex<Option<tokio::task::JoinHandle<Result<TestDatabase<B>>>>>,
}

impl<B: Backend> Live<B> {
    /// The suite's database, a copy of `template`, for `isolation` (not `Savepoint`).
    pub(crate) async fn open(
        target: &Target<B>,
        key: &TemplateKey,
        index: usize,
        isolation: Isolation,
        sequences: bool,
    ) -> Result<Self> {
        let template = key.name(index);
        Ok(match isolation {
            Isolation::Committed => {
                let (database, connection, catalog) = committed_copy(target, &template).await?;
                Live::Committed(Mutex::new(CommittedState {
                    connection,
                    database,
                    catalog,
                    sequences,
                    dirty: false,
                    target: target.clone(),
                    template,
                }))
            }
            Isolation::FreshDatabase => {
                let fresh = FreshState {
                    target: target.clone(),
                    template,
                    spare: std::sync::Mutex::new(None),
                };
                fresh.prepare_next();
                Live::FreshDatabase(fresh)
            }
            _ => Live::Transaction(target.clone_from(&template, true).await?, target.suite),
        })
    }

    /// Puts the database back in order after a test that did not finish (it panicked, ran out of
    /// time, or was cancelled); returns false if that is impossible and the suite must be rebuilt.
    pub(crate) async fn recover(&self) -> bool {
        match self {
            Live::Savepoint(state) => state.lock().await.rewind_if_dirty().await,
            Live::Committed(state) => {
                let mut state = state.lock().await;
                !state.dirty || state.restore().await.is_ok()
            }
            Live::Transaction(..) | Live::FreshDatabase(_) => true,
        }
    }

    /// Hands the database to one test.
    pub(crate) async fn session(&self) -> Result<Session<'_, B>> {
        Ok(match self {
            Live::Savepoint(state) => {
                let mut state = state.lock().await;
                // Another test may have failed to rewind since `recover`.
                if !state.rewind_if_dirty().await {
                    return Err(Error::Setup {
                        suite: state.suite,
                        message: "an earlier test left the suite transaction unusable".into(),
                    });
                }
                state.dirty = true;
                Session::Savepoint(state)
            }
            Live::Transaction(database, suite) => {
                let pool = database.pool().clone();
                let mut transaction = runtime::run(async move { pool.begin_with(B::BEGIN).await })
                    .await?
                    .map_err(|source| database.error("begin the test's transaction", source))?;
                let check = match B::checkpoint(&mut transaction).await {
                    Ok(Ok(check)) => check,
                    Ok(Err(message)) => {
                        return Err(Error::DeferredConstraint {
                            suite,
                            database: database.name().to_owned(),
                            message,
                        });
                    }
                    Err(source) => {
                        return Err(database.error("establish the test savepoint", source));
                    }
                };
                Session::Transaction {
                    transaction,
                    check,
                    database,
                }
            }
            Live::Committed(state) => {
                let mut state = state.lock().await;
                if state.dirty {
                    state.restore().await?;
                }
                state.dirty = true;
                Session::Committed(state)
            }
            Live::FreshDatabase(fresh) => {
                let database = fresh.take().await?;
                let connection = database.acquire().await?;
                Session::FreshDatabase(FreshSession {
                    connection,
                    database: Some(database),
                })
            }
        })
    }
}

impl<B: Backend> SavepointState<B> {
    /// Rolls back what a test that did not finish left; false if the suite transaction is gone.
    async fn rewind_if_dirty(&mut self) -> bool {
        if !self.dirty {
            return true;
        }
        self.dirty = false;
        let rewound = B::rewind(&mut self.transaction, false).await;
        matches!(rewound, Ok(Rewind::Clean | Rewind::Violated(_)))
    }
}

impl<B: Backend> CommittedState<B> {
    /// Restores the baseline; if that fails, replaces the database with a new copy of the
    /// template, so the next test never sees what this one left.
    async fn restore(&mut self) -> Result<()> {
        // A transaction the test left open is rolled back (an error just means none was).
        let _ = B::execute_script(&mut self.connection, "ROLLBACK").await;
        let restored = restore::restore::<B>(&mut self.connection, &self.catalog, self.sequences)
            .await
            .map_err(|message| Error::Setup {
                suite: self.target.suite,
                message: format!("restoring {}: {message}", self.database.name()),
            });
        if restored.is_err() {
            let (database, connection, catalog) =
                committed_copy(&self.target, &self.template).await?;
            self.connection = connection;
            self.database = database;
            self.catalog = catalog;
        }
        self.dirty = false;
        Ok(())
    }
}

/// A committed suite's database: a copy of `template`, a connection of its own for the tests,
/// and its catalog (read once: tests do not change the schema).
async fn committed_copy<B: Backend>(
    target: &Target<B>,
    template: &str,
) -> Result<(
    TestDatabase<B>,
    <B::Database as Database>::Connection,
    Catalog,
)> {
    let database = target.clone_from(template, true).await?;
    let mut connection = database.connect().await?;
    let catalog = B::catalog(&mut connection)
        .await
        .map_err(|source| database.error("read the catalog", source))?;
    Ok((database, connection, catalog))
}

impl<B: Backend> FreshState<B> {
    /// Starts copying the template for the next test, in the background, unless a copy is
    /// already on its way.
    fn prepare_next(&self) {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.is_some() {
            return;
        }
        let target = self.target.clone();
        let template = self.template.clone();
        let task =
            crate::cleanup::spawn_awaited(async move { target.clone_from(&template, false).await });
        if let Ok(task) = task {
            *spare = Some(task);
        }
    }

    /// The copy prepared ahead (or a new one), and the next one started.
    async fn take(&self) -> Result<TestDatabase<B>> {
        let spare = self.spare.lock().unwrap_or_else(|p| p.into_inner()).take();
        let database = match spare {
            Some(task) => match runtime::join(task).await? {
                Ok(database) => database,
                // The template may have been replaced since: one more try, from scratch.
                Err(_) => self.target.clone_from(&self.template, false).await?,
            },
            None => self.target.clone_from(&self.template, false).await?,
        };
        self.prepare_next();
        Ok(database)
    }
}

/// One test's hold on one database.
pub enum Session<'a, B: Backend> {
    /// The suite transaction, inside the test savepoint.
    Savepoint(MutexGuard<'a, SavepointState<B>>),
    /// The test's own transaction, inside the test savepoint.
    Transaction {
        /// The transaction.
        transaction: Transaction<'static, B::Database>,
        /// Whether deferred constraints must be checked at the end.
        check: bool,
        /// The database it is on.
        database: &'a TestDatabase<B>,
    },
    /// The committed database's connection.
    Committed(MutexGuard<'a, CommittedState<B>>),
    /// The test's own database.
    FreshDatabase(FreshSession<B>),
}

/// A test's own copy of the baseline: removed when the test ends, kept if it failed and
/// `TESTDB_KEEP=1`.
pub struct FreshSession<B: Backend> {
    connection: PoolConnection<B::Database>,
    database: Option<TestDatabase<B>>,
}

impl<B: Backend> Session<'_, B> {
    pub(crate) fn connection(&mut self) -> &mut <B::Database as Database>::Connection {
        match self {
            Session::Savepoint(state) => &mut state.transaction,
            Session::Transaction { transaction, .. } => transaction,
            Session::Committed(state) => &mut state.connection,
            Session::FreshDatabase(fresh) => &mut fresh.connection,
        }
    }

    pub(crate) fn handle(&self) -> Arc<dyn Any + Send + Sync> {
        let (database, isolation) = match self {
            Session::Savepoint(state) => (&state.database, Isolation::Savepoint),
            Session::Transaction { database, .. } => (*database, Isolation::Transaction),
            Session::Committed(state) => (&state.database, Isolation::Committed),
            Session::FreshDatabase(fresh) => match &fresh.database {
                Some(database) => (database, Isolation::FreshDatabase),
                None => return Arc::new(()),
            },
        };
        Arc::new(Handle::new(database, isolation))
    }

    /// Ends the test: undoes what it did (checking deferred constraints first where a commit
    /// would have); returns what was found, and the database's name.
    pub(crate) async fn finish(self, failed: bool) -> Result<(Rewind, String)> {
        match self {
            Session::Savepoint(mut state) => {
                let check = state.check_each_test;
                let rewound = B::rewind(&mut state.transaction, check).await;
                state.dirty = false;
                let name = state.database.name().to_owned();
                rewound
                    .map(|rewind| (rewind, name))
                    .map_err(|source| state.database.error("roll back the test", source))
            }
            Session::Transaction {
                mut transaction,
                check,
                database,
            } => {
                let rewound = B::rewind(&mut transaction, check).await;
                let name = database.name().to_owned();
                match rewound {
                    Ok(Rewind::Escaped(message)) => {
                        // Already ended by the test: nothing left to roll back.
                        drop(transaction);
                        Ok((Rewind::Escaped(message), name))
                    }
                    Ok(rewind) => transaction
                        .rollback()
                        .await
                        .map(|()| (rewind, name))
                        .map_err(|source| database.error("roll back the test", source)),
                    Err(source) => Err(database.error("roll back the test", source)),
                }
            }
            Session::Committed(mut state) => {
                let name = state.database.name().to_owned();
                state.restore().await?;
                Ok((Rewind::Clean, name))
            }
            Session::FreshDatabase(mut fresh) => {
                let database = fresh.database.take();
                // Closes the test's connection first.
                drop(fresh);
                let name = database
                    .as_ref()
                    .map(|database| database.name().to_owned())
                    .unwrap_or_default();
                if let Some(database) = database {
                    dispose(database, failed);
                }
                Ok((Rewind::Clean, name))
            }
        }
    }
}

impl<B: Backend> Drop for FreshSession<B> {
    fn drop(&mut self) {
        // Reached with the database still here only when the test did not finish: it failed.
        if let Some(database) = self.database.take() {
            dispose(database, true);
        }
    }
}

/// Removes a test's own database (in the background), or keeps it if the test failed and
/// `TESTDB_KEEP=1`.
fn dispose<B: Backend>(database: TestDatabase<B>, failed: bool) {
    if failed && std::env::var("TESTDB_KEEP").is_ok_and(|value| value == "1") {
        keep(database);
    } else {
        database.remove_later();
    }
}

fn keep<B: Backend>(database: TestDatabase<B>) {
    eprintln!(
        "testdb: kept {} database {} of a failed test (TESTDB_KEEP=1): {}",
        B::NAME,
        database.name(),
        database.redacted_url()
    );
    database.keep();
}

/// `Debug` for the types above: their names only (connections and transactions have nothing
/// useful to show, and a URL may hold a password).
macro_rules! name_only_debug {
    ($($name:ident),*) => {$(
        impl<B: Backend> std::fmt::Debug for $name<B> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name)).finish_non_exhaustive()
            }
        }
    )*};
}

name_only_debug!(
    Building,
    Live,
    SavepointState,
    CommittedState,
    FreshState,
    FreshSession
);

impl<B: Backend> std::fmt::Debug for Session<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}
