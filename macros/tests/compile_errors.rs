//! The attribute's compile errors, each at the place it names: an unknown key, an argument it
//! cannot give, a return type it cannot report, an isolation that does not keep a pool test's
//! meaning.

#[test]
fn errors_point_at_what_is_wrong() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
