//! Committed isolation's reset: only the tables a test wrote go back to the baseline.

use std::collections::BTreeSet;

use sqlx::{Connection, Database};

use crate::fixtures::Catalog;
use crate::fixtures::order::order;
use crate::{Backend, Error, Result, TestDatabase};

/// Where a restore runs, for its errors.
pub(crate) struct At<'a, B: Backend> {
    pub(crate) suite: &'static str,
    pub(crate) database: &'a TestDatabase<B>,
}

impl<B: Backend> At<'_, B> {
    fn failed(&self, what: String) -> Error {
        Error::Setup {
            suite: self.suite,
            message: format!("restoring {}: {what}", self.database.name()),
            source: None,
        }
    }
}

/// Restores (in rounds: a user's trigger may write other tables while one is restored) the tables
/// written since the last restore, and every table that references one of them (their rows go
/// first, and come back after), and whatever else the backend puts back each time (sequences,
/// session settings). Each round is one transaction.
pub(crate) async fn restore<B: Backend>(
    connection: &mut <B::Database as Database>::Connection,
    catalog: &Catalog,
    sequences: bool,
    at: At<'_, B>,
) -> Result<()> {
    let db = at.database;
    for round in 0..3 {
        let written = B::written_tables(connection)
            .await
            .map_err(|source| db.error("read which tables were written", source))?;
        // The first round runs even when nothing was written: it also resets the session and
        // the sequences, which move without writing (a failed insert).
        if written.is_empty() && round > 0 {
            return Ok(());
        }
        let tables = with_referencing(&written, catalog);
        if tables.is_empty() && !written.is_empty() {
            return Err(at.failed(format!(
                "tables written that the baseline does not know: {}",
                written.join(", ")
            )));
        }
        let order = order(&tables, catalog);
        let children_first: Vec<String> = order.tables.iter().rev().cloned().collect();
        let mut transaction = connection
            .begin()
            .await
            .map_err(|source| db.error("begin a restore", source))?;
        let undefer = B::defer_foreign_keys(&mut transaction, &order.deferred)
            .await
            .map_err(|source| db.error("defer foreign keys for a restore", source))?;
        B::restore(&mut transaction, &children_first, sequences)
            .await
            .map_err(|source| {
                db.error(&format!("restore {}", children_first.join(", ")), source)
            })?;
        if let Some(site) = B::check_foreign_keys(&mut transaction, &order.deferred)
            .await
            .map_err(|source| db.error("check foreign keys after a restore", source))?
        {
            return Err(at.failed(format!("the restored rows break a foreign key: {site:?}")));
        }
        if !undefer.is_empty() {
            B::execute_script(&mut transaction, &undefer)
                .await
                .map_err(|source| db.error("end the deferral of a restore", source))?;
        }
        transaction
            .commit()
            .await
            .map_err(|source| db.error("commit a restore", source))?;
        if written.is_empty() {
            return Ok(());
        }
    }
    Err(at.failed("tables are still being written after three restores".into()))
}

/// The written tables the catalog knows, and every table that references one of them, directly
/// or not: deleting a parent's rows needs its children's gone first.
fn with_referencing(written: &[String], catalog: &Catalog) -> BTreeSet<String> {
    let mut tables: BTreeSet<String> = written
        .iter()
        .filter(|table| catalog.tables.contains_key(*table))
        .cloned()
        .collect();
    loop {
        let before = tables.len();
        for (table, info) in &catalog.tables {
            if info
                .foreign_keys
                .iter()
                .any(|key| tables.contains(&key.parent))
            {
                tables.insert(table.clone());
            }
        }
        if tables.len() == before {
            return tables;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_referencing;
    use crate::fixtures::{Catalog, ForeignKey, TableInfo};

    fn table(parents: &[&str]) -> TableInfo {
        TableInfo {
            foreign_keys: parents
                .iter()
                .map(|parent| ForeignKey {
                    parent: (*parent).into(),
                    ..ForeignKey::default()
                })
                .collect(),
            ..TableInfo::default()
        }
    }

    #[test]
    fn a_parent_brings_its_descendants() {
        let mut catalog = Catalog::default();
        catalog.tables.insert("users".into(), table(&[]));
        catalog.tables.insert("orders".into(), table(&["users"]));
        catalog.tables.insert("lines".into(), table(&["orders"]));
        catalog.tables.insert("tags".into(), table(&[]));
        let leaf = with_referencing(&["lines".into()], &catalog);
        assert_eq!(leaf.into_iter().collect::<Vec<_>>(), ["lines"]);
        let root = with_referencing(&["users".into(), "gone".into()], &catalog);
        assert_eq!(
            root.into_iter().collect::<Vec<_>>(),
            ["lines", "orders", "users"]
        );
    }
}
