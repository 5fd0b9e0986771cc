//! MySQL's side of a test's boundaries: the test savepoint, the session put back after each test,
//! and the tables a rollback cannot undo, refused up front.
//!
//! InnoDB rolls a whole transaction back when it picks it as a deadlock's victim, and the test
//! savepoint goes with it, as it goes when a test commits: under transaction isolation, where
//! tests run side by side and deadlocks happen, the two are told apart. Each test's transaction
//! writes a row into a temporary table of the session's own (the marker), with `autocommit` off
//! so that what the test runs after a rollback stays in a transaction that testdb rolls back. At
//! the end, a lost savepoint with the marker gone is a rollback, which left nothing behind, unless
//! the session ran a statement since that can commit (counted by the server's `Com_…` status).

use sqlx::mysql::MySqlConnection;
use sqlx::{AssertSqlSafe, Row};
use testdb::Isolation;
use testdb::backend::{IsolationHooks, Rewind, TEST_SAVEPOINT};

use crate::MySql;
use crate::bookkeeping::Names;
use crate::dialect::{ident, literal};

/// A test's session as testdb opened it.
#[derive(Debug)]
pub struct Baseline {
    /// Puts back the session settings a test may change that no rollback undoes. `autocommit`
    /// is not among them: setting it back to 1 would commit the suite transaction.
    settings: String,
    /// Under transaction isolation, the quoted name of the session's marker table: a name no
    /// table of the database has (a temporary table hides a table of its name from the session).
    marker: Option<String>,
}

/// The marker table's name unless a table of the database has it.
const MARKER: &str = "testdb_open";

/// SQL for the number of statements the session ran that can commit: those that begin or
/// commit a transaction, and those that commit implicitly (DDL, `LOCK TABLES`, …).
const COMMITTING: &str = "(SELECT SUM(VARIABLE_VALUE) FROM information_schema.SESSION_STATUS \
     WHERE VARIABLE_NAME IN ('COM_BEGIN', 'COM_COMMIT', 'COM_XA_COMMIT', 'COM_LOCK_TABLES', \
     'COM_CREATE_TABLE', 'COM_ALTER_TABLE', 'COM_DROP_TABLE', 'COM_RENAME_TABLE', 'COM_TRUNCATE', \
     'COM_CREATE_INDEX', 'COM_DROP_INDEX', 'COM_CREATE_VIEW', 'COM_DROP_VIEW', \
     'COM_CREATE_TRIGGER', 'COM_DROP_TRIGGER', 'COM_CREATE_DB', 'COM_ALTER_DB', 'COM_DROP_DB', \
     'COM_CREATE_PROCEDURE', 'COM_ALTER_PROCEDURE', 'COM_DROP_PROCEDURE', 'COM_CREATE_FUNCTION', \
     'COM_ALTER_FUNCTION', 'COM_DROP_FUNCTION', 'COM_CREATE_EVENT', 'COM_ALTER_EVENT', \
     'COM_DROP_EVENT', 'COM_CREATE_SEQUENCE', 'COM_ALTER_SEQUENCE', 'COM_DROP_SEQUENCE', \
     'COM_CREATE_USER', 'COM_DROP_USER', 'COM_RENAME_USER', 'COM_GRANT', 'COM_REVOKE', \
     'COM_REVOKE_ALL', 'COM_FLUSH', 'COM_ANALYZE', 'COM_OPTIMIZE', 'COM_REPAIR', \
     'COM_CHECK', 'COM_LOAD', 'COM_INSTALL_PLUGIN', 'COM_UNINSTALL_PLUGIN', \
     'COM_SET_OPTION', 'COM_ALTER_USER', 'COM_CREATE_ROLE', 'COM_DROP_ROLE', 'COM_GRANT_ROLE', \
     'COM_REVOKE_ROLE', 'COM_CREATE_SERVER', 'COM_ALTER_SERVER', 'COM_DROP_SERVER', \
     'COM_CREATE_PACKAGE', 'COM_DROP_PACKAGE', 'COM_CREATE_PACKAGE_BODY', \
     'COM_DROP_PACKAGE_BODY', 'COM_RESET', 'COM_PURGE', 'COM_PURGE_BEFORE_DATE'))";

/// What MySQL says when the test savepoint is gone: the transaction it was in ended.
const NO_SUCH_SAVEPOINT: u16 = 1305;

/// Whether the test's transaction, whose savepoint is gone, was rolled back (by the server, as a
/// deadlock's victim, or by the test) with nothing committed since: its marker row is gone, and
/// the session ran no statement that commits.
async fn rolled_back_by_server(conn: &mut MySqlConnection, marker: &str) -> sqlx::Result<bool> {
    let (marked, committing): (i64, i64) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT (SELECT COUNT(*) FROM {marker}), \
                CAST({COMMITTING} - @testdb_committing AS SIGNED)"
    )))
    .fetch_one(&mut *conn)
    .await?;
    Ok(marked == 0 && committing == 0)
}

/// The server's message if `err` says the test savepoint is gone (the transaction it was in
/// ended); any other error as it is.
fn lost_savepoint(err: sqlx::Error) -> sqlx::Result<String> {
    if crate::backend::error_number(&err) != Some(NO_SUCH_SAVEPOINT) {
        return Err(err);
    }
    Ok(err
        .as_database_error()
        .map(|err| err.message().to_owned())
        .unwrap_or_default())
}

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
        let marker = if isolation == Isolation::Transaction {
            Some(ident(&Names::read(conn, None).await?.table(MARKER)))
        } else {
            None
        };
        Ok(Baseline {
            marker,
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

    fn begin_test(baseline: &Baseline) -> String {
        let Some(marker) = &baseline.marker else {
            return format!("START TRANSACTION; SAVEPOINT {TEST_SAVEPOINT}");
        };
        // The count is read last: this script's own statements are not the test's.
        format!(
            "SET autocommit = 0; \
             CREATE TEMPORARY TABLE IF NOT EXISTS {marker} (open INT NOT NULL) ENGINE = InnoDB; \
             START TRANSACTION; INSERT INTO {marker} VALUES (1); SAVEPOINT {TEST_SAVEPOINT}; \
             SET @testdb_committing = {COMMITTING}"
        )
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
        let Some(marker) = &baseline.marker else {
            // One round trip: the settings go with the rollback, and are not reached if it fails.
            let rolled_back = sqlx::raw_sql(AssertSqlSafe(format!(
                "ROLLBACK TO SAVEPOINT {TEST_SAVEPOINT}; {}",
                baseline.settings
            )))
            .execute(&mut *conn)
            .await;
            return match rolled_back {
                Ok(_) => Ok(Rewind::Clean),
                Err(err) => lost_savepoint(err).map(|message| escaped(&message)),
            };
        };
        // Under transaction isolation the test's transaction ends here, so that `autocommit`
        // goes back on outside it (the driver's own ROLLBACK after this finds none open). The
        // marker row, read before and after the rollback, says whether the transaction is the one
        // testdb began: there and then gone. Still there, it was committed (by a COMMIT, BEGIN,
        // DDL, `SET autocommit = 1`, …: the test savepoint made again since); gone before, the
        // test rolled back testdb's transaction and made the savepoint again. Both fail closed,
        // as escapes.
        let rolled_back = sqlx::raw_sql(AssertSqlSafe(format!(
            "ROLLBACK TO SAVEPOINT {TEST_SAVEPOINT}; SELECT COUNT(*) FROM {marker}; ROLLBACK; \
             SELECT COUNT(*) FROM {marker}; SET autocommit = 1; {}",
            baseline.settings
        )))
        .fetch_all(&mut *conn)
        .await;
        match rolled_back {
            Ok(rows) => {
                let counts = rows
                    .iter()
                    .map(|row| row.try_get::<i64, _>(0))
                    .collect::<sqlx::Result<Vec<_>>>()?;
                Ok(match counts[..] {
                    [1, 0] => Rewind::Clean,
                    [_, after] if after > 0 => {
                        escaped("the transaction testdb began for the test was committed")
                    }
                    _ => escaped("the transaction testdb began for the test was rolled back"),
                })
            }
            Err(err) => {
                let message = lost_savepoint(err)?;
                if rolled_back_by_server(conn, marker).await? {
                    sqlx::raw_sql(AssertSqlSafe(format!(
                        "ROLLBACK; SET autocommit = 1; {}",
                        baseline.settings
                    )))
                    .execute(&mut *conn)
                    .await?;
                    return Ok(Rewind::Clean);
                }
                Ok(escaped(&message))
            }
        }
    }

    async fn reset_session(conn: &mut MySqlConnection, baseline: &Baseline) -> sqlx::Result<()> {
        sqlx::raw_sql(AssertSqlSafe(baseline.settings.clone()))
            .execute(&mut *conn)
            .await
            .map(drop)
    }
}
