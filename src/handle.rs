//! What a running test can hand to other connections and processes: its database's name, URL and
//! pool, and the isolation that says what they will see there.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::Pool;

use crate::backend::ConnectOptions;
use crate::fence::Fence;
use crate::{Backend, Error, Isolation, Result, TestDatabase};

/// A test database as other connections and processes reach it: its name, URL and pool, and the
/// isolation the test runs in, which says whether they see the test's data.
///
/// Inside a suite's test, [`current`] gives the test's own; [`TestDatabase::handle`] gives one
/// for a database created by hand (committed: everything written to it is visible).
pub struct Handle<B: Backend> {
    name: String,
    url: String,
    pool: Pool<B::Database>,
    options: ConnectOptions<B::Database>,
    isolation: Isolation,
    // Set once other connections are handed out: in isolations that never commit, what they
    // commit is not undone, so the database (a leased copy) is not given back as clean.
    reached: Arc<AtomicBool>,
}

impl<B: Backend> Handle<B> {
    pub(crate) fn new(database: &TestDatabase<B>, isolation: Isolation) -> Self {
        let reached = match isolation {
            // Committed restores what any connection writes during a test, but a connection to
            // `url` may write after the test's restore, where no restore follows.
            Isolation::Savepoint | Isolation::Transaction | Isolation::Committed => {
                database.reached()
            }
            // A fresh copy is never given back.
            _ => Arc::new(AtomicBool::new(false)),
        };
        Handle {
            name: database.name().to_owned(),
            url: database.url().to_owned(),
            pool: database.pool().clone(),
            options: database.connect_options().clone(),
            isolation,
            reached,
        }
    }

    /// The database's name (PostgreSQL) or file (SQLite).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A connection string for the database. It holds the server's password if the configured
    /// URL has one: do not print it.
    ///
    /// Connections made with it are not the suite's: in `Savepoint`, `Transaction` and
    /// `Committed`, the suite's copy of the template is then removed when the process ends,
    /// rather than given back for the next process (what they commit after a test's restore, or
    /// at all outside `Committed`, nothing undoes).
    pub fn url(&self) -> &str {
        self.reached.store(true, Ordering::SeqCst);
        &self.url
    }

    /// Options that connect to the database, for a connection or pool of your own; as with
    /// [`url`](Handle::url), what such connections commit is theirs.
    pub fn connect_options(&self) -> &ConnectOptions<B::Database> {
        self.reached.store(true, Ordering::SeqCst);
        &self.options
    }

    /// A pool on the database. Its connections see what the isolation lets them: the test's
    /// data in `Committed` and `FreshDatabase`, the baseline only in `Transaction` and
    /// `Savepoint`.
    ///
    /// In `Savepoint` and `Transaction`, what they (or connections to [`url`](Handle::url))
    /// commit is not undone: the suite's copy of the template is then removed when the process
    /// ends, rather than given back for the next process.
    pub fn pool(&self) -> &Pool<B::Database> {
        // In Committed the pool is the suite's own: what it writes is restored, and its
        // connections end with the test's.
        if self.isolation != Isolation::Committed {
            self.reached.store(true, Ordering::SeqCst);
        }
        &self.pool
    }

    /// The isolation the test runs in.
    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// This handle, or an error naming the isolation to use if other connections cannot see what
    /// the test sees; `what` names who was going to look.
    pub fn require_visible(&self, what: &str) -> Result<&Self> {
        if self.isolation.is_visible_to_others() {
            Ok(self)
        } else {
            Err(Error::NotVisible {
                what: what.to_owned(),
                isolation: self.isolation,
                database: self.name.clone(),
            })
        }
    }
}

impl<B: Backend> TestDatabase<B> {
    /// A handle on this database, for other connections and processes: everything committed to
    /// it is visible, so its isolation is [`Isolation::Committed`].
    pub fn handle(&self) -> Handle<B> {
        Handle::new(self, Isolation::Committed)
    }
}

impl<B: Backend> Clone for Handle<B> {
    fn clone(&self) -> Self {
        Handle {
            name: self.name.clone(),
            url: self.url.clone(),
            pool: self.pool.clone(),
            options: self.options.clone(),
            isolation: self.isolation,
            reached: self.reached.clone(),
        }
    }
}

impl<B: Backend> fmt::Debug for Handle<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No URL: it may hold a password.
        f.debug_struct("Handle")
            .field("backend", &B::NAME)
            .field("name", &self.name)
            .field("isolation", &self.isolation)
            .finish_non_exhaustive()
    }
}

/// The running test's databases, and its fences (which connections it takes join).
pub(crate) struct Current {
    pub(crate) handles: Vec<Arc<dyn Any + Send + Sync>>,
    pub(crate) fences: Vec<Arc<Fence>>,
}

tokio::task_local! {
    static CURRENT: Arc<Current>;
}

/// Runs `future` as the test whose databases and fences `current` holds.
pub(crate) async fn scope<F: Future>(current: Current, future: F) -> F::Output {
    CURRENT.scope(Arc::new(current), future).await
}

/// The fences of the test running in this task, if any.
pub(crate) fn current_fences() -> Vec<Arc<Fence>> {
    CURRENT
        .try_with(|current| current.fences.clone())
        .unwrap_or_default()
}

/// The database (of backend `B`) of the suite test running in this task: the first of that
/// backend if the suite has several.
///
/// Fails outside a suite's test, or in a task the test spawned (the handle does not follow
/// spawned tasks: clone it into them).
pub fn current<B: Backend>() -> Result<Handle<B>> {
    let found = CURRENT.try_with(|current| {
        current
            .handles
            .iter()
            .find_map(|handle| handle.downcast_ref::<Handle<B>>().cloned())
    });
    match found {
        Ok(Some(handle)) => Ok(handle),
        Ok(None) => Err(Error::NoCurrentTest {
            reason: format!("the running suite has no {} database", B::NAME),
        }),
        Err(_) => Err(Error::NoCurrentTest {
            reason: "no suite test runs in this task (testdb::current works inside \
                     Suite::run, in the test's own task)"
                .into(),
        }),
    }
}
