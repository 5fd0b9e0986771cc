//! testdb's own PostgreSQL server, for when none is configured: started from the machine's
//! binaries, shared by every process of every run, stopped after a quiet period.
//!
//! The protocol, in the server's directory (`$TMPDIR/testdb-pg-<uid>`, or `TESTDB_PG_DIR`; its
//! `data`, and `run` for the socket and the log, are the server's user's):
//! - a process connects to the socket in `run` and takes its place on the server (a shared
//!   advisory lock, held by a connection it keeps until it exits). If no server of its binaries'
//!   major version answers, it takes the file lock `testdb.lock` first, and starts (or replaces)
//!   the server under it.
//! - the server's watcher (see `start.sh`) stops the server once no process has held a place for
//!   the idle period, deciding under the advisory lock, so a process never loses a server it took.
//! - a server killed, a stale `postmaster.pid` or socket: PostgreSQL clears them on its next start;
//!   a data directory it cannot start from is made new.

mod binaries;
mod cluster;
mod wire;

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use testdb::{Error, Result};

use crate::server::NAME;
use binaries::Binaries;
use cluster::{Launch, User};

pub(crate) use binaries::BIN_VARIABLE;

/// Turns the own server off (`off`), when set.
pub(crate) const SWITCH_VARIABLE: &str = "TESTDB_POSTGRES";
/// Where the server lives.
pub(crate) const DIR_VARIABLE: &str = "TESTDB_PG_DIR";
/// How long the server stays up with no process using it.
pub(crate) const IDLE_VARIABLE: &str = "TESTDB_PG_IDLE";
/// The default of [`IDLE_VARIABLE`]: 15 minutes.
const IDLE: Duration = Duration::from_secs(15 * 60);
/// How long a start (and a wait for another process's start or stop) may take.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The places this process holds, by server directory: kept open until it exits.
static PLACES: Mutex<Vec<(PathBuf, UnixStream)>> = Mutex::new(Vec::new());

/// The own server's settings, read from the environment.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    dir: Option<PathBuf>,
    idle: Duration,
}

impl Settings {
    /// `None` when `TESTDB_POSTGRES=off`.
    pub(crate) fn from_env() -> Result<Option<Settings>> {
        let switch = std::env::var(SWITCH_VARIABLE).unwrap_or_default();
        match switch.trim().to_ascii_lowercase().as_str() {
            "" | "on" | "auto" | "1" | "true" | "yes" => {}
            "off" | "0" | "false" | "no" => return Ok(None),
            _ => {
                return Err(Error::InvalidSetting {
                    variable: SWITCH_VARIABLE,
                    value: switch,
                    reason: "`off` turns testdb's own PostgreSQL server off; `on` (or unset) \
                             starts it when no server URL is configured"
                        .into(),
                });
            }
        }
        let idle = match std::env::var(IDLE_VARIABLE) {
            Ok(value) => parse_idle(&value).ok_or_else(|| Error::InvalidSetting {
                variable: IDLE_VARIABLE,
                value: value.clone(),
                reason: "a duration such as 900, 90s, 15m or 2h (seconds if no unit), or \
                         `never`"
                    .into(),
            })?,
            Err(_) => IDLE,
        };
        let dir = std::env::var_os(DIR_VARIABLE)
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from);
        // Relative, it would name another directory (another server) in each crate's tests.
        if let Some(dir) = dir.as_ref().filter(|dir| !dir.is_absolute()) {
            return Err(Error::InvalidSetting {
                variable: DIR_VARIABLE,
                value: dir.display().to_string(),
                reason: "an absolute path".into(),
            });
        }
        Ok(Some(Settings { dir, idle }))
    }
}

/// `900`, `90s`, `15m`, `2h`; `never` (or `0`) is [`Duration::ZERO`]: never stop.
fn parse_idle(value: &str) -> Option<Duration> {
    let value = value.trim().to_ascii_lowercase();
    if value == "never" || value == "off" {
        return Some(Duration::ZERO);
    }
    let (number, unit) = match value.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => value.split_at(at),
        None => (value.as_str(), "s"),
    };
    let number: u64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "s" => number,
        "m" | "min" => number.checked_mul(60)?,
        "h" => number.checked_mul(3600)?,
        _ => return None,
    };
    Some(Duration::from_secs(seconds))
}

/// The URL of testdb's own server, started if it is not running; `None` (and where it looked)
/// if no binaries were found.
pub(crate) fn url(settings: &Settings) -> Result<std::result::Result<String, Vec<PathBuf>>> {
    let fallback = std::env::temp_dir();
    let user = cluster::server_user(settings.dir.as_deref().unwrap_or(&fallback))?;
    let dir = match &settings.dir {
        Some(dir) => dir.clone(),
        None => {
            let tmp = std::env::temp_dir();
            if !tmp.is_absolute() {
                return Err(Error::InvalidSetting {
                    variable: "TMPDIR",
                    value: tmp.display().to_string(),
                    reason: format!(
                        "an absolute path (testdb's own PostgreSQL server lives there, unless \
                         {DIR_VARIABLE} names another directory)"
                    ),
                });
            }
            tmp.join(format!("testdb-pg-{}", cluster::euid()))
        }
    };
    let run = dir.join("run");
    let url = url_of(&run);
    if holds_place(&dir) {
        return Ok(Ok(url));
    }
    // Mostly the server is up: ask it while the binaries are looked for, and if it runs their
    // major version, that is all (no lock: only starting and replacing need it). Only a
    // directory as testdb leaves it is asked: another user's server is never used.
    let asked = cluster::is_ours(&dir, user.as_ref())
        .then(|| {
            std::thread::Builder::new()
                .name("testdb-pg-ask".into())
                .spawn({
                    let run = run.clone();
                    move || wire::connect(&run)
                })
                .ok()
        })
        .flatten();
    let cache = cluster::cache_dir(&dir);
    let _ = std::fs::DirBuilder::new().recursive(true).create(&cache);
    let found = binaries::find(&cache.join("binaries"));
    let answer = asked.map_or(wire::Answer::Down, |asked| {
        asked.join().unwrap_or(wire::Answer::Down)
    });
    let binaries = match found? {
        Ok(binaries) => binaries,
        Err(looked) => return Ok(Err(looked)),
    };
    if let wire::Answer::Up { version, stream } = answer
        && binaries::major(&version) == binaries.major()
    {
        hold_place(&dir, stream);
        return Ok(Ok(url));
    }
    let socket = run.join(".s.PGSQL.5432");
    if socket.as_os_str().len() > 100 {
        return Err(failed(
            &dir,
            "use the directory for the server's socket",
            format!(
                "{} is too long a path for a Unix socket: set TESTDB_PG_DIR to a shorter \
                 directory",
                socket.display()
            ),
            None,
        ));
    }
    cluster::prepare_dir(&dir, user.as_ref())?;
    let server = Server {
        dir: &dir,
        run: &run,
        data: dir.join("data"),
        log: run.join("log"),
        cache,
        binaries: &binaries,
        user: user.as_ref(),
        idle: settings.idle,
    };
    let _lock = server.lock()?;
    hold_place(&dir, server.take_place()?);
    Ok(Ok(url))
}

/// Keeps this process's place on the server in `dir` for as long as the process lives.
fn hold_place(dir: &Path, stream: UnixStream) {
    PLACES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push((dir.to_path_buf(), stream));
}

/// The URL of the server whose socket is in `dir`.
fn url_of(dir: &Path) -> String {
    let host: String =
        url::form_urlencoded::byte_serialize(dir.as_os_str().as_encoded_bytes()).collect();
    // The port too: sqlx (as libpq) would otherwise take $PGPORT's.
    format!("postgres://postgres@localhost:5432/postgres?host={host}")
}

/// Whether this process already holds a place on the server in `dir` that still stands.
fn holds_place(dir: &Path) -> bool {
    let mut places = PLACES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    places.retain(|(_, stream)| wire::still_up(stream));
    places.iter().any(|(held, _)| held == dir)
}

struct Server<'a> {
    dir: &'a Path,
    run: &'a Path,
    data: PathBuf,
    log: PathBuf,
    cache: PathBuf,
    binaries: &'a Binaries,
    user: Option<&'a User>,
    idle: Duration,
}

impl Server<'_> {
    /// The directory's file lock, waited for up to [`START_TIMEOUT`]; released when dropped.
    fn lock(&self) -> Result<File> {
        let path = self.dir.join(cluster::LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|err| failed(self.dir, "open the lock file", String::new(), Some(err)))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(failed(
                        self.dir,
                        "take the lock file",
                        format!(
                            "another process held {} for {START_TIMEOUT:?}: is one stuck \
                             starting the server?",
                            path.display()
                        ),
                        None,
                    ));
                }
                Err(std::fs::TryLockError::Error(err)) => {
                    return Err(failed(
                        self.dir,
                        "take the lock file",
                        String::new(),
                        Some(err),
                    ));
                }
            }
        }
    }

    /// A place on a server of these binaries' major version, started (or replaced) if need be.
    fn take_place(&self) -> Result<UnixStream> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut starts = 0;
        let mut replaced = false;
        loop {
            match wire::connect(self.run) {
                wire::Answer::Up { version, stream } => {
                    if binaries::major(&version) == self.binaries.major() {
                        return Ok(stream);
                    }
                    if replaced {
                        return Err(self.failure(
                            "replace the server",
                            format!(
                                "a server of PostgreSQL {version} still answers on its socket \
                                 after it was replaced"
                            ),
                            0,
                        ));
                    }
                    self.replace(stream, &version)?;
                    replaced = true;
                }
                wire::Answer::Busy(message) => {
                    if Instant::now() >= deadline {
                        return Err(self.failure(
                            "connect to the server",
                            format!("it kept answering {message:?}"),
                            0,
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                wire::Answer::Refused(message) => {
                    return Err(self.failure("connect to the server", message, 0));
                }
                wire::Answer::Down => {
                    // A server still stopping (the watcher's stop, or a crash's aftermath).
                    if let Some(pid) = cluster::postmaster_pid(&self.data)
                        && cluster::is_server(pid, self.server_uid(), &self.data)
                        && Instant::now() < deadline
                    {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    starts += 1;
                    self.start(starts)?;
                }
            }
        }
    }

    /// Replaces a server of another major version than the binaries (PostgreSQL was upgraded),
    /// found through `stream`: only if no other process uses it.
    fn replace(&self, mut stream: UnixStream, version: &str) -> Result<()> {
        // The watcher holds the lock for a moment at each look: asked again after it.
        let alone = (0..10).any(|try_| {
            if try_ > 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
            wire::alone(&mut stream)
        });
        if !alone {
            return Err(self.failure(
                "replace the server",
                format!(
                    "it runs PostgreSQL {version}, the binaries found are {} ({}), and other \
                     processes use it: let them finish, or set TESTDB_PG_DIR to another \
                     directory",
                    self.binaries.version,
                    self.binaries.dir.display()
                ),
                0,
            ));
        }
        // Holding the presence lock alone, no process takes a place until the server is gone.
        self.stop()?;
        drop(stream);
        self.new_cluster()
    }

    /// The uid the server runs as.
    fn server_uid(&self) -> u32 {
        self.user.map_or_else(cluster::euid, |user| user.uid)
    }

    /// Starts the server: its `starts`th try in this process. A second try follows a pause (a
    /// killed server's sessions may still hold its memory); a third, a new data directory.
    fn start(&self, starts: u32) -> Result<()> {
        match starts {
            1 => {}
            2 => std::thread::sleep(Duration::from_millis(500)),
            3 => {
                cluster::forget_cache(self.binaries, &self.cache);
                self.new_cluster()?;
            }
            _ => {
                return Err(self.failure(
                    "start the server",
                    "it did not start after three tries, the last on a new data directory".into(),
                    0,
                ));
            }
        }
        if cluster::data_major(&self.data) != Some(self.binaries.major()) {
            self.new_cluster()?;
        }
        // PostgreSQL clears the lock files of a server that is gone, but not of one that is a
        // zombie (where no one reaps orphans, a killed server stays one): no server answers and
        // none runs, so they are stale.
        for lock in [
            self.data.join("postmaster.pid"),
            self.run.join(".s.PGSQL.5432.lock"),
        ] {
            if cluster::postmaster_pid_in(&lock)
                .is_some_and(|pid| !cluster::is_server(pid, self.server_uid(), &self.data))
            {
                let _ = std::fs::remove_file(&lock);
            }
        }
        let offset = cluster::log_length(&self.log);
        let began = Instant::now();
        let pid = cluster::launch(&Launch {
            binaries: self.binaries,
            dir: self.dir,
            run: self.run,
            data: &self.data,
            log: &self.log,
            idle_seconds: self.idle.as_secs(),
            user: self.user,
        })?;
        loop {
            match wire::connect(self.run) {
                wire::Answer::Up { .. } => break,
                wire::Answer::Refused(message) => {
                    return Err(self.failure("start the server", message, offset));
                }
                wire::Answer::Busy(_) | wire::Answer::Down => {}
            }
            if !cluster::alive(pid) {
                if starts < 3 {
                    // Tried again by the caller, which sees no server.
                    return Ok(());
                }
                return Err(self.failure("start the server", "it exited".into(), offset));
            }
            if began.elapsed() > START_TIMEOUT {
                cluster::signal(pid, libc::SIGQUIT);
                return Err(self.failure(
                    "start the server",
                    format!("it was not up after {START_TIMEOUT:?}"),
                    offset,
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        eprintln!(
            "testdb: started PostgreSQL {} from {}, in {} ({} ms){}; it stops after {} without \
             clients",
            self.binaries.version,
            self.binaries.dir.display(),
            self.dir.display(),
            began.elapsed().as_millis(),
            self.user.map_or(String::new(), |user| format!(
                ", as the user {} (uid {}), since PostgreSQL refuses to run as root",
                user.name, user.uid
            )),
            if self.idle.is_zero() {
                "never".to_string()
            } else {
                format!("{:?}", self.idle)
            },
        );
        Ok(())
    }

    /// Stops the server on the data directory, if one runs, and waits for it to go.
    fn stop(&self) -> Result<()> {
        let Some(pid) = cluster::postmaster_pid(&self.data) else {
            return Ok(());
        };
        // The pid file is the server's user's to write: only a server of that user's is signalled.
        if !cluster::is_server(pid, self.server_uid(), &self.data) {
            return Ok(());
        }
        cluster::signal(pid, libc::SIGINT);
        let deadline = Instant::now() + START_TIMEOUT;
        while cluster::alive(pid) {
            if Instant::now() > deadline {
                return Err(self.failure(
                    "stop the server of other binaries",
                    format!("process {pid} is still running"),
                    0,
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    fn new_cluster(&self) -> Result<()> {
        cluster::new_cluster(self.binaries, &self.data, &self.cache, self.user)
    }

    fn failure(&self, step: &str, what: String, log_offset: u64) -> Error {
        let log = cluster::log_since(&self.log, log_offset);
        let mut hint = what;
        if !log.is_empty() {
            hint.push_str(&format!("; the end of {}:\n{log}\n", self.log.display()));
        }
        hint.push_str(
            "; set TESTDB_POSTGRES_URL to a server of yours, or TESTDB_POSTGRES=off to skip \
             PostgreSQL tests",
        );
        failed(self.dir, step, hint, None)
    }
}

/// An error of the own server's.
pub(crate) fn failed(
    dir: &Path,
    step: &str,
    hint: String,
    source: Option<std::io::Error>,
) -> Error {
    Error::OwnServer {
        backend: NAME,
        dir: dir.to_path_buf(),
        step: step.to_string(),
        hint,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_idle;
    use std::time::Duration;

    #[test]
    fn idle_periods() {
        assert_eq!(parse_idle("900"), Some(Duration::from_secs(900)));
        assert_eq!(parse_idle("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_idle("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_idle("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_idle("never"), Some(Duration::ZERO));
        assert_eq!(parse_idle("soon"), None);
        assert_eq!(parse_idle("5d"), None);
    }
}
