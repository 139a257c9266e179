//! Transitions into PostgreSQL: one tenant transaction per evaluation pass and provider, every transition
//! conditional, so that when several instances evaluate the same target only the first writes the alert and its
//! `alert_events` row.
//!
//! - **Fire**: `INSERT ... ON CONFLICT (provider_id, rule_id, target_key) DO UPDATE ... WHERE state = 'resolved'
//!   AND changed_ts < $ts`: the row is created, or a resolved one reopens (occurrences + 1), only if no newer
//!   transition is there; otherwise nothing is returned and nothing else is written.
//! - **Resolve**: `UPDATE ... WHERE state = 'firing' AND changed_ts < $ts`.
//! - **Flap start/end**: `UPDATE ... WHERE flapping = <old> AND flap_changed_ts < $ts` (a flap start on a target
//!   with no alert row yet creates the row, resolved).
//! - **Settle**: `UPDATE ... SET flap_changed_ts = $ts WHERE NOT flapping AND flap_changed_ts < $ts AND state =
//!   <state>`: one `firing`/`resolved` event with `facts.settled`, for a state whose transition was held.
//!
//! `changed_ts` is sample time (the sample, or the absence deadline, that caused the transition), which every
//! instance computes the same from the same samples; row locks serialize two instances racing on one row and the
//! loser's guard fails on the winner's version.
//!
//! Suppression of an event, first match wins: `maintenance`, `silence`, `inhibited` (the device's POP has its
//! uplink alert firing; the event carries the uplink alert's `group_key`), `flapping` (transitions held while the
//! target flaps or settles, see [`crate::alerts::eval`]; `flap_ended` and settle events are never held). Uplink
//! alerts firing in a pass are written first and their events last, so their facts count the alerts they
//! inhibit, those of the same pass included.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::alerts::engine::{EngineStats, ProviderState};
use crate::alerts::eval::Change;
use crate::alerts::rules::Rule;
use crate::db;

/// Channel the notifier listens on.
pub const EVENTS_CHANNEL: &str = "octoisp_alert_events";

/// What an alert is about.
#[derive(Debug, Clone)]
pub struct Target {
    /// `series:<id>` or `device:<uuid>`.
    pub key: String,
    /// Human label.
    pub label: String,
    /// The device.
    pub device: Uuid,
    /// Its POP.
    pub pop: Uuid,
    /// The series, for series rules.
    pub series: Option<i64>,
    /// Device display name.
    pub device_name: Arc<str>,
    /// Compact labels of the series.
    pub labels: String,
}

/// A transition computed in memory, not yet written.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The rule.
    pub rule: Arc<Rule>,
    /// The target.
    pub target: Target,
    /// What changed.
    pub change: Change,
    /// Recorded without notification (`suppressed = 'flapping'`): the target is flapping or has not settled
    /// since its last notification (see [`crate::alerts::eval`]).
    pub held: bool,
    /// When the batch that caused it was stored (None: the timer).
    pub stored_at: Option<Instant>,
}

/// One event to insert.
struct Event<'a> {
    alert_id: Uuid,
    rule: &'a Rule,
    kind: &'static str,
    target: &'a Target,
    group_key: String,
    suppressed: Option<&'static str>,
    facts: Value,
    ts: DateTime<Utc>,
}

/// Writes `pending` for `provider` in one transaction; returns the earliest `stored_at` of the transitions that
/// wrote events (for the latency figure), or None when nothing was written.
pub(crate) async fn apply(
    pool: &PgPool,
    provider: Uuid,
    state: &mut ProviderState,
    pending: Vec<Pending>,
    stats: &EngineStats,
) -> Result<Option<Instant>, sqlx::Error> {
    let mut tx = db::tenant_tx(pool, provider)
        .await
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let mut events = 0u64;
    let mut earliest: Option<Instant> = None;
    let mut wrote = |p: &Pending, events: &mut u64| {
        *events += 1;
        if let Some(t) = p.stored_at {
            earliest = Some(earliest.map_or(t, |e| e.min(t)));
        }
    };

    // 1. Uplink alerts that fire: rows first, events at the end.
    let mut uplink_fired: Vec<(Uuid, usize, u32)> = Vec::new();
    for (i, p) in pending.iter().enumerate() {
        if let (true, Change::Fire { ts, value, .. }) = (p.rule.is_uplink, p.change) {
            match fire(&mut tx, provider, p, ts, value, None).await? {
                Some((id, occurrences)) => {
                    state.uplinks.insert(p.target.pop, id);
                    uplink_fired.push((id, i, occurrences));
                }
                None => {
                    stats.lost_races.fetch_add(1, Ordering::Relaxed);
                    if let Some(id) = firing_alert(&mut tx, provider, p).await? {
                        state.uplinks.insert(p.target.pop, id);
                    }
                }
            }
        }
    }

    // 2. Everything else, in order.
    for p in &pending {
        let inhibitor = (!p.rule.is_uplink)
            .then(|| state.uplinks.get(&p.target.pop).copied())
            .flatten();
        let quiet = state
            .cfg
            .suppression(p.rule.id, p.target.device, p.target.pop, p.change.ts());
        let held = |flapping: bool| {
            quiet
                .or(inhibitor.map(|_| "inhibited"))
                .or(flapping.then_some("flapping"))
        };
        let group = |id: Uuid| format!("alert:{}", inhibitor.unwrap_or(id));
        match p.change {
            Change::Fire { .. } if p.rule.is_uplink => {}
            Change::Fire { ts, value, .. } => {
                match fire(&mut tx, provider, p, ts, value, inhibitor).await? {
                    Some((id, occurrences)) => {
                        let facts = facts(state, p, Some(value), occurrences, None);
                        insert_event(
                            &mut tx,
                            provider,
                            Event {
                                alert_id: id,
                                rule: &p.rule,
                                kind: "firing",
                                target: &p.target,
                                group_key: group(id),
                                suppressed: held(p.held),
                                facts,
                                ts: to_time(ts),
                            },
                        )
                        .await?;
                        wrote(p, &mut events);
                    }
                    None => {
                        stats.lost_races.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Change::Resolve { ts, value, .. } => {
                let row: Option<(Uuid, i32, Option<Uuid>)> = sqlx::query_as(
                    "UPDATE alerts SET state = 'resolved', changed_ts = $4, resolved_at = $4, value = $5, \
                            version = version + 1 \
                     WHERE provider_id = $1 AND rule_id = $2 AND target_key = $3 AND state = 'firing' \
                       AND changed_ts < $4 \
                     RETURNING id, occurrences, inhibited_by",
                )
                .bind(provider)
                .bind(p.rule.id)
                .bind(&p.target.key)
                .bind(to_time(ts))
                .bind(finite(value))
                .fetch_optional(&mut *tx)
                .await?;
                let Some((id, occurrences, inhibited_by)) = row else {
                    stats.lost_races.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let mut inhibited_count = None;
                if p.rule.is_uplink {
                    if state.uplinks.get(&p.target.pop) == Some(&id) {
                        state.uplinks.remove(&p.target.pop);
                    }
                    inhibited_count = Some(count_inhibited(&mut tx, provider, id).await?);
                }
                let inhibitor = inhibited_by.or(inhibitor);
                let suppressed = quiet
                    .or(inhibitor.map(|_| "inhibited"))
                    .or(p.held.then_some("flapping"));
                let facts = facts(state, p, Some(value), occurrences, inhibited_count);
                insert_event(
                    &mut tx,
                    provider,
                    Event {
                        alert_id: id,
                        rule: &p.rule,
                        kind: "resolved",
                        target: &p.target,
                        group_key: format!("alert:{}", inhibitor.unwrap_or(id)),
                        suppressed,
                        facts,
                        ts: to_time(ts),
                    },
                )
                .await?;
                wrote(p, &mut events);
            }
            Change::Settle { ts, firing } => {
                // The row already holds the state (its transition was held): the guard makes one instance tell it.
                let row: Option<(Uuid, i32)> = sqlx::query_as(
                    "UPDATE alerts SET flap_changed_ts = $4, version = version + 1 \
                     WHERE provider_id = $1 AND rule_id = $2 AND target_key = $3 AND NOT flapping \
                       AND flap_changed_ts < $4 AND state = $5 \
                     RETURNING id, occurrences",
                )
                .bind(provider)
                .bind(p.rule.id)
                .bind(&p.target.key)
                .bind(to_time(ts))
                .bind(if firing { "firing" } else { "resolved" })
                .fetch_optional(&mut *tx)
                .await?;
                let Some((id, occurrences)) = row else {
                    stats.lost_races.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let mut facts = facts(state, p, None, occurrences, None);
                if let Value::Object(map) = &mut facts {
                    map.insert("settled".into(), json!(true));
                }
                insert_event(
                    &mut tx,
                    provider,
                    Event {
                        alert_id: id,
                        rule: &p.rule,
                        kind: if firing { "firing" } else { "resolved" },
                        target: &p.target,
                        group_key: group(id),
                        suppressed: quiet.or(inhibitor.map(|_| "inhibited")),
                        facts,
                        ts: to_time(ts),
                    },
                )
                .await?;
                wrote(p, &mut events);
            }
            Change::FlapStart { ts, .. } | Change::FlapEnd { ts, .. } => {
                let start = matches!(p.change, Change::FlapStart { .. });
                let row: Option<(Uuid, i32)> = if start {
                    sqlx::query_as(
                        "INSERT INTO alerts AS a (provider_id, rule_id, target_key, target, device_id, pop_id, \
                                series_id, state, severity, flapping, flap_changed_ts, started_at, changed_ts, \
                                occurrences) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, 'resolved', $8, true, $9, $9, '-infinity', 0) \
                         ON CONFLICT (provider_id, rule_id, target_key) DO UPDATE \
                            SET flapping = true, flap_changed_ts = EXCLUDED.flap_changed_ts, \
                                version = a.version + 1 \
                            WHERE NOT a.flapping AND a.flap_changed_ts < EXCLUDED.flap_changed_ts \
                         RETURNING id, occurrences",
                    )
                    .bind(provider)
                    .bind(p.rule.id)
                    .bind(&p.target.key)
                    .bind(&p.target.label)
                    .bind(p.target.device)
                    .bind(p.target.pop)
                    .bind(p.target.series)
                    .bind(&p.rule.severity)
                    .bind(to_time(ts))
                    .fetch_optional(&mut *tx)
                    .await?
                } else {
                    sqlx::query_as(
                        "UPDATE alerts SET flapping = false, flap_changed_ts = $4, version = version + 1 \
                         WHERE provider_id = $1 AND rule_id = $2 AND target_key = $3 AND flapping \
                           AND flap_changed_ts < $4 \
                         RETURNING id, occurrences",
                    )
                    .bind(provider)
                    .bind(p.rule.id)
                    .bind(&p.target.key)
                    .bind(to_time(ts))
                    .fetch_optional(&mut *tx)
                    .await?
                };
                let Some((id, occurrences)) = row else {
                    stats.lost_races.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let mut facts = facts(state, p, None, occurrences, None);
                if let (Value::Object(map), Change::FlapEnd { firing, .. }) = (&mut facts, p.change)
                {
                    map.insert(
                        "state".into(),
                        json!(if firing { "firing" } else { "resolved" }),
                    );
                }
                insert_event(
                    &mut tx,
                    provider,
                    Event {
                        alert_id: id,
                        rule: &p.rule,
                        kind: if start { "flapping" } else { "flap_ended" },
                        target: &p.target,
                        group_key: group(id),
                        suppressed: quiet
                            .or(inhibitor.map(|_| "inhibited"))
                            .or(p.held.then_some("flapping")),
                        facts,
                        ts: to_time(ts),
                    },
                )
                .await?;
                wrote(p, &mut events);
            }
        }
    }

    // 3. The uplink alerts' own events, counting what they inhibit (alerts of the POP firing before them too).
    for (id, i, occurrences) in uplink_fired {
        let p = &pending[i];
        sqlx::query(
            "UPDATE alerts a SET inhibited_by = $2, version = a.version + 1 \
             FROM alert_rules r \
             WHERE a.provider_id = $1 AND a.pop_id = $3 AND a.state = 'firing' AND a.inhibited_by IS NULL \
               AND a.id <> $2 AND r.provider_id = a.provider_id AND r.id = a.rule_id AND NOT r.is_uplink",
        )
        .bind(provider)
        .bind(id)
        .bind(p.target.pop)
        .execute(&mut *tx)
        .await?;
        let count = count_inhibited(&mut tx, provider, id).await?;
        let (ts, value) = match p.change {
            Change::Fire { ts, value, .. } => (ts, value),
            _ => continue,
        };
        let quiet = state
            .cfg
            .suppression(p.rule.id, p.target.device, p.target.pop, ts);
        let facts = facts(state, p, Some(value), occurrences, Some(count));
        insert_event(
            &mut tx,
            provider,
            Event {
                alert_id: id,
                rule: &p.rule,
                kind: "firing",
                target: &p.target,
                group_key: format!("alert:{id}"),
                suppressed: quiet.or(p.held.then_some("flapping")),
                facts,
                ts: to_time(ts),
            },
        )
        .await?;
        wrote(p, &mut events);
    }

    if events > 0 {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(EVENTS_CHANNEL)
            .bind(provider.to_string())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    stats.events.fetch_add(events, Ordering::Relaxed);
    Ok(if events > 0 { earliest } else { None })
}

/// Fires (creates or reopens) the alert; `(id, occurrences)` when this call won.
async fn fire(
    conn: &mut PgConnection,
    provider: Uuid,
    p: &Pending,
    ts: i64,
    value: f64,
    inhibited_by: Option<Uuid>,
) -> Result<Option<(Uuid, u32)>, sqlx::Error> {
    let row: Option<(Uuid, i32)> = sqlx::query_as(
        "INSERT INTO alerts AS a (provider_id, rule_id, target_key, target, device_id, pop_id, series_id, state, \
                severity, value, started_at, changed_ts, inhibited_by, flapping) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'firing', $8, $9, $10, $10, $11, false) \
         ON CONFLICT (provider_id, rule_id, target_key) DO UPDATE \
            SET state = 'firing', occurrences = a.occurrences + 1, value = EXCLUDED.value, \
                severity = EXCLUDED.severity, target = EXCLUDED.target, started_at = EXCLUDED.started_at, \
                changed_ts = EXCLUDED.changed_ts, resolved_at = NULL, acknowledged_by = NULL, \
                acknowledged_at = NULL, manual = false, inhibited_by = EXCLUDED.inhibited_by, \
                version = a.version + 1 \
            WHERE a.state = 'resolved' AND a.changed_ts < EXCLUDED.changed_ts \
         RETURNING id, occurrences",
    )
    .bind(provider)
    .bind(p.rule.id)
    .bind(&p.target.key)
    .bind(&p.target.label)
    .bind(p.target.device)
    .bind(p.target.pop)
    .bind(p.target.series)
    .bind(&p.rule.severity)
    .bind(finite(value))
    .bind(to_time(ts))
    .bind(inhibited_by)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|(id, n)| (id, u32::try_from(n.max(1)).unwrap_or(1))))
}

async fn firing_alert(
    conn: &mut PgConnection,
    provider: Uuid,
    p: &Pending,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM alerts WHERE provider_id = $1 AND rule_id = $2 AND target_key = $3 AND state = 'firing'",
    )
    .bind(provider)
    .bind(p.rule.id)
    .bind(&p.target.key)
    .fetch_optional(&mut *conn)
    .await
}

async fn count_inhibited(
    conn: &mut PgConnection,
    provider: Uuid,
    id: Uuid,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM alerts WHERE provider_id = $1 AND inhibited_by = $2 AND state = 'firing'",
    )
    .bind(provider)
    .bind(id)
    .fetch_one(&mut *conn)
    .await
}

async fn insert_event(
    conn: &mut PgConnection,
    provider: Uuid,
    e: Event<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO alert_events (provider_id, alert_id, rule_id, kind, severity, device_id, pop_id, group_key, \
                suppressed, rule_name, target, facts, event_ts) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(provider)
    .bind(e.alert_id)
    .bind(e.rule.id)
    .bind(e.kind)
    .bind(&e.rule.severity)
    .bind(e.target.device)
    .bind(e.target.pop)
    .bind(&e.group_key)
    .bind(e.suppressed)
    .bind(&e.rule.name)
    .bind(&e.target.label)
    .bind(&e.facts)
    .bind(e.ts)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn facts(
    state: &ProviderState,
    p: &Pending,
    value: Option<f64>,
    occurrences: impl Into<i64>,
    inhibited: Option<i64>,
) -> Value {
    let occurrences: i64 = occurrences.into();
    let mut facts = p.rule.facts.clone();
    if let Value::Object(map) = &mut facts {
        map.insert("value".into(), json!(value.and_then(finite)));
        map.insert("occurrences".into(), json!(occurrences));
        map.insert("device_name".into(), json!(&*p.target.device_name));
        map.insert("device_id".into(), json!(p.target.device));
        map.insert(
            "pop_name".into(),
            json!(state.cfg.pop_names.get(&p.target.pop)),
        );
        if !p.target.labels.is_empty() {
            map.insert("labels".into(), json!(p.target.labels));
        }
        if let Some(n) = inhibited {
            map.insert("inhibited_count".into(), json!(n));
        }
    }
    facts
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn to_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::UNIX_EPOCH)
}
