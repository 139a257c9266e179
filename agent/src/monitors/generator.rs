//! Synthetic samples for load tests and benchmarks: `series` gauges, one sample each per tick.
//!
//! Tick `k` produces, for series `i`, the sample `(ts = base + k * interval, value = k * 1000 + i)`. The tick
//! counter and the base time are committed in the same outbox transaction as the tick's samples, so after a
//! crash the generator resumes exactly where its committed data ends: nothing is produced twice or skipped,
//! which lets tests check end-to-end exactly-once delivery.

use std::time::Duration;

use octoisp_shared::{MetricKind, Sample};
use tokio_util::sync::CancellationToken;

use crate::config::GeneratorMonitor;
use crate::monitors::ping::now_ms;
use crate::outbox::Outbox;

/// Runs the generator until `total` samples were produced or `shutdown`.
pub async fn run(cfg: GeneratorMonitor, outbox: Outbox, shutdown: CancellationToken) {
    if let Err(err) = run_inner(&cfg, &outbox, &shutdown).await {
        tracing::error!(generator = %cfg.name, error = %err, "Generator stopped.");
    }
}

async fn run_inner(
    cfg: &GeneratorMonitor,
    outbox: &Outbox,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let device_key = format!("synthetic:{}", cfg.name);
    let mut ids = Vec::with_capacity(cfg.series as usize);
    for i in 0..cfg.series {
        ids.push(outbox.series_id(
            &device_key,
            "synthetic.value",
            &[("i".into(), i.to_string())],
            MetricKind::Gauge,
        )?);
    }
    let state_key = format!("generator.{}", cfg.name);
    let (base_ms, mut tick) = match outbox.state(&state_key)? {
        Some(s) => parse_state(&s).ok_or_else(|| anyhow::anyhow!("bad generator state {s:?}"))?,
        None => (now_ms(), 0),
    };
    let ticks_total = if cfg.total == 0 {
        u64::MAX
    } else {
        cfg.total.div_ceil(u64::from(cfg.series))
    };
    let mut ticker = tokio::time::interval(Duration::from_millis(cfg.interval_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while tick < ticks_total {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = ticker.tick() => {}
        }
        let remaining = if cfg.total == 0 {
            u64::MAX
        } else {
            cfg.total - tick * u64::from(cfg.series)
        };
        let ts_ms = base_ms + (tick * cfg.interval_ms) as i64;
        let samples: Vec<Sample> = ids
            .iter()
            .take(remaining.min(ids.len() as u64) as usize)
            .enumerate()
            .map(|(i, id)| Sample {
                series: *id,
                ts_ms,
                value: (tick * 1000 + i as u64) as f64,
            })
            .collect();
        tick += 1;
        outbox
            .append_samples_with_state(samples, &state_key, &format!("{base_ms}:{tick}"))
            .await?;
    }
    tracing::info!(generator = %cfg.name, ticks = tick, "Generator finished.");
    Ok(())
}

fn parse_state(s: &str) -> Option<(i64, u64)> {
    let (base, tick) = s.split_once(':')?;
    Some((base.parse().ok()?, tick.parse().ok()?))
}
