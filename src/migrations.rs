use std::path::{Path, PathBuf};

use sqlx::migrate::Migrator;

use crate::{Error, Result};

/// Where a test database's schema comes from: a sqlx [`Migrator`] (e.g. `sqlx::migrate!()`), or a
/// directory of sqlx migration files (`<version>_<description>.sql`, or `.up.sql`/`.down.sql`
/// pairs), read when the database is created.
#[derive(Debug)]
pub enum Migrations {
    /// A migrator built in the test binary, e.g. by `sqlx::migrate!()`.
    Migrator(&'static Migrator),
    /// A migrator built at run time.
    OwnedMigrator(Box<Migrator>),
    /// A directory of migration files.
    Directory(PathBuf),
}

impl Migrations {
    /// Feeds the migrations' versions and checksums to `hasher`.
    pub(crate) async fn fingerprint(&self, hasher: &mut impl std::hash::Hasher) -> Result<()> {
        let feed = |migrator: &Migrator, hasher: &mut dyn std::hash::Hasher| {
            for migration in migrator.iter() {
                hasher.write_i64(migration.version);
                hasher.write(&migration.checksum);
            }
        };
        match self {
            Migrations::Migrator(migrator) => feed(migrator, hasher),
            Migrations::OwnedMigrator(migrator) => feed(migrator, hasher),
            Migrations::Directory(path) => {
                let loaded = Migrations::Directory(path.clone()).load().await?;
                feed(loaded.migrator(), hasher);
            }
        }
        Ok(())
    }

    pub(crate) async fn load(self) -> Result<Loaded> {
        Ok(match self {
            Migrations::Migrator(migrator) => Loaded::Static(migrator),
            Migrations::OwnedMigrator(migrator) => Loaded::Owned(migrator),
            Migrations::Directory(path) => {
                // sqlx reads a missing directory as an empty one: say so instead of silently
                // creating a database without a schema.
                if let Err(source) = std::fs::metadata(&path) {
                    return Err(Error::Io {
                        action: "read migrations directory".into(),
                        path,
                        source,
                    });
                }
                match Migrator::new(path.clone()).await {
                    Ok(migrator) => Loaded::Owned(Box::new(migrator)),
                    Err(source) => return Err(Error::Migrations { path, source }),
                }
            }
        })
    }
}

pub(crate) enum Loaded {
    Static(&'static Migrator),
    Owned(Box<Migrator>),
}

impl Loaded {
    pub(crate) fn migrator(&self) -> &Migrator {
        match self {
            Loaded::Static(migrator) => migrator,
            Loaded::Owned(migrator) => migrator,
        }
    }
}

impl From<&'static Migrator> for Migrations {
    fn from(migrator: &'static Migrator) -> Self {
        Migrations::Migrator(migrator)
    }
}

impl From<Migrator> for Migrations {
    fn from(migrator: Migrator) -> Self {
        Migrations::OwnedMigrator(Box::new(migrator))
    }
}

impl From<PathBuf> for Migrations {
    fn from(path: PathBuf) -> Self {
        Migrations::Directory(path)
    }
}

impl From<&Path> for Migrations {
    fn from(path: &Path) -> Self {
        Migrations::Directory(path.to_path_buf())
    }
}

impl From<&str> for Migrations {
    fn from(path: &str) -> Self {
        Migrations::Directory(PathBuf::from(path))
    }
}

impl From<String> for Migrations {
    fn from(path: String) -> Self {
        Migrations::Directory(PathBuf::from(path))
    }
}
