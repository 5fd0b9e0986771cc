//! Fresh-database isolation: each test gets a copy of the template of its own, removed after it
//! (kept if it failed and `TESTDB_KEEP=1`). Tests run in parallel; the next copy is made while a
//! test runs.

use std::sync::Arc;

use sqlx::Database;
use sqlx::pool::PoolConnection;

use crate::fence::Opened;
use crate::suite::live::{Ending, stop};
use crate::suite::target::Target;
use crate::{Backend, Result, Rewind, TestDatabase, runtime};

/// The template each test's copy comes from, and the next copy, made ahead.
pub struct Fresh<B: Backend> {
    state: Arc<State<B>>,
}

struct State<B: Backend> {
    target: Target<B>,
    template: String,
    spare: std::sync::Mutex<Option<tokio::task::JoinHandle<Result<TestDatabase<B>>>>>,
}

/// A test's own copy of the baseline.
pub(crate) struct Test<B: Backend> {
    // Declared first, so returned before the database goes.
    connection: PoolConnection<B::Database>,
    database: TestDatabase<B>,
    opened: Opened,
}

impl<B: Backend> Fresh<B> {
    pub(crate) fn new(target: &Target<B>, template: String) -> Self {
        let fresh = Fresh {
            state: Arc::new(State {
                target: target.clone(),
                template,
                spare: std::sync::Mutex::new(None),
            }),
        };
        fresh.state.prepare_next();
        fresh
    }

    /// A copy of its own for the next test.
    pub(crate) async fn begin(&self) -> Result<Option<Test<B>>> {
        let database = self.state.take().await?;
        let opened = database.fences().open();
        let connection = database.acquire_for(Some(opened.fence().clone())).await?;
        Ok(Some(Test {
            connection,
            database,
            opened,
        }))
    }
}

impl<B: Backend> State<B> {
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

impl<B: Backend> Test<B> {
    pub(crate) fn connection(&mut self) -> &mut <B::Database as Database>::Connection {
        &mut self.connection
    }

    pub(crate) fn database(&self) -> &TestDatabase<B> {
        &self.database
    }

    pub(crate) fn opened(&self) -> &Opened {
        &self.opened
    }

    /// Removes the test's copy (in the background) once nothing it started is running, or keeps
    /// it if the test failed and `TESTDB_KEEP=1`.
    pub(crate) async fn end(self, ending: Ending) -> Result<(Rewind, String)> {
        let Test {
            mut connection,
            database,
            opened,
        } = self;
        let stopped = stop::<B>(&mut connection, None, opened.fence(), &database, ending).await;
        drop(connection);
        drop(opened);
        let name = database.name().to_owned();
        let failed = match ending {
            Ending::Returned { failed } => failed,
            Ending::Abandoned => true,
        };
        dispose(database, failed);
        stopped.map(|()| (Rewind::Clean, name))
    }
}

/// Removes a test's own database (in the background), or keeps it if the test failed and
/// `TESTDB_KEEP=1`.
fn dispose<B: Backend>(database: TestDatabase<B>, failed: bool) {
    if failed && std::env::var("TESTDB_KEEP").is_ok_and(|value| value == "1") {
        eprintln!(
            "testdb: kept {} database {} of a failed test (TESTDB_KEEP=1): {}",
            B::NAME,
            database.name(),
            database.redacted_url()
        );
        database.keep();
    } else {
        database.remove_later();
    }
}
