//! The child's side of `spawn_concurrent`: connect back to the parent over the socket it named,
//! read the call, open a connection, report ready, wait for the release (the parent closes the
//! pipe that is this process's standard input), call, reply, exit.

use std::cell::{Cell, RefCell};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
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
    // The parent holds the other end of this process's standard input, and closes it to release.
    let mut stdin = std::io::stdin().lock();
    let mut buffer = [0u8; 64];
    loop {
        match stdin.read(&mut buffer) {
            Ok(0) => break,
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(format!("cannot wait for the release: {err}")),
        }
    }
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

/// Ends the child with an explanation on its standard error, which the parent reports.
fn fail(message: &str) -> ! {
    eprintln!("testdb spawn_concurrent child: {message}");
    std::process::exit(3);
}
