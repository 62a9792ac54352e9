//! `migrate-store`: copying an SQLite store into an empty PostgreSQL one.
//!
//! Schema-driven: the columns of each table and their types are read from
//! the PostgreSQL schema (`migrations/postgres/`), so a new column needs no
//! change here; only the order of the tables (references first) is
//! written down. Rows keep their ids (the identity columns are `BY
//! DEFAULT`), so alerts, responses and the tokens' agents still point
//! where they did, and the identities continue after the highest id.
//! Everything is copied in one PostgreSQL transaction: a failure leaves
//! the target empty. The source is read in one SQLite transaction, a
//! consistent snapshot (stop the manager first all the same: what it
//! stores after the snapshot is not copied).

use sqlx::{Column as _, Row};

use super::backend::{Pool, WriteTx};
use super::{Store, StoreError};

/// The tables, each after the ones it references.
const TABLES: &[&str] = &[
    "managers",
    "agents",
    "revoked_certificates",
    "operators",
    "enrollment_tokens",
    "alerts",
    "responses",
    "response_refusals",
    "circuit_breakers",
    "archive",
    "archive_size",
    "revocation_generation",
];

/// Rows per INSERT (at most 20 columns: far below PostgreSQL's 65,535
/// parameters).
const ROWS_PER_INSERT: i64 = 1000;
/// Rows per INSERT of the archive: each is a stored batch of events, up
/// to a few MiB (`archive.rs`), and a page is held in memory whole.
const ARCHIVE_ROWS_PER_INSERT: i64 = 8;

/// One table copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedTable {
    /// Its name.
    pub table: &'static str,
    /// Rows in the source.
    pub source_rows: u64,
    /// Rows in the target after the copy.
    pub target_rows: u64,
}

/// A column's type on PostgreSQL, as the copy binds it.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Integer,
    Flag,
    Text,
    Bytes,
}

impl Store {
    /// Copies this (SQLite) store into `target` (PostgreSQL, empty),
    /// calling `progress(table, rows copied, rows in the table)` as it
    /// goes; returns each table's counts, checked equal.
    pub async fn copy_to(
        &self,
        target: &Store,
        mut progress: impl FnMut(&str, u64, u64),
    ) -> Result<Vec<CopiedTable>, StoreError> {
        let (Pool::Sqlite(source), Pool::Postgres(pg)) = (&self.pool, &target.pool) else {
            return Err(StoreError::Conflict(
                "migrate-store copies an SQLite store into a PostgreSQL one".into(),
            ));
        };
        let agents: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM agents")
            .fetch_one(pg)
            .await?;
        if agents > 0 {
            return Err(StoreError::Conflict(format!(
                "the target already holds {agents} agents: migrate-store only fills an empty database"
            )));
        }
        let mut read = source.begin().await?;
        let mut write = pg.write_tx(&target.gate).await?;
        // The rows the schema's own migration put there (counters).
        sqlx::query("DELETE FROM archive_size")
            .execute(&mut *write)
            .await?;
        sqlx::query("DELETE FROM revocation_generation")
            .execute(&mut *write)
            .await?;
        let mut copied = Vec::new();
        for &table in TABLES {
            let columns: Vec<(String, Kind)> = sqlx::query(
                "SELECT column_name::text AS name, data_type::text AS type FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
            )
            .bind(table)
            .fetch_all(&mut *write)
            .await?
            .iter()
            .map(|r| {
                let kind = match r.get::<String, _>("type").as_str() {
                    "bigint" | "integer" => Kind::Integer,
                    "boolean" => Kind::Flag,
                    "bytea" => Kind::Bytes,
                    _ => Kind::Text,
                };
                (r.get::<String, _>("name"), kind)
            })
            .collect();
            let total: i64 =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                    .fetch_one(&mut *read)
                    .await?;
            let list = columns
                .iter()
                .map(|(c, _)| format!("\"{c}\""))
                .collect::<Vec<_>>()
                .join(", ");
            let page = if table == "archive" {
                ARCHIVE_ROWS_PER_INSERT
            } else {
                ROWS_PER_INSERT
            };
            let select = format!(
                "SELECT rowid AS copy_rowid, {list} FROM {table} WHERE rowid > $1 ORDER BY rowid LIMIT {page}"
            );
            let mut after = 0i64;
            let mut done = 0u64;
            progress(table, 0, u64::try_from(total).unwrap_or(0));
            loop {
                let rows = sqlx::query(sqlx::AssertSqlSafe(select.clone()))
                    .bind(after)
                    .fetch_all(&mut *read)
                    .await?;
                let Some(last) = rows.last() else { break };
                after = last.get("copy_rowid");
                let mut insert = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!(
                    "INSERT INTO {table} ({list}) "
                ));
                insert.push_values(&rows, |mut b, row| {
                    for (i, (_, kind)) in columns.iter().enumerate() {
                        // Column 0 is the rowid.
                        let at = i + 1;
                        debug_assert_eq!(row.column(at).name(), columns[i].0);
                        match kind {
                            Kind::Integer => b.push_bind(row.get::<Option<i64>, _>(at)),
                            Kind::Flag => b.push_bind(row.get::<Option<bool>, _>(at)),
                            Kind::Text => b.push_bind(row.get::<Option<String>, _>(at)),
                            Kind::Bytes => b.push_bind(row.get::<Option<Vec<u8>>, _>(at)),
                        };
                    }
                });
                insert.build().execute(&mut *write).await?;
                done += rows.len() as u64;
                progress(table, done, u64::try_from(total).unwrap_or(0));
            }
            if columns
                .iter()
                .any(|(c, k)| c == "id" && matches!(k, Kind::Integer))
            {
                // Identities go on after the copied ids (a no-op for the
                // tables whose id is not an identity).
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 0) + 1, false)
                     FROM {table} WHERE pg_get_serial_sequence('{table}', 'id') IS NOT NULL"
                )))
                .fetch_all(&mut *write)
                .await?;
            }
            let target_rows: i64 =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                    .fetch_one(&mut *write)
                    .await?;
            let entry = CopiedTable {
                table,
                source_rows: u64::try_from(total).unwrap_or(0),
                target_rows: u64::try_from(target_rows).unwrap_or(0),
            };
            if entry.source_rows != entry.target_rows {
                return Err(StoreError::Conflict(format!(
                    "{table}: {} rows in SQLite, {} copied; nothing was kept",
                    entry.source_rows, entry.target_rows
                )));
            }
            copied.push(entry);
        }
        write.commit().await?;
        read.rollback().await?;
        Ok(copied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::analysis::Judged;
    use crate::store::testing::{Backend, TestDb};
    use crate::store::{Action, AlertFilter, IncomingEvent, NewResponse, fixtures, now_ms};

    /// Every table and column of each schema, sorted.
    async fn schema(store: &Store) -> Vec<(String, Vec<String>)> {
        let (tables_sql, columns_sql) = match &store.pool {
            Pool::Sqlite(_) => (
                "SELECT name FROM sqlite_master WHERE type = 'table'
                   AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations' ORDER BY name",
                "SELECT name FROM pragma_table_info($1) ORDER BY name",
            ),
            Pool::Postgres(_) => (
                "SELECT table_name::text FROM information_schema.tables
                  WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations' ORDER BY 1",
                "SELECT column_name::text FROM information_schema.columns
                  WHERE table_schema = current_schema() AND table_name = $1 ORDER BY 1",
            ),
        };
        let tables: Vec<String> = match &store.pool {
            Pool::Sqlite(p) => sqlx::query_scalar(tables_sql).fetch_all(p).await.unwrap(),
            Pool::Postgres(p) => sqlx::query_scalar(tables_sql).fetch_all(p).await.unwrap(),
        };
        let mut out = Vec::new();
        for t in tables {
            let columns: Vec<String> = match &store.pool {
                Pool::Sqlite(p) => sqlx::query_scalar(columns_sql).bind(&t).fetch_all(p).await,
                Pool::Postgres(p) => sqlx::query_scalar(columns_sql).bind(&t).fetch_all(p).await,
            }
            .unwrap();
            out.push((t, columns));
        }
        out
    }

    /// A new SQLite migration needs its PostgreSQL twin (and a new table
    /// its place in `migrate-store`'s order).
    #[tokio::test]
    #[cfg_attr(
        not(palisade_postgres),
        ignore = "needs PostgreSQL: PALISADE_TEST_POSTGRES=URL (scripts/pg-test-cluster; scripts/test sets it)"
    )]
    async fn both_schemas_have_the_same_tables_and_columns() {
        let (lite, pg) = (TestDb::new(Backend::Sqlite), TestDb::new(Backend::Postgres));
        let lite = schema(&lite.open().await).await;
        assert_eq!(lite, schema(&pg.open().await).await);
        let mut tables: Vec<&str> = TABLES.to_vec();
        tables.sort_unstable();
        let names: Vec<&str> = lite.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(names, tables, "migrate-store's TABLES");
    }

    #[tokio::test]
    #[cfg_attr(
        not(palisade_postgres),
        ignore = "needs PostgreSQL: PALISADE_TEST_POSTGRES=URL (scripts/pg-test-cluster; scripts/test sets it)"
    )]
    async fn an_sqlite_store_moves_to_postgresql_whole() {
        let (from, to) = (TestDb::new(Backend::Sqlite), TestDb::new(Backend::Postgres));
        let s = from.open().await;
        for (name, serial) in [("web01", "aa"), ("web02", "bb"), ("web03", "cc")] {
            s.add_agent(name, "any", |_| Ok((serial.to_string(), ())))
                .await
                .unwrap();
        }
        s.remove_agent("002", "test").await.unwrap();
        s.add_operator("admin", || Ok(("op1".to_string(), ())))
            .await
            .unwrap();
        s.insert_token("hash1", None, now_ms() + 60_000)
            .await
            .unwrap();
        let line = [0u8, 0xff, b'x'];
        let events: Vec<_> = (1..=2500u64)
            .map(|sequence| IncomingEvent {
                sequence,
                location: "/var/log/nginx/access.log",
                log_format: "nginx",
                read_at: 7,
                read_at_clamped: sequence == 3,
                truncated: sequence == 2,
                line: &line,
            })
            .collect();
        let judged = Judged {
            sequence: 2500,
            alert: fixtures::stored_alert(1, 10).alert,
        };
        // 25 stored batches: the archive is copied in several pages.
        let (earlier, last) = events.split_at(2400);
        for batch in earlier.chunks(100) {
            s.store_events("001", batch, &[], true).await.unwrap();
        }
        let stored = s.store_events("001", last, &[judged], true).await.unwrap();
        let block = s
            .insert_response(&NewResponse {
                agent_id: "001".into(),
                response: "route-null600".into(),
                command: "route-null".into(),
                executable: "route-null".into(),
                action: Action::Add,
                srcip: Some("203.0.113.7".into()),
                user: None,
                alert_id: Some(stored.alert_ids[0]),
                rule_id: Some(31151),
                location: None,
                timeout_s: Some(600),
                undoes: None,
            })
            .await
            .unwrap();
        let target = to.open().await;
        let mut seen = Vec::new();
        let copied = s
            .copy_to(&target, |table, done, total| {
                seen.push((table.to_string(), done, total))
            })
            .await
            .unwrap();
        assert_eq!(copied.len(), TABLES.len());
        let archive = copied.iter().find(|c| c.table == "archive").unwrap();
        assert_eq!((archive.source_rows, archive.target_rows), (25, 25));
        assert!(
            seen.contains(&("archive".to_string(), ARCHIVE_ROWS_PER_INSERT as u64, 25)),
            "progress: {seen:?}"
        );

        assert_eq!(target.agents().await.unwrap(), s.agents().await.unwrap());
        assert_eq!(target.revoked_serials().await.unwrap(), ["bb"]);
        assert_eq!(
            target.operators().await.unwrap(),
            s.operators().await.unwrap()
        );
        assert_eq!(target.tokens().await.unwrap(), s.tokens().await.unwrap());
        let all = AlertFilter::default();
        assert_eq!(
            target.alerts(&all).await.unwrap(),
            s.alerts(&all).await.unwrap()
        );
        assert_eq!(
            target.blocks(None, None).await.unwrap(),
            s.blocks(None, None).await.unwrap()
        );
        let archived = s.archived_events(None).await.unwrap();
        assert_eq!(archived.len(), 2500);
        assert!(archived[1].truncated && archived[2].read_at_clamped);
        assert_eq!(target.archived_events(None).await.unwrap(), archived);
        assert_eq!(
            target.archive_bytes().await.unwrap(),
            s.archive_bytes().await.unwrap()
        );
        assert_eq!(
            target.revocation_generation().await.unwrap(),
            s.revocation_generation().await.unwrap()
        );
        // Ids go on after the copied ones; the sequence is kept.
        let (id, _) = target
            .add_agent("web04", "any", |_| Ok(("dd".to_string(), ())))
            .await
            .unwrap();
        assert_eq!(id, "004");
        let next = target
            .insert_response(&NewResponse {
                alert_id: None,
                ..block.request.clone()
            })
            .await
            .unwrap();
        assert!(next.id > block.id);
        let again = target
            .store_events("001", &events[..10], &[], true)
            .await
            .unwrap();
        assert_eq!(again.highest, 2500, "resent events are known on the target");
        // A second run refuses a database that is not empty.
        assert!(matches!(
            s.copy_to(&target, |_, _, _| {}).await,
            Err(StoreError::Conflict(_))
        ));
    }
}
