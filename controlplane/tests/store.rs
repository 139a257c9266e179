//! The batch store against a real PostgreSQL (one fresh database per test): what is stored, exactly once, under
//! which tenant, and in which partitions.

#[allow(dead_code)]
mod support;

use octoisp_controlplane::db;
use octoisp_controlplane::ingest::store::{Store, StoreError, StoreOutcome};
use octoisp_shared::{
    CommandResult, CommandStatus, DropReport, Event, Inventory, Record, Sample, Severity,
    Tr069Result,
};
use support::TestDb;
use support::fixtures::{batch, count_admin, count_as, def, now_ms, samples, tenant};
use uuid::Uuid;

const DAY_MS: i64 = 86_400_000;

fn event(id: Uuid, device_key: Option<&str>) -> Record {
    Record::Event(Event {
        id,
        ts_ms: now_ms(),
        device_key: device_key.map(str::to_owned),
        kind: "ping.down".into(),
        severity: Severity::Critical,
        message: "192.0.2.1 stopped answering".into(),
        attrs: vec![("loss".into(), "100".into())],
    })
}

fn all_kinds_of_records(device_key: &str) -> Vec<Record> {
    vec![
        event(Uuid::new_v4(), Some(device_key)),
        Record::Inventory(Inventory {
            ts_ms: now_ms(),
            device_key: device_key.into(),
            vendor: Some("Huawei".into()),
            model: Some("HG8245H".into()),
            serial_number: Some("48575443A1B2C3D4".into()),
            mgmt_ip: Some("192.0.2.1".into()),
            attrs: vec![("sysDescr".into(), "Huawei ONT".into())],
            ..Inventory::default()
        }),
        Record::Tr069Result(Tr069Result {
            id: Uuid::new_v4(),
            ts_ms: now_ms(),
            device_key: device_key.into(),
            task_id: None,
            kind: "GetParameterValues".into(),
            ok: false,
            fault_code: Some(9005),
            fault_string: Some("Invalid parameter name".into()),
            parameters: vec![("Device.DeviceInfo.UpTime".into(), "42".into())],
        }),
        Record::CommandResult(CommandResult {
            command_id: Uuid::new_v4(),
            ts_ms: now_ms(),
            status: CommandStatus::Succeeded,
            output_json: "{\"rtt_ms\": [1.5, 2.0]}".into(),
            error: None,
        }),
        Record::DropReport(DropReport {
            id: Uuid::new_v4(),
            from_ms: now_ms() - 60_000,
            to_ms: now_ms(),
            samples_dropped: 12,
            records_refused: 0,
            reason: "disk cap".into(),
        }),
    ]
}

#[tokio::test]
async fn a_batch_stores_its_samples_and_records() {
    let db = TestDb::new().await;
    let a = tenant(&db, "isp-a").await;
    let store = Store::new(db.app.clone());
    let mut s = samples(2, 100);
    s[7].value = f64::NAN;
    let defs = vec![
        def(0, "icmp:192.0.2.1", "ping.rtt_ms"),
        def(1, "icmp:192.0.2.1", "ping.loss"),
    ];
    let b = batch(1, defs, &s, all_kinds_of_records("icmp:192.0.2.1"));

    let outcome = store.store_batch(&a.agent, &b, &s).await.unwrap();

    assert_eq!(
        outcome,
        StoreOutcome::Stored {
            samples: 100,
            records: 5
        }
    );
    let p = a.provider_id;
    assert_eq!(count_as(&db, p, "samples").await, 100);
    assert_eq!(
        count_as(&db, p, "samples WHERE value = 'NaN'::float8").await,
        1
    );
    assert_eq!(count_as(&db, p, "series").await, 2);
    assert_eq!(count_as(&db, p, "devices").await, 1);
    assert_eq!(count_as(&db, p, "events").await, 1);
    assert_eq!(count_as(&db, p, "device_inventory_log").await, 1);
    assert_eq!(
        count_as(&db, p, "tr069_results WHERE fault_code = 9005").await,
        1
    );
    assert_eq!(
        count_as(
            &db,
            p,
            "command_results WHERE output -> 'rtt_ms' ->> 0 = '1.5'"
        )
        .await,
        1
    );
    assert_eq!(
        count_as(&db, p, "agent_drop_reports WHERE samples_dropped = 12").await,
        1
    );
    assert_eq!(count_as(&db, p, "ingested_batches").await, 1);
    assert_eq!(
        count_as(
            &db,
            p,
            "devices WHERE vendor = 'Huawei' AND mgmt_ip = '192.0.2.1'::inet AND attrs ? 'sysDescr'"
        )
        .await,
        1
    );

    // Values and times arrive exactly (the binary COPY encodes times from 2000-01-01 in microseconds).
    let mut tx = db::tenant_tx(&db.app, p).await.unwrap();
    let rows: Vec<(i64, i64, f64)> = sqlx::query_as(
        "SELECT se.local_id, (extract(epoch FROM sa.ts) * 1000)::int8, sa.value \
         FROM samples sa JOIN series se ON se.id = sa.series_id ORDER BY sa.ts, se.local_id",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    let mut want: Vec<(i64, i64, f64)> = s
        .iter()
        .map(|x| (x.series as i64, x.ts_ms, x.value))
        .collect();
    want.sort_by_key(|w| (w.1, w.0));
    assert_eq!(rows.len(), want.len());
    for (got, want) in rows.iter().zip(&want) {
        assert_eq!((got.0, got.1), (want.0, want.1));
        assert!(
            got.2 == want.2 || (got.2.is_nan() && want.2.is_nan()),
            "{got:?} != {want:?}"
        );
    }
}

#[tokio::test]
async fn replaying_a_batch_stores_nothing_twice() {
    let db = TestDb::new().await;
    let a = tenant(&db, "isp-a").await;
    let store = Store::new(db.app.clone());
    let s = samples(3, 300);
    let defs = vec![
        def(0, "icmp:192.0.2.1", "ping.rtt_ms"),
        def(1, "icmp:192.0.2.2", "ping.rtt_ms"),
        def(2, "icmp:192.0.2.3", "ping.rtt_ms"),
    ];
    let b1 = batch(1, defs, &s, vec![event(Uuid::new_v4(), None)]);

    assert!(matches!(
        store.store_batch(&a.agent, &b1, &s).await.unwrap(),
        StoreOutcome::Stored { .. }
    ));
    assert_eq!(
        store.store_batch(&a.agent, &b1, &s).await.unwrap(),
        StoreOutcome::Duplicate
    );
    // A fresh store (another instance, empty caches) also sees it.
    let other = Store::new(db.app_pool(2).await);
    assert_eq!(
        other.store_batch(&a.agent, &b1, &s).await.unwrap(),
        StoreOutcome::Duplicate
    );
    assert_eq!(count_as(&db, a.provider_id, "samples").await, 300);
    assert_eq!(count_as(&db, a.provider_id, "events").await, 1);

    // Batch 2 settles everything below it: its row in ingested_batches replaces batch 1's, and batch 1 replayed
    // is still a duplicate.
    let s2 = samples(3, 30);
    let mut b2 = batch(2, vec![], &s2, vec![]);
    b2.settled_below = 2;
    assert!(matches!(
        store.store_batch(&a.agent, &b2, &s2).await.unwrap(),
        StoreOutcome::Stored { .. }
    ));
    assert_eq!(count_as(&db, a.provider_id, "ingested_batches").await, 1);
    assert_eq!(
        count_as(&db, a.provider_id, "agents WHERE settled_below = 2").await,
        1
    );
    assert_eq!(
        other.store_batch(&a.agent, &b1, &s).await.unwrap(),
        StoreOutcome::Duplicate
    );
    assert_eq!(count_as(&db, a.provider_id, "samples").await, 330);
}

#[tokio::test]
async fn concurrent_stores_of_one_batch_on_two_instances_store_it_once() {
    let db = TestDb::new().await;
    let a = tenant(&db, "isp-a").await;
    let one = Store::new(db.app_pool(4).await);
    let two = Store::new(db.app_pool(4).await);
    let defs: Vec<_> = (0..50)
        .map(|i| def(i, &format!("icmp:192.0.2.{i}"), "ping.rtt_ms"))
        .collect();
    let mut total = 0;
    for seq in 1..=8u64 {
        let s = samples(50, 5_000);
        // Definitions travel in every batch, as after a reconnect: both writers race on them too.
        let b = batch(
            seq,
            defs.clone(),
            &s,
            vec![event(Uuid::new_v4(), Some("icmp:192.0.2.1"))],
        );
        let (r1, r2) = tokio::join!(
            one.store_batch(&a.agent, &b, &s),
            two.store_batch(&a.agent, &b, &s)
        );
        let outcomes = [r1.unwrap(), r2.unwrap()];
        let stored = outcomes
            .iter()
            .filter(|o| matches!(o, StoreOutcome::Stored { .. }))
            .count();
        let dups = outcomes
            .iter()
            .filter(|o| **o == StoreOutcome::Duplicate)
            .count();
        assert_eq!((stored, dups), (1, 1), "batch {seq}: {outcomes:?}");
        total += s.len() as i64;
        assert_eq!(
            count_as(&db, a.provider_id, "samples").await,
            total,
            "batch {seq}"
        );
    }
    assert_eq!(count_as(&db, a.provider_id, "series").await, 50);
    assert_eq!(count_as(&db, a.provider_id, "events").await, 8);
    assert_eq!(count_as(&db, a.provider_id, "ingested_batches").await, 8);
}

#[tokio::test]
async fn samples_of_undefined_series_are_refused_until_defined() {
    let db = TestDb::new().await;
    let a = tenant(&db, "isp-a").await;
    let store = Store::new(db.app.clone());
    let s = vec![
        Sample {
            series: 0,
            ts_ms: now_ms() - 1000,
            value: 1.0,
        },
        Sample {
            series: 99,
            ts_ms: now_ms() - 1000,
            value: 2.0,
        },
        Sample {
            series: 98,
            ts_ms: now_ms() - 500,
            value: 3.0,
        },
    ];
    let b = batch(
        1,
        vec![def(0, "icmp:192.0.2.1", "ping.rtt_ms")],
        &s,
        vec![event(Uuid::new_v4(), None)],
    );

    match store.store_batch(&a.agent, &b, &s).await {
        Err(StoreError::UnknownSeries(ids)) => assert_eq!(ids, vec![98, 99]),
        other => panic!("expected UnknownSeries, got {other:?}"),
    }
    for table in ["samples", "series", "events", "ingested_batches", "devices"] {
        assert_eq!(
            count_as(&db, a.provider_id, table).await,
            0,
            "{table} after a refused batch"
        );
    }

    // The agent resends the same batch (same seq) with the missing definitions.
    let defs = vec![
        def(0, "icmp:192.0.2.1", "ping.rtt_ms"),
        def(98, "icmp:192.0.2.9", "ping.rtt_ms"),
        def(99, "icmp:192.0.2.9", "ping.loss"),
    ];
    let b = batch(1, defs, &s, vec![event(Uuid::new_v4(), None)]);
    assert_eq!(
        store.store_batch(&a.agent, &b, &s).await.unwrap(),
        StoreOutcome::Stored {
            samples: 3,
            records: 1
        }
    );
    // Later batches may omit definitions stored before, even on an instance that never saw them.
    let other = Store::new(db.app_pool(2).await);
    let b2 = batch(2, vec![], &s, vec![]);
    assert!(matches!(
        other.store_batch(&a.agent, &b2, &s).await.unwrap(),
        StoreOutcome::Stored { .. }
    ));
    assert_eq!(count_as(&db, a.provider_id, "samples").await, 6);
}

#[tokio::test]
async fn an_agent_writes_only_into_its_own_provider_whatever_its_payload_says() {
    let db = TestDb::new().await;
    let a = tenant(&db, "isp-a").await;
    let b = tenant(&db, "isp-b").await;
    let store = Store::new(db.app.clone());

    // B stores its own data first.
    let event_id = Uuid::new_v4();
    let s = samples(1, 10);
    let batch_b = batch(
        1,
        vec![def(0, "snmp:198.51.100.7", "if.in_octets")],
        &s,
        vec![event(event_id, Some("snmp:198.51.100.7"))],
    );
    store.store_batch(&b.agent, &batch_b, &s).await.unwrap();

    // A's agent sends a payload made to look like B's: same device keys, same event id, same sequence number,
    // B's provider id in labels and attributes.
    let mut def_a = def(0, "snmp:198.51.100.7", "if.in_octets");
    def_a
        .labels
        .push(("provider_id".into(), b.provider_id.to_string()));
    let mut forged = vec![event(event_id, Some("snmp:198.51.100.7"))];
    if let Record::Event(e) = &mut forged[0] {
        e.attrs
            .push(("provider_id".into(), b.provider_id.to_string()));
    }
    forged.push(Record::Inventory(Inventory {
        ts_ms: now_ms(),
        device_key: "snmp:198.51.100.7".into(),
        vendor: Some("Forged".into()),
        ..Inventory::default()
    }));
    let s_a = samples(1, 25);
    let batch_a = batch(1, vec![def_a], &s_a, forged);
    assert_eq!(
        store.store_batch(&a.agent, &batch_a, &s_a).await.unwrap(),
        StoreOutcome::Stored {
            samples: 25,
            records: 2
        }
    );

    // B's view is unchanged; A's rows are A's.
    let (pa, pb) = (a.provider_id, b.provider_id);
    assert_eq!(count_as(&db, pb, "samples").await, 10);
    assert_eq!(count_as(&db, pb, "events").await, 1);
    assert_eq!(count_as(&db, pb, "devices WHERE vendor IS NULL").await, 1);
    assert_eq!(count_as(&db, pb, "device_inventory_log").await, 0);
    assert_eq!(count_as(&db, pa, "samples").await, 25);
    assert_eq!(count_as(&db, pa, "events").await, 1);
    assert_eq!(
        count_as(&db, pa, "devices WHERE vendor = 'Forged'").await,
        1
    );
    // Every row A's agent wrote carries A's provider id (seen as admin, across tenants).
    for table in [
        "samples",
        "series",
        "events",
        "devices",
        "device_inventory_log",
        "ingested_batches",
    ] {
        let foreign = count_admin(
            &db,
            &format!("{table} WHERE provider_id NOT IN ('{pa}', '{pb}')"),
        )
        .await;
        assert_eq!(foreign, 0, "{table}");
    }
    assert_eq!(
        count_admin(&db, &format!("samples WHERE provider_id = '{pa}'")).await,
        25
    );
    assert_eq!(
        count_admin(&db, &format!("samples WHERE provider_id = '{pb}'")).await,
        10
    );
    assert_eq!(
        count_admin(&db, &format!("events WHERE id = '{event_id}'")).await,
        2
    );
}

#[tokio::test]
async fn samples_spanning_three_days_land_in_three_partitions() {
    let db = TestDb::new().await;
    let a = tenant(&db, "isp-a").await;
    let store = Store::new(db.app.clone());
    let today = now_ms().div_euclid(DAY_MS) * DAY_MS;
    let s: Vec<Sample> = (0..3)
        .flat_map(|d| {
            let day_start = today - (2 - d) * DAY_MS;
            (0..10).map(move |i| Sample {
                series: 0,
                ts_ms: day_start + i * 60_000,
                value: d as f64,
            })
        })
        .collect();
    let b = batch(1, vec![def(0, "icmp:192.0.2.1", "ping.rtt_ms")], &s, vec![]);

    store.store_batch(&a.agent, &b, &s).await.unwrap();

    let parts: Vec<(String, i64, f64)> = sqlx::query_as(
        "SELECT tableoid::regclass::text, count(*), min(value) FROM samples GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&db.admin)
    .await
    .unwrap();
    assert_eq!(parts.len(), 3, "{parts:?}");
    for (i, (name, n, v)) in parts.iter().enumerate() {
        assert!(name.starts_with("samples_p"), "{name}");
        assert_eq!((*n, *v), (10, i as f64), "{name}");
    }
}

#[tokio::test]
async fn sample_times_out_of_range_are_malformed() {
    let db = TestDb::new().await;
    let a = tenant(&db, "isp-a").await;
    let store = Store::new(db.app.clone());
    for (seq, ts_ms) in [(1, 946_684_799_999), (2, now_ms() + 2 * DAY_MS)] {
        let s = vec![Sample {
            series: 0,
            ts_ms,
            value: 1.0,
        }];
        let b = batch(
            seq,
            vec![def(0, "icmp:192.0.2.1", "ping.rtt_ms")],
            &s,
            vec![],
        );
        match store.store_batch(&a.agent, &b, &s).await {
            Err(StoreError::Malformed(msg)) => {
                assert!(msg.contains("outside the accepted range"), "{msg}")
            }
            other => panic!("expected Malformed for {ts_ms}, got {other:?}"),
        }
    }
    assert_eq!(count_as(&db, a.provider_id, "samples").await, 0);
    assert_eq!(count_as(&db, a.provider_id, "ingested_batches").await, 0);
}

#[tokio::test]
async fn storing_resumes_after_postgresql_restarts() {
    let mut pg = support::PrivatePg::start().await;
    let db = TestDb::on(&pg.admin_url()).await;
    let a = tenant(&db, "isp-a").await;
    let store = Store::new(db.app.clone());
    let s = samples(2, 100);
    let defs = vec![
        def(0, "icmp:192.0.2.1", "ping.rtt_ms"),
        def(1, "icmp:192.0.2.2", "ping.rtt_ms"),
    ];
    store
        .store_batch(&a.agent, &batch(1, defs, &s, vec![]), &s)
        .await
        .unwrap();

    pg.restart().await;
    // Pooled connections died with the server; the pool replaces them.
    let b2 = batch(2, vec![], &s, vec![]);
    let mut outcome = store.store_batch(&a.agent, &b2, &s).await;
    if let Err(StoreError::Transient(_)) = outcome {
        outcome = store.store_batch(&a.agent, &b2, &s).await;
    }
    assert!(
        matches!(outcome, Ok(StoreOutcome::Stored { .. })),
        "{outcome:?}"
    );

    pg.stop().await;
    let down = store
        .store_batch(&a.agent, &batch(3, vec![], &s, vec![]), &s)
        .await;
    assert!(matches!(down, Err(StoreError::Transient(_))), "{down:?}");
    pg.resume().await;
    let again = store
        .store_batch(&a.agent, &batch(3, vec![], &s, vec![]), &s)
        .await;
    assert!(
        matches!(again, Ok(StoreOutcome::Stored { .. })),
        "{again:?}"
    );
    assert_eq!(count_as(&db, a.provider_id, "samples").await, 300);
    db.cleanup().await;
}

fn cpe_record(device_key: &str, kind: &str, ts_ms: i64) -> Record {
    Record::Tr069Result(Tr069Result {
        id: Uuid::now_v7(),
        ts_ms,
        device_key: device_key.into(),
        task_id: None,
        kind: kind.into(),
        ok: true,
        fault_code: None,
        fault_string: None,
        parameters: Vec::new(),
    })
}

/// A batch holding only the marker of a periodic Inform of `cpe` at `ts_ms`.
fn inform_seen(seq: u64, cpe: &str, ts_ms: i64) -> octoisp_shared::Batch {
    batch(
        seq,
        vec![],
        &[],
        vec![cpe_record(cpe, octoisp_shared::TR069_INFORM_SEEN, ts_ms)],
    )
}

/// Deletes the device `key` and every row that refers to it, as retention and an operator would over time.
async fn delete_device(db: &TestDb, key: &str) -> Uuid {
    let id: Uuid = sqlx::query_scalar("SELECT id FROM devices WHERE device_key = $1")
        .bind(key)
        .fetch_one(&db.admin)
        .await
        .unwrap();
    for table in ["tr069_results", "events", "device_inventory_log"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE device_id = $1"
        )))
        .bind(id)
        .execute(&db.admin)
        .await
        .unwrap();
    }
    sqlx::query("DELETE FROM devices WHERE id = $1")
        .bind(id)
        .execute(&db.admin)
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn a_cpe_deleted_after_its_id_was_cached_is_registered_again_by_its_next_report() {
    let db = TestDb::new().await;
    let a = tenant(&db, "isp-a").await;
    let store = Store::new(db.app.clone());
    let p = a.provider_id;
    let t0 = now_ms() - 120_000;
    let cpe = "00259E-HG8245H-48575443A1B2C3D4";

    // Registered by a result, its id now cached; a second periodic Inform advances last_seen from the cache.
    let first = batch(
        1,
        vec![],
        &[],
        vec![cpe_record(cpe, "GetParameterValues", t0)],
    );
    store.store_batch(&a.agent, &first, &[]).await.unwrap();
    // Registration sets last_seen to the database's clock; take it back so the Inform's time shows.
    sqlx::query("UPDATE devices SET last_seen = '2001-01-01Z'")
        .execute(&db.admin)
        .await
        .unwrap();
    let seen = inform_seen(2, cpe, t0 + 30_000);
    store.store_batch(&a.agent, &seen, &[]).await.unwrap();
    let last_seen = |op: &str, t: i64| {
        format!(
            "devices WHERE device_key = '{cpe}' AND (extract(epoch FROM last_seen) * 1000)::int8 {op} {t}"
        )
    };
    assert_eq!(count_as(&db, p, &last_seen("=", t0 + 30_000)).await, 1);

    // Deleted behind the cache's back: a periodic Inform (an update only) registers it again.
    let old = delete_device(&db, cpe).await;
    let seen = inform_seen(3, cpe, t0 + 60_000);
    let outcome = store.store_batch(&a.agent, &seen, &[]).await.unwrap();
    assert!(
        matches!(outcome, StoreOutcome::Stored { records: 1, .. }),
        "{outcome:?}"
    );
    assert_eq!(count_as(&db, p, &last_seen(">=", t0 + 60_000)).await, 1);
    assert_eq!(
        count_as(&db, p, &format!("devices WHERE id = '{old}'")).await,
        0
    );

    // Deleted again: a result (an insert that refers to the device) registers it again too, result kept.
    let again = delete_device(&db, cpe).await;
    let result = batch(4, vec![], &[], vec![cpe_record(cpe, "Reboot", t0 + 90_000)]);
    store.store_batch(&a.agent, &result, &[]).await.unwrap();
    assert_eq!(
        count_as(
            &db,
            p,
            &format!("devices WHERE device_key = '{cpe}' AND id <> '{again}'")
        )
        .await,
        1
    );
    assert_eq!(
        count_as(&db, p, "tr069_results WHERE kind = 'Reboot'").await,
        1
    );
    assert_eq!(count_as(&db, p, &last_seen(">=", t0 + 90_000)).await, 1);
    assert_eq!(count_as(&db, p, "ingested_batches").await, 4);
}
