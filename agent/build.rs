//! Embeds `migrations/agent/*.sql` (see `migrations/embed.rs`).

include!("../migrations/embed.rs");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    embed_migrations("../migrations/agent")
}
