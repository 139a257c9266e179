//! Device listing on real data: every filter, keyset pagination over pages, and filters shaped like SQL or
//! path injection (harmless or refused with 400).

use super::*;

#[tokio::test]
async fn device_filters_and_keyset_pagination() {
    let h = harness().await;
    let (p, pop) = (h.a.tenant.provider_id, h.a.tenant.pop_id);
    sqlx::query(
        "INSERT INTO devices (provider_id, pop_id, device_key, vendor, serial_number, mgmt_ip, tags, last_seen) \
         SELECT $1, $2, 'k' || i, CASE WHEN i % 2 = 0 THEN 'ZTE' ELSE 'Nokia' END, 'ZX' || lpad(i::text, 4, '0'), \
                ('10.1.' || (i / 250) || '.' || (i % 250 + 1))::inet, ARRAY['t' || (i % 3)], \
                CASE WHEN i % 4 = 0 THEN now() - interval '1 day' ELSE now() END \
         FROM generate_series(1, 120) i",
    )
    .bind(p)
    .bind(pop)
    .execute(&h.db.admin)
    .await
    .unwrap();
    let count = |r: &Resp| r.body["items"].as_array().map_or(0, Vec::len);
    // Keyset pagination walks every device exactly once.
    let mut seen = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let uri = match &cursor {
            Some(c) => format!("/api/v1/devices?limit=50&cursor={c}"),
            None => "/api/v1/devices?limit=50".to_owned(),
        };
        let r = h.get("a-viewer", &uri).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        for d in r.body["items"].as_array().unwrap() {
            assert!(
                seen.insert(d["id"].as_str().unwrap().to_owned()),
                "a device appears twice"
            );
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 121);
    assert_eq!(
        count(
            &h.get("a-viewer", "/api/v1/devices?vendor=ZTE&limit=500")
                .await
        ),
        60
    );
    assert_eq!(
        count(
            &h.get("a-viewer", "/api/v1/devices?serial=ZX00&limit=500")
                .await
        ),
        99
    );
    assert_eq!(
        count(&h.get("a-viewer", "/api/v1/devices?q=ZX01&limit=500").await),
        21
    );
    assert_eq!(
        count(&h.get("a-viewer", "/api/v1/devices?ip=10.1.0.5").await),
        1
    );
    assert_eq!(
        count(
            &h.get("a-viewer", "/api/v1/devices?ip=10.1.0.0/24&limit=500")
                .await
        ),
        120
    );
    assert_eq!(
        count(
            &h.get("a-viewer", "/api/v1/devices?status=offline&limit=500")
                .await
        ),
        30
    );
    assert_eq!(
        count(
            &h.get("a-viewer", "/api/v1/devices?tag=t1&vendor=Nokia&limit=500")
                .await
        ),
        20
    );
    assert_eq!(
        count(
            &h.get("a-viewer", &format!("/api/v1/devices?pop={pop}&limit=500"))
                .await
        ),
        121
    );
    // Small pages of a filtered walk add up to the whole result, each device once: the cursor is repeated in the
    // tag subquery and address ranges get plans made for their values, neither may lose or repeat a row.
    for (query, total) in [
        ("tag=t1", 40),
        ("tag=t1&vendor=Nokia", 20),
        ("ip=10.1.0.0/24", 120),
        ("ip=10.1.0.0/24&tag=t2", 40),
        ("vendor=ZTE", 60),
    ] {
        let mut ids = BTreeSet::new();
        let mut cursor = String::new();
        loop {
            let r = h
                .get(
                    "a-viewer",
                    &format!("/api/v1/devices?{query}&limit=7{cursor}"),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{query}: {}", r.text);
            for d in r.body["items"].as_array().unwrap() {
                assert!(
                    ids.insert(d["id"].as_str().unwrap().to_owned()),
                    "{query}: a device appears twice"
                );
            }
            match r.body["next_cursor"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => break,
            }
        }
        assert_eq!(ids.len(), total, "{query}: devices walked in pages of 7");
    }
    // Changed tags are searchable at once, and the old ones no longer find the device.
    let t1_before = count(&h.get("a-viewer", "/api/v1/devices?tag=t1&limit=500").await);
    let one = h
        .get("a-viewer", "/api/v1/devices?tag=t1&limit=1")
        .await
        .body["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = h
        .send(request(
            "PATCH",
            &format!("/api/v1/devices/{one}"),
            "a-admin",
            Body::from(r#"{"tags": ["raro", "raro", "vip"]}"#),
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = h.get("a-viewer", "/api/v1/devices?tag=raro").await;
    assert_eq!(count(&r), 1, "{}", r.text);
    assert_eq!(r.body["items"][0]["id"], one.as_str());
    assert_eq!(
        count(&h.get("a-viewer", "/api/v1/devices?tag=t1&limit=500").await),
        t1_before - 1
    );
    // Prefix searches page in the order of what matched (name or serial), every match exactly once: one device
    // in ten is named after another serial, so `q=ZX01` matches 12 names and 21 serials, 3 of them both.
    sqlx::query("UPDATE devices SET name = 'ZX01-' || serial_number WHERE provider_id = $1 AND device_key ~ '0$'")
        .bind(p)
        .execute(&h.db.admin)
        .await
        .unwrap();
    let walk = |query: &'static str, page: u32, by_name_first: bool| {
        let h = &h;
        async move {
            let mut keys = Vec::new();
            let mut ids = BTreeSet::new();
            let mut cursor = String::new();
            loop {
                let uri = format!("/api/v1/devices?{query}&limit={page}{cursor}");
                let r = h.get("a-viewer", &uri).await;
                assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text);
                for d in r.body["items"].as_array().unwrap() {
                    assert!(
                        ids.insert(d["id"].as_str().unwrap().to_owned()),
                        "{uri}: twice"
                    );
                    let name = d["name"].as_str().unwrap_or("");
                    let serial = d["serial_number"].as_str().unwrap_or("");
                    let by_name = by_name_first && name.starts_with("ZX01");
                    keys.push(if by_name { name } else { serial }.to_owned());
                }
                match r.body["next_cursor"].as_str() {
                    Some(c) => cursor = format!("&cursor={c}"),
                    None => break,
                }
            }
            keys
        }
    };
    let keys = walk("q=ZX01", 7, true).await;
    assert_eq!(keys.len(), 30, "{keys:?}");
    assert!(keys.windows(2).all(|w| w[0] <= w[1]), "sorted: {keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("ZX01")), "{keys:?}");
    let keys = walk("serial=ZX01&vendor=ZTE", 4, false).await;
    assert_eq!(keys.len(), 11, "ZX0100..ZX0120, even ones: {keys:?}");
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "sorted: {keys:?}");
    // B sees none of them whatever the filter.
    assert_eq!(
        count(&h.get("b-admin", "/api/v1/devices?vendor=ZTE").await),
        0
    );
    assert_error(
        &h.get("a-viewer", "/api/v1/devices?limit=501").await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert_error(
        &h.get("a-viewer", "/api/v1/devices?cursor=nope").await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert_error(
        &h.get("a-viewer", "/api/v1/devices?status=maybe").await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    h.db.cleanup().await;
}

#[tokio::test]
async fn injection_shaped_filters_are_harmless_or_refused() {
    let h = harness().await;
    for (filter, value) in [
        ("serial", "' OR 1=1 --"),
        ("vendor", "x'); DROP TABLE devices; --"),
        ("q", "%"),
        ("q", "_"),
        ("tag", "\"}{"),
        ("vendor", "Ünïcødé ☃ 𝄞"),
    ] {
        let uri = format!("/api/v1/devices?{filter}={}", urlencode(value));
        let r = h.get("a-admin", &uri).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text);
        assert_eq!(
            r.body["items"].as_array().map(Vec::len),
            Some(0),
            "{uri} matched: {}",
            r.text
        );
    }
    for (filter, value) in [
        ("ip", "' OR 1=1 --"),
        ("serial", "a\0b"),
        ("q", &"x".repeat(10_000)),
    ] {
        let uri = format!("/api/v1/devices?{filter}={}", urlencode(value));
        assert_error(
            &h.get("a-admin", &uri).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        );
    }
    // The table is still there.
    assert_eq!(
        h.get("a-admin", "/api/v1/devices").await.status,
        StatusCode::OK
    );
    // Names are stored verbatim.
    for name in [
        "' OR 1=1 --",
        "Robert'); DROP TABLE customers;--",
        "\"quoted\" \\ back",
        "São João 🚀 𝄞 中文",
        "<script>alert(1)</script>",
    ] {
        let body = serde_json::json!({ "name": name }).to_string();
        let r = h
            .send(request(
                "POST",
                "/api/v1/customers",
                "a-admin",
                Body::from(body),
            ))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{name}: {}", r.text);
        let uri = format!("/api/v1/customers/{}", r.body["id"].as_str().unwrap());
        assert_eq!(h.get("a-admin", &uri).await.body["name"], name);
    }
    // Too long, control characters, bad slugs: 400.
    for body in [
        serde_json::json!({ "name": "x".repeat(1_000_000) }),
        serde_json::json!({ "name": "a\u{0}b" }),
        serde_json::json!({ "name": "" }),
    ] {
        let r = h
            .send(request(
                "POST",
                "/api/v1/customers",
                "a-admin",
                Body::from(body.to_string()),
            ))
            .await;
        assert_error(&r, StatusCode::BAD_REQUEST, "bad_request");
    }
    let r = h
        .send(request(
            "POST",
            "/api/v1/pops",
            "a-admin",
            Body::from(r#"{"slug": "a' --", "name": "x"}"#),
        ))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_request");
    h.db.cleanup().await;
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
