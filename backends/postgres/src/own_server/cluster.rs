//! The server's files and process: its directory, the user it runs as, its data directory (a copy
//! of a cached `initdb`), and starting it.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use testdb::Result;

use super::binaries::Binaries;
use super::failed;

/// The OS user the server runs as, when not this process's own (PostgreSQL refuses root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// This process's effective user id.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    unsafe {
        libc::geteuid()
    }
}

/// As root, the user to run the server as: `postgres` if there is one, else `nobody`.
pub(crate) fn server_user(dir_hint: &Path) -> Result<Option<User>> {
    if euid() != 0 {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let user = ["postgres", "nobody"].iter().find_map(|wanted| {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 4 || fields[0] != *wanted {
                return None;
            }
            Some(User {
                name: fields[0].to_string(),
                uid: fields[2].parse().ok()?,
                gid: fields[3].parse().ok()?,
            })
        })
    });
    match user {
        Some(user) if user.uid != 0 => Ok(Some(user)),
        _ => Err(failed(
            dir_hint,
            "choose a user to run the server as",
            "PostgreSQL refuses to run as root, and /etc/passwd has neither a postgres nor a \
             nobody user to run it as: add one (e.g. `useradd --system postgres`), or set \
             TESTDB_POSTGRES_URL to a server"
                .into(),
            None,
        )),
    }
}

/// The server's directory: made (mode 0700, owned by the server's user) if missing; refused if
/// another user owns it or others may write to it.
pub(crate) fn prepare_dir(dir: &Path, user: Option<&User>) -> Result<()> {
    let io_failed = |step: &str, err: io::Error| {
        failed(
            dir,
            step,
            "set TESTDB_PG_DIR to a directory of your own".into(),
            Some(err),
        )
    };
    match DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => {}
        Err(err) => return Err(io_failed("create the server's directory", err)),
    }
    let owner = user.map_or_else(euid, |user| user.uid);
    let meta = fs::symlink_metadata(dir).map_err(|err| io_failed("read the directory", err))?;
    // Made by root before: given to the server's user.
    if let Some(user) = user
        && meta.uid() != owner
        && meta.uid() == 0
    {
        std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid))
            .map_err(|err| io_failed("give the directory to the server's user", err))?;
    }
    let meta = fs::symlink_metadata(dir).map_err(|err| io_failed("read the directory", err))?;
    if !meta.is_dir() || meta.uid() != owner || meta.mode() & 0o022 != 0 {
        return Err(failed(
            dir,
            "use the server's directory",
            format!(
                "it must be a directory owned by uid {owner} that no one else may write to; \
                 remove it, or set TESTDB_PG_DIR to another"
            ),
            None,
        ));
    }
    Ok(())
}

/// The major version of the cluster in `data`, if there is one.
pub(crate) fn data_major(data: &Path) -> Option<u32> {
    fs::read_to_string(data.join("PG_VERSION"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Makes `data` a new cluster: a copy of the cached `initdb` for these binaries, after running it
/// once (into `data` itself) if there is none. Whatever was in `data` is removed.
pub(crate) fn new_cluster(
    binaries: &Binaries,
    data: &Path,
    cache: &Path,
    user: Option<&User>,
) -> Result<()> {
    let dir = data.parent().unwrap_or(data);
    let remove = |path: &Path| match fs::remove_dir_all(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(failed(
            dir,
            "remove the old data directory",
            format!("remove {} by hand", path.display()),
            Some(err),
        )),
        _ => Ok(()),
    };
    let fresh = dir.join("data.new");
    remove(&fresh)?;
    let cached = cache.join(cache_key(binaries));
    if cached.join("PG_VERSION").is_file() && copy_tree(&cached, &fresh, user).is_ok() {
        remove(data)?;
        return fs::rename(&fresh, data).map_err(|err| {
            failed(
                dir,
                "put the data directory in place",
                String::new(),
                Some(err),
            )
        });
    }
    remove(&fresh)?;
    initdb(binaries, &fresh, user)?;
    // Best effort: a cache that cannot be written only costs the next first start an initdb.
    let partial = cache.join(format!("partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&partial);
    if DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(cache)
        .is_ok()
        && copy_tree(&fresh, &partial, None).is_ok()
        && fs::rename(&partial, &cached).is_err()
    {
        let _ = fs::remove_dir_all(&partial);
    }
    let _ = fs::remove_dir_all(&partial);
    remove(data)?;
    fs::rename(&fresh, data).map_err(|err| {
        failed(
            dir,
            "put the data directory in place",
            String::new(),
            Some(err),
        )
    })
}

/// The cache entry of these binaries' `initdb`: their version and directory.
fn cache_key(binaries: &Binaries) -> String {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let hash = BuildHasherDefault::<DefaultHasher>::default()
        .hash_one((binaries.dir.as_os_str(), &binaries.version));
    format!("initdb-{}-{hash:016x}", binaries.major())
}

fn initdb(binaries: &Binaries, data: &Path, user: Option<&User>) -> Result<()> {
    let mut command = Command::new(binaries.program("initdb"));
    command
        .arg("-D")
        .arg(data)
        .args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "-N",
        ])
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    as_user(&mut command, user);
    let dir = data.parent().unwrap_or(data);
    let output = command.output().map_err(|err| {
        failed(
            dir,
            "run initdb",
            binaries.program("initdb").display().to_string(),
            Some(err),
        )
    })?;
    if !output.status.success() {
        return Err(failed(
            dir,
            "run initdb",
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
            None,
        ));
    }
    Ok(())
}

/// Copies a directory tree, each directory mode 0700 and each file with its mode, given to `user`.
fn copy_tree(from: &Path, to: &Path, user: Option<&User>) -> io::Result<()> {
    DirBuilder::new().mode(0o700).create(to)?;
    give(to, user)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target, user)?;
        } else if kind.is_file() {
            fs::copy(entry.path(), &target)?;
            give(&target, user)?;
        }
    }
    Ok(())
}

fn give(path: &Path, user: Option<&User>) -> io::Result<()> {
    match user {
        Some(user) => std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)),
        None => Ok(()),
    }
}

/// Runs the command as `user`, when there is one.
pub(crate) fn as_user(command: &mut Command, user: Option<&User>) {
    if let Some(user) = user {
        // std drops root's supplementary groups before it changes the user.
        command.uid(user.uid).gid(user.gid);
    }
}

/// What the start script needs.
pub(crate) struct Launch<'a> {
    pub(crate) binaries: &'a Binaries,
    pub(crate) dir: &'a Path,
    pub(crate) data: &'a Path,
    pub(crate) log: &'a Path,
    pub(crate) idle_seconds: u64,
    pub(crate) user: Option<&'a User>,
}

/// Starts the server in the background, in a process group of its own (so that a test
/// harness's signals to its group do not reach it), with no descriptor of this process's; the
/// server's pid.
pub(crate) fn launch(launch: &Launch<'_>) -> Result<u32> {
    // Without its comments, which would only lengthen the watcher's command line in `ps`.
    let script: String = include_str!("start.sh")
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .map(|line| line.to_string() + "\n")
        .collect::<String>()
        .replace(
            "PRESENCE",
            &format!("{}, {}", super::wire::PRESENCE.0, super::wire::PRESENCE.1),
        );
    let tick = (launch.idle_seconds / 10).clamp(1, 30);
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(script)
        .env("PGBIN", &launch.binaries.dir)
        .env("PGDATA", launch.data)
        .env("SOCKDIR", launch.dir)
        .env("LOG", launch.log)
        .env("IDLE", launch.idle_seconds.to_string())
        .env("TICK", tick.to_string())
        .env("LC_ALL", "C")
        .current_dir(launch.dir)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    as_user(&mut command, launch.user);
    let output = command.output().map_err(|err| {
        failed(
            launch.dir,
            "start the server",
            "/bin/sh could not be run".into(),
            Some(err),
        )
    })?;
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .map_err(|_| {
            failed(
                launch.dir,
                "start the server",
                String::from_utf8_lossy(&output.stderr).trim().to_string(),
                None,
            )
        })
}

/// Whether process `pid` is running (a zombie is not: where no one reaps orphans, an exited
/// server stays one).
pub(crate) fn alive(pid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
                .is_some_and(|state| !matches!(state, 'Z' | 'X' | 'x')),
            Err(_) => false,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        signal(pid, 0)
    }
}

/// Sends `signal` to `pid`; whether it was delivered.
pub(crate) fn signal(pid: u32, signal: i32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 1 {
        return false;
    }
    // SAFETY: kill has no memory preconditions; a pid that is not ours to signal fails with EPERM.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, signal) == 0
    }
}

/// The pid in `data`'s `postmaster.pid`, if any.
pub(crate) fn postmaster_pid(data: &Path) -> Option<u32> {
    postmaster_pid_in(&data.join("postmaster.pid"))
}

/// The pid on the first line of a PostgreSQL lock file.
pub(crate) fn postmaster_pid_in(lock: &Path) -> Option<u32> {
    fs::read_to_string(lock)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The end of the log after `offset`, for an error message: at most its last 20 lines.
pub(crate) fn log_since(log: &Path, offset: u64) -> String {
    let text = fs::read(log).unwrap_or_default();
    let start = usize::try_from(offset).unwrap_or(0).min(text.len());
    let text = String::from_utf8_lossy(&text[start..]);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The log's length now.
pub(crate) fn log_length(log: &Path) -> u64 {
    fs::metadata(log).map_or(0, |meta| meta.len())
}

/// Makes the log file the server's user can append to.
pub(crate) fn prepare_log(log: &Path, user: Option<&User>) {
    if fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .is_ok()
    {
        let _ = fs::set_permissions(log, fs::Permissions::from_mode(0o600));
        let _ = give(log, user);
    }
}

/// Where the cached `initdb` and the binaries' memo live: the user's cache directory, which
/// outlives the temporary directory's cleanups; else `fallback`.
pub(crate) fn cache_dir(fallback: &Path) -> PathBuf {
    let home = std::env::var_os("XDG_CACHE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            let home = PathBuf::from(std::env::var_os("HOME").filter(|dir| !dir.is_empty())?);
            Some(if cfg!(target_os = "macos") {
                home.join("Library/Caches")
            } else {
                home.join(".cache")
            })
        });
    match home {
        Some(home) if home.is_absolute() => home.join("testdb").join("postgres"),
        _ => fallback.join("cache"),
    }
}
