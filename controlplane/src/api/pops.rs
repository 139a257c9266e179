//! POPs of the caller's provider: list, get, create, rename, delete.

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

/// A point of presence.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Pop {
    /// Its id.
    pub id: Uuid,
    /// Its provider.
    pub provider_id: Uuid,
    /// Short name, unique within the provider.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "SELECT id, provider_id, slug, name, created_at FROM pops WHERE true";

/// Lists the caller's POPs in id order.
#[utoipa::path(get, path = "/api/v1/pops", tag = "pops", params(PageParams),
    responses((status = 200, body = Page<Pop>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<axum::Json<Page<Pop>>, ApiError> {
    caller.require("pops:read")?;
    let qb = QueryBuilder::<Postgres>::new(COLUMNS);
    let page = fetch_page(&state.pool, &caller, qb, "", &page, |p: &Pop| p.id).await?;
    Ok(axum::Json(page))
}

/// One POP.
#[utoipa::path(get, path = "/api/v1/pops/{id}", tag = "pops", params(("id" = Uuid, Path, description = "POP id")),
    responses((status = 200, body = Pop), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<Pop>, ApiError> {
    caller.require("pops:read")?;
    fetch_one(&state.pool, &caller, COLUMNS, "", id)
        .await
        .map(axum::Json)
}

/// A new POP.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPop {
    /// Short name, unique within the provider (`a-z0-9-`).
    pub slug: String,
    /// Display name.
    pub name: String,
}

/// Changes to a POP.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PopUpdate {
    /// New display name.
    pub name: Option<String>,
}

/// Creates a POP in the caller's provider.
#[utoipa::path(post, path = "/api/v1/pops", tag = "pops", request_body = NewPop,
    responses((status = 201, body = Pop), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(body): ApiJson<NewPop>,
) -> Result<(StatusCode, axum::Json<Pop>), ApiError> {
    caller.require("pops:write")?;
    let provider = own_provider(&caller)?;
    let slug = validate::slug("slug", &body.slug)?;
    let name = validate::name("name", &body.name)?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let pop: Pop = sqlx::query_as(
        "INSERT INTO pops (provider_id, slug, name) VALUES ($1, $2, $3) \
         RETURNING id, provider_id, slug, name, created_at",
    )
    .bind(provider)
    .bind(&slug)
    .bind(&name)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        &caller,
        "pops.create",
        "pop",
        Some(&pop.id.to_string()),
        None,
        to_json(&pop),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(pop)))
}

/// Renames a POP.
#[utoipa::path(patch, path = "/api/v1/pops/{id}", tag = "pops", request_body = PopUpdate,
    params(("id" = Uuid, Path, description = "POP id")),
    responses((status = 200, body = Pop), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<PopUpdate>,
) -> Result<axum::Json<Pop>, ApiError> {
    caller.require("pops:write")?;
    let name = body
        .name
        .as_deref()
        .map(|n| validate::name("name", n))
        .transpose()?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let before: Pop = QueryBuilder::<Postgres>::new(COLUMNS)
        .push(" AND id = ")
        .push_bind(id)
        .push(" FOR UPDATE")
        .build_query_as()
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ApiError::NotFound)?;
    let after: Pop = sqlx::query_as(
        "UPDATE pops SET name = coalesce($3, name) WHERE provider_id = $1 AND id = $2 \
         RETURNING id, provider_id, slug, name, created_at",
    )
    .bind(before.provider_id)
    .bind(id)
    .bind(name)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        &caller,
        "pops.update",
        "pop",
        Some(&id.to_string()),
        to_json(&before),
        to_json(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(after))
}

/// Deletes a POP (409 while customers, devices or agents refer to it).
#[utoipa::path(delete, path = "/api/v1/pops/{id}", tag = "pops", params(("id" = Uuid, Path, description = "POP id")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    caller.require("pops:write")?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let before: Pop = sqlx::query_as(
        "DELETE FROM pops WHERE id = $1 RETURNING id, provider_id, slug, name, created_at",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound)?;
    audit::record(
        &mut tx,
        &caller,
        "pops.delete",
        "pop",
        Some(&id.to_string()),
        to_json(&before),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
