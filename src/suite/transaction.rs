//! Transaction isolation: the baseline is committed in a copy of the template leased for this
//! process; each test gets a pooled connection inside a transaction of its own, rolled back at its
//! end. Tests run in parallel. The copy is given back for the next lease unless a test committed
//! in it (or left sequences moved).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use sqlx::pool::PoolConnection;
use sqlx::{Database, SqlSafeStr};
use sqlx_core::transaction::TransactionManager;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::fence::Opened;
use crate::suite::live::{Ending, stop};
use crate::{Backend, Result, Rewind, TestDatabase, runtime};

type Manager<B> = <<B as crate::backend::Driver>::Database as Database>::TransactionManager;

/// A transaction suite's database: a committed copy of the baseline.
pub struct Transactions<B: Backend> {
    shared: Arc<Shared<B>>,
}

struct Shared<B: Backend> {
    database: TestDatabase<B>,
    baseline: B::Baseline,
    sequences: bool,
    // Tests running now: sequences are put back only by the last to end (the others may be
    // using them).
    running: AtomicUsize,
    // Tests take their connections from the pool their `Handle::pool` reads from: one connection
    // is always left for that, or tests holding every connection would wait for each other.
    turns: Arc<Semaphore>,
    // A test ended the transaction it was given: its commit is in the copy for good.
    broken: AtomicBool,
    // Tests being ended right now: a test waits for them before it begins, so that it does not
    // start on a copy that one of them is about to find escaped.
    ending: watch::Sender<usize>,
    // Whether the copy is as the template has it is decided by the last test to end, with the
    // count of running tests read and the decision stored in one step.
    reuse: std::sync::Mutex<()>,
}

/// One test's connection, inside its transaction.
pub(crate) struct Test<B: Backend> {
    // Declared first, so closed or returned before anything else goes.
    connection: PoolConnection<B::Database>,
    shared: Arc<Shared<B>>,
    running: Running<B>,
    opened: Opened,
    // Counted among the tests being ended, until dropped.
    ending: Option<EndingGuard<B>>,
}

impl<B: Backend> Transactions<B> {
    pub(crate) async fn new(database: TestDatabase<B>, sequences: bool) -> Result<Self> {
        let mut connection = database.acquire_for(None).await?;
        let baseline = B::baseline(&mut connection, crate::Isolation::Transaction)
            .await
            .map_err(|source| database.error("read the session's baseline", source))?;
        // Back in the pool at once, for the first test to take rather than open another.
        connection.return_to_pool().await;
        let size = database.pool().options().get_max_connections();
        let turns = usize::try_from(size.saturating_sub(1).max(1)).unwrap_or(1);
        database.set_reusable(true);
        Ok(Transactions {
            shared: Arc::new(Shared {
                database,
                baseline,
                sequences,
                running: AtomicUsize::new(0),
                turns: Arc::new(Semaphore::new(turns)),
                broken: AtomicBool::new(false),
                ending: watch::Sender::new(0),
                reuse: std::sync::Mutex::new(()),
            }),
        })
    }

    /// A pooled connection inside a new transaction and the test savepoint; none if the copy
    /// must be made again.
    pub(crate) async fn begin(&self) -> Result<Option<Test<B>>> {
        let shared = &self.shared;
        let running = Running::start(shared.clone()).await?;
        shared.decide_reuse(None);
        let mut ending = shared.ending.subscribe();
        let _ = ending.wait_for(|count| *count == 0).await;
        if shared.broken.load(Ordering::Acquire) {
            return Ok(None);
        }
        let database = &shared.database;
        let opened = database.fences().open();
        let mut connection = database.acquire_for(Some(opened.fence().clone())).await?;
        let beginning = Beginning {
            connection: &mut connection,
            begun: false,
        };
        Manager::<B>::begin(
            &mut *beginning.connection,
            Some(sqlx::AssertSqlSafe(B::begin_test(&shared.baseline)).into_sql_str()),
        )
        .await
        .map_err(|source| database.error("begin the test's transaction", source))?;
        beginning.begun();
        Ok(Some(Test {
            connection,
            shared: shared.clone(),
            running,
            opened,
            ending: None,
        }))
    }
}

impl<B: Backend> Test<B> {
    pub(crate) fn connection(&mut self) -> &mut <B::Database as Database>::Connection {
        &mut self.connection
    }

    pub(crate) fn database(&self) -> &TestDatabase<B> {
        &self.shared.database
    }

    pub(crate) fn opened(&self) -> &Opened {
        &self.opened
    }

    /// Counts the test among those being ended, from now: tests that begin wait for it.
    pub(crate) fn mark_ending(&mut self) {
        if self.ending.is_none() {
            self.shared.ending.send_modify(|count| *count += 1);
            self.ending = Some(EndingGuard(self.shared.clone()));
        }
    }

    /// Rolls the test's transaction back (checking deferred constraints first if it returned),
    /// once nothing it started is running. A connection whose transaction the test ended, or that
    /// could not be rolled back, is closed rather than returned to the pool.
    pub(crate) async fn end(mut self, ending: Ending) -> Result<(Rewind, String)> {
        self.mark_ending();
        let Test {
            mut connection,
            shared,
            running,
            opened,
            ending: counted,
        } = self;
        let ended = end_on(&mut connection, &shared, &opened, ending).await;
        // Clean if this was the last test running and it put the sequences back.
        let restored = matches!(ended, Ok((Rewind::Clean | Rewind::Violated(_), true, true)));
        shared.decide_reuse(Some(restored));
        let ended = ended.map(|(rewind, vouched, _)| (rewind, vouched));
        drop(running);
        drop(opened);
        let vouched = matches!(ended, Ok((Rewind::Clean | Rewind::Violated(_), true)));
        if !matches!(ended, Ok((Rewind::Clean | Rewind::Violated(_), _))) {
            // The test may have committed: the copy is not the baseline any more.
            shared.broken.store(true, Ordering::Release);
        }
        if vouched {
            drop(connection);
        } else {
            // Its state is not what the pool expects: it is never handed out again.
            let _ = runtime::run(async move { connection.close().await }).await;
        }
        drop(counted);
        let name = shared.database.name().to_owned();
        ended.map(|(rewind, _)| (rewind, name))
    }
}

/// Ends the test on its connection: the rewind, whether the connection can be vouched for, and
/// whether the sequences were put back.
async fn end_on<B: Backend>(
    connection: &mut PoolConnection<B::Database>,
    shared: &Shared<B>,
    opened: &Opened,
    ending: Ending,
) -> Result<(Rewind, bool, bool)> {
    let database = &shared.database;
    stop::<B>(connection, None, opened.fence(), database, ending).await?;
    let check = matches!(ending, Ending::Returned { .. });
    // No test begins while this one ends: if it is the only one running, nobody else holds
    // numbers from the sequences.
    let sequences = shared.sequences && shared.running.load(Ordering::SeqCst) == 1;
    let rewind = B::rewind(connection, check, &shared.baseline, sequences)
        .await
        .map_err(|source| database.error("roll back the test", source))?;
    if let Rewind::Escaped(_) = rewind {
        return Ok((rewind, false, false));
    }
    if Manager::<B>::get_transaction_depth(connection) != 1 {
        // The test kept a transaction of the driver's own open inside (it forgot its guard):
        // rolled back all the same, but the driver's idea of the connection is not the
        // server's, so the connection is given up.
        B::execute_script(connection, B::rollback())
            .await
            .map_err(|source| database.error("roll back the test", source))?;
        return Ok((rewind, false, sequences));
    }
    Manager::<B>::rollback(connection)
        .await
        .map_err(|source| database.error("roll back the test", source))?;
    Ok((rewind, true, sequences))
}

impl<B: Backend> Shared<B> {
    /// Whether the copy is as the template has it: not while a test runs (`None`, a test begins);
    /// after a test that ended cleanly and put the sequences back (`Some(true)`), if no other
    /// runs. Read and stored while no other test begins or ends.
    fn decide_reuse(&self, ended: Option<bool>) {
        let _deciding = self.reuse.lock().unwrap_or_else(|p| p.into_inner());
        let clean = ended == Some(true)
            && self.running.load(Ordering::SeqCst) == 1
            && !self.broken.load(Ordering::Acquire);
        self.database.set_reusable(clean);
    }
}

/// A connection whose test's transaction is being begun: if that fails or is cancelled part-way,
/// the session is in no state the pool expects (MySQL's begin turns `autocommit` off first), so it
/// is closed when dropped instead of handed out again.
struct Beginning<'a, DB: Database> {
    connection: &'a mut PoolConnection<DB>,
    begun: bool,
}

impl<DB: Database> Beginning<'_, DB> {
    fn begun(mut self) {
        self.begun = true;
    }
}

impl<DB: Database> Drop for Beginning<'_, DB> {
    fn drop(&mut self) {
        if !self.begun {
            self.connection.close_on_drop();
        }
    }
}

/// A test counted among those running, and its turn among the tests that may run at once, until
/// dropped (however its start or end ends).
struct Running<B: Backend> {
    shared: Arc<Shared<B>>,
    _turn: OwnedSemaphorePermit,
}

impl<B: Backend> Running<B> {
    async fn start(shared: Arc<Shared<B>>) -> Result<Self> {
        // Counted before waiting: a test that ends meanwhile leaves the sequences to this one.
        shared.running.fetch_add(1, Ordering::SeqCst);
        let turn = shared.turns.clone().acquire_owned().await;
        let Ok(turn) = turn else {
            shared.running.fetch_sub(1, Ordering::SeqCst);
            return Err(crate::Error::Runtime {
                reason: "the suite's turns were closed".into(),
            });
        };
        Ok(Running {
            shared,
            _turn: turn,
        })
    }
}

impl<B: Backend> Drop for Running<B> {
    fn drop(&mut self) {
        self.shared.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A test counted among those being ended, until dropped (however its end ends).
struct EndingGuard<B: Backend>(Arc<Shared<B>>);

impl<B: Backend> Drop for EndingGuard<B> {
    fn drop(&mut self) {
        self.0
            .ending
            .send_modify(|count| *count = count.saturating_sub(1));
    }
}
