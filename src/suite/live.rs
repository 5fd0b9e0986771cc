//! One database of a suite in each isolation, and one test's hold on it (a [`Session`]): what
//! every isolation does at a test's end lives here once, what differs lives in its own file.

use std::any::Any;
use std::sync::Arc;

use sqlx::Database;

use crate::fence::Fence;
use crate::suite::committed::{self, Committed};
use crate::suite::fresh::{self, Fresh};
use crate::suite::savepoint::{self, Savepoint};
use crate::suite::target::Target;
use crate::suite::template::TemplateKey;
use crate::suite::transaction::{self, Transactions};
use crate::{Backend, ConnectOptions, Handle, Isolation, Result, Rewind, TestDatabase, runtime};

/// How long ending a test that did not return may take in all (stopping what it left running,
/// rolling it back) before the suite gives its database up.
const END_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// One database of a suite, shared by its tests.
pub enum Live<B: Backend> {
    /// The suite transaction, used by one test at a time.
    Savepoint(Savepoint<B>),
    /// A committed copy of the baseline; each test opens a transaction of its own on it.
    Transaction(Transactions<B>),
    /// A committed copy of the baseline, used by one test at a time and restored after each.
    Committed(Committed<B>),
    /// The template each test's own copy comes from.
    FreshDatabase(Fresh<B>),
}

/// How a test ended, as far as undoing it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Its body returned (with an error if `failed`): deferred constraints are checked, as a
    /// commit would.
    Returned {
        /// Whether it returned an error.
        failed: bool,
    },
    /// It ran out of time, was cancelled (its future dropped) or panicked: what it left running
    /// is stopped first, and nothing is checked.
    Abandoned,
}

/// One test's hold on one database. However the test ends, its end runs: by
/// `finish`, or, if the session is dropped first (the test panicked or was
/// cancelled), on testdb's runtime, before the next test of the suite may begin.
pub struct Session<B: Backend> {
    held: Option<Held<B>>,
}

enum Held<B: Backend> {
    Savepoint(savepoint::Test<B>),
    Transaction(transaction::Test<B>),
    Committed(committed::Test<B>),
    FreshDatabase(fresh::Test<B>),
}

impl<B: Backend> Live<B> {
    /// The suite's database for `isolation`: a copy of its template leased for this process
    /// (for `FreshDatabase`, the template each test leases a copy of).
    pub(crate) async fn open(
        target: &Target<B>,
        key: &TemplateKey,
        index: usize,
        isolation: Isolation,
        sequences: bool,
    ) -> Result<Self> {
        let template = key.name(index);
        Ok(match isolation {
            Isolation::Savepoint => Live::Savepoint(
                Savepoint::new(target.lease(&template, 0).await?, target.suite, sequences).await?,
            ),
            Isolation::Committed => {
                Live::Committed(Committed::new(target, template, sequences).await?)
            }
            Isolation::FreshDatabase => Live::FreshDatabase(Fresh::new(target, template)),
            Isolation::Transaction => Live::Transaction(
                Transactions::new(target.lease(&template, 0).await?, sequences).await?,
            ),
        })
    }

    /// Hands the database to one test, once the tests it must wait for have ended; none if the
    /// suite must be built again (a test ended the transaction it was given).
    pub(crate) async fn session(&self) -> Result<Option<Session<B>>> {
        let held = match self {
            Live::Savepoint(live) => live.begin().await?.map(Held::Savepoint),
            Live::Transaction(live) => live.begin().await?.map(Held::Transaction),
            Live::Committed(live) => live.begin().await?.map(Held::Committed),
            Live::FreshDatabase(live) => live.begin().await?.map(Held::FreshDatabase),
        };
        Ok(held.map(|held| Session { held: Some(held) }))
    }
}

impl<B: Backend> Session<B> {
    pub(crate) fn connection(&mut self) -> &mut <B::Database as Database>::Connection {
        match self.held.as_mut() {
            Some(Held::Savepoint(test)) => test.connection(),
            Some(Held::Transaction(test)) => test.connection(),
            Some(Held::Committed(test)) => test.connection(),
            Some(Held::FreshDatabase(test)) => test.connection(),
            // Only `finish` and `drop` take it, and both consume the session.
            None => unreachable!("a session's test is held until it ends"),
        }
    }

    /// The test's database, its fence (which the connections it takes from the database's pool
    /// join), and its isolation.
    fn parts(&self) -> Option<(&TestDatabase<B>, &Arc<Fence>, Isolation)> {
        let (database, opened, isolation) = match self.held.as_ref()? {
            Held::Savepoint(test) => (test.database(), test.opened(), Isolation::Savepoint),
            Held::Transaction(test) => (test.database(), test.opened(), Isolation::Transaction),
            Held::Committed(test) => (test.database(), test.opened(), Isolation::Committed),
            Held::FreshDatabase(test) => (test.database(), test.opened(), Isolation::FreshDatabase),
        };
        Some((database, opened.fence(), isolation))
    }

    /// The test's database, as [`current`](crate::current) hands it out.
    pub(crate) fn handle(&self) -> Arc<dyn Any + Send + Sync> {
        match self.parts() {
            Some((database, _, isolation)) => Arc::new(Handle::new(database, isolation)),
            None => Arc::new(()),
        }
    }

    /// Ends the test: stops what it left running, undoes what it did (checking deferred
    /// constraints first where a commit would have); returns what was found, and the database's
    /// name.
    pub(crate) async fn finish(mut self, ending: Ending) -> Result<(Rewind, String)> {
        match self.held.take() {
            Some(held) => held.end(ending).await,
            None => Ok((Rewind::Clean, String::new())),
        }
    }
}

impl<B: Backend> Held<B> {
    async fn end(self, ending: Ending) -> Result<(Rewind, String)> {
        let ended = async move {
            match self {
                Held::Savepoint(test) => test.end(ending).await,
                Held::Transaction(test) => test.end(ending).await,
                Held::Committed(test) => test.end(ending).await,
                Held::FreshDatabase(test) => test.end(ending).await,
            }
        };
        if ending != Ending::Abandoned {
            return ended.await;
        }
        // Dropped unfinished, its test's database is given up: marked broken, or removed.
        tokio::time::timeout(END_LIMIT, ended)
            .await
            .unwrap_or_else(|_| {
                Err(crate::Error::Runtime {
                    reason: format!(
                        "ending a test that did not return took longer than {END_LIMIT:?}"
                    ),
                })
            })
    }
}

impl<B: Backend> Drop for Session<B> {
    fn drop(&mut self) {
        // Reached with the test still held only when it did not finish: it panicked, or its
        // future was dropped. Its end runs on testdb's runtime; the next test waits for it.
        if let Some(mut held) = self.held.take() {
            if let Held::Transaction(test) = &mut held {
                test.mark_ending();
            }
            let _ = crate::cleanup::spawn_awaited(async move {
                let _ = held.end(Ending::Abandoned).await;
            });
        }
    }
}

/// What every isolation does before it undoes a test: makes sure nothing the test started is still
/// running, so that nothing commits after the test ended. After a test that returned, the
/// connections it took from the pool that are still busy are ended; after one that did not, its
/// fence is closed, and what runs on its own connection and on those it took is stopped from
/// another connection; then its own connection is made ready for testdb's statements again.
pub(crate) async fn stop<B: Backend>(
    connection: &mut <B::Database as Database>::Connection,
    watch: Option<&B::Watch>,
    fence: &Arc<Fence>,
    database: &TestDatabase<B>,
    ending: Ending,
) -> Result<()> {
    match ending {
        Ending::Returned { .. } => {
            if fence.taken().is_empty() {
                return Ok(());
            }
            B::end_taken(connection, database.connect_options(), fence).await
        }
        Ending::Abandoned => {
            let options = database.shared_connect_options();
            // Closed (and what runs stopped) already if the test's own future was still alive.
            if fence.close() {
                interrupt::<B>(options.clone(), fence.clone(), false).await?;
            }
            let settled = tokio::time::timeout(SETTLE_LIMIT, B::settle(connection, watch)).await;
            let settled = match settled {
                Ok(settled) => settled,
                Err(_) => {
                    // A statement that would not stop: its connection goes, and with it the
                    // database it held (the caller gives that up on this error).
                    interrupt::<B>(options.clone(), fence.clone(), true).await?;
                    tokio::time::timeout(SETTLE_LIMIT, B::settle(connection, watch))
                        .await
                        .unwrap_or_else(|_| {
                            Err(sqlx::Error::Io(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "the statement the test left running would not stop",
                            )))
                        })
                }
            };
            settled.map_err(|source| database.error("wait for the test's last statement", source))
        }
    }
}

/// How long the statement a test that did not return left running may take to stop once asked,
/// before its connection is ended.
const SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Stops, on testdb's runtime, what a test that did not return still runs.
async fn interrupt<B: Backend>(
    options: Arc<ConnectOptions<B::Database>>,
    fence: Arc<Fence>,
    end_own: bool,
) -> Result<()> {
    runtime::run(async move { B::interrupt(&options, &fence, end_own).await }).await?
}

/// What stops a test that did not return while its own future is still alive — before the
/// connections of its own that it holds (which may hold locks that a statement it left waiting
/// on a pooled connection waits for) go with that future.
pub struct Stopper {
    fence: Arc<Fence>,
    interrupt: Box<dyn Fn() -> LocalStop + Send + Sync>,
}

type LocalStop = std::pin::Pin<Box<dyn Future<Output = Result<()>> + Send>>;

impl Stopper {
    /// The fence of the test it stops.
    pub(crate) fn fence(&self) -> &Arc<Fence> {
        &self.fence
    }

    /// Closes the test's fence and stops what it runs, unless that was done already.
    pub(crate) async fn stop(&self) {
        if self.fence.close() {
            let _ = (self.interrupt)().await;
        }
    }

    /// [`stop`](Stopper::stop), blocking: for a test being dropped (cancelled, or panicking).
    pub(crate) fn stop_blocking(&self) {
        if self.fence.close() {
            let _ = runtime::block_on((self.interrupt)());
        }
    }
}

impl<B: Backend> Session<B> {
    /// What stops the test from outside; its fence is the test's.
    pub(crate) fn stopper(&self) -> Option<Stopper> {
        let (database, fence, _) = self.parts()?;
        let options = database.shared_connect_options();
        let fence = fence.clone();
        let stopping = fence.clone();
        Some(Stopper {
            fence,
            interrupt: Box::new(move || {
                Box::pin(interrupt::<B>(options.clone(), stopping.clone(), false))
            }),
        })
    }
}

/// `Debug` for the types above: their names only (connections and transactions have nothing
/// useful to show, and a URL may hold a password).
macro_rules! name_only_debug {
    ($($name:path),*) => {$(
        impl<B: Backend> std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name)).finish_non_exhaustive()
            }
        }
    )*};
}

impl std::fmt::Debug for Stopper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stopper").finish_non_exhaustive()
    }
}

name_only_debug!(
    Live<B>,
    Session<B>,
    Savepoint<B>,
    Transactions<B>,
    Committed<B>,
    Fresh<B>
);
