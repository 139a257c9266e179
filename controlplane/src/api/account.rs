//! Sessions, the caller's identity, users, roles and API keys: thin HTTP handlers over [`crate::auth`].
//!
//! The session routes (login, refresh, logout, password reset) are public and rate limited per IP by the
//! gateway (and login per account by the auth service). Management routes check their permission, run in the
//! caller's tenant transaction and write their audit row in it. Lists of roles, permissions and API keys are
//! small and bounded per provider: they come in one page (`next_cursor` is always null).

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::api::error::ApiError;
use crate::api::extract::{ApiJson, ApiPath, Authed};
use crate::api::pagination::Page;
use crate::api::{AppState, ErrorBody, RequestContext, to_json};
use crate::audit;
use crate::auth::{self, ApiKey, AuthService, TokenPair};

/// The auth service of this instance (503 when authentication is not configured).
pub(crate) fn service(state: &AppState) -> Result<&AuthService, ApiError> {
    state.auth_service.as_ref().ok_or_else(|| {
        ApiError::Unavailable("authentication is not configured on this instance".into())
    })
}

/// Email and password.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// Email address.
    pub email: String,
    /// Password.
    pub password: String,
}

/// A refresh token.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshToken {
    /// The refresh token of the latest pair.
    pub refresh_token: String,
}

/// A password reset request.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// Email address of the account.
    pub email: String,
}

/// A new password with the emailed token.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetConfirm {
    /// The token from the email.
    pub token: String,
    /// The new password.
    pub password: String,
}

/// Signs in: a short-lived access token and a rotating refresh token.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = Login,
    responses((status = 200, body = TokenPair), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    ctx: Option<axum::Extension<RequestContext>>,
    ApiJson(body): ApiJson<Login>,
) -> Result<axum::Json<TokenPair>, ApiError> {
    let ip = ctx.and_then(|axum::Extension(c)| c.ip);
    Ok(axum::Json(
        service(&state)?
            .login(&body.email, &body.password, ip)
            .await?,
    ))
}

/// Exchanges a refresh token for a new pair (a reused token revokes its whole family).
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshToken,
    responses((status = 200, body = TokenPair), (status = 401, body = ErrorBody)))]
pub async fn refresh(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshToken>,
) -> Result<axum::Json<TokenPair>, ApiError> {
    Ok(axum::Json(
        service(&state)?.refresh(&body.refresh_token).await?,
    ))
}

/// Ends the session of a refresh token.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", request_body = RefreshToken,
    responses((status = 204), (status = 401, body = ErrorBody)))]
pub async fn logout(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshToken>,
) -> Result<StatusCode, ApiError> {
    service(&state)?.logout(&body.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Mails a password reset token (the answer is the same whether the account exists or not).
#[utoipa::path(post, path = "/api/v1/auth/password-reset", tag = "auth", request_body = ResetRequest,
    responses((status = 202)))]
pub async fn password_reset(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ResetRequest>,
) -> Result<StatusCode, ApiError> {
    service(&state)?.request_password_reset(&body.email).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Sets a new password with a reset token.
#[utoipa::path(post, path = "/api/v1/auth/password-reset/confirm", tag = "auth", request_body = ResetConfirm,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn password_reset_confirm(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ResetConfirm>,
) -> Result<StatusCode, ApiError> {
    service(&state)?
        .reset_password(&body.token, &body.password)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who the caller is and what it may do (the console hides what the user cannot do).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Me {
    /// The user, when signed in as one.
    pub user_id: Option<Uuid>,
    /// The API key, when authenticated with one.
    pub api_key_id: Option<Uuid>,
    /// The provider; null for a Global Admin.
    pub provider_id: Option<Uuid>,
    /// Global Admin.
    pub global_admin: bool,
    /// Effective permissions.
    pub permissions: Vec<String>,
}

/// The caller and its effective permissions.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth", responses((status = 200, body = Me), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn me(Authed(caller): Authed) -> axum::Json<Me> {
    axum::Json(Me {
        user_id: caller.user_id,
        api_key_id: caller.api_key_id,
        provider_id: caller.provider_id,
        global_admin: caller.global_admin,
        permissions: caller.permissions.iter().cloned().collect(),
    })
}

/// The caller's provider's API keys (never their secrets).
#[utoipa::path(get, path = "/api/v1/api-keys", tag = "api-keys",
    responses((status = 200, body = Page<ApiKey>), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
pub async fn api_keys(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> Result<axum::Json<Page<ApiKey>>, ApiError> {
    caller.require("api_keys:manage")?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let items = auth::list_api_keys(&mut tx).await?;
    tx.commit().await?;
    Ok(axum::Json(Page {
        items,
        next_cursor: None,
    }))
}

/// A new API key.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// Name, to recognize it.
    pub name: String,
    /// Permissions (the caller must hold each).
    pub permissions: Vec<String>,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A created API key: the key is shown this once.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedApiKey {
    /// The stored key.
    #[serde(flatten)]
    pub api_key: ApiKey,
    /// `oik_<prefix>_<secret>`: store it now, it cannot be shown again.
    pub key: String,
}

/// Creates an API key with a subset of the caller's permissions.
#[utoipa::path(post, path = "/api/v1/api-keys", tag = "api-keys", request_body = NewApiKey,
    responses((status = 201, body = CreatedApiKey), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_api_key(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(body): ApiJson<NewApiKey>,
) -> Result<(StatusCode, axum::Json<CreatedApiKey>), ApiError> {
    caller.require("api_keys:manage")?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let (api_key, key) = auth::create_api_key(
        &mut tx,
        &caller,
        &body.name,
        &body.permissions,
        body.expires_at,
    )
    .await?;
    audit::record(
        &mut tx,
        &caller,
        "api_keys.create",
        "api_key",
        Some(&api_key.id.to_string()),
        None,
        to_json(&api_key),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedApiKey { api_key, key }),
    ))
}

/// Revokes an API key.
#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "api-keys", params(("id" = Uuid, Path, description = "API key id")),
    responses((status = 200, body = ApiKey), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<ApiKey>, ApiError> {
    caller.require("api_keys:manage")?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let key = auth::revoke_api_key(&mut tx, &caller, id).await?;
    audit::record(
        &mut tx,
        &caller,
        "api_keys.revoke",
        "api_key",
        Some(&id.to_string()),
        None,
        to_json(&key),
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(key))
}
