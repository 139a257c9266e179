//! Device groups of the caller's provider: list, get, and the devices in a group.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Postgres, QueryBuilder};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::api::error::ApiError;
use crate::api::extract::{ApiPath, ApiQuery, Authed};
use crate::api::pagination::{Page, PageParams};
use crate::api::{AppState, ErrorBody};

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
    let (limit, after) = (page.limit()?, page.after()?);
    let mut qb = QueryBuilder::<Postgres>::new(COLUMNS);
    if let Some(p) = caller.provider_id {
        qb.push(" AND g.provider_id = ").push_bind(p);
    }
    if let Some(after) = after {
        qb.push(" AND g.id > ").push_bind(after);
    }
    qb.push(" ORDER BY g.id LIMIT ").push_bind(i64::from(limit) + 1);
    let mut tx = caller.tx(&state.pool, None).await?;
    let rows: Vec<Group> = qb.build_query_as().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(axum::Json(Page::from_rows(rows, limit, |g| g.id)))
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
    let mut tx = caller.tx(&state.pool, None).await?;
    let row: Option<Group> = QueryBuilder::<Postgres>::new(COLUMNS)
        .push(" AND g.id = ")
        .push_bind(id)
        .build_query_as()
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    row.map(axum::Json).ok_or(ApiError::NotFound)
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
    let provider: Option<Uuid> = sqlx::query_scalar("SELECT provider_id FROM device_groups WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let provider = provider.ok_or(ApiError::NotFound)?;
    let mut qb = QueryBuilder::<Postgres>::new(
        "SELECT device_id, added_at FROM device_group_members WHERE provider_id = ",
    );
    qb.push_bind(provider).push(" AND group_id = ").push_bind(id);
    if let Some(after) = after {
        qb.push(" AND device_id > ").push_bind(after);
    }
    qb.push(" ORDER BY device_id LIMIT ").push_bind(i64::from(limit) + 1);
    let rows: Vec<Member> = qb.build_query_as().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(axum::Json(Page::from_rows(rows, limit, |m| m.device_id)))
}
