//! The HTTP API on a real PostgreSQL and Redis, through the real router and gateway middleware.
//!
//! Callers are minted by a test [`Authenticator`] (bearer token -> `Caller`), so these tests exercise the
//! router, permissions, row-level security and the gateway, independently of how credentials are verified.
//! The isolation tests walk `api::ROUTES`: a new route is covered without editing them.

#[allow(dead_code)]
mod support;

#[path = "api_http/accounts.rs"]
mod accounts;
#[path = "api_http/devices.rs"]
mod devices;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use octoisp_controlplane::api::ratelimit::RateLimiter;
use octoisp_controlplane::api::{self, ApiConfig, AppState};
use octoisp_controlplane::auth::{self, Caller, rbac};
use octoisp_controlplane::db;
use serde_json::Value;
use support::TestDb;
use support::fixtures::{Tenant, tenant};
use tower::ServiceExt as _;
use uuid::Uuid;

fn caller(provider: Option<Uuid>, perms: &[&str], global_admin: bool) -> Caller {
    Caller {
        user_id: Some(Uuid::now_v7()),
        api_key_id: None,
        provider_id: provider,
        permissions: perms.iter().map(|p| (*p).to_owned()).collect(),
        global_admin,
        request_id: String::new(),
        ip: None,
    }
}

/// Every permission any route needs.
fn all_permissions() -> Vec<&'static str> {
    let set: BTreeSet<&str> = api::ROUTES
        .iter()
        .map(|r| r.permission)
        .filter(|p| p.contains(':'))
        .collect();
    set.into_iter().collect()
}

const VIEWER: &[&str] = &["devices:read", "pops:read", "customers:read"];

/// Objects of one tenant, one of each kind.
#[derive(Debug, Clone)]
struct Objects {
    tenant: Tenant,
    customer: Uuid,
    device: Uuid,
    group: Uuid,
    user: Uuid,
    role: Uuid,
    api_key: Uuid,
    alert_rule: Uuid,
    alert: Uuid,
    silence: Uuid,
    maintenance: Uuid,
    /// A time series of `device` (ids are bigints), with one 5-minute rollup row 10 minutes ago.
    series: i64,
    channel: Uuid,
    policy: Uuid,
    dead_letter: Uuid,
    push_subscription: Uuid,
    /// A command on the tenant's agent, in a fan-out batch (`command_batch`).
    command: Uuid,
    command_batch: Uuid,
    /// A firmware image and a running campaign of it over `device`.
    firmware_image: Uuid,
    firmware_campaign: Uuid,
}

impl Objects {
    /// The id of this tenant's object for the resource of `path` (`/api/v1/<resource>/{id}...`).
    fn id_for(&self, path: &str) -> Uuid {
        let resource = path
            .trim_start_matches("/api/v1/")
            .split('/')
            .next()
            .unwrap_or("");
        match resource {
            "providers" => self.tenant.provider_id,
            "pops" => self.tenant.pop_id,
            "customers" => self.customer,
            "devices" => self.device,
            "groups" => self.group,
            "agents" => self.tenant.agent.agent_id,
            "users" => self.user,
            "roles" => self.role,
            "api-keys" => self.api_key,
            "alert-rules" => self.alert_rule,
            "alerts" => self.alert,
            "silences" => self.silence,
            "maintenance-windows" => self.maintenance,
            "notifications" => match path
                .trim_start_matches("/api/v1/notifications/")
                .split('/')
                .next()
            {
                Some("channels") => self.channel,
                Some("policies") => self.policy,
                _ => self.dead_letter,
            },
            "push" => self.push_subscription,
            "commands" => self.command,
            "command-batches" => self.command_batch,
            "firmware" => match path
                .trim_start_matches("/api/v1/firmware/")
                .split('/')
                .next()
            {
                Some("images") => self.firmware_image,
                _ => self.firmware_campaign,
            },
            other => panic!(
                "the isolation test does not know resource `{other}`: add it to Objects::id_for"
            ),
        }
    }

    fn all_ids(&self) -> Vec<Uuid> {
        vec![
            self.tenant.provider_id,
            self.tenant.pop_id,
            self.customer,
            self.device,
            self.group,
            self.tenant.agent.agent_id,
            self.user,
            self.role,
            self.api_key,
            self.alert_rule,
            self.alert,
            self.silence,
            self.maintenance,
            self.channel,
            self.policy,
            self.dead_letter,
            self.push_subscription,
            self.command,
            self.command_batch,
            self.firmware_image,
            self.firmware_campaign,
        ]
    }
}

async fn objects(db: &TestDb, slug: &str) -> Objects {
    let t = tenant(db, slug).await;
    let customer: Uuid = sqlx::query_scalar(
        "INSERT INTO customers (provider_id, pop_id, name) VALUES ($1, $2, 'Cliente') RETURNING id",
    )
    .bind(t.provider_id)
    .bind(t.pop_id)
    .fetch_one(&db.admin)
    .await
    .unwrap();
    let device: Uuid = sqlx::query_scalar(
        "INSERT INTO devices (provider_id, pop_id, customer_id, device_key, vendor, serial_number, mgmt_ip, tags) \
         VALUES ($1, $2, $3, 'cpe-1', 'Huawei', $4, '192.0.2.10', '{fibra}') RETURNING id",
    )
    .bind(t.provider_id)
    .bind(t.pop_id)
    .bind(customer)
    .bind(format!("SN-{slug}-0001"))
    .fetch_one(&db.admin)
    .await
    .unwrap();
    let group: Uuid = sqlx::query_scalar(
        "INSERT INTO device_groups (provider_id, name) VALUES ($1, 'OLT 1') RETURNING id",
    )
    .bind(t.provider_id)
    .fetch_one(&db.admin)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO device_group_members (provider_id, group_id, device_id) VALUES ($1, $2, $3)",
    )
    .bind(t.provider_id)
    .bind(group)
    .bind(device)
    .execute(&db.admin)
    .await
    .unwrap();
    let mut tx = db::tenant_tx(&db.app, t.provider_id).await.unwrap();
    let user = auth::create_user(
        &mut tx,
        auth::PasswordParams::default(),
        Some(t.provider_id),
        &format!("admin@{slug}.example"),
        "Admin",
        None,
        rbac::ROLE_PROVIDER_ADMIN,
        None,
    )
    .await
    .unwrap();
    let mut key_owner = caller(
        Some(t.provider_id),
        &["api_keys:manage", "devices:read", "roles:manage"],
        false,
    );
    key_owner.user_id = Some(user);
    let role = auth::create_role(
        &mut tx,
        &key_owner,
        t.provider_id,
        "Suporte N1",
        "first-line support",
        &["devices:read".to_owned()],
    )
    .await
    .unwrap()
    .id;
    let (key, _secret) = auth::create_api_key(
        &mut tx,
        &key_owner,
        "integration",
        &["devices:read".to_owned()],
        None,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let series: i64 = sqlx::query_scalar(
        "INSERT INTO series (provider_id, agent_id, local_id, device_id, metric, kind) \
         VALUES ($1, $2, 1, $3, 'if.in_bps', 'gauge') RETURNING id",
    )
    .bind(t.provider_id)
    .bind(t.agent.agent_id)
    .bind(device)
    .fetch_one(&db.admin)
    .await
    .unwrap();
    sqlx::query("SELECT octoisp_rollup_partitions('5m', ARRAY[now() - interval '10 minutes'])")
        .execute(&db.admin)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO rollup_5m VALUES ($1, $2, octoisp_rollup_bucket('5m', now() - interval '10 minutes'), \
         1, 1, 1, 1, 1, now() - interval '10 minutes', 1)",
    )
    .bind(t.provider_id)
    .bind(series)
    .execute(&db.admin)
    .await
    .unwrap();
    let (alert_rule, alert, silence, maintenance) = alert_objects(db, &t, device).await;
    let (channel, policy, dead_letter, push_subscription) =
        notification_objects(db, t.provider_id, user).await;
    let command_batch = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO command_batches (id, provider_id, name, total) VALUES ($1, $2, 'ping', 1)",
    )
    .bind(command_batch)
    .bind(t.provider_id)
    .execute(&db.admin)
    .await
    .unwrap();
    let command = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO commands (id, provider_id, pop_id, agent_id, device_id, batch_id, name, args, deadline) \
         VALUES ($1, $2, $3, $4, $5, $6, 'ping', '{}', now() + interval '1 hour')",
    )
    .bind(command)
    .bind(t.provider_id)
    .bind(t.pop_id)
    .bind(t.agent.agent_id)
    .bind(device)
    .bind(command_batch)
    .execute(&db.admin)
    .await
    .unwrap();
    let (firmware_image, firmware_campaign) = firmware_objects(db, t.provider_id, device).await;
    Objects {
        firmware_image,
        firmware_campaign,
        command,
        command_batch,
        series,
        alert_rule,
        alert,
        silence,
        maintenance,
        tenant: t,
        customer,
        device,
        group,
        user,
        role,
        api_key: key.id,
        channel,
        policy,
        dead_letter,
        push_subscription,
    }
}

/// A firmware image (row only) and a running campaign of it over `device`.
async fn firmware_objects(db: &TestDb, provider: Uuid, device: Uuid) -> (Uuid, Uuid) {
    let (image, campaign) = (Uuid::now_v7(), Uuid::now_v7());
    let sha = format!("{:064x}", image.as_u128());
    sqlx::query(
        "INSERT INTO firmware_images (id, provider_id, name, version, size, sha256) VALUES ($1, $2, 'HG8245H', 'V3', 1000, $3)",
    )
    .bind(image)
    .bind(provider)
    .bind(&sha)
    .execute(&db.admin)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO firmware_campaigns (id, provider_id, name, image_id, image_sha256, target, stages_pct, \
           max_failure_pct, come_back_secs) VALUES ($1, $2, 'HG8245H V3', $3, $4, '{}', '{100}', 10, 600)",
    )
    .bind(campaign)
    .bind(provider)
    .bind(image)
    .bind(&sha)
    .execute(&db.admin)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO firmware_campaign_devices (provider_id, campaign_id, position, device_id) VALUES ($1, $2, 0, $3)",
    )
    .bind(provider)
    .bind(campaign)
    .bind(device)
    .execute(&db.admin)
    .await
    .unwrap();
    (image, campaign)
}

/// An alert rule, a firing alert with one event, a silence and a maintenance window of `t`.
async fn alert_objects(db: &TestDb, t: &Tenant, device: Uuid) -> (Uuid, Uuid, Uuid, Uuid) {
    let p = t.provider_id;
    let rule: Uuid = sqlx::query_scalar(
        "INSERT INTO alert_rules (provider_id, rule_key, name, metric, kind, op, threshold) \
         VALUES ($1, 'cpu', 'CPU high', 'cpu.load_percent', 'threshold', '>', 90) RETURNING id",
    )
    .bind(p)
    .fetch_one(&db.admin)
    .await
    .unwrap();
    let alert: Uuid = sqlx::query_scalar(
        "INSERT INTO alerts (provider_id, rule_id, target_key, target, device_id, pop_id, state, severity, \
             started_at, changed_ts) \
         VALUES ($1, $2, 'device:x', 'cpe-1', $3, $4, 'firing', 'warning', now(), now()) RETURNING id",
    )
    .bind(p)
    .bind(rule)
    .bind(device)
    .bind(t.pop_id)
    .fetch_one(&db.admin)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO alert_events (provider_id, alert_id, rule_id, kind, severity, device_id, group_key, \
             rule_name, target) VALUES ($1, $2, $3, 'firing', 'warning', $4, 'alert:' || $2, 'CPU high', 'cpe-1')",
    )
    .bind(p)
    .bind(alert)
    .bind(rule)
    .bind(device)
    .execute(&db.admin)
    .await
    .unwrap();
    let silence: Uuid = sqlx::query_scalar(
        "INSERT INTO alert_silences (provider_id, device_id, starts_at, ends_at, reason) \
         VALUES ($1, $2, now(), now() + interval '1 hour', 'troca de ONU') RETURNING id",
    )
    .bind(p)
    .bind(device)
    .fetch_one(&db.admin)
    .await
    .unwrap();
    let maintenance: Uuid = sqlx::query_scalar(
        "INSERT INTO alert_maintenance (provider_id, scope, scope_id, starts_at, ends_at, reason) \
         VALUES ($1, 'pop', $2, now(), now() + interval '1 hour', 'janela') RETURNING id",
    )
    .bind(p)
    .bind(t.pop_id)
    .fetch_one(&db.admin)
    .await
    .unwrap();
    (rule, alert, silence, maintenance)
}

/// A notification channel, a policy, a dead letter and a push subscription of `user`.
async fn notification_objects(db: &TestDb, provider: Uuid, user: Uuid) -> (Uuid, Uuid, Uuid, Uuid) {
    let channel: Uuid = sqlx::query_scalar(
        "INSERT INTO notification_channels (provider_id, name, kind, config, secret) \
         VALUES ($1, 'Hook', 'webhook', '{\"url\": \"https://hooks.example.net/x\"}', 'whsec_x') RETURNING id",
    )
    .bind(provider)
    .fetch_one(&db.admin)
    .await
    .unwrap();
    let policy: Uuid = sqlx::query_scalar(
        "INSERT INTO notification_policies (provider_id, name, channel_id) VALUES ($1, 'all', $2) RETURNING id",
    )
    .bind(provider)
    .bind(channel)
    .fetch_one(&db.admin)
    .await
    .unwrap();
    let dead: Uuid = sqlx::query_scalar(
        "INSERT INTO notification_deliveries (provider_id, channel_id, language, subject, body, status, attempts) \
         VALUES ($1, $2, 'pt-BR', 'assunto', 'corpo', 'dead', 3) RETURNING id",
    )
    .bind(provider)
    .bind(channel)
    .fetch_one(&db.admin)
    .await
    .unwrap();
    let sub: Uuid = sqlx::query_scalar(
        "INSERT INTO push_subscriptions (provider_id, user_id, endpoint, p256dh, auth) \
         VALUES ($1, $2, 'https://push.example.net/' || $2::text, 'B' || repeat('A', 86), repeat('A', 22)) RETURNING id",
    )
    .bind(provider)
    .bind(user)
    .fetch_one(&db.admin)
    .await
    .unwrap();
    (channel, policy, dead, sub)
}

struct Harness {
    db: TestDb,
    a: Objects,
    b: Objects,
    router: Router,
}

fn redis_url() -> String {
    std::env::var("OCTOISP_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

async fn harness_with(config: ApiConfig) -> Harness {
    let db = TestDb::new().await;
    let a = objects(&db, "isp-a").await;
    let b = objects(&db, "isp-b").await;
    let all = all_permissions();
    let mut tokens = HashMap::new();
    tokens.insert(
        "a-admin".to_owned(),
        caller(Some(a.tenant.provider_id), &all, false),
    );
    tokens.insert(
        "b-admin".to_owned(),
        caller(Some(b.tenant.provider_id), &all, false),
    );
    tokens.insert(
        "a-viewer".to_owned(),
        caller(Some(a.tenant.provider_id), VIEWER, false),
    );
    tokens.insert("global".to_owned(), caller(None, &[], true));
    let prefix = format!("octoisp-test-{:016x}", rand::random::<u64>());
    let window = std::time::Duration::from_secs(config.rate_limit.window_secs);
    let limiter = if config.rate_limit.enabled {
        Some(
            RateLimiter::connect(&redis_url(), &prefix, window)
                .await
                .expect("connect to the test Redis"),
        )
    } else {
        None
    };
    let commands = command_queue(&prefix, &db, &a).await;
    let state = AppState {
        limiter,
        config: Arc::new(config),
        commands: Some(commands),
        ..support::api::state(&db, tokens)
    };
    Harness {
        router: api::router(state),
        db,
        a,
        b,
    }
}

/// The command queue on the test Redis under `prefix`, with A's command dead-lettered (so that the dead-letter
/// list has something of A's to hide from B).
async fn command_queue(
    prefix: &str,
    db: &TestDb,
    a: &Objects,
) -> octoisp_controlplane::commands::Commands {
    use octoisp_controlplane::commands::{AgentLinks, Commands, CommandsConfig};
    let section = octoisp_controlplane::config::QueueSection {
        prefix: format!("{prefix}:q"),
        ..Default::default()
    };
    let queue = octoisp_controlplane::queue::Queue::connect(&redis_url(), section.queue_config())
        .await
        .expect("connect the command queue to the test Redis");
    let links = AgentLinks::connect(
        &redis_url(),
        &section.prefix,
        std::time::Duration::from_secs(45),
    )
    .await
    .unwrap();
    let cmds = Commands {
        waits: octoisp_controlplane::commands::waits::ResultWaits::start(queue.clone()),
        pool: db.app.clone(),
        queue,
        links,
        cfg: Arc::new(CommandsConfig::default()),
        extend_every: std::time::Duration::from_secs(10),
        marks: octoisp_controlplane::commands::marks::RunningMarks::start(db.app.clone()),
    };
    cmds.enqueue_stored(
        a.tenant.provider_id,
        octoisp_controlplane::queue::Tier::Small,
        &[(a.command, a.tenant.agent.agent_id)],
    )
    .await;
    let leases = cmds.queue.reserve("api-test", 1).await.unwrap();
    assert_eq!(leases.len(), 1, "A's command is leased");
    assert!(
        cmds.queue
            .dead_letter(a.command, leases[0].attempt, "test")
            .await
            .unwrap()
    );
    cmds
}

async fn harness() -> Harness {
    let mut config = ApiConfig::default();
    config.rate_limit.per_ip = 100_000;
    config.rate_limit.per_user = 100_000;
    config.rate_limit.per_tenant = 100_000;
    harness_with(config).await
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
    text: String,
}

impl Harness {
    async fn send(&self, req: Request<Body>) -> Resp {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
            text,
        }
    }

    async fn get(&self, token: &str, uri: &str) -> Resp {
        self.send(request("GET", uri, token, Body::empty())).await
    }
}

fn request(method: &str, uri: &str, token: &str, body: Body) -> Request<Body> {
    let mut req = Request::builder().method(method).uri(uri);
    if !token.is_empty() {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let mut req = req
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 77], 40000))));
    req
}

fn assert_error(r: &Resp, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(r.body["error"]["code"], code, "{}", r.text);
    let rid = r.body["error"]["request_id"].as_str().unwrap_or_default();
    assert!(!rid.is_empty(), "error without request id: {}", r.text);
    assert_eq!(
        r.headers.get("x-request-id").and_then(|v| v.to_str().ok()),
        Some(rid),
        "the header and the body carry the same request id"
    );
}

/// The path of `route` with `objects`' ids in it.
fn concrete(route: &api::RouteSpec, objects: &Objects) -> String {
    if route.path.starts_with("/api/v1/series/") {
        return route.path.replace("{id}", &objects.series.to_string());
    }
    route
        .path
        .replace("{id}", &objects.id_for(route.path).to_string())
        .replace("{device_id}", &objects.device.to_string())
        .replace("{code}", "devices:read")
        .replace("{version}", "1")
}

/// A body the route accepts in shape (so that only permissions and tenancy decide the answer).
fn body_for(route: &api::RouteSpec, objects: &Objects) -> String {
    match (route.method, route.path) {
        ("POST", p) if p.ends_with("/members") => {
            format!(r#"{{"device_id": "{}"}}"#, objects.device)
        }
        ("PUT", p) if p.ends_with("/role") => format!(r#"{{"role_id": "{}"}}"#, rbac::ROLE_VIEWER),
        ("PUT", p) if p.ends_with("/agent-config") => r#"{"config": {}}"#.to_owned(),
        _ => "{}".to_owned(),
    }
}

#[tokio::test]
async fn another_providers_objects_are_404_or_403_and_never_listed() {
    let h = harness().await;
    let mut checked = 0;
    // Every route naming an object, every method: provider B (holding every permission) gets 404 or 403.
    for route in api::ROUTES.iter().filter(|r| r.path.contains('{')) {
        let uri = concrete(route, &h.a);
        let body = if route.method == "GET" {
            String::new()
        } else {
            body_for(route, &h.b)
        };
        let r = h
            .send(request(route.method, &uri, "b-admin", Body::from(body)))
            .await;
        assert!(
            matches!(r.status, StatusCode::NOT_FOUND | StatusCode::FORBIDDEN),
            "{} {uri} as provider B: {} {}",
            route.method,
            r.status,
            r.text
        );
        checked += 1;
    }
    // A's first agent configuration version (B's writes above were all refused).
    let r = h
        .send(request(
            "PUT",
            &format!("/api/v1/pops/{}/agent-config", h.a.tenant.pop_id),
            "a-admin",
            Body::from(r#"{"config": {}}"#),
        ))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["version"], 1, "{}", r.text);
    // A's objects are all still there and unchanged for A.
    for route in api::ROUTES
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains('{'))
    {
        if route.permission.starts_with("providers:") {
            continue;
        }
        let uri = concrete(route, &h.a);
        let r = h.get("a-admin", &uri).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{uri} as its own provider: {}",
            r.text
        );
        if let Some(revoked) = r.body.get("revoked_at") {
            assert!(revoked.is_null(), "B revoked A's agent");
        }
    }
    // Lists never show A's objects to B.
    for route in api::ROUTES
        .iter()
        .filter(|r| r.method == "GET" && !r.path.contains('{') && !r.permission.is_empty())
    {
        // Routes that need query parameters get them.
        // Queue counts are not a list of objects.
        if route.path == "/api/v1/queues" {
            continue;
        }
        // Reports are files, not JSON lists: tests/reports.rs checks that they never show another tenant's rows.
        if route.path.starts_with("/api/v1/reports/") {
            continue;
        }
        let uri = match route.path {
            "/api/v1/metrics/aggregate" => {
                format!("{}?metric=if.in_bps&scope=provider", route.path)
            }
            p => p.to_owned(),
        };
        let as_b = h.get("b-admin", &uri).await;
        if as_b.status == StatusCode::OK {
            for id in h.a.all_ids() {
                assert!(
                    !as_b.text.contains(&id.to_string()),
                    "{} as provider B shows A's {id}: {}",
                    route.path,
                    as_b.text
                );
            }
            let as_a = h.get("a-admin", &uri).await;
            assert_eq!(as_a.status, StatusCode::OK);
            assert!(
                as_a.body["items"].as_array().is_some_and(|i| !i.is_empty()),
                "{} as A lists A's objects: {}",
                route.path,
                as_a.text
            );
        } else {
            assert_eq!(
                as_b.status,
                StatusCode::FORBIDDEN,
                "{}: {}",
                route.path,
                as_b.text
            );
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} routes checked");
    h.db.cleanup().await;
}

#[tokio::test]
async fn every_route_is_in_the_openapi_document_and_the_document_is_served() {
    let doc = serde_json::to_value(api::openapi()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for route in api::ROUTES {
        let op = &paths
            .get(route.path)
            .unwrap_or_else(|| panic!("{} missing from the OpenAPI document", route.path))
            [route.method.to_lowercase()];
        assert!(
            op.is_object(),
            "{} {} is not documented",
            route.method,
            route.path
        );
    }
    let documented: usize = paths
        .values()
        .map(|p| p.as_object().map_or(0, |o| o.len()))
        .sum();
    assert_eq!(
        documented,
        api::ROUTES.len(),
        "the route table and the document differ"
    );
    let h = harness().await;
    let r = h.get("", "/api/v1/openapi.json").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body["paths"]["/api/v1/devices"]["get"].is_object());
    h.db.cleanup().await;
}

#[tokio::test]
async fn roles_and_permissions_on_real_routes() {
    let h = harness().await;
    assert_eq!(
        h.get("a-viewer", "/api/v1/devices").await.status,
        StatusCode::OK
    );
    assert_error(
        &h.get("a-viewer", "/api/v1/agents").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        &h.get("a-admin", "/api/v1/providers").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        &h.get("", "/api/v1/devices").await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
    assert_error(
        &h.get("forged", "/api/v1/devices").await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
    let r = h.get("global", "/api/v1/providers").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(2));
    let r = h
        .get(
            "global",
            &format!("/api/v1/providers/{}", h.b.tenant.provider_id),
        )
        .await;
    assert_eq!(r.body["slug"], "isp-b");
    // Viewer reads devices but cannot change them; the provider's admin can, and the change is audited.
    let uri = format!("/api/v1/devices/{}", h.a.device);
    let patch = r#"{"name": "CPE sala", "tags": ["vip", "fibra"]}"#;
    let r = h
        .send(request("PATCH", &uri, "a-viewer", Body::from(patch)))
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = h
        .send(request("PATCH", &uri, "a-admin", Body::from(patch)))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["name"], "CPE sala");
    assert_eq!(r.body["tags"], serde_json::json!(["vip", "fibra"]));
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'devices.update' AND target_id = $1 AND provider_id = $2",
    )
    .bind(h.a.device.to_string())
    .bind(h.a.tenant.provider_id)
    .fetch_one(&h.db.admin)
    .await
    .unwrap();
    assert_eq!(audited, 1);
    // Providers: only the Global Admin creates them.
    let new = r#"{"slug": "isp-c", "name": "ISP C", "tier": "large"}"#;
    let r = h
        .send(request(
            "POST",
            "/api/v1/providers",
            "a-admin",
            Body::from(new),
        ))
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = h
        .send(request(
            "POST",
            "/api/v1/providers",
            "global",
            Body::from(new),
        ))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["tier"], "large");
    // Enrollment tokens and revocation are separate permissions.
    let tok = format!(r#"{{"pop_id": "{}"}}"#, h.a.tenant.pop_id);
    let r = h
        .send(request(
            "POST",
            "/api/v1/agents/enrollment-tokens",
            "a-viewer",
            Body::from(tok.clone()),
        ))
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = h
        .send(request(
            "POST",
            "/api/v1/agents/enrollment-tokens",
            "a-admin",
            Body::from(tok),
        ))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!(r.body["secret"].as_str().is_some_and(|s| s.len() >= 40));
    let uri = format!("/api/v1/agents/{}/revoke", h.a.tenant.agent.agent_id);
    let r = h
        .send(request("POST", &uri, "a-admin", Body::empty()))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.body["revoked_at"].is_string());
    h.db.cleanup().await;
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_json_and_malformed_requests_400_json() {
    let h = harness().await;
    let big = vec![b'x'; (1 << 20) + 1];
    let len = big.len();
    let mut req = request("GET", "/api/v1/devices", "a-admin", Body::from(big));
    req.headers_mut().insert(header::CONTENT_LENGTH, len.into());
    let r = h.send(req).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let r = h.get("a-admin", "/api/v1/devices/not-a-uuid").await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_request");
    for body in [
        r#"{"name": "x", "unexpected": 1}"#,
        r#"{"name": 42}"#,
        r#"{"name": "#,
        "not json",
    ] {
        let r = h
            .send(request(
                "POST",
                "/api/v1/groups",
                "a-admin",
                Body::from(body),
            ))
            .await;
        assert_error(&r, StatusCode::BAD_REQUEST, "bad_request");
    }
    let mut req = request(
        "POST",
        "/api/v1/groups",
        "a-admin",
        Body::from(r#"{"name": "x"}"#),
    );
    req.headers_mut().remove(header::CONTENT_TYPE);
    assert_error(&h.send(req).await, StatusCode::BAD_REQUEST, "bad_request");
    let r = h.get("a-admin", "/api/v1/nothing-here").await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    // A sane incoming request id is echoed; a weird one is replaced.
    let mut req = request(
        "GET",
        "/api/v1/devices/not-a-uuid",
        "a-admin",
        Body::empty(),
    );
    req.headers_mut()
        .insert("x-request-id", "trace-42".parse().unwrap());
    let r = h.send(req).await;
    assert_eq!(r.body["error"]["request_id"], "trace-42");
    let mut req = request("GET", "/api/v1/devices", "a-admin", Body::empty());
    req.headers_mut()
        .insert("x-request-id", "a b".parse().unwrap());
    let r = h.send(req).await;
    let rid = r.headers.get("x-request-id").unwrap().to_str().unwrap();
    assert!(Uuid::parse_str(rid).is_ok(), "{rid}");
    h.db.cleanup().await;
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_across_instances() {
    let mut config = ApiConfig::default();
    config.rate_limit.window_secs = 60;
    config.rate_limit.per_ip = 1000;
    config.rate_limit.per_user = 5;
    config.rate_limit.per_tenant = 1000;
    let h = harness_with(config).await;
    for i in 0..5 {
        let r = h.get("a-viewer", "/api/v1/devices").await;
        assert_eq!(r.status, StatusCode::OK, "request {i}: {}", r.text);
    }
    let r = h.get("a-viewer", "/api/v1/devices").await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let retry: u64 = r
        .headers
        .get(header::RETRY_AFTER)
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Another user of the same tenant is not limited by the first one's budget.
    assert_eq!(
        h.get("a-admin", "/api/v1/devices").await.status,
        StatusCode::OK
    );
    h.db.cleanup().await;
}
