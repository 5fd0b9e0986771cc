//! MySQL's side of a test's boundaries: the test savepoint, the session put back after each test,
//! and the tables a rollback cannot undo, refused up front.

use sqlx::mysql::MySqlConnection;
use sqlx::{AssertSqlSafe, Row};
use testdb::Isolation;
use testdb::backend::{IsolationHooks, Rewind, TEST_SAVEPOINT};

use crate::MySql;
use crate::dialect::literal;

/// A test's session as testdb opened it.
#[derive(Debug)]
pub struct Baseline {
    /// Puts back the session settings a test may change that no rollback undoes. `autocommit`
    /// is not among them: setting it back to 1 would commit the suite transaction.
    settings: String,
}

/// What MySQL says when the test savepoint is gone: the transaction it was in ended.
const NO_SUCH_SAVEPOINT: u16 = 1305;

fn escaped(message: &str) -> Rewind {
    Rewind::Escaped(format!(
        "{message}: the test ended the suite transaction, with a COMMIT or ROLLBACK or a \
         statement that MySQL commits at once (CREATE, ALTER, DROP, TRUNCATE, RENAME, LOCK \
         TABLES, …); MySQL cannot roll DDL back, so a test that runs it needs \
         Isolation::FreshDatabase"
    ))
}

/// Tables of the connection's database whose engine has no transactions, as `name (ENGINE)`.
async fn untransactional(conn: &mut MySqlConnection) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT CONCAT(t.TABLE_NAME, ' (', t.ENGINE, ')') FROM information_schema.TABLES t \
         JOIN information_schema.ENGINES e ON e.ENGINE = t.ENGINE \
         WHERE t.TABLE_SCHEMA = DATABASE() AND t.TABLE_TYPE = 'BASE TABLE' \
           AND COALESCE(e.TRANSACTIONS, 'NO') <> 'YES' ORDER BY t.TABLE_NAME",
    )
    .fetch_all(&mut *conn)
    .await
}

impl IsolationHooks for MySql {
    type Baseline = Baseline;

    async fn baseline(conn: &mut MySqlConnection, isolation: Isolation) -> sqlx::Result<Baseline> {
        if matches!(isolation, Isolation::Savepoint | Isolation::Transaction) {
            let tables = untransactional(conn).await?;
            if !tables.is_empty() {
                return Err(sqlx::Error::Configuration(
                    format!(
                        "{isolation} isolation rolls each test back, and these tables have no \
                         transactions: {}; convert them (ALTER TABLE … ENGINE = InnoDB), or use \
                         Isolation::Committed or Isolation::FreshDatabase",
                        tables.join(", ")
                    )
                    .into(),
                ));
            }
        }
        let row = sqlx::query(
            "SELECT @@SESSION.sql_mode, @@SESSION.time_zone, @@SESSION.foreign_key_checks, \
                    @@SESSION.unique_checks, @@SESSION.tx_isolation, @@SESSION.group_concat_max_len",
        )
        .fetch_one(&mut *conn)
        .await?;
        let sql_mode: String = row.try_get(0)?;
        let time_zone: String = row.try_get(1)?;
        let foreign_key_checks: i64 = row.try_get(2)?;
        let unique_checks: i64 = row.try_get(3)?;
        let isolation_level: String = row.try_get(4)?;
        let group_concat: u64 = row.try_get(5)?;
        Ok(Baseline {
            settings: format!(
                "SET SESSION sql_mode = {}, time_zone = {}, foreign_key_checks = {foreign_key_checks}, \
                 unique_checks = {unique_checks}, tx_isolation = {}, \
                 group_concat_max_len = {group_concat}; DO RELEASE_ALL_LOCKS()",
                literal(&sql_mode),
                literal(&time_zone),
                literal(&isolation_level),
            ),
        })
    }

    async fn checkpoint(conn: &mut MySqlConnection) -> sqlx::Result<Result<(), String>> {
        // No deferred constraints: nothing to check.
        sqlx::raw_sql(AssertSqlSafe(format!("SAVEPOINT {TEST_SAVEPOINT}")))
            .execute(&mut *conn)
            .await?;
        Ok(Ok(()))
    }

    // InnoDB's AUTO_INCREMENT counters do not roll back, and setting one is DDL (which would
    // commit the suite transaction): `sequences` cannot be honoured.
    async fn rewind(
        conn: &mut MySqlConnection,
        _check: bool,
        baseline: &Baseline,
        _sequences: bool,
    ) -> sqlx::Result<Rewind> {
        // One round trip: the settings go with the rollback, and are not reached if it fails.
        let rolled_back = sqlx::raw_sql(AssertSqlSafe(format!(
            "ROLLBACK TO SAVEPOINT {TEST_SAVEPOINT}; {}",
            baseline.settings
        )))
        .execute(&mut *conn)
        .await;
        match rolled_back {
            Ok(_) => {}
            Err(err) if crate::backend::error_number(&err) == Some(NO_SUCH_SAVEPOINT) => {
                let message = err
                    .as_database_error()
                    .map(|err| err.message().to_owned())
                    .unwrap_or_default();
                return Ok(escaped(&message));
            }
            Err(err) => return Err(err),
        }
        Ok(Rewind::Clean)
    }

    async fn reset_session(conn: &mut MySqlConnection, baseline: &Baseline) -> sqlx::Result<()> {
        sqlx::raw_sql(AssertSqlSafe(baseline.settings.clone()))
            .execute(&mut *conn)
            .await
            .map(drop)
    }
}
