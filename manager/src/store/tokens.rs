//! One-time enrollment tokens. Only a hash of each token is stored; a token
//! is spent in the same transaction that registers the agent (its row
//! locked first on PostgreSQL), so two agents racing with one token cannot
//! both enroll.

use palisade_proto::identity;
use sqlx::Row;

use super::{Store, StoreError, WriteTx, for_update, now_ms, on_pool};

/// A token as listed by `token list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// Row id.
    pub id: i64,
    /// The agent name it is for, if given.
    pub name: Option<String>,
    /// Created (ms).
    pub created_at: i64,
    /// Expires (ms).
    pub expires_at: i64,
    /// Used (ms), if it was.
    pub used_at: Option<i64>,
    /// The agent that enrolled with it.
    pub used_by: Option<String>,
}

/// An agent registered with a token.
#[derive(Debug, Clone)]
pub struct Redeemed<E> {
    /// Its new id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// What the issuer returned besides the serial (the certificate).
    pub issued: E,
}

/// A time in ms as the operator reads it (UTC, to the second).
pub use palisade_common::time::show_millis as show_time;

impl Store {
    /// Stores a new token's hash; it expires at `expires_at` (ms).
    pub async fn insert_token(
        &self,
        token_hash: &str,
        name: Option<&str>,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO enrollment_tokens (token_hash, name, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(token_hash)
            .bind(name)
            .bind(now_ms())
            .bind(expires_at)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Every token, newest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        on_pool!(self.reads, pool => {
            let rows = sqlx::query(
                "SELECT id, name, created_at, expires_at, used_at, used_by FROM enrollment_tokens ORDER BY id DESC",
            )
            .fetch_all(pool)
            .await?;
            Ok(rows
                .iter()
                .map(|r| TokenRow {
                    id: r.get("id"),
                    name: r.get("name"),
                    created_at: r.get("created_at"),
                    expires_at: r.get("expires_at"),
                    used_at: r.get("used_at"),
                    used_by: r.get("used_by"),
                })
                .collect())
        })
    }

    /// Spends the token with hash `token_hash` and registers an agent with
    /// it, in one transaction. The name is the token's, else `requested`,
    /// else `fallback` (the host name the agent sent). A refusal
    /// (unknown, used or expired token, a name taken) is
    /// [`StoreError::NotFound`] or [`StoreError::Conflict`] with the reason,
    /// and leaves the token as it was.
    pub async fn redeem_token<F, E>(
        &self,
        token_hash: &str,
        requested: Option<&str>,
        fallback: &str,
        peer: &str,
        issue: F,
    ) -> Result<Redeemed<E>, StoreError>
    where
        F: FnOnce(&str, &str) -> Result<(String, E), String>,
    {
        on_pool!(self, pool => {
            let mut tx = pool.write_tx(&self.gate).await?;
            let row = sqlx::query(for_update::<Db>(
                "SELECT id, name, expires_at, used_at, used_by FROM enrollment_tokens WHERE token_hash = $1",
            ))
            .bind(token_hash)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| {
                StoreError::NotFound(
                    "unknown token (tokens come from `palisade-manager token create`)".into(),
                )
            })?;
            let token_id: i64 = row.get("id");
            if let Some(used_at) = row.get::<Option<i64>, _>("used_at") {
                let by = row
                    .get::<Option<String>, _>("used_by")
                    .map(|id| format!(" by agent {id}"))
                    .unwrap_or_default();
                return Err(StoreError::Conflict(format!(
                    "this token was already used{by} at {}; tokens are single-use, create a new one",
                    show_time(used_at)
                )));
            }
            let expires_at: i64 = row.get("expires_at");
            if expires_at <= now_ms() {
                return Err(StoreError::Conflict(format!(
                    "this token expired at {}; create a new one",
                    show_time(expires_at)
                )));
            }
            let name = match (row.get::<Option<String>, _>("name"), requested) {
                (Some(fixed), Some(asked)) if fixed != asked => {
                    return Err(StoreError::Conflict(format!(
                        "this token is for an agent named {fixed:?}, not {asked:?}"
                    )));
                }
                (Some(fixed), _) => fixed,
                (None, Some(asked)) => asked.to_string(),
                (None, None) => fallback.to_string(),
            };
            if !identity::is_valid_name(&name) {
                return Err(StoreError::Conflict(format!(
                    "invalid agent name {name:?}: use 1 to 64 of A-Z a-z 0-9 . _ - (give one with --name)"
                )));
            }
            let (id, issued) = register!(Db, tx, &name, "any", |id: &str| issue(id, &name));
            let spent = sqlx::query(
                "UPDATE enrollment_tokens SET used_at = $1, used_by = $2, used_from = $3 WHERE id = $4 AND used_at IS NULL",
            )
            .bind(now_ms())
            .bind(&id)
            .bind(peer)
            .bind(token_id)
            .execute(&mut *tx)
            .await?;
            if spent.rows_affected() != 1 {
                return Err(StoreError::Conflict(
                    "this token was already used; tokens are single-use, create a new one".into(),
                ));
            }
            tx.commit().await?;
            Ok(Redeemed { id, name, issued })
        })
    }
}
