//! Roles and the permission catalogue: the predefined roles (Global Admin, Provider Admin, NOC, Technician,
//! Viewer) and each provider's custom roles. Thin handlers over [`crate::auth::rbac`]: nobody creates or edits a
//! role holding a permission they do not hold themselves, predefined roles are read-only, and a role still held
//! by a user cannot be deleted. Every change is audited in the caller's transaction.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::api::error::ApiError;
use crate::api::extract::{ApiJson, ApiPath, Authed};
use crate::api::pagination::Page;
use crate::api::{AppState, ErrorBody, own_provider, to_json};
use crate::audit;
use crate::auth::rbac::{self, Permission};
use crate::auth::{self, Role};

/// The permission catalogue.
#[utoipa::path(get, path = "/api/v1/permissions", tag = "roles",
    responses((status = 200, body = Page<Permission>), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
pub async fn permissions(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> Result<axum::Json<Page<Permission>>, ApiError> {
    caller.require("roles:read")?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let items = auth::list_permissions(&mut tx).await?;
    tx.commit().await?;
    Ok(axum::Json(Page {
        items,
        next_cursor: None,
    }))
}

/// The roles the caller's provider can use (predefined and its own).
#[utoipa::path(get, path = "/api/v1/roles", tag = "roles",
    responses((status = 200, body = Page<Role>), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> Result<axum::Json<Page<Role>>, ApiError> {
    caller.require("roles:read")?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let items = auth::list_roles(&mut tx).await?;
    tx.commit().await?;
    Ok(axum::Json(Page {
        items,
        next_cursor: None,
    }))
}

/// A new custom role.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRole {
    /// Name, unique within the provider.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Permission codes (the caller must hold each).
    pub permissions: Vec<String>,
}

/// Creates a custom role of the caller's provider.
#[utoipa::path(post, path = "/api/v1/roles", tag = "roles", request_body = NewRole,
    responses((status = 201, body = Role), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(body): ApiJson<NewRole>,
) -> Result<(StatusCode, axum::Json<Role>), ApiError> {
    caller.require("roles:manage")?;
    let provider = own_provider(&caller)?;
    let description = crate::api::validate::text("description", &body.description)?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let role = auth::create_role(
        &mut tx,
        &caller,
        provider,
        &body.name,
        &description,
        &body.permissions,
    )
    .await?;
    audit::record(
        &mut tx,
        &caller,
        "roles.create",
        "role",
        Some(&role.id.to_string()),
        None,
        to_json(&role),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(role)))
}

/// One role (predefined, or a custom role of the caller's provider).
#[utoipa::path(get, path = "/api/v1/roles/{id}", tag = "roles", params(("id" = Uuid, Path, description = "Role id")),
    responses((status = 200, body = Role), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<Role>, ApiError> {
    caller.require("roles:read")?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let role = rbac::get_role(&mut tx, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    Ok(axum::Json(role))
}

/// Changes to a custom role (absent: unchanged).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleUpdate {
    /// New name, unique within the provider.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// The complete new set of permission codes (the caller must hold each).
    pub permissions: Option<Vec<String>>,
}

/// Changes a custom role of the caller's provider; its users' permissions change at their next request.
#[utoipa::path(patch, path = "/api/v1/roles/{id}", tag = "roles", request_body = RoleUpdate,
    params(("id" = Uuid, Path, description = "Role id")),
    responses((status = 200, body = Role), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<RoleUpdate>,
) -> Result<axum::Json<Role>, ApiError> {
    caller.require("roles:manage")?;
    let description = body
        .description
        .as_deref()
        .map(|d| crate::api::validate::text("description", d))
        .transpose()?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let (before, after) = rbac::update_role(
        &mut tx,
        &caller,
        id,
        body.name.as_deref(),
        description.as_deref(),
        body.permissions.as_deref(),
    )
    .await?;
    audit::record(
        &mut tx,
        &caller,
        "roles.update",
        "role",
        Some(&id.to_string()),
        to_json(&before),
        to_json(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(after))
}

/// Deletes a custom role that no user holds.
#[utoipa::path(delete, path = "/api/v1/roles/{id}", tag = "roles", params(("id" = Uuid, Path, description = "Role id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    caller.require("roles:manage")?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let before = rbac::delete_role(&mut tx, &caller, id).await?;
    audit::record(
        &mut tx,
        &caller,
        "roles.delete",
        "role",
        Some(&id.to_string()),
        to_json(&before),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
