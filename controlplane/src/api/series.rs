//! Time series of the caller's provider: the list of a device's series, the points of one series for a graph,
//! and sums over the series of a device, a POP or the whole provider (traffic per device, POP, provider).
//!
//! A graph asks for `[from, to)` and at most `points` points. The answer uses raw samples when they are still
//! retained and no more than `points` of them fall in the range, otherwise the finest rollup level
//! ([`crate::rollup::choose_level`]) with at most `points` buckets in the range whose retention still covers
//! `from`. Every query is an index range on `(series_id, bucket)` (or `(series_id, ts)`), so a one-year graph
//! reads a few hundred rows. Rollups exist only for closed buckets (bucket end + `metrics.grace_secs`): at 1 h
//! and coarser, the newest, still open bucket is computed on the fly from its 5-minute rows and marked
//! `partial` (at 5 minutes the open bucket is simply not there yet).

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::api::error::ApiError;
use crate::api::extract::{ApiPath, ApiQuery, Authed};
use crate::api::pagination::{Page, PageParams};
use crate::api::{AppState, ErrorBody};
use crate::rollup::{self, Level, Resolution};

/// Range of a graph when `from` is absent: the day before `to`.
const DEFAULT_RANGE_HOURS: i64 = 24;
/// Longest range a graph may span.
const MAX_RANGE_DAYS: i64 = 20 * 366;
/// Most series an aggregate may sum.
pub const MAX_AGGREGATE_SERIES: usize = 20_000;
/// Longest metric name accepted.
const MAX_METRIC_LEN: usize = 200;

/// A time series.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Series {
    /// Its id.
    pub id: i64,
    /// The device it measures.
    pub device_id: Uuid,
    /// Metric name, such as `if.in_bps`.
    pub metric: String,
    /// Labels, such as `{"ifName": "ge-0/0/1"}`.
    #[schema(value_type = Object)]
    pub labels: serde_json::Value,
    /// `gauge` or `counter`.
    pub kind: String,
}

/// Filters of the series list.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SeriesFilter {
    /// Only the series of this device.
    pub device_id: Option<Uuid>,
    /// Only this metric.
    pub metric: Option<String>,
    /// Items per page, 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Lists the caller's series (of one device, of one metric), in id order.
#[utoipa::path(get, path = "/api/v1/series", tag = "metrics", params(SeriesFilter),
    responses((status = 200, body = Page<Series>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(filter): ApiQuery<SeriesFilter>,
) -> Result<axum::Json<Page<Series>>, ApiError> {
    caller.require("metrics:read")?;
    let page = PageParams {
        limit: filter.limit,
        cursor: None,
    };
    let limit = page.limit()?;
    let after = filter
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<i64>()
                .map_err(|_| ApiError::BadRequest("invalid cursor".into()))
        })
        .transpose()?;
    let mut qb = QueryBuilder::<Postgres>::new(
        "SELECT id, device_id, metric, labels, kind FROM series WHERE true",
    );
    if let Some(p) = caller.provider_id {
        qb.push(" AND provider_id = ").push_bind(p);
    }
    if let Some(d) = filter.device_id {
        qb.push(" AND device_id = ").push_bind(d);
    }
    if let Some(m) = &filter.metric {
        qb.push(" AND metric = ")
            .push_bind(metric_name(m)?.to_owned());
    }
    if let Some(a) = after {
        qb.push(" AND id > ").push_bind(a);
    }
    qb.push(" ORDER BY id LIMIT ")
        .push_bind(i64::from(limit) + 1);
    let mut tx = caller.tx(&state.pool, None).await?;
    let rows: Vec<Series> = qb.build_query_as().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(axum::Json(Page::from_rows_keyed(rows, limit, |s| {
        s.id.to_string()
    })))
}

/// Range and size of a graph.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct GraphParams {
    /// Start (RFC 3339, inclusive); default: one day before `to`.
    pub from: Option<DateTime<Utc>>,
    /// End (RFC 3339, exclusive); default: now.
    pub to: Option<DateTime<Utc>>,
    /// Most points wanted (default `metrics.default_points`, at most `metrics.max_points`).
    pub points: Option<u32>,
}

/// One point of a graph: a bucket of the resolution used, or one raw sample.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Point {
    /// Start of the bucket (the sample's time at raw resolution).
    pub ts: DateTime<Utc>,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean of the samples.
    pub avg: f64,
    /// Value at the latest time.
    pub last: f64,
    /// Samples in the bucket.
    pub count: i64,
    /// 95th percentile (nearest rank): of the samples at raw and 5m, of the 5-minute averages above.
    pub p95: f64,
    /// The bucket is still open: computed on the fly from the 5-minute rollups so far.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

/// The points of a series.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Points {
    /// The series.
    pub series_id: i64,
    /// Resolution used: `raw`, `5m`, `1h`, `1d`, `7d` or `30d`.
    pub resolution: String,
    /// Start of the range.
    pub from: DateTime<Utc>,
    /// End of the range.
    pub to: DateTime<Utc>,
    /// The points in time order.
    pub items: Vec<Point>,
}

/// The range and the number of points asked for, validated.
struct Graph {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    points: u32,
    now: DateTime<Utc>,
}

fn graph(state: &AppState, p: &GraphParams) -> Result<Graph, ApiError> {
    let cfg = &state.config.metrics;
    let now = Utc::now();
    let to = p.to.unwrap_or(now);
    let from = p
        .from
        .unwrap_or(to - chrono::Duration::hours(DEFAULT_RANGE_HOURS));
    if from >= to {
        return Err(ApiError::BadRequest("`from` must be before `to`".into()));
    }
    if to - from > chrono::Duration::days(MAX_RANGE_DAYS) {
        return Err(ApiError::BadRequest(format!(
            "the range may span at most {MAX_RANGE_DAYS} days"
        )));
    }
    if from.timestamp() < rollup_min_secs() {
        return Err(ApiError::BadRequest(
            "`from` must be 2000-01-01 or later".into(),
        ));
    }
    let points = p.points.unwrap_or(cfg.default_points);
    if points == 0 || points > cfg.max_points {
        return Err(ApiError::BadRequest(format!(
            "points must be between 1 and {}",
            cfg.max_points
        )));
    }
    Ok(Graph {
        from,
        to,
        points,
        now,
    })
}

fn rollup_min_secs() -> i64 {
    crate::ingest::store::MIN_SAMPLE_MS / 1000
}

/// The points of one series over a range, at the finest resolution that fits in `points`.
#[utoipa::path(get, path = "/api/v1/series/{id}/points", tag = "metrics",
    params(("id" = i64, Path, description = "Series id"), GraphParams),
    responses((status = 200, body = Points), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn points(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(params): ApiQuery<GraphParams>,
) -> Result<axum::Json<Points>, ApiError> {
    caller.require("metrics:read")?;
    let g = graph(&state, &params)?;
    let cfg = &state.config.metrics;
    let mut tx = caller.tx(&state.pool, None).await?;
    let found: Option<i64> = sqlx::query_scalar("SELECT id FROM series WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    if found.is_none() {
        return Err(ApiError::NotFound);
    }
    let mut answer = None;
    if rollup::raw_covers(cfg, g.from, g.now) {
        let raw: Vec<(DateTime<Utc>, f64)> = sqlx::query_as(
            "SELECT ts, value FROM samples \
             WHERE series_id = $1 AND ts >= $2 AND ts < $3 AND value <> 'NaN'::float8 \
             ORDER BY ts LIMIT $4",
        )
        .bind(id)
        .bind(g.from)
        .bind(g.to)
        .bind(i64::from(g.points) + 1)
        .fetch_all(&mut *tx)
        .await?;
        if raw.len() <= g.points as usize {
            let items = raw
                .into_iter()
                .map(|(ts, v)| Point {
                    ts,
                    min: v,
                    max: v,
                    avg: v,
                    last: v,
                    count: 1,
                    p95: v,
                    partial: false,
                })
                .collect();
            answer = Some((Resolution::Raw, items));
        }
    }
    let (resolution, items) = match answer {
        Some(a) => a,
        None => {
            let level = rollup::choose_level(cfg, g.from, g.to, g.now, g.points);
            (
                Resolution::Rollup(level),
                rollup_points(&mut tx, level, id, g.from, g.to, cfg.grace()).await?,
            )
        }
    };
    tx.commit().await?;
    Ok(axum::Json(Points {
        series_id: id,
        resolution: resolution.as_str().to_owned(),
        from: g.from,
        to: g.to,
        items,
    }))
}

/// The rollup rows of a series whose bucket intersects `[from, to)`: one index range on `(series_id, bucket)`;
/// then, at 1 h and coarser, the open bucket (if in the range) from its 5-minute rows, marked partial.
pub async fn rollup_points(
    conn: &mut sqlx::PgConnection,
    level: Level,
    series_id: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    grace: std::time::Duration,
) -> Result<Vec<Point>, sqlx::Error> {
    let sql = format!(
        "SELECT bucket AS ts, min, max, sum / count AS avg, last, count, p95, false AS partial FROM {} \
         WHERE series_id = $1 AND bucket >= $2 AND bucket < $3 ORDER BY bucket",
        level.table()
    );
    let mut points: Vec<Point> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(series_id)
        .bind(level.bucket(from))
        .bind(to)
        .fetch_all(&mut *conn)
        .await?;
    if let Some(open) = open_bucket(level, from, to, grace, points.last().map(|p| p.ts)) {
        let partial: Option<Point> = sqlx::query_as(
            "SELECT $2::timestamptz AS ts, min(min) AS min, max(max) AS max, sum(sum) / sum(count)::float8 AS avg, \
                    (array_agg(last ORDER BY last_ts DESC, last DESC))[1] AS last, sum(count)::bigint AS count, \
                    percentile_disc(0.95) WITHIN GROUP (ORDER BY sum / count) AS p95, true AS partial \
             FROM rollup_5m WHERE series_id = $1 AND bucket >= $2 AND bucket < $3 HAVING count(*) > 0",
        )
        .bind(series_id)
        .bind(open)
        .bind(level.bucket_end(open).min(to))
        .fetch_optional(&mut *conn)
        .await?;
        points.extend(partial);
    }
    Ok(points)
}

/// The bucket of `level` (1 h or coarser) still open at `now - grace`, when it intersects `[from, to)` and is
/// not among the rows already read (whose last bucket is `last`).
fn open_bucket(
    level: Level,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    grace: std::time::Duration,
    last: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    if level == Level::M5 {
        return None;
    }
    let grace = chrono::Duration::from_std(grace).unwrap_or_default();
    let open = level.bucket(Utc::now() - grace);
    let fresh = open >= level.bucket(from) && open < to && last.is_none_or(|l| l < open);
    fresh.then_some(open)
}

/// What an aggregate sums over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The series of one device.
    Device,
    /// The series of the devices of one POP.
    Pop,
    /// Every series of the provider.
    Provider,
}

/// Parameters of an aggregate.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AggregateParams {
    /// Metric summed, such as `if.in_bps`.
    pub metric: String,
    /// `device`, `pop` or `provider`.
    pub scope: Scope,
    /// The device or POP (for `provider`: optional, the caller's own).
    pub id: Option<Uuid>,
    /// Start (RFC 3339, inclusive); default: one day before `to`.
    pub from: Option<DateTime<Utc>>,
    /// End (RFC 3339, exclusive); default: now.
    pub to: Option<DateTime<Utc>>,
    /// Most points wanted.
    pub points: Option<u32>,
}

/// One bucket of an aggregate.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct AggregatePoint {
    /// Start of the bucket.
    pub ts: DateTime<Utc>,
    /// Sum over the series of their average in the bucket.
    pub value: f64,
    /// Series with data in the bucket.
    pub series: i64,
    /// The bucket is still open: computed on the fly from the 5-minute rollups so far.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

/// An aggregate over many series.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Aggregate {
    /// The metric.
    pub metric: String,
    /// Resolution used (`5m` or coarser).
    pub resolution: String,
    /// Series summed.
    pub series_count: usize,
    /// Start of the range.
    pub from: DateTime<Utc>,
    /// End of the range.
    pub to: DateTime<Utc>,
    /// Buckets in time order.
    pub items: Vec<AggregatePoint>,
}

/// Sum of the per-series averages of one metric per bucket over a device, a POP or the whole provider (the
/// traffic of a device, POP or provider). Rollups only: at least 5-minute resolution.
#[utoipa::path(get, path = "/api/v1/metrics/aggregate", tag = "metrics", params(AggregateParams),
    responses((status = 200, body = Aggregate), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn aggregate(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(params): ApiQuery<AggregateParams>,
) -> Result<axum::Json<Aggregate>, ApiError> {
    caller.require("metrics:read")?;
    let metric = metric_name(&params.metric)?.to_owned();
    let g = graph(
        &state,
        &GraphParams {
            from: params.from,
            to: params.to,
            points: params.points,
        },
    )?;
    let on_behalf = match (params.scope, caller.provider_id) {
        (Scope::Provider, None) => Some(params.id.ok_or_else(|| {
            ApiError::BadRequest("scope=provider needs `id` for a caller without a provider".into())
        })?),
        _ => None,
    };
    if on_behalf.is_none() && caller.provider_id.is_none() {
        return Err(ApiError::BadRequest(
            "this operation needs a caller bound to a provider".into(),
        ));
    }
    let mut tx = caller.tx(&state.pool, on_behalf).await?;
    let ids: Vec<i64> = match params.scope {
        Scope::Device => {
            let device = params
                .id
                .ok_or_else(|| ApiError::BadRequest("scope=device needs `id`".into()))?;
            let seen: Option<Uuid> = sqlx::query_scalar("SELECT id FROM devices WHERE id = $1")
                .bind(device)
                .fetch_optional(&mut *tx)
                .await?;
            if seen.is_none() {
                return Err(ApiError::NotFound);
            }
            sqlx::query_scalar(
                "SELECT s.id FROM series s JOIN devices d ON d.provider_id = s.provider_id \
                 AND d.id = s.device_id WHERE d.id = $1 AND s.metric = $2 ORDER BY s.id LIMIT $3",
            )
            .bind(device)
            .bind(&metric)
            .bind(MAX_AGGREGATE_SERIES as i64 + 1)
            .fetch_all(&mut *tx)
            .await?
        }
        Scope::Pop => {
            let pop = params
                .id
                .ok_or_else(|| ApiError::BadRequest("scope=pop needs `id`".into()))?;
            let seen: Option<Uuid> = sqlx::query_scalar("SELECT id FROM pops WHERE id = $1")
                .bind(pop)
                .fetch_optional(&mut *tx)
                .await?;
            if seen.is_none() {
                return Err(ApiError::NotFound);
            }
            sqlx::query_scalar(
                "SELECT s.id FROM series s JOIN devices d ON d.provider_id = s.provider_id \
                 AND d.id = s.device_id WHERE d.pop_id = $1 AND s.metric = $2 ORDER BY s.id LIMIT $3",
            )
            .bind(pop)
            .bind(&metric)
            .bind(MAX_AGGREGATE_SERIES as i64 + 1)
            .fetch_all(&mut *tx)
            .await?
        }
        Scope::Provider => {
            let provider = caller.provider_id.or(on_behalf).unwrap_or_default();
            if params.id.is_some_and(|id| id != provider) {
                return Err(ApiError::NotFound);
            }
            sqlx::query_scalar(
                "SELECT id FROM series WHERE provider_id = $1 AND metric = $2 ORDER BY id LIMIT $3",
            )
            .bind(provider)
            .bind(&metric)
            .bind(MAX_AGGREGATE_SERIES as i64 + 1)
            .fetch_all(&mut *tx)
            .await?
        }
    };
    if ids.len() > MAX_AGGREGATE_SERIES {
        return Err(ApiError::BadRequest(format!(
            "more than {MAX_AGGREGATE_SERIES} series match; narrow the scope"
        )));
    }
    let level = rollup::choose_level(&state.config.metrics, g.from, g.to, g.now, g.points);
    let items: Vec<AggregatePoint> = if ids.is_empty() {
        Vec::new()
    } else {
        let sql = format!(
            "SELECT bucket AS ts, sum(sum / count) AS value, count(*) AS series, false AS partial FROM {} \
             WHERE series_id = ANY($1) AND bucket >= $2 AND bucket < $3 GROUP BY bucket ORDER BY bucket",
            level.table()
        );
        let mut items: Vec<AggregatePoint> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&ids)
            .bind(level.bucket(g.from))
            .bind(g.to)
            .fetch_all(&mut *tx)
            .await?;
        let last = items.last().map(|p| p.ts);
        if let Some(open) = open_bucket(level, g.from, g.to, state.config.metrics.grace(), last) {
            let partial: Option<AggregatePoint> = sqlx::query_as(
                "SELECT $2::timestamptz AS ts, sum(s / c) AS value, count(*) AS series, true AS partial \
                 FROM (SELECT series_id, sum(sum) AS s, sum(count)::float8 AS c FROM rollup_5m \
                       WHERE series_id = ANY($1) AND bucket >= $2 AND bucket < $3 GROUP BY series_id) AS per \
                 HAVING count(*) > 0",
            )
            .bind(&ids)
            .bind(open)
            .bind(level.bucket_end(open).min(g.to))
            .fetch_optional(&mut *tx)
            .await?;
            items.extend(partial);
        }
        items
    };
    tx.commit().await?;
    Ok(axum::Json(Aggregate {
        metric,
        resolution: level.as_str().to_owned(),
        series_count: ids.len(),
        from: g.from,
        to: g.to,
        items,
    }))
}

fn metric_name(m: &str) -> Result<&str, ApiError> {
    if m.is_empty() || m.len() > MAX_METRIC_LEN || m.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "metric must be 1 to {MAX_METRIC_LEN} characters without control characters"
        )));
    }
    Ok(m)
}
