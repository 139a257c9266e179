//! A CPE's TR-069 data as the console shows it: its identity, the newest known value of each parameter (from the
//! `tr069_results` ingest stored: Inform changes, get/refresh/set results), a normalized summary (WAN, Wi-Fi,
//! optical power with a green/yellow/red range), and the `tr069.*` commands sent about it with their results.
//!
//! Newest wins per parameter: the value of the result with the latest `ts` (ties: the latest id, UUIDv7). Only
//! successful results of the kinds that carry parameter values count ([`VALUE_KINDS`]); a `TransferComplete`'s
//! `CommandKey` is not a parameter. Writing goes through the commands API (`tr069.set_params`, `tr069:write`).
//!
//! Whether a parameter is writable is known in two ways, both partial: a successful write of it (`set`), or the
//! BBF data models (TR-098, TR-181), which define some leaves as read-only (status, counters, optical levels):
//! `data_model`. Otherwise the API says nothing (`null`); the CPE refuses a write of a read-only parameter with
//! CWMP fault 9008, which the task then shows.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use axum::extract::State;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::api::commands::CommandView;
use crate::api::error::ApiError;
use crate::api::extract::{ApiPath, ApiQuery, Authed};
use crate::api::pagination::{Page, PageParams};
use crate::api::{AppState, ErrorBody, devices};

/// Permission to read a CPE's TR-069 data and tasks.
const READ: &str = "tr069:read";
/// Result kinds whose parameters are values of the CPE's tree (agent task names and CWMP RPC names).
pub const VALUE_KINDS: [&str; 6] = [
    "ParameterChanges",
    "get",
    "refresh",
    "set",
    "GetParameterValues",
    "SetParameterValues",
];
/// Result kinds that are writes: a parameter in a successful one is writable.
const WRITE_KINDS: [&str; 2] = ["set", "SetParameterValues"];
/// Most distinct parameters read for one CPE (the largest real trees have ~10,000).
const MAX_PARAMETERS: i64 = 50_000;
/// Parameters per page when `limit` is absent, and the most a page may hold.
const DEFAULT_PAGE: u32 = 200;
const MAX_PAGE: u32 = 1000;
/// Longest prefix or search text accepted.
const MAX_FILTER_CHARS: usize = 256;

/// Optical power ranges, GPON ITU-T G.984.2 class B+ at the ONT: receiver sensitivity -27 dBm, overload -8 dBm;
/// transmitter +0.5 to +5 dBm. Green inside the range with a margin, yellow within the margin of its edge,
/// red outside.
pub const RX_RANGE: OpticalRange = OpticalRange {
    green_min: -25.0,
    green_max: -8.0,
    yellow_min: -27.0,
    yellow_max: -7.0,
};
/// See [`RX_RANGE`].
pub const TX_RANGE: OpticalRange = OpticalRange {
    green_min: 0.5,
    green_max: 5.0,
    yellow_min: 0.0,
    yellow_max: 5.5,
};

/// A green/yellow/red range of an optical level, dBm.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct OpticalRange {
    /// Lowest green value.
    pub green_min: f64,
    /// Highest green value.
    pub green_max: f64,
    /// Lowest yellow value (below: red).
    pub yellow_min: f64,
    /// Highest yellow value (above: red).
    pub yellow_max: f64,
}

/// Where a value stands in its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// In range.
    Green,
    /// Near an edge.
    Yellow,
    /// Out of range.
    Red,
}

impl OpticalRange {
    /// The level of `dbm`.
    pub fn level(&self, dbm: f64) -> Level {
        if (self.green_min..=self.green_max).contains(&dbm) {
            Level::Green
        } else if (self.yellow_min..=self.yellow_max).contains(&dbm) {
            Level::Yellow
        } else {
            Level::Red
        }
    }
}

/// One parameter with its newest known value.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Parameter {
    /// Full path, such as `InternetGatewayDevice.LANDevice.1.WLANConfiguration.1.SSID`.
    pub name: String,
    /// Value as the CPE reported it.
    pub value: String,
    /// When it was reported (the result's time).
    pub ts: DateTime<Utc>,
    /// What reported it: `ParameterChanges` (an Inform), `get`, `refresh`, `set`.
    pub source: String,
    /// Writable, when known (see `writable_source`); `null`: unknown.
    #[sqlx(skip)]
    pub writable: Option<bool>,
    /// `set` (a write succeeded) or `data_model` (read-only in TR-098/TR-181); `null` when unknown.
    #[sqlx(skip)]
    pub writable_source: Option<String>,
}

/// An object one level below the prefix browsed, with how many parameters it holds.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Child {
    /// Its path, ending in `.`.
    pub path: String,
    /// Parameters under it (after the search filter).
    pub parameters: u64,
}

/// The WAN connection in use.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct WanSummary {
    /// `pppoe`, `dhcp`, `static`, `bridge` or the CPE's own word.
    pub connection_type: Option<String>,
    /// The external IPv4 address.
    pub ip: Option<String>,
    /// `up` or `down`, from ConnectionStatus / Status.
    pub status: Option<String>,
    /// The PPPoE user name.
    pub pppoe_user: Option<String>,
    /// The connection object the values come from.
    pub path: Option<String>,
}

/// Wi-Fi.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct WifiSummary {
    /// Every distinct SSID.
    pub ssids: Vec<String>,
    /// Channel of the first radio.
    pub channel: Option<i64>,
    /// Associated clients, all radios.
    pub clients: Option<i64>,
}

/// Optical power at the ONT.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OpticalSummary {
    /// Received power, dBm (rounded to 0.01).
    pub rx_dbm: Option<f64>,
    /// Its level in [`RX_RANGE`].
    pub rx_level: Option<Level>,
    /// Transmitted power, dBm.
    pub tx_dbm: Option<f64>,
    /// Its level in [`TX_RANGE`].
    pub tx_level: Option<Level>,
    /// The receive range used.
    pub rx_range: OpticalRange,
    /// The transmit range used.
    pub tx_range: OpticalRange,
}

/// The normalized view of a CPE, whatever data model it speaks.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Summary {
    /// WAN.
    pub wan: WanSummary,
    /// Wi-Fi.
    pub wifi: WifiSummary,
    /// Optical power (GPON ONTs).
    pub optical: OpticalSummary,
    /// Software version.
    pub firmware: Option<String>,
    /// Seconds since the CPE booted, as last reported.
    pub uptime_s: Option<i64>,
}

/// A CPE's TR-069 view.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Tr069View {
    /// The device.
    pub device_id: Uuid,
    /// Its key (`cwmp:OUI-CLASS-SERIAL`).
    pub device_key: String,
    /// ManufacturerOUI.
    pub oui: Option<String>,
    /// ProductClass.
    pub product_class: Option<String>,
    /// SerialNumber.
    pub serial_number: Option<String>,
    /// Vendor.
    pub vendor: Option<String>,
    /// Firmware from the inventory.
    pub firmware: Option<String>,
    /// Inventory attributes (such as `hardware_version`).
    #[schema(value_type = Object)]
    pub attrs: serde_json::Value,
    /// Latest report.
    pub last_seen: DateTime<Utc>,
    /// When the newest parameter value was reported.
    pub updated_at: Option<DateTime<Utc>>,
    /// Parameters known.
    pub total: u64,
    /// Parameters matching the filter.
    pub matched: u64,
    /// The summary (over every parameter, not the filter).
    pub summary: Summary,
    /// Objects one level below `prefix` (browsing), with their counts.
    pub children: Vec<Child>,
    /// A page of the matching parameters, by name (with `direct`, only the leaves right under `prefix`).
    pub parameters: Page<Parameter>,
}

/// Filters of the parameter list.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ParamFilter {
    /// Only parameters whose path starts with this (such as `Device.WiFi.`).
    pub prefix: Option<String>,
    /// Only parameters whose path or value contains this, case-insensitive.
    pub q: Option<String>,
    /// Only the leaves right under `prefix` (browsing one level); `children` lists the objects.
    #[serde(default)]
    pub direct: bool,
    /// Parameters per page, 1 to 1000 (default 200).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(sqlx::FromRow)]
struct DeviceRow {
    provider_id: Uuid,
    device_key: String,
    oui: Option<String>,
    product_class: Option<String>,
    serial_number: Option<String>,
    vendor: Option<String>,
    firmware: Option<String>,
    attrs: serde_json::Value,
    last_seen: DateTime<Utc>,
}

/// A CPE's identity, newest parameter values (filtered, paged) and normalized summary.
#[utoipa::path(get, path = "/api/v1/devices/{id}/tr069", tag = "tr069", params(("id" = Uuid, Path, description = "Device id"), ParamFilter),
    responses((status = 200, body = Tr069View), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(f): ApiQuery<ParamFilter>,
) -> Result<axum::Json<Tr069View>, ApiError> {
    caller.require(READ)?;
    let limit = match f.limit {
        None => DEFAULT_PAGE,
        Some(n) if (1..=MAX_PAGE).contains(&n) => n,
        Some(n) => {
            return Err(ApiError::BadRequest(format!(
                "limit {n} is not between 1 and {MAX_PAGE}"
            )));
        }
    };
    let prefix = bounded("prefix", f.prefix.as_deref())?.unwrap_or_default();
    let q = bounded("q", f.q.as_deref())?.map(str::to_lowercase);
    let after = f.cursor.as_deref().map(decode_name_cursor).transpose()?;

    let mut tx = caller.tx(&state.pool, None).await?;
    let device: DeviceRow = sqlx::query_as(
        "SELECT provider_id, device_key, oui, product_class, serial_number, vendor, firmware, attrs, last_seen \
         FROM devices WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound)?;
    let provider = device.provider_id;
    let mut params: Vec<Parameter> = sqlx::query_as(
        "SELECT DISTINCT ON (p.name) p.name, p.value, r.ts, r.kind AS source \
         FROM tr069_results r CROSS JOIN LATERAL jsonb_each_text(r.parameters) AS p(name, value) \
         WHERE r.provider_id = $1 AND r.device_id = $2 AND r.ok AND r.kind = ANY($3) \
         ORDER BY p.name, r.ts DESC, r.id DESC LIMIT $4",
    )
    .bind(provider)
    .bind(id)
    .bind(&VALUE_KINDS[..])
    .bind(MAX_PARAMETERS)
    .fetch_all(&mut *tx)
    .await?;
    let written: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT p.name FROM tr069_results r CROSS JOIN LATERAL jsonb_object_keys(r.parameters) AS p(name) \
         WHERE r.provider_id = $1 AND r.device_id = $2 AND r.ok AND r.kind = ANY($3)",
    )
    .bind(provider)
    .bind(id)
    .bind(&WRITE_KINDS[..])
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    // PostgreSQL sorted by its collation; paging and browsing need byte order.
    params.sort_unstable_by(|a, b| a.name.cmp(&b.name));

    let written: BTreeSet<String> = written.into_iter().collect();
    let values: BTreeMap<&str, &str> = params
        .iter()
        .map(|p| (p.name.as_str(), p.value.as_str()))
        .collect();
    let summary = summarize(&values);
    let total = params.len() as u64;
    let updated_at = params.iter().map(|p| p.ts).max();

    params.retain(|p| {
        p.name.starts_with(prefix)
            && q.as_deref().is_none_or(|q| {
                p.name.to_lowercase().contains(q) || p.value.to_lowercase().contains(q)
            })
    });
    let matched = params.len() as u64;
    let children = children_of(prefix, &params);
    if f.direct {
        params.retain(|p| {
            p.name
                .strip_prefix(prefix)
                .is_some_and(|rest| !rest.contains('.'))
        });
    }
    let start = after
        .as_deref()
        .map_or(0, |a| params.partition_point(|p| p.name.as_str() <= a));
    let mut page: Vec<Parameter> = params.drain(start..).take(limit as usize + 1).collect();
    for p in &mut page {
        (p.writable, p.writable_source) = writable(&p.name, &written);
    }
    let parameters =
        Page::from_rows_keyed(page, limit, |p| URL_SAFE_NO_PAD.encode(p.name.as_bytes()));
    Ok(axum::Json(Tr069View {
        device_id: id,
        device_key: device.device_key,
        oui: device.oui,
        product_class: device.product_class,
        serial_number: device.serial_number,
        vendor: device.vendor,
        firmware: device.firmware,
        attrs: device.attrs,
        last_seen: device.last_seen,
        updated_at,
        total,
        matched,
        summary,
        children,
        parameters,
    }))
}

/// A `tr069.*` command with its result.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Tr069Task {
    /// The command.
    #[serde(flatten)]
    pub command: CommandView,
    /// The agent's output (values read or written, or the outcome), once stored.
    #[schema(value_type = Option<Object>)]
    pub output: Option<serde_json::Value>,
    /// When the agent finished it.
    pub result_ts: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct TaskRow {
    #[sqlx(flatten)]
    command: CommandView,
    output: Option<serde_json::Value>,
    result_ts: Option<DateTime<Utc>>,
}

/// The `tr069.*` commands about a CPE, newest first, with their results.
#[utoipa::path(get, path = "/api/v1/devices/{id}/tr069/tasks", tag = "tr069", params(("id" = Uuid, Path, description = "Device id"), PageParams),
    responses((status = 200, body = Page<Tr069Task>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn tasks(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<axum::Json<Page<Tr069Task>>, ApiError> {
    caller.require(READ)?;
    let (limit, after) = (page.limit()?, page.after()?);
    let mut tx = caller.tx(&state.pool, None).await?;
    let device = devices::fetch(&mut tx, &state, id).await?;
    let rows: Vec<TaskRow> = sqlx::query_as(
        "SELECT c.id, c.provider_id, c.pop_id, c.agent_id, c.device_id, c.batch_id, c.name, c.args, c.status, \
                c.error, c.attempts, c.created_by_user, c.created_by_api_key, c.idempotency_key, c.created_at, \
                c.deadline, c.dispatched_at, c.started_at, c.finished_at, r.output, r.ts AS result_ts \
         FROM commands c LEFT JOIN command_results r ON r.provider_id = c.provider_id AND r.command_id = c.id \
         WHERE c.provider_id = $1 AND c.device_id = $2 AND c.name LIKE 'tr069.%' \
           AND ($3::uuid IS NULL OR c.id < $3) \
         ORDER BY c.id DESC LIMIT $4",
    )
    .bind(device.provider_id)
    .bind(id)
    .bind(after)
    .bind(i64::from(limit) + 1)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let items = rows
        .into_iter()
        .map(|r| Tr069Task {
            command: r.command,
            output: r.output,
            result_ts: r.result_ts,
        })
        .collect();
    Ok(axum::Json(Page::from_rows(
        items,
        limit,
        |t: &Tr069Task| t.command.id,
    )))
}

fn bounded<'a>(field: &str, v: Option<&'a str>) -> Result<Option<&'a str>, ApiError> {
    match v {
        Some(s) if s.chars().count() > MAX_FILTER_CHARS => Err(ApiError::BadRequest(format!(
            "{field}: longer than {MAX_FILTER_CHARS} characters"
        ))),
        Some("") | None => Ok(None),
        Some(s) => Ok(Some(s)),
    }
}

fn decode_name_cursor(cursor: &str) -> Result<String, ApiError> {
    let bad = || ApiError::BadRequest("invalid cursor".into());
    if cursor.len() > 4096 {
        return Err(bad());
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor.as_bytes())
        .map_err(|_| bad())?;
    String::from_utf8(bytes).map_err(|_| bad())
}

/// The objects right under `prefix` among `params` (sorted by name bytes: a child's parameters are contiguous),
/// with their counts.
fn children_of(prefix: &str, params: &[Parameter]) -> Vec<Child> {
    let mut out: Vec<Child> = Vec::new();
    for p in params {
        let Some(dot) = p.name.strip_prefix(prefix).and_then(|rest| rest.find('.')) else {
            continue;
        };
        let path = &p.name[..prefix.len() + dot + 1];
        match out.last_mut() {
            Some(c) if c.path == path => c.parameters += 1,
            _ => out.push(Child {
                path: path.to_owned(),
                parameters: 1,
            }),
        }
    }
    out
}

/// Leaves that TR-098 and TR-181 define read-only (status, identity, counters, optical levels).
const READ_ONLY_LEAVES: [&str; 22] = [
    "Status",
    "ConnectionStatus",
    "UpTime",
    "SerialNumber",
    "ManufacturerOUI",
    "Manufacturer",
    "ProductClass",
    "SoftwareVersion",
    "HardwareVersion",
    "MACAddress",
    "BSSID",
    "TotalAssociations",
    "RXPower",
    "TXPower",
    "OpticalSignalLevel",
    "TransmitOpticalLevel",
    "PossibleConnectionTypes",
    "LastConnectionError",
    "Uptime",
    "ModelName",
    "TotalBytesSent",
    "TotalBytesReceived",
];

fn writable(name: &str, written: &BTreeSet<String>) -> (Option<bool>, Option<String>) {
    if written.contains(name) {
        return (Some(true), Some("set".into()));
    }
    let leaf = name.rsplit('.').next().unwrap_or(name);
    if READ_ONLY_LEAVES.contains(&leaf)
        || leaf.ends_with("NumberOfEntries")
        || name.contains(".Stats.")
    {
        return (Some(false), Some("data_model".into()));
    }
    (None, None)
}

/// Whether `name` matches `pattern`, where `*` stands for one instance number.
fn matches(pattern: &str, name: &str) -> bool {
    let mut p = pattern.split('.');
    let mut n = name.split('.');
    loop {
        match (p.next(), n.next()) {
            (None, None) => return true,
            (Some("*"), Some(seg))
                if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// Values of the parameters matching `pattern`, lowest instance first (numeric order).
fn find<'a>(values: &BTreeMap<&'a str, &'a str>, pattern: &str) -> Vec<(&'a str, &'a str)> {
    let fixed = pattern.split('*').next().unwrap_or(pattern);
    let mut out: Vec<(&str, &str)> = values
        .range::<str, _>((Bound::Included(fixed), Bound::Unbounded))
        .take_while(|(k, _)| k.starts_with(fixed))
        .filter(|(k, _)| matches(pattern, k))
        .map(|(k, v)| (*k, *v))
        .collect();
    out.sort_by_key(|(k, _)| instance_key(k));
    out
}

fn instance_key(name: &str) -> Vec<Result<u64, &str>> {
    name.split('.')
        .map(|s| s.parse::<u64>().map_err(|_| s))
        .collect()
}

fn first_text(values: &BTreeMap<&str, &str>, patterns: &[&str]) -> Option<String> {
    patterns
        .iter()
        .flat_map(|p| find(values, p))
        .map(|(_, v)| v.trim())
        .find(|v| !v.is_empty())
        .map(str::to_owned)
}

fn first_int(values: &BTreeMap<&str, &str>, patterns: &[&str]) -> Option<i64> {
    patterns
        .iter()
        .flat_map(|p| find(values, p))
        .find_map(|(_, v)| v.trim().parse().ok())
}

/// Unit of an optical power parameter.
#[derive(Clone, Copy)]
enum Unit {
    Dbm,
    MilliDbm,
    DeciMicrowatt,
}

fn to_dbm(unit: Unit, raw: &str) -> Option<f64> {
    let t = raw.trim();
    let t = t
        .strip_suffix("dBm")
        .or_else(|| t.strip_suffix("dbm"))
        .unwrap_or(t)
        .trim();
    let v: f64 = t.parse().ok().filter(|v: &f64| v.is_finite())?;
    let dbm = match unit {
        Unit::Dbm => v,
        Unit::MilliDbm => v / 1000.0,
        Unit::DeciMicrowatt => {
            if v <= 0.0 {
                return None;
            }
            10.0 * (v / 10_000.0).log10()
        }
    };
    Some((dbm * 100.0).round() / 100.0)
}

/// Optical sources in order of preference: the same as the agent's `agent/acs/normalize.toml`.
fn optical_sources(dir: &str) -> [(String, Unit, bool); 7] {
    let std = if dir == "RX" {
        "OpticalSignalLevel"
    } else {
        "TransmitOpticalLevel"
    };
    [
        (
            format!("InternetGatewayDevice.WANDevice.*.X_GponInterafceConfig.{dir}Power"),
            Unit::Dbm,
            false,
        ),
        (
            format!("InternetGatewayDevice.WANDevice.*.X_ZTE-COM_WANPONInterfaceConfig.{dir}Power"),
            Unit::DeciMicrowatt,
            false,
        ),
        (
            format!("InternetGatewayDevice.WANDevice.*.X_CMCC_GponInterfaceConfig.{dir}Power"),
            Unit::DeciMicrowatt,
            false,
        ),
        (
            format!("InternetGatewayDevice.WANDevice.*.X_CT-COM_GponInterfaceConfig.{dir}Power"),
            Unit::DeciMicrowatt,
            false,
        ),
        (
            format!("InternetGatewayDevice.X_ALU_OntOpticalParam.{dir}Power"),
            Unit::Dbm,
            false,
        ),
        (
            format!("Device.Optical.Interface.*.X_TP_GPON_Config.{dir}Power"),
            Unit::DeciMicrowatt,
            false,
        ),
        (
            format!("Device.Optical.Interface.*.{std}"),
            Unit::MilliDbm,
            true,
        ),
    ]
}

fn optical(values: &BTreeMap<&str, &str>, dir: &str) -> Option<f64> {
    optical_sources(dir)
        .iter()
        .find_map(|(path, unit, nonzero)| {
            find(values, path).into_iter().find_map(|(_, v)| {
                if *nonzero && v.trim().parse::<f64>().is_ok_and(|x| x == 0.0) {
                    return None;
                }
                to_dbm(*unit, v)
            })
        })
}

fn up_down(raw: &str) -> String {
    match raw.trim().to_ascii_lowercase().as_str() {
        "connected" | "up" => "up".into(),
        "disconnected" | "down" | "unconfigured" | "lowerlayerdown" | "error" | "dormant" => {
            "down".into()
        }
        other => other.to_owned(),
    }
}

fn usable_ip(ip: &str) -> bool {
    let ip = ip.trim();
    !ip.is_empty() && ip != "0.0.0.0"
}

/// The WAN connection in use: the first connected one with an address, else the first with an address, else
/// the first connected, else the first.
fn wan(values: &BTreeMap<&str, &str>) -> WanSummary {
    let mut candidates: Vec<WanSummary> = Vec::new();
    for kind in ["WANPPPConnection", "WANIPConnection"] {
        let pattern = format!(
            "InternetGatewayDevice.WANDevice.*.WANConnectionDevice.*.{kind}.*.ConnectionStatus"
        );
        let objects: Vec<String> = find(values, &pattern)
            .into_iter()
            .chain(find(
                values,
                &pattern.replace("ConnectionStatus", "ExternalIPAddress"),
            ))
            .map(|(k, _)| k[..k.rfind('.').unwrap_or(0) + 1].to_owned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for obj in objects {
            let get = |leaf: &str| {
                values
                    .get(format!("{obj}{leaf}").as_str())
                    .map(|v| v.trim().to_owned())
            };
            let connection_type = if kind == "WANPPPConnection" {
                match get("ConnectionType").as_deref() {
                    Some(t) if t.contains("Bridged") => "bridge".to_owned(),
                    _ => "pppoe".to_owned(),
                }
            } else {
                match get("ConnectionType").as_deref() {
                    Some(t) if t.contains("Bridged") => "bridge".to_owned(),
                    _ => match get("AddressingType")
                        .as_deref()
                        .map(str::to_ascii_lowercase)
                        .as_deref()
                    {
                        Some("static") => "static".to_owned(),
                        _ => "dhcp".to_owned(),
                    },
                }
            };
            candidates.push(WanSummary {
                connection_type: Some(connection_type),
                ip: get("ExternalIPAddress").filter(|ip| usable_ip(ip)),
                status: get("ConnectionStatus").map(|s| up_down(&s)),
                pppoe_user: get("Username").filter(|u| !u.is_empty()),
                path: Some(obj),
            });
        }
    }
    // TR-181: PPP interfaces, then IP interfaces other than the LAN bridge (interface 1).
    for (k, _) in find(values, "Device.PPP.Interface.*.Status") {
        let obj = &k[..k.len() - "Status".len()];
        let get = |leaf: &str| {
            values
                .get(format!("{obj}{leaf}").as_str())
                .map(|v| v.trim().to_owned())
        };
        candidates.push(WanSummary {
            connection_type: Some("pppoe".into()),
            ip: get("IPCP.LocalIPAddress").filter(|ip| usable_ip(ip)),
            status: get("Status").map(|s| up_down(&s)),
            pppoe_user: get("Username").filter(|u| !u.is_empty()),
            path: Some(obj.to_owned()),
        });
    }
    for (k, v) in find(values, "Device.IP.Interface.*.IPv4Address.*.IPAddress") {
        if k.starts_with("Device.IP.Interface.1.") {
            continue;
        }
        let addr_obj = &k[..k.len() - "IPAddress".len()];
        let iface = addr_obj
            .strip_suffix('.')
            .and_then(|s| s.rsplit_once(".IPv4Address."))
            .map_or("", |(i, _)| i);
        let addressing = values
            .get(format!("{addr_obj}AddressingType").as_str())
            .map(|v| v.trim().to_ascii_lowercase());
        let connection_type = match addressing.as_deref() {
            Some("ipcp") => "pppoe",
            Some("static") => "static",
            _ => "dhcp",
        };
        candidates.push(WanSummary {
            connection_type: Some(connection_type.into()),
            ip: Some(v.trim().to_owned()).filter(|ip| usable_ip(ip)),
            status: values
                .get(format!("{iface}.Status").as_str())
                .map(|s| up_down(s)),
            pppoe_user: None,
            path: Some(format!("{iface}.")),
        });
    }
    let up = |w: &WanSummary| w.status.as_deref() == Some("up");
    let pick = candidates
        .iter()
        .position(|w| up(w) && w.ip.is_some())
        .or_else(|| candidates.iter().position(|w| w.ip.is_some()))
        .or_else(|| candidates.iter().position(up))
        .or(if candidates.is_empty() { None } else { Some(0) });
    let Some(i) = pick else {
        return WanSummary::default();
    };
    let mut chosen = candidates.swap_remove(i);
    // An IPCP address on a TR-181 IP interface is the PPP session: take the user from the PPP interface up.
    if chosen.connection_type.as_deref() == Some("pppoe") && chosen.pppoe_user.is_none() {
        chosen.pppoe_user = first_text(values, &["Device.PPP.Interface.*.Username"]).filter(|_| {
            chosen
                .path
                .as_deref()
                .is_some_and(|p| p.starts_with("Device."))
        });
    }
    chosen
}

/// The normalized summary of a parameter tree.
pub fn summarize(values: &BTreeMap<&str, &str>) -> Summary {
    let mut ssids: Vec<String> = Vec::new();
    for p in [
        "InternetGatewayDevice.LANDevice.*.WLANConfiguration.*.SSID",
        "Device.WiFi.SSID.*.SSID",
    ] {
        for (_, v) in find(values, p) {
            let v = v.trim();
            if !v.is_empty() && !ssids.iter().any(|s| s == v) {
                ssids.push(v.to_owned());
            }
        }
    }
    let clients: Vec<i64> = [
        "InternetGatewayDevice.LANDevice.*.WLANConfiguration.*.TotalAssociations",
        "Device.WiFi.AccessPoint.*.AssociatedDeviceNumberOfEntries",
    ]
    .iter()
    .flat_map(|p| find(values, p))
    .filter_map(|(_, v)| v.trim().parse().ok())
    .collect();
    let rx = optical(values, "RX");
    let tx = optical(values, "TX");
    Summary {
        wan: wan(values),
        wifi: WifiSummary {
            ssids,
            channel: first_int(
                values,
                &[
                    "InternetGatewayDevice.LANDevice.*.WLANConfiguration.*.Channel",
                    "Device.WiFi.Radio.*.Channel",
                ],
            ),
            clients: (!clients.is_empty()).then(|| clients.iter().sum()),
        },
        optical: OpticalSummary {
            rx_dbm: rx,
            rx_level: rx.map(|v| RX_RANGE.level(v)),
            tx_dbm: tx,
            tx_level: tx.map(|v| TX_RANGE.level(v)),
            rx_range: RX_RANGE,
            tx_range: TX_RANGE,
        },
        firmware: first_text(
            values,
            &[
                "InternetGatewayDevice.DeviceInfo.SoftwareVersion",
                "Device.DeviceInfo.SoftwareVersion",
            ],
        ),
        uptime_s: first_int(
            values,
            &[
                "InternetGatewayDevice.DeviceInfo.UpTime",
                "Device.DeviceInfo.UpTime",
            ],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(pairs: &[(&'static str, &'static str)]) -> BTreeMap<&'static str, &'static str> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn huawei_pppoe_and_optical_in_dbm() {
        let t = tree(&[
            (
                "InternetGatewayDevice.WANDevice.1.WANConnectionDevice.1.WANPPPConnection.1.ConnectionStatus",
                "Disconnected",
            ),
            (
                "InternetGatewayDevice.WANDevice.1.WANConnectionDevice.1.WANPPPConnection.1.ExternalIPAddress",
                "0.0.0.0",
            ),
            (
                "InternetGatewayDevice.WANDevice.1.WANConnectionDevice.2.WANPPPConnection.1.ConnectionStatus",
                "Connected",
            ),
            (
                "InternetGatewayDevice.WANDevice.1.WANConnectionDevice.2.WANPPPConnection.1.ExternalIPAddress",
                "198.51.100.7",
            ),
            (
                "InternetGatewayDevice.WANDevice.1.WANConnectionDevice.2.WANPPPConnection.1.Username",
                "cliente@isp",
            ),
            (
                "InternetGatewayDevice.WANDevice.1.X_GponInterafceConfig.RXPower",
                "-26.1",
            ),
            (
                "InternetGatewayDevice.WANDevice.1.X_GponInterafceConfig.TXPower",
                "2.3",
            ),
            (
                "InternetGatewayDevice.LANDevice.1.WLANConfiguration.1.SSID",
                "Casa",
            ),
            (
                "InternetGatewayDevice.LANDevice.1.WLANConfiguration.5.SSID",
                "Casa-5G",
            ),
            (
                "InternetGatewayDevice.LANDevice.1.WLANConfiguration.1.Channel",
                "6",
            ),
            (
                "InternetGatewayDevice.LANDevice.1.WLANConfiguration.1.TotalAssociations",
                "3",
            ),
            (
                "InternetGatewayDevice.LANDevice.1.WLANConfiguration.5.TotalAssociations",
                "2",
            ),
        ]);
        let s = summarize(&t);
        assert_eq!(s.wan.connection_type.as_deref(), Some("pppoe"));
        assert_eq!(s.wan.ip.as_deref(), Some("198.51.100.7"));
        assert_eq!(s.wan.status.as_deref(), Some("up"));
        assert_eq!(s.wan.pppoe_user.as_deref(), Some("cliente@isp"));
        assert_eq!(s.optical.rx_dbm, Some(-26.1));
        assert_eq!(s.optical.rx_level, Some(Level::Yellow));
        assert_eq!(s.optical.tx_level, Some(Level::Green));
        assert_eq!(s.wifi.ssids, vec!["Casa", "Casa-5G"]);
        assert_eq!((s.wifi.channel, s.wifi.clients), (Some(6), Some(5)));
    }

    #[test]
    fn tr181_ipcp_wan_and_tp_link_optical_in_tenths_of_microwatt() {
        let t = tree(&[
            (
                "Device.IP.Interface.1.IPv4Address.1.IPAddress",
                "192.168.1.1",
            ),
            ("Device.IP.Interface.1.Status", "Up"),
            ("Device.IP.Interface.6.IPv4Address.1.AddressingType", "IPCP"),
            (
                "Device.IP.Interface.6.IPv4Address.1.IPAddress",
                "192.168.89.137",
            ),
            ("Device.IP.Interface.6.Status", "Up"),
            ("Device.PPP.Interface.1.Status", "Down"),
            ("Device.PPP.Interface.3.Status", "Up"),
            (
                "Device.PPP.Interface.3.IPCP.LocalIPAddress",
                "192.168.89.137",
            ),
            ("Device.PPP.Interface.3.Username", "admin123"),
            ("Device.Optical.Interface.1.OpticalSignalLevel", "0"),
            (
                "Device.Optical.Interface.1.X_TP_GPON_Config.RXPower",
                "5624",
            ),
        ]);
        let s = summarize(&t);
        assert_eq!(s.wan.ip.as_deref(), Some("192.168.89.137"));
        assert_eq!(s.wan.connection_type.as_deref(), Some("pppoe"));
        assert_eq!(s.wan.pppoe_user.as_deref(), Some("admin123"));
        // 562.4 µW = -2.5 dBm: above the overload point, red.
        assert_eq!(s.optical.rx_dbm, Some(-2.5));
        assert_eq!(s.optical.rx_level, Some(Level::Red));
        assert_eq!(s.optical.tx_dbm, None);
    }

    #[test]
    fn static_wan_and_ranges_at_their_edges() {
        let t = tree(&[
            (
                "InternetGatewayDevice.WANDevice.1.WANConnectionDevice.1.WANIPConnection.1.AddressingType",
                "Static",
            ),
            (
                "InternetGatewayDevice.WANDevice.1.WANConnectionDevice.1.WANIPConnection.1.ConnectionStatus",
                "Connected",
            ),
            (
                "InternetGatewayDevice.WANDevice.1.WANConnectionDevice.1.WANIPConnection.1.ExternalIPAddress",
                "192.0.2.120",
            ),
        ]);
        let s = summarize(&t);
        assert_eq!(s.wan.connection_type.as_deref(), Some("static"));
        assert_eq!(RX_RANGE.level(-25.0), Level::Green);
        assert_eq!(RX_RANGE.level(-27.0), Level::Yellow);
        assert_eq!(RX_RANGE.level(-27.01), Level::Red);
        assert_eq!(RX_RANGE.level(-7.5), Level::Yellow);
        assert_eq!(s.optical.rx_dbm, None);
        assert!(summarize(&BTreeMap::new()).wan.ip.is_none());
    }

    #[test]
    fn instances_sort_numerically_and_children_count() {
        let t = tree(&[
            ("Device.WiFi.SSID.10.SSID", "ten"),
            ("Device.WiFi.SSID.2.SSID", "two"),
        ]);
        assert_eq!(summarize(&t).wifi.ssids, vec!["two", "ten"]);
        let p = |name: &str| Parameter {
            name: name.into(),
            value: String::new(),
            ts: Utc::now(),
            source: "get".into(),
            writable: None,
            writable_source: None,
        };
        let params = vec![
            p("Device.A.1.X"),
            p("Device.A.1.Y"),
            p("Device.A.10.X"),
            p("Device.A.1x"),
            p("Device.B"),
        ];
        let c = children_of("Device.", &params);
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].path.as_str(), c[0].parameters), ("Device.A.", 4));
        let c = children_of("Device.A.", &params);
        let got: Vec<(&str, u64)> = c.iter().map(|c| (c.path.as_str(), c.parameters)).collect();
        assert_eq!(got, vec![("Device.A.1.", 2), ("Device.A.10.", 1)]);
        assert!(children_of("Device.B", &params).is_empty());
    }

    #[test]
    fn writable_from_writes_and_the_data_model() {
        let written: BTreeSet<String> = ["Device.WiFi.SSID.1.SSID".to_owned()].into();
        assert_eq!(writable("Device.WiFi.SSID.1.SSID", &written).0, Some(true));
        assert_eq!(
            writable("Device.DeviceInfo.UpTime", &written).0,
            Some(false)
        );
        assert_eq!(
            writable("Device.WiFi.SSID.1.Stats.BytesSent", &written).0,
            Some(false)
        );
        assert_eq!(writable("Device.WiFi.SSID.2.SSID", &written).0, None);
    }
}
