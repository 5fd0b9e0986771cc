//! Fences: what keeps a test's work from outliving it.
//!
//! Each running test of a suite has a [`Fence`]. Every connection the test takes from a suite
//! database's pool (through [`Handle::pool`](crate::Handle::pool), say) joins its fence when the
//! pool hands it out, through the pool's hooks and [`Fencing::join`](crate::backend::Fencing::join): on
//! PostgreSQL the fence records the connection's server process, and the connection carries the
//! fence's [tag](Fence::tag), so that testdb ends it when the test ends (and never once another
//! test holds it); on SQLite the connection's commit and progress hooks consult the fence, so that
//! once it is closed nothing on that connection commits and whatever still runs is interrupted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// One running test's fence: closed when the test ends, however it ends. For backend authors.
#[derive(Debug)]
pub struct Fence {
    registry: u64,
    tag: String,
    closed: AtomicBool,
    own: Mutex<Option<i64>>,
    taken: Mutex<Vec<i64>>,
}

impl Fence {
    /// Whether the test has ended: nothing on a connection inside this fence may commit any more.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// A name unique to this test in this process (at most 40 ASCII characters), which a
    /// backend may mark the server sessions it records with, so as to end only those still
    /// marked when the test ends (a session the pool has handed on since carries another).
    pub fn tag(&self) -> &str {
        &self.tag
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
/// authors: [`Fencing::join`](crate::backend::Fencing::join) gets what [`attribute`](Fences::attribute)
/// finds.
#[derive(Debug)]
pub struct Fences {
    id: u64,
    running: Mutex<Vec<Arc<Fence>>>,
    opened: AtomicU64,
    // Whether any test ever ran here: pools of databases no suite uses skip their hooks.
    used: AtomicBool,
}

tokio::task_local! {
    /// Set while testdb acquires a connection: for the test's own (the fence it belongs to), or
    /// for itself (none).
    static ACQUIRING_FOR: Option<Arc<Fence>>;
}

impl Fences {
    pub(crate) fn new() -> Arc<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Arc::new(Fences {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            running: Mutex::new(Vec::new()),
            opened: AtomicU64::new(0),
            used: AtomicBool::new(false),
        })
    }

    /// Whether a test has ever run on this database: until then the hooks have nothing to do.
    pub fn in_use(&self) -> bool {
        self.used.load(Ordering::Acquire)
    }

    /// The fence a connection being acquired (or opened) right now belongs to: the one testdb
    /// named if it is acquiring a test's own connection; else that of the test whose task
    /// acquires it; else, from a task a test spawned, that of the one test running on this
    /// database. None when the acquisition is testdb's own, or it cannot tell which of several
    /// tests running at once (transaction isolation) spawned the task.
    pub fn attribute(&self) -> Attribution {
        if let Ok(named) = ACQUIRING_FOR.try_with(Clone::clone) {
            return Attribution {
                own: named.is_some(),
                fence: named,
            };
        }
        if let Some(current) = crate::handle::current_fences()
            .into_iter()
            .find(|fence| fence.registry == self.id)
        {
            return Attribution {
                own: false,
                fence: Some(current),
            };
        }
        let running = lock(&self.running);
        Attribution {
            own: false,
            fence: match running.as_slice() {
                [only] => Some(only.clone()),
                _ => None,
            },
        }
    }

    /// A fence for a test starting now; closed and forgotten when dropped as [`Opened`].
    pub(crate) fn open(self: &Arc<Self>) -> Opened {
        self.used.store(true, Ordering::Release);
        let number = self.opened.fetch_add(1, Ordering::Relaxed);
        let fence = Arc::new(Fence {
            registry: self.id,
            tag: format!("testdb test {}.{}.{number}", std::process::id(), self.id),
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

/// The fence a connection being handed out belongs to, if any; see [`Fences::attribute`].
#[derive(Debug)]
pub struct Attribution {
    own: bool,
    fence: Option<Arc<Fence>>,
}

impl Attribution {
    /// The fence, if the connection belongs to a test.
    pub fn fence(&self) -> Option<&Arc<Fence>> {
        self.fence.as_ref()
    }

    /// Records the connection's server session with its fence: as the test's own connection, or
    /// as one the test took.
    pub fn record(&self, session: i64) {
        match (&self.fence, self.own) {
            (Some(fence), true) => fence.set_own(session),
            (Some(fence), false) => fence.take(session),
            (None, _) => {}
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

/// Runs `future` (testdb acquiring a connection) with its acquisitions attributed to `fence`
/// alone, as the test's own connection, or to none.
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
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::{Fences, acquiring_for};

    #[tokio::test]
    async fn connections_belong_to_the_tests_that_take_them() {
        let fences = Fences::new();
        assert!(!fences.in_use());
        assert!(fences.attribute().fence().is_none(), "no test running");
        let first = fences.open();
        assert!(fences.in_use());
        // From a task of no test (one the test spawned): the one running test.
        let spawned = fences.attribute();
        assert!(Arc::ptr_eq(spawned.fence().unwrap(), first.fence()));
        spawned.record(7);
        spawned.record(7);
        assert_eq!(first.fence().taken(), [7]);
        // Two running: a spawned task's connection is nobody's.
        let second = fences.open();
        assert_ne!(first.fence().tag(), second.fence().tag());
        assert!(first.fence().tag().len() <= 40);
        assert!(fences.attribute().fence().is_none());
        // testdb acquiring for one test, or for none.
        let named = acquiring_for(Some(first.fence().clone()), async { fences.attribute() }).await;
        assert!(Arc::ptr_eq(named.fence().unwrap(), first.fence()));
        named.record(8);
        assert_eq!(first.fence().own(), Some(8), "the test's own connection");
        assert_eq!(first.fence().taken(), [7]);
        let internal = acquiring_for(None, async { fences.attribute() }).await;
        assert!(internal.fence().is_none());

        let closed = first.fence().clone();
        drop(first);
        assert!(closed.is_closed(), "a fence closes when its test ends");
        assert!(!second.fence().is_closed());
        assert!(Arc::ptr_eq(
            fences.attribute().fence().unwrap(),
            second.fence()
        ));
    }
}
