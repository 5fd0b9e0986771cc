//! MySQL's fences: the sessions of the connections a test uses, ended (`KILL`) or interrupted
//! (`KILL QUERY`) when it ends, so that nothing it started commits afterwards.

use std::sync::Arc;

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{ConnectOptions, Connection};
use testdb::backend::{Attribution, Fence, Fencing};

use crate::MySql;
use crate::backend::failed;

/// The sessions among `ids` that are running a statement or are inside a transaction (`all`:
/// every one of them), other than the caller's.
async fn busy(conn: &mut MySqlConnection, ids: &[i64], all: bool) -> sqlx::Result<Vec<i64>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = ids
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let sql = if all {
        format!(
            "SELECT ID FROM information_schema.PROCESSLIST \
             WHERE ID IN ({list}) AND ID <> CONNECTION_ID()"
        )
    } else {
        format!(
            "SELECT ID FROM information_schema.PROCESSLIST \
             WHERE ID IN ({list}) AND ID <> CONNECTION_ID() AND (COMMAND <> 'Sleep' OR ID IN \
               (SELECT trx_mysql_thread_id FROM information_schema.INNODB_TRX))"
        )
    };
    // PROCESSLIST.ID is a signed BIGINT.
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_all(&mut *conn)
        .await
}

/// Kills each session in `ids` (`query`: only its statement), ignoring those already gone.
async fn kill(conn: &mut MySqlConnection, ids: &[i64], query: bool) -> sqlx::Result<()> {
    for id in ids {
        let statement = if query {
            "KILL QUERY"
        } else {
            "KILL CONNECTION"
        };
        match sqlx::query(sqlx::AssertSqlSafe(format!("{statement} {id}")))
            .execute(&mut *conn)
            .await
        {
            // 1094: no such session (it ended meanwhile). Any other refusal (1095, not the
            // session's owner) is an error: what the test left running would go on.
            Err(err) if crate::backend::error_number(&err) == Some(1094) => {}
            Err(err) => return Err(err),
            Ok(_) => {}
        }
    }
    Ok(())
}

async fn connect(options: &MySqlConnectOptions) -> Result<MySqlConnection, testdb::Error> {
    options.connect().await.map_err(|source| {
        failed(
            options.get_database().unwrap_or_default(),
            "stop what the test left running",
            source,
        )
    })
}

impl Fencing for MySql {
    /// The connection's session id.
    type Watch = i64;

    fn enter(id: &i64, fence: &Arc<Fence>) {
        fence.set_own(*id);
    }

    async fn watch(conn: &mut MySqlConnection) -> sqlx::Result<i64> {
        let id: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()")
            .fetch_one(&mut *conn)
            .await?;
        Ok(i64::try_from(id).unwrap_or(i64::MAX))
    }

    /// A connection the pool hands out joins its test's fence: its session is recorded, to be
    /// ended with the test. One round trip, which also proves the connection alive.
    async fn join(conn: &mut MySqlConnection, attribution: &Attribution) -> sqlx::Result<bool> {
        let id = Self::watch(conn).await?;
        attribution.record(id);
        Ok(true)
    }

    /// After a test that returned: the sessions it took that still run something, or hold a
    /// transaction open, are ended from a connection of testdb's own. Not every session it took:
    /// tests that run at once share a pool, and one the test gave back may be another's now.
    /// (INNODB_TRX, MySQL's only view of another session's transaction, is a snapshot up to
    /// 0.1 s old that misses one that has not touched a row yet; such a transaction holds no
    /// lock and has written nothing.)
    async fn end_taken(
        _conn: &mut MySqlConnection,
        options: &MySqlConnectOptions,
        fence: &Fence,
    ) -> Result<(), testdb::Error> {
        let taken = fence.taken();
        if taken.is_empty() {
            return Ok(());
        }
        let mut other = connect(options).await?;
        let ended = async {
            let busy = busy(&mut other, &taken, false).await?;
            kill(&mut other, &busy, false).await
        }
        .await;
        let _ = other.close().await;
        ended.map_err(|source| {
            failed(
                options.get_database().unwrap_or_default(),
                "end the sessions the test left running",
                source,
            )
        })
    }

    /// After a test that did not return, from a new connection: every session it took is ended,
    /// and the statement its own connection still runs is interrupted, or, with `end_own`, that
    /// connection ended too.
    async fn interrupt(
        options: &MySqlConnectOptions,
        fence: &Fence,
        end_own: bool,
    ) -> Result<(), testdb::Error> {
        let mut other = connect(options).await?;
        let ended = async {
            let taken = busy(&mut other, &fence.taken(), true).await?;
            kill(&mut other, &taken, false).await?;
            if let Some(own) = fence.own() {
                kill(&mut other, &[own], !end_own).await?;
            }
            Ok::<_, sqlx::Error>(())
        }
        .await;
        let _ = other.close().await;
        ended.map_err(|source| {
            failed(
                options.get_database().unwrap_or_default(),
                "stop what the test left running",
                source,
            )
        })
    }

    /// After `interrupt`, on the test's own connection: reads what the server said to the
    /// statement the test left behind (its error, once interrupted), so that testdb's next
    /// statement gets its own answer.
    async fn settle(conn: &mut MySqlConnection, _: Option<&i64>) -> sqlx::Result<()> {
        match conn.ping().await {
            Ok(()) => Ok(()),
            Err(sqlx::Error::Database(_)) => conn.ping().await,
            Err(err) => Err(err),
        }
    }
}
