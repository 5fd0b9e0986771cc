//! N callers at once against committed data: in child processes of the test binary
//! ([`spawn_concurrent`]), or as concurrent calls in this process ([`run_concurrent`]).

mod call;
mod child;
mod local;
mod spawn;

use std::marker::PhantomData;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::Database;

pub use call::Caller;
pub use child::serve_callers;

use crate::handle::Handle;
use crate::{Backend, Error, Result, runtime};
use call::Call;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How one call ended.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Outcome<R> {
    /// The caller returned this value.
    Value(R),
    /// The caller returned an error (its message, with its causes), or could not connect.
    Error(String),
    /// The caller panicked, with this message.
    Panic(String),
    /// The child process died before it replied.
    Crash {
        /// How it ended (exit code or signal).
        status: String,
        /// The end of what it wrote to its standard error.
        stderr: String,
    },
    /// The call ran past its time limit (or the batch's); its child was killed and reaped.
    Timeout,
}

impl<R> Outcome<R> {
    /// The value, if the caller returned one.
    pub fn value(self) -> Option<R> {
        match self {
            Outcome::Value(value) => Some(value),
            _ => None,
        }
    }

    /// Whether the caller returned a value.
    pub fn is_value(&self) -> bool {
        matches!(self, Outcome::Value(_))
    }
}

/// The outcomes of a batch, one per call, in the order the calls were given.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcomes<R> {
    /// One per call, in order.
    pub outcomes: Vec<Outcome<R>>,
    /// How far apart the calls were released: from the first to the last (none with fewer than
    /// two released calls).
    pub release_skew: Option<Duration>,
}

impl<R> Outcomes<R> {
    /// The values, in order, if every call returned one; else the first other outcome.
    pub fn values(self) -> std::result::Result<Vec<R>, Outcome<R>> {
        self.outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Outcome::Value(value) => Ok(value),
                other => Err(other),
            })
            .collect()
    }
}

impl<R> std::ops::Deref for Outcomes<R> {
    type Target = [Outcome<R>];

    fn deref(&self) -> &[Outcome<R>] {
        &self.outcomes
    }
}

/// The time limits and the cap of a batch.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Limits {
    per_call: Option<Duration>,
    batch: Option<Duration>,
    max_running: Option<usize>,
}

/// `start + limit`, or as far as an instant goes (a limit may be `Duration::MAX`).
pub(crate) fn after(start: tokio::time::Instant, limit: Duration) -> tokio::time::Instant {
    start
        .checked_add(limit)
        .or_else(|| start.checked_add(Duration::from_secs(86_400 * 365)))
        .unwrap_or(start)
}

/// How long a call may run unless [`Calls::timeout`] says otherwise.
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A batch of calls for [`spawn_concurrent`] or [`run_concurrent`]: callers (async functions
/// taking a connection and serde arguments, returning a serde value), each with its arguments.
///
/// A caller is a plain `async fn` (not a closure: a child process finds it by its name), and must
/// be listed in the test binary's [`callers!`](crate::callers) for `spawn_concurrent`.
pub struct Calls<C, R> {
    calls: Vec<Call<C>>,
    invalid: Option<String>,
    limits: Limits,
    result: PhantomData<fn() -> R>,
}

impl<C: sqlx::Connection + 'static, R: DeserializeOwned> Calls<C, R> {
    /// No calls yet.
    pub fn new() -> Self {
        Calls {
            calls: Vec::new(),
            invalid: None,
            limits: Limits {
                per_call: Some(DEFAULT_CALL_TIMEOUT),
                ..Limits::default()
            },
            result: PhantomData,
        }
    }

    /// `caller` called `times` times, each with `args`.
    pub fn repeat<F, A, E>(times: usize, caller: F, args: A) -> Self
    where
        F: for<'c> AsyncFn(&'c mut C, A) -> std::result::Result<R, E> + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + 'static,
        E: Into<BoxError> + 'static,
    {
        let mut calls = Calls::new();
        match Call::new(caller, &args) {
            Ok(call) => calls.calls = vec![call; times],
            Err(invalid) => calls.invalid = Some(invalid),
        }
        calls
    }

    /// One more call: `caller` with `args`.
    pub fn call<F, A, E>(mut self, caller: F, args: A) -> Self
    where
        F: for<'c> AsyncFn(&'c mut C, A) -> std::result::Result<R, E> + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + 'static,
        E: Into<BoxError> + 'static,
    {
        match Call::new(caller, &args) {
            Ok(call) => self.calls.push(call),
            Err(invalid) => {
                self.invalid.get_or_insert(invalid);
            }
        }
        self
    }

    /// How long each call may run once released (60 s unless set).
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.limits.per_call = Some(limit);
        self
    }

    /// How long the whole batch may take, start to end (no limit unless set).
    pub fn batch_timeout(mut self, limit: Duration) -> Self {
        self.limits.batch = Some(limit);
        self
    }

    /// Runs at most `count` calls at once: the calls go in waves of `count`, each wave released
    /// together.
    pub fn max_running(mut self, count: usize) -> Self {
        self.limits.max_running = Some(count.max(1));
        self
    }

    fn check(&self) -> Result<()> {
        match &self.invalid {
            Some(reason) => Err(Error::Concurrency {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }
}

impl<C: sqlx::Connection + 'static, R: DeserializeOwned> Default for Calls<C, R> {
    fn default() -> Self {
        Calls::new()
    }
}

impl<C, R> std::fmt::Debug for Calls<C, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calls")
            .field(
                "callers",
                &self.calls.iter().map(|call| call.name).collect::<Vec<_>>(),
            )
            .field("limits", &self.limits)
            .finish()
    }
}

/// Runs every call in `calls` in a child process of its own (a new run of this test binary), each
/// with its own connection to `database`, all released at the same instant once every child is
/// connected; returns each call's [`Outcome`], in order.
///
/// Arguments and results travel as JSON over a socket between parent and child, never through
/// the child's standard output, which is discarded (its standard error is kept for crashes). A
/// child runs only the caller: not the test that spawned it, nor the suite's setup.
///
/// `database` must be one other processes can see: [`TestDatabase::handle`](crate::TestDatabase),
/// or [`current`](crate::current) in a suite whose isolation is `Committed` or `FreshDatabase`;
/// otherwise this fails with [`Error::NotVisible`] before starting anything.
pub async fn spawn_concurrent<B: Backend, R: DeserializeOwned>(
    database: &Handle<B>,
    calls: Calls<<B::Database as Database>::Connection, R>,
) -> Result<Outcomes<R>> {
    database.require_visible("spawn_concurrent")?;
    calls.check()?;
    let requests = calls
        .calls
        .iter()
        .map(|call| spawn::Request {
            name: call.name,
            args: call.args.clone(),
        })
        .collect();
    let url = database.url().to_owned();
    let limits = calls.limits;
    let task = runtime::spawn(spawn::spawn(url, requests, limits))?;
    // If this future is dropped (the test ran out of time, or was cancelled), the batch stops
    // and its children are killed, rather than writing into the next test's data.
    let abort = AbortOnDrop(task.abort_handle());
    let (outcomes, skew) = runtime::join(task).await??;
    drop(abort);
    Ok(typed(outcomes, skew))
}

/// The in-process twin of [`spawn_concurrent`]: the same calls, each on a new connection of its
/// own, run concurrently in the calling task (interleaved at every query) once every connection
/// is open, with the same outcomes and limits. Cheaper; but a crash takes the test with it.
pub async fn run_concurrent<B: Backend, R: DeserializeOwned>(
    database: &Handle<B>,
    calls: Calls<<B::Database as Database>::Connection, R>,
) -> Result<Outcomes<R>> {
    database.require_visible("run_concurrent")?;
    calls.check()?;
    let (outcomes, skew) = local::run(database.url(), calls.calls, calls.limits).await;
    Ok(typed(outcomes, skew))
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn typed<R: DeserializeOwned>(
    outcomes: Vec<Outcome<serde_json::Value>>,
    release_skew: Option<Duration>,
) -> Outcomes<R> {
    let outcomes = outcomes
        .into_iter()
        .map(|outcome| match outcome {
            Outcome::Value(value) => match serde_json::from_value(value) {
                Ok(value) => Outcome::Value(value),
                Err(err) => Outcome::Error(format!("cannot read the result: {err}")),
            },
            Outcome::Error(error) => Outcome::Error(error),
            Outcome::Panic(message) => Outcome::Panic(message),
            Outcome::Crash { status, stderr } => Outcome::Crash { status, stderr },
            Outcome::Timeout => Outcome::Timeout,
        })
        .collect();
    Outcomes {
        outcomes,
        release_skew,
    }
}

/// Registers the callers that [`spawn_concurrent`] may run in this test binary's child
/// processes: one line per binary, listing every caller.
///
/// ```ignore
/// testdb::callers!(book_seat, withdraw);
/// ```
///
/// It defines an ignored test, `testdb_spawn_concurrent_entry`, that child processes run (a
/// normal run lists it as ignored). A binary with its own `main` calls
/// [`serve_callers`] at the top of `main` instead.
#[macro_export]
macro_rules! callers {
    ($($caller:expr),+ $(,)?) => {
        #[test]
        #[ignore = "testdb: the entry point of spawn_concurrent's child processes, not a test"]
        fn testdb_spawn_concurrent_entry() {
            $crate::serve_callers(&[$($crate::Caller::of($caller)),+]);
        }
    };
}
