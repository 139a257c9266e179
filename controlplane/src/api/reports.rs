//! Report downloads: `GET /api/v1/reports/{inventory|alerts|traffic|availability}?format=csv|pdf&...`, each kind
//! with its own permission (`devices:read`, `alerts:read`, `metrics:read`). The data is read in the caller's
//! tenant transaction under a statement timeout, then rendered off the async threads (`spawn_blocking`).
//! Reports only read, so they are not audited (the audit log records state changes; the access log has every
//! download with its user). Any other kind answers 400 naming the kinds.

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::api::error::ApiError;
use crate::api::extract::{ApiPath, ApiQuery, Authed};
use crate::api::{AppState, ErrorBody, own_provider};
use crate::auth::Caller;
use crate::reports::query::{self, Params, ReportError};
use crate::reports::{Kind, Lang, MAX_RANGE_DAYS, csv, pdf};

/// Range of a report when `from` is absent: the 30 days before `to`.
const DEFAULT_RANGE_DAYS: i64 = 30;
/// Longest a report's queries may run (PostgreSQL `statement_timeout`, per statement).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(20);

/// Parameters of a report.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// `csv` (default) or `pdf`.
    pub format: Option<String>,
    /// Only the devices (alerts: the alerts) of this POP.
    pub pop_id: Option<Uuid>,
    /// Only the devices (alerts: the alerts of the devices) of this customer.
    pub customer_id: Option<Uuid>,
    /// Traffic only: one row per `pop` (default) or per `customer`.
    pub by: Option<String>,
    /// Start (RFC 3339, inclusive); default: 30 days before `to`. Inventory is a snapshot and ignores the range.
    pub from: Option<DateTime<Utc>>,
    /// End (RFC 3339, exclusive); default: now.
    pub to: Option<DateTime<Utc>>,
    /// `pt-BR` (default) or `en`: words, numbers and dates of the file.
    pub lang: Option<String>,
}

/// The device inventory: name, POP, customer, vendor/model, serial, management IP, online/offline, last seen.
#[utoipa::path(get, path = "/api/v1/reports/inventory", tag = "reports", params(ReportQuery),
    responses((status = 200, description = "The report (text/csv or application/pdf)"),
              (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn inventory(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    export(state, caller, Kind::Inventory, q).await
}

/// The alert history of the range: rule, target, severity, fired, resolved, duration, acknowledged by.
#[utoipa::path(get, path = "/api/v1/reports/alerts", tag = "reports", params(ReportQuery),
    responses((status = 200, description = "The report (text/csv or application/pdf)"),
              (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn alerts(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    export(state, caller, Kind::Alerts, q).await
}

/// Traffic per POP or customer: average, 95th percentile and peak, in and out, from the rollups.
#[utoipa::path(get, path = "/api/v1/reports/traffic", tag = "reports", params(ReportQuery),
    responses((status = 200, description = "The report (text/csv or application/pdf)"),
              (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn traffic(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    export(state, caller, Kind::Traffic, q).await
}

/// Availability per device (and per POP in the chart): the share of 5-minute intervals with a sample.
#[utoipa::path(get, path = "/api/v1/reports/availability", tag = "reports", params(ReportQuery),
    responses((status = 200, description = "The report (text/csv or application/pdf)"),
              (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn availability(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    export(state, caller, Kind::Availability, q).await
}

/// Any other `/api/v1/reports/{kind}`: 400 naming the kinds there are (after authentication).
pub async fn unknown(
    Authed(_caller): Authed,
    ApiPath(kind): ApiPath<String>,
) -> Result<Response, ApiError> {
    let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
    let shown: String = kind.chars().take(40).collect();
    Err(ApiError::BadRequest(format!(
        "unknown report `{shown}`: one of {}",
        kinds.join(", ")
    )))
}

/// The file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    Pdf,
}

async fn export(
    state: AppState,
    caller: Caller,
    kind: Kind,
    q: ReportQuery,
) -> Result<Response, ApiError> {
    caller.require(kind.permission())?;
    let provider = own_provider(&caller)?;
    let format = match q.format.as_deref().unwrap_or("csv") {
        "csv" => Format::Csv,
        "pdf" => Format::Pdf,
        other => {
            return Err(ApiError::BadRequest(format!(
                "format must be csv or pdf, not `{}`",
                other.chars().take(20).collect::<String>()
            )));
        }
    };
    let lang = match q.lang.as_deref() {
        None => Lang::default(),
        Some(l) => {
            Lang::parse(l).ok_or_else(|| ApiError::BadRequest("lang must be pt-BR or en".into()))?
        }
    };
    let by_customer = match q.by.as_deref() {
        None | Some("pop") => false,
        Some("customer") => true,
        Some(_) => return Err(ApiError::BadRequest("by must be pop or customer".into())),
    };
    if q.by.is_some() && kind != Kind::Traffic {
        return Err(ApiError::BadRequest(
            "`by` applies to the traffic report only".into(),
        ));
    }
    let now = Utc::now();
    let to = q.to.unwrap_or(now);
    let from = q
        .from
        .unwrap_or(to - chrono::Duration::days(DEFAULT_RANGE_DAYS));
    if from >= to {
        return Err(ApiError::BadRequest("`from` must be before `to`".into()));
    }
    if to - from > chrono::Duration::days(MAX_RANGE_DAYS) {
        return Err(ApiError::BadRequest(format!(
            "a report may span at most {MAX_RANGE_DAYS} days"
        )));
    }
    if from.timestamp() < crate::ingest::store::MIN_SAMPLE_MS / 1000 {
        return Err(ApiError::BadRequest(
            "`from` must be 2000-01-01 or later".into(),
        ));
    }
    let params = Params {
        kind,
        lang,
        provider,
        pop_id: q.pop_id,
        customer_id: q.customer_id,
        by_customer,
        from,
        to,
        now,
        online_threshold_secs: state.config.online_threshold_secs,
    };
    let mut tx = caller.tx(&state.pool, None).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET LOCAL statement_timeout = {}",
        STATEMENT_TIMEOUT.as_millis()
    )))
    .execute(&mut *tx)
    .await?;
    let report = query::build(&mut tx, &params, &state.config.metrics)
        .await
        .map_err(report_error)?;
    tx.commit().await?;
    let (bytes, content_type, file) = tokio::task::spawn_blocking(move || {
        let out = match format {
            Format::Csv => (csv::render(&report, lang), "text/csv; charset=utf-8", "csv"),
            Format::Pdf => (pdf::render(&report, lang), "application/pdf", "pdf"),
        };
        (out.0, out.1, report.file_name(out.2))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("rendering a report: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        bytes,
    )
        .into_response())
}

fn report_error(err: ReportError) -> ApiError {
    match err {
        ReportError::BadRequest(m) => ApiError::BadRequest(m),
        ReportError::NotFound => ApiError::NotFound,
        ReportError::Db(sqlx::Error::Database(db)) if db.code().as_deref() == Some("57014") => {
            ApiError::Unavailable(format!(
                "the report took longer than {} s; narrow the range, the POP or the customer",
                STATEMENT_TIMEOUT.as_secs()
            ))
        }
        ReportError::Db(e) => e.into(),
    }
}
