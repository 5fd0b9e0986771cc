use std::fmt;

/// How a suite's tests are kept from seeing each other's writes. One word in the suite's
/// [`Setup`](crate::Setup) switches it; tests do not change.
///
/// | isolation | the test's writes | seen by other connections and processes | tests of a suite run | undone by |
/// |---|---|---|---|---|
/// | `Savepoint` | inside the suite transaction | no | one at a time | `ROLLBACK TO SAVEPOINT` |
/// | `Transaction` | in a transaction of the test's own, on the committed baseline | no (the baseline, yes) | in parallel | `ROLLBACK` |
/// | `Committed` | committed | yes | one at a time | restoring the tables the test wrote |
/// | `FreshDatabase` | committed, in a copy of the baseline | yes | in parallel | dropping the copy |
///
/// Every isolation but `Savepoint` builds the baseline (migrations, fixtures, setup function)
/// once into a template, shared by every process of a run and reused by later runs while nothing
/// that built it has changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Isolation {
    /// Django's `TestCase`: the setup is never committed; each test runs in a savepoint of the
    /// suite transaction, rolled back at its end. The cheapest; nothing outside the test's
    /// connection sees the data.
    #[default]
    Savepoint,
    /// Rails' and Ecto's sandbox: the baseline is committed; each test gets a connection of its
    /// own, in a transaction rolled back at its end. Tests run in parallel (on SQLite, writers
    /// take turns: each test's transaction takes the write lock when it begins, and a test waits
    /// for it up to the busy timeout).
    Transaction,
    /// Django's `TransactionTestCase`: the test commits for real, so other connections and
    /// subprocesses see its data; afterwards testdb puts back the tables it wrote. Schema changes
    /// are not undone: use `FreshDatabase` for tests that make them.
    Committed,
    /// `sqlx::test`'s database per test: each test gets its own copy of the baseline, dropped
    /// afterwards (kept if the test fails and `TESTDB_KEEP=1` is set).
    FreshDatabase,
}

impl Isolation {
    /// Whether other connections and processes see what a test sees.
    pub fn is_visible_to_others(self) -> bool {
        matches!(self, Isolation::Committed | Isolation::FreshDatabase)
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Isolation::Savepoint => "Isolation::Savepoint",
            Isolation::Transaction => "Isolation::Transaction",
            Isolation::Committed => "Isolation::Committed",
            Isolation::FreshDatabase => "Isolation::FreshDatabase",
        })
    }
}
