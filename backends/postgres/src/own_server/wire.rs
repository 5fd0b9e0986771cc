//! Just enough of PostgreSQL's wire protocol, over a blocking Unix socket, to ask testdb's own
//! server whether it is up and to hold a process's place on it: no runtime is needed, so
//! `Postgres::from_env` stays a plain function, and the connection outlives every test's runtime.

use std::io::{self, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// The advisory-lock key of a process's place on the server (`"uses"`): each process holds it
/// shared while it may use the server; the idle stop takes it exclusively, so it stops only a
/// server no process holds (see `start.sh`).
pub(crate) const PRESENCE: (i32, i32) = (0x7573_6573, 0);

/// What a connection attempt found.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The server took the connection and holds this process's place: keep the stream open.
    Up {
        /// The server's `server_version`, e.g. `15.20 (Debian 15.20-0+deb12u1)`.
        version: String,
        stream: UnixStream,
    },
    /// No server listens on the socket.
    Down,
    /// A server is there but not taking connections now: starting, stopping, or full.
    Busy(String),
    /// The server refused in a way that waiting does not fix.
    Refused(String),
}

/// Connects as role `postgres` to database `postgres` over the socket in `dir` (the server's
/// `run` directory), and takes the shared [`PRESENCE`] lock.
pub(crate) fn connect(dir: &Path) -> Answer {
    let socket = dir.join(".s.PGSQL.5432");
    let mut stream = match UnixStream::connect(&socket) {
        Ok(stream) => stream,
        Err(err)
            if matches!(
                err.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Answer::Down;
        }
        Err(err) => return Answer::Refused(format!("connect to {}: {err}", socket.display())),
    };
    match handshake(&mut stream) {
        Ok(Ok(version)) => Answer::Up { version, stream },
        // 57P0x: starting up, shutting down, in recovery, restarting after a crash; 53300: too
        // many clients.
        Ok(Err((code, message))) if code.starts_with("57P") || code == "53300" => {
            Answer::Busy(message)
        }
        Ok(Err((code, message))) => Answer::Refused(format!("{message} (SQLSTATE {code})")),
        // The server went away mid-handshake (a stop, a crash): as if it were not there.
        Err(_) => Answer::Down,
    }
}

/// Whether a place taken by [`connect`] still stands: the server has not closed the connection
/// nor written to it (it writes only to say why it closes it).
pub(crate) fn still_up(mut stream: &UnixStream) -> bool {
    let mut byte = [0u8; 1];
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    // Whatever it would read is the server's goodbye: the place is lost either way.
    let up = matches!(stream.read(&mut byte), Err(err) if err.kind() == io::ErrorKind::WouldBlock);
    let _ = stream.set_nonblocking(false);
    up
}

/// Whether this process is the only one with a place on the server: then it holds
/// [`PRESENCE`] exclusively, so none takes a place until the connection ends.
pub(crate) fn alone(stream: &mut UnixStream) -> bool {
    let sql = format!(
        "SELECT pg_advisory_unlock_shared({0}, {1}); SELECT pg_try_advisory_lock({0}, {1})\0",
        PRESENCE.0, PRESENCE.1
    );
    let ask = || -> io::Result<bool> {
        let length = i32::try_from(4 + sql.len()).map_err(io::Error::other)?;
        let mut query = vec![b'Q'];
        query.extend_from_slice(&length.to_be_bytes());
        query.extend_from_slice(sql.as_bytes());
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        (&*stream).write_all(&query)?;
        let mut reader = BufReader::new(&*stream);
        let mut answer = false;
        loop {
            let (kind, body) = message(&mut reader)?;
            match kind {
                // The second statement's row (one column, not null): its column count (2 bytes)
                // and length (4), then `t` or `f`.
                b'D' => answer = body.get(6..) == Some(b"t"),
                b'Z' => return Ok(answer),
                _ => {}
            }
        }
    };
    ask().unwrap_or(false)
}

type ServerError = (String, String);

fn handshake(stream: &mut UnixStream) -> io::Result<Result<String, ServerError>> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut startup = Vec::with_capacity(96);
    startup.extend_from_slice(&[0; 4]);
    startup.extend_from_slice(&196_608i32.to_be_bytes()); // protocol 3.0
    for text in [
        "user",
        "postgres",
        "database",
        "postgres",
        "application_name",
        "testdb (a process using the server)",
    ] {
        startup.extend_from_slice(text.as_bytes());
        startup.push(0);
    }
    startup.push(0);
    let length = i32::try_from(startup.len()).map_err(io::Error::other)?;
    startup[..4].copy_from_slice(&length.to_be_bytes());
    // The query goes with the startup message, one round trip saved: the server reads it once
    // it is ready, and trusting its socket it asks for nothing in between.
    let sql = format!(
        "SELECT pg_advisory_lock_shared({}, {})\0",
        PRESENCE.0, PRESENCE.1
    );
    let length = i32::try_from(4 + sql.len()).map_err(io::Error::other)?;
    startup.push(b'Q');
    startup.extend_from_slice(&length.to_be_bytes());
    startup.extend_from_slice(sql.as_bytes());
    stream.write_all(&startup)?;

    // Nothing follows the query's answer, so a buffer reads nothing that belongs to later.
    let mut reader = BufReader::new(&*stream);
    let mut version = String::new();
    loop {
        let (kind, body) = message(&mut reader)?;
        match kind {
            b'R' if body.get(..4) == Some(&[0, 0, 0, 0]) => {}
            b'R' => {
                return Ok(Err((
                    "28000".into(),
                    "the server asks for a password: testdb's own server trusts its socket".into(),
                )));
            }
            b'S' => {
                let mut fields = body.split(|byte| *byte == 0);
                if fields.next() == Some(b"server_version") {
                    version = String::from_utf8_lossy(fields.next().unwrap_or_default()).into();
                }
            }
            b'E' => return Ok(Err(server_error(&body))),
            b'Z' => break,
            _ => {}
        }
    }

    let mut failed = None;
    loop {
        let (kind, body) = message(&mut reader)?;
        match kind {
            b'E' => failed = Some(server_error(&body)),
            b'Z' => break,
            _ => {}
        }
    }
    stream.set_read_timeout(None)?;
    Ok(match failed {
        Some(err) => Err(err),
        None => Ok(version),
    })
}

fn message(stream: &mut impl Read) -> io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    stream.read_exact(&mut head)?;
    let length = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    let length = usize::try_from(length)
        .ok()
        .and_then(|length| length.checked_sub(4))
        .filter(|length| *length < 1 << 20)
        .ok_or_else(|| io::Error::other("a malformed message from the server"))?;
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    Ok((head[0], body))
}

/// The SQLSTATE and message of an ErrorResponse.
fn server_error(body: &[u8]) -> ServerError {
    let mut code = String::new();
    let mut text = String::new();
    for field in body.split(|byte| *byte == 0) {
        match field.split_first() {
            Some((b'C', value)) => code = String::from_utf8_lossy(value).into(),
            Some((b'M', value)) => text = String::from_utf8_lossy(value).into(),
            _ => {}
        }
    }
    (code, text)
}
