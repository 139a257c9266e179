//! POPs of the caller's provider: list and get.

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
    let (limit, after) = (page.limit()?, page.after()?);
    let mut qb = QueryBuilder::<Postgres>::new(COLUMNS);
    if let Some(p) = caller.provider_id {
        qb.push(" AND provider_id = ").push_bind(p);
    }
    if let Some(after) = after {
        qb.push(" AND id > ").push_bind(after);
    }
    qb.push(" ORDER BY id LIMIT ").push_bind(i64::from(limit) + 1);
    let mut tx = caller.tx(&state.pool, None).await?;
    let rows: Vec<Pop> = qb.build_query_as().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(axum::Json(Page::from_rows(rows, limit, |p| p.id)))
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
    let mut tx = caller.tx(&state.pool, None).await?;
    let pop: Option<Pop> = QueryBuilder::<Postgres>::new(COLUMNS)
        .push(" AND id = ")
        .push_bind(id)
        .build_query_as()
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    pop.map(axum::Json).ok_or(ApiError::NotFound)
}
