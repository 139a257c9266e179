//! The alert engine on a real PostgreSQL: samples go through `Store::store_batch` (the ingest path) and its
//! observer channel into the engine, and what a user would notice is read back from `alerts` and `alert_events`
//! (the notifier's input). The HTTP routes are exercised through the real router.

#[allow(dead_code)]
mod support;

/// The alert routes (same test binary).
#[path = "alerts/api.rs"]
mod api_routes;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use octoisp_controlplane::alerts::{Engine, EngineConfig};
use octoisp_controlplane::api::{self, ApiConfig, AppState};
use octoisp_controlplane::ingest::store::Store;
use octoisp_controlplane::notify::{self, NotifyConfig};
use octoisp_shared::{Event, Record, Sample, SeriesDef, Severity, Tr069Result};
use serde_json::Value;
use support::TestDb;
use support::api::caller;
use support::fixtures::{Tenant, batch, def, now_ms, tenant};
use support::standins::HttpReceiver;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use uuid::Uuid;

const STEP: i64 = 10_000;

/// A tenant, a store whose observer feeds an engine, and a clock of sample times.
struct Rig {
    db: TestDb,
    t: Tenant,
    store: Store,
    engine: Engine,
    rx: octoisp_controlplane::alerts::SampleReceiver,
    seq: u64,
    base: i64,
}

impl Rig {
    async fn new() -> Rig {
        let db = TestDb::new().await;
        let t = tenant(&db, "isp-a").await;
        let (engine, tx, rx) = Engine::new(db.app.clone(), EngineConfig::default());
        let store = Store::new(db.app.clone()).with_sample_observer(tx);
        Rig {
            db,
            t,
            store,
            engine,
            rx,
            seq: 0,
            base: now_ms() - 3_600_000,
        }
    }

    /// Time of step `i`.
    fn at(&self, i: i64) -> i64 {
        self.base + i * STEP
    }

    /// Stores one batch with `defs` and `points` (series, step, value) and lets the engine evaluate it.
    async fn push(&mut self, defs: Vec<SeriesDef>, points: &[(u64, i64, f64)]) {
        self.seq += 1;
        let samples: Vec<Sample> = points
            .iter()
            .map(|&(series, i, value)| Sample {
                series,
                ts_ms: self.at(i),
                value,
            })
            .collect();
        let b = batch(self.seq, defs, &samples, Vec::new());
        self.store
            .store_batch(&self.t.agent, &b, &samples)
            .await
            .unwrap();
        while let Ok(msg) = self.rx.try_recv() {
            self.engine.process(msg).await.unwrap();
        }
    }

    /// One value per step for series 0, starting at step `from`.
    async fn series0(&mut self, defs: Vec<SeriesDef>, from: i64, values: &[f64]) {
        let points: Vec<(u64, i64, f64)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (0, from + i as i64, *v))
            .collect();
        self.push(defs, &points).await;
    }

    /// Stores one batch of records only (no samples).
    async fn records(&mut self, records: Vec<Record>) {
        self.seq += 1;
        let b = batch(self.seq, Vec::new(), &[], records);
        self.store
            .store_batch(&self.t.agent, &b, &[])
            .await
            .unwrap();
    }

    async fn rule(&self, sql_values: &str) -> Uuid {
        rule(&self.db, self.t.provider_id, sql_values).await
    }

    async fn device(&self, key: &str) -> Uuid {
        sqlx::query_scalar("SELECT id FROM devices WHERE device_key = $1")
            .bind(key)
            .fetch_one(&self.db.admin)
            .await
            .unwrap()
    }

    async fn events(&self) -> Vec<Ev> {
        events(&self.db).await
    }
}

/// Inserts a rule: `sql_values` are `column = value` pairs after the mandatory ones.
async fn rule(db: &TestDb, provider: Uuid, cols_vals: &str) -> Uuid {
    let (cols, vals): (Vec<&str>, Vec<&str>) = cols_vals
        .split(';')
        .map(|kv| kv.split_once('=').unwrap())
        .map(|(k, v)| (k.trim(), v.trim()))
        .unzip();
    let sql = format!(
        "INSERT INTO alert_rules (provider_id, {}) VALUES ($1, {}) RETURNING id",
        cols.join(", "),
        vals.join(", ")
    );
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(provider)
        .fetch_one(&db.admin)
        .await
        .unwrap()
}

#[derive(Debug, Clone)]
struct Ev {
    alert_id: Uuid,
    kind: String,
    suppressed: Option<String>,
    group_key: String,
    facts: Value,
    event_ts: i64,
}

type EvRow = (
    Uuid,
    String,
    Option<String>,
    String,
    Value,
    chrono::DateTime<chrono::Utc>,
);

async fn events(db: &TestDb) -> Vec<Ev> {
    let rows: Vec<EvRow> =
        sqlx::query_as(
            "SELECT alert_id, kind, suppressed, group_key, facts, event_ts FROM alert_events ORDER BY id",
        )
        .fetch_all(&db.admin)
        .await
        .unwrap();
    rows.into_iter()
        .map(|(alert_id, kind, suppressed, group_key, facts, ts)| Ev {
            alert_id,
            kind,
            suppressed,
            group_key,
            facts,
            event_ts: ts.timestamp_millis(),
        })
        .collect()
}

fn kinds(evs: &[Ev]) -> Vec<(&str, Option<&str>)> {
    evs.iter()
        .map(|e| (e.kind.as_str(), e.suppressed.as_deref()))
        .collect()
}

const CPU_HYSTERESIS: &str = "rule_key = 'cpu'; name = 'CPU alta'; metric = 'cpu.load_percent'; kind = 'threshold'; \
     op = '>'; threshold = 90; recover_threshold = 80; for_secs = 60; flap_enabled = false";

#[tokio::test]
async fn for_delays_firing_and_hysteresis_delays_recovery() {
    let mut rig = Rig::new().await;
    rig.rule(CPU_HYSTERESIS).await;
    let defs = vec![def(0, "router-1", "cpu.load_percent")];
    // 95 for 50 s: not yet 60 s.
    rig.series0(defs, 0, &[95.0; 6]).await;
    assert!(rig.events().await.is_empty(), "fired before `for` elapsed");
    rig.series0(vec![], 6, &[96.0]).await;
    let evs = rig.events().await;
    assert_eq!(kinds(&evs), vec![("firing", None)]);
    assert_eq!(evs[0].event_ts, rig.at(6));
    assert_eq!(evs[0].facts["value"], 96.0);
    assert_eq!(evs[0].facts["threshold"], 90.0);
    assert_eq!(evs[0].facts["for_secs"], 60);
    assert_eq!(evs[0].facts["device_name"], "router-1");
    assert_eq!(evs[0].facts["pop_name"], "Centro");
    assert_eq!(evs[0].group_key, format!("alert:{}", evs[0].alert_id));
    // Below 90 but above 80: still firing.
    rig.series0(vec![], 7, &[85.0, 82.0, 81.0]).await;
    assert_eq!(
        rig.events().await.len(),
        1,
        "resolved inside the hysteresis band"
    );
    rig.series0(vec![], 10, &[79.0]).await;
    let evs = rig.events().await;
    assert_eq!(kinds(&evs), vec![("firing", None), ("resolved", None)]);
    assert_eq!(evs[1].alert_id, evs[0].alert_id);
    // It fires again on the same alert, counting occurrences.
    rig.series0(vec![], 11, &[95.0; 8]).await;
    let evs = rig.events().await;
    assert_eq!(evs.len(), 3);
    assert_eq!(evs[2].alert_id, evs[0].alert_id);
    assert_eq!(evs[2].facts["occurrences"], 2);
    rig.db.cleanup().await;
}

#[tokio::test]
async fn a_missed_poll_does_not_resolve_an_alert() {
    let mut rig = Rig::new().await;
    rig.rule("rule_key = 'loss'; name = 'Perda'; metric = 'ping.loss_ratio'; kind = 'threshold'; op = '>='; \
              threshold = 0.5; flap_enabled = false")
        .await;
    let defs = vec![def(0, "icmp:192.0.2.1", "ping.loss_ratio")];
    rig.series0(defs, 0, &[0.0, 1.0]).await;
    assert_eq!(kinds(&rig.events().await), vec![("firing", None)]);
    // Polls that failed (NaN), then nothing at all for a long time, then the timer runs.
    rig.series0(vec![], 2, &[f64::NAN, f64::NAN, f64::NAN])
        .await;
    rig.engine.tick(now_ms() + 3_600_000).await.unwrap();
    assert_eq!(
        rig.events().await.len(),
        1,
        "a missed poll resolved the alert"
    );
    let state: String = sqlx::query_scalar("SELECT state FROM alerts")
        .fetch_one(&rig.db.admin)
        .await
        .unwrap();
    assert_eq!(state, "firing");
    // A real good value does.
    rig.series0(vec![], 10, &[0.0]).await;
    assert_eq!(
        kinds(&rig.events().await),
        vec![("firing", None), ("resolved", None)]
    );
    rig.db.cleanup().await;
}

#[tokio::test]
async fn a_flapping_series_is_marked_and_held_not_notified_per_flap() {
    let mut rig = Rig::new().await;
    rig.rule("rule_key = 'cpu'; name = 'CPU'; metric = 'cpu.load_percent'; kind = 'threshold'; op = '>'; \
              threshold = 90; flap_window = 5; flap_high = 50; flap_low = 25")
        .await;
    let defs = vec![def(0, "router-1", "cpu.load_percent")];
    let flaps: Vec<f64> = (0..30)
        .map(|i| if i % 2 == 0 { 95.0 } else { 50.0 })
        .collect();
    rig.series0(defs, 0, &flaps).await;
    let evs = rig.events().await;
    let transitions = evs
        .iter()
        .filter(|e| e.kind == "firing" || e.kind == "resolved")
        .count();
    assert_eq!(
        transitions,
        30,
        "every transition is recorded: {:?}",
        kinds(&evs)
    );
    let flapping: Vec<&Ev> = evs.iter().filter(|e| e.kind == "flapping").collect();
    assert_eq!(flapping.len(), 1, "{:?}", kinds(&evs));
    assert_eq!(
        flapping[0].suppressed.as_deref(),
        Some("flapping"),
        "the first fire was the notification: the mark is recorded, not sent again"
    );
    let notified: Vec<&str> = evs
        .iter()
        .filter(|e| e.suppressed.is_none())
        .map(|e| e.kind.as_str())
        .collect();
    assert_eq!(
        notified,
        ["firing"],
        "one notification for 30 flaps: {:?}",
        kinds(&evs)
    );
    let after_flap = evs.iter().skip_while(|e| e.kind != "flapping").skip(1);
    assert!(after_flap.clone().count() > 20);
    assert!(
        after_flap
            .clone()
            .all(|e| e.suppressed.as_deref() == Some("flapping"))
    );
    let marked: bool = sqlx::query_scalar("SELECT flapping FROM alerts")
        .fetch_one(&rig.db.admin)
        .await
        .unwrap();
    assert!(marked);
    // It calms down: one flap_ended, and the mark goes.
    rig.series0(vec![], 30, &[50.0; 12]).await;
    let evs = rig.events().await;
    let ended: Vec<&Ev> = evs.iter().filter(|e| e.kind == "flap_ended").collect();
    assert_eq!(ended.len(), 1);
    assert!(ended[0].suppressed.is_none());
    assert_eq!(ended[0].facts["state"], "resolved", "it settled resolved");
    let marked: bool = sqlx::query_scalar("SELECT flapping FROM alerts")
        .fetch_one(&rig.db.admin)
        .await
        .unwrap();
    assert!(!marked);
    rig.db.cleanup().await;
}

/// The notification kinds a webhook stand-in received, in order.
fn hook_kinds(hook: &HttpReceiver) -> Vec<String> {
    hook.requests()
        .iter()
        .map(|r| {
            r.json()["notification"]["kind"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

/// Pushes one sample of series 0 as its own batch; when it wrote events, waits until the real notifier has
/// dispatched them and delivered what it sends (so that each flap is its own dispatcher round, not grouped).
async fn push_and_notify(rig: &mut Rig, defs: Vec<SeriesDef>, i: i64, value: f64) {
    let before = rig.events().await.len();
    rig.series0(defs, i, &[value]).await;
    if rig.events().await.len() == before {
        return;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM alert_events WHERE dispatched_at IS NULL) \
                  + (SELECT count(*) FROM notification_deliveries WHERE status <> 'sent')",
        )
        .fetch_one(&rig.db.admin)
        .await
        .unwrap();
        if open == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the notifier did not deliver"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_flapping_link_notifies_once_until_stable_and_a_normal_fire_and_resolve_notify_at_once() {
    let mut rig = Rig::new().await;
    // ifOperStatus: 1 up, 2 down. Flap window 10: settled after 3 calm polls.
    rig.rule("rule_key = 'link'; name = 'Link down'; metric = 'if.oper_status'; kind = 'threshold'; op = '>'; \
              threshold = 1; severity = 'critical'; flap_window = 10; flap_high = 50; flap_low = 25")
        .await;
    let hook = HttpReceiver::start(&[], 200).await;
    let channel: Uuid = sqlx::query_scalar(
        "INSERT INTO notification_channels (provider_id, name, kind, config, secret) \
         VALUES ($1, 'NOC hook', 'webhook', jsonb_build_object('url', $2::text), 'whsec_test') RETURNING id",
    )
    .bind(rig.t.provider_id)
    .bind(format!("{}/hook", hook.url()))
    .fetch_one(&rig.db.admin)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO notification_policies (provider_id, name, channel_id, severities) \
         VALUES ($1, 'all', $2, '{info,warning,critical}')",
    )
    .bind(rig.t.provider_id)
    .bind(channel)
    .execute(&rig.db.admin)
    .await
    .unwrap();
    let (shutdown, tracker) = (CancellationToken::new(), TaskTracker::new());
    let cfg = NotifyConfig {
        grouping_window_ms: 50,
        poll_interval_ms: 50,
        allow_private_targets: true,
        ..NotifyConfig::default()
    };
    notify::spawn(
        rig.db.app.clone(),
        cfg,
        Default::default(),
        &tracker,
        shutdown.clone(),
    )
    .unwrap();
    tracker.close();

    let defs = vec![def(0, "router-1", "if.oper_status")];
    let mut i = 0;
    let mut poll = |v: f64| {
        i += 1;
        (i, v)
    };
    // A normal outage: the fire is delivered by itself, then the resolve by itself.
    let (n, v) = poll(1.0);
    push_and_notify(&mut rig, defs, n, v).await;
    let (n, v) = poll(2.0);
    push_and_notify(&mut rig, vec![], n, v).await;
    assert_eq!(
        hook_kinds(&hook),
        ["firing"],
        "the fire is notified at once"
    );
    for _ in 0..8 {
        let (n, v) = poll(2.0);
        push_and_notify(&mut rig, vec![], n, v).await;
    }
    let (n, v) = poll(1.0);
    push_and_notify(&mut rig, vec![], n, v).await;
    assert_eq!(
        hook_kinds(&hook),
        ["firing", "resolved"],
        "the resolve is notified at once"
    );
    for _ in 0..12 {
        let (n, v) = poll(1.0);
        push_and_notify(&mut rig, vec![], n, v).await;
    }

    // The link flaps for 20 polls: its first fire goes out, then nothing until it is stable.
    for k in 0..20 {
        let (n, v) = poll(if k % 2 == 0 { 2.0 } else { 1.0 });
        push_and_notify(&mut rig, vec![], n, v).await;
    }
    let sent = hook_kinds(&hook);
    assert_eq!(
        sent[2..],
        ["firing"],
        "one notification while the link flaps: {sent:?}"
    );
    let marked: bool = sqlx::query_scalar("SELECT flapping FROM alerts")
        .fetch_one(&rig.db.admin)
        .await
        .unwrap();
    assert!(marked, "the alert carries the flapping mark");
    let evs = rig.events().await;
    assert!(
        evs.iter()
            .any(|e| e.kind == "flapping" && e.suppressed.as_deref() == Some("flapping")),
        "the mark is in the history: {:?}",
        kinds(&evs)
    );

    // It settles up: one recovery, saying so.
    for _ in 0..15 {
        let (n, v) = poll(1.0);
        push_and_notify(&mut rig, vec![], n, v).await;
    }
    let sent = hook_kinds(&hook);
    assert_eq!(sent[2..], ["firing", "flap_ended"], "{sent:?}");
    let last = hook.requests().last().unwrap().json();
    assert!(
        last["text"].as_str().unwrap().contains("normal"),
        "the recovery says the link is back: {last}"
    );

    shutdown.cancel();
    tracker.wait().await;
    rig.db.cleanup().await;
}

#[tokio::test]
async fn maintenance_and_silences_suppress_notifications_but_events_are_recorded() {
    let mut rig = Rig::new().await;
    rig.rule("rule_key = 'cpu'; name = 'CPU'; metric = 'cpu.load_percent'; kind = 'threshold'; op = '>'; \
              threshold = 90; flap_enabled = false")
        .await;
    let p = rig.t.provider_id;
    sqlx::query(
        "INSERT INTO alert_maintenance (provider_id, scope, scope_id, starts_at, ends_at, reason) \
         VALUES ($1, 'pop', $2, now() - interval '2 hours', now() + interval '1 hour', 'troca do switch')",
    )
    .bind(p)
    .bind(rig.t.pop_id)
    .execute(&rig.db.admin)
    .await
    .unwrap();
    let defs = vec![def(0, "router-1", "cpu.load_percent")];
    rig.series0(defs, 0, &[95.0, 50.0]).await;
    assert_eq!(
        kinds(&rig.events().await),
        vec![
            ("firing", Some("maintenance")),
            ("resolved", Some("maintenance"))
        ]
    );
    // The window is cancelled and a silence on the device takes over; the engine hears of it.
    sqlx::query("DELETE FROM alert_maintenance")
        .execute(&rig.db.admin)
        .await
        .unwrap();
    let device = rig.device("router-1").await;
    sqlx::query(
        "INSERT INTO alert_silences (provider_id, device_id, starts_at, ends_at, reason) \
         VALUES ($1, $2, now() - interval '2 hours', now() + interval '1 hour', 'conhecido')",
    )
    .bind(p)
    .bind(device)
    .execute(&rig.db.admin)
    .await
    .unwrap();
    rig.engine.invalidate(p);
    rig.series0(vec![], 2, &[95.0]).await;
    assert_eq!(rig.events().await[2].suppressed.as_deref(), Some("silence"));
    // Without either, it notifies.
    sqlx::query("DELETE FROM alert_silences")
        .execute(&rig.db.admin)
        .await
        .unwrap();
    rig.engine.invalidate(p);
    rig.series0(vec![], 3, &[50.0, 95.0]).await;
    let evs = rig.events().await;
    assert_eq!(kinds(&evs[3..]), vec![("resolved", None), ("firing", None)]);
    rig.db.cleanup().await;
}

#[tokio::test]
async fn a_pop_uplink_down_notifies_once_and_inhibits_the_devices_behind_it() {
    let mut rig = Rig::new().await;
    rig.rule("rule_key = 'ping-down'; name = 'Sem resposta'; metric = 'ping.up'; kind = 'threshold'; op = '<'; \
              threshold = 1; severity = 'warning'; flap_enabled = false")
        .await;
    // The uplink's first batch creates its device; then its rule, same key, device scope, marked uplink.
    let defs = vec![
        def(0, "uplink", "ping.up"),
        def(1, "cpe-1", "ping.up"),
        def(2, "cpe-2", "ping.up"),
        def(3, "cpe-3", "ping.up"),
    ];
    rig.push(defs, &[(0, 0, 1.0), (1, 0, 1.0), (2, 0, 1.0), (3, 0, 1.0)])
        .await;
    let uplink = rig.device("uplink").await;
    let uplink_rule = rig
        .rule(&format!(
            "rule_key = 'ping-down'; name = 'Uplink do POP'; metric = 'ping.up'; kind = 'threshold'; op = '<'; \
             threshold = 1; severity = 'critical'; flap_enabled = false; is_uplink = true; scope = 'device'; \
             scope_id = '{uplink}'"
        ))
        .await;
    rig.engine.invalidate(rig.t.provider_id);
    // Everything goes down at once.
    rig.push(
        vec![],
        &[(0, 1, 0.0), (1, 1, 0.0), (2, 1, 0.0), (3, 1, 0.0)],
    )
    .await;
    let evs = rig.events().await;
    assert_eq!(evs.len(), 4, "{:?}", kinds(&evs));
    let notified: Vec<&Ev> = evs.iter().filter(|e| e.suppressed.is_none()).collect();
    assert_eq!(notified.len(), 1, "{:?}", kinds(&evs));
    let pop_alert = notified[0];
    assert_eq!(pop_alert.facts["inhibited_count"], 3);
    let rule_of: Uuid = sqlx::query_scalar("SELECT rule_id FROM alerts WHERE id = $1")
        .bind(pop_alert.alert_id)
        .fetch_one(&rig.db.admin)
        .await
        .unwrap();
    assert_eq!(rule_of, uplink_rule);
    for e in evs.iter().filter(|e| e.alert_id != pop_alert.alert_id) {
        assert_eq!(e.suppressed.as_deref(), Some("inhibited"));
        assert_eq!(e.group_key, format!("alert:{}", pop_alert.alert_id));
    }
    let inhibited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM alerts WHERE inhibited_by = $1 AND state = 'firing'",
    )
    .bind(pop_alert.alert_id)
    .fetch_one(&rig.db.admin)
    .await
    .unwrap();
    assert_eq!(inhibited, 3);
    rig.db.cleanup().await;
}

/// The dispatcher claims an ordinary alert's events at once, whatever the grouping window, and holds a POP uplink
/// alert's group (which collects the alerts it inhibits) until the window has passed; then it is one message.
#[tokio::test]
async fn an_ordinary_alert_leaves_at_once_and_only_an_uplink_group_waits_for_the_window() {
    let mut rig = Rig::new().await;
    rig.rule("rule_key = 'ping-down'; name = 'Sem resposta'; metric = 'ping.up'; kind = 'threshold'; op = '<'; \
              threshold = 1; severity = 'warning'; flap_enabled = false")
        .await;
    let defs = vec![
        def(0, "uplink", "ping.up"),
        def(1, "cpe-1", "ping.up"),
        def(2, "cpe-2", "ping.up"),
    ];
    rig.push(defs, &[(0, 0, 1.0), (1, 0, 1.0), (2, 0, 1.0)])
        .await;
    let uplink = rig.device("uplink").await;
    rig.rule(&format!(
        "rule_key = 'ping-down'; name = 'Uplink do POP'; metric = 'ping.up'; kind = 'threshold'; op = '<'; \
         threshold = 1; severity = 'critical'; flap_enabled = false; is_uplink = true; scope = 'device'; \
         scope_id = '{uplink}'"
    ))
    .await;
    rig.engine.invalidate(rig.t.provider_id);
    let provider = rig.t.provider_id;
    let hour = NotifyConfig {
        grouping_window_ms: 3_600_000,
        ..NotifyConfig::default()
    };
    let undispatched = |db: &TestDb| {
        let admin = db.admin.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM alert_events WHERE dispatched_at IS NULL",
            )
            .fetch_one(&admin)
            .await
            .unwrap()
        }
    };
    let messages = |db: &TestDb| {
        let admin = db.admin.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM notification_messages")
                .fetch_one(&admin)
                .await
                .unwrap()
        }
    };

    // One CPE goes down: its fire is claimed in the next round, not an hour later.
    rig.push(vec![], &[(0, 1, 1.0), (1, 1, 0.0), (2, 1, 1.0)])
        .await;
    assert_eq!(rig.events().await.len(), 1);
    notify::dispatch::dispatch_provider(&rig.db.app, &hour, provider)
        .await
        .unwrap();
    assert_eq!(
        undispatched(&rig.db).await,
        0,
        "the fire was claimed at once"
    );
    assert_eq!(messages(&rig.db).await, 1);

    // The uplink goes down and inhibits cpe-2: that group waits for the window.
    rig.push(vec![], &[(0, 2, 0.0), (1, 2, 0.0), (2, 2, 0.0)])
        .await;
    assert_eq!(
        undispatched(&rig.db).await,
        2,
        "{:?}",
        kinds(&rig.events().await)
    );
    let outcome = notify::dispatch::dispatch_provider(&rig.db.app, &hour, provider)
        .await
        .unwrap();
    assert_eq!(undispatched(&rig.db).await, 2, "the uplink group is held");
    assert_eq!(messages(&rig.db).await, 1);
    match outcome {
        notify::WorkOutcome::RetryIn(d) => assert!(d > Duration::from_secs(600), "{d:?}"),
        other => panic!("the dispatcher should come back when the window ends: {other:?}"),
    }
    // Once the window has passed (here: a dispatcher with none), the group is one message.
    let now = NotifyConfig {
        grouping_window_ms: 0,
        ..NotifyConfig::default()
    };
    notify::dispatch::dispatch_provider(&rig.db.app, &now, provider)
        .await
        .unwrap();
    assert_eq!(undispatched(&rig.db).await, 0);
    assert_eq!(
        messages(&rig.db).await,
        2,
        "the uplink and the CPE it inhibits: one message"
    );
    rig.db.cleanup().await;
}

#[tokio::test]
async fn the_most_specific_rule_of_a_key_applies() {
    let mut rig = Rig::new().await;
    rig.rule("rule_key = 'cpu'; name = 'CPU (provedor)'; metric = 'cpu.load_percent'; kind = 'threshold'; \
              op = '>'; threshold = 90; flap_enabled = false")
        .await;
    let defs = vec![
        def(0, "busy", "cpu.load_percent"),
        def(1, "normal", "cpu.load_percent"),
    ];
    rig.push(defs, &[(0, 0, 10.0), (1, 0, 10.0)]).await;
    let busy = rig.device("busy").await;
    let group: Uuid = sqlx::query_scalar(
        "INSERT INTO device_groups (provider_id, name) VALUES ($1, 'Core') RETURNING id",
    )
    .bind(rig.t.provider_id)
    .fetch_one(&rig.db.admin)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO device_group_members (provider_id, group_id, device_id) VALUES ($1, $2, $3)",
    )
    .bind(rig.t.provider_id)
    .bind(group)
    .bind(busy)
    .execute(&rig.db.admin)
    .await
    .unwrap();
    rig.rule(&format!(
        "rule_key = 'cpu'; name = 'CPU (grupo)'; metric = 'cpu.load_percent'; kind = 'threshold'; op = '>'; \
         threshold = 95; flap_enabled = false; scope = 'group'; scope_id = '{group}'"
    ))
    .await;
    let device_rule = rig
        .rule(&format!(
            "rule_key = 'cpu'; name = 'CPU (roteador ocupado)'; metric = 'cpu.load_percent'; kind = 'threshold'; \
             op = '>'; threshold = 98; severity = 'critical'; flap_enabled = false; scope = 'device'; \
             scope_id = '{busy}'"
        ))
        .await;
    rig.engine.invalidate(rig.t.provider_id);
    rig.push(vec![], &[(0, 1, 96.0), (1, 1, 96.0)]).await;
    let evs = rig.events().await;
    assert_eq!(
        evs.len(),
        1,
        "only `normal` passes its rule: {:?}",
        kinds(&evs)
    );
    assert_eq!(evs[0].facts["device_name"], "normal");
    rig.push(vec![], &[(0, 2, 99.0)]).await;
    let row: (Uuid, String) =
        sqlx::query_as("SELECT rule_id, severity FROM alerts WHERE device_id = $1")
            .bind(busy)
            .fetch_one(&rig.db.admin)
            .await
            .unwrap();
    assert_eq!(row, (device_rule, "critical".to_owned()));
    rig.db.cleanup().await;
}

#[tokio::test]
async fn an_offline_device_fires_from_the_timer_and_recovers_with_a_sample() {
    let mut rig = Rig::new().await;
    rig.rule("rule_key = 'offline'; name = 'Offline'; metric = 'any'; kind = 'offline'; absence_secs = 60; \
              severity = 'critical'")
        .await;
    let defs = vec![def(0, "olt-1", "if.oper_status")];
    rig.series0(defs, 0, &[1.0]).await;
    let now = now_ms();
    rig.engine.tick(now).await.unwrap();
    assert!(
        rig.events().await.is_empty(),
        "offline right after being created"
    );
    rig.engine.tick(now + 300_000).await.unwrap();
    let evs = rig.events().await;
    assert_eq!(kinds(&evs), vec![("firing", None)]);
    assert_eq!(evs[0].facts["device_name"], "olt-1");
    // A sample after the deadline brings it back.
    let ts = now + 400_000;
    rig.base = ts - 20 * STEP;
    rig.series0(vec![], 20, &[1.0]).await;
    assert_eq!(
        kinds(&rig.events().await),
        vec![("firing", None), ("resolved", None)]
    );
    rig.db.cleanup().await;
}

#[tokio::test]
async fn the_timer_records_when_each_device_last_sent_a_sample() {
    let mut rig = Rig::new().await;
    let defs = vec![def(0, "cpe-9", "ping.rtt_avg_ms")];
    // A first sample makes the engine load the device (as of now); the console and other instances read
    // `devices.last_seen`, which only inventory used to move.
    rig.base = now_ms() - 10 * STEP;
    rig.series0(defs, 0, &[12.0]).await;
    let device = rig.device("cpe-9").await;
    sqlx::query("UPDATE devices SET last_seen = now() - interval '1 day' WHERE id = $1")
        .bind(device)
        .execute(&rig.db.admin)
        .await
        .unwrap();
    // Samples later than the engine's start: the next flush writes the newest one.
    let newest = now_ms() + 2_000;
    rig.base = newest - 3 * STEP;
    rig.series0(vec![], 0, &[13.0, 14.0, 15.0, 16.0]).await;
    let last_seen = || async {
        let t: chrono::DateTime<chrono::Utc> =
            sqlx::query_scalar("SELECT last_seen FROM devices WHERE id = $1")
                .bind(device)
                .fetch_one(&rig.db.admin)
                .await
                .unwrap();
        t.timestamp_millis()
    };
    let before = last_seen().await;
    assert!(
        before < newest - 3_600_000,
        "nothing written before the flush"
    );
    rig.engine
        .tick(now_ms() + octoisp_controlplane::alerts::LAST_SEEN_FLUSH_MS)
        .await
        .unwrap();
    assert_eq!(
        last_seen().await,
        newest,
        "the newest sample's time is written"
    );
    rig.db.cleanup().await;
}

#[tokio::test]
async fn tr069_informs_advance_last_seen_in_the_ingest_transaction() {
    let mut rig = Rig::new().await;
    let cpe = "cwmp:00259E-HG8245H-48575443A1B2C3D4";
    let other = "icmp:192.0.2.7";
    let tr069 = |key: &str, kind: &str, ts_ms: i64| {
        Record::Tr069Result(Tr069Result {
            id: Uuid::now_v7(),
            ts_ms,
            device_key: key.to_owned(),
            task_id: None,
            kind: kind.to_owned(),
            ok: true,
            fault_code: None,
            fault_string: None,
            parameters: Vec::new(),
        })
    };
    let event = |key: &str, kind: &str, ts_ms: i64| {
        Record::Event(Event {
            id: Uuid::now_v7(),
            ts_ms,
            device_key: Some(key.to_owned()),
            kind: kind.to_owned(),
            severity: Severity::Info,
            message: String::new(),
            attrs: Vec::new(),
        })
    };
    // Both devices exist, last seen a day ago.
    rig.records(vec![
        tr069(cpe, "ParameterChanges", now_ms()),
        event(other, "ping.up", now_ms()),
    ])
    .await;
    sqlx::query("UPDATE devices SET last_seen = now() - interval '1 day'")
        .execute(&rig.db.admin)
        .await
        .unwrap();
    let admin = rig.db.admin.clone();
    let last_seen = |key: &'static str| {
        let admin = admin.clone();
        async move {
            let t: chrono::DateTime<chrono::Utc> =
                sqlx::query_scalar("SELECT last_seen FROM devices WHERE device_key = $1")
                    .bind(key)
                    .fetch_one(&admin)
                    .await
                    .unwrap();
            t.timestamp_millis()
        }
    };
    let day_ago = last_seen(cpe).await;

    // Two periodic informs in one batch (the ACS's marker), and a ping event of another device: when
    // `store_batch` returns (the engine has not run), the CPE is seen at its newest inform, the other device not.
    let inform = now_ms() - 5_000;
    rig.records(vec![
        tr069(cpe, octoisp_shared::TR069_INFORM_SEEN, inform - 60_000),
        tr069(cpe, octoisp_shared::TR069_INFORM_SEEN, inform),
        event(other, "ping.down", inform),
    ])
    .await;
    assert_eq!(
        last_seen(cpe).await,
        inform,
        "the newest inform is the last sight"
    );
    assert!(
        last_seen(other).await <= day_ago + 1_000,
        "a ping event is no sight"
    );
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tr069_results WHERE kind = 'Inform'")
            .fetch_one(&rig.db.admin)
            .await
            .unwrap();
    assert_eq!(stored, 0, "the inform marker is not stored as a result");

    // An older replayed inform never moves it back; a boot event (cwmp.*) moves it forward; a time in the
    // future (a CPE-side clock) is capped at the database's clock.
    rig.records(vec![tr069(
        cpe,
        octoisp_shared::TR069_INFORM_SEEN,
        inform - 30_000,
    )])
    .await;
    assert_eq!(last_seen(cpe).await, inform);
    let boot = inform + 2_000;
    rig.records(vec![event(cpe, "cwmp.boot", boot)]).await;
    assert_eq!(last_seen(cpe).await, boot);
    rig.records(vec![tr069(
        cpe,
        octoisp_shared::TR069_INFORM_SEEN,
        now_ms() + 3_600_000,
    )])
    .await;
    assert!(
        last_seen(cpe).await <= now_ms() + 1_000,
        "not in the future"
    );
    rig.db.cleanup().await;
}

#[tokio::test]
async fn two_engines_fed_the_same_samples_write_each_event_once() {
    let db = TestDb::new().await;
    let t = tenant(&db, "isp-a").await;
    rule(
        &db,
        t.provider_id,
        "rule_key = 'cpu'; name = 'CPU'; metric = 'cpu.load_percent'; kind = 'threshold'; \
                              op = '>'; threshold = 90; flap_enabled = false",
    )
    .await;
    rule(&db, t.provider_id, "rule_key = 'mem'; name = 'Mem'; metric = 'cpu.load_percent'; kind = 'threshold'; \
                              op = '>'; threshold = 70; recover_threshold = 60; for_secs = 20; flap_enabled = false")
        .await;
    let pool_b = db.app_pool(4).await;
    let (mut ea, tx_a, mut rx_a) = Engine::new(db.app.clone(), EngineConfig::default());
    let (mut eb, tx_b, mut rx_b) = Engine::new(pool_b.clone(), EngineConfig::default());
    let store_a = Store::new(db.app.clone()).with_sample_observer(tx_a);
    let store_b = Store::new(pool_b).with_sample_observer(tx_b);
    // Both engines load the provider's rules and open alerts before the race. An engine loading them for the
    // first batch while the other commits would start from the other's alerts, already firing, and compute no
    // transition (correctly) for the counts below to see.
    ea.tick(now_ms()).await.unwrap();
    eb.tick(now_ms()).await.unwrap();
    let base = now_ms() - 3_600_000;
    let pattern = [95.0, 95.0, 95.0, 50.0, 50.0, 65.0, 95.0, 75.0, 40.0, 40.0];
    let mut expected_transitions = 0;
    for seq in 1..=20u64 {
        let samples: Vec<Sample> = (0..4u64)
            .map(|s| Sample {
                series: s,
                ts_ms: base + seq as i64 * STEP,
                value: pattern[(seq as usize + s as usize) % pattern.len()],
            })
            .collect();
        let defs = if seq <= 2 {
            (0..4)
                .map(|s| def(s, &format!("router-{s}"), "cpu.load_percent"))
                .collect()
        } else {
            Vec::new()
        };
        let b = batch(seq, defs, &samples, Vec::new());
        // The agent bounces between the two instances; each instance's engine sees every sample anyway.
        let (store, rx) = if seq % 2 == 0 {
            (&store_a, &mut rx_a)
        } else {
            (&store_b, &mut rx_b)
        };
        store.store_batch(&t.agent, &b, &samples).await.unwrap();
        let msg = rx.try_recv().unwrap();
        let (ra, rb) = tokio::join!(ea.process(msg.clone()), eb.process(msg));
        ra.unwrap();
        rb.unwrap();
        expected_transitions = events(&db).await.len();
    }
    let evs = events(&db).await;
    assert!(
        evs.len() >= 10,
        "the pattern makes transitions: {}",
        evs.len()
    );
    let mut seen = HashMap::new();
    for e in &evs {
        *seen
            .entry((e.alert_id, e.kind.clone(), e.event_ts))
            .or_insert(0) += 1;
    }
    assert!(
        seen.values().all(|n| *n == 1),
        "an event was written twice: {seen:?}"
    );
    // Each transition was computed by both engines: one wrote it, the other lost the race.
    let (sa, sb) = (ea.stats(), eb.stats());
    let written = sa.events.load(Ordering::Relaxed) + sb.events.load(Ordering::Relaxed);
    let lost = sa.lost_races.load(Ordering::Relaxed) + sb.lost_races.load(Ordering::Relaxed);
    assert_eq!(written as usize, expected_transitions);
    assert_eq!(lost as usize, expected_transitions);
    // Alternating firing/resolved per alert, never two firings in a row.
    let mut last: HashMap<Uuid, String> = HashMap::new();
    for e in &evs {
        assert_ne!(last.get(&e.alert_id), Some(&e.kind), "{:?}", kinds(&evs));
        last.insert(e.alert_id, e.kind.clone());
    }
    db.cleanup().await;
}
