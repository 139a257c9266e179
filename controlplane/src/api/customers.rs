//! Customers (subscribers) of the caller's provider: list, get, create, change, delete.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::api::devices::{filter_value, like_prefix};
use crate::api::error::ApiError;
use crate::api::extract::{ApiJson, ApiPath, ApiQuery, Authed};
use crate::api::pagination::{Page, PageParams, fetch_one, fetch_page};
use crate::api::{AppState, ErrorBody, own_provider, to_json, validate};
use crate::audit;

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

const COLUMNS: &str =
    "SELECT id, provider_id, pop_id, name, external_ref, created_at FROM customers WHERE true";

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
    let mut qb = QueryBuilder::<Postgres>::new(COLUMNS);
    if let Some(pop) = f.pop {
        qb.push(" AND pop_id = ").push_bind(pop);
    }
    if let Some(q) = &f.q {
        qb.push(" AND name LIKE ")
            .push_bind(like_prefix(filter_value("q", q)?));
    }
    let page = fetch_page(&state.pool, &caller, qb, "", &page, |c: &Customer| c.id).await?;
    Ok(axum::Json(page))
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
    fetch_one(&state.pool, &caller, COLUMNS, "", id)
        .await
        .map(axum::Json)
}

/// A new customer.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCustomer {
    /// Name (stored verbatim, 1 to 200 characters).
    pub name: String,
    /// POP serving the customer.
    pub pop_id: Option<Uuid>,
    /// The provider's own reference, unique within the provider.
    pub external_ref: Option<String>,
}

/// Changes to a customer (absent: unchanged; `null`: cleared).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerUpdate {
    /// New name.
    pub name: Option<String>,
    /// New POP, or `null` for none.
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<Uuid>)]
    pub pop_id: Option<Option<Uuid>>,
    /// New reference, or `null` for none.
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<String>)]
    pub external_ref: Option<Option<String>>,
}

const RETURNING: &str = " RETURNING id, provider_id, pop_id, name, external_ref, created_at";

/// 404 unless the POP is visible to the transaction's tenant.
async fn check_pop(tx: &mut sqlx::PgConnection, pop: Option<Uuid>) -> Result<(), ApiError> {
    if let Some(pop) = pop {
        let found: Option<Uuid> = sqlx::query_scalar("SELECT id FROM pops WHERE id = $1")
            .bind(pop)
            .fetch_optional(&mut *tx)
            .await?;
        found.ok_or_else(|| ApiError::BadRequest(format!("pop_id: no POP {pop}")))?;
    }
    Ok(())
}

/// Creates a customer in the caller's provider.
#[utoipa::path(post, path = "/api/v1/customers", tag = "customers", request_body = NewCustomer,
    responses((status = 201, body = Customer), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(body): ApiJson<NewCustomer>,
) -> Result<(StatusCode, axum::Json<Customer>), ApiError> {
    caller.require("customers:write")?;
    let provider = own_provider(&caller)?;
    let name = validate::name("name", &body.name)?;
    let external_ref = body
        .external_ref
        .as_deref()
        .map(|r| validate::name("external_ref", r))
        .transpose()?;
    let mut tx = caller.tx(&state.pool, None).await?;
    check_pop(&mut tx, body.pop_id).await?;
    let customer: Customer = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO customers (provider_id, pop_id, name, external_ref) VALUES ($1, $2, $3, $4){RETURNING}"
    )))
    .bind(provider)
    .bind(body.pop_id)
    .bind(&name)
    .bind(&external_ref)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        &caller,
        "customers.create",
        "customer",
        Some(&customer.id.to_string()),
        None,
        to_json(&customer),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(customer)))
}

/// Changes a customer.
#[utoipa::path(patch, path = "/api/v1/customers/{id}", tag = "customers", request_body = CustomerUpdate,
    params(("id" = Uuid, Path, description = "Customer id")),
    responses((status = 200, body = Customer), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<CustomerUpdate>,
) -> Result<axum::Json<Customer>, ApiError> {
    caller.require("customers:write")?;
    let name = body
        .name
        .as_deref()
        .map(|n| validate::name("name", n))
        .transpose()?;
    let external_ref = match &body.external_ref {
        Some(Some(r)) => Some(Some(validate::name("external_ref", r)?)),
        other => other.clone(),
    };
    let mut tx = caller.tx(&state.pool, None).await?;
    let before: Customer = QueryBuilder::<Postgres>::new(COLUMNS)
        .push(" AND id = ")
        .push_bind(id)
        .push(" FOR UPDATE")
        .build_query_as()
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ApiError::NotFound)?;
    if let Some(pop) = body.pop_id {
        check_pop(&mut tx, pop).await?;
    }
    let after: Customer = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE customers SET name = $3, pop_id = $4, external_ref = $5 WHERE provider_id = $1 AND id = $2{RETURNING}"
    )))
    .bind(before.provider_id)
    .bind(id)
    .bind(name.unwrap_or_else(|| before.name.clone()))
    .bind(body.pop_id.unwrap_or(before.pop_id))
    .bind(external_ref.unwrap_or_else(|| before.external_ref.clone()))
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        &caller,
        "customers.update",
        "customer",
        Some(&id.to_string()),
        to_json(&before),
        to_json(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(after))
}

/// Deletes a customer (409 while devices refer to it).
#[utoipa::path(delete, path = "/api/v1/customers/{id}", tag = "customers",
    params(("id" = Uuid, Path, description = "Customer id")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    caller.require("customers:write")?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let before: Customer = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "DELETE FROM customers WHERE id = $1{RETURNING}"
    )))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound)?;
    audit::record(
        &mut tx,
        &caller,
        "customers.delete",
        "customer",
        Some(&id.to_string()),
        to_json(&before),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
