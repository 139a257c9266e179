//! The rule editor's preview: what a rule (stored or not) would have fired on the stored samples of a range
//! (`POST /api/v1/alert-rules/preview`, `alerts:read`, nothing is written).
//!
//! The rule goes through the create route's checks, then through the engine's own parsing
//! ([`rules::rule_from_row`]) and scope precedence ([`rules::Config::resolve`], with the provider's stored rules:
//! a more specific rule of the same key takes a series from it, as in the engine), and its targets' samples are
//! replayed through the engine's state machine ([`preview::Replay`]). Everything runs in the caller's tenant
//! transaction (row-level security), read only, and is bounded: at most [`MAX_SERIES`] series (or devices for
//! `offline`) and [`MAX_SAMPLES`] samples are read, at most [`MAX_TARGETS`] targets and [`MAX_INTERVALS`]
//! intervals per target are returned, and the answer says how many were left out.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::alerts::preview::{Interval, Replay, ReplayResult};
use crate::alerts::rules::{self, RuleKind, RuleRow};
use crate::api::alerts::{NewAlertRule, check_scope};
use crate::api::error::ApiError;
use crate::api::extract::{ApiJson, Authed};
use crate::api::{AppState, ErrorBody, own_provider};

/// Series (devices for `offline` rules) evaluated at most.
pub const MAX_SERIES: usize = 2_000;
/// Samples read at most; the replay stops there and says so.
pub const MAX_SAMPLES: u64 = 2_000_000;
/// Targets returned at most (those that fired, longest firing first).
pub const MAX_TARGETS: usize = 100;
/// Intervals returned per target at most.
pub const MAX_INTERVALS: usize = 50;
/// Range when `from` is absent: the day before `to`.
const DEFAULT_RANGE_HOURS: i64 = 24;

/// What to preview.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// The rule, as the create route takes it (`rule_key` and `name` may be left out here).
    #[schema(value_type = NewAlertRule)]
    pub rule: serde_json::Value,
    /// The stored rule this one would replace (the editor's rule), so that it does not compete with itself.
    #[serde(default)]
    pub rule_id: Option<Uuid>,
    /// Start of the range (default: one day before `to`); no older than the raw samples' retention.
    #[serde(default)]
    pub from: Option<DateTime<Utc>>,
    /// End of the range (default: now).
    #[serde(default)]
    pub to: Option<DateTime<Utc>>,
}

/// An interval during which the rule would have been firing.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PreviewInterval {
    /// Fire time (sample time).
    pub start: DateTime<Utc>,
    /// Resolve time; null: still firing at the end of the range.
    pub end: Option<DateTime<Utc>>,
    /// Worst value while firing (largest for `>`, smallest for `<`, farthest out of range, the rate for rate
    /// rules); null for absence and offline.
    pub worst: Option<f64>,
    /// The target was flapping (notifications held).
    pub flapping: bool,
}

/// A target (series, or device for `offline`) on which the rule would have fired.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PreviewTarget {
    /// `series:<id>` or `device:<uuid>`, as the alert's target key.
    pub target_key: String,
    /// The series (series rules).
    pub series_id: Option<i64>,
    /// The device.
    pub device_id: Uuid,
    /// The device's name.
    pub device_name: String,
    /// The device's POP.
    pub pop_id: Uuid,
    /// The series' labels (series rules).
    #[schema(value_type = Object)]
    pub labels: serde_json::Value,
    /// The first intervals, in time order.
    pub intervals: Vec<PreviewInterval>,
    /// Intervals not listed.
    pub intervals_left_out: u64,
    /// Firing time inside the range, seconds.
    pub firing_secs: i64,
    /// Notifications the engine would have sent (fires, resolves, flap marks not held).
    pub notifications: u64,
}

/// The preview.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PreviewResult {
    /// Start of the range.
    pub from: DateTime<Utc>,
    /// End of the range.
    pub to: DateTime<Utc>,
    /// Series (devices for `offline`) the rule applies to and that were evaluated.
    pub targets_evaluated: u64,
    /// Series (devices) it applies to beyond [`MAX_SERIES`], not evaluated.
    pub targets_not_evaluated: u64,
    /// Series (devices) to which a more specific stored rule of the same key applies instead.
    pub targets_overridden: u64,
    /// Samples read.
    pub samples_read: u64,
    /// The sample budget ran out: targets after the last one read were not replayed to the end.
    pub samples_truncated: bool,
    /// Targets that would have fired.
    pub targets_fired: u64,
    /// Devices that would have fired (distinct).
    pub devices_fired: u64,
    /// Intervals in all (also those left out).
    pub intervals_total: u64,
    /// Notifications in all.
    pub notifications_total: u64,
    /// The targets that fired, longest firing first (at most [`MAX_TARGETS`]).
    pub targets: Vec<PreviewTarget>,
    /// Targets that fired and are not listed.
    pub targets_left_out: u64,
}

/// A target the rule applies to.
struct Target {
    series_id: Option<i64>,
    device_id: Uuid,
    device_name: String,
    pop_id: Uuid,
    labels: serde_json::Value,
}

/// The rule as the engine would evaluate it, with its range.
struct Checked {
    rule: NewAlertRule,
    replaces: Option<Uuid>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

fn unprocessable(e: ApiError) -> ApiError {
    match e {
        ApiError::BadRequest(m) => ApiError::Unprocessable(m),
        other => other,
    }
}

fn check(state: &AppState, req: PreviewRequest) -> Result<Checked, ApiError> {
    let mut rule = match req.rule {
        serde_json::Value::Object(m) => m,
        _ => return Err(ApiError::Unprocessable("rule: expected an object".into())),
    };
    for (k, v) in [("rule_key", "preview"), ("name", "preview")] {
        rule.entry(k).or_insert_with(|| serde_json::Value::from(v));
    }
    // axum's JSON parser names the field of a type error (`rule.threshold: invalid type ...`).
    let bytes = serde_json::to_vec(&rule).map_err(|e| ApiError::Internal(e.to_string()))?;
    let rule: NewAlertRule = axum::Json::from_bytes(&bytes)
        .map(|axum::Json(r)| r)
        .map_err(|e| ApiError::Unprocessable(e.body_text()))?;
    let rule = rule.validate().map_err(unprocessable)?;
    let now = Utc::now();
    let to = req.to.unwrap_or(now).min(now);
    let from = req
        .from
        .unwrap_or(to - chrono::Duration::hours(DEFAULT_RANGE_HOURS));
    if from >= to {
        return Err(ApiError::Unprocessable(
            "from: must be before `to` (and before now)".into(),
        ));
    }
    let oldest = now - state.config.metrics.raw_retention();
    if from < oldest {
        return Err(ApiError::Unprocessable(format!(
            "from: samples are kept {} days; start at {} or later",
            state.config.metrics.retention_raw_days,
            oldest.to_rfc3339()
        )));
    }
    Ok(Checked {
        rule,
        replaces: req.rule_id,
        from,
        to,
    })
}

fn engine_rule(r: &NewAlertRule, id: Uuid) -> Result<rules::Rule, ApiError> {
    rules::rule_from_row(RuleRow {
        id,
        rule_key: r.rule_key.clone(),
        name: r.name.clone(),
        scope: r.scope.clone(),
        scope_id: r.scope_id,
        metric: r.metric.clone(),
        kind: r.kind.clone(),
        op: r.op.clone(),
        threshold: r.threshold,
        recover_threshold: r.recover_threshold,
        low: r.low,
        high: r.high,
        hysteresis: r.hysteresis,
        absence_secs: r.absence_secs,
        severity: r.severity.clone(),
        for_secs: r.for_secs,
        recover_for_secs: r.recover_for_secs,
        missing_data: r.missing_data.clone(),
        flap_enabled: r.flap_enabled,
        flap_window: r.flap_window,
        flap_high: r.flap_high,
        flap_low: r.flap_low,
        is_uplink: r.is_uplink,
    })
    .ok_or_else(|| ApiError::Unprocessable("rule: the engine cannot evaluate this rule".into()))
}

/// What a rule would have fired on the stored samples of a range (default: the last 24 h).
#[utoipa::path(post, path = "/api/v1/alert-rules/preview", tag = "alerts", request_body = PreviewRequest,
    responses((status = 200, body = PreviewResult), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn preview(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(req): ApiJson<PreviewRequest>,
) -> Result<axum::Json<PreviewResult>, ApiError> {
    caller.require("alerts:read")?;
    own_provider(&caller)?;
    let c = check(&state, req)?;
    let mut tx = caller.tx(&state.pool, None).await?;
    check_scope(&mut tx, &c.rule.scope, c.rule.scope_id)
        .await
        .map_err(unprocessable)?;
    // The provider's stored rules, with this one in place of the rule it replaces.
    let mut cfg = rules::Config::load(&mut tx).await?;
    let id = c.replaces.unwrap_or_else(Uuid::now_v7);
    let rule = Arc::new(engine_rule(&c.rule, id)?);
    cfg.rules.retain(|r| r.id != id);
    // First: on a tie (same key, same scope), the previewed rule is the one that applies (creating it beside
    // the stored one would be refused as a duplicate; editing replaces it).
    cfg.rules.insert(0, rule.clone());
    let idx = 0;
    let candidates: Vec<usize> = (0..cfg.rules.len())
        .filter(|&i| {
            let r = &cfg.rules[i];
            (r.kind == RuleKind::Offline) == (rule.kind == RuleKind::Offline)
                && (rule.kind == RuleKind::Offline || r.metric == rule.metric)
        })
        .collect();

    let targets = load_targets(&mut tx, &rule).await?;
    let mut overridden = 0u64;
    let mut applying = Vec::new();
    for t in targets {
        if cfg
            .resolve(&candidates, t.device_id, t.pop_id)
            .contains(&idx)
        {
            applying.push(t);
        } else {
            overridden += 1;
        }
    }
    let not_evaluated = applying.len().saturating_sub(MAX_SERIES) as u64;
    applying.truncate(MAX_SERIES);
    let evaluated = applying.len() as u64;

    let (results, samples_read, truncated) = replay(&mut tx, &rule, &applying, &c).await?;
    tx.commit().await?;

    let mut fired: Vec<(Target, ReplayResult)> = applying
        .into_iter()
        .zip(results)
        .filter(|(_, r)| !r.intervals.is_empty())
        .collect();
    let devices_fired = {
        let mut d: Vec<Uuid> = fired.iter().map(|(t, _)| t.device_id).collect();
        d.sort_unstable();
        d.dedup();
        d.len() as u64
    };
    let intervals_total = fired
        .iter()
        .map(|(_, r)| r.intervals.len() as u64 + r.left_out)
        .sum();
    let notifications_total = fired.iter().map(|(_, r)| r.notifications).sum();
    fired.sort_by_key(|(t, r)| (std::cmp::Reverse(r.firing_ms), t.series_id, t.device_id));
    let targets_fired = fired.len() as u64;
    let targets_left_out = fired.len().saturating_sub(MAX_TARGETS) as u64;
    fired.truncate(MAX_TARGETS);
    Ok(axum::Json(PreviewResult {
        from: c.from,
        to: c.to,
        targets_evaluated: evaluated,
        targets_not_evaluated: not_evaluated,
        targets_overridden: overridden,
        samples_read,
        samples_truncated: truncated,
        targets_fired,
        devices_fired,
        intervals_total,
        notifications_total,
        targets: fired
            .into_iter()
            .map(|(t, r)| PreviewTarget {
                target_key: match t.series_id {
                    Some(s) => format!("series:{s}"),
                    None => format!("device:{}", t.device_id),
                },
                series_id: t.series_id,
                device_id: t.device_id,
                device_name: t.device_name,
                pop_id: t.pop_id,
                labels: t.labels,
                intervals: r.intervals.iter().filter_map(interval).collect(),
                intervals_left_out: r.left_out,
                firing_secs: r.firing_ms / 1000,
                notifications: r.notifications,
            })
            .collect(),
        targets_left_out,
    }))
}

fn interval(i: &Interval) -> Option<PreviewInterval> {
    Some(PreviewInterval {
        start: DateTime::from_timestamp_millis(i.start_ms)?,
        end: match i.end_ms {
            Some(e) => Some(DateTime::from_timestamp_millis(e)?),
            None => None,
        },
        worst: i.worst.filter(|v| v.is_finite()),
        flapping: i.flapping,
    })
}

/// `(series, device, pop, device name, labels)`.
type TargetRow = (Option<i64>, Uuid, Uuid, String, serde_json::Value);

/// Most targets listed before scope precedence and the [`MAX_SERIES`] cap (the rest are counted as not evaluated).
const MAX_LISTED: i64 = 20_000;

/// The series of the rule's metric (devices, for `offline`) inside its scope, in id order.
async fn load_targets(
    tx: &mut sqlx::Transaction<'static, Postgres>,
    rule: &rules::Rule,
) -> Result<Vec<Target>, ApiError> {
    let mut qb = if rule.kind == RuleKind::Offline {
        QueryBuilder::<Postgres>::new(
            "SELECT NULL::bigint, d.id, d.pop_id, coalesce(d.name, d.serial_number, d.device_key), \
                    '{}'::jsonb FROM devices d WHERE true",
        )
    } else {
        let mut qb = QueryBuilder::<Postgres>::new(
            "SELECT s.id, d.id, d.pop_id, coalesce(d.name, d.serial_number, d.device_key), s.labels \
             FROM series s JOIN devices d ON d.provider_id = s.provider_id AND d.id = s.device_id \
             WHERE s.metric = ",
        );
        qb.push_bind(rule.metric.clone());
        qb
    };
    match rule.scope {
        rules::Scope::Provider => {}
        rules::Scope::Pop(p) => {
            qb.push(" AND d.pop_id = ").push_bind(p);
        }
        rules::Scope::Device(id) => {
            qb.push(" AND d.id = ").push_bind(id);
        }
        rules::Scope::Group(g) => {
            qb.push(" AND d.id IN (SELECT device_id FROM device_group_members WHERE group_id = ")
                .push_bind(g)
                .push(")");
        }
    }
    if rule.kind == RuleKind::Offline {
        qb.push(" ORDER BY d.id");
    } else {
        qb.push(" ORDER BY s.id");
    }
    qb.push(" LIMIT ").push_bind(MAX_LISTED);
    let rows: Vec<TargetRow> = qb.build_query_as().fetch_all(&mut **tx).await?;
    Ok(rows
        .into_iter()
        .map(
            |(series_id, device_id, pop_id, device_name, labels)| Target {
                series_id,
                device_id,
                device_name,
                pop_id,
                labels,
            },
        )
        .collect())
}

/// Replays the samples of `targets` (in the order [`load_targets`] gives) through the rule; returns one result
/// per target, the samples read and whether the budget ran out.
async fn replay(
    tx: &mut sqlx::Transaction<'static, Postgres>,
    rule: &rules::Rule,
    targets: &[Target],
    c: &Checked,
) -> Result<(Vec<ReplayResult>, u64, bool), ApiError> {
    let (from_ms, to_ms) = (c.from.timestamp_millis(), c.to.timestamp_millis());
    let offline = rule.kind == RuleKind::Offline;
    let mut replays: Vec<Option<Replay>> = targets
        .iter()
        .map(|_| Some(Replay::new(rule.eval.clone(), from_ms, MAX_INTERVALS)))
        .collect();
    let mut index: HashMap<(i64, Uuid), usize> = HashMap::with_capacity(targets.len());
    for (i, t) in targets.iter().enumerate() {
        index.insert(key(t.series_id, t.device_id, offline), i);
    }
    let sql = if offline {
        // Any sample of the device; a missed poll (NaN) is not a sighting, as in the engine.
        "SELECT NULL::bigint, s.device_id, x.ts, x.value FROM samples x JOIN series s ON s.id = x.series_id \
         WHERE s.device_id = ANY($1) AND x.ts >= $2 AND x.ts < $3 AND x.value <> 'NaN'::float8 \
         ORDER BY s.device_id, x.ts"
    } else {
        "SELECT x.series_id, NULL::uuid, x.ts, x.value FROM samples x \
         WHERE x.series_id = ANY($1) AND x.ts >= $2 AND x.ts < $3 ORDER BY x.series_id, x.ts"
    };
    let devices: Vec<Uuid> = targets.iter().map(|t| t.device_id).collect();
    let series: Vec<i64> = targets.iter().filter_map(|t| t.series_id).collect();
    let mut read = 0u64;
    let mut truncated = false;
    // Targets replayed to the end: all of them unless the budget runs out (the last one reached is partial).
    let mut reached = targets.len();
    {
        let q = sqlx::query_as::<_, (Option<i64>, Option<Uuid>, DateTime<Utc>, f64)>(sql);
        let q = if offline {
            q.bind(&devices)
        } else {
            q.bind(&series)
        };
        let mut rows = q.bind(c.from).bind(c.to).fetch(&mut **tx);
        while let Some((series_id, device_id, ts, value)) = rows.try_next().await? {
            let k = key(series_id, device_id.unwrap_or_default(), offline);
            let Some(&i) = index.get(&k) else { continue };
            read += 1;
            if read > MAX_SAMPLES {
                truncated = true;
                reached = i + 1;
                break;
            }
            if let Some(r) = replays[i].as_mut() {
                r.sample(ts.timestamp_millis(), value);
            }
        }
    }
    let results = replays
        .into_iter()
        .enumerate()
        .map(|(i, r)| match r {
            Some(r) if i < reached => r.finish(to_ms),
            _ => ReplayResult {
                intervals: Vec::new(),
                left_out: 0,
                notifications: 0,
                firing_ms: 0,
            },
        })
        .collect();
    Ok((results, read.min(MAX_SAMPLES), truncated))
}

/// The replay a sample belongs to: its series, or its device for `offline`.
fn key(series_id: Option<i64>, device_id: Uuid, offline: bool) -> (i64, Uuid) {
    match series_id {
        Some(s) if !offline => (s, Uuid::nil()),
        _ => (0, device_id),
    }
}
