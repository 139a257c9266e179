//! Continuous ping: every interval, `count` ICMP echo probes to each target, reduced to min/avg/max RTT and
//! loss, committed as samples; `ping.down` / `ping.up` events when a target stops or starts answering.
//!
//! One ICMP socket per address family is shared by every target (surge-ping demultiplexes replies by
//! identifier and sequence), so thousands of targets cost no thread each.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use octoisp_shared::{Event, MetricKind, Record, Sample, Severity};
use rand::Rng;
use surge_ping::{Client, Config as PingConfig, ICMP, PingIdentifier, PingSequence};
use tokio_util::sync::CancellationToken;

use crate::config::PingMonitor;
use crate::outbox::Outbox;

/// The shared ICMP clients (one per address family).
#[derive(Clone)]
pub struct Pinger {
    v4: Arc<Client>,
    v6: Option<Arc<Client>>,
}

impl std::fmt::Debug for Pinger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pinger")
            .field("v6", &self.v6.is_some())
            .finish()
    }
}

impl Pinger {
    /// Opens the ICMP sockets (raw sockets need CAP_NET_RAW; IPv6 is optional).
    pub fn new() -> std::io::Result<Pinger> {
        let v4 = Arc::new(Client::new(&PingConfig::default())?);
        let v6 = match Client::new(&PingConfig::builder().kind(ICMP::V6).build()) {
            Ok(c) => Some(Arc::new(c)),
            Err(err) => {
                tracing::warn!(error = %err, "IPv6 ping unavailable.");
                None
            }
        };
        Ok(Pinger { v4, v6 })
    }

    /// One echo probe; `None` when no reply came within `timeout`.
    pub async fn probe(
        &self,
        target: IpAddr,
        ident: u16,
        seq: u16,
        payload: &[u8],
        timeout: Duration,
    ) -> Option<Duration> {
        let client = match target {
            IpAddr::V4(_) => &self.v4,
            IpAddr::V6(_) => self.v6.as_ref()?,
        };
        let mut pinger = client.pinger(target, PingIdentifier(ident)).await;
        pinger.timeout(timeout);
        pinger
            .ping(PingSequence(seq), payload)
            .await
            .ok()
            .map(|(_, rtt)| rtt)
    }
}

/// Statistics of one round of probes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundStats {
    /// Probes sent.
    pub sent: u16,
    /// Replies received.
    pub received: u16,
    /// Smallest RTT, ms.
    pub min_ms: f64,
    /// Mean RTT, ms.
    pub avg_ms: f64,
    /// Largest RTT, ms.
    pub max_ms: f64,
}

impl RoundStats {
    /// Reduces the RTTs of a round (`None` = lost).
    pub fn from_rtts(rtts: &[Option<Duration>]) -> RoundStats {
        let got: Vec<f64> = rtts
            .iter()
            .flatten()
            .map(|d| d.as_secs_f64() * 1e3)
            .collect();
        let (min, max, sum) = got
            .iter()
            .fold((f64::INFINITY, 0.0f64, 0.0), |(mi, ma, s), &v| {
                (mi.min(v), ma.max(v), s + v)
            });
        RoundStats {
            sent: u16::try_from(rtts.len()).unwrap_or(u16::MAX),
            received: u16::try_from(got.len()).unwrap_or(u16::MAX),
            min_ms: if got.is_empty() { f64::NAN } else { min },
            avg_ms: if got.is_empty() {
                f64::NAN
            } else {
                sum / got.len() as f64
            },
            max_ms: if got.is_empty() { f64::NAN } else { max },
        }
    }

    /// Fraction of probes lost, 0..=1.
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            f64::from(self.sent - self.received) / f64::from(self.sent)
        }
    }
}

/// The monitor of one target.
#[derive(Debug)]
pub struct PingTask {
    monitor: String,
    target: IpAddr,
    interval: Duration,
    count: u16,
    timeout: Duration,
    payload: Vec<u8>,
    pinger: Pinger,
    outbox: Outbox,
}

impl PingTask {
    /// Prepares the monitor of `target`.
    pub fn new(cfg: &PingMonitor, target: IpAddr, pinger: Pinger, outbox: Outbox) -> PingTask {
        PingTask {
            monitor: cfg.name.clone(),
            target,
            interval: Duration::from_millis(cfg.interval_ms),
            count: cfg.count,
            timeout: Duration::from_millis(cfg.timeout_ms),
            payload: vec![0u8; usize::from(cfg.size)],
            pinger,
            outbox,
        }
    }

    /// Runs rounds until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let device_key = format!("icmp:{}", self.target);
        let labels = vec![("monitor".to_owned(), self.monitor.clone())];
        let ids: Result<Vec<u64>, _> = [
            "ping.rtt_min_ms",
            "ping.rtt_avg_ms",
            "ping.rtt_max_ms",
            "ping.loss_ratio",
        ]
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
                rtts.push(
                    self.pinger
                        .probe(self.target, ident, seq, &self.payload, self.timeout)
                        .await,
                );
            }
            let stats = RoundStats::from_rtts(&rtts);
            let mut samples = vec![Sample {
                series: ids[3],
                ts_ms,
                value: stats.loss(),
            }];
            if stats.received > 0 {
                for (id, v) in ids.iter().zip([stats.min_ms, stats.avg_ms, stats.max_ms]) {
                    samples.push(Sample {
                        series: *id,
                        ts_ms,
                        value: v,
                    });
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_stats() {
        let ms = |v| Some(Duration::from_millis(v));
        let s = RoundStats::from_rtts(&[ms(2), None, ms(4), None]);
        assert_eq!((s.sent, s.received), (4, 2));
        assert_eq!((s.min_ms, s.avg_ms, s.max_ms), (2.0, 3.0, 4.0));
        assert_eq!(s.loss(), 0.5);
        let s = RoundStats::from_rtts(&[None, None]);
        assert_eq!(s.loss(), 1.0);
        assert!(s.avg_ms.is_nan());
    }
}
