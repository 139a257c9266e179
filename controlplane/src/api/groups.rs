//! Device groups of the caller's provider: list, get, create, change, delete, and their members.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::api::error::ApiError;
use crate::api::extract::{ApiJson, ApiPath, ApiQuery, Authed};
use crate::api::pagination::{Page, PageParams, fetch_one, fetch_page};
use crate::api::{AppState, ErrorBody, own_provider, to_json, validate};
use crate::audit;

/// A device group.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Group {
    /// Its id.
    pub id: Uuid,
    /// Its provider.
    pub provider_id: Uuid,
    /// Name, unique within the provider.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Number of devices in it.
    pub members: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// A device in a group.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Member {
    /// The device.
    pub device_id: Uuid,
    /// When it was added.
    pub added_at: DateTime<Utc>,
}

const COLUMNS: &str = "SELECT g.id, g.provider_id, g.name, g.description, g.created_at, \
     (SELECT count(*) FROM device_group_members m WHERE m.provider_id = g.provider_id AND m.group_id = g.id) \
     AS members FROM device_groups g WHERE true";

/// Lists the caller's device groups in id order.
#[utoipa::path(get, path = "/api/v1/groups", tag = "groups", params(PageParams),
    responses((status = 200, body = Page<Group>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<axum::Json<Page<Group>>, ApiError> {
    caller.require("groups:read")?;
    let qb = QueryBuilder::<Postgres>::new(COLUMNS);
    let page = fetch_page(&state.pool, &caller, qb, "g.", &page, |g: &Group| g.id).await?;
    Ok(axum::Json(page))
}

/// One device group.
#[utoipa::path(get, path = "/api/v1/groups/{id}", tag = "groups", params(("id" = Uuid, Path, description = "Group id")),
    responses((status = 200, body = Group), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<Group>, ApiError> {
    caller.require("groups:read")?;
    fetch_one(&state.pool, &caller, COLUMNS, "g.", id)
        .await
        .map(axum::Json)
}

/// The devices of a group, in device id order.
#[utoipa::path(get, path = "/api/v1/groups/{id}/members", tag = "groups",
    params(("id" = Uuid, Path, description = "Group id"), PageParams),
    responses((status = 200, body = Page<Member>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn members(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<axum::Json<Page<Member>>, ApiError> {
    caller.require("groups:read")?;
    let (limit, after) = (page.limit()?, page.after()?);
    let mut tx = caller.tx(&state.pool, None).await?;
    let provider: Option<Uuid> =
        sqlx::query_scalar("SELECT provider_id FROM device_groups WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let provider = provider.ok_or(ApiError::NotFound)?;
    let mut qb = QueryBuilder::<Postgres>::new(
        "SELECT device_id, added_at FROM device_group_members WHERE provider_id = ",
    );
    qb.push_bind(provider)
        .push(" AND group_id = ")
        .push_bind(id);
    if let Some(after) = after {
        qb.push(" AND device_id > ").push_bind(after);
    }
    qb.push(" ORDER BY device_id LIMIT ")
        .push_bind(i64::from(limit) + 1);
    let rows: Vec<Member> = qb.build_query_as().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(axum::Json(Page::from_rows(rows, limit, |m| m.device_id)))
}

/// A new device group.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    /// Name, unique within the provider.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// Changes to a device group.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupUpdate {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
}

/// A device to add to a group.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    /// The device.
    pub device_id: Uuid,
}

async fn fetch(tx: &mut sqlx::PgConnection, id: Uuid, lock: bool) -> Result<Group, ApiError> {
    let mut qb = QueryBuilder::<Postgres>::new(COLUMNS);
    qb.push(" AND g.id = ").push_bind(id);
    if lock {
        qb.push(" FOR UPDATE OF g");
    }
    qb.build_query_as()
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ApiError::NotFound)
}

/// Creates a device group.
#[utoipa::path(post, path = "/api/v1/groups", tag = "groups", request_body = NewGroup,
    responses((status = 201, body = Group), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(body): ApiJson<NewGroup>,
) -> Result<(StatusCode, axum::Json<Group>), ApiError> {
    caller.require("groups:write")?;
    let provider = own_provider(&caller)?;
    let name = validate::name("name", &body.name)?;
    let description = validate::text("description", &body.description)?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO device_groups (provider_id, name, description) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(provider)
    .bind(&name)
    .bind(&description)
    .fetch_one(&mut *tx)
    .await?;
    let group = fetch(&mut tx, id, false).await?;
    audit::record(
        &mut tx,
        &caller,
        "groups.create",
        "device_group",
        Some(&id.to_string()),
        None,
        to_json(&group),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(group)))
}

/// Changes a device group.
#[utoipa::path(patch, path = "/api/v1/groups/{id}", tag = "groups", request_body = GroupUpdate,
    params(("id" = Uuid, Path, description = "Group id")),
    responses((status = 200, body = Group), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<GroupUpdate>,
) -> Result<axum::Json<Group>, ApiError> {
    caller.require("groups:write")?;
    let name = body
        .name
        .as_deref()
        .map(|n| validate::name("name", n))
        .transpose()?;
    let description = body
        .description
        .as_deref()
        .map(|d| validate::text("description", d))
        .transpose()?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let before = fetch(&mut tx, id, true).await?;
    sqlx::query(
        "UPDATE device_groups SET name = coalesce($3, name), description = coalesce($4, description) \
         WHERE provider_id = $1 AND id = $2",
    )
    .bind(before.provider_id)
    .bind(id)
    .bind(name)
    .bind(description)
    .execute(&mut *tx)
    .await?;
    let after = fetch(&mut tx, id, false).await?;
    audit::record(
        &mut tx,
        &caller,
        "groups.update",
        "device_group",
        Some(&id.to_string()),
        to_json(&before),
        to_json(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(after))
}

/// Deletes a device group (the devices stay).
#[utoipa::path(delete, path = "/api/v1/groups/{id}", tag = "groups", params(("id" = Uuid, Path, description = "Group id")),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    caller.require("groups:write")?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let before = fetch(&mut tx, id, true).await?;
    sqlx::query("DELETE FROM device_groups WHERE provider_id = $1 AND id = $2")
        .bind(before.provider_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        &caller,
        "groups.delete",
        "device_group",
        Some(&id.to_string()),
        to_json(&before),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Adds a device to a group (adding it twice is a no-op).
#[utoipa::path(post, path = "/api/v1/groups/{id}/members", tag = "groups", request_body = NewMember,
    params(("id" = Uuid, Path, description = "Group id")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn add_member(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<NewMember>,
) -> Result<StatusCode, ApiError> {
    caller.require("groups:write")?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let group = fetch(&mut tx, id, true).await?;
    let device: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM devices WHERE provider_id = $1 AND id = $2")
            .bind(group.provider_id)
            .bind(body.device_id)
            .fetch_optional(&mut *tx)
            .await?;
    let device = device
        .ok_or_else(|| ApiError::BadRequest(format!("device_id: no device {}", body.device_id)))?;
    let added = sqlx::query(
        "INSERT INTO device_group_members (provider_id, group_id, device_id) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind(group.provider_id)
    .bind(id)
    .bind(device)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if added == 1 {
        audit::record(
            &mut tx,
            &caller,
            "groups.add_member",
            "device_group",
            Some(&id.to_string()),
            None,
            Some(serde_json::json!({ "device_id": device })),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a device from a group.
#[utoipa::path(delete, path = "/api/v1/groups/{id}/members/{device_id}", tag = "groups",
    params(("id" = Uuid, Path, description = "Group id"), ("device_id" = Uuid, Path, description = "Device id")),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove_member(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath((id, device_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    caller.require("groups:write")?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let group = fetch(&mut tx, id, true).await?;
    let removed = sqlx::query(
        "DELETE FROM device_group_members WHERE provider_id = $1 AND group_id = $2 AND device_id = $3",
    )
    .bind(group.provider_id)
    .bind(id)
    .bind(device_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if removed == 0 {
        return Err(ApiError::NotFound);
    }
    audit::record(
        &mut tx,
        &caller,
        "groups.remove_member",
        "device_group",
        Some(&id.to_string()),
        Some(serde_json::json!({ "device_id": device_id })),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
