//! Where a database of a suite lives, and how its pools are opened: enough to copy it from a
//! template again.

use sqlx::pool::PoolOptions;

use crate::{Backend, Builder, Result, TestDatabase, runtime};

/// A suite database's backend and pool options, and the suite's name for messages.
pub struct Target<B: Backend> {
    pub(crate) suite: &'static str,
    pub(crate) backend: B,
    pool_options: Option<PoolOptions<B::Database>>,
}

impl<B: Backend> Target<B> {
    pub(crate) fn of(suite: &'static str, builder: &Builder<B>) -> Self {
        Target {
            suite,
            backend: builder.backend().clone(),
            pool_options: builder.configured_pool(),
        }
    }

    pub(crate) async fn lock(&self, name: &str, shared: bool) -> Result<B::TemplateLock> {
        crate::cleanup::sweep_once(&self.backend).await?;
        if shared {
            self.backend.share_template(name).await
        } else {
            self.backend.lock_template(name).await
        }
    }

    pub(crate) async fn find(&self, name: &str) -> Result<Option<String>> {
        self.backend.find_template(name).await
    }

    pub(crate) async fn remove_superseded(&self, prefix: &str, keep: &str) {
        // Best effort: a template left behind is removed by the next suite that replaces it.
        let _ = self.backend.remove_templates(prefix, keep).await;
    }

    /// A database as `template` has it, leased for this process ([`Templates::lease_copy`](crate::backend::Templates::lease_copy), with
    /// `spare` free copies kept ready: [`Templates::keep_spare`](crate::backend::Templates::keep_spare)), owned by testdb; its pool opened
    /// on testdb's runtime.
    pub(crate) async fn lease(&self, template: &str, spare: usize) -> Result<TestDatabase<B>> {
        let backend = self.backend.clone();
        let pool_options = self.pool_options.clone();
        let template = template.to_owned();
        runtime::run(async move {
            crate::cleanup::sweep_once(&backend).await?;
            let owned = backend.lease_copy(&template).await?;
            if spare > 0 {
                let backend = backend.clone();
                let template = template.clone();
                // Best effort: without a spare, the next lease makes its copy itself.
                let _ = crate::cleanup::spawn_awaited(async move {
                    let _ = backend.keep_spare(&template, spare).await;
                });
            }
            TestDatabase::from_owned(owned, pool_options).await
        })
        .await?
    }
}

impl<B: Backend> Clone for Target<B> {
    fn clone(&self) -> Self {
        Target {
            suite: self.suite,
            backend: self.backend.clone(),
            pool_options: self.pool_options.clone(),
        }
    }
}

impl<B: Backend> std::fmt::Debug for Target<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}
