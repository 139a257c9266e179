//! A CPE's TR-069 data through the API, with real PostgreSQL and Redis, the results stored by the real ingest
//! path: the newest value of each parameter wins (by the CPE's time, not arrival), failed results and a
//! TransferComplete's command key are not values, the summary (WAN, Wi-Fi, optical level), search, browsing by
//! level and paging; another provider's device is 404; a Viewer reads but may not write (`tr069.set_params`
//! needs `tr069:write`), and the tasks list shows the write queued, then its result.

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
use octoisp_controlplane::queue::Queue;
use octoisp_shared::{CommandResult, CommandStatus, Record, Tr069Result};
use serde_json::{Value, json};
use support::TestDb;
use support::fixtures::{Tenant, batch, now_ms, tenant};
use tower::ServiceExt as _;
use uuid::Uuid;

const KEY: &str = "cwmp:00259E-EG8145V5-48575443A94196A5";
const SSID: &str = "InternetGatewayDevice.LANDevice.1.WLANConfiguration.1.SSID";
const RX: &str = "InternetGatewayDevice.WANDevice.1.X_GponInterafceConfig.RXPower";

fn redis_url() -> String {
    std::env::var("OCTOISP_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The permissions of a predefined role, as the migrations grant them.
async fn role(db: &TestDb, provider: Uuid, name: &str) -> Caller {
    let permissions: Vec<String> = sqlx::query_scalar(
        "SELECT rp.permission FROM role_permissions rp JOIN roles r ON r.id = rp.role_id \
         WHERE r.provider_id IS NULL AND r.name = $1",
    )
    .bind(name)
    .fetch_all(&db.admin)
    .await
    .unwrap();
    assert!(!permissions.is_empty(), "role {name} exists");
    Caller {
        user_id: Some(Uuid::now_v7()),
        api_key_id: None,
        provider_id: Some(provider),
        permissions: permissions.into_iter().collect(),
        global_admin: false,
        request_id: String::new(),
        ip: None,
    }
}

struct Harness {
    db: TestDb,
    a: Tenant,
    router: Router,
    store: Store,
    prefix: String,
    seq: std::sync::atomic::AtomicU64,
}

async fn harness() -> Harness {
    let db = TestDb::new().await;
    let a = tenant(&db, "isp-a").await;
    let b = tenant(&db, "isp-b").await;
    let mut tokens = HashMap::new();
    tokens.insert(
        "a-admin".to_owned(),
        role(&db, a.provider_id, "Provider Admin").await,
    );
    tokens.insert(
        "a-viewer".to_owned(),
        role(&db, a.provider_id, "Viewer").await,
    );
    tokens.insert(
        "b-admin".to_owned(),
        role(&db, b.provider_id, "Provider Admin").await,
    );
    let prefix = format!("octoisp-test-tr069-{:016x}", rand::random::<u64>());
    let section = QueueSection {
        redis_url: redis_url(),
        prefix: prefix.clone(),
        ..QueueSection::default()
    };
    let queue = Queue::connect(&redis_url(), section.queue_config())
        .await
        .expect("connect the queue to the test Redis");
    let links = AgentLinks::connect(&redis_url(), &prefix, Duration::from_secs(45))
        .await
        .unwrap();
    let cmds = Commands {
        waits: octoisp_controlplane::commands::waits::ResultWaits::start(queue.clone()),
        pool: db.app.clone(),
        queue: queue.clone(),
        links,
        cfg: Arc::new(CommandsConfig::default()),
        extend_every: Duration::from_secs(10),
        marks: octoisp_controlplane::commands::marks::RunningMarks::start(db.app.clone()),
    };
    let mut config = ApiConfig::default();
    config.rate_limit.enabled = false;
    let state = AppState {
        config: Arc::new(config),
        commands: Some(cmds),
        ..support::api::state(&db, tokens)
    };
    Harness {
        router: api::router(state),
        store: Store::new(db.app.clone()).with_command_queue(queue),
        db,
        a,
        prefix,
        seq: Default::default(),
    }
}

struct Resp {
    status: StatusCode,
    body: Value,
    text: String,
}

impl Harness {
    async fn send(&self, method: &str, uri: &str, token: &str, body: Option<Value>) -> Resp {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 77], 40000))));
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
            .await
            .unwrap();
        Resp {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&self, token: &str, uri: &str) -> Resp {
        self.send("GET", uri, token, None).await
    }

    /// Stores TR-069 results as the agent's ACS sends them, through the ingest path.
    async fn ingest(&self, records: Vec<Record>) {
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let b = batch(seq, Vec::new(), &[], records);
        self.store
            .store_batch(&self.a.agent, &b, &[])
            .await
            .unwrap();
    }

    async fn device(&self) -> Uuid {
        sqlx::query_scalar("SELECT id FROM devices WHERE device_key = $1")
            .bind(KEY)
            .fetch_one(&self.db.admin)
            .await
            .unwrap()
    }

    async fn cleanup(self) {
        let mut r = redis::Client::open(redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query_async(&mut r)
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(keys).query_async(&mut r).await;
        }
        self.db.cleanup().await;
    }
}

fn result(ts_ms: i64, kind: &str, ok: bool, params: &[(&str, &str)]) -> Record {
    Record::Tr069Result(Tr069Result {
        id: Uuid::now_v7(),
        ts_ms,
        device_key: KEY.into(),
        task_id: None,
        kind: kind.into(),
        ok,
        fault_code: (!ok).then_some(9002),
        fault_string: (!ok).then(|| "Internal error".to_owned()),
        parameters: params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    })
}

fn names(v: &Value) -> Vec<String> {
    v["parameters"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

fn param<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["parameters"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{name} listed in {v}"))
}

#[tokio::test]
async fn the_newest_value_wins_and_the_summary_reads_the_tree() {
    let h = harness().await;
    let t0 = now_ms() - 3_600_000;
    let wan = "InternetGatewayDevice.WANDevice.1.WANConnectionDevice.1.WANPPPConnection.1.";
    // A full read an hour ago, then an Inform with changes, then a result with an older time that arrived last
    // (an agent's outbox draining late): it must not win.
    h.ingest(vec![result(
        t0,
        "get",
        true,
        &[
            (SSID, "Casa"),
            (RX, "-20.5"),
            (
                "InternetGatewayDevice.WANDevice.1.X_GponInterafceConfig.TXPower",
                "2.1",
            ),
            (&format!("{wan}ConnectionStatus"), "Connected"),
            (&format!("{wan}ExternalIPAddress"), "198.51.100.20"),
            (&format!("{wan}Username"), "cliente01@isp"),
            (
                "InternetGatewayDevice.LANDevice.1.WLANConfiguration.1.Channel",
                "6",
            ),
            (
                "InternetGatewayDevice.LANDevice.1.WLANConfiguration.1.TotalAssociations",
                "4",
            ),
            ("InternetGatewayDevice.DeviceInfo.UpTime", "3600"),
        ],
    )])
    .await;
    h.ingest(vec![result(
        t0 + 600_000,
        "ParameterChanges",
        true,
        &[(SSID, "Casa-Nova"), (RX, "-26.4")],
    )])
    .await;
    h.ingest(vec![
        result(t0 + 300_000, "refresh", true, &[(SSID, "Casa-Antiga")]),
        result(t0 + 900_000, "get", false, &[(SSID, "falhou")]),
        result(
            t0 + 900_000,
            "TransferComplete",
            true,
            &[("CommandKey", "fw-1")],
        ),
    ])
    .await;
    let dev = h.device().await;

    let r = h
        .get("a-viewer", &format!("/api/v1/devices/{dev}/tr069"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let v = &r.body;
    assert_eq!(v["device_key"], KEY);
    assert_eq!(v["total"], 9, "{v}");
    assert!(!names(v).contains(&"CommandKey".to_owned()));
    assert_eq!(param(v, SSID)["value"], "Casa-Nova");
    assert_eq!(param(v, SSID)["source"], "ParameterChanges");
    assert_eq!(param(v, RX)["value"], "-26.4");
    assert_eq!(
        param(v, RX)["writable"],
        false,
        "optical power is read-only"
    );
    assert_eq!(
        param(v, SSID)["writable"],
        Value::Null,
        "not known until written"
    );
    let s = &v["summary"];
    assert_eq!(s["wan"]["connection_type"], "pppoe");
    assert_eq!(s["wan"]["ip"], "198.51.100.20");
    assert_eq!(s["wan"]["status"], "up");
    assert_eq!(s["wan"]["pppoe_user"], "cliente01@isp");
    assert_eq!(s["wifi"]["ssids"], json!(["Casa-Nova"]));
    assert_eq!(
        (s["wifi"]["channel"].as_i64(), s["wifi"]["clients"].as_i64()),
        (Some(6), Some(4))
    );
    assert_eq!(s["optical"]["rx_dbm"], -26.4);
    assert_eq!(s["optical"]["rx_level"], "yellow");
    assert_eq!(s["optical"]["tx_level"], "green");
    assert_eq!(s["uptime_s"], 3600);

    // Search by substring of the name or the value, case-insensitive; the summary still covers the whole tree.
    let r = h
        .get("a-viewer", &format!("/api/v1/devices/{dev}/tr069?q=casa-n"))
        .await;
    assert_eq!(names(&r.body), vec![SSID.to_owned()]);
    assert_eq!(
        (r.body["matched"].as_u64(), r.body["total"].as_u64()),
        (Some(1), Some(9))
    );
    let r = h
        .get(
            "a-viewer",
            &format!("/api/v1/devices/{dev}/tr069?q=rxpower"),
        )
        .await;
    assert_eq!(names(&r.body), vec![RX.to_owned()]);
    assert_eq!(r.body["summary"]["optical"]["rx_level"], "yellow");

    // Browsing one level: the objects under the prefix with their counts, and its own leaves.
    let r = h
        .get(
            "a-viewer",
            &format!("/api/v1/devices/{dev}/tr069?prefix=InternetGatewayDevice.&direct=true"),
        )
        .await;
    let children: Vec<(String, u64)> = r.body["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["path"].as_str().unwrap().to_owned(),
                c["parameters"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        children,
        vec![
            ("InternetGatewayDevice.DeviceInfo.".to_owned(), 1),
            ("InternetGatewayDevice.LANDevice.".to_owned(), 3),
            ("InternetGatewayDevice.WANDevice.".to_owned(), 5),
        ]
    );
    assert!(names(&r.body).is_empty(), "no leaf right under the root");
    h.cleanup().await;
}

#[tokio::test]
async fn pages_walk_a_large_tree_once_and_bad_queries_are_400() {
    let h = harness().await;
    let params: Vec<(String, String)> = (1..=1200)
        .map(|i| {
            (
                format!("Device.Hosts.Host.{i}.IPAddress"),
                format!("10.0.{}.{}", i / 256, i % 256),
            )
        })
        .collect();
    let borrowed: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    h.ingest(vec![result(now_ms(), "get", true, &borrowed)])
        .await;
    let dev = h.device().await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let uri = match &cursor {
            Some(c) => {
                format!("/api/v1/devices/{dev}/tr069?prefix=Device.Hosts.&limit=500&cursor={c}")
            }
            None => format!("/api/v1/devices/{dev}/tr069?prefix=Device.Hosts.&limit=500"),
        };
        let r = h.get("a-viewer", &uri).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert!(r.body["parameters"]["items"].as_array().unwrap().len() <= 500);
        seen.extend(names(&r.body));
        match r.body["parameters"]["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut expected: Vec<String> = params.into_iter().map(|(k, _)| k).collect();
    expected.sort();
    assert_eq!(seen, expected, "every parameter once, in name order");

    for bad in ["limit=0", "limit=1001", "cursor=%%%", "limit=abc"] {
        let r = h
            .get("a-viewer", &format!("/api/v1/devices/{dev}/tr069?{bad}"))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
    }
    let long = "x".repeat(300);
    let r = h
        .get("a-viewer", &format!("/api/v1/devices/{dev}/tr069?q={long}"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text.contains("q:"), "{}", r.text);
    let r = h
        .get(
            "a-viewer",
            &format!("/api/v1/devices/{}/tr069", Uuid::now_v7()),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    h.cleanup().await;
}

#[tokio::test]
async fn another_providers_device_is_404() {
    let h = harness().await;
    h.ingest(vec![result(now_ms(), "get", true, &[(SSID, "Casa")])])
        .await;
    let dev = h.device().await;
    for path in [
        format!("/api/v1/devices/{dev}/tr069"),
        format!("/api/v1/devices/{dev}/tr069/tasks"),
    ] {
        let r = h.get("b-admin", &path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.text);
        assert!(!r.text.contains("Casa"));
        let r = h.get("a-admin", &path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
    }
    h.cleanup().await;
}

#[tokio::test]
async fn a_viewer_reads_but_only_tr069_write_may_set_and_the_task_shows_its_result() {
    let h = harness().await;
    h.ingest(vec![result(
        now_ms() - 60_000,
        "get",
        true,
        &[(SSID, "Casa")],
    )])
    .await;
    let dev = h.device().await;
    let set = json!({"name": "tr069.set_params", "device_id": dev,
        "args": {"values": [{"name": SSID, "value": "Casa-2", "xsd_type": "xsd:string"}]}});

    let r = h
        .send("POST", "/api/v1/commands", "a-viewer", Some(set.clone()))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(r.text.contains("tr069:write"), "{}", r.text);
    let r = h
        .get("a-viewer", &format!("/api/v1/devices/{dev}/tr069/tasks"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["items"], json!([]), "the refused write left no task");

    let r = h
        .send("POST", "/api/v1/commands", "a-admin", Some(set))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let id: Uuid = r.body["id"].as_str().unwrap().parse().unwrap();
    // A command about something else on the same POP is not a TR-069 task of this CPE.
    let r = h
        .send(
            "POST",
            "/api/v1/commands",
            "a-admin",
            Some(json!({"name": "ping", "args": {"targets": ["192.0.2.1"]}, "pop_id": h.a.pop_id})),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);

    let r = h
        .get("a-viewer", &format!("/api/v1/devices/{dev}/tr069/tasks"))
        .await;
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", r.text);
    assert_eq!(items[0]["id"], id.to_string());
    assert_eq!(items[0]["status"], "queued");
    assert_eq!(items[0]["args"]["device_key"], KEY);
    assert_eq!(items[0]["output"], Value::Null);

    // The agent's result (the task's output) and the CPE's new value arrive together.
    let task = Uuid::now_v7();
    let mut written = result(now_ms(), "set", true, &[(SSID, "Casa-2")]);
    if let Record::Tr069Result(t) = &mut written {
        t.task_id = Some(task);
    }
    h.ingest(vec![
        written,
        Record::CommandResult(CommandResult {
            command_id: id,
            ts_ms: now_ms(),
            status: CommandStatus::Succeeded,
            output_json: json!({"device": KEY, "task_id": task, "outcome": "done",
                "values": [{"name": SSID, "value": "Casa-2", "type": "xsd:string"}]})
            .to_string(),
            error: None,
        }),
    ])
    .await;
    let r = h
        .get("a-viewer", &format!("/api/v1/devices/{dev}/tr069/tasks"))
        .await;
    let t = &r.body["items"][0];
    assert_eq!(t["status"], "succeeded", "{}", r.text);
    assert_eq!(t["output"]["values"][0]["value"], "Casa-2");
    let r = h
        .get(
            "a-viewer",
            &format!("/api/v1/devices/{dev}/tr069?q=WLANConfiguration.1.SSID"),
        )
        .await;
    assert_eq!(param(&r.body, SSID)["value"], "Casa-2");
    assert_eq!(
        param(&r.body, SSID)["writable"],
        true,
        "a successful write shows it writable"
    );
    assert_eq!(param(&r.body, SSID)["writable_source"], "set");
    h.cleanup().await;
}
