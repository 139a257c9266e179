//! The audit log: one row per state-changing action, written in the transaction of the change, hash-chained per
//! provider by the database (`migrations/0005_audit.sql`), and verified by [`verify`].
//!
//! A row's provider is the tenant of the transaction it is written in (NULL on the global-admin path: the
//! global chain). The database refuses UPDATE, DELETE and TRUNCATE on the table; [`verify`] recomputes every
//! chain and reports the first row whose hash or link does not match, which is what a superuser's edit leaves.
//! Deleting the newest rows of a chain is not detectable from the chain alone.
//!
//! Never put secrets (passwords, tokens, key secrets) in `before`/`after`.

use futures::TryStreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::api::error::ApiError;
use crate::auth::Caller;

/// Errors of [`verify`].
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Reading the log failed.
    #[error("cannot read the audit log: {0}")]
    Query(#[from] sqlx::Error),
}

/// Appends a row to the audit log in `tx`, the transaction of the change it records: who (`caller`), what
/// (`action`, such as `devices.update`), on what (`target_type`, `target_id`), the state before and after, the
/// client IP and the request id. The database assigns the id, the time and the hashes.
pub async fn record(
    tx: &mut Transaction<'static, Postgres>,
    caller: &Caller,
    action: &str,
    target_type: &str,
    target_id: Option<&str>,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO audit_log (id, provider_id, actor_user_id, actor_api_key_id, action, target_type, target_id, \
         before, after, ip, request_id, prev_hash, hash) \
         VALUES (0, octoisp_tenant(), $1, $2, $3, $4, $5, $6, $7, $8::text::inet, $9, '', '')",
    )
    .bind(caller.user_id)
    .bind(caller.api_key_id)
    .bind(action)
    .bind(target_type)
    .bind(target_id)
    .bind(before)
    .bind(after)
    .bind(caller.ip.map(|ip| ip.to_string()))
    .bind(&caller.request_id)
    .execute(&mut **tx)
    .await
    .map_err(|err| match crate::db::sqlstate(&err).as_deref() {
        Some("23514") => ApiError::Internal(format!("audit action `{action}` is not of the form module.verb")),
        _ => ApiError::from(err),
    })?;
    Ok(())
}

/// Appends a row for a change the control plane made on its own (no user or API key: a worker's decision, such
/// as a firmware campaign halted by its stop rule), in the tenant transaction of that change.
pub async fn record_system(
    conn: &mut sqlx::PgConnection,
    action: &str,
    target_type: &str,
    target_id: &str,
    after: serde_json::Value,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (id, provider_id, action, target_type, target_id, after, prev_hash, hash) \
         VALUES (0, octoisp_tenant(), $1, $2, $3, $4, '', '')",
    )
    .bind(action)
    .bind(target_type)
    .bind(target_id)
    .bind(after)
    .execute(conn)
    .await?;
    Ok(())
}

/// A row of the audit log, as the API lists it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Row id (grows along each chain).
    pub id: i64,
    /// Provider; `None` for global actions.
    pub provider_id: Option<Uuid>,
    /// Time of the transaction that wrote it.
    pub ts: chrono::DateTime<chrono::Utc>,
    /// Acting user.
    pub actor_user_id: Option<Uuid>,
    /// Acting API key.
    pub actor_api_key_id: Option<Uuid>,
    /// Action, such as `devices.update`.
    pub action: String,
    /// Kind of object acted on.
    pub target_type: String,
    /// Id of the object acted on.
    pub target_id: Option<String>,
    /// State before.
    pub before: Option<serde_json::Value>,
    /// State after.
    pub after: Option<serde_json::Value>,
    /// Client address (text).
    pub ip: Option<String>,
    /// Request id.
    pub request_id: Option<String>,
}

/// Outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Rows whose hash was recomputed.
    pub rows_checked: u64,
    /// Chains (providers, plus the global chain) seen.
    pub chains: u64,
    /// The first row (lowest id of the first broken chain) that does not verify, and why.
    pub first_broken: Option<(i64, String)>,
}

type VerifyRow = (i64, Option<Uuid>, Vec<u8>, Vec<u8>, String);

/// Recomputes the chain of `provider` (`None`: every chain, the global one included) and reports the first
/// broken link. Reads through the global-admin path; `pool` may be the application's or the owner's.
pub async fn verify(pool: &PgPool, provider: Option<Uuid>) -> Result<VerifyReport, AuditError> {
    let mut tx = crate::db::global_admin_tx(pool)
        .await
        .map_err(|e| match e {
            crate::db::DbError::Query { source, .. } => AuditError::Query(source),
            other => AuditError::Query(sqlx::Error::Protocol(other.to_string())),
        })?;
    let mut report = VerifyReport {
        rows_checked: 0,
        chains: 0,
        first_broken: None,
    };
    {
        let mut rows = sqlx::query_as::<_, VerifyRow>(
            "SELECT id, provider_id, prev_hash, hash, octoisp_audit_canonical(id, provider_id, ts, actor_user_id, \
             actor_api_key_id, action, target_type, target_id, before, after, ip, request_id) \
             FROM audit_log WHERE $1::uuid IS NULL OR provider_id = $1 \
             ORDER BY provider_id NULLS FIRST, id",
        )
        .bind(provider)
        .fetch(&mut *tx);
        let mut current: Option<Option<Uuid>> = None;
        let mut prev: Vec<u8> = Vec::new();
        while let Some((id, row_provider, prev_hash, hash, canonical)) = rows.try_next().await? {
            if current != Some(row_provider) {
                current = Some(row_provider);
                report.chains += 1;
                prev.clear();
            }
            report.rows_checked += 1;
            if report.first_broken.is_some() {
                continue;
            }
            let expected: Vec<u8> = Sha256::new()
                .chain_update(&prev)
                .chain_update(canonical.as_bytes())
                .finalize()
                .to_vec();
            if prev_hash != prev {
                report.first_broken = Some((
                    id,
                    "prev_hash does not match the previous row's hash".to_owned(),
                ));
            } else if hash != expected {
                report.first_broken =
                    Some((id, "hash does not match the row's contents".to_owned()));
            }
            prev = hash;
        }
    }
    tx.rollback().await?;
    Ok(report)
}
