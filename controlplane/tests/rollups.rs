//! Metric rollups on a real PostgreSQL: the job's results equal a brute-force computation in Rust over random
//! data (late and out-of-order samples included), a job stopped halfway leaves nothing half done, retention drops
//! whole old partitions only, and the series API picks its resolution and isolates tenants.

#[allow(dead_code)]
mod support;

use std::collections::{BTreeMap, HashMap};

use axum::http::StatusCode;
use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use octoisp_controlplane::ingest::store::{Store, StoreOutcome};
use octoisp_controlplane::rollup::{Level, MetricsConfig, RollupError, RollupJob};
use octoisp_shared::{Sample, SeriesDef};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use support::TestDb;
use support::api::{caller, get};
use support::fixtures::{self, Tenant, def, tenant};
use uuid::Uuid;

/// Retention long enough for data a couple of months old to be rolled up at every level.
fn long_retention() -> MetricsConfig {
    MetricsConfig {
        retention_raw_days: 400,
        retention_5m_days: 400,
        retention_1h_days: 800,
        ..MetricsConfig::default()
    }
}

/// One rollup row, as compared.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    min: f64,
    max: f64,
    sum: f64,
    count: i64,
    last: f64,
    last_ts_ms: i64,
    p95: f64,
}

type Rollup = BTreeMap<(i64, i64), Row>; // (series id, bucket start in seconds) -> row

/// Nearest-rank 95th percentile, as `percentile_disc(0.95)` computes it.
fn p95(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let rank = (0.95_f64 * v.len() as f64).ceil() as usize;
    v[rank.max(1) - 1]
}

/// The rollups of every level computed in Rust from the raw samples `(series id, ts ms, value)`, restricted to
/// buckets closed at `now` (end + grace).
fn brute_force(
    samples: &[(i64, i64, f64)],
    now: DateTime<Utc>,
    grace: Duration,
) -> HashMap<Level, Rollup> {
    let closed = |l: Level, b: DateTime<Utc>| l.bucket_end(b) + grace <= now;
    let ts = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap();
    let mut raw: BTreeMap<(i64, i64), Vec<(i64, f64)>> = BTreeMap::new();
    for &(s, t, v) in samples {
        if v.is_nan() {
            continue;
        }
        raw.entry((s, Level::M5.bucket(ts(t)).timestamp()))
            .or_default()
            .push((t, v));
    }
    let mut fine: Rollup = BTreeMap::new();
    for (key, vals) in raw {
        let last = vals
            .iter()
            .copied()
            .max_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)))
            .unwrap();
        fine.insert(
            key,
            Row {
                min: vals.iter().map(|x| x.1).fold(f64::INFINITY, f64::min),
                max: vals.iter().map(|x| x.1).fold(f64::NEG_INFINITY, f64::max),
                sum: vals.iter().map(|x| x.1).sum(),
                count: vals.len() as i64,
                last: last.1,
                last_ts_ms: last.0,
                p95: p95(vals.iter().map(|x| x.1).collect()),
            },
        );
    }
    let mut out = HashMap::new();
    for level in [Level::H1, Level::D1, Level::D7, Level::D30] {
        let mut groups: BTreeMap<(i64, i64), Vec<&Row>> = BTreeMap::new();
        for ((s, b), row) in &fine {
            let parent = level.bucket(ts(b * 1000)).timestamp();
            groups.entry((*s, parent)).or_default().push(row);
        }
        let rows: Rollup = groups
            .into_iter()
            .filter(|((_, b), _)| closed(level, ts(b * 1000)))
            .map(|(key, rows)| {
                let last = rows
                    .iter()
                    .max_by(|a, b| {
                        a.last_ts_ms
                            .cmp(&b.last_ts_ms)
                            .then(a.last.total_cmp(&b.last))
                    })
                    .unwrap();
                let row = Row {
                    min: rows.iter().map(|r| r.min).fold(f64::INFINITY, f64::min),
                    max: rows.iter().map(|r| r.max).fold(f64::NEG_INFINITY, f64::max),
                    sum: rows.iter().map(|r| r.sum).sum(),
                    count: rows.iter().map(|r| r.count).sum(),
                    last: last.last,
                    last_ts_ms: last.last_ts_ms,
                    p95: p95(rows.iter().map(|r| r.sum / r.count as f64).collect()),
                };
                (key, row)
            })
            .collect();
        out.insert(level, rows);
    }
    fine.retain(|(_, b), _| closed(Level::M5, ts(b * 1000)));
    out.insert(Level::M5, fine);
    out
}

/// A rollup row as selected: series, bucket, min, max, sum, count, last, last_ts, p95.
type StoredRow = (
    i64,
    DateTime<Utc>,
    f64,
    f64,
    f64,
    i64,
    f64,
    DateTime<Utc>,
    f64,
);

/// The rollup rows of `level` of provider `t`.
async fn stored(db: &TestDb, t: &Tenant, level: Level) -> Rollup {
    let sql = format!(
        "SELECT series_id, bucket, min, max, sum, count, last, last_ts, p95 FROM {} \
         WHERE provider_id = $1 ORDER BY 1, 2",
        level.table()
    );
    let rows: Vec<StoredRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(t.provider_id)
        .fetch_all(&db.admin)
        .await
        .unwrap();
    rows.into_iter()
        .map(|(s, b, min, max, sum, count, last, last_ts, p95)| {
            let row = Row {
                min,
                max,
                sum,
                count,
                last,
                last_ts_ms: last_ts.timestamp_millis(),
                p95,
            };
            ((s, b.timestamp()), row)
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

async fn assert_rollups_match(
    db: &TestDb,
    t: &Tenant,
    samples: &[(i64, i64, f64)],
    now: DateTime<Utc>,
    levels: &[Level],
    what: &str,
) {
    let expected = brute_force(samples, now, Duration::seconds(60));
    for &level in levels {
        let want = &expected[&level];
        let got = stored(db, t, level).await;
        assert!(
            !want.is_empty(),
            "{what}: no expected {} rows",
            level.as_str()
        );
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{what}: buckets of {}",
            level.as_str()
        );
        for (key, w) in want {
            let g = &got[key];
            let same = g.min == w.min
                && g.max == w.max
                && g.count == w.count
                && g.last == w.last
                && g.last_ts_ms == w.last_ts_ms
                && close(g.sum, w.sum)
                && close(g.p95, w.p95);
            assert!(
                same,
                "{what}: {} {key:?}: stored {g:?}, expected {w:?}",
                level.as_str()
            );
        }
    }
}

/// Random samples of `series` ids (agent-local `0..series`) in a few random hours between `start` and `start +
/// days`: values are multiples of 0.25 (some NaN, some duplicated times).
fn random_samples(
    rng: &mut StdRng,
    series: u64,
    start: DateTime<Utc>,
    days: i64,
    n: usize,
) -> Vec<Sample> {
    let hours: Vec<i64> = (0..14)
        .map(|_| start.timestamp_millis() + rng.random_range(0..days * 24) * 3_600_000)
        .collect();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let ts_ms = if i > 0 && rng.random_ratio(1, 20) {
            out.last().map_or(0, |s: &Sample| s.ts_ms)
        } else {
            hours[rng.random_range(0..hours.len())] + rng.random_range(0..3_600_000)
        };
        let value = if rng.random_ratio(1, 50) {
            f64::NAN
        } else {
            f64::from(rng.random_range(-4000..4000)) / 4.0
        };
        out.push(Sample {
            series: rng.random_range(0..series),
            ts_ms,
            value,
        });
    }
    out
}

fn defs(series: u64) -> Vec<SeriesDef> {
    (0..series)
        .map(|i| def(i, &format!("router-{}", i % 2), "if.in_bps"))
        .collect()
}

async fn store(db: &TestDb, t: &Tenant, seq: u64, defs: Vec<SeriesDef>, samples: &[Sample]) {
    let store = Store::new(db.app.clone());
    let batch = fixtures::batch(seq, defs, samples, Vec::new());
    let outcome = store.store_batch(&t.agent, &batch, samples).await.unwrap();
    assert!(
        matches!(outcome, StoreOutcome::Stored { .. }),
        "{outcome:?}"
    );
}

/// The samples as `(series id, ts ms, value)`, local ids resolved.
async fn resolved(db: &TestDb, t: &Tenant, samples: &[Sample]) -> Vec<(i64, i64, f64)> {
    let ids: HashMap<i64, i64> =
        sqlx::query_as("SELECT local_id, id FROM series WHERE agent_id = $1")
            .bind(t.agent.agent_id)
            .fetch_all(&db.admin)
            .await
            .unwrap()
            .into_iter()
            .collect();
    samples
        .iter()
        .map(|s| (ids[&(s.series as i64)], s.ts_ms, s.value))
        .collect()
}

/// Two months back, a few days before a month starts, so the data crosses weeks and a month boundary.
fn old_start(now: DateTime<Utc>) -> DateTime<Utc> {
    let back = now - Duration::days(62);
    Utc.with_ymd_and_hms(back.year(), back.month(), 1, 0, 0, 0)
        .unwrap()
        - Duration::days(3)
}

async fn pending(db: &TestDb) -> i64 {
    fixtures::count_admin(db, "rollup_pending").await
}

/// Pending rows of buckets closed (grace included): what a finished pass must have consumed.
async fn pending_closed(db: &TestDb) -> i64 {
    fixtures::count_admin(
        db,
        "rollup_pending WHERE octoisp_rollup_bucket_end(level, bucket) + interval '60 s' <= now()",
    )
    .await
}

#[tokio::test]
async fn rollups_equal_a_brute_force_computation_with_late_and_out_of_order_samples() {
    let seed = rand::random::<u64>();
    eprintln!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let db = TestDb::new().await;
    let a = tenant(&db, "isp-a").await;
    let b = tenant(&db, "isp-b").await;
    let job = RollupJob::new(db.app.clone(), long_retention());
    let now = Utc::now();
    let start = old_start(now);

    // Shuffled (out of order) samples, then the job.
    let mut first = random_samples(&mut rng, 6, start, 40, 3000);
    first.shuffle(&mut rng);
    store(&db, &a, 1, defs(6), &first).await;
    // Another provider's samples in the same buckets must not leak into A's rollups.
    store(
        &db,
        &b,
        1,
        defs(2),
        &random_samples(&mut rng, 2, start, 40, 500),
    )
    .await;
    let stats = job.run_once().await.unwrap();
    assert!(stats.buckets > 0);
    assert_eq!(
        pending_closed(&db).await,
        0,
        "a pass leaves no closed work behind"
    );
    let mut all = resolved(&db, &a, &first).await;
    assert_rollups_match(&db, &a, &all, now, &Level::ALL, "first pass").await;

    // Late samples into buckets rolled up already (and one new series), in two batches.
    let late = random_samples(&mut rng, 7, start, 40, 1500);
    let (l1, l2) = late.split_at(700);
    store(&db, &a, 2, defs(7), l1).await;
    store(&db, &a, 3, Vec::new(), l2).await;
    job.run_once().await.unwrap();
    all.extend(resolved(&db, &a, &late).await);
    assert_rollups_match(&db, &a, &all, now, &Level::ALL, "after late samples").await;
    db.cleanup().await;
}

#[tokio::test]
async fn a_job_stopped_halfway_leaves_nothing_half_done_and_the_rerun_counts_once() {
    let mut rng = StdRng::seed_from_u64(7);
    let db = TestDb::new().await;
    let a = tenant(&db, "isp-a").await;
    let now = Utc::now();
    let start = old_start(now);
    let first = random_samples(&mut rng, 4, start, 40, 1200);
    store(&db, &a, 1, defs(4), &first).await;
    let before = pending(&db).await;

    // Stopped after 3 buckets of its first transaction: nothing of it is visible.
    let stopped =
        RollupJob::new(db.app.clone(), long_retention()).abort_after_buckets(Level::M5, 3);
    assert!(matches!(
        stopped.run_once().await,
        Err(RollupError::Aborted(3))
    ));
    assert_eq!(pending(&db).await, before);
    assert_eq!(fixtures::count_admin(&db, "rollup_5m").await, 0);

    let job = RollupJob::new(db.app.clone(), long_retention());
    job.run_once().await.unwrap();
    let mut all = resolved(&db, &a, &first).await;
    assert_rollups_match(&db, &a, &all, now, &Level::ALL, "after the rerun").await;
    let hourly = stored(&db, &a, Level::H1).await;
    let monthly = stored(&db, &a, Level::D30).await;

    // Late samples, then a job stopped in the middle of the hourly level's work, after its 5-minute transactions
    // committed: the 5-minute rollups are up to date, the hourly and coarser ones exactly as they were.
    let late = random_samples(&mut rng, 4, start, 40, 600);
    store(&db, &a, 2, Vec::new(), &late).await;
    all.extend(resolved(&db, &a, &late).await);
    let stopped =
        RollupJob::new(db.app.clone(), long_retention()).abort_after_buckets(Level::H1, 1);
    assert!(matches!(
        stopped.run_once().await,
        Err(RollupError::Aborted(1))
    ));
    assert_rollups_match(
        &db,
        &a,
        &all,
        now,
        &[Level::M5],
        "5-minute level before the stop",
    )
    .await;
    assert_eq!(
        stored(&db, &a, Level::H1).await,
        hourly,
        "an aborted transaction changed hourly rollups"
    );
    assert_eq!(stored(&db, &a, Level::D30).await, monthly);
    job.run_once().await.unwrap();
    assert_eq!(pending_closed(&db).await, 0);
    assert_rollups_match(
        &db,
        &a,
        &all,
        now,
        &Level::ALL,
        "after the stopped job and its rerun",
    )
    .await;
    db.cleanup().await;
}

#[tokio::test]
async fn samples_older_than_raw_retention_do_not_wipe_their_rollup() {
    let db = TestDb::new().await;
    let a = tenant(&db, "isp-a").await;
    let old = Utc::now() - Duration::days(20);
    let b = Level::M5.bucket(old).timestamp_millis();
    let samples: Vec<Sample> = (0..10)
        .map(|i| Sample {
            series: 0,
            ts_ms: b + i * 1000,
            value: i as f64,
        })
        .collect();
    store(&db, &a, 1, defs(1), &samples).await;
    RollupJob::new(db.app.clone(), long_retention())
        .run_once()
        .await
        .unwrap();
    let rolled = stored(&db, &a, Level::M5).await;
    assert_eq!(rolled.values().next().map(|r| r.count), Some(10));
    // Raw retention (7 days by default) passed: the raw rows went, one late sample arrives for the bucket.
    sqlx::query("DELETE FROM samples")
        .execute(&db.admin)
        .await
        .unwrap();
    let late = [Sample {
        series: 0,
        ts_ms: b + 20_000,
        value: 100.0,
    }];
    store(&db, &a, 2, Vec::new(), &late).await;
    let s = RollupJob::new(db.app.clone(), MetricsConfig::default())
        .run_once()
        .await
        .unwrap();
    assert_eq!(s.expired, 1);
    assert_eq!(
        stored(&db, &a, Level::M5).await,
        rolled,
        "the rollup was recomputed from partial raw data"
    );
    assert_eq!(
        fixtures::count_admin(&db, "rollup_pending WHERE level = '5m'").await,
        0
    );
    db.cleanup().await;
}

#[tokio::test]
async fn retention_drops_whole_old_partitions_and_keeps_recent_ones() {
    let db = TestDb::new().await;
    let now = Utc::now();
    let day = |d: i64| (now - Duration::days(d)).date_naive();
    octoisp_controlplane::db::sample_partitions(&db.app, &[day(10), day(8), day(6), day(0)])
        .await
        .unwrap();
    let five = octoisp_controlplane::rollup::rollup_partitions(
        &db.app,
        Level::M5,
        &[now - Duration::days(60), now - Duration::days(20), now],
    )
    .await
    .unwrap();
    let hour = octoisp_controlplane::rollup::rollup_partitions(
        &db.app,
        Level::H1,
        &[now - Duration::days(500), now],
    )
    .await
    .unwrap();
    let months = octoisp_controlplane::rollup::rollup_partitions(
        &db.app,
        Level::D30,
        &[now - Duration::days(7 * 366), now],
    )
    .await
    .unwrap();
    let exists = |name: String| {
        let pool = db.admin.clone();
        async move {
            sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
                .bind(name)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let sample_name = |d: chrono::NaiveDate| format!("samples_p{}", d.format("%Y%m%d"));
    let dropped = RollupJob::new(db.app.clone(), MetricsConfig::default())
        .retention_once()
        .await
        .unwrap();
    assert!(!exists(sample_name(day(10))).await && !exists(sample_name(day(8))).await);
    assert!(exists(sample_name(day(6))).await && exists(sample_name(day(0))).await);
    assert!(
        !exists(five[0].clone()).await,
        "5-minute rollups of 60 days ago"
    );
    assert!(exists(five[1].clone()).await && exists(five[2].clone()).await);
    assert!(!exists(hour[0].clone()).await && exists(hour[1].clone()).await);
    assert!(!exists(months[0].clone()).await && exists(months[1].clone()).await);
    assert_eq!(dropped.len(), 5, "{dropped:?}");
    // Nobody can drop what is being written: the cutoff must be at least a day old.
    let refused = sqlx::query("SELECT octoisp_drop_metric_partitions('raw', now())")
        .execute(&db.app)
        .await;
    assert!(refused.is_err());
    assert!(exists(sample_name(day(0))).await);
    db.cleanup().await;
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tokio::test]
async fn the_series_api_picks_its_resolution_sums_scopes_and_isolates_tenants() {
    let db = TestDb::new().await;
    let a = tenant(&db, "isp-a").await;
    let b = tenant(&db, "isp-b").await;
    // Two interfaces of router-0 (series 0 and 2) and one of router-1, one sample a minute for 3 days, ending
    // at a 5-minute boundary more than the grace ago; values 1, 10, 100 times the minute index within the hour.
    let end = Level::M5.bucket(Utc::now()) - Duration::minutes(5);
    let start = end - Duration::days(3);
    let mut samples = Vec::new();
    for m in 0..3 * 24 * 60 {
        let ts = start + Duration::minutes(m);
        for (series, scale) in [(0u64, 1.0), (1, 10.0), (2, 100.0)] {
            samples.push(Sample {
                series,
                ts_ms: ts.timestamp_millis(),
                value: scale * (m % 60) as f64,
            });
        }
    }
    for (i, chunk) in samples.chunks(6000).enumerate() {
        let defs = if i == 0 { defs(3) } else { Vec::new() };
        store(&db, &a, i as u64 + 1, defs, chunk).await;
    }
    let b_samples: Vec<Sample> = samples
        .iter()
        .filter(|s| s.series == 0)
        .take(10)
        .copied()
        .collect();
    store(&db, &b, 1, defs(1), &b_samples).await;
    RollupJob::new(db.app.clone(), MetricsConfig::default())
        .run_once()
        .await
        .unwrap();
    let series: Vec<(i64, i64, Uuid)> = sqlx::query_as(
        "SELECT local_id, id, device_id FROM series WHERE provider_id = $1 ORDER BY local_id",
    )
    .bind(a.provider_id)
    .fetch_all(&db.admin)
    .await
    .unwrap();
    let (s0, router0) = (series[0].1, series[0].2);
    let b_series: i64 = sqlx::query_scalar("SELECT id FROM series WHERE provider_id = $1")
        .bind(b.provider_id)
        .fetch_one(&db.admin)
        .await
        .unwrap();

    let mut tokens = HashMap::new();
    tokens.insert("a".to_owned(), caller(a.provider_id, &["metrics:read"]));
    tokens.insert("b".to_owned(), caller(b.provider_id, &["metrics:read"]));
    tokens.insert(
        "a-nometrics".to_owned(),
        caller(a.provider_id, &["devices:read"]),
    );
    let router = support::api::router(&db, tokens);

    // The list of a device's series.
    let (st, body) = get(&router, "a", &format!("/api/v1/series?device_id={router0}")).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(
        items
            .iter()
            .all(|i| i["metric"] == "if.in_bps" && i["labels"]["probe"] == "icmp")
    );
    let (st, body) = get(&router, "b", "/api/v1/series").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        body["items"].as_array().unwrap().len(),
        1,
        "B sees only its own series: {body}"
    );
    assert_eq!(
        get(&router, "a-nometrics", "/api/v1/series").await.0,
        StatusCode::FORBIDDEN
    );

    // Short range: raw samples.
    let uri = |id: i64, from: DateTime<Utc>, to: DateTime<Utc>, points: u32| {
        format!(
            "/api/v1/series/{id}/points?from={}&to={}&points={points}",
            iso(from),
            iso(to)
        )
    };
    let (st, body) = get(&router, "a", &uri(s0, end - Duration::hours(2), end, 600)).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["resolution"], "raw");
    assert_eq!(body["items"].as_array().unwrap().len(), 120);
    // Same range, fewer points: 5-minute rollups, whose values are those of the minutes they hold.
    let (_, body) = get(&router, "a", &uri(s0, end - Duration::hours(2), end, 30)).await;
    assert_eq!(body["resolution"], "5m");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 24);
    let first = &items[0];
    let m0 = ((end - Duration::hours(2) - start).num_minutes() % 60) as f64;
    assert_eq!(first["min"].as_f64(), Some(m0));
    assert_eq!(first["max"].as_f64(), Some(m0 + 4.0));
    assert_eq!(first["avg"].as_f64(), Some(m0 + 2.0));
    assert_eq!(first["last"].as_f64(), Some(m0 + 4.0));
    assert_eq!(first["count"].as_i64(), Some(5));
    // Three days at 600 points: hourly (72 buckets); a month: daily.
    let (_, body) = get(&router, "a", &uri(s0, start, end, 600)).await;
    assert_eq!(body["resolution"], "1h");
    let hours = body["items"].as_array().unwrap();
    assert!((71..=74).contains(&hours.len()), "{}", hours.len());
    let full = hours
        .iter()
        .find(|h| h["count"] == 60)
        .expect("a full hour");
    assert_eq!(full["avg"].as_f64(), Some(29.5));
    assert_eq!(full["min"].as_f64(), Some(0.0));
    assert_eq!(full["max"].as_f64(), Some(59.0));
    // p95 of the twelve 5-minute averages 2, 7, ..., 57: the 12th (ceil(11.4)).
    assert_eq!(full["p95"].as_f64(), Some(57.0));
    let (_, body) = get(&router, "a", &uri(s0, end - Duration::days(30), end, 600)).await;
    assert_eq!(body["resolution"], "1d");
    // Today is not closed: its point is computed from the 5-minute rows so far, and says so.
    let today = Level::D1.bucket(Utc::now() - Duration::seconds(60));
    if end - today >= Duration::minutes(5) {
        let last = body["items"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["partial"], true, "{last}");
        assert_eq!(last["ts"], iso(today).as_str());
        assert_eq!(last["count"].as_i64(), Some((end - today).num_minutes()));
        let days = body["items"].as_array().unwrap();
        assert!(
            days[..days.len() - 1]
                .iter()
                .all(|d| d.get("partial").is_none())
        );
    }
    // A year of a retention-covered range is daily too, and never raw.
    let (_, body) = get(&router, "a", &uri(s0, end - Duration::days(365), end, 600)).await;
    assert_eq!(body["resolution"], "1d");

    // Aggregates: router-0's two interfaces summed per hour (1 + 100 times the minute: 101 * 29.5 on a full
    // hour), the POP's three, the provider's three.
    let agg = |scope: &str, id: Option<Uuid>| {
        let id = id.map(|i| format!("&id={i}")).unwrap_or_default();
        format!(
            "/api/v1/metrics/aggregate?metric=if.in_bps&scope={scope}{id}&from={}&to={}",
            iso(start),
            iso(end)
        )
    };
    let (st, body) = get(&router, "a", &agg("device", Some(router0))).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["resolution"], "1h");
    assert_eq!(body["series_count"], 2);
    let full = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["series"] == 2)
        .cloned();
    let values: Vec<f64> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["value"].as_f64())
        .collect();
    assert!(
        full.is_some() && values.contains(&(101.0 * 29.5)),
        "{values:?}"
    );
    let (_, body) = get(&router, "a", &agg("pop", Some(a.pop_id))).await;
    assert_eq!(body["series_count"], 3);
    assert!(
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["value"].as_f64() == Some(111.0 * 29.5))
    );
    let (_, body) = get(&router, "a", &agg("provider", None)).await;
    assert_eq!(body["series_count"], 3);
    // Bad input: a clear 400.
    for bad in [
        "/api/v1/metrics/aggregate?metric=if.in_bps&scope=galaxy".to_owned(),
        "/api/v1/metrics/aggregate?metric=if.in_bps&scope=device".to_owned(),
        uri(s0, end, start, 600),
        uri(s0, start, end, 0),
        uri(s0, start, end, 1_000_000),
        format!("/api/v1/series/{s0}/points?from=yesterday"),
        "/api/v1/series/abc/points".to_owned(),
    ] {
        let (st, body) = get(&router, "a", &bad).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }

    // Tenant isolation: A's series, device and POP are not found for B, and B's series for A.
    assert_eq!(
        get(&router, "b", &uri(s0, start, end, 600)).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&router, "a", &uri(b_series, start, end, 600)).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&router, "b", &agg("device", Some(router0))).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&router, "b", &agg("pop", Some(a.pop_id))).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&router, "b", &agg("provider", Some(a.provider_id)))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (_, body) = get(&router, "b", &agg("provider", None)).await;
    assert_eq!(body["series_count"], 1);
    db.cleanup().await;
}
