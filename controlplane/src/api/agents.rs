//! Agents of the caller's provider: list and get.

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
    let rows: Vec<Agent> = qb.build_query_as().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(axum::Json(Page::from_rows(rows, limit, |a| a.id)))
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
    let mut tx = caller.tx(&state.pool, None).await?;
    let row: Option<Agent> = QueryBuilder::<Postgres>::new(COLUMNS)
        .push(" AND id = ")
        .push_bind(id)
        .build_query_as()
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    row.map(axum::Json).ok_or(ApiError::NotFound)
}
