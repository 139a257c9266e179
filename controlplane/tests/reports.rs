//! Reports through the real router on a real PostgreSQL: the CSV rows are the seeded data, another tenant's rows
//! never appear, each kind needs its permission, spreadsheet formulas are defused, and the PDF opens in poppler
//! (`pdftoppm` renders page 1 with the chart drawn, `pdftotext` reads the table, accents included, with the
//! header repeated on every page). Needs poppler-utils (scripts/test.sh installs it).

#[allow(dead_code)]
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use chrono::{DateTime, Duration, DurationRound, Utc};
use octoisp_controlplane::api;
use octoisp_controlplane::auth::rbac;
use serde_json::Value;
use support::TestDb;
use support::api::caller;
use support::fixtures::{Tenant, tenant};
use tower::ServiceExt as _;
use uuid::Uuid;

const ALL: &[&str] = &["devices:read", "alerts:read", "metrics:read"];

struct Harness {
    router: Router,
    db: TestDb,
    a: Tenant,
    b: Tenant,
    /// Start of the seeded traffic and availability (a 5-minute boundary, 3 hours ago).
    t0: DateTime<Utc>,
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    bytes: Vec<u8>,
    text: String,
    body: Value,
}

impl Harness {
    async fn get(&self, token: &str, uri: &str) -> Resp {
        let mut req = Request::builder().method("GET").uri(uri);
        if !token.is_empty() {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let mut req = req.body(Body::empty()).unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 77], 40000))));
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
            .await
            .unwrap()
            .to_vec();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            bytes,
            text,
            body,
        }
    }

    /// `from`/`to` of the seeded window, for a query string.
    fn window(&self) -> String {
        let enc = |t: DateTime<Utc>| t.to_rfc3339().replace('+', "%2B");
        format!(
            "from={}&to={}",
            enc(self.t0),
            enc(self.t0 + Duration::hours(2))
        )
    }
}

async fn harness() -> Harness {
    let db = TestDb::new().await;
    let a = tenant(&db, "isp-a").await;
    let b = tenant(&db, "isp-b").await;
    let t0 = (Utc::now() - Duration::hours(3))
        .duration_trunc(Duration::minutes(5))
        .unwrap();
    seed_a(&db, &a, t0).await;
    seed_b(&db, &b, t0).await;
    let mut tokens = HashMap::new();
    tokens.insert("a-admin".to_owned(), caller(a.provider_id, ALL));
    tokens.insert("b-admin".to_owned(), caller(b.provider_id, ALL));
    tokens.insert(
        "a-viewer".to_owned(),
        caller(a.provider_id, &["devices:read", "pops:read"]),
    );
    tokens.insert("a-nobody".to_owned(), caller(a.provider_id, &[]));
    let state = support::api::state(&db, tokens);
    Harness {
        router: api::router(state),
        db,
        a,
        b,
        t0,
    }
}

async fn exec(db: &TestDb, sql: &str, binds: &[Uuid]) {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
    for b in binds {
        q = q.bind(*b);
    }
    q.execute(&db.admin).await.unwrap();
}

async fn device(
    db: &TestDb,
    t: &Tenant,
    key: &str,
    name: &str,
    customer: Option<Uuid>,
    last_seen_ago_secs: i64,
    first_seen: DateTime<Utc>,
) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO devices (provider_id, pop_id, customer_id, device_key, name, vendor, model, serial_number, \
             mgmt_ip, first_seen, last_seen) \
         VALUES ($1, $2, $3, $4, $5, 'Huawei', 'MA5800', 'SN-' || $4, '192.0.2.10', $6, now() - make_interval(secs => $7)) \
         RETURNING id",
    )
    .bind(t.provider_id)
    .bind(t.pop_id)
    .bind(customer)
    .bind(key)
    .bind(name)
    .bind(first_seen)
    .bind(last_seen_ago_secs as f64)
    .fetch_one(&db.admin)
    .await
    .unwrap()
}

/// A series of `device` with one 5-minute rollup row per value, from `t0` on (NaN: no row, a gap).
async fn series(
    db: &TestDb,
    t: &Tenant,
    local: i64,
    device: Uuid,
    metric: &str,
    t0: DateTime<Utc>,
    values: &[f64],
) {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO series (provider_id, agent_id, local_id, device_id, metric, kind) \
         VALUES ($1, $2, $3, $4, $5, 'gauge') RETURNING id",
    )
    .bind(t.provider_id)
    .bind(t.agent.agent_id)
    .bind(local)
    .bind(device)
    .bind(metric)
    .fetch_one(&db.admin)
    .await
    .unwrap();
    for (i, v) in values.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        let bucket = t0 + Duration::minutes(5 * i as i64);
        sqlx::query(
            "INSERT INTO rollup_5m (provider_id, series_id, bucket, min, max, sum, count, last, last_ts, p95) \
             VALUES ($1, $2, $3, $4, $4, $4 * 2, 2, $4, $3, $4)",
        )
        .bind(t.provider_id)
        .bind(id)
        .bind(bucket)
        .bind(*v)
        .execute(&db.admin)
        .await
        .unwrap();
    }
}

/// Provider A ("Provedor São Paulo"), POP Centro:
/// - "OLT Centro": online, 12 buckets of traffic (in 1..12 Mbit/s, out 2 Mbit/s) in the first hour of the window;
/// - "CPE São João" of customer "Padaria Conceição": offline, no samples;
/// - a device named like a spreadsheet formula;
/// - 60 ONUs in POP "Bairro Alto" (enough rows for a PDF of several pages);
/// - an alert "Perda de sinal" on the OLT, fired at t0 + 10 min, acknowledged by "Ana Operadora", resolved 30
///   minutes later.
async fn seed_a(db: &TestDb, a: &Tenant, t0: DateTime<Utc>) {
    let p = a.provider_id;
    exec(
        db,
        "UPDATE providers SET name = 'Provedor São Paulo' WHERE id = $1",
        &[p],
    )
    .await;
    sqlx::query("SELECT octoisp_rollup_partitions('5m', ARRAY[$1::timestamptz, $2::timestamptz])")
        .bind(t0)
        .bind(t0 + Duration::hours(2))
        .execute(&db.admin)
        .await
        .unwrap();
    let customer: Uuid = sqlx::query_scalar(
        "INSERT INTO customers (provider_id, pop_id, name) VALUES ($1, $2, 'Padaria Conceição') RETURNING id",
    )
    .bind(p)
    .bind(a.pop_id)
    .fetch_one(&db.admin)
    .await
    .unwrap();
    let long_ago = t0 - Duration::days(1);
    let olt = device(db, a, "olt-1", "OLT Centro", None, 0, long_ago).await;
    device(
        db,
        a,
        "cpe-1",
        "CPE São João",
        Some(customer),
        7200,
        long_ago,
    )
    .await;
    device(
        db,
        a,
        "evil",
        "=HYPERLINK(\"http://x.example\")",
        None,
        0,
        long_ago,
    )
    .await;
    let ins: Vec<f64> = (1..=12).map(|i| f64::from(i) * 1e6).collect();
    series(db, a, 1, olt, "if.in_bps", t0, &ins).await;
    series(db, a, 2, olt, "if.out_bps", t0, &[2e6; 12]).await;
    let bairro: Uuid = sqlx::query_scalar(
        "INSERT INTO pops (provider_id, slug, name) VALUES ($1, 'bairro-alto', 'Bairro Alto') RETURNING id",
    )
    .bind(p)
    .fetch_one(&db.admin)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO devices (provider_id, pop_id, device_key, name, last_seen) \
         SELECT $1, $2, 'onu-' || i, 'ONU ' || lpad(i::text, 3, '0'), now() FROM generate_series(1, 60) AS i",
    )
    .bind(p)
    .bind(bairro)
    .execute(&db.admin)
    .await
    .unwrap();
    // The alert, its events and the user who acknowledged it.
    let user: Uuid = sqlx::query_scalar(
        "INSERT INTO users (provider_id, email, name, role_id) VALUES ($1, 'ana@isp-a.example', 'Ana Operadora', $2) \
         RETURNING id",
    )
    .bind(p)
    .bind(rbac::ROLE_VIEWER)
    .fetch_one(&db.admin)
    .await
    .unwrap();
    let rule: Uuid = sqlx::query_scalar(
        "INSERT INTO alert_rules (provider_id, rule_key, name, metric, kind, absence_secs, severity) \
         VALUES ($1, 'offline', 'Perda de sinal', 'any', 'offline', 300, 'critical') RETURNING id",
    )
    .bind(p)
    .fetch_one(&db.admin)
    .await
    .unwrap();
    let fired = t0 + Duration::minutes(10);
    let alert: Uuid = sqlx::query_scalar(
        "INSERT INTO alerts (provider_id, rule_id, target_key, target, device_id, pop_id, state, severity, \
             started_at, changed_ts, resolved_at) \
         VALUES ($1, $2, 'device:olt', 'OLT Centro', $3, $4, 'resolved', 'critical', $5, $5, $5) RETURNING id",
    )
    .bind(p)
    .bind(rule)
    .bind(olt)
    .bind(a.pop_id)
    .bind(fired)
    .fetch_one(&db.admin)
    .await
    .unwrap();
    let events = [
        ("firing", fired, serde_json::json!({})),
        (
            "acknowledged",
            fired + Duration::minutes(5),
            serde_json::json!({ "by_user": user }),
        ),
        (
            "resolved",
            fired + Duration::minutes(30),
            serde_json::json!({}),
        ),
    ];
    for (kind, at, facts) in events {
        sqlx::query(
            "INSERT INTO alert_events (provider_id, alert_id, rule_id, kind, severity, device_id, pop_id, group_key, \
                 rule_name, target, facts, event_ts) \
             VALUES ($1, $2, $3, $4, 'critical', $5, $6, 'alert:' || $2, 'Perda de sinal', 'OLT Centro', $7, $8)",
        )
        .bind(p)
        .bind(alert)
        .bind(rule)
        .bind(kind)
        .bind(olt)
        .bind(a.pop_id)
        .bind(facts)
        .bind(at)
        .execute(&db.admin)
        .await
        .unwrap();
    }
}

/// Provider B: one device, traffic and an alert of its own, none of which A may see.
async fn seed_b(db: &TestDb, b: &Tenant, t0: DateTime<Utc>) {
    let dev = device(
        db,
        b,
        "b-1",
        "Roteador Secreto B",
        None,
        0,
        t0 - Duration::days(1),
    )
    .await;
    series(db, b, 1, dev, "if.in_bps", t0, &[9e9; 12]).await;
    let rule: Uuid = sqlx::query_scalar(
        "INSERT INTO alert_rules (provider_id, rule_key, name, metric, kind, op, threshold) \
         VALUES ($1, 'cpu', 'Regra Secreta B', 'cpu', 'threshold', '>', 90) RETURNING id",
    )
    .bind(b.provider_id)
    .fetch_one(&db.admin)
    .await
    .unwrap();
    let alert: Uuid = sqlx::query_scalar(
        "INSERT INTO alerts (provider_id, rule_id, target_key, target, device_id, state, severity, started_at, changed_ts) \
         VALUES ($1, $2, 'device:b', 'Roteador Secreto B', $3, 'firing', 'warning', $4, $4) RETURNING id",
    )
    .bind(b.provider_id)
    .bind(rule)
    .bind(dev)
    .bind(t0 + Duration::minutes(20))
    .fetch_one(&db.admin)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO alert_events (provider_id, alert_id, rule_id, kind, severity, device_id, group_key, rule_name, \
             target, event_ts) \
         VALUES ($1, $2, $3, 'firing', 'warning', $4, 'alert:' || $2, 'Regra Secreta B', 'Roteador Secreto B', $5)",
    )
    .bind(b.provider_id)
    .bind(alert)
    .bind(rule)
    .bind(dev)
    .bind(t0 + Duration::minutes(20))
    .execute(&db.admin)
    .await
    .unwrap();
}

/// The CSV without its BOM, split into rows of fields (the seeded data has no quoted separators except where a
/// test looks at the raw text).
fn csv_rows(r: &Resp, sep: char) -> Vec<Vec<String>> {
    assert!(
        r.bytes.starts_with(b"\xef\xbb\xbf"),
        "CSV without a UTF-8 BOM"
    );
    r.text
        .trim_start_matches('\u{feff}')
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| l.split(sep).map(str::to_owned).collect())
        .collect()
}

fn row<'a>(rows: &'a [Vec<String>], first: &str) -> &'a Vec<String> {
    rows.iter()
        .find(|r| r[0] == first)
        .unwrap_or_else(|| panic!("no row {first} in {rows:?}"))
}

#[tokio::test]
async fn inventory_csv_is_the_tenants_devices_localized_and_safe_for_excel() {
    let h = harness().await;
    let r = h
        .get("a-admin", "/api/v1/reports/inventory?format=csv&lang=pt-BR")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    let disposition = r.headers[header::CONTENT_DISPOSITION].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"octoisp-inventory-"),
        "{disposition}"
    );
    let rows = csv_rows(&r, ';');
    assert_eq!(
        rows[0],
        [
            "Dispositivo",
            "POP",
            "Cliente",
            "Fabricante / modelo",
            "Nº de série",
            "IP de gerência",
            "Situação",
            "Visto por último"
        ]
    );
    assert_eq!(
        rows.len(),
        1 + 3 + 60,
        "header, three devices in Centro, 60 ONUs"
    );
    let cpe = row(&rows, "CPE São João");
    assert_eq!(cpe[1], "Centro");
    assert_eq!(cpe[2], "Padaria Conceição");
    assert_eq!(cpe[3], "Huawei MA5800");
    assert_eq!(cpe[4], "SN-cpe-1");
    assert_eq!(cpe[5], "192.0.2.10");
    assert_eq!(cpe[6], "offline");
    assert!(cpe[7].contains('/'), "pt-BR date: {}", cpe[7]);
    assert_eq!(row(&rows, "OLT Centro")[6], "online");
    // The formula is text: quoted, prefixed with an apostrophe, quotes doubled.
    assert!(
        r.text.contains("\"'=HYPERLINK(\"\"http://x.example\"\")\""),
        "formula not defused: {}",
        r.text
    );
    assert!(!r.text.contains("Secreto"), "B's device in A's report");
    // English: comma separated, ISO dates.
    let en = h.get("a-admin", "/api/v1/reports/inventory?lang=en").await;
    let en_rows = csv_rows(&en, ',');
    assert_eq!(en_rows[0][0], "Device");
    let cpe = row(&en_rows, "CPE São João");
    assert!(cpe[7].starts_with("20"), "ISO date: {}", cpe[7]);
    // B sees its own device and none of A's.
    let b = h.get("b-admin", "/api/v1/reports/inventory").await;
    assert_eq!(b.status, StatusCode::OK);
    assert!(b.text.contains("Roteador Secreto B"));
    for name in ["OLT Centro", "São João", "ONU 001", "Padaria"] {
        assert!(!b.text.contains(name), "A's {name} in B's report");
    }
    h.db.cleanup().await;
}

#[tokio::test]
async fn traffic_csv_has_average_p95_and_peak_from_the_rollups() {
    let h = harness().await;
    let uri = format!("/api/v1/reports/traffic?lang=en&{}", h.window());
    let r = h.get("a-admin", &uri).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let rows = csv_rows(&r, ',');
    assert_eq!(
        rows[0],
        [
            "POP", "In avg", "In p95", "In max", "Out avg", "Out p95", "Out max"
        ]
    );
    // In: 1..12 Mbit/s over 12 five-minute buckets; out: 2 Mbit/s throughout. Quoted: "6.50 Mbit/s" has no comma.
    assert_eq!(
        rows[1],
        [
            "Centro",
            "6.50 Mbit/s",
            "12.00 Mbit/s",
            "12.00 Mbit/s",
            "2.00 Mbit/s",
            "2.00 Mbit/s",
            "2.00 Mbit/s"
        ]
    );
    assert_eq!(rows.len(), 2, "only POPs with traffic: {rows:?}");
    let b = h.get("b-admin", &uri).await;
    assert!(b.text.contains("9.00 Gbit/s"), "{}", b.text);
    assert!(
        !b.text.contains("Mbit/s"),
        "A's traffic in B's report: {}",
        b.text
    );
    // Per customer: A's only customer has no traffic.
    let r = h.get("a-admin", &format!("{uri}&by=customer")).await;
    assert_eq!(rows_len(&r), 1, "{}", r.text);
    h.db.cleanup().await;
}

fn rows_len(r: &Resp) -> usize {
    r.text
        .trim_start_matches('\u{feff}')
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .count()
}

#[tokio::test]
async fn alerts_and_availability_csv() {
    let h = harness().await;
    let r = h
        .get(
            "a-admin",
            &format!("/api/v1/reports/alerts?lang=pt-BR&{}", h.window()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let rows = csv_rows(&r, ';');
    assert_eq!(rows.len(), 2, "{rows:?}");
    let a = &rows[1];
    assert_eq!(&a[0..3], ["Perda de sinal", "OLT Centro", "crítico"]);
    assert_eq!(a[5], "00:30:00");
    assert_eq!(a[6], "Ana Operadora");
    assert!(!r.text.contains("Secreta"), "B's alert in A's report");
    // Availability: the OLT sent samples in 12 of the 24 intervals of the window, the CPE in none.
    let r = h
        .get(
            "a-admin",
            &format!("/api/v1/reports/availability?lang=en&{}", h.window()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let rows = csv_rows(&r, ',');
    let olt = row(&rows, "OLT Centro");
    assert_eq!(&olt[3..], ["12", "24", "50.00 %", "01:00:00"]);
    let cpe = row(&rows, "CPE São João");
    assert_eq!(&cpe[3..], ["0", "24", "0.00 %", "02:00:00"]);
    assert!(!r.text.contains("Secreto"));
    h.db.cleanup().await;
}

#[tokio::test]
async fn each_kind_needs_its_permission() {
    let h = harness().await;
    assert_eq!(
        h.get("a-viewer", "/api/v1/reports/inventory").await.status,
        StatusCode::OK
    );
    for kind in ["alerts", "traffic", "availability"] {
        let r = h
            .get("a-viewer", &format!("/api/v1/reports/{kind}?format=pdf"))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{kind}: {}", r.text);
        assert_eq!(r.body["error"]["code"], "forbidden");
    }
    let r = h.get("a-nobody", "/api/v1/reports/inventory").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        h.get("", "/api/v1/reports/inventory").await.status,
        StatusCode::UNAUTHORIZED
    );
    h.db.cleanup().await;
}

#[tokio::test]
async fn bad_parameters_get_a_clear_400() {
    let h = harness().await;
    let cases = [
        ("/api/v1/reports/billing", "unknown report `billing`"),
        (
            "/api/v1/reports/traffic?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
            "`from` must be before `to`",
        ),
        (
            "/api/v1/reports/alerts?from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            "at most 400 days",
        ),
        (
            "/api/v1/reports/inventory?format=xlsx",
            "format must be csv or pdf",
        ),
        (
            "/api/v1/reports/inventory?lang=fr",
            "lang must be pt-BR or en",
        ),
        ("/api/v1/reports/alerts?by=customer", "traffic report only"),
        ("/api/v1/reports/inventory?from=yesterday", "from"),
    ];
    for (uri, message) in cases {
        let r = h.get("a-admin", uri).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}: {}", r.text);
        assert_eq!(r.body["error"]["code"], "bad_request", "{uri}");
        let m = r.body["error"]["message"].as_str().unwrap_or_default();
        assert!(m.contains(message), "{uri}: {m}");
    }
    // A's own POP narrows the report (and says so); another tenant's POP is not found.
    let r = h
        .get(
            "a-admin",
            &format!("/api/v1/reports/inventory?pop_id={}", h.a.pop_id),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        r.text.contains("OLT Centro") && !r.text.contains("ONU 001"),
        "{}",
        r.text
    );
    // Another tenant's POP is not found.
    let r = h
        .get(
            "a-admin",
            &format!("/api/v1/reports/inventory?pop_id={}", h.b.pop_id),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    h.db.cleanup().await;
}

/// Runs a poppler tool; panics with its stderr when it fails.
fn poppler(tool: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} (poppler-utils) not runnable: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[tokio::test]
async fn the_pdf_renders_with_its_chart_and_its_table() {
    let h = harness().await;
    let dir = tempfile::tempdir().unwrap();
    // Traffic: one table row and a line chart.
    let r = h
        .get(
            "a-admin",
            &format!(
                "/api/v1/reports/traffic?format=pdf&lang=pt-BR&{}",
                h.window()
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/pdf");
    assert!(r.bytes.starts_with(b"%PDF-"));
    let traffic = dir.path().join("traffic.pdf");
    std::fs::write(&traffic, &r.bytes).unwrap();
    let traffic = traffic.to_str().unwrap();
    let png = dir.path().join("page");
    poppler(
        "pdftoppm",
        &[
            "-png",
            "-r",
            "50",
            "-f",
            "1",
            "-l",
            "1",
            "-singlefile",
            traffic,
            png.to_str().unwrap(),
        ],
    );
    let png = std::fs::read(dir.path().join("page.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "pdftoppm wrote no PNG");
    // The same page as a PPM (pixels readable without a PNG decoder): the chart band has coloured lines.
    let ppm = poppler("pdftoppm", &["-r", "50", "-f", "1", "-l", "1", traffic]);
    let (w, h_px, pixels) = parse_ppm(&ppm);
    assert!(w > 500 && w > h_px, "A4 landscape at 50 dpi: {w}x{h_px}");
    let chart_band =
        |x: usize, y: usize| x > 60 && x < 560 && y > h_px * 25 / 100 && y < h_px * 60 / 100;
    let coloured = pixels
        .chunks(3)
        .enumerate()
        .filter(|(i, _)| chart_band(i % w, i / w))
        .filter(|(_, p)| {
            let (r, g, b) = (i32::from(p[0]), i32::from(p[1]), i32::from(p[2]));
            (b - r > 60) || (g - r > 50 && g - b > 20)
        })
        .count();
    assert!(
        coloured > 200,
        "only {coloured} coloured pixels in the chart area: no lines drawn"
    );
    let text = String::from_utf8(poppler("pdftotext", &["-layout", traffic, "-"])).unwrap();
    for s in [
        "Tráfego por POP",
        "Provedor São Paulo",
        "Centro",
        "6,50 Mbit/s",
        "12,00 Mbit/s",
        "Página 1 de 1",
    ] {
        assert!(text.contains(s), "`{s}` missing from the PDF text:\n{text}");
    }
    // Inventory: 63 rows over several pages, the header on each, accents intact.
    let r = h
        .get("a-admin", "/api/v1/reports/inventory?format=pdf")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let inventory = dir.path().join("inventory.pdf");
    std::fs::write(&inventory, &r.bytes).unwrap();
    let inventory = inventory.to_str().unwrap();
    let text = String::from_utf8(poppler("pdftotext", &["-layout", inventory, "-"])).unwrap();
    let pages: Vec<&str> = text
        .split('\u{c}')
        .filter(|p| !p.trim().is_empty())
        .collect();
    assert!(pages.len() >= 3, "{} pages for 63 rows", pages.len());
    for (i, page) in pages.iter().enumerate() {
        assert!(
            page.contains("Dispositivo") && page.contains("Visto por último"),
            "page {} has no header",
            i + 1
        );
        assert!(
            page.contains(&format!("Página {} de {}", i + 1, pages.len())),
            "page {} footer",
            i + 1
        );
    }
    for s in [
        "CPE São João",
        "Padaria Conceição",
        "ONU 001",
        "ONU 060",
        "Huawei MA5800",
        "=HYPERLINK",
        "offline",
    ] {
        assert!(
            text.contains(s),
            "`{s}` missing from the inventory PDF:\n{text}"
        );
    }
    assert!(!text.contains("Secreto"));
    h.db.cleanup().await;
}

/// Width, height and RGB bytes of a binary PPM (P6, maxval 255).
fn parse_ppm(ppm: &[u8]) -> (usize, usize, &[u8]) {
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while ppm[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while !ppm[i].is_ascii_whitespace() {
            i += 1;
        }
        fields.push(std::str::from_utf8(&ppm[start..i]).unwrap().to_owned());
    }
    assert_eq!(fields[0], "P6");
    let (w, h): (usize, usize) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    let data = &ppm[i + 1..];
    assert_eq!(data.len(), w * h * 3);
    (w, h, data)
}

/// Benchmark, not a test (docs/BENCHMARKS.md): a 10,000-device inventory PDF and a 30-day traffic PDF over 20
/// POPs × 5 interfaces (200 series, 1.7 million 5-minute rollup rows). Prints the time of each download
/// (query + render through the router) and the file sizes. Run with
/// `cargo nextest run -p octoisp-controlplane --test reports --run-ignored only --no-capture bench_`.
#[tokio::test]
#[ignore = "benchmark: run on demand"]
async fn bench_large_reports() {
    let h = harness().await;
    let p = h.a.provider_id;
    let end = Utc::now().duration_trunc(Duration::minutes(5)).unwrap() - Duration::minutes(10);
    let start = end - Duration::days(30);
    sqlx::query(
        "INSERT INTO pops (provider_id, slug, name) SELECT $1, 'pop-' || i, 'POP ' || i FROM generate_series(1, 20) i",
    )
    .bind(p)
    .execute(&h.db.admin)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO devices (provider_id, pop_id, device_key, name, vendor, model, serial_number, mgmt_ip, last_seen) \
         SELECT $1, pops.id, 'cpe-' || i, 'Cliente São José ' || i, 'Huawei', 'HG8245', 'SN' || i, \
                ('10.' || (i / 65536) || '.' || (i / 256 % 256) || '.' || (i % 256))::inet, now() - (i % 7) * interval '1 hour' \
         FROM generate_series(1, 10000) i \
         JOIN LATERAL (SELECT id FROM pops WHERE provider_id = $1 AND slug = 'pop-' || (1 + i % 20)) pops ON true",
    )
    .bind(p)
    .execute(&h.db.admin)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO series (provider_id, agent_id, local_id, device_id, metric, kind) \
         SELECT $1, $2, 1000 + row_number() OVER (), d.id, m, 'gauge' \
         FROM (SELECT DISTINCT ON (pop_id, k) id, pop_id FROM devices, generate_series(1, 5) k \
               WHERE provider_id = $1 AND device_key LIKE 'cpe-%' ORDER BY pop_id, k, id) d, \
              unnest(ARRAY['if.in_bps', 'if.out_bps']) m",
    )
    .bind(p)
    .bind(h.a.agent.agent_id)
    .execute(&h.db.admin)
    .await
    .unwrap();
    sqlx::query("SELECT octoisp_rollup_partitions('5m', ARRAY(SELECT generate_series($1::timestamptz, $2, '1 day')))")
        .bind(start)
        .bind(end)
        .execute(&h.db.admin)
        .await
        .unwrap();
    let t = std::time::Instant::now();
    let rows = sqlx::query(
        "INSERT INTO rollup_5m (provider_id, series_id, bucket, min, max, sum, count, last, last_ts, p95) \
         SELECT $1, s.id, b, v, v, v * 10, 10, v, b, v FROM series s, generate_series($2::timestamptz, $3 - interval '5 minutes', \
                interval '5 minutes') b, LATERAL (SELECT 1e8 * (1.5 + sin(extract(epoch FROM b) / 13751.0 + s.id)) AS v) x \
         WHERE s.provider_id = $1 AND s.local_id >= 1000",
    )
    .bind(p)
    .bind(start)
    .bind(end)
    .execute(&h.db.admin)
    .await
    .unwrap()
    .rows_affected();
    // The hourly rollups the rollup job would have made from them (the chart of a 30-day report reads those).
    sqlx::query("SELECT octoisp_rollup_partitions('1h', ARRAY(SELECT generate_series($1::timestamptz, $2, '1 day')))")
        .bind(start)
        .bind(end)
        .execute(&h.db.admin)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO rollup_1h (provider_id, series_id, bucket, min, max, sum, count, last, last_ts, p95) \
         SELECT provider_id, series_id, date_trunc('hour', bucket), min(min), max(max), sum(sum), sum(count), \
                max(last), max(last_ts), max(p95) \
         FROM rollup_5m WHERE provider_id = $1 AND bucket >= $2 GROUP BY 1, 2, 3",
    )
    .bind(p)
    .bind(start)
    .execute(&h.db.admin)
    .await
    .unwrap();
    println!(
        "seeded {rows} 5-minute rollup rows (and their hours) in {:?}",
        t.elapsed()
    );
    sqlx::query("ANALYZE").execute(&h.db.admin).await.unwrap();
    let enc = |t: DateTime<Utc>| t.to_rfc3339().replace('+', "%2B");
    let cases = [
        (
            "inventory PDF, 10,000 devices".to_owned(),
            "/api/v1/reports/inventory?format=pdf".to_owned(),
        ),
        (
            "inventory CSV, 10,000 devices".to_owned(),
            "/api/v1/reports/inventory?format=csv".to_owned(),
        ),
        (
            "traffic PDF, 30 days, 20 POPs, 200 series".to_owned(),
            format!(
                "/api/v1/reports/traffic?format=pdf&from={}&to={}",
                enc(start),
                enc(end)
            ),
        ),
    ];
    for (name, uri) in cases {
        for run in 1..=3 {
            let t = std::time::Instant::now();
            let r = h.get("a-admin", &uri).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            println!(
                "{name}: run {run}: {:?}, {} bytes",
                t.elapsed(),
                r.bytes.len()
            );
        }
    }
    h.db.cleanup().await;
}
