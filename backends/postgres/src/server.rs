use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use testdb::backend::Driver;
use testdb::{Error, Result};
use url::Url;

use crate::budget;

/// Environment variables read by [`Postgres::from_env`], in order.
pub(crate) const URL_VARIABLES: [&str; 2] = ["TESTDB_POSTGRES_URL", "DATABASE_URL"];

pub(crate) const NAME: &str = "PostgreSQL";

/// The URL of the first of [`URL_VARIABLES`] that is configured: in the environment, else in
/// `.env`'s `from_file` (as dotenvy reads it, a variable set in the environment, even blank, is
/// not read from the file). A blank value names no server: the next variable is looked at.
fn configured_url(
    environment: impl Fn(&str) -> Option<String>,
    from_file: &[(String, String)],
) -> Option<String> {
    URL_VARIABLES.iter().find_map(|variable| {
        let value = environment(variable).or_else(|| {
            from_file
                .iter()
                .find(|(name, _)| name == variable)
                .map(|(_, value)| value.clone())
        })?;
        (!value.trim().is_empty()).then_some(value)
    })
}

/// The PostgreSQL backend: the server test databases are created on.
///
/// testdb connects to the database named in the URL (e.g. `postgres`) only to create, comment on
/// and drop its own databases; it never writes to it.
#[derive(Clone)]
pub struct Postgres {
    url: Url,
    redacted: String,
    options: PgConnectOptions,
}

impl Postgres {
    /// The server in `TESTDB_POSTGRES_URL`, else in `DATABASE_URL`; read from the environment,
    /// else (as sqlx reads `DATABASE_URL`) from a `.env` file in the working directory or above.
    ///
    /// With neither, testdb's own server: started from PostgreSQL's binaries on this machine if it
    /// is not running (`TESTDB_PG_BIN`, `$PATH`, `pg_config --bindir`, `/usr/lib/postgresql/*/bin`,
    /// `/usr/local/pgsql/bin`, Homebrew's; the newest), shared by every process, listening only on
    /// a Unix socket in its directory (`$TMPDIR/testdb-pg-<uid>`, or `TESTDB_PG_DIR`), and stopped
    /// by itself after 15 minutes without a process using it (`TESTDB_PG_IDLE`).
    /// `TESTDB_POSTGRES=off` turns it off. Without binaries (or turned off), the error is
    /// [`Error::NotConfigured`], which tests report as skipped.
    pub fn from_env() -> Result<Self> {
        // Up to a line it cannot read, as sqlx's own `dotenvy::dotenv()` stops there.
        let from_file: Vec<(String, String)> = dotenvy::dotenv_iter()
            .map(|items| items.map_while(std::result::Result::ok).collect())
            .unwrap_or_default();
        if let Some(url) = configured_url(|variable| std::env::var(variable).ok(), &from_file) {
            return Postgres::from_url(&url);
        }
        let configure = format!(
            "set {} (or {}), in the environment or a .env file, to a server URL whose role may \
             create databases, e.g. postgres://postgres@127.0.0.1:5432/postgres",
            URL_VARIABLES[0], URL_VARIABLES[1]
        );
        #[cfg(unix)]
        {
            use crate::own_server;
            let Some(settings) = own_server::Settings::from_env()? else {
                return Err(Error::NotConfigured {
                    backend: NAME,
                    hint: format!(
                        "{configure}; testdb's own server is off ({}=off)",
                        own_server::SWITCH_VARIABLE
                    ),
                });
            };
            match own_server::url(&settings)? {
                Ok(url) => Postgres::from_url(&url),
                Err(looked) => Err(Error::NotConfigured {
                    backend: NAME,
                    hint: format!(
                        "{configure}; or install PostgreSQL's server (e.g. `apt install \
                         postgresql`, `dnf install postgresql-server`, `brew install \
                         postgresql`), from which testdb starts a server of its own, or set {} \
                         to the directory of its binaries: none were found in {}",
                        own_server::BIN_VARIABLE,
                        looked
                            .iter()
                            .map(|dir| dir.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }),
            }
        }
        #[cfg(not(unix))]
        Err(Error::NotConfigured {
            backend: NAME,
            hint: configure,
        })
    }

    /// The server at `url`, e.g. `postgres://user:password@host:5432/postgres`.
    pub fn from_url(url: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidUrl {
            backend: NAME,
            url: redact(url),
            reason: scrub(&reason, url),
        };
        let parsed = Url::parse(url).map_err(|err| invalid(err.to_string()))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(invalid(format!(
                "the scheme is {:?}; expected postgres:// or postgresql://",
                parsed.scheme()
            )));
        }
        let options = PgConnectOptions::from_str(url).map_err(|err| invalid(err.to_string()))?;
        Ok(Postgres {
            redacted: redact(url),
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
        let query: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(key, _)| key != "dbname")
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect();
        if query.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(query);
        }
        url.into()
    }

    pub(crate) fn options_of(&self, name: &str) -> PgConnectOptions {
        self.options.clone().database(name)
    }

    /// Opens a connection to the database named in the URL, for creating and dropping, and takes
    /// a slot in the connection budget for it if one is free (see [`budget::admit_if_free`]).
    /// While the server refuses connections for too many clients, waits (up to
    /// [`budget::TIMEOUT`]).
    pub(crate) async fn connect_maintenance(&self) -> Result<PgConnection> {
        // A bad budget size is the user's to fix: said now, not after a timeout.
        budget::configured().map_err(|bad| Error::NotConfigured {
            backend: NAME,
            hint: bad.to_string(),
        })?;
        let deadline = Instant::now() + budget::TIMEOUT;
        let mut backoff = Duration::from_millis(10);
        let mut conn = loop {
            match self.options.connect().await {
                Ok(conn) => break conn,
                Err(source) if budget::is_too_many(&source) && Instant::now() < deadline => {
                    budget::note_full(&self.options);
                    // Jittered, so that processes refused together do not come back together.
                    let pause = backoff.mul_f64(0.5 + f64::from(budget::random(100)) / 100.0);
                    tokio::time::sleep(
                        pause.min(deadline.saturating_duration_since(Instant::now())),
                    )
                    .await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                Err(source) => return Err(self.connect_error(source)),
            }
        };
        match budget::admit_if_free(&mut conn, &self.options).await {
            Ok(_) => Ok(conn),
            Err(source) => {
                close(conn).await;
                Err(self.connect_error(source))
            }
        }
    }

    /// Takes a budget slot for a maintenance connection that gave its slot back while idle, if
    /// one is free (see [`budget::admit_if_free`]); whether it holds one now.
    pub(crate) async fn readmit(&self, conn: &mut PgConnection) -> sqlx::Result<bool> {
        budget::admit_if_free(conn, &self.options).await
    }

    pub(crate) fn connect_error(&self, source: sqlx::Error) -> Error {
        let code = source
            .as_database_error()
            .and_then(|err| err.code().map(|code| code.into_owned()));
        let hint = match code.as_deref() {
            Some("28P01" | "28000") => {
                "the server refused the role or password in the URL: fix them, or set \
                 TESTDB_POSTGRES_URL to a role that may log in and create databases"
                    .to_string()
            }
            Some("53300") => budget::full_hint(&budget::server_key(&self.options)),
            Some("3D000") => format!(
                "the database named in the URL ({}) does not exist: testdb connects to it to \
                 create test databases, so name one that exists, e.g. postgres",
                self.options.get_database().unwrap_or("the default")
            ),
            _ => match <Postgres as Driver>::refused(&self.options, &source) {
                Some(hint) => hint,
                None => "is the server running and listening at that address? Start it, or set \
                         TESTDB_POSTGRES_URL to the URL of one that is"
                    .to_string(),
            },
        };
        Error::Connect {
            backend: NAME,
            server: self.redacted.clone(),
            hint,
            source,
        }
    }

    pub(crate) fn username(&self) -> &str {
        self.options.get_username()
    }
}

impl fmt::Debug for Postgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Postgres")
            .field("url", &self.redacted)
            .finish()
    }
}

/// `url` with its password (in the user info or a `password=` parameter) replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    if let Ok(mut parsed) = Url::parse(url) {
        if parsed.password().is_some() {
            let _ = parsed.set_password(Some("***"));
        }
        if parsed.query_pairs().any(|(key, _)| key == "password") {
            let pairs: Vec<(String, String)> = parsed
                .query_pairs()
                .map(|(key, value)| {
                    let value = if key == "password" {
                        "***".to_string()
                    } else {
                        value.into_owned()
                    };
                    (key.into_owned(), value)
                })
                .collect();
            parsed.query_pairs_mut().clear().extend_pairs(pairs);
        }
        return parsed.into();
    }
    // Unparseable: hide everything up to the last `@` (a password may hold a `/`), and every `password=` value, rather than guess.
    let mut text = url.to_string();
    if let Some(start) = text.find("://").map(|at| at + 3) {
        let authority_end = text[start..]
            .find(['?', '#'])
            .map_or(text.len(), |end| start + end);
        if let Some(at) = text[start..authority_end].rfind('@') {
            text.replace_range(start..start + at, "***");
        }
    }
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(found) = rest.find("password=") {
        let value_start = found + "password=".len();
        out.push_str(&rest[..value_start]);
        out.push_str("***");
        rest = &rest[value_start..];
        rest = &rest[rest.find('&').unwrap_or(rest.len())..];
    }
    out.push_str(rest);
    out
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
pub(crate) async fn close(connection: PgConnection) {
    let _ = connection.close().await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_environment_comes_before_dot_env() {
        use super::configured_url;
        let file = vec![
            ("DATABASE_URL".to_string(), "postgres://file/db".to_string()),
            ("TESTDB_POSTGRES_URL".to_string(), " ".to_string()),
        ];
        let none = |_: &str| None;
        assert_eq!(
            configured_url(none, &file).as_deref(),
            Some("postgres://file/db")
        );
        let env = |name: &str| (name == "DATABASE_URL").then(|| "postgres://env/db".to_string());
        assert_eq!(
            configured_url(env, &file).as_deref(),
            Some("postgres://env/db")
        );
        assert_eq!(configured_url(none, &[]), None);
        // testdb's own variable in .env comes before the application's DATABASE_URL.
        let testdb_file = vec![(
            "TESTDB_POSTGRES_URL".to_string(),
            "postgres://t/db".to_string(),
        )];
        assert_eq!(
            configured_url(env, &testdb_file).as_deref(),
            Some("postgres://t/db")
        );
        // Set blank in the environment: not read from the file, and names no server.
        let blank = |name: &str| (name == "DATABASE_URL").then(String::new);
        assert_eq!(configured_url(blank, &file), None);
    }

    use super::redact;

    #[test]
    fn redacts_passwords() {
        let cases = [
            ("postgres://u:hunter2@h/db", "postgres://u:***@h/db"),
            (
                "postgres://h/db?password=hunter2&x=1",
                "postgres://h/db?password=***&x=1",
            ),
            (
                "postgres://u:hun/ter2@h:notaport/db",
                "postgres://***@h:notaport/db",
            ),
            ("postgres://u@h/db", "postgres://u@h/db"),
        ];
        for (input, expected) in cases {
            assert_eq!(redact(input), expected, "{input}");
            assert!(!redact(input).contains("hunter2"));
        }
    }
}
