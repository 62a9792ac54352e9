//! Test support: every store test runs on both backends ([`both_backends!`]),
//! SQLite in a temporary directory and PostgreSQL in a database of its own
//! on the server `PALISADE_TEST_POSTGRES` names (see palisade-test-needs:
//! without one the PostgreSQL variants show as ignored, or fail when
//! `PALISADE_REQUIRE_ROOT=1` says they must run).

use std::path::Path;

use palisade_test_needs::PostgresDatabase;

use super::{Store, StoreLocation, on_pool};

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// An SQLite file.
    Sqlite,
    /// A PostgreSQL database.
    Postgres,
}

/// A test's database, empty until opened, and a directory for its other
/// files.
#[derive(Debug)]
pub(crate) struct TestDb {
    location: StoreLocation,
    dir: tempfile::TempDir,
    // Dropped after the stores the test opened (drops the database).
    _postgres: Option<PostgresDatabase>,
}

impl TestDb {
    /// A fresh database on `backend`.
    pub(crate) fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (location, postgres) = match backend {
            Backend::Sqlite => (StoreLocation::Sqlite(dir.path().join("m.db")), None),
            Backend::Postgres => {
                let db = palisade_test_needs::postgres_database();
                (StoreLocation::Postgres(db.url.clone()), Some(db))
            }
        };
        Self {
            location,
            dir,
            _postgres: postgres,
        }
    }

    /// Where the database is.
    pub(crate) fn location(&self) -> &StoreLocation {
        &self.location
    }

    /// A directory for the test's other files.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Opens the store (again: as after a restart).
    pub(crate) async fn open(&self) -> Store {
        Store::open(&self.location).await.unwrap()
    }
}

impl Store {
    /// Runs `sql` with one integer bound as `$1`, behind the store's back
    /// (to age rows as if they had been stored long ago); returns the rows
    /// changed.
    pub(crate) async fn execute_for_test(&self, sql: &'static str, value: i64) -> u64 {
        on_pool!(self, pool => {
            sqlx::query(sql).bind(value).execute(pool).await.unwrap().rows_affected()
        })
    }

    /// Reads one integer (NULL as `None`) behind the store's back.
    pub(crate) async fn scalar_for_test(&self, sql: &'static str) -> Option<i64> {
        on_pool!(self, pool => {
            sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
        })
    }
}

/// Defines each `async fn name(db) { ... }` as the tests `name::sqlite`
/// and `name::postgres`, the body run with `db` a fresh [`TestDb`] of that
/// backend.
macro_rules! both_backends {
    ($(async fn $name:ident($db:ident) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[allow(unused_imports)]
            use $crate::store::testing::{Backend, TestDb};

            async fn run($db: TestDb) $body

            #[tokio::test]
            async fn sqlite() {
                run(TestDb::new(Backend::Sqlite)).await;
            }

            #[tokio::test]
            #[cfg_attr(
                not(palisade_postgres),
                ignore = "needs PostgreSQL: PALISADE_TEST_POSTGRES=URL (scripts/pg-test-cluster; scripts/test sets it)"
            )]
            async fn postgres() {
                run(TestDb::new(Backend::Postgres)).await;
            }
        }
    )*};
}
pub(crate) use both_backends;
