//! From request headers to a [`Caller`]: bearer JWTs (ours or Supabase's) and API keys, checked against the
//! database on every request, so a disabled user or a revoked key is refused at its next request.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use uuid::Uuid;

use super::AuthService;
use super::api_keys::parse_key;
use super::caller::Caller;
use super::jwt::Subject;
use super::secret::{constant_time_eq, sha256_hex};
use crate::api::error::ApiError;

/// Header carrying the request id (set by the API's request-id middleware).
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Alternative header for API keys.
pub const API_KEY_HEADER: &str = "x-api-key";

enum Credential<'a> {
    Bearer(&'a str),
    ApiKey(&'a str),
}

fn credential(headers: &HeaderMap) -> Result<Credential<'_>, ApiError> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.to_str().map_err(|_| ApiError::Unauthenticated)?;
        let (scheme, value) = v.split_once(' ').ok_or(ApiError::Unauthenticated)?;
        let value = value.trim();
        return if scheme.eq_ignore_ascii_case("bearer") {
            Ok(Credential::Bearer(value))
        } else if scheme.eq_ignore_ascii_case("apikey") {
            Ok(Credential::ApiKey(value))
        } else {
            Err(ApiError::Unauthenticated)
        };
    }
    if let Some(v) = headers.get(API_KEY_HEADER) {
        return Ok(Credential::ApiKey(
            v.to_str().map_err(|_| ApiError::Unauthenticated)?.trim(),
        ));
    }
    Err(ApiError::Unauthenticated)
}

impl AuthService {
    /// Authenticates a request: `Authorization: Bearer <jwt>`, `Authorization: ApiKey <key>` or
    /// `X-Api-Key: <key>`. 401 for anything missing, malformed, expired, revoked or disabled; 503 when
    /// PostgreSQL is unavailable.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        ip: Option<IpAddr>,
        request_id: &str,
    ) -> Result<Caller, ApiError> {
        match credential(headers)? {
            Credential::Bearer(token) => {
                let (user_id, token_provider) = match self.inner.keys.validate(token)? {
                    Subject::User {
                        user_id,
                        provider_id,
                    } => (user_id, Some(provider_id)),
                    Subject::External(sub) => {
                        let user: Option<Uuid> =
                            sqlx::query_scalar("SELECT octoisp_user_by_subject($1)")
                                .bind(&sub)
                                .fetch_one(&self.inner.pool)
                                .await?;
                        (user.ok_or(ApiError::Unauthenticated)?, None)
                    }
                };
                let row: Option<(Option<Uuid>, bool, Option<Vec<String>>)> = sqlx::query_as(
                    "SELECT provider_id, disabled, permissions FROM octoisp_user_principal($1)",
                )
                .bind(user_id)
                .fetch_optional(&self.inner.pool)
                .await?;
                let Some((provider_id, false, permissions)) = row else {
                    tracing::debug!(user = %user_id, request_id, "Token of an unknown or disabled user.");
                    return Err(ApiError::Unauthenticated);
                };
                if token_provider.is_some_and(|p| p != provider_id) {
                    tracing::debug!(user = %user_id, request_id, "Token for another provider than the user's.");
                    return Err(ApiError::Unauthenticated);
                }
                Ok(Caller {
                    user_id: Some(user_id),
                    api_key_id: None,
                    provider_id,
                    permissions: permissions.unwrap_or_default().into_iter().collect(),
                    global_admin: provider_id.is_none(),
                    request_id: request_id.to_owned(),
                    ip,
                })
            }
            Credential::ApiKey(key) => self.authenticate_key(key, ip, request_id).await,
        }
    }

    async fn authenticate_key(
        &self,
        key: &str,
        ip: Option<IpAddr>,
        request_id: &str,
    ) -> Result<Caller, ApiError> {
        let (prefix, secret) = parse_key(key).ok_or(ApiError::Unauthenticated)?;
        let row: Option<(Uuid, Uuid, String, Vec<String>, bool)> = sqlx::query_as(
            "SELECT id, provider_id, secret_hash, permissions, usable FROM octoisp_api_key_lookup($1)",
        )
        .bind(prefix)
        .fetch_optional(&self.inner.pool)
        .await?;
        let presented = sha256_hex(secret);
        let Some((id, provider_id, stored, permissions, usable)) = row else {
            return Err(ApiError::Unauthenticated);
        };
        if !constant_time_eq(presented.as_bytes(), stored.as_bytes()) || !usable {
            tracing::debug!(key = %id, request_id, "API key refused (wrong secret, revoked, expired or creator disabled).");
            return Err(ApiError::Unauthenticated);
        }
        self.touch_key(id, provider_id).await;
        Ok(Caller {
            user_id: None,
            api_key_id: Some(id),
            provider_id: Some(provider_id),
            permissions: permissions.into_iter().collect::<BTreeSet<_>>(),
            global_admin: false,
            request_id: request_id.to_owned(),
            ip,
        })
    }

    /// Records the use of a key, at most once a minute; failures are logged, not fatal.
    async fn touch_key(&self, id: Uuid, provider_id: Uuid) {
        let result = async {
            let mut tx = crate::db::tenant_tx(&self.inner.pool, provider_id).await?;
            sqlx::query(
                "UPDATE api_keys SET last_used_at = now() WHERE id = $1 \
                 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok::<_, ApiError>(())
        }
        .await;
        if let Err(err) = result {
            tracing::warn!(key = %id, error = %err, "Cannot record the use of an API key.");
        }
    }
}

impl<S> FromRequestParts<S> for Caller
where
    AuthService: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = AuthService::from_ref(state);
        let request_id = parts
            .headers
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        auth.authenticate(&parts.headers, ip, &request_id).await
    }
}
