//! Providers (tenants): Global Admins only, through the audited global-admin path.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::api::error::ApiError;
use crate::api::extract::{ApiJson, ApiPath, ApiQuery, Authed};
use crate::api::pagination::{Page, PageParams};
use crate::api::{AppState, ErrorBody, to_json, validate};
use crate::audit;
use crate::auth::Caller;
use crate::registry::Tier;

/// A provider.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Provider {
    /// Its id.
    pub id: Uuid,
    /// Short unique name.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// `small`, `medium` or `large`.
    pub tier: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "SELECT id, slug, name, tier, created_at FROM providers WHERE true";

/// 403 unless the caller is a Global Admin (`providers:*` are global-only permissions; checked twice on purpose).
fn require_global_admin(caller: &Caller, permission: &str) -> Result<(), ApiError> {
    caller.require(permission)?;
    if caller.global_admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden(permission.to_owned()))
    }
}

/// Lists every provider in id order (Global Admin).
#[utoipa::path(get, path = "/api/v1/providers", tag = "providers", params(PageParams),
    responses((status = 200, body = Page<Provider>), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<axum::Json<Page<Provider>>, ApiError> {
    require_global_admin(&caller, "providers:read")?;
    let (limit, after) = (page.limit()?, page.after()?);
    let mut qb = QueryBuilder::<Postgres>::new(COLUMNS);
    if let Some(after) = after {
        qb.push(" AND id > ").push_bind(after);
    }
    qb.push(" ORDER BY id LIMIT ")
        .push_bind(i64::from(limit) + 1);
    let mut tx = caller.tx(&state.pool, None).await?;
    let rows: Vec<Provider> = qb.build_query_as().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(axum::Json(Page::from_rows(rows, limit, |p| p.id)))
}

/// One provider (Global Admin).
#[utoipa::path(get, path = "/api/v1/providers/{id}", tag = "providers",
    params(("id" = Uuid, Path, description = "Provider id")),
    responses((status = 200, body = Provider), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<Provider>, ApiError> {
    require_global_admin(&caller, "providers:read")?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let row: Option<Provider> = QueryBuilder::<Postgres>::new(COLUMNS)
        .push(" AND id = ")
        .push_bind(id)
        .build_query_as()
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    row.map(axum::Json).ok_or(ApiError::NotFound)
}

/// A new provider.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProvider {
    /// Short unique name (`a-z0-9-`).
    pub slug: String,
    /// Display name.
    pub name: String,
    /// `small`, `medium` or `large` (default `small`).
    pub tier: Option<String>,
}

/// Changes to a provider.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderUpdate {
    /// New display name.
    pub name: Option<String>,
    /// New tier: `small`, `medium` or `large`.
    pub tier: Option<String>,
}

fn tier(v: &str) -> Result<&'static str, ApiError> {
    v.parse::<Tier>()
        .map(Tier::as_str)
        .map_err(|_| ApiError::BadRequest("tier: one of small, medium, large".into()))
}

/// Creates a provider (Global Admin; audited on the global chain).
#[utoipa::path(post, path = "/api/v1/providers", tag = "providers", request_body = NewProvider,
    responses((status = 201, body = Provider), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(body): ApiJson<NewProvider>,
) -> Result<(StatusCode, axum::Json<Provider>), ApiError> {
    require_global_admin(&caller, "providers:write")?;
    let slug = validate::slug("slug", &body.slug)?;
    let name = validate::name("name", &body.name)?;
    let tier = tier(body.tier.as_deref().unwrap_or("small"))?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let provider: Provider = sqlx::query_as(
        "INSERT INTO providers (slug, name, tier) VALUES ($1, $2, $3) RETURNING id, slug, name, tier, created_at",
    )
    .bind(&slug)
    .bind(&name)
    .bind(tier)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        &caller,
        "providers.create",
        "provider",
        Some(&provider.id.to_string()),
        None,
        to_json(&provider),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(provider)))
}

/// Changes a provider's name or tier (Global Admin; audited on the global chain).
#[utoipa::path(patch, path = "/api/v1/providers/{id}", tag = "providers", request_body = ProviderUpdate,
    params(("id" = Uuid, Path, description = "Provider id")),
    responses((status = 200, body = Provider), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<ProviderUpdate>,
) -> Result<axum::Json<Provider>, ApiError> {
    require_global_admin(&caller, "providers:write")?;
    let name = body
        .name
        .as_deref()
        .map(|n| validate::name("name", n))
        .transpose()?;
    let tier = body.tier.as_deref().map(tier).transpose()?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let before: Provider = QueryBuilder::<Postgres>::new(COLUMNS)
        .push(" AND id = ")
        .push_bind(id)
        .push(" FOR UPDATE")
        .build_query_as()
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ApiError::NotFound)?;
    let after: Provider = sqlx::query_as(
        "UPDATE providers SET name = coalesce($2, name), tier = coalesce($3, tier) WHERE id = $1 \
         RETURNING id, slug, name, tier, created_at",
    )
    .bind(id)
    .bind(name)
    .bind(tier)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        &caller,
        "providers.update",
        "provider",
        Some(&id.to_string()),
        to_json(&before),
        to_json(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(after))
}
