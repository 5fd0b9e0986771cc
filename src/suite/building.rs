//! One database of a suite being built: created, migrated, and inside the transaction that runs
//! the setup function.

use sqlx::Database;
use sqlx::pool::PoolConnection;
use sqlx_core::transaction::TransactionManager;

use crate::fixtures::Catalog;
use crate::suite::target::Target;
use crate::{Backend, Builder, Error, Result, TestDatabase};

type Manager<B> = <<B as crate::backend::Driver>::Database as Database>::TransactionManager;

/// A database of a suite being set up, in its setup transaction.
pub struct Building<B: Backend> {
    // Declared first, so returned before the database is removed.
    connection: PoolConnection<B::Database>,
    database: TestDatabase<B>,
    suite: &'static str,
}

impl<B: Backend> Building<B> {
    pub(crate) async fn begin(suite: &'static str, builder: Builder<B>) -> Result<Self> {
        let database = builder.create().await?;
        let mut connection = database.acquire_for(None).await?;
        Manager::<B>::begin(&mut connection, None)
            .await
            .map_err(|source| database.error("begin the setup transaction", source))?;
        Ok(Building {
            connection,
            database,
            suite,
        })
    }

    pub(crate) fn connection(&mut self) -> &mut <B::Database as Database>::Connection {
        &mut self.connection
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
        // The setup's deferred constraints, checked as the commit would, but named.
        match B::checkpoint(&mut self.connection).await {
            Ok(Ok(())) => {}
            Ok(Err(message)) => {
                return Err(Error::DeferredConstraint {
                    suite: self.suite,
                    database: self.database.name().to_owned(),
                    message,
                });
            }
            Err(source) => return Err(self.database.error("check the setup", source)),
        }
        if track {
            let catalog = B::catalog(&mut self.connection)
                .await
                .map_err(|source| self.database.error("read the catalog", source))?;
            let tables = tracked_tables(&catalog);
            B::track_writes(&mut self.connection, &tables)
                .await
                .map_err(|source| self.database.error("record the baseline", source))?;
        }
        let Building {
            mut connection,
            database,
            suite,
        } = self;
        Manager::<B>::commit(&mut connection)
            .await
            .map_err(|source| database.error("commit the setup", source))?;
        drop(connection);
        let built = database.name().to_owned();
        let Some(owned) = database.into_owned().await else {
            return Err(Error::Setup {
                suite,
                message: format!("{built} was removed before it became a template"),
                source: None,
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

impl<B: Backend> std::fmt::Debug for Building<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Building").finish_non_exhaustive()
    }
}
