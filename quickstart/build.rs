//! Lets the root-only tests run when built as root, or ignores them with
//! their reason (see palisade-test-needs).
fn main() {
    palisade_test_needs::build::root_cfg();
}
