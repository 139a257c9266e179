//! Providers (tenants): Global Admins only, through the audited global-admin path.

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
use crate::auth::Caller;

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
    qb.push(" ORDER BY id LIMIT ").push_bind(i64::from(limit) + 1);
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
