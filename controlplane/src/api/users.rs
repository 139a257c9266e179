//! Users of a provider: list and search, read, create, rename, disable and re-enable, change role, and grant or
//! withdraw single permissions beyond the role. Nobody hands out (or takes away) what they do not hold: acting on
//! a user needs every permission of that user's current role, and a new role or grant needs its permissions too.
//! Users are disabled, never deleted, so the audit log keeps naming them; disabling revokes their refresh tokens
//! and their access tokens stop working at the next request (the principal is read on every request).

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder, Transaction};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::api::account::service;
use crate::api::devices::{filter_value, like_prefix};
use crate::api::error::ApiError;
use crate::api::extract::{ApiJson, ApiPath, ApiQuery, Authed};
use crate::api::pagination::{Page, PageParams, fetch_page};
use crate::api::{AppState, ErrorBody, own_provider, to_json, validate};
use crate::audit;
use crate::auth::{self, Caller};

const SELECT: &str = "SELECT u.id, u.provider_id, u.email, u.name, u.role_id, r.name AS role_name, \
     coalesce((SELECT array_agg(up.permission ORDER BY up.permission) FROM user_permissions up \
               WHERE up.user_id = u.id), '{}') AS extra_permissions, \
     u.disabled_at, u.created_at, u.last_login_at \
     FROM users u JOIN roles r ON r.id = u.role_id WHERE true";

/// A user as the API shows it (never its password hash).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct User {
    /// User id.
    pub id: Uuid,
    /// Provider.
    pub provider_id: Option<Uuid>,
    /// Email address (the login).
    pub email: String,
    /// Display name.
    pub name: String,
    /// Role.
    pub role_id: Uuid,
    /// Name of the role.
    pub role_name: String,
    /// Permissions granted beyond the role.
    pub extra_permissions: Vec<String>,
    /// When the user was disabled; `null` while active.
    pub disabled_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Latest sign-in.
    pub last_login_at: Option<DateTime<Utc>>,
}

/// Filters of the user list (all optional, combined with AND).
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserFilters {
    /// Prefix of the email address or of the name (case-insensitive).
    pub q: Option<String>,
    /// Role id.
    pub role: Option<Uuid>,
    /// `true`: only disabled users; `false`: only active ones.
    pub disabled: Option<bool>,
    /// Items per page, 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Lists the users of the caller's provider.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(UserFilters),
    responses((status = 200, body = Page<User>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(f): ApiQuery<UserFilters>,
) -> Result<axum::Json<Page<User>>, ApiError> {
    caller.require("users:read")?;
    let mut qb = QueryBuilder::<Postgres>::new(SELECT);
    if let Some(q) = &f.q {
        let pattern = like_prefix(&filter_value("q", q)?.to_lowercase());
        qb.push(" AND (lower(u.email) LIKE ")
            .push_bind(pattern.clone())
            .push(" OR lower(u.name) LIKE ")
            .push_bind(pattern)
            .push(")");
    }
    if let Some(role) = f.role {
        qb.push(" AND u.role_id = ").push_bind(role);
    }
    match f.disabled {
        Some(true) => qb.push(" AND u.disabled_at IS NOT NULL"),
        Some(false) => qb.push(" AND u.disabled_at IS NULL"),
        None => &mut qb,
    };
    let page = PageParams {
        limit: f.limit,
        cursor: f.cursor,
    };
    let page = fetch_page(&state.pool, &caller, qb, "u.", &page, |u: &User| u.id).await?;
    Ok(axum::Json(page))
}

/// Reads one user in `tx` (404 when it is not visible).
async fn fetch(tx: &mut Transaction<'static, Postgres>, id: Uuid) -> Result<User, ApiError> {
    let mut qb = QueryBuilder::<Postgres>::new(SELECT);
    qb.push(" AND u.id = ").push_bind(id);
    qb.build_query_as()
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(ApiError::NotFound)
}

/// One user of the caller's provider.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", params(("id" = Uuid, Path, description = "User id")),
    responses((status = 200, body = User), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<User>, ApiError> {
    caller.require("users:read")?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let user = fetch(&mut tx, id).await?;
    tx.commit().await?;
    Ok(axum::Json(user))
}

/// The user `id` as it is now, when the caller may act on it: visible (404), not the caller itself (409: nobody
/// disables or demotes themselves by accident), and holding no permission the caller lacks (403).
async fn manageable(
    tx: &mut Transaction<'static, Postgres>,
    caller: &Caller,
    id: Uuid,
) -> Result<User, ApiError> {
    let user = fetch(tx, id).await?;
    if caller.user_id == Some(id) {
        return Err(ApiError::Conflict(
            "you cannot change your own role, grants or status".into(),
        ));
    }
    auth::rbac::ensure_may_grant_role(tx, caller, user.role_id).await?;
    auth::rbac::ensure_may_grant(caller, &user.extra_permissions)?;
    Ok(user)
}

/// A new user of the caller's provider.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Email address (the login).
    pub email: String,
    /// Display name.
    pub name: String,
    /// Initial password (absent: the user sets one through a password reset).
    pub password: Option<String>,
    /// Role.
    pub role_id: Uuid,
}

/// A created user.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedUser {
    /// The new user's id.
    pub id: Uuid,
}

/// Creates a user of the caller's provider with a role the caller may grant.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = NewUser,
    responses((status = 201, body = CreatedUser), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<(StatusCode, axum::Json<CreatedUser>), ApiError> {
    caller.require("users:manage")?;
    let svc = service(&state)?;
    let provider = own_provider(&caller)?;
    let mut tx = caller.tx(&state.pool, None).await?;
    auth::rbac::ensure_may_grant_role(&mut tx, &caller, body.role_id).await?;
    let id = auth::create_user(
        &mut tx,
        svc.config().password_params,
        Some(provider),
        &body.email,
        &body.name,
        body.password.as_deref(),
        body.role_id,
        None,
    )
    .await?;
    let after = serde_json::json!({ "id": id, "email": body.email.trim(), "name": body.name.trim(), "role_id": body.role_id });
    audit::record(
        &mut tx,
        &caller,
        "users.create",
        "user",
        Some(&id.to_string()),
        None,
        Some(after),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(CreatedUser { id })))
}

/// Changes to a user (absent: unchanged).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    /// New display name.
    pub name: Option<String>,
    /// `true` disables the user (its sessions end), `false` enables it again.
    pub disabled: Option<bool>,
}

/// Renames, disables or re-enables a user of the caller's provider.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", request_body = UserUpdate,
    params(("id" = Uuid, Path, description = "User id")),
    responses((status = 200, body = User), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UserUpdate>,
) -> Result<axum::Json<User>, ApiError> {
    caller.require("users:manage")?;
    let name = body
        .name
        .as_deref()
        .map(|n| validate::name("name", n))
        .transpose()?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let before = if body.disabled.is_some() {
        manageable(&mut tx, &caller, id).await?
    } else {
        fetch(&mut tx, id).await?
    };
    let disabled_at = match body.disabled {
        Some(true) => before.disabled_at.or_else(|| Some(Utc::now())),
        Some(false) => None,
        None => before.disabled_at,
    };
    sqlx::query("UPDATE users SET name = $2, disabled_at = $3 WHERE id = $1")
        .bind(id)
        .bind(name.as_deref().unwrap_or(&before.name))
        .bind(disabled_at)
        .execute(&mut *tx)
        .await?;
    if body.disabled == Some(true) {
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    let after = fetch(&mut tx, id).await?;
    let action = match (before.disabled_at.is_some(), after.disabled_at.is_some()) {
        (false, true) => "users.disable",
        (true, false) => "users.enable",
        _ => "users.update",
    };
    audit::record(
        &mut tx,
        &caller,
        action,
        "user",
        Some(&id.to_string()),
        to_json(&before),
        to_json(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(after))
}

/// A role assignment.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleAssignment {
    /// The role.
    pub role_id: Uuid,
}

/// Gives a user of the caller's provider another role.
#[utoipa::path(put, path = "/api/v1/users/{id}/role", tag = "users", request_body = RoleAssignment,
    params(("id" = Uuid, Path, description = "User id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_role(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<RoleAssignment>,
) -> Result<StatusCode, ApiError> {
    caller.require("users:manage")?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let before = manageable(&mut tx, &caller, id).await?;
    auth::set_user_role(&mut tx, &caller, id, body.role_id).await?;
    audit::record(
        &mut tx,
        &caller,
        "users.set_role",
        "user",
        Some(&id.to_string()),
        Some(serde_json::json!({ "role_id": before.role_id })),
        Some(serde_json::json!({ "role_id": body.role_id })),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Grants one permission to a user beyond its role (the caller must hold it).
#[utoipa::path(put, path = "/api/v1/users/{id}/permissions/{code}", tag = "users",
    params(("id" = Uuid, Path, description = "User id"), ("code" = String, Path, description = "Permission code, such as `diagnostics:run`")),
    responses((status = 200, body = User), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn grant(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath((id, code)): ApiPath<(Uuid, String)>,
) -> Result<axum::Json<User>, ApiError> {
    change_grant(&state, &caller, id, &code, true).await
}

/// Withdraws a permission granted to a user beyond its role (what the role gives stays).
#[utoipa::path(delete, path = "/api/v1/users/{id}/permissions/{code}", tag = "users",
    params(("id" = Uuid, Path, description = "User id"), ("code" = String, Path, description = "Permission code")),
    responses((status = 200, body = User), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath((id, code)): ApiPath<(Uuid, String)>,
) -> Result<axum::Json<User>, ApiError> {
    change_grant(&state, &caller, id, &code, false).await
}

async fn change_grant(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    code: &str,
    grant: bool,
) -> Result<axum::Json<User>, ApiError> {
    caller.require("users:manage")?;
    let code = filter_value("code", code)?;
    auth::rbac::ensure_may_grant(caller, &[code])?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let before = manageable(&mut tx, caller, id).await?;
    if grant {
        let known: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM permissions WHERE code = $1 AND NOT global_only)",
        )
        .bind(code)
        .fetch_one(&mut *tx)
        .await?;
        if !known {
            return Err(ApiError::BadRequest(format!(
                "no permission `{}` can be granted",
                code.chars().take(64).collect::<String>()
            )));
        }
        auth::rbac::grant_user_permission(&mut tx, caller, id, code).await?;
    } else {
        auth::rbac::revoke_user_permission(&mut tx, caller, id, code).await?;
    }
    let after = fetch(&mut tx, id).await?;
    audit::record(
        &mut tx,
        caller,
        if grant { "users.grant" } else { "users.revoke" },
        "user",
        Some(&id.to_string()),
        to_json(&before.extra_permissions),
        to_json(&after.extra_permissions),
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(after))
}
