//! SQLite's fences: hooks on a connection that keep what a test started there from committing, or
//! running on, once the test has ended.

use std::sync::{Arc, Mutex};

use sqlx::sqlite::SqliteConnection;
use testdb::backend::{Attribution, Fence, Fencing};

use crate::Sqlite;

/// How many virtual-machine instructions SQLite runs between two looks at a test's fence: a
/// statement of a test that ended stops within microseconds, and the look costs nothing
/// measurable.
const FENCE_CHECK_OPS: i32 = 1_000;

/// The fence of the test running on a connection that testdb keeps for its tests; its progress
/// handler interrupts whatever runs there once that fence is closed.
#[derive(Debug, Default)]
pub struct Slot(Mutex<Option<Arc<Fence>>>);

impl Slot {
    fn open(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .is_none_or(|fence| !fence.is_closed())
    }

    fn set(&self, fence: Option<Arc<Fence>>) {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = fence;
    }
}

impl Fencing for Sqlite {
    type Watch = Arc<Slot>;

    fn enter(slot: &Arc<Slot>, fence: &Arc<Fence>) {
        slot.set(Some(fence.clone()));
    }

    async fn watch(conn: &mut SqliteConnection) -> sqlx::Result<Arc<Slot>> {
        let slot = Arc::new(Slot::default());
        let watched = slot.clone();
        conn.lock_handle()
            .await?
            .set_progress_handler(FENCE_CHECK_OPS, move || watched.open());
        Ok(slot)
    }

    /// A connection the pool hands out joins its test's fence: once that is closed, its commits
    /// turn into rollbacks and its statements are interrupted.
    async fn join(conn: &mut SqliteConnection, attribution: &Attribution) -> sqlx::Result<bool> {
        let mut handle = conn.lock_handle().await?;
        let Some(fence) = attribution.fence().cloned() else {
            handle.remove_commit_hook();
            handle.remove_progress_handler();
            return Ok(true);
        };
        let open = move || !fence.is_closed();
        handle.set_commit_hook(open.clone());
        handle.set_progress_handler(FENCE_CHECK_OPS, open);
        Ok(true)
    }

    /// Waits until the worker is done with the statement a closed fence interrupted, then takes the
    /// fence off the connection.
    async fn settle(conn: &mut SqliteConnection, slot: Option<&Arc<Slot>>) -> sqlx::Result<()> {
        let mut handle = conn.lock_handle().await?;
        match slot {
            Some(slot) => slot.set(None),
            None => {
                handle.remove_commit_hook();
                handle.remove_progress_handler();
            }
        }
        Ok(())
    }
}
