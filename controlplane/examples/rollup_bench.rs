//! Rollup benchmark (see `scripts/bench-rollup.sh` and docs/BENCHMARKS.md).
//!
//! `rollup_bench <admin-url> <app-url> [series] [minutes]`, on an empty database:
//!
//! 1. migrates, inserts provider `bench` with one POP, one agent and `series` interface series (`if.in_bps`,
//!    four per device);
//! 2. loads yesterday's samples, one a minute per series for the first `minutes` minutes of the day (default
//!    1440), with binary `COPY` in time order, and one pending row per 5-minute bucket, as the ingest leaves them;
//! 3. times one pass of the real rollup job (`RollupJob::run_once`, as `octoisp_app`): samples/s;
//! 4. loads a year of one-minute samples of series 1 and its 5-minute, hourly and daily rollups (built with the
//!    same aggregates, one statement per level), then times graph requests of that interface through the real
//!    API router (row-level security, handler, JSON): 30 days and 1 year at the default 600 points, and 30 days
//!    at 1000 points; and the same daily graph computed from the raw samples, for comparison.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use octoisp_controlplane::api::error::ApiError;
use octoisp_controlplane::api::{self, ApiConfig, AppState, Authenticator, RequestContext};
use octoisp_controlplane::auth::Caller;
use octoisp_controlplane::db;
use octoisp_controlplane::ingest::store::{CopyRow, copy_samples};
use octoisp_controlplane::rollup::{Level, MetricsConfig, RollupJob, rollup_partitions};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tower::ServiceExt as _;
use uuid::Uuid;

/// Microseconds between the Unix epoch and PostgreSQL's.
const PG_EPOCH_US: i64 = 946_684_800_000_000;

struct OneToken(Caller);

impl Authenticator for OneToken {
    fn authenticate<'a>(
        &'a self,
        _headers: &'a HeaderMap,
        ctx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Option<Caller>, ApiError>> {
        Box::pin(async move {
            let mut c = self.0.clone();
            c.request_id = ctx.request_id.clone();
            Ok(Some(c))
        })
    }
}

const SEED: &str = r"
INSERT INTO providers (id, slug, name, tier) VALUES ('{provider}', 'bench', 'Bench ISP', 'large');
INSERT INTO pops (id, provider_id, slug, name) VALUES ('{pop}', '{provider}', 'pop-1', 'POP 1');
INSERT INTO agents (id, provider_id, pop_id, hostname, version, cert_fingerprint)
    VALUES ('{agent}', '{provider}', '{pop}', 'bench', '0', repeat('ab', 32));
INSERT INTO devices (provider_id, pop_id, device_key)
    SELECT '{provider}', '{pop}', 'router-' || d FROM generate_series(0, ({series} - 1) / 4) d;
INSERT INTO series (provider_id, agent_id, local_id, device_id, metric, labels, kind)
    SELECT '{provider}', '{agent}', i, d.id, 'if.in_bps', jsonb_build_object('ifIndex', i % 4), 'gauge'
    FROM generate_series(0, {series} - 1) i JOIN devices d ON d.device_key = 'router-' || (i / 4)
    ORDER BY i;
";

fn median(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let p95 = v[((v.len() as f64 * 0.95).ceil() as usize).max(1) - 1];
    (v[v.len() / 2], p95)
}

async fn copy(admin: &PgPool, provider: Uuid, rows: &[CopyRow]) -> anyhow::Result<()> {
    let mut by_day: HashMap<i64, Vec<CopyRow>> = HashMap::new();
    for r in rows {
        by_day
            .entry((r.ts_us + PG_EPOCH_US).div_euclid(86_400_000_000))
            .or_default()
            .push(*r);
    }
    let mut conn = admin.acquire().await?;
    // Each partition's CHECK accepts only the session's tenant's rows.
    sqlx::query("SELECT set_config('app.provider_id', $1, false)")
        .bind(provider.to_string())
        .execute(&mut *conn)
        .await?;
    for (day, rows) in by_day {
        let date = DateTime::from_timestamp(day * 86_400, 0)
            .context("day")?
            .date_naive();
        let parts = db::sample_partitions(admin, &[date]).await?;
        copy_samples(&mut conn, &parts[0].1, provider, &rows).await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (admin_url, app_url) = (
        args.get(1).context("admin URL")?,
        args.get(2).context("app URL")?,
    );
    let series: i64 = args.get(3).map_or(Ok(10_000), |s| s.parse())?;
    let minutes: i64 = args.get(4).map_or(Ok(1440), |s| s.parse())?;
    let admin = PgPoolOptions::new()
        .max_connections(4)
        .connect(admin_url)
        .await?;
    db::migrate(&admin).await?;
    // After the migration, which creates the role.
    let app = PgPoolOptions::new()
        .max_connections(4)
        .connect(app_url)
        .await?;
    let (provider, pop, agent) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let seed = SEED
        .replace("{provider}", &provider.to_string())
        .replace("{pop}", &pop.to_string())
        .replace("{agent}", &agent.to_string())
        .replace("{series}", &series.to_string());
    sqlx::raw_sql(sqlx::AssertSqlSafe(seed))
        .execute(&admin)
        .await?;
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM series ORDER BY local_id")
        .fetch_all(&admin)
        .await?;

    // Yesterday's samples, time order, in chunks of a million rows.
    let day = Level::D1.bucket(Utc::now()) - chrono::Duration::days(1);
    let day_us = day.timestamp() * 1_000_000 - PG_EPOCH_US;
    let total = series * minutes;
    println!("loading {total} samples ({series} series x {minutes} minutes of {day}) with COPY");
    let started = Instant::now();
    let mut rows = Vec::with_capacity(1_000_000);
    for m in 0..minutes {
        for (i, id) in ids.iter().enumerate() {
            rows.push(CopyRow {
                series_id: *id,
                ts_us: day_us + m * 60_000_000 + (i as i64 % 60) * 1_000_000,
                value: 1e6 * ((m + i as i64) % 97) as f64,
            });
        }
        if rows.len() >= 1_000_000 || m == minutes - 1 {
            copy(&admin, provider, &rows).await?;
            rows.clear();
        }
    }
    println!("copy: {:.1} s", started.elapsed().as_secs_f64());
    sqlx::query(
        "INSERT INTO rollup_pending (provider_id, level, bucket) \
         SELECT $1, '5m', b FROM generate_series($2::timestamptz, $3::timestamptz, interval '5 minutes') b",
    )
    .bind(provider)
    .bind(day)
    .bind(day + chrono::Duration::minutes(minutes - 1))
    .execute(&admin)
    .await?;
    sqlx::query("ANALYZE").execute(&admin).await?;

    let cfg = MetricsConfig {
        grace_secs: 10,
        ..MetricsConfig::default()
    };
    let job = RollupJob::new(app.clone(), cfg);
    let started = Instant::now();
    let stats = job.run_once().await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "rollup job: {} buckets, {} rows written in {secs:.1} s: {:.0} samples/s",
        stats.buckets,
        stats.rows,
        total as f64 / secs
    );

    // A year of one interface.
    let one = ids[1];
    let end = day;
    let start = end - chrono::Duration::days(365);
    let mut rows = Vec::new();
    let mut t = start;
    while t < end {
        let m = (t - start).num_minutes();
        rows.push(CopyRow {
            series_id: one,
            ts_us: t.timestamp() * 1_000_000 - PG_EPOCH_US,
            value: 1e6 * (m % 1440) as f64,
        });
        t += chrono::Duration::minutes(1);
    }
    println!("loading a year of series {one}: {} samples", rows.len());
    copy(&admin, provider, &rows).await?;
    let weeks: Vec<DateTime<Utc>> = (0..54)
        .map(|w| start + chrono::Duration::days(7 * w))
        .collect();
    rollup_partitions(&admin, Level::M5, &weeks).await?;
    rollup_partitions(&admin, Level::H1, &weeks).await?;
    rollup_partitions(&admin, Level::D1, &weeks).await?;
    let build = |level: &str, src: &str| {
        format!(
            "INSERT INTO rollup_{level} (provider_id, series_id, bucket, min, max, sum, count, last, last_ts, p95) {src} \
             ON CONFLICT DO NOTHING"
        )
    };
    let m5 = build(
        "5m",
        "SELECT provider_id, series_id, octoisp_rollup_bucket('5m', ts) b, min(value), max(value), sum(value), \
         count(*), (array_agg(value ORDER BY ts DESC))[1], max(ts), \
         percentile_disc(0.95) WITHIN GROUP (ORDER BY value) \
         FROM samples WHERE series_id = $1 AND ts >= $2 AND ts < $3 GROUP BY 1, 2, 3",
    );
    let coarse = |level: &str| {
        build(
            level,
            &format!(
                "SELECT provider_id, series_id, octoisp_rollup_bucket('{level}', bucket) b, min(min), max(max), \
                 sum(sum), sum(count)::bigint, (array_agg(last ORDER BY last_ts DESC))[1], max(last_ts), \
                 percentile_disc(0.95) WITHIN GROUP (ORDER BY sum / count) \
                 FROM rollup_5m WHERE series_id = $1 AND bucket >= $2 AND bucket < $3 GROUP BY 1, 2, 3"
            ),
        )
    };
    for sql in [m5, coarse("1h"), coarse("1d")] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(one)
            .bind(start)
            .bind(end)
            .execute(&admin)
            .await?;
    }
    sqlx::query("ANALYZE").execute(&admin).await?;

    let caller = Caller {
        user_id: Some(Uuid::now_v7()),
        api_key_id: None,
        provider_id: Some(provider),
        permissions: ["metrics:read".to_owned()].into_iter().collect(),
        global_admin: false,
        request_id: String::new(),
        ip: None,
    };
    let router = api::router(AppState {
        pool: app.clone(),
        auth: Arc::new(OneToken(caller)),
        limiter: None,
        config: Arc::new(ApiConfig::default()),
        auth_service: None,
        ca_fingerprint: None,
        live: Default::default(),
        commands: None,
        secrets: Default::default(),
    });
    let iso = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for (label, days, points) in [
        ("30 days", 30, 600),
        ("30 days", 30, 1000),
        ("1 year", 365, 600),
    ] {
        let uri = format!(
            "/api/v1/series/{one}/points?from={}&to={}&points={points}",
            iso(end - chrono::Duration::days(days)),
            iso(end)
        );
        let mut times = Vec::new();
        let mut answer = (String::new(), 0);
        for _ in 0..40 {
            let mut req = Request::builder()
                .uri(&uri)
                .header(header::AUTHORIZATION, "Bearer x")
                .body(Body::empty())?;
            req.extensions_mut()
                .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 1))));
            let t = Instant::now();
            let resp = router.clone().oneshot(req).await?;
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20).await?;
            times.push(t.elapsed());
            anyhow::ensure!(status == StatusCode::OK, "{uri}: {status}");
            let v: serde_json::Value = serde_json::from_slice(&bytes)?;
            answer = (
                v["resolution"].as_str().unwrap_or("").to_owned(),
                v["items"].as_array().map_or(0, Vec::len),
            );
        }
        let (med, p95) = median(times);
        println!(
            "API graph {label} at {points} points: resolution {}, {} points, median {:.2} ms, p95 {:.2} ms",
            answer.0,
            answer.1,
            med.as_secs_f64() * 1e3,
            p95.as_secs_f64() * 1e3
        );
    }
    // The same daily graphs from raw samples, as the application role.
    for (label, days) in [("30 days", 30), ("1 year", 365)] {
        let mut times = Vec::new();
        let mut n = 0;
        for _ in 0..5 {
            let mut tx = db::tenant_tx(&app, provider).await?;
            let t = Instant::now();
            let rows: Vec<(DateTime<Utc>, f64, f64, f64, i64, f64)> = sqlx::query_as(
                "SELECT octoisp_rollup_bucket('1d', ts) b, min(value), max(value), avg(value), count(*), \
                 percentile_disc(0.95) WITHIN GROUP (ORDER BY value) \
                 FROM samples WHERE series_id = $1 AND ts >= $2 AND ts < $3 GROUP BY 1 ORDER BY 1",
            )
            .bind(one)
            .bind(end - chrono::Duration::days(days))
            .bind(end)
            .fetch_all(&mut *tx)
            .await?;
            times.push(t.elapsed());
            n = rows.len();
            tx.commit().await?;
        }
        let (med, _) = median(times);
        println!(
            "raw SQL daily graph {label}: {n} points, median {:.1} ms",
            med.as_secs_f64() * 1e3
        );
    }
    let mut tx = db::tenant_tx(&app, provider).await?;
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN (ANALYZE, BUFFERS) SELECT bucket AS ts, min, max, sum / count AS avg, last, count, p95 \
         FROM rollup_1d WHERE series_id = $1 AND bucket >= $2 AND bucket < $3 ORDER BY bucket",
    )
    .bind(one)
    .bind(end - chrono::Duration::days(365))
    .bind(end)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    println!(
        "plan of the 1-year graph query as octoisp_app:\n{}",
        plan.join("\n")
    );
    Ok(())
}
