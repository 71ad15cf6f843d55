//! Misusing `#[function]` is a compile error that points at the mistake.

#[test]
fn macro_misuse_is_a_compile_error() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
