//! The child's side of `spawn_concurrent`: connect back to the parent over the socket it named,
//! read the call, open a connection, report ready, wait for the release (a byte from the parent on
//! the pipe that is this process's standard input), call, reply, exit.
//!
//! A child whose parent dies ends at once, without another statement: it checks that its parent
//! is still its parent when it starts and once released, and a thread watches the socket, which
//! closes when the parent dies. (On Linux the kernel kills it first: see `spawn`.)

use std::cell::{Cell, RefCell};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value as Json, json};

use super::call::{Caller, Reply};

/// The parent's socket.
pub(crate) const SOCKET: &str = "TESTDB_CONCURRENT_SOCKET";
/// The caller to run (its type name).
pub(crate) const CALLER: &str = "TESTDB_CONCURRENT_CALLER";
/// The call's index, which the child announces itself by.
pub(crate) const INDEX: &str = "TESTDB_CONCURRENT_INDEX";
/// The test that [`callers!`](crate::callers) defines: what the parent asks libtest to run.
pub(crate) const ENTRY: &str = "testdb_spawn_concurrent_entry";
/// The parent's process id, which the child checks is still its parent's.
pub(crate) const PARENT: &str = "TESTDB_CONCURRENT_PARENT";
/// What the parent writes to each child's standard input to release it.
pub(crate) const RELEASE: u8 = b'!';

/// How a child ends when its parent is gone (nobody reads it: the parent is dead).
const PARENT_GONE: i32 = 4;

/// The parent the child was started by, if it said.
static PARENT_ID: OnceLock<Option<u32>> = OnceLock::new();
/// Set before the reply is sent: from then on the socket closing is the parent being done.
static REPLIED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static CHANNEL: RefCell<Option<UnixStream>> = const { RefCell::new(None) };
    static RELEASED: Cell<Option<u128>> = const { Cell::new(None) };
}

/// The entry point of `spawn_concurrent`'s child processes: in a child, runs the call its parent
/// asked for among `callers` and ends the process; anywhere else, returns at once.
///
/// [`callers!`](crate::callers) calls it from a test; a binary with its own `main` calls it
/// first thing in `main`.
pub fn serve_callers(callers: &[Caller]) {
    let (Ok(socket), Ok(name)) = (std::env::var(SOCKET), std::env::var(CALLER)) else {
        return;
    };
    PARENT_ID.get_or_init(|| std::env::var(PARENT).ok().and_then(|pid| pid.parse().ok()));
    // The parent may have died while this process started (or, on Linux, before it asked to be
    // killed with it).
    check_parent();
    let Some(caller) = callers.iter().find(|caller| caller.name == name) else {
        let known: Vec<&str> = callers.iter().map(|caller| caller.name).collect();
        fail(&format!(
            "caller `{name}` is not registered in this binary: add it to testdb::callers!(…) \
             (registered: {})",
            known.join(", ")
        ));
    };
    let index = std::env::var(INDEX).unwrap_or_default();
    let stream = UnixStream::connect(&socket)
        .unwrap_or_else(|err| fail(&format!("cannot reach the parent at {socket}: {err}")));
    let request = exchange(&stream, &json!({ "hello": index }))
        .unwrap_or_else(|err| fail(&format!("cannot read the call: {err}")));
    watch_parent(&stream);
    let url = request["url"].as_str().unwrap_or_default().to_owned();
    let args = request["args"].clone();
    // On a thread of its own: `main` may already be inside a runtime (`#[tokio::main]`), where
    // another could not be started.
    let served =
        std::thread::scope(|scope| scope.spawn(|| serve_one(caller, &stream, url, args)).join());
    if served.is_err() {
        fail("the caller's thread panicked");
    }
    std::process::exit(0);
}

/// Runs the call on this thread's own runtime and sends the reply.
fn serve_one(caller: &Caller, stream: &UnixStream, url: String, args: Json) {
    CHANNEL.with(|channel| *channel.borrow_mut() = stream.try_clone().ok());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|err| fail(&format!("cannot start a runtime: {err}")));
    let mut message = match runtime.block_on((caller.serve)(url, args)) {
        Ok(Reply::Value(value)) => json!({ "value": value }),
        Ok(Reply::Error(error)) => json!({ "error": error }),
        Ok(Reply::Panic(message)) => json!({ "panic": message }),
        Err(failed) => json!({ "failed": failed }),
    };
    if let Some(released) = RELEASED.with(Cell::get) {
        message["released_ns"] = json!(released.to_string());
    }
    REPLIED.store(true, Ordering::SeqCst);
    if send(stream, &message).is_err() {
        fail("cannot send the result to the parent");
    }
}

/// Called once connected: tells the parent, then waits until it releases every child at once.
pub(crate) fn wait_for_release() -> Result<(), String> {
    let sent = CHANNEL.with(|channel| match channel.borrow().as_ref() {
        Some(stream) => send(stream, &json!({ "ready": true })).map_err(|err| err.to_string()),
        None => Err("no channel to the parent".into()),
    });
    sent?;
    // The parent holds the other end of this process's standard input, and writes one byte for
    // each child to release them all. The pipe also closes when the parent dies: an end without a
    // byte is no release. Read unbuffered, one byte, so as to leave the others' bytes in the pipe.
    let mut stdin = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .map_err(|err| format!("cannot wait for the release: {err}"))?;
    let mut byte = [0u8; 1];
    loop {
        match stdin.read(&mut byte) {
            Ok(0) => parent_gone(),
            Ok(_) => break,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(format!("cannot wait for the release: {err}")),
        }
    }
    // Released; but the parent may have died since, and the caller must not run then.
    check_parent();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    RELEASED.with(|released| released.set(Some(now)));
    Ok(())
}

fn send(mut stream: &UnixStream, message: &Json) -> std::io::Result<()> {
    let mut line = message.to_string();
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    stream.flush()
}

fn exchange(stream: &UnixStream, message: &Json) -> std::io::Result<Json> {
    send(stream, message)?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(std::io::Error::other)
}

/// Ends the child at once if its parent is no longer its parent (it died; the child was handed
/// to another process).
fn check_parent() {
    if let Some(Some(parent)) = PARENT_ID.get()
        && std::os::unix::process::parent_id() != *parent
    {
        parent_gone();
    }
}

/// Watches the socket to the parent until the process ends: the parent sends nothing after the
/// call, so the socket's end before the reply means the parent is gone (it closes when the
/// parent dies, however it dies).
fn watch_parent(stream: &UnixStream) {
    let mut watched = stream
        .try_clone()
        .unwrap_or_else(|err| fail(&format!("cannot watch the parent: {err}")));
    let watching = std::thread::Builder::new()
        .name("testdb-watch-parent".into())
        .spawn(move || {
            let mut buffer = [0u8; 64];
            loop {
                match watched.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            if !REPLIED.load(Ordering::SeqCst) {
                parent_gone();
            }
        });
    if let Err(err) = watching {
        fail(&format!("cannot watch the parent: {err}"));
    }
}

/// The parent is gone: end now, whatever the caller is doing, before it sends another statement.
/// Nothing is written (nobody is left to read it) and no exit hook runs.
fn parent_gone() -> ! {
    // SAFETY: `_exit` ends the process at once; it runs no code of this process, so nothing
    // can observe a half-done state.
    #[allow(unsafe_code)]
    unsafe {
        libc::_exit(PARENT_GONE)
    }
}

/// Ends the child with an explanation on its standard error, which the parent reports.
fn fail(message: &str) -> ! {
    // Not `eprintln!`, which panics if the parent (the pipe's reader) is gone.
    let _ = writeln!(
        std::io::stderr(),
        "testdb spawn_concurrent child: {message}"
    );
    std::process::exit(3);
}
