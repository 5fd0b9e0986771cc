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

/// The file lock in a server's directory, and the mark that the directory is testdb's.
pub(crate) const LOCK_FILE: &str = "testdb.lock";

/// Whether `dir` is a server directory as [`prepare_dir`] leaves it: testdb's (it holds
/// [`LOCK_FILE`]), this user's and writable by no one else, with a `run` directory (the socket's)
/// that only the server's user may enter. Read only: a server found elsewhere is not trusted.
pub(crate) fn is_ours(dir: &Path, user: Option<&User>) -> bool {
    let private = |path: &Path, owner: u32, others: u32| {
        fs::symlink_metadata(path)
            .is_ok_and(|meta| meta.is_dir() && meta.uid() == owner && meta.mode() & others == 0)
    };
    private(dir, euid(), 0o022)
        && fs::symlink_metadata(dir.join(LOCK_FILE)).is_ok_and(|meta| meta.is_file())
        && private(
            &dir.join("run"),
            user.map_or_else(euid, |user| user.uid),
            0o077,
        )
}

/// Makes `dir` a server directory: this user's, writable by no one else (as root, enterable by
/// the server's user), marked by [`LOCK_FILE`], with a `run` directory that only the server's
/// user may enter (its socket and log). A directory that exists must be testdb's already, or
/// empty: testdb takes over nothing else.
pub(crate) fn prepare_dir(dir: &Path, user: Option<&User>) -> Result<()> {
    let refuse = |what: String, err: Option<io::Error>| {
        failed(
            dir,
            "use the server's directory",
            format!("{what}; set TESTDB_PG_DIR to a directory that does not exist yet"),
            err,
        )
    };
    // The server's user must pass through it to reach its data and socket.
    let mode = if user.is_some() { 0o711 } else { 0o700 };
    if let Some(parent) = dir.parent() {
        DirBuilder::new()
            .recursive(true)
            .create(parent)
            .map_err(|err| refuse("cannot create its parent".into(), Some(err)))?;
    }
    match DirBuilder::new().mode(mode).create(dir) {
        // The mode as asked, whatever the umask.
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(mode))
            .map_err(|err| refuse("cannot set its mode".into(), Some(err)))?,
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            let meta = fs::symlink_metadata(dir)
                .map_err(|err| refuse("cannot read it".into(), Some(err)))?;
            if !meta.is_dir() || meta.uid() != euid() || meta.mode() & 0o022 != 0 {
                return Err(refuse(
                    format!(
                        "it must be a directory (not a link) owned by uid {} that no one else \
                         may write to",
                        euid()
                    ),
                    None,
                ));
            }
            // One listing, not a look for the lock file and then another: a process starting at
            // the same moment creates the lock file first, so what it has made is either not
            // listed yet or listed with the lock file.
            let mut empty = true;
            let mut locked = false;
            for entry in
                fs::read_dir(dir).map_err(|err| refuse("cannot read it".into(), Some(err)))?
            {
                let entry = entry.map_err(|err| refuse("cannot read it".into(), Some(err)))?;
                empty = false;
                locked |= entry.file_name() == LOCK_FILE;
            }
            let ours = locked && dir.join(LOCK_FILE).is_file();
            if !empty && !ours {
                return Err(refuse(
                    format!("it is not testdb's (it holds no {LOCK_FILE}) and not empty"),
                    None,
                ));
            }
            if meta.mode() & 0o777 != mode {
                fs::set_permissions(dir, fs::Permissions::from_mode(mode))
                    .map_err(|err| refuse("cannot set its mode".into(), Some(err)))?;
            }
        }
        Err(err) => return Err(refuse("cannot create it".into(), Some(err))),
    }
    if let Some(user) = user
        && let Some(closed) = dir
            .ancestors()
            .skip(1)
            .find(|up| fs::metadata(up).is_ok_and(|meta| meta.mode() & 0o001 == 0))
    {
        return Err(refuse(
            format!(
                "the server's user {} cannot pass through {} (it is not enterable by others)",
                user.name,
                closed.display()
            ),
            None,
        ));
    }
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .map_err(|err| refuse(format!("cannot create {LOCK_FILE}"), Some(err)))?;
    let run = dir.join("run");
    match DirBuilder::new().mode(0o700).create(&run) {
        Ok(()) => give(&run, user).map_err(|err| {
            refuse(
                "cannot give its run directory to the server's user".into(),
                Some(err),
            )
        })?,
        // Made by another process that has not given it yet, or was killed before it could: it
        // is in this user's own directory, so no one else can have put it there.
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            if let Some(user) = user
                && fs::symlink_metadata(&run).is_ok_and(|meta| meta.is_dir() && meta.uid() == 0)
            {
                give(&run, Some(user)).map_err(|err| {
                    refuse(
                        "cannot give its run directory to the server's user".into(),
                        Some(err),
                    )
                })?;
            }
        }
        Err(err) => return Err(refuse("cannot create its run directory".into(), Some(err))),
    }
    if !is_ours(dir, user) {
        return Err(refuse(
            format!(
                "{} must be a directory owned by uid {} that no one else may enter",
                run.display(),
                user.map_or_else(euid, |user| user.uid)
            ),
            None,
        ));
    }
    Ok(())
}

/// The major version of the cluster in `data`, if there is one.
pub(crate) fn data_major(data: &Path) -> Option<u32> {
    read_small(&data.join("PG_VERSION"))?.trim().parse().ok()
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
    let put_in_place = || {
        remove(data)?;
        fs::rename(&fresh, data).map_err(|err| {
            failed(
                dir,
                "put the data directory in place",
                String::new(),
                Some(err),
            )
        })
    };
    // Copied as this user into a directory only it may enter, then given to the server's user
    // from the leaves up, so that user never holds a directory testdb still writes in.
    if cached.join("PG_VERSION").is_file()
        && copy_tree(&cached, &fresh).is_ok()
        && give_tree(&fresh, user).is_ok()
    {
        return put_in_place();
    }
    remove(&fresh)?;
    DirBuilder::new()
        .mode(0o700)
        .create(&fresh)
        .and_then(|()| give(&fresh, user))
        .map_err(|err| failed(dir, "create the data directory", String::new(), Some(err)))?;
    initdb(binaries, &fresh, user)?;
    // What the server's user wrote is taken back before it is read, from the top down, so that
    // user can change nothing of it while it is copied into the cache; then given back.
    if user.is_some() {
        reclaim_tree(&fresh)
            .and_then(|()| give_tree(&fresh, user))
            .map_err(|err| failed(dir, "take over initdb's output", String::new(), Some(err)))?;
    }
    // Best effort: a cache that cannot be written only costs the next first start an initdb.
    // Copies left by processes killed while copying go first.
    if let Ok(entries) = fs::read_dir(cache) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let pid = name.to_str().and_then(|name| name.strip_prefix("partial-"));
            if pid
                .and_then(|pid| pid.parse().ok())
                .is_some_and(|pid| !alive(pid))
            {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    let partial = cache.join(format!("partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&partial);
    if DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(cache)
        .is_ok()
        && copy_tree(&fresh, &partial).is_ok()
        && fs::rename(&partial, &cached).is_err()
    {
        let _ = fs::remove_dir_all(&partial);
    }
    let _ = fs::remove_dir_all(&partial);
    put_in_place()
}

/// Forgets the cached `initdb` of these binaries (a copy of it would not start): the next new
/// cluster runs `initdb` again.
pub(crate) fn forget_cache(binaries: &Binaries, cache: &Path) {
    let _ = fs::remove_dir_all(cache.join(cache_key(binaries)));
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
        .env_clear()
        .env("PATH", search_path())
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

/// Copies a directory tree, each directory mode 0700 and each file with its mode; links are not
/// followed (a file that became one fails the copy).
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    DirBuilder::new().mode(0o700).create(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            let mut source = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(entry.path())?;
            let meta = source.metadata()?;
            // A hard link would copy a file from elsewhere.
            if !meta.is_file() || meta.nlink() != 1 {
                return Err(io::Error::other(format!(
                    "{} is not a file of its own",
                    entry.path().display()
                )));
            }
            let mode = meta.mode() & 0o777;
            let mut copy = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&target)?;
            io::copy(&mut source, &mut copy)?;
        }
    }
    Ok(())
}

/// Makes a tree this user's, each directory before its entries (so nothing in one changes once it
/// is), and removes links in it.
fn reclaim_tree(path: &Path) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(euid()), None)?;
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            reclaim_tree(&entry.path())?;
        } else if kind.is_symlink() {
            fs::remove_file(entry.path())?;
        } else {
            std::os::unix::fs::lchown(entry.path(), Some(euid()), None)?;
        }
    }
    Ok(())
}

/// Gives a tree to `user`, each directory's entries before the directory itself.
fn give_tree(path: &Path, user: Option<&User>) -> io::Result<()> {
    if user.is_none() {
        return Ok(());
    }
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            give_tree(&entry.path(), user)?;
        } else {
            give(&entry.path(), user)?;
        }
    }
    give(path, user)
}

/// Gives `path` (never what a link points to) to `user`.
fn give(path: &Path, user: Option<&User>) -> io::Result<()> {
    match user {
        Some(user) => std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid)),
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
    pub(crate) run: &'a Path,
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
        .env_clear()
        .env("PATH", search_path())
        .env("PGBIN", &launch.binaries.dir)
        .env("PGDATA", launch.data)
        .env("SOCKDIR", launch.run)
        .env("LOG", launch.log)
        .env("IDLE", launch.idle_seconds.to_string())
        .env("TICK", tick.to_string())
        .env("LC_ALL", "C")
        .current_dir(launch.run)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    as_user(&mut command, launch.user);
    close_on_exec(&mut command);
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

/// The search path the server's scripts find `sleep`, `date` and `head` on: the caller's (not a
/// secret, and where they are on systems without `/usr/bin`), else the usual one.
fn search_path() -> std::ffi::OsString {
    std::env::var_os("PATH")
        .filter(|path| !path.is_empty())
        .unwrap_or_else(|| "/usr/bin:/bin".into())
}

/// Marks every descriptor but the standard three close-on-exec in the child (Linux 5.11 and
/// later), so the long-lived server holds none of this process's: a pipe a caller waits on to
/// close, say.
fn close_on_exec(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
        // SAFETY: the hook runs between fork and exec, where it makes only one system call,
        // which is async-signal-safe and touches no memory; its failure (an older kernel) is
        // ignored.
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(|| {
                libc::syscall(
                    libc::SYS_close_range,
                    3 as libc::c_uint,
                    libc::c_uint::MAX,
                    CLOSE_RANGE_CLOEXEC,
                );
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

/// Whether `pid` is the server of `data`, run by `uid`: on Linux a running process of that user
/// whose working directory is `data` (as a postmaster's is; a pid in a stale `postmaster.pid` may
/// since name another process); elsewhere, any running process.
pub(crate) fn is_server(pid: u32, uid: u32, data: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        alive(pid)
            && fs::metadata(format!("/proc/{pid}")).is_ok_and(|meta| meta.uid() == uid)
            && fs::read_link(format!("/proc/{pid}/cwd"))
                .is_ok_and(|cwd| fs::canonicalize(data).is_ok_and(|data| data == cwd))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (uid, data);
        alive(pid)
    }
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
    read_small(lock)?.lines().next()?.trim().parse().ok()
}

/// The end of the log after `offset`, for an error message: at most its last 20 lines.
pub(crate) fn log_since(log: &Path, offset: u64) -> String {
    use std::io::{Read, Seek};
    let mut text = Vec::new();
    if let Ok(mut file) = open_log(log) {
        let _ = file.seek(io::SeekFrom::Start(offset));
        let _ = file.take(1 << 20).read_to_end(&mut text);
    }
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The log's length now.
pub(crate) fn log_length(log: &Path) -> u64 {
    open_log(log)
        .and_then(|file| file.metadata())
        .map_or(0, |meta| meta.len())
}

/// A small file of the server's user's (a lock file, `PG_VERSION`), which that user could have made
/// a link or a FIFO: neither is followed nor waited on.
fn read_small(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    open_log(path)
        .ok()?
        .take(4096)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// The log, which its directory's owner (the server's user) could have made a link: not followed.
fn open_log(log: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(log)
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
