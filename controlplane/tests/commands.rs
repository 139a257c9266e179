//! Commands through the API and the queue, with real PostgreSQL and Redis: RBAC per command, tenant isolation,
//! idempotency keys, fan-out batches, 422s that name the field, audit rows, results finishing commands through
//! ingest, cancellation, the reconciler after a Redis loss, and a small tenant's command leased ahead of a large
//! tenant's flood.

#[allow(dead_code)]
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use octoisp_controlplane::api::{self, ApiConfig, AppState};
use octoisp_controlplane::auth::Caller;
use octoisp_controlplane::commands::{AgentLinks, Commands, CommandsConfig};
use octoisp_controlplane::config::QueueSection;
use octoisp_controlplane::ingest::store::Store;
use octoisp_controlplane::queue::{Queue, Tier};
use octoisp_shared::{CommandResult, CommandStatus, Record};
use serde_json::{Value, json};
use support::TestDb;
use support::fixtures::{Tenant, batch, tenant};
use tower::ServiceExt as _;
use uuid::Uuid;

fn caller(provider: Option<Uuid>, perms: &[&str]) -> Caller {
    Caller {
        user_id: Some(Uuid::now_v7()),
        api_key_id: None,
        provider_id: provider,
        permissions: perms.iter().map(|p| (*p).to_owned()).collect(),
        global_admin: provider.is_none(),
        request_id: String::new(),
        ip: None,
    }
}

fn redis_url() -> String {
    std::env::var("OCTOISP_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The permissions of the predefined roles, as migration 0004 + 0011 grant them.
async fn role_permissions(db: &TestDb, role: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT rp.permission FROM role_permissions rp JOIN roles r ON r.id = rp.role_id \
         WHERE r.provider_id IS NULL AND r.name = $1",
    )
    .bind(role)
    .fetch_all(&db.admin)
    .await
    .unwrap()
}

struct Harness {
    db: TestDb,
    a: Tenant,
    b: Tenant,
    router: Router,
    cmds: Commands,
    prefix: String,
    /// Deletes the test's Redis keys when the harness is dropped, even when an assertion panicked.
    _keys: PrefixGuard,
}

async fn queue_with(prefix: &str, tweak: impl FnOnce(&mut QueueSection)) -> Queue {
    let mut section = QueueSection {
        redis_url: redis_url(),
        prefix: prefix.to_owned(),
        ..QueueSection::default()
    };
    tweak(&mut section);
    Queue::connect(&redis_url(), section.queue_config())
        .await
        .expect("connect the queue to the test Redis")
}

async fn harness() -> Harness {
    let db = TestDb::new().await;
    let a = tenant(&db, "isp-a").await;
    let b = tenant(&db, "isp-b").await;
    let technician = role_permissions(&db, "Technician").await;
    let viewer = role_permissions(&db, "Viewer").await;
    let admin = role_permissions(&db, "Provider Admin").await;
    fn as_strs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let mut tokens = HashMap::new();
    tokens.insert(
        "a-admin".to_owned(),
        caller(Some(a.provider_id), &as_strs(&admin)),
    );
    tokens.insert(
        "b-admin".to_owned(),
        caller(Some(b.provider_id), &as_strs(&admin)),
    );
    tokens.insert(
        "a-tech".to_owned(),
        caller(Some(a.provider_id), &as_strs(&technician)),
    );
    let mut granted = technician.clone();
    granted.push("tr069:reboot".into());
    tokens.insert(
        "a-tech-reboot".to_owned(),
        caller(Some(a.provider_id), &as_strs(&granted)),
    );
    tokens.insert(
        "a-viewer".to_owned(),
        caller(Some(a.provider_id), &as_strs(&viewer)),
    );
    tokens.insert("global".to_owned(), caller(None, &[]));
    let prefix = format!("octoisp-test-cmd-{:016x}", rand::random::<u64>());
    let queue = queue_with(&prefix, |_| {}).await;
    let links = AgentLinks::connect(&redis_url(), &prefix, Duration::from_secs(45))
        .await
        .unwrap();
    let cmds = Commands {
        waits: octoisp_controlplane::commands::waits::ResultWaits::start(queue.clone()),
        pool: db.app.clone(),
        queue,
        links,
        cfg: Arc::new(CommandsConfig::default()),
        extend_every: Duration::from_secs(10),
        marks: octoisp_controlplane::commands::marks::RunningMarks::start(db.app.clone()),
    };
    let mut config = ApiConfig::default();
    config.rate_limit.enabled = false;
    let state = AppState {
        config: Arc::new(config),
        commands: Some(cmds.clone()),
        ..support::api::state(&db, tokens)
    };
    Harness {
        router: api::router(state),
        db,
        a,
        b,
        cmds,
        _keys: PrefixGuard(prefix.clone()),
        prefix,
    }
}

struct Resp {
    status: StatusCode,
    body: Value,
    text: String,
}

impl Harness {
    async fn send(
        &self,
        method: &str,
        uri: &str,
        token: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> Resp {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let mut req = req
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 77], 40000))));
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

    async fn post(&self, token: &str, uri: &str, body: Value) -> Resp {
        self.send("POST", uri, token, Some(body), None).await
    }

    async fn get(&self, token: &str, uri: &str) -> Resp {
        self.send("GET", uri, token, None, None).await
    }

    async fn audit_count(&self, action: &str, target: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = $1 AND target_id = $2")
            .bind(action)
            .bind(target)
            .fetch_one(&self.db.admin)
            .await
            .unwrap()
    }

    async fn forget_redis(&self) {
        let mut r = redis::Client::open(redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query_async(&mut r)
            .await
            .expect("KEYS");
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut r)
                .await
                .expect("DEL");
        }
    }

    async fn cleanup(self) {
        // Redis keys go when `_keys` is dropped here (SCAN + UNLINK by prefix, also on a panic).
        self.db.cleanup().await;
    }
}

/// Deletes every key under its prefix in the test Redis when dropped: SCAN + UNLINK in batches of 1,000, on a
/// plain thread (a synchronous connection, so it also runs while a test unwinds).
struct PrefixGuard(String);

impl Drop for PrefixGuard {
    fn drop(&mut self) {
        let pattern = format!("{}*", self.0);
        let _ = std::thread::spawn(move || {
            let Ok(mut r) = redis::Client::open(redis_url()).and_then(|c| c.get_connection())
            else {
                return;
            };
            let mut cursor: u64 = 0;
            loop {
                let Ok((next, keys)): redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(&mut r)
                else {
                    return;
                };
                if !keys.is_empty() {
                    let _: redis::RedisResult<i64> = redis::cmd("UNLINK").arg(keys).query(&mut r);
                }
                if next == 0 {
                    return;
                }
                cursor = next;
            }
        })
        .join();
    }
}

async fn add_device(db: &TestDb, t: &Tenant, key: &str, ip: &str) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO devices (provider_id, pop_id, device_key, mgmt_ip) VALUES ($1, $2, $3, $4::inet) RETURNING id",
    )
    .bind(t.provider_id)
    .bind(t.pop_id)
    .bind(key)
    .bind(ip)
    .fetch_one(&db.admin)
    .await
    .unwrap()
}

#[tokio::test]
async fn roles_decide_who_may_run_what() {
    let h = harness().await;
    let pop = h.a.pop_id;
    let mtr = json!({"name": "mtr", "args": {"target": "127.0.0.1"}, "pop_id": pop});
    let reboot = json!({"name": "tr069.reboot", "args": {"device_key": "cpe-1"}, "pop_id": pop});
    // A Viewer reads but cannot create.
    let r = h.post("a-viewer", "/api/v1/commands", mtr.clone()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(r.text.contains("diagnostics:run"), "{}", r.text);
    assert_eq!(
        h.get("a-viewer", "/api/v1/commands").await.status,
        StatusCode::OK
    );
    // A Technician runs diagnostics, but rebooting a CPE needs an explicit grant.
    let r = h.post("a-tech", "/api/v1/commands", mtr.clone()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["status"], "queued");
    assert_eq!(r.body["agent_id"], json!(h.a.agent.agent_id));
    let r = h.post("a-tech", "/api/v1/commands", reboot.clone()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(r.text.contains("tr069:reboot"), "{}", r.text);
    let r = h.post("a-tech-reboot", "/api/v1/commands", reboot).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    // Creation is audited and the job is in the tenant's queue.
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(h.audit_count("commands.create", &id).await, 1);
    let stats = h.cmds.queue.tenant_stats(h.a.provider_id).await.unwrap();
    assert_eq!(stats.ready, 2, "{stats:?}");
    h.cleanup().await;
}

#[tokio::test]
async fn bad_input_is_422_naming_the_field_and_nothing_is_queued() {
    let h = harness().await;
    let pop = h.a.pop_id;
    let ok = json!({"targets": ["127.0.0.1"]});
    for (body, field) in [
        (json!({"name": "reboot-everything", "pop_id": pop}), "name"),
        (
            json!({"name": "ping", "args": [1, 2], "pop_id": pop}),
            "args",
        ),
        (json!({"name": "ping", "args": {}, "pop_id": pop}), "args"),
        (
            json!({"name": "ping", "args": {"targets": ["x"]}, "pop_id": pop}),
            "args",
        ),
        (
            json!({"name": "tr069.reboot", "args": {"device_key": ""}, "pop_id": pop}),
            "args",
        ),
        (json!({"name": "ping", "args": ok}), "pop_id"),
        (
            json!({"name": "ping", "args": ok, "pop_id": pop, "device_id": Uuid::now_v7()}),
            "pop_id",
        ),
        (
            json!({"name": "ping", "args": ok, "pop_id": pop, "deadline_secs": 0}),
            "deadline_secs",
        ),
        (
            json!({"name": "ping", "args": ok, "pop_id": Uuid::now_v7()}),
            "pop_id",
        ),
        (
            json!({"name": "ping", "args": {}, "device_id": Uuid::now_v7()}),
            "device_id",
        ),
        (
            json!({"name": "ping", "args": {}, "group_id": Uuid::now_v7()}),
            "group_id",
        ),
    ] {
        let r = h.post("a-admin", "/api/v1/commands", body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.text
        );
        let msg = r.body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.starts_with(field), "{body}: {msg}");
    }
    // A POP whose only agent was revoked has nobody to run commands.
    sqlx::query("UPDATE agents SET revoked_at = now() WHERE id = $1")
        .bind(h.a.agent.agent_id)
        .execute(&h.db.admin)
        .await
        .unwrap();
    let r = h
        .post(
            "a-admin",
            "/api/v1/commands",
            json!({"name": "ping", "args": {"targets": ["127.0.0.1"]}, "pop_id": pop}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("no enrolled agent"), "{}", r.text);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM commands")
        .fetch_one(&h.db.admin)
        .await
        .unwrap();
    assert_eq!(rows, 0);
    assert_eq!(
        h.cmds
            .queue
            .tenant_stats(h.a.provider_id)
            .await
            .unwrap()
            .ready,
        0
    );
    h.cleanup().await;
}

#[tokio::test]
async fn another_provider_cannot_read_or_cancel_and_lists_stay_apart() {
    let h = harness().await;
    let r = h
        .post(
            "a-admin",
            "/api/v1/commands",
            json!({"name": "ping", "args": {"targets": ["127.0.0.1"]}, "pop_id": h.a.pop_id}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();
    for (method, uri) in [
        ("GET", format!("/api/v1/commands/{id}")),
        ("GET", format!("/api/v1/commands/{id}/progress")),
        ("POST", format!("/api/v1/commands/{id}/cancel")),
        (
            "POST",
            format!("/api/v1/commands/dead-letters/{id}/requeue"),
        ),
        ("DELETE", format!("/api/v1/commands/dead-letters/{id}")),
    ] {
        let r = h.send(method, &uri, "b-admin", None, None).await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{method} {uri}: {}",
            r.text
        );
    }
    // B cannot target A's POP either: it does not exist for B.
    let r = h
        .post(
            "b-admin",
            "/api/v1/commands",
            json!({"name": "ping", "args": {"targets": ["127.0.0.1"]}, "pop_id": h.a.pop_id}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let list = h.get("b-admin", "/api/v1/commands").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(!list.text.contains(&id), "{}", list.text);
    let list = h
        .get("a-admin", "/api/v1/commands?status=queued&name=ping")
        .await;
    assert_eq!(list.body["items"][0]["id"], json!(id), "{}", list.text);
    assert_eq!(
        h.get("a-admin", "/api/v1/commands?status=bogus")
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    let r = h.get("a-admin", &format!("/api/v1/commands/{id}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "queued");
    assert!(r.body["output"].is_null());
    // A still has it, uncancelled.
    h.cleanup().await;
}

#[tokio::test]
async fn the_same_idempotency_key_gives_the_same_command() {
    let h = harness().await;
    let body = json!({"name": "ping", "args": {"targets": ["127.0.0.1"]}, "pop_id": h.a.pop_id});
    let first = h
        .send(
            "POST",
            "/api/v1/commands",
            "a-admin",
            Some(body.clone()),
            Some("run-42"),
        )
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    let again = h
        .send(
            "POST",
            "/api/v1/commands",
            "a-admin",
            Some(body.clone()),
            Some("run-42"),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.body["id"], first.body["id"]);
    // Another provider's identical key is its own.
    let b_body = json!({"name": "ping", "args": {"targets": ["127.0.0.1"]}, "pop_id": h.b.pop_id});
    let b = h
        .send(
            "POST",
            "/api/v1/commands",
            "b-admin",
            Some(b_body),
            Some("run-42"),
        )
        .await;
    assert_eq!(b.status, StatusCode::ACCEPTED, "{}", b.text);
    assert_ne!(b.body["id"], first.body["id"]);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM commands")
        .fetch_one(&h.db.admin)
        .await
        .unwrap();
    assert_eq!(rows, 2);
    assert_eq!(
        h.cmds
            .queue
            .tenant_stats(h.a.provider_id)
            .await
            .unwrap()
            .ready,
        1
    );
    let r = h
        .send(
            "POST",
            "/api/v1/commands",
            "a-admin",
            Some(body),
            Some("bad key with spaces"),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    h.cleanup().await;
}

/// The database refuses a command whose POP is not its agent's POP (one composite foreign key), and a command
/// naming the agent with its own POP is stored.
#[tokio::test]
async fn a_command_names_its_agents_own_pop_or_is_refused() {
    let db = TestDb::new().await;
    let a = tenant(&db, "isp-a").await;
    let other_pop: Uuid = sqlx::query_scalar(
        "INSERT INTO pops (provider_id, slug, name) VALUES ($1, 'norte', 'Norte') RETURNING id",
    )
    .bind(a.provider_id)
    .fetch_one(&db.admin)
    .await
    .unwrap();
    let insert = |pop: Uuid| {
        sqlx::query(
            "INSERT INTO commands (id, provider_id, pop_id, agent_id, name, args, deadline) \
             VALUES ($1, $2, $3, $4, 'noop', '{}', now() + interval '1 hour')",
        )
        .bind(Uuid::now_v7())
        .bind(a.provider_id)
        .bind(pop)
        .bind(a.agent.agent_id)
        .execute(&db.admin)
    };
    let err = insert(other_pop)
        .await
        .expect_err("a command on POP norte for the agent of POP centro");
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("23503"),
        "{err}"
    );
    insert(a.pop_id).await.expect("the agent's own POP");
    db.cleanup().await;
}

#[tokio::test]
async fn a_fan_out_creates_one_command_per_device_with_its_identity() {
    let h = harness().await;
    let mut devices = Vec::new();
    for i in 0..5 {
        devices.push(
            add_device(
                &h.db,
                &h.a,
                &format!("cpe-{i}"),
                &format!("192.0.2.{}", 10 + i),
            )
            .await,
        );
    }
    let group: Uuid = sqlx::query_scalar(
        "INSERT INTO device_groups (provider_id, name) VALUES ($1, 'OLT 1') RETURNING id",
    )
    .bind(h.a.provider_id)
    .fetch_one(&h.db.admin)
    .await
    .unwrap();
    for d in &devices[..3] {
        sqlx::query("INSERT INTO device_group_members (provider_id, group_id, device_id) VALUES ($1, $2, $3)")
            .bind(h.a.provider_id)
            .bind(group)
            .bind(d)
            .execute(&h.db.admin)
            .await
            .unwrap();
    }
    let r = h
        .post(
            "a-admin",
            "/api/v1/commands",
            json!({"name": "ping", "group_id": group}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["count"], 3);
    let batch = r.body["batch_id"].as_str().unwrap().to_owned();
    let b = h
        .get("a-admin", &format!("/api/v1/command-batches/{batch}"))
        .await;
    assert_eq!(b.status, StatusCode::OK, "{}", b.text);
    assert_eq!(b.body["counts"]["queued"], 3, "{}", b.text);
    assert_eq!(
        h.get("b-admin", &format!("/api/v1/command-batches/{batch}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let list = h
        .get("a-admin", &format!("/api/v1/commands?batch_id={batch}"))
        .await;
    let items = list.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    let mut ips: Vec<&str> = items
        .iter()
        .map(|i| i["args"]["targets"][0].as_str().unwrap())
        .collect();
    ips.sort_unstable();
    assert_eq!(ips, ["192.0.2.10", "192.0.2.11", "192.0.2.12"]);
    assert!(items.iter().all(|i| i["device_id"].is_string()));
    // The whole POP.
    let r = h
        .post(
            "a-admin",
            "/api/v1/commands",
            json!({"name": "ping", "pop_id": h.a.pop_id, "all_devices": true}),
        )
        .await;
    assert_eq!(r.body["count"], 5, "{}", r.text);
    assert_eq!(h.audit_count("commands.create_batch", &batch).await, 1);
    assert_eq!(
        h.cmds
            .queue
            .tenant_stats(h.a.provider_id)
            .await
            .unwrap()
            .ready,
        8
    );
    // A single device: its identity goes into the arguments.
    let r = h
        .post(
            "a-admin",
            "/api/v1/commands",
            json!({"name": "ping", "device_id": devices[4]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["args"]["targets"], json!(["192.0.2.14"]));
    assert_eq!(r.body["device_id"], json!(devices[4]));
    h.cleanup().await;
}

#[tokio::test]
async fn cancel_stops_a_queued_command_once_and_is_audited() {
    let h = harness().await;
    let r = h
        .post(
            "a-admin",
            "/api/v1/commands",
            json!({"name": "ping", "args": {"targets": ["127.0.0.1"]}, "pop_id": h.a.pop_id}),
        )
        .await;
    let id = r.body["id"].as_str().unwrap().to_owned();
    // A Viewer may not cancel.
    let r = h
        .post(
            "a-viewer",
            &format!("/api/v1/commands/{id}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = h
        .post(
            "a-admin",
            &format!("/api/v1/commands/{id}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "cancelled");
    let r = h
        .post(
            "a-admin",
            &format!("/api/v1/commands/{id}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(h.audit_count("commands.cancel", &id).await, 1);
    // The status filter follows it from the open to the final statuses (two different indexes since 0019).
    let listed = |status: &'static str| {
        let h = &h;
        async move {
            let r = h
                .get("a-admin", &format!("/api/v1/commands?status={status}"))
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            r.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed("cancelled").await, vec![id.clone()]);
    assert!(listed("queued").await.is_empty());
    assert_eq!(
        h.cmds
            .queue
            .tenant_stats(h.a.provider_id)
            .await
            .unwrap()
            .ready,
        0
    );
    // A cancelled command cannot be moved back, even by the owner role.
    let err = sqlx::query("UPDATE commands SET status = 'running' WHERE id = $1::uuid")
        .bind(&id)
        .execute(&h.db.admin)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot become"), "{err}");
    h.cleanup().await;
}

#[tokio::test]
async fn a_stored_result_finishes_the_command_and_completes_its_job() {
    let h = harness().await;
    let r = h
        .post(
            "a-admin",
            "/api/v1/commands",
            json!({"name": "ping", "args": {"targets": ["127.0.0.1"]}, "pop_id": h.a.pop_id}),
        )
        .await;
    let id: Uuid = r.body["id"].as_str().unwrap().parse().unwrap();
    let leases = h.cmds.queue.reserve("test-worker", 10).await.unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].id, id);
    // Its stream ended after `started`: the lease waits for the result (held, not deferred yet).
    let until = chrono::Utc::now().timestamp_millis() + 30_000;
    assert!(h.cmds.waits.hold(id, leases[0].attempt, until));
    let store = Store::new(h.db.app.clone())
        .with_command_queue(h.cmds.queue.clone())
        .with_result_waits(h.cmds.waits.clone());
    let result = Record::CommandResult(CommandResult {
        command_id: id,
        ts_ms: chrono::Utc::now().timestamp_millis(),
        status: CommandStatus::Succeeded,
        output_json: r#"{"sent":3,"received":3}"#.into(),
        error: None,
    });
    let b = batch(0, Vec::new(), &[], vec![result.clone()]);
    store.store_batch(&h.a.agent, &b, &[]).await.unwrap();
    let r = h.get("a-admin", &format!("/api/v1/commands/{id}")).await;
    assert_eq!(r.body["status"], "succeeded", "{}", r.text);
    assert_eq!(r.body["output"]["received"], 3);
    assert!(r.body["finished_at"].is_string());
    let stats = h.cmds.queue.tenant_stats(h.a.provider_id).await.unwrap();
    assert_eq!((stats.ready, stats.leased), (0, 0), "{stats:?}");
    assert_eq!(h.cmds.waits.waiting(), 0, "the result ended the wait");
    // A second copy of the result (the agent resent it) changes nothing; the status never moves back.
    let b = batch(1, Vec::new(), &[], vec![result]);
    store.store_batch(&h.a.agent, &b, &[]).await.unwrap();
    let r = h.get("a-admin", &format!("/api/v1/commands/{id}")).await;
    assert_eq!(r.body["status"], "succeeded");
    h.cleanup().await;
}

#[tokio::test]
async fn commands_lost_with_redis_are_put_back_by_the_reconciler() {
    let h = harness().await;
    let r = h
        .post(
            "a-admin",
            "/api/v1/commands",
            json!({"name": "ping", "args": {"targets": ["127.0.0.1"]}, "pop_id": h.a.pop_id}),
        )
        .await;
    let id: Uuid = r.body["id"].as_str().unwrap().parse().unwrap();
    // Redis loses everything of this queue (a restart without persistence): every key under the test's prefix.
    h.forget_redis().await;
    assert_eq!(
        h.cmds
            .queue
            .tenant_stats(h.a.provider_id)
            .await
            .unwrap()
            .ready,
        0
    );
    // The reconciler only re-offers commands older than a minute: age the row.
    sqlx::query("UPDATE commands SET created_at = now() - interval '2 minutes' WHERE id = $1")
        .bind(id)
        .execute(&h.db.admin)
        .await
        .unwrap();
    let n = octoisp_controlplane::commands::dispatch::reconcile_once(&h.cmds)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let leases = h.cmds.queue.reserve("test-worker", 10).await.unwrap();
    assert_eq!(leases.iter().map(|l| l.id).collect::<Vec<_>>(), vec![id]);
    // Running it again does not duplicate the job.
    octoisp_controlplane::commands::dispatch::reconcile_once(&h.cmds)
        .await
        .unwrap();
    assert!(
        h.cmds
            .queue
            .reserve("test-worker", 10)
            .await
            .unwrap()
            .is_empty()
    );
    h.cleanup().await;
}

#[tokio::test]
async fn a_small_tenants_command_is_leased_ahead_of_a_large_tenants_flood() {
    let h = harness().await;
    sqlx::query("UPDATE providers SET tier = 'large' WHERE id = $1")
        .bind(h.b.provider_id)
        .execute(&h.db.admin)
        .await
        .unwrap();
    // 100,000 commands of the large tenant, enqueued the way the API does (rows first, then the queue).
    let total = 100_000usize;
    let ids: Vec<Uuid> = (0..total).map(|_| Uuid::now_v7()).collect();
    for chunk in ids.chunks(20_000) {
        sqlx::query(
            "INSERT INTO commands (id, provider_id, pop_id, agent_id, name, args, deadline) \
             SELECT i, $1, $2, $3, 'noop', '{}', now() + interval '1 hour' FROM unnest($4::uuid[]) AS u(i)",
        )
        .bind(h.b.provider_id)
        .bind(h.b.pop_id)
        .bind(h.b.agent.agent_id)
        .bind(chunk)
        .execute(&h.db.admin)
        .await
        .unwrap();
        let jobs: Vec<(Uuid, Uuid)> = chunk.iter().map(|id| (*id, h.b.agent.agent_id)).collect();
        h.cmds
            .enqueue_stored(h.b.provider_id, Tier::Large, &jobs)
            .await;
    }
    assert_eq!(
        h.cmds
            .queue
            .tenant_stats(h.b.provider_id)
            .await
            .unwrap()
            .ready,
        total as u64
    );
    // Workers are busy with the flood...
    let mut leased_before = 0;
    for _ in 0..5 {
        leased_before += h
            .cmds
            .queue
            .reserve("flood-worker", 50)
            .await
            .unwrap()
            .len();
    }
    assert!(leased_before > 0);
    // ...when the small tenant's command arrives: it is among the very next leases, not behind 100,000.
    let r = h
        .post(
            "a-admin",
            "/api/v1/commands",
            json!({"name": "ping", "args": {"targets": ["127.0.0.1"]}, "pop_id": h.a.pop_id}),
        )
        .await;
    let id: Uuid = r.body["id"].as_str().unwrap().parse().unwrap();
    let mut position = None;
    let mut seen = 0;
    for _ in 0..10 {
        for l in h.cmds.queue.reserve("flood-worker", 16).await.unwrap() {
            seen += 1;
            if l.id == id {
                position = Some(seen);
            }
        }
        if position.is_some() {
            break;
        }
    }
    // Clean the 100,000 keys before asserting, so a failure does not leave them in the shared Redis.
    h.cleanup().await;
    let position = position.expect("the small tenant's command was never leased");
    assert!(
        position <= 16,
        "leased as number {position} after the flood"
    );
}
