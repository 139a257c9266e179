//! Command queue benchmark against a real Redis: the throughput of the queue path (enqueue, then workers that
//! reserve and complete), and a small tenant's queue wait while a large tenant floods.
//!
//! ```text
//! cargo run --release -p octoisp-controlplane --example queue_bench -- \
//!     [--redis redis://127.0.0.1:6379] [--jobs 200000] [--tenants 100] [--workers 4] [--batch 100] \
//!     [--flood 100000] [--small-jobs 300] [--small-every-ms 10] [--batch-complete]
//! ```
//!
//! 1. **Throughput**: `--jobs` jobs over `--tenants` tenants spread over the three tiers, enqueued in batches of
//!    500 (timed: enqueue rate); then `--workers` tasks each `reserve(--batch)` and complete every lease until
//!    all are done (timed: jobs/s through reserve + complete), once with one `complete` per job (the completes of
//!    a batch run concurrently on the multiplexed connection) and once with one `complete_many` per batch. Then
//!    enqueue and workers at once (the whole queue path: enqueue → reserve → complete).
//! 2. **Flood**: a large tenant enqueues `--flood` jobs in one go (Large tier, no per-tenant limits: the worst
//!    case) while two small tenants, one in the same Large tier and one in the Small tier, each enqueue one job
//!    every `--small-every-ms`; the workers drain everything. The small tenants' queue wait is
//!    `leased_ms - ready_ms` of their leases (both Redis time): p50, p99, max.
//!
//! Keys live under a fresh `bench:queue:<random>` prefix, deleted at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use octoisp_controlplane::queue::{NewJob, Queue, QueueConfig, Tier};
use tokio::sync::Mutex;
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(about = "Command queue throughput and small-tenant wait under a flood")]
struct Args {
    /// Redis URL.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// Jobs for the throughput phase.
    #[arg(long, default_value_t = 200_000)]
    jobs: usize,
    /// Tenants in the throughput phase (spread over the tiers).
    #[arg(long, default_value_t = 100)]
    tenants: usize,
    /// Concurrent workers.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Leases per reserve call.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Jobs the large tenant floods.
    #[arg(long, default_value_t = 100_000)]
    flood: usize,
    /// Jobs each small tenant enqueues during the flood.
    #[arg(long, default_value_t = 300)]
    small_jobs: usize,
    /// Interval between a small tenant's jobs.
    #[arg(long, default_value_t = 10)]
    small_every_ms: u64,
    /// Workers complete a reserved batch with one `complete_many` instead of one `complete` per job (phases 1b
    /// and 2; phase 1a measures both).
    #[arg(long)]
    batch_complete: bool,
}

fn cfg() -> QueueConfig {
    QueueConfig {
        prefix: format!("bench:queue:{}", Uuid::new_v4().simple()),
        tenant_concurrency: [0, 0, 0],
        tenant_rate: [0.0, 0.0, 0.0],
        ..QueueConfig::default()
    }
}

fn job(tenant: Uuid, tier: Tier, i: usize) -> NewJob {
    NewJob {
        id: Uuid::new_v4(),
        provider_id: tenant,
        tier,
        payload: format!("{{\"kind\":\"ping\",\"target\":\"192.0.2.{}\"}}", i % 250),
        not_before_ms: None,
    }
}

/// Runs `workers` tasks that reserve and complete until `stop` is set and the queue is empty, or `target` jobs
/// are done. Every lease is passed to `seen`.
#[allow(clippy::too_many_arguments)]
async fn run_workers(
    q: &Queue,
    many: bool,
    workers: usize,
    batch: usize,
    target: u64,
    done: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<(Uuid, i64)>>>,
    watch: Arc<Vec<Uuid>>,
) -> anyhow::Result<()> {
    let mut set = tokio::task::JoinSet::new();
    for w in 0..workers {
        let q = q.clone();
        let done = done.clone();
        let seen = seen.clone();
        let watch = watch.clone();
        set.spawn(async move {
            let name = format!("bench-{w}");
            while done.load(Ordering::Relaxed) < target {
                let leases = q.reserve(&name, batch).await?;
                if leases.is_empty() {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                let mine: Vec<(Uuid, i64)> = leases
                    .iter()
                    .filter(|l| watch.contains(&l.provider_id))
                    .map(|l| (l.provider_id, l.leased_ms - l.ready_ms))
                    .collect();
                if !mine.is_empty() {
                    seen.lock().await.extend(mine);
                }
                let n = if many {
                    let ids: Vec<(Uuid, Option<u32>)> =
                        leases.iter().map(|l| (l.id, Some(l.attempt))).collect();
                    q.complete_many(&ids)
                        .await?
                        .into_iter()
                        .filter(|d| *d)
                        .count()
                } else {
                    let results = futures::future::join_all(
                        leases.iter().map(|l| q.complete(l.id, Some(l.attempt))),
                    )
                    .await;
                    let mut n = 0;
                    for r in results {
                        if r? {
                            n += 1;
                        }
                    }
                    n
                };
                done.fetch_add(n as u64, Ordering::Relaxed);
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}

async fn enqueue_all(q: &Queue, jobs: &[NewJob]) -> anyhow::Result<()> {
    for chunk in jobs.chunks(500) {
        q.enqueue(chunk).await?;
    }
    Ok(())
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn cleanup(url: &str, prefix: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(5000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let _: i64 = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut conn)
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tenants: Vec<(Uuid, Tier)> = (0..args.tenants.max(1))
        .map(|i| (Uuid::new_v4(), Tier::ALL[i % 3]))
        .collect();
    let jobs: Vec<NewJob> = (0..args.jobs)
        .map(|i| {
            let (t, tier) = tenants[i % tenants.len()];
            job(t, tier, i)
        })
        .collect();
    let none = Arc::new(Vec::new());

    // 1a. Enqueue, then drain: once completing job by job, once with complete_many.
    for many in [false, true] {
        let q = Queue::connect(&args.redis, cfg()).await?;
        let jobs: Vec<NewJob> = jobs
            .iter()
            .map(|j| NewJob {
                id: Uuid::new_v4(),
                ..j.clone()
            })
            .collect();
        let t0 = Instant::now();
        enqueue_all(&q, &jobs).await?;
        let enq = t0.elapsed();
        let t1 = Instant::now();
        run_workers(
            &q,
            many,
            args.workers,
            args.batch,
            args.jobs as u64,
            Arc::new(AtomicU64::new(0)),
            Arc::new(Mutex::new(Vec::new())),
            none.clone(),
        )
        .await?;
        let drain = t1.elapsed();
        let s = q.stats().await?;
        println!(
            "enqueue: {} jobs in {:.2} s = {:.0} jobs/s (batches of 500)",
            args.jobs,
            enq.as_secs_f64(),
            args.jobs as f64 / enq.as_secs_f64()
        );
        println!(
            "reserve+{}: {} jobs, {} workers x {}, {:.2} s = {:.0} jobs/s (completed counter {})",
            if many { "complete_many" } else { "complete" },
            args.jobs,
            args.workers,
            args.batch,
            drain.as_secs_f64(),
            args.jobs as f64 / drain.as_secs_f64(),
            s.counters.completed
        );
        cleanup(&args.redis, &q.config().prefix).await?;
    }

    // 1b. Enqueue and drain at once: the whole queue path.
    let q = Queue::connect(&args.redis, cfg()).await?;
    let jobs: Vec<NewJob> = jobs
        .iter()
        .map(|j| NewJob {
            id: Uuid::new_v4(),
            ..j.clone()
        })
        .collect();
    let t2 = Instant::now();
    let producer = {
        let q = q.clone();
        tokio::spawn(async move { enqueue_all(&q, &jobs).await })
    };
    run_workers(
        &q,
        args.batch_complete,
        args.workers,
        args.batch,
        args.jobs as u64,
        Arc::new(AtomicU64::new(0)),
        Arc::new(Mutex::new(Vec::new())),
        none.clone(),
    )
    .await?;
    producer.await??;
    let both = t2.elapsed();
    println!(
        "enqueue -> reserve -> {}, concurrently: {} jobs in {:.2} s = {:.0} jobs/s",
        if args.batch_complete {
            "complete_many"
        } else {
            "complete"
        },
        args.jobs,
        both.as_secs_f64(),
        args.jobs as f64 / both.as_secs_f64()
    );
    cleanup(&args.redis, &q.config().prefix).await?;

    // 2. Flood.
    let q = Queue::connect(&args.redis, cfg()).await?;
    let big = Uuid::new_v4();
    let small_same = Uuid::new_v4();
    let small_tier = Uuid::new_v4();
    let flood: Vec<NewJob> = (0..args.flood).map(|i| job(big, Tier::Large, i)).collect();
    let total = (args.flood + 2 * args.small_jobs) as u64;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let t3 = Instant::now();
    let flooder = {
        let q = q.clone();
        tokio::spawn(async move { enqueue_all(&q, &flood).await })
    };
    let smalls = {
        let q = q.clone();
        let stop = stop.clone();
        let (n, every) = (args.small_jobs, args.small_every_ms);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(every));
            for i in 0..n {
                tick.tick().await;
                q.enqueue(&[
                    job(small_same, Tier::Large, i),
                    job(small_tier, Tier::Small, i),
                ])
                .await?;
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            anyhow::Ok(())
        })
    };
    run_workers(
        &q,
        args.batch_complete,
        args.workers,
        args.batch,
        total,
        Arc::new(AtomicU64::new(0)),
        seen.clone(),
        Arc::new(vec![small_same, small_tier]),
    )
    .await?;
    stop.store(true, Ordering::Relaxed);
    flooder.await??;
    smalls.await??;
    let flood_time = t3.elapsed();
    let seen = seen.lock().await;
    for (name, tenant) in [("same tier", small_same), ("small tier", small_tier)] {
        let mut waits: Vec<i64> = seen
            .iter()
            .filter(|(t, _)| *t == tenant)
            .map(|(_, w)| *w)
            .collect();
        waits.sort_unstable();
        println!(
            "flood {} jobs + small tenant ({name}) {} jobs: wait p50 {} ms, p99 {} ms, max {} ms",
            args.flood,
            waits.len(),
            percentile(&waits, 0.5),
            percentile(&waits, 0.99),
            waits.last().copied().unwrap_or(0)
        );
    }
    println!(
        "flood drained in {:.2} s = {:.0} jobs/s",
        flood_time.as_secs_f64(),
        total as f64 / flood_time.as_secs_f64()
    );
    cleanup(&args.redis, &q.config().prefix).await?;
    Ok(())
}
