//! The parent's side of `spawn_concurrent`: start the children, hand each its call over a socket
//! of its own, wait until all are connected, release them together, collect what they report.
//!
//! Children die with their parent: on Linux the kernel kills them (`PR_SET_PDEATHSIG`), and
//! everywhere they watch their socket and the release pipe, which close when the parent dies.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value as Json, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until, timeout_at};

use super::child::{CALLER, ENTRY, INDEX, PARENT, RELEASE, SOCKET};
use super::{Limits, Outcome, after};
use crate::{Error, Result};

/// How long a connected child has to say which call it is.
const HELLO_LIMIT: Duration = Duration::from_secs(5);
/// How much of a crashed child's standard error is kept.
const STDERR_TAIL: usize = 4096;

/// One call, as the parent sends it.
pub(crate) struct Request {
    pub(crate) name: &'static str,
    pub(crate) args: Json,
}

/// Runs every request in a child process; returns their outcomes in order, and the spread of the
/// children's release instants.
pub(crate) async fn spawn(
    url: String,
    requests: Vec<Request>,
    limits: Limits,
) -> Result<(Vec<Outcome<Json>>, Option<Duration>)> {
    let exe = std::env::current_exe().map_err(|source| Error::Io {
        action: "find the test binary".into(),
        path: PathBuf::from("(current executable)"),
        source,
    })?;
    let socket = socket_path();
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).map_err(|source| Error::Io {
        action: "listen on".into(),
        path: socket.clone(),
        source,
    })?;
    let deadline = limits
        .batch
        .map_or_else(far_future, |batch| after(Instant::now(), batch));
    let mut outcomes: Vec<Option<Outcome<Json>>> = requests.iter().map(|_| None).collect();
    let mut released = Vec::new();
    let indices: Vec<usize> = (0..requests.len()).collect();
    let wave_size = limits.max_running.unwrap_or(requests.len()).max(1);
    let mut result = Ok(());
    for wave in indices.chunks(wave_size) {
        match run_wave(
            &exe, &socket, &listener, &url, &requests, wave, &limits, deadline,
        )
        .await
        {
            Ok(finished) => {
                for (index, outcome, release) in finished {
                    outcomes[index] = Some(outcome);
                    released.extend(release);
                }
            }
            Err(err) => {
                result = Err(err);
                break;
            }
        }
    }
    drop(listener);
    let _ = std::fs::remove_file(&socket);
    result?;
    let skew = match (released.iter().min(), released.iter().max()) {
        (Some(first), Some(last)) if released.len() > 1 => Some(Duration::from_nanos(
            u64::try_from(last - first).unwrap_or(u64::MAX),
        )),
        _ => None,
    };
    let outcomes = outcomes
        .into_iter()
        .map(|outcome| outcome.unwrap_or(Outcome::Timeout))
        .collect();
    Ok((outcomes, skew))
}

type Finished = (usize, Outcome<Json>, Option<u128>);
type Channel = (BufReader<OwnedReadHalf>, OwnedWriteHalf);

#[allow(clippy::too_many_arguments)]
async fn run_wave(
    exe: &Path,
    socket: &Path,
    listener: &UnixListener,
    url: &str,
    requests: &[Request],
    wave: &[usize],
    limits: &Limits,
    deadline: Instant,
) -> Result<Vec<Finished>> {
    let io = |action: &str, source| Error::Io {
        action: action.into(),
        path: exe.to_path_buf(),
        source,
    };
    // Every child's standard input is this pipe; one byte each, written at once, releases them
    // all. A pipe that closes without a byte (this process died) is no release.
    let (reader, writer) = std::io::pipe().map_err(|source| io("create a pipe for", source))?;
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(wave.len());
    let (release_tx, release_rx) = watch::channel::<Option<Instant>>(None);
    let mut slots: HashMap<usize, oneshot::Sender<Channel>> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    for &index in wave {
        let stdin = reader
            .try_clone()
            .map_err(|source| io("share a pipe with", source))?;
        let mut command = Command::new(exe);
        command
            // A filter, not `--exact`: the entry point may sit in any module.
            .args([ENTRY, "--ignored", "--nocapture", "--test-threads=1"])
            .env(SOCKET, socket)
            .env(CALLER, requests[index].name)
            .env(INDEX, index.to_string())
            .env(PARENT, std::process::id().to_string())
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        die_with_parent(&mut command);
        let child = start(command).await.map_err(|source| io("start", source))?;
        let (slot, channel) = oneshot::channel();
        slots.insert(index, slot);
        let request = json!({ "url": url, "args": requests[index].args }).to_string() + "\n";
        tasks.spawn(child_task(Task {
            index,
            name: requests[index].name,
            child,
            channel,
            request,
            ready: ready_tx.clone(),
            released: release_rx.clone(),
            per_call: limits.per_call,
            deadline,
        }));
    }
    drop(reader);
    drop(ready_tx);

    // Accept the children as they connect, until every one is ready (or gone): then release.
    let mut waiting = wave.len();
    let mut writer = Some(writer);
    while waiting > 0 {
        tokio::select! {
            accepted = listener.accept(), if !slots.is_empty() => {
                if let Ok((stream, _)) = accepted {
                    let (read, write) = stream.into_split();
                    let mut read = BufReader::new(read);
                    let mut hello = String::new();
                    // A child says who it is at once; anything else that connects is dropped.
                    let said = tokio::time::timeout(HELLO_LIMIT, read.read_line(&mut hello)).await;
                    if matches!(said, Ok(Ok(_)))
                        && let Some(slot) = serde_json::from_str::<Json>(&hello)
                            .ok()
                            .and_then(|hello| hello["hello"].as_str()?.parse::<usize>().ok())
                            .and_then(|index| slots.remove(&index))
                    {
                        let _ = slot.send((read, write));
                    }
                }
            }
            signal = ready_rx.recv() => match signal {
                Some(()) => waiting -= 1,
                None => waiting = 0,
            },
            () = sleep_until(deadline) => break,
        }
    }
    if let Some(mut writer) = writer.take() {
        // A few bytes into an empty pipe: this never blocks. A child that died early leaves its
        // byte unread, which harms nobody.
        let _ = std::io::Write::write_all(&mut writer, &vec![RELEASE; wave.len()]);
    }
    let _ = release_tx.send(Some(Instant::now()));
    drop(slots);

    let mut finished = Vec::with_capacity(wave.len());
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(done) => finished.push(done),
            Err(err) => {
                return Err(Error::Runtime {
                    reason: format!("a spawn_concurrent task failed: {err}"),
                });
            }
        }
    }
    Ok(finished)
}

struct Task {
    index: usize,
    name: &'static str,
    child: tokio::process::Child,
    channel: oneshot::Receiver<Channel>,
    request: String,
    ready: mpsc::Sender<()>,
    released: watch::Receiver<Option<Instant>>,
    per_call: Option<Duration>,
    deadline: Instant,
}

/// Why a child never got as far as being released.
enum Early {
    Ended(ExitStatus),
    Failed(String),
    Lost,
    TimedOut,
}

async fn child_task(mut task: Task) -> Finished {
    let tail = task.child.stderr.take().map(|stderr| {
        tokio::spawn(async move {
            let mut stderr = stderr;
            let mut kept = Vec::new();
            let mut buffer = [0u8; 1024];
            while let Ok(read) = stderr.read(&mut buffer).await {
                if read == 0 {
                    break;
                }
                kept.extend_from_slice(&buffer[..read]);
                if kept.len() > STDERR_TAIL {
                    kept.drain(..kept.len() - STDERR_TAIL);
                }
            }
            String::from_utf8_lossy(&kept).into_owned()
        })
    });
    let index = task.index;
    let prepared = prepare(&mut task).await;
    let _ = task.ready.send(()).await;
    let (mut read, _write) = match prepared {
        Ok(channel) => channel,
        Err(early) => {
            let outcome = match early {
                Early::TimedOut => {
                    kill(&mut task.child).await;
                    Outcome::Timeout
                }
                Early::Failed(message) => {
                    reap(&mut task.child).await;
                    Outcome::Error(message)
                }
                Early::Ended(status) => crash(Some(status), tail, Some(task.name)).await,
                Early::Lost => {
                    let status = reap(&mut task.child).await;
                    crash(status, tail, None).await
                }
            };
            return (index, outcome, None);
        }
    };

    let released_at = loop {
        if let Some(at) = *task.released.borrow() {
            break at;
        }
        if task.released.changed().await.is_err() {
            break Instant::now();
        }
    };
    let limit = task
        .per_call
        .map_or(task.deadline, |per_call| after(released_at, per_call))
        .min(task.deadline);
    let mut line = String::new();
    match timeout_at(limit, read.read_line(&mut line)).await {
        Err(_) => {
            kill(&mut task.child).await;
            (index, Outcome::Timeout, None)
        }
        Ok(Ok(read)) if read > 0 => {
            let status = reap(&mut task.child).await;
            let reply: Json = serde_json::from_str(&line).unwrap_or(Json::Null);
            let released = reply["released_ns"]
                .as_str()
                .and_then(|ns| ns.parse::<u128>().ok());
            let outcome = if let Some(value) = reply.get("value") {
                Outcome::Value(value.clone())
            } else if let Some(error) = reply["error"].as_str().or(reply["failed"].as_str()) {
                Outcome::Error(error.to_owned())
            } else if let Some(message) = reply["panic"].as_str() {
                Outcome::Panic(message.to_owned())
            } else {
                crash(status, tail, None).await
            };
            (index, outcome, released)
        }
        Ok(_) => {
            // The channel closed without a result: the child died during the call.
            let status = reap(&mut task.child).await;
            (index, crash(status, tail, None).await, None)
        }
    }
}

/// Until the child is connected and ready: hand it its call, wait for its word.
async fn prepare(task: &mut Task) -> std::result::Result<Channel, Early> {
    let (mut read, mut write) = tokio::select! {
        channel = &mut task.channel => channel.map_err(|_| Early::Lost)?,
        status = task.child.wait() => {
            return Err(status.map_or(Early::Lost, Early::Ended));
        }
        () = sleep_until(task.deadline) => return Err(Early::TimedOut),
    };
    write
        .write_all(task.request.as_bytes())
        .await
        .map_err(|_| Early::Lost)?;
    let mut line = String::new();
    match timeout_at(task.deadline, read.read_line(&mut line)).await {
        Err(_) => Err(Early::TimedOut),
        Ok(Ok(read_bytes)) if read_bytes > 0 => {
            let message: Json = serde_json::from_str(&line).unwrap_or(Json::Null);
            if message["ready"].as_bool() == Some(true) {
                Ok((read, write))
            } else if let Some(failed) = message["failed"].as_str() {
                Err(Early::Failed(failed.to_owned()))
            } else {
                Err(Early::Lost)
            }
        }
        Ok(_) => Err(Early::Lost),
    }
}

async fn kill(child: &mut tokio::process::Child) {
    let _ = child.kill().await;
}

/// Waits for the child to exit (it does so right after replying); kills it if it lingers.
async fn reap(child: &mut tokio::process::Child) -> Option<ExitStatus> {
    match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
        Ok(Ok(status)) => Some(status),
        _ => {
            let _ = child.kill().await;
            None
        }
    }
}

/// A child that died without replying: how it ended (none if it had to be killed), and the end
/// of its standard error; `before_connecting` names its caller if it never connected.
async fn crash(
    status: Option<ExitStatus>,
    tail: Option<tokio::task::JoinHandle<String>>,
    before_connecting: Option<&str>,
) -> Outcome<Json> {
    let mut stderr = stderr_of(tail).await;
    if let (Some(status), Some(name)) = (status, before_connecting)
        && status.success()
    {
        // libtest ran no entry point: the binary has no testdb::callers!.
        stderr.push_str(&format!(
            "\n(the child ended without running `{name}`: register it with \
             testdb::callers!(…) in this test binary)"
        ));
    }
    Outcome::Crash {
        status: status.map_or_else(|| "killed: it would not exit".into(), |s| s.to_string()),
        stderr,
    }
}

async fn stderr_of(tail: Option<tokio::task::JoinHandle<String>>) -> String {
    match tail {
        Some(task) => tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .ok()
            .and_then(std::result::Result::ok)
            .unwrap_or_default(),
        None => String::new(),
    }
}

/// Starts `command` on a thread that lasts as long as the process.
///
/// Linux sends a child its parent-death signal when the *thread* that forked it ends, not the
/// process; testdb's runtime may retire a worker thread (after `block_in_place`) while the child
/// runs, which would kill the child early.
async fn start(command: Command) -> std::io::Result<tokio::process::Child> {
    // The child is registered with testdb's runtime (for `wait` and `kill_on_drop`), as if it were
    // started on one of its threads.
    let runtime = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
    let (reply, started) = oneshot::channel();
    let job: Job = Box::new(move || {
        let _entered = runtime.enter();
        let mut command = command;
        let _ = reply.send(command.spawn());
    });
    spawner()?
        .send(job)
        .map_err(|_| std::io::Error::other("testdb's spawner thread is gone"))?;
    started
        .await
        .map_err(|_| std::io::Error::other("testdb's spawner thread dropped the child"))?
}

type Job = Box<dyn FnOnce() + Send>;

/// The thread that forks every child; it never ends (its sender is never dropped).
fn spawner() -> std::io::Result<&'static std::sync::mpsc::Sender<Job>> {
    static SPAWNER: OnceLock<std::result::Result<std::sync::mpsc::Sender<Job>, String>> =
        OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (sender, jobs) = std::sync::mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("testdb-spawner".into())
                .spawn(move || {
                    for job in jobs {
                        // A panic must not end this thread: its children would die with it.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                })
                .map(|_| sender)
                .map_err(|err| format!("cannot start testdb's spawner thread: {err}"))
        })
        .as_ref()
        .map_err(|reason| std::io::Error::other(reason.clone()))
}

/// Asks the kernel to kill the child when this process dies (Linux).
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec, where only async-signal-safe
    // calls are allowed: it makes two system calls (prctl, getppid) and allocates nothing (an
    // error from a raw OS code is not boxed). prctl(PR_SET_PDEATHSIG) reads only its integer
    // arguments.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the signal was asked for: then nobody would send it.
            if std::os::unix::process::parent_id() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Elsewhere the child notices by itself, from its socket and its release pipe.
#[cfg(not(target_os = "linux"))]
fn die_with_parent(_: &mut Command) {}

fn socket_path() -> PathBuf {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "testdb-concurrent-{}-{}.sock",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    ))
}

fn far_future() -> Instant {
    after(Instant::now(), Duration::from_secs(86_400 * 365))
}
