//! Throughput of the outbox on this machine: `append_samples` with chunks of 1000 samples (one producer, then
//! concurrent producers sharing group commits), and `next_batch` + `ack` draining it, for both `synchronous`
//! settings. Not a test: it only prints figures.
//!
//! ```text
//! cargo run --release -p octoisp-agent --example outbox_bench -- [CHUNKS] [PRODUCERS]
//! ```
//!
//! Inputs: CHUNKS appends (default 1000) of 1000 samples over 1000 gauge series (a ping-like RTT with jitter, one
//! timestamp per round of series), PRODUCERS concurrent tasks (default 8), batches of up to 50 000 samples at zstd
//! level 3, the outbox in a temporary directory (so on the file system holding `$TMPDIR`).

use std::time::Instant;

use octoisp_agent::outbox::{Outbox, OutboxConfig, Synchronous};
use octoisp_shared::{MetricKind, Sample};

const CHUNK: usize = 1000;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let chunks: usize = args.next().map_or(Ok(1000), |a| a.parse())?;
    let producers: usize = args.next().map_or(Ok(8), |a| a.parse())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!("outbox_bench: {chunks} appends of {CHUNK} samples, {producers} concurrent producers");
    for sync in [Synchronous::Full, Synchronous::Normal] {
        for concurrency in [1, producers] {
            rt.block_on(run(sync, chunks, concurrency))?;
        }
    }
    Ok(())
}

async fn run(sync: Synchronous, chunks: usize, producers: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = OutboxConfig {
        synchronous: sync,
        max_bytes: 8 << 30,
        hard_ceiling_bytes: 8 << 30,
        ..OutboxConfig::new(dir.path().join("outbox.db"))
    };
    let outbox = Outbox::open(cfg)?;
    let ids: Vec<u64> = (0..CHUNK)
        .map(|i| {
            outbox.series_id(
                "icmp:192.0.2.1",
                "ping.rtt_ms",
                &[("i".into(), i.to_string())],
                MetricKind::Gauge,
            )
        })
        .collect::<Result<_, _>>()?;

    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let (ob, ids) = (outbox.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ p as u64;
            for round in (p..chunks).step_by(producers) {
                let ts = 1_700_000_000_000 + round as i64 * 10_000;
                let samples: Vec<Sample> = ids
                    .iter()
                    .map(|&series| {
                        rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                        let jitter = (rng >> 40) as f64 / (1u64 << 24) as f64;
                        Sample {
                            series,
                            ts_ms: ts,
                            value: 12.0 + jitter * 3.0,
                        }
                    })
                    .collect();
                ob.append_samples(samples).await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let append = started.elapsed();
    let stats = outbox.stats()?;

    let ob = outbox.clone();
    let (form, ack, batches, frame_bytes) = tokio::task::spawn_blocking(move || {
        let (mut form, mut ack, mut n, mut bytes) =
            (std::time::Duration::ZERO, std::time::Duration::ZERO, 0, 0);
        loop {
            let t = Instant::now();
            let Some(p) = ob.next_batch()? else { break };
            form += t.elapsed();
            let t = Instant::now();
            ob.ack(p.seq)?;
            ack += t.elapsed();
            n += 1;
            bytes += p.frame.len();
        }
        Ok::<_, anyhow::Error>((form, ack, n, bytes))
    })
    .await??;

    let samples = (chunks * CHUNK) as f64;
    println!(
        "synchronous={sync:?} producers={producers}: append {:.0} appends/s = {:.2} M samples/s ({:.2} ms/append avg, \
         {:.1} B/sample stored); next_batch {:.1} ms/batch of {} samples = {:.2} M samples/s, ack {:.2} ms, \
         frame {:.2} B/sample",
        chunks as f64 / append.as_secs_f64(),
        samples / append.as_secs_f64() / 1e6,
        append.as_secs_f64() * 1e3 / chunks as f64 * producers as f64,
        stats.bytes as f64 / samples,
        form.as_secs_f64() * 1e3 / batches.max(1) as f64,
        (chunks * CHUNK) / batches.max(1),
        samples / form.as_secs_f64() / 1e6,
        ack.as_secs_f64() * 1e3 / batches.max(1) as f64,
        frame_bytes as f64 / samples,
    );
    Ok(())
}
