//! PostgreSQL's SQL: the standard's, as the core writes it by default.

use testdb::backend::Dialect;

use crate::Postgres;

impl Dialect for Postgres {}
