//! Embeds `migrations/agent/*.sql` (see `migrations/embed.rs`), and lets the
//! root-only tests run when built as root, or ignores them with their
//! reason (see palisade-test-needs).

include!("../migrations/embed.rs");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    palisade_test_needs::build::root_cfg();
    embed_migrations("../migrations/agent")
}
