use sqlx::postgres::PgConnectOptions;
use testdb::{Backend, Error, Result};

use crate::database::PostgresDatabase;
use crate::owner;
use crate::server::{self, NAME};
use crate::sql::{self, ident};
use crate::{Postgres, committed, copies, fixtures, template};

impl Backend for Postgres {
    type Database = sqlx::Postgres;
    type Connection = sqlx::PgConnection;
    type Owned = PostgresDatabase;

    const NAME: &'static str = NAME;

    async fn create(&self) -> Result<PostgresDatabase> {
        self.create_database(None).await
    }

    /// The connection's server process.
    type Watch = i32;

    async fn watch(conn: &mut sqlx::PgConnection) -> sqlx::Result<i32> {
        crate::isolation::backend_pid(conn).await
    }

    fn enter(pid: &i32, fence: &std::sync::Arc<testdb::backend::Fence>) {
        fence.set_own(i64::from(*pid));
    }

    async fn join(
        conn: &mut sqlx::PgConnection,
        attribution: &testdb::backend::Attribution,
    ) -> sqlx::Result<bool> {
        crate::isolation::join(conn, attribution).await
    }

    async fn end_taken(
        conn: &mut sqlx::PgConnection,
        options: &PgConnectOptions,
        fence: &testdb::backend::Fence,
    ) -> Result<()> {
        crate::isolation::end_taken(conn, options, fence).await
    }

    async fn interrupt(
        options: &PgConnectOptions,
        fence: &testdb::backend::Fence,
        end_own: bool,
    ) -> Result<()> {
        crate::isolation::interrupt(options, fence, end_own).await
    }

    async fn settle(conn: &mut sqlx::PgConnection, _: Option<&i32>) -> sqlx::Result<()> {
        crate::isolation::settle(conn).await
    }

    type Baseline = crate::isolation::Baseline;

    async fn baseline(conn: &mut sqlx::PgConnection) -> sqlx::Result<crate::isolation::Baseline> {
        crate::isolation::baseline(conn).await
    }

    async fn checkpoint(
        conn: &mut sqlx::PgConnection,
    ) -> sqlx::Result<std::result::Result<(), String>> {
        crate::isolation::checkpoint(conn).await
    }

    async fn rewind(
        conn: &mut sqlx::PgConnection,
        check: bool,
        baseline: &crate::isolation::Baseline,
        sequences: bool,
    ) -> sqlx::Result<testdb::backend::Rewind> {
        crate::isolation::rewind(conn, check, baseline, sequences).await
    }

    async fn reset_session(
        conn: &mut sqlx::PgConnection,
        _: &crate::isolation::Baseline,
    ) -> sqlx::Result<()> {
        crate::isolation::reset_session(conn).await
    }

    async fn catalog(conn: &mut sqlx::PgConnection) -> sqlx::Result<testdb::backend::Catalog> {
        fixtures::catalog(conn).await
    }

    async fn execute_script(conn: &mut sqlx::PgConnection, sql: &str) -> sqlx::Result<()> {
        fixtures::execute_script(conn, sql).await
    }

    async fn insert_rows(
        conn: &mut sqlx::PgConnection,
        table: &str,
        info: &testdb::backend::TableInfo,
        columns: &[String],
        rows: &[Vec<testdb::backend::Value>],
    ) -> sqlx::Result<()> {
        fixtures::insert_rows(conn, table, info, columns, rows).await
    }

    async fn defer_foreign_keys(
        conn: &mut sqlx::PgConnection,
        keys: &[(String, testdb::backend::ForeignKey)],
    ) -> sqlx::Result<String> {
        fixtures::defer_foreign_keys(conn, keys).await
    }

    async fn check_foreign_keys(
        conn: &mut sqlx::PgConnection,
        keys: &[(String, testdb::backend::ForeignKey)],
    ) -> sqlx::Result<Option<testdb::backend::ErrorSite>> {
        fixtures::check_foreign_keys(conn, keys).await
    }

    async fn lift_foreign_keys(
        conn: &mut sqlx::PgConnection,
        tables: &[String],
    ) -> sqlx::Result<testdb::backend::LiftedKeys> {
        fixtures::lift_foreign_keys(conn, tables).await
    }

    async fn restore_foreign_keys(
        conn: &mut sqlx::PgConnection,
        restore: &str,
    ) -> sqlx::Result<Option<testdb::backend::ErrorSite>> {
        fixtures::restore_foreign_keys(conn, restore).await
    }

    async fn reset_sequences(conn: &mut sqlx::PgConnection, tables: &[String]) -> sqlx::Result<()> {
        fixtures::reset_sequences(conn, tables).await
    }

    async fn dump_rows(
        conn: &mut sqlx::PgConnection,
        table: &str,
    ) -> sqlx::Result<(Vec<String>, Vec<Vec<testdb::backend::Value>>)> {
        fixtures::dump_rows(conn, table).await
    }

    fn error_site(err: &sqlx::Error) -> testdb::backend::ErrorSite {
        fixtures::error_site(err)
    }

    type TemplateLock = template::TemplateLock;

    async fn lock_template(&self, name: &str) -> Result<template::TemplateLock> {
        template::lock(self, name, false).await
    }

    async fn share_template(&self, name: &str) -> Result<template::TemplateLock> {
        template::lock(self, name, true).await
    }

    async fn find_template(&self, name: &str) -> Result<Option<String>> {
        template::find(self, name).await
    }

    async fn promote(&self, database: PostgresDatabase, name: &str, data: &str) -> Result<()> {
        template::promote(self, database, name, data).await
    }

    async fn clone_template(&self, name: &str) -> Result<PostgresDatabase> {
        template::clone(self, name).await
    }

    async fn lease_copy(&self, name: &str) -> Result<PostgresDatabase> {
        let (copy, lease) = copies::lease(self, name).await?;
        Ok(PostgresDatabase {
            url: self.url_of(&copy),
            options: self.options_of(&copy),
            server: self.clone(),
            name: copy,
            lease: Some(lease),
        })
    }

    async fn keep_spare(&self, name: &str, spare: usize) -> Result<()> {
        copies::keep_spare(self, name, spare).await
    }

    // A `DROP DATABASE` forces a checkpoint: tens of milliseconds a process need not wait at exit.
    const SLOW_REMOVAL: bool = true;

    async fn remove_templates(&self, prefix: &str, keep: &str) -> Result<usize> {
        template::remove(self, prefix, keep).await
    }

    async fn remove_unused_templates(
        &self,
        unused_for: std::time::Duration,
        keep_at_most: usize,
    ) -> Result<usize> {
        template::remove_unused(self, unused_for, keep_at_most).await
    }

    async fn track_writes(conn: &mut sqlx::PgConnection, tables: &[String]) -> sqlx::Result<()> {
        committed::track_writes(conn, tables).await
    }

    async fn written_tables(conn: &mut sqlx::PgConnection) -> sqlx::Result<Vec<String>> {
        committed::written_tables(conn).await
    }

    async fn restore(
        conn: &mut sqlx::PgConnection,
        tables: &[String],
        sequences: bool,
    ) -> sqlx::Result<()> {
        committed::restore(conn, tables, sequences).await
    }

    fn sweep_scope(&self) -> String {
        self.redacted_url().to_string()
    }

    async fn sweep(&self) -> Result<usize> {
        owner::sweep(self).await
    }

    async fn admit(conn: &mut sqlx::PgConnection, options: &PgConnectOptions) -> sqlx::Result<()> {
        crate::budget::admit(conn, options).await
    }

    fn refused(options: &PgConnectOptions, err: &sqlx::Error) -> Option<String> {
        crate::budget::hint(options, err)
    }
}

impl Postgres {
    /// Creates a database that testdb owns: empty, or a copy of `template`.
    pub(crate) async fn create_database(&self, template: Option<&str>) -> Result<PostgresDatabase> {
        let owner = owner::owner(self).await?;
        let mut conn = self.connect_maintenance().await?;
        let maintenance: String = match sqlx::query_scalar("SELECT current_database()")
            .fetch_one(&mut conn)
            .await
        {
            Ok(maintenance) => maintenance,
            Err(source) => {
                server::close(conn).await;
                return Err(self.connect_error(source));
            }
        };
        // Only the COMMENT makes it sweepable: a process killed between the two leaves an
        // unmarked database that no sweep drops (see owner.rs).
        let name = owner::database_name(owner.key, &maintenance);
        let created = sqlx::query(sql::create_database(&name, template))
            .execute(&mut conn)
            .await;
        if let Err(source) = created {
            server::close(conn).await;
            return Err(self.create_error(&name, source));
        }
        let marked = sqlx::query(sql::comment_on_database(
            &name,
            &owner::marker(owner.key, &maintenance),
        ))
        .execute(&mut conn)
        .await
        .map(drop);
        if let Err(source) = marked {
            // Unmarked, no sweep would ever remove it: drop it now.
            let _ = owner::drop_database(&mut conn, &name).await;
            server::close(conn).await;
            return Err(Error::Database {
                backend: NAME,
                database: name,
                step: "mark as testdb's".into(),
                source,
            });
        }
        server::close(conn).await;
        Ok(PostgresDatabase {
            url: self.url_of(&name),
            options: self.options_of(&name),
            server: self.clone(),
            name,
            lease: None,
        })
    }

    fn create_error(&self, name: &str, source: sqlx::Error) -> Error {
        let code = source
            .as_database_error()
            .and_then(|err| err.code().map(|code| code.into_owned()));
        if code.as_deref() == Some("42501") {
            let role = self.username().to_string();
            return Error::PermissionDenied {
                backend: NAME,
                server: self.redacted_url().to_string(),
                hint: format!(
                    "grant it with `ALTER ROLE {} CREATEDB`, or set TESTDB_POSTGRES_URL to a \
                     role that has CREATEDB",
                    ident(&role)
                ),
                role,
                action: "create databases".into(),
                source,
            };
        }
        Error::Database {
            backend: NAME,
            database: name.to_string(),
            step: "CREATE DATABASE".into(),
            source,
        }
    }
}
