//! A PostgreSQL test database: what the core owns until it destroys it (or, a leased copy of a
//! template, gives it back).

use sqlx::postgres::PgConnectOptions;
use testdb::backend::OwnedDatabase;
use testdb::{Error, Result};

use crate::server::{self, NAME};
use crate::{Postgres, copies, owner};

/// A PostgreSQL test database: its name, URL and server.
pub struct PostgresDatabase {
    pub(crate) name: String,
    pub(crate) url: String,
    pub(crate) options: PgConnectOptions,
    pub(crate) server: Postgres,
    // A copy of a template leased to this process; else a database of its own.
    pub(crate) lease: Option<copies::Lease>,
}

impl std::fmt::Debug for PostgresDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL and the connect options hold the password: neither is shown.
        f.debug_struct("PostgresDatabase")
            .field("name", &self.name)
            .field("url", &server::redact(&self.url))
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl OwnedDatabase for PostgresDatabase {
    type Database = sqlx::Postgres;

    fn name(&self) -> &str {
        &self.name
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn redacted_url(&self) -> String {
        server::redact(&self.url)
    }

    fn connect_options(&self) -> PgConnectOptions {
        self.options.clone()
    }

    async fn destroy(self) -> Result<()> {
        let mut conn = self.server.connect_maintenance().await?;
        let dropped = owner::drop_database(&mut conn, &self.name).await;
        server::close(conn).await;
        // Its lease (if a copy) ends only once it is gone.
        drop(self.lease);
        dropped.map_err(|source| Error::Database {
            backend: NAME,
            database: self.name.clone(),
            step: "DROP DATABASE".into(),
            source,
        })
    }

    async fn release(self) -> Result<()> {
        match self.lease {
            Some(lease) => copies::release(&self.server, &self.name, lease).await,
            None => {
                let database = PostgresDatabase {
                    lease: None,
                    ..self
                };
                database.destroy().await
            }
        }
    }
}
