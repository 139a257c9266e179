//! The dispatcher: alert events -> messages -> deliveries, per provider, in one tenant transaction.
//!
//! A round for one provider: take the provider's advisory lock (another dispatcher skips the provider, so a group
//! is never split between two instances), claim the undispatched events of every ready group (`FOR UPDATE SKIP
//! LOCKED`), mark them dispatched, build one message per `group_key`
//! (the lead event plus the count of dependent alerts; suppressed rows are counted, never sent), route it through
//! the enabled policies (severity, kind, scope, quiet hours), fold what exceeds each channel's rate limit into one
//! summary per recipient, insert the deliveries and commit. Everything commits together: an event becomes
//! deliveries once, or not at all (and is claimed again).
//!
//! A group is ready at once when it cannot grow: all its events come from rules that are not uplink rules, so
//! nothing else will join their `alert:<id>` key (a fire is notified within the dispatcher's round trip, not a
//! window later). A group that can grow waits the grouping window from its first event: a POP uplink alert's,
//! which collects the alerts it inhibits in the following seconds, and events whose rule is gone.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db;
use crate::notify::render::{self, EventText, Language, Rendered};
use crate::notify::send::email_targets;
use crate::notify::{
    ALERT_EVENTS_CHANNEL, DELIVERIES_CHANNEL, NotifyConfig, NotifyError, WorkOutcome, wake_loop,
};

/// Events claimed in one round per provider.
const MAX_EVENTS_PER_ROUND: i64 = 20_000;

#[derive(Debug, Clone, sqlx::FromRow)]
struct EventRow {
    id: i64,
    alert_id: Uuid,
    kind: String,
    severity: String,
    device_id: Option<Uuid>,
    pop_id: Option<Uuid>,
    group_key: String,
    suppressed: Option<String>,
    rule_name: String,
    target: String,
    facts: Value,
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct PolicyRow {
    id: Uuid,
    channel_id: Uuid,
    user_id: Option<Uuid>,
    severities: Vec<String>,
    kinds: Vec<String>,
    scope: String,
    scope_id: Option<Uuid>,
    quiet_allow_critical: bool,
    in_quiet: bool,
    channel_kind: String,
    channel_config: Value,
    channel_language: String,
    rate_limit_per_minute: i32,
    user_email: Option<String>,
    user_language: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct SubscriptionRow {
    id: Uuid,
    user_id: Uuid,
    language: String,
}

/// One delivery to insert.
#[derive(Debug, Default)]
struct NewDeliveries {
    message_id: Vec<Option<i64>>,
    channel_id: Vec<Uuid>,
    policy_id: Vec<Option<Uuid>>,
    recipient: Vec<String>,
    language: Vec<String>,
    subject: Vec<String>,
    body: Vec<String>,
    payload: Vec<String>,
}

impl NewDeliveries {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        message_id: Option<i64>,
        channel_id: Uuid,
        policy_id: Option<Uuid>,
        recipient: String,
        lang: Language,
        text: &Rendered,
        payload: &Value,
    ) {
        self.message_id.push(message_id);
        self.channel_id.push(channel_id);
        self.policy_id.push(policy_id);
        self.recipient.push(recipient);
        self.language.push(lang.code().to_owned());
        self.subject.push(text.subject.clone());
        self.body.push(text.body.clone());
        self.payload.push(payload.to_string());
    }

    fn len(&self) -> usize {
        self.channel_id.len()
    }
}

/// Runs the dispatcher until `shutdown`.
pub async fn run(pool: PgPool, cfg: NotifyConfig, shutdown: CancellationToken) {
    let poll = Duration::from_millis(cfg.poll_interval_ms);
    tracing::info!(
        window_ms = cfg.grouping_window_ms,
        "Notification dispatcher started."
    );
    wake_loop(&pool, ALERT_EVENTS_CHANNEL, poll, &shutdown, || {
        dispatch_all(&pool, &cfg)
    })
    .await;
}

/// One round over every provider with undispatched events.
pub async fn dispatch_all(pool: &PgPool, cfg: &NotifyConfig) -> Result<WorkOutcome, NotifyError> {
    let providers: Vec<Uuid> =
        sqlx::query_scalar("SELECT p FROM octoisp_alert_event_providers() AS p")
            .fetch_all(pool)
            .await
            .map_err(NotifyError::db("list providers with alert events"))?;
    let mut outcome = WorkOutcome::Idle;
    for provider in providers {
        match dispatch_provider(pool, cfg, provider).await {
            Ok(o) => outcome = merge(outcome, o),
            Err(err) => {
                tracing::warn!(provider = %provider, error = %err, "Dispatching alert events failed.");
                outcome = merge(outcome, WorkOutcome::RetryIn(Duration::from_secs(1)));
            }
        }
    }
    Ok(outcome)
}

fn merge(a: WorkOutcome, b: WorkOutcome) -> WorkOutcome {
    match (a, b) {
        (WorkOutcome::More, _) | (_, WorkOutcome::More) => WorkOutcome::More,
        (WorkOutcome::RetryIn(x), WorkOutcome::RetryIn(y)) => WorkOutcome::RetryIn(x.min(y)),
        (WorkOutcome::RetryIn(x), WorkOutcome::Idle)
        | (WorkOutcome::Idle, WorkOutcome::RetryIn(x)) => WorkOutcome::RetryIn(x),
        (WorkOutcome::Idle, WorkOutcome::Idle) => WorkOutcome::Idle,
    }
}

fn severity_rank(s: &str) -> u8 {
    match s {
        "critical" => 2,
        "warning" => 1,
        _ => 0,
    }
}

/// One round for one provider; returns when to come back.
pub async fn dispatch_provider(
    pool: &PgPool,
    cfg: &NotifyConfig,
    provider: Uuid,
) -> Result<WorkOutcome, NotifyError> {
    let window_secs = cfg.grouping_window_ms as f64 / 1000.0;
    let mut tx = db::tenant_tx(pool, provider).await?;
    let locked: bool = sqlx::query_scalar(
        "SELECT pg_try_advisory_xact_lock(hashtextextended('octoisp_notify_dispatch:' || $1::text, 0))",
    )
    .bind(provider)
    .fetch_one(&mut *tx)
    .await
    .map_err(NotifyError::db("take the dispatch lock"))?;
    if !locked {
        // Another dispatcher is on this provider.
        return Ok(WorkOutcome::RetryIn(Duration::from_millis(200)));
    }
    let events: Vec<EventRow> = sqlx::query_as(
        "SELECT id, alert_id, kind, severity, device_id, pop_id, group_key, suppressed, rule_name, target, facts \
         FROM alert_events WHERE provider_id = $1 AND dispatched_at IS NULL AND group_key IN ( \
             SELECT e.group_key FROM alert_events e \
             LEFT JOIN alert_rules r ON r.provider_id = e.provider_id AND r.id = e.rule_id \
             WHERE e.provider_id = $1 AND e.dispatched_at IS NULL \
             GROUP BY e.group_key \
             HAVING min(e.created_at) <= clock_timestamp() - make_interval(secs => $2) \
                 OR bool_and(r.is_uplink IS FALSE)) \
         ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED",
    )
    .bind(provider)
    .bind(window_secs)
    .bind(MAX_EVENTS_PER_ROUND)
    .fetch_all(&mut *tx)
    .await
    .map_err(NotifyError::db("claim alert events"))?;

    // A full round may have left ready groups behind: come back at once.
    let full = events.len() as i64 >= MAX_EVENTS_PER_ROUND;
    let mut made = 0usize;
    if !events.is_empty() {
        let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
        sqlx::query(
            "UPDATE alert_events SET dispatched_at = now() WHERE provider_id = $1 AND id = ANY($2)",
        )
        .bind(provider)
        .bind(&ids)
        .execute(&mut *tx)
        .await
        .map_err(NotifyError::db("mark alert events dispatched"))?;
        made = build_deliveries(&mut tx, provider, events).await?;
        if made > 0 {
            sqlx::query("SELECT pg_notify($1, $2::text)")
                .bind(DELIVERIES_CHANNEL)
                .bind(provider)
                .execute(&mut *tx)
                .await
                .map_err(NotifyError::db("notify the delivery workers"))?;
        }
    }
    // When does the next group of this provider become ready?
    let wait: Option<f64> = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM (min(created_at) + make_interval(secs => $2) - clock_timestamp()))::float8 \
         FROM alert_events WHERE provider_id = $1 AND dispatched_at IS NULL",
    )
    .bind(provider)
    .bind(window_secs)
    .fetch_one(&mut *tx)
    .await
    .map_err(NotifyError::db("find the next group"))?;
    tx.commit()
        .await
        .map_err(NotifyError::db("commit the dispatch"))?;
    if made > 0 {
        tracing::debug!(provider = %provider, deliveries = made, "Alert events dispatched.");
    }
    Ok(match wait {
        _ if full => WorkOutcome::More,
        None => WorkOutcome::Idle,
        Some(secs) => WorkOutcome::RetryIn(Duration::from_secs_f64(secs.clamp(0.02, 3600.0))),
    })
}

/// Builds messages and deliveries for the claimed `events`; returns the number of deliveries written.
async fn build_deliveries(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    provider: Uuid,
    events: Vec<EventRow>,
) -> Result<usize, NotifyError> {
    // Groups, in the order of their first event.
    let mut order: Vec<String> = Vec::new();
    let mut groups: HashMap<String, Vec<EventRow>> = HashMap::new();
    for e in events {
        let g = groups.entry(e.group_key.clone()).or_default();
        if g.is_empty() {
            order.push(e.group_key.clone());
        }
        g.push(e);
    }

    struct Msg {
        group_key: String,
        lead: Option<EventRow>,
        event_ids: Vec<i64>,
        kind: String,
        severity: String,
        route_severity: String,
        dependents: i32,
        suppressed: i32,
    }
    let mut msgs: Vec<Msg> = Vec::with_capacity(order.len());
    for key in &order {
        let Some(group) = groups.remove(key) else {
            continue;
        };
        let notify: Vec<&EventRow> = group.iter().filter(|e| e.suppressed.is_none()).collect();
        let suppressed = (group.len() - notify.len()) as i32;
        let key_alert = key
            .strip_prefix("alert:")
            .and_then(|s| Uuid::parse_str(s).ok());
        let lead = notify
            .iter()
            .rev()
            .find(|e| Some(e.alert_id) == key_alert)
            .or(notify.first())
            .map(|e| (*e).clone());
        let dependents = match &lead {
            Some(l) => group
                .iter()
                .filter(|e| e.alert_id != l.alert_id)
                .filter(|e| matches!(e.suppressed.as_deref(), None | Some("inhibited")))
                .map(|e| e.alert_id)
                .collect::<BTreeSet<_>>()
                .len() as i32,
            None => 0,
        };
        let route_severity = notify
            .iter()
            .map(|e| e.severity.as_str())
            .max_by_key(|s| severity_rank(s))
            .unwrap_or("info")
            .to_owned();
        let first = &group[0];
        msgs.push(Msg {
            group_key: key.clone(),
            kind: lead.as_ref().map_or(first.kind.clone(), |l| l.kind.clone()),
            severity: lead
                .as_ref()
                .map_or(first.severity.clone(), |l| l.severity.clone()),
            lead,
            event_ids: group.iter().map(|e| e.id).collect(),
            route_severity,
            dependents,
            suppressed,
        });
    }

    // One insert for every message; group keys are unique within a round, so they map the ids back.
    let mut ids_by_key: HashMap<String, i64> = HashMap::with_capacity(msgs.len());
    {
        let keys: Vec<&str> = msgs.iter().map(|m| m.group_key.as_str()).collect();
        let leads: Vec<Option<i64>> = msgs.iter().map(|m| m.lead.as_ref().map(|l| l.id)).collect();
        let event_ids: Vec<String> = msgs
            .iter()
            .map(|m| {
                let ids: Vec<String> = m.event_ids.iter().map(i64::to_string).collect();
                format!("{{{}}}", ids.join(","))
            })
            .collect();
        let kinds: Vec<&str> = msgs.iter().map(|m| m.kind.as_str()).collect();
        let sevs: Vec<&str> = msgs.iter().map(|m| m.severity.as_str()).collect();
        let deps: Vec<i32> = msgs.iter().map(|m| m.dependents).collect();
        let sups: Vec<i32> = msgs.iter().map(|m| m.suppressed).collect();
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "INSERT INTO notification_messages \
                 (provider_id, group_key, lead_event_id, event_ids, kind, severity, dependents, suppressed) \
             SELECT $1, k, l, e::bigint[], ki, s, d, su \
             FROM UNNEST($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::int[], $8::int[]) \
                 AS t(k, l, e, ki, s, d, su) \
             RETURNING id, group_key",
        )
        .bind(provider)
        .bind(&keys)
        .bind(&leads)
        .bind(&event_ids)
        .bind(&kinds)
        .bind(&sevs)
        .bind(&deps)
        .bind(&sups)
        .fetch_all(&mut **tx)
        .await
        .map_err(NotifyError::db("insert notification messages"))?;
        ids_by_key.extend(rows.into_iter().map(|(id, k)| (k, id)));
    }
    if msgs.iter().all(|m| m.lead.is_none()) {
        return Ok(0);
    }

    let policies: Vec<PolicyRow> = sqlx::query_as(
        "SELECT p.id, p.channel_id, p.user_id, p.severities, p.kinds, p.scope, p.scope_id, p.quiet_allow_critical, \
                CASE WHEN p.quiet_start IS NULL THEN false \
                     WHEN p.quiet_start <= p.quiet_end THEN \
                         (now() AT TIME ZONE p.quiet_timezone)::time >= p.quiet_start \
                         AND (now() AT TIME ZONE p.quiet_timezone)::time < p.quiet_end \
                     ELSE (now() AT TIME ZONE p.quiet_timezone)::time >= p.quiet_start \
                         OR (now() AT TIME ZONE p.quiet_timezone)::time < p.quiet_end END AS in_quiet, \
                c.kind AS channel_kind, c.config AS channel_config, c.language AS channel_language, \
                c.rate_limit_per_minute, u.email AS user_email, u.language AS user_language \
         FROM notification_policies p \
         JOIN notification_channels c ON c.provider_id = p.provider_id AND c.id = p.channel_id \
         LEFT JOIN users u ON u.provider_id = p.provider_id AND u.id = p.user_id \
         WHERE p.provider_id = $1 AND p.enabled AND c.enabled \
           AND (p.user_id IS NULL OR u.disabled_at IS NULL) \
         ORDER BY p.id",
    )
    .bind(provider)
    .fetch_all(&mut **tx)
    .await
    .map_err(NotifyError::db("read notification policies"))?;
    if policies.is_empty() {
        return Ok(0);
    }
    let devices: Vec<Uuid> = msgs
        .iter()
        .filter_map(|m| m.lead.as_ref().and_then(|l| l.device_id))
        .collect();
    let mut device_groups: HashMap<Uuid, BTreeSet<Uuid>> = HashMap::new();
    if policies.iter().any(|p| p.scope == "group") && !devices.is_empty() {
        let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "SELECT device_id, group_id FROM device_group_members WHERE provider_id = $1 AND device_id = ANY($2)",
        )
        .bind(provider)
        .bind(&devices)
        .fetch_all(&mut **tx)
        .await
        .map_err(NotifyError::db("read device group memberships"))?;
        for (d, g) in rows {
            device_groups.entry(d).or_default().insert(g);
        }
    }
    let subscriptions: Vec<SubscriptionRow> =
        if policies.iter().any(|p| p.channel_kind == "webpush") {
            sqlx::query_as(
                "SELECT s.id, s.user_id, u.language FROM push_subscriptions s \
             JOIN users u ON u.provider_id = s.provider_id AND u.id = s.user_id \
             WHERE s.provider_id = $1 AND u.disabled_at IS NULL ORDER BY s.id",
            )
            .bind(provider)
            .fetch_all(&mut **tx)
            .await
            .map_err(NotifyError::db("read push subscriptions"))?
        } else {
            Vec::new()
        };
    // Messages each channel sent in the last minute (the rate limit's window).
    let recent: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT channel_id, count(DISTINCT coalesce(message_id, 0)) FROM notification_deliveries \
         WHERE provider_id = $1 AND created_at > now() - interval '1 minute' GROUP BY channel_id",
    )
    .bind(provider)
    .fetch_all(&mut **tx)
    .await
    .map_err(NotifyError::db("count recent deliveries"))?;
    let mut used: HashMap<Uuid, i64> = recent.into_iter().collect();
    let mut counted: BTreeSet<(Uuid, i64)> = BTreeSet::new();
    let mut folded: BTreeMap<(Uuid, String, &'static str), Vec<String>> = BTreeMap::new();
    let mut out = NewDeliveries::default();

    for m in &msgs {
        let (Some(lead), Some(&message_id)) = (&m.lead, ids_by_key.get(&m.group_key)) else {
            continue;
        };
        let text_of = |lang: Language| {
            render::render(
                &EventText {
                    kind: &lead.kind,
                    severity: &lead.severity,
                    rule_name: &lead.rule_name,
                    target: &lead.target,
                    facts: &lead.facts,
                    dependents: m.dependents as u64,
                },
                lang,
            )
        };
        let mut texts: HashMap<Language, Rendered> = HashMap::new();
        let payload = json!({
            "message_id": message_id,
            "group_key": m.group_key,
            "alert_id": lead.alert_id,
            "kind": lead.kind,
            "severity": lead.severity,
            "rule_name": lead.rule_name,
            "target": lead.target,
            "device_id": lead.device_id,
            "pop_id": lead.pop_id,
            "facts": lead.facts,
            "dependents": m.dependents,
            "event_ids": m.event_ids,
        });
        for p in &policies {
            if !p.severities.contains(&m.route_severity) || !p.kinds.contains(&lead.kind) {
                continue;
            }
            let in_scope = match p.scope.as_str() {
                "pop" => p.scope_id.is_some() && lead.pop_id == p.scope_id,
                "group" => match (lead.device_id, p.scope_id) {
                    (Some(d), Some(g)) => device_groups.get(&d).is_some_and(|s| s.contains(&g)),
                    _ => false,
                },
                _ => true,
            };
            if !in_scope {
                continue;
            }
            if p.in_quiet && !(p.quiet_allow_critical && m.route_severity == "critical") {
                continue;
            }
            let user_lang = p.user_language.as_deref().map(Language::from_code);
            let channel_lang = Language::from_code(&p.channel_language);
            let targets: Vec<(String, Language)> = match p.channel_kind.as_str() {
                "email" => match (p.user_id, &p.user_email) {
                    (Some(_), Some(email)) => {
                        vec![(email.clone(), user_lang.unwrap_or(channel_lang))]
                    }
                    (Some(_), None) => Vec::new(),
                    (None, _) => email_targets(&p.channel_config)
                        .into_iter()
                        .map(|a| (a, channel_lang))
                        .collect(),
                },
                "webpush" => subscriptions
                    .iter()
                    .filter(|s| p.user_id.is_none_or(|u| u == s.user_id))
                    .map(|s| (s.id.to_string(), Language::from_code(&s.language)))
                    .collect(),
                _ => vec![(String::new(), user_lang.unwrap_or(channel_lang))],
            };
            if targets.is_empty() {
                continue;
            }
            // Rate limit: messages per channel per minute.
            let count = used.entry(p.channel_id).or_insert(0);
            let first_time = counted.insert((p.channel_id, message_id));
            if first_time {
                *count += 1;
            }
            let over = *count > i64::from(p.rate_limit_per_minute);
            for (recipient, lang) in targets {
                let text = texts.entry(lang).or_insert_with(|| text_of(lang)).clone();
                if over {
                    folded
                        .entry((p.channel_id, recipient, lang.code()))
                        .or_default()
                        .push(text.subject);
                } else {
                    out.push(
                        Some(message_id),
                        p.channel_id,
                        Some(p.id),
                        recipient,
                        lang,
                        &text,
                        &payload,
                    );
                }
            }
        }
    }
    for ((channel, recipient, lang), subjects) in folded {
        let count = subjects.len();
        let mut seen = BTreeSet::new();
        let subjects: Vec<String> = subjects
            .into_iter()
            .filter(|s| seen.insert(s.clone()))
            .collect();
        let lang = Language::from_code(lang);
        let text = render::summary(count, &subjects, lang);
        let payload = json!({"summary": true, "count": count, "severity": "warning"});
        out.push(None, channel, None, recipient, lang, &text, &payload);
    }
    if out.len() == 0 {
        return Ok(0);
    }
    let n = sqlx::query(
        "INSERT INTO notification_deliveries \
             (provider_id, message_id, channel_id, policy_id, recipient, language, subject, body, payload) \
         SELECT $1, m, c, p, r, l, s, b, pl::jsonb \
         FROM UNNEST($2::bigint[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[]) \
             AS t(m, c, p, r, l, s, b, pl) \
         ON CONFLICT (provider_id, message_id, channel_id, recipient) DO NOTHING",
    )
    .bind(provider)
    .bind(&out.message_id)
    .bind(&out.channel_id)
    .bind(&out.policy_id)
    .bind(&out.recipient)
    .bind(&out.language)
    .bind(&out.subject)
    .bind(&out.body)
    .bind(&out.payload)
    .execute(&mut **tx)
    .await
    .map_err(NotifyError::db("insert notification deliveries"))?
    .rows_affected();
    Ok(n as usize)
}
