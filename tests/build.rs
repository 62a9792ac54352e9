//! Lets the root-only tests run when built as root, or ignores them with
//! their reason, and the same for the PostgreSQL ones (see
//! palisade-test-needs).
fn main() {
    palisade_test_needs::build::root_cfg();
    palisade_test_needs::build::postgres_cfg();
}
