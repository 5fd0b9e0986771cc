//! Committed isolation: tests commit for real in a copy of the template leased for this process,
//! one at a time; after each, the tables it wrote (and the sequences it moved) are put back as the
//! baseline has them. A copy whose every test was restored is given back for the next lease; one
//! a test left dirty is removed (or, if its process died, by the next leaser).

use std::sync::Arc;

use sqlx::Database;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::fence::Opened;
use crate::fixtures::Catalog;
use crate::suite::live::{Ending, stop};
use crate::suite::restore;
use crate::suite::target::Target;
use crate::{Backend, Result, Rewind, TestDatabase};

/// A committed suite's database, used by one test at a time and restored after each.
pub struct Committed<B: Backend> {
    state: Arc<Mutex<State<B>>>,
}

struct State<B: Backend> {
    copy: Copy<B>,
    sequences: bool,
    // From a test's start until its writes are undone: a test whose end failed or was cut short
    // leaves it set (its connection may be busy for good), and the database is copied again.
    broken: bool,
    target: Target<B>,
    template: String,
}

/// One test's hold on the committed database.
pub(crate) struct Test<B: Backend> {
    state: OwnedMutexGuard<State<B>>,
    opened: Opened,
}

impl<B: Backend> Committed<B> {
    pub(crate) async fn new(target: &Target<B>, template: String, sequences: bool) -> Result<Self> {
        let copy = Copy::new(target, &template).await?;
        copy.database.set_reusable(sequences);
        Ok(Committed {
            state: Arc::new(Mutex::new(State {
                copy,
                sequences,
                broken: false,
                target: target.clone(),
                template,
            })),
        })
    }

    /// Waits for the previous test to end (copying the template again if its end was cut short),
    /// then hands the database to the next.
    pub(crate) async fn begin(&self) -> Result<Option<Test<B>>> {
        let mut state = self.state.clone().lock_owned().await;
        if state.broken {
            state.replace().await?;
        }
        state.broken = true;
        state.copy.database.set_reusable(false);
        let opened = state.copy.database.fences().open();
        B::enter(&state.copy.watch, opened.fence());
        Ok(Some(Test { state, opened }))
    }
}

impl<B: Backend> State<B> {
    /// Restores the baseline; if that fails, replaces the database with a new copy of the
    /// template, so the next test never sees what this one left.
    async fn restore(&mut self) -> Result<()> {
        let copy = &mut self.copy;
        // A transaction the test left open is rolled back (an error just means none was).
        let _ = B::execute_script(&mut copy.connection, B::rollback()).await;
        let reset = B::reset_session(&mut copy.connection, &copy.baseline)
            .await
            .map_err(|source| copy.database.error("reset the session", source));
        let restored = match reset {
            Ok(()) => {
                let at = restore::At {
                    suite: self.target.suite,
                    database: &copy.database,
                };
                restore::restore(&mut copy.connection, &copy.catalog, self.sequences, at).await
            }
            Err(err) => Err(err),
        };
        // Why is of no use to the next test, which gets a new copy either way.
        if restored.is_err() {
            self.replace().await?;
        }
        // Restored, sequences too if asked: as the template has it.
        self.copy.database.set_reusable(self.sequences);
        Ok(())
    }

    /// A new copy of the template in place of the database.
    async fn replace(&mut self) -> Result<()> {
        self.copy = Copy::new(&self.target, &self.template).await?;
        self.copy.database.set_reusable(self.sequences);
        Ok(())
    }
}

impl<B: Backend> Test<B> {
    pub(crate) fn connection(&mut self) -> &mut <B::Database as Database>::Connection {
        &mut self.state.copy.connection
    }

    pub(crate) fn database(&self) -> &TestDatabase<B> {
        &self.state.copy.database
    }

    pub(crate) fn opened(&self) -> &Opened {
        &self.opened
    }

    /// Restores what the test wrote, once nothing it started is running.
    pub(crate) async fn end(mut self, ending: Ending) -> Result<(Rewind, String)> {
        let state = &mut *self.state;
        let copy = &mut state.copy;
        let name = copy.database.name().to_owned();
        let stopped = stop::<B>(
            &mut copy.connection,
            Some(&copy.watch),
            self.opened.fence(),
            &copy.database,
            ending,
        )
        .await;
        if stopped.is_err() {
            // Its connection is in a state nobody can vouch for: a new copy, then.
            state.replace().await?;
        } else {
            state.restore().await?;
        }
        state.broken = false;
        Ok((Rewind::Clean, name))
    }
}

/// A committed suite's database: a copy of the template, a connection of its own for the tests,
/// watched, and its catalog (read once: tests do not change the schema).
struct Copy<B: Backend> {
    // Declared first, so closed before the database is removed.
    connection: <B::Database as Database>::Connection,
    watch: B::Watch,
    baseline: B::Baseline,
    database: TestDatabase<B>,
    catalog: Catalog,
}

impl<B: Backend> Copy<B> {
    async fn new(target: &Target<B>, template: &str) -> Result<Self> {
        let database = target.lease(template, 0).await?;
        let mut connection = database.connect().await?;
        let catalog = B::catalog(&mut connection)
            .await
            .map_err(|source| database.error("read the catalog", source))?;
        let watch = B::watch(&mut connection)
            .await
            .map_err(|source| database.error("watch the suite's connection", source))?;
        let baseline = B::baseline(&mut connection, crate::Isolation::Committed)
            .await
            .map_err(|source| database.error("read the session's baseline", source))?;
        Ok(Copy {
            connection,
            watch,
            baseline,
            database,
            catalog,
        })
    }
}
