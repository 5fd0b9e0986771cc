use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::pool::{PoolConnection, PoolOptions};
use sqlx::{Connection, Database, Pool};

use crate::backend::ConnectOptions;
use crate::fence::{self, Fence, Fences};
use crate::fixtures::{Fixtures, Loaded};
use crate::migrations::Migrations;
use crate::{Backend, Error, OwnedDatabase, Result, cleanup, runtime};

/// Connections a test database's pool holds unless [`Builder::pool_options`] says otherwise.
const DEFAULT_MAX_CONNECTIONS: u32 = 5;

/// A database created for tests, owned by testdb, and removed when it is dropped.
///
/// Connections and the pool are opened on testdb's own runtime, so a `TestDatabase` kept in a
/// `static` keeps working across `#[tokio::test]` functions, each of which has a runtime of its
/// own that dies with it. Plain `#[test]` functions use [`block_on`](crate::block_on).
///
/// Dropping it removes the database (even while other connections to it are open). A `static` is
/// never dropped: those are removed when the process exits, and databases left by a process that
/// was killed are removed by the next process that creates one on the same server or directory.
pub struct TestDatabase<B: Backend> {
    name: String,
    url: String,
    redacted_url: String,
    pool: Pool<B::Database>,
    // Shared: what stops a running test holds a copy.
    connect_options: Arc<ConnectOptions<B::Database>>,
    registration: u64,
    owned: Arc<Mutex<Option<B::Owned>>>,
    // A leased copy that is as its template has it (every test on it undone): given back for the
    // next lease rather than removed.
    reusable: Arc<AtomicBool>,
    // Other connections were handed out where what they commit is not undone: never reusable.
    reached: Arc<AtomicBool>,
    fences: Arc<Fences>,
}

/// Configures and creates a [`TestDatabase`]; see [`TestDatabase::builder`].
pub struct Builder<B: Backend> {
    backend: B,
    migrations: Option<Migrations>,
    fixtures: Option<Fixtures>,
    pool_options: Option<PoolOptions<B::Database>>,
}

impl<B: Backend> TestDatabase<B> {
    /// Starts configuring a test database on `backend`.
    pub fn builder(backend: B) -> Builder<B> {
        Builder {
            backend,
            migrations: None,
            fixtures: None,
            pool_options: None,
        }
    }

    /// Creates an empty test database on `backend`.
    pub async fn create(backend: B) -> Result<Self> {
        Self::builder(backend).create().await
    }
}

impl<B: Backend> Builder<B> {
    /// Applies these migrations when the database is created: a sqlx `Migrator` (e.g.
    /// `sqlx::migrate!()`), or the path of a directory of sqlx migration files.
    pub fn migrations(mut self, migrations: impl Into<Migrations>) -> Self {
        self.migrations = Some(migrations.into());
        self
    }

    /// Loads these fixtures after the migrations, when the database is created (and again when a
    /// suite rebuilds it). A failed load removes the database.
    pub fn fixtures(mut self, fixtures: Fixtures) -> Self {
        self.fixtures = Some(fixtures);
        self
    }

    /// Options for the database's pool. By default: at most 5 connections, never closed for being
    /// idle or old, tested before they are handed out.
    ///
    /// The pool opens connections when they are asked for (one at creation); where connections
    /// depend on a runtime (PostgreSQL), testdb opens again on its own runtime any connection
    /// the pool opens while a caller's runtime polls it (where it would die with that runtime).
    ///
    /// testdb sets the pool's `after_connect` and `before_acquire` hooks for this, and to stop what
    /// a suite's test leaves running on the connections it took: any set in `options` are
    /// replaced (`test_before_acquire` is kept).
    pub fn pool_options(mut self, options: PoolOptions<B::Database>) -> Self {
        self.pool_options = Some(options);
        self
    }

    /// Creates the database and applies the migrations. On error nothing is left behind.
    pub async fn create(self) -> Result<TestDatabase<B>> {
        runtime::run(self.create_here()).await?
    }

    /// [`create`](Builder::create) for synchronous code: blocks until the database is ready.
    ///
    /// Usable to initialise a `static` (e.g. in a `LazyLock`), from plain and async tests alike.
    pub fn create_blocking(self) -> Result<TestDatabase<B>> {
        runtime::block_on(self.create_here())?
    }

    // Runs on testdb's runtime, so that the pool's first connections live there.
    async fn create_here(self) -> Result<TestDatabase<B>> {
        let migrations = match self.migrations {
            Some(migrations) => Some(migrations.load().await?),
            None => None,
        };
        cleanup::sweep_once(&self.backend).await?;
        let owned = self.backend.create().await?;
        // From here on, dropping `database` removes what was created.
        let database = TestDatabase::from_owned(owned, self.pool_options).await?;
        if let Some(migrations) = migrations {
            migrations
                .migrator()
                .run(&database.pool)
                .await
                .map_err(|source| Error::Migrate {
                    backend: B::NAME,
                    database: database.name.clone(),
                    source,
                })?;
        }
        if let Some(fixtures) = &self.fixtures {
            database.load(fixtures).await?;
        }
        Ok(database)
    }

    pub(crate) fn backend(&self) -> &B {
        &self.backend
    }

    pub(crate) fn configured_pool(&self) -> Option<PoolOptions<B::Database>> {
        self.pool_options.clone()
    }

    /// Feeds everything this builder puts into a database to `hasher`: the backend and its
    /// template format, the migrations' versions and checksums, the fixture files' contents.
    pub(crate) async fn fingerprint(&self, hasher: &mut impl std::hash::Hasher) -> Result<()> {
        use std::hash::Hash;
        (B::NAME, B::FORMAT).hash(hasher);
        match &self.migrations {
            Some(migrations) => migrations.fingerprint(hasher).await?,
            None => 0u8.hash(hasher),
        }
        match &self.fixtures {
            Some(fixtures) => fixtures.fingerprint(hasher)?,
            None => 0u8.hash(hasher),
        }
        Ok(())
    }
}

impl<B: Backend> TestDatabase<B> {
    /// Takes charge of a database the backend created: removed when dropped, or at exit. Opens
    /// its pool, with one connection.
    pub(crate) async fn from_owned(
        owned: B::Owned,
        pool_options: Option<PoolOptions<B::Database>>,
    ) -> Result<TestDatabase<B>> {
        let name = owned.name().to_owned();
        let url = owned.url().to_owned();
        let redacted_url = owned.redacted_url();
        let connect_options = owned.connect_options();
        let slot = Arc::new(Mutex::new(Some(owned)));

        let pool_options = pool_options.unwrap_or_else(|| {
            PoolOptions::new()
                .max_connections(DEFAULT_MAX_CONNECTIONS)
                .idle_timeout(None)
                .max_lifetime(None)
                .test_before_acquire(true)
                .acquire_timeout(Duration::from_secs(30))
        });
        let fences = Fences::new();
        let pool = watched::<B>(pool_options, connect_options.clone(), fences.clone())
            .connect_lazy_with(connect_options.clone());
        let reusable = Arc::new(AtomicBool::new(false));
        let reached = Arc::new(AtomicBool::new(false));
        let registration = cleanup::register(remover::<B>(
            slot.clone(),
            pool.clone(),
            reusable.clone(),
            reached.clone(),
        ));
        let database = TestDatabase {
            name,
            url,
            redacted_url,
            pool,
            connect_options: Arc::new(connect_options),
            registration,
            owned: slot,
            reusable,
            reached,
            fences,
        };
        database.open_first().await?;
        Ok(database)
    }

    /// Closes every connection and hands the database back, no longer removed on drop (it is
    /// about to become a template).
    pub(crate) async fn into_owned(self) -> Option<B::Owned> {
        drop(cleanup::unregister(self.registration)?);
        self.pool.close().await;
        self.owned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

/// testdb's hooks on a test database's pool: every connection it opens lives on testdb's runtime
/// (one opened on a test's runtime would die with it, perhaps while another test uses it), and
/// every connection it hands out joins the fences of the tests it belongs to. They replace any
/// hooks set in the options given to [`Builder::pool_options`].
fn watched<B: Backend>(
    options: PoolOptions<B::Database>,
    connect: ConnectOptions<B::Database>,
    fences: Arc<Fences>,
) -> PoolOptions<B::Database> {
    let ping = options.get_test_before_acquire();
    let connected = fences.clone();
    options
        .test_before_acquire(false)
        .after_connect(move |conn, _| {
            let fences = connected.clone();
            let connect = connect.clone();
            let admitted = connect.clone();
            Box::pin(async move {
                if B::CONNECTIONS_NEED_A_RUNTIME && !runtime::is_current() {
                    let reopened = runtime::run(async move {
                        <<B::Database as Database>::Connection as Connection>::connect_with(
                            &connect,
                        )
                        .await
                    })
                    .await
                    .map_err(|err| sqlx::Error::Io(std::io::Error::other(err.to_string())))??;
                    let opened_here = std::mem::replace(conn, reopened);
                    let _ = opened_here.close().await;
                }
                B::admit(conn, &admitted).await?;
                if fences.in_use() {
                    B::join(conn, &fences.attribute()).await?;
                }
                Ok(())
            })
        })
        .before_acquire(move |conn, _| {
            let fences = fences.clone();
            Box::pin(async move {
                let reached = fences.in_use() && B::join(conn, &fences.attribute()).await?;
                if ping && !reached {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

fn remover<B: Backend>(
    slot: Arc<Mutex<Option<B::Owned>>>,
    pool: Pool<B::Database>,
    reusable: Arc<AtomicBool>,
    reached: Arc<AtomicBool>,
) -> Box<dyn FnOnce() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send> {
    Box::new(move || {
        // Closing marks the pool closed at once; connections still checked out are cut off by
        // the removal itself.
        drop(pool.close());
        let owned = slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let reusable = reusable.load(Ordering::SeqCst) && !reached.load(Ordering::SeqCst);
        Box::pin(async move {
            if let Some(owned) = owned {
                let name = owned.name().to_owned();
                let removed = if reusable {
                    owned.release().await
                } else {
                    owned.destroy().await
                };
                if let Err(err) = removed {
                    // Drop cannot return an error; the next run's sweep removes what is left.
                    eprintln!(
                        "testdb: could not remove {} database {name}: {err:?}",
                        B::NAME
                    );
                }
            }
        })
    })
}

impl<B: Backend> TestDatabase<B> {
    /// How messages name the database: its name (PostgreSQL) or its file (SQLite).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A connection string for the database, usable by other processes.
    ///
    /// It contains the server's password if the configured URL has one: do not print it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// [`url`](TestDatabase::url) with any password replaced by `***`: the one to print.
    pub fn redacted_url(&self) -> &str {
        &self.redacted_url
    }

    /// The database's pool.
    ///
    /// Its connections are tested before they are handed out, so a connection that the pool
    /// opened inside a runtime that has since ended is replaced rather than returned.
    pub fn pool(&self) -> &Pool<B::Database> {
        &self.pool
    }

    /// The options to open a connection to the database yourself.
    pub fn connect_options(&self) -> &ConnectOptions<B::Database> {
        &self.connect_options
    }

    pub(crate) fn shared_connect_options(&self) -> Arc<ConnectOptions<B::Database>> {
        self.connect_options.clone()
    }

    /// Acquires a connection from the pool, opening any new connection on testdb's runtime so that
    /// it outlives the caller's runtime.
    pub async fn acquire(&self) -> Result<PoolConnection<B::Database>> {
        self.acquire_for(None).await
    }

    /// Opens a new connection, outside the pool, on testdb's runtime.
    pub async fn connect(&self) -> Result<<B::Database as Database>::Connection> {
        let options = self.connect_options.clone();
        let connected = runtime::run(async move {
            let mut conn =
                <<B::Database as Database>::Connection as Connection>::connect_with(&options)
                    .await?;
            B::admit(&mut conn, &options).await?;
            Ok(conn)
        })
        .await?;
        connected.map_err(|source| self.error("connect", source))
    }

    /// Loads fixtures into the database, committed: every row or none.
    pub async fn load(&self, fixtures: &Fixtures) -> Result<Loaded> {
        /// Closes the connection of a load cut short (its future dropped mid-statement, say in
        /// a `COPY`) rather than giving it back to the pool in a state the next user trips on.
        struct CloseIfCut<DB: Database>(PoolConnection<DB>, bool);
        impl<DB: Database> Drop for CloseIfCut<DB> {
            fn drop(&mut self) {
                if !self.1 {
                    self.0.close_on_drop();
                }
            }
        }
        let mut conn = CloseIfCut(self.acquire().await?, false);
        let loaded = crate::fixtures::load_into::<B>(&mut conn.0, fixtures, &self.name).await;
        conn.1 = true;
        loaded
    }

    /// Writes `tables` (all of them when empty) to a fixture file, `.json` or `.csv`, that loads
    /// back to the same rows; returns the number of rows written.
    pub async fn dump(&self, tables: &[&str], file: impl AsRef<std::path::Path>) -> Result<usize> {
        let mut conn = self.acquire().await?;
        crate::fixtures::dump_fixtures::<B>(&mut conn, tables, file).await
    }

    /// Removes the database in the background (dropping it would wait); the process waits for
    /// that at exit, unless removal is slow ([`Server::SLOW_REMOVAL`](crate::backend::Server::SLOW_REMOVAL): what an exit cuts short
    /// is removed by a later lease or sweep).
    pub(crate) fn remove_later(self) {
        cleanup::remove_in_background(self.registration, !B::SLOW_REMOVAL);
    }

    /// Whether the database (a leased copy) is as its template has it, so that it is given back
    /// for another lease rather than removed, when dropped or at exit.
    pub(crate) fn set_reusable(&self, reusable: bool) {
        self.reusable.store(reusable, Ordering::SeqCst);
    }

    /// The flag a [`Handle`](crate::Handle) sets once it hands out other connections.
    pub(crate) fn reached(&self) -> Arc<AtomicBool> {
        self.reached.clone()
    }

    /// Leaves the database in place (a failed test's, for inspection): not removed at drop or
    /// exit; the first run after this process ends sweeps it.
    pub(crate) fn keep(self) {
        drop(cleanup::unregister(self.registration));
        // Its owner record (lock file, advisory lock) must outlive this value: leak it.
        std::mem::forget(self.owned.lock().unwrap_or_else(|p| p.into_inner()).take());
    }

    /// Removes the database now, reporting any error (dropping it does the same, silently).
    pub async fn remove(self) -> Result<()> {
        // Once unregistered, `Drop` finds nothing left to do.
        let Some(remove) = cleanup::unregister(self.registration) else {
            return Ok(());
        };
        runtime::run(remove()).await
    }

    /// Opens the pool's first connection, here on testdb's runtime: proof that the database can
    /// be reached before any test relies on it. The pool opens the others when asked (lazily: a
    /// process holds the connections it uses), each on testdb's runtime too.
    async fn open_first(&self) -> Result<()> {
        let pool = self.pool.clone();
        // Back in the pool before this returns, so that the next acquire takes it rather than
        // opening a second.
        let opened = runtime::run(async move {
            let mut connection = pool.acquire().await?;
            connection.return_to_pool().await;
            Ok::<_, sqlx::Error>(())
        })
        .await?;
        opened.map_err(|source| self.error("connect", source))
    }

    /// The fences of the tests running on this database, which its pool's hooks consult.
    pub(crate) fn fences(&self) -> &Arc<Fences> {
        &self.fences
    }

    /// A pooled connection acquired on testdb's runtime, for testdb's own use, or as the own
    /// connection of the test that `fence` belongs to.
    pub(crate) async fn acquire_for(
        &self,
        fence: Option<Arc<Fence>>,
    ) -> Result<PoolConnection<B::Database>> {
        let pool = self.pool.clone();
        let acquired = runtime::run(fence::acquiring_for(
            fence,
            async move { pool.acquire().await },
        ))
        .await?;
        acquired.map_err(|source| self.error("acquire a connection", source))
    }

    pub(crate) fn error(&self, step: &str, source: sqlx::Error) -> Error {
        // A connection the server would not give: too many clients, or testdb's budget used up.
        if let Some(hint) = B::refused(&self.connect_options, &source) {
            return Error::Connect {
                backend: B::NAME,
                server: self.redacted_url.clone(),
                hint,
                source,
            };
        }
        Error::Database {
            backend: B::NAME,
            database: self.name.clone(),
            step: step.into(),
            source,
        }
    }
}

impl<B: Backend> Drop for TestDatabase<B> {
    fn drop(&mut self) {
        if let Some(remove) = cleanup::unregister(self.registration) {
            // Drop cannot await: remove on a thread of its own, which works whatever runtime (if
            // any) the caller is on.
            let _ = runtime::run_detached(remove());
        }
    }
}

impl<B: Backend> fmt::Debug for TestDatabase<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No URL: it may hold a password.
        f.debug_struct("TestDatabase")
            .field("backend", &B::NAME)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> fmt::Debug for Builder<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("backend", &self.backend)
            .field("migrations", &self.migrations)
            .finish_non_exhaustive()
    }
}
