//! The alert routes through the real router: permissions per role, input validation and the audit trail of
//! every change, and the rule preview (what the engine would have fired, over the caller's series only).

use super::*;

async fn call(
    router: &axum::Router,
    method: &str,
    uri: &str,
    token: &str,
    body: Value,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .extension(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            [192, 0, 2, 9],
            4000,
        ))))
        .body(if body.is_null() {
            Body::empty()
        } else {
            Body::from(body.to_string())
        })
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_routes_check_permissions_validate_input_and_audit_changes() {
    let mut rig = Rig::new().await;
    let p = rig.t.provider_id;
    let other = tenant(&rig.db, "isp-b").await;
    let mut tokens = HashMap::new();
    tokens.insert(
        "admin".to_owned(),
        caller(p, &["alerts:read", "alerts:ack", "alerts:manage"]),
    );
    tokens.insert("noc".to_owned(), caller(p, &["alerts:read", "alerts:ack"]));
    tokens.insert("viewer".to_owned(), caller(p, &["alerts:read"]));
    tokens.insert(
        "other".to_owned(),
        caller(
            other.provider_id,
            &["alerts:read", "alerts:ack", "alerts:manage"],
        ),
    );
    let mut config = ApiConfig::default();
    config.rate_limit.enabled = false;
    let router = api::router(AppState {
        config: Arc::new(config),
        ..support::api::state(&rig.db, tokens)
    });
    let good = serde_json::json!({
        "rule_key": "cpu", "name": "CPU alta", "metric": "cpu.load_percent", "kind": "threshold",
        "op": ">", "threshold": 90, "recover_threshold": 80, "flap_enabled": false
    });
    let (s, _) = call(
        &router,
        "POST",
        "/api/v1/alert-rules",
        "viewer",
        good.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(&router, "POST", "/api/v1/alert-rules", "noc", good.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let mut bad = good.clone();
    bad["op"] = Value::from("=~");
    let (s, body) = call(&router, "POST", "/api/v1/alert-rules", "admin", bad).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("op"),
        "{body}"
    );
    let mut bad = good.clone();
    bad["scope"] = Value::from("device");
    bad["scope_id"] = Value::from(Uuid::new_v4().to_string());
    let (s, _) = call(&router, "POST", "/api/v1/alert-rules", "admin", bad).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, created) = call(
        &router,
        "POST",
        "/api/v1/alert-rules",
        "admin",
        good.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let rule_id = created["id"].as_str().unwrap().to_owned();
    let (s, _) = call(&router, "POST", "/api/v1/alert-rules", "admin", good).await;
    assert_eq!(s, StatusCode::CONFLICT, "same key and scope twice");
    let (s, patched) = call(
        &router,
        "PATCH",
        &format!("/api/v1/alert-rules/{rule_id}"),
        "admin",
        serde_json::json!({"threshold": 95, "severity": "critical"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{patched}");
    assert_eq!(patched["threshold"], 95.0);
    let (s, _) = call(
        &router,
        "PATCH",
        &format!("/api/v1/alert-rules/{rule_id}"),
        "admin",
        serde_json::json!({"nonsense": 1}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // An alert fires through the engine.
    rig.engine.invalidate(p);
    rig.series0(vec![def(0, "router-1", "cpu.load_percent")], 0, &[99.0])
        .await;
    let (s, list) = call(
        &router,
        "GET",
        "/api/v1/alerts?severity=critical",
        "viewer",
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    let alert_id = items[0]["id"].as_str().unwrap().to_owned();
    let (_, list) = call(
        &router,
        "GET",
        "/api/v1/alerts?severity=warning",
        "viewer",
        Value::Null,
    )
    .await;
    assert!(list["items"].as_array().unwrap().is_empty());
    let (s, _) = call(
        &router,
        "GET",
        "/api/v1/alerts?state=bogus",
        "viewer",
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, list) = call(&router, "GET", "/api/v1/alerts", "other", Value::Null).await;
    assert!(
        list["items"].as_array().unwrap().is_empty(),
        "another provider sees the alert"
    );

    // Acknowledge: viewer no, other provider not found, NOC yes, twice conflicts.
    let ack = format!("/api/v1/alerts/{alert_id}/ack");
    assert_eq!(
        call(&router, "POST", &ack, "viewer", Value::Null).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&router, "POST", &ack, "other", Value::Null).await.0,
        StatusCode::NOT_FOUND
    );
    let (s, acked) = call(&router, "POST", &ack, "noc", Value::Null).await;
    assert_eq!(s, StatusCode::OK, "{acked}");
    assert!(acked["acknowledged_at"].is_string());
    assert_eq!(
        call(&router, "POST", &ack, "noc", Value::Null).await.0,
        StatusCode::CONFLICT
    );
    let (s, resolved) = call(
        &router,
        "POST",
        &format!("/api/v1/alerts/{alert_id}/resolve"),
        "noc",
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(resolved["state"], "resolved");
    let (_, hist) = call(
        &router,
        "GET",
        &format!("/api/v1/alert-history?alert_id={alert_id}&limit=2"),
        "viewer",
        Value::Null,
    )
    .await;
    let kinds: Vec<&str> = hist["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["resolved", "acknowledged"], "newest first");
    let cursor = hist["next_cursor"].as_str().unwrap();
    let (_, rest) = call(
        &router,
        "GET",
        &format!("/api/v1/alert-history?alert_id={alert_id}&limit=2&cursor={cursor}"),
        "viewer",
        Value::Null,
    )
    .await;
    assert_eq!(rest["items"][0]["kind"], "firing");

    // Silences and maintenance windows.
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let (s, _) = call(
        &router,
        "POST",
        "/api/v1/silences",
        "admin",
        serde_json::json!({"ends_at": "2000-01-01T00:00:00Z", "reason": "x"}),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "a silence ending before it starts"
    );
    let (s, sil) = call(
        &router,
        "POST",
        "/api/v1/silences",
        "admin",
        serde_json::json!({"ends_at": tomorrow, "reason": "manutenção do cliente"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{sil}");
    let (s, mw) = call(
        &router,
        "POST",
        "/api/v1/maintenance-windows",
        "admin",
        serde_json::json!({"scope": "pop", "scope_id": rig.t.pop_id, "ends_at": tomorrow,
                           "reason": "troca de fibra"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{mw}");
    let (s, _) = call(
        &router,
        "POST",
        "/api/v1/maintenance-windows",
        "other",
        serde_json::json!({"scope": "pop", "scope_id": rig.t.pop_id, "ends_at": tomorrow,
                           "reason": "not mine"}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "another provider's POP");
    let sil_id = sil["id"].as_str().unwrap();
    assert_eq!(
        call(
            &router,
            "DELETE",
            &format!("/api/v1/silences/{sil_id}"),
            "other",
            Value::Null
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(
            &router,
            "DELETE",
            &format!("/api/v1/silences/{sil_id}"),
            "admin",
            Value::Null
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE provider_id = $1 AND action LIKE 'alert%' ORDER BY id",
    )
    .bind(p)
    .fetch_all(&rig.db.admin)
    .await
    .unwrap();
    assert_eq!(
        audited,
        vec![
            "alert_rules.create",
            "alert_rules.update",
            "alerts.ack",
            "alerts.resolve",
            "alert_silences.create",
            "alert_maintenance.create",
            "alert_silences.delete"
        ]
    );
    rig.db.cleanup().await;
}

/// The rule editor's preview replays stored samples through the engine's state machine: on the same samples it
/// reports the intervals the engine fired, never another provider's series, and refuses a bad rule with 422.
#[tokio::test]
async fn the_preview_reports_what_the_engine_fired_and_only_the_callers_series() {
    let mut rig = Rig::new().await;
    let p = rig.t.provider_id;
    let other = tenant(&rig.db, "isp-b").await;
    let mut tokens = HashMap::new();
    tokens.insert("viewer".to_owned(), caller(p, &["alerts:read"]));
    tokens.insert("nobody".to_owned(), caller(p, &["devices:read"]));
    let mut config = ApiConfig::default();
    config.rate_limit.enabled = false;
    let router = api::router(AppState {
        config: Arc::new(config),
        ..support::api::state(&rig.db, tokens)
    });
    let stored = rig.rule(CPU_HYSTERESIS).await;
    let defs = vec![
        def(0, "router-1", "cpu.load_percent"),
        def(1, "router-2", "cpu.load_percent"),
        def(2, "router-3", "cpu.load_percent"),
    ];
    // router-1: above 90 from step 1, fires at step 7 (60 s), peaks at 98, inside the band at 9, resolves at 10
    // (70 <= 80). router-2: never above 90. router-3: above 90 from step 3, fires at step 9, still firing.
    let r1 = [
        50.0, 95.0, 95.0, 95.0, 95.0, 95.0, 95.0, 96.0, 98.0, 85.0, 70.0, 50.0,
    ];
    let r3 = [
        50.0, 50.0, 50.0, 95.0, 95.0, 95.0, 95.0, 95.0, 95.0, 97.0, 95.0, 95.0,
    ];
    let mut points = Vec::new();
    for i in 0..12 {
        points.push((0, i as i64, r1[i]));
        points.push((1, i as i64, 40.0));
        points.push((2, i as i64, r3[i]));
    }
    rig.push(defs, &points).await;
    // Provider B's router is above 90 the whole time.
    let b_samples: Vec<Sample> = (0..12)
        .map(|i| Sample {
            series: 0,
            ts_ms: rig.at(i),
            value: 99.0,
        })
        .collect();
    let b = batch(
        1,
        vec![def(0, "b-router", "cpu.load_percent")],
        &b_samples,
        Vec::new(),
    );
    rig.store
        .store_batch(&other.agent, &b, &b_samples)
        .await
        .unwrap();
    let mut evs: Vec<(String, String, i64)> = rig
        .events()
        .await
        .into_iter()
        .filter(|e| e.facts["device_name"] != "b-router")
        .map(|e| {
            let device = e.facts["device_name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (device, e.kind, e.event_ts)
        })
        .collect();
    evs.sort_by_key(|(device, _, ts)| (*ts, device.clone()));
    assert_eq!(
        evs,
        vec![
            ("router-1".to_owned(), "firing".to_owned(), rig.at(7)),
            ("router-3".to_owned(), "firing".to_owned(), rig.at(9)),
            ("router-1".to_owned(), "resolved".to_owned(), rig.at(10)),
        ],
        "the engine's own account"
    );

    let ts = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339()
    };
    let rule = serde_json::json!({
        "rule_key": "cpu", "name": "CPU alta", "metric": "cpu.load_percent", "kind": "threshold",
        "op": ">", "threshold": 90, "recover_threshold": 80, "for_secs": 60, "flap_enabled": false
    });
    let body = serde_json::json!({
        "rule": rule, "rule_id": stored, "from": ts(rig.at(-1)), "to": ts(rig.at(20))
    });
    let (s, _) = call(
        &router,
        "POST",
        "/api/v1/alert-rules/preview",
        "nobody",
        body.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, out) = call(
        &router,
        "POST",
        "/api/v1/alert-rules/preview",
        "viewer",
        body.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{out}");
    assert_eq!(out["targets_evaluated"], 3, "{out}");
    assert_eq!(out["targets_fired"], 2, "{out}");
    assert_eq!(out["devices_fired"], 2, "{out}");
    assert_eq!(out["intervals_total"], 2, "{out}");
    let text = out.to_string();
    assert!(
        !text.contains("b-router") && !text.contains(&other.provider_id.to_string()),
        "another provider's series: {text}"
    );
    let targets = out["targets"].as_array().unwrap();
    let by_name = |name: &str| -> Vec<(Option<i64>, Option<i64>, f64)> {
        let t = targets
            .iter()
            .find(|t| t["device_name"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {out}"));
        t["intervals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let ms = |v: &Value| {
                    v.as_str().map(|s| {
                        chrono::DateTime::parse_from_rfc3339(s)
                            .unwrap()
                            .timestamp_millis()
                    })
                };
                (ms(&i["start"]), ms(&i["end"]), i["worst"].as_f64().unwrap())
            })
            .collect()
    };
    assert_eq!(
        by_name("router-1"),
        vec![(Some(rig.at(7)), Some(rig.at(10)), 98.0)]
    );
    assert_eq!(by_name("router-3"), vec![(Some(rig.at(9)), None, 97.0)]);

    // A more specific stored rule of the same key takes router-3 from a provider-wide preview.
    let r3: Uuid = rig.device("router-3").await;
    rig.rule(&format!(
        "rule_key = 'cpu'; name = 'CPU r3'; metric = 'cpu.load_percent'; kind = 'threshold'; op = '>'; \
         threshold = 99.5; scope = 'device'; scope_id = '{r3}'"
    ))
    .await;
    let (s, out) = call(
        &router,
        "POST",
        "/api/v1/alert-rules/preview",
        "viewer",
        body.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{out}");
    assert_eq!(out["targets_overridden"], 1, "{out}");
    assert_eq!(out["targets_fired"], 1, "{out}");

    // Bad rules: 422 naming the field.
    for (field, value) in [
        ("op", Value::from("=~")),
        ("threshold", Value::from("high")),
        ("kind", Value::from("median")),
    ] {
        let mut bad = body.clone();
        bad["rule"][field] = value;
        let (s, err) = call(
            &router,
            "POST",
            "/api/v1/alert-rules/preview",
            "viewer",
            bad,
        )
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {err}");
        let msg = err["error"]["message"].as_str().unwrap();
        assert!(msg.contains(field), "{field}: {msg}");
    }
    let mut old = body.clone();
    old["from"] = Value::from(ts(now_ms() - 30 * 86_400_000));
    let (s, err) = call(
        &router,
        "POST",
        "/api/v1/alert-rules/preview",
        "viewer",
        old,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("from"));
    rig.db.cleanup().await;
}
