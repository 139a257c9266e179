//! Notification leg latency: from the commit of an `alert_events` row (what the alert engine does) to the arrival
//! of its webhook at a local receiver, through the real dispatcher and delivery worker.
//!
//! ```text
//! cargo run --release -p octoisp-controlplane --example notify_bench -- \
//!     [--single 50] [--burst 2000] [--bursts 3] [--instances 1] [--window-ms 0]
//! ```
//!
//! PostgreSQL: `$OCTOISP_TEST_PG` (an admin URL; default `postgres://postgres@127.0.0.1:5432/postgres`). The
//! benchmark makes a database `octoisp_t_<random>`, a provider with one webhook channel (rate limit out of reach)
//! and one policy, starts `--instances` notifiers (dispatcher + delivery worker each, own pool), then:
//!
//! - **single**: `--single` events one at a time, each in its own transaction, waiting for its webhook before the
//!   next (latency of a lone alert on an idle notifier);
//! - **burst**: `--bursts` times, `--burst` events (distinct groups) committed in one transaction; every event's
//!   latency is measured from that commit to the arrival of the request carrying it.
//!
//! The grouping window (`--window-ms`, production default 15000) is added to every figure as is: 0 measures the
//! pipeline itself. Prints p50, p99 and max per phase, and the burst's drain rate.

#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clap::Parser;
use octoisp_controlplane::db;
use octoisp_controlplane::notify::{self, NotifyConfig};
use support::TestDb;
use support::fixtures::tenant;
use support::standins::HttpReceiver;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(about = "Latency from alert_events commit to webhook arrival")]
struct Args {
    /// Lone events, one at a time.
    #[arg(long, default_value_t = 50)]
    single: usize,
    /// Events per burst (one transaction).
    #[arg(long, default_value_t = 2000)]
    burst: usize,
    /// Bursts.
    #[arg(long, default_value_t = 3)]
    bursts: usize,
    /// Notifier instances (each a dispatcher and a delivery worker with its own pool).
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// Grouping window, milliseconds.
    #[arg(long, default_value_t = 0)]
    window_ms: u64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut v: Vec<Duration>) {
    v.sort_unstable();
    println!(
        "{name:>8}: n={:>6} p50={:>8.1} ms  p99={:>8.1} ms  max={:>8.1} ms",
        v.len(),
        percentile(&v, 0.50).as_secs_f64() * 1e3,
        percentile(&v, 0.99).as_secs_f64() * 1e3,
        v.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

/// Inserts `n` events of distinct groups in one transaction; returns their ids and the instant after COMMIT.
async fn insert(db: &TestDb, provider: Uuid, n: usize) -> (Vec<i64>, Instant) {
    let mut tx = db::tenant_tx(&db.app, provider).await.unwrap();
    let alerts: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
    let keys: Vec<String> = alerts.iter().map(|a| format!("alert:{a}")).collect();
    let ids: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO alert_events (provider_id, alert_id, kind, severity, group_key, rule_name, target, facts) \
         SELECT $1, a, 'firing', 'critical', k, 'Perda de pacotes', 'OLT Centro', \
                '{\"metric\": \"loss_pct\", \"value\": 12.5, \"threshold\": 5, \"operator\": \">\", \"unit\": \"%\"}' \
         FROM UNNEST($2::uuid[], $3::text[]) AS t(a, k) RETURNING id",
    )
    .bind(provider)
    .bind(&alerts)
    .bind(&keys)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    sqlx::query("SELECT pg_notify('octoisp_alert_events', $1::text)")
        .bind(provider)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    (ids, Instant::now())
}

/// Waits until the receiver has `total` requests; returns the arrival instant of every event id.
async fn arrivals(rx: &HttpReceiver, total: usize) -> HashMap<i64, Instant> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while rx.count() < total {
        assert!(Instant::now() < deadline, "gave up waiting for deliveries");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut at = HashMap::new();
    for r in rx.requests() {
        if let Some(ids) = r.json()["notification"]["event_ids"].as_array() {
            for id in ids.iter().filter_map(|v| v.as_i64()) {
                at.insert(id, r.at);
            }
        }
    }
    at
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let db = TestDb::new().await;
    let t = tenant(&db, "bench").await;
    let rx = HttpReceiver::start(&[], 200).await;
    let channel: Uuid = sqlx::query_scalar(
        "INSERT INTO notification_channels (provider_id, name, kind, config, secret, rate_limit_per_minute) \
         VALUES ($1, 'bench', 'webhook', jsonb_build_object('url', $2::text), 'whsec_bench', 10000) RETURNING id",
    )
    .bind(t.provider_id)
    .bind(format!("{}/hook", rx.url()))
    .fetch_one(&db.admin)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO notification_policies (provider_id, name, channel_id, severities) \
         VALUES ($1, 'all', $2, '{info,warning,critical}')",
    )
    .bind(t.provider_id)
    .bind(channel)
    .execute(&db.admin)
    .await
    .unwrap();

    let cfg = NotifyConfig {
        grouping_window_ms: args.window_ms,
        poll_interval_ms: 1000,
        delivery_batch: 200,
        max_concurrent_sends: 32,
        // The receiver listens on loopback.
        allow_private_targets: true,
        ..NotifyConfig::default()
    };
    let (shutdown, tracker) = (CancellationToken::new(), TaskTracker::new());
    for _ in 0..args.instances {
        notify::spawn(
            db.app_pool(12).await,
            cfg.clone(),
            Default::default(),
            &tracker,
            shutdown.clone(),
        )
        .unwrap();
    }
    tracker.close();
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "notify_bench: single={} burst={}x{} instances={} window_ms={}",
        args.single, args.bursts, args.burst, args.instances, args.window_ms
    );

    let mut expected = 0;
    let mut single = Vec::new();
    for _ in 0..args.single {
        let (ids, committed) = insert(&db, t.provider_id, 1).await;
        expected += 1;
        let at = arrivals(&rx, expected).await;
        single.push(at[&ids[0]].saturating_duration_since(committed));
    }
    report("single", single);

    let mut burst = Vec::new();
    for b in 0..args.bursts {
        let (ids, committed) = insert(&db, t.provider_id, args.burst).await;
        expected += args.burst;
        let at = arrivals(&rx, expected).await;
        let mut last = committed;
        for id in &ids {
            burst.push(at[id].saturating_duration_since(committed));
            last = last.max(at[id]);
        }
        let drain = last.saturating_duration_since(committed).as_secs_f64();
        println!(
            "   burst {b}: {} events drained in {:.2} s ({:.0} events/s)",
            args.burst,
            drain,
            args.burst as f64 / drain.max(1e-9)
        );
    }
    report("burst", burst);
    shutdown.cancel();
    tracker.wait().await;
    db.cleanup().await;
}
