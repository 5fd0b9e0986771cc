//! Fences: what keeps a test's work from outliving it.
//!
//! Each running test of a suite has a [`Fence`]. Every connection the test takes from a suite
//! database's pool (through [`Handle::pool`](crate::Handle::pool), say) is put inside the fences it
//! belongs to by the pool's own hooks, which the backend installs ([`Backend::watch_pool`]): on
//! PostgreSQL the fence records the connection's server process, which testdb ends when the test
//! ends; on SQLite the connection's commit and progress hooks consult the fence, so that once it is
//! closed nothing on that connection commits and whatever still runs is interrupted.
//!
//! [`Backend::watch_pool`]: crate::Backend::watch_pool

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// One running test's fence: closed when the test ends, however it ends. For backend authors.
#[derive(Debug)]
pub struct Fence {
    registry: u64,
    closed: AtomicBool,
    own: Mutex<Option<i64>>,
    taken: Mutex<Vec<i64>>,
}

impl Fence {
    /// Whether the test has ended: nothing on a connection inside this fence may commit any more.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Records a server session (e.g. a PostgreSQL backend process id) that the test took, to be
    /// ended with the test.
    pub fn take(&self, session: i64) {
        let mut taken = lock(&self.taken);
        if !taken.contains(&session) {
            taken.push(session);
        }
    }

    /// The server sessions the test took, in the order it took them (not its own connection's).
    pub fn taken(&self) -> Vec<i64> {
        lock(&self.taken).clone()
    }

    /// Records the server session of the test's own connection.
    pub fn set_own(&self, session: i64) {
        *lock(&self.own) = Some(session);
    }

    /// The server session of the test's own connection, where the backend records one.
    pub fn own(&self) -> Option<i64> {
        *lock(&self.own)
    }

    /// Closes the fence; returns whether it was open.
    pub(crate) fn close(&self) -> bool {
        !self.closed.swap(true, Ordering::AcqRel)
    }
}

/// The fences of the tests running on one database, consulted by its pool's hooks. For backend
/// authors: [`Backend::watch_pool`](crate::Backend::watch_pool) gets one per pool.
#[derive(Debug)]
pub struct Fences {
    id: u64,
    running: Mutex<Vec<Arc<Fence>>>,
    // Whether any test ever ran here: pools of databases no suite uses skip their hooks.
    used: AtomicBool,
}

tokio::task_local! {
    /// Set while testdb acquires a test's own connection: the fence it belongs to.
    static ACQUIRING_FOR: Option<Arc<Fence>>;
}

impl Fences {
    pub(crate) fn new() -> Arc<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Arc::new(Fences {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            running: Mutex::new(Vec::new()),
            used: AtomicBool::new(false),
        })
    }

    /// Whether a test has ever run on this database: until then the hooks have nothing to do.
    pub fn in_use(&self) -> bool {
        self.used.load(Ordering::Acquire)
    }

    /// The fences a connection being acquired (or opened) right now belongs to: the fence testdb
    /// named if it is acquiring a test's own connection; else the test whose task acquires it;
    /// else, from a task a test spawned, every test running on this database. Empty when the
    /// acquisition is testdb's own or no test is running.
    pub fn attribute(&self) -> Attribution {
        if let Ok(named) = ACQUIRING_FOR.try_with(Clone::clone) {
            return Attribution {
                own: named.is_some(),
                fences: named.into_iter().collect(),
            };
        }
        if let Some(current) = crate::handle::current_fences()
            .into_iter()
            .find(|fence| fence.registry == self.id)
        {
            return Attribution {
                own: false,
                fences: vec![current],
            };
        }
        Attribution {
            own: false,
            fences: lock(&self.running).clone(),
        }
    }

    /// A fence for a test starting now; closed and forgotten when dropped as [`Opened`].
    pub(crate) fn open(self: &Arc<Self>) -> Opened {
        self.used.store(true, Ordering::Release);
        let fence = Arc::new(Fence {
            registry: self.id,
            closed: AtomicBool::new(false),
            own: Mutex::new(None),
            taken: Mutex::new(Vec::new()),
        });
        lock(&self.running).push(fence.clone());
        Opened {
            fences: self.clone(),
            fence,
        }
    }
}

/// The fences a connection being handed out belongs to; see [`Fences::attribute`].
#[derive(Debug)]
pub struct Attribution {
    own: bool,
    fences: Vec<Arc<Fence>>,
}

impl Attribution {
    /// Whether the connection belongs to no test.
    pub fn is_empty(&self) -> bool {
        self.fences.is_empty()
    }

    /// The fences, for hooks that consult them (nothing inside a closed one may commit).
    pub fn fences(&self) -> &[Arc<Fence>] {
        &self.fences
    }

    /// Records the connection's server session with its fences: as the test's own connection, or
    /// as one the test took.
    pub fn record(&self, session: i64) {
        for fence in &self.fences {
            if self.own {
                fence.set_own(session);
            } else {
                fence.take(session);
            }
        }
    }
}

/// A running test's fence, registered with its database until dropped.
#[derive(Debug)]
pub(crate) struct Opened {
    fences: Arc<Fences>,
    fence: Arc<Fence>,
}

impl Opened {
    pub(crate) fn fence(&self) -> &Arc<Fence> {
        &self.fence
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        self.fence.close();
        lock(&self.fences.running).retain(|fence| !Arc::ptr_eq(fence, &self.fence));
    }
}

/// Runs `future` (testdb acquiring a connection for a test) with its acquisitions attributed to
/// `fence` alone, or to none.
pub(crate) async fn acquiring_for<F: Future>(fence: Option<Arc<Fence>>, future: F) -> F::Output {
    ACQUIRING_FOR.scope(fence, future).await
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The lists stay consistent whatever panicked while holding them.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::{Fences, acquiring_for};

    #[tokio::test]
    async fn connections_belong_to_the_tests_that_take_them() {
        let fences = Fences::new();
        assert!(!fences.in_use());
        assert!(fences.attribute().is_empty(), "no test running");
        let first = fences.open();
        let second = fences.open();
        assert!(fences.in_use());
        // From a task of no test (one a test spawned): every running test.
        let spawned = fences.attribute();
        assert_eq!(spawned.fences().len(), 2);
        spawned.record(7);
        spawned.record(7);
        assert_eq!(first.fence().taken(), [7]);
        assert_eq!(second.fence().taken(), [7]);
        // testdb acquiring for one test, or for none.
        let named = acquiring_for(Some(first.fence().clone()), async { fences.attribute() }).await;
        assert_eq!(named.fences().len(), 1);
        assert!(std::sync::Arc::ptr_eq(&named.fences()[0], first.fence()));
        named.record(8);
        assert_eq!(first.fence().own(), Some(8), "the test's own connection");
        assert_eq!(first.fence().taken(), [7]);
        assert!(
            acquiring_for(None, async { fences.attribute() })
                .await
                .is_empty()
        );

        let closed = first.fence().clone();
        drop(first);
        assert!(closed.is_closed(), "a fence closes when its test ends");
        assert!(!second.fence().is_closed());
        assert_eq!(fences.attribute().fences().len(), 1);
    }
}
