//! API keys for integrations: `oik_<prefix>_<secret>`, shown once at creation, stored as the SHA-256 of the
//! secret, scoped to a subset of the creator's permissions (and, at use, to those the creator still holds).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::caller::Caller;
use super::rbac::ensure_may_grant;
use super::secret::{random_alnum, random_token, sha256_hex};
use crate::api::error::ApiError;

/// Start of every API key.
pub const KEY_PREFIX: &str = "oik_";
/// Length of the lookup prefix after [`KEY_PREFIX`].
pub const PREFIX_LEN: usize = 8;

/// An API key as stored (never its secret).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ApiKey {
    /// Key id.
    pub id: Uuid,
    /// Owning provider.
    pub provider_id: Uuid,
    /// Name given at creation.
    pub name: String,
    /// The 8 characters after `oik_`, to recognize a key in lists.
    pub prefix: String,
    /// Permissions of the key.
    pub permissions: Vec<String>,
    /// The user who created it.
    pub created_by: Uuid,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Last use (updated at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, provider_id, name, prefix, permissions, created_by, created_at, expires_at, revoked_at, last_used_at";

/// Splits `oik_<prefix>_<secret>` into prefix and secret; `None` when the shape is wrong.
pub fn parse_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (prefix, secret) = rest.split_once('_')?;
    let ok = prefix.len() == PREFIX_LEN
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && (20..=128).contains(&secret.len());
    ok.then_some((prefix, secret))
}

/// Creates an API key of the caller's provider with `permissions` (each held by the caller) and returns the
/// stored row and the key in clear, which is never available again. Requires `api_keys:manage` and a user
/// (a key cannot mint keys).
pub async fn create_api_key(
    tx: &mut Transaction<'static, Postgres>,
    caller: &Caller,
    name: &str,
    permissions: &[String],
    expires_at: Option<DateTime<Utc>>,
) -> Result<(ApiKey, String), ApiError> {
    caller.require("api_keys:manage")?;
    let (Some(user), Some(provider)) = (caller.user_id, caller.provider_id) else {
        return Err(ApiError::BadRequest(
            "API keys are created by a user of a provider".into(),
        ));
    };
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::BadRequest(
            "a key name has 1 to 200 characters".into(),
        ));
    }
    let perms: BTreeSet<&str> = permissions.iter().map(String::as_str).collect();
    if perms.is_empty() {
        return Err(ApiError::BadRequest(
            "an API key needs at least one permission".into(),
        ));
    }
    ensure_may_grant(caller, &perms.iter().collect::<Vec<_>>())?;
    let perms: Vec<&str> = perms.into_iter().collect();
    let known: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM permissions WHERE code = ANY($1) AND NOT global_only",
    )
    .bind(&perms)
    .fetch_one(&mut **tx)
    .await?;
    if usize::try_from(known).ok() != Some(perms.len()) {
        return Err(ApiError::BadRequest(
            "unknown or global permission in the list".into(),
        ));
    }
    if expires_at.is_some_and(|t| t <= Utc::now()) {
        return Err(ApiError::BadRequest("expires_at is in the past".into()));
    }
    let prefix = random_alnum(PREFIX_LEN);
    let secret = random_token();
    let sql = format!(
        "INSERT INTO api_keys (provider_id, name, prefix, secret_hash, permissions, created_by, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    );
    let row: ApiKey = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(provider)
        .bind(name)
        .bind(&prefix)
        .bind(sha256_hex(&secret))
        .bind(&perms)
        .bind(user)
        .bind(expires_at)
        .fetch_one(&mut **tx)
        .await?;
    Ok((row, format!("{KEY_PREFIX}{prefix}_{secret}")))
}

/// API keys of the transaction's tenant, newest first.
pub async fn list_api_keys(
    tx: &mut Transaction<'static, Postgres>,
) -> Result<Vec<ApiKey>, ApiError> {
    let sql = format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at DESC, id DESC");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(&mut **tx)
        .await?)
}

/// Revokes key `key_id` (idempotent); it is refused from the next request on. Requires `api_keys:manage`;
/// 404 when the key is not the tenant's.
pub async fn revoke_api_key(
    tx: &mut Transaction<'static, Postgres>,
    caller: &Caller,
    key_id: Uuid,
) -> Result<ApiKey, ApiError> {
    caller.require("api_keys:manage")?;
    let sql = format!(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING {COLUMNS}"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(key_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(ApiError::NotFound)
}
