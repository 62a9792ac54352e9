//! The life cycle of identities: agents' renewed certificates (issued over
//! their stream, made theirs when first used, the old one revoked then),
//! refused streams an operator can see, and the registered operators whose
//! certificates may call the control API.

use super::{Dialect, Store, StoreError, StoreRow, WriteTx, for_update, now_ms, on_pool};

/// An operator as registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorRow {
    /// The operator's name (the certificate's).
    pub name: String,
    /// Serial of the certificate it was issued.
    pub cert_serial: String,
    /// When it was registered (ms).
    pub registered_at: i64,
    /// When it was removed (ms), if it was.
    pub removed_at: Option<i64>,
}

impl Store {
    /// Records the certificate just issued to a connected agent, to
    /// become its certificate when it connects with it. Replaces an earlier
    /// one that was never used (the answer was lost).
    pub async fn set_pending_serial(&self, agent_id: &str, serial: &str) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            let done = sqlx::query(
                "UPDATE agents SET pending_serial = $1 WHERE id = $2 AND removed_at IS NULL",
            )
            .bind(serial)
            .bind(agent_id)
            .execute(pool)
            .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!(
                    "no live agent with id {agent_id}"
                )));
            }
            Ok(())
        })
    }

    /// The agent connected with its renewed certificate: it becomes the
    /// agent's certificate and the previous one is revoked, in one
    /// transaction. Returns the revoked serial.
    pub async fn switch_to_renewed(
        &self,
        agent_id: &str,
        serial: &str,
    ) -> Result<String, StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.write_tx(&self.gate).await?;
            let old: Option<String> = sqlx::query_scalar(for_update::<Db>(
                "SELECT cert_serial FROM agents WHERE id = $1 AND pending_serial = $2 AND removed_at IS NULL",
            ))
            .bind(agent_id)
            .bind(serial)
            .fetch_optional(&mut *tx)
            .await?;
            let old = old.ok_or_else(|| {
                StoreError::Conflict(format!(
                    "certificate {serial} is not agent {agent_id}'s renewed certificate"
                ))
            })?;
            sqlx::query("UPDATE agents SET cert_serial = $1, pending_serial = NULL WHERE id = $2")
                .bind(serial)
                .bind(agent_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(Db::INSERT_REVOCATION)
            .bind(&old)
            .bind(agent_id)
            .bind(now_ms())
            .bind("replaced by a renewed certificate")
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(old)
        })
    }

    /// Records that a stream of the agent's certificate was refused, and why.
    pub async fn agent_refused(&self, agent_id: &str, reason: &str) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE agents SET last_refused_at = $1, last_refusal = $2 WHERE id = $3")
                .bind(now_ms())
                .bind(reason)
                .bind(agent_id)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Registers an operator; `issue` makes its certificate and returns
    /// the serial. A live operator's name cannot be taken twice.
    pub async fn add_operator<F, E>(&self, name: &str, issue: F) -> Result<E, StoreError>
    where
        F: FnOnce() -> Result<(String, E), String>,
    {
        on_pool!(self, pool => {
            let mut tx = pool.write_tx(&self.gate).await?;
            let live: Option<i64> =
                sqlx::query_scalar("SELECT id FROM operators WHERE name = $1 AND removed_at IS NULL")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
            if live.is_some() {
                return Err(StoreError::Conflict(format!(
                    "an operator named {name:?} already exists"
                )));
            }
            let (serial, extra) = issue().map_err(StoreError::Conflict)?;
            sqlx::query("INSERT INTO operators (name, cert_serial, registered_at) VALUES ($1, $2, $3)")
                .bind(name)
                .bind(&serial)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(extra)
        })
    }

    /// Registers an operator certificate issued before operators were
    /// registered (`init`'s `admin` of an older manager), only while no
    /// operator is registered at all; returns whether it did.
    pub async fn adopt_first_operator(&self, name: &str, serial: &str) -> Result<bool, StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.write_tx(&self.gate).await?;
            let any: Option<i64> = sqlx::query_scalar("SELECT id FROM operators LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
            if any.is_some() {
                return Ok(false);
            }
            sqlx::query("INSERT INTO operators (name, cert_serial, registered_at) VALUES ($1, $2, $3)")
                .bind(name)
                .bind(serial)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Removes a live operator: its certificate is revoked, also on the
    /// connections it has open.
    pub async fn remove_operator(&self, name: &str) -> Result<OperatorRow, StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.write_tx(&self.gate).await?;
            let serial: Option<String> = sqlx::query_scalar(
                "SELECT cert_serial FROM operators WHERE name = $1 AND removed_at IS NULL",
            )
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
            let serial =
                serial.ok_or_else(|| StoreError::NotFound(format!("no operator named {name:?}")))?;
            let now = now_ms();
            sqlx::query("UPDATE operators SET removed_at = $1 WHERE cert_serial = $2")
                .bind(now)
                .bind(&serial)
                .execute(&mut *tx)
                .await?;
            sqlx::query(Db::INSERT_REVOCATION)
            .bind(&serial)
            .bind(None::<&str>)
            .bind(now)
            .bind(format!("operator {name} was removed"))
            .execute(&mut *tx)
            .await?;
            let row = sqlx::query("SELECT * FROM operators WHERE cert_serial = $1")
                .bind(&serial)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(operator_from_row(&row))
        })
    }

    /// Every operator, removed ones too, in the order they were added.
    pub async fn operators(&self) -> Result<Vec<OperatorRow>, StoreError> {
        on_pool!(self.reads, pool => {
            let rows = sqlx::query("SELECT * FROM operators ORDER BY id")
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(operator_from_row).collect())
        })
    }

    /// The live operator holding the certificate `serial`, if any.
    pub async fn live_operator(&self, serial: &str) -> Result<Option<OperatorRow>, StoreError> {
        on_pool!(self.reads, pool => {
            let row =
                sqlx::query("SELECT * FROM operators WHERE cert_serial = $1 AND removed_at IS NULL")
                    .bind(serial)
                    .fetch_optional(pool)
                    .await?;
            Ok(row.as_ref().map(operator_from_row))
        })
    }
}

fn operator_from_row(r: &impl StoreRow) -> OperatorRow {
    OperatorRow {
        name: r.col("name"),
        cert_serial: r.col("cert_serial"),
        registered_at: r.col("registered_at"),
        removed_at: r.col("removed_at"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::testing::both_backends;

    both_backends! {
        async fn a_renewed_certificate_replaces_and_revokes_the_old_one_when_used(db) {
            let s = db.open().await;
            let (id, ()) = s
                .add_agent("web01", "any", |_| Ok(("aa".into(), ())))
                .await
                .unwrap();
            // Not renewed yet: nothing to switch to.
            assert!(matches!(
                s.switch_to_renewed(&id, "bb").await,
                Err(StoreError::Conflict(_))
            ));
            s.set_pending_serial(&id, "bb").await.unwrap();
            assert!(!s.is_revoked("aa").await.unwrap());
            assert_eq!(s.switch_to_renewed(&id, "bb").await.unwrap(), "aa");
            assert!(s.is_revoked("aa").await.unwrap());
            let agent = s.agent(&id).await.unwrap().unwrap();
            assert_eq!(agent.cert_serial, "bb");
            assert_eq!(agent.pending_serial, None);
        }
    }

    both_backends! {
        async fn operators_are_registered_once_and_revoked_on_removal(db) {
            let s = db.open().await;
            assert!(s.adopt_first_operator("admin", "a1").await.unwrap());
            // Only into an empty table.
            assert!(!s.adopt_first_operator("admin", "a2").await.unwrap());
            s.add_operator("bob", || Ok(("b1".into(), ())))
                .await
                .unwrap();
            assert!(matches!(
                s.add_operator("bob", || Ok(("b2".into(), ()))).await,
                Err(StoreError::Conflict(_))
            ));
            assert_eq!(s.live_operator("b1").await.unwrap().unwrap().name, "bob");
            let removed = s.remove_operator("bob").await.unwrap();
            assert!(removed.removed_at.is_some());
            assert!(s.is_revoked("b1").await.unwrap());
            assert_eq!(s.live_operator("b1").await.unwrap(), None);
            assert!(matches!(
                s.remove_operator("bob").await,
                Err(StoreError::NotFound(_))
            ));
            // The name is free again.
            s.add_operator("bob", || Ok(("b3".into(), ())))
                .await
                .unwrap();
            let names: Vec<_> = s
                .operators()
                .await
                .unwrap()
                .into_iter()
                .map(|o| (o.name, o.removed_at.is_some()))
                .collect();
            assert_eq!(
                names,
                [
                    ("admin".to_string(), false),
                    ("bob".to_string(), true),
                    ("bob".to_string(), false)
                ]
            );
        }
    }
}
