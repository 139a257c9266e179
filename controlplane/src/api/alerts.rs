//! Alerting: rules (CRUD), alerts (list, get, acknowledge, resolve by hand), their history (`alert_events`),
//! silences and maintenance windows. Reads need `alerts:read`, acknowledging and resolving `alerts:ack`,
//! configuration `alerts:manage`. Every change writes an audit row in its transaction; a configuration change
//! also reaches every engine instance through the `octoisp_alert_config` notification (a trigger sends it).

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::alerts::apply::EVENTS_CHANNEL;
use crate::api::error::ApiError;
use crate::api::extract::{ApiJson, ApiPath, ApiQuery, Authed};
use crate::api::pagination::{
    Page, PageParams, decode_key_cursor, encode_key_cursor, fetch_one, fetch_page,
};
use crate::api::{AppState, ErrorBody, own_provider, to_json, validate};
use crate::audit;
use crate::auth::Caller;

// ---------------------------------------------------------------------------------------------------- rules

/// An alert rule.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct AlertRule {
    /// Its id.
    pub id: Uuid,
    /// Its provider.
    pub provider_id: Uuid,
    /// Rules sharing a key override each other: the most specific scope wins (device > group > pop > provider).
    pub rule_key: String,
    /// Display name.
    pub name: String,
    /// `provider`, `pop`, `group` or `device`.
    pub scope: String,
    /// The POP, group or device (null for `provider`).
    pub scope_id: Option<Uuid>,
    /// Metric evaluated, such as `cpu.load_percent` (any metric for `offline`).
    pub metric: String,
    /// `threshold`, `absence`, `offline`, `rate` or `optical`.
    pub kind: String,
    /// `>`, `>=`, `<`, `<=`, `==` or `!=` (threshold and rate).
    pub op: Option<String>,
    /// Fire threshold (threshold, rate per second).
    pub threshold: Option<f64>,
    /// Recovery threshold (hysteresis); null: the fire threshold.
    pub recover_threshold: Option<f64>,
    /// Lowest good value (optical).
    pub low: Option<f64>,
    /// Highest good value (optical).
    pub high: Option<f64>,
    /// Recovery margin inside [low, high] (optical).
    pub hysteresis: f64,
    /// Silence that fires (absence, offline), seconds.
    pub absence_secs: Option<i32>,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    /// How long the condition must hold before firing, seconds.
    pub for_secs: i32,
    /// How long the recovery condition must hold before resolving, seconds.
    pub recover_for_secs: i32,
    /// A missed poll (NaN sample): `keep`, `resolve` or `alert`.
    pub missing_data: String,
    /// Flap detection on.
    pub flap_enabled: bool,
    /// States kept for flap detection.
    pub flap_window: i32,
    /// Flapping starts above this percentage of weighted state changes.
    pub flap_high: f64,
    /// Flapping ends below this percentage.
    pub flap_low: f64,
    /// Its alerts mean the POP's uplink is down (they inhibit the POP's other device alerts).
    pub is_uplink: bool,
    /// Evaluated at all.
    pub enabled: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

const RULE_COLUMNS: &str = "id, provider_id, rule_key, name, scope, scope_id, metric, kind, op, threshold, \
    recover_threshold, low, high, hysteresis, absence_secs, severity, for_secs, recover_for_secs, missing_data, \
    flap_enabled, flap_window, flap_high, flap_low, is_uplink, enabled, created_at, updated_at";

/// A new rule (also the shape of a PATCH: the fields given replace the rule's).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAlertRule {
    /// Override key (`a-z0-9_.-`, at most 100).
    pub rule_key: String,
    /// Display name.
    pub name: String,
    /// `provider`, `pop`, `group` or `device`.
    #[serde(default = "default_scope")]
    pub scope: String,
    /// Required unless the scope is `provider`.
    #[serde(default)]
    pub scope_id: Option<Uuid>,
    /// Metric.
    pub metric: String,
    /// `threshold`, `absence`, `offline`, `rate` or `optical`.
    pub kind: String,
    /// Operator (threshold, rate).
    #[serde(default)]
    pub op: Option<String>,
    /// Threshold (threshold, rate).
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Recovery threshold.
    #[serde(default)]
    pub recover_threshold: Option<f64>,
    /// Lowest good value (optical).
    #[serde(default)]
    pub low: Option<f64>,
    /// Highest good value (optical).
    #[serde(default)]
    pub high: Option<f64>,
    /// Recovery margin (optical).
    #[serde(default)]
    pub hysteresis: f64,
    /// Silence that fires (absence, offline), seconds.
    #[serde(default)]
    pub absence_secs: Option<i32>,
    /// Severity.
    #[serde(default = "default_severity")]
    pub severity: String,
    /// Seconds before firing.
    #[serde(default)]
    pub for_secs: i32,
    /// Seconds before resolving.
    #[serde(default)]
    pub recover_for_secs: i32,
    /// `keep` (default), `resolve` or `alert`.
    #[serde(default = "default_missing")]
    pub missing_data: String,
    /// Flap detection on (default true).
    #[serde(default = "yes")]
    pub flap_enabled: bool,
    /// States kept (default 21).
    #[serde(default = "default_flap_window")]
    pub flap_window: i32,
    /// Start threshold, percent (default 50).
    #[serde(default = "default_flap_high")]
    pub flap_high: f64,
    /// End threshold, percent (default 25).
    #[serde(default = "default_flap_low")]
    pub flap_low: f64,
    /// The POP's uplink.
    #[serde(default)]
    pub is_uplink: bool,
    /// Evaluated (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn default_scope() -> String {
    "provider".into()
}
fn default_severity() -> String {
    "warning".into()
}
fn default_missing() -> String {
    "keep".into()
}
fn yes() -> bool {
    true
}
fn default_flap_window() -> i32 {
    21
}
fn default_flap_high() -> f64 {
    50.0
}
fn default_flap_low() -> f64 {
    25.0
}

impl NewAlertRule {
    /// Checks every field; the message names the field.
    pub(crate) fn validate(mut self) -> Result<NewAlertRule, ApiError> {
        let bad = |m: String| Err(ApiError::BadRequest(m));
        let key_ok = (1..=100).contains(&self.rule_key.len())
            && self.rule_key.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
            })
            && self.rule_key.as_bytes()[0].is_ascii_alphanumeric();
        if !key_ok {
            return bad("rule_key: use 1 to 100 of a-z, 0-9, '_', '.', '-', starting with a letter or digit".into());
        }
        self.name = validate::name("name", &self.name)?;
        self.metric = validate::name("metric", &self.metric)?;
        if !["provider", "pop", "group", "device"].contains(&self.scope.as_str()) {
            return bad("scope: expected provider, pop, group or device".into());
        }
        if (self.scope == "provider") != self.scope_id.is_none() {
            return bad(
                "scope_id: required for pop, group and device scopes, absent for provider".into(),
            );
        }
        if !["info", "warning", "critical"].contains(&self.severity.as_str()) {
            return bad("severity: expected info, warning or critical".into());
        }
        if !["keep", "resolve", "alert"].contains(&self.missing_data.as_str()) {
            return bad("missing_data: expected keep, resolve or alert".into());
        }
        for (field, v) in [
            ("for_secs", self.for_secs),
            ("recover_for_secs", self.recover_for_secs),
        ] {
            if !(0..=604_800).contains(&v) {
                return bad(format!("{field}: 0 to 604800 seconds"));
            }
        }
        if !(3..=100).contains(&self.flap_window) {
            return bad("flap_window: 3 to 100".into());
        }
        if !(self.flap_low >= 0.0 && self.flap_low < self.flap_high && self.flap_high <= 100.0) {
            return bad("flap_low, flap_high: 0 <= flap_low < flap_high <= 100".into());
        }
        let finite = |v: Option<f64>| v.is_none_or(f64::is_finite);
        if !(finite(self.threshold)
            && finite(self.recover_threshold)
            && finite(self.low)
            && finite(self.high)
            && self.hysteresis.is_finite()
            && self.hysteresis >= 0.0)
        {
            return bad("thresholds must be finite numbers (hysteresis >= 0)".into());
        }
        match self.kind.as_str() {
            "threshold" | "rate" => {
                if self
                    .op
                    .as_deref()
                    .and_then(crate::alerts::eval::Op::parse)
                    .is_none()
                {
                    return bad(
                        "op: expected one of >, >=, <, <=, ==, != for threshold and rate rules"
                            .into(),
                    );
                }
                if self.threshold.is_none() {
                    return bad("threshold: required for threshold and rate rules".into());
                }
            }
            "optical" => match (self.low, self.high) {
                (Some(l), Some(h)) if l < h => {}
                _ => return bad("low, high: required for optical rules, low < high".into()),
            },
            "absence" | "offline" => {
                if !self
                    .absence_secs
                    .is_some_and(|s| (1..=604_800).contains(&s))
                {
                    return bad(
                        "absence_secs: 1 to 604800, required for absence and offline rules".into(),
                    );
                }
            }
            _ => return bad("kind: expected threshold, absence, offline, rate or optical".into()),
        }
        Ok(self)
    }
}

/// Checks that the scope's object exists for the caller (404 otherwise, also for another tenant's).
pub(crate) async fn check_scope(
    tx: &mut sqlx::Transaction<'static, Postgres>,
    scope: &str,
    id: Option<Uuid>,
) -> Result<(), ApiError> {
    let table = match scope {
        "pop" => "pops",
        "group" => "device_groups",
        "device" => "devices",
        _ => return Ok(()),
    };
    let Some(id) = id else { return Ok(()) };
    let found: Option<i32> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT 1 FROM {table} WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    found
        .map(|_| ())
        .ok_or_else(|| ApiError::BadRequest(format!("scope_id: no {scope} {id}")))
}

/// Lists the rules.
#[utoipa::path(get, path = "/api/v1/alert-rules", tag = "alerts", params(PageParams),
    responses((status = 200, body = Page<AlertRule>), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_rules(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<axum::Json<Page<AlertRule>>, ApiError> {
    caller.require("alerts:read")?;
    let qb =
        QueryBuilder::<Postgres>::new(format!("SELECT {RULE_COLUMNS} FROM alert_rules WHERE true"));
    let page = fetch_page(&state.pool, &caller, qb, "", &page, |r: &AlertRule| r.id).await?;
    Ok(axum::Json(page))
}

/// One rule.
#[utoipa::path(get, path = "/api/v1/alert-rules/{id}", tag = "alerts", params(("id" = Uuid, Path, description = "Rule id")),
    responses((status = 200, body = AlertRule), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_rule(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<AlertRule>, ApiError> {
    caller.require("alerts:read")?;
    let select = format!("SELECT {RULE_COLUMNS} FROM alert_rules WHERE true");
    fetch_one(&state.pool, &caller, &select, "", id)
        .await
        .map(axum::Json)
}

/// Creates a rule.
#[utoipa::path(post, path = "/api/v1/alert-rules", tag = "alerts", request_body = NewAlertRule,
    responses((status = 201, body = AlertRule), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_rule(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(body): ApiJson<NewAlertRule>,
) -> Result<(StatusCode, axum::Json<AlertRule>), ApiError> {
    caller.require("alerts:manage")?;
    let provider = own_provider(&caller)?;
    let r = body.validate()?;
    let mut tx = caller.tx(&state.pool, None).await?;
    check_scope(&mut tx, &r.scope, r.scope_id).await?;
    let rule: AlertRule = bind_rule(
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO alert_rules (provider_id, rule_key, name, scope, scope_id, metric, kind, op, threshold, \
                 recover_threshold, low, high, hysteresis, absence_secs, severity, for_secs, recover_for_secs, \
                 missing_data, flap_enabled, flap_window, flap_high, flap_low, is_uplink, enabled) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, \
                 $21, $22, $23, $24) RETURNING {RULE_COLUMNS}"
        )))
        .bind(provider),
        &r,
    )
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        &caller,
        "alert_rules.create",
        "alert_rule",
        Some(&rule.id.to_string()),
        None,
        to_json(&rule),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(rule)))
}

type RuleQuery<'q> = sqlx::query::QueryAs<'q, Postgres, AlertRule, sqlx::postgres::PgArguments>;

fn bind_rule<'q>(q: RuleQuery<'q>, r: &'q NewAlertRule) -> RuleQuery<'q> {
    q.bind(&r.rule_key)
        .bind(&r.name)
        .bind(&r.scope)
        .bind(r.scope_id)
        .bind(&r.metric)
        .bind(&r.kind)
        .bind(&r.op)
        .bind(r.threshold)
        .bind(r.recover_threshold)
        .bind(r.low)
        .bind(r.high)
        .bind(r.hysteresis)
        .bind(r.absence_secs)
        .bind(&r.severity)
        .bind(r.for_secs)
        .bind(r.recover_for_secs)
        .bind(&r.missing_data)
        .bind(r.flap_enabled)
        .bind(r.flap_window)
        .bind(r.flap_high)
        .bind(r.flap_low)
        .bind(r.is_uplink)
        .bind(r.enabled)
}

/// Changes a rule: the body holds the fields of [`NewAlertRule`] to replace (null clears an optional one).
#[utoipa::path(patch, path = "/api/v1/alert-rules/{id}", tag = "alerts", request_body = NewAlertRule,
    params(("id" = Uuid, Path, description = "Rule id")),
    responses((status = 200, body = AlertRule), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_rule(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(patch): ApiJson<serde_json::Map<String, serde_json::Value>>,
) -> Result<axum::Json<AlertRule>, ApiError> {
    caller.require("alerts:manage")?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let before: AlertRule = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {RULE_COLUMNS} FROM alert_rules WHERE id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound)?;
    let mut merged = match serde_json::to_value(&before) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => return Err(ApiError::Internal("cannot serialize a rule".into())),
    };
    for k in ["id", "provider_id", "created_at", "updated_at"] {
        merged.remove(k);
    }
    for (k, v) in patch {
        if !merged.contains_key(&k) {
            return Err(ApiError::BadRequest(format!("unknown field `{k}`")));
        }
        merged.insert(k, v);
    }
    let r: NewAlertRule = serde_json::from_value(serde_json::Value::Object(merged))
        .map_err(|e| ApiError::BadRequest(format!("invalid rule: {e}")))?;
    let r = r.validate()?;
    check_scope(&mut tx, &r.scope, r.scope_id).await?;
    let after: AlertRule = bind_rule(
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE alert_rules SET rule_key = $2, name = $3, scope = $4, scope_id = $5, metric = $6, kind = $7, \
                 op = $8, threshold = $9, recover_threshold = $10, low = $11, high = $12, hysteresis = $13, \
                 absence_secs = $14, severity = $15, for_secs = $16, recover_for_secs = $17, missing_data = $18, \
                 flap_enabled = $19, flap_window = $20, flap_high = $21, flap_low = $22, is_uplink = $23, \
                 enabled = $24, updated_at = now() \
             WHERE id = $1 RETURNING {RULE_COLUMNS}"
        )))
        .bind(id),
        &r,
    )
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        &caller,
        "alert_rules.update",
        "alert_rule",
        Some(&id.to_string()),
        to_json(&before),
        to_json(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(after))
}

/// Deletes a rule and its alerts (their events stay).
#[utoipa::path(delete, path = "/api/v1/alert-rules/{id}", tag = "alerts", params(("id" = Uuid, Path, description = "Rule id")),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_rule(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    caller.require("alerts:manage")?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let before: AlertRule = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "DELETE FROM alert_rules WHERE id = $1 RETURNING {RULE_COLUMNS}"
    )))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound)?;
    audit::record(
        &mut tx,
        &caller,
        "alert_rules.delete",
        "alert_rule",
        Some(&id.to_string()),
        to_json(&before),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

// --------------------------------------------------------------------------------------------------- alerts

/// An alert: one per rule and target; it fires and resolves, `occurrences` counts the firings.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Alert {
    /// Its id (`group_key` of its events: `alert:<id>`).
    pub id: Uuid,
    /// Its provider.
    pub provider_id: Uuid,
    /// The rule.
    pub rule_id: Uuid,
    /// The rule's name.
    pub rule_name: String,
    /// Human label of the target.
    pub target: String,
    /// The device.
    pub device_id: Option<Uuid>,
    /// The device's POP.
    pub pop_id: Option<Uuid>,
    /// The series (series rules).
    pub series_id: Option<i64>,
    /// `firing` or `resolved`.
    pub state: String,
    /// Severity.
    pub severity: String,
    /// Value at the last transition.
    pub value: Option<f64>,
    /// Times it fired.
    pub occurrences: i32,
    /// The target is flapping (notifications held).
    pub flapping: bool,
    /// The uplink alert that inhibits it.
    pub inhibited_by: Option<Uuid>,
    /// Who acknowledged it.
    pub acknowledged_by: Option<Uuid>,
    /// When.
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// When it last fired (sample time).
    pub started_at: DateTime<Utc>,
    /// When it last resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// Resolved by hand.
    pub manual: bool,
}

const ALERT_SELECT: &str = "SELECT a.id, a.provider_id, a.rule_id, r.name AS rule_name, a.target, a.device_id, \
    a.pop_id, a.series_id, a.state, a.severity, a.value, a.occurrences, a.flapping, a.inhibited_by, \
    a.acknowledged_by, a.acknowledged_at, a.started_at, a.resolved_at, a.manual \
    FROM alerts a JOIN alert_rules r ON r.provider_id = a.provider_id AND r.id = a.rule_id WHERE a.occurrences > 0";

/// Filters of the alert list.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AlertFilter {
    /// `firing` (default), `resolved` or `all`.
    pub state: Option<String>,
    /// `info`, `warning` or `critical`.
    pub severity: Option<String>,
    /// Alerts of this device.
    pub device_id: Option<Uuid>,
    /// Alerts of devices of this POP.
    pub pop_id: Option<Uuid>,
    /// Page size (1 to 500).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Lists alerts (firing by default), in id order, keyset pages.
#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts", params(AlertFilter),
    responses((status = 200, body = Page<Alert>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_alerts(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(f): ApiQuery<AlertFilter>,
) -> Result<axum::Json<Page<Alert>>, ApiError> {
    caller.require("alerts:read")?;
    let mut qb = QueryBuilder::<Postgres>::new(ALERT_SELECT);
    match f.state.as_deref().unwrap_or("firing") {
        "all" => {}
        s @ ("firing" | "resolved") => {
            qb.push(" AND a.state = ").push_bind(s.to_owned());
        }
        other => {
            return Err(ApiError::BadRequest(format!(
                "state: `{other}` is not firing, resolved or all"
            )));
        }
    }
    if let Some(s) = &f.severity {
        if !["info", "warning", "critical"].contains(&s.as_str()) {
            return Err(ApiError::BadRequest(
                "severity: expected info, warning or critical".into(),
            ));
        }
        qb.push(" AND a.severity = ").push_bind(s.clone());
    }
    if let Some(d) = f.device_id {
        qb.push(" AND a.device_id = ").push_bind(d);
    }
    if let Some(p) = f.pop_id {
        qb.push(" AND a.pop_id = ").push_bind(p);
    }
    let page = PageParams {
        limit: f.limit,
        cursor: f.cursor,
    };
    let page = fetch_page(&state.pool, &caller, qb, "a.", &page, |a: &Alert| a.id).await?;
    Ok(axum::Json(page))
}

/// One alert.
#[utoipa::path(get, path = "/api/v1/alerts/{id}", tag = "alerts", params(("id" = Uuid, Path, description = "Alert id")),
    responses((status = 200, body = Alert), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_alert(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<Alert>, ApiError> {
    caller.require("alerts:read")?;
    fetch_one(&state.pool, &caller, ALERT_SELECT, "a.", id)
        .await
        .map(axum::Json)
}

async fn load_alert(
    tx: &mut sqlx::Transaction<'static, Postgres>,
    id: Uuid,
) -> Result<Alert, ApiError> {
    let mut qb = QueryBuilder::<Postgres>::new(ALERT_SELECT);
    qb.push(" AND a.id = ")
        .push_bind(id)
        .push(" FOR UPDATE OF a");
    qb.build_query_as()
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(ApiError::NotFound)
}

async fn insert_manual_event(
    tx: &mut sqlx::Transaction<'static, Postgres>,
    a: &Alert,
    kind: &str,
    caller: &Caller,
) -> Result<(), ApiError> {
    let facts = serde_json::json!({
        "by_user": caller.user_id,
        "by_api_key": caller.api_key_id,
        "occurrences": a.occurrences,
    });
    sqlx::query(
        "INSERT INTO alert_events (provider_id, alert_id, rule_id, kind, severity, device_id, pop_id, group_key, \
             suppressed, rule_name, target, facts, event_ts) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9, $10, $11, now())",
    )
    .bind(a.provider_id)
    .bind(a.id)
    .bind(a.rule_id)
    .bind(kind)
    .bind(&a.severity)
    .bind(a.device_id)
    .bind(a.pop_id)
    .bind(format!("alert:{}", a.inhibited_by.unwrap_or(a.id)))
    .bind(&a.rule_name)
    .bind(&a.target)
    .bind(facts)
    .execute(&mut **tx)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(EVENTS_CHANNEL)
        .bind(a.provider_id.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Acknowledges a firing alert (409 if it is not firing or already acknowledged).
#[utoipa::path(post, path = "/api/v1/alerts/{id}/ack", tag = "alerts", params(("id" = Uuid, Path, description = "Alert id")),
    responses((status = 200, body = Alert), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn ack_alert(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<Alert>, ApiError> {
    caller.require("alerts:ack")?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let before = load_alert(&mut tx, id).await?;
    if before.state != "firing" || before.acknowledged_at.is_some() {
        return Err(ApiError::Conflict(
            "only a firing, unacknowledged alert can be acknowledged".into(),
        ));
    }
    sqlx::query(
        "UPDATE alerts SET acknowledged_by = $2, acknowledged_at = now(), version = version + 1 WHERE id = $1",
    )
    .bind(id)
    .bind(caller.user_id)
    .execute(&mut *tx)
    .await?;
    let after = load_alert(&mut tx, id).await?;
    insert_manual_event(&mut tx, &after, "acknowledged", &caller).await?;
    audit::record(
        &mut tx,
        &caller,
        "alerts.ack",
        "alert",
        Some(&id.to_string()),
        to_json(&before),
        to_json(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(after))
}

/// Resolves a firing alert by hand (409 if it is not firing). It fires again only after its condition
/// recovered and failed anew.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/resolve", tag = "alerts", params(("id" = Uuid, Path, description = "Alert id")),
    responses((status = 200, body = Alert), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn resolve_alert(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<Alert>, ApiError> {
    caller.require("alerts:ack")?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let before = load_alert(&mut tx, id).await?;
    if before.state != "firing" {
        return Err(ApiError::Conflict("the alert is not firing".into()));
    }
    sqlx::query(
        "UPDATE alerts SET state = 'resolved', manual = true, resolved_at = now(), \
             changed_ts = greatest(changed_ts, now()), version = version + 1 WHERE id = $1",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    let after = load_alert(&mut tx, id).await?;
    insert_manual_event(&mut tx, &after, "resolved", &caller).await?;
    audit::record(
        &mut tx,
        &caller,
        "alerts.resolve",
        "alert",
        Some(&id.to_string()),
        to_json(&before),
        to_json(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(after))
}

/// An entry of the alert history (a row of `alert_events`).
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct AlertEvent {
    /// Its id (increasing).
    pub id: i64,
    /// The alert.
    pub alert_id: Uuid,
    /// The rule.
    pub rule_id: Option<Uuid>,
    /// `firing`, `resolved`, `flapping`, `flap_ended` or `acknowledged`.
    pub kind: String,
    /// Severity.
    pub severity: String,
    /// The device.
    pub device_id: Option<Uuid>,
    /// The POP.
    pub pop_id: Option<Uuid>,
    /// Notification group.
    pub group_key: String,
    /// Why no notification is sent (`silence`, `maintenance`, `flapping`, `inhibited`), or null.
    pub suppressed: Option<String>,
    /// The rule's name.
    pub rule_name: String,
    /// Target label.
    pub target: String,
    /// Facts (metric, value, threshold, ...).
    #[schema(value_type = Object)]
    pub facts: serde_json::Value,
    /// Sample time of the transition.
    pub event_ts: Option<DateTime<Utc>>,
    /// Commit time.
    pub created_at: DateTime<Utc>,
}

/// Filters of the history.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryFilter {
    /// Events of this alert.
    pub alert_id: Option<Uuid>,
    /// Events of this device.
    pub device_id: Option<Uuid>,
    /// Page size (1 to 500).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The alert history, newest first.
#[utoipa::path(get, path = "/api/v1/alert-history", tag = "alerts", params(HistoryFilter),
    responses((status = 200, body = Page<AlertEvent>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn history(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(f): ApiQuery<HistoryFilter>,
) -> Result<axum::Json<Page<AlertEvent>>, ApiError> {
    caller.require("alerts:read")?;
    let limit = PageParams {
        limit: f.limit,
        cursor: None,
    }
    .limit()?;
    let mut qb = QueryBuilder::<Postgres>::new(
        "SELECT id, alert_id, rule_id, kind, severity, device_id, pop_id, group_key, suppressed, rule_name, target, \
         facts, event_ts, created_at FROM alert_events WHERE true",
    );
    if let Some(p) = caller.provider_id {
        qb.push(" AND provider_id = ").push_bind(p);
    }
    if let Some(a) = f.alert_id {
        qb.push(" AND alert_id = ").push_bind(a);
    }
    if let Some(d) = f.device_id {
        qb.push(" AND device_id = ").push_bind(d);
    }
    if let Some(c) = f.cursor.as_deref() {
        let (key, _) = decode_key_cursor(c)?;
        let before: i64 = key
            .parse()
            .map_err(|_| ApiError::BadRequest("invalid cursor".into()))?;
        qb.push(" AND id < ").push_bind(before);
    }
    qb.push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(limit) + 1);
    let mut tx = caller.tx(&state.pool, None).await?;
    let rows: Vec<AlertEvent> = qb.build_query_as().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(axum::Json(Page::from_rows_keyed(rows, limit, |e| {
        encode_key_cursor(&e.id.to_string(), Uuid::nil())
    })))
}

// ------------------------------------------------------------------------------------ silences, maintenance

/// A silence: notifications of matching alerts are held between `starts_at` and `ends_at`.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Silence {
    /// Its id.
    pub id: Uuid,
    /// Its provider.
    pub provider_id: Uuid,
    /// Matches this rule only (null: any).
    pub rule_id: Option<Uuid>,
    /// Matches this device only.
    pub device_id: Option<Uuid>,
    /// Matches this POP only.
    pub pop_id: Option<Uuid>,
    /// Start.
    pub starts_at: DateTime<Utc>,
    /// End.
    pub ends_at: DateTime<Utc>,
    /// Who created it.
    pub created_by: Option<Uuid>,
    /// Why.
    pub reason: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

const SILENCE_COLUMNS: &str = "id, provider_id, rule_id, device_id, pop_id, starts_at, ends_at, created_by, reason, created_at";

/// A new silence.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    /// Rule matcher.
    #[serde(default)]
    pub rule_id: Option<Uuid>,
    /// Device matcher.
    #[serde(default)]
    pub device_id: Option<Uuid>,
    /// POP matcher.
    #[serde(default)]
    pub pop_id: Option<Uuid>,
    /// Start (default now).
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    /// End.
    pub ends_at: DateTime<Utc>,
    /// Why (required).
    pub reason: String,
}

fn check_period(starts: DateTime<Utc>, ends: DateTime<Utc>) -> Result<(), ApiError> {
    if ends <= starts {
        return Err(ApiError::BadRequest(
            "ends_at: must be after starts_at".into(),
        ));
    }
    if ends - starts > chrono::Duration::days(366) {
        return Err(ApiError::BadRequest(
            "ends_at: at most one year after starts_at".into(),
        ));
    }
    Ok(())
}

fn reason(v: &str) -> Result<String, ApiError> {
    let v = validate::text("reason", v)?;
    if v.trim().is_empty() {
        return Err(ApiError::BadRequest("reason: required".into()));
    }
    Ok(v)
}

/// Lists silences.
#[utoipa::path(get, path = "/api/v1/silences", tag = "alerts", params(PageParams),
    responses((status = 200, body = Page<Silence>), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_silences(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<axum::Json<Page<Silence>>, ApiError> {
    caller.require("alerts:read")?;
    let qb = QueryBuilder::<Postgres>::new(format!(
        "SELECT {SILENCE_COLUMNS} FROM alert_silences WHERE true"
    ));
    Ok(axum::Json(
        fetch_page(&state.pool, &caller, qb, "", &page, |s: &Silence| s.id).await?,
    ))
}

/// Creates a silence.
#[utoipa::path(post, path = "/api/v1/silences", tag = "alerts", request_body = NewSilence,
    responses((status = 201, body = Silence), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_silence(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(b): ApiJson<NewSilence>,
) -> Result<(StatusCode, axum::Json<Silence>), ApiError> {
    caller.require("alerts:manage")?;
    let provider = own_provider(&caller)?;
    let starts = b.starts_at.unwrap_or_else(Utc::now);
    check_period(starts, b.ends_at)?;
    let why = reason(&b.reason)?;
    let mut tx = caller.tx(&state.pool, None).await?;
    check_scope(&mut tx, "pop", b.pop_id).await?;
    check_scope(&mut tx, "device", b.device_id).await?;
    let s: Silence = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO alert_silences (provider_id, rule_id, device_id, pop_id, starts_at, ends_at, created_by, reason) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {SILENCE_COLUMNS}"
    )))
    .bind(provider)
    .bind(b.rule_id)
    .bind(b.device_id)
    .bind(b.pop_id)
    .bind(starts)
    .bind(b.ends_at)
    .bind(caller.user_id)
    .bind(why)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| match ApiError::from(e) {
        ApiError::Conflict(_) => ApiError::BadRequest("rule_id: no such rule".into()),
        other => other,
    })?;
    audit::record(
        &mut tx,
        &caller,
        "alert_silences.create",
        "alert_silence",
        Some(&s.id.to_string()),
        None,
        to_json(&s),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(s)))
}

/// Deletes a silence.
#[utoipa::path(delete, path = "/api/v1/silences/{id}", tag = "alerts", params(("id" = Uuid, Path, description = "Silence id")),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_silence(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    caller.require("alerts:manage")?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let before: Silence = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "DELETE FROM alert_silences WHERE id = $1 RETURNING {SILENCE_COLUMNS}"
    )))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound)?;
    audit::record(
        &mut tx,
        &caller,
        "alert_silences.delete",
        "alert_silence",
        Some(&id.to_string()),
        to_json(&before),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A maintenance window: alerts in its scope notify nobody between `starts_at` and `ends_at`.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct MaintenanceWindow {
    /// Its id.
    pub id: Uuid,
    /// Its provider.
    pub provider_id: Uuid,
    /// `provider`, `pop`, `group` or `device`.
    pub scope: String,
    /// The POP, group or device.
    pub scope_id: Option<Uuid>,
    /// Start.
    pub starts_at: DateTime<Utc>,
    /// End.
    pub ends_at: DateTime<Utc>,
    /// Who created it.
    pub created_by: Option<Uuid>,
    /// Why.
    pub reason: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

const MAINTENANCE_COLUMNS: &str =
    "id, provider_id, scope, scope_id, starts_at, ends_at, created_by, reason, created_at";

/// A new maintenance window.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMaintenanceWindow {
    /// `provider`, `pop`, `group` or `device`.
    pub scope: String,
    /// Required unless the scope is `provider`.
    #[serde(default)]
    pub scope_id: Option<Uuid>,
    /// Start (default now).
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    /// End.
    pub ends_at: DateTime<Utc>,
    /// Why (required).
    pub reason: String,
}

/// Lists maintenance windows.
#[utoipa::path(get, path = "/api/v1/maintenance-windows", tag = "alerts", params(PageParams),
    responses((status = 200, body = Page<MaintenanceWindow>), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_maintenance(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<axum::Json<Page<MaintenanceWindow>>, ApiError> {
    caller.require("alerts:read")?;
    let qb = QueryBuilder::<Postgres>::new(format!(
        "SELECT {MAINTENANCE_COLUMNS} FROM alert_maintenance WHERE true"
    ));
    Ok(axum::Json(
        fetch_page(
            &state.pool,
            &caller,
            qb,
            "",
            &page,
            |m: &MaintenanceWindow| m.id,
        )
        .await?,
    ))
}

/// Creates a maintenance window.
#[utoipa::path(post, path = "/api/v1/maintenance-windows", tag = "alerts", request_body = NewMaintenanceWindow,
    responses((status = 201, body = MaintenanceWindow), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_maintenance(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(b): ApiJson<NewMaintenanceWindow>,
) -> Result<(StatusCode, axum::Json<MaintenanceWindow>), ApiError> {
    caller.require("alerts:manage")?;
    let provider = own_provider(&caller)?;
    if !["provider", "pop", "group", "device"].contains(&b.scope.as_str()) {
        return Err(ApiError::BadRequest(
            "scope: expected provider, pop, group or device".into(),
        ));
    }
    if (b.scope == "provider") != b.scope_id.is_none() {
        return Err(ApiError::BadRequest(
            "scope_id: required for pop, group and device scopes, absent for provider".into(),
        ));
    }
    let starts = b.starts_at.unwrap_or_else(Utc::now);
    check_period(starts, b.ends_at)?;
    let why = reason(&b.reason)?;
    let mut tx = caller.tx(&state.pool, None).await?;
    check_scope(&mut tx, &b.scope, b.scope_id).await?;
    let m: MaintenanceWindow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO alert_maintenance (provider_id, scope, scope_id, starts_at, ends_at, created_by, reason) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {MAINTENANCE_COLUMNS}"
    )))
    .bind(provider)
    .bind(&b.scope)
    .bind(b.scope_id)
    .bind(starts)
    .bind(b.ends_at)
    .bind(caller.user_id)
    .bind(why)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        &caller,
        "alert_maintenance.create",
        "maintenance_window",
        Some(&m.id.to_string()),
        None,
        to_json(&m),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(m)))
}

/// Deletes a maintenance window.
#[utoipa::path(delete, path = "/api/v1/maintenance-windows/{id}", tag = "alerts",
    params(("id" = Uuid, Path, description = "Maintenance window id")),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_maintenance(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    caller.require("alerts:manage")?;
    let mut tx = caller.tx(&state.pool, None).await?;
    let before: MaintenanceWindow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "DELETE FROM alert_maintenance WHERE id = $1 RETURNING {MAINTENANCE_COLUMNS}"
    )))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound)?;
    audit::record(
        &mut tx,
        &caller,
        "alert_maintenance.delete",
        "maintenance_window",
        Some(&id.to_string()),
        to_json(&before),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
