//! The MySQL backend: the server test databases are created on, and the driver testdb speaks to
//! it with.

use std::fmt;
use std::str::FromStr;

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{ConnectOptions, Connection};
use testdb::backend::Driver;
use testdb::{Error, Result};
use url::Url;

/// The environment variable [`MySql::from_env`] reads.
pub(crate) const URL_VARIABLE: &str = "TESTDB_MYSQL_URL";

pub(crate) const NAME: &str = "MySQL";

/// The MySQL (or MariaDB) backend: the server test databases are created on.
///
/// testdb connects to the server as the URL's user to create and drop its own databases; it never
/// writes to a database it did not create.
#[derive(Clone)]
pub struct MySql {
    url: Url,
    redacted: String,
    options: MySqlConnectOptions,
}

impl MySql {
    /// The server in `TESTDB_MYSQL_URL`, e.g. `mysql://root@127.0.0.1:3306`; without it (or with
    /// it blank), [`Error::NotConfigured`], which tests report as skipped.
    pub fn from_env() -> Result<Self> {
        match std::env::var(URL_VARIABLE) {
            Ok(url) if !url.trim().is_empty() => MySql::from_url(&url),
            _ => Err(Error::NotConfigured {
                backend: NAME,
                hint: format!(
                    "set {URL_VARIABLE} to a server URL whose user may create databases, e.g. \
                     mysql://root@127.0.0.1:3306"
                ),
            }),
        }
    }

    /// The server at `url`, e.g. `mysql://user:password@host:3306`; a database in the URL is
    /// ignored (each test database is a database of its own).
    pub fn from_url(url: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidUrl {
            backend: NAME,
            url: redact(url),
            reason: scrub(&reason, url),
        };
        let mut parsed = Url::parse(url).map_err(|err| invalid(err.to_string()))?;
        if !matches!(parsed.scheme(), "mysql" | "mariadb") {
            return Err(invalid(format!(
                "the scheme is {:?}; expected mysql:// or mariadb://",
                parsed.scheme()
            )));
        }
        parsed.set_path("");
        let options = MySqlConnectOptions::from_str(parsed.as_str())
            .map_err(|err| invalid(err.to_string()))?;
        Ok(MySql {
            redacted: redact(parsed.as_str()),
            url: parsed,
            options,
        })
    }

    /// The server's URL with any password replaced by `***`.
    pub fn redacted_url(&self) -> &str {
        &self.redacted
    }

    /// The URL of database `name` on this server.
    pub(crate) fn url_of(&self, name: &str) -> String {
        let mut url = self.url.clone();
        url.set_path(&format!("/{name}"));
        url.into()
    }

    /// Options to connect to database `name`.
    pub(crate) fn options_of(&self, name: &str) -> MySqlConnectOptions {
        self.options.clone().database(name)
    }

    /// Options to connect to no database in particular.
    pub(crate) fn maintenance_options(&self) -> MySqlConnectOptions {
        self.options.clone()
    }

    /// A connection to no database in particular, for creating, dropping and copying databases.
    /// A connection of testdb's own: its statements wait at most [`LOCK_WAIT`] for a metadata
    /// lock (the server's default is a year), so that a session a test left holding one makes
    /// testdb fail with the server's error instead of hanging.
    pub(crate) async fn connect_maintenance(&self) -> Result<MySqlConnection> {
        let mut conn = self
            .options
            .connect()
            .await
            .map_err(|source| self.connect_error(source))?;
        let set = format!("SET SESSION lock_wait_timeout = {}", LOCK_WAIT.as_secs());
        match sqlx::raw_sql(sqlx::AssertSqlSafe(set))
            .execute(&mut conn)
            .await
        {
            Ok(_) => Ok(conn),
            Err(source) => {
                close(conn).await;
                Err(self.connect_error(source))
            }
        }
    }

    pub(crate) fn connect_error(&self, source: sqlx::Error) -> Error {
        let code = source
            .as_database_error()
            .and_then(|err| err.code().map(|code| code.into_owned()));
        let hint = match code.as_deref() {
            Some("28000") => "the server refused the user or password in the URL: fix them, or \
                              set TESTDB_MYSQL_URL to a user that may log in and create databases"
                .to_string(),
            Some("08004") => "the server has too many connections: raise max_connections, or \
                              run fewer test processes at once"
                .to_string(),
            _ => "is the server running and listening at that address? Start it, or set \
                  TESTDB_MYSQL_URL to the URL of one that is"
                .to_string(),
        };
        Error::Connect {
            backend: NAME,
            server: self.redacted.clone(),
            hint,
            source,
        }
    }
}

impl fmt::Debug for MySql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySql")
            .field("url", &self.redacted)
            .finish()
    }
}

impl Driver for MySql {
    type Database = sqlx::MySql;
    type Connection = MySqlConnection;

    const NAME: &'static str = NAME;
}

/// `url` with its password replaced by `***`; everything before the last `@` if it cannot be
/// parsed.
pub(crate) fn redact(url: &str) -> String {
    if let Ok(mut parsed) = Url::parse(url) {
        if parsed.password().is_some() {
            let _ = parsed.set_password(Some("***"));
        }
        return parsed.into();
    }
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Removes the URL's password from a message that might quote it.
fn scrub(message: &str, url: &str) -> String {
    let password = Url::parse(url)
        .ok()
        .and_then(|parsed| parsed.password().map(str::to_owned));
    match password {
        Some(password) if !password.is_empty() => message.replace(&password, "***"),
        _ => message.to_string(),
    }
}

/// Closes a maintenance connection, ignoring errors: the server cleans up after a dropped socket.
pub(crate) async fn close(connection: MySqlConnection) {
    let _ = connection.close().await;
}

/// The error of `step` on database `database`.
/// The server's error number, when `err` is the server's error.
pub(crate) fn error_number(err: &sqlx::Error) -> Option<u16> {
    match err {
        sqlx::Error::Database(err) => err
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .map(sqlx::mysql::MySqlDatabaseError::number),
        _ => None,
    }
}

/// How long testdb's own statements wait for a metadata lock.
pub(crate) const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

pub(crate) fn failed(database: &str, step: &str, source: sqlx::Error) -> Error {
    Error::Database {
        backend: NAME,
        database: database.to_owned(),
        step: step.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_passwords() {
        let cases = [
            ("mysql://u:hunter2@h/db", "mysql://u:***@h/db"),
            (
                "mysql://u:hun/ter2@h:notaport/db",
                "mysql://***@h:notaport/db",
            ),
            ("mysql://u@h:3306", "mysql://u@h:3306"),
        ];
        for (input, expected) in cases {
            assert_eq!(redact(input), expected, "{input}");
        }
    }
}
