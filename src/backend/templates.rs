//! Templates: baselines built once per content hash, shared across processes, copied per suite.

use std::future::Future;

use super::Server;
use crate::Result;

/// Building, finding, copying and removing templates, under locks every process shares.
pub trait Templates: Server {
    /// A lock on a template's name, shared by every process on the machine (or server); released
    /// when dropped.
    type TemplateLock: Send + 'static;

    /// The version of what this backend keeps in a template (its marks, its bookkeeping): part
    /// of every template's name, so that a template an earlier version of the backend built is
    /// never taken for one of this version's, even under a pinned
    /// [`Setup::version`](crate::Setup::version). Bump it whenever that changes.
    const FORMAT: u32 = 1;

    /// Waits for, then takes, the lock on template `name`: held while it is built or removed.
    fn lock_template(&self, name: &str) -> impl Future<Output = Result<Self::TemplateLock>> + Send;

    /// Waits for, then takes, a shared lock on template `name`: held while it is in use, so that
    /// no process removes it meanwhile (removal takes the lock exclusively, or gives up).
    fn share_template(&self, name: &str)
    -> impl Future<Output = Result<Self::TemplateLock>> + Send;

    /// The setup value stored with template `name`, if that template exists and is complete.
    fn find_template(&self, name: &str) -> impl Future<Output = Result<Option<String>>> + Send;

    /// Turns `database` (built by testdb, every connection to it closed) into template `name`,
    /// storing `data` with it; replaces any incomplete template of that name.
    fn promote(
        &self,
        database: Self::Owned,
        name: &str,
        data: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Creates a new database that testdb owns, as a copy of template `name`.
    fn clone_template(&self, name: &str) -> impl Future<Output = Result<Self::Owned>> + Send;

    /// A database as template `name` has it, for this process to use until it gives it back
    /// ([`OwnedDatabase::release`](super::OwnedDatabase::release), when it is as clean as it came)
    /// or removes it ([`OwnedDatabase::destroy`](super::OwnedDatabase::destroy)). A server keeps a
    /// pool of such copies beside each template, each leased by one process at a time, so that a
    /// process neither copies nor drops one. The default makes a new copy
    /// ([`clone_template`](Templates::clone_template)).
    fn lease_copy(&self, name: &str) -> impl Future<Output = Result<Self::Owned>> + Send {
        self.clone_template(name)
    }

    /// Makes sure that `spare` free copies of template `name` are ready for the next lease (this
    /// process's or another's). Run in the background after a lease that uses its copy up (one
    /// per test); the process waits for it at exit, since a copy whose making an exit cuts short
    /// is of no use to anyone. The default keeps none.
    fn keep_spare(&self, name: &str, spare: usize) -> impl Future<Output = Result<()>> + Send {
        let _ = (name, spare);
        async { Ok(()) }
    }

    /// Removes the templates whose names start with `prefix`, except `keep` and any being built
    /// or removed right now; returns how many it removed.
    fn remove_templates(
        &self,
        prefix: &str,
        keep: &str,
    ) -> impl Future<Output = Result<usize>> + Send;

    /// Removes the templates (with their copies) that no process is using and that none has used
    /// for `unused_for`, then, of those left, the least recently used beyond `keep_at_most`;
    /// returns how many databases it removed. Copies left behind by a template removed earlier go
    /// too, unless leased.
    fn remove_unused_templates(
        &self,
        unused_for: std::time::Duration,
        keep_at_most: usize,
    ) -> impl Future<Output = Result<usize>> + Send;
}
