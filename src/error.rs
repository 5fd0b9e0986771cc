use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong in testdb.
///
/// Each variant says which database (or server, or file) and which step; the underlying error, when
/// there is one, is the [`source`](std::error::Error::source), not repeated in the message.
/// `Debug` prints the message followed by its chain of causes, so a test that returns
/// `Result<(), testdb::Error>` fails with the whole story. No variant ever holds a password: URLs
/// are stored with the password replaced by `***`.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No server was configured for a backend that needs one.
    #[error("{backend} is not configured: {hint}")]
    NotConfigured {
        /// The backend, e.g. `PostgreSQL`.
        backend: &'static str,
        /// What to set, and how.
        hint: String,
    },

    /// An environment variable that testdb reads holds a value it cannot use.
    #[error("the environment variable {variable}={value:?} is invalid: {reason}")]
    InvalidSetting {
        /// The variable, e.g. `TESTDB_TEMPLATE_DAYS`.
        variable: &'static str,
        /// Its value.
        value: String,
        /// What a valid value looks like.
        reason: String,
    },

    /// A connection URL that cannot be used.
    #[error("invalid {backend} URL {url}: {reason}")]
    InvalidUrl {
        /// The backend, e.g. `PostgreSQL`.
        backend: &'static str,
        /// The URL, with any password replaced by `***`.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The server could not be reached or refused the connection.
    #[error("cannot connect to {backend} at {server}: {hint}")]
    Connect {
        /// The backend, e.g. `PostgreSQL`.
        backend: &'static str,
        /// The server URL, with any password replaced by `***`.
        server: String,
        /// What to check or do.
        hint: String,
        /// The driver's error.
        source: sqlx::Error,
    },

    /// testdb's own server, started when none is configured, could not be found, started or
    /// reached.
    #[error("{backend} server of testdb's own in {}: cannot {step}: {hint}", dir.display())]
    OwnServer {
        /// The backend, e.g. `PostgreSQL`.
        backend: &'static str,
        /// The server's directory.
        dir: PathBuf,
        /// What testdb was doing.
        step: String,
        /// What happened (with the end of the server's log, where it has one), and what to do.
        hint: String,
        /// The operating system's error, where there is one.
        source: Option<std::io::Error>,
    },

    /// The server's role is not allowed to do what testdb needs (e.g. create databases).
    #[error("{backend} role {role:?} at {server} may not {action}: {hint}")]
    PermissionDenied {
        /// The backend, e.g. `PostgreSQL`.
        backend: &'static str,
        /// The server URL, with any password replaced by `***`.
        server: String,
        /// The role (user) testdb connected as.
        role: String,
        /// What it tried to do.
        action: String,
        /// How to grant it.
        hint: String,
        /// The server's error.
        source: sqlx::Error,
    },

    /// A statement or connection on a test database failed.
    #[error("{backend} database {database}: {step} failed")]
    Database {
        /// The backend, e.g. `SQLite`.
        backend: &'static str,
        /// The database: its name, or its file.
        database: String,
        /// What testdb was doing.
        step: String,
        /// The driver's error.
        source: sqlx::Error,
    },

    /// Applying migrations to a test database failed; the database was removed.
    #[error("{backend} database {database}: migrations failed")]
    Migrate {
        /// The backend, e.g. `SQLite`.
        backend: &'static str,
        /// The database: its name, or its file.
        database: String,
        /// sqlx's migration error, which names the migration.
        source: sqlx::migrate::MigrateError,
    },

    /// A migrations directory could not be read as sqlx migrations.
    #[error("cannot read migrations from {}", path.display())]
    Migrations {
        /// The directory.
        path: PathBuf,
        /// sqlx's error, which names the file.
        source: sqlx::migrate::MigrateError,
    },

    /// A fixture could not be found, read or loaded; nothing from the load was kept.
    #[error("fixture {}{}: {message}", file.display(), fixture_site(table, row, column))]
    Fixture {
        /// The fixture file.
        file: PathBuf,
        /// The table, where known.
        table: Option<String>,
        /// The row (`row 3`, counted from 0 in its table's list, or `line 4` of a CSV file),
        /// where known.
        row: Option<String>,
        /// The column, where known.
        column: Option<String>,
        /// What is wrong: the database's own message where it has one.
        message: String,
    },

    /// A file or directory operation failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What testdb was doing, e.g. `create directory`.
        action: String,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// A suite's setup failed; every test of the suite fails with this, and nothing was committed.
    #[error("suite {suite}: setup failed: {message}")]
    Setup {
        /// The suite.
        suite: &'static str,
        /// What failed.
        message: String,
        /// The error that made it fail, where there is one: shared by every test of the suite,
        /// each of which reports it.
        source: Option<std::sync::Arc<Error>>,
    },

    /// A suite's setup function returned an error.
    #[error("suite {suite}: the setup function failed")]
    SetupFunction {
        /// The suite.
        suite: &'static str,
        /// The setup function's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A test (or the setup) left rows that break a deferred constraint: a commit would have
    /// failed.
    #[error("suite {suite}, database {database}: a deferred constraint fails at commit: {message}")]
    DeferredConstraint {
        /// The suite (or `setup`).
        suite: &'static str,
        /// The database.
        database: String,
        /// The database's message, naming the constraint.
        message: String,
    },

    /// A test ended the suite transaction (`COMMIT`, `ROLLBACK`, or an implicit commit). The suite
    /// rebuilds its databases before the next test.
    #[error(
        "suite {suite}, database {database}: the test ended the transaction testdb runs it in \
         ({message}); use `begin()` for nested transactions instead of COMMIT/ROLLBACK \
         statements, or Isolation::Committed for code that must commit"
    )]
    Escaped {
        /// The suite.
        suite: &'static str,
        /// The database.
        database: String,
        /// What was found.
        message: String,
    },

    /// A test's body returned an error (the source).
    #[error("suite {suite}: the test failed")]
    Test {
        /// The suite.
        suite: &'static str,
        /// The test's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A test ran longer than its suite's time limit.
    #[error(
        "suite {suite}: the test did not finish within {limit:?}. If it opened a second \
         connection (the pool, another task or process), that connection may be waiting for a row \
         or lock held by the suite transaction, which is never committed: use the test's own \
         connection, or a committed isolation"
    )]
    TimeLimit {
        /// The suite.
        suite: &'static str,
        /// The limit.
        limit: std::time::Duration,
    },

    /// Other connections or processes were asked to look at data they cannot see.
    #[error(
        "{what} cannot see the data of {database}: the suite uses {isolation}, whose data only \
         the test's own connection sees; use Isolation::Committed or Isolation::FreshDatabase"
    )]
    NotVisible {
        /// Who was going to look (e.g. `spawn_concurrent`).
        what: String,
        /// The isolation the data is in.
        isolation: crate::Isolation,
        /// The database.
        database: String,
    },

    /// [`current`](crate::current) was called outside a suite's test.
    #[error("no current test database: {reason}")]
    NoCurrentTest {
        /// Why there is none.
        reason: String,
    },

    /// A template (the committed baseline of a suite) could not be built or used.
    #[error("suite {suite}: template {template}: {message}")]
    Template {
        /// The suite.
        suite: &'static str,
        /// The template's name.
        template: String,
        /// What went wrong.
        message: String,
    },

    /// A batch of concurrent calls could not be run as given.
    #[error("concurrent calls: {reason}")]
    Concurrency {
        /// What was wrong.
        reason: String,
    },

    /// testdb's own runtime could not run the work.
    #[error("testdb runtime: {reason}")]
    Runtime {
        /// What went wrong.
        reason: String,
    },
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")?;
        let mut source = std::error::Error::source(self);
        if source.is_some() {
            f.write_str("\n\nCaused by:")?;
        }
        // Many drivers' messages already end with their cause's: print each text once.
        let mut previous = String::new();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !previous.ends_with(&text) {
                write!(f, "\n    {text}")?;
            }
            previous = text;
            source = cause.source();
        }
        Ok(())
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn fixture_site(table: &Option<String>, row: &Option<String>, column: &Option<String>) -> String {
    let mut site = String::new();
    if let Some(table) = table {
        site.push_str(&format!(", table {table}"));
    }
    if let Some(row) = row {
        site.push_str(&format!(", {row}"));
    }
    if let Some(column) = column {
        site.push_str(&format!(", column {column}"));
    }
    site
}
