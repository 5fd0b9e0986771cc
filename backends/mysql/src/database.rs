//! A MySQL test database: what the core owns until it destroys it.

use sqlx::mysql::MySqlConnectOptions;
use testdb::Result;
use testdb::backend::OwnedDatabase;

use crate::backend::{self, redact};
use crate::{MySql, owner};

/// A MySQL test database: its name, URL and server.
pub struct MySqlDatabase {
    pub(crate) name: String,
    pub(crate) url: String,
    pub(crate) options: MySqlConnectOptions,
    pub(crate) server: MySql,
}

impl std::fmt::Debug for MySqlDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL and the connect options hold the password: neither is shown.
        f.debug_struct("MySqlDatabase")
            .field("name", &self.name)
            .field("url", &redact(&self.url))
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl OwnedDatabase for MySqlDatabase {
    type Database = sqlx::MySql;

    fn name(&self) -> &str {
        &self.name
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    fn connect_options(&self) -> MySqlConnectOptions {
        self.options.clone()
    }

    async fn destroy(self) -> Result<()> {
        let mut conn = self.server.connect_maintenance().await?;
        let mut dropped = Ok(());
        for _ in 0..DROP_ATTEMPTS {
            // Sessions still on it would keep their metadata locks: the drop would wait for
            // them. A pool may open new ones meanwhile, so they are ended before each attempt.
            let _ = end_sessions_on(&mut conn, &self.name).await;
            dropped = owner::drop_database(&mut conn, &self.name).await;
            if !is_lock_wait_timeout(&dropped) {
                break;
            }
        }
        backend::close(conn).await;
        dropped.map_err(|source| backend::failed(&self.name, "DROP DATABASE", source))
    }
}

/// How many times a drop that timed out waiting for a metadata lock is tried again.
const DROP_ATTEMPTS: usize = 3;

/// Whether `result` is the server's 1205, "Lock wait timeout exceeded".
fn is_lock_wait_timeout(result: &sqlx::Result<()>) -> bool {
    result
        .as_ref()
        .is_err_and(|err| backend::error_number(err) == Some(1205))
}

/// Ends every session, other than the caller's, whose current database is `name`.
pub(crate) async fn end_sessions_on(
    conn: &mut sqlx::mysql::MySqlConnection,
    name: &str,
) -> sqlx::Result<()> {
    // PROCESSLIST.ID is a signed BIGINT (CONNECTION_ID() an unsigned one).
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()",
    )
    .bind(name)
    .fetch_all(&mut *conn)
    .await?;
    for id in ids {
        // Gone already, or ending: either way not ours to wait for.
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("KILL CONNECTION {id}")))
            .execute(&mut *conn)
            .await;
    }
    Ok(())
}
