//! Interface monitoring per POP: every monitored interface (an IF-MIB row, the series labelled `ifIndex`) of the
//! devices of one POP with its current traffic in and out, utilisation, errors, discards and status, sortable
//! (busiest first by default) with keyset pagination.
//!
//! "Current" is the newest raw sample of each series within [`FRESH_SECS`]; an interface whose series have no
//! sample that recent is still listed, with empty values (the console says "no recent data"). One SQL statement
//! computes the page: the POP's devices through `devices_pop (provider_id, pop_id, id)`, their interface series
//! through `series_device (provider_id, device_id, metric)`, the newest sample of each through
//! `samples_series_ts (series_id, ts)` on the last partitions only (the window prunes the daily partitions), then
//! one row per `(device, ifIndex)` and the sort. Sorting by a computed value means the whole POP's interfaces are
//! computed for each page; a POP has hundreds to a few thousand interfaces, which is a few milliseconds of index
//! probes per thousand series.

use axum::extract::State;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::api::error::ApiError;
use crate::api::extract::{ApiPath, ApiQuery, Authed};
use crate::api::pagination::{DEFAULT_LIMIT, MAX_LIMIT, Page};
use crate::api::{AppState, ErrorBody};

/// A sample older than this many seconds is not "current".
pub const FRESH_SECS: f64 = 900.0;

/// The IF-MIB metrics read (agent/profiles/if-mib.toml).
const METRICS: [&str; 9] = [
    "if.in_bps",
    "if.out_bps",
    "if.speed_bps",
    "if.in_errors_per_s",
    "if.out_errors_per_s",
    "if.in_discards_per_s",
    "if.out_discards_per_s",
    "if.oper_status",
    "if.admin_status",
];

/// Order of the list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InterfaceSort {
    /// Traffic in + out, largest first (the default).
    #[default]
    Busiest,
    /// Utilisation (the larger of in and out over the speed), highest first.
    Utilisation,
    /// Errors in + out per second, most first.
    Errors,
    /// Traffic in, largest first.
    In,
    /// Traffic out, largest first.
    Out,
    /// Device name then interface name, A to Z.
    Name,
}

impl InterfaceSort {
    /// The numeric sort key (`-1` for an unknown value, so those come last) and whether the order is ascending.
    fn key(self) -> (&'static str, bool) {
        match self {
            Self::Busiest => ("coalesce(in_bps + out_bps, in_bps, out_bps, -1)", false),
            Self::Utilisation => ("coalesce(utilisation, -1)", false),
            Self::Errors => (
                "coalesce(in_errors_per_s + out_errors_per_s, in_errors_per_s, out_errors_per_s, -1)",
                false,
            ),
            Self::In => ("coalesce(in_bps, -1)", false),
            Self::Out => ("coalesce(out_bps, -1)", false),
            Self::Name => ("0", true),
        }
    }
}

/// Parameters of the list.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InterfaceParams {
    /// `busiest` (default), `utilisation`, `errors`, `in`, `out` or `name`.
    #[param(value_type = Option<String>)]
    pub sort: Option<InterfaceSort>,
    /// Items per page, 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (of the same sort).
    pub cursor: Option<String>,
}

/// One monitored interface of a POP's device, with its current values.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct PopInterface {
    /// The device.
    pub device_id: Uuid,
    /// The device's name, if it has one.
    pub device_name: Option<String>,
    /// The device's key (as the agent knows it).
    pub device_key: String,
    /// The device's management address.
    pub mgmt_ip: Option<String>,
    /// ifIndex.
    pub if_index: String,
    /// ifName.
    pub if_name: Option<String>,
    /// ifDescr.
    pub if_descr: Option<String>,
    /// ifAlias (the description an operator gave it).
    pub if_alias: Option<String>,
    /// Traffic in, bit/s.
    pub in_bps: Option<f64>,
    /// Traffic out, bit/s.
    pub out_bps: Option<f64>,
    /// Speed, bit/s.
    pub speed_bps: Option<f64>,
    /// The larger of in and out over the speed, 0 to 1 (and above when the counters say so); null without speed.
    pub utilisation: Option<f64>,
    /// Input errors per second.
    pub in_errors_per_s: Option<f64>,
    /// Output errors per second.
    pub out_errors_per_s: Option<f64>,
    /// Input discards per second.
    pub in_discards_per_s: Option<f64>,
    /// Output discards per second.
    pub out_discards_per_s: Option<f64>,
    /// ifOperStatus: 1 up, 2 down, 3 testing, 4 unknown, 5 dormant, 6 notPresent, 7 lowerLayerDown.
    pub oper_status: Option<i32>,
    /// ifAdminStatus: 1 up, 2 down, 3 testing.
    pub admin_status: Option<i32>,
    /// Time of the newest of these samples; null when none is recent.
    pub updated_at: Option<DateTime<Utc>>,
    /// The row's sort key (part of the cursor).
    #[serde(skip)]
    pub sort_num: f64,
    /// The row's text sort key (part of the cursor).
    #[serde(skip)]
    pub sort_text: String,
}

/// Where a page ends: the sort keys of its last row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Cursor(f64, String, Uuid, String);

fn encode(c: &Cursor) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(c).unwrap_or_default())
}

fn decode(s: &str) -> Result<Cursor, ApiError> {
    let bad = || ApiError::BadRequest("invalid cursor".into());
    if s.len() > 4096 {
        return Err(bad());
    }
    let bytes = URL_SAFE_NO_PAD.decode(s.as_bytes()).map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map_err(|_| bad())
}

/// The monitored interfaces of a POP's devices with their current traffic, utilisation, errors and status.
#[utoipa::path(get, path = "/api/v1/pops/{id}/interfaces", tag = "metrics",
    params(("id" = Uuid, Path, description = "POP id"), InterfaceParams),
    responses((status = 200, body = Page<PopInterface>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(pop): ApiPath<Uuid>,
    ApiQuery(params): ApiQuery<InterfaceParams>,
) -> Result<axum::Json<Page<PopInterface>>, ApiError> {
    caller.require("metrics:read")?;
    caller.require("devices:read")?;
    let limit = match params.limit {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(n) => {
            return Err(ApiError::BadRequest(format!(
                "limit {n} is not between 1 and {MAX_LIMIT}"
            )));
        }
    };
    let after = params.cursor.as_deref().map(decode).transpose()?;
    let (key, ascending) = params.sort.unwrap_or_default().key();
    let (cmp, dir) = if ascending {
        (">", "ASC")
    } else {
        ("<", "DESC")
    };
    // The sort expressions and directions come from the enum above, never from the request.
    let sql = format!(
        "WITH s AS ( \
           SELECT s.id, s.device_id, s.metric, s.labels, s.labels->>'ifIndex' AS if_index \
           FROM devices d JOIN series s ON s.provider_id = d.provider_id AND s.device_id = d.id \
             AND s.metric = ANY($2) \
           WHERE d.provider_id = (SELECT provider_id FROM pops WHERE id = $1) AND d.pop_id = $1 \
             AND s.labels ? 'ifIndex' \
         ), v AS ( \
           SELECT s.device_id, s.if_index, s.metric, s.labels, l.ts, nullif(l.value, 'NaN') AS value FROM s \
           LEFT JOIN LATERAL (SELECT x.ts, x.value FROM samples x WHERE x.series_id = s.id \
             AND x.ts >= now() - make_interval(secs => $3) ORDER BY x.ts DESC LIMIT 1) l ON true \
         ), i AS ( \
           SELECT device_id, if_index, (array_agg(labels ORDER BY ts DESC NULLS LAST))[1] AS labels, max(ts) AS ts, \
             (array_agg(value ORDER BY ts DESC) FILTER (WHERE metric = 'if.in_bps' AND ts IS NOT NULL))[1] AS in_bps, \
             (array_agg(value ORDER BY ts DESC) FILTER (WHERE metric = 'if.out_bps' AND ts IS NOT NULL))[1] AS out_bps, \
             (array_agg(value ORDER BY ts DESC) FILTER (WHERE metric = 'if.speed_bps' AND ts IS NOT NULL))[1] AS speed_bps, \
             (array_agg(value ORDER BY ts DESC) FILTER (WHERE metric = 'if.in_errors_per_s' AND ts IS NOT NULL))[1] AS in_errors_per_s, \
             (array_agg(value ORDER BY ts DESC) FILTER (WHERE metric = 'if.out_errors_per_s' AND ts IS NOT NULL))[1] AS out_errors_per_s, \
             (array_agg(value ORDER BY ts DESC) FILTER (WHERE metric = 'if.in_discards_per_s' AND ts IS NOT NULL))[1] AS in_discards_per_s, \
             (array_agg(value ORDER BY ts DESC) FILTER (WHERE metric = 'if.out_discards_per_s' AND ts IS NOT NULL))[1] AS out_discards_per_s, \
             (array_agg(value ORDER BY ts DESC) FILTER (WHERE metric = 'if.oper_status' AND ts IS NOT NULL))[1] AS oper_status, \
             (array_agg(value ORDER BY ts DESC) FILTER (WHERE metric = 'if.admin_status' AND ts IS NOT NULL))[1] AS admin_status \
           FROM v GROUP BY device_id, if_index \
         ), r AS ( \
           SELECT i.*, d.name AS device_name, d.device_key, host(d.mgmt_ip) AS mgmt_ip, \
             CASE WHEN i.speed_bps > 0 THEN greatest(i.in_bps, i.out_bps) / i.speed_bps END AS utilisation \
           FROM i JOIN devices d ON d.provider_id = (SELECT provider_id FROM pops WHERE id = $1) \
             AND d.id = i.device_id \
         ), k AS ( \
           SELECT r.*, ({key})::float8 AS sort_num, \
             CASE WHEN {ascending} THEN lower(coalesce(device_name, device_key)) || ' ' \
               || lower(coalesce(labels->>'ifName', labels->>'ifDescr', if_index)) ELSE '' END AS sort_text \
           FROM r \
         ) \
         SELECT device_id, device_name, device_key, mgmt_ip, if_index, labels->>'ifName' AS if_name, \
           labels->>'ifDescr' AS if_descr, labels->>'ifAlias' AS if_alias, in_bps, out_bps, speed_bps, utilisation, \
           in_errors_per_s, out_errors_per_s, in_discards_per_s, out_discards_per_s, \
           round(oper_status)::int AS oper_status, round(admin_status)::int AS admin_status, ts AS updated_at, \
           sort_num, sort_text \
         FROM k WHERE $4::float8 IS NULL OR (sort_num, sort_text, device_id, if_index) {cmp} ($4, $5, $6, $7) \
         ORDER BY sort_num {dir}, sort_text {dir}, device_id {dir}, if_index {dir} LIMIT $8"
    );
    let mut tx = caller.tx(&state.pool, None).await?;
    let rows: Vec<PopInterface> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(pop)
        .bind(&METRICS[..])
        .bind(FRESH_SECS)
        .bind(after.as_ref().map(|c| c.0))
        .bind(after.as_ref().map(|c| c.1.clone()))
        .bind(after.as_ref().map(|c| c.2))
        .bind(after.as_ref().map(|c| c.3.clone()))
        .bind(i64::from(limit) + 1)
        .fetch_all(&mut *tx)
        .await?;
    if rows.is_empty() && after.is_none() {
        let seen: Option<Uuid> = sqlx::query_scalar("SELECT id FROM pops WHERE id = $1")
            .bind(pop)
            .fetch_optional(&mut *tx)
            .await?;
        if seen.is_none() {
            return Err(ApiError::NotFound);
        }
    }
    tx.commit().await?;
    Ok(axum::Json(Page::from_rows_keyed(rows, limit, |r| {
        encode(&Cursor(
            r.sort_num,
            r.sort_text.clone(),
            r.device_id,
            r.if_index.clone(),
        ))
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = Cursor(1.5e9, "olt-1 pon 0/1".into(), Uuid::nil(), "17".into());
        assert_eq!(decode(&encode(&c)).ok(), Some(c));
        assert!(decode("not a cursor!").is_err());
        assert!(decode(&URL_SAFE_NO_PAD.encode(b"[1,2]")).is_err());
        assert!(decode(&"A".repeat(5000)).is_err());
    }

    #[test]
    fn sorts_parse_from_the_query() {
        let p: InterfaceParams =
            serde_json::from_value(serde_json::json!({"sort": "utilisation", "limit": 5})).unwrap();
        assert_eq!(p.sort, Some(InterfaceSort::Utilisation));
        assert!(
            serde_json::from_value::<InterfaceParams>(serde_json::json!({"sort": "bogus"}))
                .is_err()
        );
    }
}
