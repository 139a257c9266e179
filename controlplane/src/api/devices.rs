//! Devices: search (serial prefix, IP or CIDR, vendor, status, POP, tag, name/serial prefix), get, change
//! (name, customer, tags), delete. Devices are created by ingest (inventory from agents), not by the API.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::api::device_search;
use crate::api::error::ApiError;
use crate::api::extract::{ApiJson, ApiPath, ApiQuery, Authed};
use crate::api::pagination::{Page, PageParams, decode_key_cursor, encode_key_cursor};
use crate::api::{AppState, ErrorBody, to_json, validate};
use crate::audit;

/// Longest prefix or value accepted in a search filter.
const MAX_FILTER_CHARS: usize = 200;

/// The columns of a device over alias `d`, up to the online threshold (bound next) and `) AS online`.
const COLUMNS: &str = "SELECT d.id, d.provider_id, d.pop_id, d.customer_id, d.name, d.device_key, d.vendor, d.model, \
     d.serial_number, d.oui, d.product_class, d.firmware, host(d.mgmt_ip) AS mgmt_ip, d.tags, d.first_seen, \
     d.last_seen, d.last_seen > now() - make_interval(secs => ";

/// A device as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Device {
    /// Its id.
    pub id: Uuid,
    /// Its provider.
    pub provider_id: Uuid,
    /// The POP whose agent reaches it.
    pub pop_id: Uuid,
    /// The customer it serves, if any.
    pub customer_id: Option<Uuid>,
    /// Display name set by an operator.
    pub name: Option<String>,
    /// The agent-scoped natural key.
    pub device_key: String,
    /// Vendor.
    pub vendor: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Serial number (TR-069 SerialNumber).
    pub serial_number: Option<String>,
    /// TR-069 ManufacturerOUI.
    pub oui: Option<String>,
    /// TR-069 ProductClass.
    pub product_class: Option<String>,
    /// Firmware version.
    pub firmware: Option<String>,
    /// Management address.
    pub mgmt_ip: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// First report.
    pub first_seen: DateTime<Utc>,
    /// Latest report.
    pub last_seen: DateTime<Utc>,
    /// Whether it reported within the online threshold.
    pub online: bool,
}

/// Online status filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Seen within the threshold (`api.online_threshold_secs`).
    Online,
    /// Not seen within the threshold.
    Offline,
}

/// Filters of the device list (all optional, combined with AND).
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeviceFilters {
    /// Serial number prefix.
    pub serial: Option<String>,
    /// Management IP (exact) or CIDR (devices inside it).
    pub ip: Option<String>,
    /// Vendor (exact).
    pub vendor: Option<String>,
    /// `online` or `offline`.
    #[param(inline)]
    pub status: Option<Status>,
    /// POP id.
    pub pop: Option<Uuid>,
    /// Tag the device carries.
    pub tag: Option<String>,
    /// Prefix of the name or of the serial number.
    pub q: Option<String>,
    /// Items per page, 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Checks a free-text filter value: bounded, no NUL (PostgreSQL refuses NUL in text).
pub(crate) fn filter_value<'a>(what: &str, v: &'a str) -> Result<&'a str, ApiError> {
    if v.is_empty() || v.chars().count() > MAX_FILTER_CHARS || v.contains('\0') {
        return Err(ApiError::BadRequest(format!(
            "{what}: use 1 to {MAX_FILTER_CHARS} characters, no NUL"
        )));
    }
    Ok(v)
}

/// `LIKE` pattern matching strings that start with `prefix` (wildcards in it escaped).
pub(crate) fn like_prefix(prefix: &str) -> String {
    let mut p = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// Lists the caller's devices, filtered: in id order, or in the order of the prefix searched (`serial`, `q`).
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", params(DeviceFilters),
    responses((status = 200, body = Page<Device>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(f): ApiQuery<DeviceFilters>,
) -> Result<axum::Json<Page<Device>>, ApiError> {
    caller.require("devices:read")?;
    let limit = PageParams {
        limit: f.limit,
        cursor: None,
    }
    .limit()?;
    let after = f
        .cursor
        .as_deref()
        .map(decode_key_cursor)
        .transpose()?
        .map(|(key, id)| {
            device_search::check_key(&key)?;
            Ok::<_, ApiError>(device_search::After { key, id })
        })
        .transpose()?;
    let order = device_search::Order::of(&f)?;
    let filters = device_search::Filters::new(
        &f,
        caller.provider_id,
        state.config.online_threshold_secs as f64,
    )?;
    let mut columns = QueryBuilder::<Postgres>::new(COLUMNS);
    columns.push_bind(state.config.online_threshold_secs as f64);
    columns.push(") AS online");
    let mut qb = device_search::build(
        columns,
        &filters,
        &order,
        after.as_ref(),
        i64::from(limit) + 1,
    );
    let mut tx = caller
        .tx_planned(&state.pool, None, filters.plans(&order))
        .await?;
    let rows: Vec<Device> = qb.build_query_as().fetch_all(&mut *tx).await?;
    crate::db::end_read(tx);
    Ok(axum::Json(Page::from_rows_keyed(rows, limit, |d| {
        encode_key_cursor(
            order.key(d.name.as_deref(), d.serial_number.as_deref()),
            d.id,
        )
    })))
}

/// One device.
#[utoipa::path(get, path = "/api/v1/devices/{id}", tag = "devices", params(("id" = Uuid, Path, description = "Device id")),
    responses((status = 200, body = Device), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<Device>, ApiError> {
    caller.require("devices:read")?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let device = fetch(&mut tx, &state, id).await?;
    crate::db::end_read(tx);
    Ok(axum::Json(device))
}

/// Reads one device in `tx` (404 when it is not visible).
pub(crate) async fn fetch(
    tx: &mut sqlx::PgConnection,
    state: &AppState,
    id: Uuid,
) -> Result<Device, ApiError> {
    let mut qb = QueryBuilder::<Postgres>::new(COLUMNS);
    qb.push_bind(state.config.online_threshold_secs as f64);
    qb.push(") AS online FROM devices d WHERE d.id = ")
        .push_bind(id);
    qb.build_query_as()
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ApiError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_prefixes_escape_wildcards() {
        assert_eq!(like_prefix("ab%_\\"), "ab\\%\\_\\\\%");
    }
}

/// Changes to a device (absent: unchanged; `null`: cleared).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceUpdate {
    /// New display name, or `null` for none.
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    /// New customer, or `null` for none.
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<Uuid>)]
    pub customer_id: Option<Option<Uuid>>,
    /// The complete new list of tags.
    pub tags: Option<Vec<String>>,
}

/// Changes a device's name, customer or tags.
#[utoipa::path(patch, path = "/api/v1/devices/{id}", tag = "devices", request_body = DeviceUpdate,
    params(("id" = Uuid, Path, description = "Device id")),
    responses((status = 200, body = Device), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<DeviceUpdate>,
) -> Result<axum::Json<Device>, ApiError> {
    caller.require("devices:write")?;
    let name = match &body.name {
        Some(Some(n)) => Some(Some(validate::name("name", n)?)),
        other => other.clone(),
    };
    let tags = body.tags.as_deref().map(validate::tags).transpose()?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let before = fetch(&mut tx, &state, id).await?;
    if let Some(Some(customer)) = body.customer_id {
        let found: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM customers WHERE provider_id = $1 AND id = $2")
                .bind(before.provider_id)
                .bind(customer)
                .fetch_optional(&mut *tx)
                .await?;
        found
            .ok_or_else(|| ApiError::BadRequest(format!("customer_id: no customer {customer}")))?;
    }
    sqlx::query("UPDATE devices SET name = $3, customer_id = $4, tags = $5 WHERE provider_id = $1 AND id = $2")
        .bind(before.provider_id)
        .bind(id)
        .bind(name.unwrap_or_else(|| before.name.clone()))
        .bind(body.customer_id.unwrap_or(before.customer_id))
        .bind(tags.unwrap_or_else(|| before.tags.clone()))
        .execute(&mut *tx)
        .await?;
    let after = fetch(&mut tx, &state, id).await?;
    audit::record(
        &mut tx,
        &caller,
        "devices.update",
        "device",
        Some(&id.to_string()),
        to_json(&before),
        to_json(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(after))
}

/// Deletes a device (its group memberships go with it; 409 while metric series refer to it).
#[utoipa::path(delete, path = "/api/v1/devices/{id}", tag = "devices", params(("id" = Uuid, Path, description = "Device id")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    caller.require("devices:write")?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let before = fetch(&mut tx, &state, id).await?;
    sqlx::query("DELETE FROM devices WHERE provider_id = $1 AND id = $2")
        .bind(before.provider_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        &caller,
        "devices.delete",
        "device",
        Some(&id.to_string()),
        to_json(&before),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
