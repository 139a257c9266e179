//! Agents of the caller's provider: list, get, enrollment tokens, revocation.

use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::api::error::ApiError;
use crate::api::extract::{ApiJson, ApiPath, ApiQuery, Authed};
use crate::api::pagination::{Page, PageParams, fetch_one, fetch_page};
use crate::api::{AppState, ErrorBody, to_json};
use crate::{audit, registry};

/// An enrolled agent.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Agent {
    /// Its id (in its certificate).
    pub id: Uuid,
    /// Its provider.
    pub provider_id: Uuid,
    /// Its POP.
    pub pop_id: Uuid,
    /// Host name it reported.
    pub hostname: String,
    /// Version it reported.
    pub version: String,
    /// SHA-256 of its certificate, lowercase hex.
    pub cert_fingerprint: String,
    /// Enrollment time.
    pub enrolled_at: DateTime<Utc>,
    /// Latest contact.
    pub last_seen: Option<DateTime<Utc>>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "SELECT id, provider_id, pop_id, hostname, version, cert_fingerprint, enrolled_at, last_seen, \
     revoked_at FROM agents WHERE true";

/// Lists the caller's agents in id order.
#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", params(PageParams),
    responses((status = 200, body = Page<Agent>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<axum::Json<Page<Agent>>, ApiError> {
    caller.require("agents:read")?;
    let qb = QueryBuilder::<Postgres>::new(COLUMNS);
    let page = fetch_page(&state.pool, &caller, qb, "", &page, |a: &Agent| a.id).await?;
    Ok(axum::Json(page))
}

/// One agent.
#[utoipa::path(get, path = "/api/v1/agents/{id}", tag = "agents", params(("id" = Uuid, Path, description = "Agent id")),
    responses((status = 200, body = Agent), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<Agent>, ApiError> {
    caller.require("agents:read")?;
    fetch_one(&state.pool, &caller, COLUMNS, "", id)
        .await
        .map(axum::Json)
}

/// Longest enrollment token lifetime accepted, seconds (one year).
const MAX_TOKEN_TTL_SECS: u64 = 365 * 24 * 3600;

/// Request for an enrollment token.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEnrollmentToken {
    /// The POP the new agent will serve.
    pub pop_id: Uuid,
    /// Lifetime in seconds (default one day, at most one year).
    pub ttl_secs: Option<u64>,
}

/// A one-time enrollment token. The secret is shown once: only its hash is stored.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EnrollmentToken {
    /// Public part of the token.
    pub token_id: Uuid,
    /// The secret (base64url).
    pub secret: String,
    /// `octoisp-enroll-v1.<token-id>.<secret>.<ca-sha256-hex>`, for `octoisp-agent enroll --token`, when this
    /// instance knows the CA.
    pub token: Option<String>,
    /// After this instant the token is refused.
    pub expires_at: DateTime<Utc>,
}

/// Issues a one-time enrollment token for a POP of the caller's provider.
#[utoipa::path(post, path = "/api/v1/agents/enrollment-tokens", tag = "agents", request_body = NewEnrollmentToken,
    responses((status = 201, body = EnrollmentToken), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_enrollment_token(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(body): ApiJson<NewEnrollmentToken>,
) -> Result<(StatusCode, axum::Json<EnrollmentToken>), ApiError> {
    caller.require("agents:enroll")?;
    let ttl = body.ttl_secs.unwrap_or(24 * 3600);
    if ttl == 0 || ttl > MAX_TOKEN_TTL_SECS {
        return Err(ApiError::BadRequest(format!(
            "ttl_secs: between 1 and {MAX_TOKEN_TTL_SECS}"
        )));
    }
    let mut tx = caller.tx(&state.pool, None).await?;
    let provider: Option<Uuid> = sqlx::query_scalar("SELECT provider_id FROM pops WHERE id = $1")
        .bind(body.pop_id)
        .fetch_optional(&mut *tx)
        .await?;
    let provider =
        provider.ok_or_else(|| ApiError::BadRequest(format!("pop_id: no POP {}", body.pop_id)))?;
    // The same token shape and hashing as `registry::create_enrollment_token`, written in this transaction so
    // that the token and its audit row commit together.
    let token_id = Uuid::new_v4();
    let secret = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let expires_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO enrollment_tokens (id, provider_id, pop_id, secret_hash, expires_at) \
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) RETURNING expires_at",
    )
    .bind(token_id)
    .bind(provider)
    .bind(body.pop_id)
    .bind(registry::secret_hash(&secret))
    .bind(ttl as f64)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        &caller,
        "agents.enroll_token",
        "enrollment_token",
        Some(&token_id.to_string()),
        None,
        Some(serde_json::json!({ "pop_id": body.pop_id, "expires_at": expires_at })),
    )
    .await?;
    tx.commit().await?;
    let token = state
        .ca_fingerprint
        .as_deref()
        .map(|ca| format!("{}.{token_id}.{secret}.{ca}", crate::ca::TOKEN_PREFIX));
    Ok((
        StatusCode::CREATED,
        axum::Json(EnrollmentToken {
            token_id,
            secret,
            token,
            expires_at,
        }),
    ))
}

/// Revokes an agent: its certificate is refused from the next handshake on (revoking twice keeps the first
/// time).
#[utoipa::path(post, path = "/api/v1/agents/{id}/revoke", tag = "agents", params(("id" = Uuid, Path, description = "Agent id")),
    responses((status = 200, body = Agent), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<Agent>, ApiError> {
    caller.require("agents:revoke")?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let before: Agent = QueryBuilder::<Postgres>::new(COLUMNS)
        .push(" AND id = ")
        .push_bind(id)
        .push(" FOR UPDATE")
        .build_query_as()
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ApiError::NotFound)?;
    let after: Agent = sqlx::query_as(
        "UPDATE agents SET revoked_at = coalesce(revoked_at, now()) WHERE provider_id = $1 AND id = $2 \
         RETURNING id, provider_id, pop_id, hostname, version, cert_fingerprint, enrolled_at, last_seen, revoked_at",
    )
    .bind(before.provider_id)
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        &caller,
        "agents.revoke",
        "agent",
        Some(&id.to_string()),
        to_json(&before),
        to_json(&after),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(agent = %id, request_id = %caller.request_id, "Agent revoked through the API.");
    Ok(axum::Json(after))
}
