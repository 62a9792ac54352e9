//! Embeds `migrations/manager/*.sql` (SQLite) and `migrations/postgres/*.sql`
//! (see `migrations/embed.rs`).

include!("../migrations/embed.rs");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    embed_migrations_as("../migrations/manager", "migrator", "migrations.rs")?;
    embed_migrations_as(
        "../migrations/postgres",
        "postgres_migrator",
        "postgres_migrations.rs",
    )
}
