//! Customers (subscribers) of the caller's provider: list and get.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::api::devices::{filter_value, like_prefix};
use crate::api::error::ApiError;
use crate::api::extract::{ApiPath, ApiQuery, Authed};
use crate::api::pagination::{Page, PageParams};
use crate::api::{AppState, ErrorBody};

/// A customer.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Customer {
    /// Its id.
    pub id: Uuid,
    /// Its provider.
    pub provider_id: Uuid,
    /// The POP serving it, if placed.
    pub pop_id: Option<Uuid>,
    /// Name.
    pub name: String,
    /// The provider's own reference (contract number...), unique within the provider.
    pub external_ref: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// Filters of the customer list.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CustomerFilters {
    /// POP id.
    pub pop: Option<Uuid>,
    /// Name prefix.
    pub q: Option<String>,
    /// Items per page, 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

const COLUMNS: &str = "SELECT id, provider_id, pop_id, name, external_ref, created_at FROM customers WHERE true";

/// Lists the caller's customers in id order.
#[utoipa::path(get, path = "/api/v1/customers", tag = "customers", params(CustomerFilters),
    responses((status = 200, body = Page<Customer>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(f): ApiQuery<CustomerFilters>,
) -> Result<axum::Json<Page<Customer>>, ApiError> {
    caller.require("customers:read")?;
    let page = PageParams {
        limit: f.limit,
        cursor: f.cursor.clone(),
    };
    let (limit, after) = (page.limit()?, page.after()?);
    let mut qb = QueryBuilder::<Postgres>::new(COLUMNS);
    if let Some(p) = caller.provider_id {
        qb.push(" AND provider_id = ").push_bind(p);
    }
    if let Some(pop) = f.pop {
        qb.push(" AND pop_id = ").push_bind(pop);
    }
    if let Some(q) = &f.q {
        qb.push(" AND name LIKE ").push_bind(like_prefix(filter_value("q", q)?));
    }
    if let Some(after) = after {
        qb.push(" AND id > ").push_bind(after);
    }
    qb.push(" ORDER BY id LIMIT ").push_bind(i64::from(limit) + 1);
    let mut tx = caller.tx(&state.pool, None).await?;
    let rows: Vec<Customer> = qb.build_query_as().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(axum::Json(Page::from_rows(rows, limit, |c| c.id)))
}

/// One customer.
#[utoipa::path(get, path = "/api/v1/customers/{id}", tag = "customers",
    params(("id" = Uuid, Path, description = "Customer id")),
    responses((status = 200, body = Customer), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<Customer>, ApiError> {
    caller.require("customers:read")?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let row: Option<Customer> = QueryBuilder::<Postgres>::new(COLUMNS)
        .push(" AND id = ")
        .push_bind(id)
        .build_query_as()
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    row.map(axum::Json).ok_or(ApiError::NotFound)
}
