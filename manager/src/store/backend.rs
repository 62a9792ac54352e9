//! The two databases the store runs on, SQLite (the embedded default) and
//! PostgreSQL (several managers on one database), behind one `Store`.
//!
//! Why neither sqlx's `Any` driver nor generics over `sqlx::Database`:
//! `Any` in sqlx 0.9 refuses SQLite's `BOOLEAN` columns ("Any driver does
//! not support the SQLite type Bool"), cannot set SQLite's journal mode,
//! busy timeout or foreign keys, and copies every bound blob and every row
//! it reads once more, on the batch commit path that must not get slower;
//! generics need a dozen `Encode`/`Decode`/`Executor` bounds restated on
//! every helper. Here the pool is an enum and [`on_pool!`] expands an
//! operation's body once per backend with `Db` naming the database type:
//! each operation's logic is written once, both copies are type-checked
//! natively, SQLite keeps its native driver. Only SQL text that really
//! differs lives twice, in [`Dialect`].
//!
//! Serialisation. SQLite write transactions start with `BEGIN IMMEDIATE`:
//! one writer at a time. PostgreSQL runs READ COMMITTED and every
//! operation that reads and then writes on what it read locks the rows it
//! depends on first ([`Dialect::FOR_UPDATE`] on the agent of a batch, the
//! token being spent, the archive size; [`Dialect::LOCK_REGISTRY`], a
//! transaction advisory lock, around allocating the next agent id). That
//! gives the same guarantees without serialising unrelated agents' batches
//! (which several managers on one database need), and without the retry
//! loop SERIALIZABLE would need: registering an agent issues its
//! certificate inside the transaction, which cannot be run twice.

use sqlx::{PgPool, SqlitePool};

use super::gate::WriteGate;

/// A connection pool of either backend.
#[derive(Debug, Clone)]
pub(crate) enum Pool {
    /// An SQLite file.
    Sqlite(SqlitePool),
    /// A PostgreSQL database.
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the backend's pool and the type
/// `Db` naming its `sqlx::Database` (for `QueryBuilder::<Db>`, `Db::...`
/// dialect constants and [`WriteTx`]). The body is compiled once per
/// backend.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            $crate::store::backend::Pool::Sqlite($pool) => {
                #[allow(unused)]
                type Db = ::sqlx::Sqlite;
                $body
            }
            $crate::store::backend::Pool::Postgres($pool) => {
                #[allow(unused)]
                type Db = ::sqlx::Postgres;
                $body
            }
        }
    };
}
pub(crate) use on_pool;

/// SQL text that differs between the backends, and nothing else.
pub(crate) trait Dialect {
    /// Appended to a SELECT whose rows the transaction goes on to change
    /// on what it read (SQLite's `BEGIN IMMEDIATE` already excludes other
    /// writers).
    const FOR_UPDATE: &'static str;
    /// Taken before allocating the next agent id, if the backend needs it.
    const LOCK_REGISTRY: Option<&'static str>;
    /// Records a revocation once: `(serial, agent_id, revoked_at, reason)`.
    const INSERT_REVOCATION: &'static str;
    /// `last_seen` only moves forward: the larger of two values.
    const GREATEST: &'static str;
    /// Takes `$1` bytes from the archive's size, never below 0.
    const SUBTRACT_ARCHIVE_BYTES: &'static str;
    /// Notifies channel `$1` with payload `$2` when the transaction
    /// commits; `None` where nobody listens (`notify.rs`).
    const NOTIFY: Option<&'static str>;
}

impl Dialect for sqlx::Sqlite {
    const FOR_UPDATE: &'static str = "";
    const LOCK_REGISTRY: Option<&'static str> = None;
    const INSERT_REVOCATION: &'static str = "INSERT OR IGNORE INTO revoked_certificates (serial, agent_id, revoked_at, reason) VALUES ($1, $2, $3, $4)";
    const GREATEST: &'static str = "MAX";
    const SUBTRACT_ARCHIVE_BYTES: &'static str =
        "UPDATE archive_size SET bytes = MAX(bytes - $1, 0) WHERE id = 1";
    const NOTIFY: Option<&'static str> = None;
}

impl Dialect for sqlx::Postgres {
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    // 0x70616c69 is "pali": any fixed key, only this store takes it.
    const LOCK_REGISTRY: Option<&'static str> = Some("SELECT pg_advisory_xact_lock(1885432937)");
    const INSERT_REVOCATION: &'static str = "INSERT INTO revoked_certificates (serial, agent_id, revoked_at, reason) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
    const GREATEST: &'static str = "GREATEST";
    const SUBTRACT_ARCHIVE_BYTES: &'static str =
        "UPDATE archive_size SET bytes = GREATEST(bytes - $1, 0) WHERE id = 1";
    const NOTIFY: Option<&'static str> = Some("SELECT pg_notify($1, $2)");
}

/// A SELECT with [`Dialect::FOR_UPDATE`] appended (the same text at every
/// call, so sqlx's statement cache still hits).
pub(crate) fn for_update<D: Dialect>(select: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!("{select}{}", D::FOR_UPDATE))
}

/// Appends `(v1, v2, ...)`, each value bound: the list of an `IN`. Run a
/// statement whose list length varies with `persistent(false)` where it
/// is frequent: each length would be a statement of its own in every
/// connection's cache.
pub(crate) fn push_list<'t, DB, T>(
    query: &mut sqlx::QueryBuilder<DB>,
    values: impl IntoIterator<Item = T>,
) -> &mut sqlx::QueryBuilder<DB>
where
    DB: sqlx::Database,
    T: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    query.push("(");
    let mut list = query.separated(", ");
    for value in values {
        list.push_bind(value);
    }
    query.push(")")
}

/// Appends, where the backend locks rows ([`Dialect::FOR_UPDATE`]),
/// ` ORDER BY id COLLATE "C" FOR UPDATE`: agents' rows locked in id
/// order, bytewise as Rust sorts their ids. Every write of many agents'
/// rows locks them in this one order, or two managers writing the same
/// agents at once deadlock.
pub(crate) fn lock_in_id_order<DB: sqlx::Database + Dialect>(
    query: &mut sqlx::QueryBuilder<DB>,
) -> &mut sqlx::QueryBuilder<DB> {
    if !DB::FOR_UPDATE.is_empty() {
        query
            .push(r#" ORDER BY id COLLATE "C""#)
            .push(DB::FOR_UPDATE);
    }
    query
}

/// Starts the transaction every write goes through.
pub(crate) trait WriteTx {
    /// The database.
    type Db: sqlx::Database;
    /// SQLite: this process's turn to write first ([`WriteGate::turn`]),
    /// then `BEGIN IMMEDIATE`, the write lock at once (a deferred
    /// transaction that reads and then writes fails at once with
    /// SQLITE_BUSY when another connection, the daemon or `agent add` in
    /// another process, wrote in between; an immediate one waits its turn
    /// under the busy timeout). PostgreSQL: a plain `BEGIN` (see the
    /// module doc for the row locks).
    fn write_tx(
        &self,
        gate: &WriteGate,
    ) -> impl Future<Output = Result<Write<Self::Db>, sqlx::Error>> + Send;
}

impl WriteTx for SqlitePool {
    type Db = sqlx::Sqlite;
    async fn write_tx(&self, gate: &WriteGate) -> Result<Write<sqlx::Sqlite>, sqlx::Error> {
        let turn = gate.turn().await?;
        Ok(Write {
            tx: self.begin_with("BEGIN IMMEDIATE").await?,
            _turn: Some(turn),
        })
    }
}

impl WriteTx for PgPool {
    type Db = sqlx::Postgres;
    async fn write_tx(&self, _: &WriteGate) -> Result<Write<sqlx::Postgres>, sqlx::Error> {
        Ok(Write {
            tx: self.begin().await?,
            _turn: None,
        })
    }
}

/// A write transaction ([`WriteTx`]): the connection it runs on (`&mut
/// *tx`), and with SQLite this process's turn to write, given back when
/// it commits or is dropped (rolled back).
pub(crate) struct Write<DB: sqlx::Database> {
    tx: sqlx::Transaction<'static, DB>,
    _turn: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl<DB: sqlx::Database> Write<DB> {
    /// Commits, then gives the turn to the next writer.
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl<DB: sqlx::Database> std::ops::Deref for Write<DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        &self.tx
    }
}

impl<DB: sqlx::Database> std::ops::DerefMut for Write<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.tx
    }
}

/// Reads a column of a row of either backend by name; the row mappers
/// (`agent_from_row` and others) are written once over it.
pub(crate) trait StoreRow {
    /// The value of column `name` (panics, as `sqlx::Row::get` does, when
    /// the schema and the mapper disagree: a bug, not bad input).
    fn col<T: Column>(&self, name: &str) -> T;
}

/// A Rust type the row mappers read.
pub(crate) trait Column: Sized {
    /// From an SQLite row.
    fn from_sqlite(row: &sqlx::sqlite::SqliteRow, name: &str) -> Self;
    /// From a PostgreSQL row.
    fn from_postgres(row: &sqlx::postgres::PgRow, name: &str) -> Self;
}

macro_rules! column {
    ($($t:ty),*) => {$(
        impl Column for $t {
            fn from_sqlite(row: &sqlx::sqlite::SqliteRow, name: &str) -> Self {
                sqlx::Row::get(row, name)
            }
            fn from_postgres(row: &sqlx::postgres::PgRow, name: &str) -> Self {
                sqlx::Row::get(row, name)
            }
        }
    )*};
}
column!(String, Option<String>, i64, Option<i64>, Vec<u8>, bool);

impl StoreRow for sqlx::sqlite::SqliteRow {
    fn col<T: Column>(&self, name: &str) -> T {
        T::from_sqlite(self, name)
    }
}

impl StoreRow for sqlx::postgres::PgRow {
    fn col<T: Column>(&self, name: &str) -> T {
        T::from_postgres(self, name)
    }
}
