//! Devices: search (serial prefix, IP or CIDR, vendor, status, POP, tag, name/serial prefix), get, change
//! (name, customer, tags), delete. Devices are created by ingest (inventory from agents), not by the API.

use std::net::IpAddr;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::api::error::ApiError;
use crate::api::extract::{ApiJson, ApiPath, ApiQuery, Authed};
use crate::api::pagination::{Page, PageParams};
use crate::api::{AppState, ErrorBody, to_json, validate};
use crate::audit;

/// Longest prefix or value accepted in a search filter.
const MAX_FILTER_CHARS: usize = 200;

const COLUMNS: &str = "SELECT id, provider_id, pop_id, customer_id, name, device_key, vendor, model, serial_number, \
     oui, product_class, firmware, host(mgmt_ip) AS mgmt_ip, tags, first_seen, last_seen, \
     last_seen > now() - make_interval(secs => ";

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

/// An IP filter: one address or a network.
#[derive(Debug, Clone, PartialEq, Eq)]
enum IpFilter {
    Exact(IpAddr),
    Within(IpAddr, u8),
}

fn parse_ip_filter(s: &str) -> Result<IpFilter, ApiError> {
    let bad = || {
        ApiError::BadRequest(format!(
            "ip: `{}` is neither an address nor a CIDR",
            truncate(s)
        ))
    };
    match s.split_once('/') {
        None => s.trim().parse().map(IpFilter::Exact).map_err(|_| bad()),
        Some((addr, len)) => {
            let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
            let len: u8 = len.trim().parse().map_err(|_| bad())?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            if len > max {
                return Err(bad());
            }
            Ok(IpFilter::Within(addr, len))
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
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

/// Lists the caller's devices, filtered, in id order.
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
    let page = PageParams {
        limit: f.limit,
        cursor: f.cursor.clone(),
    };
    let limit = page.limit()?;
    let after = page.after()?;
    let mut qb = QueryBuilder::<Postgres>::new(COLUMNS);
    qb.push_bind(state.config.online_threshold_secs as f64);
    qb.push(") AS online FROM devices WHERE true");
    if let Some(p) = caller.provider_id {
        qb.push(" AND provider_id = ").push_bind(p);
    }
    if let Some(serial) = &f.serial {
        let serial = filter_value("serial", serial)?;
        qb.push(" AND serial_number LIKE ")
            .push_bind(like_prefix(serial));
    }
    if let Some(ip) = &f.ip {
        match parse_ip_filter(filter_value("ip", ip)?)? {
            IpFilter::Exact(a) => {
                qb.push(" AND mgmt_ip = ")
                    .push_bind(a.to_string())
                    .push("::inet");
            }
            IpFilter::Within(a, len) => {
                qb.push(" AND mgmt_ip <<= ")
                    .push_bind(format!("{a}/{len}"))
                    .push("::inet");
            }
        }
    }
    if let Some(vendor) = &f.vendor {
        qb.push(" AND vendor = ")
            .push_bind(filter_value("vendor", vendor)?.to_owned());
    }
    match f.status {
        Some(Status::Online) => {
            qb.push(" AND last_seen > now() - make_interval(secs => ")
                .push_bind(state.config.online_threshold_secs as f64)
                .push(")");
        }
        Some(Status::Offline) => {
            qb.push(" AND last_seen <= now() - make_interval(secs => ")
                .push_bind(state.config.online_threshold_secs as f64)
                .push(")");
        }
        None => {}
    }
    if let Some(pop) = f.pop {
        qb.push(" AND pop_id = ").push_bind(pop);
    }
    if let Some(tag) = &f.tag {
        qb.push(" AND tags @> ARRAY[")
            .push_bind(filter_value("tag", tag)?.to_owned())
            .push("]::text[]");
    }
    if let Some(q) = &f.q {
        let pattern = like_prefix(filter_value("q", q)?);
        qb.push(" AND (name LIKE ")
            .push_bind(pattern.clone())
            .push(" OR serial_number LIKE ")
            .push_bind(pattern)
            .push(")");
    }
    if let Some(after) = after {
        qb.push(" AND id > ").push_bind(after);
    }
    qb.push(" ORDER BY id LIMIT ")
        .push_bind(i64::from(limit) + 1);
    let mut tx = caller.tx(&state.pool, None).await?;
    let rows: Vec<Device> = qb.build_query_as().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(axum::Json(Page::from_rows(rows, limit, |d| d.id)))
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
    tx.commit().await?;
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
    qb.push(") AS online FROM devices WHERE id = ")
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
    fn ip_filters_parse_or_refuse() {
        assert_eq!(
            parse_ip_filter("192.0.2.1").unwrap(),
            IpFilter::Exact("192.0.2.1".parse().unwrap())
        );
        assert_eq!(
            parse_ip_filter("2001:db8::/32").unwrap(),
            IpFilter::Within("2001:db8::".parse().unwrap(), 32)
        );
        assert!(parse_ip_filter("192.0.2.0/33").is_err());
        assert!(parse_ip_filter("' OR 1=1 --").is_err());
    }

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
