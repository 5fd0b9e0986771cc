//! What `#[testdb::test]` expands to: the test function as written, inside a `#[test]` of the
//! same name that runs it through `testdb::__private` (see `src/attribute.rs` in `testdb`).

use std::path::{Path, PathBuf};

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, ReturnType, Type};

use crate::args::{self, Args, Migrations};

pub(crate) fn test(
    args: proc_macro::TokenStream,
    item: proc_macro::TokenStream,
    krate: &[&str],
) -> proc_macro::TokenStream {
    // The test file's directory, which `fixtures(…)` names files from (as `include_str!` does).
    let here = proc_macro::Span::call_site()
        .local_file()
        .map(|file| std::env::current_dir().map_or(file.clone(), |cwd| cwd.join(&file)))
        .and_then(|file| file.parent().map(Path::to_path_buf));
    match expand(args.into(), item.into(), krate, here) {
        Ok(tokens) => tokens.into(),
        Err(err) => err.to_compile_error().into(),
    }
}

fn expand(
    args: TokenStream,
    item: TokenStream,
    krate: &[&str],
    here: Option<PathBuf>,
) -> syn::Result<TokenStream> {
    let function: ItemFn = syn::parse2(item)?;
    let args = args::parse(args)?;
    let segments = krate.iter().map(|name| format_ident!("{name}"));
    let k = quote!(#(::#segments)*);
    let signature = &function.sig;
    if !signature.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &signature.generics,
            "a test cannot be generic",
        ));
    }
    let name = &signature.ident;
    let output = &signature.output;
    let attrs = &function.attrs;
    let body = &function.block;
    let mut inputs = Vec::new();
    for input in &signature.inputs {
        match input {
            FnArg::Typed(typed) => inputs.push(ungrouped(&typed.ty)),
            FnArg::Receiver(receiver) => {
                return Err(syn::Error::new_spanned(receiver, "a test takes no `self`"));
            }
        }
    }
    let returned: Type = match output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => (**ty).clone(),
    };

    if inputs.is_empty() {
        if let Some(first) = args.first {
            return Err(syn::Error::new(
                first,
                "nothing to set up for a test without arguments: give it a pool, a connection \
                 or options (`pool: PgPool`), or remove the attribute's arguments",
            ));
        }
        let run = if signature.asyncness.is_some() {
            quote! {
                match #k::__private::block_on_test(async move #body) {
                    ::core::result::Result::Ok(returned) => returned,
                    ::core::result::Result::Err(error) => {
                        ::core::panic!("{}", #k::__private::Report(&error))
                    }
                }
            }
        } else {
            quote!(#body)
        };
        return Ok(quote! {
            #(#attrs)*
            #[::core::prelude::v1::test]
            fn #name() #output {
                #run
            }
        });
    }

    let check_return = quote_spanned! {returned.span()=>
        #k::__private::returns::<#returned>();
    };
    // The same checks outside the `#[test]`, which only a test build compiles: a plain build of
    // the file (as `trybuild` makes) reports them too.
    let check_argument = match (&args.suite, inputs.as_slice()) {
        (Some(_), _) | (None, []) => TokenStream::new(),
        (None, [Type::Reference(reference), ..]) => {
            let connection = &reference.elem;
            quote_spanned! {reference.span()=> #k::__private::connection::<#connection, _>(); }
        }
        (None, [one]) => quote_spanned! {one.span()=> #k::__private::argument::<#one, _>(); },
        (None, [first, second, ..]) => {
            quote_spanned! {first.span()=> #k::__private::argument::<(#first, #second), _>(); }
        }
    };
    let outside = quote! {
        #[cfg(not(test))]
        const _: () = {
            #[allow(dead_code)]
            fn checks() {
                #check_return
                #check_argument
            }
        };
    };
    let run = match &args.suite {
        Some(suite) => in_suite(&k, suite, name, &inputs)?,
        None => {
            if let Some(extra) = inputs.get(2) {
                return Err(syn::Error::new_spanned(
                    extra,
                    "a test takes one argument (a pool, a connection) or two (pool options and \
                     connect options); with `suite = …`, the suite's connections and its setup \
                     value",
                ));
            }
            if let Some(isolation) = &args.isolation
                && isolation != "Committed"
                && isolation != "FreshDatabase"
                && !matches!(inputs[0], Type::Reference(_))
            {
                return Err(syn::Error::new_spanned(
                    isolation,
                    "a pool or pooled connection's commits would outlive the test here: give a \
                     test that takes a pool \"committed\" or \"fresh_database\", or take \
                     `&mut` a connection",
                ));
            }
            let spec = spec(&k, &args, name, here.as_deref())?;
            on_database(&k, &spec, name, &inputs)
        }
    };
    // A `#[should_panic]` test must not pass by testdb's failure, and passes only by panicking
    // when skipped (with the text it expects).
    let (skipped, failed) = match should_panic(attrs)? {
        Some(expected) => (
            quote!(
                ::core::panic!("{} (a #[should_panic] test skips by panicking: {})", reason, #expected)
            ),
            quote!(#k::__private::exit_failed(&error)),
        ),
        None => (
            quote! {{
                let _ = reason;
                <#returned as #k::__private::TestReturn>::passed()
            }},
            quote!(::core::panic!("{}", #k::__private::Report(&error))),
        ),
    };
    let signature_inputs = &signature.inputs;
    // A suite names its backend itself.
    let link = match &args.suite {
        Some(_) => TokenStream::new(),
        None => link_backend(krate, &inputs),
    };
    Ok(quote! {
        #link
        #outside
        #(#attrs)*
        #[::core::prelude::v1::test]
        fn #name() #output {
            async fn #name(#signature_inputs) #output #body
            #check_return
            match #run {
                #k::__private::Ran::Returned(returned) => returned,
                #k::__private::Ran::Skipped(reason) => #skipped,
                #k::__private::Ran::Failed(error) => #failed,
            }
        }
    })
}

/// The test on a database of its attribute's making: by connection, or by value (two values as
/// one pair, as `#[sqlx::test]` gives pool and connect options).
fn on_database(
    k: &TokenStream,
    spec: &TokenStream,
    name: &syn::Ident,
    inputs: &[Type],
) -> TokenStream {
    // Spanned at the argument's type: an argument testdb cannot give is reported there.
    let span = inputs
        .first()
        .map_or_else(proc_macro2::Span::call_site, Spanned::span);
    let mut test = name.clone();
    test.set_span(span);
    match inputs {
        [input @ Type::Reference(_)] => quote_spanned! {span=>
            #k::__private::with_connection(
                #spec,
                async |__testdb_connection: #input| #test(__testdb_connection).await,
            )
        },
        [input] => quote_spanned! {span=>
            #k::__private::with_argument::<#input, _, _, _>(#spec, #test)
        },
        [first, second, ..] => quote_spanned! {span=>
            #k::__private::with_argument::<(#first, #second), _, _, _>(
                #spec,
                |(__testdb_first, __testdb_second): (#first, #second)| {
                    #test(__testdb_first, __testdb_second)
                },
            )
        },
        // Tests without arguments are expanded before.
        [] => TokenStream::new(),
    }
}

/// The test in a declared suite: its connections, and its setup value if the test takes it.
fn in_suite(
    k: &TokenStream,
    suite: &syn::Path,
    name: &syn::Ident,
    inputs: &[Type],
) -> syn::Result<TokenStream> {
    Ok(match inputs {
        [connections] => quote! {
            #k::__private::in_suite(&#suite, async |__testdb_connections: #connections, _| {
                #name(__testdb_connections).await
            })
        },
        [connections, data] => quote! {
            #k::__private::in_suite(
                &#suite,
                async |__testdb_connections: #connections, __testdb_data: #data| {
                    #name(__testdb_connections, __testdb_data).await
                },
            )
        },
        _ => {
            return Err(syn::Error::new_spanned(
                &inputs[2],
                "a suite's test takes its connections, and optionally the setup's value",
            ));
        }
    })
}

/// What the test's database is built from.
fn spec(
    k: &TokenStream,
    args: &Args,
    name: &syn::Ident,
    here: Option<&Path>,
) -> syn::Result<TokenStream> {
    let migrations = match &args.migrations {
        Migrations::Inferred => {
            // As `#[sqlx::test]`: `migrations/` beside Cargo.toml, if there is one.
            let inferred = std::env::var_os("CARGO_MANIFEST_DIR")
                .is_some_and(|dir| Path::new(&dir).join("migrations").is_dir());
            if inferred {
                quote!(#k::__private::Schema::Directory(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/migrations"
                )))
            } else {
                quote!(#k::__private::Schema::None)
            }
        }
        Migrations::Directory(dir) => quote! {
            #k::__private::Schema::Directory(concat!(env!("CARGO_MANIFEST_DIR"), "/", #dir))
        },
        Migrations::Migrator(path) => quote! {
            #k::__private::Schema::Migrator(
                &#path,
                concat!(module_path!(), ": ", stringify!(#path)),
            )
        },
        Migrations::Disabled => quote!(#k::__private::Schema::None),
    };
    let mut fixtures = Vec::new();
    let mut present = Vec::new();
    for fixture in &args.fixtures {
        let relative = &fixture.path;
        let absolute = match here {
            Some(dir) => dir.join(relative).display().to_string(),
            None => {
                return Err(syn::Error::new(
                    fixture.span,
                    "cannot tell which directory this test file is in, to find its fixtures",
                ));
            }
        };
        fixtures.push(absolute);
        // A missing file fails the build here, as under `#[sqlx::test]`; a changed one rebuilds.
        present.push(quote_spanned! {fixture.span=>
            const _: &str = include_str!(#relative);
        });
    }
    let isolation = match &args.isolation {
        Some(variant) => quote!(::core::option::Option::Some(#k::Isolation::#variant)),
        None => quote!(::core::option::Option::None),
    };
    Ok(quote! {{
        #(#present)*
        #k::__private::Spec {
            test: concat!(module_path!(), "::", stringify!(#name)),
            schema: #migrations,
            fixtures: &[#(#fixtures),*],
            isolation: #isolation,
        }
    }})
}

/// The text a `#[should_panic]` test's panic must hold (empty if any), if the test has one.
fn should_panic(attrs: &[syn::Attribute]) -> syn::Result<Option<String>> {
    let Some(attr) = attrs
        .iter()
        .find(|attr| attr.path().is_ident("should_panic"))
    else {
        return Ok(None);
    };
    let mut expected = String::new();
    if let syn::Meta::List(_) = attr.meta {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("expected") {
                let text: syn::LitStr = meta.value()?.parse()?;
                expected = text.value();
            }
            Ok(())
        })?;
    } else if let syn::Meta::NameValue(pair) = &attr.meta
        && let syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(text),
            ..
        }) = &pair.value
    {
        expected = text.value();
    }
    Ok(Some(expected))
}

/// Through `testdb::test`, the backend crate that serves the test's argument, named so that it is
/// linked (an unnamed dependency is not, and its impls would not be found): `testdb_postgres` for
/// `PgPool`, `PoolConnection<Postgres>`, `&mut PgConnection`…, `testdb_sqlite` for SQLite's. A
/// type testdb cannot tell by name (an alias) needs the crate named elsewhere in the file, or the
/// backend crate's own `test`.
fn link_backend(krate: &[&str], inputs: &[Type]) -> TokenStream {
    if krate != ["testdb"] {
        return TokenStream::new();
    }
    let mut names = Vec::new();
    for ty in inputs {
        idents(quote!(#ty), &mut names);
    }
    let named = |of: &[&str]| names.iter().any(|name| of.contains(&name.as_str()));
    let mut link = TokenStream::new();
    if named(&[
        "PgPool",
        "PgConnection",
        "PgPoolOptions",
        "PgConnectOptions",
        "Postgres",
    ]) {
        link.extend(quote!(
            const _: () = {
                extern crate testdb_postgres as _;
            };
        ));
    }
    if named(&[
        "SqlitePool",
        "SqliteConnection",
        "SqlitePoolOptions",
        "SqliteConnectOptions",
        "Sqlite",
    ]) {
        link.extend(quote!(
            const _: () = {
                extern crate testdb_sqlite as _;
            };
        ));
    }
    if named(&[
        "MySqlPool",
        "MySqlConnection",
        "MySqlPoolOptions",
        "MySqlConnectOptions",
        "MySql",
    ]) {
        link.extend(quote!(
            const _: () = {
                extern crate testdb_mysql as _;
            };
        ));
    }
    link
}

/// Every identifier in `tokens`.
fn idents(tokens: TokenStream, into: &mut Vec<String>) {
    for tree in tokens {
        match tree {
            proc_macro2::TokenTree::Ident(ident) => into.push(ident.to_string()),
            proc_macro2::TokenTree::Group(group) => idents(group.stream(), into),
            _ => {}
        }
    }
}

/// A type as written, without the invisible group a `macro_rules!` `$t:ty` wraps it in.
fn ungrouped(ty: &Type) -> Type {
    match ty {
        Type::Group(group) => ungrouped(&group.elem),
        Type::Paren(paren) => ungrouped(&paren.elem),
        other => other.clone(),
    }
}
