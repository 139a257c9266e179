//! Continuous ping (SmokePing style): every interval, `count` ICMP echo probes to each target, reduced to
//! min/avg/max/p95 RTT, jitter and loss of the round plus loss over a sliding five-minute window, committed as
//! samples; `ping.down` / `ping.up` events when a target stops or starts answering.
//!
//! The probes go through [`crate::diag::ping::IcmpEngine`]: one ICMP socket per address family shared by
//! every target, sends paced by the process-wide packet budget, so thousands of targets cost no thread or
//! socket each, and rounds start at a random offset so targets do not probe in step.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use octoisp_shared::{Event, MetricKind, Record, Sample, Severity};
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::config::PingMonitor;
use crate::diag::ping::IcmpEngine;
use crate::diag::stats::{RttSummary, SlidingWindow};
use crate::outbox::Outbox;

/// Span of the sliding window over which `ping.loss_ratio_5m` is computed.
const WINDOW_MS: u64 = 5 * 60 * 1000;

/// The series a ping monitor writes, in sample order.
const METRICS: [&str; 7] = [
    "ping.loss_ratio",
    "ping.loss_ratio_5m",
    "ping.rtt_min_ms",
    "ping.rtt_avg_ms",
    "ping.rtt_max_ms",
    "ping.rtt_p95_ms",
    "ping.jitter_ms",
];

/// The monitor of one target.
#[derive(Debug)]
pub struct PingTask {
    monitor: String,
    target: IpAddr,
    interval: Duration,
    count: u16,
    timeout: Duration,
    payload: Vec<u8>,
    engine: IcmpEngine,
    outbox: Outbox,
}

impl PingTask {
    /// Prepares the monitor of `target`.
    pub fn new(cfg: &PingMonitor, target: IpAddr, engine: IcmpEngine, outbox: Outbox) -> PingTask {
        PingTask {
            monitor: cfg.name.clone(),
            target,
            interval: Duration::from_millis(cfg.interval_ms),
            count: cfg.count,
            timeout: Duration::from_millis(cfg.timeout_ms),
            payload: vec![0u8; usize::from(cfg.size)],
            engine,
            outbox,
        }
    }

    /// Runs rounds until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let device_key = format!("icmp:{}", self.target);
        let labels = vec![("monitor".to_owned(), self.monitor.clone())];
        let ids: Result<Vec<u64>, _> = METRICS
            .iter()
            .map(|m| {
                self.outbox
                    .series_id(&device_key, m, &labels, MetricKind::Gauge)
            })
            .collect();
        let ids = match ids {
            Ok(ids) => ids,
            Err(err) => {
                tracing::error!(target = %self.target, error = %err, "Ping monitor cannot register its series.");
                return;
            }
        };
        let ident: u16 = rand::rng().random();
        let jitter = rand::rng().random_range(0..=self.interval.as_millis().max(1) as u64);
        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_millis(jitter),
            self.interval,
        );
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq: u16 = 0;
        let mut up: Option<bool> = None;
        let mut window = SlidingWindow::new(WINDOW_MS);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let ts_ms = now_ms();
            let mut rtts = Vec::with_capacity(usize::from(self.count));
            for i in 0..self.count {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                seq = seq.wrapping_add(1);
                let sent_ms = u64::try_from(now_ms()).unwrap_or(0);
                let rtt = self
                    .engine
                    .probe(self.target, ident, seq, &self.payload, self.timeout)
                    .await
                    .map(|(rtt, _, _)| rtt);
                window.push(sent_ms, rtt);
                rtts.push(rtt);
            }
            let stats = RttSummary::from_probes(&rtts);
            let values = round_values(&stats, &window.summary());
            let samples: Vec<Sample> = ids
                .iter()
                .zip(values)
                .filter_map(|(id, v)| {
                    v.map(|value| Sample {
                        series: *id,
                        ts_ms,
                        value,
                    })
                })
                .collect();
            if let Err(err) = self.outbox.append_samples(samples).await {
                tracing::error!(target = %self.target, error = %err, "Ping samples not stored.");
            }
            let now_up = stats.received > 0;
            if up.is_some_and(|was| was != now_up) {
                let (kind, severity, message) = if now_up {
                    (
                        "ping.up",
                        Severity::Info,
                        format!("{} answers ping again", self.target),
                    )
                } else {
                    (
                        "ping.down",
                        Severity::Critical,
                        format!("{} stopped answering ping", self.target),
                    )
                };
                let event = Event {
                    id: uuid::Uuid::now_v7(),
                    ts_ms,
                    device_key: Some(device_key.clone()),
                    kind: kind.into(),
                    severity,
                    message,
                    attrs: vec![("monitor".into(), self.monitor.clone())],
                };
                if let Err(err) = self.outbox.append_records(vec![Record::Event(event)]).await {
                    tracing::error!(target = %self.target, error = %err, "Ping event not stored.");
                }
            }
            up = Some(now_up);
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The values of [`METRICS`] for a round (`None` = no sample: RTTs of a round where nothing answered).
fn round_values(round: &RttSummary, window: &RttSummary) -> [Option<f64>; 7] {
    [
        Some(round.loss_pct / 100.0),
        Some(window.loss_pct / 100.0),
        round.min_ms,
        round.avg_ms,
        round.max_ms,
        round.p95_ms,
        round.jitter_ms,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_round_writes_only_loss() {
        let round = RttSummary::from_probes(&[None, None]);
        let window = RttSummary::from_probes(&[Some(1.0), Some(1.0), None, None]);
        assert_eq!(
            round_values(&round, &window),
            [Some(1.0), Some(0.5), None, None, None, None, None]
        );
        let round = RttSummary::from_probes(&[Some(2.0), Some(4.0)]);
        let v = round_values(&round, &round);
        assert_eq!(v[0], Some(0.0));
        assert_eq!(v[3], Some(3.0));
        assert_eq!(v[6], Some(2.0));
    }
}
