//! The 100-test reference suite, shared by its test binaries: the reference data set of
//! `benches/reference/mod.rs` (10 tables × 1,000 rows, each table referencing the one before) and
//! its test (two rows inserted, one updated), written once for testdb's suites and for
//! `#[sqlx::test]`.
//!
//! Each binary in `tests/` is one variant: `testdb_<engine>_<isolation>` (a `static` [`Suite`] and
//! 100 tests that call [`Suite::run`]) or `sqlx_<engine>` (100 `#[sqlx::test]`s, each on a new
//! database with the migrations and the SQL fixture). `./run` times them whole.
//!
//! [`Suite`]: testdb::Suite
//! [`Suite::run`]: testdb::Suite::run

use testdb::{Backend, Fixtures, Isolation, Setup, TestDatabase};

/// The migrations, the same SQL on both engines (also `#[sqlx::test]`'s default `migrations`).
pub const MIGRATIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");

/// The fixture as JSON, written by build.rs: what testdb loads. `generated/reference.sql` holds
/// the same rows for `#[sqlx::test]`.
pub const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/generated/reference.json");

/// The environment variable that, when set, names the setup's version (`Setup::version`), so that
/// templates are keyed by it instead of by the test binary: `./run` sets a new one on every run,
/// so that the first run of each binary builds its template (cold) and the others reuse it (warm).
pub const VERSION_VARIABLE: &str = "REFERENCE_SETUP_VERSION";

/// The reference setup on `backend`: migrations, the 10,000-row fixture, `isolation`.
pub fn setup<B: Backend>(backend: B, isolation: Isolation) -> Setup<B> {
    let setup = Setup::new(
        TestDatabase::builder(backend)
            .migrations(MIGRATIONS)
            .fixtures(Fixtures::files([FIXTURE])),
    )
    .isolation(isolation);
    match std::env::var(VERSION_VARIABLE) {
        Ok(version) if !version.is_empty() => setup.version(version),
        _ => setup,
    }
}

/// The test's writes: two rows inserted into the last table, one updated.
const INSERT: &str = "INSERT INTO t9 (id, name, amount, created, flag, parent_id) \
     VALUES (5001, 'new', 1.5, '2024-01-01', true, 1), (5002, 'new', 2.5, '2024-01-02', false, 2)";
const UPDATE: &str = "UPDATE t9 SET name = 'changed' WHERE id = 7";
/// What the test checks afterwards: the table holds the fixture's rows and its own, and only its
/// own change (a leak from another test, or a missing fixture, fails it).
const CHECK: &str = "SELECT (SELECT count(*) FROM t9), \
     (SELECT count(*) FROM t9 WHERE name = 'changed'), \
     (SELECT count(*) FROM t9 WHERE name = 'new')";

macro_rules! reference_test {
    ($(#[$doc:meta])* $name:ident, $connection:ty) => {
        $(#[$doc])*
        pub async fn $name(conn: &mut $connection) -> sqlx::Result<()> {
            let inserted = sqlx::query(INSERT).execute(&mut *conn).await?.rows_affected();
            let updated = sqlx::query(UPDATE).execute(&mut *conn).await?.rows_affected();
            let (rows, changed, new): (i64, i64, i64) =
                sqlx::query_as(CHECK).fetch_one(&mut *conn).await?;
            assert_eq!((inserted, updated), (2, 1), "rows written");
            assert_eq!((rows, changed, new), (1_002, 1, 2), "rows in t9 after the test");
            Ok(())
        }
    };
}

reference_test!(
    /// The reference test on PostgreSQL.
    pg_test,
    sqlx::PgConnection
);
reference_test!(
    /// The reference test on SQLite.
    sqlite_test,
    sqlx::SqliteConnection
);

/// Invokes `$test!(test_000)` … `$test!(test_099)`: the 100 tests of a binary, each defined by a
/// macro of the binary that takes the test's name.
#[macro_export]
macro_rules! hundred {
    ($test:ident) => {
        $crate::hundred!(@each $test;
            test_000 test_001 test_002 test_003 test_004 test_005 test_006 test_007 test_008 test_009
            test_010 test_011 test_012 test_013 test_014 test_015 test_016 test_017 test_018 test_019
            test_020 test_021 test_022 test_023 test_024 test_025 test_026 test_027 test_028 test_029
            test_030 test_031 test_032 test_033 test_034 test_035 test_036 test_037 test_038 test_039
            test_040 test_041 test_042 test_043 test_044 test_045 test_046 test_047 test_048 test_049
            test_050 test_051 test_052 test_053 test_054 test_055 test_056 test_057 test_058 test_059
            test_060 test_061 test_062 test_063 test_064 test_065 test_066 test_067 test_068 test_069
            test_070 test_071 test_072 test_073 test_074 test_075 test_076 test_077 test_078 test_079
            test_080 test_081 test_082 test_083 test_084 test_085 test_086 test_087 test_088 test_089
            test_090 test_091 test_092 test_093 test_094 test_095 test_096 test_097 test_098 test_099
        );
    };
    (@each $test:ident; $($name:ident)*) => {
        $($test!($name);)*
    };
}
