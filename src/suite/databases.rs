//! A suite's databases: one backend, or a pair; what the suite does is done to each.

use std::any::Any;
use std::future::Future;
use std::hash::DefaultHasher;
use std::sync::Arc;

use sqlx::Database;

use crate::suite::building::Building;
use crate::suite::live::{Ending, Live, Session, Stopper};
use crate::suite::target::Target;
use crate::suite::template::TemplateKey;
use crate::{Backend, Builder, Isolation, Result, Rewind};

type Lock = Box<dyn Any + Send>;

/// The databases of a [`Suite`](crate::Suite): one [`Backend`], or a pair of them.
pub trait Databases: Sized + Send + 'static {
    /// How they are created: a [`Builder`], or a tuple of them.
    type Builders;
    /// What a test gets: a connection, or a tuple of them.
    type Connections<'c>;
    #[doc(hidden)]
    type Targets: Clone + Send + Sync;
    #[doc(hidden)]
    type Building: Send;
    #[doc(hidden)]
    type Live: Send + Sync;
    #[doc(hidden)]
    type Session;

    #[doc(hidden)]
    fn targets(suite: &'static str, builders: &Self::Builders) -> Self::Targets;
    #[doc(hidden)]
    fn fingerprint(
        builders: &Self::Builders,
        hasher: &mut DefaultHasher,
    ) -> impl Future<Output = Result<()>>;
    #[doc(hidden)]
    fn begin(
        suite: &'static str,
        builders: Self::Builders,
    ) -> impl Future<Output = Result<Self::Building>>;
    #[doc(hidden)]
    fn building_connections(building: &mut Self::Building) -> Self::Connections<'_>;
    /// Locks the templates: exclusively to build them, shared to use them.
    #[doc(hidden)]
    fn lock(
        targets: &Self::Targets,
        key: &TemplateKey,
        shared: bool,
    ) -> impl Future<Output = Result<Lock>>;
    /// The setup value stored with the templates, if every one of them exists.
    #[doc(hidden)]
    fn find(
        targets: &Self::Targets,
        key: &TemplateKey,
    ) -> impl Future<Output = Result<Option<String>>>;
    #[doc(hidden)]
    fn into_templates(
        building: Self::Building,
        targets: &Self::Targets,
        key: &TemplateKey,
        data: &str,
        track: bool,
    ) -> impl Future<Output = Result<()>>;
    /// Removes the templates this suite's new ones replace (best effort).
    #[doc(hidden)]
    fn remove_superseded(targets: &Self::Targets, key: &TemplateKey) -> impl Future<Output = ()>;
    #[doc(hidden)]
    fn open(
        targets: &Self::Targets,
        key: &TemplateKey,
        isolation: Isolation,
        sequences: bool,
    ) -> impl Future<Output = Result<Self::Live>>;
    /// Hands every database to one test; none if the suite must be built again.
    #[doc(hidden)]
    fn session(live: &Self::Live) -> impl Future<Output = Result<Option<Self::Session>>>;
    #[doc(hidden)]
    fn connections(session: &mut Self::Session) -> Self::Connections<'_>;
    #[doc(hidden)]
    fn handles(session: &Self::Session) -> Vec<Arc<dyn Any + Send + Sync>>;
    #[doc(hidden)]
    fn stoppers(session: &Self::Session) -> Vec<Stopper>;
    /// Ends a test on every database, the last first; reports the first that was not clean.
    #[doc(hidden)]
    fn finish(
        session: Self::Session,
        ending: Ending,
    ) -> impl Future<Output = Result<(Rewind, String)>>;
}

impl<B: Backend> Databases for B {
    type Builders = Builder<B>;
    type Connections<'c> = &'c mut <B::Database as Database>::Connection;
    type Targets = Target<B>;
    type Building = Building<B>;
    type Live = Live<B>;
    type Session = Session<B>;

    fn targets(suite: &'static str, builder: &Builder<B>) -> Target<B> {
        Target::of(suite, builder)
    }

    async fn fingerprint(builder: &Builder<B>, hasher: &mut DefaultHasher) -> Result<()> {
        builder.fingerprint(hasher).await
    }

    async fn begin(suite: &'static str, builder: Builder<B>) -> Result<Building<B>> {
        Building::begin(suite, builder).await
    }

    fn building_connections(building: &mut Building<B>) -> Self::Connections<'_> {
        building.connection()
    }

    async fn lock(target: &Target<B>, key: &TemplateKey, shared: bool) -> Result<Lock> {
        Ok(Box::new(target.lock(&key.name(0), shared).await?))
    }

    async fn find(target: &Target<B>, key: &TemplateKey) -> Result<Option<String>> {
        target.find(&key.name(0)).await
    }

    async fn into_templates(
        building: Building<B>,
        target: &Target<B>,
        key: &TemplateKey,
        data: &str,
        track: bool,
    ) -> Result<()> {
        building
            .into_template(target, &key.name(0), data, track)
            .await
    }

    async fn remove_superseded(target: &Target<B>, key: &TemplateKey) {
        target.remove_superseded(&key.prefix(0), &key.name(0)).await;
    }

    async fn open(
        target: &Target<B>,
        key: &TemplateKey,
        isolation: Isolation,
        sequences: bool,
    ) -> Result<Live<B>> {
        Live::open(target, key, 0, isolation, sequences).await
    }

    async fn session(live: &Live<B>) -> Result<Option<Session<B>>> {
        live.session().await
    }

    fn connections(session: &mut Session<B>) -> Self::Connections<'_> {
        session.connection()
    }

    fn handles(session: &Session<B>) -> Vec<Arc<dyn Any + Send + Sync>> {
        vec![session.handle()]
    }

    fn stoppers(session: &Session<B>) -> Vec<Stopper> {
        session.stopper().into_iter().collect()
    }

    async fn finish(session: Session<B>, ending: Ending) -> Result<(Rewind, String)> {
        session.finish(ending).await
    }
}

impl<B1: Backend, B2: Backend> Databases for (B1, B2) {
    type Builders = (Builder<B1>, Builder<B2>);
    type Connections<'c> = (
        &'c mut <B1::Database as Database>::Connection,
        &'c mut <B2::Database as Database>::Connection,
    );
    type Targets = (Target<B1>, Target<B2>);
    type Building = (Building<B1>, Building<B2>);
    type Live = (Live<B1>, Live<B2>);
    type Session = (Session<B1>, Session<B2>);

    fn targets(suite: &'static str, (first, second): &Self::Builders) -> Self::Targets {
        (Target::of(suite, first), Target::of(suite, second))
    }

    async fn fingerprint(
        (first, second): &Self::Builders,
        hasher: &mut DefaultHasher,
    ) -> Result<()> {
        first.fingerprint(hasher).await?;
        second.fingerprint(hasher).await
    }

    async fn begin(suite: &'static str, (first, second): Self::Builders) -> Result<Self::Building> {
        let first = Building::begin(suite, first).await?;
        let second = Building::begin(suite, second).await?;
        Ok((first, second))
    }

    fn building_connections((first, second): &mut Self::Building) -> Self::Connections<'_> {
        (first.connection(), second.connection())
    }

    async fn lock(
        (first, second): &Self::Targets,
        key: &TemplateKey,
        shared: bool,
    ) -> Result<Lock> {
        // Each template's, in order (every process takes them in the same order).
        let first = first.lock(&key.name(0), shared).await?;
        let second = second.lock(&key.name(1), shared).await?;
        Ok(Box::new((first, second)))
    }

    async fn find((first, second): &Self::Targets, key: &TemplateKey) -> Result<Option<String>> {
        let data = first.find(&key.name(0)).await?;
        let both = data.is_some() && second.find(&key.name(1)).await?.is_some();
        Ok(data.filter(|_| both))
    }

    async fn into_templates(
        (first, second): Self::Building,
        (first_target, second_target): &Self::Targets,
        key: &TemplateKey,
        data: &str,
        track: bool,
    ) -> Result<()> {
        // The second first: the pair exists once the first (which `find` reads) does.
        let first_name = key.name(0);
        let second_name = key.name(1);
        let promoted = second
            .into_template(second_target, &second_name, data, track)
            .await;
        match promoted {
            Ok(()) => {
                first
                    .into_template(first_target, &first_name, data, track)
                    .await
            }
            Err(err) => Err(err),
        }
    }

    async fn remove_superseded((first, second): &Self::Targets, key: &TemplateKey) {
        first.remove_superseded(&key.prefix(0), &key.name(0)).await;
        second.remove_superseded(&key.prefix(1), &key.name(1)).await;
    }

    async fn open(
        (first, second): &Self::Targets,
        key: &TemplateKey,
        isolation: Isolation,
        sequences: bool,
    ) -> Result<Self::Live> {
        let first = Live::open(first, key, 0, isolation, sequences).await?;
        let second = Live::open(second, key, 1, isolation, sequences).await?;
        Ok((first, second))
    }

    async fn session((first, second): &Self::Live) -> Result<Option<Self::Session>> {
        // Both or neither (a session dropped unused ends at once).
        let Some(first) = first.session().await? else {
            return Ok(None);
        };
        Ok(second.session().await?.map(|second| (first, second)))
    }

    fn connections((first, second): &mut Self::Session) -> Self::Connections<'_> {
        (first.connection(), second.connection())
    }

    fn handles((first, second): &Self::Session) -> Vec<Arc<dyn Any + Send + Sync>> {
        vec![first.handle(), second.handle()]
    }

    fn stoppers((first, second): &Self::Session) -> Vec<Stopper> {
        // The last first, as tests end.
        second
            .stopper()
            .into_iter()
            .chain(first.stopper())
            .collect()
    }

    async fn finish((first, second): Self::Session, ending: Ending) -> Result<(Rewind, String)> {
        // Every database is ended, in reverse order, whatever the others report.
        let last = second.finish(ending).await;
        let earlier = first.finish(ending).await;
        worst([last, earlier])
    }
}

/// The first error, else the first rewind that was not clean, else clean.
fn worst<const N: usize>(results: [Result<(Rewind, String)>; N]) -> Result<(Rewind, String)> {
    let mut outcome = None;
    for result in results {
        match result {
            Err(err) => return Err(err),
            Ok((Rewind::Clean, _)) => {}
            Ok(found) => {
                outcome.get_or_insert(found);
            }
        }
    }
    Ok(outcome.unwrap_or((Rewind::Clean, String::new())))
}
