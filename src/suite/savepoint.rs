//! Savepoint isolation: on a copy of the template leased for this process, the suite transaction
//! is opened, never committed; each test runs in the test savepoint and is rolled back to it. One
//! test at a time. Nothing is ever committed, so the copy is as clean afterwards as before, even
//! when the process is killed (the server rolls its transaction back): it is given back for the
//! next process to lease.

use std::sync::Arc;

use sqlx::Database;
use sqlx::pool::PoolConnection;
use sqlx_core::transaction::TransactionManager;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::fence::Opened;
use crate::suite::live::{Ending, stop};
use crate::{Backend, Error, Result, Rewind, TestDatabase};

/// A savepoint suite's database and its suite transaction, used by one test at a time.
pub struct Savepoint<B: Backend> {
    state: Arc<Mutex<State<B>>>,
}

struct State<B: Backend> {
    // Declared first, so returned before the database is removed.
    connection: PoolConnection<B::Database>,
    watch: B::Watch,
    baseline: B::Baseline,
    sequences: bool,
    // From a test's start until it is rolled back cleanly: a test whose end failed or was cut
    // short, or that ended the suite transaction itself, leaves it set, and the suite is built
    // again.
    broken: bool,
    database: TestDatabase<B>,
}

/// One test's hold on the suite transaction.
pub(crate) struct Test<B: Backend> {
    state: OwnedMutexGuard<State<B>>,
    opened: Opened,
}

impl<B: Backend> Savepoint<B> {
    /// Opens the suite transaction on `database` (a copy of the template) and establishes the test
    /// savepoint in it.
    pub(crate) async fn new(
        database: TestDatabase<B>,
        suite: &'static str,
        sequences: bool,
    ) -> Result<Self> {
        let mut connection = database.acquire_for(None).await?;
        <<B::Database as Database>::TransactionManager>::begin(&mut connection, None)
            .await
            .map_err(|source| database.error("begin the suite transaction", source))?;
        match B::checkpoint(&mut connection).await {
            Ok(Ok(())) => {}
            Ok(Err(message)) => {
                return Err(Error::DeferredConstraint {
                    suite,
                    database: database.name().to_owned(),
                    message,
                });
            }
            Err(source) => return Err(database.error("establish the test savepoint", source)),
        }
        let baseline = B::baseline(&mut connection, crate::Isolation::Savepoint)
            .await
            .map_err(|source| database.error("read the session's baseline", source))?;
        let watch = B::watch(&mut connection)
            .await
            .map_err(|source| database.error("watch the suite's connection", source))?;
        database.set_reusable(true);
        Ok(Savepoint {
            state: Arc::new(Mutex::new(State {
                connection,
                watch,
                baseline,
                sequences,
                broken: false,
                database,
            })),
        })
    }

    /// Waits for the previous test to end, then hands the suite transaction to the next; none if
    /// the suite must be built again.
    pub(crate) async fn begin(&self) -> Result<Option<Test<B>>> {
        let mut state = self.state.clone().lock_owned().await;
        if state.broken {
            return Ok(None);
        }
        state.broken = true;
        state.database.set_reusable(false);
        let opened = state.database.fences().open();
        B::enter(&state.watch, opened.fence());
        Ok(Some(Test { state, opened }))
    }
}

impl<B: Backend> Test<B> {
    pub(crate) fn connection(&mut self) -> &mut <B::Database as Database>::Connection {
        &mut self.state.connection
    }

    pub(crate) fn database(&self) -> &TestDatabase<B> {
        &self.state.database
    }

    pub(crate) fn opened(&self) -> &Opened {
        &self.opened
    }

    /// Rolls the test back to the savepoint (checking deferred constraints first if it
    /// returned), once nothing it started is running.
    pub(crate) async fn end(mut self, ending: Ending) -> Result<(Rewind, String)> {
        let state = &mut *self.state;
        let name = state.database.name().to_owned();
        stop::<B>(
            &mut state.connection,
            Some(&state.watch),
            self.opened.fence(),
            &state.database,
            ending,
        )
        .await?;
        let check = matches!(ending, Ending::Returned { .. });
        let rewound = B::rewind(
            &mut state.connection,
            check,
            &state.baseline,
            state.sequences,
        )
        .await;
        match rewound {
            Ok(rewind) => {
                state.broken = matches!(rewind, Rewind::Escaped(_));
                // Rolled back, sequences and all: as clean as it was leased.
                state
                    .database
                    .set_reusable(!state.broken && state.sequences);
                Ok((rewind, name))
            }
            Err(source) => Err(state.database.error("roll back the test", source)),
        }
    }
}
