//! The web console's server side: static serving of the built console (cache headers, SPA fallback, the API
//! untouched beside it), the dashboard summary, and the live event WebSocket's tenant isolation, over a real
//! PostgreSQL (LISTEN/NOTIFY) and a real TCP socket.

#[allow(dead_code)]
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use futures::{SinkExt, StreamExt};
use octoisp_controlplane::api::live::LiveHub;
use octoisp_controlplane::api::{self, ApiConfig, AppState};
use octoisp_controlplane::auth::Caller;
use octoisp_controlplane::{console, registry};
use serde_json::{Value, json};
use support::TestDb;
use support::fixtures::{Tenant, tenant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
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

const READER: &[&str] = &["devices:read", "pops:read", "agents:read"];

/// A built console in a temporary directory.
fn console_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("assets")).unwrap();
    std::fs::write(
        dir.path().join("index.html"),
        "<!doctype html><title>OctoISP</title>",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("sw.js"),
        "self.addEventListener('fetch', () => {});",
    )
    .unwrap();
    std::fs::write(dir.path().join("assets/index-Ab12.js"), "console.log(1)").unwrap();
    std::fs::write(dir.path().join("manifest.webmanifest"), "{}").unwrap();
    dir
}

struct Harness {
    db: TestDb,
    a: Tenant,
    b: Tenant,
    app: Router,
    shutdown: CancellationToken,
    _web: tempfile::TempDir,
}

async fn harness() -> Harness {
    let db = TestDb::new().await;
    let a = tenant(&db, "web-a").await;
    let b = tenant(&db, "web-b").await;
    let mut tokens = HashMap::new();
    tokens.insert("a".to_owned(), caller(Some(a.provider_id), READER));
    tokens.insert(
        "a-devices-only".to_owned(),
        caller(Some(a.provider_id), &["devices:read"]),
    );
    tokens.insert("b".to_owned(), caller(Some(b.provider_id), READER));
    tokens.insert("global".to_owned(), caller(None, &[]));
    let shutdown = CancellationToken::new();
    let mut config = ApiConfig::default();
    config.rate_limit.enabled = false;
    let state = AppState {
        config: Arc::new(config),
        live: LiveHub::new(shutdown.clone()),
        ..support::api::state(&db, tokens)
    };
    let web = console_dir();
    // The same composition as `serve`: the API, then the console at `/`.
    let app = api::router(state).merge(console::router(web.path()));
    Harness {
        db,
        a,
        b,
        app,
        shutdown,
        _web: web,
    }
}

async fn get(app: &Router, uri: &str, token: Option<&str>) -> (StatusCode, HeaderMap, String) {
    let mut req = Request::get(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn cache_control(h: &HeaderMap) -> &str {
    h.get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn the_console_is_served_with_cache_headers_and_spa_fallback_beside_the_api() {
    let h = harness().await;
    let app = &h.app;

    let (status, headers, body) = get(app, "/assets/index-Ab12.js", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "console.log(1)");
    assert_eq!(
        cache_control(&headers),
        "public, max-age=31536000, immutable"
    );
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );

    for path in ["/", "/index.html"] {
        let (status, headers, body) = get(app, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(body.contains("<title>OctoISP</title>"), "{path}");
        assert_eq!(cache_control(&headers), "no-cache", "{path}");
    }
    let (status, headers, _) = get(app, "/sw.js", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cache_control(&headers), "no-cache");
    let (_, headers, _) = get(app, "/manifest.webmanifest", None).await;
    assert_eq!(
        headers[header::CONTENT_TYPE].to_str().unwrap(),
        "application/manifest+json"
    );

    // Routes of the single-page app get index.html; a missing asset does not.
    for path in [
        "/devices",
        "/devices/0190c0de-0000-7000-8000-000000000000",
        "/audit?x=1",
    ] {
        let (status, headers, body) = get(app, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(body.contains("<title>OctoISP</title>"), "{path}");
        assert_eq!(cache_control(&headers), "no-cache", "{path}");
    }
    let (status, _, _) = get(app, "/assets/index-gone.js", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Nothing outside the directory can be named.
    let (status, _, body) = get(app, "/../../etc/passwd", None).await;
    assert!(!body.contains("root:"), "{status}");
    let (_, _, body) = get(app, "/assets/..%2f..%2fetc%2fpasswd", None).await;
    assert!(!body.contains("root:"));

    // The API is untouched: its routes, its JSON 404, its 401.
    let (status, _, body) = get(app, "/api/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("/api/v1/live"));
    let (status, _, body) = get(app, "/api/v1/no-such-thing", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"]["code"], "not_found");
    let (status, _, _) = get(app, "/api/v1/pops", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Writes to the console's paths are refused.
    let resp = app
        .clone()
        .oneshot(Request::post("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    h.shutdown.cancel();
    h.db.cleanup().await;
}

#[tokio::test]
async fn the_summary_counts_only_the_callers_objects_and_what_it_may_read() {
    let h = harness().await;
    for (i, seen_secs_ago) in [(1, 10), (2, 20), (3, 100_000)] {
        sqlx::query(
            "INSERT INTO devices (provider_id, pop_id, device_key, first_seen, last_seen) \
             VALUES ($1, $2, $3, now(), now() - make_interval(secs => $4))",
        )
        .bind(h.a.provider_id)
        .bind(h.a.pop_id)
        .bind(format!("dev-{i}"))
        .bind(seen_secs_ago as f64)
        .execute(&h.db.admin)
        .await
        .unwrap();
    }
    let (status, _, body) = get(&h.app, "/api/v1/summary", Some("a")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let s: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["devices"], json!({"total": 3, "online": 2, "offline": 1}));
    assert_eq!(s["pops"]["total"], 1);
    assert_eq!(s["agents"]["total"], 1);
    assert_eq!(s["agents"]["active"], 1);

    let (_, _, body) = get(&h.app, "/api/v1/summary", Some("b")).await;
    let s: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["devices"]["total"], 0, "B sees A's devices: {s}");

    let (_, _, body) = get(&h.app, "/api/v1/summary", Some("a-devices-only")).await;
    let s: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["devices"]["total"], 3);
    assert!(s["pops"].is_null() && s["agents"].is_null(), "{s}");

    let (status, _, _) = get(&h.app, "/api/v1/summary", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    h.shutdown.cancel();
    h.db.cleanup().await;
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

async fn connect(addr: SocketAddr) -> Ws {
    tokio_tungstenite::connect_async(format!("ws://{addr}/api/v1/live"))
        .await
        .expect("websocket handshake")
        .0
}

/// Next text message as JSON (pings skipped), or the close frame's code; panics after 10 s.
async fn next(ws: &mut Ws) -> Result<Value, Option<CloseCode>> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s");
        match msg {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(t.as_str()).unwrap()),
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Err(None),
        }
    }
}

async fn live_as(addr: SocketAddr, token: &str) -> Ws {
    let mut ws = connect(addr).await;
    ws.send(Message::Text(
        json!({"type": "auth", "token": token}).to_string().into(),
    ))
    .await
    .unwrap();
    assert_eq!(next(&mut ws).await.unwrap()["type"], "ready");
    ws
}

async fn notify(db: &TestDb, channel: &str, payload: &str) {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(&db.admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn live_events_reach_only_the_consoles_of_their_provider() {
    let h = harness().await;
    let addr = serve(h.app.clone()).await;
    let mut a = live_as(addr, "a").await;
    let mut b = live_as(addr, "b").await;
    let (pa, pb) = (h.a.provider_id, h.b.provider_id);

    // B's alert event, then A's: A's console gets only its own (the first thing it receives is A's marker).
    notify(&h.db, "octoisp_alert_events", &pb.to_string()).await;
    notify(
        &h.db,
        "octoisp_live",
        &json!({"provider_id": pa, "kind": "marker", "n": 1}).to_string(),
    )
    .await;
    let got = next(&mut a).await.unwrap();
    assert_eq!(
        got["event"]["kind"], "marker",
        "A received another provider's event: {got}"
    );
    assert_eq!(got["event"]["provider_id"], pa.to_string());
    // B got its alert event, and not A's marker.
    let got = next(&mut b).await.unwrap();
    assert_eq!(
        got,
        json!({"type": "event", "channel": "alerts", "event": null})
    );
    notify(&h.db, "octoisp_alert_events", &pa.to_string()).await;
    notify(
        &h.db,
        "octoisp_live",
        &json!({"provider_id": pb, "kind": "marker", "n": 2}).to_string(),
    )
    .await;
    let got = next(&mut b).await.unwrap();
    assert_eq!(got["event"]["n"], 2, "B received A's events: {got}");
    let got = next(&mut a).await.unwrap();
    assert_eq!(got["channel"], "alerts");

    // The ingest's own notification: an agent of A says hello.
    registry::touch_agent(&h.db.app, h.a.agent.agent_id, "pop-a-1", "1.2.3")
        .await
        .unwrap();
    let got = next(&mut a).await.unwrap();
    assert_eq!(got["event"]["kind"], "agent.connected");
    assert_eq!(got["event"]["agent_id"], h.a.agent.agent_id.to_string());
    notify(
        &h.db,
        "octoisp_live",
        &json!({"provider_id": pb, "kind": "marker", "n": 3}).to_string(),
    )
    .await;
    let got = next(&mut b).await.unwrap();
    assert_eq!(got["event"]["n"], 3, "B received A's agent event: {got}");
    h.shutdown.cancel();
    h.db.cleanup().await;
}

#[tokio::test]
async fn live_sockets_need_a_valid_token_sent_as_a_message() {
    let h = harness().await;
    let addr = serve(h.app.clone()).await;

    let mut ws = connect(addr).await;
    ws.send(Message::Text(
        json!({"type": "auth", "token": "forged"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    assert_eq!(next(&mut ws).await, Err(Some(CloseCode::Library(4401))));

    let mut ws = connect(addr).await;
    ws.send(Message::Text("{\"type\":\"subscribe\"}".into()))
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await, Err(Some(CloseCode::Library(4401))));

    // A Global Admin has no tenant to watch.
    let mut ws = connect(addr).await;
    ws.send(Message::Text(
        json!({"type": "auth", "token": "global"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    assert_eq!(next(&mut ws).await, Err(Some(CloseCode::Library(4403))));

    // A plain GET is told to upgrade.
    let (status, _, _) = get(&h.app, "/api/v1/live", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Shutdown closes the open sockets.
    let mut ws = live_as(addr, "a").await;
    h.shutdown.cancel();
    assert_eq!(next(&mut ws).await, Err(Some(CloseCode::Away)));
    h.db.cleanup().await;
}
