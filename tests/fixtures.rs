//! Fixtures on both backends: every format, foreign-key order, self-references and cycles,
//! sequences, Django's format, and bad input that loads nothing.

// Tests, examples and benches may panic and print; the library may not (see Cargo.toml).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

#[macro_use]
mod common;

use std::path::PathBuf;

use common::Harness;
use testdb::{Error, Fixtures, TestDatabase};

async fn library<H: Harness>(backend: H) -> TestDatabase<H> {
    let schema = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures_schema")
        .join(H::KEY);
    TestDatabase::builder(backend)
        .migrations(schema)
        .create()
        .await
        .expect("create")
}

on_every_engine!(
    csv_files_load_in_foreign_key_order,
    files_and_directories_are_paths,
    json_and_yaml_documents_load,
    self_references_and_cycles_load,
    django_fixtures_load_as_they_are,
    django_renamed_columns_are_found_by_case,
    sql_files_run_as_they_are,
    sequences_are_reset_after_explicit_ids,
    csv_null_and_table_can_be_chosen,
    a_missing_fixture_lists_where_it_looked,
    bad_input_names_where_and_loads_nothing,
    fixtures_load_with_the_database,
);

async fn files_and_directories_are_paths<H: Harness>(backend: H) {
    let db = library(backend).await;
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // A `PathBuf`, a `&Path` found in a directory given as a `PathBuf`, and a name without
    // extension found there too.
    let fixtures = Fixtures::new()
        .directories([here.join("tests/fixtures")])
        .file(here.join("tests/fixtures/authors.csv"))
        .file(std::path::Path::new("books.csv"));
    let loaded = db.load(&fixtures).await.unwrap();
    assert_eq!(loaded.tables, ["authors", "books"]);
    assert_eq!(loaded.rows, 6);
}

async fn csv_files_load_in_foreign_key_order<H: Harness>(backend: H) {
    let db = library(backend).await;
    // Children first, and named without extension: testdb finds and orders them.
    let loaded = db
        .load(&Fixtures::files(["books", "authors"]))
        .await
        .unwrap();
    assert_eq!(loaded.rows, 6);
    assert_eq!(loaded.tables, ["authors", "books"]);
    let pool = db.pool();
    assert_eq!(
        H::scalar(pool, "SELECT count(*) FROM authors WHERE born IS NULL").await,
        1
    );
    assert_eq!(
        H::scalar(pool, "SELECT count(*) FROM authors WHERE active").await,
        2
    );
    assert_eq!(
        H::text(pool, "SELECT name FROM authors WHERE id = 3")
            .await
            .as_deref(),
        Some("Anonymous, with a comma")
    );
    assert_eq!(
        H::scalar(pool, "SELECT count(*) FROM books WHERE price IS NULL").await,
        1
    );
    assert_eq!(
        H::scalar(pool, "SELECT count(*) FROM books WHERE tags IS NULL").await,
        1
    );
}

async fn json_and_yaml_documents_load<H: Harness>(backend: H) {
    let db = library(backend).await;
    let loaded = db
        .load(&Fixtures::files(["library.json", "staff.yaml"]))
        .await
        .unwrap();
    assert_eq!(loaded.rows, 6);
    let pool = db.pool();
    assert_eq!(
        H::text(pool, "SELECT title FROM books WHERE id = 20")
            .await
            .as_deref(),
        Some("A \"quoted\"\ttitle\nwith a newline \\ and a backslash"),
        "text survives the bulk path exactly"
    );
    assert_eq!(
        H::scalar(
            pool,
            "SELECT count(*) FROM authors WHERE id = 22 AND active"
        )
        .await,
        1,
        "an absent column gets its default"
    );
    assert_eq!(H::scalar(pool, "SELECT count(*) FROM employees").await, 3);
}

async fn self_references_and_cycles_load<H: Harness>(backend: H) {
    let db = library(backend).await;
    db.load(&Fixtures::files(["staff.yaml", "teams.json"]))
        .await
        .unwrap();
    let pool = db.pool();
    assert_eq!(
        H::scalar(
            pool,
            "SELECT CAST(manager_id AS BIGINT) FROM employees WHERE id = 3"
        )
        .await,
        2
    );
    assert_eq!(
        H::scalar(
            pool,
            "SELECT CAST(captain_id AS BIGINT) FROM teams WHERE id = 1"
        )
        .await,
        100
    );
    assert_eq!(H::scalar(pool, "SELECT count(*) FROM players").await, 2);
    // The foreign keys are enforced again afterwards.
    let mut conn = db.acquire().await.unwrap();
    let orphan = H::try_exec_on(
        &mut conn,
        "INSERT INTO players (id, team_id, name) VALUES (200, 999, 'x')",
    );
    assert!(
        orphan.await.is_err(),
        "constraints are back in force after the load"
    );
}

async fn django_renamed_columns_are_found_by_case<H: Harness>(backend: H) {
    let db = library(backend).await;
    // `invoicedate` → "InvoiceDate", `note` → "Note": one column each, but for case.
    let loaded = db.load(&Fixtures::files(["chinook.json"])).await.unwrap();
    assert_eq!(loaded.rows, 2);
    assert_eq!(
        H::scalar(
            db.pool(),
            "SELECT count(*) FROM chinook_invoice \
             WHERE \"InvoiceDate\" = '2007-01-02' AND \"Note\" = 'paid' AND \"InvoiceId\" = 2"
        )
        .await,
        1
    );
    assert_eq!(
        H::scalar(
            db.pool(),
            "SELECT count(*) FROM chinook_invoice WHERE \"Note\" IS NULL AND \"InvoiceId\" = 1"
        )
        .await,
        1
    );
}

async fn django_fixtures_load_as_they_are<H: Harness>(backend: H) {
    let db = library(backend).await;
    let loaded = db.load(&Fixtures::files(["django.json"])).await.unwrap();
    assert_eq!(loaded.rows, 6, "2 tags, 1 book, 1 author, 2 book-tag links");
    let pool = db.pool();
    assert_eq!(
        H::scalar(
            pool,
            "SELECT CAST(author_id AS BIGINT) FROM library_book WHERE id = 7"
        )
        .await,
        5
    );
    assert_eq!(
        H::scalar(
            pool,
            "SELECT count(*) FROM library_book_tags WHERE book_id = 7"
        )
        .await,
        2
    );
    assert_eq!(
        H::text(pool, "SELECT name FROM library_author WHERE id = 5")
            .await
            .as_deref(),
        Some("Frank Herbert")
    );
}

async fn sql_files_run_as_they_are<H: Harness>(backend: H) {
    let db = library(backend).await;
    db.load(&Fixtures::files(["seed.sql"])).await.unwrap();
    assert_eq!(
        H::scalar(db.pool(), "SELECT count(*) FROM books WHERE author_id = 90").await,
        1
    );
    // The script gave explicit ids: the next row without one comes after them (on PostgreSQL
    // the identity would otherwise start at 1 and collide only later; here it must be 91).
    H::exec(
        db.pool(),
        "INSERT INTO authors (name) VALUES ('after the script')",
    )
    .await;
    assert_eq!(
        H::scalar(
            db.pool(),
            "SELECT CAST(id AS BIGINT) FROM authors WHERE name = 'after the script'"
        )
        .await,
        91
    );
}

async fn sequences_are_reset_after_explicit_ids<H: Harness>(backend: H) {
    let db = library(backend).await;
    db.load(&Fixtures::files(["authors.csv", "django.json"]))
        .await
        .unwrap();
    H::exec(db.pool(), "INSERT INTO authors (name) VALUES ('next')").await;
    assert_eq!(
        H::scalar(
            db.pool(),
            "SELECT CAST(id AS BIGINT) FROM authors WHERE name = 'next'"
        )
        .await,
        4
    );
    H::exec(
        db.pool(),
        "INSERT INTO library_author (name) VALUES ('next')",
    )
    .await;
    assert_eq!(
        H::scalar(
            db.pool(),
            "SELECT CAST(id AS BIGINT) FROM library_author WHERE name = 'next'"
        )
        .await,
        6
    );
}

async fn csv_null_and_table_can_be_chosen<H: Harness>(backend: H) {
    let db = library(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("people.csv");
    std::fs::write(&file, "id,name,born\n1,,NULL\n").unwrap();
    let fixtures = Fixtures::new()
        .csv(file.display().to_string(), "authors")
        .csv_null("NULL");
    db.load(&fixtures).await.unwrap();
    assert_eq!(
        H::scalar(
            db.pool(),
            "SELECT count(*) FROM authors WHERE name = '' AND born IS NULL"
        )
        .await,
        1
    );
}

async fn a_missing_fixture_lists_where_it_looked<H: Harness>(backend: H) {
    let db = library(backend).await;
    let err = db.load(&Fixtures::files(["nope"])).await.unwrap_err();
    let message = err.to_string();
    for place in [
        "tests/fixtures/nope.json",
        "tests/fixtures/nope.csv",
        "fixtures/nope.yaml",
    ] {
        assert!(message.contains(place), "lists {place}: {message}");
    }
}

/// One bad fixture: what its error must name (file, table, row, column, words of the message).
struct Bad {
    file: &'static str,
    table: Option<&'static str>,
    row: Option<&'static str>,
    column: Option<&'static str>,
    says: &'static [&'static str],
}

async fn bad_input_names_where_and_loads_nothing<H: Harness>(backend: H) {
    let db = library(backend).await;
    let cases = [
        Bad {
            file: "bad/malformed.json",
            table: None,
            row: None,
            column: None,
            says: &["invalid JSON", "line 1"],
        },
        Bad {
            file: "bad/malformed.yaml",
            table: None,
            row: None,
            column: None,
            says: &["invalid YAML", "line 2, column 5"],
        },
        Bad {
            file: "bad/unknown_table.json",
            table: Some("no_such_table"),
            row: None,
            column: None,
            says: &["no such table"],
        },
        Bad {
            file: "bad/unknown_column.json",
            table: Some("authors"),
            row: Some("row 1"),
            column: Some("nickname"),
            says: &["no such column"],
        },
        Bad {
            file: "bad/type_mismatch.json",
            table: Some("books"),
            row: Some("row 1"),
            column: Some("price"),
            says: &[],
        },
        Bad {
            file: "bad/duplicate.csv",
            table: Some("duplicate"),
            row: None,
            column: None,
            says: &["no such table"],
        },
        Bad {
            file: "bad/missing_parent.json",
            table: Some("books"),
            row: Some("row 1"),
            column: Some("author_id"),
            says: &["foreign key"],
        },
        Bad {
            file: "bad/twice.json",
            table: Some("authors"),
            row: None,
            column: None,
            says: &["appears twice"],
        },
        Bad {
            file: "bad/unterminated/authors.csv",
            table: Some("authors"),
            row: Some("line 3"),
            column: None,
            says: &["never closes"],
        },
        Bad {
            file: "bad/header/authors.csv",
            table: Some("authors"),
            row: Some("line 1"),
            column: Some("name"),
            says: &["appears twice"],
        },
        Bad {
            file: "bad/duplicate_key.json",
            table: None,
            row: None,
            column: None,
            says: &["\"name\" appears twice", "line 1"],
        },
        Bad {
            file: "bad/duplicate_key.yaml",
            table: None,
            row: None,
            column: None,
            says: &["duplicate mapping key `name`", "line 4, column 5"],
        },
        Bad {
            file: "bad/django_duplicate.json",
            table: None,
            row: None,
            column: None,
            says: &["\"name\" appears twice", "line 1"],
        },
        Bad {
            file: "bad/not_utf8.json",
            table: None,
            row: None,
            column: None,
            says: &["invalid UTF-8 at line 2, column 25"],
        },
        Bad {
            file: "bad/unmatched_fields.json",
            table: Some("chinook_invoice"),
            row: Some("chinook.invoice pk 1, object 0 of the file"),
            column: Some("amount"),
            says: &[
                "table chinook_invoice: amount, paid",
                "table library_author: nickname",
                ".field_column(\"chinook.invoice\", \"paid\", \"<column>\")",
            ],
        },
        Bad {
            file: "bad/broken_cycle.json",
            table: Some("teams"),
            row: Some("row 0"),
            column: Some("captain_id"),
            says: &["foreign key", "no row of players has id = 555"],
        },
    ];
    for case in cases {
        let err = db
            .load(&Fixtures::files([case.file]))
            .await
            .expect_err(case.file);
        let Error::Fixture {
            file,
            table,
            row,
            column,
            message,
        } = &err
        else {
            panic!("{}: expected a fixture error, got {err:?}", case.file);
        };
        assert!(
            file.ends_with(case.file),
            "{}: names the file: {err}",
            case.file
        );
        assert_eq!(table.as_deref(), case.table, "{}: table: {err}", case.file);
        assert_eq!(row.as_deref(), case.row, "{}: row: {err}", case.file);
        if case.column.is_some() {
            assert_eq!(
                column.as_deref(),
                case.column,
                "{}: column: {err}",
                case.file
            );
        }
        for words in case.says {
            assert!(
                message.to_lowercase().contains(&words.to_lowercase()),
                "{}: says {words:?}: {err}",
                case.file
            );
        }
        for table in ["authors", "books", "teams", "players"] {
            let count = match table {
                "authors" => H::scalar(db.pool(), "SELECT count(*) FROM authors").await,
                "books" => H::scalar(db.pool(), "SELECT count(*) FROM books").await,
                "teams" => H::scalar(db.pool(), "SELECT count(*) FROM teams").await,
                _ => H::scalar(db.pool(), "SELECT count(*) FROM players").await,
            };
            assert_eq!(
                count, 0,
                "{}: nothing from the load stays in {table}",
                case.file
            );
        }
    }
    // A duplicate key, into a table that exists: names the row.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("authors.csv");
    std::fs::copy("tests/fixtures/bad/duplicate.csv", &file).unwrap();
    let err = db
        .load(&Fixtures::files([file.display().to_string()]))
        .await
        .expect_err("a duplicate key");
    let Error::Fixture { table, row, .. } = &err else {
        panic!("expected a fixture error, got {err:?}");
    };
    assert_eq!(table.as_deref(), Some("authors"), "{err}");
    assert_eq!(row.as_deref(), Some("line 4"), "{err}");
    assert_eq!(
        H::scalar(db.pool(), "SELECT count(*) FROM authors").await,
        0
    );
}

async fn fixtures_load_with_the_database<H: Harness>(backend: H) {
    let schema = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures_schema")
        .join(H::KEY);
    let db = TestDatabase::builder(backend.clone())
        .migrations(&*schema)
        .fixtures(Fixtures::files(["authors", "books"]))
        .create()
        .await
        .unwrap();
    assert_eq!(H::scalar(db.pool(), "SELECT count(*) FROM books").await, 3);

    let err = TestDatabase::builder(backend)
        .migrations(&*schema)
        .fixtures(Fixtures::files(["bad/missing_parent.json"]))
        .create()
        .await
        .expect_err("a bad fixture fails the creation");
    assert!(matches!(err, Error::Fixture { .. }), "{err:?}");
}

on_every_engine!(
    a_dump_loads_back_to_the_same_rows,
    a_csv_dump_loads_back_to_the_same_rows,
    a_dump_of_a_missing_table_says_so,
    json_nulls_and_strings_survive_a_dump,
    generated_columns_are_left_out_of_dumps,
    a_cancelled_load_leaves_nothing_and_the_keys_in_place
);

// Types and catalogs of their own (MySQL's are in tests/mysql.rs).
on_both!(
    django_sqlmigrate_output_runs_as_a_migration,
    json_numbers_keep_every_digit,
    arrays_load_into_array_columns,
    every_type_survives_a_dump,
    schemas_partitions_and_inheritance_load_and_dump_once,
    a_load_over_tcp_turns_nagle_off,
    foreign_keys_come_back_as_they_were
);

/// A load cut short (its future dropped mid-way, as a test's timeout does) leaves no row and, on
/// PostgreSQL, every foreign key it had lifted; the next load on the same pool works.
async fn a_cancelled_load_leaves_nothing_and_the_keys_in_place<H: Harness>(backend: H) {
    const KEYS: &str = "SELECT string_agg(conrelid::regclass || ' ' || conname || ' ' || \
        pg_get_constraintdef(oid), '; ' ORDER BY conrelid::regclass::text, conname) \
        FROM pg_constraint WHERE contype = 'f'";
    let db = library(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("many.json");
    let mut text = String::from("{\"authors\": [");
    for id in 1..=20_000 {
        let comma = if id > 1 { "," } else { "" };
        text.push_str(&format!("{comma}{{\"id\": {id}, \"name\": \"a{id}\"}}"));
    }
    text.push_str("], \"books\": [");
    for id in 1..=20_000 {
        let comma = if id > 1 { "," } else { "" };
        text.push_str(&format!(
            "{comma}{{\"id\": {id}, \"author_id\": {id}, \"title\": \"t\"}}"
        ));
    }
    text.push_str("]}");
    std::fs::write(&file, text).unwrap();
    let fixtures = Fixtures::files([&file]);
    let before = if H::KEY == "postgres" {
        H::text(db.pool(), KEYS).await
    } else {
        None
    };
    // Cut half way through, as long as a whole load takes (then sooner, should it finish).
    let started = std::time::Instant::now();
    db.load(&fixtures).await.unwrap();
    let whole = started.elapsed();
    H::exec(db.pool(), "DELETE FROM books").await;
    H::exec(db.pool(), "DELETE FROM authors").await;
    let mut cut = false;
    for part in [2, 4, 8, 16] {
        match tokio::time::timeout(whole / part, db.load(&fixtures)).await {
            Err(_) => {
                cut = true;
                break;
            }
            Ok(loaded) => {
                loaded.unwrap();
                H::exec(db.pool(), "DELETE FROM books").await;
                H::exec(db.pool(), "DELETE FROM authors").await;
            }
        }
    }
    assert!(cut, "every load finished before its limit: nothing was cut");
    for sql in ["SELECT count(*) FROM authors", "SELECT count(*) FROM books"] {
        assert_eq!(H::scalar(db.pool(), sql).await, 0, "{sql}");
    }
    if H::KEY == "postgres" {
        assert_eq!(H::text(db.pool(), KEYS).await, before);
    }
    assert_eq!(db.load(&fixtures).await.unwrap().rows, 40_000);
}

/// A load on a connection of its own lifts the tables' foreign keys (PostgreSQL checks them all
/// at once when it puts them back): they come back the same, and hold afterwards.
async fn foreign_keys_come_back_as_they_were<H: Harness>(backend: H) {
    if H::KEY != "postgres" {
        return;
    }
    const KEYS: &str = "SELECT string_agg(conrelid::regclass || ' ' || conname || ' ' || \
        pg_get_constraintdef(oid) || ' ' || condeferrable || condeferred || convalidated, '; ' \
        ORDER BY conrelid::regclass::text, conname) FROM pg_constraint WHERE contype = 'f'";
    let db = library(backend).await;
    let before = H::text(db.pool(), KEYS).await;
    assert!(before.as_deref().is_some_and(|keys| keys.contains("books")));
    db.load(&Fixtures::files([
        "authors.csv",
        "books.csv",
        "chinook.json",
        "layouts.json",
    ]))
    .await
    .unwrap();
    assert_eq!(H::text(db.pool(), KEYS).await, before);
    let mut conn = db.acquire().await.unwrap();
    let dangling = H::try_exec_on(
        &mut conn,
        "INSERT INTO books (id, author_id, title) VALUES (900, 999, 'x')",
    )
    .await
    .expect_err("the key holds after the load");
    assert!(dangling.to_string().contains("foreign key"), "{dangling}");
}

/// Whether this process's TCP socket to the server on `conn` has TCP_NODELAY set.
#[cfg(target_os = "linux")]
async fn nodelay(conn: &mut sqlx::PgConnection) -> bool {
    use std::os::fd::{BorrowedFd, RawFd};
    let (client, server): (i32, i32) =
        sqlx::query_as("SELECT inet_client_port(), inet_server_port()")
            .fetch_one(&mut *conn)
            .await
            .expect("a TCP connection");
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(raw) = entry.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        // SAFETY: only duplicated; a descriptor closed meanwhile fails to duplicate.
        #[allow(unsafe_code)]
        let Ok(owned) = unsafe { BorrowedFd::borrow_raw(raw) }.try_clone_to_owned() else {
            continue;
        };
        let stream = std::net::TcpStream::from(owned);
        if stream
            .local_addr()
            .is_ok_and(|at| i32::from(at.port()) == client)
            && stream
                .peer_addr()
                .is_ok_and(|at| i32::from(at.port()) == server)
        {
            return stream.nodelay().unwrap();
        }
    }
    panic!("no socket of this process has local port {client}");
}

/// sqlx 0.9.0 leaves Nagle's algorithm on, and each COPY of a load then waits 40 ms for the
/// server's delayed acknowledgement: a load turns it off on its connection.
async fn a_load_over_tcp_turns_nagle_off<H: Harness>(backend: H) {
    if H::KEY != "postgres" {
        return;
    }
    let db = library(backend).await;
    #[cfg(target_os = "linux")]
    {
        use sqlx::Connection;
        use std::str::FromStr;
        let url = common::server_url();
        // Over TCP whatever the configured URL says (a socket has no Nagle to turn off).
        let options = sqlx::postgres::PgConnectOptions::from_str(&url).unwrap();
        if options.get_socket().is_some() {
            common::say("the server takes no TCP connections (testdb's own): nothing to check");
            return;
        }
        let options = options.host("127.0.0.1").database(db.name());
        let Ok(mut conn) = sqlx::PgConnection::connect_with(&options).await else {
            common::say("the server takes no TCP connections here: nothing to check");
            return;
        };
        assert!(!nodelay(&mut conn).await, "sqlx turned Nagle off itself");
        testdb::load_fixtures::<testdb_postgres::Postgres>(
            &mut conn,
            &Fixtures::files(["authors.csv"]),
        )
        .await
        .unwrap();
        assert!(nodelay(&mut conn).await, "the load left Nagle on");
    }
}

/// PostgreSQL (SQLite has none of these): a table of another schema is `schema.table`, foreign
/// keys into it order the load; a partitioned table's rows are dumped once, through it, not
/// again through its partitions; a parent's dump holds its own rows, not its children's.
async fn schemas_partitions_and_inheritance_load_and_dump_once<H: Harness>(backend: H) {
    if H::KEY != "postgres" {
        return;
    }
    let original = library(backend.clone()).await;
    let loaded = original
        .load(&Fixtures::files(["layouts.json"]))
        .await
        .unwrap();
    assert_eq!(loaded.rows, 8);
    let checks: &[(&'static str, i64)] = &[
        ("SELECT count(*) FROM inventory.items", 2),
        ("SELECT count(*) FROM stock WHERE item_id = 7", 1),
        ("SELECT count(*) FROM readings", 3),
        ("SELECT count(*) FROM readings_2024", 2),
        ("SELECT count(*) FROM ONLY animals", 1),
        ("SELECT count(*) FROM animals", 2),
        ("SELECT count(*) FROM dogs WHERE breed = 'collie'", 1),
    ];
    for (sql, count) in checks {
        assert_eq!(H::scalar(original.pool(), sql).await, *count, "{sql}");
    }
    // The sequence of a table in another schema moved too.
    H::exec(
        original.pool(),
        "INSERT INTO inventory.items (name) VALUES ('washer')",
    )
    .await;
    assert_eq!(
        H::scalar(original.pool(), "SELECT max(id)::int8 FROM inventory.items").await,
        9
    );

    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("everything.json");
    assert_eq!(original.dump(&[], &dump).await.unwrap(), 9);
    let written = std::fs::read_to_string(&dump).unwrap();
    assert!(written.contains("\"inventory.items\""), "{written}");
    assert!(!written.contains("readings_2024"), "{written}");
    let copy = library(backend).await;
    copy.load(&Fixtures::files([&dump])).await.unwrap();
    for (sql, count) in checks {
        let count = if sql.contains("inventory.items") {
            3
        } else {
            *count
        };
        assert_eq!(
            H::scalar(copy.pool(), sql).await,
            count,
            "loaded back: {sql}"
        );
    }
}

/// A JSON number is never routed through a float: into `numeric` (text on SQLite), inside JSON,
/// beyond `i64` and beyond `f64`'s range.
async fn json_numbers_keep_every_digit<H: Harness>(backend: H) {
    let db = library(backend).await;
    db.load(&Fixtures::files(["kinds.json"])).await.unwrap();
    let checks: &[&'static str] = match H::KEY {
        "postgres" => &[
            "SELECT count(*) FROM kinds WHERE id = 1 \
             AND exact = 123456789012345678901234567890.123456789 \
             AND doc->>'big' = '123456789012345678901234567890.123456789' \
             AND doc->>'int' = '12345678901234567890123' \
             AND (doc->>'near')::float8 = 0.30000000000000004::float8 AND f = 0.1::float8",
            "SELECT count(*) FROM kinds WHERE id = 2 AND exact = 1e400 \
             AND doc->>1 = '100000000000000000000000000001' AND f = 1e-5::float8",
            "SELECT count(*) FROM kinds WHERE id = 3 \
             AND exact = -0.000000000000000000000000000001 AND doc IS NULL \
             AND f = 0.30000000000000004::float8",
        ],
        _ => &[
            "SELECT count(*) FROM kinds WHERE id = 1 \
             AND exact = '123456789012345678901234567890.123456789' \
             AND instr(doc, '123456789012345678901234567890.123456789') > 0 \
             AND instr(doc, '12345678901234567890123') > 0 AND f = 0.1",
            "SELECT count(*) FROM kinds WHERE id = 2 AND exact = '1e400' \
             AND instr(doc, '100000000000000000000000000001') > 0 AND f = 1e-5",
            // Not written as a float writes itself: the text as written.
            "SELECT count(*) FROM kinds WHERE id = 3 \
             AND CAST(exact AS REAL) = -1e-30 AND doc IS NULL AND f = 0.30000000000000004",
        ],
    };
    for sql in checks {
        assert_eq!(H::scalar(db.pool(), sql).await, 1, "{sql}");
    }
}

/// A JSON array into a PostgreSQL array column (SQLite has none): elements quoted as
/// PostgreSQL's array literal needs, NULLs kept, the text `"NULL"` kept as text.
async fn arrays_load_into_array_columns<H: Harness>(backend: H) {
    if H::KEY != "postgres" {
        return;
    }
    let db = library(backend).await;
    db.load(&Fixtures::files(["kinds_arrays.json"]))
        .await
        .unwrap();
    for sql in [
        "SELECT count(*) FROM kinds WHERE id = 1 AND nums = '{1,2,NULL}'::int[] \
         AND words[1] = 'a\"b' AND words[2] = 'c,d' AND words[3] = 'e\\f' \
         AND words[4] IS NULL AND words[5] = '{g}'",
        "SELECT count(*) FROM kinds WHERE id = 2 AND cardinality(nums) = 0 \
         AND words[1] = 'NULL'",
    ] {
        assert_eq!(H::scalar(db.pool(), sql).await, 1, "{sql}");
    }
}

/// Every type testdb reads comes back from a dump, value for value: exact numerics, JSON
/// scalars and documents, arrays, binary data, infinities.
async fn every_type_survives_a_dump<H: Harness>(backend: H) {
    let original = library(backend.clone()).await;
    let (insert, checks): (&'static str, &[&'static str]) = match H::KEY {
        "postgres" => (
            "INSERT INTO kinds (id, exact, doc, nums, words, data, f, label) VALUES \
             (1, 123456789012345678901234567890.123456789, \
              '{\"big\": 123456789012345678901234567890.123456789}', '{1,NULL,3}', \
              '{\"a\\\"b\",\"c,d\",NULL}', '\\x00ff10', 'Infinity', 'x'), \
             (2, NULL, 'true', '{}', '{}', '', '-Infinity', NULL), \
             (3, 1.50, '12.50', NULL, '{{a,b},{c,d}}', NULL, 'NaN', ''), \
             (4, -1e-30, '[1, \"two\", null]', NULL, NULL, '\\x5c6e', 1e308, 'tab\there')",
            &[
                "SELECT count(*) FROM kinds WHERE id = 1 \
                 AND exact = 123456789012345678901234567890.123456789 \
                 AND doc->>'big' = '123456789012345678901234567890.123456789' \
                 AND nums = '{1,NULL,3}'::int[] AND words[1] = 'a\"b' \
                 AND data = '\\x00ff10'::bytea AND f = 'Infinity'::float8",
                "SELECT count(*) FROM kinds WHERE id = 2 AND doc = 'true'::jsonb \
                 AND data = ''::bytea AND f = '-Infinity'::float8 AND label IS NULL",
                "SELECT count(*) FROM kinds WHERE id = 3 AND exact::text = '1.50' \
                 AND doc = '12.50'::jsonb AND words[2][1] = 'c' AND f = 'NaN'::float8 \
                 AND label = ''",
                "SELECT count(*) FROM kinds WHERE id = 4 AND doc = '[1, \"two\", null]'::jsonb \
                 AND data = '\\x5c6e'::bytea AND f = 1e308::float8",
            ],
        ),
        _ => (
            "INSERT INTO kinds (id, exact, doc, data, f, label) VALUES \
             (1, '123456789012345678901234567890.123456789', '{\"a\": 1}', x'00ff10', 9e999, 'x'), \
             (2, NULL, NULL, x'', -9e999, ''), \
             (3, '1', 'null', x'5c78', 1.5, NULL)",
            &[
                "SELECT count(*) FROM kinds WHERE id = 1 \
                 AND exact = '123456789012345678901234567890.123456789' \
                 AND doc = '{\"a\": 1}' AND data = x'00ff10' AND typeof(data) = 'blob' \
                 AND f = 9e999",
                "SELECT count(*) FROM kinds WHERE id = 2 AND data = x'' \
                 AND typeof(data) = 'blob' AND f = -9e999 AND typeof(f) = 'real' AND label = ''",
                "SELECT count(*) FROM kinds WHERE id = 3 AND exact = '1' AND doc = 'null' \
                 AND data = x'5c78' AND f = 1.5 AND label IS NULL",
            ],
        ),
    };
    H::exec(original.pool(), insert).await;
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("kinds.json");
    assert_eq!(
        original.dump(&["kinds"], &dump).await.unwrap(),
        checks.len()
    );
    let copy = library(backend).await;
    copy.load(&Fixtures::files([&dump])).await.unwrap();
    for sql in checks {
        assert_eq!(H::scalar(original.pool(), sql).await, 1, "original: {sql}");
        assert_eq!(H::scalar(copy.pool(), sql).await, 1, "loaded back: {sql}");
    }
    let again = dir.path().join("again.json");
    copy.dump(&["kinds"], &again).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&dump).unwrap(),
        std::fs::read_to_string(&again).unwrap(),
        "dump → load → dump gives the same file"
    );
}

/// What the README says to do with `manage.py sqlmigrate`'s output: its own `BEGIN`/`COMMIT`,
/// under sqlx's `-- no-transaction`.
async fn django_sqlmigrate_output_runs_as_a_migration<H: Harness>(backend: H) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("0001_shop.sql"),
        "-- no-transaction\nBEGIN;\n--\n-- Create model Order\n--\n\
         CREATE TABLE shop_order (id integer NOT NULL PRIMARY KEY, code varchar(40) NOT NULL);\n\
         COMMIT;\n",
    )
    .unwrap();
    let db = TestDatabase::builder(backend)
        .migrations(dir.path().to_path_buf())
        .create()
        .await
        .expect("sqlmigrate's output migrates");
    H::exec(
        db.pool(),
        "INSERT INTO shop_order (id, code) VALUES (1, 'a')",
    )
    .await;
    assert_eq!(
        H::scalar(db.pool(), "SELECT count(*) FROM shop_order").await,
        1
    );
}

async fn a_dump_loads_back_to_the_same_rows<H: Harness>(backend: H) {
    let original = library(backend.clone()).await;
    original
        .load(&Fixtures::files([
            "authors.csv",
            "books.csv",
            "library.json",
            "staff.yaml",
            "teams.json",
            "django.json",
        ]))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("everything.json");
    let written = original.dump(&[], &dump).await.unwrap();
    assert_eq!(written, 21);

    let copy = library(backend).await;
    let loaded = copy
        .load(&Fixtures::files([dump.display().to_string()]))
        .await
        .unwrap();
    assert_eq!(loaded.rows, 21);
    let again = dir.path().join("again.json");
    copy.dump(&[], &again).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&dump).unwrap(),
        std::fs::read_to_string(&again).unwrap(),
        "dump → load → dump gives the same file"
    );
    // Types survive too: text that looks like a number, exact decimals, JSON, dates, booleans.
    for sql in [
        "SELECT count(*) FROM books WHERE id = 10 AND price = 12.5",
        "SELECT count(*) FROM authors WHERE born = '1929-10-21' AND active",
        "SELECT count(*) FROM authors WHERE id = 2 AND NOT active",
        "SELECT count(*) FROM books WHERE id = 20 AND tags IS NOT NULL",
    ] {
        assert_eq!(H::scalar(copy.pool(), sql).await, 1, "{sql}");
    }
}

async fn json_nulls_and_strings_survive_a_dump<H: Harness>(backend: H) {
    let original = library(backend.clone()).await;
    H::exec(
        original.pool(),
        "INSERT INTO authors (id, name) VALUES (50, 'j')",
    )
    .await;
    // A JSON `null` and a JSON string in a `jsonb` column (PostgreSQL), text on SQLite.
    H::exec(
        original.pool(),
        "INSERT INTO books (id, author_id, title, tags) VALUES (51, 50, 'a', 'null'), \
         (52, 50, 'b', '\"str\"'), (53, 50, 'c', NULL)",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("books.json");
    original.dump(&["authors", "books"], &dump).await.unwrap();
    let copy = library(backend).await;
    copy.load(&Fixtures::files([&dump])).await.unwrap();
    for sql in [
        "SELECT count(*) FROM books WHERE id = 51 AND tags IS NOT NULL",
        "SELECT count(*) FROM books WHERE id = 52 AND CAST(tags AS TEXT) = '\"str\"'",
        "SELECT count(*) FROM books WHERE id = 53 AND tags IS NULL",
    ] {
        assert_eq!(H::scalar(copy.pool(), sql).await, 1, "{sql}");
    }
}

async fn generated_columns_are_left_out_of_dumps<H: Harness>(backend: H) {
    let original = library(backend.clone()).await;
    H::exec(
        original.pool(),
        "INSERT INTO priced (id, price) VALUES (1, 2.5), (2, 4)",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("priced.json");
    assert_eq!(original.dump(&["priced"], &dump).await.unwrap(), 2);
    let written = std::fs::read_to_string(&dump).unwrap();
    assert!(!written.contains("doubled"), "{written}");
    let copy = library(backend).await;
    copy.load(&Fixtures::files([&dump])).await.unwrap();
    assert_eq!(
        H::scalar(
            copy.pool(),
            "SELECT count(*) FROM priced WHERE (id = 1 AND doubled = 5) OR (id = 2 AND doubled = 8)"
        )
        .await,
        2
    );
}

async fn a_dump_of_a_missing_table_says_so<H: Harness>(backend: H) {
    let db = library(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let err = db
        .dump(&["no_such_table"], dir.path().join("out.json"))
        .await
        .unwrap_err();
    let Error::Fixture { table, message, .. } = &err else {
        panic!("expected a fixture error, got {err:?}");
    };
    assert_eq!(table.as_deref(), Some("no_such_table"), "{err}");
    let message = message.to_lowercase();
    assert!(
        message.contains("does not exist")
            || message.contains("doesn't exist")
            || message.contains("no such table"),
        "{err}"
    );
    assert!(!dir.path().join("out.json").exists(), "nothing written");
}

async fn a_csv_dump_loads_back_to_the_same_rows<H: Harness>(backend: H) {
    let original = library(backend.clone()).await;
    original
        .load(&Fixtures::files(["authors.csv"]))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("people.csv");
    assert_eq!(original.dump(&["authors"], &csv).await.unwrap(), 3);

    let copy = library(backend).await;
    copy.load(&Fixtures::new().csv(csv.display().to_string(), "authors"))
        .await
        .unwrap();
    let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
    original.dump(&["authors"], &a).await.unwrap();
    copy.dump(&["authors"], &b).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&a).unwrap(),
        std::fs::read_to_string(&b).unwrap()
    );

    // An empty string cannot be told from NULL in CSV: refused, not silently changed.
    H::exec(
        original.pool(),
        "INSERT INTO authors (id, name) VALUES (9, '')",
    )
    .await;
    let err = original.dump(&["authors"], &csv).await.unwrap_err();
    assert!(err.to_string().contains("empty string"), "{err}");
}

/// Fixtures loaded by a suite's setup: once, inside the suite transaction; every test sees them.
macro_rules! library_suite {
    ($name:ident, $backend:ty, $conn:ty) => {
        static $name: testdb::Suite<$backend> = testdb::Suite::new("library", || {
            let backend = <$backend as Harness>::backend().ok_or_else(|| Error::NotConfigured {
                backend: <$backend as testdb::backend::Driver>::NAME,
                hint: "set TESTDB_POSTGRES_URL".into(),
            })?;
            let schema = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures_schema")
                .join(<$backend as Harness>::KEY);
            Ok(
                testdb::Setup::new(TestDatabase::builder(backend).migrations(schema)).data(
                    async |conn: &mut $conn| {
                        let fixtures = Fixtures::files(["authors", "books", "teams.json"]);
                        testdb::load_fixtures::<$backend>(conn, &fixtures).await?;
                        Ok::<_, Error>(())
                    },
                ),
            )
        });
    };
}
library_suite!(
    SQLITE_LIBRARY,
    testdb_sqlite::Sqlite,
    sqlx::SqliteConnection
);
library_suite!(
    POSTGRES_LIBRARY,
    testdb_postgres::Postgres,
    sqlx::PgConnection
);

trait LibrarySuite: Harness {
    fn suite() -> &'static testdb::Suite<Self>;
}
impl LibrarySuite for testdb_sqlite::Sqlite {
    fn suite() -> &'static testdb::Suite<Self> {
        &SQLITE_LIBRARY
    }
}
impl LibrarySuite for testdb_postgres::Postgres {
    fn suite() -> &'static testdb::Suite<Self> {
        &POSTGRES_LIBRARY
    }
}

on_both!(a_suite_loads_fixtures_once_and_every_test_sees_them);

async fn a_suite_loads_fixtures_once_and_every_test_sees_them<H: LibrarySuite>(_: H) {
    type Conn<H> = <<H as testdb::backend::Driver>::Database as sqlx::Database>::Connection;
    for _ in 0..2 {
        H::suite()
            .run(async |conn: &mut Conn<H>, ()| {
                assert_eq!(H::scalar_on(conn, "SELECT count(*) FROM books").await, 3);
                assert_eq!(H::scalar_on(conn, "SELECT count(*) FROM players").await, 2);
                H::try_exec_on(conn, "DELETE FROM books").await?;
                Ok::<_, sqlx::Error>(())
            })
            .await
            .unwrap();
    }
}

on_both!(large_tables_load_in_chunks_and_errors_still_name_the_row);

async fn large_tables_load_in_chunks_and_errors_still_name_the_row<H: Harness>(backend: H) {
    let db = library(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let document = |orphan: Option<usize>, books_first: bool| {
        let authors: Vec<String> = (1..=1200)
            .map(|id| format!(r#"{{"id": {id}, "name": "author {id}"}}"#))
            .collect();
        let books: Vec<String> = (1..=1200)
            .map(|id| {
                let author = if Some(id) == orphan { 999_999 } else { id };
                format!(r#"{{"id": {id}, "author_id": {author}, "title": "book {id}"}}"#)
            })
            .collect();
        let (authors, books) = (authors.join(","), books.join(","));
        if books_first {
            format!(r#"{{"books": [{books}], "authors": [{authors}]}}"#)
        } else {
            format!(r#"{{"authors": [{authors}], "books": [{books}]}}"#)
        }
    };
    for books_first in [false, true] {
        let file = dir.path().join(format!("big_{books_first}.json"));
        std::fs::write(&file, document(None, books_first)).unwrap();
        let loaded = db
            .load(&Fixtures::files([file.display().to_string()]))
            .await
            .unwrap();
        assert_eq!(loaded.rows, 2400, "books first: {books_first}");
        assert_eq!(loaded.tables, ["authors", "books"]);
        H::exec(db.pool(), "DELETE FROM books").await;
        H::exec(db.pool(), "DELETE FROM authors").await;
    }
    let file = dir.path().join("orphan.json");
    std::fs::write(&file, document(Some(1101), false)).unwrap();
    let err = db
        .load(&Fixtures::files([file.display().to_string()]))
        .await
        .expect_err("book 1101 has no author");
    let Error::Fixture { table, row, .. } = &err else {
        panic!("expected a fixture error, got {err:?}");
    };
    assert_eq!(table.as_deref(), Some("books"), "{err}");
    assert_eq!(row.as_deref(), Some("row 1100"), "{err}");
    assert_eq!(
        H::scalar(db.pool(), "SELECT count(*) FROM authors").await,
        0
    );
}

/// Django's SQLite backend stores a fixture's values in its own forms, and its ORM's queries
/// send values in those forms: the values below are written down from Django's rules
/// (`DatabaseOperations.adapt_datetimefield_value` and friends, and Python's `str()`), not
/// computed by testdb.
#[tokio::test]
async fn django_values_are_stored_on_sqlite_as_django_stores_them() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("migrations");
    std::fs::create_dir(&schema).unwrap();
    // The column types Django's SQLite backend declares.
    std::fs::write(
        schema.join("0001_shop.sql"),
        "CREATE TABLE shop_order (id integer NOT NULL PRIMARY KEY AUTOINCREMENT, \
         placed datetime NOT NULL, day date NOT NULL, opens time NOT NULL, \
         price decimal NOT NULL, paid bool NOT NULL, code varchar(40) NOT NULL, note text NULL);",
    )
    .unwrap();
    let fixture = dir.path().join("orders.json");
    std::fs::write(
        &fixture,
        r#"[
  {"model": "shop.order", "pk": 1, "fields": {"placed": "2007-01-01T00:00:00Z",
   "day": "2007-01-01", "opens": "08:15", "price": "1.98", "paid": true,
   "code": 0.30000000000000004, "note": 1e16}},
  {"model": "shop.order", "pk": 2, "fields": {"placed": "2007-01-01T01:30:00.5+02:00",
   "day": "2007-01-02", "opens": "23:59:59.25", "price": "10.00", "paid": false,
   "code": "x", "note": null}}
]"#,
    )
    .unwrap();
    let db = TestDatabase::builder(testdb_sqlite::Sqlite::new().directory(dir.path().join("db")))
        .migrations(schema.clone())
        .create()
        .await
        .unwrap();
    db.load(&Fixtures::files([&fixture])).await.unwrap();
    type Stored = (
        i64,
        String,
        String,
        String,
        String,
        i64,
        String,
        Option<String>,
    );
    let rows: Vec<Stored> = sqlx::query_as(
        "SELECT id, placed, day, opens, CAST(price AS TEXT), paid, code, note \
         FROM shop_order ORDER BY id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let expected: Vec<Stored> = vec![
        (
            1,
            "2007-01-01 00:00:00".into(),
            "2007-01-01".into(),
            "08:15:00".into(),
            "1.98".into(),
            1,
            "0.30000000000000004".into(),
            Some("1e+16".into()),
        ),
        (
            2,
            "2006-12-31 23:30:00.500000".into(),
            "2007-01-02".into(),
            "23:59:59.250000".into(),
            "10".into(),
            0,
            "x".into(),
            None,
        ),
    ];
    assert_eq!(rows, expected);
    // Found the way Django's ORM asks for it.
    let found: i64 = sqlx::query_scalar("SELECT count(*) FROM shop_order WHERE placed = ?")
        .bind("2007-01-01 00:00:00")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(found, 1);
}

on_both!(django_objects_load_in_runs_whatever_their_order);

/// Django's objects reach the loader a run at a time (and on SQLite go in as they come, their
/// keys checked at the end, as Django's `loaddata` does): children long before their parents
/// load, and a broken key far into the file still names its object, loading nothing.
async fn django_objects_load_in_runs_whatever_their_order<H: Harness>(backend: H) {
    let db = library(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let document = |orphan: Option<usize>| {
        // 2,500 books first, their authors after: more objects than one run holds.
        let books = (1..=2500).map(|id| {
            let author = if Some(id) == orphan { 999_999 } else { id };
            format!(
                r#"{{"model": "library.book", "pk": {id}, "fields": {{"title": "book {id}", "author": {author}}}}}"#
            )
        });
        let authors = (1..=2500).map(|id| {
            format!(
                r#"{{"model": "library.author", "pk": {id}, "fields": {{"name": "author {id}"}}}}"#
            )
        });
        format!("[{}]", books.chain(authors).collect::<Vec<_>>().join(",\n"))
    };
    let file = dir.path().join("books_first.json");
    std::fs::write(&file, document(None)).unwrap();
    let loaded = db.load(&Fixtures::files([&file])).await.unwrap();
    assert_eq!(loaded.rows, 5000);
    assert_eq!(
        H::scalar(
            db.pool(),
            "SELECT count(*) FROM library_book b JOIN library_author a ON a.id = b.author_id"
        )
        .await,
        2500
    );
    H::exec(db.pool(), "DELETE FROM library_book").await;
    H::exec(db.pool(), "DELETE FROM library_author").await;

    let file = dir.path().join("orphan.json");
    std::fs::write(&file, document(Some(2222))).unwrap();
    let err = db
        .load(&Fixtures::files([&file]))
        .await
        .expect_err("book 2222 has no author");
    let Error::Fixture {
        table, row, column, ..
    } = &err
    else {
        panic!("expected a fixture error, got {err:?}");
    };
    assert_eq!(table.as_deref(), Some("library_book"), "{err}");
    assert_eq!(
        row.as_deref(),
        Some("library.book pk 2222, object 2221 of the file"),
        "{err}"
    );
    assert_eq!(column.as_deref(), Some("author_id"), "{err}");
    for sql in [
        "SELECT count(*) FROM library_book",
        "SELECT count(*) FROM library_author",
    ] {
        assert_eq!(H::scalar(db.pool(), sql).await, 0, "{sql}: nothing stays");
    }

    // Of a table's two keys, the broken one is named.
    let file = dir.path().join("second_key.json");
    std::fs::write(
        &file,
        r#"[{"model": "library.book_tags", "pk": 1, "fields": {"book": 1, "tag": 99}},
            {"model": "library.tag", "pk": 1, "fields": {"label": "classic"}},
            {"model": "library.author", "pk": 1, "fields": {"name": "Frank Herbert"}},
            {"model": "library.book", "pk": 1, "fields": {"title": "Dune", "author": 1}}]"#,
    )
    .unwrap();
    let err = db
        .load(&Fixtures::files([&file]))
        .await
        .expect_err("tag 99 does not exist");
    let Error::Fixture {
        table, row, column, ..
    } = &err
    else {
        panic!("expected a fixture error, got {err:?}");
    };
    assert_eq!(table.as_deref(), Some("library_book_tags"), "{err}");
    assert_eq!(column.as_deref(), Some("tag_id"), "{err}");
    assert_eq!(
        row.as_deref(),
        Some("library.book_tags pk 1, object 0 of the file"),
        "{err}"
    );
}

/// Inside a caller's transaction that already holds a broken (deferred) key of its own, a valid
/// Django load is not blamed for it: only the tables it loaded are looked at.
#[tokio::test]
async fn a_load_in_a_transaction_is_not_blamed_for_the_callers_broken_keys() {
    use sqlx::Connection as _;
    let db = library(testdb_sqlite::Sqlite::new()).await;
    let mut conn = db.connect().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("PRAGMA defer_foreign_keys = ON")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("INSERT INTO books (id, author_id, title) VALUES (1, 999, 'orphan')")
        .execute(&mut *tx)
        .await
        .unwrap();
    let loaded =
        testdb::load_fixtures::<testdb_sqlite::Sqlite>(&mut tx, &Fixtures::files(["django.json"]))
            .await
            .expect("the load's own rows are sound");
    assert_eq!(loaded.rows, 6);
    // The caller's orphan is still the caller's: its commit fails on it.
    assert!(
        tx.commit().await.is_err(),
        "the orphan book breaks the commit"
    );
}

/// A load that fails inside the caller's transaction leaves the caller's keys as they were:
/// checked at once, as before the load.
#[tokio::test]
async fn a_failed_load_in_a_transaction_leaves_the_keys_checked_at_once() {
    use sqlx::Connection as _;
    let db = library(testdb_sqlite::Sqlite::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orphan.json");
    std::fs::write(
        &file,
        r#"[{"model": "library.book", "pk": 1, "fields": {"title": "Dune", "author": 404}}]"#,
    )
    .unwrap();
    let mut conn = db.connect().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    testdb::load_fixtures::<testdb_sqlite::Sqlite>(&mut tx, &Fixtures::files([&file]))
        .await
        .expect_err("author 404 does not exist");
    let orphan = sqlx::query("INSERT INTO books (id, author_id, title) VALUES (1, 999, 'orphan')")
        .execute(&mut *tx)
        .await;
    assert!(
        orphan.is_err(),
        "the caller's own orphan is refused at once, not deferred"
    );
}
