//! The attribute's arguments: `#[sqlx::test]`'s keys, where they mean the same, and testdb's
//! `isolation` and `suite`.

use proc_macro2::Span;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Lit, LitStr, Meta, Token};

/// What the test's database is built from, and how the test is isolated.
pub(crate) struct Args {
    pub(crate) migrations: Migrations,
    pub(crate) fixtures: Vec<Fixture>,
    /// The `Isolation` variant, named.
    pub(crate) isolation: Option<syn::Ident>,
    pub(crate) suite: Option<syn::Path>,
    /// Where the first key was, for errors about keys that do not go with the test.
    pub(crate) first: Option<Span>,
}

pub(crate) enum Migrations {
    /// `migrations/` beside `Cargo.toml`, if it exists (as `#[sqlx::test]` infers).
    Inferred,
    /// `migrations = "dir"`, relative to `Cargo.toml`'s directory.
    Directory(LitStr),
    /// `migrator = "path::TO_MIGRATOR"`.
    Migrator(syn::Path),
    /// `migrations = false`.
    Disabled,
}

/// A fixture file, relative to the test's source file (as `include_str!` reads it).
pub(crate) struct Fixture {
    pub(crate) path: String,
    pub(crate) span: Span,
}

const KEYS: &str = "expected `migrations = \"<dir>\" | false`, `migrator = \"<path>\"`, \
                    `fixtures(\"<name>\", …)`, `fixtures(path = \"<dir>\", scripts(\"<name>\", …))`, \
                    `isolation = \"savepoint\" | \"transaction\" | \"committed\" | \"fresh_database\"` \
                    or `suite = <SUITE>`";

pub(crate) fn parse(tokens: proc_macro2::TokenStream) -> syn::Result<Args> {
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(tokens)?;
    let mut args = Args {
        migrations: Migrations::Inferred,
        fixtures: Vec::new(),
        isolation: None,
        suite: None,
        first: None,
    };
    for meta in metas {
        args.first
            .get_or_insert_with(|| syn::spanned::Spanned::span(&meta));
        match meta {
            Meta::List(list) if list.path.is_ident("fixtures") => {
                args.fixtures.extend(fixtures(&list)?);
            }
            Meta::NameValue(pair) if pair.path.is_ident("migrations") => {
                once(&args.migrations, &pair.path)?;
                args.migrations = match literal(&pair.value) {
                    Some(Lit::Bool(flag)) if !flag.value => Migrations::Disabled,
                    Some(Lit::Bool(flag)) => {
                        return Err(syn::Error::new_spanned(
                            flag,
                            "`migrations = true` is redundant: migrations/ is used if it exists",
                        ));
                    }
                    Some(Lit::Str(dir)) => Migrations::Directory(dir),
                    _ => {
                        return Err(syn::Error::new_spanned(
                            pair.value,
                            "expected a directory (\"migrations\") or `false`",
                        ));
                    }
                };
            }
            Meta::NameValue(pair) if pair.path.is_ident("migrator") => {
                once(&args.migrations, &pair.path)?;
                let Some(Lit::Str(path)) = literal(&pair.value) else {
                    return Err(syn::Error::new_spanned(
                        pair.value,
                        "expected the migrator's path as a string: \"crate::MIGRATOR\"",
                    ));
                };
                args.migrations = Migrations::Migrator(path.parse()?);
            }
            Meta::NameValue(pair)
                if pair.path.is_ident("isolation") && args.isolation.is_some() =>
            {
                return Err(syn::Error::new_spanned(
                    pair.path,
                    "`isolation` is given twice",
                ));
            }
            Meta::NameValue(pair) if pair.path.is_ident("suite") && args.suite.is_some() => {
                return Err(syn::Error::new_spanned(pair.path, "`suite` is given twice"));
            }
            Meta::NameValue(pair) if pair.path.is_ident("isolation") => {
                let Some(Lit::Str(name)) = literal(&pair.value) else {
                    return Err(syn::Error::new_spanned(pair.value, KEYS));
                };
                let variant = match name.value().as_str() {
                    "savepoint" => "Savepoint",
                    "transaction" => "Transaction",
                    "committed" => "Committed",
                    "fresh_database" | "fresh" => "FreshDatabase",
                    _ => {
                        return Err(syn::Error::new_spanned(
                            name,
                            "unknown isolation: expected \"savepoint\", \"transaction\", \
                             \"committed\" or \"fresh_database\"",
                        ));
                    }
                };
                args.isolation = Some(syn::Ident::new(variant, name.span()));
            }
            Meta::NameValue(pair) if pair.path.is_ident("suite") => {
                let Expr::Path(path) = pair.value else {
                    return Err(syn::Error::new_spanned(
                        pair.value,
                        "expected the path of a `static` `testdb::Suite`",
                    ));
                };
                args.suite = Some(path.path);
            }
            other => return Err(syn::Error::new_spanned(other, KEYS)),
        }
    }
    if let Some(suite) = &args.suite {
        let given = !matches!(args.migrations, Migrations::Inferred)
            || !args.fixtures.is_empty()
            || args.isolation.is_some();
        if given {
            return Err(syn::Error::new_spanned(
                suite,
                "a suite has its own migrations, fixtures and isolation (in its `Setup`): \
                 give `suite` alone",
            ));
        }
    }
    Ok(args)
}

fn once(migrations: &Migrations, path: &syn::Path) -> syn::Result<()> {
    if matches!(migrations, Migrations::Inferred) {
        Ok(())
    } else {
        Err(syn::Error::new_spanned(
            path,
            "only one `migrations` or `migrator` may be given",
        ))
    }
}

fn literal(expr: &Expr) -> Option<Lit> {
    match expr {
        Expr::Lit(ExprLit { lit, .. }) => Some(lit.clone()),
        Expr::Group(group) => literal(&group.expr),
        _ => None,
    }
}

/// `fixtures("a", "b")` (in `fixtures/` beside the test file, `.sql` added where there is no
/// extension), `fixtures("dir/a.sql")` (beside the test file), or
/// `fixtures(path = "dir", scripts("a", "b"))`: as `#[sqlx::test]` reads them.
fn fixtures(list: &syn::MetaList) -> syn::Result<Vec<Fixture>> {
    let mut dir: Option<LitStr> = None;
    let mut scripts: Vec<LitStr> = Vec::new();
    let nested = list.parse_nested_meta(|meta| {
        if meta.path.is_ident("path") {
            if !scripts.is_empty() || dir.is_some() {
                return Err(meta.error("`path` comes first, and once"));
            }
            dir = Some(meta.value()?.parse()?);
            Ok(())
        } else if meta.path.is_ident("scripts") {
            if dir.is_none() {
                return Err(meta.error("`scripts(…)` goes with `path = \"<dir>\"`, after it"));
            }
            let content;
            syn::parenthesized!(content in meta.input);
            scripts.extend(Punctuated::<LitStr, Token![,]>::parse_terminated(&content)?);
            Ok(())
        } else {
            Err(meta.error("expected `path = \"<dir>\"` or `scripts(\"<name>\", …)`"))
        }
    });
    if nested.is_ok()
        && let Some(dir) = dir
    {
        return Ok(scripts
            .iter()
            .map(|script| Fixture {
                path: format!("{}/{}", dir.value(), with_sql(&script.value())),
                span: script.span(),
            })
            .collect());
    }
    let names = list.parse_args_with(Punctuated::<LitStr, Token![,]>::parse_terminated)?;
    Ok(names
        .iter()
        .map(|name| {
            let value = name.value();
            // A name with a directory in it is a path from the test file; a bare name is in
            // `fixtures/`.
            let path = if std::path::Path::new(&value).components().count() > 1 {
                value
            } else {
                format!("fixtures/{}", with_sql(&value))
            };
            Fixture {
                path,
                span: name.span(),
            }
        })
        .collect())
}

fn with_sql(name: &str) -> String {
    if std::path::Path::new(name).extension().is_some() {
        name.to_string()
    } else {
        format!("{name}.sql")
    }
}
