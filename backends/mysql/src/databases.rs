//! Where MySQL test databases go: created on the server, marked as testdb's with the owner's key
//! in one statement, and swept once their owner is gone.

use testdb::Result;
use testdb::backend::Server;

use crate::backend::{self, NAME};
use crate::database::MySqlDatabase;
use crate::dialect::{ident, literal};
use crate::{MySql, owner};

impl Server for MySql {
    type Owned = MySqlDatabase;

    async fn create(&self) -> Result<MySqlDatabase> {
        self.create_database().await
    }

    fn sweep_scope(&self) -> String {
        self.redacted_url().to_owned()
    }

    async fn sweep(&self) -> Result<usize> {
        owner::sweep(self).await
    }
}

impl MySql {
    /// Creates an empty database that testdb owns.
    pub(crate) async fn create_database(&self) -> Result<MySqlDatabase> {
        let owner = owner::owner(self).await?;
        let name = owner::database_name(&owner);
        let mut conn = self.connect_maintenance().await?;
        let created = sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {} COMMENT {}",
            ident(&name),
            literal(&owner::marker(&owner.key))
        )))
        .execute(&mut conn)
        .await;
        backend::close(conn).await;
        if let Err(source) = created {
            return Err(testdb::Error::Database {
                backend: NAME,
                database: name,
                step: "CREATE DATABASE".into(),
                source,
            });
        }
        Ok(MySqlDatabase {
            url: self.url_of(&name),
            options: self.options_of(&name),
            server: self.clone(),
            name,
        })
    }
}
