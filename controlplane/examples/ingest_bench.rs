//! Ingest benchmark: `Store::store_batch` against PostgreSQL's own binary COPY of the same rows into the same
//! partition, in the same run, on a fresh database.
//!
//! ```text
//! cargo run --release -p octoisp-controlplane --example ingest_bench -- \
//!     [--samples 1000000] [--series 10000] [--batch 50000] [--writers 1] [--rounds 2]
//! ```
//!
//! PostgreSQL: `$OCTOISP_TEST_PG` (an admin URL; default `postgres://postgres@127.0.0.1:5432/postgres`). The
//! benchmark creates a database `octoisp_t_<random>`, registers a provider, a POP, an agent and `--series` series
//! (ten per device) with one untimed batch, then generates `--samples` samples the way a poller produces them
//! (every series at one instant, then the next instant ten seconds later) and, per round:
//!
//! - **raw COPY** (the ceiling): the admin role sends the rows, already resolved, sorted and encoded, with
//!   `COPY samples_pYYYYMMDD ... FROM STDIN (FORMAT binary)`, one transaction per `--batch` rows;
//! - **store**: `Store::store_batch` as `octoisp_app`, one call per `--batch` samples: validation, tenant
//!   transaction, duplicate check, series resolution, sorting, encoding, COPY, `ingested_batches`, commit.
//!
//! Each side starts from an empty `samples` after a CHECKPOINT. `--writers` runs that many batches at once on
//! each side. Prints samples/s of both and their ratio.

#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use octoisp_controlplane::ingest::store::{self, CopyRow, Store, StoreOutcome};
use octoisp_shared::{Batch, Sample, SampleBlock, SeriesDef};
use sqlx::{Connection, PgConnection};
use support::TestDb;
use support::fixtures::{def, now_ms, tenant};

#[derive(Debug, Parser)]
#[command(about = "Store::store_batch against raw binary COPY of the same rows")]
struct Args {
    /// Samples per round and side.
    #[arg(long, default_value_t = 1_000_000)]
    samples: usize,
    /// Distinct series (ten per device).
    #[arg(long, default_value_t = 10_000)]
    series: u64,
    /// Samples per batch (and per raw COPY transaction).
    #[arg(long, default_value_t = 50_000)]
    batch: usize,
    /// Batches in flight at once on each side.
    #[arg(long, default_value_t = 1)]
    writers: usize,
    /// Rounds (raw then store, alternating).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let db = TestDb::new().await;
    let t = tenant(&db, "bench").await;
    let agent = t.agent.clone();

    // Register the series with one untimed batch.
    let defs: Vec<SeriesDef> = (0..args.series)
        .map(|i| {
            def(
                i,
                &format!("snmp:198.51.{}.{}", i / 2540, (i / 10) % 254),
                "if.in_octets",
            )
        })
        .collect();
    let warm: Vec<Sample> = (0..args.series)
        .map(|i| Sample {
            series: i,
            ts_ms: now_ms() - 3_600_000,
            value: 0.0,
        })
        .collect();
    let store = Arc::new(Store::new(db.app_pool(args.writers as u32 + 2).await));
    let first = Batch {
        seq: 0,
        settled_below: 0,
        created_ms: now_ms(),
        series: defs,
        samples: SampleBlock::encode(&warm),
        records: vec![],
    };
    store
        .store_batch(&agent, &first, &warm)
        .await
        .expect("register the series");

    // The samples: every series at one instant, then the next, ten seconds apart, ending a minute ago.
    let steps = args.samples.div_ceil(args.series as usize) as i64;
    let start = now_ms() - 60_000 - steps * 10_000;
    let samples: Vec<Sample> = (0..args.samples)
        .map(|i| {
            let (step, series) = (i as i64 / args.series as i64, i as u64 % args.series);
            Sample {
                series,
                ts_ms: start + step * 10_000,
                value: (series * 1_000 + step as u64) as f64 * 8.0,
            }
        })
        .collect();
    let day = |ms: i64| ms.div_euclid(86_400_000);
    assert_eq!(
        day(start),
        day(samples.last().map_or(start, |s| s.ts_ms)),
        "the run straddles midnight UTC: rerun"
    );
    let partition = format!(
        "samples_p{}",
        chrono::DateTime::from_timestamp_millis(start)
            .unwrap()
            .format("%Y%m%d")
    );

    // Raw COPY input: the same rows, resolved, sorted and encoded as the store does, prepared before timing.
    let ids: Vec<(i64, i64)> =
        sqlx::query_as("SELECT local_id, id FROM series WHERE agent_id = $1")
            .bind(agent.agent_id)
            .fetch_all(&db.admin)
            .await
            .unwrap();
    let by_local: std::collections::HashMap<u64, i64> =
        ids.into_iter().map(|(l, id)| (l as u64, id)).collect();
    let raw_chunks: Arc<Vec<Vec<CopyRow>>> = Arc::new(
        samples
            .chunks(args.batch)
            .map(|chunk| {
                let mut rows: Vec<CopyRow> = chunk
                    .iter()
                    .map(|s| CopyRow {
                        series_id: by_local[&s.series],
                        ts_us: s.ts_ms * 1000 - 946_684_800_000_000,
                        value: s.value,
                    })
                    .collect();
                rows.sort_unstable_by_key(|r| (r.series_id, r.ts_us));
                rows
            })
            .collect(),
    );
    let batches: Arc<Vec<(Batch, Vec<Sample>)>> = Arc::new(
        samples
            .chunks(args.batch)
            .map(|chunk| {
                let b = Batch {
                    seq: 0,
                    settled_below: 0,
                    created_ms: now_ms(),
                    series: vec![],
                    samples: SampleBlock::encode(chunk),
                    records: vec![],
                };
                (b, chunk.to_vec())
            })
            .collect(),
    );
    drop(samples);

    println!(
        "ingest_bench: {} samples, {} series, batches of {}, {} writer(s), {} round(s); PostgreSQL {}",
        args.samples,
        args.series,
        args.batch,
        args.writers,
        args.rounds,
        pg_version(&db).await
    );
    let mut seq = 1u64;
    let (mut raw_rates, mut store_rates) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        reset(&db).await;
        let raw = raw_copy(
            &db,
            &partition,
            t.provider_id,
            raw_chunks.clone(),
            args.writers,
        )
        .await;
        let raw_rate = args.samples as f64 / raw.as_secs_f64();
        reset(&db).await;
        let started = Instant::now();
        let mut next = 0usize;
        let mut tasks = tokio::task::JoinSet::new();
        while next < batches.len() || !tasks.is_empty() {
            while next < batches.len() && tasks.len() < args.writers {
                let (store, agent, batches) = (store.clone(), agent.clone(), batches.clone());
                let (i, s) = (next, seq);
                tasks.spawn(async move {
                    let (b, samples) = &batches[i];
                    let b = Batch {
                        seq: s,
                        ..b.clone()
                    };
                    store.store_batch(&agent, &b, samples).await
                });
                next += 1;
                seq += 1;
            }
            let outcome = tasks
                .join_next()
                .await
                .unwrap()
                .unwrap()
                .expect("store a batch");
            assert!(matches!(outcome, StoreOutcome::Stored { .. }));
        }
        let stored = started.elapsed();
        let store_rate = args.samples as f64 / stored.as_secs_f64();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM samples")
            .fetch_one(&db.admin)
            .await
            .unwrap();
        assert_eq!(n as usize, args.samples, "every sample stored once");
        println!(
            "round {round}: raw COPY {:>9.0} samples/s ({:.2} s) | store_batch {:>9.0} samples/s ({:.2} s) | {:.1}%",
            raw_rate,
            raw.as_secs_f64(),
            store_rate,
            stored.as_secs_f64(),
            100.0 * store_rate / raw_rate
        );
        raw_rates.push(raw_rate);
        store_rates.push(store_rate);
    }
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    println!(
        "best: raw COPY {:.0} samples/s, store_batch {:.0} samples/s, ratio {:.1}%",
        best(&raw_rates),
        best(&store_rates),
        100.0 * best(&store_rates) / best(&raw_rates)
    );
    db.cleanup().await;
}

/// Empties `samples` and checkpoints, so each side starts from the same state.
async fn reset(db: &TestDb) {
    sqlx::raw_sql("TRUNCATE samples; CHECKPOINT")
        .execute(&db.admin)
        .await
        .unwrap();
}

async fn pg_version(db: &TestDb) -> String {
    sqlx::query_scalar("SHOW server_version")
        .fetch_one(&db.admin)
        .await
        .unwrap()
}

/// Sends every chunk with one binary COPY per transaction as the admin role, `writers` at once.
async fn raw_copy(
    db: &TestDb,
    partition: &str,
    provider: uuid::Uuid,
    chunks: Arc<Vec<Vec<CopyRow>>>,
    writers: usize,
) -> Duration {
    let mut conns = Vec::new();
    for _ in 0..writers {
        let mut conn = PgConnection::connect_with(&db.admin_options())
            .await
            .unwrap();
        // The partitions' tenant CHECK applies to the admin role too.
        sqlx::raw_sql("SET app.global_admin = 'on'")
            .execute(&mut conn)
            .await
            .unwrap();
        conns.push(conn);
    }
    // Encoded before timing: the ceiling is PostgreSQL's work alone.
    let encoded: Vec<Vec<u8>> = chunks
        .iter()
        .map(|rows| store::encode_copy(provider, rows))
        .collect();
    let encoded = Arc::new(encoded);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut conn in conns {
        let (encoded, next, partition) = (encoded.clone(), next.clone(), partition.to_owned());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(buf) = encoded.get(i) else { break };
                let mut tx = conn.begin().await.unwrap();
                let mut copy = tx
                    .copy_in_raw(&format!(
                        "COPY \"{partition}\" (provider_id, series_id, ts, value) FROM STDIN (FORMAT binary)"
                    ))
                    .await
                    .unwrap();
                copy.send(buf.as_slice()).await.unwrap();
                copy.finish().await.unwrap();
                tx.commit().await.unwrap();
            }
            conn.close().await.ok();
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    started.elapsed()
}
