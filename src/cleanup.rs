//! Removal of test databases: when they are dropped, when the process exits, and (via the backends'
//! sweeps) after a process died without doing either.
//!
//! Rust never drops a `static`, and libtest ends the process with `exit`, so every live database is
//! also registered here and removed by an `atexit` hook.

use std::any::TypeId;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, Once};
use std::time::Duration;

use crate::Result;
use crate::backend::Templates;
use crate::runtime;

type Removal = Pin<Box<dyn Future<Output = ()> + Send>>;
type Remover = Box<dyn FnOnce() -> Removal + Send>;

static LIVE: Mutex<Option<HashMap<u64, Remover>>> = Mutex::new(None);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static AT_EXIT: Once = Once::new();

fn live() -> MutexGuard<'static, Option<HashMap<u64, Remover>>> {
    // A panic while holding this lock cannot leave the map inconsistent: keep going.
    LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Registers a database to be removed at process exit; returns the key for [`unregister`].
pub(crate) fn register(remover: Remover) -> u64 {
    AT_EXIT.call_once(|| {
        // SAFETY: `remove_all_at_exit` is an `extern "C"` function that never unwinds.
        #[allow(unsafe_code)]
        unsafe {
            libc::atexit(remove_all_at_exit);
        }
    });
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    live().get_or_insert_with(HashMap::new).insert(id, remover);
    id
}

/// Takes a database off the exit list, returning its remover if it was still there.
pub(crate) fn unregister(id: u64) -> Option<Remover> {
    live().as_mut().and_then(|map| map.remove(&id))
}

/// Background work the exit hook waits for: removals, and databases being created (a database
/// whose creation is cut short by the exit would be left unmarked, out of any sweep's reach).
static PENDING: Mutex<usize> = Mutex::new(0);
static PENDING_DONE: Condvar = Condvar::new();
/// How long the exit hook waits for background work.
const PENDING_GRACE: Duration = Duration::from_secs(30);

fn pending() -> MutexGuard<'static, usize> {
    PENDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Background work in progress, until dropped.
pub(crate) struct Pending(());

impl Pending {
    pub(crate) fn start() -> Self {
        *pending() += 1;
        Pending(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut count = pending();
        *count = count.saturating_sub(1);
        PENDING_DONE.notify_all();
    }
}

/// Starts `future` on testdb's runtime; the process waits for it at exit.
pub(crate) fn spawn_awaited<F>(future: F) -> Result<tokio::task::JoinHandle<F::Output>>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let pending = Pending::start();
    runtime::spawn(async move {
        let _pending = pending;
        future.await
    })
}

/// Removes a database on testdb's runtime without waiting for it; the exit hook waits for it if
/// `awaited`.
pub(crate) fn remove_in_background(id: u64, awaited: bool) {
    if let Some(remove) = unregister(id) {
        // Without a runtime to remove it on, the next run's sweep removes it.
        if awaited {
            let _ = spawn_awaited(remove());
        } else {
            let _ = runtime::spawn(remove());
        }
    }
}

extern "C" fn remove_all_at_exit() {
    let _ = std::panic::catch_unwind(|| {
        let count = pending();
        let _ = PENDING_DONE.wait_timeout_while(count, PENDING_GRACE, |count| *count > 0);
        let removers: Vec<Remover> = live()
            .take()
            .map(|map| map.into_values().collect())
            .unwrap_or_default();
        if removers.is_empty() {
            return;
        }
        let removals: Vec<Removal> = removers.into_iter().map(|remove| remove()).collect();
        let _ = runtime::run_detached(async move {
            for removal in removals {
                removal.await;
            }
        });
    });
}

static SWEPT: Mutex<Option<HashSet<(TypeId, String)>>> = Mutex::new(None);

fn swept() -> MutexGuard<'static, Option<HashSet<(TypeId, String)>>> {
    SWEPT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sweeps a backend's scope the first time this process uses it.
pub(crate) async fn sweep_once<B: Templates>(backend: &B) -> Result<()> {
    let scope = (TypeId::of::<B>(), backend.sweep_scope());
    if !swept()
        .get_or_insert_with(HashSet::new)
        .insert(scope.clone())
    {
        return Ok(());
    }
    // A bad setting is an error here, not a sweep skipped in silence.
    let result = match template_policy() {
        Ok((unused_for, keep_at_most)) => {
            let swept = backend.sweep().await;
            if swept.is_ok() {
                // Best effort: a template left now is removed by a later sweep.
                let _ = backend
                    .remove_unused_templates(unused_for, keep_at_most)
                    .await;
            }
            swept
        }
        Err(err) => Err(err),
    };
    if result.is_err() {
        // Try again next time rather than never.
        if let Some(set) = swept().as_mut() {
            set.remove(&scope);
        }
    }
    result.map(drop)
}

/// How long a template may go unused before a sweep removes it, unless `TESTDB_TEMPLATE_DAYS`
/// says otherwise.
const TEMPLATE_DAYS: f64 = 3.0;
/// How many templates a sweep keeps on a server or in a directory, at most, unless
/// `TESTDB_MAX_TEMPLATES` says otherwise.
const MAX_TEMPLATES: usize = 200;

/// How long a template may go unused, and how many a sweep keeps: `TESTDB_TEMPLATE_DAYS` (a
/// number of days, fractions allowed) and `TESTDB_MAX_TEMPLATES`.
pub(crate) fn template_policy() -> Result<(Duration, usize)> {
    let unused_for = match setting("TESTDB_TEMPLATE_DAYS") {
        None => Duration::from_secs_f64(TEMPLATE_DAYS * 86_400.0),
        Some(value) => value
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(|days| Duration::try_from_secs_f64(days * 86_400.0).ok())
            .filter(|period| *period <= Duration::from_secs(100 * 365 * 86_400))
            // A backend may record a use only hourly: a shorter period would remove templates
            // used within it.
            .filter(|period| period.is_zero() || *period >= Duration::from_secs(3_600))
            .ok_or_else(|| crate::Error::InvalidSetting {
                variable: "TESTDB_TEMPLATE_DAYS",
                value,
                reason: "expected 0 (keep no unused template) or a number of days from 0.042 (an \
                         hour: uses are recorded hourly) to 36500, such as 3 or 0.5"
                    .into(),
            })?,
    };
    let most = match setting("TESTDB_MAX_TEMPLATES") {
        None => MAX_TEMPLATES,
        Some(value) => value
            .trim()
            .parse::<usize>()
            .map_err(|_| crate::Error::InvalidSetting {
                variable: "TESTDB_MAX_TEMPLATES",
                value,
                reason: "expected a whole number of templates, such as 200".into(),
            })?,
    };
    Ok((unused_for, most))
}

fn setting(variable: &str) -> Option<String> {
    std::env::var(variable)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

#[cfg(test)]
mod tests {
    //! Sweeping on a fake server: once per scope, again after a failure, and templates removed
    //! only after a sweep that worked.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    use sqlx::sqlite::SqliteConnectOptions;

    use super::sweep_once;
    use crate::backend::{Driver, OwnedDatabase, Server, Templates};
    use crate::{Error, Result};

    /// A server whose sweeps count themselves, and fail while `failing` says so.
    #[derive(Debug, Clone, Default)]
    struct Fake {
        scope: &'static str,
        failing: Arc<AtomicBool>,
        sweeps: Arc<AtomicUsize>,
        template_removals: Arc<AtomicUsize>,
    }

    #[derive(Debug)]
    struct Nothing;

    impl OwnedDatabase for Nothing {
        type Database = sqlx::Sqlite;

        fn name(&self) -> &str {
            "nothing"
        }

        fn url(&self) -> &str {
            "sqlite::memory:"
        }

        fn connect_options(&self) -> SqliteConnectOptions {
            SqliteConnectOptions::new()
        }

        async fn destroy(self) -> Result<()> {
            Ok(())
        }
    }

    fn unsupported() -> Error {
        Error::NotConfigured {
            backend: "fake",
            hint: "the fake server keeps no databases".into(),
        }
    }

    impl Driver for Fake {
        type Database = sqlx::Sqlite;
        type Connection = sqlx::SqliteConnection;
        const NAME: &'static str = "fake";
    }

    impl Server for Fake {
        type Owned = Nothing;

        async fn create(&self) -> Result<Nothing> {
            Err(unsupported())
        }

        fn sweep_scope(&self) -> String {
            self.scope.into()
        }

        async fn sweep(&self) -> Result<usize> {
            self.sweeps.fetch_add(1, Ordering::SeqCst);
            if self.failing.load(Ordering::SeqCst) {
                return Err(unsupported());
            }
            Ok(0)
        }
    }

    impl Templates for Fake {
        type TemplateLock = ();

        async fn lock_template(&self, _: &str) -> Result<()> {
            Ok(())
        }

        async fn share_template(&self, _: &str) -> Result<()> {
            Ok(())
        }

        async fn find_template(&self, _: &str) -> Result<Option<String>> {
            Ok(None)
        }

        async fn promote(&self, _: Nothing, _: &str, _: &str) -> Result<()> {
            Err(unsupported())
        }

        async fn clone_template(&self, _: &str) -> Result<Nothing> {
            Err(unsupported())
        }

        async fn remove_templates(&self, _: &str, _: &str) -> Result<usize> {
            Ok(0)
        }

        async fn remove_unused_templates(&self, _: Duration, _: usize) -> Result<usize> {
            self.template_removals.fetch_add(1, Ordering::SeqCst);
            Ok(0)
        }
    }

    #[test]
    fn each_scope_is_swept_once_and_again_after_a_failure() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|err| unreachable!("a runtime: {err}"));
        let fake = Fake {
            scope: "fake://sweeps",
            ..Fake::default()
        };
        fake.failing.store(true, Ordering::SeqCst);
        runtime.block_on(async {
            assert!(sweep_once(&fake).await.is_err());
            // Failed: its templates are left alone, and the next use tries again.
            assert_eq!(fake.template_removals.load(Ordering::SeqCst), 0);
            fake.failing.store(false, Ordering::SeqCst);
            assert!(sweep_once(&fake).await.is_ok());
            assert!(sweep_once(&fake).await.is_ok());
            let other = Fake {
                scope: "fake://elsewhere",
                ..fake.clone()
            };
            assert!(sweep_once(&other).await.is_ok());
        });
        assert_eq!(fake.sweeps.load(Ordering::SeqCst), 3);
        assert_eq!(fake.template_removals.load(Ordering::SeqCst), 2);
    }
}
