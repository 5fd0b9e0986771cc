//! Copies of a template, kept beside it and leased to one process at a time.
//!
//! A copy of template `T` is a database named `T_<n>` whose comment says whether it is clean (as
//! `T` has it) or leased. A process leases a copy by taking a session advisory lock on its name on
//! its owner keeper's session, so the lease ends however the process ends: a free copy is one
//! whose lock can be taken. A leased copy is marked leased first, and marked clean again only by
//! a process that gives it back with every test on it undone; so a copy whose process died (or
//! that a test left dirty) is found marked leased with its lock free, and the next leaser drops it.
//! A copy without a comment is one whose creation was cut short: dropped the same way.
//!
//! So a savepoint suite's process takes a free copy (or makes one), opens its suite transaction on
//! it, and at exit gives it back: no copy and no drop per process.

use std::sync::Arc;

use sqlx::Row;
use sqlx::postgres::PgConnection;
use testdb::{Error, Result};

use crate::Postgres;
use crate::maintenance;
use crate::owner::{self, KeeperLock, Named, Owner};
use crate::server::{self, NAME};
use crate::sql;

/// The first half of copy-lease keys (the second is the name's hash).
pub(crate) const LEASE_CLASS: i32 = 0x636f_7079; // "copy"
const CLEAN: &str = "testdb copy v1; clean";
const LEASED: &str = "testdb copy v1; leased";

/// What a leased copy holds: the lease itself.
pub(crate) struct Lease {
    held: KeeperLock,
}

/// Copy `n` of `template`.
fn copy_name(template: &str, n: usize) -> String {
    format!("{template}_{n}")
}

/// The template a copy's name belongs to, and its number; `None` if `name` names no copy.
pub(crate) fn template_of(name: &str) -> Option<(&str, usize)> {
    let (template, n) = name.rsplit_once('_')?;
    // A template's name ends in its 24-digit hex key; a copy's in a short decimal number.
    if n.is_empty() || n.len() > 6 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((template, n.parse().ok()?))
}

fn lease_lock(name: &str) -> Named {
    Named {
        class: LEASE_CLASS,
        name: name.to_owned(),
        shared: false,
    }
}

fn failed(name: &str, step: &str, source: sqlx::Error) -> Error {
    Error::Database {
        backend: NAME,
        database: name.to_owned(),
        step: step.into(),
        source,
    }
}

/// A copy of `template` leased to this process: a free clean one, or a new one. Copies found
/// dirty on the way are dropped in the background.
pub(crate) async fn lease(server: &Postgres, template: &str) -> Result<(String, Lease)> {
    let keeper = owner::owner(server).await?;
    let found = {
        let keeper = keeper.clone();
        let template = template.to_owned();
        maintenance::run(server, move |conn| {
            Box::pin(async move { take_free(&keeper, conn, &template).await })
        })
        .await?
    };
    if !found.dirty.is_empty() {
        let server = server.clone();
        // Not waited for: what an exit cuts short, a later lease or sweep drops.
        tokio::spawn(async move { drop_dirty(&server, found.dirty).await });
    }
    match found.taken {
        Some(taken) => Ok(taken),
        None => {
            let mut conn = server.connect_maintenance().await?;
            let mut numbers = found.numbers;
            let made = create(&keeper, &mut conn, template, &mut numbers, LEASED).await;
            server::close(conn).await;
            made
        }
    }
}

/// Makes clean copies of `template` until `spare` are free (each process that looks at once may
/// make one: never more than ran at once).
pub(crate) async fn keep_spare(server: &Postgres, template: &str, spare: usize) -> Result<()> {
    let of = template.to_owned();
    let clean = maintenance::run(server, move |conn| {
        Box::pin(async move {
            list(conn, &of)
                .await
                .map_err(|source| failed(&of, "list the template's copies", source))
        })
    })
    .await?
    .iter()
    .filter(|(_, _, comment)| comment.as_deref() == Some(CLEAN))
    .count();
    for _ in clean..spare {
        make_spare(server, template).await?;
    }
    Ok(())
}

/// What a look for a free copy found.
struct Found {
    /// The copy leased, marked leased.
    taken: Option<(String, Lease)>,
    /// The numbers of the copies that exist, for a new one's.
    numbers: Vec<usize>,
    /// Free copies that are not clean, leased for their drop.
    dirty: Vec<(String, KeeperLock)>,
}

async fn take_free(keeper: &Arc<Owner>, conn: &mut PgConnection, template: &str) -> Result<Found> {
    let copies = list(conn, template)
        .await
        .map_err(|source| failed(template, "list the template's copies", source))?;
    let mut found = Found {
        taken: None,
        numbers: Vec::with_capacity(copies.len()),
        dirty: Vec::new(),
    };
    for (name, n, _listed) in copies {
        found.numbers.push(n);
        if found.taken.is_some() {
            continue;
        }
        let Some(held) = keeper.try_lock(lease_lock(&name)).await? else {
            continue; // Leased by a live process.
        };
        // Re-read under the lease: another process may have leased and released it since.
        let comment = comment_of(conn, &name)
            .await
            .map_err(|source| failed(&name, "read the copy's state", source))?;
        if comment.as_deref() == Some(CLEAN) {
            mark(conn, &name, LEASED).await?;
            found.taken = Some((name, Lease { held }));
        } else {
            // Left dirty by a process that died, or half made: nobody's, and not clean.
            found.dirty.push((name, held));
        }
    }
    Ok(found)
}

/// Drops free copies that are not clean, each under its lease; one that a session is still
/// connected to (a live process whose keeper lost its session for a moment) is left alone.
async fn drop_dirty(server: &Postgres, dirty: Vec<(String, KeeperLock)>) {
    let Ok(mut conn) = server.connect_maintenance().await else {
        return;
    };
    for (name, held) in dirty {
        let _ = owner::drop_unused(&mut conn, &name).await;
        drop(held);
    }
    server::close(conn).await;
}

/// Makes a new copy of `template`, marked `state`, under a lease (taken first, so that nobody
/// finds it half made and drops it).
async fn create(
    keeper: &Arc<Owner>,
    conn: &mut PgConnection,
    template: &str,
    numbers: &mut Vec<usize>,
    state: &str,
) -> Result<(String, Lease)> {
    let mut n = 0;
    loop {
        while numbers.contains(&n) {
            n += 1;
        }
        numbers.push(n);
        let name = copy_name(template, n);
        let Some(held) = keeper.try_lock(lease_lock(&name)).await? else {
            continue; // Another process is making this one.
        };
        match sqlx::query(sql::create_database(&name, Some(template)))
            .execute(&mut *conn)
            .await
        {
            Ok(_) => {}
            // Made (and perhaps released) by another process since we listed the copies.
            Err(err) if is_duplicate(&err) => continue,
            Err(source) => return Err(failed(&name, "CREATE DATABASE", source)),
        }
        if let Err(err) = mark(conn, &name, state).await {
            let _ = owner::drop_database(conn, &name).await;
            return Err(err);
        }
        return Ok((name, Lease { held }));
    }
}

/// One more clean copy of `template`, free for the next lease.
async fn make_spare(server: &Postgres, template: &str) -> Result<()> {
    let keeper = owner::owner(server).await?;
    let mut conn = server.connect_maintenance().await?;
    let made = async {
        let mut numbers = list(&mut conn, template)
            .await
            .map_err(|source| failed(template, "list the template's copies", source))?
            .into_iter()
            .map(|(_, n, _)| n)
            .collect();
        create(&keeper, &mut conn, template, &mut numbers, CLEAN).await
    }
    .await;
    server::close(conn).await;
    // The lease ends here: the copy is free.
    made.map(drop)
}

/// Gives a leased copy back, clean: ends every session still on it (a suite transaction is rolled
/// back with its session), then marks it clean; the lease ends as `lease` is dropped.
///
/// The sessions are signalled, not waited for: they are this process's own, idle (its tests are
/// over, and none handed a connection out, or the copy would not be given back), so none can
/// commit anything once signalled, and what they hold uncommitted nobody else can see. Waiting
/// for them to end cost 100 ms per process (the server's wait polls at that interval).
pub(crate) async fn release(server: &Postgres, name: &str, lease: Lease) -> Result<()> {
    let name = name.to_owned();
    let released = maintenance::run(server, move |conn| {
        Box::pin(async move {
            sqlx::query(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
            )
            .bind(&name)
            .execute(&mut *conn)
            .await
            .map_err(|source| failed(&name, "end the copy's sessions", source))?;
            mark(conn, &name, CLEAN).await
        })
    })
    .await;
    lease.held.release().await;
    released
}

/// The copies of `template`: name, number, comment.
async fn list(
    conn: &mut PgConnection,
    template: &str,
) -> sqlx::Result<Vec<(String, usize, Option<String>)>> {
    let rows = sqlx::query(
        "SELECT datname::text, shobj_description(oid, 'pg_database') FROM pg_database \
         WHERE starts_with(datname, $1) ORDER BY datname",
    )
    .bind(format!("{template}_"))
    .fetch_all(&mut *conn)
    .await?;
    let mut copies = Vec::with_capacity(rows.len());
    for row in rows {
        let name: String = row.try_get(0)?;
        let comment: Option<String> = row.try_get(1)?;
        if let Some((of, n)) = template_of(&name)
            && of == template
        {
            copies.push((name, n, comment));
        }
    }
    Ok(copies)
}

async fn comment_of(conn: &mut PgConnection, name: &str) -> sqlx::Result<Option<String>> {
    let comment: Option<Option<String>> = sqlx::query_scalar(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(comment.flatten())
}

async fn mark(conn: &mut PgConnection, name: &str, state: &str) -> Result<()> {
    sqlx::query(sql::comment_on_database(name, state))
        .execute(&mut *conn)
        .await
        .map(drop)
        .map_err(|source| failed(name, "mark the copy", source))
}

/// "database already exists", or a `CREATE DATABASE` of that name still running on the server
/// (one whose process has ended: a unique violation on `pg_database`).
fn is_duplicate(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code == "42P04" || code == "23505")
}

/// Drops the copies that no process leases and that are not clean (their process died, or a
/// test left them dirty, or their creation was cut short), unless a session is connected to them;
/// returns how many it dropped.
pub(crate) async fn sweep(conn: &mut PgConnection) -> sqlx::Result<usize> {
    let rows = sqlx::query(
        "SELECT datname::text, shobj_description(oid, 'pg_database') IS DISTINCT FROM $2          FROM pg_database WHERE starts_with(datname, $1)",
    )
    .bind(owner::TEMPLATE_PREFIX)
    .bind(CLEAN)
    .fetch_all(&mut *conn)
    .await?;
    let mut dropped = 0;
    for row in rows {
        let name: String = row.try_get(0)?;
        let dirty: bool = row.try_get(1)?;
        if !dirty || template_of(&name).is_none() {
            continue;
        }
        let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
            .bind(LEASE_CLASS)
            .bind(&name)
            .fetch_one(&mut *conn)
            .await?;
        if !free {
            continue;
        }
        if owner::drop_unused(conn, &name).await.unwrap_or(false) {
            dropped += 1;
        }
        sqlx::query("SELECT pg_advisory_unlock($1, hashtext($2))")
            .bind(LEASE_CLASS)
            .bind(&name)
            .execute(&mut *conn)
            .await?;
    }
    Ok(dropped)
}

/// Drops copy `name` of a template being removed, if no process leases it; whether it did. On
/// `conn`'s own session, not the keeper's: the lease is taken and let go around the drop.
pub(crate) async fn remove_unleased(conn: &mut PgConnection, name: &str) -> sqlx::Result<bool> {
    let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
        .bind(LEASE_CLASS)
        .bind(name)
        .fetch_one(&mut *conn)
        .await?;
    if !free {
        return Ok(false);
    }
    // Not while a session is on it: a live process whose keeper lost its lease for a moment.
    let dropped = owner::drop_unused(conn, name).await;
    sqlx::query("SELECT pg_advisory_unlock($1, hashtext($2))")
        .bind(LEASE_CLASS)
        .bind(name)
        .execute(&mut *conn)
        .await?;
    dropped
}

#[cfg(test)]
mod tests {
    use super::{copy_name, template_of};

    #[test]
    fn copies_name_their_template() {
        let template = "testdb_tpl_0a1b2c3d_0_0123456789abcdef01234567";
        let copy = copy_name(template, 12);
        assert!(copy.len() <= 63);
        assert_eq!(template_of(&copy), Some((template, 12)));
        // A template's own name is no copy.
        assert_eq!(template_of(template), None);
    }
}
