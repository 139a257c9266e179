//! Notifications on a real PostgreSQL: alert events inserted as the tenant (what the alert engine does) go through
//! the real dispatcher and delivery workers to local stand-ins (an SMTP server, HTTP receivers standing for
//! Telegram, webhook endpoints and a Web Push service); channels, policies, dead letters and push subscriptions
//! are managed through the real API router.

#[allow(dead_code)]
mod support;

/// Channel secrets at rest (same test binary).
#[path = "notify/secrets.rs"]
mod secrets;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::agreement::{self, ECDH_P256, PrivateKey, UnparsedPublicKey};
use aws_lc_rs::signature::{self, ECDSA_P256_SHA256_FIXED};
use aws_lc_rs::{aead, hmac};
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use octoisp_controlplane::api::{self, AppState};
use octoisp_controlplane::auth::{Caller, rbac};
use octoisp_controlplane::db;
use octoisp_controlplane::notify::{self, NotifyConfig, SmtpConfig, SmtpTls};
use octoisp_controlplane::secretbox::{self, SecretBox};
use serde_json::{Value, json};
use sqlx::PgPool;
use support::TestDb;
use support::fixtures::{Tenant, tenant};
use support::standins::{HttpReceiver, SmtpServer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use uuid::Uuid;

fn caller(provider: Uuid, user: Uuid, perms: &[&str]) -> Caller {
    Caller {
        user_id: Some(user),
        api_key_id: None,
        provider_id: Some(provider),
        permissions: perms.iter().map(|p| (*p).to_owned()).collect(),
        global_admin: false,
        request_id: String::new(),
        ip: None,
    }
}

const ADMIN: &[&str] = &["notifications:manage", "alerts:read"];

struct Harness {
    db: TestDb,
    a: Tenant,
    b: Tenant,
    a_admin: Uuid,
    router: Router,
}

async fn user(db: &TestDb, provider: Uuid, email: &str, language: &str) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO users (provider_id, email, name, role_id, language) VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(provider)
    .bind(email)
    .bind(email)
    .bind(rbac::ROLE_PROVIDER_ADMIN)
    .bind(language)
    .fetch_one(&db.admin)
    .await
    .unwrap()
}

/// The key the tests' control plane seals secrets with, and a later one (rotation).
const KEY_1: [u8; 32] = [0x11; 32];
const KEY_2: [u8; 32] = [0x22; 32];

fn sealing_with(current: [u8; 32], previous: &[[u8; 32]]) -> Arc<SecretBox> {
    Arc::new(SecretBox::from_keys(Some(current), previous))
}

async fn harness() -> Harness {
    harness_with(sealing_with(KEY_1, &[])).await
}

async fn harness_with(secrets: Arc<SecretBox>) -> Harness {
    let db = TestDb::new().await;
    let a = tenant(&db, "isp-a").await;
    let b = tenant(&db, "isp-b").await;
    let a_admin = user(&db, a.provider_id, "admin@isp-a.test", "pt-BR").await;
    let b_admin = user(&db, b.provider_id, "admin@isp-b.test", "pt-BR").await;
    let mut tokens = HashMap::new();
    tokens.insert("a".to_owned(), caller(a.provider_id, a_admin, ADMIN));
    tokens.insert("b".to_owned(), caller(b.provider_id, b_admin, ADMIN));
    tokens.insert(
        "a-reader".to_owned(),
        caller(a.provider_id, Uuid::new_v4(), &["alerts:read"]),
    );
    let state = AppState {
        secrets,
        ..support::api::state(&db, tokens)
    };
    Harness {
        router: api::router(state),
        db,
        a,
        b,
        a_admin,
    }
}

struct Resp {
    status: StatusCode,
    body: Value,
    text: String,
}

impl Harness {
    async fn call(&self, method: &str, uri: &str, token: &str, body: Option<Value>) -> Resp {
        let mut req = Request::builder().method(method).uri(uri);
        if !token.is_empty() {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        let mut req = req
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 7], 40000))));
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Resp {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            text,
        }
    }

    /// Creates a channel through the API; returns its id and the answer.
    async fn channel(&self, token: &str, body: Value) -> (Uuid, Value) {
        let r = self
            .call("POST", "/api/v1/notifications/channels", token, Some(body))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        (r.body["id"].as_str().unwrap().parse().unwrap(), r.body)
    }

    /// Creates a policy through the API.
    async fn policy(&self, token: &str, body: Value) -> Uuid {
        let r = self
            .call("POST", "/api/v1/notifications/policies", token, Some(body))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["id"].as_str().unwrap().parse().unwrap()
    }
}

fn config(smtp: Option<&SmtpServer>, telegram: Option<&HttpReceiver>) -> NotifyConfig {
    NotifyConfig {
        grouping_window_ms: 300,
        poll_interval_ms: 200,
        max_attempts: 3,
        backoff_base_ms: 100,
        backoff_max_ms: 300,
        send_timeout_secs: 5,
        lease_secs: 30,
        telegram_api_url: telegram.map_or_else(|| "http://127.0.0.1:9".to_owned(), |t| t.url()),
        smtp: smtp.map(|s| SmtpConfig {
            host: "127.0.0.1".into(),
            port: s.addr.port(),
            tls: SmtpTls::None,
            username: None,
            password: None,
            from: "OctoISP <noc@octoisp.test>".into(),
            timeout_secs: 5,
        }),
        // The stand-ins listen on loopback.
        allow_private_targets: true,
        ..NotifyConfig::default()
    }
}

/// A running notifier (dispatcher + delivery worker), stopped on drop of the token.
struct Notifier {
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Notifier {
    fn start(pool: PgPool, cfg: NotifyConfig) -> Notifier {
        Notifier::start_with(pool, cfg, sealing_with(KEY_1, &[]))
    }

    fn start_with(pool: PgPool, cfg: NotifyConfig, secrets: Arc<SecretBox>) -> Notifier {
        let (shutdown, tracker) = (CancellationToken::new(), TaskTracker::new());
        notify::spawn(pool, cfg, secrets, &tracker, shutdown.clone()).unwrap();
        tracker.close();
        Notifier { shutdown, tracker }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.wait().await;
    }
}

/// An alert event as the engine writes it.
struct Ev<'a> {
    kind: &'a str,
    severity: &'a str,
    alert_id: Uuid,
    group_key: String,
    suppressed: Option<&'a str>,
    rule: &'a str,
    target: &'a str,
    facts: Value,
}

fn ev(severity: &str) -> Ev<'_> {
    let alert_id = Uuid::new_v4();
    Ev {
        kind: "firing",
        severity,
        alert_id,
        group_key: format!("alert:{alert_id}"),
        suppressed: None,
        rule: "Tráfego alto",
        target: "OLT Centro",
        facts: json!({"metric": "rx_mbps", "value": 1234.5, "threshold": 1000, "operator": ">", "unit": "Mbit/s"}),
    }
}

/// Inserts events in one tenant transaction and notifies, like the alert engine; returns their ids.
async fn insert_events(db: &TestDb, provider: Uuid, events: &[Ev<'_>]) -> Vec<i64> {
    let mut tx = db::tenant_tx(&db.app, provider).await.unwrap();
    let mut ids = Vec::new();
    for e in events {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO alert_events (provider_id, alert_id, kind, severity, group_key, suppressed, rule_name, \
             target, facts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        )
        .bind(provider)
        .bind(e.alert_id)
        .bind(e.kind)
        .bind(e.severity)
        .bind(&e.group_key)
        .bind(e.suppressed)
        .bind(e.rule)
        .bind(e.target)
        .bind(&e.facts)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        ids.push(id);
    }
    sqlx::query("SELECT pg_notify('octoisp_alert_events', $1::text)")
        .bind(provider)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    ids
}

async fn scalar(db: &TestDb, sql: &str, provider: Uuid) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(provider)
        .fetch_one(&db.admin)
        .await
        .unwrap()
}

/// Waits until `sql` (bound to `provider`) returns at least `n`.
async fn wait_count(db: &TestDb, sql: &str, provider: Uuid, n: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let c = scalar(db, sql, provider).await;
        if c >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {sql} >= {n} (now {c})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const SENT: &str =
    "SELECT count(*) FROM notification_deliveries WHERE provider_id = $1 AND status = 'sent'";

fn hmac_hex(secret: &[u8], body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hex::encode(hmac::sign(&key, body).as_ref())
}

#[tokio::test]
async fn email_reaches_each_recipient_in_their_language() {
    let h = harness().await;
    let smtp = SmtpServer::start().await;
    let ana = user(&h.db, h.a.provider_id, "ana@isp-a.test", "en").await;
    let (channel, _) = h
        .channel(
            "a",
            json!({"name": "NOC mail", "kind": "email", "config": {"to": ["noc@isp-a.test"]}}),
        )
        .await;
    h.policy(
        "a",
        json!({"name": "critical to NOC", "channel_id": channel, "severities": ["critical"]}),
    )
    .await;
    h.policy(
        "a",
        json!({"name": "Ana", "channel_id": channel, "user_id": ana, "severities": ["warning", "critical"]}),
    )
    .await;
    let n = Notifier::start(h.db.app.clone(), config(Some(&smtp), None));
    insert_events(&h.db, h.a.provider_id, &[ev("critical")]).await;
    let mails = smtp.wait_for(2).await;
    let to = |addr: &str| {
        mails
            .iter()
            .find(|m| m.rcpt == [addr.to_owned()])
            .unwrap_or_else(|| panic!("no mail to {addr}: {mails:?}"))
            .clone()
    };
    let pt = to("noc@isp-a.test");
    assert_eq!(
        pt.subject, "[CRÍTICO] OLT Centro: Tráfego alto",
        "{}",
        pt.raw
    );
    assert!(pt.body.contains("Alerta disparado"), "{}", pt.body);
    assert!(pt.body.contains("rx_mbps = 1.234,5 Mbit/s"), "{}", pt.body);
    let en = to("ana@isp-a.test");
    assert_eq!(
        en.subject, "[CRITICAL] OLT Centro: Tráfego alto",
        "{}",
        en.raw
    );
    assert!(en.body.contains("Alert firing"), "{}", en.body);
    assert!(en.body.contains("rx_mbps = 1,234.5 Mbit/s"), "{}", en.body);

    // A warning goes only to Ana's policy.
    insert_events(&h.db, h.a.provider_id, &[ev("warning")]).await;
    wait_count(&h.db, SENT, h.a.provider_id, 3).await;
    let mails = smtp.wait_for(3).await;
    assert_eq!(mails.len(), 3, "{mails:?}");
    assert_eq!(mails[2].rcpt, ["ana@isp-a.test"]);
    assert!(
        mails[2].subject.starts_with("[WARNING]"),
        "{}",
        mails[2].subject
    );
    n.stop().await;
    h.db.cleanup().await;
}

#[tokio::test]
async fn telegram_gets_the_message_and_the_bot_token_is_never_shown() {
    let h = harness().await;
    let tg = HttpReceiver::start(&[], 200).await;
    let token = "123456789:AAH-secret_token_value_0123456789";
    let (channel, created) = h
        .channel(
            "a",
            json!({"name": "Telegram NOC", "kind": "telegram", "config": {"chat_id": "-100987"}, "secret": token}),
        )
        .await;
    assert_eq!(created["has_secret"], true);
    assert!(created["secret"].is_null(), "{created}");
    assert!(!created.to_string().contains("secret_token_value"));
    let new_token = "123456789:BBH-other_token_value_0123456789";
    let r = h
        .call(
            "PATCH",
            &format!("/api/v1/notifications/channels/{channel}"),
            "a",
            Some(json!({"secret": new_token})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    for uri in [
        format!("/api/v1/notifications/channels/{channel}"),
        "/api/v1/notifications/channels".to_owned(),
    ] {
        let r = h.call("GET", &uri, "a", None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert!(
            !r.text.contains("token_value"),
            "{uri} shows a bot token: {}",
            r.text
        );
    }
    let bad = h
        .call(
            "POST",
            "/api/v1/notifications/channels",
            "a",
            Some(json!({"name": "x", "kind": "telegram", "config": {"chat_id": 1}, "secret": "nope"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
    h.policy(
        "a",
        json!({"name": "all", "channel_id": channel, "severities": ["info", "warning", "critical"]}),
    )
    .await;
    let n = Notifier::start(h.db.app.clone(), config(None, Some(&tg)));
    insert_events(&h.db, h.a.provider_id, &[ev("critical")]).await;
    let reqs = tg.wait_for(1).await;
    assert_eq!(reqs[0].uri.path(), format!("/bot{new_token}/sendMessage"));
    let body = reqs[0].json();
    assert_eq!(body["chat_id"], "-100987");
    let text = body["text"].as_str().unwrap();
    assert!(
        text.starts_with("[CRÍTICO] OLT Centro: Tráfego alto"),
        "{text}"
    );
    wait_count(&h.db, SENT, h.a.provider_id, 1).await;
    // A test send from the API goes out the same way.
    let test = h
        .call(
            "POST",
            &format!("/api/v1/notifications/channels/{channel}/test"),
            "a",
            None,
        )
        .await;
    assert_eq!(test.status, StatusCode::ACCEPTED, "{}", test.text);
    let reqs = tg.wait_for(2).await;
    let text = reqs[1].json()["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(text.starts_with("[TESTE]"), "{text}");
    wait_count(&h.db, SENT, h.a.provider_id, 2).await;
    // Neither token is in the audit log.
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE coalesce(before::text, '') || coalesce(after::text, '') LIKE '%token_value%'",
    )
    .fetch_one(&h.db.admin)
    .await
    .unwrap();
    assert_eq!(leaked, 0);
    let audited = scalar(
        &h.db,
        "SELECT count(*) FROM audit_log WHERE provider_id = $1 AND action LIKE 'notifications.%'",
        h.a.provider_id,
    )
    .await;
    assert!(audited >= 3, "{audited} audit rows");
    n.stop().await;
    h.db.cleanup().await;
}

#[tokio::test]
async fn webhooks_are_signed_retried_dead_lettered_and_replayed() {
    let h = harness().await;
    let rx = HttpReceiver::start(&[500, 500], 200).await;
    let (channel, created) = h
        .channel(
            "a",
            json!({"name": "Hook", "kind": "webhook", "config": {"url": format!("{}/hook", rx.url())}}),
        )
        .await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{created}");
    let r = h
        .call(
            "GET",
            &format!("/api/v1/notifications/channels/{channel}"),
            "a",
            None,
        )
        .await;
    assert!(!r.text.contains(&secret), "the secret is shown again");
    h.policy("a", json!({"name": "all", "channel_id": channel}))
        .await;
    let n = Notifier::start(h.db.app.clone(), config(None, None));

    // 500, 500, then 200: three attempts of one delivery, each signed.
    insert_events(&h.db, h.a.provider_id, &[ev("critical")]).await;
    wait_count(&h.db, SENT, h.a.provider_id, 1).await;
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 3);
    let ids: BTreeSet<String> = reqs
        .iter()
        .map(|r| r.header("x-octoisp-delivery"))
        .collect();
    assert_eq!(ids.len(), 1, "retries of one delivery carry its id");
    for (i, r) in reqs.iter().enumerate() {
        assert_eq!(
            r.header("x-octoisp-signature"),
            format!("sha256={}", hmac_hex(secret.as_bytes(), &r.body)),
            "attempt {i} is not signed with the channel's secret"
        );
        let body = r.json();
        assert_eq!(body["attempt"], i + 1);
        assert_eq!(
            body["timestamp"].to_string(),
            r.header("x-octoisp-timestamp")
        );
        assert_eq!(body["notification"]["severity"], "critical");
    }
    let attempts = scalar(
        &h.db,
        "SELECT max(attempts)::bigint FROM notification_deliveries WHERE provider_id = $1",
        h.a.provider_id,
    )
    .await;
    assert_eq!(attempts, 3);

    // Always 500: dead after the last attempt, visible, then replayed.
    rx.answer(500);
    insert_events(&h.db, h.a.provider_id, &[ev("warning")]).await;
    wait_count(
        &h.db,
        "SELECT count(*) FROM notification_deliveries WHERE provider_id = $1 AND status = 'dead'",
        h.a.provider_id,
        1,
    )
    .await;
    assert_eq!(rx.requests().len(), 6);
    let dead = h
        .call("GET", "/api/v1/notifications/dead-letters", "a", None)
        .await;
    assert_eq!(dead.status, StatusCode::OK, "{}", dead.text);
    let items = dead.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", dead.text);
    assert_eq!(items[0]["attempts"], 3);
    assert!(
        items[0]["last_error"].as_str().unwrap().contains("500"),
        "{}",
        dead.text
    );
    let dead_id = items[0]["id"].as_str().unwrap().to_owned();
    let by_status = h
        .call(
            "GET",
            "/api/v1/notifications/deliveries?status=sent",
            "a",
            None,
        )
        .await;
    assert_eq!(by_status.body["items"].as_array().unwrap().len(), 1);
    let other_b = h
        .call(
            "POST",
            &format!("/api/v1/notifications/dead-letters/{dead_id}/replay"),
            "b",
            None,
        )
        .await;
    assert_eq!(other_b.status, StatusCode::NOT_FOUND, "{}", other_b.text);
    rx.answer(200);
    let replay = h
        .call(
            "POST",
            &format!("/api/v1/notifications/dead-letters/{dead_id}/replay"),
            "a",
            None,
        )
        .await;
    assert_eq!(replay.status, StatusCode::ACCEPTED, "{}", replay.text);
    wait_count(&h.db, SENT, h.a.provider_id, 2).await;
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 7);
    assert_eq!(reqs[6].header("x-octoisp-delivery"), dead_id);
    let again = h
        .call(
            "POST",
            &format!("/api/v1/notifications/dead-letters/{dead_id}/replay"),
            "a",
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    n.stop().await;
    h.db.cleanup().await;
}

/// HKDF-SHA256 with one output block, written here from RFC 5869 (independent of the code under test).
fn hkdf(salt: &[u8], ikm: &[u8], info: &[u8], len: usize) -> Vec<u8> {
    let prk = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, salt), ikm);
    let mut m = info.to_vec();
    m.push(1);
    let okm = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, prk.as_ref()), &m);
    okm.as_ref()[..len].to_vec()
}

#[tokio::test]
async fn tenant_destinations_cannot_reach_internal_addresses() {
    let h = harness().await;
    let rx = HttpReceiver::start(&[], 200).await;
    // An address literal and a name that resolves to loopback: both would reach the receiver if allowed.
    let port = rx.url().rsplit(':').next().unwrap().to_owned();
    for url in [
        format!("{}/hook", rx.url()),
        format!("http://localhost:{port}/hook"),
    ] {
        let (channel, _) = h
            .channel(
                "a",
                json!({"name": format!("Hook {url}"), "kind": "webhook", "config": {"url": url}}),
            )
            .await;
        h.policy(
            "a",
            json!({"name": format!("all {url}"), "channel_id": channel}),
        )
        .await;
    }
    let cfg = NotifyConfig {
        allow_private_targets: false,
        ..config(None, None)
    };
    let n = Notifier::start(h.db.app.clone(), cfg);
    insert_events(&h.db, h.a.provider_id, &[ev("critical")]).await;
    wait_count(
        &h.db,
        "SELECT count(*) FROM notification_deliveries WHERE provider_id = $1 AND status = 'dead'",
        h.a.provider_id,
        2,
    )
    .await;
    n.stop().await;
    assert!(
        rx.requests().is_empty(),
        "nothing reached the internal address"
    );
    let dead = h
        .call("GET", "/api/v1/notifications/dead-letters", "a", None)
        .await;
    let errors: Vec<String> = dead.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["last_error"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(errors.len(), 2, "{}", dead.text);
    assert!(
        errors.iter().all(|e| e.contains("public address")),
        "the reason is given: {errors:?}"
    );
}

#[tokio::test]
async fn web_push_is_encrypted_for_the_subscription_and_signed_with_vapid() {
    let h = harness().await;
    let push = HttpReceiver::start(&[], 201).await;
    let lang = h
        .call(
            "PUT",
            "/api/v1/me/language",
            "a",
            Some(json!({"language": "en"})),
        )
        .await;
    assert_eq!(lang.status, StatusCode::OK, "{}", lang.text);
    let bad_lang = h
        .call(
            "PUT",
            "/api/v1/me/language",
            "a",
            Some(json!({"language": "fr"})),
        )
        .await;
    assert_eq!(bad_lang.status, StatusCode::BAD_REQUEST);

    // The browser's side: a P-256 key pair and an auth secret.
    let ua_private = PrivateKey::generate(&ECDH_P256).unwrap();
    let ua_public = ua_private.compute_public_key().unwrap().as_ref().to_vec();
    let auth_secret: [u8; 16] = rand::random();
    let endpoint = format!("{}/push/sub-1", push.url());
    let r = h
        .call(
            "POST",
            "/api/v1/push/subscriptions",
            "a",
            Some(json!({"endpoint": endpoint, "expirationTime": null,
                "keys": {"p256dh": URL_SAFE_NO_PAD.encode(&ua_public), "auth": URL_SAFE_NO_PAD.encode(auth_secret)}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["user_id"], h.a_admin.to_string());
    let bad = h
        .call(
            "POST",
            "/api/v1/push/subscriptions",
            "a",
            Some(json!({"endpoint": endpoint, "keys": {"p256dh": "AAAA", "auth": "AAAA"}})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
    let key = h
        .call("GET", "/api/v1/push/vapid-public-key", "a", None)
        .await;
    assert_eq!(key.status, StatusCode::OK, "{}", key.text);
    let vapid_public = key.body["public_key"].as_str().unwrap().to_owned();
    let again = h
        .call("GET", "/api/v1/push/vapid-public-key", "a", None)
        .await;
    assert_eq!(
        again.body["public_key"],
        vapid_public.as_str(),
        "the key is made once"
    );
    let other = h
        .call("GET", "/api/v1/push/vapid-public-key", "b", None)
        .await;
    assert_ne!(other.body["public_key"], vapid_public.as_str());

    let (channel, _) = h
        .channel("a", json!({"name": "Push", "kind": "webpush"}))
        .await;
    h.policy("a", json!({"name": "push all", "channel_id": channel}))
        .await;
    let n = Notifier::start(h.db.app.clone(), config(None, None));
    insert_events(&h.db, h.a.provider_id, &[ev("critical")]).await;
    let reqs = push.wait_for(1).await;
    let req = &reqs[0];
    assert_eq!(req.uri.path(), "/push/sub-1");
    assert_eq!(req.header("content-encoding"), "aes128gcm");
    assert!(!req.header("ttl").is_empty());

    // VAPID: `vapid t=<jwt>, k=<key>`; the JWT verifies with the served public key.
    let auth = req.header("authorization");
    let rest = auth.strip_prefix("vapid t=").unwrap();
    let (jwt, k) = rest.split_once(", k=").unwrap();
    assert_eq!(k, vapid_public);
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let key_bytes = URL_SAFE_NO_PAD.decode(k).unwrap();
    signature::UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &key_bytes)
        .verify(
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
        )
        .expect("the VAPID JWT verifies with the provider's public key");
    let head: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(head["alg"], "ES256");
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["aud"], push.url());
    assert!(claims["exp"].as_i64().unwrap() > chrono::Utc::now().timestamp());
    assert!(claims["sub"].as_str().unwrap().starts_with("mailto:"));

    // RFC 8291: decrypt with the subscription's private key.
    let body = &req.body;
    let (salt, rest) = body.split_at(16);
    let rs = u32::from_be_bytes(rest[..4].try_into().unwrap());
    assert!(rs >= 18);
    assert_eq!(rest[4], 65);
    let as_public = &rest[5..70];
    let ciphertext = &rest[70..];
    let ecdh: Vec<u8> = agreement::agree(
        &ua_private,
        UnparsedPublicKey::new(&ECDH_P256, as_public),
        (),
        |s| Ok(s.to_vec()),
    )
    .unwrap();
    let mut info = b"WebPush: info\0".to_vec();
    info.extend_from_slice(&ua_public);
    info.extend_from_slice(as_public);
    let ikm = hkdf(&auth_secret, &ecdh, &info, 32);
    let cek = hkdf(salt, &ikm, b"Content-Encoding: aes128gcm\0", 16);
    let nonce = hkdf(salt, &ikm, b"Content-Encoding: nonce\0", 12);
    let key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, &cek).unwrap());
    let mut buf = ciphertext.to_vec();
    let plain = key
        .open_in_place(
            aead::Nonce::try_assume_unique_for_key(&nonce).unwrap(),
            aead::Aad::empty(),
            &mut buf,
        )
        .expect("the payload decrypts with the subscription's keys");
    let end = plain.iter().rposition(|b| *b != 0).unwrap();
    assert_eq!(plain[end], 2, "last-record delimiter");
    let msg: Value = serde_json::from_slice(&plain[..end]).unwrap();
    assert_eq!(msg["title"], "[CRITICAL] OLT Centro: Tráfego alto");
    assert!(msg["body"].as_str().unwrap().contains("1,234.5"), "{msg}");
    wait_count(&h.db, SENT, h.a.provider_id, 1).await;

    // Unsubscribing: another provider cannot, the owner can.
    let sub_id = r.body["id"].as_str().unwrap();
    let by_b = h
        .call(
            "DELETE",
            &format!("/api/v1/push/subscriptions/{sub_id}"),
            "b",
            None,
        )
        .await;
    assert_eq!(by_b.status, StatusCode::NOT_FOUND);
    let by_owner = h
        .call(
            "DELETE",
            &format!("/api/v1/push/subscriptions/{sub_id}"),
            "a",
            None,
        )
        .await;
    assert_eq!(by_owner.status, StatusCode::NO_CONTENT, "{}", by_owner.text);
    n.stop().await;
    h.db.cleanup().await;
}

#[tokio::test]
async fn a_group_is_one_message_suppressed_rows_are_not_sent_and_storms_are_folded() {
    let h = harness().await;
    let rx = HttpReceiver::start(&[], 200).await;
    let (channel, _) = h
        .channel(
            "a",
            json!({"name": "Hook", "kind": "webhook", "rate_limit_per_minute": 3,
                   "config": {"url": format!("{}/hook", rx.url())}}),
        )
        .await;
    h.policy("a", json!({"name": "all", "channel_id": channel}))
        .await;

    // 50 events with one group key (the uplink and 49 alerts behind it), and 3 silenced ones.
    let lead = ev("critical");
    let key = lead.group_key.clone();
    let mut events = vec![Ev {
        rule: "uplink down",
        target: "POP Centro",
        facts: json!({}),
        ..lead
    }];
    for _ in 0..49 {
        events.push(Ev {
            group_key: key.clone(),
            severity: "warning",
            ..ev("warning")
        });
    }
    let silenced_key = format!("alert:{}", Uuid::new_v4());
    for _ in 0..3 {
        events.push(Ev {
            group_key: silenced_key.clone(),
            suppressed: Some("silence"),
            ..ev("critical")
        });
    }
    insert_events(&h.db, h.a.provider_id, &events).await;
    let n = Notifier::start(h.db.app.clone(), config(None, None));
    wait_count(
        &h.db,
        "SELECT count(*) FROM alert_events WHERE provider_id = $1 AND dispatched_at IS NOT NULL",
        h.a.provider_id,
        53,
    )
    .await;
    wait_count(&h.db, SENT, h.a.provider_id, 1).await;
    let reqs = rx.requests();
    assert_eq!(
        reqs.len(),
        1,
        "one message for the group, none for the silenced rows"
    );
    let body = reqs[0].json();
    assert_eq!(
        body["subject"],
        "[CRÍTICO] POP Centro: uplink down (+49 alertas dependentes)"
    );
    assert_eq!(
        body["notification"]["event_ids"].as_array().unwrap().len(),
        50
    );
    let suppressed = scalar(
        &h.db,
        "SELECT count(*) FROM notification_messages WHERE provider_id = $1 AND suppressed = 3 AND lead_event_id IS NULL",
        h.a.provider_id,
    )
    .await;
    assert_eq!(suppressed, 1, "the silenced group is recorded, not sent");
    assert_eq!(
        scalar(
            &h.db,
            "SELECT count(*) FROM notification_deliveries WHERE provider_id = $1",
            h.a.provider_id
        )
        .await,
        1
    );

    // A storm of 6 alerts against a limit of 3 per minute (1 used): 2 messages and a summary of the other 4.
    let storm: Vec<Ev> = (0..6).map(|_| ev("critical")).collect();
    insert_events(&h.db, h.a.provider_id, &storm).await;
    wait_count(&h.db, SENT, h.a.provider_id, 4).await;
    let summary: Vec<(String,)> = sqlx::query_as(
        "SELECT subject FROM notification_deliveries WHERE provider_id = $1 AND message_id IS NULL",
    )
    .bind(h.a.provider_id)
    .fetch_all(&h.db.admin)
    .await
    .unwrap();
    assert_eq!(summary.len(), 1, "{summary:?}");
    assert!(
        summary[0].0.starts_with("[RESUMO] 4 notificações"),
        "{}",
        summary[0].0
    );
    assert_eq!(rx.wait_for(4).await.len(), 4);
    n.stop().await;
    h.db.cleanup().await;
}

#[tokio::test]
async fn two_dispatchers_at_once_send_each_message_exactly_once() {
    let h = harness().await;
    let rx = HttpReceiver::start(&[], 200).await;
    let (channel, _) = h
        .channel(
            "a",
            json!({"name": "Hook", "kind": "webhook", "rate_limit_per_minute": 10000,
                   "config": {"url": format!("{}/hook", rx.url())}}),
        )
        .await;
    h.policy("a", json!({"name": "all", "channel_id": channel}))
        .await;
    let mut cfg = config(None, None);
    cfg.grouping_window_ms = 50;
    let one = Notifier::start(h.db.app_pool(6).await, cfg.clone());
    let two = Notifier::start(h.db.app_pool(6).await, cfg);
    let mut all_ids = Vec::new();
    for _ in 0..10 {
        let batch: Vec<Ev> = (0..30).map(|_| ev("critical")).collect();
        all_ids.extend(insert_events(&h.db, h.a.provider_id, &batch).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_count(&h.db, SENT, h.a.provider_id, 300).await;
    // Let anything still in flight land before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    one.stop().await;
    two.stop().await;
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 300, "each message sent exactly once");
    let deliveries: BTreeSet<String> = reqs
        .iter()
        .map(|r| r.header("x-octoisp-delivery"))
        .collect();
    assert_eq!(deliveries.len(), 300);
    let mut sent_events: Vec<i64> = reqs
        .iter()
        .flat_map(|r| {
            r.json()["notification"]["event_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    sent_events.sort_unstable();
    all_ids.sort_unstable();
    assert_eq!(sent_events, all_ids, "every event in exactly one message");
    assert_eq!(
        scalar(
            &h.db,
            "SELECT count(*) FROM notification_deliveries WHERE provider_id = $1 AND attempts <> 1",
            h.a.provider_id
        )
        .await,
        0
    );
    h.db.cleanup().await;
}

#[tokio::test]
async fn permissions_and_tenants_are_enforced_on_the_notification_routes() {
    let h = harness().await;
    let granted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM role_permissions WHERE role_id = $1 AND permission = 'notifications:manage'",
    )
    .bind(rbac::ROLE_PROVIDER_ADMIN)
    .fetch_one(&h.db.admin)
    .await
    .unwrap();
    assert_eq!(granted, 1, "Provider Admin holds notifications:manage");
    let (channel, _) = h
        .channel(
            "a",
            json!({"name": "Hook", "kind": "webhook", "config": {"url": "https://hooks.example.net/x"}}),
        )
        .await;
    let policy = h
        .policy("a", json!({"name": "all", "channel_id": channel}))
        .await;

    // Another provider: A's objects are not found, lists are empty, B cannot route to A's channel.
    for (method, uri) in [
        ("GET", format!("/api/v1/notifications/channels/{channel}")),
        ("PATCH", format!("/api/v1/notifications/channels/{channel}")),
        (
            "DELETE",
            format!("/api/v1/notifications/channels/{channel}"),
        ),
        (
            "POST",
            format!("/api/v1/notifications/channels/{channel}/test"),
        ),
        ("GET", format!("/api/v1/notifications/policies/{policy}")),
        ("PATCH", format!("/api/v1/notifications/policies/{policy}")),
        ("DELETE", format!("/api/v1/notifications/policies/{policy}")),
    ] {
        let body = (method == "PATCH").then(|| json!({}));
        let r = h.call(method, &uri, "b", body).await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{method} {uri} as B: {}",
            r.text
        );
    }
    for uri in [
        "/api/v1/notifications/channels",
        "/api/v1/notifications/policies",
    ] {
        let r = h.call("GET", uri, "b", None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body["items"], json!([]), "{uri} as B: {}", r.text);
    }
    let r = h
        .call(
            "POST",
            "/api/v1/notifications/policies",
            "b",
            Some(json!({"name": "steal", "channel_id": channel})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    // A reader of alerts sees deliveries but cannot manage channels.
    let r = h
        .call(
            "POST",
            "/api/v1/notifications/channels",
            "a-reader",
            Some(json!({"name": "x", "kind": "webpush"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = h
        .call("GET", "/api/v1/notifications/channels", "a-reader", None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = h
        .call("GET", "/api/v1/notifications/deliveries", "a-reader", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // Bad input is a 400 with a message.
    for body in [
        json!({"name": "x", "kind": "sms"}),
        json!({"name": "x", "kind": "webhook", "config": {"url": "ftp://x"}}),
        json!({"name": "x", "kind": "email", "config": {"to": ["not-an-address"]}}),
        json!({"name": "x", "kind": "email", "config": {"to": ["a@b.test"], "bcc": []}}),
    ] {
        let r = h
            .call(
                "POST",
                "/api/v1/notifications/channels",
                "a",
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
        assert!(
            !r.body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .is_empty()
        );
    }
    let r = h
        .call(
            "POST",
            "/api/v1/notifications/policies",
            "a",
            Some(json!({"name": "q", "channel_id": channel, "quiet_start": "22:00", "quiet_end": "06:00",
                        "quiet_timezone": "Mars/Olympus"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = h
        .call(
            "POST",
            "/api/v1/notifications/policies",
            "a",
            Some(json!({"name": "q", "channel_id": channel, "quiet_start": "22:00", "quiet_end": "06:00",
                        "scope": "pop", "scope_id": h.a.pop_id})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["quiet_start"], "22:00");
    let r = h
        .call(
            "POST",
            "/api/v1/notifications/policies",
            "a",
            Some(json!({"name": "q2", "channel_id": channel, "scope": "pop", "scope_id": h.b.pop_id})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "another provider's POP: {}",
        r.text
    );
    h.db.cleanup().await;
}
