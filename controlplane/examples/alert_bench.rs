//! Alert engine benchmark: latency from a batch's `store_batch` commit to the commit of the `alert_events` rows it
//! causes, with `--series` active series in the engine while writers store samples as fast as the store takes
//! them; and the engine's in-memory evaluation rate.
//!
//! ```text
//! cargo run --release -p octoisp-controlplane --example alert_bench -- \
//!     [--series 1000000] [--batch 50000] [--writers 2] [--seconds 60] [--eval-passes 3]
//! ```
//!
//! PostgreSQL: `$OCTOISP_TEST_PG` (admin URL; default `postgres://postgres@127.0.0.1:5432/postgres`); a fresh
//! database `octoisp_t_<random>` is created. Steps:
//!
//! 1. **Setup** (untimed): provider, POP, agent; rules on the benchmark metric (`bench.cpu_percent > 90`, recover
//!    below 80; an absence rule on the same metric; an offline rule); devices and series (100 per device) inserted
//!    with two `generate_series` statements; then one sample per series handed to `Engine::process`, which loads
//!    the series' metadata from PostgreSQL as it does for ingest.
//! 2. **Evaluation rate**: `Engine::process` on `--eval-passes` × `--series` samples that cause no transition
//!    (no database access): samples/s of the engine alone, rule lookup and state machine included.
//! 3. **Latency under load**: the engine runs as in production (its own task, bounded channel from the store);
//!    `--writers` tasks store batches of `--batch` samples, cycling over all series, for `--seconds`. In every
//!    cycle the series whose id is a multiple of 10,000 cross the threshold (fire in even cycles, resolve in odd
//!    ones), so most batches carry a few transitions. Latency = time from the commit of the batch (just before
//!    `store_batch` returns) to the commit of the transaction holding its events, as the engine records it.
//! 4. **To the notification leaving** (`--notify`): the real notifier (dispatcher and delivery worker, default
//!    `[notify]` settings but for the loopback target) runs beside the engine with one webhook channel and one
//!    policy; the receiver is an HTTP server in this process. Latency = from the commit of the batch that caused an
//!    event to the arrival of the webhook request carrying it: sample arrival to notification, the issue's figure.

#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use octoisp_controlplane::alerts::{Engine, EngineConfig};
use octoisp_controlplane::ingest::store::{CopyRow, Store, StoredSamples};
use octoisp_controlplane::notify::{self, NotifyConfig};
use octoisp_shared::{Batch, Sample, SampleBlock, SeriesDef};
use support::TestDb;
use support::fixtures::{now_ms, tenant};
use support::standins::HttpReceiver;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, Parser)]
#[command(about = "Alert engine latency and evaluation rate")]
struct Args {
    /// Active series.
    #[arg(long, default_value_t = 1_000_000)]
    series: u64,
    /// Samples per batch.
    #[arg(long, default_value_t = 50_000)]
    batch: u64,
    /// Concurrent writers.
    #[arg(long, default_value_t = 2)]
    writers: u64,
    /// Length of the load phase.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Capacity of the store -> engine queue, in samples (the `[alerts] queue_samples` setting).
    #[arg(long, default_value_t = octoisp_controlplane::alerts::engine::DEFAULT_QUEUE_SAMPLES)]
    queue_samples: u32,
    /// Passes over all series for the in-memory evaluation rate.
    #[arg(long, default_value_t = 3)]
    eval_passes: u64,
    /// Also run the notifier to a local webhook and measure sample arrival -> notification received.
    #[arg(long)]
    notify: bool,
}

const STEP_MS: i64 = 10_000;
const METRIC: &str = "bench.cpu_percent";
const SERIES_PER_DEVICE: u64 = 100;

fn value(series: u64, cycle: u64) -> f64 {
    if series.is_multiple_of(10_000) && cycle.is_multiple_of(2) {
        95.0
    } else {
        10.0 + (series % 50) as f64
    }
}

fn batch(seq: u64, series: Vec<SeriesDef>, samples: &[Sample]) -> Batch {
    Batch {
        seq,
        settled_below: 0,
        created_ms: now_ms(),
        series,
        samples: SampleBlock::encode(samples),
        records: Vec::new(),
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let db = TestDb::new().await;
    let t = tenant(&db, "bench").await;
    for rule in [
        "'cpu', 'CPU alta', 'bench.cpu_percent', 'threshold', '>', 90, 80, NULL, false",
        "'cpu-silent', 'CPU sem dados', 'bench.cpu_percent', 'absence', NULL, NULL, NULL, 3600, false",
        "'offline', 'Offline', 'any', 'offline', NULL, NULL, NULL, 3600, false",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO alert_rules (provider_id, rule_key, name, metric, kind, op, threshold, recover_threshold, \
             absence_secs, flap_enabled) VALUES ($1, {rule})"
        )))
        .bind(t.provider_id)
        .execute(&db.admin)
        .await
        .expect("insert a rule");
    }
    let pool = db.app_pool(args.writers as u32 + 4).await;
    let engine_pool = db.app_pool(4).await;
    let (mut engine, tx, rx) = Engine::new(
        engine_pool,
        EngineConfig {
            refresh: Duration::from_secs(3600),
            queue_samples: args.queue_samples,
            ..EngineConfig::default()
        },
    );
    let store = Arc::new(Store::new(pool).with_sample_observer(tx));
    let start_ms = now_ms() - 7_200_000;

    // 1. Setup: devices and series in two set-based statements (generate_series), then one sample per series
    //    handed to the engine, which loads their metadata as ingest would make it do.
    let t0 = Instant::now();
    let devices = args.series.div_ceil(SERIES_PER_DEVICE);
    sqlx::query(
        "INSERT INTO devices (provider_id, pop_id, device_key) \
         SELECT $1, $2, 'dev-' || g FROM generate_series(0, $3::bigint - 1) AS g",
    )
    .bind(t.provider_id)
    .bind(t.pop_id)
    .bind(devices as i64)
    .execute(&db.admin)
    .await
    .expect("insert devices");
    sqlx::query(
        "INSERT INTO series (provider_id, agent_id, local_id, device_id, metric, kind) \
         SELECT $1, $2, g, d.id, $4, 'gauge' \
         FROM generate_series(0, $3::bigint - 1) AS g \
         JOIN devices d ON d.provider_id = $1 AND d.pop_id = $5 AND d.device_key = 'dev-' || (g / $6)",
    )
    .bind(t.provider_id)
    .bind(t.agent.agent_id)
    .bind(args.series as i64)
    .bind(METRIC)
    .bind(t.pop_id)
    .bind(SERIES_PER_DEVICE as i64)
    .execute(&db.admin)
    .await
    .expect("insert series");
    sqlx::query("ANALYZE devices, series")
        .execute(&db.admin)
        .await
        .expect("analyze");
    let defined = t0.elapsed().as_secs_f64();
    let series_ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM series ORDER BY local_id")
        .fetch_all(&db.admin)
        .await
        .expect("series ids");
    for chunk in series_ids.chunks(args.batch as usize) {
        let rows = chunk
            .iter()
            .map(|&id| CopyRow {
                series_id: id,
                ts_us: (start_ms - 946_684_800_000) * 1000,
                value: 10.0,
            })
            .collect::<Vec<_>>();
        engine
            .process(StoredSamples {
                provider_id: t.provider_id,
                rows,
                stored_at: Instant::now(),
            })
            .await
            .expect("evaluate a setup batch");
    }
    println!(
        "setup: {} series on {devices} devices defined in {defined:.1} s, loaded into the engine in {:.1} s",
        args.series,
        t0.elapsed().as_secs_f64() - defined
    );
    let seq = 0u64;

    // 2. In-memory evaluation rate: samples that cause no transition.
    let mut evaluated = 0u64;
    let t1 = Instant::now();
    for pass in 1..=args.eval_passes {
        for chunk in series_ids.chunks(args.batch as usize) {
            let rows = chunk
                .iter()
                .map(|&id| CopyRow {
                    series_id: id,
                    ts_us: (start_ms + pass as i64 * 1000 - 946_684_800_000) * 1000,
                    value: 20.0,
                })
                .collect::<Vec<_>>();
            evaluated += rows.len() as u64;
            engine
                .process(StoredSamples {
                    provider_id: t.provider_id,
                    rows,
                    stored_at: Instant::now(),
                })
                .await
                .expect("evaluate");
        }
    }
    let eval_secs = t1.elapsed().as_secs_f64();
    println!(
        "evaluation (in memory, no transitions): {evaluated} samples in {eval_secs:.2} s = {:.0} samples/s",
        evaluated as f64 / eval_secs
    );

    // 4. (set up before the load) The notifier, to a webhook receiver in this process.
    let (notify_stop, notifiers) = (CancellationToken::new(), TaskTracker::new());
    let hook = HttpReceiver::start(&[], 200).await;
    if args.notify {
        let channel: uuid::Uuid = sqlx::query_scalar(
            "INSERT INTO notification_channels (provider_id, name, kind, config, secret, rate_limit_per_minute) \
             VALUES ($1, 'bench', 'webhook', jsonb_build_object('url', $2::text), 'whsec_bench', 10000) \
             RETURNING id",
        )
        .bind(t.provider_id)
        .bind(format!("{}/hook", hook.url()))
        .fetch_one(&db.admin)
        .await
        .expect("insert the channel");
        sqlx::query(
            "INSERT INTO notification_policies (provider_id, name, channel_id, severities) \
             VALUES ($1, 'all', $2, '{info,warning,critical}')",
        )
        .bind(t.provider_id)
        .bind(channel)
        .execute(&db.admin)
        .await
        .expect("insert the policy");
        let cfg = NotifyConfig {
            allow_private_targets: true,
            ..NotifyConfig::default()
        };
        notify::spawn(
            db.app_pool(8).await,
            cfg,
            Default::default(),
            &notifiers,
            notify_stop.clone(),
        )
        .expect("start the notifier");
    }
    notifiers.close();

    // 3. Latency under load.
    let stats = engine.stats();
    let events_before = stats.events.load(Ordering::Relaxed);
    let shutdown = CancellationToken::new();
    let engine_task = tokio::spawn(engine.run(rx, shutdown.clone()));
    let next_batch = Arc::new(AtomicU64::new(0));
    let committed: Arc<std::sync::Mutex<std::collections::HashMap<u64, Instant>>> = Arc::default();
    let stored = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let per_cycle = args.series.div_ceil(args.batch);
    let seq_base = seq;
    let t2 = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..args.writers {
        let (store, next, stored, agent, committed) = (
            store.clone(),
            next_batch.clone(),
            stored.clone(),
            t.agent.clone(),
            committed.clone(),
        );
        let (series, size) = (args.series, args.batch);
        writers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let cycle = n / per_cycle + 1;
                let first = (n % per_cycle) * size;
                let last = (first + size).min(series);
                let ts = start_ms + 1000 * 60 + cycle as i64 * STEP_MS;
                let samples: Vec<Sample> = (first..last)
                    .map(|i| Sample {
                        series: i,
                        ts_ms: ts,
                        value: value(i, cycle),
                    })
                    .collect();
                store
                    .store_batch(
                        &agent,
                        &batch(seq_base + n + 1, Vec::new(), &samples),
                        &samples,
                    )
                    .await
                    .expect("store a batch");
                committed
                    .lock()
                    .expect("commit times")
                    .insert(n, Instant::now());
                stored.fetch_add(samples.len() as u64, Ordering::Relaxed);
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    let load_secs = t2.elapsed().as_secs_f64();
    let total = stored.load(Ordering::Relaxed);
    // Let the engine finish what is queued (its counter covers every sample it evaluated).
    let target = stats.samples.load(Ordering::Relaxed);
    let _ = target;
    let expected = args.series * (1 + args.eval_passes) + total;
    while stats.samples.load(Ordering::Relaxed) < expected {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    engine_task.await.expect("engine");
    let mut lat: Vec<f64> = stats
        .latencies()
        .iter()
        .map(Duration::as_secs_f64)
        .collect();
    lat.sort_by(f64::total_cmp);
    let pct =
        |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1] * 1000.0;
    println!(
        "load: {} samples stored in {load_secs:.1} s = {:.0} samples/s ({} writers, batches of {}), {} series active",
        total,
        total as f64 / load_secs,
        args.writers,
        args.batch,
        args.series
    );
    println!(
        "events written during load: {}; transactions with events: {}",
        stats.events.load(Ordering::Relaxed) - events_before,
        lat.len()
    );
    if !lat.is_empty() {
        println!(
            "latency store commit -> alert_events commit: p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            pct(0.50),
            pct(0.90),
            pct(0.99),
            pct(1.0)
        );
    }
    if args.notify {
        notify_leg(&db, &hook, &committed, per_cycle, args.batch, start_ms).await;
    }
    notify_stop.cancel();
    notifiers.wait().await;
    db.cleanup().await;
}

/// Waits (at most 120 s) until every event is delivered, then prints the latency from the commit of the batch that
/// caused each event to the arrival of its webhook request.
async fn notify_leg(
    db: &TestDb,
    hook: &HttpReceiver,
    committed: &std::sync::Mutex<std::collections::HashMap<u64, Instant>>,
    per_cycle: u64,
    batch: u64,
    start_ms: i64,
) {
    let wait_until = Instant::now() + Duration::from_secs(120);
    let events: i64 = loop {
        let (events, pending): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM alert_events WHERE event_ts > to_timestamp($1::float8 / 1000) \
                       AND suppressed IS NULL), \
                    (SELECT count(*) FROM alert_events WHERE dispatched_at IS NULL) \
                  + (SELECT count(*) FROM notification_deliveries WHERE status <> 'sent')",
        )
        .bind((start_ms + 60_000) as f64)
        .fetch_one(&db.admin)
        .await
        .expect("count the pending notifications");
        if pending == 0 || Instant::now() > wait_until {
            if pending > 0 {
                println!("notify: {pending} events or deliveries still pending after 120 s");
            }
            break events;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Each event's series (local id) and sample time give the batch that caused it.
    let rows: Vec<(i64, i64, f64)> = sqlx::query_as(
        "SELECT e.id, s.local_id, EXTRACT(EPOCH FROM e.event_ts)::float8 * 1000 FROM alert_events e \
         JOIN alerts a ON a.provider_id = e.provider_id AND a.id = e.alert_id \
         JOIN series s ON s.provider_id = e.provider_id AND 'series:' || s.id = a.target_key \
         WHERE e.event_ts > to_timestamp($1::float8 / 1000)",
    )
    .bind((start_ms + 60_000) as f64)
    .fetch_all(&db.admin)
    .await
    .expect("read the events");
    let cause: std::collections::HashMap<i64, u64> = rows
        .into_iter()
        .map(|(id, local, ts)| {
            let cycle = ((ts as i64 - start_ms - 60_000) / STEP_MS) as u64;
            (id, (cycle - 1) * per_cycle + local as u64 / batch)
        })
        .collect();
    let committed = committed.lock().expect("commit times");
    let mut lat = Vec::new();
    for req in hook.requests() {
        let body = req.json();
        let Some(ids) = body["notification"]["event_ids"].as_array() else {
            continue;
        };
        for id in ids.iter().filter_map(serde_json::Value::as_i64) {
            if let Some(at) = cause.get(&id).and_then(|n| committed.get(n)) {
                lat.push(req.at.saturating_duration_since(*at).as_secs_f64() * 1000.0);
            }
        }
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "notify: {events} events to notify, {} webhook requests, {} events matched to their batch",
        hook.requests().len(),
        lat.len()
    );
    if !lat.is_empty() {
        let pct = |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1];
        println!(
            "latency store commit -> webhook received: p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            pct(0.50),
            pct(0.90),
            pct(0.99),
            pct(1.0)
        );
    }
}
