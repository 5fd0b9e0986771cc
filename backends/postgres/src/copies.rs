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
use crate::owner::{self, KeeperLock, Named, Owner};
use crate::server::{self, NAME};
use crate::sql;

/// The first half of copy-lease keys (the second is the name's hash).
pub(crate) const LEASE_CLASS: i32 = 0x636f_7079; // "copy"
const CLEAN: &str = "testdb copy v1; clean";
const LEASED: &str = "testdb copy v1; leased";

/// What a leased copy holds: the lease itself.
pub(crate) struct Lease {
    _held: KeeperLock,
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
/// dirty on the way are dropped. If fewer than `spare` clean copies are left free, one more is
/// made in the background, for the next lease (this process's or another's).
pub(crate) async fn lease(
    server: &Postgres,
    template: &str,
    spare: usize,
) -> Result<(String, Lease)> {
    let keeper = owner::owner(server).await?;
    let mut conn = server.connect_maintenance().await?;
    let leased = lease_on(&keeper, &mut conn, template).await;
    server::close(conn).await;
    let (name, lease, clean_left) = leased?;
    if clean_left < spare {
        let server = server.clone();
        let template = template.to_owned();
        // Not waited for: a copy whose creation an exit cuts short is dropped by a later lease.
        tokio::spawn(async move {
            let _ = make_spare(&server, &template).await;
        });
    }
    Ok((name, lease))
}

async fn lease_on(
    keeper: &Arc<Owner>,
    conn: &mut PgConnection,
    template: &str,
) -> Result<(String, Lease, usize)> {
    let copies = list(conn, template)
        .await
        .map_err(|source| failed(template, "list the template's copies", source))?;
    let mut taken = None;
    let mut clean_left = 0;
    let mut numbers = Vec::with_capacity(copies.len());
    for (name, n, comment) in copies {
        numbers.push(n);
        let clean = comment.as_deref() == Some(CLEAN);
        if taken.is_some() {
            clean_left += usize::from(clean);
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
            taken = Some((name, Lease { _held: held }));
        } else if owner::drop_unused(conn, &name).await.unwrap_or(false) {
            // Left dirty by a process that died, or half made: nobody's, and not clean. (One that
            // a session is still connected to is a live process's whose keeper lost its session
            // for a moment: left alone.)
            numbers.pop();
        }
    }
    if let Some((name, lease)) = taken {
        return Ok((name, lease, clean_left));
    }
    let (name, lease) = create(keeper, conn, template, &mut numbers, LEASED).await?;
    Ok((name, lease, clean_left))
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
        return Ok((name, Lease { _held: held }));
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
pub(crate) async fn release(server: &Postgres, name: &str, lease: Lease) -> Result<()> {
    let mut conn = server.connect_maintenance().await?;
    let released = async {
        if !end_sessions(&mut conn, name).await? {
            // Someone would not leave: not provably clean.
            let _ = owner::drop_database(&mut conn, name).await;
            return Ok(());
        }
        mark(&mut conn, name, CLEAN).await
    }
    .await;
    server::close(conn).await;
    drop(lease);
    released
}

/// Ends the sessions connected to `name` and waits (up to 5 s) until they are gone; whether they
/// are.
async fn end_sessions(conn: &mut PgConnection, name: &str) -> Result<bool> {
    let step = |source| failed(name, "end the copy's sessions", source);
    // PostgreSQL 14 and later wait for each session to end (up to 5 s), so that the loop below
    // finds none at once; an older server refuses the call, and the loop ends and waits instead.
    let _ = sqlx::query(
        "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(name)
    .execute(&mut *conn)
    .await;
    for _ in 0..100 {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(name)
        .fetch_one(&mut *conn)
        .await
        .map_err(step)?;
        if left == 0 {
            return Ok(true);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(false)
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
