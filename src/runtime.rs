//! testdb's own runtime.
//!
//! `#[tokio::test]` builds a runtime per test and drops it afterwards, and a socket registered with
//! a dropped runtime is dead. Connections that outlive one test (a `static` TestDatabase) are
//! therefore opened here, on a runtime that lives as long as the process and drives their I/O
//! whichever runtime polls them.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime, RuntimeFlavor};

use crate::Error;

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

fn handle() -> Result<Handle, Error> {
    let runtime = RUNTIME.get_or_init(|| {
        Builder::new_multi_thread()
            // Two workers: one can be blocked by a caller's synchronous wait while the other keeps
            // driving I/O.
            .worker_threads(2)
            .thread_name("testdb-runtime")
            .enable_all()
            .build()
            .map_err(|err| err.to_string())
    });
    match runtime {
        Ok(runtime) => Ok(runtime.handle().clone()),
        Err(reason) => Err(Error::Runtime {
            reason: reason.clone(),
        }),
    }
}

/// Whether the caller runs on testdb's runtime (and so may open connections that outlive any
/// test).
pub(crate) fn is_current() -> bool {
    match (Handle::try_current(), handle()) {
        (Ok(current), Ok(ours)) => current.id() == ours.id(),
        _ => false,
    }
}

/// Starts `future` on testdb's runtime without waiting for it.
pub(crate) fn spawn<F>(future: F) -> Result<tokio::task::JoinHandle<F::Output>, Error>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    Ok(handle()?.spawn(future))
}

/// Waits for a task started by [`spawn`], from any async context.
pub(crate) async fn join<T>(task: tokio::task::JoinHandle<T>) -> Result<T, Error> {
    finish(task.await)
}

/// Runs `future` on testdb's runtime and waits for its output from any async context.
pub(crate) async fn run<F>(future: F) -> Result<F::Output, Error>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let task = handle()?.spawn(future);
    finish(task.await)
}

/// Runs `future` on testdb's runtime and blocks the calling thread until it is done.
///
/// Works from plain `#[test]` functions, and from inside another runtime too (it blocks that
/// runtime's thread, as any synchronous call would, but never nests runtimes).
pub fn block_on<F>(future: F) -> Result<F::Output, Error>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let task = handle()?.spawn(future);
    let (sender, receiver) = std::sync::mpsc::sync_channel(1);
    handle()?.spawn(async move {
        let _ = sender.send(task.await);
    });
    let wait = move || receiver.recv();
    // On a worker of a multi-threaded runtime (testdb's own, when a test body running there
    // creates a database), hand the worker's queued tasks to another thread first: the task just
    // spawned may sit in this worker's queue, and blocking on it there would never end.
    let received = match Handle::try_current() {
        Ok(current) if current.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    };
    match received {
        Ok(result) => finish(result),
        Err(_) => Err(Error::Runtime {
            reason: "testdb's runtime stopped before the task finished".into(),
        }),
    }
}

/// Runs `future` to completion on a new single-threaded runtime on a new thread.
///
/// Used where testdb must finish work synchronously and cannot rely on any runtime being usable:
/// in `Drop`, and at process exit.
pub(crate) fn run_detached<F>(future: F) -> Result<F::Output, Error>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let thread = std::thread::Builder::new()
        .name("testdb-cleanup".into())
        .spawn(move || {
            Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|runtime| runtime.block_on(future))
                .map_err(|err| err.to_string())
        })
        .map_err(|err| Error::Runtime {
            reason: format!("cannot start a cleanup thread: {err}"),
        })?;
    match thread.join() {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(reason)) => Err(Error::Runtime { reason }),
        Err(_) => Err(Error::Runtime {
            reason: "the cleanup thread panicked".into(),
        }),
    }
}

/// A panic in the caller's future is the caller's: it is resumed on the caller's thread, so a test
/// fails with its own message.
fn finish<T>(result: Result<T, tokio::task::JoinError>) -> Result<T, Error> {
    match result {
        Ok(output) => Ok(output),
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(_) => Err(Error::Runtime {
            reason: "a task on testdb's runtime was cancelled".into(),
        }),
    }
}
