//! Finding PostgreSQL's binaries: `TESTDB_PG_BIN` alone if set, else the newest of those on
//! `$PATH`, `pg_config --bindir`, and the places packages put them.
//!
//! Each candidate's version (and `pg_config`'s answer) is remembered in a file keyed by the
//! program's size and modification time, so that a process that finds the server up runs no
//! program: `postgres -V` costs tens of milliseconds, `pg_config` on Debian more.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::UNIX_EPOCH;

use testdb::{Error, Result};

/// The variable that names the one directory to take the binaries from.
pub(crate) const BIN_VARIABLE: &str = "TESTDB_PG_BIN";

/// The programs testdb runs: the server, `initdb` for its first start, `psql` for its idle stop.
const PROGRAMS: [&str; 3] = ["postgres", "initdb", "psql"];

/// A directory of PostgreSQL's binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Binaries {
    pub(crate) dir: PathBuf,
    /// As `postgres -V` says it, e.g. `15.20 (Debian 15.20-0+deb12u1)`.
    pub(crate) version: String,
}

impl Binaries {
    pub(crate) fn program(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub(crate) fn major(&self) -> u32 {
        major(&self.version)
    }
}

/// The major version of a `server_version` or `postgres -V` version: `15` of `15.20 (…)`, `9` of
/// `9.6.24`.
pub(crate) fn major(version: &str) -> u32 {
    let digits: String = version.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or(0)
}

/// `(major, minor)` for "newest wins".
fn rank(version: &str) -> (u32, u32) {
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .map(|part| part.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// The binaries to use, or `None` with the places looked in.
pub(crate) fn find(memo: &Path) -> Result<std::result::Result<Binaries, Vec<PathBuf>>> {
    let mut memory = Memo::read(memo);
    let found = match std::env::var_os(BIN_VARIABLE).filter(|dir| !dir.is_empty()) {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            match candidate(&dir, &mut memory) {
                Some(binaries) => Ok(binaries),
                None => {
                    return Err(Error::InvalidSetting {
                        variable: BIN_VARIABLE,
                        value: dir.display().to_string(),
                        reason: format!(
                            "a directory of PostgreSQL's programs, holding {} (and `postgres -V` \
                             saying its version)",
                            PROGRAMS.join(", ")
                        ),
                    });
                }
            }
        }
        None => {
            let places = places(&mut memory);
            let mut best: Option<Binaries> = None;
            for dir in &places {
                if let Some(found) = candidate(dir, &mut memory)
                    && best
                        .as_ref()
                        .is_none_or(|best| rank(&found.version) > rank(&best.version))
                {
                    best = Some(found);
                }
            }
            best.ok_or(places)
        }
    };
    memory.write(memo);
    Ok(found)
}

/// Where binaries may be, in order, each directory once (by its real path).
fn places(memory: &mut Memo) -> Vec<PathBuf> {
    let mut places = Vec::new();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            // `/usr/local/bin/postgres` may be a link into the real directory, beside its initdb.
            if let Ok(real) = std::fs::canonicalize(dir.join("postgres"))
                && let Some(parent) = real.parent()
            {
                places.push(parent.to_path_buf());
            }
            if let Some(bindir) = pg_config_bindir(&dir.join("pg_config"), memory) {
                places.push(bindir);
            }
        }
    }
    for (parent, prefix) in [
        ("/usr/lib/postgresql", ""),
        ("/usr", "pgsql-"),
        ("/opt/homebrew/opt", "postgresql"),
        ("/usr/local/opt", "postgresql"),
    ] {
        let Ok(entries) = std::fs::read_dir(parent) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .filter(|entry| entry.file_name().to_string_lossy().starts_with(prefix))
            .map(|entry| entry.path().join("bin"))
            .collect();
        found.sort();
        places.extend(found);
    }
    places.extend(
        [
            "/usr/local/pgsql/bin",
            "/opt/homebrew/bin",
            "/usr/local/bin",
        ]
        .into_iter()
        .map(PathBuf::from),
    );
    let mut seen = Vec::new();
    places.retain(|dir| {
        let real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
        let new = !seen.contains(&real);
        seen.push(real);
        new
    });
    places
}

/// `dir`'s binaries, if it holds them all.
fn candidate(dir: &Path, memory: &mut Memo) -> Option<Binaries> {
    if !PROGRAMS.iter().all(|program| dir.join(program).is_file()) {
        return None;
    }
    let postgres = dir.join("postgres");
    let version = memory.answer(&postgres, "-V", |output| {
        // "postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"
        let version = output.trim().strip_prefix("postgres (PostgreSQL) ")?;
        (major(version) > 0).then(|| version.to_string())
    })?;
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    Some(Binaries { dir, version })
}

fn pg_config_bindir(pg_config: &Path, memory: &mut Memo) -> Option<PathBuf> {
    if !pg_config.is_file() {
        return None;
    }
    memory
        .answer(pg_config, "--bindir", |output| {
            let dir = output.trim();
            (!dir.is_empty()).then(|| dir.to_string())
        })
        .map(PathBuf::from)
}

/// Programs' answers, by program, argument, size and modification time.
struct Memo {
    lines: Vec<[String; 5]>,
    changed: bool,
}

impl Memo {
    fn read(file: &Path) -> Memo {
        let lines = std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split('\t').collect();
                let fields: [&str; 5] = fields.try_into().ok()?;
                Some(fields.map(str::to_string))
            })
            .collect();
        Memo {
            lines,
            changed: false,
        }
    }

    fn answer(
        &mut self,
        program: &Path,
        argument: &str,
        parse: impl Fn(&str) -> Option<String>,
    ) -> Option<String> {
        let meta = std::fs::metadata(program).ok()?;
        let stamp = meta
            .modified()
            .ok()
            .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |at| at.as_nanos());
        let key = [
            program.display().to_string(),
            argument.to_string(),
            meta.len().to_string(),
            stamp.to_string(),
        ];
        if let Some(line) = self.lines.iter().find(|line| line[..4] == key) {
            return Some(line[4].clone());
        }
        let output = Command::new(program).arg(argument).output().ok()?;
        if !output.status.success() {
            return None;
        }
        let answer = parse(&String::from_utf8_lossy(&output.stdout))?;
        if answer.contains(['\t', '\n']) {
            return Some(answer);
        }
        self.lines.retain(|line| line[..2] != key[..2]);
        let [a, b, c, d] = key;
        self.lines.push([a, b, c, d, answer.clone()]);
        self.changed = true;
        Some(answer)
    }

    /// Best effort: a memo that cannot be written is asked again next time.
    fn write(&self, file: &Path) {
        if !self.changed {
            return;
        }
        let text: String = self
            .lines
            .iter()
            .map(|line| line.join("\t") + "\n")
            .collect();
        let partial = file.with_extension(format!("partial-{}", std::process::id()));
        if std::fs::write(&partial, text).is_err() || std::fs::rename(&partial, file).is_err() {
            let _ = std::fs::remove_file(&partial);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{major, rank};

    #[test]
    fn versions_compare_by_major_then_minor() {
        assert_eq!(major("15.20 (Debian 15.20-0+deb12u1)"), 15);
        assert_eq!(major("9.6.24"), 9);
        assert_eq!(major("17beta1"), 17);
        assert!(rank("16.1") > rank("15.20"));
        assert!(rank("15.20") > rank("15.9"));
        assert!(rank("9.6.24") < rank("10.1"));
    }
}
