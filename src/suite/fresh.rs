//! Fresh-database isolation: each test gets a copy of the template of its own, leased for it and
//! removed after it (kept if it failed and `TESTDB_KEEP=1`). Tests run in parallel. Where a copy
//! costs (a server), the backend keeps one ready beside the template, made while a test runs, for
//! whichever process leases next: none is made for a process that will not use it.

use sqlx::Database;
use sqlx::pool::PoolConnection;

use crate::fence::Opened;
use crate::suite::live::{Ending, stop};
use crate::suite::target::Target;
use crate::{Backend, Result, Rewind, TestDatabase};

/// The template each test's copy comes from.
pub struct Fresh<B: Backend> {
    target: Target<B>,
    template: String,
}

/// A test's own copy of the baseline.
pub(crate) struct Test<B: Backend> {
    // Declared first, so returned before the database goes.
    connection: PoolConnection<B::Database>,
    database: TestDatabase<B>,
    opened: Opened,
}

/// Free copies a fresh suite asks the backend to keep ready for the next test.
const SPARE: usize = 1;

impl<B: Backend> Fresh<B> {
    pub(crate) fn new(target: &Target<B>, template: String) -> Self {
        Fresh {
            target: target.clone(),
            template,
        }
    }

    /// A copy of its own for the next test.
    pub(crate) async fn begin(&self) -> Result<Option<Test<B>>> {
        let database = self.target.lease(&self.template, SPARE).await?;
        let opened = database.fences().open();
        let connection = database.acquire_for(Some(opened.fence().clone())).await?;
        Ok(Some(Test {
            connection,
            database,
            opened,
        }))
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
