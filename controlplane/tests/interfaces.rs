//! Interface monitoring per POP (`GET /api/v1/pops/{id}/interfaces`) over a real PostgreSQL: interfaces of the
//! POP's devices stored through the real ingest path, their current values, the sorts, keyset pages that add up
//! to the whole list, stale interfaces last, tenant isolation and permissions.

#[allow(dead_code)]
mod support;

use std::collections::HashMap;

use axum::http::StatusCode;
use octoisp_controlplane::ingest::store::{Store, StoreOutcome};
use octoisp_shared::{MetricKind, Sample, SeriesDef};
use serde_json::Value;
use support::TestDb;
use support::api::{caller, get, router};
use support::fixtures::{self, Tenant, now_ms, tenant};

/// The series of one interface: (metric, value) pairs, stored `age_ms` ago.
struct If {
    device: &'static str,
    index: u32,
    name: &'static str,
    values: &'static [(&'static str, f64)],
    age_ms: i64,
}

const IFS: &[If] = &[
    // sw-1 ge-0/0/1: 600 Mbit/s in, 200 out of 1 Gbit/s, up, some errors.
    If {
        device: "sw-1",
        index: 1,
        name: "ge-0/0/1",
        values: &[
            ("if.in_bps", 600e6),
            ("if.out_bps", 200e6),
            ("if.speed_bps", 1e9),
            ("if.in_errors_per_s", 2.5),
            ("if.out_errors_per_s", 0.5),
            ("if.oper_status", 1.0),
            ("if.admin_status", 1.0),
        ],
        age_ms: 30_000,
    },
    // sw-1 ge-0/0/2: 50 Mbit/s in, 950 out of 1 Gbit/s (the busiest in utilisation), no errors.
    If {
        device: "sw-1",
        index: 2,
        name: "ge-0/0/2",
        values: &[
            ("if.in_bps", 50e6),
            ("if.out_bps", 950e6),
            ("if.speed_bps", 1e9),
            ("if.in_errors_per_s", 0.0),
            ("if.out_errors_per_s", 0.0),
            ("if.oper_status", 1.0),
        ],
        age_ms: 45_000,
    },
    // olt-1 uplink: 3 Gbit/s in, 1 out of 10 Gbit/s: the busiest in traffic; 40 errors/s.
    If {
        device: "olt-1",
        index: 17,
        name: "xe-1/1",
        values: &[
            ("if.in_bps", 3e9),
            ("if.out_bps", 1e9),
            ("if.speed_bps", 10e9),
            ("if.in_errors_per_s", 40.0),
            ("if.oper_status", 1.0),
        ],
        age_ms: 20_000,
    },
    // sw-1 ge-0/0/3: down, no traffic.
    If {
        device: "sw-1",
        index: 3,
        name: "ge-0/0/3",
        values: &[
            ("if.in_bps", 0.0),
            ("if.out_bps", 0.0),
            ("if.speed_bps", 1e9),
            ("if.oper_status", 2.0),
            ("if.admin_status", 1.0),
        ],
        age_ms: 10_000,
    },
    // olt-1 pon 0/2: last heard of an hour ago: listed, with no current values.
    If {
        device: "olt-1",
        index: 18,
        name: "pon-0/2",
        values: &[("if.in_bps", 7e9), ("if.out_bps", 7e9)],
        age_ms: 3_600_000,
    },
];

/// Stores the interfaces of [`IFS`] through the real ingest path, plus an older, larger sample on the busiest
/// interface (the newest must win) and a ping series without `ifIndex` (not an interface).
async fn seed(db: &TestDb, t: &Tenant) {
    let mut defs = Vec::new();
    let mut samples = Vec::new();
    let now = now_ms();
    for i in IFS {
        for (metric, value) in i.values {
            let id = defs.len() as u64;
            defs.push(SeriesDef {
                id,
                device_key: i.device.to_owned(),
                metric: (*metric).to_owned(),
                labels: vec![
                    ("ifIndex".to_owned(), i.index.to_string()),
                    ("ifName".to_owned(), i.name.to_owned()),
                    ("ifAlias".to_owned(), format!("to {}", i.name)),
                ],
                kind: MetricKind::Gauge,
            });
            samples.push(Sample {
                series: id,
                ts_ms: now - i.age_ms,
                value: *value,
            });
            if i.index == 17 && *metric == "if.in_bps" {
                samples.push(Sample {
                    series: id,
                    ts_ms: now - i.age_ms - 60_000,
                    value: 9e9,
                });
            }
        }
    }
    let ping = defs.len() as u64;
    defs.push(fixtures::def(ping, "sw-1", "ping.rtt_avg_ms"));
    samples.push(Sample {
        series: ping,
        ts_ms: now - 5_000,
        value: 1.2,
    });
    let store = Store::new(db.app.clone());
    let batch = fixtures::batch(1, defs, &samples, Vec::new());
    let outcome = store.store_batch(&t.agent, &batch, &samples).await.unwrap();
    assert!(
        matches!(outcome, StoreOutcome::Stored { .. }),
        "{outcome:?}"
    );
}

fn names(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["if_name"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// Every page of `uri` (with `limit`), following the cursors.
async fn all_pages(r: &axum::Router, token: &str, uri: &str, limit: u32) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..20 {
        let sep = if uri.contains('?') { '&' } else { '?' };
        let mut u = format!("{uri}{sep}limit={limit}");
        if let Some(c) = &cursor {
            u.push_str(&format!("&cursor={c}"));
        }
        let (st, body) = get(r, token, &u).await;
        assert_eq!(st, StatusCode::OK, "{u}: {body}");
        assert!(body["items"].as_array().unwrap().len() <= limit as usize);
        out.extend(names(&body));
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
    panic!("more than 20 pages");
}

#[tokio::test]
async fn a_pops_interfaces_are_listed_busiest_first_with_their_current_values() {
    let db = TestDb::new().await;
    let a = tenant(&db, "isp-a").await;
    let b = tenant(&db, "isp-b").await;
    seed(&db, &a).await;
    seed(&db, &b).await;
    let mut tokens = HashMap::new();
    let read = ["metrics:read", "devices:read"];
    tokens.insert("a".to_owned(), caller(a.provider_id, &read));
    tokens.insert("b".to_owned(), caller(b.provider_id, &read));
    tokens.insert(
        "a-nometrics".to_owned(),
        caller(a.provider_id, &["devices:read"]),
    );
    let r = router(&db, tokens);
    let base = format!("/api/v1/pops/{}/interfaces", a.pop_id);

    // Busiest first: in + out, the newest sample of each series (9 Gbit/s a minute earlier does not count); the
    // interface heard of an hour ago last, with no values; the ping series is not an interface.
    let (st, body) = get(&r, "a", &base).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        names(&body),
        ["xe-1/1", "ge-0/0/2", "ge-0/0/1", "ge-0/0/3", "pon-0/2"]
    );
    assert!(body["next_cursor"].is_null());
    let top = &body["items"][0];
    assert_eq!(top["device_key"], "olt-1");
    assert_eq!(top["if_index"], "17");
    assert_eq!(top["if_alias"], "to xe-1/1");
    assert_eq!(top["in_bps"], 3e9);
    assert_eq!(top["out_bps"], 1e9);
    assert_eq!(top["utilisation"], 0.3);
    assert_eq!(top["in_errors_per_s"], 40.0);
    assert!(top["out_errors_per_s"].is_null());
    assert_eq!(top["oper_status"], 1);
    assert!(top["updated_at"].is_string());
    let down = &body["items"][3];
    assert_eq!(down["oper_status"], 2);
    assert_eq!(down["admin_status"], 1);
    assert_eq!(down["utilisation"], 0.0);
    let stale = &body["items"][4];
    assert!(
        stale["in_bps"].is_null() && stale["updated_at"].is_null(),
        "{stale}"
    );

    // The other sorts.
    let (_, body) = get(&r, "a", &format!("{base}?sort=utilisation")).await;
    assert_eq!(
        names(&body),
        ["ge-0/0/2", "ge-0/0/1", "xe-1/1", "ge-0/0/3", "pon-0/2"]
    );
    assert_eq!(body["items"][0]["utilisation"], 0.95);
    let (_, body) = get(&r, "a", &format!("{base}?sort=errors")).await;
    assert_eq!(names(&body)[..3], ["xe-1/1", "ge-0/0/1", "ge-0/0/2"]);
    let (_, body) = get(&r, "a", &format!("{base}?sort=out")).await;
    assert_eq!(names(&body)[..2], ["xe-1/1", "ge-0/0/2"]);
    let (_, body) = get(&r, "a", &format!("{base}?sort=name")).await;
    assert_eq!(
        names(&body),
        ["pon-0/2", "xe-1/1", "ge-0/0/1", "ge-0/0/2", "ge-0/0/3"]
    );

    // Pages of two add up to the whole list, in the same order, for every sort.
    for sort in ["busiest", "utilisation", "errors", "name"] {
        let uri = format!("{base}?sort={sort}");
        let (_, whole) = get(&r, "a", &uri).await;
        assert_eq!(all_pages(&r, "a", &uri, 2).await, names(&whole), "{sort}");
        assert_eq!(all_pages(&r, "a", &uri, 1).await, names(&whole), "{sort}");
    }

    // Tenants: B's token does not see A's POP; B's own POP lists B's interfaces only.
    assert_eq!(get(&r, "b", &base).await.0, StatusCode::NOT_FOUND);
    let (st, body) = get(&r, "b", &format!("/api/v1/pops/{}/interfaces", b.pop_id)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["items"].as_array().unwrap().len(), 5);
    assert!(
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["device_id"] != top["device_id"])
    );

    // Permissions and bad input.
    assert_eq!(get(&r, "a-nometrics", &base).await.0, StatusCode::FORBIDDEN);
    assert_eq!(get(&r, "nobody", &base).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(&r, "a", &format!("{base}?cursor=garbage")).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(&r, "a", &format!("{base}?sort=loudest")).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(&r, "a", &format!("{base}?limit=0")).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(
            &r,
            "a",
            &format!("/api/v1/pops/{}/interfaces", uuid::Uuid::now_v7())
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    db.cleanup().await;
}
