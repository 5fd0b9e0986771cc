//! `#[testdb::test]`: a test on a database that testdb sets up, written as a `#[sqlx::test]` is.
//!
//! Use it through `testdb::test` or a backend crate's `test` (`testdb_postgres::test`,
//! `testdb_sqlite::test`); the expansion names the crate it came through, so a test crate needs
//! only that one.

use proc_macro::TokenStream;

mod args;
mod expand;

/// A test on a database of testdb's, set up once per run and shared as its argument allows; see
/// the `testdb` crate's documentation.
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::test(args, item, &["testdb"])
}

/// `test`, through `testdb_postgres`.
#[doc(hidden)]
#[proc_macro_attribute]
pub fn postgres_test(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::test(args, item, &["testdb_postgres", "__testdb"])
}

/// `test`, through `testdb_mysql`.
#[doc(hidden)]
#[proc_macro_attribute]
pub fn mysql_test(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::test(args, item, &["testdb_mysql", "__testdb"])
}

/// `test`, through `testdb_sqlite`.
#[doc(hidden)]
#[proc_macro_attribute]
pub fn sqlite_test(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::test(args, item, &["testdb_sqlite", "__testdb"])
}
