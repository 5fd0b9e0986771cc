//! Templates' names: a hash of everything that built the baseline, so that a template is reused
//! exactly while nothing that went into it has changed.

use std::hash::{DefaultHasher, Hash, Hasher};

use crate::Result;
use crate::backend::TEMPLATE_PREFIX as PREFIX;

/// Which suite a template belongs to (`group`, stable across rebuilds of the test binary) and
/// what built it (`key`).
#[derive(Debug, Clone)]
pub struct TemplateKey {
    group: String,
    key: String,
}

/// What a template depends on besides its databases' migrations and fixtures.
pub(crate) struct Inputs<'a> {
    pub(crate) suite: &'a str,
    pub(crate) version: Option<&'a str>,
    pub(crate) committed: bool,
    pub(crate) data_type: &'a str,
}

impl TemplateKey {
    /// The key of a suite's template; `fingerprint` feeds it the databases' migrations and
    /// fixtures.
    pub(crate) async fn new<F>(inputs: Inputs<'_>, fingerprint: F) -> Result<Self>
    where
        F: AsyncFnOnce(&mut DefaultHasher) -> Result<()>,
    {
        let binary = binary();
        let mut group = DefaultHasher::new();
        // Suites of one name in one binary (one path, however often rebuilt) replace each other's
        // templates, unless one restores committed data and the other does not (their templates
        // differ by design). Another checkout's binary of the same name is another group.
        (inputs.suite, &binary.stem, &binary.place, inputs.committed).hash(&mut group);

        let mut hasher = DefaultHasher::new();
        "testdb template v2".hash(&mut hasher);
        (inputs.suite, inputs.committed, inputs.data_type).hash(&mut hasher);
        match inputs.version {
            // Pinned: the user vouches that the setup function is the same.
            Some(version) => ("version", version).hash(&mut hasher),
            None => ("binary", &binary.identity).hash(&mut hasher),
        }
        fingerprint(&mut hasher).await?;
        let first = hasher.finish();
        // A second, differently seeded pass, for 96 bits in all.
        let mut again = DefaultHasher::new();
        (first, "again").hash(&mut again);
        Ok(TemplateKey {
            group: format!("{:08x}", group.finish() as u32),
            key: format!("{first:016x}{:08x}", again.finish() as u32),
        })
    }

    /// The template of the suite's `index`th database (under PostgreSQL's 63-byte limit).
    pub(crate) fn name(&self, index: usize) -> String {
        format!("{}{}", self.prefix(index), self.key)
    }

    /// What every template of this suite's `index`th database starts with, whatever its key.
    pub(crate) fn prefix(&self, index: usize) -> String {
        format!("{PREFIX}{}_{index}_", self.group)
    }
}

struct Binary {
    /// The test binary's name without cargo's hash (`committed` for `committed-0a1b2c…`).
    stem: String,
    /// The directory it is in (a checkout's target directory).
    place: String,
    /// Its path, size and modification time: changes whenever it is rebuilt.
    identity: String,
}

fn binary() -> Binary {
    let path = std::env::current_exe().unwrap_or_default();
    let name = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = match name.rsplit_once('-') {
        Some((stem, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => stem.to_owned(),
        _ => name,
    };
    let identity = match std::fs::metadata(&path) {
        Ok(meta) => format!(
            "{}:{}:{:?}",
            path.display(),
            meta.len(),
            meta.modified().ok()
        ),
        Err(_) => path.display().to_string(),
    };
    let place = path
        .parent()
        .map(|dir| dir.display().to_string())
        .unwrap_or_default();
    Binary {
        stem,
        place,
        identity,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{Inputs, TemplateKey};

    fn key(suite: &str, version: Option<&str>, extra: u8) -> TemplateKey {
        let inputs = Inputs {
            suite,
            version,
            committed: false,
            data_type: "()",
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime
            .block_on(TemplateKey::new(inputs, async |hasher| {
                std::hash::Hash::hash(&extra, hasher);
                Ok(())
            }))
            .unwrap()
    }

    #[test]
    fn names_follow_their_inputs() {
        let base = key("users", Some("1"), 0);
        assert_eq!(base.name(0), key("users", Some("1"), 0).name(0));
        assert_ne!(base.name(0), key("users", Some("2"), 0).name(0));
        assert_ne!(base.name(0), key("users", Some("1"), 1).name(0));
        assert_ne!(base.name(0), base.name(1));
        assert!(base.name(0).starts_with(&base.prefix(0)));
        // A different suite is a different group: its templates are never removed for ours.
        assert_ne!(base.prefix(0), key("orders", Some("1"), 0).prefix(0));
        assert!(base.name(1).len() <= 63);
    }
}
