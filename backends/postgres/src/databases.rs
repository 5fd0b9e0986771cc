//! Where PostgreSQL test databases go: created on the server, marked as testdb's with the
//! owner's key, and swept once their owner is gone.

use testdb::backend::Server;
use testdb::{Error, Result};

use crate::Postgres;
use crate::database::PostgresDatabase;
use crate::owner;
use crate::server::{self, NAME};
use crate::sql::{self, ident};

impl Server for Postgres {
    type Owned = PostgresDatabase;

    // A `DROP DATABASE` forces a checkpoint: tens of milliseconds a process need not wait at exit.
    const SLOW_REMOVAL: bool = true;

    async fn create(&self) -> Result<PostgresDatabase> {
        self.create_database(None).await
    }

    fn sweep_scope(&self) -> String {
        self.redacted_url().to_string()
    }

    async fn sweep(&self) -> Result<usize> {
        owner::sweep(self).await
    }
}

impl Postgres {
    /// Creates a database that testdb owns: empty, or a copy of `template`.
    pub(crate) async fn create_database(&self, template: Option<&str>) -> Result<PostgresDatabase> {
        let owner = owner::owner(self).await?;
        let mut conn = self.connect_maintenance().await?;
        let maintenance: String = match sqlx::query_scalar("SELECT current_database()")
            .fetch_one(&mut conn)
            .await
        {
            Ok(maintenance) => maintenance,
            Err(source) => {
                server::close(conn).await;
                return Err(self.connect_error(source));
            }
        };
        // Only the COMMENT makes it sweepable: a process killed between the two leaves an
        // unmarked database that no sweep drops (see owner.rs).
        let name = owner::database_name(owner.key, &maintenance);
        let created = sqlx::query(sql::create_database(&name, template))
            .execute(&mut conn)
            .await;
        if let Err(source) = created {
            server::close(conn).await;
            return Err(self.create_error(&name, source));
        }
        let marked = sqlx::query(sql::comment_on_database(
            &name,
            &owner::marker(owner.key, &maintenance),
        ))
        .execute(&mut conn)
        .await
        .map(drop);
        if let Err(source) = marked {
            // Unmarked, no sweep would ever remove it: drop it now.
            let _ = owner::drop_database(&mut conn, &name).await;
            server::close(conn).await;
            return Err(Error::Database {
                backend: NAME,
                database: name,
                step: "mark as testdb's".into(),
                source,
            });
        }
        server::close(conn).await;
        Ok(PostgresDatabase {
            url: self.url_of(&name),
            options: self.options_of(&name),
            server: self.clone(),
            name,
            lease: None,
        })
    }

    fn create_error(&self, name: &str, source: sqlx::Error) -> Error {
        let code = source
            .as_database_error()
            .and_then(|err| err.code().map(|code| code.into_owned()));
        if code.as_deref() == Some("42501") {
            let role = self.username().to_string();
            return Error::PermissionDenied {
                backend: NAME,
                server: self.redacted_url().to_string(),
                hint: format!(
                    "grant it with `ALTER ROLE {} CREATEDB`, or set TESTDB_POSTGRES_URL to a \
                     role that has CREATEDB",
                    ident(&role)
                ),
                role,
                action: "create databases".into(),
                source,
            };
        }
        Error::Database {
            backend: NAME,
            database: name.to_string(),
            step: "CREATE DATABASE".into(),
            source,
        }
    }
}
