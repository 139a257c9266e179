//! `/metrics` of a real control plane process: after API calls, the request counters and latency histograms
//! are there per route template and status class, never per raw path; and an agent's stored batches show as
//! ingest lag.

#[path = "support/mod.rs"]
#[allow(dead_code)]
mod support;

#[path = "e2e/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::{Agent, Installation, bin, run_ok};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple 42";

/// One sample line of a Prometheus text exposition: name, labels, value.
#[derive(Debug)]
struct Line {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse(text: &str) -> Vec<Line> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (k, v) = p.split_once("=\"")?;
                    Some((k.to_owned(), v.trim_end_matches('"').to_owned()))
                })
                .collect();
            Some(Line {
                name: name.to_owned(),
                labels,
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// The value of `name` with exactly these labels, if any.
fn value(lines: &[Line], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    lines
        .iter()
        .find(|l| {
            l.name == name
                && l.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| l.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|l| l.value)
}

#[tokio::test]
async fn request_series_per_route_template_and_ingest_lag_are_scraped() {
    let redis =
        std::env::var("OCTOISP_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("octoisp-test-metrics-{:016x}", rand::random::<u64>());
    let extra = format!(
        "[queue]\nredis_url = {redis:?}\nprefix = \"{prefix}:q\"\n\
         [api]\nredis_url = {redis:?}\nredis_prefix = \"{prefix}:api\"\n\
         [auth]\njwt_secret = \"metrics-test-secret-0123456789abcdef0123456789\"\n"
    );
    let inst = Installation::start_with(&extra, "api,ingest,workers").await;
    run_ok(
        Command::new(bin("octoisp-controlplane"))
            .arg("--config")
            .arg(&inst.cp_config)
            .args(["user", "create", "--provider", "isp-a"])
            .args(["--email", "noc@a.example", "--name", "NOC", "--role", "NOC"])
            .env("OCTOISP_USER_PASSWORD", PASSWORD),
    );
    let mut agent = Agent::new(
        &inst.quic_addr,
        "[[monitors.generator]]\nname = \"load\"\nseries = 5\ninterval_ms = 20\ntotal = 200\n",
    );
    agent.enroll(&inst.quic_addr, &inst.token());
    agent.start();

    let base = format!("http://{}", inst.http_addr);
    let http = reqwest::Client::new();
    let started = Instant::now();
    let token = loop {
        let r = http
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"email": "noc@a.example", "password": PASSWORD}))
            .send()
            .await;
        if let Ok(r) = r
            && r.status() == 200
        {
            let body: Value = r.json().await.unwrap();
            break body["access_token"].as_str().unwrap().to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no login within 60 s\n{}",
            inst.cp_log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    // Three lists, two devices that do not exist (404), one request without credentials (401).
    for _ in 0..3 {
        let r = http
            .get(format!("{base}/api/v1/devices"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let missing = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()];
    for id in missing {
        let r = http
            .get(format!("{base}/api/v1/devices/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    let r = http
        .get(format!("{base}/api/v1/pops"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    inst.wait_for_samples(200, Duration::from_secs(60), &[&agent])
        .await;

    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines = parse(&text);
    let requests = "octoisp_http_requests_total";
    let get = |route: &str, status: &str| {
        value(
            &lines,
            requests,
            &[("method", "GET"), ("route", route), ("status", status)],
        )
    };
    assert_eq!(get("/api/v1/devices", "2xx"), Some(3.0), "{text}");
    assert_eq!(get("/api/v1/devices/{id}", "4xx"), Some(2.0), "{text}");
    assert_eq!(get("/api/v1/pops", "4xx"), Some(1.0), "{text}");
    assert!(
        value(
            &lines,
            requests,
            &[
                ("method", "POST"),
                ("route", "/api/v1/auth/login"),
                ("status", "2xx")
            ]
        ) == Some(1.0),
        "{text}"
    );
    // Bounded cardinality: no raw path in any label.
    for id in missing {
        assert!(
            !text.contains(&id.to_string()),
            "a raw path leaked:\n{text}"
        );
    }
    // Latency is a histogram with buckets, one observation per request.
    let hist = "octoisp_http_request_duration_seconds";
    let labels = [
        ("method", "GET"),
        ("route", "/api/v1/devices/{id}"),
        ("status", "4xx"),
    ];
    assert_eq!(
        value(&lines, &format!("{hist}_count"), &labels),
        Some(2.0),
        "{text}"
    );
    let mut inf = labels.to_vec();
    inf.push(("le", "+Inf"));
    assert_eq!(
        value(&lines, &format!("{hist}_bucket"), &inf),
        Some(2.0),
        "{text}"
    );
    // The agent's batches were stored: each one observed the age of its newest sample.
    let lag = value(&lines, "octoisp_ingest_lag_seconds_count", &[]).unwrap_or(0.0);
    assert!(lag >= 1.0, "no ingest lag observed:\n{text}");
    let mut inf = vec![("le", "+Inf")];
    assert_eq!(
        value(&lines, "octoisp_ingest_lag_seconds_bucket", &inf),
        Some(lag)
    );
    inf[0].1 = "86400";
    assert_eq!(
        value(&lines, "octoisp_ingest_lag_seconds_bucket", &inf),
        Some(lag),
        "fresh samples are less than a day old:\n{text}"
    );

    agent.stop();
    let mut conn = redis::Client::open(redis.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
    }
}
