//! One maintenance session per server and process, for the catalog's quick questions.
//!
//! Looking a template up, stamping it, leasing a copy, giving it back and sweeping each took a
//! connection of their own, so a process opened seven to run one test; each costs a backend
//! start and a budget slot on the server. They now share one session, opened when first needed
//! and closed after [`IDLE`] without work. It lives on a thread and runtime of its own, like the
//! owner's keeper, because a connection belongs to the runtime that opened it and a test's
//! runtime ends with the test. It is not the keeper's session: a session never conflicts with
//! its own advisory locks, so a sweep asking "is this lock free?" on the keeper's session would
//! find the locks the process itself holds free.
//!
//! `CREATE DATABASE` and `DROP DATABASE` are slow and stay on connections of their own, so that
//! they never queue behind each other here.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::PgConnection;
use testdb::{Error, Result};
use tokio::sync::{mpsc, oneshot};

use crate::Postgres;
use crate::server;

/// How long the session stays open without work.
const IDLE: Duration = Duration::from_secs(2);
/// How long it keeps its slot in the connection budget without work: long enough for the next
/// step of a process's start, short enough that the process's own connections do not wait for
/// it.
const SLOT_IDLE: Duration = Duration::from_millis(50);

/// A future that borrows the session.
pub(crate) type OnSession<'c, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'c>>;

type Job = Box<
    dyn for<'c> FnOnce(
            std::result::Result<&'c mut PgConnection, Error>,
        ) -> Pin<Box<dyn Future<Output = Failed> + Send + 'c>>
        + Send,
>;

/// Whether a job failed: its session is then closed, so that nothing it left behind (a lock, a
/// transaction) outlives it.
type Failed = bool;

static WORKERS: Mutex<Option<HashMap<String, mpsc::UnboundedSender<Job>>>> = Mutex::new(None);

/// Runs `work` on this process's maintenance session on `server`, opened (or opened again, if it
/// was lost) first.
pub(crate) async fn run<T, W>(server: &Postgres, work: W) -> Result<T>
where
    T: Send + 'static,
    W: for<'c> FnOnce(&'c mut PgConnection) -> OnSession<'c, T> + Send + 'static,
{
    let (reply, answer) = oneshot::channel();
    let job: Job = Box::new(move |session| {
        Box::pin(async move {
            let result = match session {
                Ok(conn) => work(conn).await,
                Err(err) => Err(err),
            };
            let failed = result.is_err();
            let _ = reply.send(result);
            failed
        })
    });
    let mut job = Some(job);
    // A worker that stopped (its thread could not start a runtime) is started again once.
    for _ in 0..2 {
        let sender = worker(server)?;
        match sender.send(job.take().ok_or_else(stopped)?) {
            Ok(()) => return answer.await.map_err(|_| stopped())?,
            Err(mpsc::error::SendError(returned)) => {
                job = Some(returned);
                forget(server);
            }
        }
    }
    Err(stopped())
}

fn stopped() -> Error {
    Error::Runtime {
        reason: "testdb's maintenance thread stopped".into(),
    }
}

fn workers() -> std::sync::MutexGuard<'static, Option<HashMap<String, mpsc::UnboundedSender<Job>>>>
{
    WORKERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn forget(server: &Postgres) {
    if let Some(map) = workers().as_mut() {
        map.remove(server.redacted_url());
    }
}

fn worker(server: &Postgres) -> Result<mpsc::UnboundedSender<Job>> {
    let mut guard = workers();
    let map = guard.get_or_insert_with(HashMap::new);
    if let Some(sender) = map.get(server.redacted_url())
        && !sender.is_closed()
    {
        return Ok(sender.clone());
    }
    let (sender, jobs) = mpsc::unbounded_channel();
    let owner = server.clone();
    std::thread::Builder::new()
        .name("testdb-maintenance".into())
        .spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(serve(owner, jobs));
            }
            // Without a runtime the receiver is dropped here: `run` sees it and says so.
        })
        .map_err(|err| Error::Runtime {
            reason: format!("cannot start the maintenance thread: {err}"),
        })?;
    map.insert(server.redacted_url().to_owned(), sender.clone());
    Ok(sender)
}

/// Opens the session. Its commits (a copy marked leased or clean, a template's use stamped) do not
/// wait for the disk: each would cost a flush of the server's log, up to 100 ms on a busy disk.
/// That is safe because the log is written in order: a mark lost in a crash was followed by
/// nothing that was kept either. A copy whose "leased" mark is lost was not written to since (a
/// test's commit on it would have flushed the mark with it); one whose "clean" mark is lost is
/// found leased, and dropped.
async fn open(server: &Postgres) -> Result<PgConnection> {
    let mut conn = server.connect_maintenance().await?;
    // Named, like the keeper's, so that whoever looks at `pg_stat_activity` knows whose it is.
    let setup = format!(
        "SET synchronous_commit = off; SET application_name = 'testdb maintenance {}'",
        std::process::id()
    );
    match sqlx::raw_sql(sqlx::AssertSqlSafe(setup))
        .execute(&mut conn)
        .await
    {
        Ok(_) => Ok(conn),
        Err(source) => {
            server::close(conn).await;
            Err(server.connect_error(source))
        }
    }
}

/// Serves jobs one at a time; opens the session when a job comes and none is open, checks it
/// before each job (a server may have dropped it), gives its budget slot back after
/// [`SLOT_IDLE`] without work (a process's own connections may be waiting for one), and closes it
/// after [`IDLE`].
async fn serve(server: Postgres, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut session: Option<PgConnection> = None;
    // Whether the session gave its slot back, and takes one again before its next job.
    let mut released = false;
    loop {
        let wait = if session.is_some() && !released {
            SLOT_IDLE
        } else {
            IDLE
        };
        let job = match tokio::time::timeout(wait, jobs.recv()).await {
            Ok(Some(job)) => job,
            Ok(None) => break,
            Err(_idle) => {
                if let Some(conn) = session.as_mut()
                    && !released
                {
                    // The session holds no other advisory lock between jobs.
                    released = true;
                    if sqlx::raw_sql("SELECT pg_advisory_unlock_all()")
                        .execute(&mut *conn)
                        .await
                        .is_ok()
                    {
                        continue;
                    }
                }
                if let Some(conn) = session.take() {
                    server::close(conn).await;
                }
                continue;
            }
        };
        if let Some(conn) = session.as_mut() {
            let alive = if released {
                server.readmit(conn).await.is_ok()
            } else {
                conn.ping().await.is_ok()
            };
            if !alive {
                session = None;
            }
        }
        released = false;
        if session.is_none() {
            match open(&server).await {
                Ok(conn) => session = Some(conn),
                Err(err) => {
                    job(Err(err)).await;
                    continue;
                }
            }
        }
        if let Some(conn) = session.as_mut()
            && job(Ok(conn)).await
            && let Some(conn) = session.take()
        {
            server::close(conn).await;
        }
    }
    if let Some(conn) = session {
        server::close(conn).await;
    }
}
