//! Embeds `migrations/manager/*.sql` (SQLite) and `migrations/postgres/*.sql`
//! (see `migrations/embed.rs`), and lets the store's PostgreSQL tests run
//! when a server is given (see palisade-test-needs).

include!("../migrations/embed.rs");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    palisade_test_needs::build::postgres_cfg();
    embed_migrations_as("../migrations/manager", "migrator", "migrations.rs")?;
    embed_migrations_as(
        "../migrations/postgres",
        "postgres_migrator",
        "postgres_migrations.rs",
    )
}
